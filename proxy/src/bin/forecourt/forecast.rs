//! `forecourt forecast`: replay a trace through the proxy's own predictor on a virtual clock
//! (train on the first part, score the rest) and print a table per horizon, or one JSON document.
//!
//! ```text
//!  trace.csv[.gz] ─► parse_trace ─► per service: dense per-second series
//!                                   ─► evaluate (same ensemble as the proxy)
//!                                   ─► table per horizon, or (--json) one JSON document
//! ```

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use forecourt_predictor::ensemble::ENSEMBLE;
use forecourt_predictor::evaluate::ModelScore;
use forecourt_predictor::{
    evaluate, format_report, parse_trace, EnsembleConfig, EvalConfig, EvalReport,
};
use serde_json::json;

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct ForecastOptions {
    /// The trace (`t,service,count` CSV, optionally gzip-compressed).
    pub trace: PathBuf,
    /// Only this service (default: every service in the trace).
    pub service: Option<String>,
    /// Horizons (whole seconds).
    pub horizons: Vec<Duration>,
    /// Fraction of the trace used for training.
    pub train_fraction: f64,
    /// Print one JSON document instead of the tables.
    pub json: bool,
}

/// Opens a trace, decompressing it when it is gzip (by magic number, not by name).
pub fn open_trace(path: &Path) -> anyhow::Result<Box<dyn BufRead>> {
    let file = File::open(path).with_context(|| format!("unable to open {}", path.display()))?;
    let mut reader = BufReader::new(file);
    let gzip = reader
        .fill_buf()
        .with_context(|| format!("unable to read {}", path.display()))?
        .starts_with(&[0x1f, 0x8b]);
    Ok(if gzip {
        Box::new(BufReader::new(flate2::bufread::GzDecoder::new(reader)))
    } else {
        Box::new(reader)
    })
}

/// Runs the evaluation and prints the report to stdout, as tables or (`json`) one JSON document;
/// progress goes to stderr when it is a terminal.
pub fn run(options: &ForecastOptions) -> anyhow::Result<()> {
    let mut horizons = Vec::with_capacity(options.horizons.len());
    for h in &options.horizons {
        if h.subsec_nanos() != 0 || h.as_secs() == 0 || h.as_secs() > 3_600 {
            bail!("horizon {h:?} must be a whole number of seconds between 1s and 1h");
        }
        horizons.push(h.as_secs());
    }
    horizons.sort_unstable();
    horizons.dedup();
    if !(0.1..=0.95).contains(&options.train_fraction) {
        bail!("--train must be between 0.1 and 0.95");
    }
    let started = Instant::now();
    let trace = parse_trace(open_trace(&options.trace)?)
        .with_context(|| format!("{}: not a trace", options.trace.display()))?;
    let parsed = started.elapsed();
    let seconds = trace.duration_sec();
    let services: Vec<_> = trace
        .services
        .iter()
        .filter(|s| options.service.as_deref().is_none_or(|name| s.name == name))
        .collect();
    if services.is_empty() {
        let known: Vec<_> = trace.services.iter().map(|s| s.name.as_str()).collect();
        bail!(
            "no service {:?} in the trace (it has: {})",
            options.service.as_deref().unwrap_or(""),
            known.join(", ")
        );
    }
    let config = EvalConfig {
        ensemble: EnsembleConfig {
            horizons,
            ..EnsembleConfig::default()
        },
        train_fraction: options.train_fraction,
        ..EvalConfig::default()
    };
    let horizons = config.ensemble.horizons.clone();
    let mut reports = Vec::new();
    let terminal = std::io::stderr().is_terminal();
    let mut out = std::io::stdout().lock();
    for service in services {
        let series = service.dense_series(seconds);
        let started = Instant::now();
        let mut last_shown = Instant::now();
        let report = evaluate(&series, &config, |done, total| {
            let now = Instant::now();
            if (now - last_shown >= Duration::from_millis(200) || done == total) && total > 0 {
                last_shown = now;
                let line = format!(
                    "{}: {:>3}% of {} s replayed",
                    service.name,
                    done * 100 / total,
                    total
                );
                if terminal {
                    eprint!("\r{line}");
                } else if done == total {
                    eprintln!("{line}");
                }
            }
        });
        if terminal {
            eprintln!();
        }
        if options.json {
            reports.push(service_json(
                &service.name,
                service.total(),
                started.elapsed(),
                &report,
            ));
            continue;
        }
        writeln!(
            out,
            "## {}: {} requests over {} s; parsed in {:.2?}, replayed in {:.2?}\n",
            service.name,
            service.total(),
            seconds,
            parsed,
            started.elapsed()
        )?;
        writeln!(out, "{}", format_report(&report))?;
    }
    if options.json {
        let document = json!({
            "trace": options.trace.display().to_string(),
            "train_fraction": options.train_fraction,
            "horizons_seconds": horizons,
            "parsed_in_seconds": parsed.as_secs_f64(),
            "services": reports,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&document)?)?;
    }
    Ok(())
}

/// One service's report as JSON: per horizon, every model's scores and the ensemble's.
fn service_json(
    name: &str,
    requests: u64,
    replayed: Duration,
    report: &EvalReport,
) -> serde_json::Value {
    let horizons: Vec<_> = report
        .horizons
        .iter()
        .map(|horizon| {
            let (ensemble, models): (Vec<_>, Vec<_>) =
                horizon.scores.iter().partition(|s| s.model == ENSEMBLE);
            json!({
                "horizon_seconds": horizon.horizon_sec,
                "models": models.into_iter().map(score_json).collect::<Vec<_>>(),
                "ensemble": ensemble.into_iter().next().map(score_json),
            })
        })
        .collect();
    json!({
        "service": name,
        "requests": requests,
        "seconds": report.seconds,
        "train_seconds": report.train_seconds,
        "test_seconds": report.test_seconds,
        "test_mean": report.test_mean,
        "replayed_in_seconds": replayed.as_secs_f64(),
        "horizons": horizons,
    })
}

/// One model's scores as JSON; undefined ratios are `null`.
fn score_json(score: &ModelScore) -> serde_json::Value {
    let s = &score.stats;
    json!({
        "model": score.model,
        "points": s.points,
        "mae": s.mae,
        "wape": s.wape,
        "mase": s.mase,
        "bias": s.bias,
        "under_rate": s.under_rate,
        "coverage": s.coverage,
    })
}
