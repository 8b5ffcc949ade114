//! The `Orchestrator` trait: how Forecourt orders capacity and learns which instances exist.
//!
//! ```text
//!  control loop ── set_replicas(service, version, n) ──► backend (local | kubernetes)
//!       ▲         remove_version(service, version) ───►       │ starts / stops instances
//!       └──────── updates(): Reset, Add, Remove ◄─────────────┘
//!                    │
//!                    └─► Fleet / health checker ─► confirmed-ready set ─► Drain (in-flight counts)
//! ```
//!
//! A backend only says which instances *exist*; Forecourt's own health checker decides which are
//! ready. Before a backend stops an instance it emits [`Update::Remove`] (the proxy stops routing
//! new requests to it) and waits on [`Drain::drained`] for the requests already in flight.

pub mod combined;
pub mod local;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc::UnboundedReceiver;

/// An instance an orchestrator started or knows about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstanceInfo {
    /// Where the instance listens.
    pub address: SocketAddr,
    /// The version of the service it runs.
    pub version: String,
}

/// A change in a service's instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// The complete list of a service's instances, replacing whatever the consumer knew.
    Reset {
        /// The service.
        service: String,
        /// Every instance the backend knows of, in no particular order.
        instances: Vec<InstanceInfo>,
    },
    /// A new instance exists (not necessarily ready: the health checker decides).
    Add {
        /// The service.
        service: String,
        /// The new instance.
        instance: InstanceInfo,
    },
    /// An instance is going away: route no new requests to it.
    Remove {
        /// The service.
        service: String,
        /// The instance's address.
        address: SocketAddr,
    },
}

// === impl Update ===

impl Update {
    /// The service this update is about.
    pub fn service(&self) -> &str {
        match self {
            Update::Reset { service, .. }
            | Update::Add { service, .. }
            | Update::Remove { service, .. } => service,
        }
    }
}

/// Why an orchestrator could not do what it was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OrchestratorError {
    /// The backend has no launch spec or instance list for the service.
    #[error("unknown service {service}")]
    UnknownService {
        /// The service asked for.
        service: String,
    },
    /// A static service was asked for a replica count other than its fixed list.
    #[error(
        "static service {service} is never scaled: it has {available} instances of version \
         {version}, {ordered} were ordered"
    )]
    NotScalable {
        /// The service.
        service: String,
        /// The version asked for.
        version: String,
        /// Instances of that version in the fixed list.
        available: u32,
        /// Replicas ordered.
        ordered: u32,
    },
    /// A launch spec is unusable.
    #[error("invalid launch spec for service {service}: {reason}")]
    InvalidSpec {
        /// The service.
        service: String,
        /// What is wrong, in words.
        reason: String,
    },
    /// No free loopback port could be found for a new instance.
    #[error("failed to pick a free loopback port for service {service}")]
    NoFreePort {
        /// The service.
        service: String,
        /// The last bind error.
        #[source]
        source: io::Error,
    },
    /// The instance's process could not be started (it will be retried with back-off).
    #[error("failed to start service {service} version {version} on port {port}")]
    Spawn {
        /// The service.
        service: String,
        /// The version.
        version: String,
        /// The port it was given.
        port: u16,
        /// The error from the operating system.
        #[source]
        source: io::Error,
    },
    /// The orchestrator's API (Kubernetes) refused or did not answer; the order is retried.
    #[error("service {service}: {reason}")]
    Api {
        /// The service.
        service: String,
        /// The last failure, in words.
        reason: String,
    },
    /// A scale-down is held on purpose (a peer's windows are stale, so the load is not all
    /// known); the order is not a failure and is made again when the hold ends.
    #[error("service {service}: scale-down held: {reason}")]
    ScaleDownHeld {
        /// The service.
        service: String,
        /// Why, in words.
        reason: String,
    },
    /// `shutdown` was called; the backend takes no more orders.
    #[error("the orchestrator is shutting down")]
    ShuttingDown,
}

/// Orders capacity for services and reports which instances exist.
///
/// Implementations are cheap to call from the control loop: `set_replicas` records the order and
/// returns; starting, draining and stopping happen in background tasks.
#[async_trait]
pub trait Orchestrator: Send + Sync + 'static {
    /// The backend's name: `"local"`, `"kubernetes"`, or both.
    fn kind(&self) -> &'static str;

    /// Orders `replicas` instances of `version` of `service`; idempotent, returns once ordered
    /// (not once ready).
    async fn set_replicas(
        &self,
        service: &str,
        version: &str,
        replicas: u32,
    ) -> Result<(), OrchestratorError>;

    /// Replicas currently ordered for `service`/`version` (0 when unknown).
    fn replicas(&self, service: &str, version: &str) -> u32;

    /// Whether [`Self::replicas`] is the real count yet: a backend that reads it from elsewhere
    /// (Kubernetes) says no until it has; nothing is decided from an unknown count.
    fn replicas_known(&self, _service: &str, _version: &str) -> bool {
        true
    }

    /// Removes what was created for a flagged `version` of `service` beyond its replica count
    /// (on Kubernetes, the version's Deployment); idempotent. Called after its replicas were
    /// ordered to 0 when the policy says `when_idle: delete`. The default does nothing: a
    /// backend whose versions are only replica counts (local processes) needs no more.
    async fn remove_version(&self, service: &str, version: &str) -> Result<(), OrchestratorError> {
        let _ = (service, version);
        Ok(())
    }

    /// Whether [`Self::reconfigure`] would take `policy`, changing nothing (a reload asks before
    /// it installs the policy). The default takes every policy.
    fn check_policy(&self, _policy: &forecourt_config::Policy) -> Result<(), OrchestratorError> {
        Ok(())
    }

    /// Takes a newly applied policy (launch specs, Kubernetes targets). The default has nothing
    /// to change.
    fn reconfigure(&self, _policy: &forecourt_config::Policy) -> Result<(), OrchestratorError> {
        Ok(())
    }

    /// A new subscription to instance changes: starts with one `Reset` per known service, then
    /// every `Add`/`Remove` in order; each call gets its own feed, so a restarted consumer simply
    /// subscribes again. The feed ends when the backend has shut down.
    fn updates(&self) -> UnboundedReceiver<Update>;

    /// Stops everything the backend started (gracefully, in parallel) and returns when done.
    async fn shutdown(&self);
}

/// How a backend learns that an instance it removed has no request in flight any more.
///
/// The integrator implements it over the proxy's in-flight counters.
#[async_trait]
pub trait Drain: Send + Sync + 'static {
    /// Waits until no request is in flight to `address` of `service` (the proxy stopped routing
    /// new ones when it saw `Update::Remove`), or `timeout` passes.
    async fn drained(&self, service: &str, address: SocketAddr, timeout: Duration);
}

/// A [`Drain`] that returns at once: for tests and for backends with nothing in front.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDrain;

#[async_trait]
impl Drain for NoDrain {
    async fn drained(&self, _service: &str, _address: SocketAddr, _timeout: Duration) {}
}
