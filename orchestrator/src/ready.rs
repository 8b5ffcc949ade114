//! The confirmed-ready set: which instances of each service may get traffic right now.
//!
//! The health checker is the only writer of readiness; it publishes a new immutable
//! [`ReadySet`] per service when membership changes. The request path only loads the current
//! snapshot (`ArcSwap`) and touches per-instance atomics (in-flight count, latency EWMA,
//! passive ejection), so it never takes a lock.
//!
//! A service with flagged versions (`versions:` in the policy) gets its ready set partitioned
//! when it is built, so the request path picks from a slice and never filters:
//!
//! ```text
//!  instances: [ stable  stable  v2 | beta  beta | gamma ]
//!               └─ unflagged() ────┘ └ version("beta") ┘ └ version("gamma")
//! ```

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ahash::AHashMap;
use arc_swap::ArcSwap;
use forecourt_config::{Ejection, HealthCheck, ServiceConfig};
use tokio::sync::watch;

use crate::health::HealthState;

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
    ready: AtomicBool,
    /// Set when the instance leaves its service: no new requests, in-flight ones finish.
    draining: AtomicBool,
    /// When Forecourt learned of it (tokio clock, so tests can pause time).
    added: tokio::time::Instant,
    /// From `added` to the first confirmed-ready probe, once that happened.
    time_to_ready: std::sync::OnceLock<Duration>,
    /// Health detail; touched only by the health checker and the admin API.
    health: Mutex<HealthState>,
    /// Where its warm-up stands (see [`WarmUp`]); it is confirmed ready only once warmed.
    warm_up: std::sync::atomic::AtomicU8,
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

    /// Records a live response status; repeated 5xx eject the instance.
    pub fn observe_status(&self, status: u16, now_ms: u64, policy: &Ejection) {
        if status >= 500 {
            let n = self.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
            // A failure while half-open (recovering from an ejection) re-opens at once.
            let recovering = self.ejections.load(Ordering::Relaxed) != 0 && !self.is_open(now_ms);
            if n >= EJECT_AFTER_5XX || recovering {
                self.eject(now_ms, policy);
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
    pub(crate) fn record_probe(&self, result: Result<(), String>, check: &HealthCheck) -> bool {
        let mut health = self
            .health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let was = self.ready.load(Ordering::Acquire);
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

/// The instances of one service that are confirmed ready, as one immutable snapshot.
#[derive(Debug, Default)]
pub struct ReadySet {
    /// Every ready instance, in a stable order: those unflagged requests may use first, then
    /// each flagged version's together (in the order the policy lists the versions).
    pub instances: Vec<Arc<Instance>>,
    /// How many of `instances`, from the start, unflagged requests may use.
    unflagged: usize,
    /// Each flagged version with ready instances, and where they are in `instances`.
    versions: Vec<(Arc<str>, Range<usize>)>,
}

// === impl ReadySet ===

impl ReadySet {
    /// Partitions `ready` (in a stable order) for a service whose flagged versions are
    /// `flagged`: instances of those versions go last, grouped by version.
    pub fn new(mut ready: Vec<Arc<Instance>>, flagged: &[Arc<str>]) -> Self {
        if flagged.is_empty() {
            return Self {
                unflagged: ready.len(),
                instances: ready,
                versions: Vec::new(),
            };
        }
        let group = |i: &Instance| flagged.iter().position(|v| **v == *i.version);
        // Stable: each part keeps the order the instances had.
        ready.sort_by_key(|i| group(i).map_or(0, |g| g + 1));
        let unflagged = ready.iter().take_while(|i| group(i).is_none()).count();
        let mut versions = Vec::new();
        let mut start = unflagged;
        for (g, name) in flagged.iter().enumerate() {
            let len = ready[start..]
                .iter()
                .take_while(|i| group(i) == Some(g))
                .count();
            if len > 0 {
                versions.push((Arc::clone(name), start..start + len));
            }
            start += len;
        }
        Self {
            instances: ready,
            unflagged,
            versions,
        }
    }

    /// The ready instances unflagged requests may use: every one whose version is not one of
    /// the service's flagged versions (all of them when it has none).
    pub fn unflagged(&self) -> &[Arc<Instance>] {
        self.instances.get(..self.unflagged).unwrap_or_default()
    }

    /// The ready instances of flagged version `version` (empty when it has none ready).
    pub fn version(&self, version: &str) -> &[Arc<Instance>] {
        self.versions
            .iter()
            .find(|(name, _)| **name == *version)
            .and_then(|(_, range)| self.instances.get(range.clone()))
            .unwrap_or_default()
    }

    /// Each flagged version with ready instances, and those instances.
    pub fn versions(&self) -> impl Iterator<Item = (&str, &[Arc<Instance>])> + '_ {
        self.versions.iter().map(|(name, range)| {
            (
                &**name,
                self.instances.get(range.clone()).unwrap_or_default(),
            )
        })
    }
}

/// Every instance of one service, and its confirmed-ready subset.
#[derive(Debug)]
pub struct ServiceInstances {
    /// The service name.
    pub name: Arc<str>,
    all: ArcSwap<Vec<Arc<Instance>>>,
    ready: ArcSwap<ReadySet>,
    /// Bumped each time the ready set changes; waiters subscribe to it.
    changed: watch::Sender<u64>,
    /// Instances taken out that may still have requests in flight (control path only).
    draining: Mutex<Vec<Arc<Instance>>>,
    /// The service's flagged versions (policy `versions:`), which the ready set keeps apart.
    flagged: ArcSwap<Vec<Arc<str>>>,
}

// === impl ServiceInstances ===

impl ServiceInstances {
    /// A service with these instances, none of them ready yet.
    pub fn new(name: &str, instances: Vec<Arc<Instance>>) -> Self {
        Self {
            name: Arc::from(name),
            all: ArcSwap::from_pointee(instances),
            ready: ArcSwap::from_pointee(ReadySet::default()),
            changed: watch::channel(0).0,
            draining: Mutex::new(Vec::new()),
            flagged: ArcSwap::from_pointee(Vec::new()),
        }
    }

    /// Sets the service's flagged versions (a policy's `versions:`), whose instances only
    /// flagged requests may use; the ready set is rebuilt when they changed.
    pub fn set_flagged_versions<'a>(&self, versions: impl IntoIterator<Item = &'a str>) {
        let versions: Vec<Arc<str>> = versions.into_iter().map(Arc::from).collect();
        if **self.flagged.load() != versions {
            self.flagged.store(Arc::new(versions));
            self.publish_ready();
        }
    }

    /// The service's flagged versions, in policy order.
    pub fn flagged_versions(&self) -> Arc<Vec<Arc<str>>> {
        self.flagged.load_full()
    }

    /// The current ready set (lock-free load).
    pub fn ready(&self) -> arc_swap::Guard<Arc<ReadySet>> {
        self.ready.load()
    }

    /// Every known instance.
    pub fn all(&self) -> Arc<Vec<Arc<Instance>>> {
        self.all.load_full()
    }

    /// A receiver that sees a new value whenever the ready set changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Adds an instance (not ready until its health check passes); an address already present
    /// is kept as it is.
    pub fn add(&self, address: SocketAddr, version: &str) -> Arc<Instance> {
        let fresh = Arc::new(Instance::new(address, version));
        let before = self.all.rcu(|all| {
            if all.iter().any(|i| i.address == address) {
                return Arc::clone(all);
            }
            let mut next = Vec::with_capacity(all.len() + 1);
            next.extend(all.iter().cloned());
            next.push(Arc::clone(&fresh));
            Arc::new(next)
        });
        before
            .iter()
            .find(|i| i.address == address)
            .cloned()
            .unwrap_or(fresh)
    }

    /// Takes an instance out: it leaves the ready set at once (no new requests) and is returned
    /// so the caller can wait for its in-flight requests. `None` if it was not there.
    pub fn remove(&self, address: SocketAddr) -> Option<Arc<Instance>> {
        let mut removed = None;
        self.all.rcu(|all| {
            removed = all.iter().find(|i| i.address == address).cloned();
            if removed.is_none() {
                return Arc::clone(all);
            }
            Arc::new(
                all.iter()
                    .filter(|i| i.address != address)
                    .cloned()
                    .collect::<Vec<_>>(),
            )
        });
        let removed = removed?;
        removed.draining.store(true, Ordering::Release);
        removed.ready.store(false, Ordering::Release);
        self.publish_ready();
        self.retire(std::slice::from_ref(&removed));
        Some(removed)
    }

    fn retire(&self, instances: &[Arc<Instance>]) {
        let mut draining = self.draining.lock().unwrap_or_else(|e| e.into_inner());
        draining.retain(|i| i.in_flight() > 0);
        draining.extend(instances.iter().cloned());
    }

    /// Takes the instance at `address` out (if it is still in) and waits until none of its
    /// requests is in flight, or `timeout` passes. True when it drained.
    pub async fn drain(&self, address: SocketAddr, timeout: Duration) -> bool {
        let _ = self.remove(address);
        let instance = self
            .draining
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|i| i.address == address)
            .cloned();
        let Some(instance) = instance else {
            return true;
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let drained = loop {
            if instance.in_flight() == 0 {
                break true;
            }
            if tokio::time::Instant::now() >= deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        if !drained {
            tracing::warn!(
                service = %self.name, %address, in_flight = instance.in_flight(),
                "drain timed out; stopping the instance with requests in flight"
            );
        }
        self.draining
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|i| !Arc::ptr_eq(i, &instance));
        drained
    }

    /// Takes every instance out (the service left the policy); they drain like removed ones.
    pub fn retire_all(&self) -> Vec<Arc<Instance>> {
        self.reset(&[])
    }

    /// Replaces every instance with `instances` (a reset from an orchestrator or a reloaded
    /// static list): instances kept by address and version keep their state; the others drain.
    /// Returns the removed ones.
    pub fn reset(&self, instances: &[(SocketAddr, String)]) -> Vec<Arc<Instance>> {
        let current = self.all();
        let keep: Vec<Arc<Instance>> = instances
            .iter()
            .map(|(address, version)| {
                current
                    .iter()
                    .find(|i| i.address == *address && *i.version == **version)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Instance::new(*address, version)))
            })
            .collect();
        let removed: Vec<Arc<Instance>> = current
            .iter()
            .filter(|i| !keep.iter().any(|k| Arc::ptr_eq(k, i)))
            .cloned()
            .collect();
        for instance in &removed {
            instance.draining.store(true, Ordering::Release);
            instance.ready.store(false, Ordering::Release);
        }
        self.all.store(Arc::new(keep));
        self.publish_ready();
        self.retire(&removed);
        removed
    }

    /// Rebuilds the ready set from the instances' readiness and publishes it.
    pub(crate) fn publish_ready(&self) {
        let instances: Vec<Arc<Instance>> = self
            .all
            .load()
            .iter()
            .filter(|i| i.is_ready())
            .cloned()
            .collect();
        let ready = ReadySet::new(instances, &self.flagged.load());
        self.ready.store(Arc::new(ready));
        self.changed.send_modify(|generation| *generation += 1);
    }
}

/// The fixed instances a policy lists for a service.
fn static_list(service: &ServiceConfig) -> Vec<(SocketAddr, String)> {
    service
        .instances
        .iter()
        .map(|i| (i.address, i.version.clone()))
        .collect()
}

/// Every service's instances, built from a policy.
#[derive(Debug, Default)]
pub struct Fleet {
    services: Vec<Arc<ServiceInstances>>,
    by_name: AHashMap<Arc<str>, usize>,
}

// === impl Fleet ===

impl Fleet {
    /// Builds the fleet for `services`, reusing the live state of instances in `previous`
    /// that keep their address and version, so a reload does not reset readiness.
    pub fn new(services: &[ServiceConfig], previous: Option<&Fleet>) -> Self {
        let mut fleet = Fleet::default();
        for service in services {
            let entry = match previous.and_then(|p| p.service(&service.name)) {
                // The same service keeps its instances object: health checkers, held
                // requests and orchestrators keep working across a reload.
                Some(old) => {
                    // Launched services get their instances from the orchestrator instead.
                    if service.launch.is_none() {
                        let _ = old.reset(&static_list(service));
                    }
                    Arc::clone(old)
                }
                None => {
                    let instances = static_list(service)
                        .into_iter()
                        .map(|(address, version)| Arc::new(Instance::new(address, &version)))
                        .collect();
                    Arc::new(ServiceInstances::new(&service.name, instances))
                }
            };
            entry.set_flagged_versions(service.versions.iter().map(|v| v.version.as_str()));
            fleet
                .by_name
                .insert(entry.name.clone(), fleet.services.len());
            fleet.services.push(entry);
        }
        fleet
    }

    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&Arc<ServiceInstances>> {
        self.by_name.get(name).map(|&i| &self.services[i])
    }

    /// Every service, in policy order.
    pub fn services(&self) -> &[Arc<ServiceInstances>] {
        &self.services
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ejection() -> Ejection {
        Ejection {
            base: Duration::from_secs(5),
            max: Duration::from_secs(60),
        }
    }

    fn instance() -> Instance {
        Instance::new(SocketAddr::from(([127, 0, 0, 1], 1)), "stable")
    }

    #[test]
    fn after_an_ejection_one_trial_decides() {
        let i = instance();
        assert_eq!(i.circuit(0), Circuit::Closed);
        i.eject(1_000, &ejection());
        assert!(i.is_ejected(5_999));
        assert_eq!(i.circuit(5_999), Circuit::Open);
        // Half-open: usable until a trial starts, then closed to the others.
        assert!(!i.is_ejected(6_000));
        assert_eq!(i.circuit(6_000), Circuit::HalfOpen);
        i.begin_attempt(6_000);
        assert!(i.is_ejected(6_001), "one trial at a time");
        // The trial fails: open again, twice as long.
        i.observe_status(502, 6_100, &ejection());
        assert_eq!(i.ejected_until(6_100), Some(16_100));
        // Next trial succeeds: closed.
        i.begin_attempt(16_100);
        i.observe_status(200, 16_200, &ejection());
        assert_eq!(i.circuit(16_200), Circuit::Closed);
        assert!(!i.is_ejected(16_200));
    }

    #[test]
    fn a_trial_that_never_answers_expires() {
        let i = instance();
        i.eject(0, &ejection());
        i.begin_attempt(5_000);
        assert!(i.is_ejected(5_000 + TRIAL_EXPIRY_MS - 1));
        assert!(!i.is_ejected(5_000 + TRIAL_EXPIRY_MS));
    }

    #[test]
    fn ejection_doubles_up_to_max() {
        let i = instance();
        i.eject(1_000, &ejection());
        assert_eq!(i.ejected_until(1_000), Some(6_000));
        i.eject(6_000, &ejection());
        assert_eq!(i.ejected_until(6_000), Some(16_000));
        for _ in 0..10 {
            i.eject(16_000, &ejection());
        }
        assert_eq!(i.ejected_until(16_000), Some(76_000));
        assert!(!i.is_ejected(76_000));
    }

    #[test]
    fn repeated_5xx_eject_and_success_resets() {
        let i = instance();
        for _ in 0..EJECT_AFTER_5XX - 1 {
            i.observe_status(503, 0, &ejection());
        }
        assert!(!i.is_ejected(0));
        i.observe_status(200, 0, &ejection());
        for _ in 0..EJECT_AFTER_5XX - 1 {
            i.observe_status(500, 0, &ejection());
        }
        assert!(!i.is_ejected(0), "a success in between resets the count");
        i.observe_status(500, 0, &ejection());
        assert!(i.is_ejected(0));
    }

    #[test]
    fn in_flight_never_wraps() {
        let i = instance();
        i.finish_request();
        assert_eq!(i.in_flight(), 0);
        i.start_request();
        i.start_request();
        i.finish_request();
        assert_eq!(i.in_flight(), 1);
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn check() -> HealthCheck {
        HealthCheck {
            path: "/healthz".to_owned(),
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(100),
            healthy_threshold: 1,
            unhealthy_threshold: 1,
        }
    }

    #[test]
    fn added_instances_wait_for_their_probe_and_removed_ones_drain() {
        let service = ServiceInstances::new("shop", Vec::new());
        let a = service.add(addr(1), "stable");
        let again = service.add(addr(1), "stable");
        assert!(Arc::ptr_eq(&a, &again), "an address is added once");
        let b = service.add(addr(2), "v2");
        assert_eq!(service.all().len(), 2);
        assert!(service.ready().instances.is_empty());
        assert!(a.record_probe(Ok(()), &check()));
        assert!(b.record_probe(Ok(()), &check()));
        assert!(a.time_to_ready().is_some());
        service.publish_ready();
        assert_eq!(service.ready().instances.len(), 2);

        let changes = service.subscribe();
        b.start_request();
        let removed = service.remove(addr(2)).expect("present");
        assert!(removed.is_draining() && !removed.is_ready());
        assert_eq!(removed.in_flight(), 1, "in-flight requests finish on it");
        assert_eq!(service.ready().instances.len(), 1);
        assert!(changes.has_changed().unwrap_or(false));
        // Probes that still pass do not bring a draining instance back.
        assert!(!removed.record_probe(Ok(()), &check()));
        assert!(!removed.is_ready());
        assert!(service.remove(addr(2)).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_in_flight_requests_up_to_the_timeout() {
        let service = Arc::new(ServiceInstances::new("shop", Vec::new()));
        let busy = service.add(addr(1), "stable");
        busy.start_request();
        let waiter = {
            let service = Arc::clone(&service);
            tokio::spawn(async move { service.drain(addr(1), Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(busy.is_draining(), "drain takes the instance out first");
        assert!(!waiter.is_finished());
        busy.finish_request();
        assert_eq!(waiter.await.ok(), Some(true));

        let stuck = service.add(addr(2), "stable");
        stuck.start_request();
        let started = tokio::time::Instant::now();
        assert!(!service.drain(addr(2), Duration::from_secs(5)).await);
        assert!(started.elapsed() >= Duration::from_secs(5));
        assert!(
            service.drain(addr(3), Duration::from_secs(5)).await,
            "unknown: nothing to wait for"
        );
    }

    #[test]
    fn reset_keeps_matching_instances_and_drains_the_rest() {
        let service = ServiceInstances::new("shop", Vec::new());
        let kept = service.add(addr(1), "stable");
        let gone = service.add(addr(2), "stable");
        kept.record_probe(Ok(()), &check());
        service.publish_ready();
        let removed = service.reset(&[
            (addr(1), "stable".to_owned()),
            (addr(3), "stable".to_owned()),
        ]);
        assert_eq!(removed.len(), 1);
        assert!(Arc::ptr_eq(&removed[0], &gone) && gone.is_draining());
        let all = service.all();
        assert!(Arc::ptr_eq(&all[0], &kept), "state survives the reset");
        assert_eq!(all[1].address, addr(3));
        assert_eq!(service.ready().instances.len(), 1);
    }

    #[test]
    fn flagged_versions_are_kept_apart_in_the_ready_set() {
        let service = ServiceInstances::new("shop", Vec::new());
        let versions = ["beta", "stable", "v2", "gamma", "stable", "beta"];
        let all: Vec<Arc<Instance>> = versions
            .iter()
            .zip(1..)
            .map(|(v, port)| service.add(addr(port), v))
            .collect();
        for instance in &all {
            instance.record_probe(Ok(()), &check());
        }
        service.publish_ready();
        let ports = |list: &[Arc<Instance>]| -> Vec<u16> {
            list.iter().map(|i| i.address.port()).collect()
        };
        // Without flagged versions every ready instance serves unflagged requests.
        assert_eq!(ports(service.ready().unflagged()), [1, 2, 3, 4, 5, 6]);
        assert!(service.ready().version("beta").is_empty());

        service.set_flagged_versions(["gamma", "beta"]);
        let ready = service.ready();
        assert_eq!(ready.instances.len(), 6);
        assert_eq!(
            ports(ready.unflagged()),
            [2, 3, 5],
            "instances of other versions (v2) stay"
        );
        assert_eq!(ports(ready.version("beta")), [1, 6]);
        assert_eq!(ports(ready.version("gamma")), [4]);
        assert!(ready.version("delta").is_empty());
        let listed: Vec<(&str, usize)> = ready.versions().map(|(v, i)| (v, i.len())).collect();
        assert_eq!(listed, [("gamma", 1), ("beta", 2)]);
        drop(ready);

        // A version leaving the ready set leaves no empty group behind.
        let _ = service.remove(addr(4));
        let ready = service.ready();
        assert!(ready.version("gamma").is_empty());
        assert_eq!(ready.versions().count(), 1);
        assert_eq!(ports(ready.unflagged()), [2, 3, 5]);
    }

    #[test]
    fn latency_ewma_starts_at_first_sample() {
        let i = instance();
        i.observe_latency(Duration::from_millis(10));
        assert_eq!(i.latency_ewma_us(), 10_000.0);
        i.observe_latency(Duration::from_millis(20));
        assert!((i.latency_ewma_us() - 12_000.0).abs() < 1e-6);
    }
}
