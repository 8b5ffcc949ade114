//! One service's live windows: arrivals, arrivals per tenant, and in-flight concurrency.
//!
//! ```text
//!  request arrives ──► arrivals.record ─┬─► tenants.record (when the request names a tenant)
//!  request starts  ──► in_flight +1, Σstart += now
//!  request ends    ──► in_flight −1, Σstart −= started, busy_ms += now − started
//!  forecaster tick ──► concurrency.record(Δ in-flight·ms since the last tick)
//! ```
//!
//! In-flight time is integrated exactly without a lock: at time `t` the request-milliseconds so
//! far are `busy_ms + in_flight·t − Σstart`, so a tick only needs the difference to the last tick.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

use crate::tenant::TenantWindows;
use crate::window::{SlidingWindow, WindowConfig};

/// The in-flight gauge and its running time integral.
#[derive(Debug, Default)]
struct InFlight {
    count: AtomicI64,
    /// Sum of start times of requests still in flight (wrapping).
    start_sum_ms: AtomicU64,
    /// Request-milliseconds of finished requests (wrapping).
    finished_ms: AtomicU64,
}

impl InFlight {
    /// Request-milliseconds accumulated up to `now_ms` (wrapping arithmetic).
    fn busy_ms(&self, now_ms: u64) -> u64 {
        let finished = self.finished_ms.load(Ordering::Acquire);
        let count = self.count.load(Ordering::Acquire) as u64;
        let starts = self.start_sum_ms.load(Ordering::Acquire);
        finished
            .wrapping_add(count.wrapping_mul(now_ms))
            .wrapping_sub(starts)
    }
}

/// The live windows of one service, shared by the request path (`&self`, atomics only) and the
/// forecaster tick.
#[derive(Debug)]
pub struct ServiceWindows {
    arrivals: CachePadded<SlidingWindow>,
    in_flight: CachePadded<InFlight>,
    tenants: TenantWindows,
    concurrency: SlidingWindow,
    /// Request-milliseconds at the last concurrency sample.
    sampled_busy_ms: AtomicU64,
}

impl ServiceWindows {
    /// Empty windows of the given shape, with `tenant_slots` per-tenant windows.
    pub fn new(window: WindowConfig, tenant_slots: usize) -> Self {
        Self {
            arrivals: CachePadded::new(SlidingWindow::new(window)),
            in_flight: CachePadded::new(InFlight::default()),
            tenants: TenantWindows::new(tenant_slots, window),
            concurrency: SlidingWindow::new(window),
            sampled_busy_ms: AtomicU64::new(0),
        }
    }

    /// Records one arrival at `now_ms`, also for `tenant` when given. No allocation except the
    /// first time a tenant is seen.
    #[inline]
    pub fn record_arrival(&self, tenant: Option<&str>, now_ms: u64) {
        self.arrivals.record(now_ms, 1);
        if let Some(tenant) = tenant {
            self.tenants.record(tenant, now_ms, 1);
        }
    }

    /// Records `n` arrivals at `now_ms` at once (trace replay; no tenant).
    #[inline]
    pub fn record_arrivals(&self, n: u64, now_ms: u64) {
        if n > 0 {
            self.arrivals.record(now_ms, n);
        }
    }

    /// Marks a request as started at `now_ms`; pair it with [`Self::request_finished`].
    #[inline]
    pub fn request_started(&self, now_ms: u64) {
        self.in_flight
            .start_sum_ms
            .fetch_add(now_ms, Ordering::AcqRel);
        self.in_flight.count.fetch_add(1, Ordering::AcqRel);
    }

    /// Marks a request that started at `started_ms` as finished at `now_ms`.
    #[inline]
    pub fn request_finished(&self, started_ms: u64, now_ms: u64) {
        self.in_flight
            .finished_ms
            .fetch_add(now_ms.saturating_sub(started_ms), Ordering::AcqRel);
        self.in_flight.count.fetch_sub(1, Ordering::AcqRel);
        self.in_flight
            .start_sum_ms
            .fetch_sub(started_ms, Ordering::AcqRel);
    }

    /// Requests in flight right now.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.count.load(Ordering::Acquire)
    }

    /// Adds the in-flight time since the previous sample to the concurrency window; the forecaster
    /// tick calls this once per tick.
    pub fn sample_concurrency(&self, now_ms: u64) {
        let busy = self.in_flight.busy_ms(now_ms);
        let previous = self.sampled_busy_ms.swap(busy, Ordering::AcqRel);
        let delta = busy.wrapping_sub(previous);
        // A wrapped-negative delta is a torn read of the three counters; skip it.
        if delta < u64::MAX / 2 {
            self.concurrency.record(now_ms, delta);
        }
    }

    /// Average number of requests in flight over `span_ms`, from the ticks' samples.
    pub fn average_concurrency(&self, now_ms: u64, span_ms: u64) -> f64 {
        // The window holds request-milliseconds per bucket; per second that is concurrency × 1000.
        self.concurrency.rate_per_sec(now_ms, span_ms) / 1_000.0
    }

    /// The arrivals window.
    pub fn arrivals(&self) -> &SlidingWindow {
        &self.arrivals
    }

    /// Arrivals per second over the last `span_ms` (Knative young/idle rules).
    pub fn arrival_rate(&self, now_ms: u64, span_ms: u64) -> f64 {
        self.arrivals.rate_per_sec(now_ms, span_ms)
    }

    /// The per-tenant windows.
    pub fn tenants(&self) -> &TenantWindows {
        &self.tenants
    }

    /// The concurrency window (request-milliseconds per bucket).
    pub fn concurrency(&self) -> &SlidingWindow {
        &self.concurrency
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn service() -> ServiceWindows {
        ServiceWindows::new(WindowConfig::default(), 8)
    }

    #[test]
    fn arrivals_count_per_service_and_tenant() {
        let s = service();
        s.record_arrival(Some("acme"), 1_000);
        s.record_arrival(None, 1_100);
        s.record_arrival(Some("acme"), 1_200);
        assert_eq!(s.arrivals().sum(1_500, 60_000), 3);
        assert!((s.tenants().rate_per_sec("acme", 1_500, 60_000) - 2.0).abs() < 1e-9);
    }

    #[test]
    fn in_flight_gauge_goes_up_and_down() {
        let s = service();
        s.request_started(100);
        s.request_started(200);
        assert_eq!(s.in_flight(), 2);
        s.request_finished(100, 300);
        assert_eq!(s.in_flight(), 1);
        s.request_finished(200, 400);
        assert_eq!(s.in_flight(), 0);
    }

    #[test]
    fn time_averaged_concurrency_counts_short_requests() {
        let s = service();
        s.sample_concurrency(1_000);
        // Two requests in flight for the whole of second 1..2, one short 250 ms request.
        s.request_started(1_000);
        s.request_started(1_000);
        s.request_started(1_250);
        s.request_finished(1_250, 1_500);
        s.sample_concurrency(2_000);
        assert!((s.average_concurrency(2_000, 1_000) - 2.25).abs() < 1e-9);
        // Still two in flight through second 2..3.
        s.sample_concurrency(3_000);
        assert!((s.average_concurrency(3_000, 1_000) - 2.0).abs() < 1e-9);
        assert!((s.average_concurrency(3_000, 2_000) - 2.125).abs() < 1e-9);
    }

    #[test]
    fn concurrency_of_requests_that_started_before_the_first_sample() {
        let s = service();
        s.request_started(500);
        s.sample_concurrency(1_000);
        s.sample_concurrency(2_000);
        assert!((s.average_concurrency(2_000, 1_000) - 1.0).abs() < 1e-9);
    }
}
