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
//! its first byte — for every request of the connection, not only the first — so a client that
//! trickles its header (slowloris) is answered `408` and closed instead of holding a connection
//! open at one byte per read timeout; a header that passes `max_header_bytes` without ending is
//! answered `431` and closed at once.
//!
//! On shutdown (graceful upgrade) an idle keep-alive connection is closed, but a request whose
//! bytes already arrived is served first, and a new connection is given a short grace to send
//! its first request: a connection accepted just before the shutdown is never closed unread.

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
    /// Called when a client's header grew past the limit without ending (for metrics).
    fn header_too_large(&self) {}
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

/// What a client whose header grew past the limit without ending is told before the close.
const HEADER_TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 37\r\n\r\n{\"error\":\"request header too large\"}";

/// How long a connection accepted as the server shuts down may take to send its first request.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

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

/// How reading a request's header block ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderRead {
    /// The whole header block is in the buffer (its size is for the parser to judge).
    Complete,
    /// More than `max_bytes` arrived without the header's end: answer 431 and close.
    TooLarge,
    /// The deadline passed first: answer 408 and close.
    TimedOut,
    /// The client went away or the read failed: close.
    Closed,
}

/// Where a header block being read stands: checked after every read, it searches only the new
/// bytes (and the three before them, for an end split over two reads). Pure, for the fuzzer.
#[derive(Debug, Clone, Copy)]
pub struct HeaderScan {
    searched: usize,
    max_bytes: usize,
}

impl HeaderScan {
    /// A scan of a header that may grow to `max_bytes` without ending.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            searched: 0,
            max_bytes,
        }
    }

    /// Looks at `buf` (everything read so far): `Complete` when it holds the header's end,
    /// `TooLarge` when it passed `max_bytes` without one, `None` to read on.
    pub fn check(&mut self, buf: &[u8]) -> Option<HeaderRead> {
        if header_end(buf, self.searched).is_some() {
            return Some(HeaderRead::Complete);
        }
        if buf.len() > self.max_bytes {
            return Some(HeaderRead::TooLarge);
        }
        self.searched = buf.len();
        None
    }
}

/// Reads on until `buf` holds a whole header block, before `deadline`, reading no more than
/// `max_bytes` (and what one read brings) of a header that does not end.
pub async fn rest_of_header<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    deadline: tokio::time::Instant,
    max_bytes: usize,
) -> HeaderRead {
    let mut scan = HeaderScan::new(max_bytes);
    loop {
        if let Some(read) = scan.check(buf) {
            return read;
        }
        if buf.capacity() == buf.len() {
            buf.reserve(FIRST_READ_BYTES);
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return HeaderRead::Closed,
            Err(_) => return HeaderRead::TimedOut,
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

/// Waits for the next request on `stream` for up to `timeout`. On shutdown, a request whose
/// bytes are already there is still read; the first request of a new connection (`first`) may
/// take up to [`SHUTDOWN_GRACE`] more to arrive; otherwise the connection closes.
async fn next_request(
    stream: &mut Stream,
    timeout: Duration,
    shutdown: &ShutdownWatch,
    first: bool,
) -> NextRequest {
    let mut shutdown = shutdown.clone();
    let bytes = |read: Result<std::io::Result<BytesMut>, _>| match read {
        Ok(Ok(bytes)) if !bytes.is_empty() => NextRequest::Bytes(bytes),
        _ => NextRequest::Close,
    };
    let grace = if first {
        SHUTDOWN_GRACE
    } else {
        Duration::ZERO
    };
    if *shutdown.borrow() {
        // A zero timeout still polls the read once: bytes already there are served.
        return bytes(tokio::time::timeout(grace, first_bytes(stream)).await);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    tokio::select! {
        read = tokio::time::timeout_at(deadline, first_bytes(stream)) => return bytes(read),
        _ = shutdown.changed() => {}
    }
    let deadline = deadline.min(tokio::time::Instant::now() + grace);
    bytes(tokio::time::timeout_at(deadline, first_bytes(stream)).await)
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
        let mut requests = 0u64;
        loop {
            let NextRequest::Bytes(mut first) =
                next_request(&mut stream, KEEPALIVE_TIMEOUT, shutdown, requests == 0).await
            else {
                return None;
            };
            requests += 1;
            // The whole header must arrive within the header timeout of its first byte.
            let (timeout, max_bytes) = self.limits.header_limits();
            let deadline = tokio::time::Instant::now() + timeout;
            let refusal = match rest_of_header(&mut stream, &mut first, deadline, max_bytes).await {
                HeaderRead::Complete => None,
                HeaderRead::Closed => return None,
                HeaderRead::TimedOut => {
                    self.limits.header_timed_out();
                    Some(REQUEST_TIMEOUT)
                }
                HeaderRead::TooLarge => {
                    self.limits.header_too_large();
                    Some(HEADER_TOO_LARGE)
                }
            };
            if let Some(answer) = refusal {
                let _ = tokio::time::timeout(timeout, async {
                    let _ = stream.write_all(answer).await;
                    let _ = stream.flush().await;
                })
                .await;
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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A client that sends these pieces, one per read, then closes.
    struct Chunks(std::collections::VecDeque<Vec<u8>>);

    impl tokio::io::AsyncRead for Chunks {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if let Some(mut chunk) = self.0.pop_front() {
                let n = chunk.len().min(buf.remaining());
                buf.put_slice(&chunk[..n]);
                if n < chunk.len() {
                    self.0.push_front(chunk.split_off(n));
                }
            }
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// Reads a header from `chunks` as a client sends them; the reader never gets more.
    async fn read(chunks: &[&[u8]], max_bytes: usize) -> (HeaderRead, usize) {
        let mut stream = Chunks(chunks.iter().map(|c| c.to_vec()).collect());
        let mut buf = BytesMut::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let read = rest_of_header(&mut stream, &mut buf, deadline, max_bytes).await;
        (read, buf.len())
    }

    #[tokio::test]
    async fn a_header_that_passes_the_limit_without_ending_is_refused() {
        let start = b"GET / HTTP/1.1\r\nX-Big: ";
        let filler = vec![b'a'; 8192];
        let chunks: Vec<&[u8]> = std::iter::once(&start[..])
            .chain(std::iter::repeat_n(&filler[..], 30))
            .collect();
        let (outcome, bytes) = read(&chunks, 32 * 1024).await;
        assert_eq!(outcome, HeaderRead::TooLarge);
        assert!(
            bytes <= 32 * 1024 + 8192,
            "stopped near the limit, read {bytes}"
        );
        // A complete header over the limit is for the parser to refuse (with 431 too).
        let (outcome, _) = read_complete_over_limit().await;
        assert_eq!(outcome, HeaderRead::Complete);
        let (outcome, _) = read(&[&b"GET / HTTP/1.1\r\nHost: x\r\n"[..], b"\r\n"], 1024).await;
        assert_eq!(outcome, HeaderRead::Complete);
        let (outcome, _) = read(&[b"GET / HTTP/1.1\r\n"], 1024).await;
        assert_eq!(outcome, HeaderRead::Closed);
    }

    async fn read_complete_over_limit() -> (HeaderRead, usize) {
        let mut header = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        header.extend(std::iter::repeat_n(b'a', 2000));
        header.extend_from_slice(b"\r\n\r\n");
        read(&[&header], 1024).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickled_header_times_out() {
        let (client, mut server) = tokio::io::duplex(64);
        let trickle = tokio::spawn(async move {
            let mut client = client;
            for _ in 0..100 {
                if client.write_all(b"a").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        let mut buf = BytesMut::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        let outcome = rest_of_header(&mut server, &mut buf, deadline, 1024).await;
        assert_eq!(outcome, HeaderRead::TimedOut);
        assert!(buf.len() < 10, "stopped at the deadline");
        trickle.abort();
    }

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
