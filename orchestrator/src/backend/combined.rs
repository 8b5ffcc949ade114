//! The local and Kubernetes backends behind one [`Orchestrator`], chosen per service.
//!
//! ```text
//!  control loop ─ set_replicas(shop, …) ─► Backends ─┬─► KubernetesOrchestrator (services with kubernetes:)
//!                                                    └─► LocalOrchestrator      (services with launch:)
//!  Fleet ◄── one merged feed of Update ◄─────────────┘
//! ```

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::backend::local::{local_services, LocalOrchestrator};
use crate::backend::{Orchestrator, OrchestratorError, Update};
use crate::kubernetes::KubernetesOrchestrator;

/// Every backend of one Forecourt process: local processes, and Kubernetes when configured.
#[derive(Debug, Clone)]
pub struct Backends {
    /// Services with `launch:`.
    pub local: Arc<LocalOrchestrator>,
    /// Services with `kubernetes:`, when the policy has any and a client could be made.
    pub kubernetes: Option<KubernetesOrchestrator>,
}

impl Backends {
    fn backend(&self, service: &str) -> &dyn Orchestrator {
        match &self.kubernetes {
            Some(kubernetes) if kubernetes.manages(service) => kubernetes,
            _ => self.local.as_ref(),
        }
    }
}

#[async_trait]
impl Orchestrator for Backends {
    fn kind(&self) -> &'static str {
        if self.kubernetes.is_some() {
            "local+kubernetes"
        } else {
            "local"
        }
    }

    async fn set_replicas(
        &self,
        service: &str,
        version: &str,
        replicas: u32,
    ) -> Result<(), OrchestratorError> {
        self.backend(service)
            .set_replicas(service, version, replicas)
            .await
    }

    fn replicas(&self, service: &str, version: &str) -> u32 {
        self.backend(service).replicas(service, version)
    }

    fn replicas_known(&self, service: &str, version: &str) -> bool {
        self.backend(service).replicas_known(service, version)
    }

    async fn remove_version(&self, service: &str, version: &str) -> Result<(), OrchestratorError> {
        self.backend(service).remove_version(service, version).await
    }

    fn check_policy(&self, policy: &forecourt_config::Policy) -> Result<(), OrchestratorError> {
        self.local.check(local_services(policy))
    }

    fn reconfigure(&self, policy: &forecourt_config::Policy) -> Result<(), OrchestratorError> {
        // All or nothing: Kubernetes follows only when the local backend took the policy.
        self.local.configure(local_services(policy))?;
        if let Some(kubernetes) = &self.kubernetes {
            kubernetes.reconfigure(policy);
        }
        Ok(())
    }

    fn updates(&self) -> UnboundedReceiver<Update> {
        let (tx, rx) = unbounded_channel();
        let mut feeds = vec![self.local.updates()];
        feeds.extend(self.kubernetes.as_ref().map(Orchestrator::updates));
        for mut feed in feeds {
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(update) = feed.recv().await {
                    if tx.send(update).is_err() {
                        return;
                    }
                }
            });
        }
        rx
    }

    async fn shutdown(&self) {
        match &self.kubernetes {
            Some(kubernetes) => {
                tokio::join!(self.local.shutdown(), kubernetes.shutdown());
            }
            None => self.local.shutdown().await,
        }
    }
}
