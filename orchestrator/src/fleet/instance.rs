//! One instance of a service and its live state: in flight, latency, circuit, warm-up, health.

use forecourt_config::{Ejection, HealthCheck};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::health_state::HealthState;

/// Unique id of an instance for the life of the process.
pub type InstanceId = u64;

static NEXT_INSTANCE_ID: AtomicU64 = AtomicU64::new(1);

/// Consecutive 5xx responses on live traffic that eject an instance.
pub const EJECT_AFTER_5XX: u32 = 5;

/// One instance of a service and its live state.
#[derive(Debug)]
pub struct Instance {
    /// Process-unique id.
    pub id: InstanceId,
    /// Where it listens.
    pub address: SocketAddr,
    /// Its version label.
    pub version: Arc<str>,
    in_flight: AtomicU32,
    /// Latency EWMA in microseconds (f64 bits).
    latency_ewma_us: AtomicU64,
    ejected_until_ms: AtomicU64,
    ejections: AtomicU32,
    consecutive_5xx: AtomicU32,
    /// While recovering from an ejection (half-open): when the trial request started, 0 if none.
    trial_since_ms: AtomicU64,
    pub(super) ready: AtomicBool,
    /// Set when the instance leaves its service: no new requests, in-flight ones finish.
    pub(super) draining: AtomicBool,
    /// When Forecourt learned of it (tokio clock, so tests can pause time).
    added: tokio::time::Instant,
    /// From `added` to the first confirmed-ready probe, once that happened.
    time_to_ready: std::sync::OnceLock<Duration>,
    /// Health detail; touched only by the health checker and the admin API.
    health: Mutex<HealthState>,
    /// Where its warm-up stands (see [`WarmUp`]); it is confirmed ready only once warmed.
    warm_up: std::sync::atomic::AtomicU8,
}

/// What a passive observation did to an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passive {
    /// Nothing changed, or a failure was counted.
    Kept,
    /// The instance was ejected.
    Ejected,
    /// It called for an ejection, but the service's cap on ejected instances was reached.
    Spared,
}

/// How long a half-open trial request may go unanswered before another may try.
pub const TRIAL_EXPIRY_MS: u64 = 5_000;

/// An instance's circuit: closed (normal), open (ejected after failures), half-open (one
/// trial request decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuit {
    /// Serving normally.
    Closed,
    /// Ejected after failures; no requests until the back-off ends.
    Open,
    /// The back-off ended; one trial request decides.
    HalfOpen,
}

/// Where an instance's warm-up (requests sent before it is confirmed ready) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarmUp {
    /// Not started: it starts when the instance first passes enough health checks.
    Pending,
    /// Running: the instance stays out of the ready set meanwhile.
    Running,
    /// Done (or not configured): readiness follows the health checks alone.
    Done,
}

/// Weight of the newest sample in the latency EWMA.
const LATENCY_EWMA_ALPHA: f64 = 0.2;

// === impl Instance ===

impl Instance {
    /// A new instance, not yet confirmed ready.
    pub fn new(address: SocketAddr, version: &str) -> Self {
        Self {
            id: NEXT_INSTANCE_ID.fetch_add(1, Ordering::Relaxed),
            address,
            version: Arc::from(version),
            in_flight: AtomicU32::new(0),
            latency_ewma_us: AtomicU64::new(0f64.to_bits()),
            ejected_until_ms: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            consecutive_5xx: AtomicU32::new(0),
            trial_since_ms: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            added: tokio::time::Instant::now(),
            time_to_ready: std::sync::OnceLock::new(),
            health: Mutex::new(HealthState::default()),
            warm_up: std::sync::atomic::AtomicU8::new(WarmUp::Done as u8),
        }
    }

    /// Where the instance's warm-up stands.
    pub fn warm_up(&self) -> WarmUp {
        match self.warm_up.load(Ordering::Acquire) {
            0 => WarmUp::Pending,
            1 => WarmUp::Running,
            _ => WarmUp::Done,
        }
    }

    /// Sets where the instance's warm-up stands.
    pub(crate) fn set_warm_up(&self, state: WarmUp) {
        self.warm_up.store(state as u8, Ordering::Release);
    }

    /// Arms the warm-up of an instance not probed yet, so it is warmed before it is ready.
    pub(crate) fn arm_warm_up(&self) {
        let probed = self
            .health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .probes
            > 0;
        if !probed && !self.is_ready() {
            let _ = self.warm_up.compare_exchange(
                WarmUp::Done as u8,
                WarmUp::Pending as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    /// Claims the warm-up when a passing probe would confirm this instance ready for the first
    /// time: true once, for the caller that must now run it.
    pub(crate) fn claim_warm_up(&self, check: &HealthCheck) -> bool {
        let streak = self
            .health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .consecutive_ok;
        streak.saturating_add(1) >= check.healthy_threshold
            && self
                .warm_up
                .compare_exchange(
                    WarmUp::Pending as u8,
                    WarmUp::Running as u8,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    /// True once the instance has left its service and only finishes what it has.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// How long it took from being added to its first confirmed-ready probe.
    pub fn time_to_ready(&self) -> Option<Duration> {
        self.time_to_ready.get().copied()
    }

    /// Time since Forecourt learned of the instance.
    pub fn age(&self) -> Duration {
        self.added.elapsed()
    }

    /// Requests currently sent to this instance and not yet finished.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Marks a request as sent to this instance.
    pub fn start_request(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// Marks a request to this instance as finished.
    pub fn finish_request(&self) {
        // Saturating: a stray double finish must not wrap to u32::MAX.
        let _ = self
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Latency EWMA in microseconds (0 until the first response).
    pub fn latency_ewma_us(&self) -> f64 {
        f64::from_bits(self.latency_ewma_us.load(Ordering::Relaxed))
    }

    /// Folds one response latency into the EWMA.
    pub fn observe_latency(&self, latency: Duration) {
        let sample = latency.as_secs_f64() * 1e6;
        let _ = self
            .latency_ewma_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                let old = f64::from_bits(bits);
                let new = if old == 0.0 {
                    sample
                } else {
                    old + LATENCY_EWMA_ALPHA * (sample - old)
                };
                Some(new.to_bits())
            });
    }

    /// True when the health checker has confirmed this instance ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// True while a passive ejection lasts.
    ///
    /// After an ejection ends the instance is half-open: one trial request goes to it, and the
    /// others stay away until the trial answers (a success closes the circuit, a failure ejects it
    /// again for twice as long). A trial that never answers stops counting after `TRIAL_EXPIRY_MS`.
    pub fn is_ejected(&self, now_ms: u64) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        if until > now_ms {
            return true;
        }
        if until == 0 || self.ejections.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let trial = self.trial_since_ms.load(Ordering::Acquire);
        trial != 0 && now_ms.saturating_sub(trial) < TRIAL_EXPIRY_MS
    }

    /// Marks a request sent to this instance as the half-open trial, when the instance is
    /// recovering from an ejection and no trial is under way.
    pub fn begin_attempt(&self, now_ms: u64) {
        if self.ejections.load(Ordering::Relaxed) == 0
            || self.ejected_until_ms.load(Ordering::Relaxed) > now_ms
        {
            return;
        }
        let trial = self.trial_since_ms.load(Ordering::Acquire);
        if trial == 0 || now_ms.saturating_sub(trial) >= TRIAL_EXPIRY_MS {
            let _ = self.trial_since_ms.compare_exchange(
                trial,
                now_ms.max(1),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    /// Whether the instance is closed, open (ejected) or half-open (recovering), for metrics.
    pub fn circuit(&self, now_ms: u64) -> Circuit {
        if self.ejected_until_ms.load(Ordering::Relaxed) > now_ms {
            Circuit::Open
        } else if self.ejections.load(Ordering::Relaxed) > 0 {
            Circuit::HalfOpen
        } else {
            Circuit::Closed
        }
    }

    /// When the current ejection ends (ms on the proxy clock), if one is active.
    pub fn ejected_until(&self, now_ms: u64) -> Option<u64> {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        (until > now_ms).then_some(until)
    }

    /// Ejects the instance after a connect failure; each repeat doubles the length up to max.
    pub fn eject(&self, now_ms: u64, policy: &Ejection) {
        let n = self.ejections.fetch_add(1, Ordering::Relaxed).min(16);
        let length = policy.base.saturating_mul(1 << n).min(policy.max);
        let until = now_ms.saturating_add(length.as_millis() as u64);
        self.ejected_until_ms.fetch_max(until, Ordering::Relaxed);
        self.consecutive_5xx.store(0, Ordering::Relaxed);
        self.trial_since_ms.store(0, Ordering::Release);
    }

    /// Ejects the instance after a failure, unless `room` says its service already has as many
    /// instances out as `ejection.max_percent` allows: then the failure is forgiven (the count
    /// starts again and a half-open trial ends) so one bad URL cannot empty a service.
    pub fn eject_within(
        &self,
        now_ms: u64,
        policy: &Ejection,
        room: impl FnOnce() -> bool,
    ) -> Passive {
        if room() {
            self.eject(now_ms, policy);
            Passive::Ejected
        } else {
            self.consecutive_5xx.store(0, Ordering::Relaxed);
            self.trial_since_ms.store(0, Ordering::Release);
            Passive::Spared
        }
    }

    /// Records a live response status; repeated 5xx (or a 5xx on the half-open trial) eject the
    /// instance within the service's cap (see [`Self::eject_within`]).
    pub fn observe_status(
        &self,
        status: u16,
        now_ms: u64,
        policy: &Ejection,
        room: impl FnOnce() -> bool,
    ) -> Passive {
        if status >= 500 {
            let n = self.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
            // A failure while half-open (recovering from an ejection) re-opens at once.
            let recovering = self.ejections.load(Ordering::Relaxed) != 0 && !self.is_open(now_ms);
            if n >= EJECT_AFTER_5XX || recovering {
                return self.eject_within(now_ms, policy, room);
            }
        } else {
            // Read before writing so the common path does not dirty the cache line.
            if self.consecutive_5xx.load(Ordering::Relaxed) != 0 {
                self.consecutive_5xx.store(0, Ordering::Relaxed);
            }
            if self.ejections.load(Ordering::Relaxed) != 0 && !self.is_open(now_ms) {
                // The trial answered: close the circuit.
                self.ejections.store(0, Ordering::Relaxed);
                self.trial_since_ms.store(0, Ordering::Release);
            }
        }
        Passive::Kept
    }

    /// True while an ejection lasts (the circuit is open).
    fn is_open(&self, now_ms: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now_ms
    }

    /// A copy of the health detail, for the admin API.
    pub fn health(&self) -> HealthState {
        self.health
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// Applies one probe result; returns true when readiness flipped.
    pub(crate) fn record_probe<E: std::fmt::Display>(
        &self,
        result: &Result<(), E>,
        check: &HealthCheck,
    ) -> bool {
        let mut health = self
            .health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let was = self.ready.load(Ordering::Acquire);
        // The health state keeps the failure's text: it is what the admin API shows.
        let result = result.as_ref().map(|_| ()).map_err(ToString::to_string);
        health.observe(result, check.healthy_threshold, check.unhealthy_threshold);
        // A draining instance stays out of the ready set whatever its probes say, and so does
        // one still warming up.
        let ready = health.ready && !self.is_draining() && self.warm_up() == WarmUp::Done;
        if ready {
            let _ = self.time_to_ready.set(self.added.elapsed());
        }
        self.ready.store(ready, Ordering::Release);
        was != ready
    }
}
