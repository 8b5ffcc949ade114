//! `forecourt load`: real HTTP/1.1 traffic that follows a trace, sent open loop at a target,
//! and a report of what came back.
//!
//! ```text
//!  trace.csv[.gz] ─► parse_trace ─► Plan: rows with from ≤ t < to, per second and service
//!    ─► Schedule: count × scale (fractional carry per service), spread over the second, ÷ speed
//!    ─► scheduler (one task): at each slot's time, spawn the request ─ or count it dropped
//!       when --max-in-flight requests are already out
//!    ─► hyper legacy client (keep-alive pool) ─► {target}{path template}
//!    ─► per service: status classes, error kinds, latency from the *scheduled* time ─► report
//! ```
//!
//! Open loop: every request leaves at its scheduled time whether or not earlier ones have
//! answered, and its latency runs from that scheduled time, so a slow target cannot slow the
//! load down and hide its own queueing (no coordinated omission). How late the scheduler itself
//! was is reported separately as the dispatch lag.
//!
//! Placement inside a second: with `--spread even` (the default) request `i` of a second's `n`
//! leaves at `i / n` of the second; with `--spread random` at uniform offsets drawn from a
//! generator seeded by `--seed`, so a run can be repeated exactly. Several services in one
//! second are merged in time order (ties in trace order).
//!
//! Paths: a request of trace service `S` goes to `{target}/S/` (`--path-template '/{service}/'`;
//! e.g. `'/{service}/items/{seq}'` adds the request's number). Services are percent-encoded.
//!
//! Scaling: each service carries the fraction `count × scale` leaves over to its next second,
//! so `--scale 0.3` on ten seconds of 1 request sends exactly 3, always the same ones.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use forecourt_predictor::{parse_trace, Trace};
use hdrhistogram::Histogram;
use http::{header, StatusCode, Uri};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tokio::time::Instant;

/// The default `--path-template`: `/shop/` for trace service `shop`.
pub const DEFAULT_PATH_TEMPLATE: &str = "/{service}/";

/// Latency above this counts a request as "waited".
pub const WAITED: Duration = Duration::from_secs(1);

/// Highest latency the histograms hold (microseconds, one hour); longer ones saturate.
const HISTOGRAM_MAX_US: u64 = 3_600_000_000;

/// With `--precise-timing`, the scheduler busy-waits this last stretch before each send instead
/// of trusting tokio's millisecond timer.
const SPIN: Duration = Duration::from_micros(1500);

/// How a second's requests are placed inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Spread {
    /// Evenly: request `i` of `n` at `i / n` of the second.
    Even,
    /// At uniform random offsets from a generator seeded with `--seed` (same seed, same run).
    Random,
}

/// The flags of `forecourt load`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// The trace: `t,service,count` CSV, gzip-compressed or not.
    #[arg(long)]
    pub trace: PathBuf,
    /// Base URL of the requests, e.g. `http://127.0.0.1:8080` (plain HTTP/1.1; may end in a path).
    #[arg(long)]
    pub target: String,
    /// Multiply every count by this; fractions carry over from second to second.
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Only this trace service; repeat for several (default: every service).
    #[arg(long = "service", value_name = "SERVICE")]
    pub services: Vec<String>,
    /// Start of the slice of trace time, e.g. "1h" (rows with from ≤ t < to are replayed).
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub from: Duration,
    /// End of the slice of trace time, exclusive, e.g. "2h" (default: the trace's end).
    #[arg(long, value_parser = parse_duration)]
    pub to: Option<Duration>,
    /// Time compression: 2 replays the slice twice as fast (same requests, half the time).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Schedule at most this many requests.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_requests: u64,
    /// Stop scheduling after this long; requests still out then get up to --timeout to finish.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub max_duration: Duration,
    /// Most requests out at once; one due at the cap is not sent and fails as `in_flight_cap`.
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: u64,
    /// Give up on a request (connect, answer and body) after this long; fails as `timeout`.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub timeout: Duration,
    /// Request path after the target: `{service}` is the trace service, `{seq}` the request's
    /// number in the run (0, 1, …; defeats caches).
    #[arg(long, default_value = DEFAULT_PATH_TEMPLATE)]
    pub path_template: String,
    /// Where a second's requests fall inside it.
    #[arg(long, value_enum, default_value_t = Spread::Even)]
    pub spread: Spread,
    /// Seed of `--spread random`.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Open a new connection for every request (default: a keep-alive pool).
    #[arg(long)]
    pub new_connection_per_request: bool,
    /// Busy-wait the last 1.5 ms before each send: dispatch lag ~0.1 ms instead of the ~1-2 ms
    /// of tokio's millisecond timer, at the cost of up to one CPU core.
    #[arg(long)]
    pub precise_timing: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write every answered request to this CSV (`service,scheduled_unix_us,latency_us,
    /// status`), for analyses by time (e.g. requests that overlapped a control-loop tick).
    #[arg(long, value_name = "FILE")]
    pub samples: Option<PathBuf>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

// === Plan and schedule (pure) ===

/// The slice of a trace to replay: which services, and their raw counts per trace second.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Service names, in trace order.
    pub services: Vec<String>,
    /// `(trace second, service index, count)`, sorted by second then service, one row per pair.
    pub rows: Vec<(u64, usize, u64)>,
    /// Start of the slice, seconds of trace time.
    pub start: f64,
    /// End of the slice (exclusive), seconds of trace time: `--to`, or the last row's end.
    pub end: f64,
}

impl Plan {
    /// Cuts `from ≤ t < to` of the chosen services (all when `only` is empty) out of `trace`.
    pub fn new(
        trace: &Trace,
        only: &[String],
        from: Duration,
        to: Option<Duration>,
    ) -> anyhow::Result<Plan> {
        for name in only {
            if trace.service(name).is_none() {
                let known: Vec<_> = trace.services.iter().map(|s| s.name.as_str()).collect();
                bail!(
                    "no service {name:?} in the trace (it has: {})",
                    known.join(", ")
                );
            }
        }
        let start = from.as_secs_f64();
        let limit = to.map_or(f64::INFINITY, |to| to.as_secs_f64());
        if limit <= start {
            bail!("--to ({limit} s) must be after --from ({start} s)");
        }
        let mut services = Vec::new();
        let mut rows = Vec::new();
        for service in &trace.services {
            if !only.is_empty() && !only.contains(&service.name) {
                continue;
            }
            let index = services.len();
            let before = rows.len();
            rows.extend(
                service
                    .rows
                    .iter()
                    .filter(|&&(t, count)| count > 0 && (start..limit).contains(&(t as f64)))
                    .map(|&(t, count)| (t, index, count)),
            );
            // A service without requests in the slice is left out of the run and the report.
            if rows.len() > before {
                services.push(service.name.clone());
            }
        }
        rows.sort_unstable_by_key(|&(t, service, _)| (t, service));
        // Repeated seconds of one service add up.
        rows.dedup_by(|next, kept| {
            let same = (next.0, next.1) == (kept.0, kept.1);
            if same {
                kept.2 = kept.2.saturating_add(next.2);
            }
            same
        });
        let Some(&(last, _, _)) = rows.last() else {
            match to {
                Some(_) => bail!("the trace has no requests between {start} s and {limit} s"),
                None => bail!("the trace has no requests from {start} s on"),
            }
        };
        let end = limit.min(last as f64 + 1.0);
        Ok(Plan {
            services,
            rows,
            start,
            end,
        })
    }

    /// Trace seconds the slice covers.
    pub fn span(&self) -> f64 {
        (self.end - self.start).max(0.0)
    }

    /// Requests per service after scaling, before any bound.
    pub fn planned(&self, scale: f64) -> Vec<u64> {
        let mut carry = vec![0.0; self.services.len()];
        let mut planned = vec![0u64; self.services.len()];
        for &(_, service, count) in &self.rows {
            let n = scaled(&mut carry[service], count, scale);
            planned[service] = planned[service].saturating_add(n);
        }
        planned
    }

    /// The requests of the slice in time order; a second holds at most `per_second_cap` of them.
    pub fn schedule(
        &self,
        scale: f64,
        spread: Spread,
        seed: u64,
        per_second_cap: u64,
    ) -> Schedule<'_> {
        Schedule {
            plan: self,
            scale,
            spread,
            rng: SplitMix64(seed),
            per_second_cap,
            carry: vec![0.0; self.services.len()],
            next_row: 0,
            second: Vec::new(),
            next_in_second: 0,
        }
    }
}

/// `count × scale` plus what the service carried, in whole requests; the fraction stays behind.
fn scaled(carry: &mut f64, count: u64, scale: f64) -> u64 {
    let exact = *carry + count as f64 * scale;
    // The epsilon keeps 0.1 + 0.2 + … from landing a hair below a whole request.
    let whole = (exact + 1e-9).floor();
    *carry = (exact - whole).max(0.0);
    whole as u64
}

/// One request of the schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slot {
    /// When it is due: seconds of trace time from the slice's start.
    pub at: f64,
    /// Index into [`Plan::services`].
    pub service: usize,
}

/// The requests of a [`Plan`] in time order, one trace second generated at a time.
#[derive(Debug)]
pub struct Schedule<'a> {
    plan: &'a Plan,
    scale: f64,
    spread: Spread,
    rng: SplitMix64,
    per_second_cap: u64,
    carry: Vec<f64>,
    next_row: usize,
    second: Vec<Slot>,
    next_in_second: usize,
}

impl Schedule<'_> {
    /// Generates the next trace second that has requests; `None` at the end of the plan.
    fn fill_next_second(&mut self) -> Option<()> {
        loop {
            let &(t, _, _) = self.plan.rows.get(self.next_row)?;
            self.second.clear();
            self.next_in_second = 0;
            let base = t as f64 - self.plan.start;
            while let Some(&(row_t, service, count)) = self.plan.rows.get(self.next_row) {
                if row_t != t {
                    break;
                }
                self.next_row += 1;
                let n = scaled(&mut self.carry[service], count, self.scale);
                // Only the first `per_second_cap` could ever be sent; even spacing stays 1/n.
                for i in 0..n.min(self.per_second_cap) {
                    let offset = match self.spread {
                        Spread::Even => i as f64 / n as f64,
                        Spread::Random => self.rng.next_f64(),
                    };
                    self.second.push(Slot {
                        at: base + offset,
                        service,
                    });
                }
            }
            if !self.second.is_empty() {
                // Stable: equal times keep trace order.
                self.second.sort_by(|a, b| a.at.total_cmp(&b.at));
                return Some(());
            }
        }
    }
}

impl Iterator for Schedule<'_> {
    type Item = Slot;

    fn next(&mut self) -> Option<Slot> {
        loop {
            if let Some(slot) = self.second.get(self.next_in_second) {
                self.next_in_second += 1;
                return Some(*slot);
            }
            self.fill_next_second()?;
        }
    }
}

/// SplitMix64: small, fast, and the same sequence for the same seed on every platform.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

// === Targets ===

/// The target's `http://authority[/prefix]`, without a trailing slash.
fn base_url(target: &str) -> anyhow::Result<String> {
    let uri: Uri = target
        .parse()
        .with_context(|| format!("--target {target:?} is not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => bail!("--target {target:?}: only http is supported, not {other}"),
        None => bail!("--target {target:?} needs a scheme, e.g. http://{target}"),
    }
    let Some(authority) = uri.authority() else {
        bail!("--target {target:?} has no host");
    };
    if uri.query().is_some() {
        bail!("--target {target:?} must not have a query; put it in --path-template");
    }
    Ok(format!(
        "http://{authority}{}",
        uri.path().trim_end_matches('/')
    ))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Each service's request URI: fixed, or rebuilt per request when the template uses `{seq}`.
#[derive(Debug, Clone)]
struct Targets {
    /// Per service: the URI text with `{service}` filled in (and `{seq}` left).
    texts: Vec<String>,
    /// Per service: the parsed URI when the template has no `{seq}`.
    fixed: Option<Vec<Uri>>,
    /// The template as given, for the report.
    display: String,
}

impl Targets {
    fn new(target: &str, template: &str, services: &[String]) -> anyhow::Result<Targets> {
        if !template.starts_with('/') {
            bail!("--path-template {template:?} must start with '/'");
        }
        let base = base_url(target)?;
        let texts: Vec<String> = services
            .iter()
            .map(|s| {
                format!(
                    "{base}{}",
                    template.replace("{service}", &encode_segment(s))
                )
            })
            .collect();
        for (text, service) in texts.iter().zip(services) {
            let sample = text.replace("{seq}", "0");
            sample.parse::<Uri>().with_context(|| {
                format!("--path-template {template:?} gives an invalid URL for {service}: {sample}")
            })?;
        }
        let fixed = if template.contains("{seq}") {
            None
        } else {
            Some(
                texts
                    .iter()
                    .map(|t| t.parse::<Uri>())
                    .collect::<Result<Vec<_>, _>>()?,
            )
        };
        Ok(Targets {
            texts,
            fixed,
            display: format!("{base}{template}"),
        })
    }

    /// The URI of request number `n` of `service`.
    fn uri(&self, service: usize, n: u64) -> Option<Uri> {
        match &self.fixed {
            Some(fixed) => fixed.get(service).cloned(),
            None => self
                .texts
                .get(service)?
                .replace("{seq}", &n.to_string())
                .parse()
                .ok(),
        }
    }
}

// === Outcomes ===

/// Why a request failed without a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorKind {
    /// The target refused the connection.
    Refused,
    /// Connecting failed otherwise.
    Connect,
    /// Out of file descriptors (raise `ulimit -n` or lower --max-in-flight).
    TooManyFiles,
    /// The connection was reset.
    Reset,
    /// The connection closed before the whole answer came.
    Closed,
    /// No whole answer within --timeout.
    Timeout,
    /// Reading the body failed.
    Body,
    /// Any other HTTP error.
    Http,
    /// Not sent: --max-in-flight requests were already out.
    InFlightCap,
    /// Still out when the run ended (interrupted, or stuck past --timeout).
    Unfinished,
}

impl ErrorKind {
    const ALL: [ErrorKind; 10] = [
        ErrorKind::Refused,
        ErrorKind::Connect,
        ErrorKind::TooManyFiles,
        ErrorKind::Reset,
        ErrorKind::Closed,
        ErrorKind::Timeout,
        ErrorKind::Body,
        ErrorKind::Http,
        ErrorKind::InFlightCap,
        ErrorKind::Unfinished,
    ];

    fn name(self) -> &'static str {
        match self {
            ErrorKind::Refused => "connection_refused",
            ErrorKind::Connect => "connect",
            ErrorKind::TooManyFiles => "too_many_open_files",
            ErrorKind::Reset => "connection_reset",
            ErrorKind::Closed => "connection_closed",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Body => "body",
            ErrorKind::Http => "http",
            ErrorKind::InFlightCap => "in_flight_cap",
            ErrorKind::Unfinished => "unfinished",
        }
    }
}

/// Names a client error by the first cause in its chain that says what happened.
fn classify(error: &hyper_util::client::legacy::Error) -> ErrorKind {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as Io;
            match io.kind() {
                Io::ConnectionRefused => return ErrorKind::Refused,
                Io::ConnectionReset | Io::ConnectionAborted | Io::BrokenPipe => {
                    return ErrorKind::Reset
                }
                Io::TimedOut => return ErrorKind::Timeout,
                _ if matches!(io.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    return ErrorKind::TooManyFiles
                }
                _ => {}
            }
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                return ErrorKind::Timeout;
            }
            if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
                return ErrorKind::Closed;
            }
        }
        cause = e.source();
    }
    if error.is_connect() {
        ErrorKind::Connect
    } else {
        ErrorKind::Http
    }
}

/// One answer for `--samples`: its scheduled time (µs since the run's origin), latency (µs)
/// and status.
type Sample = (u64, u64, u16);

/// What one service's finished requests added up to.
#[derive(Debug, Clone)]
struct Finished {
    ok: u64,
    /// Answers by status class, 1xx to 5xx.
    status: [u64; 5],
    errors: [u64; ErrorKind::ALL.len()],
    waited: u64,
    /// Scheduled time to the end of the body, answers only (µs).
    latency: Histogram<u64>,
    /// Scheduled time to the moment the request was handed to the client (µs).
    lag: Histogram<u64>,
    /// With `--samples`: each answer in the order it came back.
    samples: Vec<Sample>,
}

impl Finished {
    fn new() -> anyhow::Result<Finished> {
        let histogram =
            || Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3).context("latency histogram");
        Ok(Finished {
            ok: 0,
            status: [0; 5],
            errors: [0; ErrorKind::ALL.len()],
            waited: 0,
            latency: histogram()?,
            lag: histogram()?,
            samples: Vec::new(),
        })
    }

    fn failed(&self) -> u64 {
        self.status.iter().sum::<u64>() - self.ok + self.errors.iter().sum::<u64>()
    }

    fn add(&mut self, other: &Finished) {
        self.ok += other.ok;
        for (a, b) in self.status.iter_mut().zip(other.status) {
            *a += b;
        }
        for (a, b) in self.errors.iter_mut().zip(other.errors) {
            *a += b;
        }
        self.waited += other.waited;
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.lag.add(&other.lag);
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// One service's live state.
struct ServiceState {
    /// Requests of this service out now; changed under `finished`'s lock.
    in_flight: AtomicU64,
    finished: Mutex<Finished>,
}

/// What the scheduler and the request tasks share.
struct Shared {
    services: Vec<ServiceState>,
    in_flight: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    /// With `--samples`: the instant sample times count from.
    sample_origin: Option<Instant>,
}

impl Shared {
    fn lock(&self, service: usize) -> Option<std::sync::MutexGuard<'_, Finished>> {
        self.services
            .get(service)
            .map(|s| s.finished.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Counts a request that was due but never sent.
    fn not_sent(&self, service: usize, kind: ErrorKind) {
        if let Some(mut finished) = self.lock(service) {
            finished.errors[kind as usize] += 1;
        }
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a finished request and takes it out of the in-flight counts.
    fn finish(
        &self,
        service: usize,
        scheduled: Instant,
        handed: Instant,
        outcome: Result<StatusCode, ErrorKind>,
    ) {
        let latency = Instant::now().saturating_duration_since(scheduled);
        let mut ok = false;
        if let Some(mut finished) = self.lock(service) {
            finished
                .lag
                .saturating_record(micros(handed.saturating_duration_since(scheduled)));
            if latency > WAITED {
                finished.waited += 1;
            }
            match outcome {
                Ok(status) => {
                    let class = usize::from(status.as_u16() / 100).clamp(1, 5);
                    finished.status[class - 1] += 1;
                    finished.latency.saturating_record(micros(latency));
                    if let Some(origin) = self.sample_origin {
                        let at = micros(scheduled.saturating_duration_since(origin));
                        finished
                            .samples
                            .push((at, micros(latency), status.as_u16()));
                    }
                    if status.is_success() {
                        finished.ok += 1;
                        ok = true;
                    }
                }
                Err(kind) => finished.errors[kind as usize] += 1,
            }
            self.services[service]
                .in_flight
                .fetch_sub(1, Ordering::Relaxed);
        }
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let counter = if ok { &self.ok } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// Sends one request and reads its whole answer.
async fn exchange(client: &HttpClient, uri: Uri, close: bool) -> Result<StatusCode, ErrorKind> {
    let mut request = http::Request::get(uri).header(header::USER_AGENT, "forecourt-load");
    if close {
        request = request.header(header::CONNECTION, "close");
    }
    let request = request.body(Empty::new()).map_err(|_| ErrorKind::Http)?;
    let response = client.request(request).await.map_err(|e| classify(&e))?;
    let status = response.status();
    response
        .into_body()
        .collect()
        .await
        .map_err(|_| ErrorKind::Body)?;
    Ok(status)
}

// === Report ===

/// Why scheduling stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Every request of the slice was scheduled.
    EndOfTrace,
    /// `--max-requests` were scheduled.
    MaxRequests,
    /// `--max-duration` passed.
    MaxDuration,
    /// Ctrl-C.
    Interrupted,
}

impl StopReason {
    fn text(self) -> &'static str {
        match self {
            StopReason::EndOfTrace => "end of trace",
            StopReason::MaxRequests => "--max-requests",
            StopReason::MaxDuration => "--max-duration",
            StopReason::Interrupted => "interrupt",
        }
    }
}

/// Latency quantiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Quantiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Highest.
    pub max: f64,
}

impl Quantiles {
    fn of(h: &Histogram<u64>) -> Quantiles {
        if h.is_empty() {
            return Quantiles::default();
        }
        let ms = |us: u64| us as f64 / 1_000.0;
        Quantiles {
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// Counts of one service, or of all of them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Counts {
    /// Requests of the slice after scaling, before --max-requests and --max-duration.
    pub planned: u64,
    /// Requests whose time came before the run stopped; `scheduled = ok + failed`.
    pub scheduled: u64,
    /// Requests handed to the HTTP client (scheduled minus those dropped at the in-flight cap).
    pub sent: u64,
    /// Answers with a 2xx status.
    pub ok: u64,
    /// Everything else: non-2xx answers and errors of every kind.
    pub failed: u64,
    /// Answers by status class: `1xx` … `5xx`.
    pub status: BTreeMap<String, u64>,
    /// Failures without an answer, by kind (only kinds that happened).
    pub errors: BTreeMap<String, u64>,
    /// Requests with no answer or error yet 1 s after their scheduled time.
    pub waited: u64,
    /// Scheduled time to the end of the answer's body, over answers of any status.
    pub latency_ms: Quantiles,
    /// Scheduled time to the moment the request was handed to the client: the load's own lateness.
    pub dispatch_lag_ms: Quantiles,
    /// `scheduled` over the scheduling window.
    pub scheduled_rps: f64,
    /// `sent` over the window in which they actually went out.
    pub achieved_rps: f64,
}

/// One trace service's counts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceCounts {
    /// The trace service.
    pub service: String,
    /// Its counts.
    #[serde(flatten)]
    pub counts: Counts,
}

/// What a load run did and saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadReport {
    /// The trace file.
    pub trace: String,
    /// The request URL template.
    pub target: String,
    /// `--scale`.
    pub scale: f64,
    /// `--speed`.
    pub speed: f64,
    /// Slice start, seconds of trace time.
    pub from_s: f64,
    /// Slice end, seconds of trace time.
    pub to_s: f64,
    /// Whether each request had its own connection.
    pub new_connection_per_request: bool,
    /// Why scheduling stopped.
    pub stopped_by: StopReason,
    /// Wall time over which requests were due.
    pub window_s: f64,
    /// Wall time of the whole run, the final wait for answers included.
    pub elapsed_s: f64,
    /// Every service together.
    pub total: Counts,
    /// Per trace service.
    pub services: Vec<ServiceCounts>,
}

/// Per-service numbers the scheduler keeps itself.
#[derive(Debug, Clone, Copy, Default)]
struct Dispatched {
    planned: u64,
    scheduled: u64,
    sent: u64,
}

fn counts(d: Dispatched, f: &Finished, window: f64, send_window: f64) -> Counts {
    let rate = |n: u64, w: f64| if w > 0.0 { n as f64 / w } else { 0.0 };
    Counts {
        planned: d.planned,
        scheduled: d.scheduled,
        sent: d.sent,
        ok: f.ok,
        failed: f.failed(),
        status: f
            .status
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("{}xx", i + 1), *n))
            .collect(),
        errors: ErrorKind::ALL
            .iter()
            .filter(|k| f.errors[**k as usize] > 0)
            .map(|k| (k.name().to_owned(), f.errors[*k as usize]))
            .collect(),
        waited: f.waited,
        latency_ms: Quantiles::of(&f.latency),
        dispatch_lag_ms: Quantiles::of(&f.lag),
        scheduled_rps: rate(d.scheduled, window),
        achieved_rps: rate(d.sent, send_window),
    }
}

impl LoadReport {
    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The report as a table for people.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "forecourt load: {} → {}  (scale {}, speed {}, trace {}s..{}s, {})",
            self.trace,
            self.target,
            self.scale,
            self.speed,
            self.from_s,
            self.to_s,
            if self.new_connection_per_request {
                "new connection per request"
            } else {
                "keep-alive"
            }
        );
        let _ = writeln!(
            out,
            "stopped by {} after a {:.2} s window; run took {:.2} s\n",
            self.stopped_by.text(),
            self.window_s,
            self.elapsed_s
        );
        let _ = writeln!(
            out,
            "{:<16} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "service",
            "planned",
            "scheduled",
            "sent",
            "ok",
            "failed",
            "waited",
            "sched/s",
            "sent/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms"
        );
        let rows = std::iter::once(("all", &self.total)).chain(
            self.services
                .iter()
                .map(|s| (s.service.as_str(), &s.counts)),
        );
        for (name, c) in rows.clone() {
            let l = &c.latency_ms;
            let _ = writeln!(
                out,
                "{name:<16} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7} {:>9.1} {:>9.1} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                c.planned,
                c.scheduled,
                c.sent,
                c.ok,
                c.failed,
                c.waited,
                c.scheduled_rps,
                c.achieved_rps,
                l.p50,
                l.p90,
                l.p99,
                l.p999,
                l.max
            );
        }
        let _ = writeln!(out);
        for (name, c) in rows {
            let status: Vec<String> = c
                .status
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(class, n)| format!("{class} {n}"))
                .collect();
            let errors: Vec<String> = c.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let _ = writeln!(
                out,
                "{name:<16} status: {:<28} errors: {}",
                if status.is_empty() {
                    "none".to_owned()
                } else {
                    status.join(", ")
                },
                if errors.is_empty() {
                    "none".to_owned()
                } else {
                    errors.join(", ")
                }
            );
        }
        let lag = &self.total.dispatch_lag_ms;
        let _ = writeln!(
            out,
            "\nlatency runs from each request's scheduled time; \"waited\" = no outcome 1 s after it.\n\
             dispatch lag (handed to the client − scheduled): p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
            lag.p50, lag.p99, lag.p999, lag.max
        );
        out
    }
}

// === The run ===

fn validate(args: &LoadArgs) -> anyhow::Result<()> {
    if !args.scale.is_finite() || args.scale < 0.0 {
        bail!("--scale must be a number ≥ 0, not {}", args.scale);
    }
    if !args.speed.is_finite() || args.speed <= 0.0 {
        bail!("--speed must be a number > 0, not {}", args.speed);
    }
    if args.max_in_flight == 0 {
        bail!("--max-in-flight must be at least 1");
    }
    if args.timeout.is_zero() {
        bail!("--timeout must be more than 0s");
    }
    Ok(())
}

/// Runs `forecourt load` and prints its report to stdout (progress goes to stderr).
pub fn main(args: &LoadArgs) -> anyhow::Result<()> {
    let report = run(args)?;
    let text = if args.json {
        report.to_json()
    } else {
        report.to_text()
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", text.trim_end())?;
    Ok(())
}

/// Replays the trace against the target and returns the report.
pub fn run(args: &LoadArgs) -> anyhow::Result<LoadReport> {
    validate(args)?;
    let trace = parse_trace(crate::forecast::open_trace(&args.trace)?)
        .with_context(|| format!("{}: not a trace", args.trace.display()))?;
    let plan = Plan::new(&trace, &args.services, args.from, args.to)?;
    drop(trace);
    let targets = Targets::new(&args.target, &args.path_template, &plan.services)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("unable to start the runtime")?;
    let report = runtime.block_on(drive(&plan, args, targets));
    // Requests left out past the final wait are already counted as unfinished.
    runtime.shutdown_background();
    report
}

/// Seconds → duration, clamped (negative is zero, too large is the maximum).
fn secs(x: f64) -> Duration {
    Duration::try_from_secs_f64(x.max(0.0)).unwrap_or(Duration::MAX)
}

/// The once-a-second progress line on stderr.
struct Progress {
    terminal: bool,
    next: Instant,
    last_sent: u64,
    shown: bool,
}

impl Progress {
    fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    fn show(&mut self, now: Instant, start: Instant, scheduled: u64, sent: u64, shared: &Shared) {
        while self.next <= now {
            self.next += Duration::from_secs(1);
        }
        let line = format!(
            "load {:>6.1}s  scheduled {scheduled}  sent {sent}  ok {}  failed {}  in flight {}  sending {}/s",
            now.saturating_duration_since(start).as_secs_f64(),
            shared.ok.load(Ordering::Relaxed),
            shared.failed.load(Ordering::Relaxed),
            shared.in_flight.load(Ordering::Relaxed),
            sent - self.last_sent,
        );
        self.last_sent = sent;
        let mut err = std::io::stderr().lock();
        let _ = if self.terminal {
            write!(err, "\r\x1b[2K{line}")
        } else {
            writeln!(err, "{line}")
        };
        self.shown = true;
    }

    fn finish(&self) {
        if self.terminal && self.shown {
            eprintln!();
        }
    }
}

async fn drive(plan: &Plan, args: &LoadArgs, targets: Targets) -> anyhow::Result<LoadReport> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(args.timeout));
    let mut builder = Client::builder(TokioExecutor::new());
    if args.new_connection_per_request {
        builder.pool_max_idle_per_host(0);
    }
    let client: HttpClient = builder.build(connector);
    let shared = Arc::new(Shared {
        services: plan
            .services
            .iter()
            .map(|_| {
                Ok(ServiceState {
                    in_flight: AtomicU64::new(0),
                    finished: Mutex::new(Finished::new()?),
                })
            })
            .collect::<anyhow::Result<_>>()?,
        in_flight: AtomicU64::new(0),
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        sample_origin: args.samples.as_ref().map(|_| Instant::now()),
    });
    // The wall-clock time of `sample_origin`, so samples line up with other processes' clocks.
    let origin_unix_us = micros(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    let targets = Arc::new(targets);
    let mut dispatched: Vec<Dispatched> = plan
        .planned(args.scale)
        .into_iter()
        .map(|planned| Dispatched {
            planned,
            ..Dispatched::default()
        })
        .collect();
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(interrupt);
    let mut interrupted = false;

    let start = Instant::now();
    let mut progress = Progress {
        terminal: std::io::stderr().is_terminal(),
        next: start + Duration::from_secs(1),
        last_sent: 0,
        shown: false,
    };
    let spin = if args.precise_timing {
        SPIN
    } else {
        Duration::ZERO
    };
    let mut schedule = plan.schedule(args.scale, args.spread, args.seed, args.max_requests);
    let mut pending = schedule.next();
    let (mut scheduled, mut sent) = (0u64, 0u64);
    let mut last_handed = start;
    let (stopped_by, window) = loop {
        let now = Instant::now();
        if progress.due(now) {
            progress.show(now, start, scheduled, sent, &shared);
        }
        let Some(slot) = pending else {
            break (StopReason::EndOfTrace, secs(plan.span() / args.speed));
        };
        let at = secs(slot.at / args.speed);
        if scheduled >= args.max_requests {
            break (StopReason::MaxRequests, at);
        }
        let due = start.checked_add(at).filter(|_| at < args.max_duration);
        let Some(due) = due else {
            break (StopReason::MaxDuration, args.max_duration);
        };
        if due > now + spin {
            tokio::select! {
                () = tokio::time::sleep_until((due - spin).min(progress.next)) => continue,
                () = &mut interrupt, if !interrupted => {
                    interrupted = true;
                    break (StopReason::Interrupted, now.saturating_duration_since(start));
                }
            }
        }
        // Only with --precise-timing: `spin` is zero otherwise.
        while Instant::now() < due {
            std::thread::yield_now();
        }
        pending = schedule.next();
        let n = scheduled;
        scheduled += 1;
        dispatched[slot.service].scheduled += 1;
        if shared.in_flight.load(Ordering::Relaxed) >= args.max_in_flight {
            shared.not_sent(slot.service, ErrorKind::InFlightCap);
            continue;
        }
        let Some(uri) = targets.uri(slot.service, n) else {
            shared.not_sent(slot.service, ErrorKind::Http);
            continue;
        };
        sent += 1;
        dispatched[slot.service].sent += 1;
        last_handed = now;
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        shared.services[slot.service]
            .in_flight
            .fetch_add(1, Ordering::Relaxed);
        let (client, shared) = (client.clone(), shared.clone());
        let (close, timeout, service) =
            (args.new_connection_per_request, args.timeout, slot.service);
        tokio::spawn(async move {
            let handed = Instant::now();
            let outcome = tokio::time::timeout(timeout, exchange(&client, uri, close))
                .await
                .unwrap_or(Err(ErrorKind::Timeout));
            shared.finish(service, due, handed, outcome);
        });
    };
    let window = window.min(args.max_duration);
    let send_window = window.max(last_handed.saturating_duration_since(start));

    // The answers still out: each is bounded by --timeout; one more second of slack.
    let give_up = Instant::now() + args.timeout + Duration::from_secs(1);
    while shared.in_flight.load(Ordering::Relaxed) > 0 {
        let now = Instant::now();
        if now >= give_up {
            break;
        }
        if progress.due(now) {
            progress.show(now, start, scheduled, sent, &shared);
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(5)) => {}
            () = &mut interrupt, if !interrupted => break,
        }
    }
    let elapsed = start.elapsed();
    progress.finish();

    let mut total_dispatched = Dispatched::default();
    let mut total = Finished::new()?;
    let mut services = Vec::with_capacity(plan.services.len());
    let mut samples = Vec::new();
    for (i, name) in plan.services.iter().enumerate() {
        let Some(mut finished) = shared.lock(i) else {
            continue;
        };
        // Still out: counted once, here; their tasks are dropped with the runtime.
        let unfinished = shared.services[i].in_flight.swap(0, Ordering::Relaxed);
        finished.errors[ErrorKind::Unfinished as usize] += unfinished;
        samples.push((name, std::mem::take(&mut finished.samples)));
        let snapshot = finished.clone();
        drop(finished);
        let d = dispatched[i];
        total_dispatched.planned += d.planned;
        total_dispatched.scheduled += d.scheduled;
        total_dispatched.sent += d.sent;
        total.add(&snapshot);
        services.push(ServiceCounts {
            service: name.clone(),
            counts: counts(
                d,
                &snapshot,
                window.as_secs_f64(),
                send_window.as_secs_f64(),
            ),
        });
    }
    if let Some(path) = &args.samples {
        write_samples(path, origin_unix_us, &samples)
            .with_context(|| format!("{}: cannot write the samples", path.display()))?;
    }
    Ok(LoadReport {
        trace: args.trace.display().to_string(),
        target: targets.display.clone(),
        scale: args.scale,
        speed: args.speed,
        from_s: plan.start,
        to_s: plan.end,
        new_connection_per_request: args.new_connection_per_request,
        stopped_by,
        window_s: window.as_secs_f64(),
        elapsed_s: elapsed.as_secs_f64(),
        total: counts(
            total_dispatched,
            &total,
            window.as_secs_f64(),
            send_window.as_secs_f64(),
        ),
        services,
    })
}

/// Writes `--samples`: one line per answered request, in service order, then in the order the
/// answers came back.
fn write_samples(
    path: &std::path::Path,
    origin_unix_us: u64,
    samples: &[(&String, Vec<Sample>)],
) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "service,scheduled_unix_us,latency_us,status")?;
    for (service, answers) in samples {
        for &(at, latency, status) in answers {
            let at = origin_unix_us.saturating_add(at);
            writeln!(out, "{service},{at},{latency},{status}")?;
        }
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn trace(text: &str) -> Trace {
        parse_trace(text.as_bytes()).unwrap()
    }

    const SAMPLE: &str = "t,service,count\n0,shop,20\n1,shop,40\n2,api,10\n";

    fn plan_of(text: &str) -> Plan {
        Plan::new(&trace(text), &[], Duration::ZERO, None).unwrap()
    }

    #[test]
    fn even_spread_places_request_i_at_i_over_n() {
        let plan = plan_of(SAMPLE);
        let slots: Vec<Slot> = plan.schedule(1.0, Spread::Even, 1, u64::MAX).collect();
        assert_eq!(slots.len(), 70);
        assert_eq!(slots[0].at, 0.0);
        assert!((slots[1].at - 0.05).abs() < 1e-12);
        assert!((slots[20].at - 1.0).abs() < 1e-12);
        assert!((slots[21].at - 1.025).abs() < 1e-12);
        assert!((slots[69].at - 2.9).abs() < 1e-12);
        assert!(slots.windows(2).all(|w| w[0].at <= w[1].at));
        assert_eq!(plan.services, ["shop", "api"]);
        assert_eq!(slots.iter().filter(|s| s.service == 1).count(), 10);
        assert_eq!(plan.span(), 3.0);
    }

    #[test]
    fn fractional_scale_carries_from_second_to_second() {
        let plan = plan_of(SAMPLE);
        assert_eq!(plan.planned(0.5), [30, 5]);
        assert_eq!(plan.planned(2.0), [120, 20]);
        let ones = plan_of("t,service,count\n0,a,1\n1,a,1\n2,a,1\n3,a,1\n4,a,1\n5,a,1\n6,a,1\n7,a,1\n8,a,1\n9,a,1\n");
        assert_eq!(ones.planned(0.3), [3]);
        assert_eq!(
            ones.planned(0.1),
            [1],
            "ten tenths make one despite rounding"
        );
        let seconds: Vec<f64> = ones
            .schedule(0.3, Spread::Even, 1, u64::MAX)
            .map(|s| s.at)
            .collect();
        // 0.3, 0.6, 0.9 → nothing; 1.2 → one (at t=3), …: deterministic.
        assert_eq!(seconds, [3.0, 6.0, 9.0]);
        assert_eq!(plan.planned(0.0), [0, 0]);
        assert_eq!(plan.schedule(0.0, Spread::Even, 1, u64::MAX).count(), 0);
    }

    #[test]
    fn random_spread_is_seeded_and_stays_inside_its_second() {
        let plan = plan_of(SAMPLE);
        let a: Vec<Slot> = plan.schedule(1.0, Spread::Random, 7, u64::MAX).collect();
        let b: Vec<Slot> = plan.schedule(1.0, Spread::Random, 7, u64::MAX).collect();
        let c: Vec<Slot> = plan.schedule(1.0, Spread::Random, 8, u64::MAX).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 70);
        assert!(a.windows(2).all(|w| w[0].at <= w[1].at));
        assert!(a[..20].iter().all(|s| (0.0..1.0).contains(&s.at)));
        assert!(a[20..60].iter().all(|s| (1.0..2.0).contains(&s.at)));
        assert!(a[60..]
            .iter()
            .all(|s| (2.0..3.0).contains(&s.at) && s.service == 1));
    }

    #[test]
    fn slices_filters_and_merges_rows() {
        let t = trace("t,service,count\n0,a,1\n5,a,2\n5,b,3\n5,a,4\n9,b,1\n");
        let p = Plan::new(
            &t,
            &[],
            Duration::from_secs(5),
            Some(Duration::from_secs(9)),
        )
        .unwrap();
        assert_eq!(p.rows, [(5, 0, 6), (5, 1, 3)]);
        assert_eq!(p.services, ["a", "b"]);
        let late = Plan::new(&t, &[], Duration::from_secs(6), None).unwrap();
        assert_eq!(late.services, ["b"], "a has no requests from 6 s on");
        assert_eq!(late.rows, [(9, 0, 1)]);
        assert_eq!((p.start, p.end), (5.0, 6.0));
        let first = p.schedule(1.0, Spread::Even, 1, u64::MAX).next().unwrap();
        assert_eq!(first.at, 0.0, "times run from the slice's start");

        let only_b = Plan::new(&t, &["b".to_owned()], Duration::ZERO, None).unwrap();
        assert_eq!(only_b.services, ["b"]);
        assert_eq!(only_b.rows, [(5, 0, 3), (9, 0, 1)]);
        assert_eq!(only_b.span(), 10.0);

        let fractional = Plan::new(&t, &[], Duration::from_millis(4_500), None).unwrap();
        let first = fractional
            .schedule(1.0, Spread::Even, 1, u64::MAX)
            .next()
            .unwrap();
        assert_eq!(first.at, 0.5);

        let unknown = Plan::new(&t, &["c".to_owned()], Duration::ZERO, None).unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "no service \"c\" in the trace (it has: a, b)"
        );
        assert!(Plan::new(&t, &[], Duration::from_secs(20), None).is_err());
        assert!(Plan::new(
            &t,
            &[],
            Duration::from_secs(2),
            Some(Duration::from_secs(1))
        )
        .is_err());
    }

    #[test]
    fn per_second_cap_keeps_the_spacing() {
        let p = plan_of("t,service,count\n0,a,1000\n1,a,1000\n");
        let slots: Vec<Slot> = p.schedule(1.0, Spread::Even, 1, 3).collect();
        assert_eq!(slots.len(), 6);
        assert!((slots[2].at - 0.002).abs() < 1e-12);
        assert_eq!(slots[3].at, 1.0);
    }

    #[test]
    fn targets_fill_the_template() {
        let services = ["shop".to_owned(), "a b/c".to_owned()];
        let t = Targets::new("http://127.0.0.1:8080/", DEFAULT_PATH_TEMPLATE, &services).unwrap();
        assert_eq!(
            t.uri(0, 5).unwrap().to_string(),
            "http://127.0.0.1:8080/shop/"
        );
        assert_eq!(
            t.uri(1, 5).unwrap().to_string(),
            "http://127.0.0.1:8080/a%20b%2Fc/"
        );
        let t = Targets::new("http://h:1/base", "/{service}/items/{seq}?x=1", &services).unwrap();
        assert_eq!(
            t.uri(0, 42).unwrap().to_string(),
            "http://h:1/base/shop/items/42?x=1"
        );
        assert!(t.uri(9, 0).is_none());
        for (target, template, error) in [
            ("https://h", "/", "only http is supported"),
            ("h:80", "/", "needs a scheme"),
            ("http://h?q=1", "/", "must not have a query"),
            ("http://h", "x", "must start with '/'"),
            ("http://h", "/{service} x", "invalid URL"),
        ] {
            let e = format!(
                "{:#}",
                Targets::new(target, template, &services).unwrap_err()
            );
            assert!(e.contains(error), "{target} {template}: {e}");
        }
    }

    #[test]
    fn report_counts_add_up() {
        let mut f = Finished::new().unwrap();
        f.ok = 7;
        f.status = [0, 7, 0, 2, 1];
        f.errors[ErrorKind::Refused as usize] = 3;
        f.errors[ErrorKind::InFlightCap as usize] = 1;
        for us in [1_000, 2_000, 3_000] {
            f.latency.record(us).unwrap();
        }
        let d = Dispatched {
            planned: 20,
            scheduled: 14,
            sent: 13,
        };
        let c = counts(d, &f, 2.0, 2.6);
        assert_eq!(c.failed, 7);
        assert_eq!(c.ok + c.failed, c.scheduled);
        assert_eq!(c.status["2xx"], 7);
        assert_eq!(c.status["1xx"], 0);
        assert_eq!(c.errors.len(), 2);
        assert_eq!(c.errors["connection_refused"], 3);
        assert_eq!(c.scheduled_rps, 7.0);
        assert_eq!(c.achieved_rps, 5.0);
        assert!((c.latency_ms.p50 - 2.0).abs() < 0.01);
        assert!((c.latency_ms.max - 3.0).abs() < 0.01);
        assert_eq!(c.dispatch_lag_ms, Quantiles::default());
        let mut all = Finished::new().unwrap();
        all.add(&f);
        all.add(&f);
        assert_eq!(all.failed(), 14);
        assert_eq!(all.latency.len(), 6);
    }

    #[test]
    fn classifies_a_refused_connection() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let kind = runtime.block_on(async {
            let client: HttpClient =
                Client::builder(TokioExecutor::new()).build(HttpConnector::new());
            let uri: Uri = format!("http://127.0.0.1:{port}/").parse().unwrap();
            exchange(&client, uri, false).await.unwrap_err()
        });
        assert_eq!(kind, ErrorKind::Refused);
    }
}
