//! `forecourt replay`: replay a trace (or a synthetic one) through a simulated fleet under
//! Forecourt's policy (the production code on a virtual clock), Knative's KPA, an oracle and
//! static peak provisioning, sweeping each policy's headroom knob, and judge them at equal cost.
//!
//! ```text
//!  trace or --synthetic ─► per service: dense series, sliced, --scale K superposed ─┐
//!  policy file (scaling per service) or defaults ───────────────────────────────────┤
//!     runs: KPA/oracle/static × --utilization; Forecourt × --waiting-cost × its utilisations
//!     (2 threads) ─► per policy: (instance-seconds, waited) curve ─► Forecourt's envelope read
//!     at each of KPA's costs ─► table / JSON (`equal_cost`), plots
//! ```

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use forecourt_config::{Capacity, Policy, ScalingConfig};
use forecourt_orchestrator::replay::synthetic::{
    daily_period, multiply, superpose, Family, Synthetic,
};
use forecourt_orchestrator::replay::{
    centred_mean, default_scaling, equal_cost, instances_for, run, EqualCost, FleetShape,
    FleetStats, ForecourtReplay, KpaReplay, Oracle, RateOracle, ReplayPolicy, RunReport,
    StaticPeak, SweepPoint, Tick, RATE_ORACLE_HALF_WIDTH,
};
use forecourt_orchestrator::scale::kpa::KpaConfig;
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
    #[arg(
        long,
        required_unless_present = "synthetic",
        conflicts_with = "synthetic"
    )]
    pub trace: Option<PathBuf>,
    /// Instead of a trace, a synthetic one: `diurnal`, `flash-crowd`, `bursty-mmpp` or `steps`
    /// (Poisson arrivals around the family's rate; see `--rate`, `--seconds`, `--seed`).
    #[arg(long)]
    pub synthetic: Option<Family>,
    /// Mean requests per second of a synthetic trace.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Length of a synthetic trace.
    #[arg(long, value_parser = duration, default_value = "6h")]
    pub seconds: Duration,
    /// A policy file whose services' `scaling:` apply to trace services of the same name.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Only this service of the trace.
    #[arg(long)]
    pub service: Option<String>,
    /// Scale the traffic K times by superposing K time-shifted copies of the trace (shifted by
    /// whole days when the slice holds K days, so the daily shape stays; a fraction thins one
    /// more copy): K times the requests with the noise of K independent sources.
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// With `--scale`, multiply every count instead (the noise grows K times too: not what K
    /// times the traffic looks like).
    #[arg(long)]
    pub multiply: bool,
    /// Start of the slice (trace time), e.g. "7d".
    #[arg(long, value_parser = duration)]
    pub from: Option<Duration>,
    /// End of the slice (trace time).
    #[arg(long, value_parser = duration)]
    pub to: Option<Duration>,
    /// Time from order to ready of a simulated instance: `10s`, or a uniform range `5s..30s`.
    #[arg(long, value_parser = boot, default_value = "10s")]
    pub boot: Boot,
    /// Seed of the boot-time draws, superposition and synthetic traces.
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
    /// The first part of the replay, simulated but not measured (every policy starts cold).
    #[arg(long, value_parser = duration, default_value = "10m")]
    pub warmup: Duration,
    /// Utilisation targets swept for KPA, the oracle and static peak (their headroom knob).
    #[arg(long = "utilization", value_delimiter = ',', default_values_t = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])]
    pub utilizations: Vec<f64>,
    /// Waiting costs swept for Forecourt (instance-seconds one waiting request is worth: its
    /// headroom knob, through the demand quantile).
    #[arg(long = "waiting-cost", value_delimiter = ',', default_values_t = [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 1000.0])]
    pub waiting_costs: Vec<f64>,
    /// Headroom swept for the rate oracle, in Poisson standard deviations over the rate it
    /// knows (the true λ(t) of a synthetic trace, else a centred 21-second mean).
    #[arg(long = "rate-oracle-z", value_delimiter = ',', allow_negative_numbers = true, default_values_t = [-1.0, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.0, 10.0, 15.0, 20.0])]
    pub rate_oracle_z: Vec<f64>,
    /// Target utilisations swept for Forecourt with each waiting cost (its reactive and panic
    /// arms use it).
    #[arg(long = "forecourt-utilization", value_delimiter = ',', default_values_t = [0.5, 0.7, 0.9])]
    pub forecourt_utilizations: Vec<f64>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Write timeline and trade-off plots (SVG and PNG) into this directory.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// One service to replay, held sparse (thousands of mostly idle services fit): each run
/// builds the dense series it steps through.
struct Target {
    name: String,
    /// Seconds replayed.
    seconds: usize,
    /// `(second, requests)` of the seconds with requests, in order.
    arrivals: Vec<(usize, f64)>,
    /// The true rate of each second, when known (an unscaled synthetic trace).
    known_rates: Option<Vec<f64>>,
    /// The busiest second's requests.
    peak: f64,
    scaling: ScalingConfig,
}

impl Target {
    /// Requests in each second (pages of zeros are never written, so a sparse service costs
    /// its arrivals, not its length).
    fn series(&self) -> Vec<f64> {
        let mut series = vec![0.0; self.seconds];
        for &(t, n) in &self.arrivals {
            series[t] = n;
        }
        series
    }

    /// Requests per second of each second as the rate oracle knows it: the true rate when
    /// known, else the centred mean of the counts.
    fn rates(&self, series: &[f64]) -> Vec<f64> {
        if let Some(rates) = &self.known_rates {
            return rates.clone();
        }
        let window = 2 * RATE_ORACLE_HALF_WIDTH + 1;
        if self.arrivals.len().saturating_mul(window) >= self.seconds {
            return centred_mean(series, RATE_ORACLE_HALF_WIDTH);
        }
        // Sparse: spread each arrival over the windows that hold it.
        let mut rates = vec![0.0; self.seconds];
        for &(t, n) in &self.arrivals {
            let from = t.saturating_sub(RATE_ORACLE_HALF_WIDTH);
            let to = (t + RATE_ORACLE_HALF_WIDTH + 1).min(self.seconds);
            for (i, rate) in rates.iter_mut().enumerate().take(to).skip(from) {
                let lo = i.saturating_sub(RATE_ORACLE_HALF_WIDTH);
                let hi = (i + RATE_ORACLE_HALF_WIDTH + 1).min(self.seconds);
                *rate += n / (hi - lo) as f64;
            }
        }
        rates
    }
}

fn targets(options: &ReplayOptions) -> anyhow::Result<Vec<Target>> {
    let policy = match &options.policy {
        Some(path) => Some(Policy::load(path).map_err(|e| anyhow::anyhow!("{e}"))?),
        None => None,
    };
    // Each service's counts (built one service at a time: a trace of thousands of services
    // is held sparse), and its true rate when known (a synthetic trace's λ(t)).
    enum Counts {
        Dense(Vec<f64>, Option<Vec<f64>>),
        Rows(forecourt_predictor::trace::ServiceTrace),
    }
    let (services, seconds): (Vec<(String, Counts)>, u64) =
        match (&options.trace, options.synthetic) {
            (_, Some(family)) => {
                if !(options.rate > 0.0 && options.rate <= 1e6) {
                    bail!("--rate must be above 0 and at most 1000000");
                }
                let synthetic = Synthetic {
                    family,
                    mean_rate: options.rate,
                    seconds: options.seconds.as_secs().max(1),
                    seed: options.seed,
                };
                let rates = synthetic.rates(synthetic.default_period());
                let series = synthetic.series();
                let seconds = series.len() as u64;
                let counts = Counts::Dense(series, Some(rates));
                (vec![(family.name().to_owned(), counts)], seconds)
            }
            (Some(path), None) => {
                let trace = parse_trace(open_trace(path)?)
                    .with_context(|| format!("{}: not a trace", path.display()))?;
                let seconds = trace.duration_sec();
                let services = trace
                    .services
                    .into_iter()
                    .map(|s| (s.name.clone(), Counts::Rows(s)))
                    .collect();
                (services, seconds)
            }
            (None, None) => bail!("give --trace FILE or --synthetic FAMILY"),
        };
    let from = options.from.map_or(0, |d| d.as_secs()).min(seconds);
    let to = options.to.map_or(seconds, |d| d.as_secs()).min(seconds);
    if to <= from {
        bail!("--from {from}s is not before --to {to}s (the trace lasts {seconds}s)");
    }
    let mut out = Vec::new();
    for (name, counts) in services {
        if options.service.as_deref().is_some_and(|s| s != name) {
            continue;
        }
        let (dense, known_rates) = match counts {
            Counts::Dense(series, rates) => (series, rates),
            Counts::Rows(rows) => (rows.dense_series(seconds), None),
        };
        let range = usize::try_from(from).unwrap_or(0)..usize::try_from(to).unwrap_or(0);
        let slice = dense.get(range.clone()).unwrap_or(&[]);
        let series = if options.multiply {
            multiply(slice, options.scale)
        } else if options.scale == 1.0 {
            slice.to_vec()
        } else {
            let period = daily_period(slice.len(), options.scale);
            superpose(slice, options.scale, period, options.seed)
        };
        // The rate the rate oracle knows: the true one of an unscaled synthetic trace, else
        // the centred mean of the counts replayed.
        let known_rates = known_rates
            .filter(|_| options.scale == 1.0 && !options.multiply)
            .and_then(|r| r.get(range).map(<[f64]>::to_vec));
        let scaling = policy
            .as_ref()
            .and_then(|p| p.service(&name))
            .and_then(|s| s.scaling.clone())
            .unwrap_or_else(|| default_scaling(options.capacity, 0.7));
        let arrivals: Vec<(usize, f64)> = series
            .iter()
            .copied()
            .enumerate()
            .filter(|&(_, n)| n != 0.0)
            .collect();
        out.push(Target {
            name,
            seconds: series.len(),
            peak: series.iter().copied().fold(0.0, f64::max),
            arrivals,
            known_rates,
            scaling,
        });
    }
    if out.is_empty() {
        bail!(
            "no service named {:?} to replay",
            options.service.as_deref().unwrap_or("")
        );
    }
    Ok(out)
}

/// The policies replayed, in report order.
const POLICIES: [&str; 5] = [
    "forecourt",
    "knative-kpa",
    "oracle",
    "rate-oracle",
    "static-peak",
];
/// Index of the rate oracle in [`POLICIES`].
const RATE_ORACLE: usize = 3;
/// Index of static peak provisioning in [`POLICIES`].
const STATIC_PEAK: usize = 4;

/// One setting of a policy's knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Setting {
    /// Target utilisation.
    utilization: f64,
    /// Forecourt's waiting cost (instance-seconds per waiting request).
    waiting_cost: Option<f64>,
    /// The rate oracle's headroom in Poisson standard deviations.
    noise_z: Option<f64>,
}

/// Every setting swept for the policy `kind` (an index into [`POLICIES`]).
fn settings(options: &ReplayOptions, kind: usize) -> Vec<Setting> {
    if kind == 0 {
        options
            .forecourt_utilizations
            .iter()
            .flat_map(|&utilization| {
                options.waiting_costs.iter().map(move |&c| Setting {
                    utilization,
                    waiting_cost: Some(c),
                    noise_z: None,
                })
            })
            .collect()
    } else if kind == RATE_ORACLE {
        options
            .rate_oracle_z
            .iter()
            .map(|&z| Setting {
                utilization: 1.0,
                waiting_cost: None,
                noise_z: Some(z),
            })
            .collect()
    } else {
        options
            .utilizations
            .iter()
            .map(|&utilization| Setting {
                utilization,
                waiting_cost: None,
                noise_z: None,
            })
            .collect()
    }
}

/// One run to do: a policy at one setting over one service.
struct Job<'a> {
    target: &'a Target,
    /// The target's place in the trace (only the first few keep a detailed timeline).
    index: usize,
    kind: usize,
    setting: usize,
}

/// Services whose runs keep a 400-point timeline (for plots and JSON); the others keep one
/// point, so thousands of services × dozens of runs stay small.
const TIMELINE_SERVICES: usize = 10;

/// Requests per second one instance serves: its capacity, or concurrency / service time.
fn rps_capacity(scaling: &ScalingConfig, options: &ReplayOptions) -> f64 {
    match scaling.capacity {
        Capacity::RequestsPerSecond(rps) => rps,
        Capacity::Concurrency(c) => c / options.service_time.as_secs_f64().max(1e-3),
    }
}

fn policy_for(
    target: &Target,
    series: &[f64],
    kind: usize,
    setting: Setting,
    options: &ReplayOptions,
) -> anyhow::Result<Box<dyn ReplayPolicy>> {
    let capacity = rps_capacity(&target.scaling, options);
    let per_instance = capacity * setting.utilization;
    let peak = target.peak;
    Ok(match kind {
        0 => {
            let mut scaling = target.scaling.clone();
            scaling.target_utilization = setting.utilization;
            if let Some(cost) = setting.waiting_cost {
                scaling.waiting_cost = cost;
            }
            Box::new(
                ForecourtReplay::new(scaling).with_service_time(options.service_time.as_secs_f64()),
            )
        }
        1 => {
            let config = KpaConfig {
                target_utilization: setting.utilization,
                ..KpaConfig::with_target(capacity)
            };
            Box::new(KpaReplay::new(config).map_err(|errors| {
                let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
                anyhow::anyhow!("kpa settings: {}", list.join("; "))
            })?)
        }
        2 => Box::new(Oracle {
            boot_secs: options.boot.max.as_secs(),
            per_instance,
        }),
        RATE_ORACLE => Box::new(RateOracle::new(
            &target.rates(series),
            options.boot.max.as_secs(),
            capacity,
            setting.noise_z.unwrap_or(0.0),
        )),
        _ => Box::new(StaticPeak {
            instances: instances_for(peak, per_instance),
        }),
    })
}

/// A policy's totals over every service at one setting.
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
    total.cold_starts += run.cold_starts;
    total.scale_actions += run.scale_actions;
    if total.waits.len() < run.waits.len() {
        total.waits.resize(run.waits.len(), 0.0);
    }
    for (t, r) in total.waits.iter_mut().zip(&run.waits) {
        *t += r;
    }
}

/// Every run's totals, keyed by (policy index, setting index).
type Results = BTreeMap<(usize, usize), Totals>;

fn validate(options: &ReplayOptions) -> anyhow::Result<()> {
    let utilizations = options
        .utilizations
        .iter()
        .chain(&options.forecourt_utilizations);
    if utilizations.clone().any(|u| !(0.05..=1.0).contains(u)) {
        bail!("--utilization and --forecourt-utilization values must be between 0.05 and 1");
    }
    if options.utilizations.is_empty() || options.forecourt_utilizations.is_empty() {
        bail!("--utilization and --forecourt-utilization need at least one value");
    }
    if options.waiting_costs.is_empty()
        || options
            .waiting_costs
            .iter()
            .any(|c| !(*c > 0.0 && *c <= forecourt_config::scaling::MAX_WAITING_COST))
    {
        bail!(
            "--waiting-cost values must be above 0 and at most {}",
            forecourt_config::scaling::MAX_WAITING_COST
        );
    }
    if options.rate_oracle_z.is_empty()
        || options
            .rate_oracle_z
            .iter()
            .any(|z| !(-10.0..=100.0).contains(z))
    {
        bail!("--rate-oracle-z values must be between -10 and 100 (standard deviations)");
    }
    if !(options.scale > 0.0 && options.scale.is_finite()) {
        bail!("--scale must be a positive number");
    }
    Ok(())
}

/// Runs the replay and prints the report.
pub fn run_replay(options: &ReplayOptions) -> anyhow::Result<()> {
    validate(options)?;
    let started = Instant::now();
    let targets = targets(options)?;
    let shape = |t: &Target| FleetShape {
        boot_secs: options.boot.min.as_secs(),
        boot_max_secs: options.boot.max.as_secs(),
        seed: options.seed,
        capacity: rps_capacity(&t.scaling, options),
        deadline_secs: options.deadline.as_secs().max(1),
        warmup_secs: options.warmup.as_secs(),
    };
    let all_settings: Vec<Vec<Setting>> =
        (0..POLICIES.len()).map(|k| settings(options, k)).collect();
    let mut jobs = Vec::new();
    for (index, target) in targets.iter().enumerate() {
        for (kind, list) in all_settings.iter().enumerate() {
            for setting in 0..list.len() {
                jobs.push(Job {
                    target,
                    index,
                    kind,
                    setting,
                });
            }
        }
    }
    let total_seconds: u64 = jobs.iter().map(|j| j.target.seconds as u64).sum();
    let done_seconds = AtomicU64::new(0);
    let results: Mutex<Results> = Mutex::new(BTreeMap::new());
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
                let setting = all_settings[job.kind][job.setting];
                let series = job.target.series();
                let mut policy = match policy_for(job.target, &series, job.kind, setting, options) {
                    Ok(p) => p,
                    Err(e) => {
                        if let Ok(mut errors) = errors.lock() {
                            errors.push(e.to_string());
                        }
                        continue;
                    }
                };
                let initial = match job.kind {
                    STATIC_PEAK => policy.desired(&Tick {
                        t: 0,
                        series: &series,
                        ready: 0,
                        ordered: 0,
                        queued: 0.0,
                        waited: 0.0,
                    }),
                    _ => 1,
                };
                let mut last = 0;
                let report = run(
                    &series,
                    policy.as_mut(),
                    shape(job.target),
                    initial,
                    if job.index < TIMELINE_SERVICES {
                        400
                    } else {
                        1
                    },
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
                if let Ok(mut results) = results.lock() {
                    let entry = results.entry((job.kind, job.setting)).or_default();
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
    let report = Report {
        options,
        settings: &all_settings,
        results: &results,
    };
    let elapsed = started.elapsed();
    let seconds: usize = targets.iter().map(|t| t.seconds).sum();
    let stepped: u64 = results
        .values()
        .flat_map(|totals| totals.runs.iter().map(|r| r.stepped_seconds))
        .sum();
    if options.json {
        println!("{}", serde_json::to_string_pretty(&report.json(&targets))?);
    } else {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "{} service(s), {} s of trace ({} s warm-up not measured), {} runs, replayed in {:.1?} ({:.1} % of the policy-seconds stepped, the rest quiet); boot {:?}..{:?}, capacity per instance from the policy (default {}/s), deadline {} s, scale ×{}{}\n",
            targets.len(),
            seconds,
            options.warmup.as_secs(),
            jobs.len(),
            elapsed,
            100.0 * stepped as f64 / (total_seconds as f64).max(1.0),
            options.boot.min,
            options.boot.max,
            options.capacity,
            options.deadline.as_secs(),
            options.scale,
            if options.multiply { " (multiplied)" } else if options.scale != 1.0 { " (superposed)" } else { "" },
        )?;
        writeln!(out, "{}", report.table())?;
        writeln!(out, "{}", report.equal_cost_table())?;
        writeln!(out, "{}", report.summary())?;
    }
    if let Some(dir) = &options.plot {
        let files = report.plots(dir, &targets)?;
        for file in files {
            eprintln!("wrote {}", file.display());
        }
    }
    Ok(())
}

/// `forecourt replay` entry point.
pub fn main(options: &ReplayOptions) -> anyhow::Result<()> {
    run_replay(options)
}

/// The finished sweep and how to present it.
struct Report<'a> {
    options: &'a ReplayOptions,
    settings: &'a [Vec<Setting>],
    results: &'a Results,
}

impl Report<'_> {
    /// A policy's sweep as cost/waiting points, in setting order.
    fn curve(&self, kind: usize) -> Vec<SweepPoint> {
        self.results
            .range((kind, 0)..(kind + 1, 0))
            .map(|(&(_, i), totals)| {
                let setting = self.settings[kind][i];
                SweepPoint {
                    knob: setting
                        .waiting_cost
                        .or(setting.noise_z)
                        .unwrap_or(setting.utilization),
                    instance_seconds: totals.stats.instance_seconds,
                    waited: totals.stats.waited_share(),
                }
            })
            .collect()
    }

    /// Forecourt, the oracle and the rate oracle at each of KPA's sweep points.
    fn equal_cost(&self) -> Vec<EqualCost> {
        equal_cost(
            &self.curve(1),
            &self.curve(0),
            &self.curve(2),
            &self.curve(RATE_ORACLE),
        )
    }

    /// The setting of `kind` closest to utilisation 0.7 (Knative's default target), with the
    /// policy's own waiting cost for Forecourt.
    fn reference(&self, kind: usize) -> usize {
        let default_cost = forecourt_config::DEFAULT_WAITING_COST;
        self.settings[kind]
            .iter()
            .enumerate()
            .min_by(|(_, a), (_, b)| {
                let distance = |s: &Setting| {
                    (s.utilization - 0.7).abs()
                        + s.waiting_cost
                            .map_or(0.0, |c| (c.ln() - default_cost.ln()).abs())
                };
                distance(a).total_cmp(&distance(b))
            })
            .map_or(0, |(i, _)| i)
    }

    fn table(&self) -> String {
        let mut out = String::from(
            "| policy | target util. | waiting cost | waited % | wait p50 / p99 / p99.9 (s) | past deadline | cold starts | instance-s | idle instance-s | scale actions |\n|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for ((kind, i), totals) in self.results {
            let s = &totals.stats;
            let setting = self.settings[*kind][*i];
            out.push_str(&format!(
                "| {} | {:.2} | {} | {:.3} | {:.0} / {:.0} / {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} |\n",
                POLICIES[*kind],
                setting.utilization,
                match (setting.waiting_cost, setting.noise_z) {
                    (Some(c), _) => format!("{c}"),
                    (None, Some(z)) => format!("z {z}"),
                    (None, None) => "-".to_owned(),
                },
                100.0 * s.waited_share(),
                s.wait_quantile(0.5),
                s.wait_quantile(0.99),
                s.wait_quantile(0.999),
                s.past_deadline,
                s.cold_starts,
                s.instance_seconds,
                s.idle_instance_seconds,
                s.scale_actions
            ));
        }
        out
    }

    fn equal_cost_table(&self) -> String {
        let mut out = String::from(
            "At equal cost (Forecourt's envelope over its sweep, interpolated at each KPA run's instance-seconds; the rate oracle knows the rate, not the noise: the mark for any forecast):\n\n| KPA target | KPA instance-s | KPA waited % | Forecourt waited % | ratio | gap to oracle closed | rate oracle waited % | rate oracle ratio |\n|---|---|---|---|---|---|---|---|\n",
        );
        for row in self.equal_cost() {
            out.push_str(&format!(
                "| {:.2} | {:.0} | {:.3} | {} | {} | {} | {} | {} |\n",
                row.kpa_target,
                row.kpa_instance_seconds,
                100.0 * row.kpa_waited,
                row.forecourt_waited.map_or(
                    "out of range (Forecourt's sweep does not go this cheap)".to_owned(),
                    |w| format!("{:.3}", 100.0 * w)
                ),
                row.ratio().map_or("-".to_owned(), |r| format!("{r:.2}×")),
                row.gap_closed()
                    .map_or("-".to_owned(), |g| format!("{:.0} %", 100.0 * g)),
                row.rate_oracle_waited
                    .map_or("-".to_owned(), |w| format!("{:.3}", 100.0 * w)),
                row.rate_oracle_ratio()
                    .map_or("-".to_owned(), |r| format!("{r:.2}×")),
            ));
        }
        out
    }

    fn summary(&self) -> String {
        let rows = self.equal_cost();
        let ratios: Vec<f64> = rows.iter().filter_map(EqualCost::ratio).collect();
        let compared = ratios.len();
        let worst = ratios.iter().copied().fold(f64::NAN, f64::max);
        let best = ratios.iter().copied().fold(f64::NAN, f64::min);
        let reference = |kind: usize| {
            self.results
                .get(&(kind, self.reference(kind)))
                .map(|t| &t.stats)
        };
        let (Some(fc), Some(kpa), Some(oracle)) = (reference(0), reference(1), reference(2)) else {
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
        let at_equal_cost = if compared == 0 {
            "The sweeps do not overlap: no KPA run's cost lies within Forecourt's range.".to_owned()
        } else {
            format!(
                "At equal cost Forecourt's waiting is {best:.2}–{worst:.2}× KPA's over the {compared} of {} KPA runs its sweep reaches.",
                rows.len()
            )
        };
        format!(
            "{at_equal_cost} At the defaults (target utilisation 0.70, waiting cost {}): requests that waited for capacity — KPA {:.3} %, Forecourt {:.3} %, oracle {:.3} % (Forecourt recovers {share}); instance-seconds — KPA {:.0}, Forecourt {:.0} ({:+.1} %), oracle {:.0}.",
            forecourt_config::DEFAULT_WAITING_COST,
            100.0 * kpa.waited_share(),
            100.0 * fc.waited_share(),
            100.0 * oracle.waited_share(),
            kpa.instance_seconds,
            fc.instance_seconds,
            100.0 * (fc.instance_seconds / kpa.instance_seconds.max(1.0) - 1.0),
            oracle.instance_seconds,
        )
    }

    /// The timeline of the first service at the reference settings, and the sweep's curves
    /// (Forecourt's as its envelope).
    fn plots(&self, dir: &std::path::Path, targets: &[Target]) -> anyhow::Result<Vec<PathBuf>> {
        let first = targets.first().map(|t| t.name.clone()).unwrap_or_default();
        let timelines: Vec<Timeline<'_>> = [0usize, 1, 2]
            .iter()
            .filter_map(|&kind| {
                let run = self
                    .results
                    .get(&(kind, self.reference(kind)))?
                    .runs
                    .first()?;
                Some(Timeline {
                    policy: POLICIES[kind],
                    run,
                })
            })
            .collect();
        let curves: Vec<Curve<'_>> = (0..POLICIES.len())
            .map(|kind| {
                let mut points = self.curve(kind);
                if kind == 0 {
                    points = forecourt_orchestrator::replay::pareto(&points);
                }
                Curve {
                    policy: POLICIES[kind],
                    points: points
                        .iter()
                        .map(|p| (p.instance_seconds, 100.0 * p.waited))
                        .collect(),
                }
            })
            .collect();
        let title = format!(
            "{first}: load, forecast and ready capacity at target utilisation 0.70, waiting cost {}",
            forecourt_config::DEFAULT_WAITING_COST
        );
        write_plots(dir, &title, &timelines, &curves)
    }

    fn json(&self, targets: &[Target]) -> serde_json::Value {
        let runs: Vec<_> = self
            .results
            .iter()
            .map(|((kind, i), totals)| {
                let s = &totals.stats;
                let setting = self.settings[*kind][*i];
                json!({
                    "policy": POLICIES[*kind],
                    "target_utilization": setting.utilization,
                    "waiting_cost": setting.waiting_cost,
                    "rate_oracle_z": setting.noise_z,
                    "arrived": s.arrived,
                    "waited_percent": 100.0 * s.waited_share(),
                    "wait_seconds": {
                        "p50": s.wait_quantile(0.5),
                        "p99": s.wait_quantile(0.99),
                        "p999": s.wait_quantile(0.999),
                    },
                    "past_deadline": s.past_deadline,
                    "cold_starts": s.cold_starts,
                    "instance_seconds": s.instance_seconds,
                    "idle_instance_seconds": s.idle_instance_seconds,
                    "scale_actions": s.scale_actions,
                    "stepped_seconds": totals.runs.iter().map(|r| r.stepped_seconds).sum::<u64>(),
                    "timeline": totals.runs.iter().map(|r| json!({
                        "points": r.timeline.iter().map(|p| json!([p.t, p.load, p.forecast, p.ready_capacity])).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let equal_cost: Vec<_> = self
            .equal_cost()
            .iter()
            .map(|row| {
                json!({
                    "kpa_target": row.kpa_target,
                    "kpa_instance_seconds": row.kpa_instance_seconds,
                    "kpa_waited_percent": 100.0 * row.kpa_waited,
                    "forecourt_waited_percent": row.forecourt_waited.map(|w| 100.0 * w),
                    "oracle_waited_percent": row.oracle_waited.map(|w| 100.0 * w),
                    "rate_oracle_waited_percent": row.rate_oracle_waited.map(|w| 100.0 * w),
                    "rate_oracle_ratio": row.rate_oracle_ratio(),
                    "ratio": row.ratio(),
                    "gap_closed": row.gap_closed(),
                })
            })
            .collect();
        json!({
            "trace": self.options.trace.as_ref().map(|t| t.display().to_string()),
            "synthetic": self.options.synthetic.map(Family::name),
            "services": targets.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
            "boot_seconds": [self.options.boot.min.as_secs(), self.options.boot.max.as_secs()],
            "deadline_seconds": self.options.deadline.as_secs(),
            "warmup_seconds": self.options.warmup.as_secs(),
            "scale": self.options.scale,
            "scaled_by": if self.options.multiply { "multiplying" } else { "superposing" },
            "runs": runs,
            "equal_cost": equal_cost,
            "summary": self.summary(),
        })
    }
}
