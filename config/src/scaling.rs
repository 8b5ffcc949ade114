//! The `scaling:` and `dependencies:` sections of a service: how many replicas it may run, what one
//! replica handles, how fast Forecourt may change the count, and where its load flows on to.
//!
//! ```text
//!  services[i].scaling ─┐ field by field: service → defaults → built-in
//!  defaults.scaling ────┴─────────────────────────────────────────────► ScalingConfig (or None)
//!  services[i].dependencies ──► Dependency ──► graph check (names exist, no self, no cycles)
//! ```
//!
//! A service without a `scaling:` section (and no `defaults.scaling`) is never scaled: its
//! instance list is fixed. `scaling: { enabled: false }` opts a service out of `defaults.scaling`;
//! `defaults.scaling.enabled: false` makes the defaults apply only to services that have their
//! own `scaling:` section. Every problem names the line where the offending value was written.
//!
//! ```yaml
//! scaling:
//!   min_replicas: 0            # 0 allows scale to zero
//!   max_replicas: 10
//!   capacity: { requests_per_second: 50 }   # or { concurrency: 20 }
//!   target_utilization: 0.7
//!   rules:
//!     - when_predicted_utilization_above: 0.8
//!       scale_up_by: 2
//!   horizon: auto              # or a fixed duration such as 15s
//!   horizon_margin: 2s
//!   scale_up: { max_step: 100, cooldown: 0s }
//!   scale_down: { max_step: 100, cooldown: 10s, stabilization: 30s }
//!   panic: { window: 6s, threshold: 2.0 }
//!   stable_window: 60s
//!   idle_to_zero_after: 60s
//!   warm_pool: 1
//!   waiting_cost: 1.0          # one waiting request is worth this many instance-seconds
//!   slo: { waiting_percent: 0.5 }   # tunes the headroom online toward this
//! dependencies:
//!   - service: api
//!     fan_out: 0.5
//! ```

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::de::duration;

/// Built-in `waiting_cost`: one waiting request is worth one instance-second.
pub const DEFAULT_WAITING_COST: f64 = 1.0;
/// Largest `waiting_cost` accepted.
pub const MAX_WAITING_COST: f64 = 1_000_000.0;
/// Lowest demand quantile the predictive policy provisions for.
pub const MIN_DEMAND_QUANTILE: f64 = 0.05;
/// Highest demand quantile the predictive policy provisions for.
pub const MAX_DEMAND_QUANTILE: f64 = 0.999_999;

/// Built-in `min_replicas`.
pub const DEFAULT_MIN_REPLICAS: u32 = 1;
/// Built-in `max_replicas`.
pub const DEFAULT_MAX_REPLICAS: u32 = 10;
/// Most replicas a policy may ask for.
pub const MAX_REPLICAS: u32 = 10_000;
/// Built-in `target_utilization`.
pub const DEFAULT_TARGET_UTILIZATION: f64 = 0.7;
/// Highest predicted utilization a rule may test for (10 = 1000 % of capacity).
pub const MAX_RULE_THRESHOLD: f64 = 10.0;
/// Built-in `horizon_margin` added to the measured time-to-ready.
pub const DEFAULT_HORIZON_MARGIN: Duration = Duration::from_secs(2);
/// Shortest fixed horizon.
pub const MIN_FIXED_HORIZON: Duration = Duration::from_secs(1);
/// Longest fixed horizon (and longest `horizon_margin`).
pub const MAX_FIXED_HORIZON: Duration = Duration::from_secs(600);
/// Built-in `scale_up.max_step`: high enough that a burst is met in one order (a step of 4
/// took a 120 → 350 req/s flash crowd 5 orders to meet, each a boot time late, in replay).
pub const DEFAULT_SCALE_UP_STEP: u32 = 100;
/// Built-in `scale_down.max_step`.
pub const DEFAULT_SCALE_DOWN_STEP: u32 = 100;
/// Built-in `scale_down.cooldown`.
pub const DEFAULT_SCALE_DOWN_COOLDOWN: Duration = Duration::from_secs(10);
/// Built-in `scale_down.stabilization`.
pub const DEFAULT_STABILIZATION: Duration = Duration::from_secs(30);
/// Built-in `panic.window`.
pub const DEFAULT_PANIC_WINDOW: Duration = Duration::from_secs(6);
/// Built-in `panic.threshold`.
pub const DEFAULT_PANIC_THRESHOLD: f64 = 2.0;
/// Built-in `stable_window`.
pub const DEFAULT_STABLE_WINDOW: Duration = Duration::from_secs(60);
/// Longest `stable_window` (the predictor's sliding window must span it).
pub const MAX_STABLE_WINDOW: Duration = Duration::from_secs(600);
/// Shortest `panic.window`, `stable_window` and `idle_to_zero_after`.
pub const MIN_WINDOW: Duration = Duration::from_secs(1);
/// Built-in `idle_to_zero_after`.
pub const DEFAULT_IDLE_TO_ZERO_AFTER: Duration = Duration::from_secs(60);
/// Built-in dependency `fan_out`.
pub const DEFAULT_FAN_OUT: f64 = 1.0;
/// Largest dependency `fan_out`.
pub const MAX_FAN_OUT: f64 = 1_000.0;

// === the sections as written ===

/// The `scaling:` section as written; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalingSpec {
    /// `false` opts out (in a service) or applies these defaults only to services that have their
    /// own `scaling:` section (in `defaults`).
    pub enabled: Option<bool>,
    /// Fewest replicas; 0 allows scale to zero (default 1).
    pub min_replicas: Option<u32>,
    /// Most replicas (default 10).
    pub max_replicas: Option<u32>,
    /// What one replica handles; replaces the inherited capacity as a whole.
    pub capacity: Option<CapacitySpec>,
    /// Utilization of capacity the replica count aims for, in (0, 1] (default 0.7).
    pub target_utilization: Option<f64>,
    /// Step rules on the forecast's upper bound; replaces the inherited list as a whole.
    pub rules: Option<Vec<RuleSpec>>,
    /// `auto` (measured time-to-ready plus `horizon_margin`, the default) or a fixed duration;
    /// parsed with [`HorizonSpec::parse`] during validation, so a bad value is located exactly.
    pub horizon: Option<String>,
    /// Added to the measured time-to-ready when `horizon: auto` (default 2s).
    #[serde(default, deserialize_with = "duration")]
    pub horizon_margin: Option<Duration>,
    /// How fast replicas are added.
    pub scale_up: Option<ScaleUpSpec>,
    /// How fast replicas are removed.
    pub scale_down: Option<ScaleDownSpec>,
    /// The short window that reacts to sudden bursts.
    pub panic: Option<PanicSpec>,
    /// The window the reactive replica count is averaged over (default 60s).
    #[serde(default, deserialize_with = "duration")]
    pub stable_window: Option<Duration>,
    /// With `min_replicas: 0`, how long without requests before scaling to zero (default 60s).
    #[serde(default, deserialize_with = "duration")]
    pub idle_to_zero_after: Option<Duration>,
    /// Replicas kept while any traffic is forecast (default 0).
    pub warm_pool: Option<u32>,
    /// `false` scales on live load only (reactive, Knative-style), ignoring forecasts and rules.
    pub predictive: Option<bool>,
    /// What one request that waits for capacity costs, in instance-seconds (default 1): sets
    /// the quantile of forecast demand the predictive policy provisions for.
    pub waiting_cost: Option<f64>,
    /// A waiting objective the headroom is tuned toward online.
    pub slo: Option<SloSpec>,
}

/// The `slo:` of a service's scaling as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloSpec {
    /// Percent of requests that may wait for capacity, in (0, 100).
    pub waiting_percent: Option<f64>,
}

/// What one replica handles: exactly one of the two.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacitySpec {
    /// Requests per second one replica serves at 100 % utilization.
    pub requests_per_second: Option<f64>,
    /// Requests one replica serves at once at 100 % utilization.
    pub concurrency: Option<f64>,
}

/// One step rule as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Fires when forecast load (upper bound) over current capacity exceeds this (e.g. 0.8).
    pub when_predicted_utilization_above: f64,
    /// Replicas added to the current count when it fires.
    pub scale_up_by: u32,
}

/// `horizon:` as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HorizonSpec {
    /// `auto`: the measured time-to-ready plus the margin.
    Auto,
    /// A fixed duration.
    Fixed(Duration),
}

/// Why a `horizon:` value is neither `auto` nor a duration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid horizon {text:?}: expected auto or a duration ({reason})")]
pub struct InvalidHorizon {
    /// The value as written, trimmed.
    text: String,
    /// Why it is not a duration.
    reason: humantime::DurationError,
}

/// `scale_up:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleUpSpec {
    /// Most replicas added in one decision (default 4).
    pub max_step: Option<u32>,
    /// Least time between two scale-ups (default 0s).
    #[serde(default, deserialize_with = "duration")]
    pub cooldown: Option<Duration>,
}

/// `scale_down:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleDownSpec {
    /// Most replicas removed in one decision (default 1).
    pub max_step: Option<u32>,
    /// Least time after any scaling before a scale-down (default 10s).
    #[serde(default, deserialize_with = "duration")]
    pub cooldown: Option<Duration>,
    /// Scale down only to the highest recommendation seen over this window (default 30s).
    #[serde(default, deserialize_with = "duration")]
    pub stabilization: Option<Duration>,
}

/// `panic:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PanicSpec {
    /// The short window (default 6s).
    #[serde(default, deserialize_with = "duration")]
    pub window: Option<Duration>,
    /// Panic when the short window wants this multiple of the ready replicas (default 2.0).
    pub threshold: Option<f64>,
}

/// One entry of `dependencies:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DependencySpec {
    /// The downstream service's name.
    pub service: String,
    /// Requests caused downstream by each request to this service (default 1.0).
    pub fan_out: Option<f64>,
}

// === the resolved sections ===

/// How one service is scaled, every field resolved and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingConfig {
    /// Fewest replicas; 0 allows scale to zero.
    pub min_replicas: u32,
    /// Most replicas.
    pub max_replicas: u32,
    /// What one replica handles.
    pub capacity: Capacity,
    /// Utilization of capacity the replica count aims for, in (0, 1].
    pub target_utilization: f64,
    /// Step rules on the forecast's upper bound, in file order.
    pub rules: Vec<ScalingRule>,
    /// How far ahead the forecast is read.
    pub horizon: Horizon,
    /// How fast replicas are added.
    pub scale_up: ScaleUp,
    /// How fast replicas are removed.
    pub scale_down: ScaleDown,
    /// The burst window.
    pub panic: PanicWindow,
    /// The reactive averaging window.
    pub stable_window: Duration,
    /// With `min_replicas` 0, the idle time before scaling to zero.
    pub idle_to_zero_after: Duration,
    /// Replicas kept while any traffic is forecast.
    pub warm_pool: u32,
    /// Whether forecasts (and rules on them) count; `false` = purely reactive.
    pub predictive: bool,
    /// Instance-seconds one request that waits for capacity is worth (> 0).
    pub waiting_cost: f64,
    /// The waiting objective the headroom is tuned toward, if any.
    pub slo: Option<Slo>,
}

/// A service's waiting objective.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slo {
    /// Percent of requests that may wait for capacity, in (0, 100).
    pub waiting_percent: f64,
}

/// What one replica handles at 100 % utilization.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Capacity {
    /// Requests per second.
    RequestsPerSecond(f64),
    /// Requests in flight at once.
    Concurrency(f64),
}

/// A step rule: when the forecast's upper bound over current capacity exceeds `above`, add
/// `scale_up_by` replicas.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScalingRule {
    /// Predicted utilization threshold, in (0, 10].
    pub above: f64,
    /// Replicas to add, at least 1.
    pub scale_up_by: u32,
}

/// How far ahead the forecast is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Horizon {
    /// The measured time-to-ready plus `margin`.
    Auto {
        /// Added to the measured time-to-ready.
        margin: Duration,
    },
    /// Always this far ahead.
    Fixed(Duration),
}

/// Limits on adding replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleUp {
    /// Most replicas added in one decision, at least 1.
    pub max_step: u32,
    /// Least time between two scale-ups.
    pub cooldown: Duration,
}

/// Limits on removing replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleDown {
    /// Most replicas removed in one decision, at least 1.
    pub max_step: u32,
    /// Least time after any scaling before a scale-down.
    pub cooldown: Duration,
    /// Window whose highest recommendation a scale-down may not go below.
    pub stabilization: Duration,
}

/// The Knative-style panic window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PanicWindow {
    /// The short window, shorter than the stable window.
    pub window: Duration,
    /// Panic when the short window wants at least this multiple of the ready replicas (> 1).
    pub threshold: f64,
}

/// A downstream service and how much of this service's load reaches it.
#[derive(Debug, Clone, PartialEq)]
pub struct Dependency {
    /// The downstream service's name.
    pub service: String,
    /// Requests caused downstream per request here, > 0.
    pub fan_out: f64,
}

// === impl HorizonSpec ===

impl HorizonSpec {
    /// Parses `auto` or a duration such as `15s`.
    pub fn parse(text: &str) -> Result<Self, InvalidHorizon> {
        let text = text.trim();
        if text == "auto" {
            return Ok(Self::Auto);
        }
        humantime::parse_duration(text)
            .map(Self::Fixed)
            .map_err(|reason| InvalidHorizon {
                text: text.to_owned(),
                reason,
            })
    }
}

// === impl Capacity ===

impl Capacity {
    /// The amount one replica handles at 100 % utilization (req/s or requests in flight).
    pub fn per_replica(self) -> f64 {
        match self {
            Capacity::RequestsPerSecond(v) | Capacity::Concurrency(v) => v,
        }
    }

    /// The YAML field name of this kind.
    pub fn kind(self) -> &'static str {
        match self {
            Capacity::RequestsPerSecond(_) => "requests_per_second",
            Capacity::Concurrency(_) => "concurrency",
        }
    }
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Capacity::RequestsPerSecond(v) => write!(f, "{v} req/s per replica"),
            Capacity::Concurrency(v) => write!(f, "{v} in flight per replica"),
        }
    }
}

// === impl ScalingConfig ===

impl ScalingConfig {
    /// The built-in settings with the given capacity.
    pub fn with_capacity(capacity: Capacity) -> Self {
        Self {
            min_replicas: DEFAULT_MIN_REPLICAS,
            max_replicas: DEFAULT_MAX_REPLICAS,
            capacity,
            target_utilization: DEFAULT_TARGET_UTILIZATION,
            rules: Vec::new(),
            horizon: Horizon::Auto {
                margin: DEFAULT_HORIZON_MARGIN,
            },
            scale_up: ScaleUp {
                max_step: DEFAULT_SCALE_UP_STEP,
                cooldown: Duration::ZERO,
            },
            scale_down: ScaleDown {
                max_step: DEFAULT_SCALE_DOWN_STEP,
                cooldown: DEFAULT_SCALE_DOWN_COOLDOWN,
                stabilization: DEFAULT_STABILIZATION,
            },
            panic: PanicWindow {
                window: DEFAULT_PANIC_WINDOW,
                threshold: DEFAULT_PANIC_THRESHOLD,
            },
            stable_window: DEFAULT_STABLE_WINDOW,
            idle_to_zero_after: DEFAULT_IDLE_TO_ZERO_AFTER,
            warm_pool: 0,
            predictive: true,
            waiting_cost: DEFAULT_WAITING_COST,
            slo: None,
        }
    }

    /// The amount one replica should carry: capacity × target utilization.
    pub fn target_per_replica(&self) -> f64 {
        self.capacity.per_replica() * self.target_utilization
    }

    /// The newsvendor quantile of demand to provision for when one replica serves
    /// `requests_per_second`: capacity for one more request per second costs
    /// `1 / requests_per_second` instance-seconds a second and saves `waiting_cost` when that
    /// request would have waited, so provision until `P(demand > capacity)` equals
    /// `cost of capacity / (cost of capacity + cost of waiting)`:
    /// `q = c·r / (c·r + 1)`, within [0.05, 0.999999].
    pub fn demand_quantile(&self, requests_per_second: f64) -> f64 {
        let value = self.waiting_cost * requests_per_second.max(0.0);
        if !value.is_finite() {
            return MAX_DEMAND_QUANTILE;
        }
        (value / (value + 1.0)).clamp(MIN_DEMAND_QUANTILE, MAX_DEMAND_QUANTILE)
    }
}

// === resolution ===

/// Reports one problem: the YAML node path and a lowercase message.
pub(crate) type Report<'r> = &'r mut dyn FnMut(&str, String);

/// Where a resolved value came from, least specific first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum From {
    Builtin,
    Defaults,
    Service,
}

/// A resolved value and where it was written.
#[derive(Debug, Clone, Copy)]
struct Set<T> {
    value: T,
    from: From,
    field: &'static str,
}

/// Resolves one `scaling:` section against its inherited defaults, reporting problems.
struct Resolver<'a, 'r> {
    at: &'a str,
    own: Option<&'a ScalingSpec>,
    inherited: Option<&'a ScalingSpec>,
    /// Only check values on their own and against values set in `own` (a disabled section, or
    /// `defaults` checked without a service).
    lenient: bool,
    report: Report<'r>,
}

impl Resolver<'_, '_> {
    fn pick<T>(
        &self,
        field: &'static str,
        get: fn(&ScalingSpec) -> Option<T>,
        default: T,
    ) -> Set<T> {
        if let Some(value) = self.own.and_then(get) {
            Set {
                value,
                from: From::Service,
                field,
            }
        } else if let Some(value) = self.inherited.and_then(get) {
            Set {
                value,
                from: From::Defaults,
                field,
            }
        } else {
            Set {
                value: default,
                from: From::Builtin,
                field,
            }
        }
    }

    fn path(&self, from: From, field: &str) -> String {
        match from {
            From::Service => format!("{}.scaling.{field}", self.at),
            From::Defaults | From::Builtin => format!("defaults.scaling.{field}"),
        }
    }

    fn problem_at<T>(&mut self, set: &Set<T>, message: String) {
        let path = self.path(set.from, set.field);
        (self.report)(&path, message);
    }

    /// Reports a conflict between two settings at the more specific one (`a` on a tie).
    fn conflict<A, B>(&mut self, a: &Set<A>, b: &Set<B>, message: String) {
        if self.lenient && (a.from != From::Service || b.from != From::Service) {
            return;
        }
        let (from, field) = if b.from > a.from {
            (b.from, b.field)
        } else {
            (a.from, a.field)
        };
        let path = self.path(from, field);
        (self.report)(&path, message);
    }

    /// Reports `ignored` when `because` makes it meaningless and `ignored` was written at least
    /// as specifically (a value inherited from `defaults` may be overridden freely).
    fn ignored<A, B>(&mut self, ignored: &Set<A>, because: &Set<B>, message: String) {
        if ignored.from == From::Builtin || ignored.from < because.from {
            return;
        }
        if self.lenient && (ignored.from != From::Service || because.from != From::Service) {
            return;
        }
        self.problem_at(ignored, message);
    }

    fn resolve(&mut self) -> Option<ScalingConfig> {
        let min = self.pick("min_replicas", |s| s.min_replicas, DEFAULT_MIN_REPLICAS);
        let max = self.pick("max_replicas", |s| s.max_replicas, DEFAULT_MAX_REPLICAS);
        if max.value == 0 || max.value > MAX_REPLICAS {
            let message = format!(
                "max_replicas {} must be between 1 and {MAX_REPLICAS}",
                max.value
            );
            self.problem_at(&max, message);
        } else if min.value > max.value {
            let message = format!(
                "min_replicas {} is above max_replicas {}",
                min.value, max.value
            );
            self.conflict(&min, &max, message);
        }

        let capacity = self.capacity();

        let utilization = self.pick(
            "target_utilization",
            |s| s.target_utilization,
            DEFAULT_TARGET_UTILIZATION,
        );
        if !(utilization.value > 0.0 && utilization.value <= 1.0) {
            let message = format!(
                "target_utilization {} must be above 0 and at most 1",
                utilization.value
            );
            self.problem_at(&utilization, message);
        }

        let rules = self.rules();
        let horizon = self.horizon();

        let up_step = self.pick(
            "scale_up.max_step",
            |s| s.scale_up.as_ref()?.max_step,
            DEFAULT_SCALE_UP_STEP,
        );
        let up_cooldown = self.pick(
            "scale_up.cooldown",
            |s| s.scale_up.as_ref()?.cooldown,
            Duration::ZERO,
        );
        let down_step = self.pick(
            "scale_down.max_step",
            |s| s.scale_down.as_ref()?.max_step,
            DEFAULT_SCALE_DOWN_STEP,
        );
        let down_cooldown = self.pick(
            "scale_down.cooldown",
            |s| s.scale_down.as_ref()?.cooldown,
            DEFAULT_SCALE_DOWN_COOLDOWN,
        );
        let stabilization = self.pick(
            "scale_down.stabilization",
            |s| s.scale_down.as_ref()?.stabilization,
            DEFAULT_STABILIZATION,
        );
        for step in [&up_step, &down_step] {
            if step.value == 0 {
                self.problem_at(step, "max_step must be at least 1".to_owned());
            }
        }

        let panic_window = self.pick(
            "panic.window",
            |s| s.panic.as_ref()?.window,
            DEFAULT_PANIC_WINDOW,
        );
        let threshold = self.pick(
            "panic.threshold",
            |s| s.panic.as_ref()?.threshold,
            DEFAULT_PANIC_THRESHOLD,
        );
        let stable = self.pick("stable_window", |s| s.stable_window, DEFAULT_STABLE_WINDOW);
        if panic_window.value < MIN_WINDOW {
            self.problem_at(&panic_window, "window must be at least 1s".to_owned());
        }
        if !(threshold.value > 1.0 && threshold.value.is_finite()) {
            let message = format!("threshold {} must be above 1", threshold.value);
            self.problem_at(&threshold, message);
        }
        if stable.value < MIN_WINDOW || stable.value > MAX_STABLE_WINDOW {
            self.problem_at(
                &stable,
                "stable_window must be between 1s and 10m".to_owned(),
            );
        } else if panic_window.value >= MIN_WINDOW && panic_window.value >= stable.value {
            let message = format!(
                "panic window {} must be shorter than stable_window {}",
                humantime::format_duration(panic_window.value),
                humantime::format_duration(stable.value)
            );
            self.conflict(&panic_window, &stable, message);
        }

        let idle = self.pick(
            "idle_to_zero_after",
            |s| s.idle_to_zero_after,
            DEFAULT_IDLE_TO_ZERO_AFTER,
        );
        if idle.value < MIN_WINDOW {
            self.problem_at(&idle, "idle_to_zero_after must be at least 1s".to_owned());
        } else if min.value > 0 {
            let message = format!(
                "idle_to_zero_after only applies with min_replicas: 0 (it is {})",
                min.value
            );
            self.ignored(&idle, &min, message);
        }

        let warm_pool = self.pick("warm_pool", |s| s.warm_pool, 0);
        if max.value >= 1 && warm_pool.value > max.value {
            let message = format!(
                "warm_pool {} is above max_replicas {}",
                warm_pool.value, max.value
            );
            self.conflict(&warm_pool, &max, message);
        }

        let predictive = self.pick("predictive", |s| s.predictive, true);
        let waiting_cost = self.pick("waiting_cost", |s| s.waiting_cost, DEFAULT_WAITING_COST);
        if !(waiting_cost.value > 0.0 && waiting_cost.value <= MAX_WAITING_COST) {
            let message = format!(
                "waiting_cost {} must be above 0 and at most {MAX_WAITING_COST} instance-seconds",
                waiting_cost.value
            );
            self.problem_at(&waiting_cost, message);
        }
        let slo = self.pick("slo", |s| s.slo.clone().map(Some), None);
        let slo = match slo.value {
            None => None,
            Some(spec) => match spec.waiting_percent {
                Some(p) if p > 0.0 && p < 100.0 => Some(Slo { waiting_percent: p }),
                other => {
                    let at = self.path(slo.from, "slo.waiting_percent");
                    let message = match other {
                        Some(p) => format!("waiting_percent {p} must be above 0 and below 100"),
                        None => "slo needs waiting_percent (e.g. 0.5)".to_owned(),
                    };
                    (self.report)(&at, message);
                    None
                }
            },
        };
        Some(ScalingConfig {
            min_replicas: min.value,
            max_replicas: max.value,
            capacity: capacity?,
            target_utilization: utilization.value,
            rules,
            horizon,
            scale_up: ScaleUp {
                max_step: up_step.value,
                cooldown: up_cooldown.value,
            },
            scale_down: ScaleDown {
                max_step: down_step.value,
                cooldown: down_cooldown.value,
                stabilization: stabilization.value,
            },
            panic: PanicWindow {
                window: panic_window.value,
                threshold: threshold.value,
            },
            stable_window: stable.value,
            idle_to_zero_after: idle.value,
            warm_pool: warm_pool.value,
            predictive: predictive.value,
            waiting_cost: waiting_cost.value,
            slo,
        })
    }

    fn capacity(&mut self) -> Option<Capacity> {
        let set = self.pick("capacity", |s| s.capacity.clone(), CapacitySpec::default());
        let at = self.path(set.from, "capacity");
        let (field, value, capacity) = match (set.value.requests_per_second, set.value.concurrency)
        {
            (Some(v), None) => ("requests_per_second", v, Capacity::RequestsPerSecond(v)),
            (None, Some(v)) => ("concurrency", v, Capacity::Concurrency(v)),
            (Some(_), Some(_)) => {
                let message =
                    "capacity needs exactly one of requests_per_second or concurrency, not both";
                (self.report)(&at, message.to_owned());
                return None;
            }
            (None, None) if set.from == From::Builtin => {
                if !self.lenient {
                    // Point at the section that should have said it.
                    let (path, message) = match self.own {
                        Some(_) => (
                            format!("{}.scaling", self.at),
                            "scaling needs a capacity: requests_per_second or concurrency",
                        ),
                        None => (
                            "defaults.scaling".to_owned(),
                            "scaling needs a capacity (requests_per_second or concurrency) here \
                             or in every service it applies to",
                        ),
                    };
                    (self.report)(&path, message.to_owned());
                }
                return None;
            }
            (None, None) => {
                let message = "capacity needs one of requests_per_second or concurrency";
                (self.report)(&at, message.to_owned());
                return None;
            }
        };
        if !(value > 0.0 && value.is_finite()) {
            (self.report)(
                &format!("{at}.{field}"),
                format!("{field} {value} must be a number above 0"),
            );
            return None;
        }
        Some(capacity)
    }

    fn rules(&mut self) -> Vec<ScalingRule> {
        let set = self.pick("rules", |s| s.rules.clone(), Vec::new());
        let at = self.path(set.from, "rules");
        let mut rules = Vec::with_capacity(set.value.len());
        for (i, rule) in set.value.iter().enumerate() {
            let above = rule.when_predicted_utilization_above;
            if !(above > 0.0 && above <= MAX_RULE_THRESHOLD) {
                (self.report)(
                    &format!("{at}[{i}].when_predicted_utilization_above"),
                    format!("threshold {above} must be above 0 and at most {MAX_RULE_THRESHOLD}"),
                );
            }
            if rule.scale_up_by == 0 || rule.scale_up_by > MAX_REPLICAS {
                (self.report)(
                    &format!("{at}[{i}].scale_up_by"),
                    format!("scale_up_by must be between 1 and {MAX_REPLICAS}"),
                );
            }
            rules.push(ScalingRule {
                above,
                scale_up_by: rule.scale_up_by,
            });
        }
        rules
    }

    fn horizon(&mut self) -> Horizon {
        let written = self.pick("horizon", |s| s.horizon.clone(), "auto".to_owned());
        let horizon = Set {
            value: HorizonSpec::parse(&written.value).unwrap_or_else(|error| {
                self.problem_at(&written, error.to_string());
                HorizonSpec::Auto
            }),
            from: written.from,
            field: written.field,
        };
        let margin = self.pick(
            "horizon_margin",
            |s| s.horizon_margin,
            DEFAULT_HORIZON_MARGIN,
        );
        if margin.value > MAX_FIXED_HORIZON {
            self.problem_at(&margin, "horizon_margin must be at most 10m".to_owned());
        }
        match horizon.value {
            HorizonSpec::Auto => Horizon::Auto {
                margin: margin.value,
            },
            HorizonSpec::Fixed(fixed) => {
                if fixed < MIN_FIXED_HORIZON || fixed > MAX_FIXED_HORIZON {
                    self.problem_at(
                        &horizon,
                        "horizon must be auto or between 1s and 10m".to_owned(),
                    );
                }
                self.ignored(
                    &margin,
                    &horizon,
                    "horizon_margin only applies with horizon: auto".to_owned(),
                );
                Horizon::Fixed(fixed)
            }
        }
    }
}

/// Resolves service `at`'s scaling: its own section over `defaults.scaling` over built-ins.
///
/// `None` when the service is not scaled (no section anywhere, or `enabled: false`) or when a
/// problem made the section unusable (it was reported).
pub(crate) fn resolve(
    at: &str,
    own: Option<&ScalingSpec>,
    inherited: Option<&ScalingSpec>,
    report: Report<'_>,
) -> Option<ScalingConfig> {
    let enabled = match (own, inherited) {
        (Some(own), _) => own.enabled.unwrap_or(true),
        (None, Some(inherited)) => inherited.enabled.unwrap_or(true),
        (None, None) => false,
    };
    let mut resolver = Resolver {
        at,
        own,
        inherited,
        lenient: !enabled,
        report,
    };
    let config = resolver.resolve();
    if enabled {
        config
    } else {
        None
    }
}

/// Checks `defaults.scaling` on its own, so a bad default is reported even when no service uses
/// it; values a service may still override are not held against it.
pub(crate) fn check_defaults(defaults: Option<&ScalingSpec>, report: Report<'_>) {
    if defaults.is_some() {
        let mut resolver = Resolver {
            at: "defaults",
            own: defaults,
            inherited: None,
            lenient: true,
            report,
        };
        resolver.resolve();
    }
}

/// Resolves service `at` (named `name`)'s `dependencies:` list, checking each entry on its own.
pub(crate) fn dependencies(
    at: &str,
    name: &str,
    specs: &[DependencySpec],
    report: Report<'_>,
) -> Vec<Dependency> {
    let mut seen = HashSet::new();
    let mut resolved = Vec::with_capacity(specs.len());
    for (j, spec) in specs.iter().enumerate() {
        let here = format!("{at}.dependencies[{j}]");
        if spec.service == name {
            report(
                &format!("{here}.service"),
                format!("service {name:?} cannot depend on itself"),
            );
        } else if !seen.insert(spec.service.as_str()) {
            report(
                &format!("{here}.service"),
                format!("dependency on {:?} is listed twice", spec.service),
            );
        }
        let fan_out = spec.fan_out.unwrap_or(DEFAULT_FAN_OUT);
        if !(fan_out > 0.0 && fan_out <= MAX_FAN_OUT) {
            report(
                &format!("{here}.fan_out"),
                format!("fan_out {fan_out} must be above 0 and at most {MAX_FAN_OUT}"),
            );
        }
        resolved.push(Dependency {
            service: spec.service.clone(),
            fan_out,
        });
    }
    resolved
}

/// Checks the dependency graph across services, each its name and resolved dependencies (in file
/// order): every named service exists and no chain of dependencies leads back to where it started.
pub(crate) fn check_graph(services: &[(&str, &[Dependency])], report: Report<'_>) {
    let index = |name: &str| services.iter().position(|(s, _)| *s == name);
    // Edges by index; unknown names are reported and left out.
    let mut edges: Vec<Vec<(usize, usize)>> = Vec::with_capacity(services.len());
    for (i, (_, dependencies)) in services.iter().enumerate() {
        let mut out = Vec::new();
        for (j, dependency) in dependencies.iter().enumerate() {
            match index(&dependency.service) {
                Some(target) if target != i => out.push((j, target)),
                Some(_) => {} // self-dependency, reported with the service
                None => report(
                    &format!("services[{i}].dependencies[{j}].service"),
                    format!("no service is named {:?}", dependency.service),
                ),
            }
        }
        edges.push(out);
    }
    // Depth-first search; an edge to a service on the current path closes a cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut marks = vec![Mark::New; services.len()];
    for root in 0..services.len() {
        if marks[root] != Mark::New {
            continue;
        }
        // Stack of (service, next edge to follow); the stack is the current path.
        let mut stack = vec![(root, 0usize)];
        marks[root] = Mark::OnPath;
        while let Some(top) = stack.last_mut() {
            let node = top.0;
            let Some(&(j, target)) = edges[node].get(top.1) else {
                marks[node] = Mark::Done;
                stack.pop();
                continue;
            };
            top.1 += 1;
            match marks[target] {
                Mark::New => {
                    marks[target] = Mark::OnPath;
                    stack.push((target, 0));
                }
                Mark::OnPath => {
                    let start = stack.iter().position(|&(n, _)| n == target).unwrap_or(0);
                    let mut cycle: Vec<&str> =
                        stack[start..].iter().map(|&(n, _)| services[n].0).collect();
                    cycle.push(services[target].0);
                    report(
                        &format!("services[{node}].dependencies[{j}].service"),
                        format!("dependency cycle: {}", cycle.join(" -> ")),
                    );
                }
                Mark::Done => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
