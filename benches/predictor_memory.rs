//! Run with: cargo bench --bench predictor_memory
//!
//! Memory the predictor holds per tracked service and per tenant, measured by counting the bytes
//! a global allocator hands out while services, tenants and a day of forecasting are added.

#![allow(missing_docs)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use forecourt_predictor::{EngineConfig, ForecastEngine, Predictor, PredictorConfig};

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; only a counter is added.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    const SERVICES: usize = 100;
    const TENANTS: usize = 64;
    let names: Vec<String> = (0..SERVICES).map(|i| format!("service-{i}")).collect();
    let tenants: Vec<String> = (0..TENANTS).map(|i| format!("tenant-{i:04}")).collect();

    let before = live();
    let predictor = Predictor::new(names.iter().cloned(), PredictorConfig::default())
        .unwrap_or_else(|e| panic!("predictor: {e}"));
    let windows = live() - before;
    let slots = PredictorConfig::default().tenant_slots;

    // The first tenant allocates the service's tenant table; later ones store only their name.
    let before = live();
    for (id, _, _) in predictor.services() {
        predictor.record_arrival(id, Some(&tenants[0]), 1_000);
    }
    let table_bytes = live() - before;
    let before = live();
    for (id, _, _) in predictor.services() {
        for tenant in &tenants[1..] {
            predictor.record_arrival(id, Some(tenant), 1_000);
        }
    }
    let tenant_bytes = live() - before;

    // The engine's cost per service is measured on ten services (a day of ticks each).
    const ENGINE_SERVICES: usize = 10;
    let small = Predictor::new(
        names.iter().take(ENGINE_SERVICES).cloned(),
        PredictorConfig::default(),
    )
    .unwrap_or_else(|e| panic!("predictor: {e}"));
    let before = live();
    let mut engine = ForecastEngine::new(&small, EngineConfig::default());
    for second in 1..=600u64 {
        engine.tick(&small, second * 1_000 + 500);
    }
    let idle_engine = live() - before;
    // A day of traffic (one arrival a second) lets the seasonal model build its profiles: its
    // memory at steady state.
    let before = live();
    for second in 601..=86_400u64 {
        for (id, _, _) in small.services() {
            small.record_arrival(id, None, second * 1_000 - 500);
        }
        engine.tick(&small, second * 1_000 + 500);
    }
    let grown = live() - before;

    let per = |bytes: isize, n: usize| bytes as f64 / n as f64 / 1024.0;
    println!("predictor memory ({SERVICES} services, {TENANTS} tenants each, 1 s × 60 windows)");
    println!(
        "  windows per service           {:>8.1} KiB (arrivals, concurrency, \"other\" tenants)",
        per(windows, SERVICES)
    );
    println!(
        "  tenant table per service      {:>8.1} KiB ({slots} slots, at the first tenant)",
        per(table_bytes, SERVICES)
    );
    println!(
        "  per tenant seen               {:>8.2} KiB (its name, on first sight)",
        per(tenant_bytes, SERVICES * (TENANTS - 1))
    );
    println!(
        "  forecast engine per service   {:>8.1} KiB (idle: no arrival yet)",
        per(idle_engine, ENGINE_SERVICES)
    );
    println!(
        "  forecast engine per service   {:>8.1} KiB (after a day of traffic)",
        per(idle_engine + grown, ENGINE_SERVICES)
    );
}
