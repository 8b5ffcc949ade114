//! The scaling policy engine: how many replicas one service should have, and why.
//!
//! ```text
//!  ScalingInputs (one service, one tick: live rates, forecast at the horizon, held requests)
//!        │
//!        ├─ with a forecast (predictive):
//!        │    predictive = demand quantile over the time-to-ready horizon + dependency demand
//!        │                 + held requests / panic window, at full capacity: the quantile is
//!        │                 the headroom, counted once
//!        │    live       = the panic window's load at full capacity (a floor under a lagging
//!        │                 forecast); while panicking, Knative's panic peak when higher
//!        ├─ without one (reactive, or warming up):
//!        │    reactive   = stable window, or panic window while panicking, at
//!        │                 target_utilization (Knative KPA; panic holds its peak)
//!        ├─► rules      = current + scale_up_by when predicted utilization > threshold
//!        ▼
//!  recommended = max(…) ─► warm pool ─► keep one until idle ─► clamp [min, max]
//!        │                                       ScalingState (last scale times,
//!        ▼                                       stabilization window, panic, idleness)
//!  scale from zero (held request) · idle to zero ─► rate limits: step, cooldown,
//!                                                   stabilization (max over the window)
//!        ▼
//!  Decision { desired, reactive, predictive, reason, … }
//!
//!  TimeToReady: replica ordered ─► confirmed ready ─► p90 of recent ─► horizon (+ margin)
//!  demand quantile q = c·r / (c·r + 1): c = waiting_cost (instance-seconds per waiting request),
//!                      r = requests per second one replica serves (the newsvendor's ratio)
//!  dependency_demand: upstream forecast surges (point − current) × fan-out, along the dependency graph
//! ```
//!
//! Everything here is pure: no IO, no async, time passed in as `now_ms`. The control loop
//! gathers the inputs, calls [`decide`] once per service per tick and orders the result; the
//! trace-replay simulator calls the same code on a virtual clock.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use forecourt_config::{Capacity, Dependency, Horizon, ScalingConfig};

/// Forecast or dependency demand at or below this (req/s) counts as no traffic.
pub const NEGLIGIBLE_RATE: f64 = 0.01;
/// Time-to-ready assumed before any replica has been measured.
pub const DEFAULT_TIME_TO_READY: Duration = Duration::from_secs(10);
/// Shortest automatic horizon.
pub const MIN_HORIZON: Duration = Duration::from_secs(1);
/// Longest automatic horizon.
pub const MAX_HORIZON: Duration = Duration::from_secs(120);
/// Time-to-ready measurements kept per service.
pub const TIME_TO_READY_SAMPLES: usize = 20;
/// Percentile of the kept time-to-ready measurements used for the horizon.
pub const TIME_TO_READY_PERCENTILE: f64 = 0.9;

/// Loads this close above a whole number of replicas do not round up (float noise).
const ROUNDING_SLACK: f64 = 1e-9;

/// The forecast for one service at its horizon.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ForecastAtHorizon {
    /// Point forecast, req/s.
    pub point: f64,
    /// Upper bound (point plus the forecast's own p90 error margin), req/s; what rules use.
    pub upper: f64,
    /// The demand to provision for, req/s: the highest, over the seconds until a replica
    /// ordered now is ready, of the count each second stays at or below with the service's
    /// demand quantile. What the predictive arm scales on.
    pub demand: f64,
}

/// Everything [`decide`] needs about one service at one tick.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ScalingInputs {
    /// The tick's time, milliseconds on any monotonic clock.
    pub now_ms: u64,
    /// Replicas currently ordered (the last desired count the backend accepted).
    pub current: u32,
    /// Replicas confirmed ready.
    pub ready: u32,
    /// Arrivals per second over the stable window.
    pub stable_rate: f64,
    /// Arrivals per second over the panic window.
    pub panic_rate: f64,
    /// Time-averaged requests in flight over the stable window.
    pub stable_concurrency: f64,
    /// Time-averaged requests in flight over the panic window.
    pub panic_concurrency: f64,
    /// Observed mean request latency in seconds (for Little's law); 0 when unknown.
    pub mean_latency_secs: f64,
    /// The forecast at the horizon; `None` while the predictor is warming up.
    pub forecast: Option<ForecastAtHorizon>,
    /// Extra req/s pushed by upstream services (already multiplied by fan-out).
    pub dependency_demand: f64,
    /// Requests held now waiting for a ready instance.
    pub held_requests: u32,
    /// When the last request arrived; `None` if none has since start.
    pub last_arrival_ms: Option<u64>,
    /// Seconds until a replica ordered now is ready (the forecast horizon): how far the live
    /// floor projects a ramp the windows see; 0 projects nothing.
    pub horizon_secs: f64,
}

/// Why [`decide`] chose its replica count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Nothing to change.
    Steady,
    /// The forecast demand (plus dependency demand) over the horizon needs more replicas.
    PredictedLoad,
    /// A step rule fired; `rule` is its index in the policy's `rules`.
    RuleFired {
        /// Index of the rule in `scaling.rules`.
        rule: usize,
    },
    /// The stable window's live load sets the count.
    Reactive,
    /// Panic mode: the short window sets the count and scale-down is off.
    Panic,
    /// Requests are held and no replica is ordered: start one now, no cooldown.
    ScaleFromZero,
    /// Load fell and both the live load and the forecast allow fewer replicas.
    ScaleDown,
    /// A scale-down waits until the stabilization window's highest recommendation allows it.
    StabilizingScaleDown,
    /// A scale-up waits for the scale-up cooldown.
    CooldownScaleUp,
    /// A scale-down waits for the scale-down cooldown.
    CooldownScaleDown,
    /// Idle long enough with nothing forecast: scale to zero.
    IdleToZero,
    /// Nothing to serve, but one replica stays until `idle_to_zero_after` has passed.
    NotYetIdle,
    /// Traffic is forecast: keep the warm pool.
    WarmPool,
    /// Held up at `min_replicas`.
    ClampedToMin,
    /// Held down at `max_replicas`.
    ClampedToMax,
}

/// The outcome of one [`decide`] call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Replicas to order.
    pub desired: u32,
    /// Replicas ordered before this decision.
    pub current: u32,
    /// What the live windows ask for (panic peak while panicking).
    pub reactive: u32,
    /// What the forecast plus dependency demand asks for; `None` with neither.
    pub predictive: Option<u32>,
    /// What the step rules ask for; `None` when no rule fired.
    pub rules: Option<u32>,
    /// The recommendation after warm pool, idle and min/max, before step, cooldown and
    /// stabilization limits.
    pub recommended: u32,
    /// Forecast upper bound (plus dependency demand) over current capacity (1.0 = 100 %), what
    /// rules compare to; `None` without a forecast.
    pub predicted_utilization: Option<f64>,
    /// Forecast demand plus dependency demand, req/s: what the predictive arm provisions for.
    pub demand: f64,
    /// Whether the service is in panic mode.
    pub panicking: bool,
    /// Why `desired` is what it is.
    pub reason: Reason,
}

/// What [`decide`] remembers about one service between ticks.
#[derive(Debug, Clone, Default)]
pub struct ScalingState {
    first_tick_ms: Option<u64>,
    last_scale_up_ms: Option<u64>,
    last_scale_down_ms: Option<u64>,
    /// Last tick with held requests or forecast traffic.
    last_busy_ms: Option<u64>,
    /// (time, recommendation), recommendations strictly decreasing from the front: the front
    /// is the highest recommendation within the stabilization window.
    recommendations: VecDeque<(u64, u32)>,
    panic: Option<PanicMode>,
}

#[derive(Debug, Clone, Copy)]
struct PanicMode {
    last_trigger_ms: u64,
    /// Highest count asked for since panic began; never lower than the count at its start.
    peak: u32,
}

// === impl Reason ===

impl Reason {
    /// Every label [`Reason::as_str`] can return, for registering metrics up front.
    pub const LABELS: [&'static str; 15] = [
        "steady",
        "predicted_load",
        "rule_fired",
        "reactive",
        "panic",
        "scale_from_zero",
        "scale_down",
        "stabilizing_scale_down",
        "cooldown_scale_up",
        "cooldown_scale_down",
        "idle_to_zero",
        "not_yet_idle",
        "warm_pool",
        "clamped_to_min",
        "clamped_to_max",
    ];

    /// A stable snake_case label, e.g. for a Prometheus `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Steady => "steady",
            Reason::PredictedLoad => "predicted_load",
            Reason::RuleFired { .. } => "rule_fired",
            Reason::Reactive => "reactive",
            Reason::Panic => "panic",
            Reason::ScaleFromZero => "scale_from_zero",
            Reason::ScaleDown => "scale_down",
            Reason::StabilizingScaleDown => "stabilizing_scale_down",
            Reason::CooldownScaleUp => "cooldown_scale_up",
            Reason::CooldownScaleDown => "cooldown_scale_down",
            Reason::IdleToZero => "idle_to_zero",
            Reason::NotYetIdle => "not_yet_idle",
            Reason::WarmPool => "warm_pool",
            Reason::ClampedToMin => "clamped_to_min",
            Reason::ClampedToMax => "clamped_to_max",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Steady => f.write_str("load matches the replicas"),
            Reason::PredictedLoad => f.write_str("forecast load at the horizon needs it"),
            Reason::RuleFired { rule } => write!(f, "scaling rule {rule} fired on the forecast"),
            Reason::Reactive => f.write_str("live load needs it"),
            Reason::Panic => f.write_str("panic: burst in the short window"),
            Reason::ScaleFromZero => f.write_str("requests held with no replica"),
            Reason::ScaleDown => f.write_str("live load and forecast both fell"),
            Reason::StabilizingScaleDown => f.write_str("scale-down waits for stabilization"),
            Reason::CooldownScaleUp => f.write_str("scale-up in cooldown"),
            Reason::CooldownScaleDown => f.write_str("scale-down in cooldown"),
            Reason::IdleToZero => f.write_str("idle, nothing forecast: scale to zero"),
            Reason::NotYetIdle => f.write_str("keeping one replica until idle long enough"),
            Reason::WarmPool => f.write_str("traffic forecast: keeping the warm pool"),
            Reason::ClampedToMin => f.write_str("held at min_replicas"),
            Reason::ClampedToMax => f.write_str("held at max_replicas"),
        }
    }
}

// === impl Decision ===

impl Decision {
    /// Whether the replica count changes.
    pub fn changed(&self) -> bool {
        self.desired != self.current
    }
}

// === impl ScalingState ===

impl ScalingState {
    /// A service seen for the first time.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the service is in panic mode.
    pub fn panicking(&self) -> bool {
        self.panic.is_some()
    }

    /// When replicas were last added.
    pub fn last_scale_up_ms(&self) -> Option<u64> {
        self.last_scale_up_ms
    }

    /// When replicas were last removed.
    pub fn last_scale_down_ms(&self) -> Option<u64> {
        self.last_scale_down_ms
    }

    /// Since when the service has been idle (no arrival, nothing held or forecast).
    pub fn idle_since_ms(&self, last_arrival_ms: Option<u64>) -> Option<u64> {
        [self.first_tick_ms, self.last_busy_ms, last_arrival_ms]
            .into_iter()
            .flatten()
            .max()
    }

    /// Updates panic mode (Knative KPA): enter or extend when the panic window wants at least
    /// `threshold` times the ready replicas; leave a stable window after the last trigger.
    fn update_panic(&mut self, config: &ScalingConfig, inputs: &ScalingInputs, want: f64) {
        let now = inputs.now_ms;
        let over = want / f64::from(inputs.ready.max(1)) >= config.panic.threshold;
        let wanted = replicas(want);
        match &mut self.panic {
            Some(panic) if over => panic.last_trigger_ms = now,
            Some(panic)
                if now.saturating_sub(panic.last_trigger_ms) >= millis(config.stable_window) =>
            {
                self.panic = None;
            }
            Some(_) => {}
            None if over => {
                self.panic = Some(PanicMode {
                    last_trigger_ms: now,
                    peak: inputs.current.max(inputs.ready),
                });
            }
            None => {}
        }
        if let Some(panic) = &mut self.panic {
            panic.peak = panic.peak.max(wanted);
        }
    }

    /// Adds this tick's recommendation and returns the highest within the window.
    fn stabilized(&mut self, now_ms: u64, recommended: u32, window: Duration) -> u32 {
        while self
            .recommendations
            .back()
            .is_some_and(|&(_, r)| r <= recommended)
        {
            self.recommendations.pop_back();
        }
        self.recommendations.push_back((now_ms, recommended));
        let oldest = now_ms.saturating_sub(millis(window));
        while self
            .recommendations
            .front()
            .is_some_and(|&(at, _)| at < oldest)
        {
            self.recommendations.pop_front();
        }
        self.recommendations
            .front()
            .map_or(recommended, |&(_, r)| r)
    }

    fn cooling(last: Option<u64>, now_ms: u64, cooldown: Duration) -> bool {
        last.is_some_and(|at| now_ms.saturating_sub(at) < millis(cooldown))
    }
}

// === decide ===

/// Decides how many replicas one service should have now, updating its `state`.
///
/// With a forecast, `max(predictive, live, rules)`: the demand quantile over the horizon at
/// full capacity, never below what the panic window's live load needs now; without one (a
/// reactive policy, or while the predictor warms up), `max(reactive, rules)` like Knative's
/// KPA. Then the warm pool, scale to zero and `[min, max]`, then rate limits: a scale-up is
/// limited by `max_step` and its cooldown; a scale-down by its cooldown (since any scaling),
/// the stabilization window's highest recommendation and `max_step`. Because the predictive
/// arm is the peak over the coming time-to-ready, a falling forecast scales in only once the
/// whole horizon is lower.
pub fn decide(
    config: &ScalingConfig,
    state: &mut ScalingState,
    inputs: &ScalingInputs,
) -> Decision {
    let now = inputs.now_ms;
    let current = inputs.current;
    if state.first_tick_ms.is_none() {
        // A fresh state (e.g. after a restart) holds what runs now for a stabilization window.
        state.first_tick_ms = Some(now);
        state.recommendations.push_back((now, current));
    }
    let per_replica = config.target_per_replica().max(f64::MIN_POSITIVE);
    let full_replica = config.capacity.per_replica().max(f64::MIN_POSITIVE);
    let latency = latency_secs(inputs);
    // A load in req/s in the capacity's unit (Little's law for concurrency); `None` when a
    // concurrency capacity has no latency to convert with.
    let in_capacity_unit = |rate: f64| match config.capacity {
        Capacity::RequestsPerSecond(_) => Some(rate),
        Capacity::Concurrency(_) => latency.map(|l| rate * l),
    };

    // Reactive (Knative KPA): stable window, or the panic window's peak while panicking, at
    // the target utilization. It decides alone without a forecast.
    let (stable_load, panic_load) = match config.capacity {
        Capacity::RequestsPerSecond(_) => (inputs.stable_rate, inputs.panic_rate),
        Capacity::Concurrency(_) => (inputs.stable_concurrency, inputs.panic_concurrency),
    };
    let stable_want = replicas(clean(stable_load) / per_replica);
    state.update_panic(config, inputs, clean(panic_load) / per_replica);
    let panicking = state.panic.is_some();
    let reactive = match state.panic {
        Some(panic) => panic.peak,
        None => stable_want,
    };

    // Predictive: the demand quantile over the horizon plus what upstream services push here,
    // at full capacity (the quantile is the headroom: no target utilization on top of it).
    let forecast = inputs.forecast.filter(|_| config.predictive);
    let dependency = clean(inputs.dependency_demand);
    // Requests already waiting are demand too: capacity that only meets the arrivals never
    // drains them, and every request behind them waits. Plan to drain them within the panic
    // window.
    let backlog = f64::from(inputs.held_requests) / config.panic.window.as_secs_f64().max(1.0);
    let demand = forecast.map_or(0.0, |f| clean(f.demand)) + dependency + backlog;
    let expected = forecast.map_or(0.0, |f| clean(f.point)) + dependency;
    let has_prediction = forecast.is_some() || dependency > NEGLIGIBLE_RATE;
    let predictive = has_prediction.then(|| {
        if demand <= NEGLIGIBLE_RATE {
            0
        } else {
            // Without a latency to convert with, forecast traffic still needs one replica.
            in_capacity_unit(demand).map_or(1, |load| replicas(load / full_replica).max(1))
        }
    });
    // What the live load will need when a replica ordered now is ready, at full capacity: a
    // floor for a forecast that is behind (the panic window sees a burst first), carried along
    // the ramp the windows see.
    let live = replicas(clean(panic_load) * ramp_factor(config, inputs) / full_replica);

    // Rules: the forecast's upper bound over the current replicas' full capacity (unknown, and
    // no rule fires, when a concurrency capacity has no latency to convert the forecast with).
    let upper = forecast.map_or(0.0, |f| clean(f.upper).max(clean(f.point))) + dependency;
    let capacity = f64::from(current) * config.capacity.per_replica();
    let predicted_utilization = if !has_prediction {
        None
    } else if upper <= NEGLIGIBLE_RATE {
        Some(0.0)
    } else {
        in_capacity_unit(upper).map(|load| {
            if capacity > 0.0 {
                load / capacity
            } else {
                f64::INFINITY
            }
        })
    };
    let mut rule = None;
    if let Some(utilization) = predicted_utilization {
        for (i, r) in config.rules.iter().enumerate() {
            let asked = current.saturating_add(r.scale_up_by);
            if utilization > r.above && rule.is_none_or(|(_, best)| asked > best) {
                rule = Some((i, asked));
            }
        }
    }

    // Combine: with a forecast, the predictive arm and the live floor; without, the reactive
    // arm; rules on top. On a tie the live load names the reason.
    let (mut recommended, mut why) = match predictive {
        Some(p) if panicking && reactive >= p.max(live) => (reactive, Reason::Panic),
        Some(p) if p > live => (p, Reason::PredictedLoad),
        Some(_) => (live, Reason::Reactive),
        None if panicking => (reactive, Reason::Panic),
        None => (reactive, Reason::Reactive),
    };
    if let Some((i, asked)) = rule.filter(|&(_, asked)| asked > recommended) {
        recommended = asked;
        why = Reason::RuleFired { rule: i };
    }

    // Idleness: no arrival, nothing held and nothing expected for `idle_to_zero_after`.
    let busy = inputs.held_requests > 0 || expected > NEGLIGIBLE_RATE;
    if busy {
        state.last_busy_ms = Some(now);
    }
    let idle = !busy
        && state
            .idle_since_ms(inputs.last_arrival_ms)
            .is_some_and(|since| now.saturating_sub(since) >= millis(config.idle_to_zero_after));

    if expected > NEGLIGIBLE_RATE && recommended < config.warm_pool {
        recommended = config.warm_pool;
        why = Reason::WarmPool;
    }
    if config.min_replicas == 0 && recommended == 0 && current > 0 && !idle {
        recommended = 1;
        why = Reason::NotYetIdle;
    }
    if recommended < config.min_replicas {
        recommended = config.min_replicas;
        why = Reason::ClampedToMin;
    }
    if recommended > config.max_replicas {
        recommended = config.max_replicas;
        why = Reason::ClampedToMax;
    }
    let stabilized = state.stabilized(now, recommended, config.scale_down.stabilization);

    let decision = |desired: u32, reason: Reason| Decision {
        desired,
        current,
        reactive,
        predictive,
        rules: rule.map(|(_, asked)| asked),
        recommended,
        predicted_utilization,
        demand,
        panicking,
        reason,
    };

    // Held requests and nothing ordered: start now, whatever the cooldown.
    if current == 0 && inputs.held_requests > 0 {
        let desired = recommended
            .max(1)
            .min(config.scale_up.max_step.max(1))
            .min(config.max_replicas.max(1));
        state.last_scale_up_ms = Some(now);
        return decision(desired, Reason::ScaleFromZero);
    }
    // Idle long enough: the idle time was the stabilization.
    if config.min_replicas == 0 && current > 0 && recommended == 0 && idle {
        state.last_scale_down_ms = Some(now);
        return decision(0, Reason::IdleToZero);
    }

    let (mut desired, mut reason) = if recommended > current {
        if ScalingState::cooling(state.last_scale_up_ms, now, config.scale_up.cooldown) {
            (current, Reason::CooldownScaleUp)
        } else {
            let step = config.scale_up.max_step.max(1);
            (recommended.min(current.saturating_add(step)), why)
        }
    } else if recommended < current {
        let last_scaling = state.last_scale_up_ms.max(state.last_scale_down_ms);
        if stabilized >= current {
            (current, Reason::StabilizingScaleDown)
        } else if ScalingState::cooling(last_scaling, now, config.scale_down.cooldown) {
            (current, Reason::CooldownScaleDown)
        } else {
            let step = config.scale_down.max_step.max(1);
            let reason = match why {
                Reason::ClampedToMax => why,
                _ => Reason::ScaleDown,
            };
            (stabilized.max(current.saturating_sub(step)), reason)
        }
    } else {
        let reason = match why {
            Reason::Reactive | Reason::PredictedLoad | Reason::RuleFired { .. } => Reason::Steady,
            other => other,
        };
        (current, reason)
    };

    // A policy change may leave `current` outside [min, max]: correct it at once.
    if desired > config.max_replicas {
        (desired, reason) = (config.max_replicas, Reason::ClampedToMax);
    } else if desired < config.min_replicas {
        (desired, reason) = (config.min_replicas, Reason::ClampedToMin);
    }
    if desired > current {
        state.last_scale_up_ms = Some(now);
    } else if desired < current {
        state.last_scale_down_ms = Some(now);
    }
    decision(desired, reason)
}

/// How much higher the panic window's load will be `horizon_secs` from now if the ramp the
/// windows see goes on (1.0 without a significant one).
///
/// The panic window's mean is centred half a panic window ago, the stable window's half a
/// stable window ago: their difference over that lag is the slope. Only the part of the
/// difference beyond two standard deviations of Poisson noise counts, so steady traffic
/// projects nothing at any rate.
fn ramp_factor(config: &ScalingConfig, inputs: &ScalingInputs) -> f64 {
    let panic_secs = config.panic.window.as_secs_f64();
    let stable_secs = config.stable_window.as_secs_f64();
    let lag = (stable_secs - panic_secs) / 2.0;
    let (panic, stable) = (clean(inputs.panic_rate), clean(inputs.stable_rate));
    let horizon = clean(inputs.horizon_secs);
    if lag <= 0.0 || panic_secs <= 0.0 || panic <= NEGLIGIBLE_RATE || horizon <= 0.0 {
        return 1.0;
    }
    let noise = 2.0 * (panic / panic_secs + stable / stable_secs).sqrt();
    let rise = (panic - stable - noise).max(0.0);
    1.0 + rise / lag * horizon / panic
}

/// Replicas needed for `units` target-loads of work (0 for no work, float noise not rounded up).
fn replicas(units: f64) -> u32 {
    if units <= ROUNDING_SLACK {
        0
    } else {
        // `as` saturates at u32::MAX; callers clamp to max_replicas.
        (units - ROUNDING_SLACK).ceil() as u32
    }
}

/// A rate or level that is finite and not negative.
fn clean(value: f64) -> f64 {
    if value.is_finite() && value > 0.0 {
        value
    } else {
        0.0
    }
}

/// Mean latency for Little's law: as observed, or in-flight over arrival rate.
fn latency_secs(inputs: &ScalingInputs) -> Option<f64> {
    let observed = clean(inputs.mean_latency_secs);
    if observed > 0.0 {
        return Some(observed);
    }
    let rate = clean(inputs.stable_rate);
    let in_flight = clean(inputs.stable_concurrency);
    (rate > NEGLIGIBLE_RATE && in_flight > 0.0).then(|| in_flight / rate)
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

// === TimeToReady ===

/// Measures how long a service takes from "replica ordered" to "confirmed ready" and turns it
/// into the forecast horizon.
#[derive(Debug, Clone)]
pub struct TimeToReady {
    samples: VecDeque<Duration>,
    capacity: usize,
    /// The 90th percentile of `samples`, kept up to date by [`Self::record`] (it is read
    /// several times per service per tick; the samples change only when a replica is ready).
    estimate: Option<Duration>,
    /// When each not-yet-ready ordered replica was ordered, oldest first.
    pending: VecDeque<u64>,
}

impl Default for TimeToReady {
    fn default() -> Self {
        Self::new(TIME_TO_READY_SAMPLES)
    }
}

impl TimeToReady {
    /// An estimator keeping the last `capacity` measurements (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            samples: VecDeque::with_capacity(capacity.max(1)),
            capacity: capacity.max(1),
            estimate: None,
            pending: VecDeque::new(),
        }
    }

    /// Records one measured time-to-ready.
    pub fn record(&mut self, duration: Duration) {
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(duration);
        let mut sorted: Vec<Duration> = self.samples.iter().copied().collect();
        sorted.sort_unstable();
        let rank = (TIME_TO_READY_PERCENTILE * sorted.len() as f64).ceil() as usize;
        self.estimate = sorted.get(rank.saturating_sub(1)).copied();
    }

    /// Notes `count` replicas ordered at `now_ms`.
    pub fn ordered(&mut self, now_ms: u64, count: u32) {
        self.pending.extend((0..count).map(|_| now_ms));
    }

    /// Forgets the `count` most recent orders (scaled down before they became ready).
    pub fn cancelled(&mut self, count: u32) {
        for _ in 0..count {
            self.pending.pop_back();
        }
    }

    /// Notes `count` replicas confirmed ready at `now_ms`, measuring the oldest orders; readiness
    /// with no order pending (a recovered instance) is not measured.
    pub fn became_ready(&mut self, now_ms: u64, count: u32) {
        for _ in 0..count {
            let Some(ordered) = self.pending.pop_front() else {
                return;
            };
            self.record(Duration::from_millis(now_ms.saturating_sub(ordered)));
        }
    }

    /// Ordered replicas not yet ready.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Measurements kept.
    pub fn samples(&self) -> usize {
        self.samples.len()
    }

    /// The 90th percentile (nearest rank) of the kept measurements; `None` before the first.
    pub fn estimate(&self) -> Option<Duration> {
        self.estimate
    }

    /// The horizon to read the forecast at: fixed, or the estimate (default before any
    /// measurement) plus the margin, within [`MIN_HORIZON`, `MAX_HORIZON`].
    pub fn horizon(&self, horizon: &Horizon) -> Duration {
        match *horizon {
            Horizon::Fixed(fixed) => fixed,
            Horizon::Auto { margin } => (self.estimate().unwrap_or(DEFAULT_TIME_TO_READY) + margin)
                .clamp(MIN_HORIZON, MAX_HORIZON),
        }
    }

    /// [`TimeToReady::horizon`] in whole seconds, rounded up (the forecast engine's unit).
    pub fn horizon_secs(&self, horizon: &Horizon) -> u64 {
        let d = self.horizon(horizon);
        d.as_secs() + u64::from(d.subsec_nanos() > 0)
    }
}

// === dependency_demand ===

/// One service's part in [`dependency_demand`].
#[derive(Debug, Clone, Copy)]
pub struct ServiceLoad<'a> {
    /// Its name, as dependencies name it.
    pub name: &'a str,
    /// Its downstream services.
    pub dependencies: &'a [Dependency],
    /// Its expected (point) forecast at the horizon, req/s; `None` while warming up. The point,
    /// not the upper bound: a service's error margin is its own, not a surge to pass on.
    pub forecast: Option<f64>,
    /// Its current arrival rate, req/s.
    pub current_rate: f64,
}

/// Extra req/s each service (same order as `services`) should prepare for because of a surge
/// forecast upstream, propagated transitively along the dependency graph.
///
/// A service's surge is its point forecast above its current rate, plus the extra pushed
/// into it; each dependency receives `fan_out` times its upstream's surge. Only the surge is
/// pushed because the downstream's own forecast already sees the traffic its upstreams send
/// today (the calls go through Forecourt). Unknown names are ignored; edges that would close a
/// cycle (refused by policy validation) contribute nothing.
pub fn dependency_demand(services: &[ServiceLoad<'_>]) -> Vec<f64> {
    let n = services.len();
    // A name index (the first service of a name wins), built only when an edge needs it.
    let names: Option<ahash::AHashMap<&str, usize>> = services
        .iter()
        .any(|s| !s.dependencies.is_empty())
        .then(|| {
            services
                .iter()
                .enumerate()
                .rev()
                .map(|(i, s)| (s.name, i))
                .collect()
        });
    let index = |name: &str| names.as_ref()?.get(name).copied();
    let edges: Vec<Vec<(usize, f64)>> = services
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.dependencies
                .iter()
                .filter_map(|d| index(&d.service).map(|j| (j, clean(d.fan_out))))
                .filter(|&(j, _)| j != i)
                .collect()
        })
        .collect();
    // Kahn's algorithm: a service's surge is final once all its upstreams are done.
    let mut upstreams = vec![0usize; n];
    for out in &edges {
        for &(j, _) in out {
            upstreams[j] += 1;
        }
    }
    let mut ready: VecDeque<usize> = (0..n).filter(|&i| upstreams[i] == 0).collect();
    let mut extra = vec![0.0; n];
    while let Some(i) = ready.pop_front() {
        let s = &services[i];
        let own = s
            .forecast
            .map_or(0.0, |upper| (clean(upper) - clean(s.current_rate)).max(0.0));
        let surge = own + extra[i];
        for &(j, fan_out) in &edges[i] {
            extra[j] += fan_out * surge;
            upstreams[j] -= 1;
            if upstreams[j] == 0 {
                ready.push_back(j);
            }
        }
    }
    extra
}

#[cfg(test)]
mod tests;
