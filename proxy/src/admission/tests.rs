//! Admission under contention and at the edges: buckets, concurrency, tenants.

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::Instant;

use std::sync::atomic::{
    AtomicU32,
    Ordering::{Release, SeqCst},
};
use std::sync::Arc;

use super::tenants::BUSY;
use super::*;

const THREADS: usize = 8;
const ATTEMPTS_PER_THREAD: usize = 10_000;

/// Runs `f(thread)` on [`THREADS`] threads started together; returns their results.
fn on_threads<T: Send>(f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let go = AtomicBool::new(false);
    thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (go, f) = (&go, &f);
                s.spawn(move || {
                    while !go.load(std::sync::atomic::Ordering::Acquire) {
                        std::hint::spin_loop();
                    }
                    f(t)
                })
            })
            .collect();
        go.store(true, Release);
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn successes(bucket: &TokenBucket, now_ms: u64, attempts: usize) -> usize {
    (0..attempts)
        .filter(|_| bucket.try_take(now_ms).is_ok())
        .count()
}

fn limit(rate: f64, burst: u32, concurrency: Option<u32>) -> TenantLimit {
    TenantLimit {
        rate: Some(rate),
        burst,
        concurrency,
    }
}

// --- TokenBucket ---

#[test]
fn bucket_gives_its_burst_then_refuses() {
    let bucket = TokenBucket::new(10.0, 5);
    assert_eq!(successes(&bucket, 1_000, 5), 5);
    let retry = bucket.try_take(1_000).unwrap_err();
    assert_eq!(retry.millis(), 100);
    assert_eq!(retry.seconds(), 1);
    assert!(bucket.try_take(1_000).is_err());
}

#[test]
fn bucket_refills_at_its_rate_up_to_its_burst() {
    let bucket = TokenBucket::new(10.0, 2);
    assert_eq!(successes(&bucket, 0, 3), 2);
    assert_eq!(bucket.try_take(50), Err(RetryAfter::from_millis(50)));
    assert_eq!(bucket.try_take(100), Ok(()));
    assert_eq!(bucket.try_take(100), Err(RetryAfter::from_millis(100)));
    // 10 s idle refills the burst, not 100 tokens.
    assert_eq!(successes(&bucket, 10_100, 10), 2);
    // Steady: one token per 100 ms.
    for step in 1..=50 {
        let now = 10_100 + step * 100;
        assert_eq!(successes(&bucket, now, 3), 1, "at {now} ms");
    }
}

#[test]
fn retry_after_is_the_wait_for_the_next_token_in_whole_seconds() {
    let quarter = TokenBucket::new(0.25, 1);
    assert!(quarter.try_take(0).is_ok());
    let retry = quarter.try_take(0).unwrap_err();
    assert_eq!((retry.millis(), retry.seconds()), (4_000, 4));
    let retry = quarter.try_take(2_500).unwrap_err();
    assert_eq!((retry.millis(), retry.seconds()), (1_500, 2));
    assert!(quarter.try_take(4_000).is_ok());

    let third = TokenBucket::new(0.3, 1);
    assert!(third.try_take(0).is_ok());
    let retry = third.try_take(0).unwrap_err();
    assert_eq!((retry.millis(), retry.seconds()), (3_334, 4));

    assert_eq!(RetryAfter::from_millis(0).seconds(), 1);
    assert_eq!(RetryAfter::from_millis(1).seconds(), 1);
    assert_eq!(RetryAfter::from_millis(1_000).seconds(), 1);
    assert_eq!(RetryAfter::from_millis(1_001).seconds(), 2);
    assert!(RetryAfter::NEVER.is_never() && !RetryAfter::from_millis(5).is_never());
}

#[test]
fn rate_zero_gives_the_burst_once_and_never_refills() {
    for rate in [0.0, -5.0, f64::NAN, f64::NEG_INFINITY, 1e-30] {
        let bucket = TokenBucket::new(rate, 3);
        assert_eq!(successes(&bucket, 0, 10), 3, "rate {rate}");
        assert_eq!(bucket.try_take(u64::MAX / 2), Err(RetryAfter::NEVER));
    }
    let nothing = TokenBucket::new(0.0, 0);
    assert_eq!(nothing.try_take(0), Err(RetryAfter::NEVER));
}

#[test]
fn huge_rates_and_bursts_neither_panic_nor_wrap() {
    for rate in [f64::INFINITY, f64::MAX, 1e12, 4e9] {
        let bucket = TokenBucket::new(rate, 1);
        assert_eq!(
            successes(&bucket, 7, 1_000),
            1_000,
            "rate {rate} is unlimited"
        );
    }
    // 1e9 a second: one token a nanosecond, so a burst of 1 at one instant is 1.
    let nano = TokenBucket::new(1e9, 1);
    assert_eq!(successes(&nano, 7, 10), 1);
    assert_eq!(nano.try_take(7), Err(RetryAfter::from_millis(1)));
    assert!(nano.try_take(8).is_ok());
    // 10 million a second with a second's burst, as the policy allows.
    let big = TokenBucket::new(1e7, 10_000_000);
    assert_eq!(successes(&big, 0, 1_000), 1_000);
    // A burst longer than 292 years of its rate is cut to what fits: fewer, never a wrap.
    let wide = TokenBucket::new(1e-8, u32::MAX);
    let taken = successes(&wide, 0, 1_000);
    assert!((1..1_000).contains(&taken), "{taken}");
    assert_eq!(wide.try_take(0), Err(RetryAfter::NEVER));
    // The far end of the clock.
    for bucket in [TokenBucket::new(1.0, 2), TokenBucket::new(1e-8, u32::MAX)] {
        let _ = bucket.try_take(u64::MAX);
        let _ = bucket.try_take(u64::MAX);
        let _ = bucket.try_take(0);
    }
}

#[test]
fn a_clock_going_backwards_mints_no_tokens() {
    let bucket = TokenBucket::new(1.0, 2);
    assert_eq!(successes(&bucket, 10_000, 2), 2);
    for now in [9_999, 5_000, 0, 10_000, 10_999] {
        assert!(bucket.try_take(now).is_err(), "at {now} ms");
    }
    let retry = bucket.try_take(0).unwrap_err();
    assert_eq!(
        retry.millis(),
        11_000,
        "the wait is measured from the skewed clock"
    );
    assert!(bucket.try_take(11_000).is_ok());
    assert!(bucket.try_take(11_000).is_err());
    // Back and forth around one instant never adds up to more than the rate.
    let mut admitted = 0;
    for i in 0..1_000 {
        let now = 20_000 + if i % 2 == 0 { 0 } else { 900 };
        admitted += usize::from(bucket.try_take(now).is_ok());
    }
    assert_eq!(
        admitted, 2,
        "the bucket refilled to its burst of 2 by 20 s, no more"
    );
}

#[test]
fn threads_taking_at_one_instant_get_exactly_the_burst() {
    for rate in [0.0, 10.0, 1e6] {
        let bucket = TokenBucket::new(rate, 1_000);
        let taken: usize = on_threads(|_| successes(&bucket, 5_000, ATTEMPTS_PER_THREAD))
            .into_iter()
            .sum();
        assert_eq!(taken, 1_000, "rate {rate}");
    }
}

// --- ConcurrencyLimit and InFlightLimit ---

#[test]
fn concurrency_limit_refuses_at_max_and_drop_releases() {
    let limit = ConcurrencyLimit::new(2);
    let a = limit.try_acquire().unwrap();
    let b = limit.try_acquire().unwrap();
    assert!(limit.try_acquire().is_none());
    assert_eq!((limit.in_use(), limit.max()), (2, 2));
    drop(a);
    assert_eq!(limit.in_use(), 1);
    let c = limit.try_acquire().unwrap();
    drop((b, c));
    assert_eq!(limit.in_use(), 0);
    assert!(ConcurrencyLimit::new(0).try_acquire().is_none());

    let shared = Arc::new(ConcurrencyLimit::new(1));
    let owned = shared.try_acquire_owned().unwrap();
    assert!(shared.try_acquire_owned().is_none() && shared.try_acquire().is_none());
    drop(owned);
    assert!(shared.try_acquire_owned().is_some());
    assert_eq!(shared.in_use(), 0);
}

#[test]
fn threads_hammering_a_concurrency_limit_never_exceed_it() {
    let limit = Arc::new(ConcurrencyLimit::new(3));
    let holding = AtomicU32::new(0);
    let most = AtomicU32::new(0);
    let admitted: usize = on_threads(|t| {
        let mut admitted = 0;
        for i in 0..ATTEMPTS_PER_THREAD {
            let permit = if (t + i) % 2 == 0 {
                limit
                    .try_acquire()
                    .map(|p| Box::new(p) as Box<dyn std::fmt::Debug + '_>)
            } else {
                limit.try_acquire_owned().map(|p| Box::new(p) as Box<_>)
            };
            if let Some(permit) = permit {
                admitted += 1;
                let now = holding.fetch_add(1, SeqCst) + 1;
                most.fetch_max(now, SeqCst);
                std::hint::spin_loop();
                holding.fetch_sub(1, SeqCst);
                drop(permit);
            }
        }
        admitted
    })
    .into_iter()
    .sum();
    assert!(most.load(SeqCst) <= 3, "observed {}", most.load(SeqCst));
    assert!(most.load(SeqCst) >= 1 && admitted > 0);
    assert_eq!(limit.in_use(), 0);
}

#[test]
fn in_flight_limit_refuses_early_and_counts() {
    let limit = InFlightLimit::new(2);
    let a = limit.try_enter().unwrap();
    let b = limit.try_enter().unwrap();
    assert!(limit.try_enter().is_none());
    assert_eq!((limit.in_flight(), limit.max()), (2, 2));
    drop(a);
    assert_eq!(limit.in_flight(), 1);
    let a = limit.try_enter().unwrap();
    // A reload lowers the limit: the requests above it finish, no new one enters.
    limit.set_max(1);
    assert_eq!(limit.max(), 1);
    drop(a);
    assert!(
        limit.try_enter().is_none(),
        "b alone fills the lowered limit"
    );
    drop(b);
    let _a = limit.try_enter().unwrap();
    assert!(limit.try_enter().is_none());
    limit.set_max(3);
    let more: Vec<_> = (0..5).filter_map(|_| limit.try_enter()).collect();
    assert_eq!((more.len(), limit.in_flight()), (2, 3));
}

// --- TenantLimits ---

#[test]
fn tenants_have_independent_buckets() {
    let table = TenantLimits::new(64);
    let lim = limit(1.0, 2, None);
    assert!(table.admit("acme", &lim, 0).is_ok());
    assert!(table.admit("acme", &lim, 0).is_ok());
    assert_eq!(
        table.admit("acme", &lim, 0).unwrap_err(),
        Refusal::Rate(RetryAfter::from_millis(1_000))
    );
    assert!(table.admit("globex", &lim, 0).is_ok());
    assert!(table.admit("globex", &lim, 0).is_ok());
    assert!(table.admit("globex", &lim, 0).is_err());
    assert!(table.admit("acme", &lim, 1_000).is_ok());
    assert_eq!(table.len(), 2);
    assert!(!table.is_empty());
}

#[test]
fn a_tenant_at_ten_times_its_limit_leaves_the_others_alone() {
    let table = TenantLimits::new(64);
    let lim = limit(10.0, 10, Some(5));
    // acme: 10× its rate for 10 s, permits dropped at once.
    let mut acme = 0;
    for ms in (0..10_000).step_by(10) {
        acme += usize::from(table.admit("acme", &lim, ms).is_ok());
    }
    assert_eq!(acme, 10 + 99, "its burst, then one every 100 ms");
    // acme also holds its whole concurrency.
    let held: Vec<_> = (0..5)
        .map(|_| table.admit("acme", &lim, 20_000).unwrap())
        .collect();
    assert_eq!(
        table.admit("acme", &lim, 20_000).unwrap_err(),
        Refusal::Concurrency
    );
    // globex has its full burst and concurrency.
    let globex: Vec<_> = (0..5)
        .map(|_| table.admit("globex", &lim, 10_000).unwrap())
        .collect();
    assert!(globex.iter().all(|p| !p.is_shared()));
    drop(globex);
    assert_eq!(
        (0..10)
            .filter(|_| table.admit("globex", &lim, 10_000).is_ok())
            .count(),
        5 // the other 5 of its burst went to the permits above
    );
    drop(held);
    assert!(table.admit("acme", &lim, 20_000).is_ok());
}

#[test]
fn a_refused_rate_gives_back_the_concurrency_place() {
    let table = TenantLimits::new(8);
    let lim = limit(1.0, 1, Some(1));
    drop(table.admit("a", &lim, 0).unwrap());
    for _ in 0..10 {
        assert!(matches!(table.admit("a", &lim, 0), Err(Refusal::Rate(_))));
    }
    assert!(table.admit("a", &lim, 1_000).is_ok());
}

#[test]
fn tenants_beyond_capacity_share_the_overflow_slot() {
    let table = TenantLimits::new(2);
    let lim = limit(1.0, 3, None);
    let a = table.admit("a", &lim, 0).unwrap();
    let b = table.admit("b", &lim, 0).unwrap();
    assert!(!a.is_shared() && !b.is_shared());
    assert_eq!((table.len(), table.capacity()), (2, 2));
    // Both slots busy (permits held, buckets not full): c and d share one limit.
    let c = table.admit("c", &lim, 0).unwrap();
    assert!(c.is_shared());
    assert!(table.admit("d", &lim, 0).unwrap().is_shared());
    assert!(table.admit("c", &lim, 0).unwrap().is_shared());
    assert!(matches!(table.admit("d", &lim, 0), Err(Refusal::Rate(_))));
    assert_eq!(table.len(), 2);
    drop((a, b, c));
}

#[test]
fn colliding_tenants_are_told_apart_by_their_hash() {
    let table = TenantLimits::new(4);
    let names: Vec<String> = (0..100).map(|i| format!("tenant-{i}")).collect();
    let home = |name: &str| table.home(table.hash(name));
    let first = &names[0];
    let second = names[1..].iter().find(|n| home(n) == home(first)).unwrap();
    let lim = limit(1.0, 1, None);
    let a = table.admit(first, &lim, 0).unwrap();
    let b = table.admit(second, &lim, 0).unwrap();
    assert!(!a.is_shared() && !b.is_shared(), "the second probes on");
    assert!(table.admit(first, &lim, 0).is_err());
    assert!(table.admit(second, &lim, 0).is_err());
    assert_eq!(table.len(), 2);

    // One slot: the second tenant has nowhere to probe and shares the overflow slot.
    let tiny = TenantLimits::new(1);
    assert!(!tiny.admit(first, &lim, 0).unwrap().is_shared());
    assert!(tiny.admit(second, &lim, 0).unwrap().is_shared());
    assert!(tiny.admit(first, &lim, 0).is_err(), "still its own slot");

    // Fixed seeds: the same tenant hashes alike in every table, and the seeds spread.
    assert_eq!(table.hash(first), TenantLimits::new(1).hash(first));
    let mut hashes: Vec<u64> = names.iter().map(|n| table.hash(n)).collect();
    hashes.sort_unstable();
    hashes.dedup();
    assert_eq!(hashes.len(), names.len());
    let homes: std::collections::HashSet<_> = hashes.iter().map(|h| table.home(*h)).collect();
    assert_eq!(homes.len(), 4, "100 tenants reach every home slot of 4");
}

#[test]
fn idle_slots_go_to_new_tenants() {
    let table = TenantLimits::new(2);
    let lim = limit(1.0, 1, None);
    drop(table.admit("a", &lim, 0).unwrap());
    drop(table.admit("b", &lim, 0).unwrap());
    // At 500 ms neither bucket is full again: no slot is idle.
    assert!(table.admit("c", &lim, 500).unwrap().is_shared());
    // At 1 s both are: c takes one over and keeps it.
    assert!(!table.admit("c", &lim, 1_000).unwrap().is_shared());
    assert!(!table.admit("c", &lim, 2_000).unwrap().is_shared());
    assert_eq!(table.len(), 2);
    // A tenant with a request in flight keeps its slot, however long it runs.
    let table = TenantLimits::new(1);
    let running = table.admit("a", &TenantLimit::UNLIMITED, 0).unwrap();
    assert!(table.admit("b", &lim, 60_000).unwrap().is_shared());
    drop(running);
    assert!(!table.admit("b", &lim, 60_000).unwrap().is_shared());
    // ... and so does one with a request held.
    let table = TenantLimits::new(1);
    let held = table.hold_slot("a", 1).unwrap();
    assert!(!held.is_shared());
    assert!(table.admit("b", &lim, 60_000).unwrap().is_shared());
    drop(held);
    assert!(!table.admit("b", &lim, 60_000).unwrap().is_shared());
    // A tenant with a rate of 0 is never idle: its spent burst must not come back.
    let table = TenantLimits::new(1);
    drop(table.admit("a", &limit(0.0, 1, None), 0).unwrap());
    assert!(table
        .admit("b", &lim, 365 * 86_400_000)
        .unwrap()
        .is_shared());
    assert!(table.admit("a", &limit(0.0, 1, None), 0).is_err());
}

#[test]
fn a_changed_limit_applies_at_once() {
    let table = TenantLimits::new(8);
    let strict = limit(1.0, 1, Some(1));
    let p = table.admit("a", &strict, 0).unwrap();
    assert_eq!(
        table.admit("a", &strict, 0).unwrap_err(),
        Refusal::Concurrency
    );
    let loose = TenantLimit {
        rate: None,
        burst: 0,
        concurrency: Some(10),
    };
    assert!(table.admit("a", &loose, 0).is_ok());
    drop(p);
    // From a rate to rate 0 and back: each change starts the bucket afresh.
    assert!(table.admit("a", &limit(0.0, 1, None), 0).is_ok());
    assert!(table.admit("a", &limit(0.0, 1, None), 0).is_err());
    assert!(table.admit("a", &strict, 5_000).is_ok());
}

#[test]
fn threads_admitting_one_tenant_get_exactly_its_burst_and_concurrency() {
    let table = TenantLimits::new(16);
    let lim = limit(0.0, 1_000, None);
    let taken: usize = on_threads(|_| {
        (0..ATTEMPTS_PER_THREAD)
            .filter(|_| table.admit("acme", &lim, 0).is_ok())
            .count()
    })
    .into_iter()
    .sum();
    assert_eq!(taken, 1_000);

    let lim = TenantLimit {
        rate: None,
        burst: 0,
        concurrency: Some(4),
    };
    let holding = AtomicU32::new(0);
    let most = AtomicU32::new(0);
    on_threads(|_| {
        for _ in 0..ATTEMPTS_PER_THREAD {
            if let Ok(permit) = table.admit("globex", &lim, 0) {
                let now = holding.fetch_add(1, SeqCst) + 1;
                most.fetch_max(now, SeqCst);
                holding.fetch_sub(1, SeqCst);
                drop(permit);
            }
        }
    });
    assert!((1..=4).contains(&most.load(SeqCst)));
}

#[test]
fn threads_with_many_tenants_in_a_small_table_keep_counts_straight() {
    // 8 threads × 8 tenants each in 4 slots: claims, hand-overs and the overflow slot race.
    let table = Arc::new(TenantLimits::new(4));
    let names: Vec<Vec<String>> = (0..THREADS)
        .map(|t| (0..8).map(|i| format!("t{t}-{i}")).collect())
        .collect();
    let lim = limit(1e6, 1_000, Some(2));
    on_threads(|t| {
        for i in 0..ATTEMPTS_PER_THREAD {
            let name = &names[t][i % 8];
            let now = (i / 100) as u64;
            if i % 2 == 0 {
                if let Ok(permit) = table.admit(name, &lim, now) {
                    let held = table.hold_slot(name, 1);
                    drop((permit, held));
                }
            } else if let Ok(permit) = table.admit_owned(name, &lim, now) {
                let held = table.hold_slot_owned(name, 1);
                drop((held, permit));
            }
        }
    });
    assert_eq!(table.len(), 4);
    for slot in table.slots().iter().chain([&table.overflow]) {
        assert_eq!(slot.in_use.load(SeqCst), 0);
        assert_eq!(slot.held.load(SeqCst), 0);
        assert!(slot.hash.load(SeqCst) != BUSY);
    }
}

#[test]
fn owned_permits_need_no_borrow_and_release_on_drop() {
    fn owned<T: Send + Sync + 'static>(_: &T) {}
    let table = Arc::new(TenantLimits::new(8));
    let lim = limit(1e3, 100, Some(1));
    let permit = table.admit_owned("a", &lim, 0).unwrap();
    owned(&permit);
    assert!(!permit.is_shared());
    assert_eq!(table.admit("a", &lim, 0).unwrap_err(), Refusal::Concurrency);
    let held = table.hold_slot_owned("a", 1).unwrap();
    owned(&held);
    assert!(!held.is_shared());
    assert!(table.hold_slot_owned("a", 1).is_none());
    drop((permit, held));
    assert!(table.admit_owned("a", &lim, 0).is_ok());
    assert!(table.hold_slot("a", 1).is_some());

    // One slot, taken by a: b and c share the overflow slot, owned or not.
    let tiny = Arc::new(TenantLimits::new(1));
    let _a = tiny.admit_owned("a", &lim, 0).unwrap();
    let b = tiny.admit_owned("b", &lim, 0).unwrap();
    assert!(b.is_shared());
    assert_eq!(
        tiny.admit_owned("c", &lim, 0).unwrap_err(),
        Refusal::Concurrency
    );
    drop(b);
    assert!(tiny.admit("c", &lim, 0).unwrap().is_shared());
    assert!(tiny.hold_slot_owned("c", 1).unwrap().is_shared());

    let in_flight = Arc::new(InFlightLimit::new(1));
    let entered = in_flight.try_enter_owned().unwrap();
    owned(&entered);
    assert!(in_flight.try_enter().is_none() && in_flight.try_enter_owned().is_none());
    drop(entered);
    assert_eq!(in_flight.in_flight(), 0);
    assert!(in_flight.try_enter_owned().is_some());
}

#[test]
fn hold_slot_gives_each_tenant_its_share() {
    let table = TenantLimits::new(64);
    let a1 = table.hold_slot("a", 2).unwrap();
    let _a2 = table.hold_slot("a", 2).unwrap();
    assert!(table.hold_slot("a", 2).is_none(), "a's share is full");
    let _b1 = table.hold_slot("b", 2).unwrap();
    let _b2 = table.hold_slot("b", 2).unwrap();
    assert!(table.hold_slot("b", 2).is_none());
    drop(a1);
    assert!(table.hold_slot("a", 2).is_some());
    assert!(table.hold_slot("c", 0).is_none(), "no holding at all");
    // Holding and admitting count apart.
    assert!(table.admit("a", &limit(1.0, 1, Some(1)), 0).is_ok());
}

#[test]
fn reports_ns_per_operation() {
    const OPS: u64 = 1_000_000;
    let bucket = TokenBucket::new(1e6, 1_000);
    let started = Instant::now();
    let mut admitted = 0u64;
    for i in 0..OPS {
        admitted += u64::from(bucket.try_take(black_box(i / 1_000)).is_ok());
    }
    let take = started.elapsed().as_nanos() as f64 / OPS as f64;

    let table = TenantLimits::new(1024);
    let names: Vec<String> = (0..256).map(|i| format!("tenant-{i}")).collect();
    let lim = limit(1e6, 1_000, Some(100));
    let started = Instant::now();
    for i in 0..OPS {
        let name = &names[(i % 256) as usize];
        admitted += u64::from(table.admit(black_box(name), &lim, i / 1_000).is_ok());
    }
    let admit = started.elapsed().as_nanos() as f64 / OPS as f64;
    println!(
        "TokenBucket::try_take {take:.1} ns/op, TenantLimits::admit {admit:.1} ns/op \
         (256 tenants, {admitted} admitted)"
    );
}
