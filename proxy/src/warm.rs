//! Warming: what Forecourt sends a new instance before it is confirmed ready, so the first
//! live requests of a surge meet a warm instance.
//!
//! ```text
//! health checker: probes pass ──► ServiceWarmer::warm(address)
//!                                   POST hook (if any)
//!                                   GET warm.urls, then the hottest paths (HotKeys)
//!                                   paced at warm.rate, all within warm.timeout
//!                 ◄── done ── next passing probe confirms the instance ready
//! ```
//!
//! The instance is not in the ready set while it warms, so warm requests never compete with live
//! traffic for its capacity. Every warm request carries `x-forecourt-warm: 1`. Once ready,
//! [`refresh`] keeps the hottest cached answers fresh ahead of their expiry; both speak to
//! instances through [`instance_client`].

pub mod instance_client;
pub mod refresh;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use forecourt_config::WarmConfig;
use forecourt_orchestrator::WarmInstance;
use forecourt_predictor::HotKeys;
use http::{HeaderName, HeaderValue, Method};

use instance_client::InstanceClient;

/// The header every warm request carries.
pub const WARM_HEADER: &str = "x-forecourt-warm";

/// Counters of one service's warming, kept across reloads.
#[derive(Debug, Default)]
pub struct WarmMetrics {
    /// Instances warmed (warm-ups started).
    pub warm_ups: AtomicU64,
    /// Warm requests answered with a 2xx or 3xx.
    pub requests_ok: AtomicU64,
    /// Warm requests that failed or got another status.
    pub requests_failed: AtomicU64,
    /// Warm-ups cut short by `warm.timeout`.
    pub timed_out: AtomicU64,
}

/// Warms new instances of one service (see the module docs).
pub struct ServiceWarmer {
    /// The service's `warm:` settings.
    pub config: WarmConfig,
    /// The service's hottest paths, when it tracks them.
    pub hot_keys: Option<Arc<HotKeys>>,
    /// Where warm-ups are counted.
    pub metrics: Arc<WarmMetrics>,
}

/// One warm request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum WarmRequest {
    /// POST to the service's warm-up hook.
    Hook(String),
    /// GET of a path (with query).
    Get(String),
}

// === impl ServiceWarmer ===

impl ServiceWarmer {
    /// The warm requests for an instance now: the hook, the configured URLs, then the hottest
    /// paths not already listed.
    fn plan(&self) -> Vec<WarmRequest> {
        let mut plan: Vec<WarmRequest> = Vec::new();
        if let Some(hook) = &self.config.hook {
            plan.push(WarmRequest::Hook(hook.clone()));
        }
        let mut paths: Vec<String> = self.config.urls.clone();
        if let Some(hot) = &self.hot_keys {
            let wanted = self.config.hot_keys as usize;
            for (key, _) in hot.top(wanted.saturating_mul(2)) {
                if paths.len() >= self.config.urls.len() + wanted {
                    break;
                }
                let path = hot_key_path(&key);
                if !paths.iter().any(|p| p == path) {
                    paths.push(path.to_owned());
                }
            }
        }
        plan.extend(paths.into_iter().map(WarmRequest::Get));
        plan
    }
}

/// The path part of a hot-key text: the proxy records `path` or `path\ntenant`.
pub fn hot_key_path(key: &str) -> &str {
    key.split_once('\n').map_or(key, |(path, _)| path)
}

impl WarmInstance for ServiceWarmer {
    fn warm(&self, address: SocketAddr) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        let plan = self.plan();
        let metrics = Arc::clone(&self.metrics);
        let pace = Duration::from_secs(1) / self.config.rate.max(1);
        let limit = self.config.timeout;
        metrics.warm_ups.fetch_add(1, Relaxed);
        Box::pin(async move {
            let run = send_all(address, plan, pace, Arc::clone(&metrics));
            if tokio::time::timeout(limit, run).await.is_err() {
                metrics.timed_out.fetch_add(1, Relaxed);
                tracing::warn!(%address, ?limit, "warm-up cut short by its timeout");
            }
        })
    }
}

/// Sends the plan to `address` one request at a time on one keep-alive connection (reopened
/// after a failure), at most one request per `pace`.
async fn send_all(
    address: SocketAddr,
    plan: Vec<WarmRequest>,
    pace: Duration,
    metrics: Arc<WarmMetrics>,
) {
    let mut ticker = tokio::time::interval(pace);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut client = None;
    let marker = [(
        HeaderName::from_static(WARM_HEADER),
        HeaderValue::from_static("1"),
    )];
    for request in plan {
        ticker.tick().await;
        if client.is_none() {
            client = InstanceClient::connect(address).await.ok();
        }
        let Some(connection) = client.as_mut() else {
            metrics.requests_failed.fetch_add(1, Relaxed);
            continue;
        };
        let (method, path) = match &request {
            WarmRequest::Hook(path) => (Method::POST, path),
            WarmRequest::Get(path) => (Method::GET, path),
        };
        match connection.send(method, path, &marker, 0).await {
            Ok(answer) if answer.status < 400 => {
                metrics.requests_ok.fetch_add(1, Relaxed);
            }
            Ok(answer) => {
                metrics.requests_failed.fetch_add(1, Relaxed);
                tracing::debug!(%address, ?request, status = answer.status, "warm request answered with an error");
            }
            Err(error) => {
                metrics.requests_failed.fetch_add(1, Relaxed);
                tracing::debug!(%address, ?request, %error, "warm request failed");
                client = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warmer(urls: &[&str], hook: Option<&str>, hot_keys: u32) -> ServiceWarmer {
        ServiceWarmer {
            config: WarmConfig {
                urls: urls.iter().map(|u| (*u).to_owned()).collect(),
                hot_keys,
                hook: hook.map(str::to_owned),
                rate: 1000,
                timeout: Duration::from_secs(5),
                refresh_ahead: Duration::ZERO,
            },
            hot_keys: None,
            metrics: Arc::default(),
        }
    }

    #[test]
    fn the_plan_is_hook_then_urls_then_hot_paths_without_repeats() {
        let mut w = warmer(&["/", "/catalog"], Some("/warmup"), 2);
        let hot = Arc::new(HotKeys::new(4, 1024, 8));
        for _ in 0..50 {
            hot.record("/catalog");
            hot.record("/item/1\ntenant-a");
        }
        for _ in 0..30 {
            hot.record("/item/1\ntenant-b");
            hot.record("/item/2");
        }
        w.hot_keys = Some(hot);
        assert_eq!(
            w.plan(),
            vec![
                WarmRequest::Hook("/warmup".into()),
                WarmRequest::Get("/".into()),
                WarmRequest::Get("/catalog".into()),
                WarmRequest::Get("/item/1".into()),
                WarmRequest::Get("/item/2".into()),
            ]
        );
    }

    #[test]
    fn hot_key_text_names_its_path() {
        assert_eq!(hot_key_path("/a?b=1\ntenant"), "/a?b=1");
        assert_eq!(hot_key_path("/a"), "/a");
    }
}
