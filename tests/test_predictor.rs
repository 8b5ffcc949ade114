//! End to end: every request is recorded in the predictor, the control loop forecasts, and the
//! admin API shows rates, forecasts, model errors and scheduled events.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use forecourt_test_utils::*;

fn policy(backend: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "listeners: {{ proxy: \"{{proxy}}\", admin: \"{{admin}}\" }}
defaults:
  health_check: {{ interval: 100ms, timeout: 100ms, healthy_threshold: 1 }}
services:
  - name: shop
    routes: [{{ path_prefix: /shop }}]
    instances: [{{ address: \"{backend}\" }}]
  - name: quiet
    routes: [{{ path_prefix: /quiet }}]
    instances: [{{ address: \"{backend}\" }}]
{extra}"
    )
}

/// Sends requests to `/shop` at roughly `rps` until `stop` is set.
fn traffic(
    proxy: std::net::SocketAddr,
    rps: u64,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut sent = 0;
        let pause = Duration::from_millis(1_000 / rps);
        while !stop.load(Ordering::Relaxed) && sent < 2_000 {
            let tenant = if sent % 3 == 0 { "acme" } else { "globex" };
            let r = get(proxy, "/shop/healthz", &[("x-tenant-id", tenant)]).unwrap();
            assert_eq!(r.status, 200);
            sent += 1;
            std::thread::sleep(pause);
        }
        sent
    })
}

#[test]
fn every_request_is_recorded_and_forecasts_reach_the_admin_api() {
    let backend = Backend::start();
    let fc = Forecourt::start(&policy(backend.addr(), ""));
    fc.wait_ready("shop", 1);
    let stop = Arc::new(AtomicBool::new(false));
    let sender = traffic(fc.proxy, 50, stop.clone());

    // The control loop ticks once a second: the rate shows up within a few ticks.
    let forecasts = wait_for(Duration::from_secs(10), || {
        let f = fc.admin_json("/v1/forecasts");
        let rate = f["services"][0]["rate"]["stable"].as_f64()?;
        (rate > 1.0).then_some(f)
    })
    .expect("shop's rate never reached the forecast board");
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap();
    assert!(sent > 0);

    let shop = &forecasts["services"][0];
    assert_eq!(shop["service"], "shop");
    let horizons: Vec<u64> = shop["forecasts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["horizon_seconds"].as_u64().unwrap())
        .collect();
    assert_eq!(horizons, [5, 10, 30, 60]);
    for h in shop["forecasts"].as_array().unwrap() {
        assert!(h["upper"].as_f64().unwrap() >= h["point"].as_f64().unwrap());
        let models: Vec<&str> = h["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["model"].as_str().unwrap())
            .collect();
        assert!(
            models.contains(&"last_value") && models.contains(&"holt"),
            "{models:?}"
        );
    }
    assert_eq!(
        forecasts["services"][1]["rate"]["stable"], 0.0,
        "quiet got no traffic"
    );

    // Routing services see the outlook in the readiness answer.
    let readiness = fc.readiness("shop");
    assert!(
        readiness["load"]["rate"].as_f64().unwrap() > 0.0,
        "{readiness}"
    );
    assert_eq!(readiness["load"]["forecast"].as_array().unwrap().len(), 4);

    // And every request has finished: nothing is left in flight in the predictor.
    let settled = wait_for(Duration::from_secs(5), || {
        let f = fc.admin_json("/v1/forecasts");
        (f["services"][0]["in_flight"] == 0).then_some(())
    });
    assert!(settled.is_some(), "requests stayed in flight");

    let metrics = get(fc.admin, "/metrics", &[]).unwrap().text();
    for needle in [
        "forecourt_arrival_rate{service=\"shop\",window=\"stable\"}",
        "forecourt_forecast_requests_per_second{service=\"shop\",horizon=\"5s\",bound=\"upper\"}",
        "forecourt_forecast_model_weight{service=\"shop\",horizon=\"60s\",model=\"holt\"}",
        "forecourt_panic_mode{service=\"quiet\"} 0",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from /metrics");
    }
}

#[test]
fn scheduled_events_come_from_the_policy_and_from_token_holders() {
    let backend = Backend::start();
    let events = "admin: { public_reads: true }
forecast:
  events:
    - name: launch
      service: shop
      start: 2999-01-01T12:00:00Z
      duration: 10m
      multiply: 5
";
    let fc = Forecourt::start_with_env(
        &policy(backend.addr(), events),
        &[("FORECOURT_ADMIN_TOKEN", "s3cret")],
    );
    let event =
        r#"{"name":"batch","service":"quiet","starts_in":"5s","duration":"1m","add_rate":40}"#;
    assert_eq!(fc.admin_send("POST", "/v1/events", None, event).status, 401);
    assert_eq!(
        fc.admin_send("POST", "/v1/events", Some("s3cre"), event)
            .status,
        401
    );
    let bad = fc.admin_send("POST", "/v1/events", Some("s3cret"), "{\"name\":");
    assert_eq!(bad.status, 400, "{}", bad.text());
    let unknown = fc.admin_send(
        "POST",
        "/v1/events",
        Some("s3cret"),
        &event.replace("quiet", "nope"),
    );
    assert_eq!(unknown.status, 422);
    assert!(
        unknown.text().contains("no service is named"),
        "{}",
        unknown.text()
    );
    let posted = fc.admin_send("POST", "/v1/events", Some("s3cret"), event);
    assert_eq!(posted.status, 201, "{}", posted.text());

    // The next tick lists both, and the posted one lifts quiet's forecast 10 s ahead.
    let board = wait_for(Duration::from_secs(10), || {
        let f = fc.admin_json("/v1/forecasts");
        let quiet_10s = f["services"][1]["forecasts"][1]["point"].as_f64()?;
        (f["events"].as_array()?.len() == 2 && quiet_10s >= 40.0).then_some(f)
    })
    .expect("the posted event never reached the forecast");
    let sources: Vec<(&str, &str)> = board["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["source"].as_str().unwrap()))
        .collect();
    assert_eq!(sources, [("batch", "api"), ("launch", "policy")]);
    assert_eq!(
        fc.admin_send("DELETE", "/v1/events/batch", Some("s3cret"), "")
            .status,
        200
    );
    assert_eq!(
        fc.admin_send("DELETE", "/v1/events/batch", Some("s3cret"), "")
            .status,
        404
    );

    // Without a configured token, admin writes are refused outright.
    let open = Forecourt::start(&policy(backend.addr(), ""));
    let refused = open.admin_send("POST", "/v1/events", Some("anything"), event);
    assert_eq!(refused.status, 403);
}
