//! `GET /metrics`: every metric of Forecourt in Prometheus text format, rendered from the
//! request path's counters, the snapshot, and what the control loop published.
//!
//! ```text
//!  counters (atomics) ──┐                    ┌─► every service: instances, non-zero counters
//!  Snapshot (services) ─┼─► render_metrics ──┼─► detailed services: per instance, latency,
//!  ControlPlane boards ─┘   (policy metrics:) │   rates, forecasts, scaling and cache gauges
//!                                             └─► fleet: services active/idle, proxy, Kubernetes,
//!                                                 config
//! ```
//!
//! Cardinality is bounded by design, so a proxy with ten thousand mostly idle services scrapes
//! in a few MB:
//!
//! - every service writes its core: `forecourt_instances{state="ready"|"total"}` and its
//!   counters that are above zero (a counter never incremented is absent, which Prometheus reads
//!   as zero);
//! - the detailed series (per-instance in-flight and health checks, the latency histogram,
//!   arrival rates, panic mode, concurrency, the ensemble forecast and its errors, scaling,
//!   version and cache gauges) only for the `metrics.top_services` services with the highest
//!   stable arrival rate (ties by name), plus any service panicking or holding requests;
//! - every model's weight and errors only with `metrics.forecast_detail: all`, for the detailed
//!   services;
//! - fleet gauges (`forecourt_services{state}`, `forecourt_forecast_modelled_services`,
//!   `forecourt_metrics_detailed_services`) so nothing is lost at a glance.
//!
//! Rendering is admin-side only: it reads the request path's atomics and never writes them.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use ahash::AHashSet;
use forecourt_config::ForecastDetail;
use forecourt_orchestrator::predeploy::VersionBoard;
use forecourt_orchestrator::{ForecastBoard, ServiceScaling};
use forecourt_predictor::score::ErrorStats;
use forecourt_predictor::ServiceForecast;

use crate::classify::version::Routed;
use crate::counters::{Limited, ServiceMetrics, CODES, LATENCY_BOUNDS_S};
use crate::front_door::FrontDoor;
use crate::snapshot::{ServiceRuntime, Snapshot};

/// One service in a scrape: its runtime, what the forecast board says of it, and whether it
/// writes the detailed series.
struct Row<'a> {
    name: &'a str,
    service: &'a ServiceRuntime,
    forecast: Option<&'a ServiceForecast>,
    detailed: bool,
}

// === impl Row ===

impl Row<'_> {
    fn metrics(&self) -> &ServiceMetrics {
        &self.service.metrics
    }

    /// Requests waiting for a ready instance now.
    fn held_now(&self) -> u64 {
        self.metrics().held_now.load(Ordering::Relaxed)
    }

    /// Active: an arrival within the stable window (stable rate above 0), a request in flight
    /// to one of its instances, or a request held for one. Idle otherwise.
    fn is_active(&self) -> bool {
        self.forecast.is_some_and(|f| f.stable_rate > 0.0)
            || self.held_now() > 0
            || self
                .service
                .instances
                .all()
                .iter()
                .any(|i| i.in_flight() > 0)
    }
}

/// What ranks a service for the detailed series.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load<'a> {
    /// The service's name (breaks ties).
    pub(crate) name: &'a str,
    /// Arrivals per second over the stable window.
    pub(crate) stable_rate: f64,
    /// Panicking or holding requests: detailed whatever its rank.
    pub(crate) urgent: bool,
}

/// Which services write the detailed series, in the order of `loads`: the `top` with the
/// highest stable rate (ties by name; a rate that is not a number counts as 0), and every
/// urgent one.
pub(crate) fn detailed(loads: &[Load<'_>], top: usize) -> Vec<bool> {
    let mut detailed: Vec<bool> = loads.iter().map(|l| l.urgent).collect();
    if top >= loads.len() {
        detailed.fill(true);
        return detailed;
    }
    let rate = |l: &Load<'_>| {
        if l.stable_rate.is_finite() {
            l.stable_rate.max(0.0)
        } else {
            0.0
        }
    };
    let mut order: Vec<usize> = (0..loads.len()).collect();
    order.sort_unstable_by(|&a, &b| {
        rate(&loads[b])
            .total_cmp(&rate(&loads[a]))
            .then_with(|| loads[a].name.cmp(loads[b].name))
    });
    for &i in order.iter().take(top) {
        detailed[i] = true;
    }
    detailed
}

/// Every service of the snapshot with its forecast and whether it is detailed.
fn rows<'a>(snapshot: &'a Snapshot, board: &'a ForecastBoard, top: usize) -> Vec<Row<'a>> {
    let mut rows: Vec<Row<'a>> = snapshot
        .services
        .iter()
        .map(|s| Row {
            name: s.config.name.as_str(),
            service: s,
            forecast: board.service(&s.config.name),
            detailed: false,
        })
        .collect();
    let loads: Vec<Load<'_>> = rows
        .iter()
        .map(|r| Load {
            name: r.name,
            stable_rate: r.forecast.map_or(0.0, |f| f.stable_rate),
            urgent: r.forecast.is_some_and(|f| f.panicking) || r.held_now() > 0,
        })
        .collect();
    let chosen = detailed(&loads, top);
    for (row, detailed) in rows.iter_mut().zip(chosen) {
        row.detailed = detailed;
    }
    rows
}

/// Renders every metric in Prometheus text format, with the cardinality the policy's
/// `metrics:` section allows.
pub fn render_metrics(front_door: &FrontDoor) -> String {
    let snapshot = front_door.snapshot();
    let board = front_door.control.forecasts.load();
    let config = snapshot.policy.metrics;
    let top = usize::try_from(config.top_services).unwrap_or(usize::MAX);
    let rows = rows(&snapshot, &board, top);
    let detailed_rows = rows.iter().filter(|r| r.detailed).count();
    // Headers and fleet series, about 120 bytes per idle service, a few KB per detailed one.
    let mut out = String::with_capacity(32 * 1024 + rows.len() * 160 + detailed_rows * 4096);
    render_fleet(&mut out, &rows);
    render_requests(&mut out, &rows, snapshot.metadata.classes());
    render_kubernetes_metrics(&mut out, front_door);
    render_instances(&mut out, &rows);
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
    render_tick_times(&mut out, &front_door.control.tick_times);
    render_forecast_metrics(&mut out, &rows, config.forecast_detail, board.events.len());
    let detailed: AHashSet<&str> = rows.iter().filter(|r| r.detailed).map(|r| r.name).collect();
    render_scaling_metrics(&mut out, front_door, &detailed);
    render_version_metrics(&mut out, &rows, &front_door.control.versions.load());
    render_cache_metrics(&mut out, &rows);
    out
}

/// Writes the fleet gauges: services active and idle, and how many are detailed.
fn render_fleet(out: &mut String, rows: &[Row<'_>]) {
    let active = rows.iter().filter(|r| r.is_active()).count();
    let _ = writeln!(
        out,
        "# HELP forecourt_services Services of the running policy: active (an arrival within the stable window, a request in flight to an instance, or one held) or idle.\n# TYPE forecourt_services gauge\nforecourt_services{{state=\"active\"}} {active}\nforecourt_services{{state=\"idle\"}} {}",
        rows.len() - active
    );
    let modelled = rows
        .iter()
        .filter(|r| r.forecast.is_some_and(|f| f.modelled))
        .count();
    let _ = writeln!(
        out,
        "# HELP forecourt_forecast_modelled_services Services holding a forecast ensemble (an arrival within the last hour); the others forecast no load of their own.\n# TYPE forecourt_forecast_modelled_services gauge\nforecourt_forecast_modelled_services {modelled}"
    );
    let _ = writeln!(
        out,
        "# HELP forecourt_metrics_detailed_services Services whose detailed series this scrape writes (metrics.top_services by stable rate, and any panicking or holding requests).\n# TYPE forecourt_metrics_detailed_services gauge\nforecourt_metrics_detailed_services {}",
        rows.iter().filter(|r| r.detailed).count()
    );
}

/// Writes every service's instance counts, and the detailed services' per-instance series.
fn render_instances(out: &mut String, rows: &[Row<'_>]) {
    out.push_str("# HELP forecourt_instances Instances of a service by state.\n# TYPE forecourt_instances gauge\n");
    for row in rows {
        let s = row.service;
        let name = label(row.name);
        let _ = writeln!(
            out,
            "forecourt_instances{{service=\"{name}\",state=\"ready\"}} {}\nforecourt_instances{{service=\"{name}\",state=\"total\"}} {}",
            s.instances.ready().instances.len(),
            s.instances.all().len()
        );
    }
    out.push_str("# HELP forecourt_instance_in_flight Requests in flight to an instance.\n# TYPE forecourt_instance_in_flight gauge\n");
    for row in rows.iter().filter(|r| r.detailed) {
        let name = label(row.name);
        for i in row.service.instances.all().iter() {
            let _ = writeln!(
                out,
                "forecourt_instance_in_flight{{service=\"{name}\",instance=\"{}\"}} {}",
                i.address,
                i.in_flight()
            );
        }
    }
    out.push_str("# HELP forecourt_health_checks_total Active health probes by result.\n# TYPE forecourt_health_checks_total counter\n");
    for row in rows.iter().filter(|r| r.detailed) {
        let name = label(row.name);
        for i in row.service.instances.all().iter() {
            let h = i.health();
            for (result, n) in [
                ("ok", h.probes.saturating_sub(h.failed_probes)),
                ("fail", h.failed_probes),
            ] {
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "forecourt_health_checks_total{{service=\"{name}\",instance=\"{}\",result=\"{result}\"}} {n}",
                        i.address
                    );
                }
            }
        }
    }
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

/// Writes one counter family labelled only by service, with a sample only for the services whose
/// count is above zero (an absent series is one never incremented).
fn write_counters<'a>(
    out: &mut String,
    metric: &str,
    help: &str,
    samples: impl IntoIterator<Item = (&'a str, u64)>,
) {
    let samples = samples.into_iter().filter(|(_, n)| *n > 0);
    write_per_service(out, metric, "counter", help, samples);
}

/// Writes the request metrics: every service's non-zero counters, and the detailed services'
/// latency histograms and held requests.
fn render_requests(out: &mut String, rows: &[Row<'_>], classes: &[Box<str>]) {
    out.push_str("# HELP forecourt_requests_total Requests answered, by service, status code and tenant class.\n");
    out.push_str("# TYPE forecourt_requests_total counter\n");
    for row in rows {
        let m = row.metrics();
        let Some(counts) = m.request_counts() else {
            continue;
        };
        for (c, class) in classes.iter().enumerate().take(m.classes) {
            for code in 0..CODES {
                let n = counts[c * CODES + code].load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "forecourt_requests_total{{service=\"{}\",code=\"{}\",tenant_class=\"{}\"}} {n}",
                        label(row.name),
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
    for row in rows.iter().filter(|r| r.detailed) {
        let (h, sum_us) = row.metrics().latency.snapshot();
        let total = h.len();
        if total == 0 {
            continue;
        }
        let name = label(row.name);
        for bound in LATENCY_BOUNDS_S {
            let le_us = (bound * 1e6) as u64;
            let n = h.count_between(0, le_us);
            let _ = writeln!(
                out,
                "forecourt_request_duration_seconds_bucket{{service=\"{name}\",le=\"{bound}\"}} {n}"
            );
        }
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
        write_counters(
            out,
            metric,
            help,
            rows.iter().map(|r| (r.name, get(r.metrics()))),
        );
    }
    out.push_str("# HELP forecourt_limited_requests_total Requests refused by a tenant, service or hold-share limit.\n# TYPE forecourt_limited_requests_total counter\n");
    for row in rows {
        for (i, limit) in Limited::ALL.iter().enumerate() {
            let n = row.metrics().limited[i].load(Ordering::Relaxed);
            if n > 0 {
                let _ = writeln!(
                    out,
                    "forecourt_limited_requests_total{{service=\"{}\",limit=\"{}\"}} {n}",
                    label(row.name),
                    limit.label(),
                );
            }
        }
    }
    write_per_service(
        out,
        "forecourt_held_requests",
        "gauge",
        "Requests waiting for a ready instance now.",
        rows.iter()
            .filter(|r| r.detailed)
            .map(|r| (r.name, r.held_now())),
    );
}

/// Writes the control loop's tick durations as a histogram.
fn render_tick_times(out: &mut String, times: &forecourt_orchestrator::TickTimes) {
    let metric = "forecourt_control_loop_tick_seconds";
    let _ = writeln!(
        out,
        "# HELP {metric} Time one control-loop tick took (forecast, scale, pre-deploy).\n# TYPE {metric} histogram"
    );
    let (counts, total, sum) = times.cumulative();
    for (bound, n) in forecourt_orchestrator::TICK_TIME_BOUNDS_S
        .iter()
        .zip(counts)
    {
        let _ = writeln!(out, "{metric}_bucket{{le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "{metric}_bucket{{le=\"+Inf\"}} {total}\n{metric}_sum {sum}\n{metric}_count {total}"
    );
}

/// Writes the forecast metrics of the detailed services (rates, panic mode, the ensemble's
/// forecasts and errors; every model's weight and errors with [`ForecastDetail::All`]), and the
/// scheduled events.
fn render_forecast_metrics(
    out: &mut String,
    rows: &[Row<'_>],
    detail: ForecastDetail,
    events: usize,
) {
    let forecasts: Vec<&ServiceForecast> = rows
        .iter()
        .filter(|r| r.detailed)
        .filter_map(|r| r.forecast)
        .collect();
    out.push_str("# HELP forecourt_arrival_rate Arrivals per second over the stable and panic windows.\n# TYPE forecourt_arrival_rate gauge\n");
    for s in &forecasts {
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
        forecasts
            .iter()
            .map(|s| (s.service.as_str(), u8::from(s.panicking))),
    );
    write_per_service(
        out,
        "forecourt_concurrency",
        "gauge",
        "Time-averaged requests in flight over the stable window.",
        forecasts
            .iter()
            .map(|s| (s.service.as_str(), s.concurrency)),
    );
    out.push_str("# HELP forecourt_forecast_requests_per_second Ensemble forecast at a horizon (point and upper bound, events applied).\n# TYPE forecourt_forecast_requests_per_second gauge\n");
    for s in &forecasts {
        let name = label(&s.service);
        for h in &s.horizons {
            let _ = writeln!(
                out,
                "forecourt_forecast_requests_per_second{{service=\"{name}\",horizon=\"{}s\",bound=\"point\"}} {}\nforecourt_forecast_requests_per_second{{service=\"{name}\",horizon=\"{}s\",bound=\"upper\"}} {}",
                h.horizon_sec, h.point, h.horizon_sec, h.upper
            );
        }
    }
    let every_model = detail == ForecastDetail::All;
    out.push_str("# HELP forecourt_forecast_model_weight Weight of a model in the ensemble at a horizon (with metrics.forecast_detail: all).\n# TYPE forecourt_forecast_model_weight gauge\n");
    for s in forecasts.iter().filter(|_| every_model) {
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
        for s in &forecasts {
            let name = label(&s.service);
            for h in &s.ensemble.horizons {
                let horizon = h.ensemble.horizon_sec;
                let models = h
                    .models
                    .iter()
                    .filter(|_| every_model)
                    .map(|m| (m.forecast.model, &m.recent));
                let rows = std::iter::once(("ensemble", &h.ensemble_recent)).chain(models);
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
        "# HELP forecourt_scheduled_events Scheduled events not yet over.\n# TYPE forecourt_scheduled_events gauge\nforecourt_scheduled_events {events}"
    );
}
/// Writes the detailed services' replicas and scaling gauges, every service's non-zero scaling
/// decisions, and reload outcomes.
fn render_scaling_metrics(out: &mut String, front_door: &FrontDoor, detailed: &AHashSet<&str>) {
    let board = front_door.control.scaling.load();
    let scaled: Vec<&ServiceScaling> = board
        .services
        .iter()
        .filter(|s| detailed.contains(s.service.as_str()))
        .collect();
    out.push_str("# HELP forecourt_replicas Replicas of a scaled service: ordered, desired, ready.\n# TYPE forecourt_replicas gauge\n");
    for s in &scaled {
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
        scaled
            .iter()
            .map(|s| (s.service.as_str(), s.predicted_load)),
    );
    write_per_service(
        out,
        "forecourt_demand_quantile",
        "gauge",
        "Quantile of forecast demand the predictive arm provisions for (newsvendor, moved by the headroom controller).",
        scaled
            .iter()
            .map(|s| (s.service.as_str(), s.demand_quantile)),
    );
    write_per_service(
        out,
        "forecourt_headroom_offset",
        "gauge",
        "Log-odds offset the adaptive headroom controller adds to the demand quantile (services with an slo).",
        scaled
            .iter()
            .filter_map(|s| Some((s.service.as_str(), s.headroom?.offset))),
    );
    write_per_service(
        out,
        "forecourt_headroom_waiting_percent",
        "gauge",
        "Percent of requests that waited for capacity in the headroom controller's last judged window.",
        scaled
            .iter()
            .filter_map(|s| Some((s.service.as_str(), s.headroom?.last_waiting_percent?))),
    );
    write_per_service(
        out,
        "forecourt_scaling_horizon_seconds",
        "gauge",
        "Forecast horizon used: measured time-to-ready plus margin.",
        scaled.iter().map(|s| (s.service.as_str(), s.horizon_secs)),
    );
    out.push_str("# HELP forecourt_scaling_decisions_total Replica changes ordered, by reason.\n# TYPE forecourt_scaling_decisions_total counter\n");
    for (service, reason, n) in front_door.control.decisions.snapshot() {
        if n == 0 {
            continue;
        }
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

/// Writes the flagged versions' request counts (non-zero, every service) and replicas (detailed
/// services).
fn render_version_metrics(out: &mut String, rows: &[Row<'_>], board: &VersionBoard) {
    out.push_str("# HELP forecourt_version_requests_total Requests carrying a flagged version's flag, by where they went on arrival: version (ready), stable (until it is ready), held (waiting for it).\n# TYPE forecourt_version_requests_total counter\n");
    for row in rows {
        let name = label(row.name);
        for v in row.service.versions.iter() {
            let version = label(&v.config.version);
            for routed in Routed::ALL {
                let n = v.stats.routed(routed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "forecourt_version_requests_total{{service=\"{name}\",version=\"{version}\",routed=\"{}\"}} {n}",
                        routed.label(),
                    );
                }
            }
        }
    }
    out.push_str("# HELP forecourt_version_replicas Replicas of a flagged version: ordered from the orchestrator, confirmed ready.\n# TYPE forecourt_version_replicas gauge\n");
    for row in rows.iter().filter(|r| r.detailed) {
        let service = row.service;
        let name = label(row.name);
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

/// Writes the response caches' and the warmers' counters (non-zero, every service) and the
/// caches' gauges (detailed services).
fn render_cache_metrics(out: &mut String, rows: &[Row<'_>]) {
    use std::sync::atomic::Ordering::Relaxed;
    let cached: Vec<(&str, &crate::cache::ServiceCache, bool)> = rows
        .iter()
        .filter_map(|r| Some((r.name, r.service.cache.as_deref()?, r.detailed)))
        .collect();
    out.push_str("# HELP forecourt_cache_requests_total GET and HEAD requests of cached services by how the cache answered.
# TYPE forecourt_cache_requests_total counter
");
    for (name, cache, _) in &cached {
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
            if n > 0 {
                let _ = writeln!(
                    out,
                    "forecourt_cache_requests_total{{service=\"{}\",result=\"{result}\"}} {n}",
                    label(name)
                );
            }
        }
    }
    write_per_service(
        out,
        "forecourt_cache_hit_ratio",
        "gauge",
        "Share of cache lookups answered from the cache (hits, coalesced, revalidated).",
        cached.iter().filter(|c| c.2).map(|(name, cache, _)| {
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
    type Get = fn(&crate::cache::ServiceCache) -> u64;
    for (metric, help, get) in [
        (
            "forecourt_cache_bytes",
            "Bytes held by a service's response cache (bodies, headers and overhead).",
            (|c: &crate::cache::ServiceCache| c.store.bytes()) as Get,
        ),
        (
            "forecourt_cache_entries",
            "Responses held by a service's cache.",
            |c| c.store.entries(),
        ),
    ] {
        let samples = cached.iter().filter(|c| c.2).map(|(n, c, _)| (*n, get(c)));
        write_per_service(out, metric, "gauge", help, samples);
    }
    for (metric, help, get) in [
        (
            "forecourt_cache_stores_total",
            "Responses stored in the cache.",
            (|c: &crate::cache::ServiceCache| c.store.stats().stores.load(Relaxed)) as Get,
        ),
        (
            "forecourt_cache_refreshes_total",
            "Hot entries re-fetched before they expired (refresh-ahead).",
            |c| c.refreshed.load(Relaxed),
        ),
        (
            "forecourt_cache_too_large_total",
            "Responses over max_object_bytes passed through uncached.",
            |c| c.too_large.load(Relaxed),
        ),
    ] {
        write_counters(
            out,
            metric,
            help,
            cached.iter().map(|(n, c, _)| (*n, get(c))),
        );
    }
    let warmed: Vec<(&str, &crate::warm::WarmMetrics)> = rows
        .iter()
        .filter(|r| r.service.config.warm.is_some())
        .map(|r| (r.name, r.service.warm_metrics.as_ref()))
        .collect();
    write_counters(
        out,
        "forecourt_warm_ups_total",
        "New instances warmed before they were confirmed ready.",
        warmed.iter().map(|(n, m)| (*n, m.warm_ups.load(Relaxed))),
    );
    out.push_str("# HELP forecourt_warm_requests_total Warm-up requests sent to new instances, by result.\n# TYPE forecourt_warm_requests_total counter\n");
    for (name, m) in &warmed {
        for (result, n) in [
            ("ok", m.requests_ok.load(Relaxed)),
            ("failed", m.requests_failed.load(Relaxed)),
        ] {
            if n > 0 {
                let _ = writeln!(
                    out,
                    "forecourt_warm_requests_total{{service=\"{}\",result=\"{result}\"}} {n}",
                    label(name)
                );
            }
        }
    }
    write_counters(
        out,
        "forecourt_warm_timeouts_total",
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use ahash::AHashMap;

    use super::*;
    use crate::admin::fixture::{edit_board, front_door, policy, publish_board};

    /// The sample lines about `service`.
    fn lines_of<'t>(text: &'t str, service: &str) -> Vec<&'t str> {
        let needle = format!("service=\"{service}\"");
        text.lines()
            .filter(|l| !l.starts_with('#') && l.contains(&needle))
            .collect()
    }

    fn has(text: &str, prefix: &str) -> bool {
        text.lines().any(|l| l.starts_with(prefix))
    }

    #[test]
    fn requests_render_by_code_and_class() {
        let front_door = front_door(1, "");
        let snapshot = front_door.snapshot();
        let m = &snapshot.services[0].metrics;
        let classes = snapshot.metadata.classes();
        let last = classes.len() - 1;
        m.count(last, 200);
        m.count(last, 200);
        m.count(0, 503);
        m.count(7, 999); // clamped, not out of bounds
        let text = render_metrics(&front_door);
        let (first, last) = (&classes[0], &classes[last]);
        assert!(text.contains(&format!(
            "forecourt_requests_total{{service=\"svc-00000\",code=\"200\",tenant_class=\"{last}\"}} 2"
        )));
        assert!(text.contains(&format!("code=\"503\",tenant_class=\"{first}\"}} 1")));
        assert!(text.contains(&format!("code=\"599\",tenant_class=\"{last}\"}} 1")));
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn detail_goes_to_the_top_by_load_ties_by_name_and_to_urgent_services() {
        let load = |name, stable_rate, urgent| Load {
            name,
            stable_rate,
            urgent,
        };
        let loads = [
            load("e", 0.0, false),
            load("d", 5.0, false),
            load("c", f64::NAN, false),
            load("b", 5.0, false),
            load("a", 0.0, false),
            load("f", 0.0, true),
        ];
        assert_eq!(
            detailed(&loads, 2),
            [false, true, false, true, false, true],
            "b and d by rate, f because urgent"
        );
        assert_eq!(
            detailed(&loads, 3),
            [false, true, false, true, true, true],
            "then a: the first idle one by name (NaN counts as idle)"
        );
        assert_eq!(
            detailed(&loads, 0),
            [false, false, false, false, false, true]
        );
        assert_eq!(detailed(&loads, 100), [true; 6]);
        assert!(detailed(&[], 5).is_empty());
    }

    #[test]
    fn an_idle_service_writes_only_its_core_and_only_the_top_get_detail() {
        let front_door = front_door(300, "metrics: { top_services: 2 }\n");
        publish_board(
            &front_door,
            &[("svc-00005", 50), ("svc-00007", 20), ("svc-00001", 5)],
        );
        let snapshot = front_door.snapshot();
        // svc-00001 answered requests (counters) but is third by load; svc-00009 holds a request.
        let one = &snapshot.service("svc-00001").unwrap().metrics;
        one.count(0, 200);
        one.latency.record(std::time::Duration::from_millis(3));
        snapshot.service("svc-00005").unwrap().metrics.count(0, 200);
        snapshot
            .service("svc-00005")
            .unwrap()
            .metrics
            .latency
            .record(std::time::Duration::from_millis(2));
        snapshot
            .service("svc-00009")
            .unwrap()
            .metrics
            .held_now
            .store(1, Ordering::Relaxed);
        edit_board(&front_door, "svc-00011", |s| s.panicking = true);
        let text = render_metrics(&front_door);

        // An idle service: its two instance lines, nothing else.
        assert_eq!(
            lines_of(&text, "svc-00299"),
            [
                "forecourt_instances{service=\"svc-00299\",state=\"ready\"} 0",
                "forecourt_instances{service=\"svc-00299\",state=\"total\"} 1",
            ]
        );
        // Third by load: the core and its non-zero counter, no detail.
        let third = lines_of(&text, "svc-00001");
        assert_eq!(third.len(), 3, "{third:#?}");
        assert!(third[0].starts_with("forecourt_requests_total{service=\"svc-00001\",code=\"200\""));
        // The top two, the holding one and the panicking one are detailed.
        for service in ["svc-00005", "svc-00007", "svc-00009", "svc-00011"] {
            for family in [
                "forecourt_arrival_rate",
                "forecourt_panic_mode",
                "forecourt_concurrency",
                "forecourt_instance_in_flight",
                "forecourt_held_requests",
            ] {
                assert!(
                    has(&text, &format!("{family}{{service=\"{service}\"")),
                    "{family} of {service} missing"
                );
            }
        }
        for detailed in ["svc-00005", "svc-00007"] {
            let prefix = format!(
                "forecourt_forecast_requests_per_second{{service=\"{detailed}\",horizon=\"60s\",bound=\"upper\"}}"
            );
            assert!(has(&text, &prefix), "{prefix} missing");
        }
        assert!(has(
            &text,
            "forecourt_request_duration_seconds_count{service=\"svc-00005\"} 1"
        ));
        assert!(!text.contains("forecourt_request_duration_seconds_count{service=\"svc-00001\""));
        assert!(text.contains("forecourt_panic_mode{service=\"svc-00011\"} 1"));
        assert!(text.contains("forecourt_held_requests{service=\"svc-00009\"} 1"));
        // Fleet gauges: three services with arrivals and one holding a request are active.
        assert!(text.contains("forecourt_services{state=\"active\"} 4\n"));
        assert!(text.contains("forecourt_services{state=\"idle\"} 296\n"));
        assert!(text.contains("forecourt_forecast_modelled_services 3\n"));
        assert!(text.contains("forecourt_metrics_detailed_services 4\n"));
        // Zero counters of the whole proxy stay: they are one line each.
        assert!(text.contains("forecourt_shed_requests_total 0\n"));
        // No per-model series by default, only the ensemble's own errors.
        assert!(!text.contains("forecourt_forecast_model_weight{"));
        assert!(!text.contains("model=\"holt\""));
        assert!(has(
            &text,
            "forecourt_forecast_wape{service=\"svc-00005\",horizon=\"5s\",model=\"ensemble\"}"
        ));
        assert!(!text.contains("forecourt_forecast_wape{service=\"svc-00001\""));
        assert_well_formed(&text);
    }

    #[test]
    fn forecast_detail_all_adds_every_model_for_detailed_services_and_reloads() {
        let front_door = front_door(20, "metrics: { top_services: 1 }\n");
        publish_board(&front_door, &[("svc-00003", 40), ("svc-00004", 10)]);
        let ensemble = render_metrics(&front_door);
        let ensemble_lines = lines_of(&ensemble, "svc-00003").len();
        // A reload to `all` takes effect at the next scrape.
        front_door
            .apply(policy(
                20,
                "metrics: { forecast_detail: all, top_services: 1 }\n",
            ))
            .unwrap();
        let all = render_metrics(&front_door);
        let all_lines = lines_of(&all, "svc-00003");
        for prefix in [
            "forecourt_forecast_model_weight{service=\"svc-00003\",horizon=\"60s\",model=\"holt\"}",
            "forecourt_forecast_wape{service=\"svc-00003\",horizon=\"5s\",model=\"last_value\"}",
            "forecourt_forecast_upper_coverage_ratio{service=\"svc-00003\",horizon=\"10s\",model=\"ewma_fast\"}",
            "forecourt_forecast_wape{service=\"svc-00003\",horizon=\"5s\",model=\"ensemble\"}",
        ] {
            assert!(has(&all, prefix), "{prefix} missing");
        }
        assert!(
            all_lines.len() > 3 * ensemble_lines,
            "{} vs {ensemble_lines}",
            all_lines.len()
        );
        // Not detailed: no forecast series at all, whatever the level.
        assert!(!all.contains("forecourt_forecast_model_weight{service=\"svc-00004\""));
        assert_eq!(lines_of(&all, "svc-00004").len(), 2);
        assert_well_formed(&all);
    }

    /// Bytes of each service's sample lines, by service label, in one pass.
    fn bytes_by_service(text: &str) -> AHashMap<&str, (usize, usize)> {
        let mut sizes: AHashMap<&str, (usize, usize)> = AHashMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((_, rest)) = line.split_once("service=\"") else {
                continue;
            };
            let name = rest.split('"').next().unwrap();
            let entry = sizes.entry(name).or_default();
            entry.0 += 1;
            entry.1 += line.len() + 1;
        }
        sizes
    }

    /// An idle service costs its lines: two instance lines, under 200 bytes; the rest of the
    /// scrape (headers, fleet series) does not grow with the services. Prints the sizes.
    #[test]
    fn an_idle_service_costs_two_lines_and_under_200_bytes() {
        let services = 2_000;
        let front_door = front_door(services, "");
        publish_board(&front_door, &[("svc-00005", 50)]);
        // The busy one answered requests too: two codes, a tenant class, a latency spread.
        let snapshot = front_door.snapshot();
        let busy = &snapshot.service("svc-00005").unwrap().metrics;
        for i in 0..200u64 {
            busy.count(usize::from(i % 2 == 0), if i % 50 == 0 { 503 } else { 200 });
            busy.latency
                .record(std::time::Duration::from_micros(300 + i * 97));
        }
        let text = render_metrics(&front_door);
        let sizes = bytes_by_service(&text);
        let size = |i: usize| sizes[format!("svc-{i:05}").as_str()];
        let (idle_lines, idle_bytes) = size(services - 1);
        assert_eq!(
            idle_lines, 2,
            "an idle service writes its two instance lines"
        );
        assert!(idle_bytes < 200, "{idle_bytes} bytes for an idle service");
        let detailed = text.matches("forecourt_panic_mode{").count();
        assert_eq!(detailed, 100, "the default top_services");
        let fixed = text.len() - sizes.values().map(|(_, bytes)| bytes).sum::<usize>();
        assert!(fixed < 24 * 1024, "{fixed} bytes not about a service");
        let (_, busy) = size(5);
        let (_, idle_detailed) = size(0);
        assert!(
            busy < 8 * 1024,
            "{busy} bytes for the busy detailed service"
        );
        // The bound a scrape keeps: the fixed part, detailed services, 200 bytes per idle one.
        assert!(
            text.len() <= fixed + detailed * busy + (services - detailed) * 200,
            "{} bytes",
            text.len()
        );
        eprintln!(
            "/metrics of {services} services (default metrics:): {} bytes; idle {idle_bytes} \
             bytes in {idle_lines} lines; busy detailed {busy} bytes; idle detailed \
             {idle_detailed} bytes; fixed {fixed} bytes",
            text.len()
        );
        assert_well_formed(&text);
        front_door
            .apply(policy(services, "metrics: { forecast_detail: all }\n"))
            .unwrap();
        let all = render_metrics(&front_door);
        let sizes = bytes_by_service(&all);
        let (_, busy_all) = sizes["svc-00005"];
        assert!(busy_all < 24 * 1024, "{busy_all} bytes with every model");
        eprintln!(
            "with forecast_detail: all: {} bytes; busy detailed {busy_all} bytes",
            all.len()
        );
    }

    /// Issue 18's goal: ten thousand services, a hundred of them busy, in under 2 MB.
    /// `cargo test -p forecourt-proxy --lib ten_thousand -- --ignored --nocapture`
    #[test]
    #[ignore = "builds ten thousand services: several seconds in a debug build"]
    fn ten_thousand_mostly_idle_services_scrape_in_under_2_mb() {
        let services = 10_000;
        let front_door = front_door(services, "");
        let busy: Vec<String> = (0..100).map(|i| format!("svc-{:05}", i * 97)).collect();
        let busy: Vec<(&str, u64)> = busy.iter().map(|n| (n.as_str(), 20)).collect();
        publish_board(&front_door, &busy);
        let snapshot = front_door.snapshot();
        for (name, _) in &busy {
            let m = &snapshot.service(name).unwrap().metrics;
            for i in 0..100u64 {
                m.count(usize::from(i % 2 == 0), if i % 50 == 0 { 503 } else { 200 });
                m.latency
                    .record(std::time::Duration::from_micros(300 + i * 97));
            }
        }
        let started = std::time::Instant::now();
        let text = render_metrics(&front_door);
        let took = started.elapsed();
        assert!(text.contains("forecourt_metrics_detailed_services 100\n"));
        assert!(text.contains("forecourt_services{state=\"active\"} 100\n"));
        assert!(text.len() < 2_000_000, "{} bytes", text.len());
        eprintln!(
            "/metrics of {services} services, 100 busy: {} bytes ({:.0} per service), rendered in {took:?}",
            text.len(),
            text.len() as f64 / services as f64
        );
    }

    /// Every sample line is `name{labels} value` and each family's samples follow its header.
    fn assert_well_formed(text: &str) {
        let mut family = "";
        let mut seen = AHashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap();
                assert!(seen.insert(family), "{family} written twice");
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            assert!(
                line.starts_with(family),
                "{line:?} outside its family {family}"
            );
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
        }
    }
}
