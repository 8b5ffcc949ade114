//! How the proxy treats a service's instances: upstream timeouts (`timeouts:`), active health
//! checks (`health_check:`) and passive ejection on failures seen in live traffic (`ejection:`).
//!
//! Each is set in `defaults` or in the service, field by field; a problem is reported where the
//! offending value was written.
//!
//! ```yaml
//! defaults:
//!   timeouts: { connect: 1s, read: 30s, write: 30s, idle: 60s }
//!   health_check: { path: /healthz, interval: 1s, timeout: 500ms, healthy_threshold: 2 }
//!   ejection: { base: 5s, max: 60s }
//! ```

use std::time::Duration;

use serde::Deserialize;

use crate::check::{origin, Checker};

/// Upstream timeouts.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsSpec {
    /// TCP connect timeout.
    #[serde(default, deserialize_with = "crate::de::duration")]
    pub connect: Option<Duration>,
    /// Timeout of each read from the upstream.
    #[serde(default, deserialize_with = "crate::de::duration")]
    pub read: Option<Duration>,
    /// Timeout of each write to the upstream.
    #[serde(default, deserialize_with = "crate::de::duration")]
    pub write: Option<Duration>,
    /// How long a pooled upstream connection may stay idle.
    #[serde(default, deserialize_with = "crate::de::duration")]
    pub idle: Option<Duration>,
}

/// Active health check settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSpec {
    /// HTTP path probed with GET.
    pub path: Option<String>,
    /// Time between probes.
    #[serde(default, deserialize_with = "crate::de::duration")]
    pub interval: Option<Duration>,
    /// Probe timeout.
    #[serde(default, deserialize_with = "crate::de::duration")]
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
    #[serde(default, deserialize_with = "crate::de::duration")]
    pub base: Option<Duration>,
    /// Longest ejection after repeated failures.
    #[serde(default, deserialize_with = "crate::de::duration")]
    pub max: Option<Duration>,
    /// The largest share of a service's ready instances ejected at once, in percent (default 50;
    /// one instance may always be ejected).
    pub max_percent: Option<u8>,
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
    /// The largest share of a service's ready instances ejected at once, in percent.
    pub max_percent: u8,
}

// === impl Checker ===

impl Checker<'_> {
    /// Resolves a service's `timeouts:` over `defaults.timeouts` over built-ins.
    pub(crate) fn timeouts(
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

    /// Resolves a service's `health_check:` over `defaults.health_check` over built-ins.
    pub(crate) fn health_check(
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

    /// Resolves a service's `ejection:` over `defaults.ejection` over built-ins.
    pub(crate) fn ejection(
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
            max_percent: own
                .and_then(|e| e.max_percent)
                .or(inherited.and_then(|e| e.max_percent))
                .unwrap_or(50),
        };
        if ejection.max_percent > 100 {
            let set = own.is_some_and(|e| e.max_percent.is_some());
            let path = origin(at, set, "ejection", "max_percent");
            self.problem(&path, "a percentage: at most 100");
        }
        if ejection.max < ejection.base {
            let path = origin(at, own.is_some_and(|e| e.max.is_some()), "ejection", "max");
            self.problem(&path, "max must be at least base");
        }
        ejection
    }
}
