//! Forecourt's sample backend: a small HTTP server for demos, tests and benchmarks.
//!
//! ```text
//! GET  /healthz          200 "ok"
//! GET  /bytes/{n}        n bytes, streamed in 64 KiB chunks (bounded memory)
//! ANY  /upload           reads the whole body as it streams, answers its length
//! GET  /status/{code}    answers that status
//! GET  /sleep/{ms}       answers after ms milliseconds
//! GET  /echo             the request's method, path and headers as JSON
//! GET  (Upgrade)         101 Switching Protocols, then echoes bytes back
//! ANY  anything else     200 "hello from {port}"
//!
//! Endpoints are found below any path prefix: `/shop/bytes/10` is `/bytes/10`.
//! ```
//! Every response carries `x-instance: {port}` so tests can tell instances apart.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
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
const ENDPOINTS: [&str; 6] = ["healthz", "bytes", "upload", "status", "sleep", "echo"];

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

async fn answer(port: u16, mut req: Request<Incoming>) -> Response<ResponseBody> {
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
    // Endpoints may sit below any prefix (`/shop/bytes/10`), as a routed service sees them.
    let mut segments = path
        .split('/')
        .filter(|s| !s.is_empty())
        .skip_while(|s| !ENDPOINTS.contains(s));
    match (segments.next().unwrap_or(""), segments.next()) {
        ("healthz", None) => reply(port, StatusCode::OK, full("ok\n")),
        ("bytes", Some(n)) => match n.parse::<u64>() {
            Ok(n) => reply(
                port,
                StatusCode::OK,
                RepeatBody {
                    remaining: n,
                    chunk: Bytes::from(vec![b'x'; 64 * 1024]),
                }
                .boxed(),
            ),
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
        _ => reply(port, StatusCode::OK, full(format!("hello from {port}\n"))),
    }
}

/// Runs the sample backend until the process ends.
pub async fn run(options: BackendOptions) -> std::io::Result<()> {
    if !options.boot_delay.is_zero() {
        tracing::info!(delay = ?options.boot_delay, "booting");
        tokio::time::sleep(options.boot_delay).await;
    }
    let listener = TcpListener::bind(options.listen).await?;
    let port = listener.local_addr()?.port();
    tracing::info!(port, "sample backend listening");
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
        let latency = options.latency;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                if !latency.is_zero() && !req.uri().path().ends_with("/healthz") {
                    tokio::time::sleep(latency).await;
                }
                Ok::<_, Infallible>(answer(port, req).await)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}
