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

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use forecourt_config::CacheConfig;
use forecourt_predictor::HotKeys;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use crate::cache::{
    CacheKey, CacheRules, CachedResponse, Flight, Flights, LeaderGuard, Lookup, Outcome,
    RequestDirectives, ResponseCache, StorePlan,
};
use crate::instance_client::InstanceClient;

/// The response header that says how the cache answered: `HIT`, `MISS` or `REVALIDATED`.
pub const X_CACHE: &str = "x-cache";

/// One service's response cache, with its fills in flight and counters. Kept across reloads
/// while the service's `cache:` settings stay the same.
pub struct ServiceCache {
    /// The stored responses.
    pub store: ResponseCache,
    /// Misses being fetched, so concurrent misses for one key make one upstream request.
    pub flights: Flights,
    /// The settings it was built from.
    pub config: CacheConfig,
    /// Requests answered from the cache after waiting for another request's fill.
    pub coalesced: AtomicU64,
    /// Stale entries revalidated with a `304`.
    pub revalidated: AtomicU64,
    /// Entries re-fetched before they expired (refresh-ahead).
    pub refreshed: AtomicU64,
    /// Responses over `max_object_bytes` passed through uncached.
    pub too_large: AtomicU64,
}

impl std::fmt::Debug for ServiceCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceCache")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The cache library's rules for a service's `cache:` settings.
pub fn rules(config: &CacheConfig) -> CacheRules {
    CacheRules {
        default_ttl: config.ttl,
        max_ttl: config.max_ttl,
        max_bytes: config.max_bytes,
        max_object_bytes: config.max_object_bytes,
        shared: config.shared,
        cache_set_cookie: config.cache_set_cookie,
        cache_authorized: config.cache_authorized,
    }
}

// === impl ServiceCache ===

impl ServiceCache {
    /// An empty cache for `config`.
    pub fn new(config: &CacheConfig) -> Self {
        Self {
            store: ResponseCache::new(rules(config)),
            flights: Flights::default(),
            config: config.clone(),
            coalesced: AtomicU64::new(0),
            revalidated: AtomicU64::new(0),
            refreshed: AtomicU64::new(0),
            too_large: AtomicU64::new(0),
        }
    }

    /// The cache key of a request for `path_and_query` by `tenant`.
    pub fn key(&self, path_and_query: &str, tenant: Option<&str>) -> CacheKey {
        CacheKey::new(path_and_query, tenant, self.config.shared)
    }
}

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

/// Cached entries of hot keys that expire within `ahead_ms`: the keys to re-fetch now so they
/// are still fresh when the forecast load asks for them. Looks at the `limit` hottest keys.
pub fn due_for_refresh(
    cache: &ServiceCache,
    hot: &HotKeys,
    limit: usize,
    now_ms: u64,
    ahead_ms: u64,
) -> Vec<(String, Option<String>)> {
    let mut due = Vec::new();
    let none = HeaderMap::new();
    for (text, _) in hot.top(limit) {
        let (path, tenant) = match text.split_once('\n') {
            Some((path, tenant)) => (path, Some(tenant)),
            None => (&*text, None),
        };
        let key = cache.key(path, tenant);
        let Some(entry) = cache.store.peek(&key, &none) else {
            continue;
        };
        if entry.is_fresh(now_ms) && entry.fresh_until_ms.saturating_sub(now_ms) <= ahead_ms {
            due.push((path.to_owned(), tenant.map(str::to_owned)));
        }
    }
    due
}

/// Re-fetches `path` (for `tenant`, sent in `tenant_header`) from the instance at `address` and
/// stores the answer: refresh-ahead. True when a fresh response was stored.
pub async fn refresh(
    cache: &ServiceCache,
    client: &mut InstanceClient,
    path: &str,
    tenant: Option<(&HeaderName, &str)>,
    now_ms: u64,
) -> Result<bool, String> {
    let mut headers: Vec<(HeaderName, HeaderValue)> = vec![(
        HeaderName::from_static(crate::warm::WARM_HEADER),
        HeaderValue::from_static("refresh"),
    )];
    let mut request = HeaderMap::new();
    if let Some((name, value)) = tenant {
        let value = HeaderValue::from_str(value).map_err(|e| format!("tenant: {e}"))?;
        headers.push((name.clone(), value.clone()));
        request.insert(name.clone(), value);
    }
    let limit = usize::try_from(cache.config.max_object_bytes).unwrap_or(usize::MAX);
    let answer = client.send(Method::GET, path, &headers, limit).await?;
    let Some(body) = answer.body else {
        return Ok(false);
    };
    let Ok(plan) = cache.store.plan(
        &Method::GET,
        &request,
        answer.status,
        &answer.headers,
        now_ms,
    ) else {
        return Ok(false);
    };
    let key = cache.key(path, tenant.map(|(_, t)| t));
    let stored = cache.store.insert(
        key,
        &request,
        plan,
        answer.status,
        answer.headers,
        body,
        now_ms,
    );
    if stored {
        cache.refreshed.fetch_add(1, Relaxed);
    }
    Ok(stored)
}

/// Whether a service has room for refresh-ahead requests now, so they never compete with live
/// traffic: with a capacity in requests per second, the next forecast must stay under 80 % of
/// the ready instances' capacity; otherwise (or with a concurrency capacity) the least busy
/// ready instance must have at most one request in flight.
pub fn has_headroom(
    runtime: &crate::state::ServiceRuntime,
    forecast_point: Option<f64>,
) -> Option<Arc<forecourt_orchestrator::Instance>> {
    let ready = runtime.instances.ready();
    let ready = ready.unflagged();
    let idlest = ready
        .iter()
        .filter(|i| !i.is_draining())
        .min_by_key(|i| i.in_flight())?
        .clone();
    let rps_capacity = runtime
        .config
        .scaling
        .as_ref()
        .and_then(|s| match s.capacity {
            forecourt_config::Capacity::RequestsPerSecond(rps) => Some(rps),
            forecourt_config::Capacity::Concurrency(_) => None,
        });
    let room = match (rps_capacity, forecast_point) {
        (Some(per_instance), Some(point)) => point < 0.8 * per_instance * ready.len() as f64,
        _ => idlest.in_flight() <= 1,
    };
    room.then_some(idlest)
}

/// One second of refresh-ahead for every cached service with `warm.refresh_ahead`: re-fetches
/// the hot entries about to expire, at most `warm.rate` per service, from the least busy ready
/// instance while the service has headroom. Returns the entries refreshed.
pub async fn refresh_tick(front_door: &crate::state::FrontDoor) -> u64 {
    let snapshot = front_door.snapshot();
    let board = front_door.forecasts.load();
    let mut refreshed = 0;
    for runtime in &snapshot.services {
        let (Some(cache), Some(hot), Some(warm)) =
            (&runtime.cache, &runtime.hot_keys, &runtime.config.warm)
        else {
            continue;
        };
        if warm.refresh_ahead.is_zero() {
            continue;
        }
        let now = front_door.clock.now_ms();
        let ahead = u64::try_from(warm.refresh_ahead.as_millis()).unwrap_or(u64::MAX);
        let limit = warm.hot_keys as usize;
        let due = due_for_refresh(cache, hot, limit, now, ahead);
        if due.is_empty() {
            continue;
        }
        let point = board
            .service(&runtime.config.name)
            .and_then(|f| f.horizons.first())
            .map(|h| h.point);
        let Some(instance) = has_headroom(runtime, point) else {
            continue;
        };
        let Ok(mut client) = InstanceClient::connect(instance.address).await else {
            continue;
        };
        let tenant_header = snapshot.metadata.tenant_header();
        for (path, tenant) in due.into_iter().take(warm.rate as usize) {
            let tenant = tenant.as_deref().map(|t| (tenant_header, t));
            let now = front_door.clock.now_ms();
            match refresh(cache, &mut client, &path, tenant, now).await {
                Ok(true) => refreshed += 1,
                Ok(false) => {}
                Err(error) => {
                    tracing::debug!(service = %runtime.config.name, %path, %error, "refresh failed");
                    break;
                }
            }
        }
    }
    refreshed
}
