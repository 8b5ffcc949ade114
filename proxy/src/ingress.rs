//! The Pingora phases of Forecourt's request path. Each phase is thin and calls pure functions.
//!
//! ```text
//! request_filter        refuse ambiguous framing and oversized requests (4xx, connection closed);
//!                       classify → service (404 unrouted); tenant (400 when duplicate,
//!                       invalid or badly signed; ignored from untrusted peers); flag → version;
//!                       hold, or 503 when nothing is ready for the request
//! upstream_peer         pick a confirmed-ready instance (P2C) among the request's candidates (its
//!                       flagged version's, or the unflagged ones; see versions.rs), count it
//! upstream_request_filter  X-Forwarded-For/-Proto/-Host, Forwarded, the believed tenant
//!                       (forward.rs, shared with revalidation and refresh-ahead)
//! fail_to_connect       eject the instance passively; retry on another one
//! error_while_proxy     retry idempotent requests when nothing reached the client yet
//! fail_to_proxy         map the error to a status (503 with Retry-After, 502, 504)
//! logging               count, time, release the instance
//! ```

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use forecourt_predictor::ServiceId;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::classify::metadata::TenantTrusted;
use crate::classify::routes::ServiceIndex;
use crate::classify::version;
use crate::counters::Limited;
use crate::front_door::FrontDoor;
use crate::snapshot::Snapshot;

mod admit;
pub mod balance;
mod cache;
mod ctx;
pub(crate) mod forward;
mod hold;
pub mod refuse;

use balance::pick;
pub use cache::X_CACHE;
use ctx::RequestCtx;
use refuse::{
    body_too_slow, refuse, respond, BAD_GATEWAY, BODY_TOO_SLOW, GATEWAY_TIMEOUT, NO_READY_INSTANCE,
    NO_ROUTE, OVERLOADED, RATE_LIMITED, TOO_MANY_IN_FLIGHT,
};

/// The status an upstream failure after connecting counts as for passive health: 504 for a
/// timeout, 502 otherwise (the answer Forecourt gives for it).
fn upstream_failure_status(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => 504,
        _ => 502,
    }
}

/// The predictor's id of a service: snapshots build the predictor in service order.
fn service_id(index: ServiceIndex) -> ServiceId {
    ServiceId(u32::try_from(index).unwrap_or(u32::MAX))
}

// === impl Ingress ===

impl Ingress {
    /// Notes the flagged version a request of `service` is for, when its flag names one: the
    /// sighting is recorded (atomics), and a version that was idle wakes the control loop so it
    /// is ordered now rather than at the next tick.
    fn match_version(
        &self,
        session: &Session,
        snapshot: &Snapshot,
        service: ServiceIndex,
        ctx: &mut RequestCtx,
    ) {
        let runtime = &snapshot.services[service];
        let Some(flag) = snapshot.metadata.flag(&session.req_header().headers) else {
            return;
        };
        let Some(index) = version::matching(&runtime.versions, flag) else {
            return;
        };
        ctx.version = Some(index);
        let now = self.clock.now_ms();
        if runtime.versions.get(index).is_some_and(|v| v.seen(now)) {
            // Rare (once per grace period): the same wake-up a held request gives.
            self.control.scale_signal.notify_one();
        }
    }
}

/// The request path: Pingora's phases over the shared [`FrontDoor`] state.
#[derive(Debug, Clone)]
pub struct Ingress(pub Arc<FrontDoor>);

impl std::ops::Deref for Ingress {
    type Target = FrontDoor;

    fn deref(&self) -> &FrontDoor {
        &self.0
    }
}

#[async_trait]
impl ProxyHttp for Ingress {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.started = Some(Instant::now());
        let snapshot = self.snapshot();
        ctx.snapshot = Some(snapshot.clone());
        // Shed load first and cheaply: past the in-flight limit, answer 503 before any work.
        ctx.admitted = self.in_flight.try_enter_owned();
        if ctx.admitted.is_none() {
            self.metrics
                .shed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            respond(session, 503, OVERLOADED, Some(1), false).await?;
            return Ok(true);
        }
        // A body read that brings nothing for the header timeout ends the request; a client that
        // does not read the answer (slower than min_send_rate, or not for send_timeout) too,
        // so it cannot hold an instance slot.
        let limits = &snapshot.policy.limits;
        session.set_read_timeout(Some(limits.header_timeout));
        session.set_write_timeout(Some(limits.send_timeout));
        if limits.min_send_rate > 0 {
            session.set_min_send_rate(usize::try_from(limits.min_send_rate).ok());
        }
        let refusal = {
            let req = session.req_header();
            let te = req.headers.contains_key(http::header::TRANSFER_ENCODING);
            let uri_len = req.raw_path().len();
            session.as_downstream().as_http1().and_then(|h1| {
                refuse(
                    &h1.get_headers_raw_bytes(),
                    uri_len,
                    te,
                    &snapshot.policy.limits,
                )
            })
        };
        if let Some(refusal) = refusal {
            self.metrics
                .rejected
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            respond(session, refusal.status(), refusal.body(), None, true).await?;
            return Ok(true);
        }
        let req = session.req_header();
        let host = req
            .uri
            .host()
            .map(str::as_bytes)
            .or_else(|| req.headers.get(http::header::HOST).map(|h| h.as_bytes()));
        let Some(service) = snapshot.routes.classify(host, req.uri.path(), &req.headers) else {
            self.metrics
                .unrouted
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            respond(session, 404, NO_ROUTE, None, false).await?;
            return Ok(true);
        };
        ctx.service = Some(service);
        match snapshot
            .metadata
            .check_tenant(&req.headers, forward::client_ip(session))
        {
            Ok(trusted) => ctx.tenant_trusted = trusted == TenantTrusted::Yes,
            Err(error) => {
                snapshot.services[service].metrics.count_tenant_refused();
                respond(session, 400, error.body(), None, false).await?;
                return Ok(true);
            }
        }
        let tenant = ctx.tenant(&snapshot, &session.req_header().headers);
        ctx.class = snapshot.metadata.class_of(tenant);
        let now = self.clock.now_ms();
        if let Some(limited) = admit::admit(tenant, &snapshot, service, ctx, now) {
            snapshot.services[service].metrics.count_limited(limited.0);
            let body = match limited.0 {
                Limited::TenantRate | Limited::ServiceRate => RATE_LIMITED,
                _ => TOO_MANY_IN_FLIGHT,
            };
            respond(session, 429, body, Some(limited.1), false).await?;
            return Ok(true);
        }
        // Flagged versions: no work at all for a service without `versions:`.
        if !snapshot.services[service].versions.is_empty() {
            self.match_version(session, &snapshot, service, ctx);
        }
        // The cache holds answers of the unflagged instances: flagged requests skip it.
        if ctx.version.is_none()
            && cache::serve_from_cache(
                session,
                &snapshot,
                service,
                cache::CacheTurn {
                    tenant_trusted: ctx.tenant_trusted,
                    tried: &ctx.tried,
                    fill: &mut ctx.fill,
                },
                self.clock.as_ref(),
            )
            .await?
        {
            return Ok(true);
        }
        // Every request that needs an instance is demand, whether or not one is ready for it.
        // (Answers from the cache are not: they cost the service nothing.)
        let tenant = ctx.tenant(&snapshot, &session.req_header().headers);
        let now = self.clock.now_ms();
        let id = service_id(service);
        snapshot.predictor.record_arrival(id, tenant, now);
        snapshot.predictor.request_started(id, now);
        ctx.arrived_ms = Some(now);
        let runtime = &snapshot.services[service];
        let version = ctx.version.and_then(|v| runtime.versions.get(v));
        let has_candidate = {
            let ready = runtime.instances.ready();
            if let Some(version) = version {
                version.route(&ready);
            }
            !version::candidates(&ready, version).is_empty()
        };
        if !has_candidate
            && !hold::hold(
                runtime,
                tenant.unwrap_or(""),
                version,
                &self.control.scale_signal,
            )
            .await
        {
            runtime
                .metrics
                .no_ready_instance
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let retry_after = runtime.config.retry_after;
            respond(session, 503, NO_READY_INSTANCE, Some(retry_after), false).await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.body_bytes += body.as_ref().map_or(0, |b| b.len() as u64);
        let (Some(started), Some(snapshot)) = (ctx.started, &ctx.snapshot) else {
            return Ok(());
        };
        let limits = &snapshot.policy.limits;
        if body_too_slow(
            ctx.body_bytes,
            started.elapsed(),
            limits.header_timeout,
            limits.min_body_rate,
        ) {
            // A trickled body would pin an upstream connection and an instance slot.
            return Error::e_explain(
                ErrorType::HTTPStatus(408),
                "request body arrived too slowly",
            );
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let Some(service) = ctx.service() else {
            return Error::e_explain(ErrorType::HTTPStatus(404), "no service");
        };
        let ready = service.instances.ready();
        let now = self.clock.now_ms();
        let candidates = version::candidates(&ready, ctx.version());
        let Some(instance) = pick(candidates, &ctx.tried, now, service.config.balance).cloned()
        else {
            return Error::e_explain(ErrorType::HTTPStatus(503), "no ready instance left to try");
        };
        if ctx.tried.count() > 0 {
            service
                .metrics
                .retries
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let timeouts = service.config.timeouts;
        let mut peer = HttpPeer::new(instance.address, false, String::new());
        peer.options.connection_timeout = Some(timeouts.connect);
        peer.options.read_timeout = Some(timeouts.read);
        peer.options.write_timeout = Some(timeouts.write);
        peer.options.idle_timeout = Some(timeouts.idle);
        ctx.tried.add(instance.id);
        instance.begin_attempt(now);
        instance.start_request();
        ctx.instance = Some(instance);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(snapshot) = &ctx.snapshot else {
            return Ok(());
        };
        let request = &session.req_header().headers;
        let edits = forward::forwarding(&forward::Forwarded {
            request,
            client: forward::client_ip(session),
            tenant_header: snapshot.metadata.tenant_header(),
            tenant: ctx.tenant(snapshot, request),
        });
        forward::apply(upstream, edits)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.connect_failed(self.clock.now_ms());
        if let Some(service) = ctx.service() {
            service
                .metrics
                .connect_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // Nothing was sent, so any method may go to another instance.
            e.set_retry(ctx.tried.count() <= service.config.retries as usize);
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        _client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        let retries = ctx.service().map_or(0, |s| s.config.retries as usize);
        let safe = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated()
            && session.response_written().is_none();
        let retry = safe && ctx.tried.count() <= retries;
        if retry {
            // A failure after connecting is the instance's (a reset, a timeout, a broken
            // answer) unless the client's side broke.
            let failed = match e.esource() {
                ErrorSource::Upstream => Some(upstream_failure_status(&e)),
                _ => None,
            };
            ctx.release(failed, self.clock.now_ms());
        }
        e.set_retry(retry);
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let (code, body) = match e.etype() {
            ErrorType::HTTPStatus(408) => (408, BODY_TOO_SLOW),
            ErrorType::HTTPStatus(code) => (*code, NO_READY_INSTANCE),
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
                if e.esource() == &ErrorSource::Upstream =>
            {
                (504, GATEWAY_TIMEOUT)
            }
            _ => match e.esource() {
                ErrorSource::Upstream => (502, BAD_GATEWAY),
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => {
                        (0, BAD_GATEWAY)
                    }
                    _ => (400, BAD_GATEWAY),
                },
                ErrorSource::Internal | ErrorSource::Unset => (500, BAD_GATEWAY),
            },
        };
        // A response may already be on its way (e.g. the upstream died mid-body).
        let answered = session.response_written().is_some();
        if code > 0 && !answered {
            let retry_after =
                (code == 503).then(|| ctx.service().map_or(1, |s| s.config.retry_after));
            let _ = respond(session, code, body, retry_after, code == 400 || code == 408).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(mut fill) = ctx.fill.take() else {
            return Ok(());
        };
        if let Some(cache) = ctx.service().and_then(|s| s.cache.as_ref()) {
            let req = session.req_header();
            let now = self.clock.now_ms();
            fill.on_header(cache, &req.method, &req.headers, upstream_response, now);
            upstream_response.insert_header(X_CACHE, "MISS")?;
        }
        ctx.fill = Some(fill);
        Ok(())
    }

    fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        let Some(mut fill) = ctx.fill.take() else {
            return Ok(None);
        };
        if let Some(cache) = ctx.service().and_then(|s| s.cache.as_ref()) {
            let now = self.clock.now_ms();
            let request = &session.req_header().headers;
            fill.on_body(cache, request, body.as_ref(), end_of_stream, now);
        }
        if !end_of_stream {
            ctx.fill = Some(fill);
        }
        Ok(None)
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let now = self.clock.now_ms();
        // What the instance's attempt says about it: nothing when the client broke the exchange
        // (it left before the answer, or trickled its body), else the answer it got.
        let client_side = e.is_some_and(|e| e.esource() == &ErrorSource::Downstream)
            || status == 408
            || status == 0;
        let upstream_failed = e.filter(|e| e.esource() == &ErrorSource::Upstream);
        let observed = match upstream_failed {
            Some(e) if status == 0 => Some(upstream_failure_status(e)),
            _ if client_side => None,
            _ => Some(status),
        };
        ctx.release(observed, now);
        if let (Some(snapshot), Some(index), Some(arrived)) =
            (&ctx.snapshot, ctx.service, ctx.arrived_ms)
        {
            snapshot
                .predictor
                .request_finished(service_id(index), arrived, now);
        }
        if let (Some(service), Some(started)) = (ctx.service(), ctx.started) {
            if status > 0 {
                service.metrics.count(ctx.class, status);
            }
            service.metrics.latency.record(started.elapsed());
        }
    }
}
