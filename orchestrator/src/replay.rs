//! Trace replay: the production predictor and control loop on a virtual clock,
//! in front of a simulated fleet, side by side with Knative's KPA, an oracle and static peak
//! provisioning.
//!
//! ```text
//!  per second t of the trace:
//!    fleet.step(t, arrivals[t])            serve what ready capacity allows, queue the rest
//!    policy.desired(t)                     Forecourt: Predictor + the proxy's ControlLoop::tick
//!                                          KPA: stable/panic windows → Kpa::scale
//!                                          oracle: the true arrivals of the next boot seconds
//!                                          rate oracle: the rate of the next boot seconds (true
//!                                          or a centred mean), not their Poisson noise
//!                                          static: the peak, from the start
//!    fleet.order(t, desired)               ready at t + boot, billed from now
//! ```

pub mod compare;
pub mod fleet;
pub mod synthetic;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use forecourt_config::{Capacity, ForecastConfig, Policy, ScalingConfig, ServiceConfig};
use forecourt_predictor::{Predictor, PredictorConfig, ServiceId, WindowConfig};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::backend::{Orchestrator, OrchestratorError, Update};
use crate::control_loop::{ControlLoop, ControlPlane, HostService, HostState};
use crate::scale::decide::MAX_HORIZON;
use crate::scale::kpa::{Kpa, KpaConfig, KpaConfigError, KpaWindows};
pub use compare::{equal_cost, pareto, EqualCost, SweepPoint};
pub use fleet::{FleetShape, FleetStats, SimFleet};

/// What a policy sees at the end of second `t`.
#[derive(Debug, Clone, Copy)]
pub struct Tick<'a> {
    /// The second that just ended.
    pub t: u64,
    /// The whole series; only the oracle may read past `t`.
    pub series: &'a [f64],
    /// Instances ready.
    pub ready: u32,
    /// Instances ordered (pending and ready).
    pub ordered: u32,
    /// Requests queued for capacity.
    pub queued: f64,
    /// Requests that have waited for capacity so far (served late or expired).
    pub waited: f64,
}

impl Tick<'_> {
    /// Arrivals in second `t`.
    pub fn arrivals(&self) -> f64 {
        self.series
            .get(usize::try_from(self.t).unwrap_or(usize::MAX))
            .copied()
            .unwrap_or(0.0)
    }
}

/// A scaling policy under replay.
pub trait ReplayPolicy: Send {
    /// Label in reports.
    fn name(&self) -> String;
    /// Instances wanted after second `tick.t`.
    fn desired(&mut self, tick: &Tick<'_>) -> u32;
    /// The load it expects at its horizon, if it forecasts (for plots).
    fn forecast(&self) -> Option<f64> {
        None
    }
    /// Called after [`Self::desired`] for `tick`, when second `tick.t + 1` has no arrival and
    /// the next one is at `next_arrival`: the first second after `tick.t` whose decision may
    /// differ from this one if every second before `next_arrival` stays empty (`None`: the
    /// next; the default). The replay skips the seconds in between and bills them in one step:
    /// the answer must be exact, not a guess, so that a skipped replay equals a stepped one.
    fn quiet_until(&self, tick: &Tick<'_>, next_arrival: u64) -> Option<u64> {
        let _ = (tick, next_arrival);
        None
    }
}

// === Forecourt ===

/// Forecourt's policy exactly as the proxy runs it: arrivals recorded in a [`Predictor`] and the
/// same [`ControlLoop`] ticked once a virtual second, ordering through an in-memory backend.
pub struct ForecourtReplay {
    predictive: bool,
    state: ReplayState,
    control: ControlLoop,
    orchestrator: Arc<ReplayBackend>,
    last_forecast: Option<f64>,
}

impl std::fmt::Debug for ForecourtReplay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForecourtReplay")
            .field("control", &self.control)
            .finish_non_exhaustive()
    }
}

/// The replayed service as the control loop's host reports it.
struct ReplayState {
    predictor: Arc<Predictor>,
    forecast: ForecastConfig,
    service: ServiceConfig,
    ready: u32,
    held: u32,
    waited: u64,
    service_time_secs: f64,
}

impl HostState for ReplayState {
    fn predictor(&self) -> &Arc<Predictor> {
        &self.predictor
    }

    fn forecast_config(&self) -> &ForecastConfig {
        &self.forecast
    }

    fn services(&self) -> Vec<HostService<'_>> {
        vec![HostService {
            config: &self.service,
            ready: self.ready,
            held: self.held,
            mean_latency_secs: self.service_time_secs,
            waited: self.waited,
            versions: Vec::new(),
        }]
    }
}

/// The simulated fleet's order book: the control loop orders here, the replay reads it back.
#[derive(Debug, Default)]
struct ReplayBackend {
    replicas: AtomicU32,
}

#[async_trait]
impl Orchestrator for ReplayBackend {
    fn kind(&self) -> &'static str {
        "replay"
    }

    async fn set_replicas(
        &self,
        _service: &str,
        _version: &str,
        replicas: u32,
    ) -> Result<(), OrchestratorError> {
        self.replicas.store(replicas, Ordering::Relaxed);
        Ok(())
    }

    fn replicas(&self, _service: &str, _version: &str) -> u32 {
        self.replicas.load(Ordering::Relaxed)
    }

    fn updates(&self) -> UnboundedReceiver<Update> {
        // The simulated fleet is not a real one: no instance ever appears.
        tokio::sync::mpsc::unbounded_channel().1
    }

    async fn shutdown(&self) {}
}

/// The name of the one service a replay scales.
const REPLAYED: &str = "replayed";

/// A one-service policy entry for the replayed service, scaled by `scaling`.
fn replayed_service(scaling: ScalingConfig) -> ServiceConfig {
    let text = format!(
        "services: [{{ name: {REPLAYED}, routes: [{{ path_prefix: / }}], instances: [{{ address: \"127.0.0.1:1\" }}] }}]"
    );
    match Policy::parse(&text, std::path::Path::new("replay.yaml")) {
        Ok(policy) => {
            let mut service = policy
                .services
                .into_iter()
                .next()
                .unwrap_or_else(|| unreachable!("the replayed policy has one service"));
            service.scaling = Some(scaling);
            service
        }
        Err(error) => unreachable!("the replayed policy is valid: {error}"),
    }
}

impl ForecourtReplay {
    /// Forecourt's policy with `scaling` for one service.
    pub fn new(scaling: ScalingConfig) -> Self {
        let buckets = usize::try_from(scaling.stable_window.as_secs().saturating_add(2))
            .unwrap_or(usize::MAX)
            .max(60);
        let config = PredictorConfig {
            window: WindowConfig {
                bucket_ms: 1_000,
                buckets,
            },
            ..PredictorConfig::default()
        };
        let predictor = Predictor::new([REPLAYED], config)
            .or_else(|_| Predictor::new([REPLAYED], PredictorConfig::default()));
        let predictor = match predictor {
            Ok(p) => Arc::new(p),
            Err(error) => unreachable!("a one-service predictor is valid: {error}"),
        };
        let predictive = scaling.predictive;
        let state = ReplayState {
            predictor,
            forecast: ForecastConfig::default(),
            service: replayed_service(scaling),
            ready: 0,
            held: 0,
            waited: 0,
            service_time_secs: 0.0,
        };
        let orchestrator = Arc::new(ReplayBackend::default());
        let control = ControlLoop::new(
            Arc::clone(&orchestrator) as Arc<dyn Orchestrator>,
            Arc::new(ControlPlane::default()),
            &state,
            None,
        )
        .without_boards();
        Self {
            predictive,
            state,
            control,
            orchestrator,
            last_forecast: None,
        }
    }

    /// The headroom controller's state, when the replayed scaling declares an `slo`.
    pub fn headroom(&self) -> Option<crate::scale::headroom::HeadroomState> {
        self.control.headroom(REPLAYED)
    }

    /// Sets the mean service time (for a concurrency capacity, via Little's law).
    pub fn with_service_time(mut self, seconds: f64) -> Self {
        self.state.service_time_secs = seconds.max(0.0);
        self
    }
}

impl ReplayPolicy for ForecourtReplay {
    fn name(&self) -> String {
        if self.predictive {
            "forecourt".to_owned()
        } else {
            "forecourt-reactive".to_owned()
        }
    }

    fn desired(&mut self, tick: &Tick<'_>) -> u32 {
        let second_ms = tick.t.saturating_mul(1_000);
        let arrivals = tick.arrivals().round().max(0.0) as u64;
        self.state
            .predictor
            .record_arrivals(ServiceId(0), arrivals, second_ms + 500);
        // The control loop ticks just after the second closes.
        let now_ms = second_ms + 1_020;
        self.state.ready = tick.ready;
        // The fleet's queue is what Forecourt holds for capacity.
        self.state.held = tick.queued.ceil().min(f64::from(u32::MAX)) as u32;
        self.state.waited = tick.waited.max(0.0) as u64;
        self.orchestrator
            .replicas
            .store(tick.ordered, Ordering::Relaxed);
        // The replay backend never waits, so the tick completes on its first poll.
        futures::executor::block_on(self.control.tick(&self.state, now_ms, true));
        self.last_forecast = self.control.last_forecast(REPLAYED);
        self.orchestrator.replicas.load(Ordering::Relaxed)
    }

    fn forecast(&self) -> Option<f64> {
        self.last_forecast
    }

    fn quiet_until(&self, tick: &Tick<'_>, next_arrival: u64) -> Option<u64> {
        let now_ms = tick.t.saturating_mul(1_000) + 1_020;
        if !self.control.at_rest(REPLAYED, now_ms) {
            return None;
        }
        // The longest horizon the scaler reads: its own, or the auto horizon's ceiling.
        let horizon = match self.state.service.scaling.as_ref().map(|s| s.horizon) {
            Some(forecourt_config::Horizon::Fixed(fixed)) => fixed.max(MAX_HORIZON),
            _ => MAX_HORIZON,
        };
        let lookahead = horizon.as_secs() + 1;
        let wake = self.control.next_wake_sec(REPLAYED, lookahead);
        Some(wake.map_or(next_arrival, |w| w.min(next_arrival)))
    }
}

// === Knative KPA ===

/// Knative's KPA as a replay policy: per-second windows feeding [`Kpa::scale`].
#[derive(Debug)]
pub struct KpaReplay {
    kpa: Kpa,
    windows: KpaWindows,
    last: u32,
    /// The last second recorded: after skipped seconds the windows are given their zeros.
    last_t: Option<u64>,
    /// Seconds of zeros that make the windows as if every skipped second had been recorded.
    backfill_secs: u64,
}

impl KpaReplay {
    /// KPA with `config`, starting from one pod.
    pub fn new(config: KpaConfig) -> Result<Self, Vec<KpaConfigError>> {
        let windows = KpaWindows::new(&config);
        let backfill_secs = config.stable_window.as_secs().saturating_add(2);
        Ok(Self {
            kpa: Kpa::new(config)?,
            windows,
            last: 1,
            last_t: None,
            backfill_secs,
        })
    }
}

impl ReplayPolicy for KpaReplay {
    fn name(&self) -> String {
        "knative-kpa".to_owned()
    }

    fn desired(&mut self, tick: &Tick<'_>) -> u32 {
        let second_ms = tick.t.saturating_mul(1_000);
        if let Some(last) = self.last_t {
            let from = (last + 1).max(tick.t.saturating_sub(self.backfill_secs));
            for skipped in from..tick.t {
                self.windows.record(skipped * 1_000 + 500, 0.0);
            }
        }
        self.last_t = Some(tick.t);
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

    fn quiet_until(&self, tick: &Tick<'_>, next_arrival: u64) -> Option<u64> {
        // At zero with nothing in the windows and no panic, no traffic keeps it at zero.
        let now_ms = tick.t.saturating_mul(1_000) + 999;
        let windows_quiet = self
            .windows
            .observed(now_ms)
            .is_none_or(|o| o.stable == 0.0 && o.panic == 0.0);
        (self.last == 0 && tick.ordered == 0 && !self.kpa.panicking() && windows_quiet)
            .then_some(next_arrival)
    }
}

// === Oracle and static ===

/// Knows the true arrivals: orders at `t` what the next `boot` seconds need (the bound).
#[derive(Debug, Clone, Copy)]
pub struct Oracle {
    /// Seconds from order to ready.
    pub boot_secs: u64,
    /// Requests per second one instance is sized for (capacity × utilisation).
    pub per_instance: f64,
}

impl ReplayPolicy for Oracle {
    fn name(&self) -> String {
        "oracle".to_owned()
    }

    fn desired(&mut self, tick: &Tick<'_>) -> u32 {
        let peak = next_boot(tick.series, tick.t, self.boot_secs)
            .iter()
            .copied()
            .fold(0.0, f64::max);
        instances_for(peak, self.per_instance)
    }

    fn quiet_until(&self, tick: &Tick<'_>, next_arrival: u64) -> Option<u64> {
        // It orders at `t` for `t + 1 ..= t + boot`: the next arrival shows `boot` seconds early.
        let wakes = next_arrival.saturating_sub(self.boot_secs.max(1));
        (tick.ordered == 0).then_some(wakes)
    }
}

/// The values of the seconds an instance ordered at the end of second `t` covers until it is
/// ready: `t + 1 ..= t + boot_secs` (at least one second), clipped to `values`.
fn next_boot<T>(values: &[T], t: u64, boot_secs: u64) -> &[T] {
    let from = usize::try_from(t.saturating_add(1)).unwrap_or(usize::MAX);
    let to = usize::try_from(t.saturating_add(boot_secs.max(1)))
        .unwrap_or(usize::MAX)
        .min(values.len().saturating_sub(1));
    values.get(from..=to).unwrap_or(&[])
}

/// Half-width of the centred mean the rate oracle takes for the rate of a second: ±10 s (a
/// 21-second mean knows 1/21 of a second's Poisson variance).
pub const RATE_ORACLE_HALF_WIDTH: usize = 10;

/// Knows the rate but not the noise: orders at `t` for the highest rate of the next `boot`
/// seconds plus `z` Poisson standard deviations, at full capacity. What a forecast of the rate
/// that is never wrong buys with a Poisson newsvendor: the mark for any forecaster.
#[derive(Debug, Clone)]
pub struct RateOracle {
    boot_secs: u64,
    capacity: f64,
    z: f64,
    /// The rate of each second.
    rates: Vec<f64>,
}

impl RateOracle {
    /// The rate oracle that knows `rates` (requests per second of each second: a synthetic
    /// trace's λ(t), or [`centred_mean`] of a real one), orders `boot_secs` ahead, and holds
    /// `z` Poisson standard deviations over the rate with `capacity` requests per second per
    /// instance.
    pub fn new(rates: &[f64], boot_secs: u64, capacity: f64, z: f64) -> Self {
        Self {
            boot_secs,
            capacity,
            z,
            rates: rates.to_vec(),
        }
    }

    /// Instances the rate of one second needs.
    fn need(&self, rate: f64) -> u32 {
        let rate = rate.max(0.0);
        instances_for(rate + self.z * rate.sqrt(), self.capacity)
    }
}

impl ReplayPolicy for RateOracle {
    fn name(&self) -> String {
        "rate-oracle".to_owned()
    }

    fn desired(&mut self, tick: &Tick<'_>) -> u32 {
        next_boot(&self.rates, tick.t, self.boot_secs)
            .iter()
            .map(|&rate| self.need(rate))
            .max()
            .unwrap_or(0)
    }

    fn quiet_until(&self, tick: &Tick<'_>, next_arrival: u64) -> Option<u64> {
        if tick.ordered != 0 {
            return None;
        }
        // The first second after `t` whose rate needs an instance, `boot` seconds early.
        let from = usize::try_from(tick.t.saturating_add(1)).unwrap_or(usize::MAX);
        let to = usize::try_from(next_arrival.saturating_add(self.boot_secs))
            .unwrap_or(usize::MAX)
            .min(self.rates.len());
        let first_need = self
            .rates
            .get(from..to.max(from))
            .unwrap_or(&[])
            .iter()
            .position(|&rate| self.need(rate) > 0)
            .map_or(to as u64, |i| (from + i) as u64);
        Some(
            first_need
                .saturating_sub(self.boot_secs.max(1))
                .min(next_arrival),
        )
    }
}

/// The mean of `series` over `[i − half, i + half]` (clipped at the ends) for every `i`.
pub fn centred_mean(series: &[f64], half: usize) -> Vec<f64> {
    let mut prefix = Vec::with_capacity(series.len() + 1);
    prefix.push(0.0);
    for &x in series {
        let last = prefix.last().copied().unwrap_or(0.0);
        prefix.push(last + x.max(0.0));
    }
    (0..series.len())
        .map(|i| {
            let (lo, hi) = (i.saturating_sub(half), (i + half + 1).min(series.len()));
            (prefix[hi] - prefix[lo]) / (hi - lo) as f64
        })
        .collect()
}

/// Static provisioning for the trace's peak, ready from the start (the cost bound).
#[derive(Debug, Clone, Copy)]
pub struct StaticPeak {
    /// Instances for the peak.
    pub instances: u32,
}

impl ReplayPolicy for StaticPeak {
    fn name(&self) -> String {
        "static-peak".to_owned()
    }

    fn desired(&mut self, _tick: &Tick<'_>) -> u32 {
        self.instances
    }

    fn quiet_until(&self, _tick: &Tick<'_>, next_arrival: u64) -> Option<u64> {
        Some(next_arrival)
    }
}

/// Instances needed for `load` at `per_instance` each.
pub fn instances_for(load: f64, per_instance: f64) -> u32 {
    if load <= 0.0 || per_instance <= 0.0 {
        return 0;
    }
    (load / per_instance).ceil().min(f64::from(u32::MAX)) as u32
}

// === running ===

/// One point of a run's timeline, for plots.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimelinePoint {
    /// Second of the trace.
    pub t: u64,
    /// Arrivals per second (mean over the point's span).
    pub load: f64,
    /// The policy's forecast at its horizon (mean), if it forecasts.
    pub forecast: Option<f64>,
    /// Ready capacity in requests per second (mean).
    pub ready_capacity: f64,
}

/// The outcome of one policy over one series.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    /// Policy label.
    pub policy: String,
    /// What the simulated fleet measured.
    pub stats: FleetStats,
    /// Downsampled timeline.
    pub timeline: Vec<TimelinePoint>,
    /// Seconds simulated one by one (the rest were quiet and billed in one step each).
    pub stepped_seconds: u64,
}

/// Replays `series` (requests per second) through `policy` in front of a fleet of `shape`,
/// starting with `initial` ready instances; the timeline keeps about `points` points;
/// `progress(done, total)` is called every 65,536 seconds. Quiet stretches (no arrivals, a quiet
/// fleet, a policy that says it will decide the same: [`ReplayPolicy::quiet_until`]) are billed
/// in one step instead of stepped through, so a replay costs its busy seconds.
pub fn run(
    series: &[f64],
    policy: &mut dyn ReplayPolicy,
    shape: FleetShape,
    initial: u32,
    points: usize,
    progress: impl FnMut(u64, u64),
) -> RunReport {
    run_stepping(series, policy, shape, initial, points, true, progress)
}

/// [`run`], skipping quiet stretches only when `skip` is set (a stepped run is the reference a
/// skipped one must equal).
pub fn run_stepping(
    series: &[f64],
    policy: &mut dyn ReplayPolicy,
    shape: FleetShape,
    initial: u32,
    points: usize,
    skip: bool,
    mut progress: impl FnMut(u64, u64),
) -> RunReport {
    let mut fleet = SimFleet::new(shape, initial);
    let total = series.len() as u64;
    let span = (series.len() / points.max(1)).max(1) as u64;
    let mut timeline = Timeline {
        span,
        points: Vec::with_capacity(points + 1),
        ..Timeline::default()
    };
    // The next second with an arrival after `t`, found by a forward scan shared by all skips.
    let mut next_busy = 0usize;
    let mut next_progress = 0u64;
    let mut stepped_seconds = 0u64;
    let mut t = 0u64;
    while t < total {
        stepped_seconds += 1;
        let arrivals = series[t as usize];
        fleet.step(t, arrivals);
        let tick = Tick {
            t,
            series,
            ready: fleet.ready(),
            ordered: fleet.ordered(),
            queued: fleet.queued(),
            waited: fleet.stats().waited + fleet.stats().past_deadline,
        };
        let desired = policy.desired(&tick);
        fleet.order(t, desired);
        let capacity = f64::from(fleet.ready()) * shape.capacity;
        timeline.add(t, 1, arrivals, policy.forecast(), capacity);
        if t >= next_progress {
            progress(t, total);
            next_progress = t + 65_536 - t % 65_536;
        }
        t += 1;
        if !skip || t >= total || series[t as usize] != 0.0 || !fleet.is_quiet() {
            continue;
        }
        next_busy = next_busy.max(t as usize);
        while series.get(next_busy).is_some_and(|&a| a == 0.0) {
            next_busy += 1;
        }
        let next_arrival = next_busy as u64;
        let settled = Tick {
            t: t - 1,
            series,
            ready: fleet.ready(),
            ordered: fleet.ordered(),
            queued: 0.0,
            waited: tick.waited,
        };
        let Some(until) = policy.quiet_until(&settled, next_arrival) else {
            continue;
        };
        let resume = until.min(next_arrival).min(total);
        if resume <= t {
            continue;
        }
        fleet.idle_through(t, resume);
        timeline.add(t, resume - t, 0.0, policy.forecast(), capacity);
        t = resume;
    }
    progress(total, total);
    RunReport {
        policy: policy.name(),
        stats: fleet.stats().clone(),
        timeline: timeline.points,
        stepped_seconds,
    }
}

/// The downsampled timeline of a run, filled a second or a skipped stretch at a time.
#[derive(Debug, Default)]
struct Timeline {
    span: u64,
    points: Vec<TimelinePoint>,
    load_sum: f64,
    forecast_sum: f64,
    capacity_sum: f64,
    forecasts: u64,
    n: u64,
}

impl Timeline {
    /// Adds `seconds` seconds from `t` with the same load, forecast and ready capacity.
    fn add(&mut self, t: u64, seconds: u64, load: f64, forecast: Option<f64>, capacity: f64) {
        let mut left = seconds;
        let mut at = t;
        while left > 0 {
            let take = left.min(self.span - self.n);
            let k = take as f64;
            self.load_sum += load * k;
            self.capacity_sum += capacity * k;
            if let Some(f) = forecast {
                self.forecast_sum += f * k;
                self.forecasts += take;
            }
            self.n += take;
            at += take;
            left -= take;
            if self.n == self.span {
                let n = self.n as f64;
                self.points.push(TimelinePoint {
                    t: at - self.span,
                    load: self.load_sum / n,
                    forecast: (self.forecasts > 0)
                        .then(|| self.forecast_sum / self.forecasts as f64),
                    ready_capacity: self.capacity_sum / n,
                });
                (
                    self.load_sum,
                    self.forecast_sum,
                    self.capacity_sum,
                    self.forecasts,
                    self.n,
                ) = (0.0, 0.0, 0.0, 0, 0);
            }
        }
    }
}

/// Forecourt's scaling settings for a replay: `capacity` requests per second per instance at
/// `utilization`, no replica limit to speak of, everything else as the policy file defaults.
pub fn default_scaling(capacity: f64, utilization: f64) -> ScalingConfig {
    let mut scaling = ScalingConfig::with_capacity(Capacity::RequestsPerSecond(capacity));
    scaling.min_replicas = 0;
    scaling.max_replicas = 100_000;
    scaling.target_utilization = utilization;
    scaling.idle_to_zero_after = Duration::from_secs(30);
    scaling
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> FleetShape {
        FleetShape {
            boot_secs: 10,
            boot_max_secs: 10,
            seed: 1,
            capacity: 10.0,
            deadline_secs: 60,
            warmup_secs: 0,
        }
    }

    /// Quiet, then a steady ramp to 200 requests/s, then a plateau.
    fn ramp() -> Vec<f64> {
        (0..900u64)
            .map(|t| match t {
                0..=299 => 20.0,
                300..=599 => 20.0 + (t - 300) as f64 * 0.6,
                _ => 200.0,
            })
            .collect()
    }

    #[test]
    fn a_centred_mean_is_clipped_at_the_ends() {
        assert_eq!(
            centred_mean(&[0.0, 3.0, 6.0, 9.0], 1),
            vec![1.5, 3.0, 6.0, 7.5]
        );
        assert!(centred_mean(&[], 10).is_empty());
    }

    #[test]
    fn the_rate_oracle_knows_the_rate_but_not_the_noise() {
        let trace = synthetic::Synthetic {
            family: synthetic::Family::Steps,
            mean_rate: 100.0,
            seconds: 3_600,
            seed: 3,
        };
        let (series, rates) = (trace.series(), trace.rates(trace.default_period()));
        let sweep = |z: f64| {
            let mut policy = RateOracle::new(&rates, 10, 10.0, z);
            run(&series, &mut policy, shape(), 10, 50, |_, _| {}).stats
        };
        let (bare, wide) = (sweep(0.0), sweep(4.0));
        // Provisioning for the rate alone leaves every second's noise above it waiting; four
        // standard deviations of headroom leave almost none, at a higher cost.
        assert!(bare.waited_share() > 0.01, "{}", bare.waited_share());
        assert!(wide.waited_share() < 0.001, "{}", wide.waited_share());
        assert!(wide.instance_seconds > bare.instance_seconds);
        // The oracle, which knows the noise too, never makes a request wait.
        let mut oracle = Oracle {
            boot_secs: 10,
            per_instance: 10.0,
        };
        let oracle = run(&series, &mut oracle, shape(), 10, 50, |_, _| {}).stats;
        assert_eq!(oracle.waited, 0.0);
    }

    #[test]
    fn the_oracle_never_makes_a_request_wait_and_static_peak_costs_the_most() {
        let series = ramp();
        let mut oracle = Oracle {
            boot_secs: 10,
            per_instance: 7.0,
        };
        let oracle = run(&series, &mut oracle, shape(), 3, 50, |_, _| {});
        assert_eq!(oracle.stats.waited + oracle.stats.past_deadline, 0.0);
        let mut fixed = StaticPeak {
            instances: instances_for(200.0, 7.0),
        };
        let fixed = run(&series, &mut fixed, shape(), 29, 50, |_, _| {});
        assert_eq!(fixed.stats.waited, 0.0);
        assert!(fixed.stats.instance_seconds > oracle.stats.instance_seconds);
        assert!(oracle.timeline.len() >= 50);
    }

    #[test]
    fn the_headroom_controller_moves_toward_the_slo() {
        use crate::replay::synthetic::{Family, Synthetic};
        use crate::scale::headroom::{MAX_OFFSET, MIN_OFFSET};
        let series = Synthetic {
            family: Family::Bursty,
            mean_rate: 30.0,
            seconds: 4 * 3_600,
            seed: 3,
        }
        .series();
        let replay = |slo: Option<f64>| {
            let mut scaling = default_scaling(10.0, 0.7);
            scaling.slo = slo.map(|waiting_percent| forecourt_config::Slo { waiting_percent });
            let mut policy = ForecourtReplay::new(scaling);
            let report = run(&series, &mut policy, shape(), 3, 10, |_, _| {});
            (report.stats, policy.headroom())
        };
        let (plain, none) = replay(None);
        assert_eq!(none, None);
        // A strict objective raises the headroom: less waiting, more cost.
        let (strict, state) = replay(Some(0.01));
        let state = state.expect("an slo runs the controller");
        assert!(state.last_move.is_some() && state.last_waiting_percent.is_some());
        assert!((MIN_OFFSET..=MAX_OFFSET).contains(&state.offset));
        assert!(strict.waited_share() < plain.waited_share());
        assert!(strict.instance_seconds > plain.instance_seconds);
        // A loose one lowers it: cheaper.
        let (loose, state) = replay(Some(50.0));
        assert!(state.expect("controller").offset < 0.0);
        assert!(loose.instance_seconds < plain.instance_seconds);
        assert!(loose.waited_share() > plain.waited_share());
    }

    #[test]
    fn on_bursty_traffic_forecourt_waits_less_than_kpa_at_equal_cost() {
        use crate::replay::synthetic::{Family, Synthetic};
        use crate::scale::kpa::KpaConfig;
        let series = Synthetic {
            family: Family::Bursty,
            mean_rate: 10.0,
            seconds: 2 * 3_600,
            seed: 11,
        }
        .series();
        let shape = FleetShape {
            warmup_secs: 600,
            ..shape()
        };
        let point = |knob: f64, policy: &mut dyn ReplayPolicy| {
            let stats = run(&series, policy, shape, 1, 10, |_, _| {}).stats;
            SweepPoint {
                knob,
                instance_seconds: stats.instance_seconds,
                waited: stats.waited_share(),
            }
        };
        let kpa: Vec<SweepPoint> = [0.3, 0.5, 0.7]
            .iter()
            .map(|&u| {
                let config = KpaConfig {
                    target_utilization: u,
                    ..KpaConfig::with_target(10.0)
                };
                let mut policy = KpaReplay::new(config).expect("valid settings");
                point(u, &mut policy)
            })
            .collect();
        let forecourt: Vec<SweepPoint> = [0.1, 0.3, 1.0, 3.0, 10.0, 100.0]
            .iter()
            .map(|&cost| {
                let mut scaling = default_scaling(10.0, 0.7);
                scaling.waiting_cost = cost;
                point(cost, &mut ForecourtReplay::new(scaling))
            })
            .collect();
        let rows = equal_cost(&kpa, &forecourt, &[], &[]);
        let ratios: Vec<f64> = rows.iter().filter_map(EqualCost::ratio).collect();
        assert!(ratios.len() >= 2, "the sweeps overlap: {rows:?}");
        for ratio in ratios {
            assert!(ratio < 1.0, "{rows:?}");
        }
    }

    /// Half a sparse day: short bursts (a few seconds to two minutes, 1 to 40 requests/s) at
    /// irregular times, quiet in between for seconds to hours.
    fn sparse_day() -> Vec<f64> {
        let mut series = vec![0.0; 43_200];
        let mut x = 17u64;
        let mut t = 30usize;
        while t < series.len() {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let length = 1 + (x >> 33) as usize % 120;
            let rate = 1.0 + ((x >> 20) % 40) as f64;
            for (i, slot) in series.iter_mut().skip(t).take(length).enumerate() {
                *slot = (rate + (i % 3) as f64).round();
            }
            // Gaps from a few seconds to five and a half hours, most of them long.
            t += length + [3, 40, 700, 6_000, 12_000, 20_000][(x >> 50) as usize % 6];
        }
        series
    }

    #[test]
    fn a_skipped_replay_equals_a_stepped_one_for_every_policy() {
        let series = sparse_day();
        let shape = FleetShape {
            warmup_secs: 600,
            ..shape()
        };
        let rates = centred_mean(&series, RATE_ORACLE_HALF_WIDTH);
        let policies: Vec<Box<dyn Fn() -> Box<dyn ReplayPolicy>>> = vec![
            Box::new(|| Box::new(ForecourtReplay::new(default_scaling(10.0, 0.7)))),
            Box::new(|| {
                let mut reactive = default_scaling(10.0, 0.7);
                reactive.predictive = false;
                Box::new(ForecourtReplay::new(reactive))
            }),
            Box::new(|| {
                let kpa = KpaReplay::new(KpaConfig::with_target(7.0)).expect("kpa");
                Box::new(kpa)
            }),
            Box::new(|| {
                Box::new(Oracle {
                    boot_secs: 10,
                    per_instance: 7.0,
                })
            }),
            Box::new(|| Box::new(RateOracle::new(&rates, 10, 10.0, 1.0))),
            Box::new(|| Box::new(StaticPeak { instances: 5 })),
        ];
        for make in &policies {
            let stepped = run_stepping(&series, make().as_mut(), shape, 0, 100, false, |_, _| {});
            let (mut seen, mut calls) = (0, 0);
            let skipped = run_stepping(&series, make().as_mut(), shape, 0, 100, true, |done, _| {
                seen = done;
                calls += 1;
            });
            assert_eq!(seen, 43_200);
            assert!(calls >= 2, "progress at the start and the end");
            assert_eq!(skipped.policy, stepped.policy);
            assert_eq!(stepped.stepped_seconds, 43_200);
            // Forecourt steps through the hour an ensemble outlives a burst; the others only
            // until their windows and fleet are quiet.
            let bound = if skipped.policy.starts_with("forecourt") {
                2
            } else {
                5
            };
            assert!(
                skipped.stepped_seconds * bound < 43_200,
                "{}: stepped {} s",
                skipped.policy,
                skipped.stepped_seconds
            );
            let (a, b) = (&skipped.stats, &stepped.stats);
            let close = |x: f64, y: f64| (x - y).abs() <= 1e-6 * x.abs().max(1.0);
            assert!(
                a.arrived > 2_000.0 && a.arrived == b.arrived,
                "{}",
                a.arrived
            );
            assert_eq!(
                (
                    a.served_at_once,
                    a.waited,
                    a.past_deadline,
                    a.cold_starts,
                    a.scale_actions
                ),
                (
                    b.served_at_once,
                    b.waited,
                    b.past_deadline,
                    b.cold_starts,
                    b.scale_actions
                ),
                "{}",
                skipped.policy
            );
            assert_eq!(a.waits, b.waits, "{}", skipped.policy);
            assert!(
                close(a.instance_seconds, b.instance_seconds),
                "{}: {a:?} {b:?}",
                skipped.policy
            );
            assert!(close(a.idle_instance_seconds, b.idle_instance_seconds));
            assert_eq!(skipped.timeline.len(), stepped.timeline.len());
            for (x, y) in skipped.timeline.iter().zip(&stepped.timeline) {
                assert_eq!(x.t, y.t);
                assert!(close(x.load, y.load) && close(x.ready_capacity, y.ready_capacity));
            }
        }
    }

    #[test]
    fn a_service_back_at_the_same_minute_every_day_is_woken_before_it() {
        // Three days; every day at 09:00, 40 s at 5 requests/s; nothing else.
        let day = 86_400usize;
        let mut series = vec![0.0; 3 * day];
        for d in 0..3 {
            let nine = d * day + 9 * 3_600;
            for slot in &mut series[nine..nine + 40] {
                *slot = 5.0;
            }
        }
        let shape = FleetShape {
            warmup_secs: 600,
            ..shape()
        };
        let policy = || ForecourtReplay::new(default_scaling(10.0, 0.7));
        let skipped = run(&series, &mut policy(), shape, 0, 100, |_, _| {});
        let stepped = run_stepping(&series, &mut policy(), shape, 0, 100, false, |_, _| {});
        assert_eq!(skipped.stats.cold_starts, stepped.stats.cold_starts);
        assert_eq!(skipped.stats.waits, stepped.stats.waits);
        assert!((skipped.stats.instance_seconds - stepped.stats.instance_seconds).abs() < 1e-6);
        assert!(skipped.stepped_seconds * 4 < stepped.stepped_seconds);
        // Day one starts cold (10 s boot at 5/s); on days two and three the profile has
        // the instance ready when the minute comes.
        let kpa = run(
            &series,
            &mut KpaReplay::new(KpaConfig::with_target(7.0)).expect("kpa"),
            shape,
            0,
            100,
            |_, _| {},
        );
        assert!(kpa.stats.cold_starts >= 3.0 * 40.0, "{:?}", kpa.stats);
        assert!(
            skipped.stats.cold_starts <= 60.0,
            "only the first day is cold: {:?}",
            skipped.stats
        );
    }

    #[test]
    fn a_replay_is_deterministic() {
        let series = ramp();
        let once = || {
            let mut policy = ForecourtReplay::new(default_scaling(10.0, 0.7));
            run(&series, &mut policy, shape(), 3, 50, |_, _| {})
        };
        assert_eq!(once(), once());
    }

    #[test]
    fn forecourt_meets_a_ramp_that_a_reactive_policy_falls_behind() {
        let series = ramp();
        let mut predictive = ForecourtReplay::new(default_scaling(10.0, 0.7));
        let predictive = run(&series, &mut predictive, shape(), 3, 50, |_, _| {});
        let mut reactive_scaling = default_scaling(10.0, 0.7);
        reactive_scaling.predictive = false;
        let mut reactive = ForecourtReplay::new(reactive_scaling);
        let reactive = run(&series, &mut reactive, shape(), 3, 50, |_, _| {});
        assert_eq!(predictive.policy, "forecourt");
        assert_eq!(reactive.policy, "forecourt-reactive");
        assert!(
            predictive.stats.waited_share() < reactive.stats.waited_share(),
            "predictive {} vs reactive {}",
            predictive.stats.waited_share(),
            reactive.stats.waited_share()
        );
        assert!(predictive.timeline.iter().any(|p| p.forecast.is_some()));
    }
}
