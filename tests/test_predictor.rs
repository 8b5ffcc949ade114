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

/// The entry of `name` in a `/v1/forecasts` answer (services are sorted by name).
fn service<'a>(forecasts: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    forecasts["services"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["service"] == name))
        .unwrap_or(&serde_json::Value::Null)
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
    // Every model's series in /metrics too, not only the ensemble's.
    let fc = Forecourt::start(&policy(
        backend.addr(),
        "metrics: { forecast_detail: all }\n",
    ));
    fc.wait_ready("shop", 1);
    let stop = Arc::new(AtomicBool::new(false));
    let sender = traffic(fc.proxy, 50, stop.clone());

    // The control loop ticks once a second: the rate shows up within a few ticks.
    let forecasts = wait_for(Duration::from_secs(10), || {
        let f = fc.admin_json("/v1/forecasts");
        let shop = service(&f, "shop");
        let rate = shop["rate"]["stable"].as_f64()?;
        // The models come with the first closed second that had an arrival, maybe a tick after
        // the rate shows.
        let modelled = shop["forecasts"][0]["models"]
            .as_array()
            .is_some_and(|m| !m.is_empty());
        (rate > 1.0 && modelled).then_some(f)
    })
    .expect("shop's rate never reached the forecast board");
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap();
    assert!(sent > 0);

    let shop = service(&forecasts, "shop");
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
        service(&forecasts, "quiet")["rate"]["stable"],
        0.0,
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
        (service(&f, "shop")["in_flight"] == 0).then_some(())
    });
    assert!(settled.is_some(), "requests stayed in flight");

    let metrics = get(fc.admin, "/metrics", &[]).unwrap().text();
    for needle in [
        "forecourt_arrival_rate{service=\"shop\",window=\"stable\"}",
        "forecourt_forecast_requests_per_second{service=\"shop\",horizon=\"5s\",bound=\"upper\"}",
        "forecourt_forecast_model_weight{service=\"shop\",horizon=\"60s\",model=\"holt\"}",
        "forecourt_panic_mode{service=\"quiet\"} 0",
        "forecourt_services{state=\"active\"} 1",
        "forecourt_services{state=\"idle\"} 1",
        "forecourt_metrics_detailed_services 2",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from /metrics");
    }
}

#[test]
fn forecasts_answer_one_service_or_a_page_by_name() {
    let backend = Backend::start();
    let fc = Forecourt::start(&policy(backend.addr(), ""));
    let all = wait_for(Duration::from_secs(10), || {
        let f = fc.admin_json("/v1/forecasts");
        (f["total"] == 2).then_some(f)
    })
    .expect("the forecast board never listed both services");
    assert!(all["next_offset"].is_null(), "{all}");
    let names: Vec<&str> = all["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["quiet", "shop"], "sorted by name");

    let first = fc.admin_json("/v1/forecasts?limit=1");
    assert_eq!(first["services"][0]["service"], "quiet");
    assert_eq!(
        (first["total"].as_u64(), first["next_offset"].as_u64()),
        (Some(2), Some(1))
    );
    let second = fc.admin_json("/v1/forecasts?limit=1&offset=1");
    assert_eq!(second["services"][0]["service"], "shop");
    assert!(second["next_offset"].is_null());

    let shop = fc.admin_json("/v1/forecasts?service=shop");
    assert_eq!(shop["total"], 1);
    assert_eq!(shop["services"][0]["service"], "shop");
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        keys(&shop["services"][0]),
        keys(&all["services"][1]),
        "the same fields as in the list"
    );

    let unknown = get(fc.admin, "/v1/forecasts?service=nope", &[]).unwrap();
    assert_eq!(unknown.status, 404);
    assert!(
        unknown.text().contains("no service is named"),
        "{}",
        unknown.text()
    );
    for (bad, reason) in [
        (
            "limit=0",
            "limit \\\"0\\\" must be a whole number from 1 to 1000",
        ),
        ("limit=abc", "must be a whole number"),
        ("offset=-1", "offset"),
        ("colour=red", "unknown query parameter"),
    ] {
        let refused = get(fc.admin, &format!("/v1/forecasts?{bad}"), &[]).unwrap();
        assert_eq!(refused.status, 400, "{bad}");
        assert!(refused.text().contains(reason), "{bad}: {}", refused.text());
    }
    assert_eq!(
        get(fc.admin, "/healthz", &[]).unwrap().status,
        200,
        "still up"
    );
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
        let quiet_10s = service(&f, "quiet")["forecasts"][1]["point"].as_f64()?;
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
