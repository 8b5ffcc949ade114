//! The validated policy: defaults filled in, every value checked, every problem located.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::forecast::ForecastConfig;
use crate::schema::{
    EjectionSpec, HealthCheckSpec, PolicyFile, RouteSpec, ServiceSettingsSpec, ServiceSpec,
    TimeoutsSpec,
};
use crate::source_map::{Position, SourceMap};

/// Default proxy listener.
pub const DEFAULT_PROXY_ADDR: &str = "127.0.0.1:8080";
/// Default admin listener: loopback only.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9901";
/// Default tenant header.
pub const DEFAULT_TENANT_HEADER: &str = "x-tenant-id";
/// Default feature flag header.
pub const DEFAULT_FLAG_HEADER: &str = "x-feature-flag";
/// Default version label of an instance.
pub const DEFAULT_VERSION: &str = "stable";
/// Most retries a service may ask for.
pub const MAX_RETRIES: u32 = 10;

/// A complete, validated policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Where the proxy and the admin API listen.
    pub listeners: Listeners,
    /// Request metadata extraction.
    pub metadata: Metadata,
    /// Limits on what a client may send.
    pub limits: Limits,
    /// Who may use the admin API.
    pub admin: crate::admission::AdminAccess,
    /// The services, in file order.
    pub services: Vec<ServiceConfig>,
    /// Forecast horizons and scheduled events.
    pub forecast: ForecastConfig,
    /// How Forecourt talks to Kubernetes (defaults when the file has no `kubernetes:`).
    pub kubernetes: crate::kubernetes::KubernetesConfig,
}

/// Listener addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listeners {
    /// Tenant traffic.
    pub proxy: SocketAddr,
    /// Admin API.
    pub admin: SocketAddr,
}

/// Limits on requests, checked before routing.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest request header block in bytes.
    pub max_header_bytes: usize,
    /// Longest request target in bytes.
    pub max_uri_bytes: usize,
    /// Requests in flight in the whole proxy; beyond it a fast 503.
    pub max_in_flight: u32,
    /// A request header must arrive in full within this.
    pub header_timeout: std::time::Duration,
    /// Slowest average request body accepted after `header_timeout`, bytes per second (0: off).
    pub min_body_rate: u64,
    /// On SIGTERM, how long requests in flight may take to finish (read at start only).
    pub drain_timeout: std::time::Duration,
    /// Per-tenant limits by tenant class name (classes without limits are absent).
    pub tenant_classes: Vec<(String, crate::admission::RateLimit)>,
}

/// Which headers carry request metadata (names are lowercase).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Header naming the tenant.
    pub tenant_header: String,
    /// Header carrying the feature flag.
    pub flag_header: Option<String>,
    /// Cookie carrying the feature flag, read when the header is absent.
    pub flag_cookie: Option<String>,
    /// Tenant classes: class name and its tenant ids.
    pub tenant_classes: Vec<(String, Vec<String>)>,
    /// Class of a tenant no class lists.
    pub default_tenant_class: String,
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
    pub scaling: Option<crate::scaling::ScalingConfig>,
    /// Downstream services its load flows on to.
    pub dependencies: Vec<crate::scaling::Dependency>,
    /// How the `local` orchestrator starts its instances; `None` for a fixed instance list.
    pub launch: Option<crate::launch::LaunchConfig>,
    /// How requests wait when no instance is ready.
    pub hold: crate::launch::Hold,
    /// How an instance is chosen among the ready ones.
    pub balance: crate::schema::Balance,
    /// The response cache, when the service has `cache:`.
    pub cache: Option<crate::cache::CacheConfig>,
    /// Warming of new instances and of the cache, when the service has `warm:`.
    pub warm: Option<crate::cache::WarmConfig>,
    /// Rate and concurrency limits of the whole service, when it has `limits:`.
    pub limits: Option<crate::admission::RateLimit>,
    /// Where it runs on Kubernetes (the `kubernetes` orchestrator), when it has `kubernetes:`.
    pub kubernetes: Option<crate::kubernetes::ServiceKubernetes>,
    /// Versions pre-deployed for feature-flagged requests.
    pub versions: Vec<crate::versions::VersionConfig>,
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

/// Upstream timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// Each read.
    pub read: Duration,
    /// Each write.
    pub write: Duration,
    /// Pooled connection idle time.
    pub idle: Duration,
}

/// Active health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Path probed with GET.
    pub path: String,
    /// Time between probes.
    pub interval: Duration,
    /// Probe timeout.
    pub timeout: Duration,
    /// Successes before ready.
    pub healthy_threshold: u32,
    /// Failures before not ready.
    pub unhealthy_threshold: u32,
}

/// Passive ejection back-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    /// First ejection length.
    pub base: Duration,
    /// Longest ejection.
    pub max: Duration,
}

/// One problem in a policy file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file (or a label for text that came from elsewhere).
    pub file: PathBuf,
    /// Line and column, when known.
    pub position: Option<Position>,
    /// The node path, e.g. `services[0].routes[1].host`, when known.
    pub path: Option<String>,
    /// What is wrong, lowercase.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(p) = self.position {
            write!(f, ":{}:{}", p.line, p.column)?;
        }
        match &self.path {
            Some(path) if !path.is_empty() => write!(f, ": {path}: {}", self.message),
            _ => write!(f, ": {}", self.message),
        }
    }
}

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("unable to read policy file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid policy.
    #[error("{} problem(s) in {}:\n{}", problems.len(), file.display(), list(problems))]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

// === impl Policy ===

impl Policy {
    /// Reads and validates the policy file at `path`.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates policy text; `file` names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Self, LoadError> {
        let raw: PolicyFile = if text.trim().is_empty() {
            PolicyFile::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| LoadError::Invalid {
                file: file.to_owned(),
                problems: vec![Problem {
                    file: file.to_owned(),
                    position: e.location().map(|l| Position {
                        line: l.line(),
                        column: l.column(),
                    }),
                    path: None,
                    message: e
                        .to_string()
                        .split(" at line ")
                        .next()
                        .unwrap_or("")
                        .to_owned(),
                }],
            })?
        };
        let mut check = Checker {
            file,
            map: SourceMap::build(text),
            problems: Vec::new(),
        };
        let policy = check.policy(raw);
        if check.problems.is_empty() {
            Ok(policy)
        } else {
            Err(LoadError::Invalid {
                file: file.to_owned(),
                problems: check.problems,
            })
        }
    }

    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceConfig> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// Collects every problem while resolving a [`PolicyFile`].
pub(crate) struct Checker<'a> {
    file: &'a Path,
    map: SourceMap,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    pub(crate) fn problem(&mut self, path: &str, message: impl Into<String>) {
        let problem = Problem {
            file: self.file.to_owned(),
            position: self.map.locate(path),
            path: Some(path.to_owned()),
            message: message.into(),
        };
        // A bad value in `defaults` is inherited by every service: report it once.
        if !self.problems.contains(&problem) {
            self.problems.push(problem);
        }
    }

    fn policy(&mut self, raw: PolicyFile) -> Policy {
        let listeners = Listeners {
            proxy: self.socket_addr(
                "listeners.proxy",
                raw.listeners.proxy.as_deref().unwrap_or(DEFAULT_PROXY_ADDR),
            ),
            admin: self.socket_addr(
                "listeners.admin",
                raw.listeners.admin.as_deref().unwrap_or(DEFAULT_ADMIN_ADDR),
            ),
        };
        if listeners.proxy == listeners.admin && listeners.proxy.port() != 0 {
            self.problem(
                "listeners.admin",
                "admin and proxy listeners share an address",
            );
        }
        let metadata = self.metadata(raw.metadata);
        let (max_in_flight, header_timeout) =
            self.admission(raw.limits.max_in_flight, raw.limits.header_timeout);
        let mut tenant_classes = Vec::new();
        for (class, spec) in &raw.limits.tenant_classes {
            let at = format!("limits.tenant_classes.{class}");
            let known = metadata.default_tenant_class == *class
                || metadata.tenant_classes.iter().any(|(c, _)| c == class);
            if !known {
                self.problem(
                    &at,
                    format!("no tenant class {class:?} (metadata.tenant_classes and default_tenant_class name them)"),
                );
            }
            tenant_classes.push((class.clone(), self.rate_limit(&at, spec)));
        }
        let limits = Limits {
            max_header_bytes: raw.limits.max_header_bytes.unwrap_or(32 * 1024),
            max_uri_bytes: raw.limits.max_uri_bytes.unwrap_or(8 * 1024),
            max_in_flight,
            header_timeout,
            drain_timeout: raw
                .limits
                .drain_timeout
                .unwrap_or(std::time::Duration::from_secs(10)),
            min_body_rate: raw.limits.min_body_rate.unwrap_or(1024),
            tenant_classes,
        };
        if limits.drain_timeout > std::time::Duration::from_secs(600) {
            self.problem("limits.drain_timeout", "at most 10m");
        }
        // Pingora itself refuses header blocks above 1 MiB.
        if !(1024..=1024 * 1024).contains(&limits.max_header_bytes) {
            self.problem(
                "limits.max_header_bytes",
                "must be between 1024 and 1048576",
            );
        }
        if !(256..=64 * 1024).contains(&limits.max_uri_bytes) {
            self.problem("limits.max_uri_bytes", "must be between 256 and 65536");
        }
        let mut services = Vec::with_capacity(raw.services.len());
        let mut names = HashSet::new();
        let mut routes = HashSet::new();
        for (i, spec) in raw.services.into_iter().enumerate() {
            let at = format!("services[{i}]");
            let service = self.service(&at, spec, &raw.defaults);
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
        crate::scaling::check_defaults(raw.defaults.scaling.as_ref(), &mut |path, message| {
            self.problem(path, message)
        });
        crate::scaling::check_graph(&services, &mut |path, message| self.problem(path, message));
        let forecast = self.forecast(raw.forecast, &services);
        let kubernetes = self.kubernetes(raw.kubernetes.as_ref());
        let admin = crate::admission::AdminAccess {
            public_reads: raw.admin.public_reads.unwrap_or(false),
        };
        Policy {
            listeners,
            metadata,
            limits,
            services,
            forecast,
            admin,
            kubernetes,
        }
    }

    fn socket_addr(&mut self, path: &str, text: &str) -> SocketAddr {
        text.parse().unwrap_or_else(|_| {
            self.problem(path, format!("{text:?} is not an ip:port address"));
            SocketAddr::from(([0, 0, 0, 0], 0))
        })
    }

    fn header_name(&mut self, path: &str, name: &str) -> String {
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid {
            self.problem(path, format!("{name:?} is not a valid header name"));
        }
        name.to_ascii_lowercase()
    }

    fn metadata(&mut self, raw: crate::schema::MetadataSpec) -> Metadata {
        let tenant_header = self.header_name(
            "metadata.tenant_header",
            raw.tenant_header
                .as_deref()
                .unwrap_or(DEFAULT_TENANT_HEADER),
        );
        let (flag_header, flag_cookie) = match raw.feature_flag {
            None => (Some(DEFAULT_FLAG_HEADER.to_owned()), None),
            Some(flag) => {
                let header = flag
                    .header
                    .map(|h| self.header_name("metadata.feature_flag.header", &h));
                if let Some(cookie) = &flag.cookie {
                    if cookie.is_empty() || cookie.contains([';', '=', ' ']) {
                        self.problem(
                            "metadata.feature_flag.cookie",
                            format!("{cookie:?} is not a valid cookie name"),
                        );
                    }
                }
                if header.is_none() && flag.cookie.is_none() {
                    self.problem(
                        "metadata.feature_flag",
                        "feature_flag needs a header, a cookie or both",
                    );
                }
                (header, flag.cookie)
            }
        };
        let mut seen = HashSet::new();
        let mut tenant_classes = Vec::new();
        for (i, class) in raw.tenant_classes.into_iter().enumerate() {
            if !is_label(&class.name) {
                self.problem(
                    &format!("metadata.tenant_classes[{i}].name"),
                    format!("{:?} must be lowercase letters, digits and '-'", class.name),
                );
            }
            for (j, tenant) in class.tenants.iter().enumerate() {
                if !seen.insert(tenant.clone()) {
                    self.problem(
                        &format!("metadata.tenant_classes[{i}].tenants[{j}]"),
                        format!("tenant {tenant:?} is in more than one class"),
                    );
                }
            }
            tenant_classes.push((class.name, class.tenants));
        }
        Metadata {
            tenant_header,
            flag_header,
            flag_cookie,
            tenant_classes,
            default_tenant_class: raw
                .default_tenant_class
                .unwrap_or_else(|| "standard".to_owned()),
        }
    }

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
        let scaling = crate::scaling::resolve(
            at,
            spec.scaling.as_ref(),
            defaults.scaling.as_ref(),
            &mut |path, message| self.problem(path, message),
        );
        let dependencies = crate::scaling::dependencies(
            at,
            &spec.name,
            &spec.dependencies,
            &mut |path, message| self.problem(path, message),
        );
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

    fn timeouts(
        &mut self,
        at: &str,
        own: Option<&TimeoutsSpec>,
        inherited: Option<&TimeoutsSpec>,
    ) -> Timeouts {
        let pick = |f: fn(&TimeoutsSpec) -> Option<Duration>, default: Duration| {
            own.and_then(f).or(inherited.and_then(f)).unwrap_or(default)
        };
        let timeouts = Timeouts {
            connect: pick(|t| t.connect, Duration::from_secs(1)),
            read: pick(|t| t.read, Duration::from_secs(30)),
            write: pick(|t| t.write, Duration::from_secs(30)),
            idle: pick(|t| t.idle, Duration::from_secs(60)),
        };
        let own_has = |f: fn(&TimeoutsSpec) -> Option<Duration>| own.and_then(f).is_some();
        for (name, value, set_here) in [
            ("connect", timeouts.connect, own_has(|t| t.connect)),
            ("read", timeouts.read, own_has(|t| t.read)),
            ("write", timeouts.write, own_has(|t| t.write)),
        ] {
            if value.is_zero() {
                let path = origin(at, set_here, "timeouts", name);
                self.problem(&path, "timeout must be above zero");
            }
        }
        timeouts
    }

    fn health_check(
        &mut self,
        at: &str,
        own: Option<&HealthCheckSpec>,
        inherited: Option<&HealthCheckSpec>,
    ) -> HealthCheck {
        let path = own
            .and_then(|h| h.path.clone())
            .or_else(|| inherited.and_then(|h| h.path.clone()))
            .unwrap_or_else(|| "/healthz".to_owned());
        let duration = |f: fn(&HealthCheckSpec) -> Option<Duration>, default: Duration| {
            own.and_then(f).or(inherited.and_then(f)).unwrap_or(default)
        };
        let count = |f: fn(&HealthCheckSpec) -> Option<u32>, default: u32| {
            own.and_then(f).or(inherited.and_then(f)).unwrap_or(default)
        };
        let check = HealthCheck {
            path,
            interval: duration(|h| h.interval, Duration::from_secs(1)),
            timeout: duration(|h| h.timeout, Duration::from_millis(500)),
            healthy_threshold: count(|h| h.healthy_threshold, 2),
            unhealthy_threshold: count(|h| h.unhealthy_threshold, 2),
        };
        let here = |field: &str, set: fn(&HealthCheckSpec) -> bool| {
            origin(at, own.is_some_and(set), "health_check", field)
        };
        if !check.path.starts_with('/') {
            let path = here("path", |h| h.path.is_some());
            self.problem(&path, format!("{:?} must start with '/'", check.path));
        }
        if check.interval < Duration::from_millis(10) {
            let path = here("interval", |h| h.interval.is_some());
            self.problem(&path, "interval must be at least 10ms");
        }
        if check.timeout.is_zero() || check.timeout > check.interval {
            let path = here("timeout", |h| h.timeout.is_some());
            self.problem(
                &path,
                "timeout must be above zero and no longer than the interval",
            );
        }
        if check.healthy_threshold == 0 {
            let path = here("healthy_threshold", |h| h.healthy_threshold.is_some());
            self.problem(&path, "threshold must be at least 1");
        }
        if check.unhealthy_threshold == 0 {
            let path = here("unhealthy_threshold", |h| h.unhealthy_threshold.is_some());
            self.problem(&path, "threshold must be at least 1");
        }
        check
    }

    fn ejection(
        &mut self,
        at: &str,
        own: Option<&EjectionSpec>,
        inherited: Option<&EjectionSpec>,
    ) -> Ejection {
        let pick = |f: fn(&EjectionSpec) -> Option<Duration>, default: Duration| {
            own.and_then(f).or(inherited.and_then(f)).unwrap_or(default)
        };
        let ejection = Ejection {
            base: pick(|e| e.base, Duration::from_secs(5)),
            max: pick(|e| e.max, Duration::from_secs(60)),
        };
        if ejection.max < ejection.base {
            let path = origin(at, own.is_some_and(|e| e.max.is_some()), "ejection", "max");
            self.problem(&path, "max must be at least base");
        }
        ejection
    }
}

/// The path of a setting: in the service when it is set there, else in `defaults`.
fn origin(service_at: &str, set_in_service: bool, section: &str, field: &str) -> String {
    let base = if set_in_service {
        service_at
    } else {
        "defaults"
    };
    if section.is_empty() {
        format!("{base}.{field}")
    } else {
        format!("{base}.{section}.{field}")
    }
}

/// True for a DNS label: 1–63 of `[a-z0-9-]`, not starting or ending with `-` (service and
/// tenant-class names; Kubernetes namespaces and object names).
pub(crate) fn is_label(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Parses `text` as the file `p.yaml`: the policy, or every problem rendered as a user sees
/// it. Shared by the config crate's tests.
#[cfg(test)]
pub(crate) fn parse_rendered(text: &str) -> Result<Policy, Vec<String>> {
    Policy::parse(text, Path::new("p.yaml")).map_err(|e| match e {
        LoadError::Invalid { problems, .. } => problems.iter().map(ToString::to_string).collect(),
        other => vec![other.to_string()],
    })
}

#[cfg(test)]
mod tests;
