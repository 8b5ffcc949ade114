//! The local-level model: the rate is a random walk seen through noise, and a Kalman filter
//! tracks it. Both variances are estimated online by the method of moments, so the gain adapts
//! to the series: high when the rate moves more than the noise, low when the noise dominates.
//!
//! ```text
//!  level  μ_t = μ_{t−1} + η   η ~ (0, Q)          count  y_t = μ_t + ε   ε ~ (0, R)
//!
//!  second y ─┬─► Δ₁ = y_t − y_{t−1},  Δ_L = y_t − y_{t−L}         ring of the last L values
//!            │   V₁ ← EWMA(Δ₁²),  V_L ← EWMA(Δ_L²)                about an hour of memory
//!            │   Q = (V_L − V₁)/(L − 1),  R = (V₁ − Q)/2          since E Δ_k² = kQ + 2R
//!            └─► P += Q;  K = P/(P + R);  μ += K·(y − μ);  P = (1 − K)·P
//!  forecast(h) = μ    (a random walk's best forecast is its current level, at every horizon)
//! ```
//!
//! In steady state the filter is an EWMA whose factor follows from Q/R, so it sits between the
//! fixed fast and slow EWMAs and moves with the series. The noise variance is measured rather
//! than assumed Poisson: real counts are over-dispersed (bursts), and a Poisson R would be too
//! small and make the level chase them. O(1) per second.
//!
//! Not in [`super::default_models`]: on the shared traces it never beat the autoregression,
//! and clustered web arrivals (one page, several requests) make its moment estimates ask for
//! more gain than the slow EWMA that wins there (`examples/compare_models.rs`).

use super::{sanitize, Forecaster};

/// Settings of [`LocalLevel`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalLevelConfig {
    /// Lag L of the second difference moment, in seconds (default 16, between the shortest and
    /// longest default horizon: the variances are fitted at the scale the forecasts are used).
    pub lag_sec: usize,
    /// Memory of the moment estimates in seconds (default 3600).
    pub memory_sec: f64,
    /// Smallest ratio Q/R (default 1e-5, a gain of at least about 0.003): the level never
    /// averages over much more than five minutes, so it still follows the daily swing.
    pub min_signal_to_noise: f64,
}

impl Default for LocalLevelConfig {
    fn default() -> Self {
        Self {
            lag_sec: 16,
            memory_sec: 3_600.0,
            min_signal_to_noise: 1e-5,
        }
    }
}

/// Noise variance floor in (arrivals per second)²: a constant series still has a finite gain.
const MIN_NOISE: f64 = 1e-6;

/// Skipped seconds replayed as zeros at most, after a gap in the observed seconds.
const MAX_GAP_REPLAY: u64 = 3_600;

/// Local-level Kalman filter with moment-estimated variances; see the module docs.
#[derive(Debug, Clone)]
pub struct LocalLevel {
    config: LocalLevelConfig,
    /// The last `lag_sec` values, oldest at `next`.
    ring: Vec<f64>,
    next: usize,
    seen: u64,
    last_t: Option<u64>,
    /// EWMA sums of Δ₁² and Δ_L², and their total weight (bias-corrected means).
    sum_d1: f64,
    sum_dl: f64,
    weight_d1: f64,
    weight_dl: f64,
    level: f64,
    variance: f64,
}

impl LocalLevel {
    /// A local-level filter with no history (forecasts 0).
    pub fn new(config: LocalLevelConfig) -> Self {
        let config = LocalLevelConfig {
            lag_sec: config.lag_sec.max(2),
            memory_sec: config.memory_sec.max(1.0),
            min_signal_to_noise: config.min_signal_to_noise.max(f64::MIN_POSITIVE),
        };
        Self {
            ring: vec![0.0; config.lag_sec],
            config,
            next: 0,
            seen: 0,
            last_t: None,
            sum_d1: 0.0,
            sum_dl: 0.0,
            weight_d1: 0.0,
            weight_dl: 0.0,
            level: 0.0,
            variance: 0.0,
        }
    }

    /// The filtered level (the forecast at every horizon).
    pub fn level(&self) -> f64 {
        self.level
    }

    /// Current estimates `(Q, R)`: the level's variance per second and the noise variance.
    pub fn variances(&self) -> (f64, f64) {
        let v1 = if self.weight_d1 > 0.0 {
            self.sum_d1 / self.weight_d1
        } else {
            0.0
        };
        let vl = if self.weight_dl > 0.0 {
            self.sum_dl / self.weight_dl
        } else {
            v1
        };
        let lag = self.config.lag_sec as f64;
        let q = ((vl - v1) / (lag - 1.0)).max(0.0);
        let r = ((v1 - q) / 2.0).max(MIN_NOISE);
        (q.max(self.config.min_signal_to_noise * r), r)
    }

    fn update(&mut self, value: f64) {
        let lag = self.config.lag_sec;
        let decay = 1.0 - 1.0 / self.config.memory_sec;
        if self.seen >= 1 {
            let previous = self.ring[(self.next + lag - 1) % lag];
            self.sum_d1 = self.sum_d1 * decay + (value - previous).powi(2);
            self.weight_d1 = self.weight_d1 * decay + 1.0;
        }
        if self.seen >= lag as u64 {
            let lagged = self.ring[self.next];
            self.sum_dl = self.sum_dl * decay + (value - lagged).powi(2);
            self.weight_dl = self.weight_dl * decay + 1.0;
        }
        self.ring[self.next] = value;
        self.next = (self.next + 1) % lag;
        self.seen = self.seen.saturating_add(1);

        if self.seen <= lag as u64 {
            // No variance estimate yet: the level is the mean of what was seen, with the
            // variance of a mean of `seen` noisy values.
            let n = self.seen as f64;
            self.level += (value - self.level) / n;
            self.variance = self.variances().1 / n;
            return;
        }
        let (q, r) = self.variances();
        let predicted = self.variance + q;
        let gain = predicted / (predicted + r);
        self.level += gain * (value - self.level);
        self.variance = (1.0 - gain) * predicted;
    }
}

impl Forecaster for LocalLevel {
    fn name(&self) -> &'static str {
        "local_level"
    }

    fn observe(&mut self, t_sec: u64, value: f64) {
        // Seconds skipped since the last observation had no arrivals.
        if let Some(last) = self.last_t {
            let gap = t_sec.saturating_sub(last).saturating_sub(1);
            for _ in 0..gap.min(MAX_GAP_REPLAY) {
                self.update(0.0);
            }
        }
        self.last_t = Some(t_sec);
        self.update(sanitize(value));
    }

    fn forecast(&self, _horizon_sec: u64) -> f64 {
        self.level.max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::test_noise::{noise, poisson};
    use crate::forecast::Ewma;

    #[test]
    fn converges_to_a_constant_rate() {
        let mut model = LocalLevel::new(LocalLevelConfig::default());
        assert_eq!(model.forecast(5), 0.0);
        for t in 0..100 {
            model.observe(t, 7.0);
        }
        assert!((model.forecast(5) - 7.0).abs() < 1e-9);
        // Poisson noise around 20/s: the level averages it out.
        let mut model = LocalLevel::new(LocalLevelConfig::default());
        for t in 0..5_000 {
            model.observe(t, poisson(20.0, t));
        }
        assert!((model.forecast(30) - 20.0).abs() < 1.5, "{}", model.level());
        let (q, r) = model.variances();
        assert!((r - 20.0).abs() < 3.0, "noise variance {r}");
        assert!(q < 0.01 * r, "level variance {q}");
    }

    #[test]
    fn tracks_a_step_faster_on_a_clean_series_than_on_a_noisy_one() {
        // Clean: the rate itself wanders, so the filter follows quickly.
        let mut clean = LocalLevel::new(LocalLevelConfig::default());
        let mut level = 50.0;
        for t in 0..3_000 {
            level += noise(t);
            clean.observe(t, level);
        }
        for t in 3_000..3_010 {
            clean.observe(t, level + 100.0);
        }
        assert!(clean.level() > level + 90.0, "{}", clean.level());
        // Noisy: the same step takes longer, but the level still gets there.
        let mut noisy = LocalLevel::new(LocalLevelConfig::default());
        for t in 0..3_000 {
            noisy.observe(t, poisson(50.0, t));
        }
        for t in 3_000..3_010 {
            noisy.observe(t, poisson(150.0, t));
        }
        let after_ten = noisy.level();
        assert!(after_ten < 120.0, "{after_ten}");
        for t in 3_010..3_600 {
            noisy.observe(t, poisson(150.0, t));
        }
        assert!((noisy.level() - 150.0).abs() < 8.0, "{}", noisy.level());
    }

    #[test]
    fn beats_a_fixed_ewma_on_a_random_walk_in_noise() {
        let mut model = LocalLevel::new(LocalLevelConfig::default());
        let mut slow = Ewma::new("slow", 0.03);
        let (mut level, mut err_model, mut err_slow) = (100.0f64, 0.0, 0.0);
        for t in 0..20_000u64 {
            if t > 2_000 {
                err_model += (model.forecast(1) - level).abs();
                err_slow += (slow.forecast(1) - level).abs();
            }
            level = (level + 2.0 * noise(t)).max(0.0);
            let value = level + 3.0 * noise(t + 1_000_000);
            model.observe(t, value);
            slow.observe(t, value);
        }
        assert!(err_model < 0.8 * err_slow, "{err_model} vs {err_slow}");
    }

    #[test]
    fn zeros_huge_values_and_gaps_stay_finite_and_non_negative() {
        let mut model = LocalLevel::new(LocalLevelConfig::default());
        for t in 0..100 {
            model.observe(t, 0.0);
        }
        assert_eq!(model.forecast(60), 0.0);
        for (t, value) in [
            (100, 1e300),
            (101, f64::INFINITY),
            (102, f64::NAN),
            (103, -5.0),
        ] {
            model.observe(t, value);
            let f = model.forecast(10);
            assert!(f.is_finite() && f >= 0.0, "{f}");
        }
        model.observe(1_000_000_000, 3.0);
        let f = model.forecast(10);
        assert!(f.is_finite() && f >= 0.0, "{f}");
    }
}
