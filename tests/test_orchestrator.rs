//! End to end: the `local` orchestrator starting real sample backends (with a real boot delay)
//! as children of the real `forecourt` binary; holding, predictive scaling, hot reload and
//! draining, all on 127.0.0.1.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use forecourt_test_utils::*;

const HEADER: &str = "listeners: { proxy: \"{proxy}\", admin: \"{admin}\" }
admin: { public_reads: true }
defaults:
  health_check: { interval: 100ms, timeout: 100ms, healthy_threshold: 1, unhealthy_threshold: 2 }
services:
";

/// A launched service running `forecourt backend` with `boot` delay and extra settings.
fn launched(name: &str, boot: &str, extra: &str) -> String {
    format!(
        "  - name: {name}
    routes: [{{ path_prefix: /{name} }}]
    launch:
      command: [\"{{forecourt}}\", backend, --port, \"{{port}}\", --boot-delay, {boot}]
      drain_timeout: 5s
      stop_grace: 1s
{extra}"
    )
}

/// Every child process of `fc` must be gone shortly after it exits on SIGTERM.
fn stop_and_check_no_orphans(mut fc: Forecourt) {
    let children = fc.process.children();
    assert!(!children.is_empty(), "forecourt had no child processes");
    fc.process.signal(libc::SIGTERM);
    let status = fc.process.wait_exit(Duration::from_secs(30));
    assert!(status.is_some(), "forecourt did not exit on SIGTERM");
    let orphans = wait_for(Duration::from_secs(5), || {
        let alive: Vec<u32> = children.iter().copied().filter(|&p| alive(p)).collect();
        alive.is_empty().then_some(())
    });
    assert!(orphans.is_some(), "child processes outlived forecourt");
}

#[test]
fn scale_from_zero_holds_the_first_request_until_an_instance_boots() {
    let policy = format!(
        "{HEADER}{}{}",
        launched(
            "cold",
            "1500ms",
            "    scaling: { min_replicas: 0, max_replicas: 2, capacity: { requests_per_second: 50 } }
    hold: { timeout: 15s }
"
        ),
        launched(
            "impatient",
            "10s",
            "    scaling: { min_replicas: 0, max_replicas: 1, capacity: { requests_per_second: 50 } }
    hold: { timeout: 300ms }
    retry_after: 3
"
        ),
    );
    let fc = Forecourt::start(&policy);
    assert!(fc.readiness("cold")["ready"].as_array().unwrap().is_empty());

    // The first request is held while an instance is started and boots, then answered.
    let asked = Instant::now();
    let first = get(fc.proxy, "/cold/healthz", &[]).unwrap();
    let waited = asked.elapsed();
    assert_eq!(first.status, 200, "{}", first.text());
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_millis(4500),
        "held {waited:?} for a 1.5 s boot"
    );
    assert_eq!(
        fc.metric("forecourt_held_requests_total{service=\"cold\"}"),
        1.0
    );
    let readiness = fc.readiness("cold");
    assert_eq!(readiness["ready"].as_array().unwrap().len(), 1);
    assert_eq!(readiness["scaling"]["ordered"], 1, "{readiness}");

    // A request whose deadline passes first gets 503 and Retry-After.
    let asked = Instant::now();
    let late = get(fc.proxy, "/impatient/healthz", &[]).unwrap();
    assert_eq!(late.status, 503);
    assert_eq!(late.header("retry-after"), Some("3"));
    assert!(asked.elapsed() >= Duration::from_millis(300));
    assert!(asked.elapsed() < Duration::from_secs(3));

    stop_and_check_no_orphans(fc);
}

/// Sends to `/{service}/healthz` at `rate(t)` requests per second for `length`; returns failures.
fn ramp(
    proxy: std::net::SocketAddr,
    service: &'static str,
    start: Instant,
    length: Duration,
    rate: fn(f64) -> f64,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut failed = 0;
        let mut next = 0.0f64;
        loop {
            let t = start.elapsed().as_secs_f64();
            if t >= length.as_secs_f64() {
                return failed;
            }
            if t < next {
                std::thread::sleep(Duration::from_secs_f64((next - t).min(0.05)));
                continue;
            }
            let path = format!("/{service}/healthz");
            if get(proxy, &path, &[]).map_or(true, |r| r.status != 200) {
                failed += 1;
            }
            next += 1.0 / rate(next);
        }
    })
}

#[test]
fn a_predicted_ramp_finds_instances_ready_where_a_reactive_policy_falls_behind() {
    // Same boot delay, capacity and limits; one forecasts, one only reacts to live load.
    let scaling = |predictive: bool| {
        format!(
            "    scaling:
      min_replicas: 1
      max_replicas: 10
      capacity: {{ requests_per_second: 10 }}
      target_utilization: 0.8
      predictive: {predictive}
      scale_down: {{ stabilization: 5m }}
"
        )
    };
    let policy = format!(
        "{HEADER}{}{}",
        launched("predictive", "2s", &scaling(true)),
        launched("reactive", "2s", &scaling(false)),
    );
    let fc = Forecourt::start(&policy);
    fc.wait_ready("predictive", 1);
    fc.wait_ready("reactive", 1);

    // 4 → 44 requests/s over 20 s, the same shape on both services.
    fn rate(t: f64) -> f64 {
        4.0 + 2.0 * t
    }
    let length = Duration::from_secs(20);
    let start = Instant::now();
    let senders = [
        ramp(fc.proxy, "predictive", start, length, rate),
        ramp(fc.proxy, "reactive", start, length, rate),
    ];
    // Every 250 ms: is the offered load above what the ready instances can take?
    let mut short = [0u32; 2];
    let mut samples = 0;
    while start.elapsed() < length {
        std::thread::sleep(Duration::from_millis(250));
        let offered = rate(start.elapsed().as_secs_f64());
        for (i, service) in ["predictive", "reactive"].into_iter().enumerate() {
            let ready = fc.readiness(service)["ready"].as_array().unwrap().len();
            if offered > ready as f64 * 10.0 {
                short[i] += 1;
            }
        }
        samples += 1;
    }
    let failed: u64 = senders.into_iter().map(|s| s.join().unwrap()).sum();
    assert_eq!(failed, 0, "requests failed during the ramp");
    println!(
        "samples short of capacity: predictive {}/{samples}, reactive {}/{samples}",
        short[0], short[1]
    );
    assert!(
        short[0] * 2 <= short[1],
        "the forecast did not get ahead of the ramp: predictive short {} vs reactive {} of {samples}",
        short[0],
        short[1]
    );
}

#[test]
fn reloads_under_load_lose_no_request_and_broken_files_change_nothing() {
    let backend = Backend::start();
    let service = |extra: &str| {
        format!(
            "{HEADER}  - name: shop
    routes: [{{ path_prefix: /shop }}]
    instances: [{{ address: \"{}\" }}]
{extra}",
            backend.addr()
        )
    };
    let fc = Forecourt::start_with_env(&service(""), &[("FORECOURT_ADMIN_TOKEN", "t0ken")]);
    fc.wait_ready("shop", 1);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let traffic: Vec<_> = (0..2)
        .map(|_| {
            let (stop, sent, failed, proxy) =
                (stop.clone(), sent.clone(), failed.clone(), fc.proxy);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let ok = get(proxy, "/shop/healthz", &[]).is_ok_and(|r| r.status == 200);
                    sent.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    // A valid change, picked up by the file watch: a second route.
    let generation = |fc: &Forecourt| fc.admin_json("/v1/config")["generation"].as_u64().unwrap();
    assert_eq!(generation(&fc), 1);
    let with_route = service("  - name: api\n    routes: [{ path_prefix: /api }]\n    instances: [{ address: \"127.0.0.1:1\" }]\n");
    fc.write_policy(&with_route);
    wait_for(WAIT, || (generation(&fc) == 2).then_some(()))
        .expect("the file watch never applied the change");
    assert_eq!(
        fc.admin_json("/v1/config")["services"],
        serde_json::json!(["shop", "api"])
    );

    // Broken files: each rejected with its line and reason; the running policy keeps serving.
    let broken = [
        (
            "services:\n  - name: shop\n    routes: [{ path_prefix: /shop }\n",
            "policy.yaml:",
        ),
        (
            &*service("    retries: 99\n"),
            "services[0].retries: retries 99 is more than 10",
        ),
        (&*service("    colour: blue\n"), "unknown field `colour`"),
        (
            &*service("    instances: [{ address: nowhere }]\n"),
            "duplicate field",
        ),
    ];
    for (text, reason) in broken {
        fc.write_policy(text);
        let answer = fc.admin_send("POST", "/v1/reload", Some("t0ken"), "");
        assert_eq!(answer.status, 422, "{}", answer.text());
        let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        let problems = body["problems"].to_string();
        assert!(problems.contains(reason), "{reason:?} not in {problems}");
        assert!(
            problems.contains("policy.yaml:"),
            "no file and line in {problems}"
        );
        let config = fc.admin_json("/v1/config");
        assert_eq!(config["generation"], 2, "a broken file changed the policy");
        assert!(config["last_rejection"]["problems"].is_array());
    }
    assert!(fc.metric("forecourt_config_reloads_total{result=\"rejected\"}") >= 4.0);
    assert_eq!(fc.metric("forecourt_config_last_reload_rejected"), 1.0);
    // Without the token, no reload.
    assert_eq!(fc.admin_send("POST", "/v1/reload", None, "").status, 401);

    // Back to a valid file: applied through the API.
    fc.write_policy(&service(""));
    let answer = fc.admin_send("POST", "/v1/reload", Some("t0ken"), "");
    assert_eq!(answer.status, 200, "{}", answer.text());
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for t in traffic {
        t.join().unwrap();
    }
    assert!(
        sent.load(Ordering::Relaxed) > 50,
        "too little traffic to mean anything"
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "a request failed during reloads"
    );
    assert_eq!(fc.metric("forecourt_config_last_reload_rejected"), 0.0);
}

#[test]
fn scaling_down_drains_in_flight_requests_and_leaves_no_child_behind() {
    let pinned = |n: u32| {
        format!(
            "{HEADER}{}",
            launched(
                "busy",
                "0s",
                &format!("    scaling: {{ min_replicas: {n}, max_replicas: {n}, capacity: {{ requests_per_second: 100 }} }}\n"),
            )
        )
    };
    let fc = Forecourt::start_with_env(&pinned(3), &[("FORECOURT_ADMIN_TOKEN", "t0ken")]);
    fc.wait_ready("busy", 3);

    // Slow requests spread over the three instances while two of them are taken away.
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes: Vec<_> = (0..6)
        .map(|_| {
            let (stop, proxy) = (stop.clone(), fc.proxy);
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0u32, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match get(proxy, "/busy/sleep/600", &[]) {
                        Ok(r) if r.status == 200 => ok += 1,
                        Ok(r) => failed.push(format!("{} {}", r.status, r.text())),
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    fc.write_policy(&pinned(1));
    assert_eq!(
        fc.admin_send("POST", "/v1/reload", Some("t0ken"), "")
            .status,
        200
    );
    wait_for(WAIT, || {
        let r = fc.readiness("busy");
        let ready = r["ready"].as_array().map_or(0, Vec::len);
        let not_ready = r["not_ready"].as_array().map_or(0, Vec::len);
        (ready == 1 && not_ready == 0).then_some(())
    })
    .unwrap_or_else(|| panic!("never scaled down to 1: {}", fc.readiness("busy")));
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, Ordering::Relaxed);
    let mut ok = 0;
    for t in outcomes {
        let (n, failed) = t.join().unwrap();
        assert!(
            failed.is_empty(),
            "requests failed while draining: {failed:?}"
        );
        ok += n;
    }
    assert!(ok >= 6, "too few requests finished: {ok}");
    assert_eq!(
        fc.process.children().len(),
        1,
        "stopped instances still run"
    );

    stop_and_check_no_orphans(fc);
}
