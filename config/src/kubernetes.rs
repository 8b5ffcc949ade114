//! Where a service runs on Kubernetes (`kubernetes:` of a service), how Forecourt talks to the
//! API server and how its replicas elect the one that scales (top-level `kubernetes:`).
//!
//! ```yaml
//! kubernetes:
//!   namespace: shop                # default: $POD_NAMESPACE, else the kubeconfig's
//!   field_manager: forecourt
//!   leader_election: { lease: forecourt, duration: 15s }
//!   retry: { base: 500ms, max: 30s }
//! services:
//!   - name: shop
//!     kubernetes: { deployment: shop, service: shop, port: http }
//! ```

use std::time::Duration;

use serde::Deserialize;

use crate::check::{is_label, Checker};

/// Default field manager of Forecourt's writes.
pub const DEFAULT_FIELD_MANAGER: &str = "forecourt";
/// Default name of the leader Lease.
pub const DEFAULT_LEASE: &str = "forecourt";

/// Top-level `kubernetes:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSpec {
    /// Namespace of services that name none.
    pub namespace: Option<String>,
    /// Field manager of every write (default `forecourt`).
    pub field_manager: Option<String>,
    /// The Lease the Forecourt replicas elect their leader with.
    #[serde(default)]
    pub leader_election: LeaderElectionSpec,
    /// Back-off of failed API calls.
    #[serde(default)]
    pub retry: RetrySpec,
}

/// `kubernetes.leader_election:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderElectionSpec {
    /// Lease name (default `forecourt`).
    pub lease: Option<String>,
    /// Lease namespace (default `kubernetes.namespace`).
    pub namespace: Option<String>,
    /// How long a leader that stopped renewing keeps the lease (default 15s).
    #[serde(default, deserialize_with = "crate::de::duration")]
    pub duration: Option<Duration>,
}

/// `kubernetes.retry:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// First wait after a failed call (default 500ms).
    #[serde(default, deserialize_with = "crate::de::duration")]
    pub base: Option<Duration>,
    /// Longest wait (default 30s).
    #[serde(default, deserialize_with = "crate::de::duration")]
    pub max: Option<Duration>,
}

/// A service's `kubernetes:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceKubernetesSpec {
    /// The Deployment whose scale subresource Forecourt patches.
    pub deployment: String,
    /// Its namespace (default `kubernetes.namespace`).
    pub namespace: Option<String>,
    /// The Service whose EndpointSlices list the instances (default: the deployment's name).
    pub service: Option<String>,
    /// Which EndpointSlice port: a name or a number (default: the first).
    pub port: Option<PortSpec>,
}

/// An EndpointSlice port by name or number.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum PortSpec {
    /// The port's number.
    Number(u16),
    /// The port's name.
    Name(String),
}

/// The resolved top-level `kubernetes:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesConfig {
    /// Namespace of services that name none; `None` = `$POD_NAMESPACE`, else the kubeconfig's.
    pub namespace: Option<String>,
    /// Field manager of every write.
    pub field_manager: String,
    /// Leader election.
    pub leader_election: LeaderElection,
    /// First wait after a failed API call.
    pub retry_base: Duration,
    /// Longest wait after failed API calls.
    pub retry_max: Duration,
}

/// How the Forecourt replicas elect the one that scales.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderElection {
    /// Lease name; each replica's window counts go on `<lease>-<identity>`.
    pub lease: String,
    /// Lease namespace; `None` = the default namespace.
    pub namespace: Option<String>,
    /// How long a leader that stopped renewing keeps the lease.
    pub duration: Duration,
}

// === impl KubernetesConfig ===

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            namespace: None,
            field_manager: DEFAULT_FIELD_MANAGER.to_owned(),
            leader_election: LeaderElection {
                lease: DEFAULT_LEASE.to_owned(),
                namespace: None,
                duration: Duration::from_secs(15),
            },
            retry_base: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
        }
    }
}

/// Where a service's instances run on Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceKubernetes {
    /// The Deployment Forecourt scales.
    pub deployment: String,
    /// Its namespace; `None` = the default namespace.
    pub namespace: Option<String>,
    /// The Service whose EndpointSlices list the instances.
    pub service: String,
    /// Which EndpointSlice port; `None` = the first.
    pub port: Option<PortSpec>,
}

// === impl Checker ===

impl Checker<'_> {
    /// Resolves the top-level `kubernetes:` section.
    pub(crate) fn kubernetes(&mut self, spec: Option<&KubernetesSpec>) -> KubernetesConfig {
        let defaults = KubernetesConfig::default();
        let Some(spec) = spec else {
            return defaults;
        };
        if let Some(namespace) = &spec.namespace {
            self.object_name("kubernetes.namespace", namespace);
        }
        let election = &spec.leader_election;
        if let Some(lease) = &election.lease {
            self.object_name("kubernetes.leader_election.lease", lease);
        }
        if let Some(namespace) = &election.namespace {
            self.object_name("kubernetes.leader_election.namespace", namespace);
        }
        let duration = election
            .duration
            .unwrap_or(defaults.leader_election.duration);
        if !(Duration::from_secs(2)..=Duration::from_secs(300)).contains(&duration) {
            self.problem(
                "kubernetes.leader_election.duration",
                "must be between 2s and 5m",
            );
        }
        let field_manager = spec.field_manager.clone().unwrap_or(defaults.field_manager);
        if field_manager.is_empty() || field_manager.len() > 128 {
            self.problem("kubernetes.field_manager", "must be 1 to 128 characters");
        }
        let retry_base = spec.retry.base.unwrap_or(defaults.retry_base);
        let retry_max = spec.retry.max.unwrap_or(defaults.retry_max);
        if retry_base.is_zero() || retry_base > retry_max {
            self.problem(
                "kubernetes.retry.base",
                "must be above 0 and at most retry.max",
            );
        }
        KubernetesConfig {
            namespace: spec.namespace.clone(),
            field_manager,
            leader_election: LeaderElection {
                lease: election
                    .lease
                    .clone()
                    .unwrap_or(defaults.leader_election.lease),
                namespace: election.namespace.clone(),
                duration,
            },
            retry_base,
            retry_max,
        }
    }

    /// Resolves a service's `kubernetes:` section.
    pub(crate) fn service_kubernetes(
        &mut self,
        at: &str,
        spec: &ServiceKubernetesSpec,
    ) -> ServiceKubernetes {
        let at = format!("{at}.kubernetes");
        self.object_name(&format!("{at}.deployment"), &spec.deployment);
        if let Some(namespace) = &spec.namespace {
            self.object_name(&format!("{at}.namespace"), namespace);
        }
        if let Some(service) = &spec.service {
            self.object_name(&format!("{at}.service"), service);
        }
        match &spec.port {
            Some(PortSpec::Number(0)) => {
                self.problem(&format!("{at}.port"), "port 0 is not a port")
            }
            Some(PortSpec::Name(name)) if name.is_empty() => {
                self.problem(&format!("{at}.port"), "give a port name or number")
            }
            _ => {}
        }
        ServiceKubernetes {
            deployment: spec.deployment.clone(),
            namespace: spec.namespace.clone(),
            service: spec
                .service
                .clone()
                .unwrap_or_else(|| spec.deployment.clone()),
            port: spec.port.clone(),
        }
    }

    /// Checks a Kubernetes object name (an RFC 1123 DNS label, as for Services and namespaces).
    pub(crate) fn object_name(&mut self, path: &str, name: &str) {
        if !is_label(name) {
            self.problem(
                path,
                format!("{name:?} is not a Kubernetes name: 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit"),
            );
        }
    }
}
