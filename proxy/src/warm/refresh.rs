//! Refresh-ahead: hot cache entries about to expire are fetched again from the least busy ready
//! instance while the service has headroom, so the hottest answers never go cold.
//!
//! ```text
//!  every second ─► hot keys (HotKeys) × entries expiring within refresh_ahead ─► due
//!     due ─► has_headroom (forecast below 80 % of ready capacity) ─► InstanceClient GET ─► store
//! ```

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use forecourt_predictor::HotKeys;
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::instance_client::{InstanceClient, InstanceError};
use crate::cache::ServiceCache;

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
) -> Result<bool, InstanceError> {
    let mut headers: Vec<(HeaderName, HeaderValue)> = vec![(
        HeaderName::from_static(crate::warm::WARM_HEADER),
        HeaderValue::from_static("refresh"),
    )];
    let mut request = HeaderMap::new();
    if let Some((name, value)) = tenant {
        let value = HeaderValue::from_str(value).map_err(InstanceError::Tenant)?;
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
