//! The control plane inside the proxy process: the `local` orchestrator, the feed of instances it
//! starts and stops, draining, and the control loop (forecast tick, then scaling).
//!
//! ```text
//!  every second (+20 ms)  ─► ForecastLoop::tick ─┐
//!  a request was held     ─────────────────────── ┴► Autoscaler::tick ─► LocalOrchestrator::set_replicas
//!                                                                             │ spawn / drain + stop
//!  Fleet (ServiceInstances) ◄── apply Update::{Reset, Add, Remove} ◄──────────┘
//!        └─► health checker confirms ready ─► ready set ─► request path
//! ```

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use forecourt_config::launch::FORECOURT_PLACEHOLDER;
use forecourt_config::Policy;
use forecourt_orchestrator::kubernetes::leader::ReplicaWindows;
use forecourt_orchestrator::{
    Autoscaler, Backends, Cluster, Drain, ForecastLoop, LocalOrchestrator, LocalService,
    Orchestrator, OrchestratorError, PeerLoad, ServiceView, Update,
};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::state::FrontDoor;

/// How long after a second boundary the loop ticks, so that second is closed for every worker.
const TICK_OFFSET_MS: u64 = 20;
/// Longest wait for launched instances to drain and stop when Forecourt exits.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(20);

/// The launch specs of every launched service of `policy`, with `{forecourt}` replaced by the
/// running binary.
pub fn local_services(policy: &Policy) -> Vec<LocalService> {
    let exe = std::env::current_exe()
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| "forecourt".to_owned());
    let fill = |text: &str| text.replace(FORECOURT_PLACEHOLDER, &exe);
    policy
        .services
        .iter()
        .filter_map(|service| {
            let launch = service.launch.as_ref()?;
            let mut local = LocalService::new(
                service.name.clone(),
                launch.command.iter().map(|a| fill(a)).collect(),
            );
            local.env = launch
                .env
                .iter()
                .map(|(k, v)| (k.clone(), fill(v)))
                .collect();
            local.version_commands = service
                .versions
                .iter()
                .filter_map(|v| {
                    let command = v.command.as_ref()?;
                    Some((v.version.clone(), command.iter().map(|a| fill(a)).collect()))
                })
                .collect();
            local.working_dir = launch.directory.as_deref().map(Path::to_path_buf);
            local.drain_timeout = launch.drain_timeout;
            local.stop_grace = launch.stop_grace;
            Some(local)
        })
        .collect()
}

/// What the local orchestrator waits on before stopping an instance: the proxy's own in-flight
/// count of it.
struct FleetDrain(Weak<FrontDoor>);

#[async_trait]
impl Drain for FleetDrain {
    async fn drained(&self, service: &str, address: std::net::SocketAddr, timeout: Duration) {
        let Some(front_door) = self.0.upgrade() else {
            return;
        };
        let instances = front_door
            .snapshot()
            .fleet
            .service(service)
            .cloned()
            .or_else(|| front_door.retired(service));
        drop(front_door);
        if let Some(instances) = instances {
            instances.drain(address, timeout).await;
        }
    }
}

/// Creates the local orchestrator for the front door's policy and keeps it in the front door.
pub fn start_orchestrator(
    front_door: &Arc<FrontDoor>,
) -> Result<Arc<LocalOrchestrator>, OrchestratorError> {
    let services = local_services(&front_door.snapshot().policy);
    let drain = Arc::new(FleetDrain(Arc::downgrade(front_door)));
    let local = Arc::new(LocalOrchestrator::new(services, drain)?);
    // A second call keeps the first orchestrator (there is one per process).
    let _ = front_door.orchestrator.set(Arc::clone(&local));
    Ok(front_door.orchestrator.get().cloned().unwrap_or(local))
}

/// Applies one instance change to the current fleet.
pub fn apply_update(front_door: &FrontDoor, update: Update) {
    let snapshot = front_door.snapshot();
    let Some(service) = snapshot.fleet.service(update.service()) else {
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

async fn follow_updates(front_door: Arc<FrontDoor>, mut updates: UnboundedReceiver<Update>) {
    while let Some(update) = updates.recv().await {
        apply_update(&front_door, update);
    }
}

/// Connects to Kubernetes when the policy has services there; `None` (logged) when it has none
/// or no configuration is found.
async fn connect_cluster(front_door: &Arc<FrontDoor>) -> Option<Cluster> {
    let policy = front_door.snapshot().policy.clone();
    if !policy.services.iter().any(|s| s.kubernetes.is_some()) {
        return None;
    }
    match Cluster::connect(&policy, front_door.clock.clone()).await {
        Ok(cluster) => {
            let _ = front_door.kubernetes.set((
                cluster.orchestrator.clone(),
                Arc::clone(&cluster.leadership),
            ));
            Some(cluster)
        }
        Err(error) => {
            tracing::error!(%error, "services on Kubernetes get no instances");
            None
        }
    }
}

/// The control loop as a Pingora background service.
pub struct ControlLoop(pub Arc<FrontDoor>);

#[async_trait]
impl BackgroundService for ControlLoop {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let front_door = &self.0;
        let local = match start_orchestrator(front_door) {
            Ok(local) => local,
            Err(error) => {
                tracing::error!(%error, "the local orchestrator cannot start; nothing will be scaled");
                return;
            }
        };
        let cluster = connect_cluster(front_door).await;
        let backends = Arc::new(Backends {
            local: local.clone(),
            kubernetes: cluster.as_ref().map(|c| c.orchestrator.clone()),
        });
        let feed = tokio::spawn(follow_updates(front_door.clone(), backends.updates()));
        let snapshot = front_door.snapshot();
        let mut forecasts = ForecastLoop::new(
            snapshot.predictor.clone(),
            &snapshot.policy.forecast,
            front_door.forecasts.clone(),
        );
        drop(snapshot);
        // Pre-deployed versions for feature-flagged traffic (versions.rs).
        let mut predeploy = crate::versions::VersionControl::new(backends.clone(), front_door);
        let mut autoscaler = Autoscaler::new(
            backends.clone(),
            front_door.scaling.clone(),
            front_door.decisions.clone(),
        );
        loop {
            let now = front_door.clock.now_ms();
            let wait = 1_000 - now % 1_000 + TICK_OFFSET_MS;
            let second_closed = tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(wait)) => true,
                () = front_door.scale_signal.notified() => false,
                _ = shutdown.changed() => break,
            };
            let snapshot = front_door.snapshot();
            let now = front_door.clock.now_ms();
            if second_closed {
                forecasts.tick(
                    &snapshot.predictor,
                    &snapshot.policy.forecast,
                    &front_door.events,
                    now,
                );
            }
            // On Kubernetes only the leader orders capacity, from every replica's load.
            let leadership = cluster.as_ref().map(|c| &c.leadership);
            let leading = leadership.is_none_or(|l| l.is_leader());
            let peers = leadership.map(|l| l.peers()).unwrap_or_default();
            let views: Vec<ServiceView<'_>> = snapshot
                .services
                .iter()
                .map(|s| ServiceView {
                    config: &s.config,
                    instances: &s.instances,
                    held: u32::try_from(
                        s.metrics
                            .held_now
                            .load(std::sync::atomic::Ordering::Relaxed),
                    )
                    .unwrap_or(u32::MAX),
                    mean_latency_secs: 0.0,
                    peers: PeerLoad::sum(&peers, &s.config.name),
                    may_order: leading || s.config.kubernetes.is_none(),
                })
                .collect();
            autoscaler
                .tick(&views, forecasts.predictor(), forecasts.engine_ref(), now)
                .await;
            // Pre-deployed versions (versions.rs).
            predeploy.tick(&snapshot, now, leading, &peers).await;
            if let Some(leadership) = leadership {
                let mut services = autoscaler.local_windows();
                crate::versions::publish_flagged(&snapshot, &mut services);
                leadership.publish(ReplicaWindows {
                    identity: leadership.settings().identity.clone(),
                    at_unix_ms: crate::reload::unix_ms(),
                    services,
                });
            }
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
        self.0
            .instances_stopped
            .store(true, std::sync::atomic::Ordering::Release);
        feed.abort();
    }
}
