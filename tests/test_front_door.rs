//! End to end: the real `forecourt` binary in front of real sample backends on 127.0.0.1.

#![allow(clippy::unwrap_used)]

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use forecourt_test_utils::*;

fn policy(services: &str) -> String {
    format!(
        "listeners: {{ proxy: \"{{proxy}}\", admin: \"{{admin}}\" }}
defaults:
  health_check: {{ interval: 100ms, timeout: 100ms, healthy_threshold: 2, unhealthy_threshold: 2 }}
services:
{services}"
    )
}

fn instance_of(r: &Response) -> u16 {
    r.header("x-instance")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn routes_by_host_path_and_header_and_404s_the_rest() {
    let (a, b, c) = (Backend::start(), Backend::start(), Backend::start());
    let fc = Forecourt::start(&policy(&format!(
        "  - name: by-host
    routes: [{{ host: shop.example }}]
    instances: [{{ address: \"{}\" }}]
  - name: by-path
    routes: [{{ path_prefix: /api }}]
    instances: [{{ address: \"{}\" }}]
  - name: by-header
    routes: [{{ header: {{ name: x-service, value: beta }} }}]
    instances: [{{ address: \"{}\" }}]
",
        a.addr(),
        b.addr(),
        c.addr()
    )));
    for s in ["by-host", "by-path", "by-header"] {
        fc.wait_ready(s, 1);
    }
    let raw = |host: &str, path: &str, extra: &str| {
        send_raw(
            fc.proxy,
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap()
    };
    assert_eq!(
        instance_of(&raw("Shop.Example:8080", "/api/x", "")),
        a.port,
        "host beats path"
    );
    assert_eq!(instance_of(&raw("other", "/api/x?y=1", "")), b.port);
    assert_eq!(
        instance_of(&raw("shop.example", "/", "x-service: beta\r\n")),
        c.port,
        "header beats host"
    );
    let miss = raw("other", "/apix", "");
    assert_eq!(miss.status, 404);
    assert_eq!(miss.header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&miss.body).unwrap();
    assert!(body["error"].as_str().unwrap().contains("no route"));

    // Forwarding headers reach the instance.
    let echo: serde_json::Value =
        serde_json::from_slice(&raw("other", "/api/echo", "").body).unwrap();
    assert_eq!(echo["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(echo["headers"]["x-forwarded-proto"], "http");
    assert_eq!(echo["headers"]["x-forwarded-host"], "other");
}

#[test]
fn an_instance_gets_traffic_only_after_its_health_check_passes() {
    let port = free_port();
    let slow = Backend::spawn(port, Duration::from_millis(1500));
    let fc = Forecourt::start(&policy(&format!(
        "  - name: slow
    routes: [{{ path_prefix: / }}]
    instances: [{{ address: \"127.0.0.1:{port}\" }}]
    retry_after: 2
    hold: {{ timeout: 200ms }}
"
    )));
    // Held for the hold timeout, then 503 with Retry-After.
    let asked = Instant::now();
    let before = get(fc.proxy, "/", &[]).unwrap();
    assert_eq!(before.status, 503, "{}", before.text());
    assert!(asked.elapsed() >= Duration::from_millis(200));
    assert_eq!(before.header("retry-after"), Some("2"));
    let readiness = fc.readiness("slow");
    assert_eq!(readiness["ready"].as_array().unwrap().len(), 0);
    let reason = readiness["not_ready"][0]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains("health check failing") || reason.contains("not probed"),
        "{reason}"
    );

    slow.wait_listening();
    let listening = Instant::now();
    fc.wait_ready("slow", 1);
    // Two successes 100 ms apart: confirmed within a few intervals of listening, not before.
    assert!(
        listening.elapsed() < Duration::from_secs(2),
        "{:?}",
        listening.elapsed()
    );
    let after = get(fc.proxy, "/", &[]).unwrap();
    assert_eq!(after.status, 200);
    assert_eq!(instance_of(&after), port);
}

#[test]
fn a_killed_instance_is_removed_quickly_and_no_request_fails() {
    let backends = [Backend::start(), Backend::start(), Backend::start()];
    let instances: String = backends
        .iter()
        .map(|b| format!("      - address: \"{}\"\n", b.addr()))
        .collect();
    let fc = Forecourt::start(&policy(&format!(
        "  - name: web
    routes: [{{ path_prefix: / }}]
    instances:
{instances}"
    )));
    fc.wait_ready("web", 3);

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed, proxy) = (stop.clone(), ok.clone(), failed.clone(), fc.proxy);
            std::thread::spawn(move || {
                // Bounded: at most 2000 requests per thread.
                for _ in 0..2000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match get(proxy, "/", &[]) {
                        Ok(r) if r.status == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => failed.lock().unwrap().push(format!("{other:?}")),
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut backends = backends;
    let victim = backends[0].port;
    backends[0].process.kill();
    let killed = Instant::now();
    let gone = wait_for(Duration::from_secs(5), || {
        let r = fc.readiness("web");
        let ready: Vec<String> = r["ready"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["address"].as_str().unwrap().to_owned())
            .collect();
        (!ready.contains(&format!("127.0.0.1:{victim}"))).then(|| killed.elapsed())
    })
    .expect("killed instance still listed as ready");
    // Two health intervals (2 × 100 ms) plus a probe timeout and polling slack.
    assert!(gone < Duration::from_millis(600), "removed after {gone:?}");
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    let failed = failed.lock().unwrap();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(
        ok.load(Ordering::Relaxed) > 100,
        "too little load: {}",
        ok.load(Ordering::Relaxed)
    );
    let r = fc.readiness("web");
    assert_eq!(r["ready"].as_array().unwrap().len(), 2);
    assert!(r["not_ready"][0]["reason"].as_str().is_some());
}

/// Streams `total` bytes of request body without holding them in memory.
fn upload(proxy: SocketAddr, total: u64) -> Response {
    let mut stream = TcpStream::connect(proxy).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let chunk = vec![b'u'; 256 * 1024];
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        stream.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    read_response(&mut BufReader::new(stream)).unwrap()
}

#[test]
fn large_uploads_and_downloads_stream_with_bounded_memory() {
    let backend = Backend::start();
    let fc = Forecourt::start(&policy(&format!(
        "  - name: files
    routes: [{{ path_prefix: / }}]
    instances: [{{ address: \"{}\" }}]
",
        backend.addr()
    )));
    fc.wait_ready("files", 1);
    let before = fc.process.peak_rss_kib().unwrap();
    const SIZE: u64 = 256 * 1024 * 1024;

    let up = upload(fc.proxy, SIZE);
    assert_eq!(up.status, 200);
    assert_eq!(up.text().trim(), SIZE.to_string());

    let mut stream = TcpStream::connect(fc.proxy).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "GET /bytes/{SIZE} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        let mut byte = [0u8; 1];
        reader.read_exact(&mut byte).unwrap();
        head.push(byte[0] as char);
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut received = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        received += n as u64;
    }
    assert_eq!(received, SIZE);

    let after = fc.process.peak_rss_kib().unwrap();
    // 512 MiB went through; the proxy's peak memory grew by far less than one body.
    assert!(
        after - before < 64 * 1024,
        "peak RSS grew from {before} KiB to {after} KiB"
    );
}

/// A one-thread raw backend that records every request line it receives.
fn recording_backend() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(10_000) {
            let Ok(stream) = stream else { continue };
            let log = log.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while std::io::BufRead::read_line(&mut reader, &mut line).unwrap_or(0) > 0 {
                    let request_line = line.trim_end().to_owned();
                    loop {
                        line.clear();
                        if std::io::BufRead::read_line(&mut reader, &mut line).unwrap_or(0) == 0
                            || line == "\r\n"
                        {
                            break;
                        }
                    }
                    log.lock().unwrap().push(request_line);
                    let mut s = &stream;
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
                    line.clear();
                }
            });
        }
    });
    (addr, seen)
}

#[test]
fn malformed_requests_get_4xx_and_never_reach_an_instance() {
    let (addr, seen) = recording_backend();
    let fc = Forecourt::start(&policy(&format!(
        "  - name: guarded
    routes: [{{ path_prefix: / }}]
    instances: [{{ address: \"{addr}\" }}]
"
    )));
    fc.wait_ready("guarded", 1);
    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9_000));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("bad request line", b"GARBAGE\r\n\r\n".to_vec()),
        ("bad version", b"GET / HTTP/9.9\r\nHost: a\r\n\r\n".to_vec()),
        (
            "conflicting content-length",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde".to_vec(),
        ),
        (
            "content-length with transfer-encoding",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
        ),
        (
            "obfuscated transfer-encoding",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n".to_vec(),
        ),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n".to_vec()),
        ("header too large", big_header.into_bytes()),
        ("target too long", long_uri.into_bytes()),
    ];
    seen.lock().unwrap().retain(|l| l.contains("/healthz"));
    for (name, bytes) in &cases {
        let r = send_raw(fc.proxy, bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!((400..500).contains(&r.status), "{name}: got {}", r.status);
    }
    let forwarded: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|l| !l.contains("/healthz"))
        .cloned()
        .collect();
    assert!(forwarded.is_empty(), "reached the instance: {forwarded:?}");
    // The proxy still serves normal requests afterwards.
    assert_eq!(get(fc.proxy, "/fine", &[]).unwrap().status, 200);
}

#[test]
fn websocket_upgrade_passes_through() {
    let backend = Backend::start();
    let fc = Forecourt::start(&policy(&format!(
        "  - name: ws
    routes: [{{ path_prefix: / }}]
    instances: [{{ address: \"{}\" }}]
",
        backend.addr()
    )));
    fc.wait_ready("ws", 1);
    let mut stream = TcpStream::connect(fc.proxy).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(
            b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let response = read_response(&mut reader).unwrap();
    assert_eq!(response.status, 101);
    stream
        .write_all(b"ping over the upgraded connection")
        .unwrap();
    let mut echoed = vec![0u8; 33];
    reader.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"ping over the upgraded connection");
}

#[test]
fn check_names_file_line_and_reason_for_broken_policies() {
    let dir = scratch_dir("check");
    let cases = [
        (
            "syntax.yaml",
            "services:\n  - name: a\n   routes: [\n",
            ":3:",
            "did not find expected",
        ),
        (
            "unknown.yaml",
            "services:\n  - name: a\n    rutes: []\n",
            ":3:",
            "unknown field `rutes`",
        ),
        (
            "duration.yaml",
            "defaults:\n  health_check: { interval: soon }\n",
            ":2:",
            "invalid duration",
        ),
        (
            "address.yaml",
            "services:\n  - name: a\n    instances:\n      - address: localhost\n",
            ":4:",
            "not an ip:port",
        ),
        (
            "duplicate.yaml",
            "services:\n  - name: a\n  - name: a\n",
            ":3:",
            "duplicate service name",
        ),
    ];
    for (file, text, line, reason) in cases {
        let path = dir.join(file);
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(forecourt_bin())
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{file}: {stderr}");
        assert!(
            stderr.contains(&format!("{}{line}", path.display())),
            "{file}: {stderr}"
        );
        assert!(stderr.contains(reason), "{file}: {stderr}");
    }
    let good = std::process::Command::new(forecourt_bin())
        .args(["check", "-c"])
        .arg(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/forecourt.yaml"),
        )
        .output()
        .unwrap();
    assert!(good.status.success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn admin_readiness_json_and_metrics_text_parse() {
    let backend = Backend::start();
    let fc = Forecourt::start(&policy(&format!(
        "  - name: shop
    routes: [{{ path_prefix: /shop }}]
    instances: [{{ address: \"{}\" }}, {{ address: \"127.0.0.1:{}\" }}]
",
        backend.addr(),
        free_port()
    )));
    fc.wait_ready("shop", 1);
    for _ in 0..5 {
        assert_eq!(
            get(fc.proxy, "/shop", &[("x-tenant-id", "acme")])
                .unwrap()
                .status,
            200
        );
    }
    let readiness = fc.readiness("shop");
    let ready = &readiness["ready"][0];
    assert_eq!(ready["address"], backend.addr().to_string());
    assert_eq!(ready["version"], "stable");
    assert!(ready["in_flight"].is_u64());
    assert!(ready["latency_ewma_ms"].as_f64().unwrap() > 0.0);
    assert!(readiness["not_ready"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("connect"));
    let services: serde_json::Value =
        serde_json::from_slice(&get(fc.admin, "/v1/services", &[]).unwrap().body).unwrap();
    assert_eq!(services["services"][0]["name"], "shop");
    assert_eq!(
        get(fc.admin, "/v1/services/nope/readiness", &[])
            .unwrap()
            .status,
        404
    );

    let metrics = get(fc.admin, "/metrics", &[]).unwrap();
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    assert!(
        text.contains(
            "forecourt_requests_total{service=\"shop\",code=\"200\",tenant_class=\"standard\"} 5"
        ),
        "{text}"
    );
    // Every sample line is `name{labels} value`.
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (_, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
    }
    // And a real Prometheus parser accepts it (promtool is installed by .ci/run).
    check_with_promtool(&text);
}

/// A keep-alive connection between requests holds only its socket in Forecourt (the
/// `keepalive` module reads a request's first bytes itself): requests whose header arrives in
/// pieces, several requests on one connection, and idle connections closed at shutdown.
#[test]
fn keep_alive_connections_serve_split_headers_and_close_at_shutdown() {
    let backend = Backend::start();
    let mut fc = Forecourt::start(&policy(&format!(
        "  - name: web
    routes: [{{ path_prefix: / }}]
    instances: [{{ address: \"{}\" }}]
",
        backend.addr()
    )));
    fc.wait_ready("web", 1);
    let mut stream = TcpStream::connect(fc.proxy).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    for round in 0..3 {
        // The first bytes alone, then the rest of the header after a pause.
        stream.write_all(b"GET /piece").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        stream
            .write_all(format!("s/{round}/echo HTTP/1.1\r\nHost: x\r\n").as_bytes())
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        stream.write_all(b"X-Round: yes\r\n\r\n").unwrap();
        let response = read_response(&mut reader).unwrap();
        assert_eq!(response.status, 200, "round {round}");
        assert!(
            String::from_utf8_lossy(&response.body).contains(&format!("/pieces/{round}/echo")),
            "round {round}: {:?}",
            String::from_utf8_lossy(&response.body)
        );
    }
    // A header longer than the first read (4 KiB) is read on into the same request.
    let long = "v".repeat(6000);
    stream
        .write_all(format!("GET /long HTTP/1.1\r\nHost: x\r\nX-Long: {long}\r\n\r\n").as_bytes())
        .unwrap();
    assert_eq!(read_response(&mut reader).unwrap().status, 200);

    // Idle connections are closed when Forecourt shuts down, and it exits promptly.
    let idle: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(fc.proxy).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            assert_eq!(read_response(&mut r).unwrap().status, 200);
            s
        })
        .collect();
    fc.process.signal(libc::SIGTERM);
    for mut s in idle.into_iter().chain([stream]) {
        let mut buf = [0u8; 1];
        // EOF (Ok(0)) or a reset: closed either way, not a timeout.
        match s.read(&mut buf) {
            Ok(n) => assert_eq!(n, 0),
            Err(e) => assert_ne!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}"),
        }
    }
    assert!(fc.process.wait_exit(Duration::from_secs(15)).is_some());
}
