//! The admin API (hyper, its own listener): readiness for routing services, metrics, health.
//!
//! ```text
//! GET /healthz                          200 "ok" while the process serves
//! GET /v1/services                      every service: ready and total instances
//! GET /v1/services/{name}/readiness     ready instances (address, version, in flight, latency),
//!                                       not-ready ones with the reason, flagged versions
//! GET /metrics                          Prometheus text format
//! GET /v1/forecasts                     each service's rate, forecast, upper bound, model errors,
//!                                       and the scheduled events; ?service=NAME for one,
//!                                       ?limit=N&offset=M pages by name (100, at most 1000)
//! POST /v1/events                       schedule an event (bearer token required)
//! POST /v1/reload                       reload the policy file (bearer token required)
//! GET /v1/config                        the policy file, its generation, the last rejection
//! DELETE /v1/events/{name}              cancel posted events by name (bearer token required)
//! ```

use std::convert::Infallible;
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

use crate::front_door::FrontDoor;
use crate::reload::ReloadOutcome;

mod auth;
#[cfg(test)]
mod fixture;
mod forecasts;
mod metrics;
mod readiness;

use forecasts::{forecasts_json, ForecastQuery, PostedEvent};
pub use metrics::render_metrics;
pub use readiness::readiness;

/// Largest admin request body.
const MAX_ADMIN_BODY: usize = 64 * 1024;

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

/// The refusal of an admin write without the right token, if any.
fn denied(front_door: &FrontDoor, headers: &http::HeaderMap) -> Option<Response<Full<Bytes>>> {
    auth::check(front_door.admin_token.as_deref(), headers)
        .err()
        .map(|denied| error(denied.status(), denied.message()))
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
                Err(refused) => {
                    return error(StatusCode::UNPROCESSABLE_ENTITY, &refused.to_string())
                }
            };
            tracing::info!(name = %event.name, service = %event.service, "scheduled event posted");
            match front_door.control.events.post(event, now) {
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
            match front_door.control.events.cancel(name) {
                0 => error(StatusCode::NOT_FOUND, "no posted event has that name"),
                n => json(StatusCode::OK, &serde_json::json!({ "cancelled": n })),
            }
        }
        (&Method::GET | &Method::HEAD, ["healthz"]) => get(front_door, &["healthz"], None),
        (&Method::GET | &Method::HEAD, segments) => {
            // With a token configured, reads need it too unless the policy makes them public.
            let public =
                front_door.admin_token.is_none() || front_door.snapshot().policy.admin.public_reads;
            if !public {
                if let Some(refusal) = denied(front_door, &parts.headers) {
                    return refusal;
                }
            }
            get(front_door, segments, parts.uri.query())
        }
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here"),
    }
}

/// Answers a read-only admin request; `query` is the request's query string, if any.
fn get(front_door: &FrontDoor, segments: &[&str], query: Option<&str>) -> Response<Full<Bytes>> {
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
        ["v1", "forecasts"] => {
            let query = match ForecastQuery::parse(query) {
                Ok(query) => query,
                Err(refused) => return error(StatusCode::BAD_REQUEST, &refused.to_string()),
            };
            match forecasts_json(
                &front_door.control.forecasts.load(),
                &front_door.control.scaling.load(),
                &query,
            ) {
                Ok(answer) => json(StatusCode::OK, &answer),
                Err(unknown) => error(StatusCode::NOT_FOUND, &unknown.to_string()),
            }
        }
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
                        &front_door.control.forecasts.load(),
                        &front_door.control.scaling.load(),
                        &front_door.control.versions.load(),
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::admin::fixture::{front_door, publish_board};

    async fn answer(front_door: &FrontDoor, target: &str) -> (StatusCode, serde_json::Value) {
        let uri: http::Uri = target.parse().unwrap();
        let segments: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
        let response = get(front_door, &segments, uri.query());
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn forecasts_take_a_service_and_a_page_and_refuse_bad_queries() {
        let front_door = front_door(3, "");
        publish_board(&front_door, &[]);
        let (status, page) = answer(&front_door, "/v1/forecasts?limit=2").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            (page["total"].as_u64(), page["next_offset"].as_u64()),
            (Some(3), Some(2))
        );
        let (status, one) = answer(&front_door, "/v1/forecasts?service=svc-00002").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(one["services"][0]["service"], "svc-00002");
        let (status, unknown) = answer(&front_door, "/v1/forecasts?service=nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(unknown["error"], "no service is named \"nope\"");
        for (bad, reason) in [
            (
                "limit=0",
                "limit \"0\" must be a whole number from 1 to 1000",
            ),
            (
                "limit=5000",
                "limit \"5000\" must be a whole number from 1 to 1000",
            ),
            (
                "offset=-3",
                "offset \"-3\" must be a whole number, 0 or more",
            ),
            ("limit=x&offset=1", "limit \"x\""),
            ("sort=name", "unknown query parameter \"sort\""),
        ] {
            let (status, refused) = answer(&front_door, &format!("/v1/forecasts?{bad}")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            let message = refused["error"].as_str().unwrap();
            assert!(message.starts_with(reason), "{bad}: {message}");
        }
    }
}
