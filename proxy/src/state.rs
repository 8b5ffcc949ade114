//! What the request path reads: one immutable [`Snapshot`] per policy, swapped atomically.

use std::sync::Arc;

use ahash::AHashMap;
use arc_swap::ArcSwap;
use forecourt_config::{Policy, ServiceConfig};
use forecourt_orchestrator::predeploy::VersionBoard;
use forecourt_orchestrator::{
    DecisionCounters, EventBook, Fleet, ForecastBoard, LocalOrchestrator, ScalingBoard,
    ServiceInstances,
};
use forecourt_predictor::{Clock, HotKeys, Predictor, PredictorConfig, WindowConfig};

use crate::admission::{ConcurrencyLimit, InFlightLimit, TenantLimit, TenantLimits, TokenBucket};
use crate::caching::ServiceCache;
use crate::metadata::MetadataRules;
use crate::metrics::{ProxyMetrics, ServiceMetrics};
use crate::routes::RouteTable;
use crate::versions::VersionRuntime;
use crate::warm::WarmMetrics;

/// One service as the request path sees it.
#[derive(Debug)]
pub struct ServiceRuntime {
    /// Its resolved settings.
    pub config: ServiceConfig,
    /// Its instances and confirmed-ready set.
    pub instances: Arc<ServiceInstances>,
    /// Its counters (kept across reloads).
    pub metrics: Arc<ServiceMetrics>,
    /// Its hottest cacheable paths, tracked when it has `cache:` or `warm:` (kept across reloads).
    pub hot_keys: Option<Arc<HotKeys>>,
    /// Its warming counters (kept across reloads).
    pub warm_metrics: Arc<WarmMetrics>,
    /// Its response cache, when it has `cache:` (kept across reloads while `cache:` is unchanged).
    pub cache: Option<Arc<ServiceCache>>,
    /// Its admission limits: its own, and its tenants' by class.
    pub admission: ServiceAdmission,
    /// Its flagged versions (`versions:`), in policy order; empty for most services.
    pub versions: Box<[VersionRuntime]>,
}

/// Slots of a service's per-tenant table: tenants beyond it share one overflow limit.
const TENANT_SLOTS: usize = 1024;

/// A service's admission limits: its own rate and requests in flight, and each tenant's by the
/// tenant's class. Checked on the request path with atomics only.
#[derive(Debug)]
pub struct ServiceAdmission {
    /// The whole service's rate, when it has one.
    pub rate: Option<TokenBucket>,
    /// The whole service's requests in flight, when limited.
    pub concurrency: Option<Arc<ConcurrencyLimit>>,
    /// Each tenant's rate, requests in flight and hold share (kept across reloads).
    pub tenants: Arc<TenantLimits>,
    /// Each tenant class's limit for one tenant, indexed like the metadata's classes.
    pub classes: Vec<TenantLimit>,
}

// === impl ServiceAdmission ===

impl ServiceAdmission {
    /// The limits of `config` under `policy`, reusing the tenant table of `before`.
    fn new(
        config: &ServiceConfig,
        policy: &Policy,
        metadata: &MetadataRules,
        before: Option<&ServiceRuntime>,
    ) -> Self {
        let classes = metadata
            .classes()
            .iter()
            .map(|class| {
                policy
                    .limits
                    .tenant_classes
                    .iter()
                    .find(|(name, _)| name.as_str() == &**class)
                    .map_or(TenantLimit::UNLIMITED, |(_, l)| *l)
            })
            .collect();
        let limits = config.limits;
        Self {
            rate: limits.and_then(|l| Some(TokenBucket::new(l.rate?, l.burst))),
            concurrency: limits
                .and_then(|l| l.concurrency)
                .map(|max| Arc::new(ConcurrencyLimit::new(max))),
            tenants: before
                .map(|s| Arc::clone(&s.admission.tenants))
                .unwrap_or_else(|| Arc::new(TenantLimits::new(TENANT_SLOTS))),
            classes,
        }
    }
}

/// Shape of a service's hot-key tracker: sketch depth and width, and how many keys it ranks.
const HOT_KEYS_SHAPE: (usize, usize, usize) = (4, 4096, 64);

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
        let old: AHashMap<&str, &ServiceRuntime> = previous
            .map(|p| {
                p.services
                    .iter()
                    .map(|s| (s.config.name.as_str(), s))
                    .collect()
            })
            .unwrap_or_default();
        let classes = metadata.classes().len();
        let services = policy
            .services
            .iter()
            .map(|config| {
                let before = old.get(config.name.as_str());
                let tracks_keys = config.cache.is_some() || config.warm.is_some();
                ServiceRuntime {
                    config: config.clone(),
                    instances: fleet.service(&config.name).cloned().unwrap_or_else(|| {
                        Arc::new(ServiceInstances::new(&config.name, Vec::new()))
                    }),
                    metrics: before
                        .map(|s| &s.metrics)
                        .filter(|m| m.classes() == classes)
                        .map(Arc::clone)
                        .unwrap_or_else(|| Arc::new(ServiceMetrics::new(classes))),
                    hot_keys: tracks_keys.then(|| {
                        before.and_then(|s| s.hot_keys.clone()).unwrap_or_else(|| {
                            let (depth, width, top) = HOT_KEYS_SHAPE;
                            Arc::new(HotKeys::new(depth, width, top))
                        })
                    }),
                    warm_metrics: before
                        .map(|s| Arc::clone(&s.warm_metrics))
                        .unwrap_or_default(),
                    admission: ServiceAdmission::new(config, &policy, &metadata, before.copied()),
                    versions: crate::versions::runtimes(config, before.map(|s| &*s.versions)),
                    cache: config.cache.as_ref().map(|wanted| {
                        before
                            .and_then(|s| s.cache.as_ref())
                            .filter(|c| c.config == *wanted)
                            .map(Arc::clone)
                            .unwrap_or_else(|| Arc::new(ServiceCache::new(wanted)))
                    }),
                }
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

/// The window shape every service needs: 1 s buckets covering the longest scaling window.
fn predictor_config(policy: &Policy) -> PredictorConfig {
    let default = PredictorConfig::default();
    let longest = policy
        .services
        .iter()
        .filter_map(|s| s.scaling.as_ref())
        .map(|s| s.stable_window.as_secs().saturating_add(2))
        .max()
        .unwrap_or(0);
    let buckets = usize::try_from(longest)
        .unwrap_or(usize::MAX)
        .max(default.window.buckets);
    PredictorConfig {
        window: WindowConfig {
            buckets,
            ..default.window
        },
        ..default
    }
}

/// The previous snapshot's predictor when the service list and window shape are unchanged
/// (windows and forecasts carry over a reload), else a fresh one.
fn predictor_for(policy: &Policy, previous: Option<&Snapshot>) -> Arc<Predictor> {
    let names = || policy.services.iter().map(|s| s.name.as_str());
    let config = predictor_config(policy);
    if let Some(previous) = previous {
        let old = previous.predictor.services().map(|(_, name, _)| name);
        if old.eq(names()) && *previous.predictor.config() == config {
            return Arc::clone(&previous.predictor);
        }
    }
    // Names are unique and non-empty (the policy is validated); the shape uses 1 s buckets.
    let predictor = Predictor::new(names(), config)
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
    /// Woken when a request is held: the control loop scales from zero without waiting a tick.
    pub scale_signal: tokio::sync::Notify,
    /// Requests admitted and not yet finished, against `limits.max_in_flight`.
    pub in_flight: Arc<InFlightLimit>,
    /// Set once the control loop has stopped the instances it launched (at shutdown).
    pub instances_stopped: std::sync::atomic::AtomicBool,
    /// The `local` orchestrator, once the control loop has started it.
    pub orchestrator: std::sync::OnceLock<Arc<LocalOrchestrator>>,
    /// The Kubernetes backend and this replica's leader election, once connected.
    pub kubernetes: std::sync::OnceLock<(
        forecourt_orchestrator::KubernetesOrchestrator,
        Arc<forecourt_orchestrator::Leadership>,
    )>,
    /// Every scaled service's last decision.
    pub scaling: Arc<ArcSwap<ScalingBoard>>,
    /// Every flagged version's last pre-deploy state.
    pub versions: Arc<ArcSwap<VersionBoard>>,
    /// Scaling decisions counted by reason.
    pub decisions: Arc<DecisionCounters>,
    /// Services a reload removed, kept while their instances drain.
    retired: std::sync::Mutex<Vec<Arc<ServiceInstances>>>,
    /// The policy file, its generation and the last reload's outcome.
    pub config: crate::reload::ConfigState,
}

impl crate::keepalive::HeaderLimits for FrontDoor {
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
            forecasts: Arc::new(ArcSwap::from_pointee(ForecastBoard::default())),
            events: EventBook::default(),
            admin_token: None,
            scale_signal: tokio::sync::Notify::new(),
            in_flight: Arc::new(InFlightLimit::new(max_in_flight)),
            instances_stopped: std::sync::atomic::AtomicBool::new(false),
            orchestrator: std::sync::OnceLock::new(),
            kubernetes: std::sync::OnceLock::new(),
            scaling: Arc::new(ArcSwap::from_pointee(ScalingBoard::default())),
            versions: crate::versions::board(),
            decisions: Arc::new(DecisionCounters::default()),
            retired: std::sync::Mutex::new(Vec::new()),
            config: crate::reload::ConfigState::default(),
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
    pub(crate) fn install(&self, snapshot: Snapshot) {
        self.in_flight.set_max(snapshot.policy.limits.max_in_flight);
        self.snapshot.store(Arc::new(snapshot));
    }

    /// Keeps a removed service's instances reachable while they drain.
    pub(crate) fn retire(&self, service: Arc<ServiceInstances>) {
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
}
