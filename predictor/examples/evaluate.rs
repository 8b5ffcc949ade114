//! Prints the offline forecast evaluation of a trace (train 70 %, score 30 %).
//!
//! ```text
//! cargo run --release -p forecourt-predictor --example evaluate -- TRACE.csv[.gz] [HORIZONS]
//! ```
//!
//! `HORIZONS` is a comma-separated list of seconds (default `5,10,30,60`). Every service in the
//! trace is evaluated on the trace's whole timeline, with zeros for seconds without requests.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::time::Instant;

use forecourt_predictor::{evaluate, format_report, parse_trace, EnsembleConfig, EvalConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: evaluate TRACE.csv[.gz] [HORIZONS]")?;
    let horizons = match args.next() {
        Some(list) => list
            .split(',')
            .map(|h| h.trim().parse::<u64>())
            .collect::<Result<Vec<_>, _>>()?,
        None => vec![5, 10, 30, 60],
    };
    let file = File::open(&path).map_err(|e| format!("unable to open {path}: {e}"))?;
    let reader: Box<dyn BufRead> = if path.ends_with(".gz") {
        Box::new(BufReader::new(flate2::read::GzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    let started = Instant::now();
    let trace = parse_trace(reader).map_err(|e| format!("{path}: {e}"))?;
    let parsed = started.elapsed();
    let seconds = trace.duration_sec();
    let config = EvalConfig {
        ensemble: EnsembleConfig {
            horizons,
            ..EnsembleConfig::default()
        },
        ..EvalConfig::default()
    };
    for service in &trace.services {
        let series = service.dense_series(seconds);
        let started = Instant::now();
        let report = evaluate(&series, &config, |done, total| {
            if done % (1 << 20) < (1 << 16) || done == total {
                eprint!("\r{}: {done}/{total} s", service.name);
            }
        });
        eprintln!();
        println!(
            "## {} — {} requests; parsed in {:.2?}, evaluated in {:.2?}",
            service.name,
            service.total(),
            parsed,
            started.elapsed()
        );
        println!("{}", format_report(&report));
    }
    Ok(())
}
