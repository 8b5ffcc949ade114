//! The top level of a policy file as written: every field optional where a default exists,
//! unknown fields refused.
//!
//! Each section's types (`*Spec`) live in the file that checks that section and mirror the YAML
//! one to one. [`crate::Policy`] is what the rest of Forecourt uses: the same content with
//! defaults filled in and every value checked.

use serde::Deserialize;

use crate::admission::AdminSpec;
use crate::forecast::ForecastSpec;
use crate::kubernetes::KubernetesSpec;
use crate::metrics::MetricsSpec;

// The types this file held before each section owned its own, at their old paths.
pub use crate::admission::LimitsSpec;
pub use crate::listeners::ListenersSpec;
pub use crate::metadata::{FeatureFlagSpec, MetadataSpec, TenantClassSpec};
pub use crate::service::{
    Balance, HeaderMatchSpec, InstanceSpec, RouteSpec, ServiceSettingsSpec, ServiceSpec,
};
pub use crate::upstream::{EjectionSpec, HealthCheckSpec, TimeoutsSpec};

/// The top level of a policy file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Where the proxy and the admin API listen.
    #[serde(default)]
    pub listeners: ListenersSpec,
    /// Which request headers carry the tenant and the feature flag.
    #[serde(default)]
    pub metadata: MetadataSpec,
    /// Limits on what a client may send.
    #[serde(default)]
    pub limits: LimitsSpec,
    /// Settings every service inherits unless it overrides them.
    #[serde(default)]
    pub defaults: ServiceSettingsSpec,
    /// The services requests are routed to.
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
    /// Forecast horizons and scheduled events.
    #[serde(default)]
    pub forecast: ForecastSpec,
    /// Who may use the admin API.
    #[serde(default)]
    pub admin: AdminSpec,
    /// How Forecourt talks to Kubernetes, for services that run there.
    pub kubernetes: Option<KubernetesSpec>,
    /// How much of each service `GET /metrics` writes.
    #[serde(default)]
    pub metrics: MetricsSpec,
}
