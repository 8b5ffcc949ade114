//! What the request path reads: one immutable [`Snapshot`] per policy, swapped atomically.

use std::sync::Arc;

use ahash::AHashMap;
use arc_swap::ArcSwap;
use forecourt_config::{Policy, ServiceConfig};
use forecourt_orchestrator::{EventBook, Fleet, ForecastBoard, ServiceInstances};
use forecourt_predictor::{Clock, Predictor, PredictorConfig};

use crate::metadata::MetadataRules;
use crate::metrics::{ProxyMetrics, ServiceMetrics};
use crate::routes::RouteTable;

/// One service as the request path sees it.
#[derive(Debug)]
pub struct ServiceRuntime {
    /// Its resolved settings.
    pub config: ServiceConfig,
    /// Its instances and confirmed-ready set.
    pub instances: Arc<ServiceInstances>,
    /// Its counters (kept across reloads).
    pub metrics: Arc<ServiceMetrics>,
}

/// Everything compiled from one policy. In-flight requests keep the snapshot they started on.
#[derive(Debug)]
pub struct Snapshot {
    /// The policy it was built from.
    pub policy: Arc<Policy>,
    /// Request → service.
    pub routes: RouteTable,
    /// Tenant and feature flag extraction.
    pub metadata: MetadataRules,
    /// Services, indexed like `policy.services`.
    pub services: Vec<ServiceRuntime>,
    /// The instances of every service.
    pub fleet: Arc<Fleet>,
    /// Every service's sliding windows; `ServiceId(i)` is `services[i]`.
    pub predictor: Arc<Predictor>,
}

// === impl Snapshot ===

impl Snapshot {
    /// Compiles `policy`, reusing live instance state and counters from `previous`.
    pub fn new(policy: Arc<Policy>, previous: Option<&Snapshot>) -> Self {
        let fleet = Arc::new(Fleet::new(
            &policy.services,
            previous.map(|p| p.fleet.as_ref()),
        ));
        let metadata = MetadataRules::new(&policy.metadata);
        let old_metrics: AHashMap<&str, &Arc<ServiceMetrics>> = previous
            .map(|p| {
                p.services
                    .iter()
                    .map(|s| (s.config.name.as_str(), &s.metrics))
                    .collect()
            })
            .unwrap_or_default();
        let classes = metadata.classes().len();
        let services = policy
            .services
            .iter()
            .map(|config| ServiceRuntime {
                config: config.clone(),
                instances: fleet
                    .service(&config.name)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(ServiceInstances::new(&config.name, Vec::new()))),
                metrics: old_metrics
                    .get(config.name.as_str())
                    .filter(|m| m.classes() == classes)
                    .map(|m| Arc::clone(m))
                    .unwrap_or_else(|| Arc::new(ServiceMetrics::new(classes))),
            })
            .collect();
        Self {
            routes: RouteTable::new(&policy),
            metadata,
            services,
            fleet,
            predictor: predictor_for(&policy, previous),
            policy,
        }
    }

    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceRuntime> {
        self.services.iter().find(|s| s.config.name == name)
    }
}

/// The previous snapshot's predictor when the service list is unchanged (windows and forecasts
/// carry over a reload), else a fresh one.
fn predictor_for(policy: &Policy, previous: Option<&Snapshot>) -> Arc<Predictor> {
    let names = || policy.services.iter().map(|s| s.name.as_str());
    if let Some(previous) = previous {
        let old = previous.predictor.services().map(|(_, name, _)| name);
        if old.eq(names()) {
            return Arc::clone(&previous.predictor);
        }
    }
    // Names are unique and non-empty (the policy is validated) and the shape is the default.
    let predictor = Predictor::new(names(), PredictorConfig::default())
        .or_else(|_| Predictor::new(Vec::<String>::new(), PredictorConfig::default()));
    match predictor {
        Ok(p) => Arc::new(p),
        Err(error) => unreachable!("the default predictor shape is valid: {error}"),
    }
}

/// State shared by the request path, the admin API and the background tasks.
pub struct FrontDoor {
    snapshot: ArcSwap<Snapshot>,
    /// Counters that belong to no service.
    pub metrics: ProxyMetrics,
    /// The proxy's clock (ms), shared with the predictor.
    pub clock: Arc<dyn Clock>,
    /// What the control loop last published about load and forecasts.
    pub forecasts: Arc<ArcSwap<ForecastBoard>>,
    /// Events posted through the admin API.
    pub events: EventBook,
    /// Bearer token that admin writes (`POST /v1/events`, reloads) must present.
    pub admin_token: Option<String>,
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
        Self {
            snapshot: ArcSwap::from_pointee(Snapshot::new(Arc::new(policy), None)),
            metrics: ProxyMetrics::default(),
            clock,
            forecasts: Arc::new(ArcSwap::from_pointee(ForecastBoard::default())),
            events: EventBook::default(),
            admin_token: None,
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
}
