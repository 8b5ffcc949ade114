//! A service (`services[i]`): its name, routes and instances, and every per-service setting
//! resolved over `defaults` (each section's own file checks its part).
//!
//! ```yaml
//! defaults:                  # every service inherits these unless it overrides them
//!   retries: 2
//!   balance: least_in_flight # or peak_ewma
//! services:
//!   - name: shop
//!     routes:
//!       - host: shop.example.com
//!       - path_prefix: /shop
//!       - header: { name: x-service, value: shop }
//!     instances:
//!       - address: 127.0.0.1:9001
//!       - { address: 127.0.0.1:9002, version: v2 }
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;

use serde::Deserialize;

use crate::admission::{RateLimit, RateSpec};
use crate::cache::{CacheConfig, CacheSpec, WarmConfig, WarmSpec};
use crate::check::{is_label, origin, Checker};
use crate::kubernetes::{ServiceKubernetes, ServiceKubernetesSpec};
use crate::launch::{Hold, HoldSpec, LaunchConfig, LaunchSpec};
use crate::scaling::{self, Dependency, DependencySpec, ScalingConfig, ScalingSpec};
use crate::upstream::{
    Ejection, EjectionSpec, HealthCheck, HealthCheckSpec, Timeouts, TimeoutsSpec,
};
use crate::versions::{VersionConfig, VersionSpec, DEFAULT_VERSION};

/// Most retries a service may ask for.
pub const MAX_RETRIES: u32 = 10;

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
    pub scaling: Option<ScalingSpec>,
    /// How requests wait when no instance is ready.
    pub hold: Option<HoldSpec>,
    /// How an instance is chosen among the ready ones.
    pub balance: Option<Balance>,
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
    pub scaling: Option<ScalingSpec>,
    /// Downstream services this one sends load to, with the fan-out ratio.
    #[serde(default)]
    pub dependencies: Vec<DependencySpec>,
    /// Start instances as local child processes (the `local` orchestrator).
    pub launch: Option<LaunchSpec>,
    /// Overrides `defaults.hold`, field by field.
    pub hold: Option<HoldSpec>,
    /// Overrides `defaults.balance`.
    pub balance: Option<Balance>,
    /// Cache this service's cacheable responses in the proxy.
    pub cache: Option<CacheSpec>,
    /// Warm new instances (and the cache) before load reaches them.
    pub warm: Option<WarmSpec>,
    /// Rate and concurrency limits of the whole service.
    pub limits: Option<RateSpec>,
    /// Run on Kubernetes: the Deployment scaled and the Service whose endpoints are watched.
    pub kubernetes: Option<ServiceKubernetesSpec>,
    /// Versions pre-deployed for feature-flagged requests.
    #[serde(default)]
    pub versions: Vec<VersionSpec>,
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

/// One service with every setting resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// Unique name.
    pub name: String,
    /// How requests map to it.
    pub routes: Vec<RouteConfig>,
    /// Its static instances.
    pub instances: Vec<InstanceConfig>,
    /// Upstream timeouts.
    pub timeouts: Timeouts,
    /// Active health check.
    pub health_check: HealthCheck,
    /// Passive ejection back-off.
    pub ejection: Ejection,
    /// Other instances tried when a connection fails.
    pub retries: u32,
    /// `Retry-After` seconds when no instance is ready.
    pub retry_after: u32,
    /// How it is scaled; `None` = never scaled, the instance list is fixed.
    pub scaling: Option<ScalingConfig>,
    /// Downstream services its load flows on to.
    pub dependencies: Vec<Dependency>,
    /// How the `local` orchestrator starts its instances; `None` for a fixed instance list.
    pub launch: Option<LaunchConfig>,
    /// How requests wait when no instance is ready.
    pub hold: Hold,
    /// How an instance is chosen among the ready ones.
    pub balance: Balance,
    /// The response cache, when the service has `cache:`.
    pub cache: Option<CacheConfig>,
    /// Warming of new instances and of the cache, when the service has `warm:`.
    pub warm: Option<WarmConfig>,
    /// Rate and concurrency limits of the whole service, when it has `limits:`.
    pub limits: Option<RateLimit>,
    /// Where it runs on Kubernetes (the `kubernetes` orchestrator), when it has `kubernetes:`.
    pub kubernetes: Option<ServiceKubernetes>,
    /// Versions pre-deployed for feature-flagged requests.
    pub versions: Vec<VersionConfig>,
}

/// A route: every criterion given must match. Host is lowercase without port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteConfig {
    /// Exact host.
    pub host: Option<String>,
    /// Path prefix.
    pub path_prefix: Option<String>,
    /// Header (lowercase name) and exact value.
    pub header: Option<(String, String)>,
}

/// One instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceConfig {
    /// Where it listens.
    pub address: SocketAddr,
    /// Its version label.
    pub version: String,
}

// === impl Checker ===

impl Checker<'_> {
    /// Resolves the `services:` list over `defaults`: names and routes are unique across it.
    pub(crate) fn services(
        &mut self,
        specs: Vec<ServiceSpec>,
        defaults: &ServiceSettingsSpec,
    ) -> Vec<ServiceConfig> {
        let mut services = Vec::with_capacity(specs.len());
        let mut names = HashSet::new();
        let mut routes = HashSet::new();
        for (i, spec) in specs.into_iter().enumerate() {
            let at = format!("services[{i}]");
            let service = self.service(&at, spec, defaults);
            if !names.insert(service.name.clone()) {
                self.problem(
                    &format!("{at}.name"),
                    format!("duplicate service name {:?}", service.name),
                );
            }
            for (j, route) in service.routes.iter().enumerate() {
                if !routes.insert(route.clone()) {
                    self.problem(
                        &format!("{at}.routes[{j}]"),
                        "the same route is already used by an earlier service or route",
                    );
                }
            }
            services.push(service);
        }
        services
    }

    /// Resolves one service at `at` over `defaults`.
    fn service(
        &mut self,
        at: &str,
        spec: ServiceSpec,
        defaults: &ServiceSettingsSpec,
    ) -> ServiceConfig {
        if !is_label(&spec.name) {
            self.problem(
                &format!("{at}.name"),
                format!(
                    "service name {:?} must be 1-63 lowercase letters, digits and '-'",
                    spec.name
                ),
            );
        }
        let routes = spec
            .routes
            .iter()
            .enumerate()
            .map(|(j, r)| self.route(&format!("{at}.routes[{j}]"), r))
            .collect();
        let mut addresses = HashSet::new();
        let mut instances = Vec::with_capacity(spec.instances.len());
        for (j, inst) in spec.instances.iter().enumerate() {
            let path = format!("{at}.instances[{j}].address");
            let address = self.socket_addr(&path, &inst.address);
            if !addresses.insert(address) {
                self.problem(&path, format!("instance {address} is listed twice"));
            }
            instances.push(InstanceConfig {
                address,
                version: inst
                    .version
                    .clone()
                    .unwrap_or_else(|| DEFAULT_VERSION.to_owned()),
            });
        }
        let timeouts = self.timeouts(at, spec.timeouts.as_ref(), defaults.timeouts.as_ref());
        let health_check = self.health_check(
            at,
            spec.health_check.as_ref(),
            defaults.health_check.as_ref(),
        );
        let ejection = self.ejection(at, spec.ejection.as_ref(), defaults.ejection.as_ref());
        let retries = spec.retries.or(defaults.retries).unwrap_or(2);
        if retries > MAX_RETRIES {
            let path = origin(at, spec.retries.is_some(), "", "retries");
            self.problem(
                &path,
                format!("retries {retries} is more than {MAX_RETRIES}"),
            );
        }
        let scaling = scaling::resolve(
            at,
            spec.scaling.as_ref(),
            defaults.scaling.as_ref(),
            &mut |path, message| self.problem(path, message),
        );
        let dependencies =
            scaling::dependencies(at, &spec.name, &spec.dependencies, &mut |path, message| {
                self.problem(path, message)
            });
        let launch = spec.launch.as_ref().map(|l| self.launch(at, l));
        let hold = self.hold(at, spec.hold.as_ref(), defaults.hold.as_ref());
        let cache = spec.cache.as_ref().map(|c| self.cache(at, c));
        let warm = spec.warm.as_ref().map(|w| self.warm(at, w));
        let limits = spec
            .limits
            .as_ref()
            .map(|l| self.rate_limit(&format!("{at}.limits"), l));
        let scaling = match (&launch, scaling) {
            (Some(_), None) => {
                self.problem(
                    &format!("{at}.launch"),
                    "a launched service needs scaling: (replicas and capacity per instance)",
                );
                None
            }
            (_, scaling) => scaling,
        };
        let kubernetes = spec
            .kubernetes
            .as_ref()
            .map(|k| self.service_kubernetes(at, k));
        let backends = [
            launch.is_some(),
            !instances.is_empty(),
            kubernetes.is_some(),
        ];
        if backends.iter().filter(|b| **b).count() > 1 {
            self.problem(
                &format!("{at}.instances"),
                "give one of a fixed instance list, launch: or kubernetes:",
            );
        }
        let versions = self.versions(at, &spec.versions);
        for (j, version) in versions.iter().enumerate() {
            let path = format!("{at}.versions[{j}]");
            if kubernetes.is_some() && version.image.is_none() && version.labels.is_empty() {
                self.problem(
                    &format!("{path}.image"),
                    "a version on Kubernetes needs an image or labels that tell it from the stable pods",
                );
            }
            if launch.is_none() && kubernetes.is_none() && version.command.is_some() {
                self.problem(
                    &format!("{path}.command"),
                    "only a launched service runs commands",
                );
            }
            if !instances.is_empty() && !instances.iter().any(|i| i.version == version.version) {
                self.problem(
                    &format!("{path}.version"),
                    format!(
                        "no instance in the fixed list has version {:?}",
                        version.version
                    ),
                );
            }
        }
        ServiceConfig {
            name: spec.name,
            routes,
            instances,
            timeouts,
            health_check,
            ejection,
            retries,
            retry_after: spec.retry_after.or(defaults.retry_after).unwrap_or(1),
            scaling,
            dependencies,
            launch,
            hold,
            balance: spec.balance.or(defaults.balance).unwrap_or_default(),
            cache,
            warm,
            limits,
            kubernetes,
            versions,
        }
    }

    /// Resolves one route at `at`.
    fn route(&mut self, at: &str, spec: &RouteSpec) -> RouteConfig {
        if spec.host.is_none() && spec.path_prefix.is_none() && spec.header.is_none() {
            self.problem(at, "a route needs a host, a path_prefix or a header");
        }
        let host = spec.host.as_ref().map(|h| {
            let valid = !h.is_empty()
                && h.len() <= 253
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b));
            if !valid {
                self.problem(
                    &format!("{at}.host"),
                    format!("{h:?} is not a host name (no scheme, port or path)"),
                );
            }
            h.to_ascii_lowercase()
        });
        if let Some(prefix) = &spec.path_prefix {
            if !prefix.starts_with('/') || prefix.contains(['?', '#', ' ']) {
                self.problem(
                    &format!("{at}.path_prefix"),
                    format!("{prefix:?} must start with '/' and hold no query"),
                );
            }
        }
        let header = spec.header.as_ref().map(|h| {
            (
                self.header_name(&format!("{at}.header.name"), &h.name),
                h.value.clone(),
            )
        });
        RouteConfig {
            host,
            path_prefix: spec.path_prefix.clone(),
            header,
        }
    }
}
