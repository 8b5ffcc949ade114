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
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ahash::AHashMap;
use arc_swap::ArcSwap;
use forecourt_config::ServiceConfig;
use tokio::sync::watch;

mod health_state;
mod instance;
mod ready_set;

pub use health_state::HealthState;
pub use instance::{
    Circuit, Instance, InstanceId, Passive, WarmUp, EJECT_AFTER_5XX, TRIAL_EXPIRY_MS,
};
pub use ready_set::ReadySet;

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

    /// Whether one more of the service's ready instances may be ejected at `now_ms` without
    /// more than `max_percent` of them out at once (one may always be: Envoy's rule).
    pub fn ejection_room(&self, now_ms: u64, max_percent: u8) -> bool {
        let ready = self.ready();
        let total = ready.instances.len();
        let out = ready
            .instances
            .iter()
            .filter(|i| i.ejected_until(now_ms).is_some())
            .count();
        out == 0 || (out + 1) * 100 <= usize::from(max_percent) * total
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
    use forecourt_config::{Ejection, HealthCheck};

    use super::*;

    fn ejection() -> Ejection {
        Ejection {
            base: Duration::from_secs(5),
            max: Duration::from_secs(60),
            max_percent: 50,
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
        i.observe_status(502, 6_100, &ejection(), || true);
        assert_eq!(i.ejected_until(6_100), Some(16_100));
        // Next trial succeeds: closed.
        i.begin_attempt(16_100);
        i.observe_status(200, 16_200, &ejection(), || true);
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
            i.observe_status(503, 0, &ejection(), || true);
        }
        assert!(!i.is_ejected(0));
        i.observe_status(200, 0, &ejection(), || true);
        for _ in 0..EJECT_AFTER_5XX - 1 {
            i.observe_status(500, 0, &ejection(), || true);
        }
        assert!(!i.is_ejected(0), "a success in between resets the count");
        i.observe_status(500, 0, &ejection(), || true);
        assert!(i.is_ejected(0));
    }

    #[test]
    fn a_spared_instance_forgets_its_failures() {
        let i = instance();
        for _ in 0..EJECT_AFTER_5XX - 1 {
            assert_eq!(
                i.observe_status(500, 0, &ejection(), || false),
                Passive::Kept
            );
        }
        assert_eq!(
            i.observe_status(500, 0, &ejection(), || false),
            Passive::Spared
        );
        assert!(!i.is_ejected(0));
        // The count started again: it takes a full run of failures to try once more.
        assert_eq!(
            i.observe_status(500, 0, &ejection(), || true),
            Passive::Kept
        );
    }

    #[test]
    fn at_most_max_percent_of_a_service_is_ejected() {
        let instances: Vec<Arc<Instance>> = (1..=4)
            .map(|port| {
                Arc::new(Instance::new(
                    SocketAddr::from(([127, 0, 0, 1], port)),
                    "stable",
                ))
            })
            .collect();
        for i in &instances {
            i.ready.store(true, std::sync::atomic::Ordering::Release);
        }
        let service = ServiceInstances::new("shop", instances.clone());
        service.publish_ready();
        assert!(service.ejection_room(0, 50));
        instances[0].eject(0, &ejection());
        assert!(service.ejection_room(0, 50), "two of four is 50 %");
        instances[1].eject(0, &ejection());
        assert!(!service.ejection_room(0, 50), "a third would be 75 %");
        // With a 10 % cap one instance may still be ejected, never two.
        let lone = ServiceInstances::new("lone", instances[2..].to_vec());
        lone.publish_ready();
        assert!(lone.ejection_room(0, 10));
        instances[2].eject(0, &ejection());
        assert!(!lone.ejection_room(0, 10));
        // Ejections end: room again.
        assert!(service.ejection_room(60_000, 50));
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
        assert!(a.record_probe(&Ok::<(), String>(()), &check()));
        assert!(b.record_probe(&Ok::<(), String>(()), &check()));
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
        assert!(!removed.record_probe(&Ok::<(), String>(()), &check()));
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
        kept.record_probe(&Ok::<(), String>(()), &check());
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
            instance.record_probe(&Ok::<(), String>(()), &check());
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
