//! The byte-bounded store of one service's responses, on `moka::sync::Cache`.
//!
//! Time is injected: every call takes `now_ms` on the proxy's clock and freshness is decided
//! against the stored `fresh_until_ms`. moka's own time-to-live (`max_ttl` + 60 s) is only a
//! memory safety net for entries nobody asks for again.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method};
use moka::ops::compute::Op;

use super::rules::{self, CacheRules, NotStored, RequestDirectives, ResponseDirectives, StorePlan};

/// Variants (one per combination of the `Vary` headers' values) kept per key; the oldest goes.
pub const MAX_VARIANTS: usize = 4;

/// Bytes counted for a stored response on top of its body and headers (the entry's bookkeeping).
const RESPONSE_OVERHEAD: u64 = 256;

/// Bytes counted per header on top of its name and value.
const HEADER_OVERHEAD: u64 = 32;

/// moka's time-to-live beyond `max_ttl`: a safety net, never what decides freshness.
const TTL_SAFETY_MARGIN: Duration = Duration::from_secs(60);

/// Fixed ahash seeds, so a key hashes the same in every process of a build.
const KEY_SEEDS: [u64; 4] = [
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
];

/// Headers that describe one connection, never stored.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// Headers a `304 Not Modified` refreshes in the stored response.
const REFRESHED_BY_304: [HeaderName; 5] = [
    header::ETAG,
    header::CACHE_CONTROL,
    header::EXPIRES,
    header::DATE,
    header::LAST_MODIFIED,
];

/// Where a request's response is stored: its normalized authority (host and port), its path and
/// query, and its tenant unless the service's cache is shared. GET and HEAD share a key; the
/// service is implicit (one cache per service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    hash: u64,
    /// The authority, the path and query, then the tenant: one allocation for all three.
    text: Arc<str>,
    authority_len: usize,
    path_len: usize,
    has_tenant: bool,
}

/// A stored response, shared by every request it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedResponse {
    /// The response's status.
    pub status: u16,
    /// Its headers, without hop-by-hop headers and `Age`.
    pub headers: HeaderMap,
    /// Its whole body.
    pub body: Bytes,
    /// When its age was zero, on the proxy's clock (arrival minus any upstream `Age`).
    pub stored_ms: u64,
    /// Until when it is fresh, on the proxy's clock.
    pub fresh_until_ms: u64,
    /// It said `no-cache`: revalidate before every use.
    pub must_revalidate: bool,
    /// Its `ETag`, for `If-None-Match`.
    pub etag: Option<HeaderValue>,
    /// Its `Last-Modified`, for `If-Modified-Since`.
    pub last_modified: Option<HeaderValue>,
}

/// What the cache holds for a request.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// A fresh response: answer with it.
    Fresh(Arc<CachedResponse>),
    /// A response to revalidate first (stale, `no-cache`, or the request asked); it has a
    /// validator to send as `If-None-Match` / `If-Modified-Since`.
    Stale(Arc<CachedResponse>),
    /// Nothing usable: fetch from an instance.
    Miss,
}

/// The cache's counters (relaxed atomics).
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Lookups answered fresh.
    pub hits: AtomicU64,
    /// Lookups that found nothing usable.
    pub misses: AtomicU64,
    /// Lookups that found a response to revalidate.
    pub stale: AtomicU64,
    /// Responses stored.
    pub stores: AtomicU64,
    /// Responses refused by [`ResponseCache::plan`] or [`ResponseCache::insert`].
    pub not_stored: AtomicU64,
}

/// One service's response cache: byte-bounded, keyed by [`CacheKey`], with `Vary` variants.
pub struct ResponseCache {
    rules: CacheRules,
    entries: moka::sync::Cache<CacheKey, Arc<Entry>>,
    stats: CacheStats,
}

/// What a key holds: the variants of one `Vary` list.
#[derive(Debug)]
struct Entry {
    /// The request headers the variants differ by (sorted, lowercase).
    vary: Vec<HeaderName>,
    /// Newest last.
    variants: Vec<Variant>,
    /// Bytes counted against `max_bytes`.
    weight: u32,
}

/// One stored response and the request's values of the `Vary` headers that select it.
#[derive(Debug)]
struct Variant {
    /// One per `Entry::vary` name; `None` when the request had no such header.
    values: Vec<Option<HeaderValue>>,
    response: Arc<CachedResponse>,
}

// === impl CacheKey ===

impl CacheKey {
    /// The key of a request to `authority` (the `Host`, normalized here) for `path_and_query`
    /// by `tenant`; `shared` ignores the tenant.
    pub fn new(authority: &[u8], path_and_query: &str, tenant: Option<&str>, shared: bool) -> Self {
        let tenant = if shared { None } else { tenant };
        let mut text = String::with_capacity(
            authority.len() + path_and_query.len() + tenant.map_or(0, str::len),
        );
        push_authority(&mut text, authority);
        let authority_len = text.len();
        text.push_str(path_and_query);
        text.push_str(tenant.unwrap_or(""));
        let hash =
            ahash::RandomState::with_seeds(KEY_SEEDS[0], KEY_SEEDS[1], KEY_SEEDS[2], KEY_SEEDS[3])
                .hash_one((&text[..authority_len], path_and_query, tenant));
        Self {
            hash,
            text: Arc::from(text),
            authority_len,
            path_len: path_and_query.len(),
            has_tenant: tenant.is_some(),
        }
    }

    /// The key's 64-bit hash: the same for the same authority, path and tenant (for coalescing).
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// The request's authority, normalized (lowercase, no trailing dot, no default port).
    pub fn authority(&self) -> &str {
        self.text.get(..self.authority_len).unwrap_or_default()
    }

    /// The request's path and query.
    pub fn path(&self) -> &str {
        let end = self.authority_len + self.path_len;
        self.text.get(self.authority_len..end).unwrap_or_default()
    }

    /// The tenant, unless the cache is shared or the request had none.
    pub fn tenant(&self) -> Option<&str> {
        let start = self.authority_len + self.path_len;
        self.has_tenant
            .then(|| self.text.get(start..).unwrap_or_default())
    }
}

/// Appends the normalized form of a request's authority (see [`normalize_authority`]).
pub fn push_authority(text: &mut String, authority: &[u8]) {
    normalize_authority(authority, |b| text.push(char::from(b)));
}

/// Writes the normalized form of a request's authority, byte by byte (ASCII only): lowercase,
/// without the default port `:80` and without a trailing dot on the host name, so
/// `Shop.Example.:80` and `shop.example` share entries while `evil.example` never does. Bytes
/// that are not visible ASCII (and `%`) are written `%XX`, so different raw values never
/// normalize to the same text. Allocates nothing.
pub fn normalize_authority(authority: &[u8], mut out: impl FnMut(u8)) {
    let authority = authority.trim_ascii();
    let authority = authority.strip_suffix(b":80").unwrap_or(authority);
    let authority = match authority.strip_suffix(b".") {
        Some(host) if !host.is_empty() => host,
        _ => authority,
    };
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in authority {
        if b.is_ascii_graphic() && b != b'%' {
            out(b.to_ascii_lowercase());
        } else {
            out(b'%');
            out(HEX[usize::from(b >> 4)]);
            out(HEX[usize::from(b & 15)]);
        }
    }
}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

// === impl CachedResponse ===

impl CachedResponse {
    /// Its age in whole seconds at `now_ms`, for the `Age` header.
    pub fn age_secs(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.stored_ms) / 1000
    }

    /// Whether it may answer at `now_ms` without asking an instance: within its freshness and
    /// not `no-cache`.
    pub fn is_fresh(&self, now_ms: u64) -> bool {
        now_ms < self.fresh_until_ms && !self.must_revalidate
    }

    /// Whether it can be revalidated (it has an ETag or a Last-Modified).
    pub fn has_validator(&self) -> bool {
        self.etag.is_some() || self.last_modified.is_some()
    }

    /// Bytes counted against the cache's `max_bytes`.
    fn weight(&self) -> u64 {
        let headers: u64 = self
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().len() + value.len()) as u64 + HEADER_OVERHEAD)
            .sum();
        self.body.len() as u64 + headers + RESPONSE_OVERHEAD
    }
}

// === impl Entry ===

impl Entry {
    fn new(key: &CacheKey, vary: Vec<HeaderName>, variants: Vec<Variant>) -> Self {
        let variants_weight: u64 = variants.iter().map(Variant::weight).sum();
        let weight = key.text.len() as u64 + RESPONSE_OVERHEAD + variants_weight;
        Self {
            vary,
            variants,
            weight: u32::try_from(weight).unwrap_or(u32::MAX),
        }
    }

    /// The variant for a request's headers. Allocates nothing.
    fn select(&self, req_headers: &HeaderMap) -> Option<&Variant> {
        self.variants.iter().rev().find(|variant| {
            self.vary
                .iter()
                .zip(&variant.values)
                .all(|(name, stored)| same_values(stored.as_ref(), req_headers, name))
        })
    }
}

// === impl Variant ===

impl Variant {
    fn weight(&self) -> u64 {
        let values: u64 = self.values.iter().flatten().map(|v| v.len() as u64).sum();
        self.response.weight() + values
    }
}

// === impl ResponseCache ===

impl ResponseCache {
    /// An empty cache that holds at most `rules.max_bytes`.
    pub fn new(rules: CacheRules) -> Self {
        let entries = moka::sync::Cache::builder()
            .max_capacity(rules.max_bytes)
            .weigher(|_key: &CacheKey, entry: &Arc<Entry>| entry.weight)
            .time_to_live(rules.max_ttl.saturating_add(TTL_SAFETY_MARGIN))
            .build();
        Self {
            rules,
            entries,
            stats: CacheStats::default(),
        }
    }

    /// The rules it was built with.
    pub fn rules(&self) -> &CacheRules {
        &self.rules
    }

    /// Its counters.
    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    /// [`storable`](super::storable) with this cache's rules, counting a refusal in `not_stored`.
    pub fn plan(
        &self,
        method: &Method,
        req_headers: &HeaderMap,
        status: u16,
        resp_headers: &HeaderMap,
        now_ms: u64,
    ) -> Result<StorePlan, NotStored> {
        let plan = rules::storable(
            method,
            req_headers,
            status,
            resp_headers,
            &self.rules,
            now_ms,
        );
        if plan.is_err() {
            self.stats.not_stored.fetch_add(1, Relaxed);
        }
        plan
    }

    /// What the cache holds for a request (GET or HEAD) with `req_headers` at `now_ms`. A
    /// request's `no-cache` or `max-age` beyond the response's age turns fresh into stale, its
    /// `no-store` is a miss; a stale response without a validator is a miss.
    pub fn lookup(&self, key: &CacheKey, req_headers: &HeaderMap, now_ms: u64) -> Lookup {
        let request = RequestDirectives::parse(req_headers);
        let found = if request.no_store {
            None
        } else {
            self.entries
                .get(key)
                .and_then(|entry| entry.select(req_headers).map(|v| Arc::clone(&v.response)))
        };
        let Some(response) = found else {
            self.stats.misses.fetch_add(1, Relaxed);
            return Lookup::Miss;
        };
        let young_enough = request.max_age.is_none_or(|max_age| {
            max_age > 0 && now_ms.saturating_sub(response.stored_ms) <= max_age.saturating_mul(1000)
        });
        if response.is_fresh(now_ms) && !request.no_cache && young_enough {
            self.stats.hits.fetch_add(1, Relaxed);
            Lookup::Fresh(response)
        } else if response.has_validator() {
            self.stats.stale.fetch_add(1, Relaxed);
            Lookup::Stale(response)
        } else {
            self.stats.misses.fetch_add(1, Relaxed);
            Lookup::Miss
        }
    }

    /// Stores a response planned by [`storable`](super::storable) for the request with
    /// `req_headers`. Hop-by-hop headers and `Age` are dropped. False (and nothing stored) when
    /// the body is over `max_object_bytes`, the response would not fit in `max_bytes`, or it
    /// arrived already stale without a validator. True means stored, though moka's admission
    /// policy may still turn a newcomer away when the cache is full. A response whose `Vary` differs from the stored variants'
    /// replaces them; the same `Vary` adds a variant (at most [`MAX_VARIANTS`]).
    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &self,
        key: CacheKey,
        req_headers: &HeaderMap,
        plan: StorePlan,
        status: u16,
        mut headers: HeaderMap,
        body: Bytes,
        now_ms: u64,
    ) -> bool {
        if body.len() as u64 > self.rules.max_object_bytes {
            return self.refuse();
        }
        strip_unstored(&mut headers);
        let response = CachedResponse {
            status,
            etag: headers.get(header::ETAG).cloned(),
            last_modified: headers.get(header::LAST_MODIFIED).cloned(),
            headers,
            body,
            stored_ms: plan.stored_ms,
            fresh_until_ms: plan.fresh_until_ms,
            must_revalidate: plan.must_revalidate,
        };
        if !response.has_validator() && (plan.fresh_until_ms <= now_ms || plan.must_revalidate) {
            return self.refuse();
        }
        let Some(values) = plan
            .vary
            .iter()
            .map(|name| request_value(req_headers, name))
            .collect()
        else {
            return self.refuse();
        };
        let variant = Variant {
            values,
            response: Arc::new(response),
        };
        let max_bytes = self.rules.max_bytes;
        if Entry::new(&key, Vec::new(), vec![]).weight as u64 + variant.weight() > max_bytes {
            return self.refuse();
        }
        let entry_key = key.clone();
        self.entries.entry(key).and_compute_with(|existing| {
            let mut variants = Vec::with_capacity(MAX_VARIANTS);
            if let Some(existing) = existing {
                let existing = existing.into_value();
                if existing.vary == plan.vary {
                    variants.extend(
                        existing
                            .variants
                            .iter()
                            .filter(|old| old.values != variant.values)
                            .map(|old| Variant {
                                values: old.values.clone(),
                                response: Arc::clone(&old.response),
                            }),
                    );
                }
            }
            variants.push(variant);
            let mut entry = Entry::new(&entry_key, plan.vary, variants);
            while entry.variants.len() > MAX_VARIANTS || u64::from(entry.weight) > max_bytes {
                let mut variants = entry.variants;
                variants.remove(0);
                entry = Entry::new(&entry_key, entry.vary, variants);
            }
            Op::Put(Arc::new(entry))
        });
        self.stats.stores.fetch_add(1, Relaxed);
        true
    }

    /// Applies an instance's `304 Not Modified` to the stored response the request with
    /// `req_headers` selects: refreshes its freshness from the 304's `Cache-Control` (and `Age`,
    /// `Expires`, `Date`), takes the 304's `ETag`, `Cache-Control`, `Expires`, `Date` and
    /// `Last-Modified`, and returns the refreshed response to answer with. `None` when nothing is
    /// stored for the request, the 304's ETag names another response, or the refreshed headers
    /// forbid storing (then the entry is removed).
    pub fn revalidated(
        &self,
        key: &CacheKey,
        req_headers: &HeaderMap,
        not_modified_headers: &HeaderMap,
        now_ms: u64,
    ) -> Option<Arc<CachedResponse>> {
        let entry = self.entries.get(key)?;
        let old = Arc::clone(&entry.select(req_headers)?.response);
        if let (Some(new), Some(stored)) = (not_modified_headers.get(header::ETAG), &old.etag) {
            if !weak_etag_eq(new, stored) {
                return None;
            }
        }
        let mut headers = old.headers.clone();
        for name in &REFRESHED_BY_304 {
            if not_modified_headers.contains_key(name) {
                headers.remove(name);
                for value in not_modified_headers.get_all(name) {
                    headers.append(name.clone(), value.clone());
                }
            }
        }
        let directives = ResponseDirectives::parse(&headers);
        if directives.no_store || directives.private {
            self.entries.invalidate(key);
            return None;
        }
        let stored_ms = now_ms.saturating_sub(rules::age_ms(not_modified_headers));
        let lifetime = rules::lifetime_ms(&directives, &headers, &self.rules);
        let refreshed = Arc::new(CachedResponse {
            status: old.status,
            etag: headers.get(header::ETAG).cloned(),
            last_modified: headers.get(header::LAST_MODIFIED).cloned(),
            headers,
            body: old.body.clone(),
            stored_ms,
            fresh_until_ms: stored_ms.saturating_add(lifetime),
            must_revalidate: directives.no_cache,
        });
        let max_bytes = self.rules.max_bytes;
        self.entries
            .entry(key.clone())
            .and_compute_with(|existing| {
                let Some(existing) = existing else {
                    return Op::Nop;
                };
                let existing = existing.into_value();
                let variants: Vec<Variant> = existing
                    .variants
                    .iter()
                    .map(|variant| Variant {
                        values: variant.values.clone(),
                        response: if Arc::ptr_eq(&variant.response, &old) {
                            Arc::clone(&refreshed)
                        } else {
                            Arc::clone(&variant.response)
                        },
                    })
                    .collect();
                let entry = Entry::new(key, existing.vary.clone(), variants);
                if u64::from(entry.weight) > max_bytes {
                    return Op::Remove;
                }
                Op::Put(Arc::new(entry))
            });
        Some(refreshed)
    }

    /// The stored response a request with `req_headers` selects, fresh or not, without counting
    /// a lookup: for refresh-ahead.
    pub fn peek(&self, key: &CacheKey, req_headers: &HeaderMap) -> Option<Arc<CachedResponse>> {
        let entry = self.entries.get(key)?;
        entry.select(req_headers).map(|v| Arc::clone(&v.response))
    }

    /// Forgets everything stored under `key` (every variant).
    pub fn remove(&self, key: &CacheKey) {
        self.entries.invalidate(key);
    }

    /// Bytes held (bodies, headers, bookkeeping), after moka's pending evictions have run.
    pub fn bytes(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }

    /// Keys held (a key may hold several variants), after moka's pending evictions have run.
    pub fn entries(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }

    /// Runs moka's pending maintenance (evictions, admissions) now.
    pub fn run_pending_tasks(&self) {
        self.entries.run_pending_tasks();
    }

    fn refuse(&self) -> bool {
        self.stats.not_stored.fetch_add(1, Relaxed);
        false
    }
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("rules", &self.rules)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Drops the headers a cache never stores: hop-by-hop ones (and those `Connection` names), any
/// `Proxy-*`, `Age`, and `Set-Cookie` — a response stored under `cache_set_cookie` is served
/// without the cookie, which belonged to the client whose request fetched it.
fn strip_unstored(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
        .collect();
    let proxy_named: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in named.iter().chain(&HOP_BY_HOP).chain(&proxy_named) {
        headers.remove(name);
    }
    headers.remove(header::AGE);
    headers.remove(header::SET_COOKIE);
}

/// A request's value of a `Vary` header: `None` when absent, its lines joined with `, ` when
/// several. `Some(None)` is absent; the outer `None` only when joining fails.
fn request_value(req_headers: &HeaderMap, name: &HeaderName) -> Option<Option<HeaderValue>> {
    let mut values = req_headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Some(None);
    };
    let Some(second) = values.next() else {
        return Some(Some(first.clone()));
    };
    let mut joined = first.as_bytes().to_vec();
    for value in std::iter::once(second).chain(values) {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(value.as_bytes());
    }
    HeaderValue::from_bytes(&joined).ok().map(Some)
}

/// Whether a request's lines of `name` equal a stored value (lines joined with `, `); absent
/// equals only absent. Allocates nothing.
fn same_values(stored: Option<&HeaderValue>, req_headers: &HeaderMap, name: &HeaderName) -> bool {
    let mut lines = req_headers.get_all(name).iter();
    let Some(stored) = stored else {
        return lines.next().is_none();
    };
    let mut rest = stored.as_bytes();
    let Some(first) = lines.next() else {
        return false;
    };
    let Some(tail) = rest.strip_prefix(first.as_bytes()) else {
        return false;
    };
    rest = tail;
    for line in lines {
        let Some(tail) = rest
            .strip_prefix(b", ")
            .and_then(|tail| tail.strip_prefix(line.as_bytes()))
        else {
            return false;
        };
        rest = tail;
    }
    rest.is_empty()
}

/// Weak comparison of two entity tags (RFC 9110 §8.8.3.2): equal once `W/` is ignored.
fn weak_etag_eq(a: &HeaderValue, b: &HeaderValue) -> bool {
    let opaque = |v: &HeaderValue| {
        let bytes = v.as_bytes().trim_ascii();
        bytes.strip_prefix(b"W/").unwrap_or(bytes).to_vec()
    };
    opaque(a) == opaque(b)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    // The store's tests (with control's decisions) are in `super::tests`.
    use super::*;

    #[test]
    fn joined_request_values_match_without_allocating() {
        let mut req = HeaderMap::new();
        let name = header::ACCEPT;
        req.append(&name, HeaderValue::from_static("a"));
        req.append(&name, HeaderValue::from_static("b"));
        let stored = request_value(&req, &name).unwrap();
        assert_eq!(stored, Some(HeaderValue::from_static("a, b")));
        assert!(same_values(stored.as_ref(), &req, &name));
        assert!(!same_values(
            Some(&HeaderValue::from_static("a")),
            &req,
            &name
        ));
        assert!(!same_values(
            Some(&HeaderValue::from_static("a, b, c")),
            &req,
            &name
        ));
        assert!(!same_values(None, &req, &name));
        assert!(same_values(None, &HeaderMap::new(), &name));
    }

    #[test]
    fn colliding_hashes_are_never_served() {
        let cache = ResponseCache::new(CacheRules {
            default_ttl: Duration::from_secs(30),
            max_ttl: Duration::from_secs(60),
            max_bytes: 1 << 20,
            max_object_bytes: 1 << 16,
            shared: false,
            cache_set_cookie: false,
            cache_authorized: false,
            cache_cookies: false,
        });
        let real = CacheKey::new(b"shop.test", "/real", None, false);
        let mut forged = CacheKey::new(b"shop.test", "/forged", None, false);
        forged.hash = real.hash;
        let none = HeaderMap::new();
        let plan = cache.plan(&Method::GET, &none, 200, &none, 0).unwrap();
        assert!(cache.insert(
            real.clone(),
            &none,
            plan,
            200,
            HeaderMap::new(),
            Bytes::new(),
            0
        ));
        assert!(matches!(cache.lookup(&real, &none, 0), Lookup::Fresh(_)));
        assert!(matches!(cache.lookup(&forged, &none, 0), Lookup::Miss));
        assert!(cache.peek(&forged, &none).is_none());
    }

    #[test]
    fn etags_compare_weakly() {
        let v = HeaderValue::from_static;
        assert!(weak_etag_eq(&v("W/\"1\""), &v("\"1\"")));
        assert!(!weak_etag_eq(&v("\"1\""), &v("\"2\"")));
    }
}
