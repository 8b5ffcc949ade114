//! The `forecourt` binary: run the proxy, check a policy file, run the sample backend or the demo.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use forecourt_config::{LoadError, Policy};
use forecourt_predictor::SystemClock;
use forecourt_proxy::{server, FrontDoor};

mod backend;
#[cfg(test)]
mod cache_replay;
mod demo;
mod forecast;
mod load;
mod replay;

#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The admin token: `FORECOURT_ADMIN_TOKEN`, or the first line of the file named by
/// `FORECOURT_ADMIN_TOKEN_FILE` (a mounted secret), or none.
fn admin_token() -> Result<Option<String>, String> {
    if let Some(path) = std::env::var_os("FORECOURT_ADMIN_TOKEN_FILE") {
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "FORECOURT_ADMIN_TOKEN_FILE {}: {e}",
                std::path::Path::new(&path).display()
            )
        })?;
        let token = text.lines().next().unwrap_or("").trim().to_owned();
        if token.is_empty() {
            return Err(format!(
                "FORECOURT_ADMIN_TOKEN_FILE {}: the file is empty",
                std::path::Path::new(&path).display()
            ));
        }
        return Ok(Some(token));
    }
    Ok(std::env::var("FORECOURT_ADMIN_TOKEN").ok())
}

/// Forecourt: a predictive front door.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy with a policy file.
    Run {
        /// The policy file.
        #[arg(short, long)]
        config: PathBuf,
        /// Proxy worker threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
        /// Take over the sockets of a running Forecourt (graceful upgrade).
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate a policy file and print every problem with its line; exits 1 on problems.
    Check {
        /// The policy file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Run Forecourt's sample backend (for demos, tests and benchmarks).
    Backend {
        /// Port to listen on.
        #[arg(long)]
        port: u16,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        /// Wait this long before listening, e.g. "3s" (a real cold start).
        #[arg(long, value_parser = humantime_duration, default_value = "0s")]
        boot_delay: Duration,
        /// Add this much latency to every answer but /healthz, e.g. "20ms" (a slow instance).
        #[arg(long, value_parser = humantime_duration, default_value = "0s")]
        latency: Duration,
        /// Add this much to the first request for each path (with query), e.g. "100ms" (a cold
        /// per-key cache).
        #[arg(long, value_parser = humantime_duration, default_value = "0s")]
        cold_key_cost: Duration,
        /// Add this much to each of the first --boot-requests requests, e.g. "200ms" (cold JIT,
        /// connection pools).
        #[arg(long, value_parser = humantime_duration, default_value = "0s")]
        boot_cost: Duration,
        /// How many requests after boot pay --boot-cost (/healthz does not count).
        #[arg(long, default_value_t = 0)]
        boot_requests: u64,
    },
    /// Replay a trace through the predictor and print each model's forecast errors per horizon.
    Forecast {
        /// The trace: `t,service,count` CSV, gzip-compressed or not.
        #[arg(long)]
        trace: PathBuf,
        /// Only this service of the trace.
        #[arg(long)]
        service: Option<String>,
        /// Horizons, e.g. `--horizon 5s --horizon 30s` (default 5s, 10s, 30s, 60s).
        #[arg(long = "horizon", value_parser = humantime_duration)]
        horizons: Vec<Duration>,
        /// Fraction of the trace used for training; the rest is scored.
        #[arg(long = "train", default_value_t = 0.7)]
        train_fraction: f64,
        /// Print the report as one JSON document instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Run the proxy on the embedded example policy: launched sample backends, built-in traffic,
    /// a live view of rates, forecasts and instances, and a summary.
    Demo {
        /// How long traffic runs, e.g. "20s".
        #[arg(long, value_parser = humantime_duration, default_value = "90s")]
        duration: Duration,
        /// The shop's requests per second at the peak (the api gets half as many).
        #[arg(long, default_value_t = 80)]
        peak_rps: u32,
    },
    /// Send HTTP/1.1 traffic that follows a trace to a target, open loop, and report what came
    /// back (latency from each request's scheduled time).
    Load(load::LoadArgs),
    /// Replay a trace through simulated fleets under Forecourt's policy, Knative's KPA, an oracle
    /// and static peak provisioning; print waiting and cost per utilisation target.
    Replay(replay::ReplayOptions),
}

fn humantime_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

fn init_logs(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

fn print_problems(error: &LoadError) {
    match error {
        LoadError::Invalid { problems, .. } => {
            for problem in problems {
                eprintln!("{problem}");
            }
        }
        other => eprintln!(
            "error: {other}: {}",
            std::error::Error::source(other).map_or(String::new(), |s| s.to_string())
        ),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match Policy::load(&config) {
            Ok(policy) => {
                println!(
                    "{}: ok ({} services)",
                    config.display(),
                    policy.services.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                print_problems(&e);
                ExitCode::FAILURE
            }
        },
        Command::Run {
            config,
            threads,
            upgrade,
        } => {
            init_logs(cli.log_format, "info");
            let policy = match Policy::load(&config) {
                Ok(p) => p,
                Err(e) => {
                    print_problems(&e);
                    return ExitCode::FAILURE;
                }
            };
            let token = match admin_token() {
                Ok(token) => token,
                Err(message) => {
                    eprintln!("{message}");
                    return ExitCode::FAILURE;
                }
            };
            let front_door = Arc::new(
                FrontDoor::new(policy, Arc::new(SystemClock::aligned_to_unix_time()))
                    .with_admin_token(token),
            );
            front_door.config.set_path(&config);
            let threads = threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            match server::build(
                front_door,
                &server::ServerOptions {
                    threads,
                    upgrade,
                    exit_when_drained: true,
                },
            ) {
                Ok(server) => server.run_forever(),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Backend {
            port,
            host,
            boot_delay,
            latency,
            cold_key_cost,
            boot_cost,
            boot_requests,
        } => {
            init_logs(cli.log_format, "warn");
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: unable to start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let options = backend::BackendOptions {
                listen: (host, port).into(),
                boot_delay,
                latency,
                cold_key_cost,
                boot_cost,
                boot_requests,
            };
            match runtime.block_on(backend::run(options)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: sample backend on {host}:{port}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Forecast {
            trace,
            service,
            horizons,
            train_fraction,
            json,
        } => {
            let horizons = if horizons.is_empty() {
                [5, 10, 30, 60].map(Duration::from_secs).to_vec()
            } else {
                horizons
            };
            let options = forecast::ForecastOptions {
                trace,
                service,
                horizons,
                train_fraction,
                json,
            };
            match forecast::run(&options) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Demo { duration, peak_rps } => {
            init_logs(cli.log_format, "warn");
            match demo::run(demo::DemoOptions { duration, peak_rps }) {
                Ok(summary) => {
                    println!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Load(args) => match load::main(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Replay(options) => match replay::main(&options) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
