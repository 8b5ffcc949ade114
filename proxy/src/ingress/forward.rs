//! What the request path adds to a request it forwards: `X-Forwarded-For` with the client's
//! address appended, and the request's path and query.

use bytes::Bytes;
use http::HeaderValue;
use pingora::http::RequestHeader;

/// The `X-Forwarded-For` value for a client at `ip`: appended to the value the client sent, if
/// any. Formats the address on the stack; the header value is the only allocation.
pub(super) fn forwarded_for(
    prior: Option<&HeaderValue>,
    ip: std::net::IpAddr,
) -> Option<HeaderValue> {
    use std::io::Write as _;
    // The longest textual IPv6 address (with an embedded IPv4 one) is 45 bytes.
    let mut text = [0u8; 48];
    let mut rest = &mut text[..];
    write!(rest, "{ip}").ok()?;
    let len = 48 - rest.len();
    let ip = &text[..len];
    match prior {
        None => HeaderValue::from_bytes(ip).ok(),
        Some(prior) => {
            let mut value = Vec::with_capacity(prior.len() + 2 + ip.len());
            value.extend_from_slice(prior.as_bytes());
            value.extend_from_slice(b", ");
            value.extend_from_slice(ip);
            HeaderValue::from_maybe_shared(Bytes::from(value)).ok()
        }
    }
}

/// The path and query of a request.
pub(super) fn path_of(req: &RequestHeader) -> &str {
    req.uri.path_and_query().map_or("/", |p| p.as_str())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_appends_the_client_address() {
        let v4: std::net::IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(forwarded_for(None, v4).unwrap(), "10.1.2.3");
        let prior = HeaderValue::from_static("192.0.2.7");
        assert_eq!(
            forwarded_for(Some(&prior), v4).unwrap(),
            "192.0.2.7, 10.1.2.3"
        );
        let v6: std::net::IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
            .parse()
            .unwrap();
        assert_eq!(
            forwarded_for(None, v6).unwrap(),
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        );
        // Bytes a client may send that are not UTF-8 are kept as they are.
        let odd = HeaderValue::from_bytes(b"caf\xe9").unwrap();
        assert_eq!(
            forwarded_for(Some(&odd), v4).unwrap().as_bytes(),
            b"caf\xe9, 10.1.2.3"
        );
    }
}
