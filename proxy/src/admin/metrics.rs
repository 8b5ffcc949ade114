//! `GET /metrics`: every metric of Forecourt in Prometheus text format, rendered from the
//! request path's counters, the snapshot, and what the control loop published.
//!
//! ```text
//!  counters (atomics) ──┐
//!  Snapshot (services) ─┼─► render_metrics ─► text/plain; version=0.0.4
//!  ControlPlane boards ─┘   requests, instances, cache, warm, limits, forecasts, scaling,
//!                           versions, Kubernetes, config
//! ```

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use forecourt_orchestrator::predeploy::VersionBoard;
use forecourt_orchestrator::ForecastBoard;
use forecourt_predictor::score::ErrorStats;

use crate::classify::version::Routed;
use crate::counters::{Limited, ServiceMetrics, CODES, LATENCY_BOUNDS_S};
use crate::front_door::FrontDoor;
use crate::snapshot::Snapshot;

/// Renders every metric in Prometheus text format.
pub fn render_metrics(front_door: &FrontDoor) -> String {
    let snapshot = front_door.snapshot();
    let mut out = String::with_capacity(8 * 1024);
    let services: Vec<(&str, &crate::counters::ServiceMetrics)> = snapshot
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
    render_forecast_metrics(&mut out, &front_door.control.forecasts.load());
    render_scaling_metrics(&mut out, front_door);
    render_version_metrics(&mut out, &snapshot, &front_door.control.versions.load());
    render_cache_metrics(&mut out, &snapshot);
    out
}

/// Writes the response caches' and the warmers' counters.
fn render_cache_metrics(out: &mut String, snapshot: &crate::snapshot::Snapshot) {
    use std::sync::atomic::Ordering::Relaxed;
    let cached: Vec<(&str, &crate::cache::ServiceCache)> = snapshot
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
            (|c: &crate::cache::ServiceCache| c.store.bytes())
                as fn(&crate::cache::ServiceCache) -> u64,
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
    let Some((kubernetes, leadership)) = front_door.control.kubernetes() else {
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
            "forecourt_kubernetes_refused_writes_total",
            "counter",
            "Patches and deletes not made because the object lacks Forecourt's managed-by label.",
            stats.refused_writes.load(Relaxed),
        ),
        (
            "forecourt_kubernetes_held_scale_downs_total",
            "counter",
            "Orders to lower replicas held while a known peer's windows were stale.",
            stats.held_scale_downs.load(Relaxed),
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
    let board = front_door.control.scaling.load();
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
        "forecourt_demand_quantile",
        "gauge",
        "Quantile of forecast demand the predictive arm provisions for (newsvendor, moved by the headroom controller).",
        board
            .services
            .iter()
            .map(|s| (s.service.as_str(), s.demand_quantile)),
    );
    write_per_service(
        out,
        "forecourt_headroom_offset",
        "gauge",
        "Log-odds offset the adaptive headroom controller adds to the demand quantile (services with an slo).",
        board
            .services
            .iter()
            .filter_map(|s| Some((s.service.as_str(), s.headroom?.offset))),
    );
    write_per_service(
        out,
        "forecourt_headroom_waiting_percent",
        "gauge",
        "Percent of requests that waited for capacity in the headroom controller's last judged window.",
        board
            .services
            .iter()
            .filter_map(|s| Some((s.service.as_str(), s.headroom?.last_waiting_percent?))),
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
    for (service, reason, n) in front_door.control.decisions.snapshot() {
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
        front_door.control.decisions.failed_orders.load(relaxed)
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

/// Escapes a Prometheus label value.
pub fn label(value: &str) -> std::borrow::Cow<'_, str> {
    if value.contains(['\\', '"', '\n']) {
        value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
            .into()
    } else {
        value.into()
    }
}

/// Writes one metric family labelled only by service: its HELP and TYPE lines, then one sample per
/// service.
pub fn write_per_service<'a, V: std::fmt::Display>(
    out: &mut String,
    metric: &str,
    kind: &str,
    help: &str,
    samples: impl IntoIterator<Item = (&'a str, V)>,
) {
    let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} {kind}");
    for (service, value) in samples {
        let _ = writeln!(out, "{metric}{{service=\"{}\"}} {value}", label(service));
    }
}

/// Writes the request metrics of every service.
pub fn render_requests(
    out: &mut String,
    services: &[(&str, &ServiceMetrics)],
    classes: &[Box<str>],
) {
    out.push_str("# HELP forecourt_requests_total Requests answered, by service, status code and tenant class.\n");
    out.push_str("# TYPE forecourt_requests_total counter\n");
    for (name, m) in services {
        for (c, class) in classes.iter().enumerate().take(m.classes) {
            for code in 0..CODES {
                let n = m.requests[c * CODES + code].load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "forecourt_requests_total{{service=\"{}\",code=\"{}\",tenant_class=\"{}\"}} {n}",
                        label(name),
                        code + 100,
                        label(class)
                    );
                }
            }
        }
    }
    out.push_str(
        "# HELP forecourt_request_duration_seconds Time from request start to response end.\n",
    );
    out.push_str("# TYPE forecourt_request_duration_seconds histogram\n");
    for (name, m) in services {
        let (h, sum_us) = m.latency.snapshot();
        let name = label(name);
        for bound in LATENCY_BOUNDS_S {
            let le_us = (bound * 1e6) as u64;
            let n = if h.is_empty() {
                0
            } else {
                h.count_between(0, le_us)
            };
            let _ = writeln!(
                out,
                "forecourt_request_duration_seconds_bucket{{service=\"{name}\",le=\"{bound}\"}} {n}"
            );
        }
        let total = h.len();
        let _ = writeln!(
            out,
            "forecourt_request_duration_seconds_bucket{{service=\"{name}\",le=\"+Inf\"}} {total}"
        );
        let _ = writeln!(
            out,
            "forecourt_request_duration_seconds_sum{{service=\"{name}\"}} {}",
            sum_us as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "forecourt_request_duration_seconds_count{{service=\"{name}\"}} {total}"
        );
    }
    for (metric, help, get) in [
        (
            "forecourt_upstream_connect_failures_total",
            "Connections to an instance that failed.",
            (|m: &ServiceMetrics| m.connect_failures.load(Ordering::Relaxed))
                as fn(&ServiceMetrics) -> u64,
        ),
        (
            "forecourt_retries_total",
            "Attempts on another instance after a failure.",
            |m: &ServiceMetrics| m.retries.load(Ordering::Relaxed),
        ),
        (
            "forecourt_no_ready_instance_total",
            "Requests answered 503 because no instance was ready (queue full or deadline passed).",
            |m: &ServiceMetrics| m.no_ready_instance.load(Ordering::Relaxed),
        ),
        (
            "forecourt_held_requests_total",
            "Requests that waited for a ready instance.",
            |m: &ServiceMetrics| m.held.load(Ordering::Relaxed),
        ),
        (
            "forecourt_tenant_refused_total",
            "Requests refused 400 for their tenant header (sent twice, invalid or badly signed).",
            |m: &ServiceMetrics| m.tenant_refused.load(Ordering::Relaxed),
        ),
        (
            "forecourt_ejections_capped_total",
            "Passive ejections not made because ejection.max_percent of the instances were out.",
            |m: &ServiceMetrics| m.ejections_capped.load(Ordering::Relaxed),
        ),
        (
            "forecourt_cache_revalidations_total",
            "Requests Forecourt sent an instance to revalidate a stale cache entry.",
            |m: &ServiceMetrics| m.revalidations.load(Ordering::Relaxed),
        ),
    ] {
        let samples = services.iter().map(|(name, m)| (*name, get(m)));
        write_per_service(out, metric, "counter", help, samples);
    }
    out.push_str("# HELP forecourt_limited_requests_total Requests refused by a tenant, service or hold-share limit.\n# TYPE forecourt_limited_requests_total counter\n");
    for (name, m) in services {
        for (i, limit) in Limited::ALL.iter().enumerate() {
            let _ = writeln!(
                out,
                "forecourt_limited_requests_total{{service=\"{}\",limit=\"{}\"}} {}",
                label(name),
                limit.label(),
                m.limited[i].load(Ordering::Relaxed)
            );
        }
    }
    write_per_service(
        out,
        "forecourt_held_requests",
        "gauge",
        "Requests waiting for a ready instance now.",
        services
            .iter()
            .map(|(name, m)| (*name, m.held_now.load(Ordering::Relaxed))),
    );
}

/// Writes the forecast metrics: rates, panic mode, forecasts, model weights and errors.
fn render_forecast_metrics(out: &mut String, board: &ForecastBoard) {
    out.push_str("# HELP forecourt_arrival_rate Arrivals per second over the stable and panic windows.\n# TYPE forecourt_arrival_rate gauge\n");
    for s in &board.services {
        let name = label(&s.service);
        let _ = writeln!(
            out,
            "forecourt_arrival_rate{{service=\"{name}\",window=\"stable\"}} {}\nforecourt_arrival_rate{{service=\"{name}\",window=\"panic\"}} {}",
            s.stable_rate, s.panic_rate
        );
    }
    write_per_service(
        out,
        "forecourt_panic_mode",
        "gauge",
        "1 while a service's short window runs far above its stable window.",
        board
            .services
            .iter()
            .map(|s| (s.service.as_str(), u8::from(s.panicking))),
    );
    write_per_service(
        out,
        "forecourt_concurrency",
        "gauge",
        "Time-averaged requests in flight over the stable window.",
        board
            .services
            .iter()
            .map(|s| (s.service.as_str(), s.concurrency)),
    );
    out.push_str("# HELP forecourt_forecast_requests_per_second Ensemble forecast at a horizon (point and upper bound, events applied).\n# TYPE forecourt_forecast_requests_per_second gauge\n");
    for s in &board.services {
        let name = label(&s.service);
        for h in &s.horizons {
            let _ = writeln!(
                out,
                "forecourt_forecast_requests_per_second{{service=\"{name}\",horizon=\"{}s\",bound=\"point\"}} {}\nforecourt_forecast_requests_per_second{{service=\"{name}\",horizon=\"{}s\",bound=\"upper\"}} {}",
                h.horizon_sec, h.point, h.horizon_sec, h.upper
            );
        }
    }
    out.push_str("# HELP forecourt_forecast_model_weight Weight of a model in the ensemble at a horizon.\n# TYPE forecourt_forecast_model_weight gauge\n");
    for s in &board.services {
        let name = label(&s.service);
        for h in &s.ensemble.horizons {
            for m in &h.models {
                let _ = writeln!(
                    out,
                    "forecourt_forecast_model_weight{{service=\"{name}\",horizon=\"{}s\",model=\"{}\"}} {}",
                    m.forecast.horizon_sec, m.forecast.model, m.weight
                );
            }
        }
    }
    type Pick = fn(&ErrorStats) -> Option<f64>;
    let errors: [(&str, &str, Pick); 4] = [
        (
            "forecourt_forecast_wape",
            "Recent weighted absolute percentage error of a model at a horizon.",
            |s| s.wape,
        ),
        (
            "forecourt_forecast_mase",
            "Recent mean absolute scaled error against last value (below 1 beats it).",
            |s| s.mase,
        ),
        (
            "forecourt_forecast_under_prediction_ratio",
            "Fraction of recent seconds whose load exceeded the point forecast.",
            |s| s.under_rate,
        ),
        (
            "forecourt_forecast_upper_coverage_ratio",
            "Fraction of recent seconds whose load stayed within the upper bound.",
            |s| s.coverage,
        ),
    ];
    for (metric, help, pick) in errors {
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} gauge");
        for s in &board.services {
            let name = label(&s.service);
            for h in &s.ensemble.horizons {
                let horizon = h.ensemble.horizon_sec;
                let rows = std::iter::once(("ensemble", &h.ensemble_recent))
                    .chain(h.models.iter().map(|m| (m.forecast.model, &m.recent)));
                for (model, recent) in rows {
                    if let Some(value) = pick(recent).filter(|v| v.is_finite()) {
                        let _ = writeln!(
                            out,
                            "{metric}{{service=\"{name}\",horizon=\"{horizon}s\",model=\"{model}\"}} {value}"
                        );
                    }
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP forecourt_scheduled_events Scheduled events not yet over.\n# TYPE forecourt_scheduled_events gauge\nforecourt_scheduled_events {}",
        board.events.len()
    );
}

/// Writes the flagged versions' request counts and replicas.
fn render_version_metrics(out: &mut String, snapshot: &Snapshot, board: &VersionBoard) {
    out.push_str("# HELP forecourt_version_requests_total Requests carrying a flagged version's flag, by where they went on arrival: version (ready), stable (until it is ready), held (waiting for it).\n# TYPE forecourt_version_requests_total counter\n");
    for service in &snapshot.services {
        let name = label(&service.config.name);
        for v in service.versions.iter() {
            let version = label(&v.config.version);
            for routed in Routed::ALL {
                let _ = writeln!(
                    out,
                    "forecourt_version_requests_total{{service=\"{name}\",version=\"{version}\",routed=\"{}\"}} {}",
                    routed.label(),
                    v.stats.routed(routed)
                );
            }
        }
    }
    out.push_str("# HELP forecourt_version_replicas Replicas of a flagged version: ordered from the orchestrator, confirmed ready.\n# TYPE forecourt_version_replicas gauge\n");
    for service in &snapshot.services {
        let name = label(&service.config.name);
        let ready = service.instances.ready();
        for v in service.versions.iter() {
            let ordered = board
                .version(&service.config.name, &v.config.version)
                .map_or(0, |s| s.ordered);
            let version = label(&v.config.version);
            for (state, n) in [
                ("ordered", ordered as usize),
                ("ready", ready.version(&v.config.version).len()),
            ] {
                let _ = writeln!(
                    out,
                    "forecourt_version_replicas{{service=\"{name}\",version=\"{version}\",state=\"{state}\"}} {n}"
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP forecourt_version_orders_failed_total Pre-deploy orders the orchestrator refused.\n# TYPE forecourt_version_orders_failed_total counter\nforecourt_version_orders_failed_total {}",
        board.failed_orders
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_render_by_code_and_class() {
        let m = ServiceMetrics::new(2);
        m.count(1, 200);
        m.count(1, 200);
        m.count(0, 503);
        m.count(7, 999); // clamped, not out of bounds
        let mut out = String::new();
        render_requests(
            &mut out,
            &[("shop", &m)],
            &["anonymous".into(), "gold".into()],
        );
        assert!(out.contains(
            "forecourt_requests_total{service=\"shop\",code=\"200\",tenant_class=\"gold\"} 2"
        ));
        assert!(out.contains("code=\"503\",tenant_class=\"anonymous\"} 1"));
        assert!(out.contains("code=\"599\",tenant_class=\"gold\"} 1"));
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
