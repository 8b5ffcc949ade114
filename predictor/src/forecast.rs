//! Forecasting models for one service's per-second arrival series.
//!
//! ```text
//!  closed second (t, count) ──► observe ──► model state (O(1) per second)
//!                                              │
//!                         forecast(h) ◄────────┘   point rate for second t + h
//! ```
//!
//! Every model sees the same series and answers the same question: how many arrivals will the
//! second `horizon` seconds after the last observed one hold. Upper bounds come from each model's
//! own recent errors (see [`crate::score`]); the models only give points.

mod autoregressive;
mod ewma;
mod holt;
mod last_value;
mod local_level;
pub mod period;
mod seasonal;
mod trend;

pub use autoregressive::{Autoregressive, AutoregressiveConfig, Fit};
pub use ewma::Ewma;
pub use holt::{Holt, HoltConfig};
pub use last_value::LastValue;
pub use local_level::{LocalLevel, LocalLevelConfig};
pub use seasonal::{Seasonal, SeasonalConfig};
pub use trend::LinearTrend;

/// Largest value a model takes in (arrivals per second): far beyond any real service, small
/// enough that squares and sums of it stay finite.
const MAX_VALUE: f64 = 1e12;

/// An observed value made safe for the models' arithmetic: NaN and negatives become 0, huge
/// values are capped at [`MAX_VALUE`].
pub(crate) fn sanitize(value: f64) -> f64 {
    if value.is_nan() {
        0.0
    } else {
        value.clamp(0.0, MAX_VALUE)
    }
}

/// A point forecaster fed one value per second.
pub trait Forecaster: Send + Sync {
    /// Short stable name used in snapshots and metrics labels.
    fn name(&self) -> &'static str;
    /// Feeds the value of second `t_sec`; seconds arrive in increasing order, gaps are allowed.
    fn observe(&mut self, t_sec: u64, value: f64);
    /// Forecast of the value `horizon_sec` seconds after the last observed second (never negative).
    fn forecast(&self, horizon_sec: u64) -> f64;
}

/// One model's forecast for one horizon.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Forecast {
    /// Name of the model (or `"ensemble"`).
    pub model: &'static str,
    /// Seconds after the last observed second.
    pub horizon_sec: u64,
    /// Point forecast (arrivals in that second).
    pub point: f64,
    /// Point plus the configured quantile of the model's recent errors at this horizon.
    pub upper: f64,
}

/// The default model set: last value (the baseline every score is compared to), a fast and a
/// slow EWMA, damped Holt, a 20 s linear trend, Holt with a detected seasonal profile, and the
/// per-horizon autoregression on log counts with its same-time-yesterday lag. ([`LocalLevel`]
/// is available but not a default: the autoregression beat it on every trace and horizon
/// measured, see `examples/compare_models.rs`.)
pub fn default_models() -> Vec<Box<dyn Forecaster>> {
    vec![
        Box::new(LastValue::new()),
        Box::new(Ewma::new("ewma_fast", 0.3)),
        Box::new(Ewma::new("ewma_slow", 0.03)),
        Box::new(Holt::new(HoltConfig::default())),
        Box::new(LinearTrend::new(20)),
        Box::new(Seasonal::new(SeasonalConfig::default())),
        Box::new(Autoregressive::new(AutoregressiveConfig::default())),
    ]
}

/// Deterministic noise for the models' tests.
#[cfg(test)]
pub(crate) mod test_noise {
    /// Pseudo-random uniform in [0, 1) from an index.
    pub(crate) fn uniform(i: u64) -> f64 {
        let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x2545_f491_4f6c_dd1d;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^= x >> 33;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Pseudo-random noise in [-1, 1) from an index.
    pub(crate) fn noise(i: u64) -> f64 {
        2.0 * uniform(i) - 1.0
    }

    /// A Poisson count with mean `lambda` (normal approximation above 200), drawn from index `i`.
    pub(crate) fn poisson(lambda: f64, i: u64) -> f64 {
        let seed = i.wrapping_mul(1_000_003);
        if lambda > 200.0 {
            // Box–Muller.
            let (u1, u2) = (uniform(seed).max(1e-300), uniform(seed ^ 0x5555));
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            return (lambda + lambda.sqrt() * z).round().max(0.0);
        }
        let limit = (-lambda).exp();
        let (mut k, mut p) = (0u64, 1.0);
        loop {
            p *= uniform(seed.wrapping_add(k));
            if p <= limit {
                return k as f64;
            }
            k += 1;
        }
    }
}
