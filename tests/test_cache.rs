//! End to end: the response cache and warming, with the real `forecourt` binary in front of real
//! sample backends on 127.0.0.1 (the backend sets `Cache-Control`, `Vary`, `Set-Cookie` and `ETag`
//! from query parameters, and counts what it served at `/stats`).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use forecourt_test_utils::*;

const HEADER: &str = "listeners: { proxy: \"{proxy}\", admin: \"{admin}\" }
defaults:
  health_check: { interval: 200ms, timeout: 200ms, healthy_threshold: 1, unhealthy_threshold: 2 }
services:
";

fn cached_service(backend: &Backend, cache: &str) -> String {
    format!(
        "{HEADER}  - name: web
    routes: [{{ path_prefix: / }}]
    instances: [{{ address: \"{}\" }}]
    cache: {cache}
",
        backend.addr()
    )
}

/// What the backend at `addr` served: `/stats` as JSON.
fn stats(addr: std::net::SocketAddr) -> serde_json::Value {
    serde_json::from_slice(&get(addr, "/stats", &[]).unwrap().body).unwrap()
}

fn served(addr: std::net::SocketAddr, path: &str) -> u64 {
    stats(addr)["by_path"][path].as_u64().unwrap_or(0)
}

/// Sends raw bytes and reads until the server closes: the whole exchange as text.
fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

fn x_cache(r: &Response) -> &str {
    r.header("x-cache").unwrap_or("-")
}

#[test]
fn cache_control_tenants_vary_and_revalidation_through_the_proxy() {
    let backend = Backend::start();
    let fc = Forecourt::start(&cached_service(&backend, "{ ttl: 30s }"));
    fc.wait_ready("web", 1);
    let p = fc.proxy;

    // A plain answer: stored with the default ttl, then served from the cache with an Age.
    let first = get(p, "/a?x=1", &[]).unwrap();
    assert_eq!((first.status, x_cache(&first)), (200, "MISS"));
    let second = get(p, "/a?x=1", &[]).unwrap();
    assert_eq!((second.status, x_cache(&second)), (200, "HIT"));
    assert_eq!(second.body, first.body);
    assert!(second.header("age").is_some());
    assert_eq!(served(backend.addr(), "/a?x=1"), 1);
    // Another query is another key.
    assert_eq!(x_cache(&get(p, "/a?x=2", &[]).unwrap()), "MISS");
    // HEAD is answered from the GET's entry (same Host), without a body.
    let head = raw_exchange(
        p,
        format!("HEAD /a?x=1 HTTP/1.1\r\nHost: {p}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("x-cache: hit"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "no body after a HEAD: {head:?}");

    // no-store, private and Set-Cookie are never stored.
    for path in [
        "/b?cache-control=no-store",
        "/b?cache-control=private",
        "/b?set-cookie=session%3D1",
    ] {
        for _ in 0..2 {
            assert_eq!(x_cache(&get(p, path, &[]).unwrap()), "MISS", "{path}");
        }
        assert_eq!(served(backend.addr(), path), 2, "{path}");
    }
    // A request with no-cache is revalidated rather than served blindly (no validator: refetched).
    get(p, "/c", &[]).unwrap();
    get(p, "/c", &[("Cache-Control", "no-cache")]).unwrap();
    assert_eq!(served(backend.addr(), "/c"), 2);

    // Tenant isolation: one tenant's entry is never served to another.
    let t = |tenant: &str| get(p, "/t", &[("x-tenant-id", tenant)]).unwrap();
    assert_eq!(x_cache(&t("acme")), "MISS");
    assert_eq!(x_cache(&t("globex")), "MISS");
    assert_eq!(x_cache(&t("acme")), "HIT");
    assert_eq!(served(backend.addr(), "/t"), 2);

    // Vary: one entry per value of the named header.
    let v = |lang: &str| get(p, "/v?vary=accept-language", &[("Accept-Language", lang)]).unwrap();
    assert_eq!(x_cache(&v("en")), "MISS");
    assert_eq!(x_cache(&v("fr")), "MISS");
    assert_eq!(x_cache(&v("en")), "HIT");
    assert_eq!(x_cache(&v("fr")), "HIT");

    // Response no-cache with an ETag: stored, but revalidated (304 from the instance) each use.
    let path = "/e?cache-control=no-cache&etag=%22v1%22";
    assert_eq!(x_cache(&get(p, path, &[]).unwrap()), "MISS");
    let again = get(p, path, &[]).unwrap();
    assert_eq!((again.status, x_cache(&again)), (200, "REVALIDATED"));
    assert!(
        !again.body.is_empty(),
        "the cached body is served after a 304"
    );

    // Methods other than GET and HEAD pass through untouched.
    let post = send_raw(
        p,
        b"POST /a?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(post.unwrap().header("x-cache"), None);

    // The cache's counters are in /metrics.
    let metrics = get(fc.admin, "/metrics", &[]).unwrap().text();
    for needle in [
        "forecourt_cache_requests_total{service=\"web\",result=\"hit\"}",
        "forecourt_cache_requests_total{service=\"web\",result=\"revalidated\"} 1",
        "forecourt_cache_hit_ratio{service=\"web\"}",
        "forecourt_cache_bytes{service=\"web\"}",
    ] {
        assert!(metrics.contains(needle), "{needle} missing:\n{metrics}");
    }
    check_with_promtool(&metrics);
}

#[test]
fn a_hundred_concurrent_misses_make_one_upstream_request() {
    let backend = Backend::start();
    let fc = Forecourt::start(&cached_service(&backend, "{ ttl: 30s }"));
    fc.wait_ready("web", 1);
    let proxy = fc.proxy;
    // The backend takes 500 ms, so all 100 requests arrive while the first is being fetched.
    let answers: Vec<Response> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..100)
            .map(|_| scope.spawn(move || get(proxy, "/sleep/500", &[]).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(answers.iter().all(|r| r.status == 200));
    assert_eq!(
        served(backend.addr(), "/sleep/500"),
        1,
        "one upstream request"
    );
    let misses = answers.iter().filter(|r| x_cache(r) == "MISS").count();
    assert_eq!(misses, 1);
    let metrics = get(fc.admin, "/metrics", &[]).unwrap().text();
    assert!(
        metrics.contains("forecourt_cache_requests_total{service=\"web\",result=\"coalesced\"} 99"),
        "{metrics}"
    );
}

#[test]
fn objects_over_the_size_limit_stream_through_and_bytes_stay_bounded() {
    let backend = Backend::start();
    let fc = Forecourt::start(&cached_service(
        &backend,
        "{ ttl: 30s, max_bytes: 64KiB, max_object_bytes: 10KiB }",
    ));
    fc.wait_ready("web", 1);
    for _ in 0..2 {
        let big = get(fc.proxy, "/bytes/20000", &[]).unwrap();
        assert_eq!((big.body.len(), x_cache(&big)), (20_000, "MISS"));
    }
    // Twenty 5 KB objects overflow 64 KiB: the cache evicts by bytes.
    for i in 0..20 {
        let path = format!("/bytes/5000?n={i}");
        assert_eq!(x_cache(&get(fc.proxy, &path, &[]).unwrap()), "MISS");
    }
    assert_eq!(
        x_cache(&get(fc.proxy, "/bytes/5000?n=19", &[]).unwrap()),
        "HIT"
    );
    let metrics = get(fc.admin, "/metrics", &[]).unwrap().text();
    let bytes: f64 = metrics
        .lines()
        .find(|l| l.starts_with("forecourt_cache_bytes{service=\"web\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(bytes > 0.0 && bytes <= 64.0 * 1024.0, "cache bytes {bytes}");
    assert!(metrics.contains("forecourt_cache_too_large_total{service=\"web\"} 2"));
}

#[test]
fn a_new_instance_gets_its_warm_up_before_its_first_live_request() {
    let policy = format!(
        "{HEADER}  - name: shop
    routes: [{{ path_prefix: /shop }}]
    launch:
      command: [\"{{forecourt}}\", backend, --port, \"{{port}}\", --boot-delay, 300ms]
      stop_grace: 1s
    scaling: {{ min_replicas: 1, max_replicas: 1, capacity: {{ requests_per_second: 100 }} }}
    cache: {{ ttl: 30s }}
    warm: {{ urls: [/shop/catalog, /shop/home], hook: /shop/warmup, rate: 100 }}
"
    );
    let fc = Forecourt::start(&policy);
    fc.wait_ready("shop", 1);
    let live = get(fc.proxy, "/shop/item/7", &[]).unwrap();
    assert_eq!(live.status, 200);
    let address: std::net::SocketAddr = fc.readiness("shop")["ready"][0]["address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let stats = stats(address);
    let order: Vec<&str> = stats["order"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(
        order,
        [
            "POST /shop/warmup",
            "GET /shop/catalog",
            "GET /shop/home",
            "GET /shop/item/7"
        ],
        "warm-up first, then live traffic"
    );
    assert_eq!(stats["warm_requests"].as_u64(), Some(3));
    let metrics = get(fc.admin, "/metrics", &[]).unwrap().text();
    assert!(
        metrics.contains("forecourt_warm_ups_total{service=\"shop\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("forecourt_warm_requests_total{service=\"shop\",result=\"ok\"} 3"));
    check_with_promtool(&metrics);
}

/// Measurement for the closing note, not run in CI (`cargo test --test test_cache -- --ignored
/// --nocapture`): the first live requests on a newly added instance, with and without warming.
/// The sample backend is slow on its first 5 requests after boot (`--boot-cost 200ms`) and on
/// the first request of each path (`--cold-key-cost 100ms`). Traffic on 10 paths teaches the hot
/// keys on one instance; a reload asks for a second; then the first requests it serves are timed.
#[test]
#[ignore = "measurement: prints first-request latency on a new instance, warming on and off"]
fn measure_first_requests_on_a_new_instance_with_and_without_warming() {
    for warm in [false, true] {
        let service = |replicas: u32| {
            format!(
                "{HEADER}  - name: shop
    routes: [{{ path_prefix: /shop }}]
    launch:
      command: [\"{{forecourt}}\", backend, --port, \"{{port}}\", --boot-delay, 200ms, --boot-cost, 200ms, --boot-requests, \"5\", --cold-key-cost, 100ms]
      stop_grace: 1s
    scaling: {{ min_replicas: {replicas}, max_replicas: {replicas}, capacity: {{ requests_per_second: 1000 }}, predictive: false }}
{}",
                if warm { "    warm: { hot_keys: 10, rate: 200 }\n" } else { "" }
            )
        };
        let fc = Forecourt::start(&service(1));
        fc.wait_ready("shop", 1);
        let first = fc.readiness("shop")["ready"][0]["address"]
            .as_str()
            .unwrap()
            .to_owned();
        // Teach the hot keys: 10 paths, the lower ones more often.
        for round in 0..20 {
            for k in 0..10 {
                if round % (k + 1) == 0 {
                    get(fc.proxy, &format!("/shop/item/{k}"), &[]).unwrap();
                }
            }
        }
        fc.write_policy(&service(2));
        fc.wait_ready("shop", 2);
        // Four clients at once, so least-in-flight spreads them over both instances; keep the
        // latencies of the first 10 answers from the new one.
        let new_answers = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for client in 0..4 {
                let (proxy, first, new_answers) = (fc.proxy, &first, &new_answers);
                scope.spawn(move || {
                    for i in 0..100 {
                        if new_answers.lock().unwrap().len() >= 10 {
                            break;
                        }
                        let path = format!("/shop/item/{}", (i * 4 + client) % 10);
                        let started = std::time::Instant::now();
                        let r = get(proxy, &path, &[]).unwrap();
                        let took = started.elapsed().as_secs_f64() * 1000.0;
                        let port = r.header("x-instance").unwrap_or("").to_owned();
                        if !first.ends_with(&format!(":{port}")) {
                            new_answers.lock().unwrap().push(took);
                        }
                    }
                });
            }
        });
        let mut latencies = new_answers.into_inner().unwrap();
        latencies.truncate(10);
        let mean = latencies.iter().sum::<f64>() / latencies.len().max(1) as f64;
        println!(
            "warming {}: first {} requests on the new instance (ms): {:?}; mean {mean:.1} ms",
            if warm { "on " } else { "off" },
            latencies.len(),
            latencies
                .iter()
                .map(|l| (l * 10.0).round() / 10.0)
                .collect::<Vec<_>>()
        );
    }
}
