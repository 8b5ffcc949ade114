//! Active health checking: probe every instance, confirm readiness after N successes in a row.
//!
//! ```text
//!  check_service (one task per service; first round at once, then every interval at a phase
//!        │         drawn from the service's name, so ten thousand services do not probe in waves)
//!        ▼
//!  SharedProbes::probe(address, check) ── a result for (address, path, timeout) younger than
//!        │                                 half the interval? reuse it; a probe of it running?
//!        │                                 wait for it; else probe (one TCP + HTTP GET)
//!        ▼
//!  Instance::record_probe ─► ready set published on change
//! ```
//!
//! An address listed by many services (one backend behind many tenant apps, a shared gateway)
//! is probed about twice per interval however many services list it; a checker never counts the
//! same probe twice (it probes anew instead), so thresholds keep their meaning.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ahash::AHashMap;
use futures::FutureExt as _;

use bytes::Bytes;
use forecourt_config::HealthCheck;
use forecourt_predictor::unix_now_ms;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::fleet::{ServiceInstances, WarmUp};

/// Why a health probe failed (the text the admin API shows as the instance's reason).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No answer within the check's timeout.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The TCP connection could not be made.
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    /// The HTTP/1 handshake failed.
    #[error("handshake: {0}")]
    Handshake(#[source] hyper::Error),
    /// The request could not be built (the check's path is not a valid target).
    #[error("request: {0}")]
    Build(#[source] http::Error),
    /// Sending the request or reading the response failed.
    #[error("request: {0}")]
    Send(#[source] hyper::Error),
    /// The instance answered, but not with a 2xx.
    #[error("status {0}")]
    Status(u16),
}

/// Probes `address` once: GET `path`, success on any 2xx within `check.timeout`.
pub async fn probe(address: SocketAddr, check: &HealthCheck) -> Result<(), ProbeError> {
    match tokio::time::timeout(check.timeout, probe_once(address, &check.path)).await {
        Ok(result) => result,
        Err(_) => Err(ProbeError::Timeout(check.timeout)),
    }
}

async fn probe_once(address: SocketAddr, path: &str) -> Result<(), ProbeError> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(ProbeError::Connect)?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(ProbeError::Handshake)?;
    let driver = tokio::spawn(connection);
    let request = http::Request::get(path)
        .header(http::header::HOST, address.to_string())
        .header(http::header::USER_AGENT, "forecourt-health-check")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(ProbeError::Build)?;
    let response = sender.send_request(request).await;
    driver.abort();
    let status = response.map_err(ProbeError::Send)?.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(ProbeError::Status(status.as_u16()))
    }
}

/// The outcome of a shared probe: `Err` carries the failure's text (what the admin API shows).
pub type ProbeOutcome = Result<(), Arc<str>>;

/// Probe results older than this are dropped from [`SharedProbes`] when it is pruned.
const PROBE_RESULT_KEPT: Duration = Duration::from_secs(300);

/// Probes between two prunings of [`SharedProbes`].
const PRUNE_EVERY: u64 = 4_096;

/// What makes two probes the same probe.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ProbeKey {
    address: SocketAddr,
    path: Box<str>,
    timeout: Duration,
}

#[derive(Debug)]
enum ProbeSlot {
    /// A probe is under way; its outcome is sent when done (the sender drops if it is cancelled).
    Running(watch::Receiver<Option<(ProbeOutcome, u64)>>),
    /// The last probe's outcome and when it finished.
    Done {
        at: Instant,
        outcome: ProbeOutcome,
        id: u64,
    },
}

/// Health probes shared by every service checking the same instance address with the same
/// path and timeout: a recent result is reused, a running probe is waited for.
#[derive(Debug, Default)]
pub struct SharedProbes {
    slots: Mutex<AHashMap<ProbeKey, ProbeSlot>>,
    probes: std::sync::atomic::AtomicU64,
}

impl SharedProbes {
    /// An empty set of probe results.
    pub fn new() -> Self {
        Self::default()
    }

    /// Real probes sent so far (not counting reused results).
    pub fn probes_sent(&self) -> u64 {
        self.probes.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, AHashMap<ProbeKey, ProbeSlot>> {
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The health of `address` under `check` and the probe's id: a result of the same probe
    /// younger than half of `check.interval` (unless it is `seen`, the one the caller already
    /// counted: a checker never counts one probe twice), the result of the same probe already
    /// running, or a new probe.
    pub async fn probe(
        &self,
        address: SocketAddr,
        check: &HealthCheck,
        seen: Option<u64>,
    ) -> (ProbeOutcome, u64) {
        let key = ProbeKey {
            address,
            path: check.path.as_str().into(),
            timeout: check.timeout,
        };
        let fresh_for = check.interval / 2;
        let running = {
            let slots = self.slots();
            match slots.get(&key) {
                Some(ProbeSlot::Done { at, outcome, id })
                    if at.elapsed() < fresh_for && seen != Some(*id) =>
                {
                    return (outcome.clone(), *id);
                }
                // A running probe whose sender is gone was cancelled: probe anew.
                Some(ProbeSlot::Running(outcome)) if outcome.has_changed().is_ok() => {
                    Some(outcome.clone())
                }
                _ => None,
            }
        };
        if let Some(mut outcome) = running {
            loop {
                if let Some(done) = outcome.borrow_and_update().clone() {
                    return done;
                }
                if outcome.changed().await.is_err() {
                    break;
                }
            }
        }
        let (sender, receiver) = watch::channel(None);
        self.slots()
            .insert(key.clone(), ProbeSlot::Running(receiver));
        let id = self
            .probes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let outcome: ProbeOutcome = probe(address, check)
            .await
            .map_err(|e| Arc::from(e.to_string()));
        {
            let mut slots = self.slots();
            slots.insert(
                key,
                ProbeSlot::Done {
                    at: Instant::now(),
                    outcome: outcome.clone(),
                    id,
                },
            );
            if id % PRUNE_EVERY == PRUNE_EVERY - 1 {
                slots.retain(|_, slot| match slot {
                    ProbeSlot::Done { at, .. } => at.elapsed() < PROBE_RESULT_KEPT,
                    ProbeSlot::Running(outcome) => outcome.has_changed().is_ok(),
                });
            }
        }
        let _ = sender.send(Some((outcome.clone(), id)));
        (outcome, id)
    }
}

/// When in each interval `service` probes: a fixed fraction of the interval from its name, so
/// checkers started together (at boot, after a reload) spread their probes over the interval.
fn phase(service: &str, interval: Duration) -> Duration {
    let hash = ahash::RandomState::with_seeds(1, 2, 3, 4).hash_one(service);
    let fraction = (hash % 1_000_000) as f64 / 1_000_000.0;
    interval.mul_f64(fraction)
}

/// The grid health rounds are aligned to: 100 ms for intervals of a second or more, a tenth of
/// the interval below. Checkers whose phases fall in one slot wake together, so 10,000 services
/// at 30 s wake the runtime 10 times a second, not 333.
fn round_slot(interval: Duration) -> Duration {
    (interval / 10).clamp(Duration::from_millis(1), Duration::from_millis(100))
}

/// How long after `wall_ms` (UNIX ms) a checker with `phase` starts its rounds: the phase,
/// pushed to the next multiple of [`round_slot`] on the wall clock (at most one slot later).
fn first_round_in(interval: Duration, phase: Duration, wall_ms: u64) -> Duration {
    let slot = u64::try_from(round_slot(interval).as_millis())
        .unwrap_or(1)
        .max(1);
    let phase_ms = u64::try_from(phase.as_millis()).unwrap_or(u64::MAX);
    let at = wall_ms.saturating_add(phase_ms);
    let aligned = at.div_ceil(slot).saturating_mul(slot);
    Duration::from_millis(aligned - wall_ms)
}

/// Warms a new instance before it is confirmed ready: the proxy sends it the service's
/// warm-up requests (hook, URLs, hottest paths) while no live request can reach it.
pub trait WarmInstance: Send + Sync {
    /// Sends the warm-up requests to the instance at `address`; returns when done or given up.
    fn warm(&self, address: SocketAddr) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>>;
}

/// Probes every instance of `service` each interval and publishes its ready set on change,
/// until `shutdown` turns true. With `warm`, a new instance that passes its health checks is
/// warmed first and confirmed ready at the first passing probe after its warm-up ends.
pub async fn check_service(
    service: Arc<ServiceInstances>,
    check: HealthCheck,
    shared: Arc<SharedProbes>,
    mut shutdown: watch::Receiver<bool>,
    warm: Option<Arc<dyn WarmInstance>>,
) {
    // The first round at once (a new instance is confirmed as soon as it answers); the next
    // ones at this service's phase of the interval.
    let start = tokio::time::Instant::now()
        + first_round_in(
            check.interval,
            phase(&service.name, check.interval),
            unix_now_ms(),
        );
    let mut ticker = tokio::time::interval_at(start, check.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Warm-ups run beside the probe rounds so a slow one never delays health checking.
    let mut warm_ups = JoinSet::new();
    // The shared probe each instance's health last counted (never counted twice).
    let mut counted: AHashMap<SocketAddr, u64> = AHashMap::new();
    let mut first = true;
    loop {
        if !first {
            tokio::select! {
                _ = ticker.tick() => {}
                // A finished warm-up: probe at once so the instance is confirmed ready without
                // delay.
                Some(_) = warm_ups.join_next(), if !warm_ups.is_empty() => {}
                _ = shutdown.changed() => {
                    if *shutdown.borrow() { return; }
                    continue;
                }
            }
        }
        first = false;
        // The round's probes run concurrently inside this task: no task is spawned per probe
        // (10,000 one-instance services at 30 s were 333 spawns a second).
        let mut probes = Vec::new();
        for instance in service.all().iter().cloned() {
            let (check, shared) = (&check, &shared);
            let warming = warm.is_some();
            let seen = counted.get(&instance.address).copied();
            // A probe that panicked is skipped, as a panicked task was before.
            probes.push(
                std::panic::AssertUnwindSafe(async move {
                    if warming {
                        instance.arm_warm_up();
                    }
                    let (result, id) = shared.probe(instance.address, check, seen).await;
                    // The probe that would confirm a new instance ready starts its warm-up instead.
                    if warming && result.is_ok() && instance.claim_warm_up(check) {
                        let _ = instance.record_probe(&result, check);
                        return (instance.address, id, false, Some(instance));
                    }
                    let flipped = instance.record_probe(&result, check);
                    if flipped {
                        match &result {
                            Ok(()) => tracing::info!(
                                address = %instance.address, version = %instance.version,
                                "instance confirmed ready"
                            ),
                            Err(e) => tracing::warn!(
                                address = %instance.address, error = %e,
                                "instance no longer ready"
                            ),
                        }
                    }
                    (instance.address, id, flipped, None)
                })
                .catch_unwind(),
            );
        }
        let mut changed = false;
        for done in futures::future::join_all(probes).await {
            let Ok((address, id, flipped, to_warm)) = done else {
                continue;
            };
            counted.insert(address, id);
            changed |= flipped;
            if let (Some(instance), Some(warm)) = (to_warm, &warm) {
                let warming = warm.warm(instance.address);
                warm_ups.spawn(async move {
                    warming.await;
                    instance.set_warm_up(WarmUp::Done);
                    tracing::info!(address = %instance.address, "instance warmed up");
                });
            }
        }
        if changed {
            service.publish_ready();
            tracing::info!(
                service = %service.name,
                ready = service.ready().instances.len(),
                total = service.all().len(),
                "ready set changed"
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::fleet::HealthState;

    #[test]
    fn ready_after_healthy_threshold_and_out_after_unhealthy() {
        let mut h = HealthState::default();
        assert_eq!(h.reason(2), "not probed yet");
        h.observe(Ok(()), 2, 3);
        assert!(!h.ready);
        assert_eq!(h.reason(2), "awaiting health checks (1/2 passed)");
        h.observe(Ok(()), 2, 3);
        assert!(h.ready);
        h.observe(Err("status 500".into()), 2, 3);
        h.observe(Err("status 500".into()), 2, 3);
        assert!(h.ready, "two failures are below the threshold of three");
        h.observe(Err("connect: refused".into()), 2, 3);
        assert!(!h.ready);
        assert_eq!(h.reason(2), "health check failing: connect: refused");
    }

    /// Answers every HTTP request on a loopback port with 200 until dropped.
    async fn always_ok() -> (SocketAddr, tokio::task::JoinHandle<()>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = socket.read(&mut buf).await;
                    let _ = socket
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                });
            }
        });
        (address, server)
    }

    /// Answers every HTTP request with 200 and counts them.
    async fn counting_ok() -> (SocketAddr, Arc<std::sync::atomic::AtomicU32>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let count = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = Arc::clone(&count);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = socket.read(&mut buf).await;
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let _ = socket
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                });
            }
        });
        (address, count)
    }

    #[tokio::test]
    async fn services_listing_one_address_share_its_probe() {
        let (address, count) = counting_ok().await;
        let check = HealthCheck {
            path: "/healthz".into(),
            interval: Duration::from_secs(3600),
            timeout: Duration::from_secs(2),
            healthy_threshold: 1,
            unhealthy_threshold: 1,
        };
        let shared = Arc::new(SharedProbes::new());
        // Fifty services probing the same address at once, then again: one probe.
        let mut all = JoinSet::new();
        for _ in 0..50 {
            let (shared, check) = (Arc::clone(&shared), check.clone());
            all.spawn(async move { shared.probe(address, &check, None).await.0 });
        }
        while let Some(outcome) = all.join_next().await {
            assert!(outcome.unwrap().is_ok());
        }
        let (outcome, id) = shared.probe(address, &check, None).await;
        assert!(outcome.is_ok());
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(shared.probes_sent(), 1);
        // Another path is another probe; a result older than half the interval is not reused.
        let other = HealthCheck {
            path: "/ready".into(),
            ..check.clone()
        };
        assert!(shared.probe(address, &other, None).await.0.is_ok());
        let always = HealthCheck {
            interval: Duration::ZERO,
            ..check.clone()
        };
        let (outcome, last) = shared.probe(address, &always, None).await;
        assert!(outcome.is_ok());
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 3);
        // A checker that already counted the fresh result probes anew: never one probe twice.
        let (_, reused) = shared.probe(address, &check, Some(id)).await;
        assert_eq!(
            reused, last,
            "a fresh result the caller has not counted is reused"
        );
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 3);
        let (again, newer) = shared.probe(address, &check, Some(last)).await;
        assert!(again.is_ok());
        assert_ne!(newer, last);
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 4);
        let (_, reused) = shared.probe(address, &check, Some(last)).await;
        assert_eq!(
            reused, newer,
            "the newer result is fresh and not yet counted"
        );
    }

    #[tokio::test]
    async fn a_shared_failure_keeps_its_reason() {
        let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = unused.local_addr().unwrap();
        drop(unused);
        let shared = SharedProbes::new();
        let check = HealthCheck {
            path: "/healthz".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            healthy_threshold: 1,
            unhealthy_threshold: 1,
        };
        let (outcome, _) = shared.probe(address, &check, None).await;
        let reason = outcome.expect_err("nothing listens");
        assert!(
            reason.starts_with("connect") || reason.starts_with("timed out"),
            "{reason}"
        );
    }

    #[test]
    fn rounds_start_on_a_shared_grid_at_most_one_slot_after_the_phase() {
        let interval = Duration::from_secs(30);
        assert_eq!(round_slot(interval), Duration::from_millis(100));
        assert_eq!(
            round_slot(Duration::from_millis(200)),
            Duration::from_millis(20)
        );
        for (wall, phase_ms) in [(1_000_037, 0), (1_000_037, 12_345), (5, 29_999)] {
            let wait = first_round_in(interval, Duration::from_millis(phase_ms), wall);
            let at = wall + u64::try_from(wait.as_millis()).unwrap();
            assert_eq!(at % 100, 0, "on the grid: {wall} + {wait:?}");
            assert!(wait >= Duration::from_millis(phase_ms));
            assert!(wait < Duration::from_millis(phase_ms + 100));
        }
        // Two checkers started 37 ms apart with phases 40 ms apart wake together.
        let a = 1_000_000
            + first_round_in(interval, Duration::from_millis(1_010), 1_000_000).as_millis() as u64;
        let b = 1_000_037
            + first_round_in(interval, Duration::from_millis(1_050), 1_000_037).as_millis() as u64;
        assert_eq!(a, 1_001_100);
        assert_eq!(b, 1_001_100);
    }

    #[test]
    fn phases_spread_services_over_the_interval() {
        let interval = Duration::from_secs(30);
        let phases: Vec<Duration> = (0..1_000)
            .map(|i| phase(&format!("svc-{i}"), interval))
            .collect();
        assert!(phases.iter().all(|p| *p < interval));
        assert_eq!(
            phase("svc-1", interval),
            phases[1],
            "the same name, the same phase"
        );
        // Each tenth of the interval gets about a tenth of the services.
        for tenth in 0..10 {
            let lo = interval.mul_f64(f64::from(tenth) / 10.0);
            let hi = interval.mul_f64(f64::from(tenth + 1) / 10.0);
            let n = phases.iter().filter(|p| **p >= lo && **p < hi).count();
            assert!((50..=150).contains(&n), "tenth {tenth}: {n}");
        }
    }

    /// A warm-up that counts its calls and ends when the test lets it.
    struct GatedWarmUp {
        calls: Arc<std::sync::atomic::AtomicU32>,
        release: Arc<tokio::sync::Notify>,
    }

    impl WarmInstance for GatedWarmUp {
        fn warm(&self, _address: SocketAddr) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let release = Arc::clone(&self.release);
            Box::pin(async move { release.notified().await })
        }
    }

    /// A service of one instance at `address`, and a fast health check with `threshold`.
    fn one_instance(
        address: SocketAddr,
        threshold: u32,
    ) -> (
        Arc<crate::fleet::Instance>,
        Arc<ServiceInstances>,
        HealthCheck,
    ) {
        let instance = Arc::new(crate::fleet::Instance::new(address, "v1"));
        let service = Arc::new(ServiceInstances::new("web", vec![instance.clone()]));
        let check = HealthCheck {
            path: "/healthz".into(),
            interval: std::time::Duration::from_millis(20),
            timeout: std::time::Duration::from_secs(1),
            healthy_threshold: threshold,
            unhealthy_threshold: threshold,
        };
        (instance, service, check)
    }

    #[tokio::test]
    async fn a_new_instance_is_confirmed_ready_only_after_its_warm_up() {
        let (address, server) = always_ok().await;
        let (instance, service, check) = one_instance(address, 2);
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let release = Arc::new(tokio::sync::Notify::new());
        let warm: Arc<dyn WarmInstance> = Arc::new(GatedWarmUp {
            calls: calls.clone(),
            release: release.clone(),
        });
        let (stop, shutdown) = watch::channel(false);
        let checker = tokio::spawn(check_service(
            service.clone(),
            check,
            Arc::new(SharedProbes::new()),
            shutdown,
            Some(warm),
        ));
        // The warm-up starts once the health checks would confirm the instance...
        let wait = std::time::Duration::from_secs(5);
        let started = tokio::time::timeout(wait, async {
            while calls.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(started.is_ok(), "the warm-up never started");
        // ...and the instance stays out of the ready set while it runs, however many probes pass.
        for _ in 0..10 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            assert!(service.ready().instances.is_empty());
            assert_eq!(instance.warm_up(), WarmUp::Running);
        }
        release.notify_one();
        let ready = tokio::time::timeout(wait, async {
            while service.ready().instances.is_empty() {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(ready.is_ok(), "never confirmed ready after the warm-up");
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "warmed once"
        );
        let _ = stop.send(true);
        let _ = checker.await;
        server.abort();
    }

    #[tokio::test]
    async fn without_a_warm_up_readiness_follows_the_health_checks() {
        let (address, server) = always_ok().await;
        let (instance, service, check) = one_instance(address, 1);
        let (stop, shutdown) = watch::channel(false);
        let checker = tokio::spawn(check_service(
            service.clone(),
            check,
            Arc::new(SharedProbes::new()),
            shutdown,
            None,
        ));
        let ready = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while service.ready().instances.is_empty() {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(ready.is_ok());
        assert_eq!(instance.warm_up(), WarmUp::Done);
        let _ = stop.send(true);
        let _ = checker.await;
        server.abort();
    }

    #[test]
    fn a_failure_resets_the_success_streak() {
        let mut h = HealthState::default();
        h.observe(Ok(()), 2, 1);
        h.observe(Err("x".into()), 2, 1);
        h.observe(Ok(()), 2, 1);
        assert!(!h.ready);
        h.observe(Ok(()), 2, 1);
        assert!(h.ready);
    }
}
