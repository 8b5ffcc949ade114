//! How a service's instances are started (`launch:`, the `local` orchestrator) and how requests
//! wait for a ready instance (`hold:`).
//!
//! ```yaml
//! services:
//!   - name: shop
//!     launch:
//!       command: ["{forecourt}", backend, --port, "{port}", --boot-delay, 2s]
//!       env: { RUST_LOG: warn }
//!       drain_timeout: 10s
//!       stop_grace: 5s
//!     hold: { max_requests: 1000, timeout: 10s }
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::check::Checker;

/// Placeholder replaced by the instance's port.
pub const PORT_PLACEHOLDER: &str = "{port}";
/// Placeholder replaced by the path of the running `forecourt` binary.
pub const FORECOURT_PLACEHOLDER: &str = "{forecourt}";
/// Most requests one service may hold at once.
pub const MAX_HELD: u32 = 100_000;

/// `launch:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchSpec {
    /// Program and arguments; `{port}`, `{service}`, `{version}` and `{forecourt}` are replaced.
    pub command: Vec<String>,
    /// Environment variables (placeholders replaced in values).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub directory: Option<PathBuf>,
    /// Longest wait for in-flight requests of a removed instance (default 10s).
    #[serde(default, deserialize_with = "crate::de::duration")]
    pub drain_timeout: Option<Duration>,
    /// Wait between SIGTERM and SIGKILL (default 5s).
    #[serde(default, deserialize_with = "crate::de::duration")]
    pub stop_grace: Option<Duration>,
}

/// `hold:` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldSpec {
    /// Most requests held at once for the service; 0 answers 503 at once.
    pub max_requests: Option<u32>,
    /// Longest a request waits for a ready instance.
    #[serde(default, deserialize_with = "crate::de::duration")]
    pub timeout: Option<Duration>,
    /// Most requests of one tenant held at once (default a quarter of `max_requests`).
    pub max_per_tenant: Option<u32>,
}

/// A resolved `launch:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchConfig {
    /// Program and arguments with placeholders.
    pub command: Vec<String>,
    /// Environment variables with placeholders.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub directory: Option<PathBuf>,
    /// Longest wait for in-flight requests of a removed instance.
    pub drain_timeout: Duration,
    /// Wait between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
}

/// How requests wait when no instance is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// Most requests held at once.
    pub max_requests: u32,
    /// Longest wait before `503` with `Retry-After`.
    pub timeout: Duration,
    /// Most requests of one tenant held at once, so one tenant's burst cannot fill the queue.
    pub max_per_tenant: u32,
}

// === impl Hold ===

impl Default for Hold {
    fn default() -> Self {
        Self {
            max_requests: 1_000,
            timeout: Duration::from_secs(10),
            max_per_tenant: 250,
        }
    }
}

// === impl Checker ===

impl Checker<'_> {
    /// Resolves a service's `launch:` section.
    pub(crate) fn launch(&mut self, at: &str, spec: &LaunchSpec) -> LaunchConfig {
        let at = format!("{at}.launch");
        if spec.command.first().is_none_or(|p| p.trim().is_empty()) {
            self.problem(
                &format!("{at}.command"),
                "give the program and its arguments",
            );
        }
        let mentions_port = spec.command.iter().any(|a| a.contains(PORT_PLACEHOLDER))
            || spec.env.values().any(|v| v.contains(PORT_PLACEHOLDER));
        if !mentions_port {
            self.problem(
                &format!("{at}.command"),
                "the command (or an env value) must contain {port}: each instance gets its own port",
            );
        }
        for name in spec.env.keys() {
            if name.is_empty() || name.contains(['=', '\0']) {
                self.problem(
                    &format!("{at}.env"),
                    format!("{name:?} is not a variable name"),
                );
            }
        }
        let drain_timeout = spec.drain_timeout.unwrap_or(Duration::from_secs(10));
        let stop_grace = spec.stop_grace.unwrap_or(Duration::from_secs(5));
        if drain_timeout > Duration::from_secs(3_600) {
            self.problem(&format!("{at}.drain_timeout"), "at most 1h");
        }
        if stop_grace.is_zero() || stop_grace > Duration::from_secs(600) {
            self.problem(&format!("{at}.stop_grace"), "between 1ms and 10m");
        }
        LaunchConfig {
            command: spec.command.clone(),
            env: spec
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            directory: spec.directory.clone(),
            drain_timeout,
            stop_grace,
        }
    }

    /// Resolves `hold:` from the service, then `defaults`, then built-in defaults.
    pub(crate) fn hold(
        &mut self,
        at: &str,
        own: Option<&HoldSpec>,
        inherited: Option<&HoldSpec>,
    ) -> Hold {
        let default = Hold::default();
        let max_requests = own
            .and_then(|h| h.max_requests)
            .or(inherited.and_then(|h| h.max_requests))
            .unwrap_or(default.max_requests);
        let timeout = own
            .and_then(|h| h.timeout)
            .or(inherited.and_then(|h| h.timeout))
            .unwrap_or(default.timeout);
        let base = |set: bool| {
            if set {
                at.to_owned()
            } else {
                "defaults".to_owned()
            }
        };
        if max_requests > MAX_HELD {
            let path = base(own.is_some_and(|h| h.max_requests.is_some()));
            self.problem(
                &format!("{path}.hold.max_requests"),
                format!("at most {MAX_HELD}"),
            );
        }
        if timeout > Duration::from_secs(300) {
            let path = base(own.is_some_and(|h| h.timeout.is_some()));
            self.problem(&format!("{path}.hold.timeout"), "at most 5m");
        }
        let max_per_tenant = own
            .and_then(|h| h.max_per_tenant)
            .or(inherited.and_then(|h| h.max_per_tenant))
            .unwrap_or((max_requests / 4).max(1));
        if max_per_tenant == 0 || max_per_tenant > max_requests.max(1) {
            let path = base(own.is_some_and(|h| h.max_per_tenant.is_some()));
            self.problem(
                &format!("{path}.hold.max_per_tenant"),
                "at least 1 and at most max_requests",
            );
        }
        Hold {
            max_requests,
            timeout,
            max_per_tenant,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse_rendered as parse;

    const LAUNCHED: &str = "services:
  - name: shop
    routes: [{path_prefix: /shop}]
    launch:
      command: [\"{forecourt}\", backend, --port, \"{port}\"]
      env: { MODE: fast }
      stop_grace: 2s
    scaling: { capacity: { requests_per_second: 10 } }
";

    #[test]
    fn resolves_launch_and_default_hold() {
        let policy = parse(LAUNCHED).expect("valid");
        let shop = &policy.services[0];
        let launch = shop.launch.as_ref().expect("launch");
        assert_eq!(launch.command[3], "{port}");
        assert_eq!(launch.env, [("MODE".to_owned(), "fast".to_owned())]);
        assert_eq!(launch.drain_timeout, Duration::from_secs(10));
        assert_eq!(launch.stop_grace, Duration::from_secs(2));
        assert_eq!(shop.hold, Hold::default());
        assert!(shop.scaling.is_some());
    }

    #[test]
    fn hold_inherits_from_defaults_field_by_field() {
        let text = format!(
            "defaults:\n  hold: {{ max_requests: 5, timeout: 2s }}\n{}    hold: {{ timeout: 500ms }}\n",
            LAUNCHED
        );
        let policy = parse(&text).expect("valid");
        assert_eq!(
            policy.services[0].hold,
            Hold {
                max_requests: 5,
                timeout: Duration::from_millis(500),
                max_per_tenant: 1,
            }
        );
    }

    #[test]
    fn locates_launch_problems() {
        let text = "services:
  - name: shop
    routes: [{path_prefix: /shop}]
    instances: [{address: 127.0.0.1:9001}]
    launch:
      command: [sleep, \"100\"]
    hold: { max_requests: 1000000, timeout: 1h }
";
        let found = parse(text).expect_err("invalid");
        let expected = [
            "p.yaml:6:7: services[0].launch.command: the command (or an env value) must contain {port}",
            "p.yaml:7:27: services[0].hold.max_requests: at most 100000",
            "p.yaml:7:45: services[0].hold.timeout: at most 5m",
            "p.yaml:5:5: services[0].launch: a launched service needs scaling:",
            "p.yaml:4:5: services[0].instances: give one of a fixed instance list, launch: or kubernetes:",
        ];
        for want in expected {
            assert!(
                found.iter().any(|p| p.starts_with(want)),
                "missing {want:?} in {found:#?}"
            );
        }
        assert_eq!(found.len(), expected.len(), "{found:#?}");
    }
}
