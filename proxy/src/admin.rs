//! The admin API (hyper, its own listener): readiness for routing services, metrics, health.
//!
//! ```text
//! GET /healthz                          200 "ok" while the process serves
//! GET /v1/services                      every service: ready and total instances
//! GET /v1/services/{name}/readiness     ready instances (address, version, in flight, latency),
//!                                       not-ready ones with the reason, flagged versions
//! GET /metrics                          Prometheus text format
//! GET /v1/forecasts                     each service's rate, forecast, upper bound, model errors,
//!                                       and the scheduled events
//! POST /v1/events                       schedule an event (bearer token required)
//! POST /v1/reload                       reload the policy file (bearer token required)
//! GET /v1/config                        the policy file, its generation, the last rejection
//! DELETE /v1/events/{name}              cancel posted events by name (bearer token required)
//! ```

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use http_body_util::{BodyExt as _, Limited};

use crate::metrics::{label, render_requests, write_per_service};
use crate::reload::ReloadOutcome;

mod forecasts;

pub use forecasts::{forecasts_json, render_forecast_metrics, PostedEvent};

/// Largest admin request body.
const MAX_ADMIN_BODY: usize = 64 * 1024;
use forecourt_orchestrator::predeploy::VersionBoard;
use forecourt_orchestrator::{ForecastBoard, ScalingBoard};

use crate::state::{FrontDoor, ServiceRuntime};

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

/// Renders every metric in Prometheus text format.
pub fn render_metrics(front_door: &FrontDoor) -> String {
    let snapshot = front_door.snapshot();
    let mut out = String::with_capacity(8 * 1024);
    let services: Vec<(&str, &crate::metrics::ServiceMetrics)> = snapshot
        .services
        .iter()
        .map(|s| (s.config.name.as_str(), s.metrics.as_ref()))
        .collect();
    render_requests(&mut out, &services, snapshot.metadata.classes());
    render_kubernetes_metrics(&mut out, front_door);

    out.push_str("# HELP forecourt_instances Instances of a service by state.\n# TYPE forecourt_instances gauge\n");
    for s in &snapshot.services {
        let all = s.instances.all();
        let ready = s.instances.ready().instances.len();
        let name = label(&s.config.name);
        let _ = writeln!(
            out,
            "forecourt_instances{{service=\"{name}\",state=\"ready\"}} {ready}"
        );
        let _ = writeln!(
            out,
            "forecourt_instances{{service=\"{name}\",state=\"total\"}} {}",
            all.len()
        );
    }
    out.push_str("# HELP forecourt_instance_in_flight Requests in flight to an instance.\n# TYPE forecourt_instance_in_flight gauge\n");
    for s in &snapshot.services {
        for i in s.instances.all().iter() {
            let _ = writeln!(
                out,
                "forecourt_instance_in_flight{{service=\"{}\",instance=\"{}\"}} {}",
                label(&s.config.name),
                i.address,
                i.in_flight()
            );
        }
    }
    out.push_str("# HELP forecourt_health_checks_total Active health probes by result.\n# TYPE forecourt_health_checks_total counter\n");
    for s in &snapshot.services {
        for i in s.instances.all().iter() {
            let h = i.health();
            let name = label(&s.config.name);
            let _ = writeln!(
                out,
                "forecourt_health_checks_total{{service=\"{name}\",instance=\"{}\",result=\"ok\"}} {}",
                i.address,
                h.probes - h.failed_probes
            );
            let _ = writeln!(
                out,
                "forecourt_health_checks_total{{service=\"{name}\",instance=\"{}\",result=\"fail\"}} {}",
                i.address, h.failed_probes
            );
        }
    }
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    let proxy = &front_door.metrics;
    for (metric, help, value) in [
        (
            "forecourt_unrouted_requests_total",
            "Requests no route matched.",
            &proxy.unrouted,
        ),
        (
            "forecourt_refused_requests_total",
            "Requests refused before routing (framing, size).",
            &proxy.rejected,
        ),
        (
            "forecourt_header_timeouts_total",
            "Connections answered 408 and closed because a request header did not arrive within limits.header_timeout.",
            &proxy.header_timeouts,
        ),
        (
            "forecourt_shed_requests_total",
            "Requests answered a fast 503 because the proxy was at limits.max_in_flight.",
            &proxy.shed,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {metric} {help}\n# TYPE {metric} counter\n{metric} {}",
            value.load(relaxed)
        );
    }
    render_forecast_metrics(&mut out, &front_door.forecasts.load());
    render_scaling_metrics(&mut out, front_door);
    crate::versions::render_metrics(&mut out, &snapshot, &front_door.versions.load());
    render_cache_metrics(&mut out, &snapshot);
    out
}

/// Writes the response caches' and the warmers' counters.
fn render_cache_metrics(out: &mut String, snapshot: &crate::state::Snapshot) {
    use std::sync::atomic::Ordering::Relaxed;
    let cached: Vec<(&str, &crate::caching::ServiceCache)> = snapshot
        .services
        .iter()
        .filter_map(|s| Some((s.config.name.as_str(), s.cache.as_deref()?)))
        .collect();
    out.push_str("# HELP forecourt_cache_requests_total GET and HEAD requests of cached services by how the cache answered.
# TYPE forecourt_cache_requests_total counter
");
    for (name, cache) in &cached {
        let stats = cache.store.stats();
        let coalesced = cache.coalesced.load(Relaxed);
        let hits = stats.hits.load(Relaxed);
        for (result, n) in [
            // Coalesced requests are answered from the cache too, after waiting for a fill.
            ("hit", hits.saturating_sub(coalesced)),
            ("coalesced", coalesced),
            ("revalidated", cache.revalidated.load(Relaxed)),
            ("stale", stats.stale.load(Relaxed)),
            // A coalesced request looked up twice: a miss, then a hit after the fill.
            ("miss", stats.misses.load(Relaxed).saturating_sub(coalesced)),
        ] {
            let _ = writeln!(
                out,
                "forecourt_cache_requests_total{{service=\"{}\",result=\"{result}\"}} {n}",
                label(name)
            );
        }
    }
    write_per_service(
        out,
        "forecourt_cache_hit_ratio",
        "gauge",
        "Share of cache lookups answered from the cache (hits, coalesced, revalidated).",
        cached.iter().map(|(name, cache)| {
            let stats = cache.store.stats();
            let hits = stats.hits.load(Relaxed) + cache.revalidated.load(Relaxed);
            // Every lookup is a hit, a miss or stale; revalidated ones are stale ones answered.
            let all =
                (stats.hits.load(Relaxed) + stats.misses.load(Relaxed) + stats.stale.load(Relaxed))
                    .saturating_sub(cache.coalesced.load(Relaxed));
            (
                *name,
                if all == 0 {
                    0.0
                } else {
                    hits as f64 / all as f64
                },
            )
        }),
    );
    for (metric, kind, help, get) in [
        (
            "forecourt_cache_bytes",
            "gauge",
            "Bytes held by a service's response cache (bodies, headers and overhead).",
            (|c: &crate::caching::ServiceCache| c.store.bytes())
                as fn(&crate::caching::ServiceCache) -> u64,
        ),
        (
            "forecourt_cache_entries",
            "gauge",
            "Responses held by a service's cache.",
            |c| c.store.entries(),
        ),
        (
            "forecourt_cache_stores_total",
            "counter",
            "Responses stored in the cache.",
            |c| c.store.stats().stores.load(Relaxed),
        ),
        (
            "forecourt_cache_refreshes_total",
            "counter",
            "Hot entries re-fetched before they expired (refresh-ahead).",
            |c| c.refreshed.load(Relaxed),
        ),
        (
            "forecourt_cache_too_large_total",
            "counter",
            "Responses over max_object_bytes passed through uncached.",
            |c| c.too_large.load(Relaxed),
        ),
    ] {
        write_per_service(
            out,
            metric,
            kind,
            help,
            cached.iter().map(|(n, c)| (*n, get(c))),
        );
    }
    let warmed: Vec<(&str, &crate::warm::WarmMetrics)> = snapshot
        .services
        .iter()
        .filter(|s| s.config.warm.is_some())
        .map(|s| (s.config.name.as_str(), s.warm_metrics.as_ref()))
        .collect();
    write_per_service(
        out,
        "forecourt_warm_ups_total",
        "counter",
        "New instances warmed before they were confirmed ready.",
        warmed.iter().map(|(n, m)| (*n, m.warm_ups.load(Relaxed))),
    );
    out.push_str("# HELP forecourt_warm_requests_total Warm-up requests sent to new instances, by result.\n# TYPE forecourt_warm_requests_total counter\n");
    for (name, m) in &warmed {
        for (result, n) in [
            ("ok", m.requests_ok.load(Relaxed)),
            ("failed", m.requests_failed.load(Relaxed)),
        ] {
            let _ = writeln!(
                out,
                "forecourt_warm_requests_total{{service=\"{}\",result=\"{result}\"}} {n}",
                label(name)
            );
        }
    }
    write_per_service(
        out,
        "forecourt_warm_timeouts_total",
        "counter",
        "Warm-ups cut short by warm.timeout.",
        warmed.iter().map(|(n, m)| (*n, m.timed_out.load(Relaxed))),
    );
}

/// Writes the Kubernetes backend's and the leader election's counters, when connected.
fn render_kubernetes_metrics(out: &mut String, front_door: &FrontDoor) {
    use forecourt_orchestrator::kubernetes::ApiCall;
    use std::sync::atomic::Ordering::Relaxed;
    let Some((kubernetes, leadership)) = front_door.kubernetes.get() else {
        return;
    };
    let stats = kubernetes.stats();
    let election = leadership.stats();
    out.push_str("# HELP forecourt_kubernetes_api_errors_total Failed or timed-out Kubernetes API calls, by call (each is retried).\n# TYPE forecourt_kubernetes_api_errors_total counter\n");
    for call in ApiCall::ALL {
        let _ = writeln!(
            out,
            "forecourt_kubernetes_api_errors_total{{call=\"{}\"}} {}",
            call.as_str(),
            stats.errors(call)
        );
    }
    let _ = writeln!(
        out,
        "forecourt_kubernetes_api_errors_total{{call=\"lease\"}} {}",
        election.api_errors
    );
    for (name, kind, help, value) in [
        (
            "forecourt_kubernetes_scale_patches_total",
            "counter",
            "Patches of a Deployment's scale subresource that succeeded.",
            stats.scale_patches.load(Relaxed),
        ),
        (
            "forecourt_kubernetes_external_changes_total",
            "counter",
            "Replica counts found changed outside Forecourt (re-planned from, never reverted).",
            stats.external_changes.load(Relaxed),
        ),
        (
            "forecourt_kubernetes_watch_restarts_total",
            "counter",
            "EndpointSlice watches that failed and were restarted.",
            stats.watch_restarts.load(Relaxed),
        ),
        (
            "forecourt_kubernetes_endpoint_updates_total",
            "counter",
            "Changes of a service's instance list taken from its EndpointSlices.",
            stats.endpoint_updates.load(Relaxed),
        ),
        (
            "forecourt_leader",
            "gauge",
            "1 while this replica holds the leader Lease and makes the scaling decisions.",
            u64::from(election.is_leader),
        ),
        (
            "forecourt_leader_transitions_total",
            "counter",
            "Times this replica became or stopped being the leader.",
            election.transitions,
        ),
        (
            "forecourt_leader_renewals_total",
            "counter",
            "Renewals of the leader Lease by this replica.",
            election.renewals,
        ),
        (
            "forecourt_lease_conflicts_total",
            "counter",
            "Lease writes refused because another replica wrote first.",
            election.conflicts,
        ),
        (
            "forecourt_peers",
            "gauge",
            "Other Forecourt replicas whose window counts are fresh.",
            election.peers as u64,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
}

/// Writes replicas, scaling decisions and reload outcomes.
fn render_scaling_metrics(out: &mut String, front_door: &FrontDoor) {
    let board = front_door.scaling.load();
    out.push_str("# HELP forecourt_replicas Replicas of a scaled service: ordered, desired, ready.\n# TYPE forecourt_replicas gauge\n");
    for s in &board.services {
        let name = label(&s.service);
        for (state, n) in [
            ("ordered", s.ordered),
            ("desired", s.desired),
            ("ready", s.ready),
        ] {
            let _ = writeln!(
                out,
                "forecourt_replicas{{service=\"{name}\",state=\"{state}\"}} {n}"
            );
        }
    }
    write_per_service(
        out,
        "forecourt_predicted_load",
        "gauge",
        "Forecast load at the horizon plus dependency demand, in capacity units.",
        board
            .services
            .iter()
            .map(|s| (s.service.as_str(), s.predicted_load)),
    );
    write_per_service(
        out,
        "forecourt_scaling_horizon_seconds",
        "gauge",
        "Forecast horizon used: measured time-to-ready plus margin.",
        board
            .services
            .iter()
            .map(|s| (s.service.as_str(), s.horizon_secs)),
    );
    out.push_str("# HELP forecourt_scaling_decisions_total Replica changes ordered, by reason.\n# TYPE forecourt_scaling_decisions_total counter\n");
    for (service, reason, n) in front_door.decisions.snapshot() {
        let _ = writeln!(
            out,
            "forecourt_scaling_decisions_total{{service=\"{}\",reason=\"{reason}\"}} {n}",
            label(&service)
        );
    }
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    let _ = writeln!(
        out,
        "# HELP forecourt_scaling_orders_failed_total Replica orders the orchestrator refused.\n# TYPE forecourt_scaling_orders_failed_total counter\nforecourt_scaling_orders_failed_total {}",
        front_door.decisions.failed_orders.load(relaxed)
    );
    let config = &front_door.config;
    let _ = writeln!(
        out,
        "# HELP forecourt_config_reloads_total Policy reloads by result.\n# TYPE forecourt_config_reloads_total counter\nforecourt_config_reloads_total{{result=\"applied\"}} {}\nforecourt_config_reloads_total{{result=\"rejected\"}} {}",
        config.applied.load(relaxed),
        config.rejected.load(relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP forecourt_config_last_reload_rejected 1 when the newest policy file was rejected (the previous one serves).\n# TYPE forecourt_config_last_reload_rejected gauge\nforecourt_config_last_reload_rejected {}",
        u8::from(config.last_rejection().is_some())
    );
    let _ = writeln!(
        out,
        "# HELP forecourt_config_generation Generation of the running policy (1 at start).\n# TYPE forecourt_config_generation gauge\nforecourt_config_generation {}",
        config.generation()
    );
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(value)
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into_bytes());
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": message }))
}

/// The refusal of an admin write without the right token (compared in constant time), if any.
fn denied(front_door: &FrontDoor, headers: &http::HeaderMap) -> Option<Response<Full<Bytes>>> {
    let Some(token) = front_door.admin_token.as_deref() else {
        return Some(error(
            StatusCode::FORBIDDEN,
            "admin writes are disabled: start forecourt with FORECOURT_ADMIN_TOKEN or FORECOURT_ADMIN_TOKEN_FILE set",
        ));
    };
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    (!constant_time_eq(presented.as_bytes(), token.as_bytes()))
        .then(|| error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token"))
}

/// Compares two byte strings without an early exit on the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(!x);
    }
    diff == 0
}

/// Answers one admin request.
pub async fn handle(front_door: &FrontDoor, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (&parts.method, segments.as_slice()) {
        (&Method::POST, ["v1", "events"]) => {
            if let Some(refusal) = denied(front_door, &parts.headers) {
                return refusal;
            }
            let bytes = match Limited::new(body, MAX_ADMIN_BODY).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(_) => {
                    return error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body over 64 KiB or unreadable",
                    )
                }
            };
            let posted: PostedEvent = match serde_json::from_slice(&bytes) {
                Ok(p) => p,
                Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid event: {e}")),
            };
            let now = front_door.clock.now_ms();
            let event = match posted.resolve(&front_door.snapshot(), now) {
                Ok(event) => event,
                Err(message) => return error(StatusCode::UNPROCESSABLE_ENTITY, &message),
            };
            tracing::info!(name = %event.name, service = %event.service, "scheduled event posted");
            match front_door.events.post(event, now) {
                Ok(()) => json(
                    StatusCode::CREATED,
                    &serde_json::json!({ "scheduled": true }),
                ),
                Err(e) => error(StatusCode::TOO_MANY_REQUESTS, &e.to_string()),
            }
        }
        (&Method::POST, ["v1", "reload"]) => {
            if let Some(refusal) = denied(front_door, &parts.headers) {
                return refusal;
            }
            match front_door.reload("api").await {
                ReloadOutcome::Applied { generation } => json(
                    StatusCode::OK,
                    &serde_json::json!({ "applied": true, "generation": generation }),
                ),
                ReloadOutcome::Rejected { problems } => json(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &serde_json::json!({ "applied": false, "problems": problems }),
                ),
                ReloadOutcome::NoFile => error(
                    StatusCode::CONFLICT,
                    "forecourt runs on an embedded policy: there is no file to reload",
                ),
            }
        }
        (&Method::DELETE, ["v1", "events", name]) => {
            if let Some(refusal) = denied(front_door, &parts.headers) {
                return refusal;
            }
            match front_door.events.cancel(name) {
                0 => error(StatusCode::NOT_FOUND, "no posted event has that name"),
                n => json(StatusCode::OK, &serde_json::json!({ "cancelled": n })),
            }
        }
        (&Method::GET | &Method::HEAD, ["healthz"]) => get(front_door, &["healthz"]),
        (&Method::GET | &Method::HEAD, segments) => {
            // With a token configured, reads need it too unless the policy makes them public.
            let public =
                front_door.admin_token.is_none() || front_door.snapshot().policy.admin.public_reads;
            if !public {
                if let Some(refusal) = denied(front_door, &parts.headers) {
                    return refusal;
                }
            }
            get(front_door, segments)
        }
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here"),
    }
}

/// Answers a read-only admin request.
fn get(front_door: &FrontDoor, segments: &[&str]) -> Response<Full<Bytes>> {
    match segments {
        ["healthz"] => Response::new(Full::new(Bytes::from_static(b"ok\n"))),
        ["metrics"] => Response::builder()
            .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")
            .body(Full::new(Bytes::from(render_metrics(front_door))))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))),
        ["v1", "config"] => {
            let config = &front_door.config;
            let rejection = config.last_rejection().map(|r| {
                serde_json::json!({
                    "at": forecourt_config::forecast::format_time(r.at_unix_ms),
                    "trigger": r.trigger,
                    "problems": r.problems,
                })
            });
            json(
                StatusCode::OK,
                &serde_json::json!({
                    "file": config.path().map(|p| p.display().to_string()),
                    "generation": config.generation(),
                    "loaded_at": forecourt_config::forecast::format_time(config.loaded_at_unix_ms()),
                    "services": front_door.snapshot().services.iter().map(|s| s.config.name.clone()).collect::<Vec<_>>(),
                    "last_rejection": rejection,
                }),
            )
        }
        ["v1", "forecasts"] => json(
            StatusCode::OK,
            &forecasts_json(&front_door.forecasts.load()),
        ),
        ["v1", "services"] => {
            let snapshot = front_door.snapshot();
            let list: Vec<_> = snapshot
                .services
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "name": s.config.name,
                        "ready": s.instances.ready().instances.len(),
                        "total": s.instances.all().len(),
                    })
                })
                .collect();
            json(StatusCode::OK, &serde_json::json!({ "services": list }))
        }
        ["v1", "services", name, "readiness"] => {
            let snapshot = front_door.snapshot();
            match snapshot.service(name) {
                Some(service) => json(
                    StatusCode::OK,
                    &readiness(
                        service,
                        &front_door.forecasts.load(),
                        &front_door.scaling.load(),
                        &front_door.versions.load(),
                        front_door.clock.now_ms(),
                    ),
                ),
                None => error(StatusCode::NOT_FOUND, "no such service"),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

/// Serves the admin API on `listener` until `shutdown` turns true.
pub async fn serve(
    front_door: Arc<FrontDoor>,
    listener: std::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| TcpListener::from_std(listener))
    {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "admin listener unusable");
            return;
        }
    };
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => {
                if *shutdown.borrow() { return; }
                continue;
            }
        };
        let front_door = front_door.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let front_door = front_door.clone();
                async move { Ok::<_, Infallible>(handle(&front_door, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
