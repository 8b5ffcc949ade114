//! # Forecourt policy files
//!
//! ```text
//!  policy.yaml ─┬─► serde: schema::PolicyFile and each section's *Spec ──────────► PolicyFile
//!               │   (syntax, types, unknown fields; de: "30s", "64MiB")               │
//!               │                                                                     ▼
//!               └─► SourceMap (node path → line:column) ──► Checker: every Problem, located
//!                                                             │ each section resolves its part:
//!                                                             │ listeners, metadata, admission,
//!                                                             │ service, upstream, scaling, launch,
//!                                                             │ cache, versions, forecast, kubernetes,
//!                                                             │ metrics
//!                                                             ▼
//!                                          Policy, or LoadError::Invalid with every Problem
//!
//!  PolicyFileWatch (watch): mtime, length or content hash changed? ──► Policy::load again
//! ```
//!
//! A policy file is parsed and checked in full before anything uses it: every problem is
//! reported with its file, line and column, and a file with any problem yields no [`Policy`].
//! Files depend one way, downward: `policy` → `schema` → the sections (`service` → the per-service
//! ones) → `check`, `de` → `source_map`; `watch` stands alone.
//! Nothing here does IO except [`Policy::load`] reading the file and [`PolicyFileWatch`]
//! looking at it.

#![forbid(unsafe_code)]

pub mod admission;
pub mod cache;
mod check;
mod de;
pub mod forecast;
pub mod kubernetes;
pub mod launch;
pub mod listeners;
pub mod metadata;
pub mod metrics;
mod policy;
pub mod scaling;
pub mod schema;
pub mod service;
pub mod source_map;
pub mod upstream;
pub mod versions;
pub mod watch;

pub use admission::{AdminAccess, Limits, RateLimit};
pub use cache::{CacheConfig, WarmConfig};
pub use check::Problem;
pub use forecast::{EventChange, EventConfig, ForecastConfig};
pub use kubernetes::{KubernetesConfig, LeaderElection, PortSpec, ServiceKubernetes};
pub use launch::{Hold, LaunchConfig};
pub use listeners::{Listeners, DEFAULT_ADMIN_ADDR, DEFAULT_PROXY_ADDR};
pub use metadata::{
    Metadata, PeerNetwork, TenantTrust, DEFAULT_FLAG_HEADER, DEFAULT_TENANT_HEADER,
};
pub use metrics::{ForecastDetail, MetricsConfig};
pub use policy::{LoadError, Policy};
pub use scaling::{
    Capacity, Dependency, Horizon, PanicWindow, ScaleDown, ScaleUp, ScalingConfig, ScalingRule,
    Slo, DEFAULT_WAITING_COST,
};
pub use service::{Balance, InstanceConfig, RouteConfig, ServiceConfig, MAX_RETRIES};
pub use source_map::Position;
pub use upstream::{Ejection, HealthCheck, Timeouts};
pub use versions::{UntilReady, VersionConfig, WhenIdle, DEFAULT_VERSION};
pub use watch::PolicyFileWatch;
