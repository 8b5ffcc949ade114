//! # Response cache
//!
//! A per-service HTTP response cache: the `Cache-Control` rules, a byte-bounded store and the
//! coalescing of concurrent misses. No Pingora types: the request path (`crate::caching`) glues
//! it in.
//!
//! ```text
//!  GET/HEAD ─► CacheKey (path+query, tenant unless shared) ─► ResponseCache::lookup
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

mod control;
mod flight;
mod store;
#[cfg(test)]
mod tests;

pub use control::{storable, NotStored, RequestDirectives, ResponseDirectives, StorePlan};
pub use flight::{Flight, Flights, Follower, LeaderGuard, Outcome};
pub use store::{
    CacheKey, CacheRules, CacheStats, CachedResponse, Lookup, ResponseCache, MAX_VARIANTS,
};
