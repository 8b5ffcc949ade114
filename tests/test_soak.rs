//! Soak test, run on demand (not in CI):
//!
//! ```sh
//! cargo test --release --test test_soak -- --ignored --nocapture            # 10 minutes
//! FORECOURT_SOAK_SECS=120 cargo test --release --test test_soak -- --ignored --nocapture
//! ```
//!
//! A fixed rate of requests through Forecourt for the whole run, with a policy reload every 15 s
//! that moves a launched service between 1 and 3 instances (instances started, drained and
//! stopped under load). Reports the requests, every failure, and Forecourt's RSS after warm-up
//! and at the end; fails on any failed request or on RSS growing by more than 20 % + 8 MiB.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use forecourt_test_utils::*;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn policy(replicas: u32, generation: u32) -> String {
    format!(
        "listeners: {{ proxy: \"{{proxy}}\", admin: \"{{admin}}\" }}
defaults:
  health_check: {{ interval: 200ms, timeout: 200ms, healthy_threshold: 1 }}
services:
  - name: shop
    routes: [{{ path_prefix: /shop }}]
    launch:
      command: [\"{{forecourt}}\", backend, --port, \"{{port}}\", --boot-delay, 300ms]
      drain_timeout: 5s
      stop_grace: 1s
    scaling: {{ min_replicas: {replicas}, max_replicas: {replicas}, capacity: {{ requests_per_second: 1000 }} }}
    cache: {{ ttl: 2s }}
    retry_after: {generation}
"
    )
}

#[test]
#[ignore = "soak: 10 minutes by default (FORECOURT_SOAK_SECS), run on demand"]
fn soak_at_a_fixed_rate_with_reloads_and_instance_churn() {
    let seconds: u64 = std::env::var("FORECOURT_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let fc = Forecourt::start(&policy(1, 1));
    fc.wait_ready("shop", 1);
    let proxy = fc.proxy;
    let stop = AtomicBool::new(false);
    let (ok, failed) = (AtomicU64::new(0), AtomicU64::new(0));
    let failures = std::sync::Mutex::new(Vec::new());
    let started = Instant::now();
    let mut rss = (0, 0);
    std::thread::scope(|scope| {
        // 4 clients × 50 requests a second, over 100 paths (some cached, most not).
        for client in 0..4u64 {
            let (stop, ok, failed, failures) = (&stop, &ok, &failed, &failures);
            scope.spawn(move || {
                let mut i = client;
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let path = format!("/shop/item/{}?n={}", i % 100, i / 100 % 7);
                    match get(proxy, &path, &[("x-tenant-id", "soak")]) {
                        Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        other => {
                            let what = other
                                .map(|r| r.status.to_string())
                                .unwrap_or_else(|e| e.to_string());
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("{:?}: {path}: {what}", started.elapsed()));
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    i += 4;
                    next += Duration::from_millis(20);
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
            });
        }
        let mut generation = 1;
        while started.elapsed() < Duration::from_secs(seconds) {
            std::thread::sleep(Duration::from_secs(15).min(Duration::from_secs(seconds)));
            if rss.0 == 0 {
                rss.0 = rss_kib(fc.process.pid());
            }
            generation += 1;
            fc.write_policy(&policy(if generation % 2 == 0 { 3 } else { 1 }, generation));
        }
        rss.1 = rss_kib(fc.process.pid());
        stop.store(true, Ordering::Relaxed);
    });
    let (ok, failed) = (ok.into_inner(), failed.into_inner());
    println!(
        "soak {seconds}s: {ok} ok, {failed} failed; Forecourt RSS {} KiB after warm-up, {} KiB at the end",
        rss.0, rss.1
    );
    for f in failures.lock().unwrap().iter().take(20) {
        println!("  {f}");
    }
    assert_eq!(failed, 0);
    assert!(
        rss.1 <= rss.0 + rss.0 / 5 + 8 * 1024,
        "RSS grew from {} to {} KiB",
        rss.0,
        rss.1
    );
}
