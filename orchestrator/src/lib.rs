//! # Forecourt orchestrator
//!
//! ```text
//!  Policy ──► Fleet (services ─► instances)
//!                 │
//!  health checker ┤ probe each instance every interval ──► HealthState ──► ready flag
//!                 └──────────────────────────────────────► publish ReadySet (ArcSwap)
//!                                                              │
//!  request path (proxy) ◄── load ready set, bump atomics ◄─────┘
//! ```
//!
//! The orchestrator is the only part of Forecourt that changes the world: it probes instances,
//! decides which are confirmed ready and publishes immutable snapshots that the request path
//! reads without locks.

#![deny(unsafe_code)] // the one exception: `local::sys` (child process signals)

pub mod autoscale;
pub mod backend;
pub mod backends;
pub mod control;
pub mod health;
pub mod kpa;
pub mod kubernetes;
pub mod local;
pub mod predeploy;
pub mod ready;
pub mod replay;
pub mod scaling;
pub mod static_backend;

pub use autoscale::{
    Autoscaler, DecisionCounters, PeerLoad, ScalingBoard, ServiceScaling, ServiceView,
};
pub use backend::{Drain, InstanceInfo, NoDrain, Orchestrator, OrchestratorError, Update};
pub use backends::Backends;
pub use control::{
    EventBook, EventBookError, EventEntry, EventSource, ForecastBoard, ForecastLoop,
    MAX_POSTED_EVENTS,
};
pub use health::{check_service, probe, HealthState, WarmInstance};
pub use kpa::{Kpa, KpaConfig, KpaConfigError, KpaDecision, KpaObserved, KpaWindows};
pub use kubernetes::cluster::Cluster;
pub use kubernetes::leader::Leadership;
pub use kubernetes::{KubernetesOrchestrator, KubernetesService, KubernetesStats};
pub use local::{LocalOrchestrator, LocalService};
pub use ready::{Fleet, Instance, InstanceId, ReadySet, ServiceInstances, WarmUp, EJECT_AFTER_5XX};
pub use scaling::{
    decide, dependency_demand, Decision, ForecastAtHorizon, Reason, ScalingInputs, ScalingState,
    ServiceLoad, TimeToReady,
};
pub use static_backend::{StaticOrchestrator, StaticService};
