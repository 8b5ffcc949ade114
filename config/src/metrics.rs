//! The `metrics:` section: how much of each service `GET /metrics` writes, so its size and
//! cardinality stay bounded with thousands of services.
//!
//! ```yaml
//! metrics:
//!   forecast_detail: ensemble   # or all: every model's weight and errors too
//!   top_services: 100           # services by load that get the detailed series (0: none)
//! ```
//!
//! Every service writes its instance counts and its non-zero counters; the `top_services`
//! busiest (by stable arrival rate, ties by name), and any service panicking or holding
//! requests, also write their detail (per instance, latency histogram, rates, forecasts).

use serde::Deserialize;

use crate::check::Checker;

/// Default number of services that get the detailed series.
pub const DEFAULT_TOP_SERVICES: u32 = 100;
/// Most services `metrics.top_services` may ask detail for.
pub const MAX_TOP_SERVICES: u32 = 100_000;

/// The `metrics:` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSpec {
    /// Which forecast series detailed services write (default `ensemble`).
    pub forecast_detail: Option<ForecastDetail>,
    /// How many services, by load, write the detailed series (default 100; 0: none).
    pub top_services: Option<u32>,
}

/// Which forecast series a detailed service writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForecastDetail {
    /// The ensemble's forecast and its own errors only (the default).
    #[default]
    Ensemble,
    /// Also every model's weight and errors at every horizon.
    All,
}

/// The resolved `metrics:` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Which forecast series detailed services write.
    pub forecast_detail: ForecastDetail,
    /// How many services, by load, write the detailed series.
    pub top_services: u32,
}

// === impl MetricsConfig ===

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            forecast_detail: ForecastDetail::Ensemble,
            top_services: DEFAULT_TOP_SERVICES,
        }
    }
}

// === impl Checker ===

impl Checker<'_> {
    /// Resolves the `metrics:` section.
    pub(crate) fn metrics(&mut self, raw: &MetricsSpec) -> MetricsConfig {
        let top_services = raw.top_services.unwrap_or(DEFAULT_TOP_SERVICES);
        if top_services > MAX_TOP_SERVICES {
            self.problem(
                "metrics.top_services",
                format!("{top_services} is more than {MAX_TOP_SERVICES} services"),
            );
        }
        MetricsConfig {
            forecast_detail: raw.forecast_detail.unwrap_or_default(),
            top_services: top_services.min(MAX_TOP_SERVICES),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse_rendered as parse;

    #[test]
    fn defaults_and_written_values_resolve() {
        let plain = parse("services: []\n").expect("valid");
        assert_eq!(plain.metrics, MetricsConfig::default());
        assert_eq!(
            (plain.metrics.forecast_detail, plain.metrics.top_services),
            (ForecastDetail::Ensemble, 100)
        );
        let all = parse("metrics:\n  forecast_detail: all\n  top_services: 0\n").expect("valid");
        assert_eq!(all.metrics.forecast_detail, ForecastDetail::All);
        assert_eq!(
            all.metrics.top_services, 0,
            "0 is allowed: no service by load"
        );
        let most = parse("metrics: { top_services: 100000 }\n").expect("valid");
        assert_eq!(most.metrics.top_services, MAX_TOP_SERVICES);
    }

    #[test]
    fn bad_values_are_located() {
        let found = parse("services: []\nmetrics:\n  top_services: 100001\n").expect_err("invalid");
        assert_eq!(
            found,
            ["p.yaml:3:17: metrics.top_services: 100001 is more than 100000 services"]
        );
        // An unknown level is a type error: located by the parser, naming what is allowed.
        let found = parse("metrics:\n  forecast_detail: models\n").expect_err("invalid");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("p.yaml:2:20: "), "{found:?}");
        assert!(
            found[0].contains("unknown variant `models`, expected `ensemble` or `all`"),
            "{found:?}"
        );
        let found = parse("metrics:\n  top_services: -1\n").expect_err("invalid");
        assert!(found[0].starts_with("p.yaml:2:17: "), "{found:?}");
        let found = parse("metrics:\n  top: 5\n").expect_err("invalid");
        assert!(found[0].contains("unknown field `top`"), "{found:?}");
    }
}
