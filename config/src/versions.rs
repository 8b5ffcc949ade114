//! Versions pre-deployed for feature-flagged traffic (`versions:` of a service).
//!
//! ```yaml
//! services:
//!   - name: shop
//!     versions:
//!       - flag: beta                         # requests whose feature flag is "beta"
//!         image: registry.example/shop:2.0   # kubernetes: the version's image
//!         labels: { track: beta }            # kubernetes: its pods' extra labels
//!         command: ["{forecourt}", backend, --port, "{port}"]   # local: its command
//!         replicas: 1
//!         until_ready: stable                # or hold
//!         grace: 10m
//!         when_idle: scale_to_zero           # or delete
//! ```
//!
//! When flagged traffic is seen (or forecast), the version's instances are ordered; flagged
//! requests go to them once confirmed ready, to the stable version (or held) until then. After
//! `grace` without flagged traffic the version is scaled to zero (or deleted).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::check::{is_label, Checker};
use crate::launch::PORT_PLACEHOLDER;

/// Default version label of an instance: the version unflagged requests go to.
pub const DEFAULT_VERSION: &str = "stable";

/// One `versions:` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionSpec {
    /// The feature-flag value whose requests go to this version.
    pub flag: String,
    /// The version's name (default: the flag value).
    pub version: Option<String>,
    /// Kubernetes: the image of the version's container.
    pub image: Option<String>,
    /// Kubernetes: which container gets the image (default: the first).
    pub container: Option<String>,
    /// Kubernetes: labels added to (or replacing) the stable pods' labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Local: the version's command (default: the service's `launch.command`).
    pub command: Option<Vec<String>>,
    /// Instances kept while the flag's traffic is seen or forecast (default 1).
    pub replicas: Option<u32>,
    /// Where flagged requests go until the version has a ready instance (default `stable`).
    pub until_ready: Option<UntilReady>,
    /// How long after the flag's last request the version is kept (default 10m).
    #[serde(default, deserialize_with = "crate::de::duration")]
    pub grace: Option<Duration>,
    /// What happens after the grace period (default `scale_to_zero`).
    pub when_idle: Option<WhenIdle>,
}

/// Where flagged requests go while their version has no ready instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UntilReady {
    /// To the stable version's ready instances.
    #[default]
    Stable,
    /// Held (like any request without a ready instance) until the version is ready.
    Hold,
}

/// What is done with a version whose flag has had no traffic for the grace period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenIdle {
    /// Keep its Deployment with zero replicas (a later flag starts it faster).
    #[default]
    ScaleToZero,
    /// Delete what was created for it.
    Delete,
}

/// A resolved `versions:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionConfig {
    /// The feature-flag value.
    pub flag: String,
    /// The version's name.
    pub version: String,
    /// Kubernetes: the container image.
    pub image: Option<String>,
    /// Kubernetes: the container that gets the image; `None` = the first.
    pub container: Option<String>,
    /// Kubernetes: extra pod labels.
    pub labels: Vec<(String, String)>,
    /// Local: the command template; `None` = the service's launch command.
    pub command: Option<Vec<String>>,
    /// Instances while the flag is active.
    pub replicas: u32,
    /// Where flagged requests go until the version is ready.
    pub until_ready: UntilReady,
    /// How long after the flag's last request the version is kept.
    pub grace: Duration,
    /// What happens after the grace period.
    pub when_idle: WhenIdle,
}

/// Most instances a flagged version may ask for.
pub const MAX_VERSION_REPLICAS: u32 = 100;

// === impl Checker ===

impl Checker<'_> {
    /// Resolves a service's `versions:` list.
    pub(crate) fn versions(&mut self, at: &str, specs: &[VersionSpec]) -> Vec<VersionConfig> {
        let mut out: Vec<VersionConfig> = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let at = format!("{at}.versions[{i}]");
            if spec.flag.is_empty() || spec.flag.len() > 256 {
                self.problem(&format!("{at}.flag"), "give the flag value, 1-256 bytes");
            }
            let version = spec.version.clone().unwrap_or_else(|| spec.flag.clone());
            if !is_label(&version) || version.len() > 30 {
                self.problem(
                    &format!("{at}.version"),
                    format!("version {version:?} must be 1-30 lowercase letters, digits and '-' (it becomes part of object names); set version: when the flag value is not"),
                );
            }
            if version == DEFAULT_VERSION {
                self.problem(
                    &format!("{at}.version"),
                    format!(
                        "{:?} is the version unflagged requests go to",
                        DEFAULT_VERSION
                    ),
                );
            }
            if out.iter().any(|v| v.flag == spec.flag) {
                self.problem(&format!("{at}.flag"), "another version has this flag");
            }
            if out.iter().any(|v| v.version == version) {
                self.problem(&format!("{at}.version"), "another entry has this version");
            }
            if let Some(image) = &spec.image {
                if image.trim().is_empty() || image.contains(char::is_whitespace) {
                    self.problem(&format!("{at}.image"), "give an image reference");
                }
            }
            for (key, value) in &spec.labels {
                if !is_label_key(key) {
                    self.problem(&format!("{at}.labels.{key}"), "not a Kubernetes label key");
                }
                if !is_label_value(value) {
                    self.problem(
                        &format!("{at}.labels.{key}"),
                        "a label value is at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
                    );
                }
            }
            if let Some(command) = &spec.command {
                if command.first().is_none_or(|p| p.trim().is_empty()) {
                    self.problem(
                        &format!("{at}.command"),
                        "give the program and its arguments",
                    );
                }
                if !command.iter().any(|a| a.contains(PORT_PLACEHOLDER)) {
                    self.problem(
                        &format!("{at}.command"),
                        "the command must contain {port}: each instance gets its own port",
                    );
                }
            }
            let replicas = spec.replicas.unwrap_or(1);
            if !(1..=MAX_VERSION_REPLICAS).contains(&replicas) {
                self.problem(
                    &format!("{at}.replicas"),
                    format!("must be between 1 and {MAX_VERSION_REPLICAS}"),
                );
            }
            let grace = spec.grace.unwrap_or(Duration::from_secs(600));
            if grace < Duration::from_secs(1) {
                self.problem(&format!("{at}.grace"), "at least 1s");
            }
            out.push(VersionConfig {
                flag: spec.flag.clone(),
                version,
                image: spec.image.clone(),
                container: spec.container.clone(),
                labels: spec
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                command: spec.command.clone(),
                replicas,
                until_ready: spec.until_ready.unwrap_or_default(),
                grace,
                when_idle: spec.when_idle.unwrap_or_default(),
            });
        }
        out
    }
}

/// Whether `key` is a label key: an optional DNS-subdomain prefix and `/`, then a name.
fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok =
        prefix.is_none_or(|p| !p.is_empty() && p.len() <= 253 && p.split('.').all(is_label));
    prefix_ok && !name.is_empty() && is_label_value(name)
}

/// Whether `value` is a label value (empty allowed).
fn is_label_value(value: &str) -> bool {
    let edge = |c: Option<char>| c.is_none_or(|c| c.is_ascii_alphanumeric());
    value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && edge(value.chars().next())
        && edge(value.chars().last())
}
