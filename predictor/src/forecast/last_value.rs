//! The naive forecast: the next seconds look like the last one.

use super::Forecaster;

/// Forecasts the last observed value at every horizon; the baseline MASE compares against.
#[derive(Debug, Clone, Default)]
pub struct LastValue {
    last: f64,
}

impl LastValue {
    /// A last-value forecaster that forecasts 0 before its first observation.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Forecaster for LastValue {
    fn name(&self) -> &'static str {
        "last_value"
    }

    fn observe(&mut self, _t_sec: u64, value: f64) {
        self.last = value;
    }

    fn forecast(&self, _horizon_sec: u64) -> f64 {
        self.last.max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_the_last_value() {
        let mut model = LastValue::new();
        assert_eq!(model.forecast(5), 0.0);
        model.observe(0, 3.0);
        model.observe(1, 7.0);
        assert_eq!(model.forecast(1), 7.0);
        assert_eq!(model.forecast(60), 7.0);
    }
}
