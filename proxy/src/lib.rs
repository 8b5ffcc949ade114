//! # Forecourt proxy
//!
//! ```text
//!  client ──► Pingora listener ──► request_filter ──► upstream_peer ──► instance
//!                                   │ refuse / classify     │ P2C over the
//!                                   │ tenant, flag, record  │ confirmed-ready set
//!                                   ▼                       ▼
//!                              Snapshot (ArcSwap)      ReadySet (ArcSwap) ◄── health checker
//!                                   │  └─ Predictor windows (atomics) ──► control loop (1 s)
//!                                   │                                       │ ForecastBoard
//!  admin API (hyper) ◄──────────────┴── readiness, /metrics, /v1/forecasts ◄┘
//! ```
//!
//! The request path reads immutable snapshots and bumps atomics; everything slow runs in
//! background services.

#![forbid(unsafe_code)]

pub mod admin;
pub mod admission;
pub mod backend;
pub mod balance;
pub mod cache;
pub mod cache_replay;
pub mod caching;
pub mod control;
pub mod demo;
pub mod forecast_cli;
pub mod instance_client;
pub mod keepalive;
pub mod load;
pub mod metadata;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod replay_cli;
pub mod replay_plot;
pub mod routes;
pub mod server;
pub mod state;
pub mod versions;
pub mod warm;
