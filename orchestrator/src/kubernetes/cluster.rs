//! Forecourt's connection to a cluster: the client, the backend, and this replica's place in the
//! leader election.
//!
//! ```text
//!  $KUBECONFIG / ~/.kube/config / in-cluster service account ─► kube::Client
//!        ├─► KubernetesOrchestrator (scale, endpoints, versions)
//!        │     ▲ hold_scale_downs_with(leadership): no scale-down while a peer's windows are stale
//!        └─► Leadership::run (background) ─► is_leader, peers' windows, stale peers
//! ```

use std::sync::Arc;
use std::time::Duration;

use forecourt_config::Policy;
use forecourt_predictor::Clock;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::leader::{Leadership, LeaseSettings};
use super::{KubernetesOrchestrator, ScaleDownGate};

/// Longest wait at stop for the leader Lease to be released.
const RELEASE_LIMIT: Duration = Duration::from_secs(3);

/// A live connection to the cluster.
#[derive(Debug)]
pub struct Cluster {
    /// The backend for services with `kubernetes:`.
    pub orchestrator: KubernetesOrchestrator,
    /// This replica's view of the election.
    pub leadership: Arc<Leadership>,
    stop: watch::Sender<bool>,
    election: JoinHandle<()>,
}

/// Why Forecourt could not connect to Kubernetes.
#[derive(Debug, thiserror::Error)]
#[error("no usable Kubernetes configuration (KUBECONFIG, ~/.kube/config or the in-cluster service account)")]
pub struct ConnectError(#[source] kube::Error);

impl Cluster {
    /// Connects as the environment says and starts the backend and the election (inside a Tokio
    /// runtime). The identity is `$POD_NAME`, else the host name and process id; the default
    /// namespace `$POD_NAMESPACE`, else the kubeconfig's.
    pub async fn connect(policy: &Policy, clock: Arc<dyn Clock>) -> Result<Self, ConnectError> {
        let client = kube::Client::try_default().await.map_err(ConnectError)?;
        let namespace = std::env::var("POD_NAMESPACE")
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| client.default_namespace().to_owned());
        let orchestrator = KubernetesOrchestrator::new(client.clone(), policy, &namespace);
        let election = &policy.kubernetes.leader_election;
        let settings = LeaseSettings {
            namespace: election
                .namespace
                .clone()
                .or_else(|| policy.kubernetes.namespace.clone())
                .unwrap_or(namespace),
            lease: election.lease.clone(),
            identity: identity(),
            duration: election.duration,
            field_manager: policy.kubernetes.field_manager.clone(),
        };
        tracing::info!(
            identity = %settings.identity,
            lease = %settings.lease,
            namespace = %settings.namespace,
            "joining the leader election"
        );
        let leadership = Leadership::new(settings, clock);
        // The leader holds scale-downs while a peer's windows are stale: its load may be real.
        orchestrator.hold_scale_downs_with(Arc::clone(&leadership) as Arc<dyn ScaleDownGate>);
        let (stop, stopped) = watch::channel(false);
        let election = tokio::spawn(Arc::clone(&leadership).run(client, stopped));
        Ok(Self {
            orchestrator,
            leadership,
            stop,
            election,
        })
    }

    /// Leaves the election (releasing the Lease so another replica takes over at once) and stops
    /// the backend's tasks; Deployments are left as they are.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        let mut election = self.election;
        if tokio::time::timeout(RELEASE_LIMIT, &mut election)
            .await
            .is_err()
        {
            election.abort();
        }
        crate::backend::Orchestrator::shutdown(&self.orchestrator).await;
    }
}

/// This replica's identity in the election: `$POD_NAME`, else `<host name>-<pid>`.
pub fn identity() -> String {
    if let Some(pod) = std::env::var("POD_NAME").ok().filter(|p| !p.is_empty()) {
        return pod;
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "forecourt".to_owned());
    format!("{host}-{}", std::process::id())
}
