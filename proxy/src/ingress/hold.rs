//! Holding a request while its service has no ready instance (like Knative's activator): a
//! bounded per-service queue with a fair share per tenant and a deadline; the arrival itself
//! wakes the control loop.

use std::time::Instant;

use tokio::sync::Notify;

use crate::classify::version::{self, VersionRuntime};
use crate::counters::Limited;
use crate::snapshot::ServiceRuntime;

/// Counts a request as held for as long as it lives (a client that gives up drops it).
struct Held<'a>(&'a std::sync::atomic::AtomicU64);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Holds a request of a service with no ready instance for it (`version`: its flagged
/// version, if any) until one is confirmed ready (true) or the queue (or `tenant`'s share of
/// it) is full or the deadline passes (false). The body is not read meanwhile.
pub(super) async fn hold(
    service: &ServiceRuntime,
    tenant: &str,
    version: Option<&VersionRuntime>,
    scale_signal: &Notify,
) -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    let hold = service.config.hold;
    let metrics = &service.metrics;
    // One tenant's burst may take only its share of the queue.
    let tenants = &service.admission.tenants;
    let Some(_share) = tenants.hold_slot(tenant, hold.max_per_tenant) else {
        metrics.count_limited(Limited::HoldShare);
        return false;
    };
    if metrics.held_now.fetch_add(1, Relaxed) >= u64::from(hold.max_requests) {
        metrics.held_now.fetch_sub(1, Relaxed);
        return false;
    }
    let _held = Held(&metrics.held_now);
    metrics.held.fetch_add(1, Relaxed);
    // A held request is itself a scale signal: wake the control loop now.
    scale_signal.notify_one();
    let started = Instant::now();
    let mut changes = service.instances.subscribe();
    let deadline = tokio::time::sleep(hold.timeout);
    tokio::pin!(deadline);
    let ready = loop {
        if !version::candidates(&service.instances.ready(), version).is_empty() {
            break true;
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { break false },
            () = &mut deadline => break false,
        }
    };
    metrics.hold_wait.record(started.elapsed());
    ready
}
