//! The confirmed-ready set: which instances of each service may get traffic right now.
//!
//! The health checker is the only writer of readiness; it publishes a new immutable
//! [`ReadySet`] per service when membership changes. The request path only loads the current
//! snapshot (`ArcSwap`) and touches per-instance atomics (in-flight count, latency EWMA,
//! passive ejection), so it never takes a lock.

use std::net::SocketAddr;
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
    ready: AtomicBool,
    /// Health detail; touched only by the health checker and the admin API.
    health: Mutex<HealthState>,
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
            ready: AtomicBool::new(false),
            health: Mutex::new(HealthState::default()),
        }
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
    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now_ms
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
    }

    /// Records a live response status; repeated 5xx eject the instance.
    pub fn observe_status(&self, status: u16, now_ms: u64, policy: &Ejection) {
        if status >= 500 {
            let n = self.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= EJECT_AFTER_5XX {
                self.eject(now_ms, policy);
            }
        } else {
            // Read before writing so the common path does not dirty the cache line.
            if self.consecutive_5xx.load(Ordering::Relaxed) != 0 {
                self.consecutive_5xx.store(0, Ordering::Relaxed);
            }
            if self.ejections.load(Ordering::Relaxed) != 0 && !self.is_ejected(now_ms) {
                self.ejections.store(0, Ordering::Relaxed);
            }
        }
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
        let was = health.ready;
        health.observe(result, check.healthy_threshold, check.unhealthy_threshold);
        self.ready.store(health.ready, Ordering::Release);
        was != health.ready
    }
}

/// The instances of one service that are confirmed ready, as one immutable snapshot.
#[derive(Debug, Default)]
pub struct ReadySet {
    /// Ready instances, in a stable order.
    pub instances: Vec<Arc<Instance>>,
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
        }
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

    /// Rebuilds the ready set from the instances' readiness and publishes it.
    pub(crate) fn publish_ready(&self) {
        let instances: Vec<Arc<Instance>> = self
            .all
            .load()
            .iter()
            .filter(|i| i.is_ready())
            .cloned()
            .collect();
        self.ready.store(Arc::new(ReadySet { instances }));
        self.changed.send_modify(|generation| *generation += 1);
    }
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
            let old = previous.and_then(|p| p.service(&service.name));
            let instances = service
                .instances
                .iter()
                .map(|spec| {
                    old.and_then(|o| {
                        o.all()
                            .iter()
                            .find(|i| i.address == spec.address && *i.version == *spec.version)
                            .cloned()
                    })
                    .unwrap_or_else(|| Arc::new(Instance::new(spec.address, &spec.version)))
                })
                .collect();
            let entry = Arc::new(ServiceInstances::new(&service.name, instances));
            if old.is_some() {
                entry.publish_ready();
            }
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

    #[test]
    fn latency_ewma_starts_at_first_sample() {
        let i = instance();
        i.observe_latency(Duration::from_millis(10));
        assert_eq!(i.latency_ewma_us(), 10_000.0);
        i.observe_latency(Duration::from_millis(20));
        assert!((i.latency_ewma_us() - 12_000.0).abs() < 1e-6);
    }
}
