//! `forecourt replay`: replay a trace through a simulated fleet under Forecourt's policy (the
//! production code on a virtual clock), Knative's KPA, an oracle and static peak provisioning,
//! sweeping each policy's utilisation target, and print the trade-off.
//!
//! ```text
//!  trace ─► per service: dense series × scale, sliced ─┐
//!  policy file (scaling per service) or defaults ──────┼─► runs (policy × utilisation), 2 threads
//!                                                      └─► table / JSON, gains at the policy's target
//! ```

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use forecourt_config::{Capacity, Policy, ScalingConfig};
use forecourt_orchestrator::replay::{
    default_scaling, instances_for, run, FleetShape, FleetStats, ForecourtReplay, Oracle,
    ReplayPolicy, RunReport, StaticPeak, Tick,
};
use forecourt_orchestrator::scale::kpa::{Kpa, KpaConfig, KpaWindows};
use forecourt_predictor::parse_trace;
use serde_json::json;

use crate::forecast::open_trace;

mod plot;

use plot::{write_plots, Curve, Timeline};

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

/// A boot time, fixed (`10s`) or drawn uniformly from a range (`5s..30s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Boot {
    /// Shortest boot.
    pub min: Duration,
    /// Longest boot.
    pub max: Duration,
}

fn boot(text: &str) -> Result<Boot, String> {
    match text.split_once("..") {
        Some((low, high)) => {
            let (min, max) = (duration(low)?, duration(high)?);
            if max < min {
                return Err(format!("{text}: the range goes backwards"));
            }
            Ok(Boot { min, max })
        }
        None => duration(text).map(|d| Boot { min: d, max: d }),
    }
}

/// What to replay and how (`forecourt replay`).
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayOptions {
    /// The trace: `t,service,count` CSV, gzip-compressed or not.
    #[arg(long)]
    pub trace: PathBuf,
    /// A policy file whose services' `scaling:` apply to trace services of the same name.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Only this service of the trace.
    #[arg(long)]
    pub service: Option<String>,
    /// Multiply every count by this.
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Start of the slice (trace time), e.g. "7d".
    #[arg(long, value_parser = duration)]
    pub from: Option<Duration>,
    /// End of the slice (trace time).
    #[arg(long, value_parser = duration)]
    pub to: Option<Duration>,
    /// Time from order to ready of a simulated instance: `10s`, or a uniform range `5s..30s`.
    #[arg(long, value_parser = boot, default_value = "10s")]
    pub boot: Boot,
    /// Seed of the boot-time draws (the same seed replays the same run).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Mean service time of a request, for services whose capacity is a concurrency
    /// (one instance then serves concurrency / service time requests per second).
    #[arg(long, value_parser = duration, default_value = "100ms")]
    pub service_time: Duration,
    /// Requests per second one instance serves (when the policy file gives no capacity).
    #[arg(long, default_value_t = 10.0)]
    pub capacity: f64,
    /// Longest wait before a request counts as past its deadline.
    #[arg(long, value_parser = duration, default_value = "30s")]
    pub deadline: Duration,
    /// Utilisation targets swept for every policy (the headroom knob).
    #[arg(long = "utilization", value_delimiter = ',', default_values_t = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])]
    pub utilizations: Vec<f64>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Write timeline and trade-off plots (SVG and PNG) into this directory.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// KPA as a replay policy: per-second windows feeding [`Kpa::scale`].
struct KpaReplay {
    kpa: Kpa,
    windows: KpaWindows,
    last: u32,
}

impl ReplayPolicy for KpaReplay {
    fn name(&self) -> String {
        "knative-kpa".to_owned()
    }

    fn desired(&mut self, tick: &Tick<'_>) -> u32 {
        let second_ms = tick.t.saturating_mul(1_000);
        self.windows.record(second_ms + 500, tick.arrivals());
        // Knative skips a decision when its windows hold no data.
        if let Some(observed) = self.windows.observed(second_ms + 999) {
            self.last = self
                .kpa
                .scale(
                    second_ms + 1_000,
                    observed.stable,
                    observed.panic,
                    tick.ready,
                )
                .desired;
        }
        self.last
    }
}

/// One service to replay.
struct Target {
    name: String,
    series: Vec<f64>,
    scaling: ScalingConfig,
}

fn targets(options: &ReplayOptions) -> anyhow::Result<(Vec<Target>, Option<Policy>)> {
    let trace = parse_trace(open_trace(&options.trace)?)
        .with_context(|| format!("{}: not a trace", options.trace.display()))?;
    let policy = match &options.policy {
        Some(path) => Some(Policy::load(path).map_err(|e| anyhow::anyhow!("{e}"))?),
        None => None,
    };
    let seconds = trace.duration_sec();
    let from = options.from.map_or(0, |d| d.as_secs()).min(seconds);
    let to = options.to.map_or(seconds, |d| d.as_secs()).min(seconds);
    if to <= from {
        bail!("--from {from}s is not before --to {to}s (the trace lasts {seconds}s)");
    }
    let mut out = Vec::new();
    for service in &trace.services {
        if options
            .service
            .as_deref()
            .is_some_and(|s| s != service.name)
        {
            continue;
        }
        let dense = service.dense_series(seconds);
        let series: Vec<f64> = dense
            .get(usize::try_from(from).unwrap_or(0)..usize::try_from(to).unwrap_or(0))
            .unwrap_or(&[])
            .iter()
            .map(|v| v * options.scale)
            .collect();
        let scaling = policy
            .as_ref()
            .and_then(|p| p.service(&service.name))
            .and_then(|s| s.scaling.clone());
        let scaling = match scaling {
            Some(s) => s,
            None => default_scaling(options.capacity, 0.7),
        };
        out.push(Target {
            name: service.name.clone(),
            series,
            scaling,
        });
    }
    if out.is_empty() {
        let known: Vec<_> = trace.services.iter().map(|s| s.name.as_str()).collect();
        bail!("no service to replay (the trace has: {})", known.join(", "));
    }
    Ok((out, policy))
}

/// One run to do: a policy at a utilisation over one service.
struct Job<'a> {
    target: &'a Target,
    kind: &'static str,
    utilization: f64,
}

/// Requests per second one instance serves: its capacity, or concurrency / service time.
fn rps_capacity(scaling: &ScalingConfig, options: &ReplayOptions) -> f64 {
    match scaling.capacity {
        Capacity::RequestsPerSecond(rps) => rps,
        Capacity::Concurrency(c) => c / options.service_time.as_secs_f64().max(1e-3),
    }
}

fn policy_for(job: &Job<'_>, options: &ReplayOptions) -> anyhow::Result<Box<dyn ReplayPolicy>> {
    let capacity = rps_capacity(&job.target.scaling, options);
    let per_instance = capacity * job.utilization;
    let peak = job.target.series.iter().copied().fold(0.0, f64::max);
    Ok(match job.kind {
        "forecourt" => {
            let mut scaling = job.target.scaling.clone();
            scaling.target_utilization = job.utilization;
            Box::new(
                ForecourtReplay::new(scaling).with_service_time(options.service_time.as_secs_f64()),
            )
        }
        "knative-kpa" => {
            let config = KpaConfig {
                target_utilization: job.utilization,
                ..KpaConfig::with_target(capacity)
            };
            let windows = KpaWindows::new(&config);
            let kpa = Kpa::new(config).map_err(|errors| {
                let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
                anyhow::anyhow!("kpa settings: {}", list.join("; "))
            })?;
            Box::new(KpaReplay {
                kpa,
                windows,
                last: 1,
            })
        }
        "oracle" => Box::new(Oracle {
            boot_secs: options.boot.max.as_secs(),
            per_instance,
        }),
        _ => Box::new(StaticPeak {
            instances: instances_for(peak, per_instance),
        }),
    })
}

/// A policy's totals over every service at one utilisation.
#[derive(Default, Clone)]
struct Totals {
    stats: FleetStats,
    runs: Vec<RunReport>,
}

fn add(total: &mut FleetStats, run: &FleetStats) {
    total.arrived += run.arrived;
    total.served_at_once += run.served_at_once;
    total.waited += run.waited;
    total.past_deadline += run.past_deadline;
    total.instance_seconds += run.instance_seconds;
    total.idle_instance_seconds += run.idle_instance_seconds;
    total.scale_actions += run.scale_actions;
    if total.waits.len() < run.waits.len() {
        total.waits.resize(run.waits.len(), 0.0);
    }
    for (t, r) in total.waits.iter_mut().zip(&run.waits) {
        *t += r;
    }
}

const POLICIES: [&str; 4] = ["forecourt", "knative-kpa", "oracle", "static-peak"];

/// Runs the replay and prints the report.
pub fn run_replay(options: &ReplayOptions) -> anyhow::Result<()> {
    if options
        .utilizations
        .iter()
        .any(|u| !(0.05..=1.0).contains(u))
    {
        bail!("--utilization values must be between 0.05 and 1");
    }
    if !(options.scale > 0.0 && options.scale.is_finite()) {
        bail!("--scale must be a positive number");
    }
    let started = Instant::now();
    let (targets, _) = targets(options)?;
    let shape = |t: &Target| FleetShape {
        boot_secs: options.boot.min.as_secs(),
        boot_max_secs: options.boot.max.as_secs(),
        seed: options.seed,
        capacity: rps_capacity(&t.scaling, options),
        deadline_secs: options.deadline.as_secs().max(1),
    };
    let mut jobs = Vec::new();
    for target in &targets {
        for kind in POLICIES {
            for &utilization in &options.utilizations {
                jobs.push(Job {
                    target,
                    kind,
                    utilization,
                });
            }
        }
    }
    let total_seconds: u64 = jobs.iter().map(|j| j.target.series.len() as u64).sum();
    let done_seconds = AtomicU64::new(0);
    let results: Mutex<BTreeMap<(usize, usize), Totals>> = Mutex::new(BTreeMap::new());
    let next = AtomicU64::new(0);
    let terminal = std::io::stderr().is_terminal();
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4);
    let errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(job) = jobs.get(i) else { break };
                let mut policy = match policy_for(job, options) {
                    Ok(p) => p,
                    Err(e) => {
                        if let Ok(mut errors) = errors.lock() {
                            errors.push(e.to_string());
                        }
                        continue;
                    }
                };
                let initial = match job.kind {
                    "static-peak" => policy.desired(&Tick {
                        t: 0,
                        series: &job.target.series,
                        ready: 0,
                        ordered: 0,
                        queued: 0.0,
                    }),
                    _ => 1,
                };
                let mut last = 0;
                let report = run(
                    &job.target.series,
                    policy.as_mut(),
                    shape(job.target),
                    initial,
                    400,
                    |done, _| {
                        let all =
                            done_seconds.fetch_add(done - last, Ordering::Relaxed) + (done - last);
                        last = done;
                        if terminal && total_seconds > 0 {
                            eprint!(
                                "\rreplaying: {:>3}% of {} policy-seconds",
                                all * 100 / total_seconds,
                                total_seconds
                            );
                        }
                    },
                );
                let kind = POLICIES.iter().position(|k| *k == job.kind).unwrap_or(0);
                let u = options
                    .utilizations
                    .iter()
                    .position(|u| *u == job.utilization)
                    .unwrap_or(0);
                if let Ok(mut results) = results.lock() {
                    let entry = results.entry((kind, u)).or_default();
                    add(&mut entry.stats, &report.stats);
                    entry.runs.push(report);
                }
            });
        }
    });
    if terminal {
        eprintln!();
    }
    if let Some(error) = errors.lock().ok().and_then(|e| e.first().cloned()) {
        bail!("{error}");
    }
    let results = results.into_inner().unwrap_or_default();
    let elapsed = started.elapsed();
    let seconds: usize = targets.iter().map(|t| t.series.len()).sum();
    if options.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report_json(options, &targets, &results))?
        );
    } else {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "{} service(s), {} s of trace × {} policies × {} utilisation targets, replayed in {:.1?}; boot {:?}..{:?}, capacity per instance from the policy (default {}/s), deadline {} s, scale ×{}\n",
            targets.len(),
            seconds,
            POLICIES.len(),
            options.utilizations.len(),
            elapsed,
            options.boot.min,
            options.boot.max,
            options.capacity,
            options.deadline.as_secs(),
            options.scale
        )?;
        writeln!(out, "{}", table(options, &results))?;
        writeln!(out, "{}", gains(options, &results))?;
    }
    if let Some(dir) = &options.plot {
        let files = plots(dir, options, &targets, &results)?;
        for file in files {
            eprintln!("wrote {}", file.display());
        }
    }
    Ok(())
}

/// The timeline of the first service at the reference utilisation, and the sweep's curves.
fn plots(
    dir: &std::path::Path,
    options: &ReplayOptions,
    targets: &[Target],
    results: &BTreeMap<(usize, usize), Totals>,
) -> anyhow::Result<Vec<PathBuf>> {
    let u = reference(options);
    let first = targets.first().map(|t| t.name.clone()).unwrap_or_default();
    let timelines: Vec<Timeline<'_>> = [0usize, 1, 2]
        .iter()
        .filter_map(|&kind| {
            let run = results.get(&(kind, u))?.runs.first()?;
            Some(Timeline {
                policy: POLICIES[kind],
                run,
            })
        })
        .collect();
    let curves: Vec<Curve<'_>> = (0..POLICIES.len())
        .map(|kind| Curve {
            policy: POLICIES[kind],
            points: (0..options.utilizations.len())
                .filter_map(|u| {
                    let s = &results.get(&(kind, u))?.stats;
                    Some((s.instance_seconds, 100.0 * s.waited_share()))
                })
                .collect(),
        })
        .collect();
    let title = format!(
        "{first}: load, forecast and ready capacity at target utilisation {:.2}",
        options.utilizations[u]
    );
    write_plots(dir, &title, &timelines, &curves)
}

/// `forecourt replay` entry point.
pub fn main(options: &ReplayOptions) -> anyhow::Result<()> {
    run_replay(options)
}

fn table(options: &ReplayOptions, results: &BTreeMap<(usize, usize), Totals>) -> String {
    let mut out = String::from(
        "| policy | target util. | waited % | wait p50 / p99 / p99.9 (s) | past deadline | instance-s | idle instance-s | scale actions |\n|---|---|---|---|---|---|---|---|\n",
    );
    for ((kind, u), totals) in results {
        let s = &totals.stats;
        out.push_str(&format!(
            "| {} | {:.2} | {:.3} | {:.0} / {:.0} / {:.0} | {:.0} | {:.0} | {:.0} | {} |\n",
            POLICIES[*kind],
            options.utilizations[*u],
            100.0 * s.waited_share(),
            s.wait_quantile(0.5),
            s.wait_quantile(0.99),
            s.wait_quantile(0.999),
            s.past_deadline,
            s.instance_seconds,
            s.idle_instance_seconds,
            s.scale_actions
        ));
    }
    out
}

/// The utilisation index closest to 0.7 (Knative's default target).
fn reference(options: &ReplayOptions) -> usize {
    options
        .utilizations
        .iter()
        .enumerate()
        .min_by(|a, b| (a.1 - 0.7).abs().total_cmp(&(b.1 - 0.7).abs()))
        .map_or(0, |(i, _)| i)
}

fn gains(options: &ReplayOptions, results: &BTreeMap<(usize, usize), Totals>) -> String {
    let u = reference(options);
    let get = |kind: usize| results.get(&(kind, u)).map(|t| &t.stats);
    let (Some(fc), Some(kpa), Some(oracle)) = (get(0), get(1), get(2)) else {
        return String::new();
    };
    let gap = kpa.waited_share() - oracle.waited_share();
    let share = if gap > 0.0 {
        format!(
            "{:.0} % of the oracle's gain",
            100.0 * (kpa.waited_share() - fc.waited_share()) / gap
        )
    } else {
        "KPA already matches the oracle".to_owned()
    };
    let equal_cost = equal_cost(options, results)
        .map(|(kpa_u, kpa_waited, fc_waited, fc_cost)| {
            format!(
                " At no more than 10 % above KPA's instance-seconds (KPA at {kpa_u:.2}: {:.3} % waited), Forecourt's curve reaches {:.3} % waited ({:+.1} % instance-seconds).",
                100.0 * kpa_waited,
                100.0 * fc_waited,
                100.0 * fc_cost
            )
        })
        .unwrap_or_default();
    format!(
        "At target utilisation {:.2}: requests that waited for capacity — KPA {:.3} %, Forecourt {:.3} %, oracle {:.3} % (Forecourt recovers {share}); instance-seconds — KPA {:.0}, Forecourt {:.0} ({:+.1} %), oracle {:.0}.",
        options.utilizations[u],
        100.0 * kpa.waited_share(),
        100.0 * fc.waited_share(),
        100.0 * oracle.waited_share(),
        kpa.instance_seconds,
        fc.instance_seconds,
        100.0 * (fc.instance_seconds / kpa.instance_seconds.max(1.0) - 1.0),
        oracle.instance_seconds,
    ) + &equal_cost
}

/// Forecourt against KPA at (almost) equal cost: for KPA at each target (the reference target
/// first), Forecourt's lowest waiting among its targets that cost at most 10 % more; the first
/// KPA target for which one exists. Returns (KPA target, KPA waited, Forecourt waited,
/// Forecourt's extra cost as a fraction).
fn equal_cost(
    options: &ReplayOptions,
    results: &BTreeMap<(usize, usize), Totals>,
) -> Option<(f64, f64, f64, f64)> {
    let reference = reference(options);
    let order = std::iter::once(reference).chain((0..options.utilizations.len()).rev());
    order.into_iter().find_map(|u| {
        let kpa = &results.get(&(1, u))?.stats;
        let budget = kpa.instance_seconds * 1.1;
        let best = (0..options.utilizations.len())
            .filter_map(|i| results.get(&(0, i)).map(|t| &t.stats))
            .filter(|s| s.instance_seconds <= budget)
            .min_by(|a, b| a.waited_share().total_cmp(&b.waited_share()))?;
        Some((
            options.utilizations[u],
            kpa.waited_share(),
            best.waited_share(),
            best.instance_seconds / kpa.instance_seconds.max(1.0) - 1.0,
        ))
    })
}

fn report_json(
    options: &ReplayOptions,
    targets: &[Target],
    results: &BTreeMap<(usize, usize), Totals>,
) -> serde_json::Value {
    let runs: Vec<_> = results
        .iter()
        .map(|((kind, u), totals)| {
            let s = &totals.stats;
            json!({
                "policy": POLICIES[*kind],
                "target_utilization": options.utilizations[*u],
                "arrived": s.arrived,
                "waited_percent": 100.0 * s.waited_share(),
                "wait_seconds": {
                    "p50": s.wait_quantile(0.5),
                    "p99": s.wait_quantile(0.99),
                    "p999": s.wait_quantile(0.999),
                },
                "past_deadline": s.past_deadline,
                "instance_seconds": s.instance_seconds,
                "idle_instance_seconds": s.idle_instance_seconds,
                "scale_actions": s.scale_actions,
                "timeline": totals.runs.iter().map(|r| json!({
                    "points": r.timeline.iter().map(|p| json!([p.t, p.load, p.forecast, p.ready_capacity])).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "trace": options.trace.display().to_string(),
        "services": targets.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
        "boot_seconds": [options.boot.min.as_secs(), options.boot.max.as_secs()],
        "deadline_seconds": options.deadline.as_secs(),
        "scale": options.scale,
        "runs": runs,
        "summary": gains(options, results),
    })
}
