//! The response cache on the request path: what a cached service does with a GET or HEAD.
//!
//! ```text
//! request_filter   key (authority+path+query, tenant unless shared) → hot keys
//!                  personal (Cookie/Authorization, no opt-in) → only entries marked public or
//!                           s-maxage answer it; otherwise it is fetched alone, stored only if
//!                           its response says public or s-maxage
//!                  fresh  → answer from the cache (X-Cache: HIT), no instance needed
//!                  stale  → one request per key revalidates on a ready instance (picked,
//!                           counted and judged like a proxied request, same forwarding headers
//!                           and Host), the others wait for it:
//!                           304 → refresh and answer from the cache; 200 → store and answer
//!                  miss   → first request leads the fill; concurrent ones wait for it
//!                           (coalescing) and are answered from the cache when it is stored
//! response_filter  the leader's response: storable? (Cache-Control, Set-Cookie, size) → record
//! response_body_filter  collect the body up to max_object_bytes, store it at its end
//! ```
//!
//! The cache code itself (Cache-Control rules, the byte-bounded store, coalescing) is in
//! [`crate::cache`]; this module is the glue to Pingora and to instances.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use forecourt_predictor::Clock;

use super::balance::{pick, Tried};
use super::forward::{self, authority_of, path_of};
use crate::cache::{
    personal_request, CacheKey, CachedResponse, Flight, LeaderGuard, Lookup, Outcome,
    RequestDirectives, ResponseDirectives, ServiceCache, StorePlan,
};
use crate::classify::routes::ServiceIndex;
use crate::snapshot::{Attempt, Snapshot};
use crate::warm::instance_client::InstanceClient;

/// The response header that says how the cache answered: `HIT`, `MISS` or `REVALIDATED`.
pub const X_CACHE: &str = "x-cache";

/// What the request path does with a request of a cached service.
pub enum CacheStep {
    /// Answer with this stored response; the label goes in `X-Cache`.
    Answer(Arc<CachedResponse>, &'static str),
    /// The entry is stale and this request leads its revalidation on an instance.
    Revalidate(CacheKey, Arc<CachedResponse>, LeaderGuard),
    /// Fetch from an instance and record the response for the cache.
    Fetch(Fill),
    /// Not for the cache (a method other than GET/HEAD, or `no-store`): proxy as usual.
    Pass,
}

/// The request a cache lookup is for.
pub struct CacheRequest<'a> {
    /// Its method.
    pub method: &'a Method,
    /// Its authority (`Host`), raw.
    pub authority: &'a [u8],
    /// Its path and query.
    pub path_and_query: &'a str,
    /// Its headers.
    pub headers: &'a HeaderMap,
    /// The tenant it is keyed under.
    pub tenant: Option<&'a str>,
}

/// Whether a stored response may answer a personal request (one with `Cookie` or
/// `Authorization`): only when it said `public` or `s-maxage`.
fn answers_personal(entry: &CachedResponse) -> bool {
    ResponseDirectives::parse(&entry.headers).is_shared()
}

/// Looks a request up. A miss joins the key's fill: the first request leads it, the others wait
/// up to `wait` and are answered from the cache when the leader stored the response. A stale
/// entry is revalidated once for all the requests that find it at the same time.
pub async fn look_up(
    cache: &ServiceCache,
    request: &CacheRequest<'_>,
    now_ms: u64,
    wait: Duration,
) -> CacheStep {
    let CacheRequest {
        method, headers, ..
    } = *request;
    if method != Method::GET && method != Method::HEAD {
        return CacheStep::Pass;
    }
    if RequestDirectives::parse(headers).no_store {
        // Nothing of this exchange may be stored: don't make waiting requests depend on it.
        return CacheStep::Pass;
    }
    let key = cache.key(request.authority, request.path_and_query, request.tenant);
    let personal = personal_request(headers, cache.store.rules()).is_some();
    let found = match cache.store.lookup(&key, headers, now_ms) {
        Lookup::Fresh(entry) | Lookup::Stale(entry) if personal && !answers_personal(&entry) => {
            Lookup::Miss
        }
        found => found,
    };
    match found {
        Lookup::Fresh(entry) => return CacheStep::Answer(entry, "HIT"),
        Lookup::Stale(entry) => {
            return revalidate_once(cache, key, entry, headers, now_ms, wait).await
        }
        Lookup::Miss => {}
    }
    if method == Method::HEAD {
        // A HEAD answer has no body to store: proxy it, and let a GET fill the cache.
        return CacheStep::Pass;
    }
    if personal {
        // Fetched on its own: no one waits for an answer that is probably not for them.
        return CacheStep::Fetch(Fill::unled(key));
    }
    match cache.flights.join(key.hash()) {
        Flight::Leader(leader) => CacheStep::Fetch(Fill::new(key, Some(leader))),
        Flight::Follower(follower) => {
            if follower.wait(wait).await == Outcome::Stored {
                if let Lookup::Fresh(entry) = cache.store.lookup(&key, headers, now_ms) {
                    cache.coalesced.fetch_add(1, Relaxed);
                    return CacheStep::Answer(entry, "HIT");
                }
            }
            // The leader stored nothing (or too late): fetch on our own, and store if we can.
            CacheStep::Fetch(Fill::new(key, None))
        }
    }
}

/// A stale entry's revalidation, once per key: the first request leads it; the others wait up
/// to `wait` and are answered with the refreshed entry, or proxy on their own.
async fn revalidate_once(
    cache: &ServiceCache,
    key: CacheKey,
    entry: Arc<CachedResponse>,
    headers: &HeaderMap,
    now_ms: u64,
    wait: Duration,
) -> CacheStep {
    match cache.flights.join(key.hash()) {
        Flight::Leader(leader) => CacheStep::Revalidate(key, entry, leader),
        Flight::Follower(follower) => {
            if follower.wait(wait).await == Outcome::Stored {
                // Validated with the instance after this request arrived: that is what even a
                // `no-cache` request asks for, so one revalidation answers them all.
                let validated = cache
                    .store
                    .peek(&key, headers)
                    .filter(|entry| entry.stored_ms >= now_ms && !entry.must_revalidate);
                if let Some(entry) = validated {
                    cache.coalesced.fetch_add(1, Relaxed);
                    return CacheStep::Answer(entry, "REVALIDATED");
                }
            }
            CacheStep::Fetch(Fill::unled(key))
        }
    }
}

/// A response being recorded for the cache, from its header to the end of its body.
pub struct Fill {
    key: CacheKey,
    leader: Option<LeaderGuard>,
    recording: Option<Recording>,
}

/// The parts of a storable response gathered so far.
struct Recording {
    plan: StorePlan,
    status: u16,
    headers: HeaderMap,
    chunks: Vec<Bytes>,
    bytes: usize,
}

// === impl Fill ===

impl Fill {
    /// A fill that no other request waits for (after a failed revalidation).
    pub fn unled(key: CacheKey) -> Self {
        Self::new(key, None)
    }

    /// A fill that the requests waiting on `leader` wait for.
    pub fn led(key: CacheKey, leader: LeaderGuard) -> Self {
        Self::new(key, Some(leader))
    }

    fn new(key: CacheKey, leader: Option<LeaderGuard>) -> Self {
        Self {
            key,
            leader,
            recording: None,
        }
    }

    /// Sees the instance's response header: records it when it may be stored.
    pub fn on_header(
        &mut self,
        cache: &ServiceCache,
        method: &Method,
        request: &HeaderMap,
        response: &ResponseHeader,
        now_ms: u64,
    ) {
        let status = response.status.as_u16();
        let plan = match cache
            .store
            .plan(method, request, status, &response.headers, now_ms)
        {
            Ok(plan) => plan,
            Err(reason) => {
                tracing::trace!(reason = reason.as_str(), "response not stored");
                return self.give_up();
            }
        };
        let declared = response
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > cache.config.max_object_bytes) {
            cache.too_large.fetch_add(1, Relaxed);
            return self.give_up();
        }
        self.recording = Some(Recording {
            plan,
            status,
            headers: response.headers.clone(),
            chunks: Vec::new(),
            bytes: 0,
        });
    }

    /// Sees a piece of the body; at its end, stores the response. Bodies over
    /// `max_object_bytes` stream through and are not stored.
    pub fn on_body(
        &mut self,
        cache: &ServiceCache,
        request: &HeaderMap,
        chunk: Option<&Bytes>,
        end: bool,
        now_ms: u64,
    ) {
        let Some(recording) = self.recording.as_mut() else {
            return;
        };
        if let Some(chunk) = chunk {
            recording.bytes += chunk.len();
            if recording.bytes as u64 > cache.config.max_object_bytes {
                cache.too_large.fetch_add(1, Relaxed);
                return self.give_up();
            }
            recording.chunks.push(chunk.clone());
        }
        if !end {
            return;
        }
        let Some(recording) = self.recording.take() else {
            return;
        };
        let body = join(recording.chunks, recording.bytes);
        let stored = cache.store.insert(
            self.key.clone(),
            request,
            recording.plan,
            recording.status,
            recording.headers,
            body,
            now_ms,
        );
        if let Some(leader) = self.leader.take() {
            leader.finish(stored);
        }
    }

    /// Stops recording and releases waiting requests at once (nothing will be stored).
    fn give_up(&mut self) {
        self.recording = None;
        if let Some(leader) = self.leader.take() {
            leader.finish(false);
        }
    }
}

/// One `Bytes` from the body's pieces (no copy when there is one piece).
fn join(mut chunks: Vec<Bytes>, bytes: usize) -> Bytes {
    if chunks.len() == 1 {
        return chunks.pop().unwrap_or_default();
    }
    let mut body = BytesMut::with_capacity(bytes);
    for chunk in chunks {
        body.extend_from_slice(&chunk);
    }
    body.freeze()
}

/// Headers of the client's request that are not sent on a revalidation or refresh.
fn skipped_on_revalidation(name: &HeaderName) -> bool {
    use http::header::*;
    [
        CONNECTION,
        TE,
        TRANSFER_ENCODING,
        UPGRADE,
        CONTENT_LENGTH,
        IF_NONE_MATCH,
        IF_MODIFIED_SINCE,
        IF_MATCH,
        IF_UNMODIFIED_SINCE,
        IF_RANGE,
        RANGE,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
}

/// How a revalidation ended.
pub enum Revalidation {
    /// Answer with this entry (refreshed by a `304`, or newly stored from a `200`).
    Answer(Arc<CachedResponse>, &'static str),
    /// The instance answered, but not with something to answer from the cache: proxy the
    /// request.
    Proxy,
}

/// A stale entry to revalidate, and the request that found it.
pub struct StaleRequest<'a> {
    /// The entry's key.
    pub key: &'a CacheKey,
    /// The stale entry, with its validators.
    pub entry: &'a CachedResponse,
    /// The request's path and query.
    pub path_and_query: &'a str,
    /// The client's request headers (to store the answer under its `Vary` values).
    pub request: &'a HeaderMap,
    /// The headers sent: the client's (its `Host` included) after the forwarding rewrite,
    /// minus hop-by-hop and conditional ones.
    pub sent: Vec<(HeaderName, HeaderValue)>,
}

/// Revalidates a stale entry on the instance at `address` with the request's headers and the
/// entry's validators, within `timeout`.
pub async fn revalidate(
    cache: &ServiceCache,
    address: std::net::SocketAddr,
    stale: StaleRequest<'_>,
    now_ms: u64,
    timeout: Duration,
) -> (Revalidation, Attempt) {
    let StaleRequest {
        key,
        entry,
        path_and_query,
        request,
        mut sent,
    } = stale;
    if let Some(etag) = &entry.etag {
        sent.push((http::header::IF_NONE_MATCH, etag.clone()));
    }
    if let Some(modified) = &entry.last_modified {
        sent.push((http::header::IF_MODIFIED_SINCE, modified.clone()));
    }
    let limit = usize::try_from(cache.config.max_object_bytes).unwrap_or(usize::MAX);
    let Ok(Ok(mut client)) = tokio::time::timeout(timeout, InstanceClient::connect(address)).await
    else {
        return (Revalidation::Proxy, Attempt::Unreachable);
    };
    let ask = client.send(Method::GET, path_and_query, &sent, limit);
    let answer = match tokio::time::timeout(timeout, ask).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(error)) => {
            tracing::debug!(%address, %error, "revalidation failed");
            return (Revalidation::Proxy, Attempt::Answered(502));
        }
        Err(_) => return (Revalidation::Proxy, Attempt::Answered(504)),
    };
    let asked = Attempt::Answered(answer.status);
    if answer.status == 304 {
        let refreshed = cache
            .store
            .revalidated(key, request, &answer.headers, now_ms);
        return match refreshed {
            Some(entry) => {
                cache.revalidated.fetch_add(1, Relaxed);
                (Revalidation::Answer(entry, "REVALIDATED"), asked)
            }
            None => (Revalidation::Proxy, asked),
        };
    }
    let Some(body) = answer.body else {
        return (Revalidation::Proxy, asked);
    };
    let Ok(plan) = cache.store.plan(
        &Method::GET,
        request,
        answer.status,
        &answer.headers,
        now_ms,
    ) else {
        return (Revalidation::Proxy, asked);
    };
    if !cache.store.insert(
        key.clone(),
        request,
        plan,
        answer.status,
        answer.headers,
        body,
        now_ms,
    ) {
        return (Revalidation::Proxy, asked);
    }
    match cache.store.lookup(key, request, now_ms) {
        Lookup::Fresh(entry) | Lookup::Stale(entry) => (Revalidation::Answer(entry, "MISS"), asked),
        Lookup::Miss => (Revalidation::Proxy, asked),
    }
}

/// Writes a stored response to the client: its headers with `Age`, `Content-Length` and
/// `X-Cache`, and its body unless the request is a HEAD.
pub async fn answer(
    session: &mut Session,
    entry: &CachedResponse,
    label: &'static str,
    now_ms: u64,
) -> Result<()> {
    let mut header = ResponseHeader::build(entry.status, Some(entry.headers.len() + 3))?;
    for (name, value) in &entry.headers {
        if name != http::header::CONTENT_LENGTH {
            header.append_header(name.clone(), value.clone())?;
        }
    }
    header.insert_header(http::header::CONTENT_LENGTH, entry.body.len())?;
    header.insert_header(http::header::AGE, entry.age_secs(now_ms))?;
    header.insert_header(X_CACHE, label)?;
    let head = session.req_header().method == Method::HEAD;
    session
        .write_response_header(Box::new(header), head)
        .await?;
    if !head {
        session
            .write_response_body(Some(entry.body.clone()), true)
            .await?;
    }
    Ok(())
}

/// What the request path knows of a request when it asks the cache: whether its tenant header
/// is believed, the instances it tried, and where a miss's fill goes.
pub(super) struct CacheTurn<'a> {
    /// The tenant header passed `check_tenant` and is believed.
    pub tenant_trusted: bool,
    /// Instances the request already tried.
    pub tried: &'a Tried,
    /// The fill of a miss, for the response filters.
    pub fill: &'a mut Option<Fill>,
}

/// The cache's part of `request_filter` for a routed request: records its hot key, answers
/// it from the cache when it can (true), or prepares the fill of a miss in `turn.fill`.
pub(super) async fn serve_from_cache(
    session: &mut Session,
    snapshot: &Snapshot,
    service: ServiceIndex,
    turn: CacheTurn<'_>,
    clock: &dyn Clock,
) -> Result<bool> {
    let runtime = &snapshot.services[service];
    let req = session.req_header();
    let tenant = snapshot
        .metadata
        .believed_tenant(&req.headers, turn.tenant_trusted);
    let path = path_of(req);
    let authority = authority_of(req);
    let shared = runtime.cache.as_ref().is_none_or(|c| c.config.shared);
    if req.method == http::Method::GET {
        if let Some(hot) = &runtime.hot_keys {
            record_hot_key(hot, path, authority, tenant.filter(|_| !shared));
        }
    }
    let Some(cache) = &runtime.cache else {
        return Ok(false);
    };
    let now = clock.now_ms();
    let wait = runtime.config.timeouts.read;
    let request = CacheRequest {
        method: &req.method,
        authority,
        path_and_query: path,
        headers: &req.headers,
        tenant,
    };
    let step = look_up(cache, &request, now, wait).await;
    match step {
        CacheStep::Answer(entry, label) => {
            answer(session, &entry, label, now).await?;
            Ok(true)
        }
        CacheStep::Revalidate(key, entry, leader) => {
            let asking = Asking {
                session,
                snapshot,
                service,
                tenant_trusted: turn.tenant_trusted,
                tried: turn.tried,
            };
            if let Some(entry) = revalidate_on_instance(asking, &key, &entry, clock).await {
                leader.finish(true);
                answer(session, &entry.0, entry.1, clock.now_ms()).await?;
                return Ok(true);
            }
            // Proxied: the requests waiting for this key wait for its fill instead.
            *turn.fill = Some(Fill::led(key, leader));
            Ok(false)
        }
        CacheStep::Fetch(step_fill) => {
            *turn.fill = Some(step_fill);
            Ok(false)
        }
        CacheStep::Pass => Ok(false),
    }
}

/// The request a revalidation is made for.
struct Asking<'a> {
    session: &'a Session,
    snapshot: &'a Snapshot,
    service: ServiceIndex,
    tenant_trusted: bool,
    tried: &'a Tried,
}

/// Revalidates `entry` on a ready instance, picked like a proxied request's, counted in its
/// in-flight requests and judged by its answer (a failure counts towards its ejection).
async fn revalidate_on_instance(
    asking: Asking<'_>,
    key: &CacheKey,
    entry: &CachedResponse,
    clock: &dyn Clock,
) -> Option<(Arc<CachedResponse>, &'static str)> {
    let Asking {
        session,
        snapshot,
        service,
        tenant_trusted,
        tried,
    } = asking;
    let runtime = &snapshot.services[service];
    let cache = runtime.cache.as_ref()?;
    let now = clock.now_ms();
    let instance = {
        let ready = runtime.instances.ready();
        pick(ready.unflagged(), tried, now, runtime.config.balance)?.clone()
    };
    let req = session.req_header();
    let edits = forward::forwarding(&forward::Forwarded {
        request: &req.headers,
        client: forward::client_ip(session),
        tenant_header: snapshot.metadata.tenant_header(),
        tenant: snapshot
            .metadata
            .believed_tenant(&req.headers, tenant_trusted),
    });
    let stale = StaleRequest {
        key,
        entry,
        path_and_query: path_of(req),
        request: &req.headers,
        sent: forward::edited_headers(&req.headers, skipped_on_revalidation, edits),
    };
    runtime.metrics.revalidations.fetch_add(1, Relaxed);
    instance.begin_attempt(now);
    instance.start_request();
    let started = std::time::Instant::now();
    let timeout = runtime.config.timeouts.read;
    let (outcome, attempt) = revalidate(cache, instance.address, stale, now, timeout).await;
    instance.finish_request();
    if matches!(attempt, Attempt::Answered(_)) {
        instance.observe_latency(started.elapsed());
    }
    runtime.judge(&instance, attempt, clock.now_ms());
    match outcome {
        Revalidation::Answer(entry, label) => Some((entry, label)),
        Revalidation::Proxy => None,
    }
}

/// Records a GET's hot key without allocating: its path, `\n`, its normalized authority, and
/// `\n` and the tenant when the cache keeps tenants apart (a path or authority holds no
/// newline; see [`crate::warm::hot_key_path`] and [`crate::warm::refresh::split_hot_key`]). The
/// text is built on the stack; keys too long for it are not recorded.
fn record_hot_key(
    hot: &forecourt_predictor::HotKeys,
    path: &str,
    authority: &[u8],
    tenant: Option<&str>,
) {
    let mut text = [0u8; 512];
    let mut len = 0;
    let mut fits = true;
    let mut put = |b: u8| match text.get_mut(len) {
        Some(slot) => {
            *slot = b;
            len += 1;
        }
        None => fits = false,
    };
    path.bytes().for_each(&mut put);
    put(b'\n');
    crate::cache::normalize_authority(authority, &mut put);
    if let Some(tenant) = tenant {
        put(b'\n');
        tenant.bytes().for_each(&mut put);
    }
    if fits {
        if let Ok(key) = std::str::from_utf8(&text[..len]) {
            hot.record(key);
        }
    }
}
