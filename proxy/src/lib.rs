//! # Forecourt proxy
//!
//! ```text
//!  client ─► server (listener, keep-alive) ─► ingress: request_filter ─────────────► upstream_peer ─► instance
//!                                              │ refuse (4xx)                          │ balance: P2C or
//!                                              │ classify: route, tenant, flag         │ peak-EWMA over the
//!                                              │ admission: rate, in flight, shares    │ confirmed-ready set
//!                                              │ record (predictor atomics)            │
//!                                              │ cache: answer / revalidate / fill     │
//!                                              │ hold while nothing is ready           │
//!                                              ▼                                       ▼
//!                             Snapshot (ArcSwap, per policy)           ReadySet (ArcSwap) ◄── health checker
//!                                  │  └─ Predictor windows ──► control loop (orchestrator crate, 1 s)
//!                                  │                                   │ ControlPlane boards
//!  admin API (hyper) ◄─────────────┴── readiness, /metrics, /v1/forecasts ◄─┘
//!  warm: new instances warmed before ready; hot cache entries refreshed ahead of expiry
//! ```
//!
//! The request path reads immutable snapshots and bumps atomics; everything slow runs in
//! background services. The `forecourt` binary (`src/bin/forecourt/`) adds the programs around
//! it: the demo, the sample backend, `forecast`, `replay`, `load`.
//!
//! | folder | owns |
//! |---|---|
//! | `ingress` | the Pingora phases, thin; ctx, refusals, forwarding, holding, cache glue, balancing |
//! | `classify` | routes, tenant and flag metadata, version match |
//! | `admission` | rate, concurrency and tenant-share limits (atomics) |
//! | `cache` | Cache-Control rules, the byte-bounded store, coalesced fills |
//! | `warm` | instance warm-up, refresh-ahead, the instance client |
//! | `admin` | the admin API: router, auth, readiness, forecasts, all Prometheus rendering |
//! | `server` | listeners, keep-alive, background services, drain and upgrade |
//! | `front_door`, `snapshot` | the long-lived state; the immutable per-policy data |

#![forbid(unsafe_code)]

mod admin;
mod admission;
pub mod cache;
pub mod classify;
mod counters;
mod front_door;
pub mod ingress;
mod reload;
pub mod server;
pub mod snapshot;
pub mod warm;

pub use front_door::FrontDoor;
pub use reload::{ConfigState, Rejection, ReloadOutcome};
pub use server::{build, ServerError, ServerOptions};
