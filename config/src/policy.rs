//! The validated policy: every section resolved, defaults filled in, every problem located.
//!
//! ```text
//!  text ──► serde ──► PolicyFile ──► Checker::policy ──► no problem: Policy
//!             │                        (each section,    │
//!             │ a syntax or type        then the checks   │ any problem
//!             ▼ error                   across services)  ▼
//!           LoadError::Invalid { problems } ◄─────────────┘
//! ```

use std::path::{Path, PathBuf};

use crate::admission::{AdminAccess, Limits};
use crate::check::{Checker, Problem};
use crate::forecast::ForecastConfig;
use crate::kubernetes::KubernetesConfig;
use crate::listeners::Listeners;
use crate::metadata::Metadata;
use crate::metrics::MetricsConfig;
use crate::scaling::{self, Dependency};
use crate::schema::PolicyFile;
use crate::service::ServiceConfig;
use crate::source_map::Position;

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
    pub admin: AdminAccess,
    /// The services, in file order.
    pub services: Vec<ServiceConfig>,
    /// Forecast horizons and scheduled events.
    pub forecast: ForecastConfig,
    /// How Forecourt talks to Kubernetes (defaults when the file has no `kubernetes:`).
    pub kubernetes: KubernetesConfig,
    /// How much of each service `GET /metrics` writes.
    pub metrics: MetricsConfig,
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
        let mut check = Checker::new(file, text);
        let policy = check.policy(raw);
        let problems = check.into_problems();
        if problems.is_empty() {
            Ok(policy)
        } else {
            Err(LoadError::Invalid {
                file: file.to_owned(),
                problems,
            })
        }
    }

    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceConfig> {
        self.services.iter().find(|s| s.name == name)
    }
}

// === impl Checker ===

impl Checker<'_> {
    /// Resolves every section of `raw`, then the checks across services.
    fn policy(&mut self, raw: PolicyFile) -> Policy {
        let listeners = self.listeners(&raw.listeners);
        let metadata = self.metadata(raw.metadata);
        let limits = self.limits(&raw.limits, &metadata);
        let services = self.services(raw.services, &raw.defaults);
        scaling::check_defaults(raw.defaults.scaling.as_ref(), &mut |path, message| {
            self.problem(path, message)
        });
        let graph: Vec<(&str, &[Dependency])> = services
            .iter()
            .map(|s| (s.name.as_str(), s.dependencies.as_slice()))
            .collect();
        scaling::check_graph(&graph, &mut |path, message| self.problem(path, message));
        let names: Vec<&str> = graph.iter().map(|(name, _)| *name).collect();
        let forecast = self.forecast(raw.forecast, &names);
        let kubernetes = self.kubernetes(raw.kubernetes.as_ref());
        let admin = self.admin(&raw.admin);
        let metrics = self.metrics(&raw.metrics);
        Policy {
            listeners,
            metadata,
            limits,
            services,
            forecast,
            admin,
            kubernetes,
            metrics,
        }
    }
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
