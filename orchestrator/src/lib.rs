//! # Forecourt orchestrator
//!
//! ```text
//!                    ┌──────────── control_loop (1 s tick, or at once when a request is held) ─────────┐
//!  HostState ───────►│ forecast_step ─► scale::autoscaler ─► scale::decide (pure) ─► backend::Orchestrator│
//!  (proxy snapshot   │      │                   │                                     local │ kubernetes │
//!   or replay fleet) │      ▼                   ▼                                           │            │
//!                    │ ForecastBoard      ScalingBoard    predeploy ─► flagged versions     │            │
//!                    └─────────────────────────────────────────────────────────────────────┼────────────┘
//!                                                                                          │ Update feed
//!  fleet (instances, ReadySet) ◄───────────────────────────────────────────────────────────┘
//!    ▲ health (the prober) confirms ready ──► ReadySet (ArcSwap) ──► request path (proxy)
//!
//!  replay: the same ControlLoop::tick on a virtual clock, against a simulated fleet and KPA
//! ```
//!
//! The orchestrator is the only part of Forecourt that changes the world: it probes instances,
//! decides which are confirmed ready, decides and orders capacity, and publishes immutable
//! snapshots that the request path reads without locks.
//!
//! | folder | owns |
//! |---|---|
//! | `control_loop` | the tick (forecast → scale → pre-deploy → peer windows), its host traits, `run` |
//! | `scale` | `decide()` (pure), the autoscaler, time-to-ready, Knative's KPA |
//! | `fleet` | instances, ready sets, health state; `health` is the prober |
//! | `backend` | the `Orchestrator` trait, local processes, the per-service combination |
//! | `kubernetes` | scale subresource, EndpointSlices, versions, leader and peer windows |
//! | `predeploy`, `replay` | flagged versions; the trace-replay simulator |

#![deny(unsafe_code)] // the exceptions: `backend::local::sys` (child process signals) and the forecast thread's priority (`control_loop`)

pub mod backend;
pub mod control_loop;
pub mod fleet;
pub mod health;
pub mod kubernetes;
pub mod predeploy;
pub mod replay;
pub mod scale;

pub use backend::combined::Backends;
pub use backend::local::{LocalOrchestrator, LocalService};
pub use backend::{Drain, InstanceInfo, NoDrain, Orchestrator, OrchestratorError, Update};
pub use control_loop::forecast_step::{
    EventBook, EventBookError, EventEntry, EventSource, ForecastBoard, ForecastLoop,
    MAX_POSTED_EVENTS,
};
pub use control_loop::{
    ControlHost, ControlLoop, ControlPlane, HostService, HostState, TickTimes, TICK_TIME_BOUNDS_S,
};
pub use fleet::{
    Fleet, HealthState, Instance, InstanceId, Passive, ReadySet, ServiceInstances, WarmUp,
    EJECT_AFTER_5XX,
};
pub use health::{check_service, probe, ProbeError, ProbeOutcome, SharedProbes, WarmInstance};
pub use kubernetes::cluster::Cluster;
pub use kubernetes::leader::Leadership;
pub use kubernetes::{KubernetesOrchestrator, KubernetesService, KubernetesStats};
pub use scale::autoscaler::{
    Autoscaler, DecisionCounters, PeerLoad, ScalingBoard, ServiceScaling, ServiceView,
};
pub use scale::decide::{
    decide, dependency_demand, Decision, ForecastAtHorizon, Reason, ScalingInputs, ScalingState,
    ServiceLoad, TimeToReady,
};
pub use scale::kpa::{Kpa, KpaConfig, KpaConfigError, KpaDecision, KpaObserved, KpaWindows};
