//! Hot keys: which keys (request paths with query) a service serves most, counted approximately
//! in bounded memory and without locks on the request path.
//!
//! ```text
//!  record(key) ── ahash (fixed seeds) ──► h ──┬─► row i: splitmix(h ^ seed_i) & (width-1)
//!                                            │     count-min sketch, depth × width AtomicU32
//!                                            │     conservative update ─► estimate e
//!                                            │
//!            e ≤ table minimum? ── yes ──► done (the common case: no further work)
//!                                  no
//!                                   ▼
//!  top-K table: K slots { hash: AtomicU64, count: AtomicU64, key: ArcSwapOption<Arc<str>> }
//!    h found ─► count = max(count, e)
//!    else     ─► claim the weakest slot (CAS on its hash), store the key text, publish the hash
//!
//!  top(n): read the slots, check each against its hash, hottest first
//!  decay(): halve every counter (a background task, e.g. once a minute)
//! ```
//!
//! The sketch never undercounts a key (up to races between concurrent records of the same key,
//! which can lose an increment) and overcounts it only by collisions with other keys in every
//! row. Conservative update keeps the overcount small: a record raises only the rows that hold
//! the key's current minimum. The key text is allocated only when a key enters the table.
//!
//! A slot being replaced is marked busy for the few instructions it takes to store the new key;
//! other threads skip a busy slot rather than wait, so no thread ever blocks another.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;

/// Slot hash of an empty slot.
const EMPTY: u64 = 0;
/// Slot hash of a slot whose key is being replaced.
const BUSY: u64 = u64::MAX;
/// Largest sketch depth accepted (more rows add cost, not accuracy).
const MAX_DEPTH: usize = 16;
/// Largest sketch width accepted (4 MiB per row).
const MAX_WIDTH: usize = 1 << 20;
/// Largest table accepted (the table is scanned on a hot key's record).
const MAX_TOP_K: usize = 1024;
/// A counter at or above this is saturated and no longer incremented, so it can never wrap.
const SATURATED: u32 = u32::MAX / 2;
/// Fixed seeds of the key hash: the same key always lands on the same counters.
const SEEDS: [u64; 4] = [
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
];

/// splitmix64's finaliser: spreads a row's seed mixed with the key hash over all 64 bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Seed of sketch row `row`.
fn row_seed(row: usize) -> u64 {
    (row as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// An approximate, bounded count of the keys a service serves, and its hottest keys.
///
/// Every method takes `&self` and uses atomics only: share it in an `Arc` and call
/// [`record`](Self::record) from every request thread.
pub struct HotKeys {
    /// `depth` rows of `width` counters, row-major.
    sketch: Box<[AtomicU32]>,
    depth: usize,
    /// `width - 1`; the width is a power of two.
    mask: usize,
    hasher: ahash::RandomState,
    /// Hash of each slot's key ([`EMPTY`], [`BUSY`] or the key's hash).
    slot_hashes: Box<[AtomicU64]>,
    /// Estimated count of each slot's key.
    slot_counts: Box<[AtomicU64]>,
    /// Text of each slot's key (arc-swap swaps sized values only, so the text's `Arc` is boxed
    /// in the swapped one).
    slot_keys: Box<[ArcSwapOption<Arc<str>>]>,
    /// The smallest count in the table (0 while a slot is empty): a hint that lets most records
    /// skip the table.
    table_min: AtomicU64,
}

// === impl HotKeys ===

impl HotKeys {
    /// A sketch of `depth` rows of `width` counters (rounded up to a power of two) and a table of
    /// the `top_k` hottest keys; zeros are clamped to 1, and the sizes to 16 × 2^20 and 1024.
    pub fn new(depth: usize, width: usize, top_k: usize) -> HotKeys {
        let depth = depth.clamp(1, MAX_DEPTH);
        let width = width.clamp(1, MAX_WIDTH).next_power_of_two();
        let top_k = top_k.clamp(1, MAX_TOP_K);
        HotKeys {
            sketch: (0..depth * width).map(|_| AtomicU32::new(0)).collect(),
            depth,
            mask: width - 1,
            hasher: ahash::RandomState::with_seeds(SEEDS[0], SEEDS[1], SEEDS[2], SEEDS[3]),
            slot_hashes: (0..top_k).map(|_| AtomicU64::new(EMPTY)).collect(),
            slot_counts: (0..top_k).map(|_| AtomicU64::new(0)).collect(),
            slot_keys: (0..top_k).map(|_| ArcSwapOption::empty()).collect(),
            table_min: AtomicU64::new(0),
        }
    }

    /// Counts one request for `key`; lock-free, and allocates only when `key` enters the table.
    pub fn record(&self, key: &str) {
        let hash = self.hash(key);
        let estimate = self.increment(hash);
        if estimate > self.table_min.load(Ordering::Relaxed) {
            self.offer(hash, key, estimate);
        }
    }

    /// The sketch's estimate of how often `key` was recorded (since decays halved it).
    pub fn estimate(&self, key: &str) -> u64 {
        let hash = self.hash(key);
        (0..self.depth)
            .map(|row| u64::from(self.counter(row, hash).load(Ordering::Relaxed)))
            .min()
            .unwrap_or(0)
    }

    /// Up to `n` of the hottest keys with their estimated counts, hottest first.
    pub fn top(&self, n: usize) -> Vec<(Arc<str>, u64)> {
        let mut entries: Vec<(Arc<str>, u64, u64)> = Vec::with_capacity(self.slot_hashes.len());
        for slot in 0..self.slot_hashes.len() {
            let hash = self.slot_hashes[slot].load(Ordering::Acquire);
            if hash == EMPTY || hash == BUSY {
                continue;
            }
            let key = self.slot_keys[slot].load_full();
            let count = self.slot_counts[slot].load(Ordering::Relaxed);
            // A slot replaced while it was read, or a key stored over a newer claim, is skipped.
            if self.slot_hashes[slot].load(Ordering::Acquire) != hash || count == 0 {
                continue;
            }
            if let Some(key) = key.filter(|k| self.hash(k) == hash) {
                entries.push((Arc::clone(&key), count, hash));
            }
        }
        // Two records racing to admit the same key can put it in two slots: keep the higher.
        entries.sort_unstable_by(|a, b| a.2.cmp(&b.2).then(b.1.cmp(&a.1)));
        entries.dedup_by_key(|e| e.2);
        entries.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        entries.truncate(n);
        entries
            .into_iter()
            .map(|(key, count, _)| (key, count))
            .collect()
    }

    /// Halves every counter, so the ranking follows a changing workload; keys whose count
    /// reaches zero leave the table.
    pub fn decay(&self) {
        for counter in self.sketch.iter() {
            let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| Some(c / 2));
        }
        for slot in 0..self.slot_hashes.len() {
            let before = self.slot_counts[slot]
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| Some(c / 2))
                .unwrap_or(0);
            if before / 2 > 0 {
                continue;
            }
            let hash = self.slot_hashes[slot].load(Ordering::Acquire);
            if hash == EMPTY || hash == BUSY {
                continue;
            }
            let claimed = self.slot_hashes[slot]
                .compare_exchange(hash, BUSY, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok();
            if claimed {
                self.slot_keys[slot].store(None);
                self.slot_hashes[slot].store(EMPTY, Ordering::Release);
            }
        }
        self.refresh_min();
    }

    /// Bytes held: the struct, the sketch, the table and the key texts in it.
    pub fn memory_bytes(&self) -> usize {
        let keys: usize = self
            .slot_keys
            .iter()
            .map(|k| {
                k.load()
                    .as_ref()
                    // Two allocations: the swapped `Arc` (two reference counts and an `Arc<str>`)
                    // and the text's (two reference counts and the text).
                    .map_or(0, |key| {
                        4 * std::mem::size_of::<usize>()
                            + std::mem::size_of::<Arc<str>>()
                            + key.len()
                    })
            })
            .sum();
        std::mem::size_of::<Self>()
            + std::mem::size_of_val(&*self.sketch)
            + std::mem::size_of_val(&*self.slot_hashes)
            + std::mem::size_of_val(&*self.slot_counts)
            + std::mem::size_of_val(&*self.slot_keys)
            + keys
    }

    /// The key's 64-bit hash, never [`EMPTY`] or [`BUSY`].
    fn hash(&self, key: &str) -> u64 {
        match self.hasher.hash_one(key) {
            EMPTY | BUSY => 1,
            hash => hash,
        }
    }

    /// The counter of `hash` in sketch row `row`.
    fn counter(&self, row: usize, hash: u64) -> &AtomicU32 {
        let column = (mix(hash ^ row_seed(row)) as usize) & self.mask;
        &self.sketch[row * (self.mask + 1) + column]
    }

    /// Conservative update: adds one to the first row holding the key's minimum and raises the
    /// others to the result. Returns the key's new estimate.
    fn increment(&self, hash: u64) -> u64 {
        let mut min_row = 0;
        let mut min = u32::MAX;
        for row in 0..self.depth {
            let value = self.counter(row, hash).load(Ordering::Relaxed);
            if value < min {
                min = value;
                min_row = row;
            }
        }
        if min >= SATURATED {
            return u64::from(min);
        }
        // The `fetch_add` makes concurrent records of one key add up on the minimum row (ties go
        // to the lowest row, so they meet on the same one); the other rows follow by `fetch_max`.
        let estimate = self
            .counter(min_row, hash)
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        for row in (0..self.depth).filter(|&r| r != min_row) {
            let counter = self.counter(row, hash);
            if counter.load(Ordering::Relaxed) < estimate {
                counter.fetch_max(estimate, Ordering::Relaxed);
            }
        }
        u64::from(estimate)
    }

    /// Updates the key's slot, or puts the key in place of the weakest slot if it is hotter.
    fn offer(&self, hash: u64, key: &str, estimate: u64) {
        let mut weakest: Option<(usize, u64, u64)> = None;
        for slot in 0..self.slot_hashes.len() {
            let slot_hash = self.slot_hashes[slot].load(Ordering::Acquire);
            if slot_hash == hash {
                let before = self.slot_counts[slot].fetch_max(estimate, Ordering::Relaxed);
                if before <= self.table_min.load(Ordering::Relaxed) {
                    self.refresh_min();
                }
                return;
            }
            if slot_hash == BUSY {
                continue;
            }
            let count = if slot_hash == EMPTY {
                0
            } else {
                self.slot_counts[slot].load(Ordering::Relaxed)
            };
            if weakest.is_none_or(|(_, _, c)| count < c) {
                weakest = Some((slot, slot_hash, count));
            }
        }
        let Some((slot, slot_hash, count)) = weakest else {
            return;
        };
        if estimate <= count {
            // The hint was stale: the table's minimum is higher than it said.
            self.refresh_min();
            return;
        }
        let claimed = self.slot_hashes[slot]
            .compare_exchange(slot_hash, BUSY, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok();
        if !claimed {
            // Another record took this slot first; this one loses its place, not its count.
            return;
        }
        self.slot_keys[slot].store(Some(Arc::new(Arc::from(key))));
        self.slot_counts[slot].store(estimate, Ordering::Relaxed);
        self.slot_hashes[slot].store(hash, Ordering::Release);
        self.refresh_min();
    }

    /// Recomputes the table's minimum count (0 while a slot is empty or busy).
    fn refresh_min(&self) {
        let mut min = u64::MAX;
        for slot in 0..self.slot_hashes.len() {
            let hash = self.slot_hashes[slot].load(Ordering::Acquire);
            let count = if hash == EMPTY || hash == BUSY {
                0
            } else {
                self.slot_counts[slot].load(Ordering::Relaxed)
            };
            min = min.min(count);
        }
        self.table_min.store(min, Ordering::Relaxed);
    }
}

impl fmt::Debug for HotKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HotKeys")
            .field("depth", &self.depth)
            .field("width", &(self.mask + 1))
            .field("top_k", &self.slot_hashes.len())
            .field("table_min", &self.table_min.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// splitmix64: a small seeded generator (`rand` is not a dependency).
    struct SplitMix(u64);

    impl SplitMix {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            mix(self.0)
        }

        /// Uniform in [0, 1).
        fn next_f64(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Zipf(s) over ranks 1..=n by inverse CDF.
    struct Zipf {
        cumulative: Vec<f64>,
    }

    impl Zipf {
        fn new(n: usize, s: f64) -> Zipf {
            let mut total = 0.0;
            let cumulative = (1..=n)
                .map(|k| {
                    total += 1.0 / (k as f64).powf(s);
                    total
                })
                .collect();
            Zipf { cumulative }
        }

        fn sample(&self, rng: &mut SplitMix) -> usize {
            let total = *self.cumulative.last().unwrap();
            let u = rng.next_f64() * total;
            self.cumulative
                .partition_point(|&c| c <= u)
                .min(self.cumulative.len() - 1)
                + 1
        }
    }

    fn key_of(rank: usize) -> String {
        format!("/item/{rank}?view=full")
    }

    #[test]
    fn zipf_stream_finds_the_true_top_keys() {
        let hot = HotKeys::new(4, 1024, 32);
        let zipf = Zipf::new(10_000, 1.0);
        let mut rng = SplitMix(42);
        let mut truth: HashMap<String, u64> = HashMap::new();
        for _ in 0..100_000 {
            let key = key_of(zipf.sample(&mut rng));
            hot.record(&key);
            *truth.entry(key).or_default() += 1;
        }
        let mut true_top: Vec<(&String, &u64)> = truth.iter().collect();
        true_top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let top = hot.top(20);
        assert_eq!(top.len(), 20);
        for (key, _) in &true_top[..10] {
            assert!(
                top.iter().any(|(k, _)| &**k == key.as_str()),
                "{key} missing from {top:?}"
            );
        }
        let (top_key, top_count) = true_top[0];
        assert_eq!(&*top[0].0, top_key.as_str());
        let estimate = top[0].1 as f64;
        let truth = *top_count as f64;
        assert!(
            (estimate - truth).abs() <= 0.05 * truth,
            "estimate {estimate} vs truth {truth}"
        );
        assert!(estimate >= truth, "a count-min sketch never undercounts");
        // Hottest first.
        assert!(top.windows(2).all(|w| w[0].1 >= w[1].1));
    }

    #[test]
    fn concurrent_records_add_up() {
        let hot = HotKeys::new(4, 1024, 32);
        const PER_THREAD: u64 = 50_000;
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let hot = &hot;
                s.spawn(move || {
                    let mut rng = SplitMix(t);
                    let own = format!("/thread/{t}");
                    for i in 0..PER_THREAD {
                        match i % 5 {
                            0 | 1 => hot.record("/shared"),
                            2 => hot.record(&own),
                            _ => hot.record(&format!("/cold/{}", rng.next_u64() % 5_000)),
                        }
                    }
                });
            }
        });
        let shared = 4 * PER_THREAD * 2 / 5;
        let own = PER_THREAD / 5;
        let estimate = hot.estimate("/shared");
        assert!(
            estimate as f64 >= 0.95 * shared as f64 && estimate as f64 <= 1.05 * shared as f64,
            "/shared: {estimate} vs {shared}"
        );
        let top = hot.top(5);
        assert_eq!(&*top[0].0, "/shared");
        for t in 0..4 {
            let key = format!("/thread/{t}");
            let (_, count) = top.iter().find(|(k, _)| **k == *key).unwrap();
            assert!(
                *count as f64 >= 0.95 * own as f64 && *count as f64 <= 1.1 * own as f64,
                "{key}: {count} vs {own}"
            );
        }
        let listed: u64 = hot.top(32).iter().map(|(_, c)| c).sum();
        assert!(
            listed <= 4 * PER_THREAD,
            "{listed} counted of {} records",
            4 * PER_THREAD
        );
    }

    #[test]
    fn decay_halves_counts() {
        let hot = HotKeys::new(4, 1024, 8);
        for _ in 0..100 {
            hot.record("/a");
        }
        for _ in 0..41 {
            hot.record("/b");
        }
        hot.decay();
        assert_eq!(hot.estimate("/a"), 50);
        assert_eq!(hot.estimate("/b"), 20);
        assert_eq!(
            hot.top(2),
            vec![(Arc::from("/a"), 50), (Arc::from("/b"), 20)]
        );
        // A changed workload overtakes the old ranking.
        for _ in 0..60 {
            hot.record("/c");
        }
        assert_eq!(&*hot.top(1)[0].0, "/c");
        // Decayed to zero, keys leave the table.
        for _ in 0..10 {
            hot.decay();
        }
        assert!(hot.top(8).is_empty());
        assert_eq!(hot.estimate("/a"), 0);
    }

    #[test]
    fn keys_never_recorded_are_never_listed() {
        let hot = HotKeys::new(4, 64, 4);
        assert!(hot.top(10).is_empty());
        for i in 0..1_000 {
            hot.record(&format!("/k/{}", i % 50));
        }
        let top = hot.top(10);
        assert_eq!(top.len(), 4);
        for (key, count) in top {
            let i: usize = key.strip_prefix("/k/").unwrap().parse().unwrap();
            assert!(i < 50);
            assert!(count >= 20);
        }
        assert!(hot.top(0).is_empty());
    }

    #[test]
    fn any_key_text_is_fine() {
        let hot = HotKeys::new(4, 1024, 8);
        let long = "x".repeat(10 * 1024);
        let odd = "/ünï\u{0}\n\t?a=%20&b=\u{1f600}";
        for _ in 0..3 {
            hot.record("");
            hot.record(&long);
            hot.record(odd);
        }
        let top = hot.top(8);
        assert_eq!(top.len(), 3);
        for key in ["", long.as_str(), odd] {
            assert!(top.iter().any(|(k, c)| &**k == key && *c == 3), "{key:?}");
        }
        assert!(hot.memory_bytes() > long.len());
    }

    #[test]
    fn shapes_are_clamped() {
        let hot = HotKeys::new(0, 0, 0);
        hot.record("/a");
        hot.record("/b");
        hot.record("/b");
        // One counter: every key shares it, and the table holds the latest hotter key.
        assert_eq!(hot.estimate("/a"), 3);
        assert_eq!(hot.top(5), vec![(Arc::from("/b"), 3)]);
        let hot = HotKeys::new(2, 1000, 3);
        assert_eq!(hot.mask + 1, 1024);
        assert!(format!("{hot:?}").contains("width: 1024"));
        let memory = HotKeys::new(4, 1024, 32).memory_bytes();
        assert!((16 * 1024..20 * 1024).contains(&memory), "{memory}");
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<HotKeys>();
    }

    /// Run with `--nocapture` to see the cost of one record (information only).
    #[test]
    fn record_cost() {
        let hot = HotKeys::new(4, 1024, 32);
        let zipf = Zipf::new(10_000, 1.0);
        let mut rng = SplitMix(7);
        let keys: Vec<String> = (0..4_096).map(|_| key_of(zipf.sample(&mut rng))).collect();
        const RECORDS: usize = 1_000_000;
        let start = std::time::Instant::now();
        for i in 0..RECORDS {
            hot.record(&keys[i % keys.len()]);
        }
        let elapsed = start.elapsed();
        println!(
            "hot_keys: {:.1} ns/record ({} records, {} bytes)",
            elapsed.as_nanos() as f64 / RECORDS as f64,
            RECORDS,
            hot.memory_bytes()
        );
        assert!(!hot.top(1).is_empty());
    }
}
