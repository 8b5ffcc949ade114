//! `forecourt demo`: the proxy on the embedded example policy, in front of real sample backends
//! started as child processes, with a built-in traffic shape and a live view in the terminal.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use forecourt_config::Policy;
use forecourt_predictor::SystemClock;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::server::{build, ServerOptions};
use crate::state::FrontDoor;

/// The example policy shipped in `config/examples/`, embedded.
pub const EXAMPLE_POLICY: &str = include_str!("../../config/examples/forecourt.yaml");

/// Settings of a demo run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// How long traffic runs.
    pub duration: Duration,
    /// Requests per second at the peak of the shape.
    pub peak_rps: u32,
}

/// A free loopback port (bound, then released).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Kills the child processes it holds when dropped, so no backend outlives the demo.
struct Children(Vec<std::process::Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs the demo and returns its summary line.
pub fn run(options: DemoOptions) -> anyhow::Result<String> {
    let mut policy = Policy::parse(EXAMPLE_POLICY, std::path::Path::new("<embedded example>"))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    policy.listeners.proxy = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    policy.listeners.admin = SocketAddr::from(([127, 0, 0, 1], free_port()?));

    let exe = std::env::current_exe().context("unable to find the forecourt binary")?;
    let mut children = Children(Vec::new());
    for service in &mut policy.services {
        for instance in &mut service.instances {
            let port = free_port()?;
            instance.address = SocketAddr::from(([127, 0, 0, 1], port));
            let child = std::process::Command::new(&exe)
                .args(["backend", "--port", &port.to_string()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .context("unable to start a sample backend")?;
            children.0.push(child);
        }
    }
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
        },
    )?;
    std::thread::spawn(move || server.run_forever());

    println!("forecourt demo: proxy on http://{proxy_addr}, admin on http://{admin_addr}");
    println!("  try: curl -s http://{admin_addr}/v1/services/shop/readiness");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let summary = runtime.block_on(drive(front_door, proxy_addr, options));
    drop(children);
    Ok(summary)
}

/// Counts of the demo traffic.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
}

async fn drive(front_door: Arc<FrontDoor>, proxy: SocketAddr, options: DemoOptions) -> String {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let mut next_report = Duration::from_secs(1);
    let mut sent = 0u64;
    let paths = ["/shop/cart", "/api/items", "/nowhere"];
    while started.elapsed() < options.duration {
        let t = started.elapsed().as_secs_f64() / options.duration.as_secs_f64();
        // A ramp to the peak and back down.
        let rate = (f64::from(options.peak_rps) * (1.0 - (2.0 * t - 1.0).abs())).max(5.0);
        // Six in ten to the shop, three to the api, one to no route (a 404).
        let path = paths[match sent % 10 {
            0..=5 => 0,
            6..=8 => 1,
            _ => 2,
        }];
        sent += 1;
        let uri: http::Uri = match format!("http://{proxy}{path}").parse() {
            Ok(u) => u,
            Err(_) => continue,
        };
        let (client, task_tally) = (client.clone(), tally.clone());
        tokio::spawn(async move {
            let outcome = match client.get(uri).await {
                Ok(response) => {
                    let ok = response.status().is_success() || response.status() == 404;
                    let _ = response.into_body().collect().await;
                    ok
                }
                Err(_) => false,
            };
            let counter = if outcome {
                &task_tally.ok
            } else {
                &task_tally.failed
            };
            counter.fetch_add(1, Ordering::Relaxed);
        });
        tokio::time::sleep(Duration::from_secs_f64(1.0 / rate)).await;
        if started.elapsed() >= next_report {
            next_report += Duration::from_secs(1);
            let snapshot = front_door.snapshot();
            let line: Vec<String> = snapshot
                .services
                .iter()
                .map(|s| {
                    format!(
                        "{} ready {}/{}",
                        s.config.name,
                        s.instances.ready().instances.len(),
                        s.instances.all().len()
                    )
                })
                .collect();
            println!(
                "t={:>3}s  rate {:>5.0}/s  ok {:>6}  failed {:>4}  {}",
                started.elapsed().as_secs(),
                rate,
                tally.ok.load(Ordering::Relaxed),
                tally.failed.load(Ordering::Relaxed),
                line.join("  ")
            );
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    format!(
        "demo summary: {} requests, {} answered as expected, {} failed (503s before instances were confirmed ready count as failed)",
        sent,
        tally.ok.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed)
    )
}
