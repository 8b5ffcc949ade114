//! The feedback loop: every forecast is kept until its target second arrives, then scored.
//!
//! ```text
//!  issue(t, h, points) ──► pending ring of horizon h (slot (t+h) mod (h+1))
//!                                   │
//!  score(t+h, actual) ◄─────────────┘──► per (horizon, model):
//!        recent sums (exponentially decayed) ─► WAPE, MASE vs last value, bias,
//!        all-time sums (since reset_totals)      under-prediction rate, upper coverage
//!        residual ring (actual − point) ─► empirical quantile = the upper-bound margin
//!        the ensemble's standardized residuals ─► DemandRing (demand quantiles for scaling)
//! ```
//!
//! Errors are scale-free ratios over the same points for every model; plain MAPE is never used
//! (it is undefined on the many zero seconds of a quiet service).

use crate::demand::{normal_quantile, DemandRing};

/// Settings of the [`Scoreboard`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreConfig {
    /// Memory of the recent error sums in scored points (default 600, about 10 minutes).
    pub memory_points: f64,
    /// Residuals kept per model and horizon for the upper-bound quantile (default 120: two minutes,
    /// so a past surge stops widening the bound soon after).
    pub residual_window: usize,
    /// Quantile of recent residuals added to the point for the upper bound (default 0.9).
    pub upper_quantile: f64,
    /// Residuals needed before the empirical quantile replaces the Poisson fallback (default 16).
    pub min_residuals: usize,
}

impl Default for ScoreConfig {
    fn default() -> Self {
        Self {
            memory_points: 600.0,
            residual_window: 120,
            upper_quantile: 0.9,
            min_residuals: 16,
        }
    }
}

/// Error statistics of one model at one horizon; ratios are `None` while undefined.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ErrorStats {
    /// Scored points (decayed weight for recent stats).
    pub points: f64,
    /// Mean absolute error in arrivals per second.
    pub mae: Option<f64>,
    /// Σ|error| / Σ|actual|.
    pub wape: Option<f64>,
    /// MAE / MAE of the last-value forecast over the same points (< 1 beats last value).
    pub mase: Option<f64>,
    /// Mean signed error (point − actual) / mean actual; negative means under-prediction.
    pub bias: Option<f64>,
    /// Fraction of points where the actual exceeded the point forecast.
    pub under_rate: Option<f64>,
    /// Fraction of points where the actual was at or below the upper bound.
    pub coverage: Option<f64>,
}

/// Running (optionally decayed) sums behind [`ErrorStats`].
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    weight: f64,
    abs_err: f64,
    abs_actual: f64,
    abs_naive_err: f64,
    signed_err: f64,
    under: f64,
    covered: f64,
}

impl Sums {
    #[inline]
    fn add(&mut self, decay: f64, point: f64, upper: f64, naive: f64, actual: f64) {
        let err = point - actual;
        self.weight = self.weight * decay + 1.0;
        self.abs_err = self.abs_err * decay + err.abs();
        self.abs_actual = self.abs_actual * decay + actual.abs();
        self.abs_naive_err = self.abs_naive_err * decay + (naive - actual).abs();
        self.signed_err = self.signed_err * decay + err;
        self.under = self.under * decay + f64::from(u8::from(actual > point));
        self.covered = self.covered * decay + f64::from(u8::from(actual <= upper));
    }

    /// Adds another run's (undecayed) sums to these.
    fn merge(&mut self, other: &Self) {
        self.weight += other.weight;
        self.abs_err += other.abs_err;
        self.abs_actual += other.abs_actual;
        self.abs_naive_err += other.abs_naive_err;
        self.signed_err += other.signed_err;
        self.under += other.under;
        self.covered += other.covered;
    }

    fn stats(&self) -> ErrorStats {
        let ratio = |num: f64, den: f64| {
            if den > 0.0 {
                Some(num / den)
            } else if num == 0.0 && self.weight > 0.0 {
                Some(0.0)
            } else {
                None
            }
        };
        let per_point = |v: f64| (self.weight > 0.0).then(|| v / self.weight);
        ErrorStats {
            points: self.weight,
            mae: per_point(self.abs_err),
            wape: ratio(self.abs_err, self.abs_actual),
            mase: ratio(self.abs_err, self.abs_naive_err),
            bias: ratio(self.signed_err, self.abs_actual),
            under_rate: per_point(self.under),
            coverage: per_point(self.covered),
        }
    }
}

/// Recent residuals of one model at one horizon and their cached empirical quantile.
#[derive(Debug, Clone)]
struct ResidualRing {
    values: Vec<f64>,
    /// While the ring fills up: its values in order, so the quantile after every push is a
    /// sorted insertion and a lookup instead of a copy and a selection. Freed once full.
    filling: Vec<f64>,
    next: usize,
    since_refresh: usize,
    quantile: f64,
}

impl ResidualRing {
    fn new(capacity: usize) -> Self {
        Self {
            values: Vec::with_capacity(capacity),
            filling: Vec::new(),
            next: 0,
            since_refresh: 0,
            quantile: 0.0,
        }
    }

    fn push(&mut self, residual: f64, capacity: usize, q: f64, scratch: &mut Vec<f64>) {
        if self.values.len() < capacity {
            self.values.push(residual);
            self.next = (self.next + 1) % capacity;
            if self.values.len() < capacity {
                // Filling up: the quantile after every push (the nearest rank a selection
                // over `values` gives).
                let at = self
                    .filling
                    .partition_point(|v| v.total_cmp(&residual).is_lt());
                self.filling.insert(at, residual);
                self.quantile = self.filling[nearest_rank(q, self.filling.len()) - 1];
                self.since_refresh = 0;
                return;
            }
            // The push that fills the ring counts towards the next refresh like any later one.
            self.filling = Vec::new();
        } else {
            self.values[self.next] = residual;
            self.next = (self.next + 1) % capacity;
        }
        self.since_refresh += 1;
        // Refresh the quantile every 1/8 of the window: an O(n) selection amortised to a few
        // nanoseconds per point.
        if self.since_refresh >= (capacity / 8).max(1) {
            self.since_refresh = 0;
            self.quantile = empirical_quantile(&self.values, q, scratch);
        }
    }
}

/// The 1-based nearest rank of quantile `q` among `n > 0` values.
fn nearest_rank(q: f64, n: usize) -> usize {
    ((q.clamp(0.0, 1.0) * n as f64).ceil() as usize).clamp(1, n)
}

/// The `q` quantile of `values` (nearest rank); 0 for no values.
fn empirical_quantile(values: &[f64], q: f64, scratch: &mut Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    scratch.clear();
    scratch.extend_from_slice(values);
    let rank = nearest_rank(q, values.len());
    let (_, nth, _) = scratch.select_nth_unstable_by(rank - 1, f64::total_cmp);
    *nth
}

/// Forecasts waiting for their target second, for one horizon.
#[derive(Debug, Clone)]
struct Pending {
    targets: Vec<u64>,
    naive: Vec<f64>,
    /// `capacity × models` points, then the same for upper bounds.
    points: Vec<f64>,
    uppers: Vec<f64>,
    /// Whether the ensemble's forecast was behind when each was issued (see
    /// [`DemandRing::is_behind`]).
    behind: Vec<bool>,
}

const NO_TARGET: u64 = u64::MAX;

/// Pending forecasts and error statistics for a fixed set of horizons and models.
#[derive(Debug, Clone)]
pub struct Scoreboard {
    config: ScoreConfig,
    horizons: Vec<u64>,
    models: usize,
    decay: f64,
    pending: Vec<Pending>,
    /// Indexed `horizon * models + model`.
    recent: Vec<Sums>,
    totals: Vec<Sums>,
    residuals: Vec<ResidualRing>,
    /// Per horizon: the last model's (the ensemble's) standardized residuals.
    demand: Vec<DemandRing>,
    scratch: Vec<f64>,
    fallback_z: f64,
}

impl Scoreboard {
    /// A scoreboard for `models` models (the ensemble counts as one) at `horizons` seconds.
    pub fn new(horizons: &[u64], models: usize, config: ScoreConfig) -> Self {
        let models = models.max(1);
        let residual_window = config.residual_window.max(1);
        let pending = horizons
            .iter()
            .map(|h| {
                let capacity = (*h as usize).saturating_add(1);
                Pending {
                    targets: vec![NO_TARGET; capacity],
                    naive: vec![0.0; capacity],
                    points: vec![0.0; capacity * models],
                    uppers: vec![0.0; capacity * models],
                    behind: vec![false; capacity],
                }
            })
            .collect();
        let cells = horizons.len() * models;
        Self {
            config: ScoreConfig {
                residual_window,
                ..config
            },
            horizons: horizons.to_vec(),
            models,
            decay: 1.0 - 1.0 / config.memory_points.max(1.0),
            pending,
            recent: vec![Sums::default(); cells],
            totals: vec![Sums::default(); cells],
            residuals: (0..cells)
                .map(|_| ResidualRing::new(residual_window))
                .collect(),
            demand: horizons.iter().map(|_| DemandRing::new()).collect(),
            scratch: Vec::with_capacity(residual_window),
            fallback_z: normal_quantile(config.upper_quantile).max(0.0),
        }
    }

    /// The horizons scored, in seconds.
    pub fn horizons(&self) -> &[u64] {
        &self.horizons
    }

    /// Number of models scored.
    pub fn models(&self) -> usize {
        self.models
    }

    /// Stores the forecasts issued at `t_sec` for horizon number `horizon`: `naive` is the
    /// last-value forecast, `points`/`uppers` one per model.
    pub fn issue(
        &mut self,
        horizon: usize,
        t_sec: u64,
        naive: f64,
        points: &[f64],
        uppers: &[f64],
    ) {
        let Some(pending) = self.pending.get_mut(horizon) else {
            return;
        };
        let target = t_sec.saturating_add(self.horizons[horizon]);
        let capacity = pending.targets.len();
        let slot = (target % capacity as u64) as usize;
        pending.targets[slot] = target;
        pending.naive[slot] = naive;
        pending.behind[slot] = self.demand.get(horizon).is_some_and(DemandRing::is_behind);
        let m = self.models;
        for (dst, src) in pending.points[slot * m..(slot + 1) * m]
            .iter_mut()
            .zip(points)
        {
            *dst = *src;
        }
        for (dst, src) in pending.uppers[slot * m..(slot + 1) * m]
            .iter_mut()
            .zip(uppers)
        {
            *dst = *src;
        }
    }

    /// Scores every pending forecast whose target is `t_sec` against `actual`.
    pub fn score(&mut self, t_sec: u64, actual: f64) {
        let m = self.models;
        let q = self.config.upper_quantile;
        let capacity_r = self.config.residual_window;
        for (h, pending) in self.pending.iter_mut().enumerate() {
            let slot = (t_sec % pending.targets.len() as u64) as usize;
            if pending.targets[slot] != t_sec {
                continue;
            }
            pending.targets[slot] = NO_TARGET;
            let naive = pending.naive[slot];
            for model in 0..m {
                let point = pending.points[slot * m + model];
                let upper = pending.uppers[slot * m + model];
                let cell = h * m + model;
                self.recent[cell].add(self.decay, point, upper, naive, actual);
                self.totals[cell].add(1.0, point, upper, naive, actual);
                self.residuals[cell].push(actual - point, capacity_r, q, &mut self.scratch);
            }
            let last = pending.points[slot * m + m - 1];
            if let Some(ring) = self.demand.get_mut(h) {
                ring.push(last, actual, pending.behind[slot]);
            }
        }
    }

    /// The count a second forecast at `point` by the last model (the ensemble) at horizon
    /// number `horizon` stays at or below with probability `q`, from its recent errors in units
    /// of Poisson noise (see [`DemandRing`]).
    pub fn demand(&self, horizon: usize, point: f64, q: f64) -> f64 {
        match self.demand.get(horizon) {
            Some(ring) => ring.demand(point, q),
            None => DemandRing::new().demand(point, q),
        }
    }

    /// Margin to add to `point` for the upper bound of `model` at horizon number `horizon`: the
    /// configured quantile of its recent residuals, or a Poisson-style `z·√point` until enough
    /// residuals are known. Never negative.
    pub fn margin(&self, horizon: usize, model: usize, point: f64) -> f64 {
        let Some(ring) = self.residuals.get(horizon * self.models + model) else {
            return 0.0;
        };
        if ring.values.len() >= self.config.min_residuals {
            ring.quantile.max(0.0)
        } else {
            self.fallback_z * point.max(1.0).sqrt()
        }
    }

    /// Mean absolute error of `model` at horizon number `horizon` over the recent memory, with the
    /// decayed number of points behind it.
    pub fn recent_mae(&self, horizon: usize, model: usize) -> (f64, f64) {
        match self.recent.get(horizon * self.models + model) {
            Some(sums) if sums.weight > 0.0 => (sums.abs_err / sums.weight, sums.weight),
            _ => (0.0, 0.0),
        }
    }

    /// Recent (decayed) error statistics.
    pub fn recent(&self, horizon: usize, model: usize) -> ErrorStats {
        self.recent
            .get(horizon * self.models + model)
            .map(Sums::stats)
            .unwrap_or_default()
    }

    /// Error statistics over every point scored since the last [`Self::reset_totals`].
    pub fn total(&self, horizon: usize, model: usize) -> ErrorStats {
        self.totals
            .get(horizon * self.models + model)
            .map(Sums::stats)
            .unwrap_or_default()
    }

    /// Restarts the all-time sums (the offline evaluation calls this at the train/test split).
    pub fn reset_totals(&mut self) {
        self.totals.fill(Sums::default());
    }

    /// Adds `other`'s all-time sums to this one's (same horizons and models; cells beyond
    /// either are ignored): an offline evaluation keeps the scores of an ensemble it drops.
    pub fn merge_totals(&mut self, other: &Self) {
        for (mine, theirs) in self.totals.iter_mut().zip(&other.totals) {
            mine.merge(theirs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filling_ring_keeps_the_quantile_a_selection_gives_then_refreshes_every_eighth() {
        let (capacity, q) = (40, 0.9);
        let mut ring = ResidualRing::new(capacity);
        let mut scratch = Vec::new();
        let mut x = 7u64;
        let mut quantiles = Vec::new();
        for i in 0..200 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let residual = (x >> 40) as f64 / 1e4 - 500.0;
            ring.push(residual, capacity, q, &mut scratch);
            quantiles.push(ring.quantile);
            if i + 1 < capacity {
                let expected = empirical_quantile(&ring.values, q, &mut Vec::new());
                assert_eq!(ring.quantile, expected, "push {i}");
            }
        }
        assert!(ring.filling.is_empty() && ring.filling.capacity() == 0);
        // Full: the push that fills it counts as the first of the 5 (1/8 of 40) between
        // refreshes, so the quantile changes only at pushes 44, 49, 54, …
        let changes: Vec<usize> = (capacity..200)
            .filter(|&i| quantiles[i] != quantiles[i - 1])
            .collect();
        assert!(
            changes.iter().all(|i| (i - 43) % 5 == 0 && *i >= 43),
            "{changes:?}"
        );
        assert!(!changes.is_empty());
    }

    #[test]
    fn scores_forecasts_when_their_target_arrives() {
        let mut board = Scoreboard::new(&[2], 2, ScoreConfig::default());
        // At t=0 model 0 says 10, model 1 says 4; last value was 6. At t=2 the actual is 10.
        board.issue(0, 0, 6.0, &[10.0, 4.0], &[12.0, 5.0]);
        board.score(1, 3.0); // not the target
        assert_eq!(board.total(0, 0).points, 0.0);
        board.score(2, 10.0);
        let exact = board.total(0, 0);
        assert_eq!(exact.points, 1.0);
        assert_eq!(exact.wape, Some(0.0));
        assert_eq!(exact.mase, Some(0.0));
        assert_eq!(exact.coverage, Some(1.0));
        assert_eq!(exact.under_rate, Some(0.0));
        let low = board.total(0, 1);
        assert_eq!(low.wape, Some(0.6));
        assert_eq!(low.mase, Some(1.5)); // |4−10| / |6−10|
        assert_eq!(low.bias, Some(-0.6));
        assert_eq!(low.under_rate, Some(1.0));
        assert_eq!(low.coverage, Some(0.0));
        // Scored once only.
        board.score(2, 10.0);
        assert_eq!(board.total(0, 0).points, 1.0);
    }

    #[test]
    fn undefined_ratios_are_none_and_perfect_zero_is_zero() {
        let mut board = Scoreboard::new(&[1], 1, ScoreConfig::default());
        assert_eq!(board.total(0, 0).wape, None);
        board.issue(0, 0, 0.0, &[0.0], &[0.0]);
        board.score(1, 0.0);
        assert_eq!(board.total(0, 0).wape, Some(0.0));
        board.issue(0, 1, 0.0, &[1.0], &[1.0]);
        board.score(2, 0.0);
        assert_eq!(board.total(0, 0).wape, None);
    }

    #[test]
    fn recent_stats_forget_and_totals_reset() {
        let config = ScoreConfig {
            memory_points: 10.0,
            ..ScoreConfig::default()
        };
        let mut board = Scoreboard::new(&[1], 1, config);
        for t in 0..200 {
            let point = if t < 100 { 0.0 } else { 10.0 };
            board.issue(0, t, 10.0, &[point], &[point]);
            board.score(t + 1, 10.0);
        }
        assert!(board.recent(0, 0).wape.unwrap_or(1.0) < 0.01);
        assert!((board.total(0, 0).wape.unwrap_or(0.0) - 0.5).abs() < 0.01);
        board.reset_totals();
        assert_eq!(board.total(0, 0).points, 0.0);
    }

    #[test]
    fn margin_is_the_residual_quantile() {
        let mut board = Scoreboard::new(&[1], 1, ScoreConfig::default());
        // Before enough residuals: z(0.9)·√point.
        assert!((board.margin(0, 0, 4.0) - 2.0 * 1.281_551_565).abs() < 1e-6);
        // Residuals 1..=100: the 90th percentile is 90.
        for t in 0..100u64 {
            board.issue(0, t, 0.0, &[0.0], &[0.0]);
            board.score(t + 1, (t + 1) as f64);
        }
        assert_eq!(board.margin(0, 0, 0.0), 90.0);
    }

    #[test]
    fn empirical_quantile_uses_nearest_rank() {
        let mut scratch = Vec::new();
        let values: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(empirical_quantile(&values, 0.9, &mut scratch), 9.0);
        assert_eq!(empirical_quantile(&values, 1.0, &mut scratch), 10.0);
        assert_eq!(empirical_quantile(&values, 0.0, &mut scratch), 1.0);
        assert_eq!(empirical_quantile(&[], 0.5, &mut scratch), 0.0);
    }

    #[test]
    fn a_crowd_raises_the_demand_by_what_earlier_crowds_missed() {
        let mut board = Scoreboard::new(&[5], 1, ScoreConfig::default());
        // A forecast stuck at 100 over calm seconds 100 ± 20, an earlier two-minute crowd at
        // 300, then calm again.
        let actual = |t: u64| match t {
            3_600..3_720 => 300.0,
            _ => 100.0 + 10.0 * ((t % 5) as f64 - 2.0),
        };
        let mut t = 0;
        while t < 4_400 {
            board.score(t, actual(t));
            board.issue(0, t, 100.0, &[100.0], &[100.0]);
            t += 1;
        }
        let calm = board.demand(0, 100.0, 0.9);
        assert!(
            calm > 100.0 && calm < 125.0,
            "calm seconds pay for calm misses: {calm}"
        );
        // The first second of the next crowd leaves the forecast behind: the forecasts issued
        // now are priced by what those of the earlier crowd missed.
        board.score(t, 300.0);
        let behind = board.demand(0, 100.0, 0.9);
        assert!(behind > 280.0, "{behind}");
        assert!(board.demand(0, 100.0, 0.5) <= behind);
    }
}
