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

mod ewma;
mod holt;
mod last_value;
pub mod period;
mod seasonal;
mod trend;

pub use ewma::Ewma;
pub use holt::{Holt, HoltConfig};
pub use last_value::LastValue;
pub use seasonal::{Seasonal, SeasonalConfig};
pub use trend::LinearTrend;

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
/// slow EWMA, damped Holt, a 20 s linear trend, and Holt with a detected seasonal profile.
pub fn default_models() -> Vec<Box<dyn Forecaster>> {
    vec![
        Box::new(LastValue::new()),
        Box::new(Ewma::new("ewma_fast", 0.3)),
        Box::new(Ewma::new("ewma_slow", 0.03)),
        Box::new(Holt::new(HoltConfig::default())),
        Box::new(LinearTrend::new(20)),
        Box::new(Seasonal::new(SeasonalConfig::default())),
    ]
}
