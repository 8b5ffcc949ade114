//! The `static` backend: a fixed list of instances per service, health-checked, never scaled.
//!
//! ```text
//!  policy file ─► StaticService { name, instances } ─► updates(): one Reset per service
//!  hot reload  ─► configure(services)               ─► Reset for every changed/removed service
//! ```
//!
//! `set_replicas` never changes anything. Ordering exactly the fixed count of a version is `Ok`
//! (a control loop that asks for what exists stays quiet); any other count is
//! [`OrchestratorError::NotScalable`], so a policy that tries to scale a static service is visible
//! to the caller instead of silently ignored.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use crate::backend::{InstanceInfo, Orchestrator, OrchestratorError, Update};

/// One service's fixed instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticService {
    /// The service's name.
    pub name: String,
    /// Its instances.
    pub instances: Vec<InstanceInfo>,
}

/// An orchestrator over fixed instance lists.
#[derive(Debug)]
pub struct StaticOrchestrator {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    services: BTreeMap<String, Vec<InstanceInfo>>,
    subscribers: Vec<UnboundedSender<Update>>,
}

// === impl StaticOrchestrator ===

impl StaticOrchestrator {
    /// An orchestrator over `services` (a later entry with the same name replaces an earlier one).
    pub fn new(services: Vec<StaticService>) -> Self {
        let services = services
            .into_iter()
            .map(|s| (s.name, s.instances))
            .collect();
        Self {
            state: Mutex::new(State {
                services,
                subscribers: Vec::new(),
            }),
        }
    }

    /// Replaces the lists (hot reload): emits a `Reset` for every added or changed service and an
    /// empty `Reset` for every removed one.
    pub fn configure(&self, services: Vec<StaticService>) {
        let new: BTreeMap<String, Vec<InstanceInfo>> = services
            .into_iter()
            .map(|s| (s.name, s.instances))
            .collect();
        let mut state = self.lock();
        let mut changes = Vec::new();
        for (name, instances) in &new {
            if state.services.get(name) != Some(instances) {
                changes.push(Update::Reset {
                    service: name.clone(),
                    instances: instances.clone(),
                });
            }
        }
        for name in state.services.keys() {
            if !new.contains_key(name) {
                changes.push(Update::Reset {
                    service: name.clone(),
                    instances: Vec::new(),
                });
            }
        }
        state.services = new;
        for update in changes {
            state
                .subscribers
                .retain(|tx| tx.send(update.clone()).is_ok());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves the lists consistent (every write is one
        // assignment), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn count(&self, service: &str, version: &str) -> Option<u32> {
        let state = self.lock();
        let instances = state.services.get(service)?;
        let n = instances.iter().filter(|i| i.version == version).count();
        Some(u32::try_from(n).unwrap_or(u32::MAX))
    }
}

#[async_trait]
impl Orchestrator for StaticOrchestrator {
    fn kind(&self) -> &'static str {
        "static"
    }

    async fn set_replicas(
        &self,
        service: &str,
        version: &str,
        replicas: u32,
    ) -> Result<(), OrchestratorError> {
        let available =
            self.count(service, version)
                .ok_or_else(|| OrchestratorError::UnknownService {
                    service: service.to_owned(),
                })?;
        if available == replicas {
            return Ok(());
        }
        tracing::debug!(
            service,
            version,
            available,
            ordered = replicas,
            "static services are never scaled"
        );
        Err(OrchestratorError::NotScalable {
            service: service.to_owned(),
            version: version.to_owned(),
            available,
            ordered: replicas,
        })
    }

    fn replicas(&self, service: &str, version: &str) -> u32 {
        self.count(service, version).unwrap_or(0)
    }

    fn updates(&self) -> UnboundedReceiver<Update> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self.lock();
        for (service, instances) in &state.services {
            let _ = tx.send(Update::Reset {
                service: service.clone(),
                instances: instances.clone(),
            });
        }
        state.subscribers.push(tx);
        rx
    }

    async fn shutdown(&self) {
        // Nothing was started; ending the feeds tells consumers there is nothing more to come.
        self.lock().subscribers.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn instance(port: u16, version: &str) -> InstanceInfo {
        InstanceInfo {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            version: version.to_owned(),
        }
    }

    fn orchestrator() -> StaticOrchestrator {
        StaticOrchestrator::new(vec![
            StaticService {
                name: "web".into(),
                instances: vec![
                    instance(8001, "v1"),
                    instance(8002, "v1"),
                    instance(8003, "v2"),
                ],
            },
            StaticService {
                name: "api".into(),
                instances: vec![instance(9001, "v1")],
            },
        ])
    }

    #[tokio::test]
    async fn updates_start_with_one_reset_per_service() {
        let orch = orchestrator();
        let mut rx = orch.updates();
        let first = rx.try_recv().expect("reset for api");
        let second = rx.try_recv().expect("reset for web");
        assert_eq!(
            first,
            Update::Reset {
                service: "api".into(),
                instances: vec![instance(9001, "v1")],
            }
        );
        assert_eq!(second.service(), "web");
        match second {
            Update::Reset { instances, .. } => assert_eq!(instances.len(), 3),
            other => panic!("expected a reset, got {other:?}"),
        }
        assert!(rx.try_recv().is_err(), "nothing but the resets");
        orch.shutdown().await;
        assert!(rx.recv().await.is_none(), "shutdown ends the feed");
    }

    #[tokio::test]
    async fn replicas_count_the_list_and_scaling_is_refused() {
        let orch = orchestrator();
        assert_eq!(orch.kind(), "static");
        assert_eq!(orch.replicas("web", "v1"), 2);
        assert_eq!(orch.replicas("web", "v2"), 1);
        assert_eq!(orch.replicas("web", "v3"), 0);
        assert_eq!(orch.replicas("nope", "v1"), 0);
        orch.set_replicas("web", "v1", 2)
            .await
            .expect("same count is fine");
        let err = orch
            .set_replicas("web", "v1", 5)
            .await
            .expect_err("cannot scale");
        assert!(matches!(
            err,
            OrchestratorError::NotScalable {
                available: 2,
                ordered: 5,
                ..
            }
        ));
        assert!(
            err.to_string()
                .contains("static service web is never scaled"),
            "{err}"
        );
        let err = orch
            .set_replicas("nope", "v1", 1)
            .await
            .expect_err("unknown");
        assert_eq!(err.to_string(), "unknown service nope");
        assert_eq!(orch.replicas("web", "v1"), 2, "nothing changed");
    }

    #[tokio::test]
    async fn configure_resets_changed_and_removed_services() {
        let orch = orchestrator();
        let mut rx = orch.updates();
        while rx.try_recv().is_ok() {}
        orch.configure(vec![
            StaticService {
                name: "web".into(),
                instances: vec![instance(8001, "v1")],
            },
            StaticService {
                name: "new".into(),
                instances: vec![instance(7001, "v1")],
            },
        ]);
        let mut got = Vec::new();
        while let Ok(update) = rx.try_recv() {
            got.push(update);
        }
        assert_eq!(
            got,
            vec![
                Update::Reset {
                    service: "new".into(),
                    instances: vec![instance(7001, "v1")],
                },
                Update::Reset {
                    service: "web".into(),
                    instances: vec![instance(8001, "v1")],
                },
                Update::Reset {
                    service: "api".into(),
                    instances: vec![],
                },
            ]
        );
        assert_eq!(orch.replicas("web", "v1"), 1);
        assert_eq!(orch.replicas("api", "v1"), 0);
    }
}
