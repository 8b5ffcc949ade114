//! # The control loop
//!
//! ```text
//!  every second (+20 ms) ─┐                      ┌─► forecast step ─► ForecastBoard
//!  a request was held ────┴─► ControlLoop::tick ─┼─► scaling step ──► Orchestrator::set_replicas
//!                              (HostState: the    │                    ScalingBoard
//!                               host's snapshot)  ├─► pre-deploy ─────► flagged versions, VersionBoard
//!                                                 └─► peer windows ───► this replica's Lease (leader sums)
//!
//!  run(): backends start ─► Update feed ─► host's Fleet ─► health checker ─► ready set
//!         shutdown ─► launched instances drained and stopped
//! ```
//!
//! The loop is the same code in production and under replay: [`run`] drives it on the proxy's
//! clock against the front door (a [`ControlHost`]); `forecourt replay` calls
//! [`ControlLoop::tick`] once a virtual second against a simulated fleet. Everything it
//! publishes goes to a [`ControlPlane`], which the host shares with its admin API.

pub mod forecast_step;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use forecourt_config::{ForecastConfig, Policy, ServiceConfig, VersionConfig};
use forecourt_predictor::{unix_now_ms, Clock, Predictor};
use tokio::sync::{watch, Notify};

use crate::backend::combined::Backends;
use crate::backend::local::{local_services, LocalOrchestrator};
use crate::backend::{Drain, Orchestrator, Update};
use crate::fleet::ServiceInstances;
use crate::kubernetes::cluster::Cluster;
use crate::kubernetes::leader::{FlaggedVersion, Leadership, ReplicaWindows, ServiceWindows};
use crate::kubernetes::KubernetesOrchestrator;
use crate::predeploy::{PreDeployer, VersionBoard, VersionInput};
use crate::scale::autoscaler::{Autoscaler, DecisionCounters, PeerLoad, ScalingBoard, ServiceView};
use forecast_step::{EventBook, ForecastBoard, ForecastLoop};

/// How long after a second boundary the loop ticks, so that second is closed for every worker.
const TICK_OFFSET_MS: u64 = 20;
/// Longest wait for launched instances to drain and stop when Forecourt exits.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(20);
/// The nice value of the thread a production tick forecasts on: when the CPU is short, the
/// proxy's workers (nice 0) run first and the forecast takes longer, instead of requests
/// waiting behind a forecast (a tick of 1,000 modelled services is 25–50 ms of one core).
pub const FORECAST_NICE: i32 = 10;

/// One flagged version of a service as its host saw it.
#[derive(Debug, Clone, Copy)]
pub struct VersionSighting<'a> {
    /// The version's policy entry.
    pub config: &'a VersionConfig,
    /// When a request with its flag was last seen here (host clock ms); `None` when never.
    pub last_seen_ms: Option<u64>,
}

/// One service as its host reports it at a tick.
#[derive(Debug, Clone)]
pub struct HostService<'a> {
    /// Its settings.
    pub config: &'a ServiceConfig,
    /// Unflagged instances confirmed ready.
    pub ready: u32,
    /// Requests held now waiting for a ready instance.
    pub held: u32,
    /// Mean request latency in seconds (0 when unknown).
    pub mean_latency_secs: f64,
    /// Requests that have waited for capacity since the host started (cumulative).
    pub waited: u64,
    /// Its flagged versions (empty for most services).
    pub versions: Vec<VersionSighting<'a>>,
}

/// What the loop reads from its host at one tick: an immutable view (the proxy's snapshot).
pub trait HostState: Send + Sync {
    /// Every service's sliding windows, as the request path records them.
    fn predictor(&self) -> &Arc<Predictor>;
    /// The policy's forecast settings (horizons, scheduled events).
    fn forecast_config(&self) -> &ForecastConfig;
    /// Every service, in policy order.
    fn services(&self) -> Vec<HostService<'_>>;
}

/// The process that hosts the control loop in production (the proxy's front door).
pub trait ControlHost: Send + Sync + 'static {
    /// What the loop reads now: the host's current snapshot.
    fn state(&self) -> Arc<dyn HostState>;
    /// The running policy (launch specs and Kubernetes settings at start).
    fn policy(&self) -> Arc<Policy>;
    /// The instances of `service` in the current fleet.
    fn instances(&self, service: &str) -> Option<Arc<ServiceInstances>>;
    /// The instances of `service` when a reload removed it and they still drain.
    fn retired(&self, service: &str) -> Option<Arc<ServiceInstances>>;
}

/// What the control loop shares with the rest of the process: the boards it publishes, the
/// events and the signal it reads, and the backends it orders through once started.
#[derive(Default)]
pub struct ControlPlane {
    /// What the forecast step last published about load and forecasts.
    pub forecasts: Arc<ArcSwap<ForecastBoard>>,
    /// Every scaled service's last decision.
    pub scaling: Arc<ArcSwap<ScalingBoard>>,
    /// Every flagged version's last pre-deploy state.
    pub versions: Arc<ArcSwap<VersionBoard>>,
    /// Scaling decisions counted by reason.
    pub decisions: Arc<DecisionCounters>,
    /// Events posted through the admin API.
    pub events: EventBook,
    /// Woken when a request is held: the loop scales from zero without waiting a tick.
    pub scale_signal: Notify,
    /// Set once the loop has stopped the instances it launched (at shutdown).
    pub instances_stopped: AtomicBool,
    /// How long each tick took (forecast, scale, pre-deploy), for `/metrics`.
    pub tick_times: TickTimes,
    orchestrator: OnceLock<Arc<dyn Orchestrator>>,
    kubernetes: OnceLock<(KubernetesOrchestrator, Arc<Leadership>)>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("orchestrator", &self.orchestrator.get().map(|o| o.kind()))
            .field("kubernetes", &self.kubernetes.get().is_some())
            .finish_non_exhaustive()
    }
}

/// Upper bounds (seconds) of the [`TickTimes`] buckets.
pub const TICK_TIME_BOUNDS_S: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A histogram of control-loop tick durations (atomic counters; recorded once a tick).
#[derive(Debug, Default)]
pub struct TickTimes {
    /// Ticks at or below each bound of [`TICK_TIME_BOUNDS_S`] (not cumulative).
    buckets: [AtomicU64; TICK_TIME_BOUNDS_S.len()],
    /// Ticks above the last bound.
    over: AtomicU64,
    sum_us: AtomicU64,
}

impl TickTimes {
    /// Records one tick's duration.
    pub fn record(&self, took: Duration) {
        let secs = took.as_secs_f64();
        match TICK_TIME_BOUNDS_S.iter().position(|&b| secs <= b) {
            Some(i) => self.buckets[i].fetch_add(1, Ordering::Relaxed),
            None => self.over.fetch_add(1, Ordering::Relaxed),
        };
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Cumulative counts at each bound of [`TICK_TIME_BOUNDS_S`], the total count and the sum
    /// in seconds (a Prometheus histogram).
    pub fn cumulative(&self) -> ([u64; TICK_TIME_BOUNDS_S.len()], u64, f64) {
        let mut counts = [0; TICK_TIME_BOUNDS_S.len()];
        let mut total = 0;
        for (count, bucket) in counts.iter_mut().zip(&self.buckets) {
            total += bucket.load(Ordering::Relaxed);
            *count = total;
        }
        total += self.over.load(Ordering::Relaxed);
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        (counts, total, sum)
    }
}

// === impl ControlPlane ===

impl ControlPlane {
    /// The backends, once the loop has started them.
    pub fn orchestrator(&self) -> Option<&Arc<dyn Orchestrator>> {
        self.orchestrator.get()
    }

    /// Sets the backends the loop orders through (once; `false` when they were already set).
    /// [`run`] does it; hosts that run their own backends (tests, embedders) may too.
    pub fn set_orchestrator(&self, orchestrator: Arc<dyn Orchestrator>) -> bool {
        self.orchestrator.set(orchestrator).is_ok()
    }

    /// The Kubernetes backend and this replica's election, once connected.
    pub fn kubernetes(&self) -> Option<&(KubernetesOrchestrator, Arc<Leadership>)> {
        self.kubernetes.get()
    }

    /// Whether the running backends would take `policy` (its launch specs), without changing
    /// anything: a reload asks before it installs, so a refused policy changes nothing.
    pub fn check_policy(&self, policy: &Policy) -> Result<(), crate::OrchestratorError> {
        match self.orchestrator.get() {
            Some(orchestrator) => orchestrator.check_policy(policy),
            None => Ok(()),
        }
    }

    /// Hands a newly applied policy (after [`Self::check_policy`]) to the running backends
    /// (launch specs, Kubernetes targets); a backend that refuses it keeps its old settings.
    pub fn reconfigure(&self, policy: &Policy) {
        if let Some(orchestrator) = self.orchestrator.get() {
            if let Err(error) = orchestrator.reconfigure(policy) {
                tracing::error!(%error, "the local orchestrator refused the new launch specs");
            }
        }
        if self.kubernetes.get().is_none() && policy.services.iter().any(|s| s.kubernetes.is_some())
        {
            tracing::warn!("services with kubernetes: need a restart when the policy Forecourt started with had none");
        }
    }
}

/// The loop's memory between ticks: the forecast, scaling and pre-deploy steps.
pub struct ControlLoop {
    plane: Arc<ControlPlane>,
    forecasts: ForecastLoop,
    autoscaler: Autoscaler,
    predeploy: PreDeployer,
    leadership: Option<Arc<Leadership>>,
    /// With a value, each forecast runs on a thread of its own at this nice value.
    forecast_nice: Option<i32>,
}

impl std::fmt::Debug for ControlLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlLoop")
            .field("forecasts", &self.forecasts)
            .field("autoscaler", &self.autoscaler)
            .finish_non_exhaustive()
    }
}

/// Runs `work` to completion on a new thread at `nice` and returns when it has; on the calling
/// thread when no thread can be started. A panic in `work` is raised again here.
fn at_nice(nice: i32, work: impl FnOnce() + Send) {
    let mut work = Some(work);
    std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("forecourt-forecast".to_owned())
            .spawn_scoped(scope, || {
                lower_this_thread(nice);
                if let Some(work) = work.take() {
                    work();
                }
            });
        match spawned {
            Ok(thread) => {
                if let Err(panic) = thread.join() {
                    std::panic::resume_unwind(panic);
                }
            }
            Err(error) => {
                tracing::warn!(%error, "no thread for the forecast; it runs on the loop's");
            }
        }
    });
    if let Some(work) = work.take() {
        work();
    }
}

/// Sets the calling thread's nice value (Linux: nice is per thread). A failure is harmless:
/// the thread keeps the process's priority.
#[allow(unsafe_code)]
fn lower_this_thread(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid(2) and setpriority(2) take no pointers and touch no memory of ours;
        // PRIO_PROCESS with a thread id changes that thread only.
        let changed = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
        };
        if changed != 0 {
            tracing::debug!(nice, "the forecast thread keeps the process's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

// === impl ControlLoop ===

impl ControlLoop {
    /// A loop ordering through `orchestrator` and publishing to `plane`; with `leadership`, only
    /// the leader orders capacity on Kubernetes, from every replica's load.
    pub fn new(
        orchestrator: Arc<dyn Orchestrator>,
        plane: Arc<ControlPlane>,
        state: &dyn HostState,
        leadership: Option<Arc<Leadership>>,
    ) -> Self {
        Self {
            forecasts: ForecastLoop::new(
                Arc::clone(state.predictor()),
                state.forecast_config(),
                Arc::clone(&plane.forecasts),
            ),
            autoscaler: Autoscaler::new(
                Arc::clone(&orchestrator),
                Arc::clone(&plane.scaling),
                Arc::clone(&plane.decisions),
            ),
            predeploy: PreDeployer::new(orchestrator, Arc::clone(&plane.versions)),
            leadership,
            plane,
            forecast_nice: None,
        }
    }

    /// Runs each forecast on a thread of its own at `nice` (Linux; elsewhere on the loop's
    /// thread, as without it), while the loop's thread waits for it: the same forecast, the
    /// same state, but the OS schedules the proxy's request threads ahead of it. Not the whole
    /// loop: instances it launches would inherit the lower priority.
    pub fn with_forecast_nice(mut self, nice: i32) -> Self {
        self.forecast_nice = Some(nice);
        self
    }

    /// One tick at `now_ms` (host clock): forecast when a second has closed, then scale,
    /// pre-deploy flagged versions and publish this replica's windows.
    pub async fn tick(&mut self, state: &dyn HostState, now_ms: u64, second_closed: bool) {
        if second_closed {
            let forecasts = &mut self.forecasts;
            let (predictor, config, events) = (
                state.predictor(),
                state.forecast_config(),
                &self.plane.events,
            );
            let mut forecast = move || forecasts.tick(predictor, config, events, now_ms);
            match self.forecast_nice {
                Some(nice) => at_nice(nice, forecast),
                None => forecast(),
            }
        }
        let leading = self.leadership.as_ref().is_none_or(|l| l.is_leader());
        let peers = self
            .leadership
            .as_ref()
            .map(|l| l.peers())
            .unwrap_or_default();
        let services = state.services();
        // With one replica there are no peers: no map to build (and seed) every tick.
        let peer_loads = (!peers.is_empty()).then(|| PeerLoad::by_service(&peers));
        let views: Vec<ServiceView<'_>> = services
            .iter()
            .map(|s| ServiceView {
                config: s.config,
                ready: s.ready,
                held: s.held,
                mean_latency_secs: s.mean_latency_secs,
                waited: s.waited,
                peers: peer_loads
                    .as_ref()
                    .and_then(|loads| loads.get(s.config.name.as_str()).copied())
                    .unwrap_or_default(),
                may_order: leading || s.config.kubernetes.is_none(),
            })
            .collect();
        self.autoscaler
            .tick(
                &views,
                self.forecasts.predictor(),
                self.forecasts.engine_ref(),
                now_ms,
            )
            .await;
        self.pre_deploy(&services, &peers, now_ms, leading).await;
        if let Some(leadership) = &self.leadership {
            let mut windows = self.autoscaler.local_windows();
            add_flagged(&services, &mut windows);
            leadership.publish(ReplicaWindows {
                identity: leadership.settings().identity.clone(),
                at_unix_ms: unix_now_ms(),
                services: windows,
            });
        }
    }

    /// Stops publishing the forecast, scaling and version boards, for a host with no admin API
    /// to read them (replay): decisions never read them, so they are the same; a tick does less.
    pub fn without_boards(mut self) -> Self {
        self.forecasts = self.forecasts.without_board();
        self.autoscaler = self.autoscaler.without_board();
        self.predeploy = self.predeploy.without_board();
        self
    }

    /// Whether `service` is at rest: its forecast is the idle one (no ensemble, no event, no
    /// load; [`ForecastEngine::is_idle`]) and its last scaling decision a fixed point of no
    /// traffic ([`crate::scale::autoscaler::ServiceScaler::at_rest`]). Until its next arrival
    /// every tick decides the same, so a replay may skip them.
    pub fn at_rest(&self, service: &str, now_ms: u64) -> bool {
        let predictor = self.forecasts.predictor();
        self.autoscaler.at_rest(service)
            && predictor
                .service_id(service)
                .is_some_and(|id| self.forecasts.engine_ref().is_idle(predictor, id, now_ms))
    }

    /// When an idle `service`'s daily profile may next give a forecast at some horizon up to
    /// `lookahead_secs` ([`forecourt_predictor::ForecastEngine::next_wake_sec`]).
    pub fn next_wake_sec(&self, service: &str, lookahead_secs: u64) -> Option<u64> {
        let id = self.forecasts.predictor().service_id(service)?;
        self.forecasts
            .engine_ref()
            .next_wake_sec(id, lookahead_secs)
    }

    /// The upper forecast the scaling step last used for `service`, if it forecasts.
    pub fn last_forecast(&self, service: &str) -> Option<f64> {
        self.autoscaler.last_forecast(service)
    }

    /// The headroom controller's state for `service`, when it declares an `slo`.
    pub fn headroom(&self, service: &str) -> Option<crate::scale::headroom::HeadroomState> {
        self.autoscaler.headroom(service)
    }

    /// One pre-deploy pass over the flagged versions of every scaled service (launched or on
    /// Kubernetes; a fixed instance list is never scaled). Without the lead nothing is ordered
    /// on Kubernetes; launched services are this Forecourt's own. A flag seen by another
    /// replica (`peers`) counts as seen here.
    async fn pre_deploy(
        &mut self,
        services: &[HostService<'_>],
        peers: &[ReplicaWindows],
        now_ms: u64,
        leading: bool,
    ) {
        let peer_seen = |service: &str, version: &str| {
            peers
                .iter()
                .flat_map(|p| p.services.iter().filter(|s| s.service == service))
                .flat_map(|s| s.flagged.iter().filter(|f| f.version == version))
                .map(|f| f.last_seen_unix_ms)
                .max()
        };
        let inputs: Vec<VersionInput<'_>> = services
            .iter()
            .filter(|s| s.config.launch.is_some() || s.config.kubernetes.is_some())
            .flat_map(|s| {
                s.versions.iter().map(|v| VersionInput {
                    service: &s.config.name,
                    config: v.config,
                    last_seen_ms: v
                        .last_seen_ms
                        .max(peer_seen(&s.config.name, &v.config.version)),
                    forecast: None,
                    per_replica: s.config.kubernetes.is_none(),
                })
            })
            .collect();
        self.predeploy.tick(&inputs, now_ms, leading).await;
    }
}

/// Adds each flagged version's last sighting on this replica to the windows it publishes for the
/// leader (the proxy's clock is aligned to UNIX time).
fn add_flagged(services: &[HostService<'_>], windows: &mut Vec<ServiceWindows>) {
    for service in services.iter().filter(|s| !s.versions.is_empty()) {
        let flagged: Vec<FlaggedVersion> = service
            .versions
            .iter()
            .filter_map(|v| {
                Some(FlaggedVersion {
                    version: v.config.version.clone(),
                    last_seen_unix_ms: v.last_seen_ms?,
                })
            })
            .collect();
        if flagged.is_empty() {
            continue;
        }
        match windows
            .iter_mut()
            .find(|w| w.service == service.config.name)
        {
            Some(window) => window.flagged = flagged,
            None => windows.push(ServiceWindows {
                service: service.config.name.clone(),
                flagged,
                ..ServiceWindows::default()
            }),
        }
    }
}

// === running in production ===

/// What the local orchestrator waits on before stopping an instance: the proxy's own in-flight
/// count of it.
struct HostDrain(Weak<dyn ControlHost>);

#[async_trait]
impl Drain for HostDrain {
    async fn drained(&self, service: &str, address: SocketAddr, timeout: Duration) {
        let Some(host) = self.0.upgrade() else {
            return;
        };
        let instances = host.instances(service).or_else(|| host.retired(service));
        drop(host);
        if let Some(instances) = instances {
            instances.drain(address, timeout).await;
        }
    }
}

/// Applies one instance change to the host's current fleet.
pub fn apply_update(host: &dyn ControlHost, update: Update) {
    let Some(service) = host.instances(update.service()) else {
        return;
    };
    match update {
        Update::Reset { instances, .. } => {
            let list: Vec<_> = instances
                .into_iter()
                .map(|i| (i.address, i.version))
                .collect();
            let _ = service.reset(&list);
        }
        Update::Add { instance, .. } => {
            tracing::debug!(service = %service.name, address = %instance.address, "instance started");
            let _ = service.add(instance.address, &instance.version);
        }
        Update::Remove { address, .. } => {
            let _ = service.remove(address);
        }
    }
}

/// Connects to Kubernetes when the policy has services there; `None` (logged) when it has none
/// or no configuration is found.
async fn connect_cluster(policy: &Policy, clock: Arc<dyn Clock>) -> Option<Cluster> {
    if !policy.services.iter().any(|s| s.kubernetes.is_some()) {
        return None;
    }
    match Cluster::connect(policy, clock).await {
        Ok(cluster) => Some(cluster),
        Err(error) => {
            tracing::error!(%error, "services on Kubernetes get no instances");
            None
        }
    }
}

/// Runs the control loop until `shutdown` turns true: starts the backends for `host`'s policy,
/// follows their instance changes into the host's fleet, ticks once a second on `clock` (and at
/// once on [`ControlPlane::scale_signal`]), then stops the instances it launched.
pub async fn run(
    host: Arc<dyn ControlHost>,
    plane: Arc<ControlPlane>,
    clock: Arc<dyn Clock>,
    mut shutdown: watch::Receiver<bool>,
) {
    let policy = host.policy();
    let drain: Arc<dyn crate::backend::Drain> = Arc::new(HostDrain(Arc::downgrade(&host)));
    // A backend that cannot start must not take the loop down with it: forecasts, Kubernetes
    // and a later reload with valid launch specs still work.
    let local = match LocalOrchestrator::new(local_services(&policy), Arc::clone(&drain)) {
        Ok(local) => Arc::new(local),
        Err(error) => {
            tracing::error!(%error, "the local orchestrator refused the launch specs; no local service is launched until a reload fixes them");
            match LocalOrchestrator::new(Vec::new(), drain) {
                Ok(local) => Arc::new(local),
                Err(error) => {
                    tracing::error!(%error, "the local orchestrator cannot start");
                    plane.instances_stopped.store(true, Ordering::Release);
                    return;
                }
            }
        }
    };
    let cluster = connect_cluster(&policy, Arc::clone(&clock)).await;
    if let Some(cluster) = &cluster {
        let _ = plane.kubernetes.set((
            cluster.orchestrator.clone(),
            Arc::clone(&cluster.leadership),
        ));
    }
    let backends: Arc<dyn Orchestrator> = Arc::new(Backends {
        local: Arc::clone(&local),
        kubernetes: cluster.as_ref().map(|c| c.orchestrator.clone()),
    });
    // One loop per process: a second start keeps the first backends.
    let _ = plane.set_orchestrator(Arc::clone(&backends));
    let mut updates = backends.updates();
    let feed = tokio::spawn({
        let host = Arc::clone(&host);
        async move {
            while let Some(update) = updates.recv().await {
                apply_update(host.as_ref(), update);
            }
        }
    });
    let mut control = ControlLoop::new(
        backends,
        Arc::clone(&plane),
        host.state().as_ref(),
        cluster.as_ref().map(|c| Arc::clone(&c.leadership)),
    )
    .with_forecast_nice(FORECAST_NICE);
    loop {
        let now = clock.now_ms();
        let wait = 1_000 - now % 1_000 + TICK_OFFSET_MS;
        let second_closed = tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(wait)) => true,
            () = plane.scale_signal.notified() => false,
            _ = shutdown.changed() => break,
        };
        let state = host.state();
        let started = std::time::Instant::now();
        control
            .tick(state.as_ref(), clock.now_ms(), second_closed)
            .await;
        plane.tick_times.record(started.elapsed());
    }
    if let Some(cluster) = cluster {
        cluster.stop().await;
    }
    tracing::info!("stopping launched instances");
    if tokio::time::timeout(SHUTDOWN_LIMIT, local.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("launched instances did not stop in time; they are killed on exit");
    }
    plane.instances_stopped.store(true, Ordering::Release);
    feed.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This thread's nice value, from /proc (field 19 of its stat line).
    #[cfg(target_os = "linux")]
    fn own_nice() -> i64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
        // The command name may hold spaces: count fields after its closing parenthesis.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        after
            .split_whitespace()
            .nth(16)
            .and_then(|n| n.parse().ok())
            .unwrap_or(i64::MIN)
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_forecast_at_nice_runs_on_a_lower_priority_thread_and_returns_its_work() {
        let before = own_nice();
        let mut seen = None;
        let mut state = vec![1, 2];
        at_nice(FORECAST_NICE, || {
            state.push(3);
            seen = Some((own_nice(), std::thread::current().name().map(str::to_owned)));
        });
        assert_eq!(state, [1, 2, 3], "the work ran, on the caller's state");
        let (nice, name) = seen.unwrap_or_default();
        // Raising one's own nice value needs no privilege; a thread already nicer stays.
        assert_eq!(nice, i64::from(FORECAST_NICE).max(before));
        assert_eq!(name.as_deref(), Some("forecourt-forecast"));
        assert_eq!(
            own_nice(),
            before,
            "the loop's own thread keeps its priority"
        );
    }

    #[test]
    fn a_panicking_forecast_panics_in_the_loop() {
        let caught = std::panic::catch_unwind(|| at_nice(FORECAST_NICE, || panic!("forecast")));
        assert!(caught.is_err());
    }

    #[test]
    fn tick_times_are_a_cumulative_histogram() {
        let times = TickTimes::default();
        for ms in [0, 3, 3, 40, 5_000] {
            times.record(Duration::from_millis(ms));
        }
        let (counts, total, sum) = times.cumulative();
        assert_eq!(total, 5);
        assert_eq!(counts[0], 1, "0 ms is at or below 0.5 ms");
        assert_eq!(counts[3], 3, "3 ms is at or below 5 ms");
        assert_eq!(counts[6], 4, "40 ms is at or below 50 ms");
        assert_eq!(
            counts[TICK_TIME_BOUNDS_S.len() - 1],
            4,
            "5 s is above every bound"
        );
        assert!((sum - 5.046).abs() < 1e-9, "{sum}");
    }
}
