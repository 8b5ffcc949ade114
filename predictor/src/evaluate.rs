//! Offline evaluation: replay one service's arrivals through the same models and ensemble the
//! proxy runs, on a virtual clock, with the same lifecycle, and score the last part.
//!
//! ```text
//!  seconds [0 .. split−warm-up)   observe only (models learn; fast)
//!  seconds [split−warm-up .. split) full ensemble: forecasts scored, weights and margins warm up
//!  seconds [split .. end)         full ensemble, every scored point counted in the report
//!  quiet spells                   as in the proxy: no ensemble before the first arrival nor after
//!                                 idle_forget_secs without one (rebuilt, untrained, at the next);
//!                                 nothing is forecast or scored there, and the evaluation jumps
//!                                 to the next arrival instead of stepping through the quiet
//! ```
//!
//! `split` is `train_fraction` of the seconds (70 % by default). Work is proportional to the
//! seconds a service holds an ensemble, not to the trace's length: a service with a few bursts a
//! day costs its bursts.

use std::fmt::Write as _;

use crate::ensemble::{Ensemble, EnsembleConfig, ENSEMBLE};
use crate::forecast::{default_models, Forecaster};
use crate::score::{ErrorStats, Scoreboard};

/// Settings of [`evaluate`].
#[derive(Debug, Clone, PartialEq)]
pub struct EvalConfig {
    /// Ensemble (and so horizons) under test.
    pub ensemble: EnsembleConfig,
    /// Fraction of the series used for training (default 0.7).
    pub train_fraction: f64,
    /// Seconds before the split in which the full ensemble already runs, so error weights and
    /// margins are warm when scoring starts (default 3600).
    pub warmup_sec: u64,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            ensemble: EnsembleConfig::default(),
            train_fraction: 0.7,
            warmup_sec: 3_600,
        }
    }
}

/// One model's (or the ensemble's) scores at one horizon over the test part.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelScore {
    /// Model name, or `"ensemble"`.
    pub model: &'static str,
    /// Error statistics over every test point.
    pub stats: ErrorStats,
}

/// Scores of every model and the ensemble at one horizon.
#[derive(Debug, Clone, PartialEq)]
pub struct HorizonReport {
    /// Horizon in seconds.
    pub horizon_sec: u64,
    /// Models in model order, then the ensemble.
    pub scores: Vec<ModelScore>,
}

impl HorizonReport {
    /// The score of one model by name.
    pub fn score(&self, model: &str) -> Option<&ModelScore> {
        self.scores.iter().find(|s| s.model == model)
    }
}

/// The result of [`evaluate`].
#[derive(Debug, Clone, PartialEq)]
pub struct EvalReport {
    /// Seconds in the series.
    pub seconds: u64,
    /// Seconds used for training.
    pub train_seconds: u64,
    /// Seconds scored.
    pub test_seconds: u64,
    /// Mean of the series over the test part (arrivals per second).
    pub test_mean: f64,
    /// Seconds the service held an ensemble (the rest were quiet spells it was not modelled
    /// in, as in the proxy).
    pub modelled_seconds: u64,
    /// Times an ensemble was built (the first arrival, and every return from a quiet spell).
    pub ensembles_built: u64,
    /// One report per horizon.
    pub horizons: Vec<HorizonReport>,
}

/// Replays `series` (one value per second, zeros included) through the default models and
/// scores the test part; `progress(done, total)` is called every 65 536 seconds and at the end.
pub fn evaluate(series: &[f64], config: &EvalConfig, progress: impl FnMut(u64, u64)) -> EvalReport {
    evaluate_models(series, default_models, config, progress)
}

/// [`evaluate`] with a given model set (`models` builds a fresh one for every ensemble), e.g.
/// to compare candidate models with the defaults.
pub fn evaluate_models(
    series: &[f64],
    models: impl Fn() -> Vec<Box<dyn Forecaster>>,
    config: &EvalConfig,
    progress: impl FnMut(u64, u64),
) -> EvalReport {
    let arrivals: Vec<(u64, f64)> = (0u64..)
        .zip(series.iter().copied())
        .filter(|&(_, v)| v != 0.0)
        .collect();
    evaluate_arrivals(&arrivals, series.len() as u64, models, config, progress)
}

/// [`evaluate_models`] over a sparse series: `arrivals` holds `(second, value)` for the
/// seconds with a non-zero value, in increasing order of second (a repeated second adds up),
/// and every other second of `0..seconds` is zero. The work is proportional to the seconds an
/// ensemble exists, so a trace of thousands of mostly idle services evaluates in the time of
/// their busy stretches.
pub fn evaluate_arrivals(
    arrivals: &[(u64, f64)],
    seconds: u64,
    models: impl Fn() -> Vec<Box<dyn Forecaster>>,
    config: &EvalConfig,
    mut progress: impl FnMut(u64, u64),
) -> EvalReport {
    let total = seconds;
    let split = ((total as f64) * config.train_fraction.clamp(0.0, 1.0)).round() as u64;
    let warm_from = split.saturating_sub(config.warmup_sec);
    let forget = config.ensemble.idle_forget_secs();
    let build = || Ensemble::with_models(models(), config.ensemble.clone());
    // The scores of every ensemble over the test part: a dropped one adds its totals here.
    let first = build();
    let names = first.model_names().to_vec();
    let horizons = first.horizons().to_vec();
    let mut scored = Scoreboard::new(&horizons, names.len() + 1, config.ensemble.score);
    let mut ensemble: Option<Ensemble> = None;
    let mut spare = Some(first);
    let (mut modelled_seconds, mut ensembles_built) = (0u64, 0u64);
    let mut last_arrival = 0u64;
    let mut next = 0usize;
    let mut next_progress = 65_536u64;
    let mut t = 0u64;
    while t < total {
        let mut value = 0.0;
        while let Some(&(at, v)) = arrivals.get(next).filter(|&&(at, _)| at <= t) {
            if at == t {
                value += v;
            }
            next += 1;
        }
        if value != 0.0 {
            last_arrival = t;
        }
        let current = match &mut ensemble {
            Some(e) => e,
            None if value != 0.0 => {
                ensembles_built += 1;
                ensemble.insert(spare.take().unwrap_or_else(build))
            }
            None => {
                // Quiet and unmodelled: jump to the next arrival.
                t = arrivals.get(next).map_or(total, |&(at, _)| at.min(total));
                while t >= next_progress {
                    progress(next_progress, total);
                    next_progress += 65_536;
                }
                continue;
            }
        };
        if t < warm_from {
            current.observe_only(t, value);
        } else {
            if t == split {
                current.scoreboard_mut().reset_totals();
            }
            current.observe(t, value);
        }
        modelled_seconds += 1;
        if t - last_arrival >= forget {
            if let Some(dropped) = ensemble.take() {
                if t >= split {
                    scored.merge_totals(dropped.scoreboard());
                }
            }
        }
        t += 1;
        if t >= next_progress {
            progress(next_progress, total);
            next_progress += 65_536;
        }
    }
    if let Some(last) = &ensemble {
        if split < total {
            scored.merge_totals(last.scoreboard());
        }
    }
    progress(total, total);

    let horizons = horizons
        .iter()
        .enumerate()
        .map(|(h, &horizon_sec)| HorizonReport {
            horizon_sec,
            scores: names
                .iter()
                .copied()
                .chain(std::iter::once(ENSEMBLE))
                .enumerate()
                .map(|(m, model)| ModelScore {
                    model,
                    stats: scored.total(h, m),
                })
                .collect(),
        })
        .collect();
    let test_seconds = total - split.min(total);
    let test_sum: f64 = arrivals
        .iter()
        .filter(|&&(at, _)| at >= split && at < total)
        .map(|&(_, v)| v)
        .sum();
    EvalReport {
        seconds: total,
        train_seconds: split.min(total),
        test_seconds,
        test_mean: if test_seconds == 0 {
            0.0
        } else {
            test_sum / test_seconds as f64
        },
        modelled_seconds,
        ensembles_built,
        horizons,
    }
}

/// Formats a report as a plain-text table, one block per horizon.
pub fn format_report(report: &EvalReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} s: trained on {} s, scored {} s (test mean {:.3}/s); modelled {} s, {} ensemble(s) built",
        report.seconds,
        report.train_seconds,
        report.test_seconds,
        report.test_mean,
        report.modelled_seconds,
        report.ensembles_built
    );
    let cell = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.3}"));
    for horizon in &report.horizons {
        let _ = writeln!(
            out,
            "\nhorizon {:>3} s  {:<12} {:>8} {:>8} {:>8} {:>8} {:>9}",
            horizon.horizon_sec, "model", "WAPE", "MASE", "bias", "under", "coverage"
        );
        for score in &horizon.scores {
            let s = &score.stats;
            let _ = writeln!(
                out,
                "               {:<12} {:>8} {:>8} {:>8} {:>8} {:>9}",
                score.model,
                cell(s.wape),
                cell(s.mase),
                cell(s.bias),
                cell(s.under_rate),
                cell(s.coverage)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_only_the_test_part_and_reports_every_model() {
        let mut x = 99u64;
        let series: Vec<f64> = (0..10_000)
            .map(|_| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                9.0 + (x >> 62) as f64
            })
            .collect();
        let mut calls = Vec::new();
        let report = evaluate(&series, &EvalConfig::default(), |done, total| {
            calls.push((done, total));
        });
        assert_eq!(report.seconds, 10_000);
        assert_eq!(report.train_seconds, 7_000);
        assert_eq!(report.test_seconds, 3_000);
        assert!((report.test_mean - 10.5).abs() < 0.1);
        assert_eq!(calls.last(), Some(&(10_000, 10_000)));
        assert_eq!(report.horizons.len(), 4);
        for horizon in &report.horizons {
            assert_eq!(horizon.scores.len(), 8);
            let ensemble = horizon.score("ensemble").expect("ensemble row");
            // Every test second is a target, including those forecast from the warm-up.
            assert_eq!(ensemble.stats.points as usize, 3_000);
            assert!(ensemble.stats.mase.unwrap_or(1.0) < 1.0);
        }
        let table = format_report(&report);
        assert!(table.contains("horizon  60 s"));
        assert!(table.contains("ensemble"));
    }

    #[test]
    fn empty_and_tiny_series_do_not_panic() {
        let report = evaluate(&[], &EvalConfig::default(), |_, _| {});
        assert_eq!(report.test_seconds, 0);
        let report = evaluate(&[1.0, 2.0, 3.0], &EvalConfig::default(), |_, _| {});
        assert_eq!(report.seconds, 3);
        assert!(format_report(&report).contains("last_value"));
    }

    #[test]
    fn quiet_spells_are_skipped_as_the_proxy_forgets_and_scores_survive_a_drop() {
        // Two 200-second bursts in the test part (from 28,000 s), 4,300 quiet seconds apart,
        // on a 40,000 s series whose training part is one steady stretch.
        let forget = EnsembleConfig::default().idle_forget_secs();
        let mut series = vec![0.0; 40_000];
        for (t, v) in series.iter_mut().enumerate() {
            if t < 3_000 || (28_500..28_700).contains(&t) || (33_000..33_200).contains(&t) {
                *v = 5.0 + (t % 3) as f64;
            }
        }
        let config = EvalConfig {
            warmup_sec: 600,
            ..EvalConfig::default()
        };
        let report = evaluate(&series, &config, |_, _| {});
        assert_eq!(report.ensembles_built, 3);
        // Each stretch: its arrivals, then `forget` quiet seconds, then dropped (the rest of
        // the series is quiet and not modelled).
        assert_eq!(
            report.modelled_seconds,
            (3_000 + forget) + 2 * (200 + forget)
        );
        let ensemble = report.horizons[0].score("ensemble").expect("ensemble row");
        // Scored: both test bursts and their quiet tails, minus the first 5 s of each
        // ensemble (nothing was issued for them yet).
        let h = report.horizons[0].horizon_sec;
        let expected = 2 * (200 + forget - h);
        assert_eq!(ensemble.stats.points as u64, expected);
        // The sparse form gives the same report.
        let arrivals: Vec<(u64, f64)> = (0u64..)
            .zip(series.iter().copied())
            .filter(|&(_, v)| v != 0.0)
            .collect();
        let sparse = evaluate_arrivals(&arrivals, 40_000, default_models, &config, |_, _| {});
        assert_eq!(sparse, report);
    }
}
