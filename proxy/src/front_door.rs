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
