//! # Knative Pod Autoscaler (KPA), as a pure baseline for trace replay
//!
//! ```text
//!  per-second arrivals ─► KpaWindows ─┬─ stable average (60 s) ─┐
//!                                     └─ panic average  (6 s)  ─┤
//!                                                               ▼
//!  ready pods ───────────────────────────────────────► Kpa::scale(now_ms, stable, panic, ready)
//!                                                               │
//!   decider:  ceil(rate / (target × utilisation)) for both windows
//!             ─► clamp to [floor(ready / down rate), ceil(ready × up rate)]   (ready 0 counts as 1)
//!             ─► activation scale floor while there is traffic
//!             ─► panic when ceil(panic / target') / ready ≥ threshold; while panicking
//!                take max(stable, panic) and never go below the panic peak; leave panic
//!                once a whole stable window has passed without crossing the threshold
//!   scaler:   ─► min/max scale ─► scale to zero only after the grace period
//!                                                               ▼
//!                                                         KpaDecision
//! ```
//!
//! A re-implementation, written from Knative Serving's algorithm (not its code), of what the
//! KPA decides each tick, so the trace-replay simulator can compare Forecourt's predictive
//! policy with it on the same arrivals. It follows:
//!
//! - the decider in `pkg/autoscaler/scaling/autoscaler.go` (`Scale`): desired counts, rate
//!   limits, activation scale, panic entry, extension and exit, the panic peak, excess burst
//!   capacity;
//! - the scaler in `pkg/reconciler/autoscaling/kpa/scaler.go`: `applyBounds` (min/max scale,
//!   max 0 = unbounded), then `handleScaleToZero` (1 instead of 0 when scale to zero is
//!   disabled; 0 only after the grace period);
//! - the window averages of `pkg/autoscaler/aggregation/bucketing.go`
//!   (`TimedFloat64Buckets.WindowAverage`), see [`KpaWindows`];
//! - the defaults and ranges of `pkg/autoscaler/config/config.go` and the KPA settings pages of
//!   knative.dev (stable window 6 s–1 h, panic window 1–100 % of it, panic threshold
//!   110–1000 %).
//!
//! Simplifications: time is a bare `now_ms`; the revision is always reachable (Knative drops the
//! scale-down limit for unreachable revisions); `scale-down-delay` (default 0) is not modelled;
//! the scale-to-zero clock (activator probing, inactive-for-grace) is modelled as "the stable
//! average has been zero for the whole grace period", see [`Kpa::scale`].
//!
//! Everything here is pure: no IO, no async, no clock.

use std::time::Duration;

/// Smallest per-pod target Knative accepts (`autoscaling.TargetMin`).
pub const MIN_TARGET: f64 = 0.01;
/// Shortest stable window Knative accepts (`autoscaling.WindowMin`).
pub const MIN_STABLE_WINDOW: Duration = Duration::from_secs(6);
/// Longest stable window Knative accepts (`autoscaling.WindowMax`).
pub const MAX_STABLE_WINDOW: Duration = Duration::from_secs(3600);
/// Smallest panic window, in percent of the stable window.
pub const MIN_PANIC_WINDOW_PERCENTAGE: f64 = 1.0;
/// Largest panic window, in percent of the stable window.
pub const MAX_PANIC_WINDOW_PERCENTAGE: f64 = 100.0;
/// Smallest panic threshold, in percent.
pub const MIN_PANIC_THRESHOLD_PERCENTAGE: f64 = 110.0;
/// Largest panic threshold, in percent.
pub const MAX_PANIC_THRESHOLD_PERCENTAGE: f64 = 1000.0;

/// Width of one window bucket: Knative aggregates metrics per second.
const BUCKET_MS: u64 = 1000;
/// Window averages are floored to this many decimal digits, as Knative does.
const AVERAGE_DIGITS: i32 = 6;

/// The KPA's settings, with Knative's documented defaults (RPS as the scaling metric).
#[derive(Debug, Clone, PartialEq)]
pub struct KpaConfig {
    /// Per-pod target, requests per second (`requests-per-second-target-default`, 200).
    pub target: f64,
    /// Fraction of `target` to aim for (`container-concurrency-target-percentage`, 0.7).
    pub target_utilization: f64,
    /// Stable window (`stable-window`, 60 s; whole seconds, 6 s to 1 h).
    pub stable_window: Duration,
    /// Panic window as a percentage of the stable window (`panic-window-percentage`, 10).
    pub panic_window_percentage: f64,
    /// Panic when panic-window demand reaches this percentage of ready pods (200).
    pub panic_threshold_percentage: f64,
    /// At most this many times the ready pods per decision (`max-scale-up-rate`, 1000).
    pub max_scale_up_rate: f64,
    /// At least ready pods divided by this per decision (`max-scale-down-rate`, 2).
    pub max_scale_down_rate: f64,
    /// Whether the revision may scale to zero (`enable-scale-to-zero`, true).
    pub enable_scale_to_zero: bool,
    /// Zero traffic must last this long before the last pod goes (`scale-to-zero-grace-period`, 30 s).
    pub scale_to_zero_grace_period: Duration,
    /// Lower bound on pods (`min-scale`, 0).
    pub min_scale: u32,
    /// Upper bound on pods, 0 for none (`max-scale`, 0).
    pub max_scale: u32,
    /// Fewest pods while there is any traffic, e.g. on scale from zero (`activation-scale`, 1).
    pub activation_scale: u32,
    /// Spare capacity wanted before the activator leaves the path (`target-burst-capacity`,
    /// 200; 0 = only at zero, -1 = always).
    pub target_burst_capacity: f64,
}

impl Default for KpaConfig {
    fn default() -> Self {
        Self {
            target: 200.0,
            target_utilization: 0.7,
            stable_window: Duration::from_secs(60),
            panic_window_percentage: 10.0,
            panic_threshold_percentage: 200.0,
            max_scale_up_rate: 1000.0,
            max_scale_down_rate: 2.0,
            enable_scale_to_zero: true,
            scale_to_zero_grace_period: Duration::from_secs(30),
            min_scale: 0,
            max_scale: 0,
            activation_scale: 1,
            target_burst_capacity: 200.0,
        }
    }
}

/// One problem with a [`KpaConfig`], naming the field it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KpaConfigError {
    /// A field is outside the range Knative accepts.
    #[error("kpa config: {field} = {value}, must be {expected}")]
    OutOfRange {
        /// The field's name in [`KpaConfig`].
        field: &'static str,
        /// The rejected value, formatted.
        value: String,
        /// The accepted range.
        expected: &'static str,
    },
    /// `min_scale` is above a non-zero `max_scale`.
    #[error("kpa config: min_scale = {min} is above max_scale = {max}")]
    MinAboveMax {
        /// The configured `min_scale`.
        min: u32,
        /// The configured `max_scale`.
        max: u32,
    },
    /// `activation_scale` is above a non-zero `max_scale`.
    #[error("kpa config: activation_scale = {activation} is above max_scale = {max}")]
    ActivationAboveMax {
        /// The configured `activation_scale`.
        activation: u32,
        /// The configured `max_scale`.
        max: u32,
    },
}

// === impl KpaConfig ===

impl KpaConfig {
    /// A default config with the given per-pod target (requests per second).
    pub fn with_target(target: f64) -> Self {
        Self {
            target,
            ..Self::default()
        }
    }

    /// Every problem with this config; `Ok` when there is none.
    pub fn validate(&self) -> Result<(), Vec<KpaConfigError>> {
        let mut errors = Vec::new();
        let mut out_of_range = |field: &'static str, value: String, expected: &'static str| {
            errors.push(KpaConfigError::OutOfRange {
                field,
                value,
                expected,
            });
        };
        if !(self.target.is_finite() && self.target >= MIN_TARGET) {
            out_of_range("target", self.target.to_string(), "at least 0.01");
        }
        if !(self.target_utilization > 0.0 && self.target_utilization <= 1.0) {
            out_of_range(
                "target_utilization",
                self.target_utilization.to_string(),
                "in (0, 1]",
            );
        } else if self.target.is_finite() && self.effective_target() < MIN_TARGET {
            out_of_range(
                "target_utilization",
                self.target_utilization.to_string(),
                "such that target × target_utilization is at least 0.01",
            );
        }
        if !(self.stable_window >= MIN_STABLE_WINDOW && self.stable_window <= MAX_STABLE_WINDOW) {
            out_of_range(
                "stable_window",
                format!("{:?}", self.stable_window),
                "in [6s, 1h]",
            );
        } else if self.stable_window.subsec_nanos() != 0 {
            out_of_range(
                "stable_window",
                format!("{:?}", self.stable_window),
                "a whole number of seconds",
            );
        }
        if !(self.panic_window_percentage >= MIN_PANIC_WINDOW_PERCENTAGE
            && self.panic_window_percentage <= MAX_PANIC_WINDOW_PERCENTAGE)
        {
            out_of_range(
                "panic_window_percentage",
                self.panic_window_percentage.to_string(),
                "in [1, 100]",
            );
        }
        if !(self.panic_threshold_percentage >= MIN_PANIC_THRESHOLD_PERCENTAGE
            && self.panic_threshold_percentage <= MAX_PANIC_THRESHOLD_PERCENTAGE)
        {
            out_of_range(
                "panic_threshold_percentage",
                self.panic_threshold_percentage.to_string(),
                "in [110, 1000]",
            );
        }
        if !(self.max_scale_up_rate.is_finite() && self.max_scale_up_rate > 1.0) {
            out_of_range(
                "max_scale_up_rate",
                self.max_scale_up_rate.to_string(),
                "a finite number greater than 1.0",
            );
        }
        if !(self.max_scale_down_rate.is_finite() && self.max_scale_down_rate > 1.0) {
            out_of_range(
                "max_scale_down_rate",
                self.max_scale_down_rate.to_string(),
                "a finite number greater than 1.0",
            );
        }
        if self.scale_to_zero_grace_period.is_zero() {
            out_of_range(
                "scale_to_zero_grace_period",
                format!("{:?}", self.scale_to_zero_grace_period),
                "positive",
            );
        }
        if self.activation_scale == 0 {
            out_of_range("activation_scale", "0".to_string(), "at least 1");
        }
        let tbc = self.target_burst_capacity;
        if !(tbc.is_finite() && (tbc >= 0.0 || tbc == -1.0)) {
            out_of_range(
                "target_burst_capacity",
                tbc.to_string(),
                "non-negative, or -1 for unlimited",
            );
        }
        if self.max_scale != 0 && self.min_scale > self.max_scale {
            errors.push(KpaConfigError::MinAboveMax {
                min: self.min_scale,
                max: self.max_scale,
            });
        }
        if self.max_scale != 0 && self.activation_scale > self.max_scale {
            errors.push(KpaConfigError::ActivationAboveMax {
                activation: self.activation_scale,
                max: self.max_scale,
            });
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The per-pod value actually aimed for: `target × target_utilization`.
    pub fn effective_target(&self) -> f64 {
        self.target * self.target_utilization
    }

    /// The panic threshold as a ratio of desired to ready pods (200 % → 2.0).
    pub fn panic_threshold(&self) -> f64 {
        self.panic_threshold_percentage / 100.0
    }

    /// Stable window × percentage, rounded to whole seconds and at least one second.
    pub fn panic_window(&self) -> Duration {
        let secs = self.stable_window.as_secs_f64() * self.panic_window_percentage / 100.0;
        let rounded = if secs.is_finite() { secs.round() } else { 1.0 };
        // `as` saturates; the window is at least one bucket.
        Duration::from_secs((rounded as u64).max(1))
    }
}

/// What one [`Kpa::scale`] call decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KpaDecision {
    /// Pods to run: the decider's count after min/max scale and scale-to-zero handling.
    pub desired: u32,
    /// The decider's count before min/max scale and scale to zero (Knative's `DesiredPodCount`).
    pub autoscaler_desired: u32,
    /// Pods the stable window asks for, after rate limits and activation scale.
    pub stable_pods: u32,
    /// Pods the panic window asks for, after rate limits and activation scale.
    pub panic_pods: u32,
    /// Whether the autoscaler is in panic mode after this call.
    pub panicking: bool,
    /// Spare capacity beyond the target burst capacity; negative keeps the activator in path.
    pub excess_burst_capacity: i64,
    /// The decider wants zero but the grace period still holds one pod.
    pub awaiting_scale_to_zero: bool,
}

/// Knative's KPA decision state for one revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Kpa {
    config: KpaConfig,
    /// Knative's `panicTime`: set on entering panic and pushed to `now` while still over the
    /// threshold; `None` when not panicking.
    panic_time_ms: Option<u64>,
    /// Highest count decided during the current panic (Knative's `maxPanicPods`).
    max_panic_pods: u32,
    /// Since when the observed stable rate has been zero; `None` while there is traffic.
    zero_since_ms: Option<u64>,
}

// === impl Kpa ===

impl Kpa {
    /// A fresh autoscaler (Knative's start with at most one ready pod: not panicking).
    pub fn new(config: KpaConfig) -> Result<Self, Vec<KpaConfigError>> {
        config.validate()?;
        Ok(Self {
            config,
            panic_time_ms: None,
            max_panic_pods: 0,
            zero_since_ms: None,
        })
    }

    /// An autoscaler (re)started with `ready_pods` already running: as in Knative, it starts in
    /// panic mode holding that count when there is more than one pod, so a restart with no
    /// metric history does not scale down at once.
    pub fn with_ready_pods(
        config: KpaConfig,
        now_ms: u64,
        ready_pods: u32,
    ) -> Result<Self, Vec<KpaConfigError>> {
        let mut kpa = Self::new(config)?;
        if ready_pods > 1 {
            kpa.panic_time_ms = Some(now_ms);
        }
        kpa.max_panic_pods = ready_pods;
        Ok(kpa)
    }

    /// The settings this autoscaler runs with.
    pub fn config(&self) -> &KpaConfig {
        &self.config
    }

    /// Whether the autoscaler is in panic mode.
    pub fn panicking(&self) -> bool {
        self.panic_time_ms.is_some()
    }

    /// The highest count decided during the current panic; 0 when not panicking.
    pub fn max_panic_pods(&self) -> u32 {
        self.max_panic_pods
    }

    /// One decision at `now_ms` from the stable and panic window averages (req/s, as from
    /// [`KpaWindows`]) and the pods ready now.
    ///
    /// Decider (Knative's `autoscaler.Scale`), with `ready` = max(1, `ready_pods`):
    /// 1. wanted = ceil(rate / (target × utilisation)) for each window;
    /// 2. each is clamped to [floor(ready / max_scale_down_rate), ceil(ready × max_scale_up_rate)];
    /// 3. with `activation_scale` > 1, a window with any traffic asks for at least that many;
    /// 4. over the threshold when the panic window's unclamped wish / ready ≥ threshold: that
    ///    starts panic or pushes its time to now; not over, and more than a stable window since
    ///    that time, ends panic and forgets its peak;
    /// 5. stable count, or while panicking max(stable, panic) and never below the panic's peak.
    ///
    /// Scaler: min/max scale (max 0 = none); then a wish of 0 becomes 1 when scale to zero is
    /// disabled, and stays 1 until the stable rate has been zero for the grace period (in
    /// Knative the clock is the revision's time inactive behind the activator; the stable
    /// average reaching zero already takes a full stable window without traffic).
    ///
    /// Rates that are negative or NaN count as zero.
    pub fn scale(
        &mut self,
        now_ms: u64,
        observed_stable_rate: f64,
        observed_panic_rate: f64,
        ready_pods: u32,
    ) -> KpaDecision {
        let config = &self.config;
        let stable_rate = non_negative(observed_stable_rate);
        let panic_rate = non_negative(observed_panic_rate);
        let ready = f64::from(ready_pods.max(1));

        let max_scale_up = (config.max_scale_up_rate * ready).ceil();
        let max_scale_down = (ready / config.max_scale_down_rate).floor();
        let target = config.effective_target();
        let wanted_stable = (stable_rate / target).ceil();
        let wanted_panic = (panic_rate / target).ceil();
        let limit = |wanted: f64| to_pods(wanted.max(max_scale_down).min(max_scale_up));
        let mut stable_pods = limit(wanted_stable);
        let mut panic_pods = limit(wanted_panic);
        let activation = config.activation_scale;
        if activation > 1 {
            if wanted_stable > 0.0 && stable_pods < activation {
                stable_pods = activation;
            }
            if wanted_panic > 0.0 && panic_pods < activation {
                panic_pods = activation;
            }
        }

        let over_threshold = wanted_panic / ready >= config.panic_threshold();
        let stable_window_ms = duration_ms(config.stable_window);
        if over_threshold {
            self.panic_time_ms = Some(now_ms);
        } else if let Some(since) = self.panic_time_ms {
            if since.saturating_add(stable_window_ms) < now_ms {
                self.panic_time_ms = None;
                self.max_panic_pods = 0;
            }
        }

        let mut autoscaler_desired = stable_pods;
        if self.panic_time_ms.is_some() {
            autoscaler_desired = autoscaler_desired.max(panic_pods);
            self.max_panic_pods = self.max_panic_pods.max(autoscaler_desired);
            autoscaler_desired = self.max_panic_pods;
        }

        let tbc = config.target_burst_capacity;
        let excess_burst_capacity = if tbc > 0.0 {
            // `as` saturates; the value is already whole.
            (f64::from(ready_pods) * config.target - tbc - panic_rate).floor() as i64
        } else if tbc < 0.0 {
            -1
        } else {
            0
        };

        if stable_rate > 0.0 {
            self.zero_since_ms = None;
        } else if self.zero_since_ms.is_none() {
            self.zero_since_ms = Some(now_ms);
        }

        let bounded = apply_bounds(config.min_scale, config.max_scale, autoscaler_desired);
        let mut awaiting_scale_to_zero = false;
        let desired = if bounded != 0 {
            bounded
        } else if !config.enable_scale_to_zero {
            1
        } else {
            let grace_ms = duration_ms(config.scale_to_zero_grace_period);
            match self.zero_since_ms {
                Some(since) if now_ms.saturating_sub(since) >= grace_ms => 0,
                _ => {
                    awaiting_scale_to_zero = true;
                    1
                }
            }
        };

        KpaDecision {
            desired,
            autoscaler_desired,
            stable_pods,
            panic_pods,
            panicking: self.panic_time_ms.is_some(),
            excess_burst_capacity,
            awaiting_scale_to_zero,
        }
    }
}

/// The stable and panic window averages at one instant, requests per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KpaObserved {
    /// Average over the stable window.
    pub stable: f64,
    /// Average over the panic window.
    pub panic: f64,
}

/// Per-second history turning arrival counts into the KPA's stable and panic averages.
///
/// Two rings of one-second buckets, one per window, averaged the way Knative's
/// `TimedFloat64Buckets.WindowAverage` does:
/// - a young window (first record less than a window ago) averages over the seconds since the
///   first record, not over the whole window;
/// - seconds skipped between two records count as zero;
/// - seconds not yet recorded at the end (no record for the last few seconds) are left out of
///   the average rather than counted as zero, so record every second, zeros included;
/// - a full window with no record resets the history (it is young again on the next record),
///   and [`KpaWindows::observed`] reports no data, like Knative's `ErrNoData`;
/// - averages are floored to six decimal places.
#[derive(Debug, Clone, PartialEq)]
pub struct KpaWindows {
    stable: SecondRing,
    panic: SecondRing,
}

// === impl KpaWindows ===

impl KpaWindows {
    /// Windows sized from `config`: its stable window and derived panic window.
    pub fn new(config: &KpaConfig) -> Self {
        Self::with_windows(config.stable_window, config.panic_window())
    }

    /// Windows of the given lengths, each rounded up to whole seconds, from 1 s up to 1 h.
    pub fn with_windows(stable: Duration, panic: Duration) -> Self {
        Self {
            stable: SecondRing::new(buckets_for(stable)),
            panic: SecondRing::new(buckets_for(panic)),
        }
    }

    /// Adds `value` (e.g. requests arrived) to the second holding `now_ms`; records older than a
    /// window are ignored.
    pub fn record(&mut self, now_ms: u64, value: f64) {
        let second = now_ms / BUCKET_MS;
        self.stable.record(second, value);
        self.panic.record(second, value);
    }

    /// Average per second over the stable window at `now_ms`.
    pub fn stable_average(&self, now_ms: u64) -> f64 {
        self.stable.average(now_ms / BUCKET_MS)
    }

    /// Average per second over the panic window at `now_ms`.
    pub fn panic_average(&self, now_ms: u64) -> f64 {
        self.panic.average(now_ms / BUCKET_MS)
    }

    /// Whether nothing was recorded for more than the stable window before `now_ms`.
    pub fn is_empty(&self, now_ms: u64) -> bool {
        self.stable.is_empty(now_ms / BUCKET_MS)
    }

    /// Both averages at `now_ms`; `None` when the stable window holds no data (Knative then
    /// skips the decision).
    pub fn observed(&self, now_ms: u64) -> Option<KpaObserved> {
        if self.is_empty(now_ms) {
            return None;
        }
        Some(KpaObserved {
            stable: self.stable_average(now_ms),
            panic: self.panic_average(now_ms),
        })
    }
}

/// A ring of one-second buckets covering one window.
#[derive(Debug, Clone, PartialEq)]
struct SecondRing {
    buckets: Vec<f64>,
    /// First second of the current run of data (reset after a window without records).
    first: u64,
    /// Latest second recorded; `None` before any record.
    last: Option<u64>,
}

// === impl SecondRing ===

impl SecondRing {
    fn new(len: usize) -> Self {
        Self {
            buckets: vec![0.0; len.max(1)],
            first: 0,
            last: None,
        }
    }

    fn len(&self) -> u64 {
        self.buckets.len() as u64
    }

    fn slot(&self, second: u64) -> usize {
        // The remainder is below `buckets.len()`, so it fits in a usize.
        (second % self.len()) as usize
    }

    fn record(&mut self, second: u64, value: f64) {
        let len = self.len();
        match self.last {
            None => {
                self.first = second;
                self.last = Some(second);
            }
            Some(last) if second > last => {
                if second - last >= len {
                    // A whole window without records: start afresh.
                    self.buckets.fill(0.0);
                    self.first = second;
                } else {
                    // Seconds skipped since the last record count as zero.
                    for skipped in last + 1..=second {
                        let slot = self.slot(skipped);
                        self.buckets[slot] = 0.0;
                    }
                }
                self.last = Some(second);
            }
            Some(last) if second + len > last => {
                // Same second, or a late record still inside the window.
                self.first = self.first.min(second);
            }
            Some(_) => return,
        }
        let slot = self.slot(second);
        self.buckets[slot] += value;
    }

    fn is_empty(&self, now: u64) -> bool {
        match self.last {
            None => true,
            Some(last) => now.saturating_sub(last) > self.len(),
        }
    }

    fn average(&self, now: u64) -> f64 {
        let Some(last) = self.last else {
            return 0.0;
        };
        let len = self.len();
        let seen = last.saturating_sub(self.first) + 1;
        let (sum, count) = if now <= last {
            (self.buckets.iter().sum::<f64>(), seen.min(len))
        } else {
            let gap = now - last;
            if gap >= len {
                return 0.0;
            }
            let from = (now + 1).saturating_sub(len);
            let sum = (from..=last)
                .map(|s| self.buckets[self.slot(s)])
                .sum::<f64>();
            (sum, seen.min(len - gap))
        };
        floor_digits(sum / count as f64)
    }
}

/// Min/max scale, max 0 meaning unbounded (Knative's `applyBounds`).
fn apply_bounds(min: u32, max: u32, pods: u32) -> u32 {
    if pods < min {
        min
    } else if max != 0 && pods > max {
        max
    } else {
        pods
    }
}

/// Whole pods from a non-negative count (`as` saturates; NaN becomes 0).
fn to_pods(count: f64) -> u32 {
    count as u32
}

fn non_negative(rate: f64) -> f64 {
    if rate > 0.0 {
        rate
    } else {
        0.0
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Buckets of one second needed to cover `window`, from one up to [`MAX_STABLE_WINDOW`].
fn buckets_for(window: Duration) -> usize {
    let max = MAX_STABLE_WINDOW.as_secs();
    let secs = duration_ms(window).div_ceil(BUCKET_MS).clamp(1, max);
    usize::try_from(secs).unwrap_or(1)
}

fn floor_digits(value: f64) -> f64 {
    let scale = 10f64.powi(AVERAGE_DIGITS);
    (value * scale).floor() / scale
}

#[cfg(test)]
mod tests;
