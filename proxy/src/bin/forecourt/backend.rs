//! Forecourt's sample backend: a small HTTP server for demos, tests and benchmarks.
//!
//! ```text
//! GET  /healthz          200 "ok"
//! GET  /bytes/{n}        n bytes, streamed in 64 KiB chunks (bounded memory)
//! ANY  /upload           reads the whole body as it streams, answers its length
//! GET  /status/{code}    answers that status
//! GET  /sleep/{ms}       answers after ms milliseconds
//! GET  /echo             the request's method, path and headers as JSON
//! GET  /stats            what this process served, as JSON (below)
//! GET  (Upgrade)         101 Switching Protocols, then echoes bytes back
//! ANY  anything else     200 "hello from {port}", then " for {path?query}" unless it is `/`
//!
//! Endpoints are found below any path prefix: `/shop/bytes/10` is `/bytes/10`.
//! ```
//! Every response carries `x-instance: {port}` so tests can tell instances apart.
//!
//! For cache tests, the hello answer and `/bytes/{n}` copy the query parameters `cache-control`,
//! `vary`, `set-cookie` and `etag` (URL-decoded) into those response headers; with `etag`, a
//! request whose `If-None-Match` names it gets `304 Not Modified` and no body.
//!
//! `/stats` counts every request but `/healthz` and `/stats`:
//! `{"requests": n, "warm_requests": n, "by_path": {"/a?x=1": 3, ..}, "order": ["GET /a?x=1", ..]}`
//! (`warm_requests` carried `x-forecourt-warm`; `by_path` keeps 10,000 paths with query, `order`
//! the first 1,000 requests in arrival order).
//!
//! To measure warming, the backend can be cold: `--boot-cost` slows the first `--boot-requests`
//! requests after boot, `--cold-key-cost` the first request for each path with query (a cold
//! per-key cache of the 10,000 paths `by_path` keeps; once it is full, new paths stay cold).
//! `/healthz` and `/stats` neither pay nor count.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Settings of the sample backend.
#[derive(Debug, Clone)]
pub struct BackendOptions {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Wait this long before listening (a real cold start).
    pub boot_delay: Duration,
    /// Added to every answer except `/healthz` (a slow instance, for balancing experiments).
    pub latency: Duration,
    /// Added once, to the first request for each path with query (a cold per-key cache).
    pub cold_key_cost: Duration,
    /// Added to each of the first `boot_requests` requests after boot (cold JIT, connection pools).
    pub boot_cost: Duration,
    /// How many requests after boot pay `boot_cost`.
    pub boot_requests: u64,
}

/// Paths (with query) `/stats` counts one by one, and the cold-key cost remembers.
const MAX_PATHS: usize = 10_000;
/// Requests `/stats` lists in arrival order.
const MAX_ORDER: usize = 1_000;
/// The header warm requests carry (see `warm.rs`).
const WARM_HEADER: &str = "x-forecourt-warm";

/// What this process served, for `/stats` and the cold costs.
#[derive(Debug, Default)]
struct Stats {
    /// Requests counted (all but `/healthz` and `/stats`).
    requests: u64,
    /// Of those, requests that carried [`WARM_HEADER`].
    warm_requests: u64,
    /// Requests per path with query, at most [`MAX_PATHS`] paths.
    by_path: HashMap<String, u64>,
    /// The first [`MAX_ORDER`] requests as "METHOD path?query".
    order: Vec<String>,
}

/// One counted request's place: its rank since boot and whether its path was new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Arrival {
    /// 0 for the first request after boot.
    index: u64,
    /// The first request for this path with query (or a path beyond [`MAX_PATHS`]).
    cold_key: bool,
}

// === impl Stats ===

impl Stats {
    /// Counts one request.
    fn record(&mut self, method: &str, path: &str, warm: bool) -> Arrival {
        let index = self.requests;
        self.requests += 1;
        if warm {
            self.warm_requests += 1;
        }
        if self.order.len() < MAX_ORDER {
            self.order.push(format!("{method} {path}"));
        }
        let cold_key = match self.by_path.get_mut(path) {
            Some(n) => {
                *n += 1;
                false
            }
            None => {
                if self.by_path.len() < MAX_PATHS {
                    self.by_path.insert(path.to_owned(), 1);
                }
                true
            }
        };
        Arrival { index, cold_key }
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "requests": self.requests,
            "warm_requests": self.warm_requests,
            "by_path": &self.by_path,
            "order": &self.order,
        })
    }
}

/// State shared by every connection of one backend.
#[derive(Debug)]
struct Shared {
    port: u16,
    options: BackendOptions,
    stats: Mutex<Stats>,
}

// === impl Shared ===

impl Shared {
    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        // A panic while counting cannot leave the counters inconsistent enough to matter.
        self.stats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a request (unless it is `/healthz` or `/stats`) and waits its cold costs.
    async fn arrive(&self, req: &Request<Incoming>) {
        if matches!(
            endpoint(req.uri().path()),
            ("healthz", None) | ("stats", None)
        ) {
            return;
        }
        let path = path_and_query(req);
        let warm = req.headers().contains_key(WARM_HEADER);
        let arrival = self.stats().record(req.method().as_str(), path, warm);
        let options = &self.options;
        let mut cost = Duration::ZERO;
        if arrival.index < options.boot_requests {
            cost += options.boot_cost;
        }
        if arrival.cold_key {
            cost += options.cold_key_cost;
        }
        if !cost.is_zero() {
            tokio::time::sleep(cost).await;
        }
    }
}

/// A body of `remaining` bytes sent in fixed chunks, so huge downloads use no memory.
struct RepeatBody {
    remaining: u64,
    chunk: Bytes,
}

impl Body for RepeatBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = this.remaining.min(this.chunk.len() as u64) as usize;
        this.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(this.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.remaining)
    }
}

/// Path segments that name an endpoint.
const ENDPOINTS: [&str; 7] = [
    "healthz", "bytes", "upload", "status", "sleep", "echo", "stats",
];

/// The endpoint a path names and its argument: endpoints may sit below any prefix
/// (`/shop/bytes/10`), as a routed service sees them; `("", None)` when none is named.
fn endpoint(path: &str) -> (&str, Option<&str>) {
    let mut segments = path
        .split('/')
        .filter(|s| !s.is_empty())
        .skip_while(|s| !ENDPOINTS.contains(s));
    (segments.next().unwrap_or(""), segments.next())
}

/// The request's path with query, as the client sent it.
fn path_and_query<B>(req: &Request<B>) -> &str {
    req.uri().path_and_query().map_or("/", |p| p.as_str())
}

/// Query parameters copied into response headers of the same name.
const HEADER_PARAMS: [(&str, HeaderName); 4] = [
    ("cache-control", http::header::CACHE_CONTROL),
    ("vary", http::header::VARY),
    ("set-cookie", http::header::SET_COOKIE),
    ("etag", http::header::ETAG),
];

/// Decodes `application/x-www-form-urlencoded` text: `%XX` escapes and `+` for space; a `%`
/// without two hex digits stays as it is.
fn url_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The response headers a query asks for (see the module docs); values that are not valid
/// header values are skipped.
fn requested_headers(query: Option<&str>) -> Vec<(HeaderName, HeaderValue)> {
    let Some(query) = query else {
        return Vec::new();
    };
    query
        .split('&')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            let key = url_decode(key);
            let (_, name) = HEADER_PARAMS
                .iter()
                .find(|(param, _)| key.eq_ignore_ascii_case(param))?;
            let value = HeaderValue::from_str(&url_decode(value)).ok()?;
            Some((name.clone(), value))
        })
        .collect()
}

/// Whether the request's `If-None-Match` names the ETag among `headers`.
fn not_modified<B>(req: &Request<B>, headers: &[(HeaderName, HeaderValue)]) -> bool {
    let Some((_, etag)) = headers.iter().find(|(n, _)| n == http::header::ETAG) else {
        return false;
    };
    let weak = |tag: &[u8]| tag.strip_prefix(b"W/").unwrap_or(tag).to_vec();
    let etag = weak(etag.as_bytes());
    req.headers()
        .get_all(http::header::IF_NONE_MATCH)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|tag| tag.trim_ascii())
        .any(|tag| tag == b"*" || weak(tag) == etag)
}

/// Adds the requested headers to a response.
fn with_headers(
    mut response: Response<ResponseBody>,
    headers: Vec<(HeaderName, HeaderValue)>,
) -> Response<ResponseBody> {
    for (name, value) in headers {
        if name == http::header::SET_COOKIE {
            response.headers_mut().append(name, value);
        } else {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

type ResponseBody = BoxBody<Bytes, Infallible>;

fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into()).boxed()
}

fn reply(port: u16, status: StatusCode, body: ResponseBody) -> Response<ResponseBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("x-instance", http::HeaderValue::from(port));
    response
}

async fn answer(shared: &Shared, mut req: Request<Incoming>) -> Response<ResponseBody> {
    let port = shared.port;
    if req.headers().contains_key(http::header::UPGRADE) {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 4096];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut response = reply(port, StatusCode::SWITCHING_PROTOCOLS, full(Bytes::new()));
        let protocol = req
            .headers()
            .get(http::header::UPGRADE)
            .cloned()
            .unwrap_or(http::HeaderValue::from_static("websocket"));
        response
            .headers_mut()
            .insert(http::header::UPGRADE, protocol);
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
        return response;
    }
    let path = req.uri().path().to_owned();
    // Asked-for cache headers, and the 304 they may earn, apply to the hello answer and /bytes.
    let cacheable = |req: &Request<Incoming>| {
        let headers = requested_headers(req.uri().query());
        let unchanged = not_modified(req, &headers);
        (headers, unchanged)
    };
    match endpoint(&path) {
        ("healthz", None) => reply(port, StatusCode::OK, full("ok\n")),
        ("bytes", Some(n)) => match n.parse::<u64>() {
            Ok(n) => {
                let (headers, unchanged) = cacheable(&req);
                if unchanged {
                    let empty = full(Bytes::new());
                    return with_headers(reply(port, StatusCode::NOT_MODIFIED, empty), headers);
                }
                let body = RepeatBody {
                    remaining: n,
                    chunk: Bytes::from(vec![b'x'; 64 * 1024]),
                };
                with_headers(reply(port, StatusCode::OK, body.boxed()), headers)
            }
            Err(_) => reply(port, StatusCode::BAD_REQUEST, full("bad length\n")),
        },
        ("upload", None) => {
            let mut total: u64 = 0;
            let mut body = req.into_body();
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => total += frame.data_ref().map_or(0, |d| d.len() as u64),
                    Err(_) => return reply(port, StatusCode::BAD_REQUEST, full("body failed\n")),
                }
            }
            reply(port, StatusCode::OK, full(format!("{total}\n")))
        }
        ("status", Some(code)) => match code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
        {
            Some(status) => reply(port, status, full(format!("status {}\n", status.as_u16()))),
            None => reply(port, StatusCode::BAD_REQUEST, full("bad status\n")),
        },
        ("sleep", Some(ms)) => match ms.parse::<u64>() {
            Ok(ms) => {
                tokio::time::sleep(Duration::from_millis(ms.min(600_000))).await;
                reply(port, StatusCode::OK, full("slept\n"))
            }
            Err(_) => reply(port, StatusCode::BAD_REQUEST, full("bad duration\n")),
        },
        ("echo", None) => {
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
                .collect();
            let body = serde_json::json!({
                "method": req.method().as_str(),
                "path": req.uri().to_string(),
                "headers": headers,
            });
            reply(port, StatusCode::OK, full(body.to_string()))
        }
        ("stats", None) => {
            let body = shared.stats().to_json().to_string();
            let mut response = reply(port, StatusCode::OK, full(body));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        _ => {
            let (headers, unchanged) = cacheable(&req);
            if unchanged {
                let empty = full(Bytes::new());
                return with_headers(reply(port, StatusCode::NOT_MODIFIED, empty), headers);
            }
            let body = match path_and_query(&req) {
                "/" => format!("hello from {port}\n"),
                asked => format!("hello from {port} for {asked}\n"),
            };
            with_headers(reply(port, StatusCode::OK, full(body)), headers)
        }
    }
}

/// Runs the sample backend until the process ends.
pub async fn run(options: BackendOptions) -> std::io::Result<()> {
    if !options.boot_delay.is_zero() {
        tracing::info!(delay = ?options.boot_delay, "booting");
        tokio::time::sleep(options.boot_delay).await;
    }
    let listener = TcpListener::bind(options.listen).await?;
    serve(listener, options).await
}

/// Answers connections on `listener` until the process ends.
async fn serve(listener: TcpListener, options: BackendOptions) -> std::io::Result<()> {
    let port = listener.local_addr()?.port();
    tracing::info!(port, "sample backend listening");
    let shared = Arc::new(Shared {
        port,
        options,
        stats: Mutex::new(Stats::default()),
    });
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let shared = Arc::clone(&shared);
                async move {
                    shared.arrive(&req).await;
                    let latency = shared.options.latency;
                    if !latency.is_zero() && !req.uri().path().ends_with("/healthz") {
                        tokio::time::sleep(latency).await;
                    }
                    Ok::<_, Infallible>(answer(&shared, req).await)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::net::TcpStream;
    use tokio::time::{timeout, Instant};

    const WAIT: Duration = Duration::from_secs(10);

    fn options() -> BackendOptions {
        BackendOptions {
            listen: ([127, 0, 0, 1], 0).into(),
            boot_delay: Duration::ZERO,
            latency: Duration::ZERO,
            cold_key_cost: Duration::ZERO,
            boot_cost: Duration::ZERO,
            boot_requests: 0,
        }
    }

    async fn start(options: BackendOptions) -> SocketAddr {
        let listener = TcpListener::bind(options.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, options));
        addr
    }

    #[derive(Debug)]
    struct Answer {
        status: u16,
        /// Lowercase names.
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Answer {
        fn header(&self, name: &str) -> Vec<&str> {
            self.headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect()
        }
    }

    /// One request on its own connection (`Connection: close`).
    async fn send(
        addr: SocketAddr,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Answer {
        let exchange = async {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let mut request = format!("{method} {target} HTTP/1.1\r\nHost: test\r\n");
            for (name, value) in headers {
                request.push_str(&format!("{name}: {value}\r\n"));
            }
            request.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await.unwrap();
            String::from_utf8(answer).unwrap()
        };
        let text = timeout(WAIT, exchange).await.unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let mut lines = head.lines();
        let status = lines.next().unwrap()[9..12].parse().unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(": "))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.to_owned()))
            .collect();
        Answer {
            status,
            headers,
            body: body.to_owned(),
        }
    }

    /// How long one GET takes.
    async fn timed_get(addr: SocketAddr, target: &str) -> Duration {
        let started = Instant::now();
        assert_eq!(send(addr, "GET", target, &[]).await.status, 200);
        started.elapsed()
    }

    async fn stats(addr: SocketAddr) -> serde_json::Value {
        serde_json::from_str(&send(addr, "GET", "/stats", &[]).await.body).unwrap()
    }

    #[tokio::test]
    async fn cold_costs_are_paid_once_per_key_and_by_the_first_requests() {
        let cost = Duration::from_millis(300);
        let addr = start(BackendOptions {
            cold_key_cost: cost,
            boot_cost: cost,
            boot_requests: 2,
            ..options()
        })
        .await;
        // /healthz pays nothing and does not count toward the boot requests.
        assert!(timed_get(addr, "/healthz").await < cost);
        assert!(timed_get(addr, "/shop/healthz").await < cost);
        let boot_and_cold = timed_get(addr, "/a").await;
        assert!(boot_and_cold >= 2 * cost, "{boot_and_cold:?}");
        let boot_only = timed_get(addr, "/a").await;
        assert!(boot_only >= cost && boot_only < 2 * cost, "{boot_only:?}");
        assert!(timed_get(addr, "/a").await < cost, "warm key after boot");
        let cold_only = timed_get(addr, "/b").await;
        assert!(cold_only >= cost && cold_only < 2 * cost, "{cold_only:?}");
        // The query is part of the key.
        assert!(timed_get(addr, "/a?x=1").await >= cost);
        assert!(timed_get(addr, "/a?x=1").await < cost);
        let stats = stats(addr).await;
        assert_eq!(stats["requests"], 6);
        assert_eq!(
            stats["by_path"],
            serde_json::json!({"/a": 3, "/b": 1, "/a?x=1": 2})
        );
    }

    #[tokio::test]
    async fn stats_count_requests_in_order_with_warm_ones_apart() {
        let addr = start(options()).await;
        send(addr, "GET", "/a", &[]).await;
        send(addr, "POST", "/shop/warmup", &[(WARM_HEADER, "1")]).await;
        send(addr, "GET", "/healthz", &[]).await;
        send(addr, "GET", "/shop/stats", &[]).await;
        send(addr, "GET", "/b?x=1", &[(WARM_HEADER, "1")]).await;
        send(addr, "GET", "/bytes/3", &[]).await;
        send(addr, "GET", "/a", &[]).await;
        let stats = stats(addr).await;
        assert_eq!(stats["requests"], 5);
        assert_eq!(stats["warm_requests"], 2);
        assert_eq!(
            stats["order"],
            serde_json::json!([
                "GET /a",
                "POST /shop/warmup",
                "GET /b?x=1",
                "GET /bytes/3",
                "GET /a"
            ])
        );
        assert_eq!(
            stats["by_path"],
            serde_json::json!({"/a": 2, "/shop/warmup": 1, "/b?x=1": 1, "/bytes/3": 1})
        );
    }

    #[test]
    fn stats_stay_bounded() {
        let mut stats = Stats::default();
        for i in 0..MAX_PATHS + 5 {
            let arrival = stats.record("GET", &format!("/k/{i}"), false);
            assert!(arrival.cold_key);
            assert_eq!(arrival.index, i as u64);
        }
        assert_eq!(stats.by_path.len(), MAX_PATHS);
        assert_eq!(stats.order.len(), MAX_ORDER);
        assert_eq!(stats.order[1], "GET /k/1");
        // Once full, a new path stays cold; a kept one warms.
        assert!(
            stats
                .record("GET", &format!("/k/{MAX_PATHS}"), false)
                .cold_key
        );
        assert!(!stats.record("GET", "/k/0", false).cold_key);
        assert_eq!(stats.requests, MAX_PATHS as u64 + 7);
    }

    #[tokio::test]
    async fn query_parameters_become_cache_headers_and_the_etag_earns_a_304() {
        let addr = start(options()).await;
        let port = addr.port();
        // `/` with no query answers exactly as it always did (a 16-byte body on port 8080).
        assert_eq!(
            send(addr, "GET", "/", &[]).await.body,
            format!("hello from {port}\n")
        );
        let target = "/e?cache-control=max-age%3D60%2C+public&vary=accept-language\
                      &set-cookie=a%3D1&set-cookie=b%3D2&etag=%22v1%22";
        let ok = send(addr, "GET", target, &[]).await;
        assert_eq!(ok.status, 200);
        assert_eq!(ok.body, format!("hello from {port} for {target}\n"));
        assert_eq!(ok.header("cache-control"), ["max-age=60, public"]);
        assert_eq!(ok.header("vary"), ["accept-language"]);
        assert_eq!(ok.header("set-cookie"), ["a=1", "b=2"]);
        assert_eq!(ok.header("etag"), ["\"v1\""]);
        let unchanged = send(addr, "GET", target, &[("If-None-Match", "\"v0\", \"v1\"")]).await;
        assert_eq!((unchanged.status, unchanged.body.as_str()), (304, ""));
        assert_eq!(unchanged.header("etag"), ["\"v1\""]);
        let changed = send(addr, "GET", target, &[("If-None-Match", "\"v2\"")]).await;
        assert_eq!(changed.status, 200);
        // No etag parameter: If-None-Match is ignored.
        let plain = send(addr, "GET", "/p", &[("If-None-Match", "*")]).await;
        assert_eq!((plain.status, plain.header("etag").len()), (200, 0));

        let bytes = send(
            addr,
            "GET",
            "/bytes/5?etag=W%2F%22b%22&cache-control=no-cache",
            &[],
        )
        .await;
        assert_eq!((bytes.status, bytes.body.as_str()), (200, "xxxxx"));
        assert_eq!(bytes.header("cache-control"), ["no-cache"]);
        assert_eq!(bytes.header("etag"), ["W/\"b\""]);
        let revalidated = send(
            addr,
            "GET",
            "/bytes/5?etag=W%2F%22b%22",
            &[("If-None-Match", "\"b\"")],
        )
        .await;
        assert_eq!((revalidated.status, revalidated.body.as_str()), (304, ""));
        // Other endpoints ignore the parameters.
        let echo = send(addr, "GET", "/echo?etag=%22e%22", &[]).await;
        assert!(echo.header("etag").is_empty());
    }

    #[test]
    fn url_decoding() {
        assert_eq!(url_decode("a%20b+c"), "a b c");
        assert_eq!(url_decode("%E2%82%ACx"), "€x");
        assert_eq!(url_decode("100%"), "100%");
        assert_eq!(url_decode("%zz%4"), "%zz%4");
        assert_eq!(url_decode(""), "");
        assert!(
            requested_headers(Some("etag=%0A")).is_empty(),
            "not a header value"
        );
        assert!(requested_headers(Some("x=1&etag")).is_empty());
        assert_eq!(requested_headers(Some("ETag=1")).len(), 1);
    }
}
