//! The long-lived state of one Forecourt process: the current [`Snapshot`], the control plane
//! it shares with the control loop, process-wide counters and the policy file's state.
//!
//! ```text
//!  policy file ─► FrontDoor::reload ─► Snapshot::new(policy, previous) ─► install (ArcSwap)
//!                                                                          │
//!  request path (Ingress) ── snapshot() ◄──────────────────────────────────┤
//!  admin API ─────────────── snapshot(), control boards ◄──────────────────┤
//!  control loop (orchestrator) ── ControlHost::state() = the snapshot ◄────┘
//! ```

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use forecourt_config::{LoadError, Policy};
use forecourt_orchestrator::{ControlHost, ControlPlane, HostState, ServiceInstances};
use forecourt_predictor::Clock;

use crate::admission::InFlightLimit;
use crate::counters::ProxyMetrics;
use crate::reload::{problems, ConfigState, ReloadOutcome};
use crate::server::keepalive::HeaderLimits;
use crate::snapshot::Snapshot;

/// State shared by the request path, the admin API and the background tasks.
pub struct FrontDoor {
    snapshot: ArcSwap<Snapshot>,
    /// Counters that belong to no service.
    pub metrics: ProxyMetrics,
    /// The proxy's clock (ms), shared with the predictor.
    pub clock: Arc<dyn Clock>,
    /// What the control loop publishes (forecasts, decisions, versions) and reads (events, the
    /// scale signal), and the backends it started.
    pub control: Arc<ControlPlane>,
    /// Bearer token that admin writes (`POST /v1/events`, reloads) must present.
    pub admin_token: Option<String>,
    /// Requests admitted and not yet finished, against `limits.max_in_flight`.
    pub in_flight: Arc<InFlightLimit>,
    /// Services a reload removed, kept while their instances drain.
    retired: Mutex<Vec<Arc<ServiceInstances>>>,
    /// The policy file, its generation and the last reload's outcome.
    pub config: ConfigState,
}

impl std::fmt::Debug for FrontDoor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontDoor").finish_non_exhaustive()
    }
}

// === impl FrontDoor ===

impl FrontDoor {
    /// Front door state for `policy`.
    pub fn new(policy: Policy, clock: Arc<dyn Clock>) -> Self {
        let max_in_flight = policy.limits.max_in_flight;
        Self {
            snapshot: ArcSwap::from_pointee(Snapshot::new(Arc::new(policy), None)),
            metrics: ProxyMetrics::default(),
            clock,
            control: Arc::new(ControlPlane::default()),
            admin_token: None,
            in_flight: Arc::new(InFlightLimit::new(max_in_flight)),
            retired: Mutex::new(Vec::new()),
            config: ConfigState::default(),
        }
    }

    /// Requires `token` for admin writes.
    pub fn with_admin_token(mut self, token: Option<String>) -> Self {
        self.admin_token = token.filter(|t| !t.is_empty());
        self
    }

    /// The current snapshot (one atomic refcount increment).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Installs a new snapshot; requests in flight keep the one they started with.
    fn install(&self, snapshot: Snapshot) {
        self.in_flight.set_max(snapshot.policy.limits.max_in_flight);
        self.snapshot.store(Arc::new(snapshot));
    }

    /// Keeps a removed service's instances reachable while they drain.
    fn retire(&self, service: Arc<ServiceInstances>) {
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        retired.retain(|s| s.all().iter().any(|i| i.in_flight() > 0) && s.name != service.name);
        retired.push(service);
    }

    /// A service a reload removed, by name.
    pub fn retired(&self, name: &str) -> Option<Arc<ServiceInstances>> {
        self.retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .rev()
            .find(|s| &*s.name == name)
            .cloned()
    }

    /// Reads, validates and applies the policy file; `trigger` names what asked for it.
    pub async fn reload(&self, trigger: &str) -> ReloadOutcome {
        let _one_at_a_time = self.config.one_at_a_time().await;
        let Some(path) = self.config.path() else {
            return ReloadOutcome::NoFile;
        };
        let loaded = tokio::task::spawn_blocking(move || Policy::load(&path)).await;
        let result = match loaded {
            Ok(result) => result,
            Err(e) => Err(LoadError::Read {
                path: self.config.path().unwrap_or_default(),
                source: std::io::Error::other(e.to_string()),
            }),
        };
        match result.map_err(problems).and_then(|p| self.apply(p)) {
            Ok(generation) => {
                tracing::info!(trigger, generation, "policy reloaded");
                ReloadOutcome::Applied { generation }
            }
            Err(problems) => {
                for problem in &problems {
                    tracing::error!(trigger, %problem, "policy reload rejected");
                }
                self.config.refused(trigger, &problems);
                ReloadOutcome::Rejected { problems }
            }
        }
    }

    /// Swaps in a validated policy; returns its generation, or why it cannot apply while running.
    pub fn apply(&self, policy: Policy) -> Result<u64, Vec<String>> {
        let old = self.snapshot();
        if policy.listeners != old.policy.listeners {
            let file = self.config.path().unwrap_or_default();
            return Err(vec![format!(
                "{}: listeners: the proxy and admin addresses cannot change while running; restart forecourt (or start the new one with --upgrade)",
                file.display()
            )]);
        }
        // Ask the backends first: a policy they refuse must change nothing at all.
        if let Err(error) = self.control.check_policy(&policy) {
            let file = self.config.path().unwrap_or_default();
            return Err(vec![format!(
                "{}: launch: the local orchestrator refuses the new launch specs: {error}",
                file.display()
            )]);
        }
        let snapshot = Snapshot::new(Arc::new(policy), Some(&old));
        for service in old.fleet.services() {
            if snapshot.fleet.service(&service.name).is_none() {
                let _ = service.retire_all();
                self.retire(Arc::clone(service));
            }
        }
        self.install(snapshot);
        self.control.reconfigure(&self.snapshot().policy);
        Ok(self.config.applied())
    }
}

impl HeaderLimits for FrontDoor {
    fn header_limits(&self) -> (std::time::Duration, usize) {
        let snapshot = self.snapshot.load();
        let limits = &snapshot.policy.limits;
        (limits.header_timeout, limits.max_header_bytes)
    }

    fn header_timed_out(&self) {
        self.metrics
            .header_timeouts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn header_too_large(&self) {
        self.metrics
            .rejected
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl ControlHost for FrontDoor {
    fn state(&self) -> Arc<dyn HostState> {
        self.snapshot()
    }

    fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.snapshot().policy)
    }

    fn instances(&self, service: &str) -> Option<Arc<ServiceInstances>> {
        self.snapshot().fleet.service(service).cloned()
    }

    fn retired(&self, service: &str) -> Option<Arc<ServiceInstances>> {
        FrontDoor::retired(self, service)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use forecourt_orchestrator::{Backends, LocalOrchestrator, NoDrain, Orchestrator};
    use forecourt_predictor::ManualClock;

    fn policy(services: &str) -> Policy {
        let text = format!(
            "listeners: {{ proxy: 127.0.0.1:0, admin: 127.0.0.1:0 }}\nservices:\n{services}"
        );
        Policy::parse(&text, std::path::Path::new("t.yaml")).unwrap()
    }

    #[tokio::test]
    async fn a_policy_the_backends_refuse_changes_nothing() {
        let front_door = FrontDoor::new(
            policy("  - name: shop\n    instances: [{ address: 127.0.0.1:9 }]\n"),
            Arc::new(ManualClock::new(0)),
        );
        // A local backend that is shutting down refuses every new set of launch specs.
        let local = Arc::new(LocalOrchestrator::new(Vec::new(), Arc::new(NoDrain)).unwrap());
        local.shutdown().await;
        let backends: Arc<dyn Orchestrator> = Arc::new(Backends {
            local,
            kubernetes: None,
        });
        assert!(front_door.control.set_orchestrator(backends));
        let before = front_door.snapshot();
        let launched = policy(
            "  - name: shop\n    instances: [{ address: 127.0.0.1:9 }]\n  - name: api\n    launch: { command: [sleep, '{port}'] }\n    scaling: { min_replicas: 0, max_replicas: 1, capacity: { requests_per_second: 50 } }\n",
        );
        let problems = front_door.apply(launched).unwrap_err();
        assert!(problems[0].contains("launch"), "{problems:?}");
        // The running snapshot is the same object: no service added, nothing retired.
        assert!(Arc::ptr_eq(&before, &front_door.snapshot()));
        assert!(front_door.snapshot().fleet.service("api").is_none());
        // The refusal was the backend's: without one the same policy applies.
        let unmanaged = FrontDoor::new(
            policy("  - name: shop\n    instances: [{ address: 127.0.0.1:9 }]\n"),
            Arc::new(ManualClock::new(0)),
        );
        let launched = policy(
            "  - name: shop\n    instances: [{ address: 127.0.0.1:9 }]\n  - name: api\n    launch: { command: [sleep, '{port}'] }\n    scaling: { min_replicas: 0, max_replicas: 1, capacity: { requests_per_second: 50 } }\n",
        );
        assert!(unmanaged.apply(launched).is_ok());
        assert!(unmanaged.snapshot().fleet.service("api").is_some());
    }
}
