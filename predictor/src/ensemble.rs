//! The per-service ensemble: every model forecasts every horizon, each forecast is scored, and the
//! ensemble weights models by their recent error at that horizon.
//!
//! ```text
//!  observe(t, value)
//!    1. scoreboard.score(t, value)          forecasts issued at t − h meet their actual
//!    2. model.observe(t, value)             for every model (by default: last value, EWMA fast
//!                                           and slow, Holt, trend, seasonal, autoregressive)
//!    3. per horizon h:
//!         weights  w_m ∝ 1 / MAE_m(h)²      (the highest model until enough points are scored)
//!         point    Σ w_m · f_m(h)
//!         upper    point + quantile of the ensemble's own residuals at h
//!       scoreboard.issue(t, h, …)           the last value is kept for MASE
//! ```
//!
//! Work per second is a fixed number of float operations per model and horizon; state is
//! bounded by the horizons, the residual window, the seasonal history and the autoregression's
//! day of per-minute means.

use crate::forecast::{default_models, Forecast, Forecaster};
use crate::score::{ErrorStats, ScoreConfig, Scoreboard};

/// Name of the combined forecast in snapshots and reports.
pub const ENSEMBLE: &str = "ensemble";

impl Forecast {
    /// The ensemble's forecast of no traffic at `horizon_sec` (an idle service's).
    pub fn none(horizon_sec: u64) -> Self {
        Self {
            model: ENSEMBLE,
            horizon_sec,
            point: 0.0,
            upper: 0.0,
        }
    }
}

/// Settings of an [`Ensemble`].
#[derive(Debug, Clone, PartialEq)]
pub struct EnsembleConfig {
    /// Horizons forecast and scored every second (default 5, 10, 30, 60 s).
    pub horizons: Vec<u64>,
    /// Error memory, residual window and upper quantile.
    pub score: ScoreConfig,
    /// Recent scored points a horizon needs before models are weighted by error (default 30).
    pub min_scored_points: f64,
    /// Sharpness of the weighting: `w_m ∝ (best MAE / MAE_m)^power`. 2 is classic inverse-MSE
    /// combining; larger values concentrate on the best model (default 8).
    pub weight_power: f64,
}

/// The shortest quiet spell after which a service's ensemble is dropped (see
/// [`EnsembleConfig::idle_forget_secs`]): an hour, longer than the quiet spells inside a
/// service's normal traffic on the traces we hold. Ten minutes was measured too: replaying a
/// sparse fleet costs a sixth, but NASA's week at 1× (night lulls of 10 to 60 minutes) then
/// rebuilds untrained ensembles after each lull, and at the cheapest KPA targets Forecourt
/// waited 0.21–0.23 of KPA's instead of 0.09.
pub const IDLE_FORGET_SECS: u64 = 3_600;

impl EnsembleConfig {
    /// Seconds without an arrival after which a service's ensemble is dropped and rebuilt,
    /// untrained, at the next arrival: [`IDLE_FORGET_SECS`], or ten times the longest horizon
    /// when that is longer (every forecast issued before the quiet is scored by then). Ticking,
    /// forecasting and replaying a mostly idle fleet costs its busy stretches and these tails,
    /// not its length.
    pub fn idle_forget_secs(&self) -> u64 {
        let longest = self.horizons.iter().copied().max().unwrap_or(0);
        longest.saturating_mul(10).max(IDLE_FORGET_SECS)
    }
}

impl Default for EnsembleConfig {
    fn default() -> Self {
        Self {
            horizons: vec![5, 10, 30, 60],
            score: ScoreConfig::default(),
            min_scored_points: 10.0,
            weight_power: 8.0,
        }
    }
}

/// One model's part in a horizon of an [`EnsembleSnapshot`].
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSnapshot {
    /// The model's own forecast and upper bound.
    pub forecast: Forecast,
    /// Its weight in the ensemble at this horizon (weights sum to 1).
    pub weight: f64,
    /// Its recent error statistics at this horizon.
    pub recent: ErrorStats,
}

/// Everything about one horizon of an [`EnsembleSnapshot`].
#[derive(Debug, Clone, PartialEq)]
pub struct HorizonSnapshot {
    /// The ensemble's forecast.
    pub ensemble: Forecast,
    /// The ensemble's recent error statistics.
    pub ensemble_recent: ErrorStats,
    /// Every model, in model order.
    pub models: Vec<ModelSnapshot>,
}

/// A plain copy of an ensemble's state for `/v1/forecasts` and `/metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct EnsembleSnapshot {
    /// The last observed second, or `None` before the first.
    pub at_sec: Option<u64>,
    /// One entry per configured horizon.
    pub horizons: Vec<HorizonSnapshot>,
}

/// Models, their scores and the weighted combination for one service.
pub struct Ensemble {
    config: EnsembleConfig,
    models: Vec<Box<dyn Forecaster>>,
    names: Vec<&'static str>,
    scoreboard: Scoreboard,
    last_t: Option<u64>,
    /// Per horizon: model points then the ensemble's (models + 1 values).
    points: Vec<f64>,
    uppers: Vec<f64>,
    /// Per horizon: model weights.
    weights: Vec<f64>,
}

impl std::fmt::Debug for Ensemble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ensemble")
            .field("models", &self.names)
            .field("horizons", &self.config.horizons)
            .field("last_t", &self.last_t)
            .finish_non_exhaustive()
    }
}

impl Ensemble {
    /// An ensemble of the default models.
    pub fn new(config: EnsembleConfig) -> Self {
        Self::with_models(default_models(), config)
    }

    /// An ensemble of the given models (at least one is needed for a useful forecast).
    pub fn with_models(models: Vec<Box<dyn Forecaster>>, config: EnsembleConfig) -> Self {
        let names: Vec<&'static str> = models.iter().map(|m| m.name()).collect();
        let width = names.len() + 1;
        let horizons = config.horizons.len();
        let equal = 1.0 / names.len().max(1) as f64;
        Self {
            scoreboard: Scoreboard::new(&config.horizons, width, config.score),
            models,
            points: vec![0.0; horizons * width],
            uppers: vec![0.0; horizons * width],
            weights: vec![equal; horizons * names.len()],
            names,
            config,
            last_t: None,
        }
    }

    /// The configured horizons in seconds.
    pub fn horizons(&self) -> &[u64] {
        &self.config.horizons
    }

    /// Model names in model order (the ensemble is not included).
    pub fn model_names(&self) -> &[&'static str] {
        &self.names
    }

    /// The last observed second.
    pub fn last_observed(&self) -> Option<u64> {
        self.last_t
    }

    /// The scoreboard (model `i` is `model_names()[i]`; the ensemble is the last model).
    pub fn scoreboard(&self) -> &Scoreboard {
        &self.scoreboard
    }

    /// Mutable access to the scoreboard, e.g. to reset totals at an evaluation split.
    pub fn scoreboard_mut(&mut self) -> &mut Scoreboard {
        &mut self.scoreboard
    }

    /// Feeds the models only: no forecasts, no scoring (fast training on history).
    pub fn observe_only(&mut self, t_sec: u64, value: f64) {
        for model in &mut self.models {
            model.observe(t_sec, value);
        }
        self.last_t = Some(t_sec);
    }

    /// Feeds second `t_sec`: scores due forecasts, updates models, issues new forecasts.
    pub fn observe(&mut self, t_sec: u64, value: f64) {
        self.scoreboard.score(t_sec, value);
        self.observe_only(t_sec, value);
        let n = self.models.len();
        let width = n + 1;
        for h in 0..self.config.horizons.len() {
            let horizon = self.config.horizons[h];
            for (m, model) in self.models.iter().enumerate() {
                let point = model.forecast(horizon);
                self.points[h * width + m] = point;
                self.uppers[h * width + m] = point + self.scoreboard.margin(h, m, point);
            }
            self.update_weights(h);
            let ensemble: f64 = (0..n)
                .map(|m| self.weights[h * n + m] * self.points[h * width + m])
                .sum();
            self.points[h * width + n] = ensemble;
            self.uppers[h * width + n] = ensemble + self.scoreboard.margin(h, n, ensemble);
            self.scoreboard.issue(
                h,
                t_sec,
                value,
                &self.points[h * width..(h + 1) * width],
                &self.uppers[h * width..(h + 1) * width],
            );
        }
    }

    /// Recomputes the weights of horizon number `h` from recent errors.
    fn update_weights(&mut self, h: usize) {
        let n = self.models.len();
        if n == 0 {
            return;
        }
        let weights = &mut self.weights[h * n..(h + 1) * n];
        let (_, scored) = self.scoreboard.recent_mae(h, 0);
        if scored < self.config.min_scored_points {
            // No track record yet: follow the most pessimistic model, because under-predicting
            // costs a cold start while over-predicting only costs an idle instance for a while.
            let width = n + 1;
            let highest = (0..n)
                .max_by(|&a, &b| self.points[h * width + a].total_cmp(&self.points[h * width + b]))
                .unwrap_or(0);
            weights.fill(0.0);
            weights[highest] = 1.0;
            return;
        }
        let best = (0..n)
            .map(|m| self.scoreboard.recent_mae(h, m).0)
            .fold(f64::INFINITY, f64::min);
        // A floor keeps a perfect model from taking an infinite ratio and keeps all-zero errors
        // at equal weights.
        let floor = 1e-6 * best + 1e-12;
        let power = self.config.weight_power;
        // The default power is a whole number: repeated multiplication (`powi`) instead of
        // `pow`, which cost a tenth of a modelled second (24 calls of it a second).
        let whole = (power.fract() == 0.0 && power.abs() <= 64.0).then_some(power as i32);
        let mut total = 0.0;
        for (m, weight) in weights.iter_mut().enumerate() {
            let mae = self.scoreboard.recent_mae(h, m).0;
            let ratio = (best + floor) / (mae + floor);
            *weight = match whole {
                Some(power) => ratio.powi(power),
                None => ratio.powf(power),
            };
            total += *weight;
        }
        for weight in weights.iter_mut() {
            *weight /= total;
        }
    }

    fn horizon_index(&self, horizon_sec: u64) -> Option<usize> {
        let horizons = &self.config.horizons;
        horizons
            .iter()
            .position(|h| *h >= horizon_sec)
            .or_else(|| horizons.len().checked_sub(1))
    }

    /// The ensemble forecast for configured horizon number `h` (as of the last observation).
    pub fn forecast(&self, h: usize) -> Option<Forecast> {
        let horizon_sec = *self.config.horizons.get(h)?;
        let width = self.models.len() + 1;
        Some(Forecast {
            model: ENSEMBLE,
            horizon_sec,
            point: self.points[h * width + width - 1],
            upper: self.uppers[h * width + width - 1],
        })
    }

    /// The ensemble forecast for any horizon: the models are asked directly and combined with
    /// the weights and error margin of the nearest configured horizon at or above it.
    pub fn forecast_at(&self, horizon_sec: u64) -> Forecast {
        let Some(h) = self.horizon_index(horizon_sec) else {
            return Forecast {
                model: ENSEMBLE,
                horizon_sec,
                point: 0.0,
                upper: 0.0,
            };
        };
        let n = self.models.len();
        let point: f64 = self
            .models
            .iter()
            .enumerate()
            .map(|(m, model)| self.weights[h * n + m] * model.forecast(horizon_sec))
            .sum();
        Forecast {
            model: ENSEMBLE,
            horizon_sec,
            point,
            upper: point + self.scoreboard.margin(h, n, point),
        }
    }

    /// The count the second `horizon_sec` ahead stays at or below with probability `q`: the
    /// point of [`Self::forecast_at`] plus the `q` quantile of the ensemble's recent errors at
    /// the nearest configured horizon at or above it, in units of Poisson noise (see
    /// [`crate::demand`]).
    pub fn demand_at(&self, horizon_sec: u64, q: f64) -> f64 {
        let point = self.forecast_at(horizon_sec).point;
        match self.horizon_index(horizon_sec) {
            Some(h) => self.scoreboard.demand(h, point, q),
            None => 0.0,
        }
    }

    /// Current weight of model `m` at horizon number `h`.
    pub fn weight(&self, h: usize, m: usize) -> f64 {
        let n = self.models.len();
        self.weights.get(h * n + m).copied().unwrap_or(0.0)
    }

    /// The model with the largest weight at horizon number `h`.
    pub fn leading_model(&self, h: usize) -> Option<&'static str> {
        let n = self.models.len();
        let weights = self.weights.get(h * n..(h + 1) * n)?;
        let (m, _) = weights
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))?;
        Some(self.names[m])
    }

    /// A plain copy of forecasts, weights and recent errors at every horizon.
    pub fn snapshot(&self) -> EnsembleSnapshot {
        let n = self.models.len();
        let width = n + 1;
        let horizons = self
            .config
            .horizons
            .iter()
            .enumerate()
            .map(|(h, &horizon_sec)| HorizonSnapshot {
                ensemble: Forecast {
                    model: ENSEMBLE,
                    horizon_sec,
                    point: self.points[h * width + n],
                    upper: self.uppers[h * width + n],
                },
                ensemble_recent: self.scoreboard.recent(h, n),
                models: (0..n)
                    .map(|m| ModelSnapshot {
                        forecast: Forecast {
                            model: self.names[m],
                            horizon_sec,
                            point: self.points[h * width + m],
                            upper: self.uppers[h * width + m],
                        },
                        weight: self.weights[h * n + m],
                        recent: self.scoreboard.recent(h, m),
                    })
                    .collect(),
            })
            .collect();
        EnsembleSnapshot {
            at_sec: self.last_t,
            horizons,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random noise in [-1, 1).
    fn noise(i: u64) -> f64 {
        let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x2545_f491_4f6c_dd1d;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        (x >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }

    #[test]
    fn issues_scores_and_snapshots_every_horizon() {
        let mut ensemble = Ensemble::new(EnsembleConfig::default());
        for t in 0..300 {
            ensemble.observe(t, 10.0);
        }
        let snapshot = ensemble.snapshot();
        assert_eq!(snapshot.at_sec, Some(299));
        assert_eq!(snapshot.horizons.len(), 4);
        for horizon in &snapshot.horizons {
            assert!((horizon.ensemble.point - 10.0).abs() < 1e-6);
            assert!(horizon.ensemble.upper >= horizon.ensemble.point);
            assert_eq!(horizon.models.len(), 7);
            let weights: f64 = horizon.models.iter().map(|m| m.weight).sum();
            assert!((weights - 1.0).abs() < 1e-9);
            assert!(horizon.ensemble_recent.points > 150.0);
            assert_eq!(horizon.ensemble_recent.wape.map(|w| w < 1e-6), Some(true));
        }
    }

    #[test]
    fn follows_the_highest_model_until_it_has_a_track_record() {
        let mut ensemble = Ensemble::new(EnsembleConfig {
            horizons: vec![5],
            ..EnsembleConfig::default()
        });
        // A ramp from a standing start: the smoothed models lag, the trend does not.
        for t in 0..12u64 {
            ensemble.observe(t, 4.0 + 2.0 * t as f64);
        }
        let forecast = ensemble.forecast(0).expect("forecast");
        // Seven forecasts scored so far: the ensemble is the highest model's forecast.
        let snapshot = ensemble.snapshot();
        let models = &snapshot.horizons[0].models;
        let highest = models
            .iter()
            .max_by(|a, b| a.forecast.point.total_cmp(&b.forecast.point))
            .expect("models");
        assert_eq!(forecast.point, highest.forecast.point, "{forecast:?}");
        assert_eq!(ensemble.leading_model(0), Some(highest.forecast.model));
        // The last value is 26; the trend extends the ramp to 36 five seconds later, so the
        // ensemble is at least that, where the smoothed levels lag.
        let point = |name: &str| {
            let model = models.iter().find(|m| m.forecast.model == name);
            model.map_or(f64::NAN, |m| m.forecast.point)
        };
        assert!((point("trend") - 36.0).abs() < 1e-6);
        assert!(point("holt") < 30.0 && point("ewma_slow") < 30.0);
        assert!(forecast.point >= 36.0 - 1e-6, "{forecast:?}");
    }

    #[test]
    fn switches_to_the_better_model_when_the_series_changes_character() {
        let mut ensemble = Ensemble::new(EnsembleConfig::default());
        // Phase 1: noisy constant. Smoothing wins; the last value chases noise.
        let mut t = 0;
        while t < 3_000 {
            ensemble.observe(t, 50.0 + 20.0 * noise(t));
            t += 1;
        }
        let h = 0; // 5 s
        let smooth = ensemble.leading_model(h);
        assert!(
            matches!(smooth, Some("ewma_slow" | "holt" | "seasonal")),
            "{smooth:?}"
        );
        let last_value = ensemble.weight(h, 0);
        assert!(
            (1..5).all(|m| ensemble.weight(h, m) > last_value),
            "last value {last_value}"
        );
        // Phase 2: a clean random walk with big steps. Now the last value is the best forecast.
        let mut level = 50.0;
        while t < 6_000 {
            level = (level + 10.0 * noise(t)).max(0.0);
            ensemble.observe(t, level);
            t += 1;
        }
        assert_eq!(ensemble.leading_model(h), Some("last_value"));
        assert!(ensemble.weight(h, 0) > 0.4);
    }

    #[test]
    fn ensemble_beats_last_value_on_noisy_load() {
        let mut ensemble = Ensemble::new(EnsembleConfig::default());
        for t in 0..5_000 {
            ensemble.observe(t, 20.0 + 10.0 * noise(t));
        }
        let n = ensemble.model_names().len();
        let stats = ensemble.scoreboard().total(1, n);
        assert!(stats.mase.unwrap_or(1.0) < 0.8, "{stats:?}");
        let coverage = stats.coverage.unwrap_or(0.0);
        assert!((0.8..=0.97).contains(&coverage), "{coverage}");
    }

    #[test]
    fn forecast_at_any_horizon_uses_the_nearest_configured_one() {
        let mut ensemble = Ensemble::new(EnsembleConfig::default());
        for t in 0..200 {
            ensemble.observe(t, 4.0);
        }
        let f = ensemble.forecast_at(45);
        assert_eq!(f.horizon_sec, 45);
        assert!((f.point - 4.0).abs() < 1e-6);
        assert!(f.upper >= f.point);
        assert_eq!(ensemble.forecast_at(1_000).horizon_sec, 1_000);
        assert_eq!(ensemble.forecast(1).map(|f| f.horizon_sec), Some(10));
        assert_eq!(ensemble.forecast(9), None);
    }

    #[test]
    fn no_models_forecasts_zero() {
        let mut ensemble = Ensemble::with_models(Vec::new(), EnsembleConfig::default());
        ensemble.observe(0, 5.0);
        assert_eq!(ensemble.forecast(0).map(|f| f.point), Some(0.0));
    }
}
