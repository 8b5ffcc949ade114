//! `GET /v1/services/{name}/readiness`: which instances of a service are confirmed ready, why the
//! others are not, its flagged versions, its scaling and the load coming (for routing services).

use forecourt_orchestrator::predeploy::VersionBoard;
use forecourt_orchestrator::{ForecastBoard, ScalingBoard};
use serde::Serialize;

use crate::snapshot::ServiceRuntime;

/// One ready instance in the readiness answer.
#[derive(Debug, Serialize)]
pub struct ReadyInstance {
    /// `ip:port`.
    pub address: String,
    /// Version label.
    pub version: String,
    /// Requests in flight to it now.
    pub in_flight: u32,
    /// Response latency EWMA in milliseconds.
    pub latency_ewma_ms: f64,
    /// From when Forecourt learned of it to its first confirmed-ready probe.
    pub time_to_ready_ms: Option<u64>,
}

/// One instance that gets no traffic, and why.
#[derive(Debug, Serialize)]
pub struct NotReadyInstance {
    /// `ip:port`.
    pub address: String,
    /// Version label.
    pub version: String,
    /// Why it gets no traffic.
    pub reason: String,
}

/// The readiness of one service, as routing services read it.
#[derive(Debug, Serialize)]
pub struct Readiness {
    /// Service name.
    pub service: String,
    /// Instances that get traffic now.
    pub ready: Vec<ReadyInstance>,
    /// Instances that do not, with reasons.
    pub not_ready: Vec<NotReadyInstance>,
    /// The load now and what is forecast (absent until the control loop's first tick).
    pub load: Option<LoadOutlook>,
    /// Replicas ordered and desired, and why (scaled services only).
    pub scaling: Option<ScalingOutlook>,
    /// The flagged versions (services with `versions:` only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<VersionOutlook>,
}

/// One flagged version: its replicas and its flag's traffic.
#[derive(Debug, Serialize)]
pub struct VersionOutlook {
    /// The version's name (instances of it show it as their `version`).
    pub version: String,
    /// The feature-flag value whose requests go to it.
    pub flag: String,
    /// Where flagged requests go until it is ready: `stable` or `hold`.
    pub until_ready: &'static str,
    /// Whether its flag was seen within the grace period, so its replicas are kept.
    pub active: bool,
    /// Replicas ordered from the orchestrator (after the control loop's first tick).
    pub ordered: Option<u32>,
    /// Instances of it confirmed ready.
    pub ready: usize,
    /// Milliseconds since a request carrying its flag was last seen.
    pub flag_last_seen_ms_ago: Option<u64>,
    /// Requests carrying its flag in the last minute.
    pub flag_requests_last_minute: u64,
    /// The orchestrator's last refusal, while its orders keep failing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A scaled service's replicas and the load they are sized for.
#[derive(Debug, Serialize)]
pub struct ScalingOutlook {
    /// Replicas ordered from the orchestrator.
    pub ordered: u32,
    /// Replicas the policy wants now.
    pub desired: u32,
    /// Why, as a stable label.
    pub reason: &'static str,
    /// Load forecast at the horizon (upper bound plus dependency demand).
    pub predicted_load: f64,
    /// Capacity of the replicas, in `capacity_kind` units.
    pub capacity: f64,
    /// `requests_per_second` or `concurrency`.
    pub capacity_kind: &'static str,
    /// Horizon of the forecast used, in seconds.
    pub horizon_seconds: u64,
    /// Measured order-to-ready time (90th percentile), once measured.
    pub time_to_ready_ms: Option<u64>,
    /// Requests waiting for a ready instance now.
    pub held_requests: u64,
}

/// A service's current load and forecast, for routing services planning ahead.
#[derive(Debug, Serialize)]
pub struct LoadOutlook {
    /// Arrivals per second over the stable window.
    pub rate: f64,
    /// Whether the short window runs far above the stable one.
    pub panicking: bool,
    /// Requests in flight now.
    pub in_flight: i64,
    /// The forecast at each horizon.
    pub forecast: Vec<HorizonOutlook>,
}

/// The forecast at one horizon.
#[derive(Debug, Serialize)]
pub struct HorizonOutlook {
    /// Seconds ahead.
    pub horizon_seconds: u64,
    /// Expected arrivals per second.
    pub point: f64,
    /// Upper bound from the forecast's own recent errors.
    pub upper: f64,
}

/// Builds the readiness answer of one service.
pub fn readiness(
    service: &ServiceRuntime,
    board: &ForecastBoard,
    scaling: &ScalingBoard,
    versions: &VersionBoard,
    now_ms: u64,
) -> Readiness {
    let mut ready = Vec::new();
    let mut not_ready = Vec::new();
    let threshold = service.config.health_check.healthy_threshold;
    for instance in service.instances.all().iter() {
        let address = instance.address.to_string();
        let version = instance.version.to_string();
        if !instance.is_ready() {
            let reason = match instance.warm_up() {
                forecourt_orchestrator::WarmUp::Running => {
                    "warming up (health checks passed)".to_owned()
                }
                _ => instance.health().reason(threshold),
            };
            not_ready.push(NotReadyInstance {
                address,
                version,
                reason,
            });
        } else if let Some(until) = instance.ejected_until(now_ms) {
            let reason = format!(
                "ejected for {}ms after failures on live traffic",
                until - now_ms
            );
            not_ready.push(NotReadyInstance {
                address,
                version,
                reason,
            });
        } else {
            ready.push(ReadyInstance {
                address,
                version,
                in_flight: instance.in_flight(),
                latency_ewma_ms: instance.latency_ewma_us() / 1000.0,
                time_to_ready_ms: instance
                    .time_to_ready()
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            });
        }
    }
    let round = |v: f64| (v * 1_000.0).round() / 1_000.0;
    let load = board.service(&service.config.name).map(|f| LoadOutlook {
        rate: round(f.stable_rate),
        panicking: f.panicking,
        in_flight: f.in_flight,
        forecast: f
            .horizons
            .iter()
            .map(|h| HorizonOutlook {
                horizon_seconds: h.horizon_sec,
                point: round(h.point),
                upper: round(h.upper),
            })
            .collect(),
    });
    let scaling = scaling
        .service(&service.config.name)
        .map(|s| ScalingOutlook {
            ordered: s.ordered,
            desired: s.desired,
            reason: s.reason.as_str(),
            predicted_load: round(s.predicted_load),
            capacity: round(s.capacity),
            capacity_kind: s.capacity_kind,
            horizon_seconds: s.horizon_secs,
            time_to_ready_ms: s.time_to_ready_ms,
            held_requests: service
                .metrics
                .held_now
                .load(std::sync::atomic::Ordering::Relaxed),
        });
    let ready_set = service.instances.ready();
    let versions = service
        .versions
        .iter()
        .map(|v| {
            let status = versions.version(&service.config.name, &v.config.version);
            VersionOutlook {
                version: v.config.version.clone(),
                flag: v.config.flag.clone(),
                until_ready: match v.config.until_ready {
                    forecourt_config::UntilReady::Stable => "stable",
                    forecourt_config::UntilReady::Hold => "hold",
                },
                active: status.is_some_and(|s| s.active),
                ordered: status.map(|s| s.ordered),
                ready: ready_set.version(&v.config.version).len(),
                flag_last_seen_ms_ago: v
                    .stats
                    .last_seen_ms()
                    .map(|seen| now_ms.saturating_sub(seen)),
                flag_requests_last_minute: v.stats.requests_last_minute(now_ms),
                error: status.and_then(|s| s.error.clone()),
            }
        })
        .collect();
    Readiness {
        service: service.config.name.clone(),
        ready,
        not_ready,
        load,
        scaling,
        versions,
    }
}
