//! The request path's counters, recorded with relaxed atomics only (rendered by `admin::metrics`).
//!
//! Latencies go into a log-linear atomic histogram (8 sub-buckets per power of two, about 12%
//! relative width) so recording takes no lock; scrapes merge it into an `hdrhistogram` for
//! quantiles and export cumulative buckets.
//!
//! The large tables (requests by class and status, 4 KB per class; each histogram, 4 KB) are
//! allocated at a service's first request (or first held request), once: a service that never
//! gets traffic, like most of ten thousand on one proxy, holds a few hundred bytes of counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Sub-buckets per power of two.
const SUB: u64 = 8;
/// Number of histogram buckets (covers all of u64 microseconds).
const BUCKETS: usize = 8 + 61 * SUB as usize;
/// Status codes 100..=599 are counted one by one.
pub(crate) const CODES: usize = 500;

/// Prometheus bucket bounds for request latency, in seconds.
pub const LATENCY_BOUNDS_S: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A lock-free latency histogram in microseconds (its buckets allocated at the first record).
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: OnceLock<Box<[AtomicU64]>>,
    sum_us: AtomicU64,
}

/// `n` zeroed counters.
fn zeroed(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

/// The bucket of a value in microseconds.
fn bucket_of(us: u64) -> usize {
    if us < SUB {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros() as u64; // >= 3
    let sub = (us >> (exp - 3)) - SUB; // 0..8
    (SUB + (exp - 3) * SUB + sub) as usize
}

/// The smallest value in bucket `i`.
fn bucket_low(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let exp = (i - SUB) / SUB + 3;
    let sub = (i - SUB) % SUB;
    (SUB + sub) << (exp - 3)
}

// === impl LatencyHistogram ===

impl LatencyHistogram {
    /// Records one latency.
    pub fn record(&self, latency: Duration) {
        let us = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        let buckets = self.buckets.get_or_init(|| zeroed(BUCKETS));
        buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Merges the counts into an `hdrhistogram` (each bucket at its low bound).
    pub fn snapshot(&self) -> (Histogram<u64>, u64) {
        let mut h = Histogram::<u64>::new(3).unwrap_or_else(|_| unreachable_histogram());
        for (i, b) in self
            .buckets
            .get()
            .into_iter()
            .flat_map(|b| b.iter())
            .enumerate()
        {
            let n = b.load(Ordering::Relaxed);
            if n > 0 {
                let _ = h.record_n(bucket_low(i).max(1), n);
            }
        }
        (h, self.sum_us.load(Ordering::Relaxed))
    }
}

/// `Histogram::new(3)` only fails for precision above 5.
fn unreachable_histogram() -> Histogram<u64> {
    Histogram::<u64>::new(2).unwrap_or_else(|_| panic!("hdrhistogram rejects precision 2"))
}

/// Counters of one service.
#[derive(Debug)]
pub struct ServiceMetrics {
    /// `[tenant class][status - 100]`, allocated at the first answered request.
    requests: OnceLock<Box<[AtomicU64]>>,
    pub(crate) classes: usize,
    /// Time from request start to response end.
    pub latency: LatencyHistogram,
    /// Connections to an instance that failed.
    pub connect_failures: AtomicU64,
    /// Attempts on another instance after a failure.
    pub retries: AtomicU64,
    /// Requests answered 503 because no instance was ready.
    pub no_ready_instance: AtomicU64,
    /// Requests waiting for a ready instance right now.
    pub held_now: AtomicU64,
    /// Requests that waited for a ready instance.
    pub held: AtomicU64,
    /// Time held requests waited (those that got an instance and those that timed out).
    pub hold_wait: LatencyHistogram,
    /// Requests refused by a limit, by [`Limited`].
    pub limited: [AtomicU64; Limited::ALL.len()],
    /// Requests refused 400 for their tenant header (sent twice, invalid, badly signed).
    pub tenant_refused: AtomicU64,
    /// Passive ejections not made because the service's `ejection.max_percent` was reached.
    pub ejections_capped: AtomicU64,
    /// Requests Forecourt sent an instance itself to revalidate a stale cache entry.
    pub revalidations: AtomicU64,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// The tenant's rate (429).
    TenantRate,
    /// The tenant's requests in flight (429).
    TenantConcurrency,
    /// The service's rate (429).
    ServiceRate,
    /// The service's requests in flight (429).
    ServiceConcurrency,
    /// The tenant's share of the hold queue (503).
    HoldShare,
}

impl Limited {
    /// Every limit, in metric order.
    pub const ALL: [Limited; 5] = [
        Limited::TenantRate,
        Limited::TenantConcurrency,
        Limited::ServiceRate,
        Limited::ServiceConcurrency,
        Limited::HoldShare,
    ];

    /// The `limit` label.
    pub fn label(self) -> &'static str {
        match self {
            Limited::TenantRate => "tenant_rate",
            Limited::TenantConcurrency => "tenant_concurrency",
            Limited::ServiceRate => "service_rate",
            Limited::ServiceConcurrency => "service_concurrency",
            Limited::HoldShare => "hold_share",
        }
    }
}

// === impl ServiceMetrics ===

impl ServiceMetrics {
    /// Counts a request refused by `limit`.
    pub fn count_limited(&self, limit: Limited) {
        let i = Limited::ALL.iter().position(|l| *l == limit).unwrap_or(0);
        self.limited[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request refused for its tenant header.
    pub fn count_tenant_refused(&self) {
        self.tenant_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Counters for a service with `classes` tenant classes.
    pub fn new(classes: usize) -> Self {
        Self {
            requests: OnceLock::new(),
            classes,
            latency: LatencyHistogram::default(),
            connect_failures: AtomicU64::new(0),
            limited: Default::default(),
            retries: AtomicU64::new(0),
            no_ready_instance: AtomicU64::new(0),
            held_now: AtomicU64::new(0),
            held: AtomicU64::new(0),
            hold_wait: LatencyHistogram::default(),
            tenant_refused: AtomicU64::new(0),
            ejections_capped: AtomicU64::new(0),
            revalidations: AtomicU64::new(0),
        }
    }

    /// How many tenant classes it counts.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Counts one answered request.
    pub fn count(&self, class: usize, status: u16) {
        let code = usize::from(status.clamp(100, 599)) - 100;
        let class = class.min(self.classes.saturating_sub(1));
        let requests = self
            .requests
            .get_or_init(|| zeroed(self.classes.max(1) * CODES));
        requests[class * CODES + code].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests answered with `status` for `class`.
    pub fn requests(&self, class: usize, status: u16) -> u64 {
        let code = usize::from(status.clamp(100, 599)) - 100;
        self.request_counts()
            .and_then(|r| r.get(class * CODES + code))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Requests by `[tenant class][status - 100]`; `None` before the first answered request.
    pub(crate) fn request_counts(&self) -> Option<&[AtomicU64]> {
        self.requests.get().map(|r| &r[..])
    }
}

/// Counters that belong to no service.
#[derive(Debug, Default)]
pub struct ProxyMetrics {
    /// Requests no route matched (404).
    pub unrouted: AtomicU64,
    /// Requests rejected as malformed by Forecourt's own checks (400).
    pub rejected: AtomicU64,
    /// Connections closed with 408 because a request header did not arrive in time.
    pub header_timeouts: AtomicU64,
    /// Requests shed with a fast 503 because the proxy was at its in-flight limit.
    pub shed: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_contain_their_values() {
        let mut last = 0;
        for us in [
            0u64,
            1,
            7,
            8,
            9,
            15,
            16,
            17,
            100,
            1_000,
            123_456,
            10_000_000,
            u64::MAX,
        ] {
            let b = bucket_of(us);
            assert!(b >= last, "bucket of {us} went backwards");
            assert!(b < BUCKETS);
            assert!(bucket_low(b) <= us, "{us} below its bucket");
            if b + 1 < BUCKETS {
                assert!(bucket_low(b + 1) > us, "{us} above its bucket");
            }
            last = b;
        }
    }

    #[test]
    fn histogram_quantiles_are_within_bucket_width() {
        let h = LatencyHistogram::default();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let (snap, sum) = h.snapshot();
        assert_eq!(snap.len(), 100);
        assert_eq!(sum, 5050 * 1000);
        let p50 = snap.value_at_quantile(0.5) as f64;
        assert!((p50 - 50_000.0).abs() / 50_000.0 < 0.13, "p50 {p50}");
    }
}
