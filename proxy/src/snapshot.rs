//! What the request path reads: one immutable [`Snapshot`] per policy, compiled from it and
//! swapped atomically by the front door; live state (instances, windows, counters, caches)
//! carries over from the previous snapshot.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use ahash::AHashMap;
use forecourt_config::{ForecastConfig, Policy, ServiceConfig};
use forecourt_orchestrator::control_loop::VersionSighting;
use forecourt_orchestrator::{Fleet, HostService, HostState, Instance, Passive, ServiceInstances};
use forecourt_predictor::{HotKeys, Predictor, PredictorConfig, WindowConfig};

use crate::admission::{ConcurrencyLimit, TenantLimit, TenantLimits, TokenBucket};
use crate::cache::ServiceCache;
use crate::classify::metadata::MetadataRules;
use crate::classify::routes::RouteTable;
use crate::classify::version::{self, VersionRuntime};
use crate::counters::ServiceMetrics;
use crate::warm::WarmMetrics;

/// One service as the request path sees it.
#[derive(Debug)]
pub struct ServiceRuntime {
    /// Its resolved settings.
    pub config: ServiceConfig,
    /// Its instances and confirmed-ready set.
    pub instances: Arc<ServiceInstances>,
    /// Its counters (kept across reloads).
    pub metrics: Arc<ServiceMetrics>,
    /// Its hottest cacheable paths, tracked when it has `cache:` or `warm:` (kept across reloads).
    pub hot_keys: Option<Arc<HotKeys>>,
    /// Its warming counters (kept across reloads).
    pub warm_metrics: Arc<WarmMetrics>,
    /// Its response cache, when it has `cache:` (kept across reloads while `cache:` is unchanged).
    pub cache: Option<Arc<ServiceCache>>,
    /// Its admission limits: its own, and its tenants' by class.
    pub admission: ServiceAdmission,
    /// Its flagged versions (`versions:`), in policy order; empty for most services.
    pub versions: Box<[VersionRuntime]>,
}

/// How an attempt on an instance ended, as passive health judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The instance could not be connected to.
    Unreachable,
    /// It answered with this status (Forecourt's own 502 or 504 when the exchange broke or timed
    /// out after connecting).
    Answered(u16),
}

// === impl ServiceRuntime ===

impl ServiceRuntime {
    /// Records what an attempt says about one of the service's instances: a failed connection
    /// ejects it, an answer is judged by its status (repeated 5xx eject), either within the
    /// service's cap on ejected instances (`ejection.max_percent`; the ejections it spares are
    /// counted).
    pub fn judge(&self, instance: &Instance, attempt: Attempt, now_ms: u64) {
        let policy = &self.config.ejection;
        let room = || self.instances.ejection_room(now_ms, policy.max_percent);
        let passive = match attempt {
            Attempt::Unreachable => instance.eject_within(now_ms, policy, room),
            Attempt::Answered(status) => instance.observe_status(status, now_ms, policy, room),
        };
        if passive == Passive::Spared {
            self.metrics.ejections_capped.fetch_add(1, Relaxed);
        }
    }
}

/// Slots of a service's per-tenant table: tenants beyond it share one overflow limit.
const TENANT_SLOTS: usize = 1024;

/// A service's admission limits: its own rate and requests in flight, and each tenant's by the
/// tenant's class. Checked on the request path with atomics only.
#[derive(Debug)]
pub struct ServiceAdmission {
    /// The whole service's rate, when it has one.
    pub rate: Option<TokenBucket>,
    /// The whole service's requests in flight, when limited.
    pub concurrency: Option<Arc<ConcurrencyLimit>>,
    /// Each tenant's rate, requests in flight and hold share (kept across reloads).
    pub tenants: Arc<TenantLimits>,
    /// Each tenant class's limit for one tenant, indexed like the metadata's classes.
    pub classes: Vec<TenantLimit>,
}

// === impl ServiceAdmission ===

impl ServiceAdmission {
    /// The limits of `config` under `policy`, reusing the tenant table of `before`.
    fn new(
        config: &ServiceConfig,
        policy: &Policy,
        metadata: &MetadataRules,
        before: Option<&ServiceRuntime>,
    ) -> Self {
        let classes = metadata
            .classes()
            .iter()
            .map(|class| {
                policy
                    .limits
                    .tenant_classes
                    .iter()
                    .find(|(name, _)| name.as_str() == &**class)
                    .map_or(TenantLimit::UNLIMITED, |(_, l)| *l)
            })
            .collect();
        let limits = config.limits;
        Self {
            rate: limits.and_then(|l| Some(TokenBucket::new(l.rate?, l.burst))),
            concurrency: limits
                .and_then(|l| l.concurrency)
                .map(|max| Arc::new(ConcurrencyLimit::new(max))),
            tenants: before
                .map(|s| Arc::clone(&s.admission.tenants))
                .unwrap_or_else(|| Arc::new(TenantLimits::new(TENANT_SLOTS))),
            classes,
        }
    }
}

/// Shape of a service's hot-key tracker: sketch depth and width, and how many keys it ranks.
const HOT_KEYS_SHAPE: (usize, usize, usize) = (4, 4096, 64);

/// Everything compiled from one policy. In-flight requests keep the snapshot they started on.
#[derive(Debug)]
pub struct Snapshot {
    /// The policy it was built from.
    pub policy: Arc<Policy>,
    /// Request → service.
    pub routes: RouteTable,
    /// Tenant and feature flag extraction.
    pub metadata: MetadataRules,
    /// Services, indexed like `policy.services`.
    pub services: Vec<ServiceRuntime>,
    /// The instances of every service.
    pub fleet: Arc<Fleet>,
    /// Every service's sliding windows; `ServiceId(i)` is `services[i]`.
    pub predictor: Arc<Predictor>,
}

// === impl Snapshot ===

impl Snapshot {
    /// Compiles `policy`, reusing live instance state and counters from `previous`.
    pub fn new(policy: Arc<Policy>, previous: Option<&Snapshot>) -> Self {
        let fleet = Arc::new(Fleet::new(
            &policy.services,
            previous.map(|p| p.fleet.as_ref()),
        ));
        let metadata = MetadataRules::new(&policy.metadata);
        let old: AHashMap<&str, &ServiceRuntime> = previous
            .map(|p| {
                p.services
                    .iter()
                    .map(|s| (s.config.name.as_str(), s))
                    .collect()
            })
            .unwrap_or_default();
        let classes = metadata.classes().len();
        let services = policy
            .services
            .iter()
            .map(|config| {
                let before = old.get(config.name.as_str());
                let tracks_keys = config.cache.is_some() || config.warm.is_some();
                ServiceRuntime {
                    config: config.clone(),
                    instances: fleet.service(&config.name).cloned().unwrap_or_else(|| {
                        Arc::new(ServiceInstances::new(&config.name, Vec::new()))
                    }),
                    metrics: before
                        .map(|s| &s.metrics)
                        .filter(|m| m.classes() == classes)
                        .map(Arc::clone)
                        .unwrap_or_else(|| Arc::new(ServiceMetrics::new(classes))),
                    hot_keys: tracks_keys.then(|| {
                        before.and_then(|s| s.hot_keys.clone()).unwrap_or_else(|| {
                            let (depth, width, top) = HOT_KEYS_SHAPE;
                            Arc::new(HotKeys::new(depth, width, top))
                        })
                    }),
                    warm_metrics: before
                        .map(|s| Arc::clone(&s.warm_metrics))
                        .unwrap_or_default(),
                    admission: ServiceAdmission::new(config, &policy, &metadata, before.copied()),
                    versions: version::runtimes(config, before.map(|s| &*s.versions)),
                    cache: config.cache.as_ref().map(|wanted| {
                        before
                            .and_then(|s| s.cache.as_ref())
                            .filter(|c| c.config == *wanted)
                            .map(Arc::clone)
                            .unwrap_or_else(|| Arc::new(ServiceCache::new(wanted)))
                    }),
                }
            })
            .collect();
        Self {
            routes: RouteTable::new(&policy),
            metadata,
            services,
            fleet,
            predictor: predictor_for(&policy, previous),
            policy,
        }
    }

    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceRuntime> {
        self.services.iter().find(|s| s.config.name == name)
    }
}

/// The window shape every service needs: 1 s buckets covering the longest scaling window.
fn predictor_config(policy: &Policy) -> PredictorConfig {
    let default = PredictorConfig::default();
    let longest = policy
        .services
        .iter()
        .filter_map(|s| s.scaling.as_ref())
        .map(|s| s.stable_window.as_secs().saturating_add(2))
        .max()
        .unwrap_or(0);
    let buckets = usize::try_from(longest)
        .unwrap_or(usize::MAX)
        .max(default.window.buckets);
    PredictorConfig {
        window: WindowConfig {
            buckets,
            ..default.window
        },
        ..default
    }
}

/// The previous snapshot's predictor when the service list and window shape are unchanged
/// (windows and forecasts carry over a reload), else a fresh one.
fn predictor_for(policy: &Policy, previous: Option<&Snapshot>) -> Arc<Predictor> {
    let names = || policy.services.iter().map(|s| s.name.as_str());
    let config = predictor_config(policy);
    if let Some(previous) = previous {
        let old = previous.predictor.services().map(|(_, name, _)| name);
        if old.eq(names()) && *previous.predictor.config() == config {
            return Arc::clone(&previous.predictor);
        }
    }
    // Names are unique and non-empty (the policy is validated); the shape uses 1 s buckets.
    let predictor = Predictor::new(names(), config)
        .or_else(|_| Predictor::new(Vec::<String>::new(), PredictorConfig::default()));
    match predictor {
        Ok(p) => Arc::new(p),
        Err(error) => unreachable!("the default predictor shape is valid: {error}"),
    }
}

impl HostState for Snapshot {
    fn predictor(&self) -> &Arc<Predictor> {
        &self.predictor
    }

    fn forecast_config(&self) -> &ForecastConfig {
        &self.policy.forecast
    }

    fn services(&self) -> Vec<HostService<'_>> {
        self.services
            .iter()
            .map(|s| {
                let ready = s.instances.ready();
                HostService {
                    config: &s.config,
                    ready: u32::try_from(ready.unflagged().len()).unwrap_or(u32::MAX),
                    held: u32::try_from(s.metrics.held_now.load(Relaxed)).unwrap_or(u32::MAX),
                    mean_latency_secs: mean_latency_secs(ready.unflagged()),
                    waited: s.metrics.held.load(Relaxed),
                    versions: s
                        .versions
                        .iter()
                        .map(|v| VersionSighting {
                            config: &v.config,
                            last_seen_ms: v.stats.last_seen_ms(),
                        })
                        .collect(),
                }
            })
            .collect()
    }
}

/// The measured mean latency of a service in seconds, for Little's law: the mean of the latency
/// EWMAs of its ready instances that have answered at least once (each instance counts once, so
/// one slow instance cannot hide behind a busy fast one), or 0 when none has answered yet (the
/// control loop then falls back to in flight over arrival rate). Reads atomics only.
fn mean_latency_secs(ready: &[Arc<Instance>]) -> f64 {
    let (sum_us, measured) = ready
        .iter()
        .map(|i| i.latency_ewma_us())
        .filter(|us| us.is_finite() && *us > 0.0)
        .fold((0.0, 0u32), |(sum, n), us| (sum + us, n + 1));
    if measured == 0 {
        0.0
    } else {
        sum_us / f64::from(measured) / 1e6
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use forecourt_orchestrator::ReadySet;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    fn instance(port: u16, version: &str, latency: Option<Duration>) -> Arc<Instance> {
        let instance = Arc::new(Instance::new(
            SocketAddr::from(([127, 0, 0, 1], port)),
            version,
        ));
        if let Some(latency) = latency {
            instance.observe_latency(latency);
        }
        instance
    }

    #[test]
    fn mean_latency_is_over_ready_instances_that_have_answered() {
        assert_eq!(mean_latency_secs(&[]), 0.0);
        assert_eq!(mean_latency_secs(&[instance(1, "stable", None)]), 0.0);
        let ready = [
            instance(1, "stable", Some(Duration::from_millis(20))),
            instance(2, "stable", Some(Duration::from_millis(60))),
            instance(3, "stable", None),
        ];
        assert!((mean_latency_secs(&ready) - 0.040).abs() < 1e-9);
    }

    #[test]
    fn flagged_versions_do_not_count_towards_the_mean() {
        let ready = ReadySet::new(
            vec![
                instance(1, "stable", Some(Duration::from_millis(10))),
                instance(2, "canary", Some(Duration::from_millis(500))),
            ],
            &[Arc::from("canary")],
        );
        assert!((mean_latency_secs(ready.unflagged()) - 0.010).abs() < 1e-9);
    }

    /// A backend that answers every request with `200` and closes.
    async fn ok_backend() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("local address");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = stream.read(&mut buf).await;
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                });
            }
        });
        address
    }

    #[tokio::test]
    async fn the_control_loop_gets_the_measured_latency_of_ready_instances() {
        let backend = ok_backend().await;
        let text = format!(
            "listeners: {{ proxy: 127.0.0.1:0, admin: 127.0.0.1:0 }}
defaults:
  health_check: {{ interval: 50ms, timeout: 50ms, healthy_threshold: 1 }}
services:
  - name: shop
    instances: [{{ address: \"{backend}\" }}]
"
        );
        let policy = Policy::parse(&text, std::path::Path::new("t.yaml")).expect("valid policy");
        let snapshot = Snapshot::new(Arc::new(policy), None);
        let service = snapshot.service("shop").expect("shop");
        let host = |snapshot: &Snapshot| {
            let services = snapshot.services();
            (services[0].ready, services[0].mean_latency_secs)
        };
        assert_eq!(host(&snapshot), (0, 0.0), "nothing ready, nothing measured");

        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let checker = tokio::spawn(forecourt_orchestrator::check_service(
            Arc::clone(&service.instances),
            service.config.health_check.clone(),
            Arc::new(forecourt_orchestrator::SharedProbes::new()),
            shutdown,
            None,
        ));
        tokio::time::timeout(Duration::from_secs(10), async {
            while service.instances.ready().unflagged().is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the instance is confirmed ready");
        assert_eq!(host(&snapshot), (1, 0.0), "ready but not measured yet");

        service.instances.ready().unflagged()[0].observe_latency(Duration::from_millis(80));
        let (ready, latency) = host(&snapshot);
        assert_eq!(ready, 1);
        assert!(
            (latency - 0.080).abs() < 1e-9,
            "measured latency passed: {latency}"
        );

        let _ = stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), checker).await;
    }
}
