//! Period detection by autocorrelation, computed with an FFT so a two-week per-minute history
//! (20 160 values, lags up to a week) takes a few milliseconds.
//!
//! ```text
//!  per-minute rates ─► mean-removed, zero-padded ─► FFT ─► |X|² ─► inverse FFT ─► r(k)
//!  r(k) ─► peaks: above `min_correlation`, the highest within ±10 % of k, and rising at least
//!          `min_prominence` above the dip before them ─► the strongest, or its fundamental
//! ```

use std::f64::consts::PI;

/// Limits and thresholds of [`detect_period`]; all lags in samples (minutes for the seasonal
/// model).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeriodConfig {
    /// Shortest period considered (default 5).
    pub min_period: usize,
    /// Longest period considered (default 10 080, a week of minutes); at least two full cycles of
    /// history are needed before a period is considered.
    pub max_period: usize,
    /// Minimum autocorrelation at the period (default 0.3).
    pub min_correlation: f64,
    /// Minimum rise of the peak above the lowest correlation between half the lag and the lag
    /// (default 0.1): slow decay from persistence is not a period.
    pub min_prominence: f64,
}

impl Default for PeriodConfig {
    fn default() -> Self {
        Self {
            min_period: 5,
            max_period: 7 * 24 * 60,
            min_correlation: 0.3,
            min_prominence: 0.1,
        }
    }
}

/// A period found by [`detect_period`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectedPeriod {
    /// Period length in samples.
    pub lag: usize,
    /// Autocorrelation at that lag.
    pub correlation: f64,
}

/// In-place iterative radix-2 FFT; `re.len()` must be a power of two. The inverse is unscaled.
fn fft(re: &mut [f64], im: &mut [f64], inverse: bool) {
    let n = re.len();
    if n < 2 {
        return;
    }
    let mut j = 0usize;
    for i in 1..n {
        let mut bit = n >> 1;
        while j & bit != 0 {
            j ^= bit;
            bit >>= 1;
        }
        j |= bit;
        if i < j {
            re.swap(i, j);
            im.swap(i, j);
        }
    }
    let sign = if inverse { 1.0 } else { -1.0 };
    let twiddles: Vec<(f64, f64)> = (0..n / 2)
        .map(|k| {
            let angle = sign * 2.0 * PI * k as f64 / n as f64;
            (angle.cos(), angle.sin())
        })
        .collect();
    let mut len = 2;
    while len <= n {
        let half = len / 2;
        let stride = n / len;
        for start in (0..n).step_by(len) {
            for k in 0..half {
                let (wr, wi) = twiddles[k * stride];
                let a = start + k;
                let b = a + half;
                let tr = re[b] * wr - im[b] * wi;
                let ti = re[b] * wi + im[b] * wr;
                re[b] = re[a] - tr;
                im[b] = im[a] - ti;
                re[a] += tr;
                im[a] += ti;
            }
        }
        len <<= 1;
    }
}

/// Autocorrelation `r(0..=max_lag)` of `x` (mean removed), each lag normalised by the number of
/// pairs it has so long lags are not shrunk towards zero. A constant series gives all zeros.
pub fn autocorrelation(x: &[f64], max_lag: usize) -> Vec<f64> {
    let n = x.len();
    if n < 2 {
        return vec![0.0; max_lag + 1];
    }
    let max_lag = max_lag.min(n - 1);
    let mean = x.iter().sum::<f64>() / n as f64;
    let size = (n + max_lag).next_power_of_two();
    let mut re = vec![0.0; size];
    let mut im = vec![0.0; size];
    for (slot, value) in re.iter_mut().zip(x) {
        *slot = value - mean;
    }
    fft(&mut re, &mut im, false);
    for (r, i) in re.iter_mut().zip(im.iter_mut()) {
        *r = *r * *r + *i * *i;
        *i = 0.0;
    }
    fft(&mut re, &mut im, true);
    let c0 = re[0];
    if c0 <= f64::EPSILON * n as f64 {
        return vec![0.0; max_lag + 1];
    }
    (0..=max_lag)
        .map(|k| re[k] / c0 * n as f64 / (n - k) as f64)
        .collect()
}

/// Periods clocks and calendars produce, in minutes: a detected period within 5 % of one of
/// these, and nearly as correlated, is snapped to it (a profile with a period a few minutes off
/// drifts through the day). Any other period is still found, just not snapped.
pub const CALENDAR_PERIODS: [usize; 17] = [
    5, 6, 10, 12, 15, 20, 30, 60, 120, 180, 240, 360, 480, 720, 1_440, 2_880, 10_080,
];

/// The dominant period of `x`, or `None` when no lag passes the thresholds.
///
/// `current` is the period in use, kept while it stays nearly as good as the best (so the
/// profile built on it is not thrown away for noise).
pub fn detect_period(
    x: &[f64],
    config: &PeriodConfig,
    current: Option<usize>,
) -> Option<DetectedPeriod> {
    let n = x.len();
    let max_lag = config.max_period.min(n / 2);
    let min_lag = config.min_period.max(2);
    if max_lag < min_lag {
        return None;
    }
    // A little beyond max_lag so the peak test near the end sees both sides.
    let r = autocorrelation(x, (max_lag + max_lag / 10 + 1).min(n - 1));
    let is_candidate = |k: usize| {
        k >= min_lag
            && k <= max_lag
            && r[k] >= config.min_correlation
            && r[k] - r[k / 2..k].iter().copied().fold(f64::INFINITY, f64::min)
                >= config.min_prominence
    };
    let mut best: Option<usize> = None;
    let mut k = min_lag;
    while k <= max_lag {
        if r[k] >= config.min_correlation && is_window_peak(&r, k) && is_candidate(k) {
            if best.is_none_or(|b| r[k] > r[b]) {
                best = Some(k);
            }
            // Nothing else within this peak's window can be a peak.
            k += (k / 10).max(1);
        }
        k += 1;
    }
    let best = best?;
    // A peak at a multiple of a strong shorter period is that period's echo: prefer the
    // shortest period whose multiple the best peak is.
    let fundamental = (2..=best / min_lag)
        .rev()
        .filter_map(|d| {
            let centre = (best + d / 2) / d;
            let w = (centre / 20).max(1);
            let lo = centre.saturating_sub(w).max(min_lag);
            let peak = (lo..=(centre + w).min(max_lag)).max_by(|a, b| r[*a].total_cmp(&r[*b]))?;
            (r[peak] >= 0.8 * r[best] && is_window_peak(&r, peak) && is_candidate(peak))
                .then_some(peak)
        })
        .next()
        .unwrap_or(best);
    let mut lag = refine_with_harmonics(&r, fundamental, max_lag);
    if let Some(calendar) = CALENDAR_PERIODS
        .iter()
        .copied()
        .find(|&c| c <= max_lag && c.abs_diff(lag) * 20 <= lag && r[c] >= 0.95 * r[lag])
    {
        lag = calendar;
    }
    if let Some(current) = current.filter(|&c| is_candidate(c) && r[c] >= 0.9 * r[lag]) {
        lag = current;
    }
    Some(DetectedPeriod {
        lag,
        correlation: r[lag],
    })
}

/// Sharpens a period found at a broad peak: the lag near `coarse` whose multiples `P, 2P, 3P …`
/// (up to `max_lag`) have the highest mean correlation. Each multiple multiplies the leverage
/// against noise, so a daily period is placed to the minute, not to the width of its peak.
fn refine_with_harmonics(r: &[f64], coarse: usize, max_lag: usize) -> usize {
    let w = (coarse / 20).max(1);
    let lo = coarse.saturating_sub(w).max(2);
    let hi = coarse + w;
    let comb = |p: usize| {
        let (sum, n) = (1..)
            .map(|m| m * p)
            .take_while(|&lag| lag <= max_lag)
            .fold((0.0, 0usize), |(s, n), lag| (s + r[lag], n + 1));
        if n == 0 {
            f64::NEG_INFINITY
        } else {
            sum / n as f64
        }
    };
    let mut best = (coarse, comb(coarse));
    for p in lo..=hi {
        // Keep the same number of harmonics as the coarse lag so the means are comparable.
        if max_lag / p != max_lag / coarse {
            continue;
        }
        let score = comb(p);
        if score > best.1 {
            best = (p, score);
        }
    }
    best.0
}

/// Whether `r[k]` is the highest value within ±10 % of `k`.
fn is_window_peak(r: &[f64], k: usize) -> bool {
    let w = (k / 10).max(1);
    let lo = k.saturating_sub(w).max(1);
    let hi = (k + w).min(r.len() - 1);
    r[lo..k].iter().all(|&v| v < r[k]) && r[k + 1..=hi].iter().all(|&v| v <= r[k])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random noise in [-1, 1).
    fn noise(i: usize) -> f64 {
        let mut x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x2545_f491_4f6c_dd1d;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        (x >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }

    fn direct_acf(x: &[f64], k: usize) -> f64 {
        let n = x.len();
        let mean = x.iter().sum::<f64>() / n as f64;
        let c0: f64 = x.iter().map(|v| (v - mean).powi(2)).sum();
        let ck: f64 = (0..n - k).map(|i| (x[i] - mean) * (x[i + k] - mean)).sum();
        ck / c0 * n as f64 / (n - k) as f64
    }

    #[test]
    fn fft_autocorrelation_matches_the_direct_sum() {
        let x: Vec<f64> = (0..1_000)
            .map(|i| (i as f64 / 7.0).sin() + noise(i))
            .collect();
        let r = autocorrelation(&x, 300);
        for k in [0, 1, 5, 44, 150, 300] {
            assert!((r[k] - direct_acf(&x, k)).abs() < 1e-9, "lag {k}");
        }
    }

    #[test]
    fn finds_a_daily_period_in_minutes() {
        let x: Vec<f64> = (0..14 * 1_440)
            .map(|i| 50.0 + 30.0 * (2.0 * PI * i as f64 / 1_440.0).sin() + 10.0 * noise(i))
            .collect();
        let period = detect_period(&x, &PeriodConfig::default(), None).expect("period");
        assert_eq!(period.lag, 1_440, "{period:?}");
    }

    #[test]
    fn finds_a_short_spiky_period() {
        // A burst every 15 minutes on a noisy base.
        let x: Vec<f64> = (0..3_000)
            .map(|i| 5.0 + noise(i) + if i % 15 == 0 { 20.0 } else { 0.0 })
            .collect();
        let period = detect_period(&x, &PeriodConfig::default(), None).expect("period");
        assert_eq!(period.lag, 15);
    }

    #[test]
    fn prefers_the_fundamental_over_its_multiples() {
        // Weekly modulation of a daily cycle: the strongest peak may be the week, but a strong
        // day is found first.
        let x: Vec<f64> = (0..20_160)
            .map(|i| {
                let day = (2.0 * PI * i as f64 / 1_440.0).sin();
                let weekend = if (i / 1_440) % 7 >= 5 { 0.6 } else { 1.0 };
                40.0 + 30.0 * day * weekend + 3.0 * noise(i)
            })
            .collect();
        let period = detect_period(&x, &PeriodConfig::default(), None).expect("period");
        assert_eq!(period.lag, 1_440, "{period:?}");
    }

    #[test]
    fn no_period_in_noise_a_constant_or_a_random_walk() {
        let white: Vec<f64> = (0..5_000).map(noise).collect();
        assert_eq!(detect_period(&white, &PeriodConfig::default(), None), None);
        assert_eq!(
            detect_period(&[3.0; 1_000], &PeriodConfig::default(), None),
            None
        );
        let mut level = 0.0;
        let walk: Vec<f64> = (0..5_000)
            .map(|i| {
                level += noise(i);
                level
            })
            .collect();
        assert_eq!(detect_period(&walk, &PeriodConfig::default(), None), None);
    }

    #[test]
    fn too_short_a_history_has_no_period() {
        let config = PeriodConfig::default();
        assert_eq!(detect_period(&[1.0, 2.0, 3.0], &config, None), None);
        assert_eq!(detect_period(&[], &config, None), None);
    }

    #[test]
    fn finds_an_uncalendared_period_exactly() {
        // 37 minutes is no calendar period; it is found as is.
        let x: Vec<f64> = (0..5_000)
            .map(|i| 20.0 + 10.0 * (2.0 * PI * i as f64 / 37.0).sin() + 3.0 * noise(i))
            .collect();
        let period = detect_period(&x, &PeriodConfig::default(), None).expect("period");
        assert_eq!(period.lag, 37);
    }

    #[test]
    fn keeps_the_current_period_while_it_is_nearly_as_good() {
        let x: Vec<f64> = (0..14 * 1_440)
            .map(|i| 50.0 + 30.0 * (2.0 * PI * i as f64 / 1_440.0).sin() + 10.0 * noise(i))
            .collect();
        let config = PeriodConfig::default();
        assert_eq!(detect_period(&x, &config, None).map(|p| p.lag), Some(1_440));
        assert_eq!(
            detect_period(&x, &config, Some(1_437)).map(|p| p.lag),
            Some(1_437)
        );
        // A current period that is no longer a peak is dropped.
        assert_eq!(
            detect_period(&x, &config, Some(700)).map(|p| p.lag),
            Some(1_440)
        );
    }
}
