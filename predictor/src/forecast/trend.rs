//! The local linear trend: a least-squares line through the last seconds, extended to the
//! horizon. It catches a ramp as soon as it starts, where smoothed models lag by design; on a
//! noisy, flat series its errors are large and the ensemble weights it down.

use std::collections::VecDeque;

use super::Forecaster;

/// Seconds needed before a slope is fitted.
const MIN_POINTS: usize = 5;

/// Fits `value = a + b·t` to the last `window` seconds and forecasts `a + b·(last + h)`.
#[derive(Debug, Clone)]
pub struct LinearTrend {
    window: usize,
    values: VecDeque<f64>,
    last_t: Option<u64>,
    /// Fitted value at the last second, and slope per second.
    level: f64,
    slope: f64,
}

impl LinearTrend {
    /// A trend fitted over the last `window` seconds (at least 2).
    pub fn new(window: usize) -> Self {
        let window = window.max(2);
        Self {
            window,
            values: VecDeque::with_capacity(window),
            last_t: None,
            level: 0.0,
            slope: 0.0,
        }
    }

    fn push(&mut self, value: f64) {
        if self.values.len() == self.window {
            self.values.pop_front();
        }
        self.values.push_back(value);
    }

    fn fit(&mut self) {
        let n = self.values.len();
        // A slope from a handful of noisy seconds is mostly noise: wait for a few.
        if n < MIN_POINTS.min(self.window) {
            self.level = self.values.back().copied().unwrap_or(0.0);
            self.slope = 0.0;
            return;
        }
        let nf = n as f64;
        let mean_x = (nf - 1.0) / 2.0;
        let mean_y = self.values.iter().sum::<f64>() / nf;
        let (mut sxy, mut sxx) = (0.0, 0.0);
        for (i, y) in self.values.iter().enumerate() {
            let dx = i as f64 - mean_x;
            sxy += dx * (y - mean_y);
            sxx += dx * dx;
        }
        self.slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
        self.level = mean_y + self.slope * (nf - 1.0 - mean_x);
    }
}

impl Forecaster for LinearTrend {
    fn name(&self) -> &'static str {
        "trend"
    }

    fn observe(&mut self, t_sec: u64, value: f64) {
        // Seconds skipped since the last observation had no arrivals.
        if let Some(last) = self.last_t {
            let gap = t_sec.saturating_sub(last).saturating_sub(1);
            for _ in 0..gap.min(self.window as u64) {
                self.push(0.0);
            }
        }
        self.last_t = Some(t_sec);
        self.push(value);
        self.fit();
    }

    fn forecast(&self, horizon_sec: u64) -> f64 {
        (self.level + self.slope * horizon_sec as f64).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extends_a_ramp_exactly() {
        let mut model = LinearTrend::new(10);
        for t in 0..30u64 {
            model.observe(t, 4.0 + 2.0 * t as f64);
        }
        // Last value 62 at t = 29; five seconds later 72.
        assert!((model.forecast(5) - 72.0).abs() < 1e-9);
    }

    #[test]
    fn a_flat_series_forecasts_its_level_and_never_goes_negative() {
        let mut model = LinearTrend::new(10);
        for t in 0..10u64 {
            model.observe(t, 7.0);
        }
        assert!((model.forecast(60) - 7.0).abs() < 1e-9);
        let mut falling = LinearTrend::new(5);
        for t in 0..5u64 {
            falling.observe(t, 10.0 - 2.0 * t as f64);
        }
        assert_eq!(falling.forecast(60), 0.0);
    }

    #[test]
    fn gaps_count_as_zero_seconds() {
        let mut model = LinearTrend::new(4);
        model.observe(0, 8.0);
        model.observe(4, 0.0);
        // Window [0, 0, 0, 0]: flat at zero.
        assert_eq!(model.forecast(3), 0.0);
    }
}
