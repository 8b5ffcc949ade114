//! What Forecourt writes on every request it sends an instance on a client's behalf — proxied,
//! revalidated or refreshed ahead — so the three never differ:
//!
//! ```text
//!  X-Forwarded-For   the client's value(s), then the client's address
//!  Forwarded         only when the client sent one: its value, then `for=<client address>`
//!  X-Forwarded-Proto http
//!  X-Forwarded-Host  the request's Host
//!  <tenant header>   the value Forecourt keyed on (trimmed), or removed when not believed
//! ```
//!
//! [`forwarding`] computes the edits without allocating unless a value changes; callers apply
//! them to Pingora's upstream header or to the header list of Forecourt's own requests.

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use pingora::http::RequestHeader;

/// `X-Forwarded-For`.
pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub(crate) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// One change to a request's headers before it goes to an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Edit {
    /// Replace every line of the header with this value.
    Set(HeaderName, HeaderValue),
    /// Remove the header.
    Remove(HeaderName),
}

/// The request a forwarding rewrite is for.
pub(crate) struct Forwarded<'a> {
    /// The client's request headers.
    pub request: &'a HeaderMap,
    /// The client's address (`None` for Forecourt's own refresh-ahead requests).
    pub client: Option<std::net::IpAddr>,
    /// The header that names the tenant.
    pub tenant_header: &'a HeaderName,
    /// The tenant Forecourt keyed the request on (`None`: anonymous or not believed).
    pub tenant: Option<&'a str>,
}

/// The edits that make a request's forwarding headers Forecourt's (see the module doc).
pub(crate) fn forwarding(forwarded: &Forwarded<'_>) -> [Option<Edit>; 5] {
    let request = forwarded.request;
    let client = forwarded.client;
    let xff = client
        .and_then(|ip| forwarded_for(request, ip))
        .map(|v| Edit::Set(X_FORWARDED_FOR, v));
    let rfc7239 = client
        .and_then(|ip| forwarded_element(request, ip))
        .map(|v| Edit::Set(http::header::FORWARDED, v));
    let host = request
        .get(http::header::HOST)
        .map(|h| Edit::Set(X_FORWARDED_HOST, h.clone()));
    let proto = Some(Edit::Set(
        X_FORWARDED_PROTO,
        HeaderValue::from_static("http"),
    ));
    let name = forwarded.tenant_header;
    let sent = request.get(name);
    let tenant = match (forwarded.tenant, sent) {
        // The value the service sees is exactly the one Forecourt keyed on.
        (Some(tenant), Some(sent)) if sent.as_bytes() == tenant.as_bytes() => None,
        (Some(tenant), _) => HeaderValue::from_str(tenant)
            .ok()
            .map(|v| Edit::Set(name.clone(), v)),
        (None, Some(_)) => Some(Edit::Remove(name.clone())),
        (None, None) => None,
    };
    [xff, rfc7239, proto, host, tenant]
}

/// Applies the forwarding edits to Pingora's upstream request header.
pub(crate) fn apply(upstream: &mut RequestHeader, edits: [Option<Edit>; 5]) -> pingora::Result<()> {
    for edit in edits.into_iter().flatten() {
        match edit {
            Edit::Set(name, value) => {
                upstream.insert_header(name, value)?;
            }
            Edit::Remove(name) => {
                upstream.remove_header(&name);
            }
        }
    }
    Ok(())
}

/// The header list of a request Forecourt sends itself (a revalidation): the client's headers
/// except `skipped` ones and those the edits replace, then the edits' values.
pub(crate) fn edited_headers(
    request: &HeaderMap,
    skipped: impl Fn(&HeaderName) -> bool,
    edits: [Option<Edit>; 5],
) -> Vec<(HeaderName, HeaderValue)> {
    let touched = |name: &HeaderName| {
        edits.iter().flatten().any(|edit| match edit {
            Edit::Set(n, _) | Edit::Remove(n) => n == name,
        })
    };
    let mut headers: Vec<(HeaderName, HeaderValue)> = request
        .iter()
        .filter(|(name, _)| !skipped(name) && !touched(name))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    for edit in edits.into_iter().flatten() {
        if let Edit::Set(name, value) = edit {
            headers.push((name, value));
        }
    }
    headers
}

/// The client's address as text, formatted on the stack.
fn address_text(ip: std::net::IpAddr, text: &mut [u8; 48]) -> Option<&[u8]> {
    use std::io::Write as _;
    // The longest textual IPv6 address (with an embedded IPv4 one) is 45 bytes.
    let mut rest = &mut text[..];
    write!(rest, "{ip}").ok()?;
    let len = 48 - rest.len();
    Some(&text[..len])
}

/// Every line of `name` in `request` joined with `, ` and then `last`: one value (RFC 9110
/// §5.3 lets a list be split over lines, so no line the client sent is lost).
fn appended(request: &HeaderMap, name: &HeaderName, last: &[u8]) -> Option<HeaderValue> {
    let mut lines = request.get_all(name).iter().peekable();
    if lines.peek().is_none() {
        return HeaderValue::from_bytes(last).ok();
    }
    let mut value = BytesMut::new();
    for line in lines {
        value.put_slice(line.as_bytes());
        value.put_slice(b", ");
    }
    value.put_slice(last);
    HeaderValue::from_maybe_shared(Bytes::from(value)).ok()
}

/// The `X-Forwarded-For` value for a client at `ip`: appended to the values the client sent.
pub(crate) fn forwarded_for(request: &HeaderMap, ip: std::net::IpAddr) -> Option<HeaderValue> {
    let mut text = [0u8; 48];
    let address = address_text(ip, &mut text)?;
    appended(request, &X_FORWARDED_FOR, address)
}

/// The `Forwarded` value with this hop's `for=` appended (RFC 7239 §4: an IPv6 address is
/// quoted and bracketed); `None` when the client sent no `Forwarded`.
fn forwarded_element(request: &HeaderMap, ip: std::net::IpAddr) -> Option<HeaderValue> {
    if !request.contains_key(http::header::FORWARDED) {
        return None;
    }
    let mut text = [0u8; 48];
    let address = address_text(ip, &mut text)?;
    let mut element = [0u8; 64];
    let len = if ip.is_ipv6() {
        let n = address.len();
        element[..6].copy_from_slice(b"for=\"[");
        element[6..6 + n].copy_from_slice(address);
        element[6 + n..8 + n].copy_from_slice(b"]\"");
        8 + n
    } else {
        element[..4].copy_from_slice(b"for=");
        element[4..4 + address.len()].copy_from_slice(address);
        4 + address.len()
    };
    appended(request, &http::header::FORWARDED, &element[..len])
}

/// The address of the client (the TCP peer) of a session, when it is an IP one.
pub(super) fn client_ip(session: &pingora::proxy::Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// The path and query of a request.
pub(super) fn path_of(req: &RequestHeader) -> &str {
    req.uri.path_and_query().map_or("/", |p| p.as_str())
}

/// The authority a request is for: the absolute-form target's, else its `Host` (raw bytes;
/// the cache key normalizes them).
pub(super) fn authority_of(req: &RequestHeader) -> &[u8] {
    req.uri
        .authority()
        .map(|a| a.as_str().as_bytes())
        .or_else(|| {
            req.headers
                .get(http::header::HOST)
                .map(HeaderValue::as_bytes)
        })
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static [u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_bytes(v).unwrap());
        }
        map
    }

    #[test]
    fn forwarded_for_appends_the_client_address() {
        let v4: std::net::IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(forwarded_for(&map(&[]), v4).unwrap(), "10.1.2.3");
        let prior = map(&[("x-forwarded-for", b"192.0.2.7")]);
        assert_eq!(forwarded_for(&prior, v4).unwrap(), "192.0.2.7, 10.1.2.3");
        // Two lines: both kept, in order.
        let two = map(&[
            ("x-forwarded-for", b"192.0.2.7"),
            ("x-forwarded-for", b"198.51.100.1"),
        ]);
        assert_eq!(
            forwarded_for(&two, v4).unwrap(),
            "192.0.2.7, 198.51.100.1, 10.1.2.3"
        );
        let v6: std::net::IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
            .parse()
            .unwrap();
        assert_eq!(
            forwarded_for(&map(&[]), v6).unwrap(),
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        );
        // Bytes a client may send that are not UTF-8 are kept as they are.
        let odd = map(&[("x-forwarded-for", b"caf\xe9")]);
        assert_eq!(
            forwarded_for(&odd, v4).unwrap().as_bytes(),
            b"caf\xe9, 10.1.2.3"
        );
    }

    #[test]
    fn the_rewrite_appends_the_client_and_overwrites_the_tenant() {
        let tenant_header = HeaderName::from_static("x-tenant-id");
        let request = map(&[
            ("host", b"shop.example"),
            ("x-forwarded-for", b"1.1.1.1"),
            ("x-forwarded-host", b"evil.example"),
            ("x-forwarded-proto", b"https"),
            ("forwarded", b"for=1.1.1.1"),
            ("x-tenant-id", b" acme "),
            ("accept", b"*/*"),
        ]);
        let client: std::net::IpAddr = "::1".parse().unwrap();
        let edits = forwarding(&Forwarded {
            request: &request,
            client: Some(client),
            tenant_header: &tenant_header,
            tenant: Some("acme"),
        });
        let headers = edited_headers(&request, |n| n == http::header::HOST, edits);
        let get = |name: &str| -> Vec<&[u8]> {
            headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_bytes())
                .collect()
        };
        assert_eq!(get("x-forwarded-for"), [&b"1.1.1.1, ::1"[..]]);
        assert_eq!(get("forwarded"), [&b"for=1.1.1.1, for=\"[::1]\""[..]]);
        assert_eq!(get("x-forwarded-host"), [&b"shop.example"[..]]);
        assert_eq!(get("x-forwarded-proto"), [&b"http"[..]]);
        assert_eq!(get("x-tenant-id"), [&b"acme"[..]]);
        assert_eq!(get("accept"), [&b"*/*"[..]]);
        assert!(get("host").is_empty());

        // Not believed: the tenant header does not reach the service.
        let edits = forwarding(&Forwarded {
            request: &request,
            client: Some(client),
            tenant_header: &tenant_header,
            tenant: None,
        });
        let headers = edited_headers(&request, |_| false, edits);
        assert!(!headers.iter().any(|(n, _)| n == "x-tenant-id"));
        // No Forwarded from the client: none is added.
        let plain = map(&[("host", b"a")]);
        let edits = forwarding(&Forwarded {
            request: &plain,
            client: Some(client),
            tenant_header: &tenant_header,
            tenant: None,
        });
        assert!(!edited_headers(&plain, |_| false, edits)
            .iter()
            .any(|(n, _)| n == "forwarded"));
    }
}
