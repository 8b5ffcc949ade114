//! The policy file as written: every field optional where a default exists, unknown fields refused.
//!
//! These types mirror the YAML one to one. [`crate::Policy`] is what the rest of Forecourt uses:
//! the same content with defaults filled in and every value checked.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

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
    pub forecast: crate::forecast::ForecastSpec,
    /// Who may use the admin API.
    #[serde(default)]
    pub admin: crate::admission::AdminSpec,
    /// How Forecourt talks to Kubernetes, for services that run there.
    pub kubernetes: Option<crate::kubernetes::KubernetesSpec>,
}

/// Listener addresses, as `ip:port` strings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenersSpec {
    /// The proxy listener (tenant traffic).
    pub proxy: Option<String>,
    /// The admin API listener.
    pub admin: Option<String>,
}

/// Limits on requests, checked before routing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Largest request header block in bytes (default 32768); larger gets 431.
    pub max_header_bytes: Option<usize>,
    /// Longest request target in bytes (default 8192); longer gets 414.
    pub max_uri_bytes: Option<usize>,
    /// Requests in flight in the whole proxy (default 10000); beyond it a fast 503.
    pub max_in_flight: Option<u32>,
    /// A request header must arrive in full within this (default 10s).
    #[serde(default, deserialize_with = "duration")]
    pub header_timeout: Option<Duration>,
    /// Slowest average request body accepted once it has taken longer than the header timeout,
    /// in bytes per second (default 1024; 0 turns it off).
    pub min_body_rate: Option<u64>,
    /// On SIGTERM, how long requests in flight may take to finish (default 10s).
    #[serde(default, deserialize_with = "duration")]
    pub drain_timeout: Option<Duration>,
    /// Per-tenant rate and concurrency limits by tenant class.
    #[serde(default)]
    pub tenant_classes: std::collections::BTreeMap<String, crate::admission::RateSpec>,
}

/// Request metadata extraction.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataSpec {
    /// The header that names the tenant (default `x-tenant-id`).
    pub tenant_header: Option<String>,
    /// Where the feature flag is read from.
    pub feature_flag: Option<FeatureFlagSpec>,
    /// Named tenant classes, each a list of tenant ids (bounds metric label cardinality).
    #[serde(default)]
    pub tenant_classes: Vec<TenantClassSpec>,
    /// The class of a tenant that no class lists (default `standard`).
    pub default_tenant_class: Option<String>,
}

/// The header and/or cookie carrying the feature flag.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureFlagSpec {
    /// Header name (default `x-feature-flag`).
    pub header: Option<String>,
    /// Cookie name, checked when the header is absent.
    pub cookie: Option<String>,
}

/// One tenant class.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantClassSpec {
    /// Class name, used as a metric label.
    pub name: String,
    /// Tenant ids in this class.
    #[serde(default)]
    pub tenants: Vec<String>,
}

/// Per-service settings; in `defaults` they apply to every service.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSettingsSpec {
    /// Upstream timeouts.
    pub timeouts: Option<TimeoutsSpec>,
    /// Active health checking.
    pub health_check: Option<HealthCheckSpec>,
    /// Passive ejection on failures seen in live traffic.
    pub ejection: Option<EjectionSpec>,
    /// How many other instances to try when a connection fails.
    pub retries: Option<u32>,
    /// Seconds a client is told to wait (`Retry-After`) when no instance is ready.
    pub retry_after: Option<u32>,
    /// Scaling settings every scaled service inherits, field by field.
    pub scaling: Option<crate::scaling::ScalingSpec>,
    /// How requests wait when no instance is ready.
    pub hold: Option<crate::launch::HoldSpec>,
    /// How an instance is chosen among the ready ones.
    pub balance: Option<Balance>,
}

/// Upstream timeouts.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsSpec {
    /// TCP connect timeout.
    #[serde(default, deserialize_with = "duration")]
    pub connect: Option<Duration>,
    /// Timeout of each read from the upstream.
    #[serde(default, deserialize_with = "duration")]
    pub read: Option<Duration>,
    /// Timeout of each write to the upstream.
    #[serde(default, deserialize_with = "duration")]
    pub write: Option<Duration>,
    /// How long a pooled upstream connection may stay idle.
    #[serde(default, deserialize_with = "duration")]
    pub idle: Option<Duration>,
}

/// Active health check settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSpec {
    /// HTTP path probed with GET.
    pub path: Option<String>,
    /// Time between probes.
    #[serde(default, deserialize_with = "duration")]
    pub interval: Option<Duration>,
    /// Probe timeout.
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
    /// Consecutive successes before an instance is routed to.
    pub healthy_threshold: Option<u32>,
    /// Consecutive failures before an instance is taken out.
    pub unhealthy_threshold: Option<u32>,
}

/// Passive ejection back-off.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EjectionSpec {
    /// First ejection length.
    #[serde(default, deserialize_with = "duration")]
    pub base: Option<Duration>,
    /// Longest ejection after repeated failures.
    #[serde(default, deserialize_with = "duration")]
    pub max: Option<Duration>,
}

/// One service.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Unique name, a DNS label (`[a-z0-9-]`).
    pub name: String,
    /// How requests are mapped to this service.
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    /// The instances of this service (static list).
    #[serde(default)]
    pub instances: Vec<InstanceSpec>,
    /// Overrides `defaults.timeouts`, field by field.
    pub timeouts: Option<TimeoutsSpec>,
    /// Overrides `defaults.health_check`, field by field.
    pub health_check: Option<HealthCheckSpec>,
    /// Overrides `defaults.ejection`, field by field.
    pub ejection: Option<EjectionSpec>,
    /// Overrides `defaults.retries`.
    pub retries: Option<u32>,
    /// Overrides `defaults.retry_after`.
    pub retry_after: Option<u32>,
    /// How this service is scaled; absent (and no `defaults.scaling`) = a fixed instance list.
    pub scaling: Option<crate::scaling::ScalingSpec>,
    /// Downstream services this one sends load to, with the fan-out ratio.
    #[serde(default)]
    pub dependencies: Vec<crate::scaling::DependencySpec>,
    /// Start instances as local child processes (the `local` orchestrator).
    pub launch: Option<crate::launch::LaunchSpec>,
    /// Overrides `defaults.hold`, field by field.
    pub hold: Option<crate::launch::HoldSpec>,
    /// Overrides `defaults.balance`.
    pub balance: Option<Balance>,
    /// Cache this service's cacheable responses in the proxy.
    pub cache: Option<crate::cache::CacheSpec>,
    /// Warm new instances (and the cache) before load reaches them.
    pub warm: Option<crate::cache::WarmSpec>,
    /// Rate and concurrency limits of the whole service.
    pub limits: Option<crate::admission::RateSpec>,
    /// Run on Kubernetes: the Deployment scaled and the Service whose endpoints are watched.
    pub kubernetes: Option<crate::kubernetes::ServiceKubernetesSpec>,
    /// Versions pre-deployed for feature-flagged requests.
    #[serde(default)]
    pub versions: Vec<crate::versions::VersionSpec>,
}

/// One route: every criterion given must match.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Exact host (port ignored, case-insensitive).
    pub host: Option<String>,
    /// Path prefix, matched on segment boundaries unless it ends in `/`.
    pub path_prefix: Option<String>,
    /// A header that must be present with this exact value.
    pub header: Option<HeaderMatchSpec>,
}

/// A header name and value to match.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatchSpec {
    /// Header name (case-insensitive).
    pub name: String,
    /// Exact value.
    pub value: String,
}

/// One instance of a service.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceSpec {
    /// `ip:port` of the instance.
    pub address: String,
    /// Version label (default `stable`).
    pub version: Option<String>,
}

/// How an instance is chosen among the confirmed-ready ones: power of two random choices,
/// comparing either requests in flight or peak-EWMA cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Fewer requests in flight wins; latency EWMA breaks ties (the default).
    #[default]
    LeastInFlight,
    /// Lower `latency EWMA × (in flight + 1)` wins (Finagle's and linkerd's peak-EWMA cost).
    PeakEwma,
}

/// Parses `"1s"`, `"250ms"`, `"1m 30s"` into a [`Duration`].
pub(crate) fn duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))
}
