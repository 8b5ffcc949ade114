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

#![forbid(unsafe_code)]

pub mod control;
pub mod health;
pub mod ready;

pub use control::{
    EventBook, EventBookError, EventEntry, EventSource, ForecastBoard, ForecastLoop,
    MAX_POSTED_EVENTS,
};
pub use health::{check_service, probe, HealthState};
pub use ready::{Fleet, Instance, InstanceId, ReadySet, ServiceInstances, EJECT_AFTER_5XX};
