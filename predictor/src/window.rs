//! A lock-free sliding window of time buckets, with the semantics of Knative's
//! `TimedFloat64Buckets`.
//!
//! ```text
//!  slot:    [0]      [1]      [2]   ...  [n-1]          one AtomicU64 per slot:
//!           e|c      e|c      e|c         e|c           high 32 bits = bucket epoch (index)
//!  bucket = now_ms / bucket_ms,  slot = bucket % n        low 32 bits  = count in that bucket
//! ```
//!
//! A writer whose bucket matches the slot's epoch adds with one `fetch_add`; a writer that finds an
//! older epoch swaps in `(new epoch, n)` with a compare-and-swap, so buckets skipped during an idle
//! gap are implicitly zero and no count is ever lost to a race. Readers sum the slots whose epoch is
//! inside the span they ask for.
//!
//! Averages follow Knative: while the window is younger than the span, the average is over the
//! buckets since the first record; after a full window without records it is zero, and the next
//! record starts a new young window.

use crate::sync::{AtomicU64, Ordering};

/// Bits of a slot that hold the bucket's count; the rest hold its epoch.
const COUNT_BITS: u32 = 32;
/// Mask of the count bits.
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
/// Counts up to this take the `fetch_add` fast path; above it a saturating CAS is used so a
/// count can never carry into the epoch bits.
const FAST_PATH_LIMIT: u64 = COUNT_MASK >> 1;
/// `newest` value before the first record.
const NEVER: u64 = 0;
/// A slot whose epoch is ahead of the writer's by less than this many buckets holds a genuinely
/// newer bucket (the writer is late); further ahead means the 32-bit epoch wrapped and the slot is
/// stale.
const MAX_LATENESS_BUCKETS: u32 = 1 << 24;

/// The shape of a [`SlidingWindow`]: bucket width and number of buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowConfig {
    /// Width of one bucket in milliseconds (default 1000).
    pub bucket_ms: u64,
    /// Number of buckets held (default 60).
    pub buckets: usize,
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            bucket_ms: 1_000,
            buckets: 60,
        }
    }
}

impl WindowConfig {
    /// The whole window's span in milliseconds.
    pub fn span_ms(&self) -> u64 {
        self.bucket_ms.saturating_mul(self.buckets as u64)
    }
}

/// The 32-bit epoch stored for a bucket; a slot value of 0 marks a never-written slot.
fn epoch_of(bucket: u64) -> u32 {
    (bucket as u32).wrapping_add(1)
}

fn pack(epoch: u32, count: u64) -> u64 {
    (u64::from(epoch) << COUNT_BITS) | (count & COUNT_MASK)
}

fn unpack(slot: u64) -> (u32, u64) {
    ((slot >> COUNT_BITS) as u32, slot & COUNT_MASK)
}

/// A fixed ring of time buckets that many threads record into without locks or allocation.
#[derive(Debug)]
pub struct SlidingWindow {
    bucket_ms: u64,
    slots: Box<[AtomicU64]>,
    /// Newest bucket index written, plus one (0 before any record).
    newest: AtomicU64,
    /// First bucket of the current run of records (Knative's `firstWrite`).
    first: AtomicU64,
}

impl SlidingWindow {
    /// An empty window; a zero bucket width or count is raised to 1.
    pub fn new(config: WindowConfig) -> Self {
        let buckets = config.buckets.max(1);
        Self {
            bucket_ms: config.bucket_ms.max(1),
            slots: (0..buckets).map(|_| AtomicU64::new(0)).collect(),
            newest: AtomicU64::new(NEVER),
            first: AtomicU64::new(u64::MAX),
        }
    }

    /// Width of one bucket in milliseconds.
    pub fn bucket_ms(&self) -> u64 {
        self.bucket_ms
    }

    /// Number of buckets held.
    pub fn buckets(&self) -> usize {
        self.slots.len()
    }

    /// The span the window covers in milliseconds.
    pub fn span_ms(&self) -> u64 {
        self.bucket_ms.saturating_mul(self.slots.len() as u64)
    }

    /// Index of the bucket that contains `now_ms`.
    pub fn bucket_index(&self, now_ms: u64) -> u64 {
        now_ms / self.bucket_ms
    }

    /// Adds `n` to the bucket containing `now_ms`: atomics only, no allocation, no lock.
    ///
    /// The common case (the slot already holds this bucket) is a single `fetch_add`. A record
    /// older than the slot's current bucket (more than a window late) is dropped; a bucket
    /// saturates at `u32::MAX`.
    #[inline]
    pub fn record(&self, now_ms: u64, n: u64) {
        if n == 0 {
            return;
        }
        let bucket = now_ms / self.bucket_ms;
        let epoch = epoch_of(bucket);
        let slot = &self.slots[(bucket % self.slots.len() as u64) as usize];
        if n <= FAST_PATH_LIMIT {
            // Optimistic add: one read-modify-write, no prior load to share the cache line.
            let previous = slot.fetch_add(n, Ordering::Relaxed);
            let (slot_epoch, count) = unpack(previous);
            if count + n > COUNT_MASK {
                // The add carried into the epoch bits: reverse it exactly, then saturate below.
                slot.fetch_sub(n, Ordering::Relaxed);
            } else if previous != 0 && slot_epoch == epoch {
                return;
            } else {
                // The slot held another bucket (stale, empty, or newer): take our count back out
                // unless a writer has already replaced that bucket (which dropped it for us).
                Self::undo(slot, slot_epoch, n);
            }
        }
        self.record_slow(slot, bucket, epoch, n);
    }

    /// The compare-and-swap path: opens a new bucket, saturates, or drops a late record.
    #[cold]
    fn record_slow(&self, slot: &AtomicU64, bucket: u64, epoch: u32, n: u64) {
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            let (slot_epoch, count) = unpack(current);
            let ahead = slot_epoch.wrapping_sub(epoch);
            let next = if current != 0 && ahead == 0 {
                pack(epoch, count.saturating_add(n).min(COUNT_MASK))
            } else if current == 0 || ahead >= MAX_LATENESS_BUCKETS {
                // The slot is empty or holds an older bucket: start ours. Skipped buckets read
                // as zero.
                pack(epoch, n.min(COUNT_MASK))
            } else {
                // The slot already holds a newer bucket: ours fell out of the window.
                return;
            };
            match slot.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    if current == 0 || ahead != 0 {
                        self.note_new_bucket(bucket);
                    }
                    return;
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Removes `n` from a slot that still holds `epoch` (after an optimistic add to the wrong
    /// bucket).
    #[cold]
    fn undo(slot: &AtomicU64, epoch: u32, n: u64) {
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            let (slot_epoch, count) = unpack(current);
            if slot_epoch != epoch || count < n {
                return;
            }
            match slot.compare_exchange_weak(
                current,
                pack(epoch, count - n),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// Book-keeping run once per bucket (by the writer that opened it): tracks the newest bucket
    /// and restarts the young window after a full idle window.
    #[cold]
    fn note_new_bucket(&self, bucket: u64) {
        let previous = self.newest.fetch_max(bucket + 1, Ordering::Relaxed);
        let idle_restart = previous != NEVER
            && bucket + 1 > previous
            && bucket - (previous - 1) >= self.slots.len() as u64;
        if idle_restart {
            self.first.fetch_max(bucket, Ordering::Relaxed);
        } else {
            self.first.fetch_min(bucket, Ordering::Relaxed);
        }
    }

    /// Number of buckets a span of `span_ms` covers (at least 1, at most the whole window).
    pub fn span_buckets(&self, span_ms: u64) -> u64 {
        span_ms
            .div_ceil(self.bucket_ms)
            .clamp(1, self.slots.len() as u64)
    }

    /// Sum of the counts in the last `span_ms`, the bucket containing `now_ms` included.
    pub fn sum(&self, now_ms: u64, span_ms: u64) -> u64 {
        let current = epoch_of(now_ms / self.bucket_ms);
        let span = self.span_buckets(span_ms);
        self.slots
            .iter()
            .map(|slot| {
                let (epoch, count) = unpack(slot.load(Ordering::Relaxed));
                if u64::from(current.wrapping_sub(epoch)) < span {
                    count
                } else {
                    0
                }
            })
            .sum()
    }

    /// Number of buckets an average over `span_ms` divides by: the span, or fewer while the window
    /// is young; `None` when nothing was recorded or the window has been idle for a full window.
    fn live_buckets(&self, now_ms: u64, span_ms: u64) -> Option<u64> {
        let newest = self.newest.load(Ordering::Relaxed);
        if newest == NEVER {
            return None;
        }
        let current = now_ms / self.bucket_ms;
        if current.saturating_sub(newest - 1) >= self.slots.len() as u64 {
            return None;
        }
        let first = self.first.load(Ordering::Relaxed);
        let age = current.saturating_sub(first).saturating_add(1);
        Some(self.span_buckets(span_ms).min(age))
    }

    /// Knative's window average: mean count per bucket over the last `span_ms` (or since the
    /// first record while younger), zero after a full idle window.
    pub fn average(&self, now_ms: u64, span_ms: u64) -> f64 {
        match self.live_buckets(now_ms, span_ms) {
            Some(buckets) => self.sum(now_ms, span_ms) as f64 / buckets as f64,
            None => 0.0,
        }
    }

    /// Average rate per second over the last `span_ms` with the same young/idle rules.
    pub fn rate_per_sec(&self, now_ms: u64, span_ms: u64) -> f64 {
        self.average(now_ms, span_ms) * 1_000.0 / self.bucket_ms as f64
    }

    /// The count of a closed bucket (one strictly before the bucket containing `now_ms`) that the
    /// window still holds; `None` for the current or a future bucket or one that fell out.
    pub fn closed_bucket(&self, now_ms: u64, bucket: u64) -> Option<u64> {
        let current = now_ms / self.bucket_ms;
        if bucket >= current || current - bucket >= self.slots.len() as u64 {
            return None;
        }
        let (epoch, count) =
            unpack(self.slots[(bucket % self.slots.len() as u64) as usize].load(Ordering::Relaxed));
        Some(if epoch == epoch_of(bucket) { count } else { 0 })
    }

    /// The last `n` closed buckets still held, oldest first, as `(bucket index, count)`.
    pub fn closed_buckets(&self, now_ms: u64, n: usize) -> impl Iterator<Item = (u64, u64)> + '_ {
        let current = now_ms / self.bucket_ms;
        let held = (self.slots.len() as u64).saturating_sub(1);
        let n = (n as u64).min(held).min(current);
        (current - n..current)
            .filter_map(move |bucket| self.closed_bucket(now_ms, bucket).map(|c| (bucket, c)))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    fn window() -> SlidingWindow {
        SlidingWindow::new(WindowConfig::default())
    }

    #[test]
    fn sums_records_in_span() {
        let w = window();
        w.record(0, 3);
        w.record(999, 2);
        w.record(1_000, 10);
        assert_eq!(w.sum(1_500, 60_000), 15);
        assert_eq!(w.sum(1_500, 1_000), 10);
        assert_eq!(w.sum(1_500, 2_000), 15);
    }

    #[test]
    fn partial_window_while_young() {
        let w = window();
        // 10 per second for 5 seconds, read in the 5th second: average over 5 buckets, not 60.
        for s in 0..5 {
            w.record(s * 1_000 + 10, 10);
        }
        assert_eq!(w.sum(4_500, 60_000), 50);
        assert!((w.rate_per_sec(4_500, 60_000) - 10.0).abs() < 1e-9);
        // The 6 s panic span behaves the same while younger than 6 s.
        assert!((w.rate_per_sec(4_500, 6_000) - 10.0).abs() < 1e-9);
    }

    #[test]
    fn young_window_starts_at_first_record_not_at_epoch() {
        let w = window();
        w.record(100_000, 60);
        // Only one bucket old.
        assert!((w.rate_per_sec(100_500, 60_000) - 60.0).abs() < 1e-9);
        // Two buckets old, one of them empty.
        assert!((w.rate_per_sec(101_500, 60_000) - 30.0).abs() < 1e-9);
    }

    #[test]
    fn idle_gaps_are_zeroed() {
        let w = window();
        for s in 0..60 {
            w.record(s * 1_000, 1);
        }
        assert_eq!(w.sum(59_000, 60_000), 60);
        // 30 s later one record: the 30 skipped buckets and the 29 oldest fell out.
        w.record(89_000, 5);
        assert_eq!(w.sum(89_000, 60_000), 30 + 5);
        // Slots reused by the new bucket don't keep the old count.
        assert_eq!(w.closed_bucket(90_000, 89_000 / 1_000), Some(5));
        assert_eq!(w.closed_bucket(90_000, 88), Some(0));
        assert!((w.average(89_000, 60_000) - 35.0 / 60.0).abs() < 1e-9);
    }

    #[test]
    fn zero_after_a_full_idle_window_then_young_again() {
        let w = window();
        for s in 0..60 {
            w.record(s * 1_000, 7);
        }
        assert!(w.rate_per_sec(59_500, 60_000) > 6.9);
        assert_eq!(w.rate_per_sec(119_000, 60_000), 0.0);
        assert_eq!(w.sum(119_000, 60_000), 0);
        assert_eq!(w.rate_per_sec(500_000, 6_000), 0.0);
        // The next record starts a young window: averaged over one bucket, not 60.
        w.record(500_000, 4);
        assert!((w.rate_per_sec(500_200, 60_000) - 4.0).abs() < 1e-9);
    }

    #[test]
    fn sub_second_buckets_report_per_second_rates() {
        let w = SlidingWindow::new(WindowConfig {
            bucket_ms: 100,
            buckets: 100,
        });
        for i in 0..100 {
            w.record(i * 100, 2);
        }
        // 2 per 100 ms = 20 per second.
        assert!((w.rate_per_sec(9_950, 10_000) - 20.0).abs() < 1e-9);
        assert!((w.rate_per_sec(9_950, 1_000) - 20.0).abs() < 1e-9);
    }

    #[test]
    fn closed_buckets_iterate_oldest_first() {
        let w = window();
        w.record(10_000, 1);
        w.record(11_000, 2);
        w.record(13_000, 4);
        let closed: Vec<_> = w.closed_buckets(14_000, 4).collect();
        assert_eq!(closed, vec![(10, 1), (11, 2), (12, 0), (13, 4)]);
        assert_eq!(w.closed_bucket(14_000, 14), None, "current bucket is open");
        assert_eq!(w.closed_bucket(100_000, 10), None, "fell out of the window");
        assert_eq!(w.closed_buckets(1_000, 10).count(), 1);
    }

    #[test]
    fn late_records_beyond_the_window_are_dropped() {
        let w = window();
        w.record(120_000, 1);
        w.record(60_000, 100); // same slot, one window older
        assert_eq!(w.sum(120_000, 60_000), 1);
    }

    #[test]
    fn bucket_counts_saturate_instead_of_corrupting_the_epoch() {
        let w = window();
        w.record(5_000, COUNT_MASK - 1);
        w.record(5_000, 10);
        assert_eq!(w.closed_bucket(6_000, 5), Some(COUNT_MASK));
        w.record(6_000, 1);
        assert_eq!(w.closed_bucket(7_000, 6), Some(1));
    }

    #[test]
    fn concurrent_writers_lose_no_counts_while_a_reader_reads() {
        const THREADS: u64 = 8;
        const RECORDS: u64 = 100_000;
        let w = Arc::new(window());
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let w = Arc::clone(&w);
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut reads = 0u64;
                let mut last = 0;
                while !done.load(std::sync::atomic::Ordering::Acquire) {
                    let sum = w.sum(42_500, 60_000);
                    assert!(sum >= last, "sums only grow within one bucket");
                    last = sum;
                    reads += 1;
                }
                reads
            })
        };
        let writers: Vec<_> = (0..THREADS)
            .map(|_| {
                let w = Arc::clone(&w);
                std::thread::spawn(move || {
                    for _ in 0..RECORDS {
                        w.record(42_000, 1);
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().expect("writer thread");
        }
        done.store(true, std::sync::atomic::Ordering::Release);
        assert!(reader.join().expect("reader thread") > 0);
        assert_eq!(w.sum(42_500, 60_000), THREADS * RECORDS);
    }

    #[test]
    fn concurrent_writers_across_bucket_rollover_lose_no_counts() {
        const THREADS: u64 = 4;
        const RECORDS: u64 = 50_000;
        let w = Arc::new(window());
        let writers: Vec<_> = (0..THREADS)
            .map(|t| {
                let w = Arc::clone(&w);
                std::thread::spawn(move || {
                    for i in 0..RECORDS {
                        // Walk through 40 s so threads keep opening new buckets under each other.
                        let now = (i * 40_000 / RECORDS) + t;
                        w.record(now, 1);
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().expect("writer thread");
        }
        assert_eq!(w.sum(40_000, 60_000), THREADS * RECORDS);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    #[test]
    fn loom_two_writers_one_opening_a_bucket() {
        loom::model(|| {
            let w = Arc::new(SlidingWindow::new(WindowConfig {
                bucket_ms: 1_000,
                buckets: 2,
            }));
            w.record(0, 1); // bucket 0 in slot 0; slot 0 is reused by bucket 2 below
            let a = {
                let w = Arc::clone(&w);
                loom::thread::spawn(move || w.record(2_000, 1))
            };
            let b = {
                let w = Arc::clone(&w);
                loom::thread::spawn(move || w.record(2_500, 2))
            };
            a.join().expect("writer a");
            b.join().expect("writer b");
            assert_eq!(w.sum(2_500, 1_000), 3);
            assert_eq!(w.sum(2_500, 2_000), 3);
        });
    }

    #[test]
    fn loom_late_writer_never_pollutes_a_newer_bucket() {
        loom::model(|| {
            let w = Arc::new(SlidingWindow::new(WindowConfig {
                bucket_ms: 1_000,
                buckets: 1,
            }));
            w.record(0, 5);
            let late = {
                let w = Arc::clone(&w);
                loom::thread::spawn(move || w.record(0, 1))
            };
            let fresh = {
                let w = Arc::clone(&w);
                loom::thread::spawn(move || w.record(1_000, 2))
            };
            late.join().expect("late writer");
            fresh.join().expect("fresh writer");
            assert_eq!(w.sum(1_000, 1_000), 2);
        });
    }
}
