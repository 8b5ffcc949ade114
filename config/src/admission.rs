//! The `limits:` section (request sizes and timeouts, the global in-flight limit, per-tenant rate
//! and concurrency by tenant class), per-service limits, and who may read the admin API
//! (`admin:`).
//!
//! ```yaml
//! limits:
//!   max_in_flight: 10000      # the whole proxy; beyond it requests get a fast 503
//!   header_timeout: 10s       # every request header must arrive in full within this
//!   send_timeout: 30s         # a write to a client that reads nothing for this long ends it
//!   min_send_rate: 0          # bytes/s a client must read at, per write (0: only send_timeout)
//!   tenant_classes:           # each tenant of a class gets its own bucket and concurrency
//!     standard: { rate: 50, burst: 100, concurrency: 20 }
//!     premium: { rate: 500, burst: 1000 }
//! admin: { public_reads: false }   # with a token, reads need it too unless true
//! services:
//!   - name: shop
//!     limits: { rate: 2000, burst: 4000, concurrency: 500 }   # the whole service
//!     hold: { max_per_tenant: 50 }   # one tenant's burst cannot fill the hold queue
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::check::Checker;
use crate::metadata::Metadata;

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
    #[serde(default, deserialize_with = "crate::de::duration")]
    pub header_timeout: Option<Duration>,
    /// Slowest average request body accepted once it has taken longer than the header timeout,
    /// in bytes per second (default 1024; 0 turns it off).
    pub min_body_rate: Option<u64>,
    /// On SIGTERM, how long requests in flight may take to finish (default 10s).
    #[serde(default, deserialize_with = "crate::de::duration")]
    pub drain_timeout: Option<Duration>,
    /// Longest a write of the answer to a client may take (default 30s).
    #[serde(default, deserialize_with = "crate::de::duration")]
    pub send_timeout: Option<Duration>,
    /// Slowest rate, in bytes per second, a client must read the answer at (default 0: off).
    pub min_send_rate: Option<u64>,
    /// Per-tenant rate and concurrency limits by tenant class.
    #[serde(default)]
    pub tenant_classes: BTreeMap<String, RateSpec>,
}

/// A rate and concurrency limit as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateSpec {
    /// Requests per second, sustained.
    pub rate: Option<f64>,
    /// Requests allowed at once above the rate (default: one second of `rate`).
    pub burst: Option<u32>,
    /// Requests in flight at once.
    pub concurrency: Option<u32>,
}

/// A resolved rate and concurrency limit; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Requests per second, sustained.
    pub rate: Option<f64>,
    /// Requests allowed at once above the rate.
    pub burst: u32,
    /// Requests in flight at once.
    pub concurrency: Option<u32>,
}

// === impl RateLimit ===

impl RateLimit {
    /// No limit at all.
    pub const UNLIMITED: Self = Self {
        rate: None,
        burst: 0,
        concurrency: None,
    };
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
    pub header_timeout: Duration,
    /// Slowest average request body accepted after `header_timeout`, bytes per second (0: off).
    pub min_body_rate: u64,
    /// On SIGTERM, how long requests in flight may take to finish (read at start only).
    pub drain_timeout: Duration,
    /// Longest a write of the answer to a client may take.
    pub send_timeout: Duration,
    /// Slowest rate a client must read at, bytes per second (0: off; then `send_timeout` alone).
    pub min_send_rate: u64,
    /// Per-tenant limits by tenant class name (classes without limits are absent).
    pub tenant_classes: Vec<(String, RateLimit)>,
}

/// `admin:` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSpec {
    /// Read endpoints answer without the token even when one is configured.
    pub public_reads: Option<bool>,
}

/// Who may use the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminAccess {
    /// Read endpoints answer without the token even when one is configured.
    pub public_reads: bool,
}

/// Most requests in flight the proxy may be told to admit.
const MAX_IN_FLIGHT: u32 = 1_000_000;

// === impl Checker ===

impl Checker<'_> {
    /// Resolves a rate and concurrency limit at `at`.
    pub(crate) fn rate_limit(&mut self, at: &str, spec: &RateSpec) -> RateLimit {
        if let Some(rate) = spec.rate {
            if !(rate.is_finite() && rate > 0.0 && rate <= 10_000_000.0) {
                self.problem(
                    &format!("{at}.rate"),
                    "between 0 and 10000000 requests per second",
                );
            }
        }
        if spec.burst == Some(0) {
            self.problem(&format!("{at}.burst"), "at least 1");
        }
        if spec.concurrency == Some(0) {
            self.problem(&format!("{at}.concurrency"), "at least 1");
        }
        if spec.rate.is_none() && spec.burst.is_some() {
            self.problem(&format!("{at}.burst"), "a burst needs a rate");
        }
        let default_burst = spec
            .rate
            .map_or(1, |r| r.ceil().clamp(1.0, f64::from(u32::MAX)) as u32);
        RateLimit {
            rate: spec.rate,
            burst: spec.burst.unwrap_or(default_burst).max(1),
            concurrency: spec.concurrency,
        }
    }

    /// Resolves the `limits:` section; tenant classes must be named in `metadata`.
    pub(crate) fn limits(&mut self, raw: &LimitsSpec, metadata: &Metadata) -> Limits {
        let max_in_flight = raw.max_in_flight.unwrap_or(10_000);
        if max_in_flight == 0 || max_in_flight > MAX_IN_FLIGHT {
            self.problem("limits.max_in_flight", "between 1 and 1000000");
        }
        let header_timeout = raw.header_timeout.unwrap_or(Duration::from_secs(10));
        if header_timeout < Duration::from_millis(100) || header_timeout > Duration::from_secs(300)
        {
            self.problem("limits.header_timeout", "between 100ms and 5m");
        }
        let mut tenant_classes = Vec::new();
        for (class, spec) in &raw.tenant_classes {
            let at = format!("limits.tenant_classes.{class}");
            if !metadata.has_class(class) {
                self.problem(
                    &at,
                    format!("no tenant class {class:?} (metadata.tenant_classes and default_tenant_class name them)"),
                );
            }
            tenant_classes.push((class.clone(), self.rate_limit(&at, spec)));
        }
        let limits = Limits {
            max_header_bytes: raw.max_header_bytes.unwrap_or(32 * 1024),
            max_uri_bytes: raw.max_uri_bytes.unwrap_or(8 * 1024),
            max_in_flight,
            header_timeout,
            drain_timeout: raw.drain_timeout.unwrap_or(Duration::from_secs(10)),
            min_body_rate: raw.min_body_rate.unwrap_or(1024),
            send_timeout: raw.send_timeout.unwrap_or(Duration::from_secs(30)),
            min_send_rate: raw.min_send_rate.unwrap_or(0),
            tenant_classes,
        };
        if limits.send_timeout < Duration::from_millis(100)
            || limits.send_timeout > Duration::from_secs(600)
        {
            self.problem("limits.send_timeout", "between 100ms and 10m");
        }
        if limits.drain_timeout > Duration::from_secs(600) {
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
        limits
    }

    /// Resolves the `admin:` section.
    pub(crate) fn admin(&mut self, raw: &AdminSpec) -> AdminAccess {
        AdminAccess {
            public_reads: raw.public_reads.unwrap_or(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse_rendered as parse;

    #[test]
    fn resolves_tenant_class_service_and_global_limits() {
        let text = "metadata:
  tenant_classes: [{ name: premium, tenants: [acme] }]
limits:
  max_in_flight: 500
  header_timeout: 2s
  tenant_classes:
    standard: { rate: 10, concurrency: 4 }
    premium: { rate: 100, burst: 300 }
admin: { public_reads: true }
services:
  - name: shop
    routes: [{path_prefix: /shop}]
    instances: [{address: 127.0.0.1:9001}]
    limits: { concurrency: 50 }
    hold: { max_requests: 40 }
";
        let policy = parse(text).expect("valid");
        assert_eq!(policy.limits.max_in_flight, 500);
        assert_eq!(policy.limits.header_timeout, Duration::from_secs(2));
        let class = |name: &str| {
            policy
                .limits
                .tenant_classes
                .iter()
                .find(|(c, _)| c == name)
                .map(|(_, l)| *l)
        };
        let standard = class("standard").expect("standard");
        assert_eq!(
            (standard.rate, standard.burst, standard.concurrency),
            (Some(10.0), 10, Some(4))
        );
        assert_eq!(class("premium").expect("premium").burst, 300);
        assert!(policy.admin.public_reads);
        let shop = &policy.services[0];
        let limits = shop.limits.expect("service limits");
        assert_eq!((limits.rate, limits.concurrency), (None, Some(50)));
        assert_eq!(
            shop.hold.max_per_tenant, 10,
            "a quarter of max_requests by default"
        );
        // Nothing written: generous global defaults, no per-tenant limits, reads need the token.
        let plain = parse("services: []\n").expect("valid");
        assert_eq!(plain.limits.max_in_flight, 10_000);
        assert!(plain.limits.tenant_classes.is_empty() && !plain.admin.public_reads);
    }

    #[test]
    fn locates_limit_problems() {
        let text = "limits:
  max_in_flight: 0
  header_timeout: 1ms
  tenant_classes:
    gold: { rate: 10 }
    standard: { rate: -1, burst: 0, concurrency: 0 }
services:
  - name: shop
    routes: [{path_prefix: /shop}]
    instances: [{address: 127.0.0.1:9001}]
    limits: { burst: 5 }
    hold: { max_requests: 10, max_per_tenant: 11 }
";
        let found = parse(text).expect_err("invalid");
        let expected = [
            "p.yaml:2:18: limits.max_in_flight: between 1 and 1000000",
            "p.yaml:3:19: limits.header_timeout: between 100ms and 5m",
            "p.yaml:5:5: limits.tenant_classes.gold: no tenant class \"gold\"",
            "p.yaml:6:23: limits.tenant_classes.standard.rate: between 0",
            "p.yaml:6:34: limits.tenant_classes.standard.burst: at least 1",
            "p.yaml:6:50: limits.tenant_classes.standard.concurrency: at least 1",
            "p.yaml:11:22: services[0].limits.burst: a burst needs a rate",
            "p.yaml:12:47: services[0].hold.max_per_tenant: at least 1 and at most max_requests",
        ];
        for want in expected {
            assert!(
                found.iter().any(|p| p.starts_with(want)),
                "missing {want:?} in {found:#?}"
            );
        }
    }
}
