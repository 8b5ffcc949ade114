//! # Fuzz target: the request path's pure functions
//!
//! ```text
//!  bytes ──► httparse request head (skip when incomplete or invalid)
//!        ──► pingora_http::RequestHeader, as Pingora builds it (method, raw target, headers)
//!        ──► refuse(raw head, target length, has TE, limits)    ── agrees with the parsed framing
//!        ──► RouteTable::classify(host, path, headers)           ── agrees with a naive model
//!        ──► MetadataRules: tenant, class, flag                  ── trimmed, in range, non-empty
//! ```
//!
//! The route table and the metadata rules are compiled once from [`POLICY`], a fixed policy with
//! host, path-prefix and header routes and small limits (so that short inputs reach them).
//! Checks, beyond "never panics": a refusal matches the limits and the framing the parser saw
//! (a request with both `Content-Length` and `Transfer-Encoding` is always refused); the service
//! found is the one a linear scan of every route by precedence picks; the host's case never
//! changes it; a tenant is trimmed and non-empty, its class exists, a flag is non-empty.

#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use forecourt_config::{Policy, RouteConfig};
use forecourt_proxy::classify::metadata::MetadataRules;
use forecourt_proxy::ingress::refuse::{refuse, Refusal};
use forecourt_proxy::classify::routes::{RouteTable, ServiceIndex};
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use libfuzzer_sys::fuzz_target;
use pingora_http::RequestHeader;

/// Pingora's limit on the number of request headers.
const MAX_HEADERS: usize = 256;

/// Longest host the route table looks up.
const MAX_HOST: usize = 253;

/// The fixed policy every input is classified against.
const POLICY: &str = "
metadata:
  tenant_header: x-tenant-id
  feature_flag: { header: x-feature-flag, cookie: ff }
  tenant_classes:
    - { name: premium, tenants: [acme, globex] }
  default_tenant_class: standard
limits: { max_header_bytes: 1024, max_uri_bytes: 256 }
services:
  - name: shop
    routes: [{ host: shop.example.com }]
  - name: cart
    routes: [{ host: shop.example.com, path_prefix: /cart }]
  - name: api
    routes:
      - { path_prefix: /api }
      - { header: { name: x-service, value: api } }
  - name: api-v2
    routes: [{ path_prefix: /api/v2 }]
  - name: static
    routes: [{ path_prefix: /static/ }]
  - name: canary
    routes:
      - { header: { name: x-canary, value: 'yes' }, host: shop.example.com }
      - { header: { name: x-canary, value: 'yes' }, path_prefix: /cart }
  - name: loopback
    routes: [{ host: localhost }, { host: 127.0.0.1, path_prefix: /a/b/ }]
  - name: root
    routes: [{ path_prefix: / }]
";

/// The compiled policy, shared by every run.
struct Fixture {
    policy: Policy,
    routes: RouteTable,
    rules: MetadataRules,
}

/// The fixture, compiled on first use.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let policy = Policy::parse(POLICY, Path::new("fuzz-fixture.yaml"))
            .unwrap_or_else(|e| panic!("the fixture policy is invalid: {e}"));
        Fixture {
            routes: RouteTable::new(&policy),
            rules: MetadataRules::new(&policy.metadata),
            policy,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let fx = fixture();
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut slots);
    let Ok(httparse::Status::Complete(head_len)) = parsed.parse(data) else {
        return;
    };
    let raw = &data[..head_len];
    let (Some(method), Some(target)) = (parsed.method, parsed.path) else {
        return;
    };
    // As Pingora's HTTP/1 server builds the request; it answers 400 where this fails.
    let Ok(mut req) = RequestHeader::build(method, target.as_bytes(), Some(parsed.headers.len()))
    else {
        return;
    };
    for header in parsed.headers.iter() {
        let Ok(value) = http::HeaderValue::from_bytes(header.value) else {
            return;
        };
        if req.append_header(header.name.to_owned(), value).is_err() {
            return;
        }
    }

    // request_filter: refusals first.
    let te = req.headers.contains_key(TRANSFER_ENCODING);
    let cl = req.headers.contains_key(CONTENT_LENGTH);
    let uri_len = req.raw_path().len();
    let limits = &fx.policy.limits;
    let refusal = refuse(raw, uri_len, te, limits);
    let expected = if raw.len() > limits.max_header_bytes {
        Some(Refusal::HeaderTooLarge)
    } else if uri_len > limits.max_uri_bytes {
        Some(Refusal::UriTooLong)
    } else if te && cl {
        Some(Refusal::AmbiguousFraming)
    } else {
        None
    };
    match (expected, refusal) {
        (e, r) if e == r => {}
        // A raw line that only looks like a Content-Length may refuse more: never less.
        (None, Some(Refusal::AmbiguousFraming)) if te => {}
        (e, r) => panic!(
            "refuse({:?}) = {r:?}, expected {e:?} (te {te}, cl {cl})",
            String::from_utf8_lossy(raw)
        ),
    }

    // Then classification, with the host of an absolute target or else the Host header.
    let host = req
        .uri
        .host()
        .map(str::as_bytes)
        .or_else(|| req.headers.get(HOST).map(|h| h.as_bytes()));
    let path = req.uri.path();
    let service = fx.routes.classify(host, path, &req.headers);
    if let Some(s) = service {
        assert!(s < fx.policy.services.len(), "service {s} out of range");
    }
    let model = model_classify(&fx.policy, host, path, &req.headers);
    assert_eq!(
        service,
        model,
        "route table and model disagree on host {:?} path {path:?}",
        host.map(String::from_utf8_lossy)
    );
    if let Some(h) = host {
        let upper = h.to_ascii_uppercase();
        assert_eq!(
            fx.routes.classify(Some(&upper), path, &req.headers),
            service,
            "host case changed the route"
        );
    }

    // Metadata.
    let tenant = fx.rules.tenant(&req.headers);
    if let Some(t) = tenant {
        assert!(!t.is_empty() && t.trim() == t, "untrimmed tenant {t:?}");
    }
    let class = fx.rules.class_of(tenant);
    assert!(
        class < fx.rules.classes().len(),
        "class {class} out of range"
    );
    if let Some(flag) = fx.rules.flag(&req.headers) {
        assert!(!flag.is_empty(), "empty flag");
    }
});

/// The route a linear scan picks: among every matching route, the one with a header, then with
/// a host, then with the longest prefix; the first in file order among equals.
fn model_classify(
    policy: &Policy,
    host: Option<&[u8]>,
    path: &str,
    headers: &http::HeaderMap,
) -> Option<ServiceIndex> {
    let host = host.and_then(model_host);
    let path = path.split(['?', '#']).next().unwrap_or("/");
    let mut best: Option<((bool, bool, usize), ServiceIndex)> = None;
    for (service, config) in policy.services.iter().enumerate() {
        for route in &config.routes {
            if !model_matches(route, host.as_deref(), path, headers) {
                continue;
            }
            let rank = (
                route.header.is_some(),
                route.host.is_some(),
                route.path_prefix.as_deref().map_or(0, str::len),
            );
            if best.is_none_or(|(b, _)| rank > b) {
                best = Some((rank, service));
            }
        }
    }
    best.map(|(_, service)| service)
}

/// Whether every criterion of `route` matches.
fn model_matches(
    route: &RouteConfig,
    host: Option<&str>,
    path: &str,
    headers: &http::HeaderMap,
) -> bool {
    let header_ok = route.header.as_ref().is_none_or(|(name, value)| {
        headers
            .get(name.as_str())
            .is_some_and(|v| v.as_bytes() == value.as_bytes())
    });
    let host_ok = route.host.as_deref().is_none_or(|h| Some(h) == host);
    let path_ok = route.path_prefix.as_deref().is_none_or(|p| {
        path.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || p.ends_with('/'))
    });
    header_ok && host_ok && path_ok
}

/// The host without its port (an IPv6 literal keeps its colons), lowercase; `None` when empty,
/// too long or not UTF-8.
fn model_host(host: &[u8]) -> Option<String> {
    let last_colon = host.iter().rposition(|&b| b == b':');
    let name = match last_colon {
        Some(i) if host[0] != b'[' => &host[..i],
        Some(i) if i > 0 && host[i - 1] == b']' => &host[..i],
        _ => host,
    };
    let name = std::str::from_utf8(name).ok()?;
    (!name.is_empty() && name.len() <= MAX_HOST).then(|| name.to_ascii_lowercase())
}
