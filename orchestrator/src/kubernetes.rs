//! The `kubernetes` orchestrator: scales Deployments through their `scale` subresource, watches
//! EndpointSlices for the instances that exist, pre-deploys flagged versions, and (in
//! [`leader`]) elects the one Forecourt replica that makes the scaling decisions.
//!
//! ```text
//!  control loop ─ set_replicas(service, version, n) ─► ScaleTarget task (one per service/version)
//!     │ n lowers replicas while a peer's windows are   │ GET scale ─ someone else changed it? log, re-plan
//!     │ stale (leader::Leadership::hold_scale_down):   │ PATCH scale {spec.replicas: n} (merge, field manager)
//!     └─► refused, counted, the replicas stay          │ version: GET its Deployment; create it + headless
//!                                                      │   Service when missing; no managed-by label: refuse
//!                                                      │   (no write); PATCH scale with its resourceVersion
//!                                                      └ failure: count, log, retry with back-off
//!  remove_version ─► GET · managed-by label? ─► DELETE (uid precondition) · else leave it, warn, count
//!  EndpointSlice watches (one per Service) ─► endpoints::ServiceEndpoints ─► Update::Reset ─► Fleet
//!                                                                              └─► health checker confirms
//! ```
//!
//! Forecourt scales the stable Deployments the policy names (they are the user's; scaling them is
//! the point), but changes or deletes a version's Deployment and Service only when they carry
//! `app.kubernetes.io/managed-by: forecourt` ([`version::MANAGED_BY_LABEL`]): a user's object that
//! happens to have the same name is read, refused (logged, counted in
//! [`KubernetesStats::refused_writes`]) and left alone.
//!
//! Nothing here is on the request path. When the API server is slow, failing or unreachable,
//! the proxy keeps routing on the last instance list (a watch that restarts relists before it
//! replaces anything), and orders are retried with exponential back-off.

pub mod cluster;
pub mod endpoints;
pub mod leader;
mod names;
mod retry;
pub mod version;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ahash::AHashMap;
use async_trait::async_trait;
use forecourt_config::{KubernetesConfig, Policy, PortSpec, VersionConfig, DEFAULT_VERSION};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::backend::{InstanceInfo, Orchestrator, OrchestratorError, Update};
use endpoints::{ServiceEndpoints, SliceStore};
use retry::{bounded_call, Backoff, CallError, Throttle};

/// Longest wait for one API call before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often each scaled target re-reads its scale to notice changes made by someone else.
const RESYNC: Duration = Duration::from_secs(5);

/// One Forecourt service that runs on Kubernetes, with names resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesService {
    /// The Forecourt service.
    pub name: String,
    /// Namespace of its Deployment and Service.
    pub namespace: String,
    /// The stable Deployment.
    pub deployment: String,
    /// The Service whose EndpointSlices list the stable instances.
    pub endpoints_service: String,
    /// Which EndpointSlice port.
    pub port: Option<PortSpec>,
    /// Versions pre-deployed for flagged traffic.
    pub versions: Vec<VersionConfig>,
}

impl KubernetesService {
    /// Every service of `policy` that runs on Kubernetes; `default_namespace` fills in where
    /// neither the service nor `kubernetes.namespace` names one.
    pub fn from_policy(policy: &Policy, default_namespace: &str) -> Vec<Self> {
        policy
            .services
            .iter()
            .filter_map(|service| {
                let k8s = service.kubernetes.as_ref()?;
                Some(Self {
                    name: service.name.clone(),
                    namespace: k8s
                        .namespace
                        .clone()
                        .or_else(|| policy.kubernetes.namespace.clone())
                        .unwrap_or_else(|| default_namespace.to_owned()),
                    deployment: k8s.deployment.clone(),
                    endpoints_service: k8s.service.clone(),
                    port: k8s.port.clone(),
                    versions: service.versions.clone(),
                })
            })
            .collect()
    }

    fn version(&self, version: &str) -> Option<&VersionConfig> {
        self.versions.iter().find(|v| v.version == version)
    }

    /// What the endpoint watches depend on: a change restarts them.
    fn watch_key(&self) -> (String, String, Option<PortSpec>, Vec<String>) {
        (
            self.namespace.clone(),
            self.endpoints_service.clone(),
            self.port.clone(),
            self.versions.iter().map(|v| v.version.clone()).collect(),
        )
    }
}

/// A Kubernetes API call Forecourt makes, for error counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiCall {
    /// GET of a Deployment's scale.
    ReadScale,
    /// PATCH of a Deployment's scale.
    PatchScale,
    /// Creating a version's Deployment or Service.
    CreateVersion,
    /// Deleting a version's Deployment or Service.
    DeleteVersion,
    /// An EndpointSlice list or watch.
    WatchEndpoints,
}

impl ApiCall {
    /// Every call, in metric order.
    pub const ALL: [ApiCall; 5] = [
        ApiCall::ReadScale,
        ApiCall::PatchScale,
        ApiCall::CreateVersion,
        ApiCall::DeleteVersion,
        ApiCall::WatchEndpoints,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiCall::ReadScale => "read_scale",
            ApiCall::PatchScale => "patch_scale",
            ApiCall::CreateVersion => "create_version",
            ApiCall::DeleteVersion => "delete_version",
            ApiCall::WatchEndpoints => "watch_endpoints",
        }
    }
}

/// Counters of the Kubernetes backend, for `/metrics`.
#[derive(Debug, Default)]
pub struct KubernetesStats {
    errors: [AtomicU64; 5],
    /// Scale patches that succeeded.
    pub scale_patches: AtomicU64,
    /// Replica counts found changed by someone else (a human, another controller).
    pub external_changes: AtomicU64,
    /// Endpoint watches that failed and were restarted.
    pub watch_restarts: AtomicU64,
    /// Endpoint-list changes handed to the proxy.
    pub endpoint_updates: AtomicU64,
    /// Writes refused because the object lacks Forecourt's managed-by label (a same-named object
    /// someone else created): each refused patch or delete attempt.
    pub refused_writes: AtomicU64,
    /// Orders that would have lowered replicas, refused while a peer's windows were stale.
    pub held_scale_downs: AtomicU64,
}

impl KubernetesStats {
    /// Failed calls of one kind.
    pub fn errors(&self, call: ApiCall) -> u64 {
        self.errors[call as usize].load(Ordering::Relaxed)
    }

    fn failed(&self, call: ApiCall) {
        self.errors[call as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// What the control loop wants of one (service, version) and what the API server last said.
#[derive(Debug)]
struct ScaleTarget {
    /// Replicas ordered by the control loop (`None`: nothing to write).
    ordered: watch::Sender<Option<u32>>,
    /// `spec.replicas` as last read or written; `u32::MAX` until known.
    observed: AtomicU32,
    /// Delete the version's objects (and stop).
    remove: watch::Sender<bool>,
    /// The last failure, cleared by a success.
    last_error: Mutex<Option<String>>,
    /// Whether the last order was held as a scale-down (logged once per hold).
    holding: AtomicBool,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl ScaleTarget {
    fn set_error(&self, error: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = error;
    }

    fn error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for ScaleTarget {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}

struct Shared {
    client: kube::Client,
    config: KubernetesConfig,
    default_namespace: String,
    stats: Arc<KubernetesStats>,
    services: Mutex<Vec<KubernetesService>>,
    targets: Mutex<AHashMap<(String, String), Arc<ScaleTarget>>>,
    watches: Mutex<AHashMap<String, (WatchKey, JoinHandle<()>)>>,
    instances: Mutex<AHashMap<String, Vec<InstanceInfo>>>,
    subscribers: Mutex<Vec<UnboundedSender<Update>>>,
    shutdown: watch::Sender<bool>,
    /// Says when orders that lower replicas must wait (the election: a peer's windows are stale).
    gate: OnceLock<Arc<dyn ScaleDownGate>>,
}

/// Says whether orders that would lower replicas must wait, and why.
pub trait ScaleDownGate: Send + Sync + 'static {
    /// `Some(reason)` while scale-downs are held; `None` when they may go ahead.
    fn hold_scale_down(&self) -> Option<String>;
}

impl ScaleDownGate for leader::Leadership {
    fn hold_scale_down(&self) -> Option<String> {
        leader::Leadership::hold_scale_down(self)
    }
}

/// Why an order of `wanted` replicas must wait: it lowers `current` (the replicas read, else
/// ordered; unknown: nothing to lower) while `gate` holds scale-downs. Raising is never held.
fn scale_down_hold(
    gate: Option<&dyn ScaleDownGate>,
    current: Option<u32>,
    wanted: u32,
) -> Option<String> {
    let current = current?;
    if wanted >= current {
        return None;
    }
    gate?.hold_scale_down()
}

type WatchKey = (String, String, Option<PortSpec>, Vec<String>);

/// Orders capacity from Kubernetes and reports the instances its EndpointSlices list.
#[derive(Clone)]
pub struct KubernetesOrchestrator {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for KubernetesOrchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesOrchestrator")
            .field("services", &self.services())
            .finish_non_exhaustive()
    }
}

impl KubernetesOrchestrator {
    /// A backend for the services of `policy` that run on Kubernetes, talking through `client`;
    /// starts their endpoint watches (call inside a Tokio runtime). `default_namespace` is used
    /// where neither a service nor `kubernetes.namespace` names one.
    pub fn new(client: kube::Client, policy: &Policy, default_namespace: &str) -> Self {
        let config = policy.kubernetes.clone();
        let services = KubernetesService::from_policy(policy, default_namespace);
        let (shutdown, _) = watch::channel(false);
        let orchestrator = Self {
            shared: Arc::new(Shared {
                client,
                config,
                default_namespace: default_namespace.to_owned(),
                stats: Arc::new(KubernetesStats::default()),
                services: Mutex::new(Vec::new()),
                targets: Mutex::new(AHashMap::new()),
                watches: Mutex::new(AHashMap::new()),
                instances: Mutex::new(AHashMap::new()),
                subscribers: Mutex::new(Vec::new()),
                shutdown,
                gate: OnceLock::new(),
            }),
        };
        orchestrator.configure(services);
        orchestrator
    }

    /// From now on, orders that would lower replicas are refused while `gate` holds scale-downs
    /// (the leader election, while a peer's windows are stale); set once, later calls are ignored.
    pub fn hold_scale_downs_with(&self, gate: Arc<dyn ScaleDownGate>) {
        let _ = self.shared.gate.set(gate);
    }

    /// The backend's counters.
    pub fn stats(&self) -> Arc<KubernetesStats> {
        Arc::clone(&self.shared.stats)
    }

    /// The names of the services it manages.
    pub fn services(&self) -> Vec<String> {
        lock(&self.shared.services)
            .iter()
            .map(|s| s.name.clone())
            .collect()
    }

    /// Whether `service` runs on Kubernetes.
    pub fn manages(&self, service: &str) -> bool {
        lock(&self.shared.services)
            .iter()
            .any(|s| s.name == service)
    }

    /// Applies a reloaded policy: watches restart only where what they watch changed; targets
    /// of services or versions that are gone stop (their Deployments are left as they are).
    /// The top-level `kubernetes:` settings are read at start only.
    pub fn reconfigure(&self, policy: &Policy) {
        if policy.kubernetes != self.shared.config {
            tracing::warn!(
                "changes to the top-level kubernetes: settings take effect at the next start"
            );
        }
        self.configure(KubernetesService::from_policy(
            policy,
            &self.shared.default_namespace,
        ));
    }

    /// The namespace used where neither a service nor `kubernetes.namespace` names one.
    pub fn default_namespace(&self) -> &str {
        &self.shared.default_namespace
    }

    fn configure(&self, services: Vec<KubernetesService>) {
        {
            let mut watches = lock(&self.shared.watches);
            watches.retain(|name, (key, task)| {
                let keep = services
                    .iter()
                    .any(|s| s.name == *name && s.watch_key() == *key);
                if !keep {
                    task.abort();
                }
                keep
            });
            for service in &services {
                if !watches.contains_key(&service.name) {
                    let task = tokio::spawn(watch_endpoints(
                        Arc::downgrade(&self.shared),
                        service.clone(),
                    ));
                    watches.insert(service.name.clone(), (service.watch_key(), task));
                }
            }
        }
        lock(&self.shared.targets).retain(|(service, version), _| {
            services.iter().any(|s| {
                s.name == *service && (version == DEFAULT_VERSION || s.version(version).is_some())
            })
        });
        lock(&self.shared.instances).retain(|name, _| services.iter().any(|s| s.name == *name));
        *lock(&self.shared.services) = services;
    }

    fn service(&self, name: &str) -> Option<KubernetesService> {
        lock(&self.shared.services)
            .iter()
            .find(|s| s.name == name)
            .cloned()
    }

    /// The scale target of `service`'s `version`, started on first use.
    fn service_target(
        &self,
        service: &str,
        version: &str,
    ) -> Result<Arc<ScaleTarget>, OrchestratorError> {
        // Called several times a tick: an existing target needs no copy of the service.
        let key = (service.to_owned(), version.to_owned());
        if let Some(target) = lock(&self.shared.targets).get(&key) {
            return Ok(Arc::clone(target));
        }
        let config = self
            .service(service)
            .ok_or_else(|| OrchestratorError::UnknownService {
                service: service.to_owned(),
            })?;
        self.target(&config, version)
    }

    fn target(
        &self,
        service: &KubernetesService,
        version: &str,
    ) -> Result<Arc<ScaleTarget>, OrchestratorError> {
        if *self.shared.shutdown.borrow() {
            return Err(OrchestratorError::ShuttingDown);
        }
        let versioned = if version == DEFAULT_VERSION {
            None
        } else {
            Some(service.version(version).cloned().ok_or_else(|| {
                OrchestratorError::InvalidSpec {
                    service: service.name.clone(),
                    reason: format!("no version {version:?} in its versions:"),
                }
            })?)
        };
        let mut targets = lock(&self.shared.targets);
        let key = (service.name.clone(), version.to_owned());
        if let Some(target) = targets.get(&key) {
            return Ok(Arc::clone(target));
        }
        let target = Arc::new(ScaleTarget {
            ordered: watch::channel(None).0,
            observed: AtomicU32::new(u32::MAX),
            remove: watch::channel(false).0,
            last_error: Mutex::new(None),
            holding: AtomicBool::new(false),
            task: Mutex::new(None),
        });
        let task = tokio::spawn(run_target(
            Arc::downgrade(&self.shared),
            Arc::downgrade(&target),
            service.clone(),
            versioned,
        ));
        *lock(&target.task) = Some(task);
        targets.insert(key, Arc::clone(&target));
        Ok(target)
    }

    /// `spec.replicas` of `service`'s `version` as last read, once read. The first call starts
    /// reading it (every few seconds), so every replica knows the count before it leads.
    fn observed(&self, service: &str, version: &str) -> Option<u32> {
        let target = self.service_target(service, version).ok()?;
        match target.observed.load(Ordering::Acquire) {
            u32::MAX => None,
            observed => Some(observed),
        }
    }

    fn broadcast(shared: &Shared, update: &Update) {
        lock(&shared.subscribers).retain(|s| s.send(update.clone()).is_ok());
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl Orchestrator for KubernetesOrchestrator {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    async fn set_replicas(
        &self,
        service: &str,
        version: &str,
        replicas: u32,
    ) -> Result<(), OrchestratorError> {
        let target = self.service_target(service, version)?;
        let observed = match target.observed.load(Ordering::Acquire) {
            u32::MAX => None,
            observed => Some(observed),
        };
        let current = observed.or(*target.ordered.borrow());
        let gate = self.shared.gate.get().map(|gate| gate.as_ref());
        if let Some(reason) = scale_down_hold(gate, current, replicas) {
            self.shared
                .stats
                .held_scale_downs
                .fetch_add(1, Ordering::Relaxed);
            if !target.holding.swap(true, Ordering::AcqRel) {
                tracing::warn!(service, version, from = current, to = replicas, %reason, "holding a scale-down");
            }
            // A lower order not written yet waits as well: keep what is there.
            if let Some(observed) = observed {
                target.ordered.send_if_modified(|ordered| match *ordered {
                    Some(pending) if pending < observed => {
                        *ordered = Some(observed);
                        true
                    }
                    _ => false,
                });
            }
            return Err(OrchestratorError::ScaleDownHeld {
                service: service.to_owned(),
                reason,
            });
        }
        if target.holding.swap(false, Ordering::AcqRel) {
            tracing::info!(
                service,
                version,
                to = replicas,
                "scale-downs are no longer held"
            );
        }
        target.ordered.send_if_modified(|ordered| {
            let changed = *ordered != Some(replicas);
            *ordered = Some(replicas);
            changed
        });
        match target.error() {
            Some(reason) => Err(OrchestratorError::Api {
                service: service.to_owned(),
                reason,
            }),
            None => Ok(()),
        }
    }

    fn replicas(&self, service: &str, version: &str) -> u32 {
        self.observed(service, version)
            .or_else(|| {
                let targets = lock(&self.shared.targets);
                let ordered = targets
                    .get(&(service.to_owned(), version.to_owned()))
                    .and_then(|target| *target.ordered.borrow());
                ordered
            })
            .unwrap_or(0)
    }

    fn replicas_known(&self, service: &str, version: &str) -> bool {
        self.observed(service, version).is_some()
    }

    async fn remove_version(&self, service: &str, version: &str) -> Result<(), OrchestratorError> {
        if version == DEFAULT_VERSION {
            return Ok(());
        }
        let target = self.service_target(service, version)?;
        target.remove.send_replace(true);
        Ok(())
    }

    fn updates(&self) -> UnboundedReceiver<Update> {
        let (tx, rx) = unbounded_channel();
        let mut subscribers = lock(&self.shared.subscribers);
        for (service, instances) in lock(&self.shared.instances).iter() {
            let _ = tx.send(Update::Reset {
                service: service.clone(),
                instances: instances.clone(),
            });
        }
        if !*self.shared.shutdown.borrow() {
            subscribers.push(tx);
        }
        rx
    }

    async fn shutdown(&self) {
        // Deployments keep running when Forecourt stops: only its own tasks end.
        self.shared.shutdown.send_replace(true);
        for (_, (_, task)) in lock(&self.shared.watches).drain() {
            task.abort();
        }
        lock(&self.shared.targets).clear();
        lock(&self.shared.subscribers).clear();
    }
}

/// Watches the EndpointSlices of a service's stable Service and of each version's Service, and
/// publishes the instance list whenever it changes.
async fn watch_endpoints(shared: std::sync::Weak<Shared>, service: KubernetesService) {
    let Some(strong) = shared.upgrade() else {
        return;
    };
    let api: Api<EndpointSlice> = Api::namespaced(strong.client.clone(), &service.namespace);
    drop(strong);
    let mut watched = vec![service.endpoints_service.clone()];
    watched.extend(
        service
            .versions
            .iter()
            .map(|v| version::version_object_name(&service.endpoints_service, &v.version)),
    );
    let streams = watched.iter().enumerate().map(|(index, name)| {
        let config =
            watcher::Config::default().labels(&format!("kubernetes.io/service-name={name}"));
        watcher::watcher(api.clone(), config)
            .default_backoff()
            .map(move |event| (index, event))
            .boxed()
    });
    let mut events = futures::stream::select_all(streams);
    let mut known = ServiceEndpoints::default();
    for v in &service.versions {
        known.versions.insert(v.version.clone(), None);
    }
    let mut pending: Vec<Option<SliceStore>> = vec![None; watched.len()];
    let mut throttle = Throttle::default();
    let mut last: Option<Vec<InstanceInfo>> = None;
    while let Some((index, event)) = events.next().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let store = match index {
            0 => &mut known.stable,
            i => match service.versions.get(i - 1) {
                Some(v) => known.versions.entry(v.version.clone()).or_default(),
                None => continue,
            },
        };
        match event {
            Ok(Event::Init) => pending[index] = Some(SliceStore::default()),
            Ok(Event::InitApply(slice)) => {
                pending[index]
                    .get_or_insert_with(SliceStore::default)
                    .apply(&slice, service.port.as_ref());
            }
            Ok(Event::InitDone) => {
                *store = Some(pending[index].take().unwrap_or_default());
                let failures = throttle.succeeded();
                if failures > 0 {
                    tracing::info!(service = %service.name, failures, "endpoint watch is back");
                }
            }
            Ok(Event::Apply(slice)) => store
                .get_or_insert_with(SliceStore::default)
                .apply(&slice, service.port.as_ref()),
            Ok(Event::Delete(slice)) => {
                if let Some(store) = store {
                    store.delete(&slice);
                }
            }
            Err(error) => {
                shared.stats.failed(ApiCall::WatchEndpoints);
                shared.stats.watch_restarts.fetch_add(1, Ordering::Relaxed);
                let (log, failures) = throttle.failed(&error.to_string());
                if log {
                    tracing::warn!(
                        service = %service.name,
                        endpoints = %watched[index],
                        %error,
                        failures,
                        "endpoint watch failed; routing continues on the last known instances while it retries"
                    );
                }
                continue;
            }
        }
        let Some(instances) = known.instances(DEFAULT_VERSION) else {
            continue;
        };
        if last.as_ref() == Some(&instances) {
            continue;
        }
        tracing::info!(
            service = %service.name,
            instances = instances.len(),
            "endpoints changed"
        );
        last = Some(instances.clone());
        shared
            .stats
            .endpoint_updates
            .fetch_add(1, Ordering::Relaxed);
        lock(&shared.instances).insert(service.name.clone(), instances.clone());
        KubernetesOrchestrator::broadcast(
            &shared,
            &Update::Reset {
                service: service.name.clone(),
                instances,
            },
        );
    }
}

/// Why one step of a scale target failed.
struct StepError {
    /// The API call that failed; `None` when Forecourt refused to change an object it did not
    /// create (no call was made).
    call: Option<ApiCall>,
    /// What went wrong, in words.
    message: String,
}

impl StepError {
    /// A refusal to change `kind` `name`, which lacks [`version::MANAGED_BY_LABEL`].
    fn refused(kind: &str, name: &str) -> Self {
        Self {
            call: None,
            message: format!(
                "{kind} {name} exists without the label {}={}: Forecourt did not create it and \
                 will not change it (rename that object or the version)",
                version::MANAGED_BY_LABEL,
                version::MANAGED_BY
            ),
        }
    }
}

fn step_error(call: ApiCall) -> impl Fn(CallError) -> StepError {
    move |failure| StepError {
        call: Some(call),
        message: failure.to_string(),
    }
}

/// Runs one API call, bounded by [`CALL_TIMEOUT`].
async fn call<T>(
    future: impl std::future::Future<Output = kube::Result<T>>,
) -> Result<T, CallError> {
    bounded_call(CALL_TIMEOUT, future).await
}

/// `Some(object)`, `None` on 404, or the failure.
async fn get_opt<K>(api: &Api<K>, name: &str) -> Result<Option<K>, CallError>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    call(api.get_opt(name)).await
}

/// Creates `object`; one that already exists is fine.
async fn create<K>(api: &Api<K>, object: &K) -> Result<(), CallError>
where
    K: Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match call(api.create(&PostParams::default(), object)).await {
        Err(CallError::Conflict(_)) => Ok(()),
        other => other.map(drop),
    }
}

/// Deletes the `kind` `name` when it carries [`version::MANAGED_BY_LABEL`], with its uid as
/// precondition (so a same-named successor created meanwhile is not deleted); one already gone
/// is fine; one without the label is left alone, logged and counted.
async fn delete_managed<K>(
    api: &Api<K>,
    kind: &str,
    name: &str,
    service: &KubernetesService,
    stats: &KubernetesStats,
) -> Result<(), CallError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(found) = get_opt(api, name).await? else {
        return Ok(());
    };
    if !version::is_managed(found.meta()) {
        stats.refused_writes.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            service = %service.name,
            kind,
            name,
            "not deleting an object without the label {}={}: Forecourt did not create it",
            version::MANAGED_BY_LABEL,
            version::MANAGED_BY
        );
        return Ok(());
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: None,
            uid: found.meta().uid.clone(),
        }),
        ..DeleteParams::background()
    };
    match call(api.delete(name, &params)).await {
        Err(CallError::NotFound) => Ok(()),
        other => other.map(drop),
    }
}

/// The task behind one (service, version): reads and patches its scale, creating or removing a
/// version's objects first, until the target is dropped.
async fn run_target(
    shared: std::sync::Weak<Shared>,
    target: std::sync::Weak<ScaleTarget>,
    service: KubernetesService,
    version: Option<VersionConfig>,
) {
    let (mut ordered, mut remove, mut shutdown, client, config, stats) = {
        let (Some(shared), Some(target)) = (shared.upgrade(), target.upgrade()) else {
            return;
        };
        (
            target.ordered.subscribe(),
            target.remove.subscribe(),
            shared.shutdown.subscribe(),
            shared.client.clone(),
            shared.config.clone(),
            Arc::clone(&shared.stats),
        )
    };
    drop(shared);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &service.namespace);
    let services: Api<Service> = Api::namespaced(client, &service.namespace);
    let name = match &version {
        Some(v) => version::version_object_name(&service.deployment, &v.version),
        None => service.deployment.clone(),
    };
    let version_name = version.as_ref().map_or(DEFAULT_VERSION, |v| &v.version);
    let params = PatchParams {
        field_manager: Some(config.field_manager.clone()),
        ..PatchParams::default()
    };
    let mut backoff = Backoff::new(config.retry_base, config.retry_max);
    let mut throttle = Throttle::default();
    let mut last_written: Option<u32> = None;
    let mut retry_in: Option<Duration> = None;
    let mut first = true;
    loop {
        if !first {
            let wait = retry_in.unwrap_or(RESYNC);
            tokio::select! {
                changed = ordered.changed() => if changed.is_err() { return },
                changed = remove.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
        first = false;
        let Some(target) = target.upgrade() else {
            return;
        };
        let wanted = *ordered.borrow_and_update();
        let removing = *remove.borrow_and_update();
        let result = if removing {
            remove_version(&deployments, &services, &service, version_name, &stats).await
        } else {
            step(
                &deployments,
                &services,
                &service,
                version.as_ref(),
                &name,
                wanted,
                &params,
                &mut last_written,
                &target,
                &stats,
            )
            .await
        };
        match result {
            Ok(()) => {
                let failures = throttle.succeeded();
                if failures > 0 {
                    tracing::info!(service = %service.name, version = version_name, failures, "Kubernetes API calls succeed again");
                }
                backoff.reset();
                retry_in = None;
                target.set_error(None);
                if removing {
                    tracing::info!(service = %service.name, version = version_name, deployment = %name, "version removed");
                    target.observed.store(0, Ordering::Release);
                    return;
                }
            }
            Err(error) => {
                let what = match error.call {
                    Some(call) => {
                        stats.failed(call);
                        call.as_str()
                    }
                    None => {
                        stats.refused_writes.fetch_add(1, Ordering::Relaxed);
                        "refused"
                    }
                };
                let wait = backoff.next();
                retry_in = Some(wait);
                let (log, failures) = throttle.failed(&error.message);
                if log && error.call.is_none() {
                    tracing::warn!(
                        service = %service.name,
                        version = version_name,
                        deployment = %name,
                        error = %error.message,
                        retry_in = ?wait,
                        refusals = failures,
                        "not changing an object Forecourt did not create; checking again later"
                    );
                } else if log {
                    tracing::warn!(
                        service = %service.name,
                        version = version_name,
                        deployment = %name,
                        call = what,
                        error = %error.message,
                        retry_in = ?wait,
                        failures,
                        "Kubernetes API call failed; retrying"
                    );
                }
                target.set_error(Some(format!("{what}: {}", error.message)));
            }
        }
    }
}

/// Read-check-patch attempts of a version's scale when its Deployment changes in between (409).
const PATCH_ATTEMPTS: u32 = 3;

/// One pass for a target: read the replicas, notice outside changes, create a version's objects
/// when it is wanted and missing, and patch `spec.replicas` when it differs from the order.
///
/// The stable Deployment is the user's and scaling it is the point; a version's Deployment is
/// read whole first and changed only when it carries [`version::MANAGED_BY_LABEL`], and its scale
/// patch names the resourceVersion read, so the object checked is the object patched.
#[allow(clippy::too_many_arguments)]
async fn step(
    deployments: &Api<Deployment>,
    services: &Api<Service>,
    service: &KubernetesService,
    version: Option<&VersionConfig>,
    name: &str,
    wanted: Option<u32>,
    params: &PatchParams,
    last_written: &mut Option<u32>,
    target: &ScaleTarget,
    stats: &KubernetesStats,
) -> Result<(), StepError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let read = match version {
            None => read_scale(deployments, name).await?,
            Some(version) => {
                let read = read_version(
                    deployments,
                    services,
                    service,
                    version,
                    name,
                    wanted,
                    last_written,
                    target,
                )
                .await?;
                match read {
                    Some(read) => read,
                    None => return Ok(()),
                }
            }
        };
        let current = read.current;
        target.observed.store(current, Ordering::Release);
        if let Some(ours) = *last_written {
            if current != ours {
                stats.external_changes.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    service = %service.name,
                    deployment = %name,
                    ours,
                    now = current,
                    "replicas were changed outside Forecourt; re-planning from the new value"
                );
                *last_written = None;
                // Every pending order was planned from the old value: drop it. The control loop
                // orders afresh from the new value (`replicas()` reports it now) at its next tick.
                target.ordered.send_replace(None);
                return Ok(());
            }
        }
        let Some(wanted) = *target.ordered.borrow() else {
            return Ok(());
        };
        if wanted == current {
            *last_written = Some(current);
            return Ok(());
        }
        let mut patch = serde_json::json!({ "spec": { "replicas": wanted } });
        if let Some(resource_version) = &read.resource_version {
            patch["metadata"] = serde_json::json!({ "resourceVersion": resource_version });
        }
        let scale = match call(deployments.patch_scale(name, params, &Patch::Merge(&patch))).await {
            Ok(scale) => scale,
            // Changed since it was read: read (and check) it again.
            Err(CallError::Conflict(_))
                if read.resource_version.is_some() && attempt < PATCH_ATTEMPTS =>
            {
                continue
            }
            Err(error) => return Err(step_error(ApiCall::PatchScale)(error)),
        };
        let now = scale
            .spec
            .and_then(|s| s.replicas)
            .and_then(|r| u32::try_from(r).ok())
            .unwrap_or(wanted);
        stats.scale_patches.fetch_add(1, Ordering::Relaxed);
        tracing::info!(service = %service.name, deployment = %name, from = current, to = now, "scaled");
        *last_written = Some(now);
        target.observed.store(now, Ordering::Release);
        return Ok(());
    }
}

/// A target's `spec.replicas` as read, and (for a version) the resourceVersion it was read at.
struct ScaleRead {
    /// `spec.replicas`.
    current: u32,
    /// The Deployment's resourceVersion: the precondition of the patch that follows.
    resource_version: Option<String>,
}

/// Reads the stable Deployment's `scale` subresource.
async fn read_scale(deployments: &Api<Deployment>, name: &str) -> Result<ScaleRead, StepError> {
    let scale = call(deployments.get_scale(name))
        .await
        .map_err(step_error(ApiCall::ReadScale))?;
    Ok(ScaleRead {
        current: scale
            .spec
            .and_then(|s| s.replicas)
            .and_then(|r| u32::try_from(r).ok())
            .unwrap_or(0),
        resource_version: None,
    })
}

/// Reads a version's Deployment. Missing: created (with its Service) when replicas are wanted,
/// and `None` (nothing more this pass). Present without the managed-by label: refused. Else its
/// replicas, after making sure its Service exists when replicas are wanted.
#[allow(clippy::too_many_arguments)]
async fn read_version(
    deployments: &Api<Deployment>,
    services: &Api<Service>,
    service: &KubernetesService,
    version: &VersionConfig,
    name: &str,
    wanted: Option<u32>,
    last_written: &mut Option<u32>,
    target: &ScaleTarget,
) -> Result<Option<ScaleRead>, StepError> {
    let found = get_opt(deployments, name)
        .await
        .map_err(step_error(ApiCall::ReadScale))?;
    let Some(deployment) = found else {
        target.observed.store(0, Ordering::Release);
        let Some(replicas) = wanted.filter(|n| *n > 0) else {
            return Ok(None);
        };
        create_version(deployments, services, service, version, replicas).await?;
        *last_written = Some(replicas);
        target.observed.store(replicas, Ordering::Release);
        return Ok(None);
    };
    if !version::is_managed(&deployment.metadata) {
        return Err(StepError::refused("Deployment", name));
    }
    if wanted.unwrap_or(0) > 0 {
        ensure_version_service(services, service, version, &deployment).await?;
    }
    Ok(Some(ScaleRead {
        current: deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .and_then(|r| u32::try_from(r).ok())
            .unwrap_or(0),
        resource_version: deployment.metadata.resource_version.clone(),
    }))
}

/// Creates a version's Deployment (from the stable one) and its headless Service. A Deployment
/// of that name created meanwhile is used only when it carries the managed-by label.
async fn create_version(
    deployments: &Api<Deployment>,
    services: &Api<Service>,
    service: &KubernetesService,
    version: &VersionConfig,
    replicas: u32,
) -> Result<(), StepError> {
    let failed = step_error(ApiCall::CreateVersion);
    let stable = call(deployments.get(&service.deployment))
        .await
        .map_err(&failed)?;
    let derived =
        version::derive_deployment(&stable, version, replicas).map_err(|e| StepError {
            call: Some(ApiCall::CreateVersion),
            message: format!("deployment {}: {e}", service.deployment),
        })?;
    let name = derived.metadata.name.clone().unwrap_or_default();
    let deployment = match call(deployments.create(&PostParams::default(), &derived)).await {
        Ok(created) => {
            tracing::info!(service = %service.name, version = %version.version, deployment = %name, replicas, "version deployed");
            created
        }
        // Created meanwhile: by another Forecourt (fine), or by someone else (not ours to use).
        Err(CallError::Conflict(_)) => {
            let existing = call(deployments.get(&name)).await.map_err(&failed)?;
            if !version::is_managed(&existing.metadata) {
                return Err(StepError::refused("Deployment", &name));
            }
            existing
        }
        Err(error) => return Err(failed(error)),
    };
    ensure_version_service(services, service, version, &deployment).await
}

/// Creates the version's headless Service, selecting `deployment`'s pods, when it is missing;
/// refuses when a Service of that name exists without the managed-by label (its endpoints are
/// not the version's).
async fn ensure_version_service(
    services: &Api<Service>,
    service: &KubernetesService,
    version: &VersionConfig,
    deployment: &Deployment,
) -> Result<(), StepError> {
    let failed = step_error(ApiCall::CreateVersion);
    let name = version::version_object_name(&service.endpoints_service, &version.version);
    match get_opt(services, &name).await.map_err(&failed)? {
        Some(existing) if version::is_managed(&existing.metadata) => return Ok(()),
        Some(_) => return Err(StepError::refused("Service", &name)),
        None => {}
    }
    let stable_service = call(services.get(&service.endpoints_service))
        .await
        .map_err(&failed)?;
    create(
        services,
        &version::derive_service(&stable_service, deployment, version),
    )
    .await
    .map_err(&failed)
}

/// Deletes a version's Deployment and Service, each only when it carries the managed-by label
/// (a user's object of the same name is left alone, logged and counted).
async fn remove_version(
    deployments: &Api<Deployment>,
    services: &Api<Service>,
    service: &KubernetesService,
    version: &str,
    stats: &KubernetesStats,
) -> Result<(), StepError> {
    let failed = step_error(ApiCall::DeleteVersion);
    let deployment = version::version_object_name(&service.deployment, version);
    delete_managed(deployments, "Deployment", &deployment, service, stats)
        .await
        .map_err(&failed)?;
    let headless = version::version_object_name(&service.endpoints_service, version);
    delete_managed(services, "Service", &headless, service, stats)
        .await
        .map_err(&failed)
}
