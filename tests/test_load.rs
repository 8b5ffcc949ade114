//! End to end: `forecourt load` replays a small trace against real servers on 127.0.0.1 —
//! through a real Forecourt to a sample backend, straight at a backend, at a port nobody
//! listens on, and at a recorder that notes when each request arrived.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use forecourt_test_utils::*;

/// Three seconds: 20 shop requests, then 40, then 10 api requests (70 in all).
const TRACE: &str = "t,service,count\n0,shop,20\n1,shop,40\n2,api,10\n";

/// Bound of every `forecourt load` run here.
const RUN_LIMIT: Duration = Duration::from_secs(15);

/// What one `forecourt load` run printed.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Run {
    fn json(&self) -> serde_json::Value {
        assert!(self.status.success(), "load failed: {}", self.stderr);
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("report is not JSON ({e}):\n{}", self.stdout))
    }
}

fn write_trace(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Runs `forecourt load --trace {trace} {args}`, output in files (no pipe to fill), bounded.
fn load(trace: &Path, args: &[&str]) -> Run {
    let dir = trace.parent().unwrap();
    let (out, err) = (dir.join("load.out"), dir.join("load.err"));
    let bin = forecourt_bin(); // built on first use: not part of the run's time
    let started = Instant::now();
    let child = Command::new(bin)
        .arg("load")
        .arg("--trace")
        .arg(trace)
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let mut process = Process { child };
    let status = process
        .wait_exit(RUN_LIMIT)
        .unwrap_or_else(|| panic!("forecourt load {args:?} still running after {RUN_LIMIT:?}"));
    Run {
        status,
        stdout: std::fs::read_to_string(out).unwrap(),
        stderr: std::fs::read_to_string(err).unwrap(),
        took: started.elapsed(),
    }
}

/// A sample backend behind a real Forecourt: `/shop` and `/api` both route to it.
fn front_door() -> (Backend, Forecourt) {
    let backend = Backend::start();
    let fc = Forecourt::start(&format!(
        "listeners: {{ proxy: \"{{proxy}}\", admin: \"{{admin}}\" }}
defaults:
  health_check: {{ interval: 100ms, timeout: 100ms, healthy_threshold: 2, unhealthy_threshold: 2 }}
services:
  - name: shop
    routes: [{{ path_prefix: /shop }}]
    instances: [{{ address: \"{0}\" }}]
  - name: api
    routes: [{{ path_prefix: /api }}]
    instances: [{{ address: \"{0}\" }}]
",
        backend.addr()
    ));
    fc.wait_ready("shop", 1);
    fc.wait_ready("api", 1);
    (backend, fc)
}

fn service<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == name)
        .unwrap_or_else(|| panic!("no {name} in {report:#}"))
}

/// Checks a report's totals and per-service counts: `(service, scheduled)`, all answered 2xx.
fn assert_all_ok(report: &serde_json::Value, expected: &[(&str, u64)]) {
    let total: u64 = expected.iter().map(|(_, n)| n).sum();
    for key in ["scheduled", "sent", "ok"] {
        assert_eq!(report["total"][key], total, "total {key}: {report:#}");
    }
    assert_eq!(report["total"]["failed"], 0, "{report:#}");
    assert_eq!(report["total"]["status"]["2xx"], total);
    assert_eq!(report["total"]["errors"], serde_json::json!({}));
    for (name, n) in expected {
        let s = service(report, name);
        for key in ["scheduled", "sent", "ok"] {
            assert_eq!(s[key], *n, "{name} {key}: {report:#}");
        }
        assert_eq!(s["status"]["2xx"], *n);
    }
}

#[test]
fn replays_the_trace_through_forecourt_in_real_time() {
    let (_backend, fc) = front_door();
    let dir = scratch_dir("load");
    let _cleanup = Cleanup(dir.clone());
    let trace = write_trace(&dir, "trace.csv", TRACE.as_bytes());
    let target = format!("http://{}", fc.proxy);
    let run = load(&trace, &["--target", &target, "--json"]);
    let report = run.json();
    assert_all_ok(&report, &[("shop", 60), ("api", 10)]);
    assert_eq!(report["stopped_by"], "end_of_trace");
    assert_eq!(report["total"]["planned"], 70);
    assert_eq!(report["window_s"], 3.0);
    assert_eq!(service(&report, "shop")["scheduled_rps"], 20.0);
    // Open loop at trace speed: the last request is due at 2.9 s.
    assert!(
        run.took > Duration::from_millis(2_800) && run.took < Duration::from_secs(6),
        "took {:?}",
        run.took
    );
    let latency = &report["total"]["latency_ms"];
    let (p50, max) = (
        latency["p50"].as_f64().unwrap(),
        latency["max"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p50 <= max && max < 1_000.0, "{latency}");
    assert_eq!(report["total"]["waited"], 0);
    // Progress once a second on stderr (a line each, as stderr is not a terminal).
    assert!(
        run.stderr.contains("load ") && run.stderr.contains("scheduled 20"),
        "{}",
        run.stderr
    );
}

#[test]
fn scale_half_halves_the_counts() {
    let (_backend, fc) = front_door();
    let dir = scratch_dir("load");
    let _cleanup = Cleanup(dir.clone());
    let trace = write_trace(&dir, "trace.csv", TRACE.as_bytes());
    let target = format!("http://{}", fc.proxy);
    let report = load(
        &trace,
        &[
            "--target", &target, "--scale", "0.5", "--speed", "3", "--json",
        ],
    )
    .json();
    assert_all_ok(&report, &[("shop", 30), ("api", 5)]);
    assert_eq!(report["total"]["planned"], 35);
    assert_eq!(
        report["window_s"], 1.0,
        "speed 3: three trace seconds in one"
    );
}

#[test]
fn max_requests_bounds_the_run() {
    let (_backend, fc) = front_door();
    let dir = scratch_dir("load");
    let _cleanup = Cleanup(dir.clone());
    let trace = write_trace(&dir, "trace.csv", TRACE.as_bytes());
    let target = format!("http://{}", fc.proxy);
    let run = load(
        &trace,
        &[
            "--target",
            &target,
            "--max-requests",
            "25",
            "--speed",
            "4",
            "--new-connection-per-request",
            "--json",
        ],
    );
    let report = run.json();
    // Time order: second 0's 20 shop requests, then 5 of second 1's.
    assert_all_ok(&report, &[("shop", 25), ("api", 0)]);
    assert_eq!(report["stopped_by"], "max_requests");
    assert_eq!(report["total"]["planned"], 70);
    assert_eq!(report["new_connection_per_request"], true);
    assert!(run.took < Duration::from_secs(3), "took {:?}", run.took);
}

#[test]
fn a_refused_target_counts_errors_and_ends() {
    let dir = scratch_dir("load");
    let _cleanup = Cleanup(dir.clone());
    let trace = write_trace(&dir, "trace.csv", TRACE.as_bytes());
    let target = format!("http://127.0.0.1:{}", free_port());
    let run = load(&trace, &["--target", &target, "--speed", "10", "--json"]);
    let report = run.json();
    let total = &report["total"];
    assert_eq!(total["scheduled"], 70);
    assert_eq!(total["ok"], 0);
    assert_eq!(total["failed"], 70);
    assert_eq!(
        total["errors"],
        serde_json::json!({ "connection_refused": 70 })
    );
    assert_eq!(service(&report, "api")["errors"]["connection_refused"], 10);
    assert!(run.took < Duration::from_secs(5), "took {:?}", run.took);
}

#[test]
fn reads_gzip_and_prints_a_text_report() {
    let backend = Backend::start();
    let dir = scratch_dir("load");
    let _cleanup = Cleanup(dir.clone());
    let trace = write_trace(&dir, "trace.bin", &gzip(TRACE.as_bytes()));
    let target = format!("http://{}", backend.addr());
    let run = load(
        &trace,
        &["--target", &target, "--speed", "10", "--service", "shop"],
    );
    assert!(run.status.success(), "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        lines[1].starts_with("stopped by end of trace"),
        "{}",
        run.stdout
    );
    let row = |name: &str| -> Vec<String> {
        lines
            .iter()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} row:\n{}", run.stdout))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    // service planned scheduled sent ok failed …
    assert_eq!(row("all")[1..6], ["60", "60", "60", "60", "0"]);
    assert_eq!(row("shop")[1..6], ["60", "60", "60", "60", "0"]);
    assert!(
        !lines.iter().any(|l| l.starts_with("api ")),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("status: 2xx 60"), "{}", run.stdout);
}

#[test]
fn the_in_flight_cap_drops_and_counts() {
    let slow = SlowBackend::start(Duration::from_millis(300));
    let dir = scratch_dir("load");
    let _cleanup = Cleanup(dir.clone());
    let trace = write_trace(&dir, "trace.csv", TRACE.as_bytes());
    let target = format!("http://{}", slow.addr);
    // Second 0 only: 20 requests 50 ms apart, each answered after 300 ms, at most 2 out.
    let report = load(
        &trace,
        &[
            "--target",
            &target,
            "--to",
            "1s",
            "--max-in-flight",
            "2",
            "--json",
        ],
    )
    .json();
    let total = &report["total"];
    let (scheduled, sent, ok) = (
        total["scheduled"].as_u64().unwrap(),
        total["sent"].as_u64().unwrap(),
        total["ok"].as_u64().unwrap(),
    );
    let dropped = total["errors"]["in_flight_cap"].as_u64().unwrap_or(0);
    assert_eq!(scheduled, 20);
    assert_eq!(sent, ok, "{report:#}");
    assert_eq!(sent + dropped, scheduled, "{report:#}");
    assert!((4..=10).contains(&sent), "{report:#}");
    assert_eq!(total["failed"], dropped);
    let p50 = total["latency_ms"]["p50"].as_f64().unwrap();
    assert!(p50 >= 300.0, "latency includes the backend's 300 ms: {p50}");
    assert_eq!(
        report["services"].as_array().unwrap().len(),
        1,
        "api has no requests before 1 s"
    );
}

#[test]
fn requests_leave_on_schedule() {
    let recorder = Recorder::start();
    let dir = scratch_dir("load");
    let _cleanup = Cleanup(dir.clone());
    let trace = write_trace(&dir, "trace.csv", TRACE.as_bytes());
    let samples = dir.join("samples.csv");
    // Request n is due at: second 0, 20 evenly; second 1, 40 evenly; second 2, 10 evenly; ÷ 2.
    let due = |n: usize| -> f64 {
        let t = match n {
            0..20 => n as f64 / 20.0,
            20..60 => 1.0 + (n - 20) as f64 / 40.0,
            _ => 2.0 + (n - 60) as f64 / 10.0,
        };
        t / 2.0
    };
    let target = format!("http://{}", recorder.addr);
    let report = load(
        &trace,
        &[
            "--target",
            &target,
            "--path-template",
            "/{service}/r/{seq}",
            "--speed",
            "2",
            "--json",
            "--samples",
            samples.to_str().unwrap(),
        ],
    )
    .json();
    assert_all_ok(&report, &[("shop", 60), ("api", 10)]);
    // --samples: one line per answer, its scheduled wall-clock time exactly the schedule's.
    let text = std::fs::read_to_string(&samples).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("service,scheduled_unix_us,latency_us,status")
    );
    let mut rows: Vec<(String, u64, u64)> = lines
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            assert_eq!((f.len(), f[3]), (4, "200"), "{line}");
            (
                f[0].to_owned(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows.len(), 70);
    assert_eq!(rows.iter().filter(|r| r.0 == "api").count(), 10);
    rows.sort_by_key(|r| r.1);
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    assert!(rows[0].1 < now_us && now_us - rows[0].1 < 60_000_000);
    let scheduled: Vec<f64> = rows
        .iter()
        .map(|r| (r.1 - rows[0].1) as f64 / 1e6)
        .collect();
    let mut due_times: Vec<f64> = (0..70).map(due).collect();
    due_times.sort_by(f64::total_cmp);
    for (got, want) in scheduled.iter().zip(&due_times) {
        assert!(
            (got - want).abs() < 2e-6,
            "scheduled at {got} s, due at {want} s"
        );
    }
    assert!(
        rows.iter().all(|r| r.2 < 10_000_000),
        "latencies in µs under the timeout"
    );
    let arrivals = recorder.arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 70);
    let first = arrivals.iter().map(|(at, _)| *at).min().unwrap();
    let mut offsets: Vec<(usize, f64)> = arrivals
        .iter()
        .map(|(at, path)| {
            let n: usize = path.rsplit('/').next().unwrap().parse().unwrap();
            let service = if n < 60 { "/shop/r/" } else { "/api/r/" };
            assert!(path.starts_with(service), "{path}");
            (n, (*at - first).as_secs_f64() - due(n))
        })
        .collect();
    offsets.sort_by_key(|(n, _)| *n);
    assert!(offsets.iter().map(|(n, _)| *n).eq(0..70), "each n once");
    // Against the median offset (the start-up delay), every request within 100 ms and nine in
    // ten within 10 ms of its schedule.
    let mut errors: Vec<f64> = offsets.iter().map(|(_, e)| *e).collect();
    errors.sort_by(f64::total_cmp);
    let median = errors[errors.len() / 2];
    let mut off: Vec<f64> = errors.iter().map(|e| (e - median).abs()).collect();
    off.sort_by(f64::total_cmp);
    eprintln!(
        "arrivals vs schedule: median |off| {:.2} ms, p90 {:.2} ms, worst {:.2} ms",
        off[35] * 1e3,
        off[62] * 1e3,
        off[69] * 1e3
    );
    assert!(off[62] < 0.010, "90th percentile off by {:.4} s", off[62]);
    assert!(off[69] < 0.100, "worst off by {:.4} s", off[69]);
    let lag = report["total"]["dispatch_lag_ms"]["p99"].as_f64().unwrap();
    assert!(lag < 50.0, "dispatch lag p99 {lag} ms");
}

#[test]
fn bad_input_is_an_error_that_names_it() {
    let dir = scratch_dir("load");
    let _cleanup = Cleanup(dir.clone());
    let trace = write_trace(&dir, "trace.csv", TRACE.as_bytes());
    let not_a_trace = write_trace(&dir, "notes.txt", b"time,svc,n\n");
    let target = "http://127.0.0.1:9";
    for (trace, args, message) in [
        (
            &trace,
            &["--service", "cart"][..],
            "no service \"cart\" in the trace (it has: shop, api)",
        ),
        (&trace, &["--scale=-1"], "--scale must be a number ≥ 0"),
        (&trace, &["--speed", "0"], "--speed must be a number > 0"),
        (
            &trace,
            &["--from", "5s"],
            "the trace has no requests from 5 s on",
        ),
        (&not_a_trace, &[], "notes.txt: not a trace"),
    ] {
        let mut all = vec!["--target", target];
        all.extend_from_slice(args);
        let run = load(trace, &all);
        assert!(!run.status.success(), "{args:?} succeeded");
        assert!(run.stderr.contains(message), "{args:?}: {}", run.stderr);
    }
    let run = load(&trace, &["--target", "https://127.0.0.1:9"]);
    assert!(
        run.stderr.contains("only http is supported"),
        "{}",
        run.stderr
    );
}

// === Private helpers ===

/// Records when each request arrived, answering `200 ok` on keep-alive connections.
struct Recorder {
    addr: SocketAddr,
    arrivals: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Recorder {
    /// Listens on a free port; the accept thread lives as long as the test process.
    fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let log = arrivals.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let log = log.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_nodelay(true);
                    let mut writer = stream.try_clone().unwrap();
                    let mut reader = BufReader::new(stream);
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let at = Instant::now();
                        let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                        // Headers up to the blank line (GET: no body).
                        loop {
                            line.clear();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if line.trim_end().is_empty() {
                                break;
                            }
                        }
                        log.lock().unwrap().push((at, path));
                        if writer
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        Recorder { addr, arrivals }
    }
}

/// A sample backend that answers after `latency` (`forecourt backend --latency`).
struct SlowBackend {
    addr: SocketAddr,
    _process: Process,
}

impl SlowBackend {
    fn start(latency: Duration) -> SlowBackend {
        let port = free_port();
        let child = Command::new(forecourt_bin())
            .args(["backend", "--port", &port.to_string(), "--latency"])
            .arg(format!("{}ms", latency.as_millis()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let backend = SlowBackend {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _process: Process { child },
        };
        wait_for(WAIT, || std::net::TcpStream::connect(backend.addr).ok())
            .expect("slow backend listens");
        backend
    }
}

/// `bytes` as a gzip member with one stored (uncompressed) deflate block.
fn gzip(bytes: &[u8]) -> Vec<u8> {
    let len = u16::try_from(bytes.len()).unwrap();
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.push(0x01); // final block, stored
    out.extend(len.to_le_bytes());
    out.extend((!len).to_le_bytes());
    out.extend(bytes);
    out.extend(crc32(bytes).to_le_bytes());
    out.extend(u32::from(len).to_le_bytes());
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Removes a passing test's scratch directory (a failing one keeps it for inspection).
struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
