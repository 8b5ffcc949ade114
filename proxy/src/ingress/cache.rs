//! The response cache on the request path: what a cached service does with a GET or HEAD.
//!
//! ```text
//! request_filter   key (path+query, tenant unless shared) → hot keys
//!                  fresh  → answer from the cache (X-Cache: HIT), no instance needed
//!                  stale  → revalidate on a ready instance (If-None-Match / If-Modified-Since):
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
use super::forward::path_of;
use crate::cache::{
    CacheKey, CachedResponse, Flight, LeaderGuard, Lookup, Outcome, RequestDirectives,
    ServiceCache, StorePlan,
};
use crate::classify::routes::ServiceIndex;
use crate::snapshot::Snapshot;
use crate::warm::instance_client::InstanceClient;

/// The response header that says how the cache answered: `HIT`, `MISS` or `REVALIDATED`.
pub const X_CACHE: &str = "x-cache";

/// What the request path does with a request of a cached service.
pub enum CacheStep {
    /// Answer with this stored response; the label goes in `X-Cache`.
    Answer(Arc<CachedResponse>, &'static str),
    /// The entry is stale: revalidate it on an instance before answering.
    Revalidate(CacheKey, Arc<CachedResponse>),
    /// Fetch from an instance and record the response for the cache.
    Fetch(Fill),
    /// Not for the cache (a method other than GET/HEAD, or `no-store`): proxy as usual.
    Pass,
}

/// Looks a request up. A miss joins the key's fill: the first request leads it, the others wait
/// up to `wait` and are answered from the cache when the leader stored the response.
pub async fn look_up(
    cache: &ServiceCache,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    tenant: Option<&str>,
    now_ms: u64,
    wait: Duration,
) -> CacheStep {
    if method != Method::GET && method != Method::HEAD {
        return CacheStep::Pass;
    }
    if RequestDirectives::parse(headers).no_store {
        // Nothing of this exchange may be stored: don't make waiting requests depend on it.
        return CacheStep::Pass;
    }
    let key = cache.key(path_and_query, tenant);
    match cache.store.lookup(&key, headers, now_ms) {
        Lookup::Fresh(entry) => return CacheStep::Answer(entry, "HIT"),
        Lookup::Stale(entry) => return CacheStep::Revalidate(key, entry),
        Lookup::Miss => {}
    }
    if method == Method::HEAD {
        // A HEAD answer has no body to store: proxy it, and let a GET fill the cache.
        return CacheStep::Pass;
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
        HOST,
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
    /// The instance could not be asked, or its answer could not be stored: proxy the request.
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
    /// The request's headers (sent on, minus hop-by-hop and conditional ones).
    pub request: &'a HeaderMap,
}

/// Revalidates a stale entry on the instance at `address` with the client's headers and the
/// entry's validators, within `timeout`.
pub async fn revalidate(
    cache: &ServiceCache,
    address: std::net::SocketAddr,
    stale: StaleRequest<'_>,
    now_ms: u64,
    timeout: Duration,
) -> Revalidation {
    let StaleRequest {
        key,
        entry,
        path_and_query,
        request,
    } = stale;
    let mut headers: Vec<(HeaderName, HeaderValue)> = request
        .iter()
        .filter(|(name, _)| !skipped_on_revalidation(name))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    if let Some(etag) = &entry.etag {
        headers.push((http::header::IF_NONE_MATCH, etag.clone()));
    }
    if let Some(modified) = &entry.last_modified {
        headers.push((http::header::IF_MODIFIED_SINCE, modified.clone()));
    }
    let limit = usize::try_from(cache.config.max_object_bytes).unwrap_or(usize::MAX);
    let ask = async {
        let mut client = InstanceClient::connect(address).await?;
        client
            .send(Method::GET, path_and_query, &headers, limit)
            .await
    };
    let answer = match tokio::time::timeout(timeout, ask).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(error)) => {
            tracing::debug!(%address, %error, "revalidation failed");
            return Revalidation::Proxy;
        }
        Err(_) => return Revalidation::Proxy,
    };
    if answer.status == 304 {
        return match cache
            .store
            .revalidated(key, request, &answer.headers, now_ms)
        {
            Some(entry) => {
                cache.revalidated.fetch_add(1, Relaxed);
                Revalidation::Answer(entry, "REVALIDATED")
            }
            None => Revalidation::Proxy,
        };
    }
    let Some(body) = answer.body else {
        return Revalidation::Proxy;
    };
    let Ok(plan) = cache.store.plan(
        &Method::GET,
        request,
        answer.status,
        &answer.headers,
        now_ms,
    ) else {
        return Revalidation::Proxy;
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
        return Revalidation::Proxy;
    }
    match cache.store.lookup(key, request, now_ms) {
        Lookup::Fresh(entry) | Lookup::Stale(entry) => Revalidation::Answer(entry, "MISS"),
        Lookup::Miss => Revalidation::Proxy,
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

/// The cache's part of `request_filter` for a routed request: records its hot key, answers
/// it from the cache when it can (true), or prepares the fill of a miss in `fill`.
pub(super) async fn serve_from_cache(
    session: &mut Session,
    snapshot: &Snapshot,
    service: ServiceIndex,
    tried: &Tried,
    fill: &mut Option<Fill>,
    clock: &dyn Clock,
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
    let now = clock.now_ms();
    let wait = runtime.config.timeouts.read;
    let step = look_up(cache, &req.method, path, &req.headers, tenant, now, wait).await;
    match step {
        CacheStep::Answer(entry, label) => {
            answer(session, &entry, label, now).await?;
            Ok(true)
        }
        CacheStep::Revalidate(key, entry) => {
            let ready = runtime.instances.ready();
            let picked = pick(ready.unflagged(), tried, now, runtime.config.balance);
            if let Some(instance) = picked {
                let req = session.req_header();
                let path = path_of(req).to_owned();
                let headers = req.headers.clone();
                let timeout = runtime.config.timeouts.read;
                let address = instance.address;
                let stale = StaleRequest {
                    key: &key,
                    entry: &entry,
                    path_and_query: &path,
                    request: &headers,
                };
                let outcome = revalidate(cache, address, stale, now, timeout).await;
                if let Revalidation::Answer(entry, label) = outcome {
                    answer(session, &entry, label, clock.now_ms()).await?;
                    return Ok(true);
                }
            }
            *fill = Some(Fill::unled(key));
            Ok(false)
        }
        CacheStep::Fetch(step_fill) => {
            *fill = Some(step_fill);
            Ok(false)
        }
        CacheStep::Pass => Ok(false),
    }
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
