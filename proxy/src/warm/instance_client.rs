//! Requests Forecourt itself sends to an instance, outside the proxied traffic: warm-up requests,
//! cache revalidation and refresh-ahead. One HTTP/1 connection per [`InstanceClient`], kept alive.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why a request Forecourt sent to an instance failed.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// The TCP connection could not be made.
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    /// The HTTP/1 handshake failed.
    #[error("handshake: {0}")]
    Handshake(#[source] hyper::Error),
    /// The connection closed or broke before the request could be sent.
    #[error("connection: {0}")]
    Connection(#[source] hyper::Error),
    /// The request could not be built (a header Forecourt was asked to send is invalid).
    #[error("request: {0}")]
    Build(#[source] http::Error),
    /// Sending the request or reading the response head failed.
    #[error("request: {0}")]
    Send(#[source] hyper::Error),
    /// Reading the response body failed.
    #[error("body: {0}")]
    Body(#[source] hyper::Error),
    /// A tenant or host Forecourt was asked to send is not a valid header value.
    #[error("tenant or host: {0}")]
    Tenant(#[source] http::header::InvalidHeaderValue),
}

/// What an instance answered.
#[derive(Debug)]
pub struct InstanceResponse {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// The body, when it was kept (see [`InstanceClient::send`]).
    pub body: Option<Bytes>,
}

/// An HTTP/1 connection to one instance.
pub struct InstanceClient {
    address: SocketAddr,
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

// === impl InstanceClient ===

impl InstanceClient {
    /// Connects to the instance at `address`.
    pub async fn connect(address: SocketAddr) -> Result<Self, InstanceError> {
        let stream = TcpStream::connect(address)
            .await
            .map_err(InstanceError::Connect)?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(InstanceError::Handshake)?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self { address, sender })
    }

    /// Sends one request and reads the whole answer; `Host` and `User-Agent` are the
    /// instance's address and `forecourt` unless `headers` give them. The body is kept when `keep_body` is at
    /// least its length, else read to its end and dropped (`body` is `None`).
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        keep_body: usize,
    ) -> Result<InstanceResponse, InstanceError> {
        self.sender
            .ready()
            .await
            .map_err(InstanceError::Connection)?;
        let mut request = http::Request::builder().method(method).uri(path);
        // The request's own Host when it has one (a revalidation, a refresh), else the
        // instance's address.
        if !headers.iter().any(|(name, _)| name == http::header::HOST) {
            request = request.header(http::header::HOST, self.address.to_string());
        }
        if !headers
            .iter()
            .any(|(name, _)| name == http::header::USER_AGENT)
        {
            request = request.header(http::header::USER_AGENT, "forecourt");
        }
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(InstanceError::Build)?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(InstanceError::Send)?;
        let status = response.status().as_u16();
        let (parts, mut body) = response.into_parts();
        let mut kept = Some(BytesMut::new());
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(InstanceError::Body)?;
            if let (Some(data), Some(buf)) = (frame.data_ref(), kept.as_mut()) {
                if buf.len() + data.len() > keep_body {
                    kept = None;
                } else {
                    buf.extend_from_slice(data);
                }
            }
        }
        Ok(InstanceResponse {
            status,
            headers: parts.headers,
            body: kept.map(BytesMut::freeze),
        })
    }
}
