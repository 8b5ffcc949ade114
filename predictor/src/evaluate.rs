//! Offline evaluation: replay one service's per-second series through the same models and
//! ensemble the proxy runs, on a virtual clock, and score the last part.
//!
//! ```text
//!  series[0 .. split−warm-up)   observe only (models learn; fast)
//!  series[split−warm-up .. split) full ensemble: forecasts scored, weights and margins warm up
//!  series[split .. end)         full ensemble, every scored point counted in the report
//! ```
//!
//! `split` is `train_fraction` of the series (70 % by default).

use std::fmt::Write as _;

use crate::ensemble::{Ensemble, EnsembleConfig, ENSEMBLE};
use crate::forecast::{default_models, Forecaster};
use crate::score::ErrorStats;

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
    /// One report per horizon.
    pub horizons: Vec<HorizonReport>,
}

/// Replays `series` (one value per second, zeros included) through the default models and
/// scores the test part; `progress(done, total)` is called every 65 536 seconds and at the end.
pub fn evaluate(series: &[f64], config: &EvalConfig, progress: impl FnMut(u64, u64)) -> EvalReport {
    evaluate_models(series, default_models(), config, progress)
}

/// [`evaluate`] with a given model set, e.g. to compare candidate models with the defaults.
pub fn evaluate_models(
    series: &[f64],
    models: Vec<Box<dyn Forecaster>>,
    config: &EvalConfig,
    mut progress: impl FnMut(u64, u64),
) -> EvalReport {
    let total = series.len() as u64;
    let split = ((total as f64) * config.train_fraction.clamp(0.0, 1.0)).round() as u64;
    let warm_from = split.saturating_sub(config.warmup_sec);
    let mut ensemble = Ensemble::with_models(models, config.ensemble.clone());
    for (t, &value) in (0u64..).zip(series) {
        if t < warm_from {
            ensemble.observe_only(t, value);
        } else {
            if t == split {
                ensemble.scoreboard_mut().reset_totals();
            }
            ensemble.observe(t, value);
        }
        if t % 65_536 == 0 && t > 0 {
            progress(t, total);
        }
    }
    if split >= total {
        ensemble.scoreboard_mut().reset_totals();
    }
    progress(total, total);

    let names = ensemble.model_names().to_vec();
    let horizons = ensemble
        .horizons()
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
                    stats: ensemble.scoreboard().total(h, m),
                })
                .collect(),
        })
        .collect();
    let test = series.get(split as usize..).unwrap_or(&[]);
    EvalReport {
        seconds: total,
        train_seconds: split,
        test_seconds: total - split.min(total),
        test_mean: if test.is_empty() {
            0.0
        } else {
            test.iter().sum::<f64>() / test.len() as f64
        },
        horizons,
    }
}

/// Formats a report as a plain-text table, one block per horizon.
pub fn format_report(report: &EvalReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} s: trained on {} s, scored {} s (test mean {:.3}/s)",
        report.seconds, report.train_seconds, report.test_seconds, report.test_mean
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
}
