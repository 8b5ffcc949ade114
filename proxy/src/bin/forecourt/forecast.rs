//! `forecourt forecast`: replay a trace through the proxy's own predictor on a virtual clock
//! (train on the first part, score the rest) and print a table per horizon, or one JSON document.
//!
//! ```text
//!  trace.csv[.gz] ─► parse_trace ─► per service (on every core): sorted arrivals
//!                                   ─► evaluate_arrivals (same ensembles and lifecycle as the
//!                                      proxy; quiet spells are jumped, not stepped)
//!                                   ─► table per horizon, or (--json) one JSON document
//! ```

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use forecourt_predictor::ensemble::ENSEMBLE;
use forecourt_predictor::evaluate::{evaluate_arrivals, ModelScore};
use forecourt_predictor::forecast::default_models;
use forecourt_predictor::{format_report, parse_trace, EnsembleConfig, EvalConfig, EvalReport};
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
    let evaluating = Instant::now();
    // Services are independent: evaluate them on every core, report them in trace order.
    let done = AtomicUsize::new(0);
    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4)
        .min(services.len());
    let terminal = std::io::stderr().is_terminal();
    let slots: Vec<Mutex<Option<(EvalReport, Duration)>>> =
        services.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(service) = services.get(i) else {
                    break;
                };
                let started = Instant::now();
                let arrivals = arrivals(&service.rows, seconds);
                let report =
                    evaluate_arrivals(&arrivals, seconds, default_models, &config, |_, _| {});
                if let Ok(mut slot) = slots[i].lock() {
                    *slot = Some((report, started.elapsed()));
                }
                let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                if terminal {
                    eprint!("\revaluated {finished} of {} service(s)", services.len());
                }
            });
        }
    });
    if terminal {
        eprintln!();
    }
    let mut reports = Vec::new();
    let mut out = std::io::stdout().lock();
    for (service, slot) in services.iter().zip(slots) {
        let Some((report, replayed)) = slot.into_inner().ok().flatten() else {
            bail!("{}: the evaluation did not finish", service.name);
        };
        if options.json {
            reports.push(service_json(
                &service.name,
                service.total(),
                replayed,
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
            replayed
        )?;
        writeln!(out, "{}", format_report(&report))?;
    }
    if options.json {
        let document = json!({
            "trace": options.trace.display().to_string(),
            "train_fraction": options.train_fraction,
            "horizons_seconds": horizons,
            "parsed_in_seconds": parsed.as_secs_f64(),
            "evaluated_in_seconds": evaluating.elapsed().as_secs_f64(),
            "services": reports,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&document)?)?;
    }
    Ok(())
}

/// A service's rows as the evaluation reads them: sorted by second, repeated seconds added,
/// rows at or past `seconds` dropped.
fn arrivals(rows: &[(u64, u64)], seconds: u64) -> Vec<(u64, f64)> {
    let mut sorted: Vec<(u64, u64)> = rows.iter().copied().filter(|&(t, _)| t < seconds).collect();
    sorted.sort_unstable_by_key(|&(t, _)| t);
    let mut out: Vec<(u64, f64)> = Vec::with_capacity(sorted.len());
    for (t, count) in sorted {
        match out.last_mut() {
            Some((last, value)) if *last == t => *value += count as f64,
            _ if count > 0 => out.push((t, count as f64)),
            _ => {}
        }
    }
    out
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
        "modelled_seconds": report.modelled_seconds,
        "ensembles_built": report.ensembles_built,
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
