//! Online autoregression: for each of a few horizons, a ridge regression of the value `h`
//! seconds later on a handful of features of the recent past and of the same time yesterday,
//! refitted every second by exponentially weighted least squares on log counts.
//!
//! ```text
//!  second y ─┬─► EWMA (300 s) ─► anchor a_t = ℓ EWMA                          ℓ = log1p
//!            ├─► value ring (64 s) ─► r_t = [1, ℓy − a, ℓ mean 5 s − a, ℓ mean 15 s − a,
//!            │                               ℓ mean 60 s − a]
//!            ├─► minute means ─► day ring (1440 + 1 minutes) ─► Y(s) = ℓ mean rate of the
//!            │                                                 minute holding s − 1 day
//!            └─► per fitted horizon h ∈ {1, 5, 10, 30, 60}, pairing second t − h with t:
//!                  x = [r_{t−h}, Y(t) − Y(t − h)]       z = ℓ y_t − a_{t−h}  (Y unknown: 0)
//!                  A ← λA + x·xᵀ,  b ← λb + z·x         λ = 0.999 (about 1000 s of memory)
//!                  w = (A + δI)⁻¹ (b + δ·w₀)             Cholesky of 6 × 6, one horizon per
//!                                                       second; w₀: mean of the 4 recent levels
//!  forecast(h) = expm1(a_t + w · [r_t, Y(t + h) − Y(t)])   with the nearest fitted h
//! ```
//!
//! Everything is relative to the anchor: the regression learns how far the next values sit
//! from the five-minute level given the recent ones, so a service ten times busier than any it
//! was fitted on is forecast ten times higher (an unanchored log regression would raise the
//! level to the power of its weights' sum, and overshoot badly while that sum is still being
//! learned). The daily feature is yesterday's change between now and the target: what a daily
//! pattern says about the next minute; until a day of history exists it is 0 (no change known).
//! The ridge is kept at full strength (it is not forgotten with the data), so directions the
//! series never excites (a constant series excites none but the intercept) stay at the prior
//! instead of winding up. Per second: a 6 × 6 rank-one update per fitted horizon and one
//! Cholesky solve, a few hundred flops; no allocation after construction.

use super::{sanitize, Forecaster};

/// Horizons with their own weights, in seconds; other horizons use the nearest.
const FIT_HORIZONS: [u64; 5] = [1, 5, 10, 30, 60];

/// Features per fitted horizon.
const FEATURES: usize = 6;
/// Features stored per second; the last one (yesterday's change to the target) is added when
/// paired.
const STORED: usize = FEATURES - 1;
/// Seconds of values and feature vectors kept: above the longest fitted horizon and the longest
/// mean window.
const RING: usize = 64;
/// Memory of the EWMA level (the anchor) in seconds.
const EWMA_SEC: f64 = 300.0;
/// Largest prediction on the log scale turned back into a count: `expm1` of it is finite.
const MAX_LOG: f64 = 40.0;

/// The scale the regression is fitted on, and so what the forecast estimates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// `log1p` of counts, forecast `expm1` of the prediction: near the median of the next value
    /// (exactly so when the log noise is symmetric), which is what minimises absolute error on
    /// skewed counts (default).
    Log,
    /// `log1p` of counts, with the prediction scaled back by the mean of `exp(residual)` over
    /// the recent fits (Duan's smearing): an estimate of the mean.
    LogMean,
    /// Counts directly (relative to the EWMA level): the least-squares (mean) forecast without
    /// a transform.
    Counts,
}

/// Settings of [`Autoregressive`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AutoregressiveConfig {
    /// Forgetting factor λ per second (default 0.999, about 1000 s of memory).
    pub forgetting: f64,
    /// Ridge strength δ: the prior weights count as this many observations per direction
    /// (default 10, 1 % of the memory).
    pub ridge: f64,
    /// Length of the seasonal lag in minutes (default 1440, a day); 0 turns the lag off.
    pub day_minutes: usize,
    /// The scale of the fit (default [`Fit::Log`]).
    pub fit: Fit,
}

impl Default for AutoregressiveConfig {
    fn default() -> Self {
        Self {
            forgetting: 0.999,
            ridge: 10.0,
            day_minutes: 24 * 60,
            fit: Fit::Log,
        }
    }
}

/// The weights of one fitted horizon and the sums they are solved from.
#[derive(Debug, Clone)]
struct HorizonFit {
    horizon: u64,
    /// Σ λᵏ x·xᵀ (without the ridge).
    a: [[f64; FEATURES]; FEATURES],
    /// Σ λᵏ z·x.
    b: [f64; FEATURES],
    weights: [f64; FEATURES],
    /// Mean of `exp(residual)` on the log scale (1 until fitted).
    smearing: f64,
}

/// Per-minute means of the last day (and a minute), by absolute minute modulo the length.
#[derive(Debug, Clone)]
struct DayRing {
    values: Vec<f32>,
    /// First minute fully observed: earlier slots hold nothing.
    first: Option<u64>,
    newest: Option<u64>,
}

impl DayRing {
    fn new(day_minutes: usize) -> Self {
        Self {
            values: if day_minutes == 0 {
                Vec::new()
            } else {
                vec![0.0; day_minutes + 1]
            },
            first: None,
            newest: None,
        }
    }

    fn push(&mut self, minute: u64, value: f64) {
        if self.values.is_empty() {
            return;
        }
        let len = self.values.len() as u64;
        self.values[(minute % len) as usize] = value as f32;
        self.newest = Some(minute);
    }

    fn get(&self, minute: u64) -> Option<f64> {
        let (first, newest) = (self.first?, self.newest?);
        let len = self.values.len() as u64;
        (minute >= first && minute <= newest && newest - minute < len)
            .then(|| f64::from(self.values[(minute % len) as usize]))
    }

    /// The mean rate of the minute holding second `s`. Not interpolated between minutes:
    /// scheduled surges start on minute boundaries, and a step kept sharp is where the change
    /// over the next 5 to 60 s is.
    fn rate_at(&self, s: u64) -> Option<f64> {
        self.get(s / 60)
    }
}

/// What one second knew when it closed: its features, to be paired with later targets.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// The second these are from (`None`: never written).
    t_sec: Option<u64>,
    /// The anchor `a`: the EWMA level on the fit's scale.
    anchor: f64,
    features: [f64; STORED],
    /// The day-lagged rate at that second, on the fit's scale.
    yesterday: Option<f64>,
}

/// Online per-horizon ridge autoregression; see the module docs.
#[derive(Debug, Clone)]
pub struct Autoregressive {
    config: AutoregressiveConfig,
    /// Values by second modulo [`RING`]; skipped seconds are zeros.
    values: [f64; RING],
    /// Seconds held in `values` (at most [`RING`]).
    held: usize,
    last_t: Option<u64>,
    ewma: Option<f64>,
    day: DayRing,
    minute: Option<u64>,
    minute_sum: f64,
    /// What each of the last seconds knew, by second modulo [`RING`].
    slots: [Slot; RING],
    fits: Vec<HorizonFit>,
    /// The fit whose weights are solved next: one per second, in turn.
    next_solve: usize,
    prior: [f64; FEATURES],
}

impl Autoregressive {
    /// Horizons with their own weights, in seconds; other horizons use the nearest.
    pub const HORIZONS: [u64; 5] = FIT_HORIZONS;

    /// A model with no history (forecasts 0).
    pub fn new(config: AutoregressiveConfig) -> Self {
        let config = AutoregressiveConfig {
            forgetting: config.forgetting.clamp(0.5, 1.0),
            ridge: config.ridge.max(1e-6),
            ..config
        };
        // The prior forecast: the mean of the four recent levels (last value, 5, 15, 60 s).
        let mut prior = [0.0; FEATURES];
        prior[1..5].fill(0.25);
        let fits = FIT_HORIZONS
            .iter()
            .map(|&horizon| HorizonFit {
                horizon,
                a: [[0.0; FEATURES]; FEATURES],
                b: [0.0; FEATURES],
                weights: prior,
                smearing: 1.0,
            })
            .collect();
        Self {
            day: DayRing::new(config.day_minutes),
            config,
            values: [0.0; RING],
            held: 0,
            last_t: None,
            ewma: None,
            minute: None,
            minute_sum: 0.0,
            slots: [Slot::default(); RING],
            fits,
            next_solve: 0,
            prior,
        }
    }

    /// The current weights fitted for horizon `horizon_sec` (the nearest of [`Self::HORIZONS`]),
    /// in feature order: 1, then the last value and the means of 5, 15 and 60 s relative to the
    /// EWMA level, then yesterday's change.
    pub fn weights(&self, horizon_sec: u64) -> [f64; 6] {
        self.fits[nearest_fit(horizon_sec)].weights
    }

    fn scale(&self, value: f64) -> f64 {
        match self.config.fit {
            Fit::Log | Fit::LogMean => value.ln_1p(),
            Fit::Counts => value,
        }
    }

    /// The day-lagged rate at second `s`, on the fit's scale.
    fn yesterday(&self, s: u64) -> Option<f64> {
        let lag = self.config.day_minutes as u64 * 60;
        if lag == 0 {
            return None;
        }
        self.day
            .rate_at(s.checked_sub(lag)?)
            .map(|v| self.scale(v.max(0.0)))
    }

    /// Closes minutes up to the one holding second `t_sec` (skipped minutes were idle).
    fn advance_minute(&mut self, t_sec: u64) {
        let minute = t_sec / 60;
        match self.minute {
            None => {
                // The first minute is only partly observed: it does not count as history.
                self.day.first = Some(t_sec.div_ceil(60));
                self.minute = Some(minute);
            }
            Some(current) if minute > current => {
                self.day.push(current, self.minute_sum / 60.0);
                let skipped = (minute - current - 1).min(self.day.values.len() as u64);
                for m in (minute - skipped)..minute {
                    self.day.push(m, 0.0);
                }
                self.minute_sum = 0.0;
                self.minute = Some(minute);
            }
            Some(_) => {}
        }
    }

    fn push_value(&mut self, t_sec: u64, value: f64) {
        self.values[(t_sec % RING as u64) as usize] = value;
        self.held = (self.held + 1).min(RING);
        let alpha = 1.0 / EWMA_SEC;
        self.ewma = Some(self.ewma.map_or(value, |e| e + alpha * (value - e)));
    }

    /// Mean of the last `window` held seconds ending at `t_sec`.
    fn mean(&self, t_sec: u64, window: usize) -> f64 {
        let n = window.min(self.held).max(1);
        let sum: f64 = (0..n as u64)
            .map(|k| self.values[(t_sec.wrapping_sub(k) % RING as u64) as usize])
            .sum();
        sum / n as f64
    }

    fn slot(&self, t_sec: u64, value: f64) -> Slot {
        let anchor = self.scale(self.ewma.unwrap_or(value));
        Slot {
            t_sec: Some(t_sec),
            anchor,
            features: [
                1.0,
                self.scale(value) - anchor,
                self.scale(self.mean(t_sec, 5)) - anchor,
                self.scale(self.mean(t_sec, 15)) - anchor,
                self.scale(self.mean(t_sec, 60)) - anchor,
            ],
            yesterday: self.yesterday(t_sec),
        }
    }

    /// Fits every horizon whose features were stored `h` seconds before `t_sec`.
    fn learn(&mut self, t_sec: u64, value: f64) {
        let target = self.scale(value);
        let at_target = self.yesterday(t_sec);
        let (lambda, ridge) = (self.config.forgetting, self.config.ridge);
        for fit in &mut self.fits {
            let Some(from) = t_sec.checked_sub(fit.horizon) else {
                continue;
            };
            let slot = &self.slots[(from % RING as u64) as usize];
            if slot.t_sec != Some(from) {
                continue;
            }
            let x = complete(slot, at_target);
            let z = target - slot.anchor;
            let residual = z - dot(&fit.weights, &x);
            if self.config.fit == Fit::LogMean {
                fit.smearing = lambda * fit.smearing + (1.0 - lambda) * residual.min(MAX_LOG).exp();
            }
            // The lower triangle is all the solve reads.
            for i in 0..FEATURES {
                for j in 0..=i {
                    fit.a[i][j] = lambda * fit.a[i][j] + x[i] * x[j];
                }
                fit.b[i] = lambda * fit.b[i] + z * x[i];
            }
        }
        // The sums move on the scale of the forgetting (1000 s by default): solving each horizon
        // every fifth second loses nothing and keeps the cost at one solve per second.
        let fit = &mut self.fits[self.next_solve];
        if let Some(weights) = solve_ridge(&fit.a, &fit.b, ridge, &self.prior) {
            fit.weights = weights;
        }
        self.next_solve = (self.next_solve + 1) % self.fits.len();
    }

    fn observe_one(&mut self, t_sec: u64, value: f64) {
        self.advance_minute(t_sec);
        self.minute_sum += value;
        self.push_value(t_sec, value);
        self.learn(t_sec, value);
        self.slots[(t_sec % RING as u64) as usize] = self.slot(t_sec, value);
    }
}

/// The fit horizon nearest to `horizon_sec` (ties go to the longer one).
fn nearest_fit(horizon_sec: u64) -> usize {
    let mut best = 0;
    for (i, &h) in FIT_HORIZONS.iter().enumerate() {
        if h.abs_diff(horizon_sec) <= FIT_HORIZONS[best].abs_diff(horizon_sec) {
            best = i;
        }
    }
    best
}

/// A slot's features plus yesterday's change from its second to the target (0 when either end
/// is unknown).
fn complete(slot: &Slot, yesterday_at_target: Option<f64>) -> [f64; FEATURES] {
    let mut x = [0.0; FEATURES];
    x[..STORED].copy_from_slice(&slot.features);
    if let (Some(from), Some(to)) = (slot.yesterday, yesterday_at_target) {
        x[STORED] = to - from;
    }
    x
}

fn dot(a: &[f64; FEATURES], b: &[f64; FEATURES]) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

/// The dot product of the first `n` elements.
fn dot_prefix(a: &[f64; FEATURES], b: &[f64; FEATURES], n: usize) -> f64 {
    a[..n].iter().zip(&b[..n]).map(|(a, b)| a * b).sum()
}

/// Solves `(a + ridge·I) w = b + ridge·prior` by Cholesky, reading the lower triangle of `a`;
/// `None` if the matrix is not positive definite (only possible with non-finite sums).
fn solve_ridge(
    a: &[[f64; FEATURES]; FEATURES],
    b: &[f64; FEATURES],
    ridge: f64,
    prior: &[f64; FEATURES],
) -> Option<[f64; FEATURES]> {
    let mut l = [[0.0; FEATURES]; FEATURES];
    // Reciprocals of the diagonal of L: one division per row instead of one per element.
    let mut inv = [0.0; FEATURES];
    for i in 0..FEATURES {
        for j in 0..=i {
            let sum = a[i][j] - dot_prefix(&l[i], &l[j], j);
            if i == j {
                let diagonal = sum + ridge;
                if !(diagonal > 0.0 && diagonal.is_finite()) {
                    return None;
                }
                l[i][i] = diagonal.sqrt();
                inv[i] = 1.0 / l[i][i];
            } else {
                l[i][j] = sum * inv[j];
            }
        }
    }
    // L y = rhs, then Lᵀ w = y.
    let mut y = [0.0; FEATURES];
    for i in 0..FEATURES {
        y[i] = (b[i] + ridge * prior[i] - dot_prefix(&l[i], &y, i)) * inv[i];
    }
    let mut w = [0.0; FEATURES];
    for i in (0..FEATURES).rev() {
        let tail: f64 = (i + 1..FEATURES).map(|k| l[k][i] * w[k]).sum();
        w[i] = (y[i] - tail) * inv[i];
    }
    w.iter().all(|v| v.is_finite()).then_some(w)
}

impl Forecaster for Autoregressive {
    fn name(&self) -> &'static str {
        match self.config.fit {
            Fit::Log => "autoregressive",
            Fit::LogMean => "autoregressive_mean",
            Fit::Counts => "autoregressive_counts",
        }
    }

    fn observe(&mut self, t_sec: u64, value: f64) {
        if let Some(last) = self.last_t {
            if t_sec <= last {
                return;
            }
            // Skipped seconds had no arrivals: the most recent of them enter the value ring as
            // zeros (without fitting: no features were stored for them), older ones only the
            // minute history and the EWMA.
            let gap = t_sec - last - 1;
            if gap > 0 {
                let replayed = gap.min(RING as u64);
                for s in (t_sec - replayed)..t_sec {
                    self.advance_minute(s);
                    self.push_value(s, 0.0);
                }
                let unreplayed = gap - replayed;
                if let Some(ewma) = &mut self.ewma {
                    let exponent = i32::try_from(unreplayed).unwrap_or(i32::MAX);
                    *ewma *= (1.0 - 1.0 / EWMA_SEC).powi(exponent);
                }
            }
        }
        self.last_t = Some(t_sec);
        self.observe_one(t_sec, sanitize(value));
    }

    fn forecast(&self, horizon_sec: u64) -> f64 {
        let Some(t_sec) = self.last_t else {
            return 0.0;
        };
        let slot = &self.slots[(t_sec % RING as u64) as usize];
        let fit = &self.fits[nearest_fit(horizon_sec)];
        let x = complete(slot, self.yesterday(t_sec.saturating_add(horizon_sec)));
        let prediction = slot.anchor + dot(&fit.weights, &x);
        let point = match self.config.fit {
            Fit::Log => prediction.min(MAX_LOG).exp_m1(),
            Fit::LogMean => prediction.min(MAX_LOG).exp() * fit.smearing - 1.0,
            Fit::Counts => prediction,
        };
        if point.is_finite() {
            point.max(0.0)
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::test_noise::{noise, poisson};
    use crate::forecast::LastValue;

    fn mean_abs_error(
        model: &mut dyn Forecaster,
        horizon: u64,
        series: &[f64],
        skip: usize,
    ) -> f64 {
        let h = horizon as usize;
        let mut total = 0.0;
        for (t, &value) in series.iter().enumerate() {
            model.observe(t as u64, value);
            if t >= skip && t + h < series.len() {
                total += (model.forecast(horizon) - series[t + h]).abs();
            }
        }
        total / (series.len() - skip - h) as f64
    }

    #[test]
    fn converges_to_a_constant_rate() {
        let mut model = Autoregressive::new(AutoregressiveConfig::default());
        assert_eq!(model.forecast(5), 0.0);
        for t in 0..3_000 {
            model.observe(t, 12.0);
        }
        for h in [1, 5, 10, 30, 60, 600] {
            assert!(
                (model.forecast(h) - 12.0).abs() < 1e-6,
                "{}",
                model.forecast(h)
            );
        }
        // Poisson noise around 12/s: the log fit forecasts near the median (12).
        let mut model = Autoregressive::new(AutoregressiveConfig::default());
        for t in 0..5_000 {
            model.observe(t, poisson(12.0, t));
        }
        for h in [5, 60] {
            assert!(
                (model.forecast(h) - 12.0).abs() < 1.5,
                "{}",
                model.forecast(h)
            );
        }
    }

    #[test]
    fn tracks_a_step() {
        let mut model = Autoregressive::new(AutoregressiveConfig::default());
        for t in 0..3_000 {
            model.observe(t, poisson(10.0, t));
        }
        for t in 3_000..3_120 {
            model.observe(t, poisson(40.0, t));
        }
        for h in [5, 30] {
            let f = model.forecast(h);
            assert!((30.0..50.0).contains(&f), "h {h}: {f}");
        }
    }

    #[test]
    fn learns_an_ar1_process_better_than_the_last_value() {
        // A mean-reverting rate (φ = 0.9 per second around 30/s) with Poisson counts on top.
        let phi = 0.9f64;
        let mut rate = 30.0f64;
        let (rates, series): (Vec<f64>, Vec<f64>) = (0..20_000u64)
            .map(|t| {
                rate = (30.0 + phi * (rate - 30.0) + 6.0 * noise(t)).max(0.0);
                (rate, poisson(rate, t + 7_000_000))
            })
            .unzip();
        let skip = 2_000;
        for (fit, horizon) in [(Fit::Log, 5), (Fit::Log, 10), (Fit::Counts, 5)] {
            let config = AutoregressiveConfig {
                fit,
                ..AutoregressiveConfig::default()
            };
            let ar = mean_abs_error(&mut Autoregressive::new(config), horizon, &series, skip);
            let last = mean_abs_error(&mut LastValue::new(), horizon, &series, skip);
            // The oracle knows the hidden rate: 30 + φʰ·(rate − 30). The Poisson counts keep
            // every forecast well above zero error; the fit gets close to the best possible.
            let h = horizon as usize;
            let oracle = (skip..series.len() - h)
                .map(|t| {
                    (30.0 + phi.powi(horizon as i32) * (rates[t] - 30.0) - series[t + h]).abs()
                })
                .sum::<f64>()
                / (series.len() - skip - h) as f64;
            assert!(
                ar < 0.9 * last,
                "{fit:?} h {horizon}: {ar} vs last value {last}"
            );
            assert!(
                ar < 1.08 * oracle,
                "{fit:?} h {horizon}: {ar} vs oracle {oracle}"
            );
        }
    }

    #[test]
    fn the_daily_lag_helps_on_a_daily_pattern() {
        // A 30-minute "day": quiet at 5/s, with a two-minute surge to 60/s at minute 10.
        let day = 30 * 60;
        let series: Vec<f64> = (0..12 * day)
            .map(|t| {
                let rate = if (600..720).contains(&(t % day)) {
                    60.0
                } else {
                    5.0
                };
                poisson(rate, t)
            })
            .collect();
        let with_lag = AutoregressiveConfig {
            day_minutes: 30,
            ..AutoregressiveConfig::default()
        };
        let without = AutoregressiveConfig {
            day_minutes: 0,
            ..AutoregressiveConfig::default()
        };
        let skip = 3 * day as usize;
        let lagged = mean_abs_error(&mut Autoregressive::new(with_lag), 30, &series, skip);
        let plain = mean_abs_error(&mut Autoregressive::new(without), 30, &series, skip);
        assert!(
            lagged < 0.8 * plain,
            "with the lag {lagged}, without {plain}"
        );
        // Just before the surge, yesterday's surge is in the forecast.
        let mut model = Autoregressive::new(with_lag);
        for t in 0..(5 * day + 590) {
            model.observe(t, series[t as usize]);
        }
        assert!(model.forecast(30) > 20.0, "{}", model.forecast(30));
    }

    #[test]
    fn nearest_fit_horizon() {
        let fitted: Vec<u64> = [0, 1, 3, 7, 8, 20, 45, 3_600]
            .iter()
            .map(|&h| FIT_HORIZONS[nearest_fit(h)])
            .collect();
        assert_eq!(fitted, [1, 1, 5, 5, 10, 30, 60, 60]);
    }

    #[test]
    fn zeros_huge_values_and_gaps_stay_finite_and_non_negative() {
        for fit in [Fit::Log, Fit::LogMean, Fit::Counts] {
            let config = AutoregressiveConfig {
                fit,
                ..AutoregressiveConfig::default()
            };
            let mut model = Autoregressive::new(config);
            let check = |model: &Autoregressive| {
                for h in [0, 1, 5, 60, 100_000] {
                    let f = model.forecast(h);
                    assert!(f.is_finite() && f >= 0.0, "{fit:?} h {h}: {f}");
                }
            };
            for t in 0..500 {
                model.observe(t, 0.0);
            }
            check(&model);
            assert_eq!(model.forecast(5), 0.0);
            let wild = [1e300, f64::INFINITY, f64::NAN, -5.0, 0.0, 1e12, 3.0];
            for t in 500..2_000u64 {
                model.observe(t, wild[t as usize % wild.len()]);
                check(&model);
            }
            model.observe(10_000_000, 2.0);
            check(&model);
            model.observe(10_000_100, 2.0);
            check(&model);
        }
    }
}
