//! Active health checking: probe every instance, confirm readiness after N successes in a row.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use forecourt_config::HealthCheck;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::ready::ServiceInstances;

/// What the health checker knows of one instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthState {
    /// Confirmed ready.
    pub ready: bool,
    /// Successful probes in a row.
    pub consecutive_ok: u32,
    /// Failed probes in a row.
    pub consecutive_fail: u32,
    /// The last probe's failure, if it failed.
    pub last_error: Option<String>,
    /// Probes run so far.
    pub probes: u64,
    /// Probes that failed so far.
    pub failed_probes: u64,
}

// === impl HealthState ===

impl HealthState {
    /// Applies one probe result against the thresholds.
    pub fn observe(&mut self, result: Result<(), String>, healthy: u32, unhealthy: u32) {
        self.probes += 1;
        match result {
            Ok(()) => {
                self.consecutive_ok = self.consecutive_ok.saturating_add(1);
                self.consecutive_fail = 0;
                self.last_error = None;
                if self.consecutive_ok >= healthy {
                    self.ready = true;
                }
            }
            Err(e) => {
                self.failed_probes += 1;
                self.consecutive_fail = self.consecutive_fail.saturating_add(1);
                self.consecutive_ok = 0;
                self.last_error = Some(e);
                if self.consecutive_fail >= unhealthy {
                    self.ready = false;
                }
            }
        }
    }

    /// Why an instance is not ready, in words for the admin API.
    pub fn reason(&self, healthy_threshold: u32) -> String {
        match (&self.last_error, self.probes) {
            (_, 0) => "not probed yet".to_owned(),
            (Some(e), _) => format!("health check failing: {e}"),
            (None, _) => format!(
                "awaiting health checks ({}/{healthy_threshold} passed)",
                self.consecutive_ok
            ),
        }
    }
}

/// Probes `address` once: GET `path`, success on any 2xx within `check.timeout`.
pub async fn probe(address: SocketAddr, check: &HealthCheck) -> Result<(), String> {
    match tokio::time::timeout(check.timeout, probe_once(address, &check.path)).await {
        Ok(result) => result,
        Err(_) => Err(format!("timed out after {:?}", check.timeout)),
    }
}

async fn probe_once(address: SocketAddr, path: &str) -> Result<(), String> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let driver = tokio::spawn(connection);
    let request = http::Request::get(path)
        .header(http::header::HOST, address.to_string())
        .header(http::header::USER_AGENT, "forecourt-health-check")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let response = sender.send_request(request).await;
    driver.abort();
    let status = response.map_err(|e| format!("request: {e}"))?.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("status {}", status.as_u16()))
    }
}

/// Probes every instance of `service` each interval and publishes its ready set on change,
/// until `shutdown` turns true.
pub async fn check_service(
    service: Arc<ServiceInstances>,
    check: HealthCheck,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(check.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let check = Arc::new(check);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => {
                if *shutdown.borrow() { return; }
                continue;
            }
        }
        let mut probes = JoinSet::new();
        for instance in service.all().iter().cloned() {
            let check = check.clone();
            probes.spawn(async move {
                let result = probe(instance.address, &check).await;
                let flipped = instance.record_probe(result.clone(), &check);
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
                flipped
            });
        }
        let mut changed = false;
        while let Some(flipped) = probes.join_next().await {
            changed |= flipped.unwrap_or(false);
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
mod tests {
    use super::*;

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
