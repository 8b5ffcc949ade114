//! Downstream HTTP/1 connections that cost little while they wait for their next request.
//!
//! Pingora's own connection loop keeps a keep-alive connection inside the proxy's request future
//! while it waits: that future is as large as its largest state (the whole proxy pipeline), plus
//! a 4 KiB header buffer allocated before the first byte arrives. Measured in `benches/compare`,
//! that was about 24 KiB per idle connection. [`KeepAliveApp`] runs the same Pingora request
//! path, but between requests it holds only the socket and a small future: it waits for the
//! first bytes of the next request itself, allocating their buffer only when they are there,
//! and hands them to Pingora's parser as the start of the request. No extra system call is made.

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
use tokio::io::AsyncReadExt as _;

/// How long a keep-alive connection may wait for its next request (Pingora's default).
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);

/// Bytes read for the start of a request: Pingora's initial header buffer. A longer header is
/// read on into the same buffer by Pingora's parser.
const FIRST_READ_BYTES: usize = 4096;

/// Serves plain HTTP/1.x connections with the HTTP application `A` (Forecourt's proxy), holding
/// only the socket between the requests of a keep-alive connection.
pub struct KeepAliveApp<A>(pub Arc<A>);

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
            let NextRequest::Bytes(first) =
                next_request(&mut stream, KEEPALIVE_TIMEOUT, shutdown).await
            else {
                return None;
            };
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
            let reused = self.0.process_new_http(session, shutdown).await?;
            let (next, settings) = reused.consume();
            stream = next;
            persistent = settings;
        }
    }

    async fn cleanup(&self) {
        self.0.http_cleanup().await;
    }
}
