//! The Pingora phases of Forecourt's request path. Each phase is thin and calls pure functions.
//!
//! ```text
//! request_filter        refuse ambiguous framing and oversized requests (4xx, connection closed);
//!                       classify → service; tenant, flag → version; 404 unrouted; hold, or 503
//!                       when nothing is ready for the request
//! upstream_peer         pick a confirmed-ready instance (P2C) among the request's candidates (its
//!                       flagged version's, or the unflagged ones; see versions.rs), count it
//! upstream_request_filter  X-Forwarded-For/-Proto/-Host
//! fail_to_connect       eject the instance passively; retry on another one
//! error_while_proxy     retry idempotent requests when nothing reached the client yet
//! fail_to_proxy         map the error to a status (503 with Retry-After, 502, 504)
//! logging               count, time, release the instance
//! ```

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use forecourt_orchestrator::Instance;
use forecourt_predictor::ServiceId;
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::admission::{self, OwnedInFlightPermit, OwnedPermit, OwnedTenantPermit, TenantLimit};
use crate::balance::{pick, Tried};
use crate::caching::{self, CacheStep, Fill, Revalidation};
use crate::metadata::TenantClass;
use crate::metrics::Limited;
use crate::routes::ServiceIndex;
use crate::state::{FrontDoor, ServiceRuntime, Snapshot};
use crate::versions::{self, VersionRuntime};

/// Per-request state carried between phases.
#[derive(Default)]
pub struct RequestCtx {
    snapshot: Option<Arc<Snapshot>>,
    service: Option<ServiceIndex>,
    class: TenantClass,
    instance: Option<Arc<Instance>>,
    /// The flagged version the request is for (index into its service's `versions`).
    version: Option<usize>,
    tried: Tried,
    started: Option<Instant>,
    /// Predictor clock when the request was recorded as an arrival of its service.
    arrived_ms: Option<u64>,
    /// The response being recorded for the service's cache, on a cache miss.
    fill: Option<Fill>,
    /// This request's place under `limits.max_in_flight`, released when the request ends.
    admitted: Option<OwnedInFlightPermit>,
    /// Its place in its tenant's concurrency, released when the request ends.
    tenant_permit: Option<OwnedTenantPermit>,
    /// Its place in its service's concurrency, released when the request ends.
    service_permit: Option<OwnedPermit>,
    /// Request body bytes received so far.
    body_bytes: u64,
}

// === impl RequestCtx ===

impl RequestCtx {
    fn service(&self) -> Option<&ServiceRuntime> {
        Some(&self.snapshot.as_ref()?.services[self.service?])
    }

    /// The flagged version the request is for, if its flag matched one.
    fn version(&self) -> Option<&VersionRuntime> {
        let index = self.version?;
        self.service()?.versions.get(index)
    }

    /// Releases the current instance, recording how its attempt ended.
    fn release(&mut self, status: Option<u16>, now_ms: u64) {
        let Some(instance) = self.instance.take() else {
            return;
        };
        instance.finish_request();
        if let (Some(status), Some(service)) = (status, self.service()) {
            instance.observe_status(status, now_ms, &service.config.ejection);
            if let Some(started) = self.started {
                instance.observe_latency(started.elapsed());
            }
        }
    }
}

/// Why a request was refused before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Both `Content-Length` and `Transfer-Encoding`: a request smuggling vector.
    AmbiguousFraming,
    /// The request header block is over the limit.
    HeaderTooLarge,
    /// The request target is over the limit.
    UriTooLong,
}

// === impl Refusal ===

impl Refusal {
    fn status(self) -> u16 {
        match self {
            Refusal::AmbiguousFraming => 400,
            Refusal::HeaderTooLarge => 431,
            Refusal::UriTooLong => 414,
        }
    }

    fn body(self) -> &'static [u8] {
        match self {
            Refusal::AmbiguousFraming => {
                br#"{"error":"both content-length and transfer-encoding"}"#
            }
            Refusal::HeaderTooLarge => br#"{"error":"request header too large"}"#,
            Refusal::UriTooLong => br#"{"error":"request target too long"}"#,
        }
    }
}

/// Checks a request against framing rules and limits, from its raw header block.
pub fn refuse(
    raw_header: &[u8],
    uri_len: usize,
    has_transfer_encoding: bool,
    limits: &forecourt_config::Limits,
) -> Option<Refusal> {
    if raw_header.len() > limits.max_header_bytes {
        return Some(Refusal::HeaderTooLarge);
    }
    if uri_len > limits.max_uri_bytes {
        return Some(Refusal::UriTooLong);
    }
    // Pingora drops Content-Length when Transfer-Encoding is present (RFC 9112 6.3); an edge
    // proxy should refuse such a request instead, so look at what the client really sent.
    if has_transfer_encoding && has_header_line(raw_header, b"content-length") {
        return Some(Refusal::AmbiguousFraming);
    }
    None
}

/// True when a header line named `name` (lowercase) is in the raw header block.
fn has_header_line(raw: &[u8], name: &[u8]) -> bool {
    raw.split(|&b| b == b'\n').skip(1).any(|line| {
        line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name)
            && line[name.len()..].trim_ascii_start().starts_with(b":")
    })
}

/// The `X-Forwarded-For` value for a client at `ip`: appended to the value the client sent, if
/// any. Formats the address on the stack; the header value is the only allocation.
fn forwarded_for(prior: Option<&HeaderValue>, ip: std::net::IpAddr) -> Option<HeaderValue> {
    use std::io::Write as _;
    // The longest textual IPv6 address (with an embedded IPv4 one) is 45 bytes.
    let mut text = [0u8; 48];
    let mut rest = &mut text[..];
    write!(rest, "{ip}").ok()?;
    let len = 48 - rest.len();
    let ip = &text[..len];
    match prior {
        None => HeaderValue::from_bytes(ip).ok(),
        Some(prior) => {
            let mut value = Vec::with_capacity(prior.len() + 2 + ip.len());
            value.extend_from_slice(prior.as_bytes());
            value.extend_from_slice(b", ");
            value.extend_from_slice(ip);
            HeaderValue::from_maybe_shared(Bytes::from(value)).ok()
        }
    }
}

/// `Retry-After` seconds for a rate refusal (a rate of zero says an hour).
fn retry_seconds(retry: crate::admission::RetryAfter) -> u32 {
    if retry.is_never() {
        return 3_600;
    }
    u32::try_from(retry.seconds())
        .unwrap_or(3_600)
        .clamp(1, 3_600)
}

/// The path and query of a request.
fn path_of(req: &RequestHeader) -> &str {
    req.uri.path_and_query().map_or("/", |p| p.as_str())
}

/// Records a GET's hot key without allocating: its path, plus `\n` and the tenant when the cache
/// keeps tenants apart (a path holds no newline; see [`crate::warm::hot_key_path`]). The tenant
/// form is built on the stack; keys too long for it are recorded by path alone.
fn record_hot_key(
    hot: &forecourt_predictor::HotKeys,
    path: &str,
    tenant: Option<&str>,
    shared: bool,
) {
    let Some(tenant) = tenant.filter(|_| !shared) else {
        return hot.record(path);
    };
    let mut text = [0u8; 512];
    let len = path.len() + 1 + tenant.len();
    if len > text.len() {
        return hot.record(path);
    }
    text[..path.len()].copy_from_slice(path.as_bytes());
    text[path.len()] = b'\n';
    text[path.len() + 1..len].copy_from_slice(tenant.as_bytes());
    if let Ok(key) = std::str::from_utf8(&text[..len]) {
        hot.record(key);
    }
}

/// The predictor's id of a service: snapshots build the predictor in service order.
fn service_id(index: ServiceIndex) -> ServiceId {
    ServiceId(u32::try_from(index).unwrap_or(u32::MAX))
}

/// Writes a short JSON response and ends the request.
async fn respond(
    session: &mut Session,
    status: u16,
    body: &'static [u8],
    retry_after: Option<u32>,
    close: bool,
) -> Result<()> {
    let mut header = ResponseHeader::build(status, Some(4))?;
    header.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    header.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    if let Some(seconds) = retry_after {
        header.insert_header(http::header::RETRY_AFTER, seconds)?;
    }
    if close {
        header.insert_header(http::header::CONNECTION, "close")?;
        session.set_keepalive(None);
    }
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session
        .write_response_body(Some(Bytes::from_static(body)), true)
        .await
}

const NO_ROUTE: &[u8] = br#"{"error":"no route for this host and path"}"#;
const NO_READY_INSTANCE: &[u8] = br#"{"error":"no ready instance","retry":true}"#;
const BAD_GATEWAY: &[u8] = br#"{"error":"upstream failed"}"#;
const OVERLOADED: &[u8] = br#"{"error":"overloaded","retry":true}"#;
const RATE_LIMITED: &[u8] = br#"{"error":"rate limited","retry":true}"#;
const TOO_MANY_IN_FLIGHT: &[u8] = br#"{"error":"too many requests in flight","retry":true}"#;
const BODY_TOO_SLOW: &[u8] = br#"{"error":"request body arrived too slowly"}"#;

/// Whether a request body that has brought `bytes` in `elapsed` is too slow: only once it has
/// taken longer than `grace`, and then slower than `min_rate` bytes per second on average.
fn body_too_slow(
    bytes: u64,
    elapsed: std::time::Duration,
    grace: std::time::Duration,
    min_rate: u64,
) -> bool {
    min_rate > 0 && elapsed > grace && (bytes as f64) < min_rate as f64 * elapsed.as_secs_f64()
}
const GATEWAY_TIMEOUT: &[u8] = br#"{"error":"upstream timed out"}"#;

/// Counts a request as held for as long as it lives (a client that gives up drops it).
struct Held<'a>(&'a std::sync::atomic::AtomicU64);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

// === impl Ingress ===

impl Ingress {
    /// Admits a routed request under its tenant's and its service's limits, keeping its
    /// permits in `ctx`; or says which limit refused it and the `Retry-After` seconds.
    fn admit(
        &self,
        session: &Session,
        snapshot: &Snapshot,
        service: ServiceIndex,
        ctx: &mut RequestCtx,
    ) -> Option<(Limited, u32)> {
        let admission = &snapshot.services[service].admission;
        let now = self.clock.now_ms();
        // A request naming no tenant is counted under the default class, as one tenant "".
        let class = match ctx.class {
            crate::metadata::ANONYMOUS_CLASS => snapshot.metadata.default_class(),
            class => class,
        };
        let limit = admission
            .classes
            .get(class)
            .copied()
            .unwrap_or(TenantLimit::UNLIMITED);
        if limit.rate.is_some() || limit.concurrency.is_some() {
            let tenant = snapshot
                .metadata
                .tenant(&session.req_header().headers)
                .unwrap_or("");
            match admission.tenants.admit_owned(tenant, &limit, now) {
                Ok(permit) => ctx.tenant_permit = Some(permit),
                Err(admission::Refusal::Rate(retry)) => {
                    return Some((Limited::TenantRate, retry_seconds(retry)))
                }
                Err(admission::Refusal::Concurrency) => {
                    return Some((Limited::TenantConcurrency, 1))
                }
            }
        }
        if let Some(bucket) = &admission.rate {
            if let Err(retry) = bucket.try_take(now) {
                return Some((Limited::ServiceRate, retry_seconds(retry)));
            }
        }
        if let Some(concurrency) = &admission.concurrency {
            match concurrency.try_acquire_owned() {
                Some(permit) => ctx.service_permit = Some(permit),
                None => return Some((Limited::ServiceConcurrency, 1)),
            }
        }
        None
    }

    /// The cache's part of `request_filter` for a routed request: records its hot key, answers
    /// it from the cache when it can (true), or prepares the fill of a miss in `ctx`.
    async fn serve_from_cache(
        &self,
        session: &mut Session,
        snapshot: &Snapshot,
        service: ServiceIndex,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let runtime = &snapshot.services[service];
        let req = session.req_header();
        let tenant = snapshot.metadata.tenant(&req.headers);
        let path = path_of(req);
        let shared = runtime.cache.as_ref().is_none_or(|c| c.config.shared);
        if req.method == http::Method::GET {
            if let Some(hot) = &runtime.hot_keys {
                record_hot_key(hot, path, tenant, shared);
            }
        }
        let Some(cache) = &runtime.cache else {
            return Ok(false);
        };
        let now = self.clock.now_ms();
        let wait = runtime.config.timeouts.read;
        let step =
            caching::look_up(cache, &req.method, path, &req.headers, tenant, now, wait).await;
        match step {
            CacheStep::Answer(entry, label) => {
                caching::answer(session, &entry, label, now).await?;
                Ok(true)
            }
            CacheStep::Revalidate(key, entry) => {
                let ready = runtime.instances.ready();
                let picked = pick(ready.unflagged(), &ctx.tried, now, runtime.config.balance);
                if let Some(instance) = picked {
                    let req = session.req_header();
                    let path = path_of(req).to_owned();
                    let headers = req.headers.clone();
                    let timeout = runtime.config.timeouts.read;
                    let address = instance.address;
                    let stale = caching::StaleRequest {
                        key: &key,
                        entry: &entry,
                        path_and_query: &path,
                        request: &headers,
                    };
                    let outcome = caching::revalidate(cache, address, stale, now, timeout).await;
                    if let Revalidation::Answer(entry, label) = outcome {
                        caching::answer(session, &entry, label, self.clock.now_ms()).await?;
                        return Ok(true);
                    }
                }
                ctx.fill = Some(Fill::unled(key));
                Ok(false)
            }
            CacheStep::Fetch(fill) => {
                ctx.fill = Some(fill);
                Ok(false)
            }
            CacheStep::Pass => Ok(false),
        }
    }

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
        let Some(index) = versions::matching(&runtime.versions, flag) else {
            return;
        };
        ctx.version = Some(index);
        let now = self.clock.now_ms();
        if runtime.versions.get(index).is_some_and(|v| v.seen(now)) {
            // Rare (once per grace period): the same wake-up a held request gives.
            self.scale_signal.notify_one();
        }
    }

    /// Holds a request of a service with no ready instance for it (`version`: its flagged
    /// version, if any) until one is confirmed ready (true) or the queue (or `tenant`'s share of
    /// it) is full or the deadline passes (false). The body is not read meanwhile.
    async fn hold(
        &self,
        service: &ServiceRuntime,
        tenant: &str,
        version: Option<&VersionRuntime>,
    ) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let hold = service.config.hold;
        let metrics = &service.metrics;
        // One tenant's burst may take only its share of the queue.
        let tenants = &service.admission.tenants;
        let Some(_share) = tenants.hold_slot(tenant, hold.max_per_tenant) else {
            metrics.count_limited(Limited::HoldShare);
            return false;
        };
        if metrics.held_now.fetch_add(1, Relaxed) >= u64::from(hold.max_requests) {
            metrics.held_now.fetch_sub(1, Relaxed);
            return false;
        }
        let _held = Held(&metrics.held_now);
        metrics.held.fetch_add(1, Relaxed);
        // A held request is itself a scale signal: wake the control loop now.
        self.scale_signal.notify_one();
        let started = Instant::now();
        let mut changes = service.instances.subscribe();
        let deadline = tokio::time::sleep(hold.timeout);
        tokio::pin!(deadline);
        let ready = loop {
            if !versions::candidates(&service.instances.ready(), version).is_empty() {
                break true;
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { break false },
                () = &mut deadline => break false,
            }
        };
        metrics.hold_wait.record(started.elapsed());
        ready
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
        // A body read that brings nothing for the header timeout ends the request.
        session.set_read_timeout(Some(snapshot.policy.limits.header_timeout));
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
        ctx.class = snapshot
            .metadata
            .class_of(snapshot.metadata.tenant(&req.headers));
        if let Some(limited) = self.admit(session, &snapshot, service, ctx) {
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
            && self
                .serve_from_cache(session, &snapshot, service, ctx)
                .await?
        {
            return Ok(true);
        }
        // Every request that needs an instance is demand, whether or not one is ready for it.
        // (Answers from the cache are not: they cost the service nothing.)
        let tenant = snapshot.metadata.tenant(&session.req_header().headers);
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
            !versions::candidates(&ready, version).is_empty()
        };
        if !has_candidate && !self.hold(runtime, tenant.unwrap_or(""), version).await {
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
        let candidates = versions::candidates(&ready, ctx.version());
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
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(addr) = session.client_addr().and_then(|a| a.as_inet()) {
            let prior = upstream.headers.get("x-forwarded-for");
            if let Some(value) = forwarded_for(prior, addr.ip()) {
                upstream.insert_header("x-forwarded-for", value)?;
            }
        }
        upstream.insert_header("x-forwarded-proto", "http")?;
        if let Some(host) = session
            .req_header()
            .headers
            .get(http::header::HOST)
            .cloned()
        {
            upstream.insert_header("x-forwarded-host", host)?;
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let now = self.clock.now_ms();
        if let Some(instance) = ctx.instance.take() {
            instance.finish_request();
            if let Some(service) = ctx.service() {
                instance.eject(now, &service.config.ejection);
            }
        }
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
            ctx.release(None, self.clock.now_ms());
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
            upstream_response.insert_header(caching::X_CACHE, "MISS")?;
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

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let now = self.clock.now_ms();
        ctx.release(Some(status), now);
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn limits() -> forecourt_config::Limits {
        forecourt_config::Limits {
            max_header_bytes: 1024,
            max_uri_bytes: 256,
            max_in_flight: 100,
            header_timeout: std::time::Duration::from_secs(1),
            drain_timeout: std::time::Duration::from_secs(1),
            min_body_rate: 1024,
            tenant_classes: Vec::new(),
        }
    }

    #[test]
    fn a_body_is_too_slow_only_after_the_grace_and_below_the_rate() {
        use std::time::Duration;
        let grace = Duration::from_secs(10);
        assert!(
            !body_too_slow(10, Duration::from_secs(5), grace, 1024),
            "within the grace"
        );
        assert!(body_too_slow(110, Duration::from_secs(11), grace, 1024));
        assert!(!body_too_slow(
            1 << 20,
            Duration::from_secs(11),
            grace,
            1024
        ));
        assert!(!body_too_slow(0, Duration::from_secs(60), grace, 0), "off");
    }

    #[test]
    fn forwarded_for_appends_the_client_address() {
        let v4: std::net::IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(forwarded_for(None, v4).unwrap(), "10.1.2.3");
        let prior = HeaderValue::from_static("192.0.2.7");
        assert_eq!(
            forwarded_for(Some(&prior), v4).unwrap(),
            "192.0.2.7, 10.1.2.3"
        );
        let v6: std::net::IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
            .parse()
            .unwrap();
        assert_eq!(
            forwarded_for(None, v6).unwrap(),
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        );
        // Bytes a client may send that are not UTF-8 are kept as they are.
        let odd = HeaderValue::from_bytes(b"caf\xe9").unwrap();
        assert_eq!(
            forwarded_for(Some(&odd), v4).unwrap().as_bytes(),
            b"caf\xe9, 10.1.2.3"
        );
    }

    #[test]
    fn refuses_content_length_with_transfer_encoding() {
        let raw = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length : 4\r\n\r\n";
        assert_eq!(
            refuse(raw, 1, true, &limits()),
            Some(Refusal::AmbiguousFraming)
        );
        let raw = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nX-Content-Length: 4\r\n\r\n";
        assert_eq!(refuse(raw, 1, true, &limits()), None);
    }

    #[test]
    fn refuses_oversized_headers_and_targets() {
        let raw = vec![b'a'; 2000];
        assert_eq!(
            refuse(&raw, 1, false, &limits()),
            Some(Refusal::HeaderTooLarge)
        );
        assert_eq!(
            refuse(b"GET / HTTP/1.1\r\n\r\n", 300, false, &limits()),
            Some(Refusal::UriTooLong)
        );
        assert_eq!(refuse(b"GET / HTTP/1.1\r\n\r\n", 1, false, &limits()), None);
    }
}
