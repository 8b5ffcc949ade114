//! Run with: cargo bench --bench predictor_record
//!
//! The predictor's two hot paths:
//! - `record`: one arrival on the request path, against a bare `AtomicU64::fetch_add`, single
//!   threaded and with two threads hammering the same service;
//! - `tick`: one second of forecasting for one service (score, update five models, forecast four
//!   horizons, issue).

// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use forecourt_predictor::{
    Ensemble, EnsembleConfig, Predictor, PredictorConfig, ServiceId, SlidingWindow, WindowConfig,
};

/// Runs `op` `iters` times on this thread while a second thread runs it in a loop, and returns
/// this thread's time.
fn contended(iters: u64, op: impl Fn(u64) + Send + Sync + 'static) -> Duration {
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let other = {
        let op = Arc::clone(&op);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                op(i);
                i += 1;
            }
        })
    };
    let started = Instant::now();
    for i in 0..iters {
        op(i);
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = other.join();
    elapsed
}

fn record(c: &mut Criterion) {
    let mut group = c.benchmark_group("record");
    group.throughput(Throughput::Elements(1));

    let counter = AtomicU64::new(0);
    group.bench_function("bare_fetch_add", |b| {
        b.iter(|| counter.fetch_add(black_box(1), Ordering::Relaxed))
    });

    let window = SlidingWindow::new(WindowConfig::default());
    let mut now_ms = 0u64;
    group.bench_function("window_record", |b| {
        b.iter(|| {
            // One millisecond per arrival: a new bucket every 1000 records.
            now_ms += 1;
            window.record(black_box(now_ms), 1);
        })
    });

    let predictor = Predictor::new(["web", "api"], PredictorConfig::default())
        .unwrap_or_else(|e| panic!("predictor: {e}"));
    let web = ServiceId(0);
    let mut now_ms = 0u64;
    group.bench_function("predictor_record_arrival", |b| {
        b.iter(|| {
            now_ms += 1;
            predictor.record_arrival(black_box(web), None, now_ms);
        })
    });
    let mut now_ms = 0u64;
    group.bench_function("predictor_record_arrival_with_tenant", |b| {
        b.iter(|| {
            now_ms += 1;
            predictor.record_arrival(black_box(web), Some("tenant-42"), now_ms);
        })
    });

    let shared_counter = Arc::new(AtomicU64::new(0));
    group.bench_function("bare_fetch_add_2_threads", |b| {
        let counter = Arc::clone(&shared_counter);
        b.iter_custom(move |iters| {
            let counter = Arc::clone(&counter);
            contended(iters, move |_| {
                counter.fetch_add(1, Ordering::Relaxed);
            })
        })
    });

    let shared = Arc::new(
        Predictor::new(["web"], PredictorConfig::default())
            .unwrap_or_else(|e| panic!("predictor: {e}")),
    );
    group.bench_function("predictor_record_arrival_2_threads", |b| {
        let predictor = Arc::clone(&shared);
        b.iter_custom(move |iters| {
            let predictor = Arc::clone(&predictor);
            // Both threads in the same second: the same bucket, the worst case.
            contended(iters, move |_| predictor.record_arrival(web, None, 1_000))
        })
    });
    group.finish();
}

fn tick(c: &mut Criterion) {
    let mut group = c.benchmark_group("tick");
    group.throughput(Throughput::Elements(1));
    let mut ensemble = Ensemble::new(EnsembleConfig::default());
    let mut x = 7u64;
    let mut next_value = move || {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (x >> 60) as f64
    };
    // Warm up past the first period detections so the seasonal model carries a profile.
    let mut t = 0u64;
    while t < 6 * 3_600 {
        ensemble.observe(t, next_value());
        t += 1;
    }
    group.bench_function("ensemble_observe_per_service", |b| {
        b.iter(|| {
            t += 1;
            ensemble.observe(black_box(t), next_value());
        })
    });
    group.finish();
}

criterion_group!(benches, record, tick);
criterion_main!(benches);
