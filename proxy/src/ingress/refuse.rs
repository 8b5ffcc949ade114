//! Every refusal of the request path and how it is answered: malformed or oversized requests
//! (4xx, connection closed), limits (429 with `Retry-After`), nothing ready (503), upstream
//! failures (502, 504).

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

/// Why a request was refused before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Both `Content-Length` and `Transfer-Encoding`: a request smuggling vector.
    AmbiguousFraming,
    /// The request header block is over the limit.
    HeaderTooLarge,
    /// The request target is over the limit.
    UriTooLong,
}

// === impl Refusal ===

impl Refusal {
    /// The status it is answered with.
    pub(super) fn status(self) -> u16 {
        match self {
            Refusal::AmbiguousFraming => 400,
            Refusal::HeaderTooLarge => 431,
            Refusal::UriTooLong => 414,
        }
    }

    /// The JSON body it is answered with.
    pub(super) fn body(self) -> &'static [u8] {
        match self {
            Refusal::AmbiguousFraming => {
                br#"{"error":"both content-length and transfer-encoding"}"#
            }
            Refusal::HeaderTooLarge => br#"{"error":"request header too large"}"#,
            Refusal::UriTooLong => br#"{"error":"request target too long"}"#,
        }
    }
}

/// Checks a request against framing rules and limits, from its raw header block.
pub fn refuse(
    raw_header: &[u8],
    uri_len: usize,
    has_transfer_encoding: bool,
    limits: &forecourt_config::Limits,
) -> Option<Refusal> {
    if raw_header.len() > limits.max_header_bytes {
        return Some(Refusal::HeaderTooLarge);
    }
    if uri_len > limits.max_uri_bytes {
        return Some(Refusal::UriTooLong);
    }
    // Pingora drops Content-Length when Transfer-Encoding is present (RFC 9112 6.3); an edge
    // proxy should refuse such a request instead, so look at what the client really sent.
    if has_transfer_encoding && has_header_line(raw_header, b"content-length") {
        return Some(Refusal::AmbiguousFraming);
    }
    None
}

/// True when a header line named `name` (lowercase) is in the raw header block.
fn has_header_line(raw: &[u8], name: &[u8]) -> bool {
    raw.split(|&b| b == b'\n').skip(1).any(|line| {
        line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name)
            && line[name.len()..].trim_ascii_start().starts_with(b":")
    })
}

/// `Retry-After` seconds for a rate refusal (a rate of zero says an hour).
pub(super) fn retry_seconds(retry: crate::admission::RetryAfter) -> u32 {
    if retry.is_never() {
        return 3_600;
    }
    u32::try_from(retry.seconds())
        .unwrap_or(3_600)
        .clamp(1, 3_600)
}

/// Writes a short JSON response and ends the request.
pub(super) async fn respond(
    session: &mut Session,
    status: u16,
    body: &'static [u8],
    retry_after: Option<u32>,
    close: bool,
) -> Result<()> {
    let mut header = ResponseHeader::build(status, Some(4))?;
    header.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    header.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    if let Some(seconds) = retry_after {
        header.insert_header(http::header::RETRY_AFTER, seconds)?;
    }
    if close {
        header.insert_header(http::header::CONNECTION, "close")?;
        session.set_keepalive(None);
    }
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session
        .write_response_body(Some(Bytes::from_static(body)), true)
        .await
}

/// 404: no route matched.
pub(super) const NO_ROUTE: &[u8] = br#"{"error":"no route for this host and path"}"#;
/// 503: nothing ready for the request in time.
pub(super) const NO_READY_INSTANCE: &[u8] = br#"{"error":"no ready instance","retry":true}"#;
/// 502: the instance failed.
pub(super) const BAD_GATEWAY: &[u8] = br#"{"error":"upstream failed"}"#;
/// 503: the proxy is at its in-flight limit.
pub(super) const OVERLOADED: &[u8] = br#"{"error":"overloaded","retry":true}"#;
/// 429: a rate limit refused it.
pub(super) const RATE_LIMITED: &[u8] = br#"{"error":"rate limited","retry":true}"#;
/// 429: a concurrency limit refused it.
pub(super) const TOO_MANY_IN_FLIGHT: &[u8] =
    br#"{"error":"too many requests in flight","retry":true}"#;
/// 408: the request body arrived too slowly.
pub(super) const BODY_TOO_SLOW: &[u8] = br#"{"error":"request body arrived too slowly"}"#;

/// Whether a request body that has brought `bytes` in `elapsed` is too slow: only once it has
/// taken longer than `grace`, and then slower than `min_rate` bytes per second on average.
pub(super) fn body_too_slow(
    bytes: u64,
    elapsed: std::time::Duration,
    grace: std::time::Duration,
    min_rate: u64,
) -> bool {
    min_rate > 0 && elapsed > grace && (bytes as f64) < min_rate as f64 * elapsed.as_secs_f64()
}
/// 504: the instance did not answer in time.
pub(super) const GATEWAY_TIMEOUT: &[u8] = br#"{"error":"upstream timed out"}"#;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn limits() -> forecourt_config::Limits {
        forecourt_config::Limits {
            max_header_bytes: 1024,
            max_uri_bytes: 256,
            max_in_flight: 100,
            header_timeout: std::time::Duration::from_secs(1),
            drain_timeout: std::time::Duration::from_secs(1),
            send_timeout: std::time::Duration::from_secs(30),
            min_send_rate: 0,
            min_body_rate: 1024,
            tenant_classes: Vec::new(),
        }
    }

    #[test]
    fn a_body_is_too_slow_only_after_the_grace_and_below_the_rate() {
        use std::time::Duration;
        let grace = Duration::from_secs(10);
        assert!(
            !body_too_slow(10, Duration::from_secs(5), grace, 1024),
            "within the grace"
        );
        assert!(body_too_slow(110, Duration::from_secs(11), grace, 1024));
        assert!(!body_too_slow(
            1 << 20,
            Duration::from_secs(11),
            grace,
            1024
        ));
        assert!(!body_too_slow(0, Duration::from_secs(60), grace, 0), "off");
    }

    #[test]
    fn refuses_content_length_with_transfer_encoding() {
        let raw = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length : 4\r\n\r\n";
        assert_eq!(
            refuse(raw, 1, true, &limits()),
            Some(Refusal::AmbiguousFraming)
        );
        let raw = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nX-Content-Length: 4\r\n\r\n";
        assert_eq!(refuse(raw, 1, true, &limits()), None);
    }

    #[test]
    fn refuses_oversized_headers_and_targets() {
        let raw = vec![b'a'; 2000];
        assert_eq!(
            refuse(&raw, 1, false, &limits()),
            Some(Refusal::HeaderTooLarge)
        );
        assert_eq!(
            refuse(b"GET / HTTP/1.1\r\n\r\n", 300, false, &limits()),
            Some(Refusal::UriTooLong)
        );
        assert_eq!(refuse(b"GET / HTTP/1.1\r\n\r\n", 1, false, &limits()), None);
    }
}
