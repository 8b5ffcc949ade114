//! # Response cache
//!
//! A per-service HTTP response cache: the `Cache-Control` rules, a byte-bounded store and the
//! coalescing of concurrent misses, and [`ServiceCache`], one service's bundle of them. No
//! Pingora types: the request path (`ingress::cache`) glues it in.
//!
//! ```text
//!  GET/HEAD ─► CacheKey (authority+path+query, tenant unless shared) ─► ResponseCache::lookup
//!                 │ Fresh ──► answer (Age = now − stored)
//!                 │ Stale ──► revalidate (If-None-Match / If-Modified-Since)
//!                 │             304 ─► ResponseCache::revalidated ─► answer
//!                 │ Miss ───► Flights::join(key.hash())
//!                 │             Leader ─► instance ─► storable() ─► insert ─► finish(stored)
//!                 │             Follower ─► wait(timeout) ─► Stored: lookup again
//!                 ▼
//!  moka::sync::Cache<CacheKey, variants by Vary>  (weight = body + headers + overhead)
//! ```
//!
//! Time is always injected (`now_ms` on the proxy's clock); moka's clock is only a safety net.

mod flight;
mod rules;
mod store;
#[cfg(test)]
mod tests;

pub use flight::{Flight, Flights, Follower, LeaderGuard, Outcome};
pub use rules::{
    personal_request, storable, CacheRules, NotStored, RequestDirectives, ResponseDirectives,
    StorePlan,
};
pub use store::{
    normalize_authority, push_authority, CacheKey, CacheStats, CachedResponse, Lookup,
    ResponseCache, MAX_VARIANTS,
};

use std::sync::atomic::AtomicU64;

use forecourt_config::CacheConfig;

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
        cache_cookies: config.cache_cookies,
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

    /// The cache key of a request to `authority` for `path_and_query` by `tenant`.
    pub fn key(&self, authority: &[u8], path_and_query: &str, tenant: Option<&str>) -> CacheKey {
        CacheKey::new(authority, path_and_query, tenant, self.config.shared)
    }
}
