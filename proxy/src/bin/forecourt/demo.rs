//! `forecourt demo`: the proxy on the embedded example policy, its services launched as real
//! sample backends (3 s boot) by the `local` orchestrator, a built-in traffic shape, and a live
//! view in the terminal.
//!
//! ```text
//!  traffic (this process) ─► proxy ─► instances started by the local orchestrator
//!    ramp · compressed "day" · burst · wind-down          ▲
//!                                  control loop ─ forecast ─┘ scale ahead of the load
//!  every second: rate, forecast, ready/desired, held  ─► terminal
//! ```

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use forecourt_config::Policy;
use forecourt_predictor::SystemClock;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pingora::server::{RunArgs, ShutdownSignal, ShutdownSignalWatch};

use forecourt_proxy::{build, FrontDoor, ServerOptions};

/// The example policy shipped in `config/examples/`, embedded.
pub const EXAMPLE_POLICY: &str = include_str!("../../../../config/examples/forecourt.yaml");

/// Share of the shop's rate that also goes to the api (the example's declared fan-out).
const API_SHARE: f64 = 0.5;

/// Settings of a demo run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// How long traffic runs.
    pub duration: Duration,
    /// The shop's requests per second at the peak of the shape.
    pub peak_rps: u32,
}

/// A free loopback port (bound, then released).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The shop's offered rate at `x` (0..1 of the run): a ramp, a compressed day with a burst in
/// it, and a wind-down.
pub fn shape(x: f64, peak: f64) -> f64 {
    let rate = if x < 0.3 {
        0.05 + 0.95 * x / 0.3
    } else if x < 0.75 {
        // One "day" squeezed into 45 % of the run: a trough and back to the peak.
        let day = (x - 0.3) / 0.45;
        let base = 0.7 + 0.3 * (2.0 * std::f64::consts::PI * day).cos();
        // A burst nobody forecast, in the trough.
        if (0.5..0.56).contains(&x) {
            base + 1.2
        } else {
            base
        }
    } else {
        1.0 - 0.9 * (x - 0.75) / 0.25
    };
    (rate * peak).max(1.0)
}

/// Ends the embedded server when the demo is over (or on Ctrl-C / SIGTERM).
struct DemoShutdown(Arc<tokio::sync::Notify>);

#[async_trait]
impl ShutdownSignalWatch for DemoShutdown {
    async fn recv(&self) -> ShutdownSignal {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            () = self.0.notified() => {}
            _ = tokio::signal::ctrl_c() => {}
            Some(()) = async { terminate.as_mut()?.recv().await } => {}
        }
        ShutdownSignal::GracefulTerminate
    }
}

/// Runs the demo and returns its summary line.
pub fn run(options: DemoOptions) -> anyhow::Result<String> {
    let mut policy = Policy::parse(EXAMPLE_POLICY, std::path::Path::new("<embedded example>"))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    policy.listeners.proxy = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    policy.listeners.admin = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let proxy_addr = policy.listeners.proxy;
    let admin_addr = policy.listeners.admin;
    let front_door = Arc::new(FrontDoor::new(
        policy,
        Arc::new(SystemClock::aligned_to_unix_time()),
    ));
    let server = build(
        front_door.clone(),
        &ServerOptions {
            threads: 1,
            upgrade: false,
            exit_when_drained: false,
        },
    )?;
    let stop = Arc::new(tokio::sync::Notify::new());
    let server_stop = stop.clone();
    let server_thread = std::thread::spawn(move || {
        server.run(RunArgs {
            shutdown_signal: Box::new(DemoShutdown(server_stop)),
        });
    });

    // The server binds its listeners on its own thread: traffic starts once the proxy accepts.
    let listening_by = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(proxy_addr).is_err() {
        if Instant::now() > listening_by {
            anyhow::bail!("the proxy never listened on {proxy_addr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("forecourt demo: proxy on http://{proxy_addr}, admin on http://{admin_addr}");
    println!("  services launched by the local orchestrator; each instance boots in 3 s");
    println!("  try: curl -s http://{admin_addr}/v1/services/shop/readiness");
    println!();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let latency = Histogram::new_with_bounds(1, 60_000_000, 3)?;
    let summary = runtime.block_on(drive(front_door, proxy_addr, &options, latency));
    println!("stopping: instances drain, then get SIGTERM");
    stop.notify_one();
    let _ = server_thread.join();
    Ok(summary)
}

/// What the demo's client saw.
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    /// The first few failures, as status codes or errors.
    failures: Mutex<Vec<String>>,
    latency: Mutex<Histogram<u64>>,
}

/// One service's line in the live view, and what the summary adds up.
#[derive(Default)]
struct Watch {
    instance_seconds: f64,
    short_seconds: u32,
}

async fn drive(
    front_door: Arc<FrontDoor>,
    proxy: SocketAddr,
    options: &DemoOptions,
    latency: Histogram<u64>,
) -> String {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let tally = Arc::new(Tally {
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        failures: Mutex::new(Vec::new()),
        latency: Mutex::new(latency),
    });
    let peak = f64::from(options.peak_rps.max(1));
    let length = options.duration.as_secs_f64().max(1.0);
    let started = tokio::time::Instant::now();
    let mut next_report = Duration::from_secs(1);
    let mut watches = [Watch::default(), Watch::default()];
    let mut sent = 0u64;
    let mut next_send = [0.0f64, 0.0];
    println!(
        "{:>4}  {:<40}  {:<40}",
        "t", "shop: rate → demand  ready/desired held", "api: rate → demand  ready/desired held"
    );
    loop {
        let t = started.elapsed().as_secs_f64();
        if t >= length {
            break;
        }
        let shop_rate = shape(t / length, peak);
        let rates = [shop_rate, shop_rate * API_SHARE];
        for (i, path) in ["/shop/cart", "/api/items"].into_iter().enumerate() {
            while next_send[i] <= t {
                next_send[i] += 1.0 / rates[i].max(0.1);
                sent += 1;
                let Ok(uri) = format!("http://{proxy}{path}").parse::<http::Uri>() else {
                    continue;
                };
                let (client, tally) = (client.clone(), tally.clone());
                tokio::spawn(async move {
                    let asked = Instant::now();
                    let failure = match client.get(uri).await {
                        Ok(response) => {
                            let status = response.status();
                            let _ = response.into_body().collect().await;
                            (!status.is_success()).then(|| status.to_string())
                        }
                        Err(e) => Some(e.to_string()),
                    };
                    let ok = failure.is_none();
                    if let (Some(failure), Ok(mut failures)) = (failure, tally.failures.lock()) {
                        if failures.len() < 3 {
                            failures.push(failure);
                        }
                    }
                    let counter = if ok { &tally.ok } else { &tally.failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut h) = tally.latency.lock() {
                        let us = u64::try_from(asked.elapsed().as_micros()).unwrap_or(u64::MAX);
                        let _ = h.record(us.clamp(1, 60_000_000));
                    }
                });
            }
        }
        if started.elapsed() >= next_report {
            next_report += Duration::from_secs(1);
            println!(
                "{:>3}s  {}",
                started.elapsed().as_secs(),
                live_line(&front_door, &rates, &mut watches)
            );
        }
        let wake = next_send[0]
            .min(next_send[1])
            .min(next_report.as_secs_f64());
        tokio::time::sleep_until(started + Duration::from_secs_f64(wake.max(t))).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (p50, p99) = tally
        .latency
        .lock()
        .map(|h| (h.value_at_quantile(0.5), h.value_at_quantile(0.99)))
        .unwrap_or((0, 0));
    let snapshot = front_door.snapshot();
    let held: u64 = snapshot
        .services
        .iter()
        .map(|s| s.metrics.held.load(Ordering::Relaxed))
        .sum();
    let short: u32 = watches.iter().map(|w| w.short_seconds).sum();
    let instance_seconds: f64 = watches.iter().map(|w| w.instance_seconds).sum();
    let failures = tally
        .failures
        .lock()
        .map(|f| f.join("; "))
        .unwrap_or_default();
    let failed = tally.failed.load(Ordering::Relaxed);
    let failed = if failed == 0 {
        "0 failed".to_owned()
    } else {
        format!("{failed} failed (e.g. {failures})")
    };
    format!(
        "demo summary: {sent} requests, {} ok, {failed}; {held} held for an instance; latency through forecourt p50 {:.1} ms, p99 {:.1} ms; {instance_seconds:.0} instance-seconds; {short} service-seconds with offered load above ready capacity",
        tally.ok.load(Ordering::Relaxed),
        p50 as f64 / 1_000.0,
        p99 as f64 / 1_000.0,
    )
}

/// One line of the live view: per service the offered rate, the demand it is provisioned for
/// over its horizon (the forecast's demand quantile), ready/desired instances and held requests.
fn live_line(front_door: &FrontDoor, offered: &[f64; 2], watches: &mut [Watch; 2]) -> String {
    let snapshot = front_door.snapshot();
    let scaling = front_door.control.scaling.load();
    let mut parts = Vec::new();
    for (i, name) in ["shop", "api"].into_iter().enumerate() {
        let Some(service) = snapshot.service(name) else {
            continue;
        };
        let ready = service.instances.ready().instances.len();
        let running = service.instances.all().len();
        let decision = scaling.service(name);
        let desired = decision.map_or(running as u32, |d| d.desired);
        let forecast = decision
            .map(|d| format!("{:>5.0} ({:>2}s)", d.predicted_load, d.horizon_secs))
            .unwrap_or_else(|| "    -      ".to_owned());
        // Arrivals Forecourt counted in the last closed second.
        let now = front_door.clock.now_ms();
        let rate = snapshot
            .predictor
            .service_id(name)
            .and_then(|id| {
                snapshot
                    .predictor
                    .second_count(id, now, (now / 1_000).saturating_sub(1))
            })
            .unwrap_or(0) as f64;
        let held = service.metrics.held_now.load(Ordering::Relaxed);
        let capacity = service
            .config
            .scaling
            .as_ref()
            .map_or(f64::INFINITY, |s| s.capacity.per_replica());
        let watch = &mut watches[i];
        watch.instance_seconds += running as f64;
        if offered[i] > ready as f64 * capacity {
            watch.short_seconds += 1;
        }
        parts.push(format!(
            "{rate:>5.0}/s → {forecast}  {ready:>2}/{desired:<2} {held:>4}      "
        ));
    }
    parts.join("  ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shape_ramps_cycles_bursts_and_winds_down() {
        let peak = 100.0;
        assert!(shape(0.0, peak) < 10.0);
        assert!(
            (shape(0.3, peak) - 100.0).abs() < 1e-6,
            "the ramp reaches the peak"
        );
        let trough = shape(0.525, peak);
        assert!(
            trough > 100.0,
            "the burst lifts the trough above the peak: {trough}"
        );
        assert!(shape(0.45, peak) < shape(0.35, peak), "the day dips");
        assert!(shape(0.99, peak) < 15.0, "and winds down");
        let example = Policy::parse(EXAMPLE_POLICY, std::path::Path::new("example"));
        assert!(example.is_ok_and(|p| p.services.iter().all(|s| s.launch.is_some())));
    }
}
