//! # Forecourt policy files
//!
//! ```text
//!  policy.yaml ──► serde (syntax, types, unknown fields) ──► PolicyFile ──► Checker ──► Policy
//!       │                                                                     ▲
//!       └──────────► SourceMap (node path → line:column) ─────────────────────┘
//! ```
//!
//! A policy file is parsed and checked in full before anything uses it: every problem is
//! reported with its file, line and column, and a file with any problem yields no [`Policy`].
//! Nothing here does IO except [`Policy::load`] reading the file.

#![forbid(unsafe_code)]

pub mod admission;
pub mod cache;
pub mod forecast;
pub mod kubernetes;
pub mod launch;
mod policy;
pub mod scaling;
pub mod schema;
pub mod source_map;
pub mod versions;

pub use admission::{AdminAccess, RateLimit};
pub use cache::{CacheConfig, WarmConfig};
pub use forecast::{EventChange, EventConfig, ForecastConfig};
pub use kubernetes::{KubernetesConfig, LeaderElection, PortSpec, ServiceKubernetes};
pub use launch::{Hold, LaunchConfig};
pub use policy::{
    Ejection, HealthCheck, InstanceConfig, Limits, Listeners, LoadError, Metadata, Policy, Problem,
    RouteConfig, ServiceConfig, Timeouts, DEFAULT_ADMIN_ADDR, DEFAULT_FLAG_HEADER,
    DEFAULT_PROXY_ADDR, DEFAULT_TENANT_HEADER, DEFAULT_VERSION, MAX_RETRIES,
};
pub use scaling::{
    Capacity, Dependency, Horizon, PanicWindow, ScaleDown, ScaleUp, ScalingConfig, ScalingRule,
};
pub use schema::Balance;
pub use source_map::Position;
pub use versions::{UntilReady, VersionConfig, WhenIdle};
