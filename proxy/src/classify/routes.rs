//! The route table: maps a request's host, path and headers to a service without allocating.
//!
//! Routes are compiled once per policy. Precedence, most specific first: a route with a header
//! beats one without; then a route with a host beats one without; then the longest path
//! prefix wins. Path prefixes match whole segments (`/shop` matches `/shop` and `/shop/cart`,
//! not `/shopping`) unless the prefix itself ends in `/`.

use ahash::AHashMap;
use forecourt_config::{Policy, RouteConfig};

/// Index of a service in the policy (and in every per-service table).
pub type ServiceIndex = usize;

/// Routes of one host (or of any host), keyed by path prefix.
#[derive(Debug, Default)]
struct PathTable {
    /// Exact prefix → service.
    prefixes: AHashMap<Box<str>, ServiceIndex>,
    /// The service of a host-only route, which matches every path.
    any_path: Option<ServiceIndex>,
}

/// A header route, checked in order before host and path routes.
#[derive(Debug)]
struct HeaderRoute {
    name: http::HeaderName,
    value: Box<str>,
    host: Option<Box<str>>,
    path_prefix: Option<Box<str>>,
    service: ServiceIndex,
}

/// All routes of a policy, compiled.
#[derive(Debug, Default)]
pub struct RouteTable {
    header_routes: Vec<HeaderRoute>,
    hosts: AHashMap<Box<str>, PathTable>,
    any_host: PathTable,
}

/// Longest host name we look up; longer ones cannot match a valid route.
const MAX_HOST: usize = 253;

// === impl RouteTable ===

impl RouteTable {
    /// Compiles the routes of every service in `policy`.
    pub fn new(policy: &Policy) -> Self {
        let mut table = RouteTable::default();
        for (service, config) in policy.services.iter().enumerate() {
            for route in &config.routes {
                table.add(route, service);
            }
        }
        // Most specific header routes first: with a host, then the longest prefix.
        table.header_routes.sort_by_key(|r| {
            (
                std::cmp::Reverse(r.host.is_some()),
                std::cmp::Reverse(r.path_prefix.as_deref().map_or(0, str::len)),
            )
        });
        table
    }

    fn add(&mut self, route: &RouteConfig, service: ServiceIndex) {
        if let Some((name, value)) = &route.header {
            // Names were validated when the policy was loaded.
            if let Ok(name) = http::HeaderName::from_bytes(name.as_bytes()) {
                self.header_routes.push(HeaderRoute {
                    name,
                    value: value.as_str().into(),
                    host: route.host.as_deref().map(Into::into),
                    path_prefix: route.path_prefix.as_deref().map(Into::into),
                    service,
                });
            }
            return;
        }
        let table = match &route.host {
            Some(host) => self.hosts.entry(host.as_str().into()).or_default(),
            None => &mut self.any_host,
        };
        match &route.path_prefix {
            Some(prefix) => {
                table
                    .prefixes
                    .entry(prefix.as_str().into())
                    .or_insert(service);
            }
            None => {
                table.any_path.get_or_insert(service);
            }
        }
    }

    /// The service for a request, if any route matches. `host` may carry a port and any case.
    pub fn classify(
        &self,
        host: Option<&[u8]>,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Option<ServiceIndex> {
        let mut buf = [0u8; MAX_HOST];
        let host = host.and_then(|h| normalize_host(h, &mut buf));
        let path = path.split(['?', '#']).next().unwrap_or("/");

        for route in &self.header_routes {
            let header_ok = headers
                .get(&route.name)
                .is_some_and(|v| v.as_bytes() == route.value.as_bytes());
            let host_ok = route.host.as_deref().is_none_or(|h| Some(h) == host);
            let path_ok = route
                .path_prefix
                .as_deref()
                .is_none_or(|p| prefix_matches(p, path));
            if header_ok && host_ok && path_ok {
                return Some(route.service);
            }
        }
        if let Some(table) = host.and_then(|h| self.hosts.get(h)) {
            if let Some(service) = table.lookup(path) {
                return Some(service);
            }
        }
        self.any_host.lookup(path)
    }
}

// === impl PathTable ===

impl PathTable {
    /// The longest matching prefix's service, else the any-path service.
    fn lookup(&self, path: &str) -> Option<ServiceIndex> {
        if !self.prefixes.is_empty() {
            // Candidates, longest first: the whole path, then at each '/' from the right the
            // prefix with the slash and without it.
            if let Some(&s) = self.prefixes.get(path) {
                return Some(s);
            }
            for (i, _) in path.rmatch_indices('/') {
                if let Some(&s) = self.prefixes.get(&path[..=i]) {
                    return Some(s);
                }
                if i > 0 {
                    if let Some(&s) = self.prefixes.get(&path[..i]) {
                        return Some(s);
                    }
                }
            }
        }
        self.any_path
    }
}

/// True when `prefix` matches `path` on a segment boundary.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        && (path.len() == prefix.len()
            || prefix.ends_with('/')
            || path.as_bytes()[prefix.len()] == b'/')
}

/// Lowercases `host` and strips its port into `buf`; `None` when it cannot be a host name.
fn normalize_host<'b>(host: &[u8], buf: &'b mut [u8; MAX_HOST]) -> Option<&'b str> {
    let host = match host.iter().rposition(|&b| b == b':') {
        // An IPv6 literal keeps its colons; only a port after ']' is stripped.
        Some(i) if !host.starts_with(b"[") || host[..i].ends_with(b"]") => &host[..i],
        _ => host,
    };
    if host.is_empty() || host.len() > MAX_HOST {
        return None;
    }
    let out = &mut buf[..host.len()];
    for (o, b) in out.iter_mut().zip(host) {
        *o = b.to_ascii_lowercase();
    }
    std::str::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn table(yaml: &str) -> (Policy, RouteTable) {
        let policy = Policy::parse(yaml, Path::new("t.yaml")).expect("valid policy");
        let table = RouteTable::new(&policy);
        (policy, table)
    }

    fn name(policy: &Policy, found: Option<ServiceIndex>) -> Option<&str> {
        found.map(|i| policy.services[i].name.as_str())
    }

    const ROUTES: &str = "
services:
  - name: shop
    routes: [{ host: shop.example.com }]
  - name: cart
    routes: [{ host: shop.example.com, path_prefix: /cart }]
  - name: api
    routes: [{ path_prefix: /api }]
  - name: api-v2
    routes: [{ path_prefix: /api/v2 }]
  - name: static
    routes: [{ path_prefix: /static/ }]
  - name: canary
    routes: [{ header: { name: x-canary, value: 'yes' } }]
  - name: canary-cart
    routes: [{ header: { name: x-canary, value: 'yes' }, path_prefix: /cart }]
  - name: root
    routes: [{ path_prefix: / }]
";

    fn classify(
        t: &RouteTable,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Option<ServiceIndex> {
        let mut map = http::HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                http::HeaderValue::from_str(v).expect("value"),
            );
        }
        t.classify(Some(host.as_bytes()), path, &map)
    }

    #[test]
    fn host_routes_beat_path_routes_and_longest_prefix_wins() {
        let (p, t) = table(ROUTES);
        assert_eq!(
            name(&p, classify(&t, "shop.example.com", "/", &[])),
            Some("shop")
        );
        assert_eq!(
            name(&p, classify(&t, "SHOP.example.com:8080", "/api", &[])),
            Some("shop")
        );
        assert_eq!(
            name(&p, classify(&t, "shop.example.com", "/cart/1", &[])),
            Some("cart")
        );
        assert_eq!(
            name(&p, classify(&t, "other", "/api/v2/x?q=1", &[])),
            Some("api-v2")
        );
        assert_eq!(
            name(&p, classify(&t, "other", "/api/v20", &[])),
            Some("api")
        );
        assert_eq!(name(&p, classify(&t, "other", "/api", &[])), Some("api"));
    }

    #[test]
    fn prefixes_match_whole_segments() {
        let (p, t) = table(ROUTES);
        assert_eq!(name(&p, classify(&t, "x", "/apis", &[])), Some("root"));
        assert_eq!(
            name(&p, classify(&t, "x", "/static/a.css", &[])),
            Some("static")
        );
        assert_eq!(name(&p, classify(&t, "x", "/static", &[])), Some("root"));
    }

    #[test]
    fn header_routes_are_most_specific() {
        let (p, t) = table(ROUTES);
        let canary = [("x-canary", "yes")];
        assert_eq!(
            name(&p, classify(&t, "shop.example.com", "/", &canary)),
            Some("canary")
        );
        assert_eq!(
            name(&p, classify(&t, "x", "/cart/2", &canary)),
            Some("canary-cart")
        );
        assert_eq!(
            name(&p, classify(&t, "x", "/cart/2", &[("x-canary", "no")])),
            Some("root")
        );
    }

    #[test]
    fn unknown_routes_match_nothing() {
        let (_, t) = table("services:\n  - name: a\n    routes: [{ host: a.example }]\n");
        assert_eq!(classify(&t, "b.example", "/", &[]), None);
        assert_eq!(t.classify(None, "/", &http::HeaderMap::new()), None);
        let long = "a".repeat(300);
        assert_eq!(classify(&t, &long, "/", &[]), None);
    }

    #[test]
    fn hosts_are_normalized() {
        let mut buf = [0u8; MAX_HOST];
        assert_eq!(normalize_host(b"A.Example:80", &mut buf), Some("a.example"));
        assert_eq!(normalize_host(b"[::1]:80", &mut buf), Some("[::1]"));
        assert_eq!(normalize_host(b"[::1]", &mut buf), Some("[::1]"));
        assert_eq!(normalize_host(b"", &mut buf), None);
    }
}
