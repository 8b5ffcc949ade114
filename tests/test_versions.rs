//! End to end: versions pre-deployed for feature-flagged requests on the `local` backend. The
//! real `forecourt` binary launches real sample backends: a stable instance per service, and a
//! flagged version (with its own command and a boot delay) once its flag is seen, scaled back to
//! zero after its grace. All on 127.0.0.1, every wait bounded.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use forecourt_test_utils::*;

/// Two launched services with one stable instance each and a flagged version that boots in 1 s:
/// `shop` sends flagged requests to the stable instance until its version is ready, `cart` holds
/// them; they drop the version 2 s (`shop`) and 4 s (`cart`, deleted) after the flag's last
/// request.
const POLICY: &str = "listeners: { proxy: \"{proxy}\", admin: \"{admin}\" }
admin: { public_reads: true }
defaults:
  health_check: { interval: 100ms, timeout: 100ms, healthy_threshold: 1, unhealthy_threshold: 2 }
services:
  - name: shop
    routes: [{ path_prefix: /shop }]
    launch:
      command: [\"{forecourt}\", backend, --port, \"{port}\"]
      drain_timeout: 1s
      stop_grace: 1s
    scaling: { min_replicas: 1, max_replicas: 1, capacity: { requests_per_second: 1000 } }
    versions:
      - flag: beta
        command: [\"{forecourt}\", backend, --port, \"{port}\", --boot-delay, 1s]
        grace: 2s
  - name: cart
    routes: [{ path_prefix: /cart }]
    launch:
      command: [\"{forecourt}\", backend, --port, \"{port}\"]
      drain_timeout: 1s
      stop_grace: 1s
    scaling: { min_replicas: 1, max_replicas: 1, capacity: { requests_per_second: 1000 } }
    hold: { timeout: 15s }
    versions:
      - flag: beta
        version: preview
        command: [\"{forecourt}\", backend, --port, \"{port}\", --boot-delay, 1s]
        until_ready: hold
        grace: 4s
        when_idle: delete
";

const FLAG: (&str, &str) = ("x-feature-flag", "beta");

/// Ports of `service`'s instances of `version` in its readiness answer (`ready` only, or every
/// instance it lists).
fn ports(fc: &Forecourt, service: &str, version: &str, ready_only: bool) -> Vec<u16> {
    let readiness = fc.readiness(service);
    let lists: &[&str] = if ready_only {
        &["ready"]
    } else {
        &["ready", "not_ready"]
    };
    lists
        .iter()
        .flat_map(|list| readiness[*list].as_array().cloned().unwrap_or_default())
        .filter(|i| i["version"] == version)
        .map(|i| {
            let address: std::net::SocketAddr = i["address"].as_str().unwrap().parse().unwrap();
            address.port()
        })
        .collect()
}

/// Sends one request through Forecourt and returns the port of the instance that answered.
fn answered_by(fc: &Forecourt, path: &str, headers: &[(&str, &str)]) -> u16 {
    let response = get(fc.proxy, path, headers).unwrap();
    assert_eq!(response.status, 200, "{path}: {}", response.text());
    response.header("x-instance").unwrap().parse().unwrap()
}

fn metric(text: &str, line_prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {line_prefix} in the metrics"))
}

#[test]
fn flagged_requests_reach_their_version_once_ready_and_it_goes_after_the_grace() {
    let fc = Forecourt::start(POLICY);
    fc.wait_ready("shop", 1);
    fc.wait_ready("cart", 1);
    let shop_stable = ports(&fc, "shop", "stable", true)[0];
    let cart_stable = ports(&fc, "cart", "stable", true)[0];

    // cart (until_ready: hold): a flagged request waits while its version boots, then gets it.
    let proxy = fc.proxy;
    let held = std::thread::spawn(move || {
        let asked = Instant::now();
        let response = get(proxy, "/cart/", &[FLAG]).unwrap();
        (response, asked.elapsed())
    });

    // shop (until_ready: stable): flagged requests are answered at once by the stable instance
    // until the version is confirmed ready, then by the version.
    let asked = Instant::now();
    assert_eq!(answered_by(&fc, "/shop/", &[FLAG]), shop_stable);
    assert!(asked.elapsed() < Duration::from_millis(500), "not held");
    let mut before_ready = 1;
    let shop_beta = wait_for(WAIT, || {
        let port = answered_by(&fc, "/shop/", &[FLAG]);
        if port == shop_stable {
            before_ready += 1;
            return None;
        }
        Some(port)
    })
    .expect("the flagged version never answered");
    assert!(before_ready > 1, "the version needs its 1 s boot first");
    assert_eq!(ports(&fc, "shop", "beta", true), [shop_beta]);
    let shop = fc.readiness("shop");
    let beta = &shop["versions"][0];
    assert_eq!(
        (&beta["version"], &beta["flag"], &beta["until_ready"]),
        (&"beta".into(), &"beta".into(), &"stable".into()),
        "{shop}"
    );
    assert_eq!((&beta["ready"], &beta["active"]), (&1.into(), &true.into()));
    assert!(
        beta["flag_last_seen_ms_ago"].as_u64().unwrap() < 1_000,
        "{shop}"
    );
    assert!(fc.readiness("cart")["versions"][0]["until_ready"] == "hold");

    // Once ready, flagged requests reach only the version and unflagged ones never do; a flag
    // that names no version is unflagged.
    for _ in 0..10 {
        assert_eq!(answered_by(&fc, "/shop/", &[FLAG]), shop_beta);
        assert_eq!(answered_by(&fc, "/shop/", &[]), shop_stable);
        assert_eq!(
            answered_by(&fc, "/shop/", &[("x-feature-flag", "gamma")]),
            shop_stable
        );
    }
    let last_flagged = Instant::now();

    let (response, waited) = held.join().unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let cart_preview: u16 = response.header("x-instance").unwrap().parse().unwrap();
    assert_eq!(ports(&fc, "cart", "preview", true), [cart_preview]);
    assert_ne!(cart_preview, cart_stable);
    assert!(waited >= Duration::from_millis(900), "held {waited:?}");
    assert_eq!(answered_by(&fc, "/cart/", &[]), cart_stable);

    let text = get(fc.admin, "/metrics", &[]).unwrap().text();
    let requests = "forecourt_version_requests_total{service=";
    assert!(
        metric(
            &text,
            &format!("{requests}\"shop\",version=\"beta\",routed=\"stable\"}}")
        ) >= 2.0
    );
    assert!(
        metric(
            &text,
            &format!("{requests}\"shop\",version=\"beta\",routed=\"version\"}}")
        ) >= 11.0
    );
    assert_eq!(
        metric(
            &text,
            &format!("{requests}\"cart\",version=\"preview\",routed=\"held\"}}")
        ),
        1.0
    );
    let replicas = "forecourt_version_replicas{service=\"shop\",version=\"beta\",state=";
    assert_eq!(metric(&text, &format!("{replicas}\"ordered\"}}")), 1.0);
    assert_eq!(metric(&text, &format!("{replicas}\"ready\"}}")), 1.0);
    check_with_promtool(&text);

    // The flag's traffic stops: after the grace both versions are scaled to zero and their
    // instances leave the readiness answer; the stable instances stay.
    wait_for(Duration::from_secs(10), || {
        ports(&fc, "shop", "beta", false).is_empty().then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the version was never scaled to zero: {}",
            fc.readiness("shop")
        )
    });
    assert!(
        last_flagged.elapsed() >= Duration::from_millis(1_500),
        "gone {:?} after the last flagged request, before the 2 s grace",
        last_flagged.elapsed()
    );
    wait_for(Duration::from_secs(10), || {
        ports(&fc, "cart", "preview", false)
            .is_empty()
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the version was never deleted: {}", fc.readiness("cart")));
    let shop = fc.readiness("shop");
    assert_eq!(shop["versions"][0]["ordered"], 0, "{shop}");
    assert_eq!(shop["versions"][0]["active"], false, "{shop}");
    assert_eq!(ports(&fc, "shop", "stable", true), [shop_stable]);

    // Idle again, a flagged request goes to the stable instance while the version restarts.
    assert_eq!(answered_by(&fc, "/shop/", &[FLAG]), shop_stable);
}
