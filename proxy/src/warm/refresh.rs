//! Refresh-ahead: hot cache entries about to expire are fetched again from the least busy ready
//! instance while the service has headroom, so the hottest answers never go cold.
//!
//! ```text
//!  every second ─► hot keys (HotKeys) × entries expiring within refresh_ahead ─► due
//!     due ─► has_headroom (forecast below 80 % of ready capacity) ─► InstanceClient GET ─► store
//! ```
//!
//! A refresh is sent as the clients' requests are: with their `Host` (the entry's authority),
//! the same forwarding headers (`crate::ingress::forward`) and the tenant the entry is kept for,
//! so an instance that answers by host or tenant refreshes the same answer.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use forecourt_predictor::HotKeys;
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::instance_client::{InstanceClient, InstanceError};
use crate::cache::ServiceCache;

/// A hot key's path, normalized authority and tenant (see `record_hot_key` in the request
/// path: `path\nauthority[\ntenant]`).
pub fn split_hot_key(text: &str) -> (&str, &str, Option<&str>) {
    let (path, rest) = text.split_once('\n').unwrap_or((text, ""));
    match rest.split_once('\n') {
        Some((authority, tenant)) => (path, authority, Some(tenant)),
        None => (path, rest, None),
    }
}

/// A cached entry to refresh: the request that fetches it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueEntry {
    /// Its path and query.
    pub path: String,
    /// Its normalized authority, sent as `Host` (empty: none was given).
    pub authority: String,
    /// The tenant it is kept for, when the cache keeps tenants apart.
    pub tenant: Option<String>,
}

/// Cached entries of hot keys that expire within `ahead_ms`: the keys to re-fetch now so they
/// are still fresh when the forecast load asks for them. Looks at the `limit` hottest keys.
pub fn due_for_refresh(
    cache: &ServiceCache,
    hot: &HotKeys,
    limit: usize,
    now_ms: u64,
    ahead_ms: u64,
) -> Vec<DueEntry> {
    let mut due = Vec::new();
    let none = HeaderMap::new();
    for (text, _) in hot.top(limit) {
        let (path, authority, tenant) = split_hot_key(&text);
        let key = cache.key(authority.as_bytes(), path, tenant);
        let Some(entry) = cache.store.peek(&key, &none) else {
            continue;
        };
        if entry.is_fresh(now_ms) && entry.fresh_until_ms.saturating_sub(now_ms) <= ahead_ms {
            due.push(DueEntry {
                path: path.to_owned(),
                authority: authority.to_owned(),
                tenant: tenant.map(str::to_owned),
            });
        }
    }
    due
}

/// Re-fetches `due` (its tenant sent in `tenant_header`) from the instance behind `client` and
/// stores the answer: refresh-ahead. True when a fresh response was stored.
pub async fn refresh(
    cache: &ServiceCache,
    client: &mut InstanceClient,
    due: &DueEntry,
    tenant_header: &HeaderName,
    now_ms: u64,
) -> Result<bool, InstanceError> {
    let path = due.path.as_str();
    let tenant = due.tenant.as_deref();
    // The request as a client's would be, for the store's `Vary` and the instance.
    let mut request = HeaderMap::new();
    if let Some(tenant) = tenant {
        let value = HeaderValue::from_str(tenant).map_err(InstanceError::Tenant)?;
        request.insert(tenant_header.clone(), value);
    }
    if !due.authority.is_empty() {
        let host = HeaderValue::from_str(&due.authority).map_err(InstanceError::Tenant)?;
        request.insert(http::header::HOST, host);
    }
    let edits = crate::ingress::forward::forwarding(&crate::ingress::forward::Forwarded {
        request: &request,
        client: None,
        tenant_header,
        tenant,
    });
    let mut headers = crate::ingress::forward::edited_headers(&request, |_| false, edits);
    headers.push((
        HeaderName::from_static(crate::warm::WARM_HEADER),
        HeaderValue::from_static("refresh"),
    ));
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
    let key = cache.key(due.authority.as_bytes(), path, tenant);
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
    runtime: &crate::snapshot::ServiceRuntime,
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
pub async fn refresh_tick(front_door: &crate::front_door::FrontDoor) -> u64 {
    let snapshot = front_door.snapshot();
    let board = front_door.control.forecasts.load();
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
        for entry in due.into_iter().take(warm.rate as usize) {
            let now = front_door.clock.now_ms();
            // Counted like any request to the instance, so balancing sees it.
            instance.start_request();
            let result = refresh(cache, &mut client, &entry, tenant_header, now).await;
            instance.finish_request();
            match result {
                Ok(true) => refreshed += 1,
                Ok(false) => {}
                Err(error) => {
                    let path = &entry.path;
                    tracing::debug!(service = %runtime.config.name, %path, %error, "refresh failed");
                    break;
                }
            }
        }
    }
    refreshed
}
