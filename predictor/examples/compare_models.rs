//! Run with: cargo run --release -p forecourt-predictor --example compare_models -- [TRACES_DIR]
//!
//! Scores every forecasting model, and the ensemble before and after the local-level and
//! autoregressive models joined the defaults, on the shared traces (`TRACES_DIR` defaults to
//! `shared/traces` beside the workspace). Prints one MAE table per trace (models × horizons)
//! and the replay cost per second.
//!
//! ```text
//!  nasa-http-1995.csv.gz ─► days 7–14                                   ─┐
//!  nasa-http-1995.csv.gz ─► Σ of 20 copies shifted by 0..19 days, 7–14  ─┼─► evaluate_models
//!  azure-llm-code-2023.csv (one hour)                                   ─┘   (70 % train)
//! ```

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Instant;

use forecourt_predictor::evaluate::{evaluate_models, EvalConfig, EvalReport};
use forecourt_predictor::forecast::{
    default_models, Autoregressive, AutoregressiveConfig, Ewma, Fit, Forecaster, Holt, HoltConfig,
    LastValue, LinearTrend, LocalLevel, LocalLevelConfig, Seasonal, SeasonalConfig,
};
use forecourt_predictor::parse_trace;

const DAY: usize = 86_400;
/// Copies of NASA superposed for the scaled trace.
const COPIES: usize = 20;

/// The default model set before issue 17.
fn baseline() -> Vec<Box<dyn Forecaster>> {
    vec![
        Box::new(LastValue::new()),
        Box::new(Ewma::new("ewma_fast", 0.3)),
        Box::new(Ewma::new("ewma_slow", 0.03)),
        Box::new(Holt::new(HoltConfig::default())),
        Box::new(LinearTrend::new(20)),
        Box::new(Seasonal::new(SeasonalConfig::default())),
    ]
}

fn local_level() -> Box<dyn Forecaster> {
    Box::new(LocalLevel::new(LocalLevelConfig::default()))
}

fn autoregressive(fit: Fit) -> Box<dyn Forecaster> {
    Box::new(Autoregressive::new(AutoregressiveConfig {
        fit,
        ..AutoregressiveConfig::default()
    }))
}

/// The baseline plus every candidate, for per-model scores.
fn candidates() -> Vec<Box<dyn Forecaster>> {
    let mut models = baseline();
    models.push(local_level());
    for fit in [Fit::Log, Fit::LogMean, Fit::Counts] {
        models.push(autoregressive(fit));
    }
    models
}

/// Builds one model.
type Make = fn() -> Box<dyn Forecaster>;

/// The baseline plus some candidates: the ensembles the choice of defaults is made from.
fn with(extra: &[Make]) -> Vec<Box<dyn Forecaster>> {
    let mut models = baseline();
    models.extend(extra.iter().map(|f| f()));
    models
}

/// Ensembles compared besides the baseline and the defaults.
const ALTERNATIVES: [(&str, &[Make]); 4] = [
    ("+ local_level", &[local_level]),
    ("+ ar", &[|| autoregressive(Fit::Log)]),
    (
        "+ ar + local_level",
        &[|| autoregressive(Fit::Log), local_level],
    ),
    (
        "+ ar + ar_counts",
        &[|| autoregressive(Fit::Log), || autoregressive(Fit::Counts)],
    ),
];

fn open(path: &Path) -> Box<dyn BufRead> {
    let file =
        File::open(path).unwrap_or_else(|e| panic!("unable to open {}: {e}", path.display()));
    let mut reader = BufReader::new(file);
    let gzip = reader
        .fill_buf()
        .unwrap_or_else(|e| panic!("unable to read {}: {e}", path.display()))
        .starts_with(&[0x1f, 0x8b]);
    if gzip {
        Box::new(BufReader::new(flate2::bufread::GzDecoder::new(reader)))
    } else {
        Box::new(reader)
    }
}

/// The dense series of the trace's first service.
fn series(path: &Path) -> Vec<f64> {
    let trace = parse_trace(open(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let seconds = trace.duration_sec();
    trace
        .services
        .first()
        .unwrap_or_else(|| panic!("{}: no service", path.display()))
        .dense_series(seconds)
}

fn run(models: impl Fn() -> Vec<Box<dyn Forecaster>>, series: &[f64]) -> (EvalReport, f64) {
    let started = Instant::now();
    let report = evaluate_models(series, models, &EvalConfig::default(), |_, _| {});
    let ns_per_sec = started.elapsed().as_nanos() as f64 / series.len().max(1) as f64;
    (report, ns_per_sec)
}

fn mae(report: &EvalReport, model: &str) -> Vec<Option<f64>> {
    report
        .horizons
        .iter()
        .map(|h| h.score(model).and_then(|s| s.stats.mae))
        .collect()
}

fn row(label: &str, maes: &[Option<f64>]) {
    let cells: Vec<String> = maes
        .iter()
        .map(|m| m.map_or_else(|| "-".to_string(), |m| format!("{m:.4}")))
        .collect();
    println!("| {label:<24} | {} |", cells.join(" | "));
}

/// Nanoseconds per second of one model alone: an observe and a forecast per default horizon.
fn model_cost(mut model: Box<dyn Forecaster>, series: &[f64]) -> f64 {
    let started = Instant::now();
    let mut sum = 0.0;
    for (t, &value) in (0u64..).zip(series) {
        model.observe(t, value);
        for h in [5, 10, 30, 60] {
            sum += model.forecast(h);
        }
    }
    std::hint::black_box(sum);
    started.elapsed().as_nanos() as f64 / series.len().max(1) as f64
}

fn compare(name: &str, series: &[f64]) {
    let (before, before_ns) = run(baseline, series);
    let (all, all_ns) = run(candidates, series);
    let (after, after_ns) = run(default_models, series);
    println!(
        "\n### {name}: {} s, scored {} s, test mean {:.3}/s\n",
        all.seconds, all.test_seconds, all.test_mean
    );
    let horizons: Vec<String> = all
        .horizons
        .iter()
        .map(|h| format!("{:>3} s", h.horizon_sec))
        .collect();
    println!("| MAE (arrivals/s)         | {} |", horizons.join("  | "));
    println!("|{}", "---|".repeat(horizons.len() + 1));
    for score in &all.horizons[0].scores {
        if score.model != "ensemble" {
            row(score.model, &mae(&all, score.model));
        }
    }
    row("ensemble before", &mae(&before, "ensemble"));
    row("ensemble after", &mae(&after, "ensemble"));
    row("ensemble of all above", &mae(&all, "ensemble"));
    for (label, extra) in ALTERNATIVES {
        let (report, _) = run(|| with(extra), series);
        row(&format!("ensemble {label}"), &mae(&report, "ensemble"));
    }
    for (label, report) in [("before", &before), ("after", &after)] {
        let cells: Vec<String> = report
            .horizons
            .iter()
            .map(|h| {
                let s = h.score("ensemble").map(|s| s.stats).unwrap_or_default();
                let cell =
                    |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.3}"));
                format!(
                    "{} s {}/{}/{}",
                    h.horizon_sec,
                    cell(s.bias),
                    cell(s.under_rate),
                    cell(s.coverage)
                )
            })
            .collect();
        println!(
            "\nensemble {label}: bias/under-rate/coverage {}",
            cells.join(", ")
        );
    }
    let costs: Vec<String> = candidates()
        .into_iter()
        .map(|m| format!("{} {:.0}", m.name(), model_cost(m, series)))
        .collect();
    println!("\nmodel cost per second (ns): {}", costs.join(", "));
    println!(
        "replay cost per second: before {before_ns:.0} ns, after {after_ns:.0} ns, \
         all candidates {all_ns:.0} ns"
    );
}

fn main() {
    let dir = std::env::args_os().nth(1).map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces"),
        PathBuf::from,
    );
    let nasa = series(&dir.join("nasa-http-1995.csv.gz"));
    let week = 7 * DAY..14 * DAY;
    compare("NASA days 7–14", &nasa[week.clone()]);
    let scaled: Vec<f64> = week
        .clone()
        .map(|t| {
            (0..COPIES)
                .map(|k| nasa.get(t + k * DAY).copied().unwrap_or(0.0))
                .sum()
        })
        .collect();
    compare("NASA ×20 superposed, days 7–14", &scaled);
    let azure = series(&dir.join("azure-llm-code-2023.csv"));
    compare("Azure LLM code, 1 h", &azure);
}
