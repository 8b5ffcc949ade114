//! The admin API (hyper, its own listener): readiness for routing services, metrics, health.
//!
//! ```text
//! GET /healthz                          200 "ok" while the process serves
//! GET /v1/services                      every service: ready and total instances
//! GET /v1/services/{name}/readiness     ready instances (address, version, in flight, latency)
//!                                       and not-ready ones with the reason
//! GET /metrics                          Prometheus text format
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

use crate::metrics::{label, render_requests};
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
}

/// Builds the readiness answer of one service.
pub fn readiness(service: &ServiceRuntime, now_ms: u64) -> Readiness {
    let mut ready = Vec::new();
    let mut not_ready = Vec::new();
    let threshold = service.config.health_check.healthy_threshold;
    for instance in service.instances.all().iter() {
        let address = instance.address.to_string();
        let version = instance.version.to_string();
        if !instance.is_ready() {
            let reason = instance.health().reason(threshold);
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
            });
        }
    }
    Readiness {
        service: service.config.name.clone(),
        ready,
        not_ready,
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
    let _ = writeln!(
        out,
        "# HELP forecourt_unrouted_requests_total Requests no route matched.\n# TYPE forecourt_unrouted_requests_total counter\nforecourt_unrouted_requests_total {}",
        front_door.metrics.unrouted.load(relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP forecourt_refused_requests_total Requests refused before routing (framing, size).\n# TYPE forecourt_refused_requests_total counter\nforecourt_refused_requests_total {}",
        front_door.metrics.rejected.load(relaxed)
    );
    out
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

/// Answers one admin request.
pub fn handle(front_door: &FrontDoor, method: &Method, path: &str) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return error(StatusCode::METHOD_NOT_ALLOWED, "only GET is served here");
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["healthz"] => Response::new(Full::new(Bytes::from_static(b"ok\n"))),
        ["metrics"] => Response::builder()
            .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")
            .body(Full::new(Bytes::from(render_metrics(front_door))))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))),
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
                    &readiness(service, front_door.clock.now_ms()),
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
                let response = handle(&front_door, req.method(), req.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
