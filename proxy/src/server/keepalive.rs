//! Downstream HTTP/1 connections that cost little while they wait for their next request.
//!
//! Pingora's own connection loop keeps a keep-alive connection inside the proxy's request future
//! while it waits: that future is as large as its largest state (the whole proxy pipeline), plus
//! a 4 KiB header buffer allocated before the first byte arrives. Measured in `benches/compare`,
//! that was about 24 KiB per idle connection. [`KeepAliveApp`] runs the same Pingora request
//! path, but between requests it holds only the socket and a small future: it waits for the
//! first bytes of the next request itself, allocating their buffer only when they are there,
//! and hands them to Pingora's parser as the start of the request. No extra system call is made.
//!
//! It also reads on until the request's header block is complete, within a header timeout from
//! its first byte, so a client that trickles its header (slowloris) is answered `408` and closed
//! instead of holding a connection open at one byte per read timeout.

use std::future::{poll_fn, Future as _};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// How long a keep-alive connection may wait for its next request (Pingora's default).
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);

/// Bytes read for the start of a request: Pingora's initial header buffer. A longer header is
/// read on into the same buffer by Pingora's parser.
const FIRST_READ_BYTES: usize = 4096;

/// Serves plain HTTP/1.x connections with the HTTP application `A` (Forecourt's proxy), holding
/// only the socket between the requests of a keep-alive connection, and giving every request
/// header a deadline (a slowloris client is answered 408 and closed).
pub struct KeepAliveApp<A> {
    /// The HTTP application.
    pub app: Arc<A>,
    /// How long a header may take and how large it may grow (read per request: reloadable).
    pub limits: Arc<dyn HeaderLimits>,
}

/// The limits on a request header's arrival, read for every request.
pub trait HeaderLimits: Send + Sync {
    /// How long a request header may take from its first byte to its end, and the bytes of header
    /// read before giving the request to the parser anyway (it refuses it). Read once a request.
    fn header_limits(&self) -> (Duration, usize);
    /// Called when a client's header did not arrive in time (for metrics).
    fn header_timed_out(&self) {}
}

/// Fixed header limits: for the bare pass-through example and tests.
#[derive(Debug, Clone, Copy)]
pub struct FixedHeaderLimits {
    /// How long a request header may take.
    pub timeout: Duration,
    /// Bytes of header read before handing it on.
    pub max_bytes: usize,
}

impl HeaderLimits for FixedHeaderLimits {
    fn header_limits(&self) -> (Duration, usize) {
        (self.timeout, self.max_bytes)
    }
}

/// What a client whose header took too long is told before the connection closes.
const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";

/// Where the header block ends in `buf` (after its blank line), searching from `from`.
fn header_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    let window = buf.get(start..)?;
    window
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| start + i + 2)
        .or_else(|| {
            window
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|i| start + i + 4)
        })
}

/// Reads on until `buf` holds a whole header block, or `max_bytes` of it, before `deadline`.
/// False when the deadline passed or the client went away first.
async fn rest_of_header(
    stream: &mut Stream,
    buf: &mut BytesMut,
    deadline: tokio::time::Instant,
    max_bytes: usize,
) -> bool {
    let mut searched = 0;
    loop {
        if header_end(buf, searched).is_some() || buf.len() > max_bytes {
            return true;
        }
        searched = buf.len();
        if buf.capacity() == buf.len() {
            buf.reserve(FIRST_READ_BYTES);
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return false,
        }
    }
}

/// What the wait for a request's first bytes ended with.
enum NextRequest {
    /// The first bytes of a request.
    Bytes(BytesMut),
    /// The client closed the connection, the wait timed out, the server is shutting down, or
    /// the read failed: close the connection.
    Close,
}

/// Waits until `stream` has bytes to read and reads them into a buffer allocated only then.
/// A poll that finds nothing to read frees its buffer again, so a waiting connection holds none.
async fn first_bytes(stream: &mut Stream) -> std::io::Result<BytesMut> {
    poll_fn(|cx| {
        let mut buf = BytesMut::with_capacity(FIRST_READ_BYTES);
        let poll = pin!(stream.read_buf(&mut buf)).poll(cx);
        poll.map_ok(|_| buf)
    })
    .await
}

/// Waits for the next request on `stream` for up to `timeout`, giving up on shutdown.
async fn next_request(
    stream: &mut Stream,
    timeout: Duration,
    shutdown: &ShutdownWatch,
) -> NextRequest {
    let mut shutdown = shutdown.clone();
    if *shutdown.borrow() {
        return NextRequest::Close;
    }
    tokio::select! {
        read = tokio::time::timeout(timeout, first_bytes(stream)) => match read {
            Ok(Ok(bytes)) if !bytes.is_empty() => NextRequest::Bytes(bytes),
            _ => NextRequest::Close,
        },
        _ = shutdown.changed() => NextRequest::Close,
    }
}

#[async_trait]
impl<A> ServerApp for KeepAliveApp<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut persistent: Option<HttpPersistentSettings> = None;
        loop {
            let NextRequest::Bytes(mut first) =
                next_request(&mut stream, KEEPALIVE_TIMEOUT, shutdown).await
            else {
                return None;
            };
            // The whole header must arrive within the header timeout of its first byte.
            let (timeout, max_bytes) = self.limits.header_limits();
            let deadline = tokio::time::Instant::now() + timeout;
            if !rest_of_header(&mut stream, &mut first, deadline, max_bytes).await {
                self.limits.header_timed_out();
                let _ = stream.write_all(REQUEST_TIMEOUT).await;
                let _ = stream.flush().await;
                return None;
            }
            let mut session = ServerSession::new_http1(stream);
            match persistent.take() {
                Some(settings) => settings.apply_to_session(&mut session),
                None => session.set_keepalive(Some(KEEPALIVE_TIMEOUT.as_secs())),
            }
            if *shutdown.borrow() {
                // Answer this request, then close: the server is going away.
                session.set_keepalive(None);
            }
            session.set_pipelined_prefix(first);
            let reused = self.app.process_new_http(session, shutdown).await?;
            let (next, settings) = reused.consume();
            stream = next;
            persistent = settings;
        }
    }

    async fn cleanup(&self) {
        self.app.http_cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_end_of_a_header_block_with_crlf_or_bare_lf() {
        let crlf = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody";
        assert_eq!(header_end(crlf, 0), Some(crlf.len() - 4));
        let lf = b"GET / HTTP/1.1\nHost: x\n\n";
        assert_eq!(header_end(lf, 0), Some(lf.len()));
        assert_eq!(header_end(b"GET / HTTP/1.1\r\nHost: x\r\n", 0), None);
        // The end is found when it straddles two reads.
        let split = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(header_end(split, split.len() - 2), Some(split.len()));
    }
}
