//! Holt's linear method with a damped trend: level plus a trend that fades with the horizon.

use super::Forecaster;

/// Smoothing factors of [`Holt`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HoltConfig {
    /// Level smoothing (default 0.05, about 20 s of memory).
    pub alpha: f64,
    /// Trend smoothing (default 0.005).
    pub beta: f64,
    /// Trend damping per second (default 0.95: the trend adds at most about 19 s of slope).
    pub phi: f64,
}

impl Default for HoltConfig {
    fn default() -> Self {
        Self {
            alpha: 0.05,
            beta: 0.005,
            phi: 0.95,
        }
    }
}

/// Damped-trend Holt: `forecast(h) = level + (φ + φ² + … + φʰ)·trend`.
#[derive(Debug, Clone)]
pub struct Holt {
    config: HoltConfig,
    level: f64,
    trend: f64,
    seen: u64,
}

impl Holt {
    /// A Holt model with the given factors (clamped to [0, 1]).
    pub fn new(config: HoltConfig) -> Self {
        Self {
            config: HoltConfig {
                alpha: config.alpha.clamp(0.0, 1.0),
                beta: config.beta.clamp(0.0, 1.0),
                phi: config.phi.clamp(0.0, 1.0),
            },
            level: 0.0,
            trend: 0.0,
            seen: 0,
        }
    }

    /// Current smoothed level.
    pub fn level(&self) -> f64 {
        self.level
    }

    /// Current trend per second.
    pub fn trend(&self) -> f64 {
        self.trend
    }

    /// Updates level and trend with one value (any sign: the seasonal model feeds deseasonalised
    /// values).
    pub fn update(&mut self, value: f64) {
        let HoltConfig { alpha, beta, phi } = self.config;
        match self.seen {
            // The trend starts flat: two noisy first seconds say nothing about a slope, and with
            // a slow trend factor a wrong start would linger for minutes.
            0 => self.level = value,
            _ => {
                let previous = self.level;
                self.level = alpha * value + (1.0 - alpha) * (previous + phi * self.trend);
                self.trend = beta * (self.level - previous) + (1.0 - beta) * phi * self.trend;
            }
        }
        self.seen = self.seen.saturating_add(1);
    }

    /// The raw (possibly negative) forecast `horizon_sec` ahead.
    pub fn project(&self, horizon_sec: u64) -> f64 {
        let phi = self.config.phi;
        let h = horizon_sec.min(i32::MAX as u64) as i32;
        let damped = if (1.0 - phi).abs() < 1e-12 {
            f64::from(h)
        } else {
            phi * (1.0 - phi.powi(h)) / (1.0 - phi)
        };
        self.level + damped * self.trend
    }
}

impl Forecaster for Holt {
    fn name(&self) -> &'static str {
        "holt"
    }

    fn observe(&mut self, _t_sec: u64, value: f64) {
        self.update(value);
    }

    fn forecast(&self, horizon_sec: u64) -> f64 {
        self.project(horizon_sec).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_a_ramp_better_than_a_flat_level() {
        let mut model = Holt::new(HoltConfig {
            alpha: 0.3,
            beta: 0.1,
            phi: 1.0,
        });
        for t in 0..300 {
            model.observe(t, t as f64);
        }
        // Undamped on a clean ramp: the forecast continues the line.
        assert!(
            (model.forecast(10) - 309.0).abs() < 1.0,
            "{}",
            model.forecast(10)
        );
    }

    #[test]
    fn damping_bounds_the_trend_contribution() {
        let mut model = Holt::new(HoltConfig::default());
        for t in 0..2_000 {
            model.observe(t, t as f64);
        }
        let near = model.forecast(5) - model.level();
        let far = model.forecast(10_000) - model.level();
        assert!(near > 0.0);
        // φ/(1-φ) = 19 seconds of slope at most.
        assert!(far <= 19.0 * model.trend() + 1e-9);
    }

    #[test]
    fn never_forecasts_negative_arrivals() {
        let mut model = Holt::new(HoltConfig::default());
        for t in 0..100 {
            model.observe(t, (100 - t) as f64);
        }
        for _ in 0..5 {
            model.observe(100, 0.0);
        }
        assert!(model.forecast(60) >= 0.0);
    }
}
