//! Exponentially weighted moving average: a flat forecast of the smoothed level.

use super::Forecaster;

/// Flat forecast of an exponentially weighted level; `alpha` near 1 follows the last value,
/// near 0 averages over about `1/alpha` seconds.
#[derive(Debug, Clone)]
pub struct Ewma {
    name: &'static str,
    alpha: f64,
    level: Option<f64>,
}

impl Ewma {
    /// An EWMA named `name` with smoothing factor `alpha` (clamped to (0, 1]).
    pub fn new(name: &'static str, alpha: f64) -> Self {
        Self {
            name,
            alpha: alpha.clamp(f64::MIN_POSITIVE, 1.0),
            level: None,
        }
    }

    /// The smoothing factor.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }
}

impl Forecaster for Ewma {
    fn name(&self) -> &'static str {
        self.name
    }

    fn observe(&mut self, _t_sec: u64, value: f64) {
        self.level = Some(match self.level {
            Some(level) => level + self.alpha * (value - level),
            None => value,
        });
    }

    fn forecast(&self, _horizon_sec: u64) -> f64 {
        self.level.unwrap_or(0.0).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converges_to_a_constant_and_smooths_noise() {
        let mut model = Ewma::new("ewma", 0.1);
        model.observe(0, 10.0);
        assert_eq!(model.forecast(5), 10.0);
        for t in 1..200 {
            model.observe(t, if t % 2 == 0 { 12.0 } else { 8.0 });
        }
        assert!((model.forecast(5) - 10.0).abs() < 0.3);
    }

    #[test]
    fn alpha_is_clamped() {
        assert_eq!(Ewma::new("e", 3.0).alpha(), 1.0);
        assert!(Ewma::new("e", -1.0).alpha() > 0.0);
    }
}
