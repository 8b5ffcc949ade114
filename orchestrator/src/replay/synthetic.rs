//! Synthetic request traces: seeded per-second request counts shaped like real traffic, for
//! replay tests without a recorded trace; and superposition, which scales a real trace by
//! summing time-shifted copies of it instead of multiplying its noise.
//!
//! ```text
//!  Synthetic { family, mean_rate, seconds, seed }
//!    shape(t)  diurnal      (1 + 0.6·sin(2πt/period + φ)) × (1 + drift(t)), drift a walk in ±10 %
//!              flash-crowd  1, and 1–3 crowds an hour: ramp 10–60 s ─► 3–8× ─► hold 1–5 min ─► exp decay
//!              bursty-mmpp  Markov chain: calm (0.5×, minutes) ⇄ burst (4–6×) | spike (7–10×), 10–60 s
//!              steps        a level every 2–10 min, × a factor in [0.3, 3], within [0.2, 5]
//!    λ(t)     = mean_rate × shape(t) scaled to a mean of exactly 1 over the series
//!    count(t) ~ Poisson(λ(t))                    Knuth (λ < 10) │ PTRS (λ ≥ 10), exact, never negative
//!
//!  superpose(series, k): ⌈k⌉ circularly shifted copies, the last thinned to frac(k)
//!    out(t) = Σ_{i<⌊k⌋} series(t + shiftᵢ) + Binomial(series(t + shift_⌊k⌋), frac(k))
//!    shiftᵢ = i × period   when ⌈k⌉ periods fit in the series (whole days keep the daily shape)
//!           = i × len / ⌈k⌉ otherwise
//! ```

use std::f64::consts::TAU;
use std::fmt;
use std::str::FromStr;

/// Seconds in a day: the longest diurnal period, and the shift [`daily_period`] proposes.
const DAY: u64 = 86_400;

/// Diurnal amplitude: peak / trough = (1 + a) / (1 - a) = 4.
const DIURNAL_AMPLITUDE: f64 = 0.6;
/// Bound of the diurnal drift (relative).
const DIURNAL_DRIFT: f64 = 0.1;

/// Calm rate of the MMPP, relative to the mean.
const MMPP_CALM: f64 = 0.5;

/// Steps: bounds of a level, relative to the mean.
const STEP_BOUNDS: (f64, f64) = (0.2, 5.0);

/// Independent generator streams of one seed.
const SHAPE_STREAM: u64 = 0x5348_4150_4500_0001;
const NOISE_STREAM: u64 = 0x4e4f_4953_4500_0002;
const THIN_STREAM: u64 = 0x5448_494e_0000_0003;

/// The shape of a synthetic trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// A daily cycle (peak / trough ≈ 4) compressed to a period, with a slow ±10 % drift.
    Diurnal,
    /// A steady base with sudden crowds, 1–3 an hour, at 3–8× the base for minutes.
    FlashCrowd,
    /// A Markov-modulated Poisson process: calm minutes, bursts of 10–60 s at 4–10× the mean.
    Bursty,
    /// Piecewise-constant levels that change every 2–10 minutes.
    Steps,
}

impl Family {
    /// Every family, in a fixed order (for sweeps over all of them).
    pub const ALL: [Family; 4] = [
        Family::Diurnal,
        Family::FlashCrowd,
        Family::Bursty,
        Family::Steps,
    ];

    /// The family's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Family::Diurnal => "diurnal",
            Family::FlashCrowd => "flash-crowd",
            Family::Bursty => "bursty-mmpp",
            Family::Steps => "steps",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A family name that [`Family`]'s `FromStr` does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown synthetic trace family {0:?} (expected diurnal, flash-crowd, bursty-mmpp or steps)"
)]
pub struct UnknownFamily(pub String);

impl FromStr for Family {
    type Err = UnknownFamily;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Family::ALL
            .into_iter()
            .find(|family| family.name() == s)
            .ok_or_else(|| UnknownFamily(s.to_owned()))
    }
}

/// A seeded synthetic trace: its family, mean rate, length and seed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Synthetic {
    /// The shape of the traffic.
    pub family: Family,
    /// Mean requests per second over the whole series (0.5 to 1000 are tested).
    pub mean_rate: f64,
    /// Length of the series, in seconds.
    pub seconds: u64,
    /// Seed of every random draw: the same seed gives the same series.
    pub seed: u64,
}

// === impl Synthetic ===

impl Synthetic {
    /// Requests arriving in each second: integer counts (as `f64`), Poisson around λ(t).
    pub fn series(&self) -> Vec<f64> {
        self.series_with_period(self.default_period())
    }

    /// [`Synthetic::series`] with the diurnal cycle's period in seconds (other families ignore it).
    pub fn series_with_period(&self, period: u64) -> Vec<f64> {
        let mut noise = Rng::new(self.seed, NOISE_STREAM);
        self.rates(period)
            .into_iter()
            .map(|rate| noise.poisson(rate))
            .collect()
    }

    /// The diurnal period [`Synthetic::series`] uses: a third of the series, 600 s to a day.
    pub fn default_period(&self) -> u64 {
        (self.seconds / 3).clamp(600, DAY)
    }

    /// The underlying rate λ(t) of each second, before the Poisson draw; its mean is `mean_rate`.
    pub fn rates(&self, period: u64) -> Vec<f64> {
        let len = usize::try_from(self.seconds).unwrap_or(usize::MAX);
        if !(self.mean_rate.is_finite() && self.mean_rate > 0.0) {
            return vec![0.0; len];
        }
        let mut rng = Rng::new(self.seed, SHAPE_STREAM);
        let (mut shape, bounds) = match self.family {
            Family::Diurnal => (diurnal(len, period.max(2), &mut rng), None),
            Family::FlashCrowd => (flash_crowd(len, &mut rng), None),
            Family::Bursty => (mmpp(len, &mut rng), None),
            Family::Steps => (steps(len, &mut rng), Some(STEP_BOUNDS)),
        };
        scale_to_mean(&mut shape, bounds);
        for rate in &mut shape {
            *rate *= self.mean_rate;
        }
        shape
    }
}

/// A sinusoidal day of `period` seconds with a random phase, times a reflected random-walk drift.
fn diurnal(len: usize, period: u64, rng: &mut Rng) -> Vec<f64> {
    let period = period as f64;
    let phase = rng.uniform() * TAU;
    // A walk that wanders about the whole ±10 % over one period.
    let step = DIURNAL_DRIFT / period.sqrt();
    let mut drift = 0.0;
    (0..len)
        .map(|t| {
            drift = reflect(drift + step * rng.normal(), DIURNAL_DRIFT);
            let cycle = 1.0 + DIURNAL_AMPLITUDE * (TAU * t as f64 / period + phase).sin();
            cycle * (1.0 + drift)
        })
        .collect()
}

/// `x` reflected back into `[-bound, bound]`.
fn reflect(x: f64, bound: f64) -> f64 {
    let x = if x > bound {
        2.0 * bound - x
    } else if x < -bound {
        -2.0 * bound - x
    } else {
        x
    };
    x.clamp(-bound, bound)
}

/// A base of 1 with crowds at stratified random times, 1–3 per hour of series (at least one).
fn flash_crowd(len: usize, rng: &mut Rng) -> Vec<f64> {
    // A crowd's tail is cut where it has decayed to 1/1000 of its height.
    const TAIL: f64 = 6.907_755_278_982_137;
    let mut shape = vec![1.0_f64; len];
    let per_hour = rng.range(1.0, 3.0);
    let crowds = ((len as f64 / 3600.0 * per_hour).ceil() as usize).max(1);
    let slot = len as f64 / crowds as f64;
    for i in 0..crowds {
        let start = (i as f64 + rng.uniform()) * slot;
        let ramp = rng.range(10.0, 60.0);
        let hold = ramp + rng.range(60.0, 300.0);
        let decay = rng.range(30.0, 180.0);
        let excess = rng.range(3.0, 8.0) - 1.0;
        let first = start.floor() as usize;
        let last = ((start + hold + TAIL * decay).ceil() as usize).min(len);
        for (t, level) in shape.iter_mut().enumerate().take(last).skip(first) {
            let since = t as f64 + 0.5 - start;
            let height = if since < 0.0 {
                0.0
            } else if since < ramp {
                since / ramp
            } else if since < hold {
                1.0
            } else {
                (-(since - hold) / decay).exp()
            };
            *level = level.max(1.0 + excess * height);
        }
    }
    shape
}

/// A three-state MMPP: calm at 0.5, bursts (4–6×, 20–60 s) and spikes (7–10×, 10–30 s); the calm
/// dwell is chosen so the stationary mean is 1. Each second's rate is the time average over it.
fn mmpp(len: usize, rng: &mut Rng) -> Vec<f64> {
    let burst = (rng.range(4.0, 6.0), rng.range(20.0, 60.0));
    let spike = (rng.range(7.0, 10.0), rng.range(10.0, 30.0));
    let to_burst = rng.range(0.6, 0.9);
    // Stationary mean 1: (1 − calm) × calm_dwell = Σ p × (rate − 1) × dwell over the bursts.
    let calm_dwell = ((burst.0 - 1.0) * to_burst * burst.1
        + (spike.0 - 1.0) * (1.0 - to_burst) * spike.1)
        / (1.0 - MMPP_CALM);
    let states = [(MMPP_CALM, calm_dwell), burst, spike];
    let mut state = 0;
    let mut until = rng.exp(calm_dwell);
    (0..len)
        .map(|t| {
            let end = t as f64 + 1.0;
            let mut at = t as f64;
            let mut area = 0.0;
            while until < end {
                area += states[state].0 * (until - at);
                at = until;
                state = match state {
                    0 if rng.uniform() < to_burst => 1,
                    0 => 2,
                    _ => 0,
                };
                until += rng.exp(states[state].1);
            }
            area + states[state].0 * (end - at)
        })
        .collect()
}

/// Levels that last 2–10 minutes, each the last times a log-uniform factor in [0.3, 3], clamped.
fn steps(len: usize, rng: &mut Rng) -> Vec<f64> {
    let dwell = |rng: &mut Rng| rng.range(120.0, 600.0).round() as usize;
    let (lo, hi) = STEP_BOUNDS;
    let mut level = 1.0;
    let mut next = dwell(rng);
    (0..len)
        .map(|t| {
            if t >= next {
                let factor = rng.range(0.3_f64.ln(), 3.0_f64.ln()).exp();
                level = (level * factor).clamp(lo, hi);
                next += dwell(rng);
            }
            level
        })
        .collect()
}

/// Scales a positive shape to a mean of exactly 1; with bounds, the scaled shape is also clamped
/// to them (the scale is then found by bisection, as clamping moves the mean).
fn scale_to_mean(shape: &mut [f64], bounds: Option<(f64, f64)>) {
    let len = shape.len() as f64;
    let (lo, hi) = bounds.unwrap_or((0.0, f64::INFINITY));
    let mean_at =
        |shape: &[f64], c: f64| shape.iter().map(|s| (c * s).clamp(lo, hi)).sum::<f64>() / len;
    let plain = shape.iter().sum::<f64>() / len;
    if !(plain.is_finite() && plain > 0.0) {
        shape.fill(0.0);
        return;
    }
    let mut scale = 1.0 / plain;
    if bounds.is_some() {
        let max = shape.iter().copied().fold(f64::MIN_POSITIVE, f64::max);
        let min = shape
            .iter()
            .copied()
            .fold(f64::MAX, f64::min)
            .max(f64::MIN_POSITIVE);
        // mean_at(c) rises from lo (< 1) at c_low to hi (> 1) at c_high.
        let (mut c_low, mut c_high) = (lo / max, hi / min);
        for _ in 0..64 {
            let mid = (c_low * c_high).sqrt();
            if mean_at(shape, mid) < 1.0 {
                c_low = mid;
            } else {
                c_high = mid;
            }
        }
        scale = (c_low * c_high).sqrt();
    }
    for s in shape.iter_mut() {
        *s = (scale * *s).clamp(lo, hi);
    }
}

// === superposition ===

/// Scales a trace by `k` as `k` independent users would: the sum of `⌊k⌋` circularly shifted
/// copies plus one more copy binomially thinned to `frac(k)` (keeping each request with that
/// probability). Copy `i` is shifted by `i × period` when `⌈k⌉ × period` fits in the series, else
/// by `i × len / ⌈k⌉`. The mean scales by `k`, the noise like a sum of independent copies
/// (`√k`, not `k`). A `k` that is not finite and positive gives zeros.
pub fn superpose(series: &[f64], k: f64, period: Option<u64>, seed: u64) -> Vec<f64> {
    let len = series.len();
    if len == 0 || !(k.is_finite() && k > 0.0) {
        return vec![0.0; len];
    }
    let whole = k.floor();
    let frac = k - whole;
    let whole = whole as usize;
    let copies = whole + usize::from(frac > 0.0);
    let period = period
        .and_then(|p| usize::try_from(p).ok())
        .filter(|&p| p > 0 && copies.checked_mul(p).is_some_and(|span| span <= len));
    let shift = |i: usize| match period {
        Some(p) => i * p % len,
        // i < copies, so the product fits in u128 and the quotient is below len.
        None => usize::try_from(i as u128 * len as u128 / copies as u128).unwrap_or(0),
    };
    let mut out = vec![0.0; len];
    for i in 0..whole {
        for (o, c) in out.iter_mut().zip(rotated(series, shift(i))) {
            *o += c;
        }
    }
    if frac > 0.0 {
        let mut rng = Rng::new(seed, THIN_STREAM);
        for (o, &c) in out.iter_mut().zip(rotated(series, shift(whole))) {
            *o += rng.thin(c, frac);
        }
    }
    out
}

/// Scales a trace by plain multiplication: the mean and the noise both grow `k`-fold.
pub fn multiply(series: &[f64], k: f64) -> Vec<f64> {
    series.iter().map(|c| c * k).collect()
}

/// The shift for [`superpose`] that keeps a daily shape: a day, when a series of `len` seconds
/// holds at least `⌈k⌉` whole days; else `None` (copies are then spread evenly).
pub fn daily_period(len: usize, k: f64) -> Option<u64> {
    if !k.is_finite() {
        return None;
    }
    let days = k.ceil().max(1.0) as u64;
    let needed = days.checked_mul(DAY)?;
    (u64::try_from(len).ok()? >= needed).then_some(DAY)
}

/// The series read from `by` on, wrapping around to its start.
fn rotated(series: &[f64], by: usize) -> impl Iterator<Item = &f64> {
    let (head, tail) = series.split_at(by.min(series.len()));
    tail.iter().chain(head)
}

// === impl Rng ===

/// splitmix64: a small seeded generator (`rand` is not a dependency).
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    /// Stream `stream` of seed `seed`.
    fn new(seed: u64, stream: u64) -> Self {
        Rng(seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1_u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Exponential with mean `mean`.
    fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.uniform()).ln()
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let radius = (-2.0 * (1.0 - self.uniform()).ln()).sqrt();
        radius * (TAU * self.uniform()).cos()
    }

    /// A Poisson draw of mean `lambda` (0 when it is not positive): Knuth's product of uniforms
    /// for small means, Hörmann's PTRS (transformed rejection, exact) for `lambda ≥ 10`.
    fn poisson(&mut self, lambda: f64) -> f64 {
        if !(lambda.is_finite() && lambda > 0.0) {
            return 0.0;
        }
        if lambda < 10.0 {
            let limit = (-lambda).exp();
            let mut product = self.uniform();
            let mut k = 0_u32;
            while product > limit {
                k += 1;
                product *= self.uniform();
            }
            return f64::from(k);
        }
        let sqrt = lambda.sqrt();
        let ln = lambda.ln();
        let b = 0.931 + 2.53 * sqrt;
        let a = -0.059 + 0.024_83 * b;
        let inv_alpha = 1.1239 + 1.1328 / (b - 3.4);
        let v_r = 0.9277 - 3.6224 / (b - 2.0);
        loop {
            let u = self.uniform() - 0.5;
            let v = self.uniform();
            let us = 0.5 - u.abs();
            let k = ((2.0 * a / us + b) * u + lambda + 0.43).floor();
            if k < 0.0 {
                continue;
            }
            if us >= 0.07 && v <= v_r {
                return k;
            }
            if us < 0.013 && v > us {
                continue;
            }
            let accept = v.ln() + inv_alpha.ln() - (a / (us * us) + b).ln();
            if accept <= -lambda + k * ln - ln_gamma(k + 1.0) {
                return k;
            }
        }
    }

    /// A Binomial(`n`, `p`) draw: inversion while `n·min(p, 1−p) < 30`, else the normal
    /// approximation with continuity correction (its clamp to `[0, n]` is then > 5σ away).
    fn binomial(&mut self, n: u64, p: f64) -> u64 {
        if n == 0 || p <= 0.0 {
            return 0;
        }
        if p >= 1.0 {
            return n;
        }
        if p > 0.5 {
            return n - self.binomial(n, 1.0 - p);
        }
        let nf = n as f64;
        if nf * p < 30.0 {
            let q = 1.0 - p;
            let odds = p / q;
            let mut mass = q.powf(nf);
            let mut u = self.uniform();
            let mut k = 0;
            while u > mass && k < n {
                u -= mass;
                k += 1;
                mass *= odds * (nf - k as f64 + 1.0) / k as f64;
            }
            return k;
        }
        let sd = (nf * p * (1.0 - p)).sqrt();
        (nf * p + sd * self.normal() + 0.5).floor().clamp(0.0, nf) as u64
    }

    /// `count` requests thinned to a share `keep`: binomial on the whole part, and the fractional
    /// part (of a non-integer count) kept as one request with probability `fraction × keep`.
    fn thin(&mut self, count: f64, keep: f64) -> f64 {
        if !(count.is_finite() && count > 0.0) {
            return 0.0;
        }
        let whole = count.floor();
        let part = count - whole;
        let kept = self.binomial(whole as u64, keep) as f64;
        if part > 0.0 && self.uniform() < part * keep {
            kept + 1.0
        } else {
            kept
        }
    }
}

/// `ln Γ(x)` for `x ≥ 1` (Stirling's series, shifted up to 7 for small `x`).
fn ln_gamma(x: f64) -> f64 {
    const COEFFICIENTS: [f64; 10] = [
        8.333_333_333_333_333e-2,
        -2.777_777_777_777_778e-3,
        7.936_507_936_507_937e-4,
        -5.952_380_952_380_952e-4,
        8.417_508_417_508_418e-4,
        -1.917_526_917_526_918e-3,
        6.410_256_410_256_41e-3,
        -2.955_065_359_477_124e-2,
        1.796_443_723_688_307e-1,
        -1.392_432_216_905_9,
    ];
    if x == 1.0 || x == 2.0 {
        return 0.0;
    }
    let shift = if x < 7.0 { (7.0 - x).floor() } else { 0.0 };
    let x0 = x + shift;
    let inv_sq = 1.0 / (x0 * x0);
    let series = COEFFICIENTS
        .iter()
        .rev()
        .fold(0.0, |acc, c| acc * inv_sq + c);
    let mut value = series / x0 + 0.5 * TAU.ln() + (x0 - 0.5) * x0.ln() - x0;
    let mut y = x0;
    for _ in 0..shift as u32 {
        y -= 1.0;
        value -= y.ln();
    }
    value
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn mean(xs: &[f64]) -> f64 {
        xs.iter().sum::<f64>() / xs.len() as f64
    }

    fn variance(xs: &[f64]) -> f64 {
        let m = mean(xs);
        xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / xs.len() as f64
    }

    fn max(xs: &[f64]) -> f64 {
        xs.iter().copied().fold(f64::MIN, f64::max)
    }

    fn trace(family: Family, mean_rate: f64, seconds: u64, seed: u64) -> Synthetic {
        Synthetic {
            family,
            mean_rate,
            seconds,
            seed,
        }
    }

    /// Independent Poisson(`lambda`) counts.
    fn poisson_series(lambda: f64, len: usize, seed: u64) -> Vec<f64> {
        let mut rng = Rng::new(seed, 7);
        (0..len).map(|_| rng.poisson(lambda)).collect()
    }

    #[test]
    fn every_family_hits_its_mean() {
        for family in Family::ALL {
            for rate in [2.0, 50.0, 500.0] {
                let series = trace(family, rate, 20_000, 11).series();
                assert_eq!(series.len(), 20_000);
                let got = mean(&series);
                assert!(
                    (got / rate - 1.0).abs() < 0.03,
                    "{family} at {rate}/s: mean {got}"
                );
            }
        }
    }

    #[test]
    fn the_underlying_rate_has_exactly_the_mean() {
        for family in Family::ALL {
            for seconds in [1, 90, 4_000] {
                let t = trace(family, 37.0, seconds, 5);
                let rates = t.rates(t.default_period());
                assert!((mean(&rates) / 37.0 - 1.0).abs() < 1e-9, "{family}");
            }
        }
    }

    #[test]
    fn same_seed_same_series_and_another_seed_differs() {
        for family in Family::ALL {
            let a = trace(family, 20.0, 3_000, 42).series();
            assert_eq!(a, trace(family, 20.0, 3_000, 42).series(), "{family}");
            assert_ne!(a, trace(family, 20.0, 3_000, 43).series(), "{family}");
        }
    }

    #[test]
    fn counts_are_non_negative_integers() {
        for family in Family::ALL {
            for rate in [0.5, 7.0, 1000.0] {
                for c in trace(family, rate, 2_000, 3).series() {
                    assert!(c >= 0.0 && c.fract() == 0.0, "{family} at {rate}/s: {c}");
                }
            }
        }
    }

    #[test]
    fn degenerate_traces_are_empty_or_zero() {
        assert!(trace(Family::Diurnal, 10.0, 0, 1).series().is_empty());
        for rate in [0.0, -3.0, f64::NAN, f64::INFINITY] {
            let series = trace(Family::Bursty, rate, 100, 1).series();
            assert_eq!(series, vec![0.0; 100]);
        }
    }

    #[test]
    fn diurnal_cycles_between_about_a_quarter_and_the_peak() {
        let t = trace(Family::Diurnal, 100.0, 20_000, 9);
        let period = t.default_period();
        assert_eq!(period, 6_666);
        let rates = t.rates(period);
        let trough = rates.iter().copied().fold(f64::MAX, f64::min);
        let ratio = max(&rates) / trough;
        assert!((3.3..5.0).contains(&ratio), "peak/trough {ratio}");
        // Half a period after the peak, the rate is well below it.
        let peak_at = rates.iter().position(|&r| r == max(&rates)).unwrap();
        let later = rates[(peak_at + 3_333) % rates.len()];
        assert!(
            later < 0.5 * max(&rates),
            "half a period from the peak: {later}"
        );
        assert_eq!(trace(Family::Diurnal, 1.0, 100, 1).default_period(), 600);
        assert_eq!(
            trace(Family::Diurnal, 1.0, 30 * DAY, 1).default_period(),
            DAY
        );
    }

    #[test]
    fn flash_crowds_burst() {
        let series = trace(Family::FlashCrowd, 50.0, 20_000, 4).series();
        let m = mean(&series);
        assert!(max(&series) / m > 3.0, "peak/mean {}", max(&series) / m);
        let crowded = series.iter().filter(|&&c| c > 2.0 * m).count();
        assert!(crowded > 300, "{crowded} crowded seconds");
        // Most of the time is the base, below the mean.
        let calm = series.iter().filter(|&&c| c < m).count();
        assert!(calm > 10_000, "{calm} calm seconds");
    }

    #[test]
    fn mmpp_bursts() {
        let series = trace(Family::Bursty, 50.0, 20_000, 8).series();
        let m = mean(&series);
        assert!(max(&series) / m > 5.0, "peak/mean {}", max(&series) / m);
        let bursts = series.iter().filter(|&&c| c > 3.0 * m).count();
        assert!(bursts > 300, "{bursts} burst seconds");
        let calm = series.iter().filter(|&&c| c < 0.8 * m).count();
        assert!(calm > 12_000, "{calm} calm seconds");
    }

    #[test]
    fn steps_change_level_within_bounds() {
        let t = trace(Family::Steps, 100.0, 20_000, 6);
        let rates = t.rates(t.default_period());
        let changes = rates.windows(2).filter(|w| w[0] != w[1]).count();
        assert!((20..=170).contains(&changes), "{changes} changes");
        let low = rates.iter().copied().fold(f64::MAX, f64::min);
        assert!(low >= 20.0 - 1e-9 && max(&rates) <= 500.0 + 1e-9);
        assert!(max(&rates) / low > 2.0, "levels {low}..{}", max(&rates));
    }

    #[test]
    fn family_names_round_trip() {
        for family in Family::ALL {
            assert_eq!(family.name().parse::<Family>().unwrap(), family);
            assert_eq!(family.to_string(), family.name());
        }
        let err = "sawtooth".parse::<Family>().unwrap_err();
        assert_eq!(err, UnknownFamily("sawtooth".into()));
        assert!(err.to_string().contains("\"sawtooth\""));
    }

    #[test]
    fn poisson_and_binomial_draws_have_their_moments() {
        for lambda in [0.3, 3.0, 9.9, 10.0, 40.0, 800.0] {
            let draws = poisson_series(lambda, 20_000, 1);
            assert!(draws.iter().all(|&k| k >= 0.0 && k.fract() == 0.0));
            assert!((mean(&draws) / lambda - 1.0).abs() < 0.03, "λ {lambda}");
            assert!((variance(&draws) / lambda - 1.0).abs() < 0.1, "λ {lambda}");
        }
        let mut rng = Rng::new(2, 0);
        for (n, p) in [(20, 0.3), (1_000, 0.01), (1_000, 0.4), (1_000, 0.9)] {
            let draws: Vec<f64> = (0..20_000).map(|_| rng.binomial(n, p) as f64).collect();
            let (m, v) = (n as f64 * p, n as f64 * p * (1.0 - p));
            assert!(draws.iter().all(|&k| k <= n as f64));
            assert!((mean(&draws) / m - 1.0).abs() < 0.03, "n {n} p {p}");
            assert!((variance(&draws) / v - 1.0).abs() < 0.1, "n {n} p {p}");
        }
        assert_eq!(ln_gamma(1.0), 0.0);
        assert!((ln_gamma(5.0) - 24.0_f64.ln()).abs() < 1e-12);
        assert!((ln_gamma(3.5) - (3.323_350_970_447_843_f64).ln()).abs() < 1e-12);
    }

    #[test]
    fn superposing_scales_the_mean_not_the_noise() {
        let lambda = 20.0;
        let series = poisson_series(lambda, 20_000, 3);
        let k = 4.0;
        let summed = superpose(&series, k, None, 1);
        let scaled = multiply(&series, k);
        // Circular shifts keep every request: the sum is exactly k times.
        assert_eq!(summed.iter().sum::<f64>(), k * series.iter().sum::<f64>());
        assert_eq!(mean(&scaled), k * mean(&series));
        let (var_sum, var_mul) = (variance(&summed), variance(&scaled));
        assert!(
            (var_sum / (k * lambda) - 1.0).abs() < 0.2,
            "variance {var_sum}"
        );
        assert!(
            (var_mul / (k * k * lambda) - 1.0).abs() < 0.2,
            "variance {var_mul}"
        );
        assert!(var_sum < 0.4 * var_mul);
    }

    #[test]
    fn fractional_k_adds_a_thinned_copy() {
        let lambda = 20.0;
        let series = poisson_series(lambda, 20_000, 4);
        let k = 2.5;
        let out = superpose(&series, k, None, 9);
        assert!(out.iter().all(|&c| c >= 0.0 && c.fract() == 0.0));
        assert!(
            (mean(&out) / (k * lambda) - 1.0).abs() < 0.02,
            "mean {}",
            mean(&out)
        );
        assert!((variance(&out) / (k * lambda) - 1.0).abs() < 0.2);
        assert_eq!(out, superpose(&series, k, None, 9), "seeded");
        assert_ne!(out, superpose(&series, k, None, 10));
    }

    #[test]
    fn k_below_one_thins() {
        let series = trace(Family::Bursty, 30.0, 10_000, 2).series();
        let out = superpose(&series, 0.3, None, 5);
        assert!(out
            .iter()
            .zip(&series)
            .all(|(o, s)| o <= s && o.fract() == 0.0));
        assert!((mean(&out) / (0.3 * mean(&series)) - 1.0).abs() < 0.03);
        // Non-integer counts thin with the right mean, too.
        let halves = vec![2.5; 20_000];
        assert!((mean(&superpose(&halves, 0.4, None, 1)) - 1.0).abs() < 0.03);
    }

    #[test]
    fn shifts_by_whole_periods_keep_the_shape() {
        let period = 600_usize;
        let wave: Vec<f64> = (0..5 * period)
            .map(|t| 100.0 + 50.0 * (TAU * t as f64 / period as f64).sin())
            .collect();
        let by_period = superpose(&wave, 2.0, Some(period as u64), 0);
        for (o, w) in by_period.iter().zip(&wave) {
            assert!((o - 2.0 * w).abs() < 1e-9);
        }
        // Spread evenly instead (len / 2 = 2.5 periods), the peaks meet the troughs.
        let spread = superpose(&wave, 2.0, None, 0);
        assert!(spread.iter().all(|o| (o - 200.0).abs() < 1e-9));
        // A period that does not fit ⌈k⌉ times falls back to the even spread.
        assert_eq!(
            superpose(&wave, 6.0, Some(period as u64), 0),
            superpose(&wave, 6.0, None, 0)
        );
    }

    #[test]
    fn degenerate_superpositions() {
        assert!(superpose(&[], 3.0, None, 0).is_empty());
        for k in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(superpose(&[4.0, 5.0], k, Some(1), 0), vec![0.0, 0.0]);
        }
        assert_eq!(superpose(&[4.0, 5.0], 1.0, None, 0), vec![4.0, 5.0]);
        assert_eq!(multiply(&[4.0, 5.0], 1.5), vec![6.0, 7.5]);
    }

    #[test]
    fn daily_period_needs_ceil_k_days() {
        let day = DAY as usize;
        assert_eq!(daily_period(2 * day, 2.0), Some(DAY));
        assert_eq!(daily_period(2 * day, 2.5), None);
        assert_eq!(daily_period(3 * day, 2.5), Some(DAY));
        assert_eq!(daily_period(day, 0.5), Some(DAY));
        assert_eq!(daily_period(day - 1, 0.5), None);
        assert_eq!(daily_period(usize::MAX, f64::NAN), None);
        assert_eq!(daily_period(usize::MAX, 1e30), None);
    }
}
