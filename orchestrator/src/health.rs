//! Active health checking: probe every instance, confirm readiness after N successes in a row.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use forecourt_config::HealthCheck;
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
    mut shutdown: watch::Receiver<bool>,
    warm: Option<Arc<dyn WarmInstance>>,
) {
    let mut ticker = tokio::time::interval(check.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let check = Arc::new(check);
    // Warm-ups run beside the probe rounds so a slow one never delays health checking.
    let mut warm_ups = JoinSet::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            // A finished warm-up: probe at once so the instance is confirmed ready without delay.
            Some(_) = warm_ups.join_next(), if !warm_ups.is_empty() => {}
            _ = shutdown.changed() => {
                if *shutdown.borrow() { return; }
                continue;
            }
        }
        let mut probes = JoinSet::new();
        for instance in service.all().iter().cloned() {
            let check = check.clone();
            let warming = warm.is_some();
            probes.spawn(async move {
                if warming {
                    instance.arm_warm_up();
                }
                let result = probe(instance.address, &check).await;
                // The probe that would confirm a new instance ready starts its warm-up instead.
                if warming && result.is_ok() && instance.claim_warm_up(&check) {
                    let _ = instance.record_probe(&result, &check);
                    return (false, Some(instance));
                }
                let flipped = instance.record_probe(&result, &check);
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
                (flipped, None)
            });
        }
        let mut changed = false;
        while let Some(done) = probes.join_next().await {
            let (flipped, to_warm) = done.unwrap_or((false, None));
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
        let checker = tokio::spawn(check_service(service.clone(), check, shutdown, Some(warm)));
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
        let checker = tokio::spawn(check_service(service.clone(), check, shutdown, None));
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
