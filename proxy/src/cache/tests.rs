//! The store's behaviour with the Cache-Control decisions: freshness at injected times, variants,
//! keys, sizes, revalidation.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method};

use super::*;

const NOW: u64 = 10_000_000;

fn rules() -> CacheRules {
    CacheRules {
        default_ttl: Duration::from_secs(30),
        max_ttl: Duration::from_secs(600),
        max_bytes: 1 << 20,
        max_object_bytes: 64 << 10,
        shared: false,
        cache_set_cookie: false,
        cache_authorized: false,
        cache_cookies: false,
    }
}

/// A header map from name and value pairs (test input, so unwrapping is fine).
pub(super) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn key(path: &str) -> CacheKey {
    CacheKey::new(b"shop.test", path, None, false)
}

/// Plans and stores a 200 with `body` for a GET with `req` headers; true when stored.
fn put(
    cache: &ResponseCache,
    key: &CacheKey,
    req: &[(&str, &str)],
    resp: &[(&str, &str)],
    body: &'static str,
    now_ms: u64,
) -> bool {
    let (req, resp) = (headers(req), headers(resp));
    match cache.plan(&Method::GET, &req, 200, &resp, now_ms) {
        Ok(plan) => cache.insert(
            key.clone(),
            &req,
            plan,
            200,
            resp,
            Bytes::from_static(body.as_bytes()),
            now_ms,
        ),
        Err(_) => false,
    }
}

fn fresh_body(lookup: Lookup) -> Option<Bytes> {
    match lookup {
        Lookup::Fresh(entry) => Some(entry.body.clone()),
        _ => None,
    }
}

fn kind(lookup: &Lookup) -> &'static str {
    match lookup {
        Lookup::Fresh(_) => "fresh",
        Lookup::Stale(_) => "stale",
        Lookup::Miss => "miss",
    }
}

fn state(cache: &ResponseCache, key: &CacheKey, req: &[(&str, &str)], now_ms: u64) -> &'static str {
    kind(&cache.lookup(key, &headers(req), now_ms))
}

#[test]
fn fresh_until_max_age_then_stale_or_miss() {
    let cache = ResponseCache::new(rules());
    let k = key("/a");
    assert!(put(
        &cache,
        &k,
        &[],
        &[("cache-control", "max-age=60"), ("etag", "\"1\"")],
        "a",
        NOW
    ));
    assert_eq!(state(&cache, &k, &[], NOW), "fresh");
    assert_eq!(state(&cache, &k, &[], NOW + 59_999), "fresh");
    assert_eq!(
        state(&cache, &k, &[], NOW + 60_000),
        "stale",
        "validated: revalidate"
    );

    let plain = key("/plain");
    assert!(put(
        &cache,
        &plain,
        &[],
        &[("cache-control", "max-age=60")],
        "p",
        NOW
    ));
    assert_eq!(
        state(&cache, &plain, &[], NOW + 60_000),
        "miss",
        "no validator: a miss"
    );
}

#[test]
fn s_maxage_wins_in_the_store() {
    let cache = ResponseCache::new(rules());
    let k = key("/s");
    assert!(put(
        &cache,
        &k,
        &[],
        &[("cache-control", "max-age=600, s-maxage=10")],
        "s",
        NOW
    ));
    assert_eq!(state(&cache, &k, &[], NOW + 9_000), "fresh");
    assert_eq!(state(&cache, &k, &[], NOW + 10_000), "miss");
}

#[test]
fn default_ttl_and_max_ttl_in_the_store() {
    let cache = ResponseCache::new(rules());
    let (a, b) = (key("/default"), key("/capped"));
    assert!(put(&cache, &a, &[], &[], "a", NOW));
    assert!(put(
        &cache,
        &b,
        &[],
        &[("cache-control", "max-age=999999")],
        "b",
        NOW
    ));
    assert_eq!(state(&cache, &a, &[], NOW + 29_999), "fresh");
    assert_eq!(state(&cache, &a, &[], NOW + 30_000), "miss");
    assert_eq!(state(&cache, &b, &[], NOW + 599_999), "fresh");
    assert_eq!(state(&cache, &b, &[], NOW + 600_000), "miss");
}

#[test]
fn request_directives_on_lookup() {
    let cache = ResponseCache::new(rules());
    let k = key("/r");
    assert!(put(
        &cache,
        &k,
        &[],
        &[("cache-control", "max-age=60"), ("etag", "\"1\"")],
        "r",
        NOW
    ));
    assert_eq!(
        state(&cache, &k, &[("cache-control", "no-cache")], NOW),
        "stale"
    );
    assert_eq!(state(&cache, &k, &[("pragma", "no-cache")], NOW), "stale");
    assert_eq!(
        state(&cache, &k, &[("cache-control", "max-age=0")], NOW),
        "stale"
    );
    assert_eq!(
        state(&cache, &k, &[("cache-control", "max-age=10")], NOW + 10_000),
        "fresh"
    );
    assert_eq!(
        state(&cache, &k, &[("cache-control", "max-age=10")], NOW + 10_001),
        "stale"
    );
    assert_eq!(
        state(&cache, &k, &[("cache-control", "no-store")], NOW),
        "miss"
    );
    assert_eq!(state(&cache, &k, &[], NOW), "fresh");
}

#[test]
fn no_store_either_side_stores_nothing() {
    let cache = ResponseCache::new(rules());
    let k = key("/ns");
    assert!(!put(
        &cache,
        &k,
        &[("cache-control", "no-store")],
        &[],
        "x",
        NOW
    ));
    assert!(!put(
        &cache,
        &k,
        &[],
        &[("cache-control", "no-store")],
        "x",
        NOW
    ));
    assert_eq!(state(&cache, &k, &[], NOW), "miss");
    assert_eq!(cache.stats().not_stored.load(Relaxed), 2);
}

#[test]
fn private_set_cookie_and_authorization_in_the_store() {
    let cache = ResponseCache::new(rules());
    let k = key("/p");
    assert!(!put(
        &cache,
        &k,
        &[],
        &[("cache-control", "private, max-age=60")],
        "x",
        NOW
    ));
    assert!(!put(&cache, &k, &[], &[("set-cookie", "s=1")], "x", NOW));
    assert!(!put(
        &cache,
        &k,
        &[("authorization", "Basic eA==")],
        &[],
        "x",
        NOW
    ));
    assert!(put(
        &cache,
        &k,
        &[("authorization", "Basic eA==")],
        &[("cache-control", "public")],
        "pub",
        NOW
    ));
    assert_eq!(
        fresh_body(cache.lookup(&k, &HeaderMap::new(), NOW)),
        Some(Bytes::from("pub"))
    );

    let lenient = ResponseCache::new(CacheRules {
        cache_set_cookie: true,
        cache_authorized: true,
        ..rules()
    });
    assert!(put(
        &lenient,
        &k,
        &[],
        &[("set-cookie", "s=1"), ("proxy-connection", "keep-alive")],
        "c",
        NOW
    ));
    // Stored, but never with the fetching client's cookie (nor any Proxy-* header).
    let Lookup::Fresh(stored) = lenient.lookup(&k, &HeaderMap::new(), NOW) else {
        panic!("a Set-Cookie response is stored under cache_set_cookie");
    };
    assert!(stored.headers.get("set-cookie").is_none());
    assert!(stored.headers.get("proxy-connection").is_none());
    assert!(put(
        &lenient,
        &key("/auth"),
        &[("authorization", "x")],
        &[],
        "a",
        NOW
    ));
}

#[test]
fn no_cache_response_is_stored_but_always_revalidated() {
    let cache = ResponseCache::new(rules());
    let k = key("/nc");
    assert!(put(
        &cache,
        &k,
        &[],
        &[("cache-control", "no-cache, max-age=60"), ("etag", "\"1\"")],
        "x",
        NOW
    ));
    let Lookup::Stale(entry) = cache.lookup(&k, &HeaderMap::new(), NOW) else {
        panic!("no-cache must revalidate");
    };
    assert!(entry.must_revalidate && !entry.is_fresh(NOW));
    assert_eq!(entry.etag, Some(HeaderValue::from_static("\"1\"")));
    assert!(
        !put(
            &cache,
            &key("/nc2"),
            &[],
            &[("cache-control", "no-cache")],
            "x",
            NOW
        ),
        "no validator"
    );
}

#[test]
fn vary_selects_variants() {
    let cache = ResponseCache::new(rules());
    let k = key("/v");
    let vary = [("vary", "Accept-Encoding"), ("cache-control", "max-age=60")];
    assert!(put(
        &cache,
        &k,
        &[("accept-encoding", "gzip")],
        &vary,
        "gzip",
        NOW
    ));
    assert!(put(
        &cache,
        &k,
        &[("accept-encoding", "br")],
        &vary,
        "br",
        NOW
    ));
    assert!(put(&cache, &k, &[], &vary, "none", NOW));
    assert!(put(
        &cache,
        &k,
        &[("accept-encoding", "")],
        &vary,
        "empty",
        NOW
    ));
    let body = |req: &[(&str, &str)]| fresh_body(cache.lookup(&k, &headers(req), NOW));
    assert_eq!(
        body(&[("accept-encoding", "gzip")]),
        Some(Bytes::from("gzip"))
    );
    assert_eq!(body(&[("accept-encoding", "br")]), Some(Bytes::from("br")));
    assert_eq!(body(&[]), Some(Bytes::from("none")), "missing header");
    assert_eq!(
        body(&[("accept-encoding", "")]),
        Some(Bytes::from("empty")),
        "empty ≠ missing"
    );
    assert_eq!(body(&[("accept-encoding", "deflate")]), None);
    assert_eq!(cache.entries(), 1, "variants share one key");

    // The same variant again replaces it.
    assert!(put(
        &cache,
        &k,
        &[("accept-encoding", "gzip")],
        &vary,
        "gzip2",
        NOW
    ));
    assert_eq!(
        body(&[("accept-encoding", "gzip")]),
        Some(Bytes::from("gzip2"))
    );
    assert_eq!(body(&[("accept-encoding", "br")]), Some(Bytes::from("br")));
}

#[test]
fn vary_on_several_lines_of_a_request_header() {
    let cache = ResponseCache::new(rules());
    let k = key("/lines");
    let vary = [("vary", "accept")];
    assert!(put(
        &cache,
        &k,
        &[("accept", "a"), ("accept", "b")],
        &vary,
        "ab",
        NOW
    ));
    assert_eq!(
        state(&cache, &k, &[("accept", "a"), ("accept", "b")], NOW),
        "fresh"
    );
    assert_eq!(
        state(&cache, &k, &[("accept", "a, b")], NOW),
        "fresh",
        "same field value"
    );
    assert_eq!(state(&cache, &k, &[("accept", "a")], NOW), "miss");
}

#[test]
fn a_different_vary_replaces_the_variants() {
    let cache = ResponseCache::new(rules());
    let k = key("/vv");
    assert!(put(
        &cache,
        &k,
        &[("accept", "x")],
        &[("vary", "accept")],
        "accept",
        NOW
    ));
    assert!(put(
        &cache,
        &k,
        &[("accept", "x"), ("accept-language", "fr")],
        &[("vary", "accept-language")],
        "lang",
        NOW
    ));
    assert_eq!(
        state(&cache, &k, &[("accept", "x")], NOW),
        "miss",
        "the accept variant is gone"
    );
    assert_eq!(
        fresh_body(cache.lookup(&k, &headers(&[("accept-language", "fr")]), NOW)),
        Some(Bytes::from("lang"))
    );
    assert!(put(&cache, &k, &[], &[], "plain", NOW));
    assert_eq!(
        fresh_body(cache.lookup(&k, &headers(&[("accept-language", "de")]), NOW)),
        Some(Bytes::from("plain"))
    );
}

#[test]
fn variants_are_capped_oldest_first() {
    let cache = ResponseCache::new(rules());
    let k = key("/cap");
    let values = ["v0", "v1", "v2", "v3", "v4", "v5"];
    for value in values {
        assert!(put(
            &cache,
            &k,
            &[("x-v", value)],
            &[("vary", "x-v")],
            "b",
            NOW
        ));
    }
    let kept: Vec<_> = values
        .iter()
        .filter(|v| state(&cache, &k, &[("x-v", v)], NOW) == "fresh")
        .collect();
    assert_eq!(kept, [&"v2", &"v3", &"v4", &"v5"]);
    assert_eq!(kept.len(), MAX_VARIANTS);
}

#[test]
fn vary_star_is_not_stored() {
    let cache = ResponseCache::new(rules());
    let k = key("/star");
    assert!(!put(&cache, &k, &[], &[("vary", "*")], "x", NOW));
    assert_eq!(
        storable(
            &Method::GET,
            &HeaderMap::new(),
            200,
            &headers(&[("vary", "Accept, *")]),
            &rules(),
            NOW
        ),
        Err(NotStored::VaryAll)
    );
}

#[test]
fn tenants_are_isolated_unless_shared() {
    let cache = ResponseCache::new(rules());
    let acme = CacheKey::new(b"shop.test", "/t?q=1", Some("acme"), false);
    let globex = CacheKey::new(b"shop.test", "/t?q=1", Some("globex"), false);
    let nobody = CacheKey::new(b"shop.test", "/t?q=1", None, false);
    assert_ne!(acme, globex);
    assert_ne!(acme.hash(), globex.hash());
    assert_ne!(acme, nobody);
    assert!(put(&cache, &acme, &[], &[], "acme", NOW));
    assert_eq!(state(&cache, &acme, &[], NOW), "fresh");
    assert_eq!(state(&cache, &globex, &[], NOW), "miss");
    assert_eq!(state(&cache, &nobody, &[], NOW), "miss");
    assert_eq!(acme.path(), "/t?q=1");
    assert_eq!(acme.tenant(), Some("acme"));
    assert_eq!(nobody.tenant(), None);

    let shared_a = CacheKey::new(b"shop.test", "/t?q=1", Some("acme"), true);
    let shared_b = CacheKey::new(b"shop.test", "/t?q=1", Some("globex"), true);
    assert_eq!(shared_a, shared_b);
    assert_eq!(shared_a.hash(), shared_b.hash());
    assert_eq!(shared_a.tenant(), None);
    let shared = ResponseCache::new(CacheRules {
        shared: true,
        ..rules()
    });
    assert!(put(&shared, &shared_a, &[], &[], "both", NOW));
    assert_eq!(
        fresh_body(shared.lookup(&shared_b, &HeaderMap::new(), NOW)),
        Some(Bytes::from("both"))
    );
}

#[test]
fn keys_are_deterministic_and_unambiguous() {
    assert_eq!(key("/x").hash(), key("/x").hash());
    assert_eq!(key("/x"), key("/x"));
    let a = CacheKey::new(b"shop.test", "/ab", Some("c"), false);
    let b = CacheKey::new(b"shop.test", "/a", Some("bc"), false);
    assert_ne!(a, b, "path and tenant never run together");
    assert_eq!((b.path(), b.tenant()), ("/a", Some("bc")));
    assert_ne!(
        CacheKey::new(b"shop.test", "/a", Some(""), false),
        CacheKey::new(b"shop.test", "/a", None, false)
    );
    assert_ne!(key("/a?x=1"), key("/a?x=2"));
}

#[test]
fn keys_hold_the_normalized_authority() {
    let key = |authority: &[u8]| CacheKey::new(authority, "/r", None, true);
    let shop = key(b"shop.example");
    assert_eq!((shop.authority(), shop.path()), ("shop.example", "/r"));
    for same in [
        &b"SHOP.Example"[..],
        b"shop.example.",
        b"shop.example:80",
        b" shop.example ",
    ] {
        assert_eq!(key(same), shop, "{:?}", String::from_utf8_lossy(same));
        assert_eq!(key(same).hash(), shop.hash());
    }
    for other in [
        &b"evil.example"[..],
        b"shop.example:8080",
        b"",
        b"shop.example%2e",
    ] {
        assert_ne!(key(other), shop, "{:?}", String::from_utf8_lossy(other));
    }
    // Raw bytes are escaped, never confused with what they look like.
    assert_ne!(key(b"a\xffb"), key(b"a%FFb"));
    assert_eq!(key(b"a\xffb").authority(), "a%FFb");
    assert_eq!(key(b"[::1]:80").authority(), "[::1]");
    // The authority, path and tenant never run together.
    let a = CacheKey::new(b"h", "/x", Some("t"), false);
    assert_eq!(
        (a.authority(), a.path(), a.tenant()),
        ("h", "/x", Some("t"))
    );
}

#[test]
fn head_shares_the_get_key_and_is_never_stored() {
    let cache = ResponseCache::new(rules());
    let get = CacheKey::new(b"shop.test", "/h", Some("t"), false);
    assert!(put(&cache, &get, &[], &[], "body", NOW));
    // A HEAD builds the same key and finds the GET's response.
    let head = CacheKey::new(b"shop.test", "/h", Some("t"), false);
    assert_eq!(state(&cache, &head, &[], NOW), "fresh");
    assert_eq!(
        cache.plan(
            &Method::HEAD,
            &HeaderMap::new(),
            200,
            &HeaderMap::new(),
            NOW
        ),
        Err(NotStored::Method)
    );
}

#[test]
fn hop_by_hop_headers_and_age_are_not_stored() {
    let cache = ResponseCache::new(rules());
    let k = key("/hop");
    let resp = [
        ("connection", "keep-alive, x-conn-only"),
        ("keep-alive", "timeout=5"),
        ("transfer-encoding", "chunked"),
        ("te", "trailers"),
        ("trailer", "x-checksum"),
        ("upgrade", "h2c"),
        ("proxy-authenticate", "Basic"),
        ("proxy-authorization", "Basic eA=="),
        ("x-conn-only", "1"),
        ("age", "3"),
        ("content-type", "text/plain"),
        ("x-kept", "yes"),
    ];
    assert!(put(&cache, &k, &[], &resp, "hop", NOW));
    let Lookup::Fresh(entry) = cache.lookup(&k, &HeaderMap::new(), NOW) else {
        panic!("stored");
    };
    let names: Vec<&str> = entry.headers.keys().map(HeaderName::as_str).collect();
    assert_eq!(names, ["content-type", "x-kept"]);
    assert_eq!(entry.age_secs(NOW), 3, "the upstream age still counts");
    assert_eq!(entry.age_secs(NOW + 2_500), 5);
}

#[test]
fn bytes_stay_within_max_bytes() {
    let max_bytes = 64 << 10;
    let cache = ResponseCache::new(CacheRules {
        max_bytes,
        max_object_bytes: 16 << 10,
        ..rules()
    });
    let body = Bytes::from(vec![b'x'; 4 << 10]);
    let mut stored = 0;
    for i in 0..64 {
        let resp = headers(&[("content-type", "application/octet-stream")]);
        let plan = cache
            .plan(&Method::GET, &HeaderMap::new(), 200, &resp, NOW)
            .unwrap();
        if cache.insert(
            key(&format!("/big/{i}")),
            &HeaderMap::new(),
            plan,
            200,
            resp,
            body.clone(),
            NOW,
        ) {
            stored += 1;
        }
    }
    assert_eq!(stored, 64, "each fits on its own");
    let bytes = cache.bytes();
    assert!(bytes <= max_bytes, "{bytes} > {max_bytes}");
    assert!(bytes > max_bytes / 2, "the cache is used: {bytes}");
    let entries = cache.entries();
    assert!((8..64).contains(&entries), "{entries} entries");
}

#[test]
fn objects_over_max_object_bytes_are_never_stored() {
    let cache = ResponseCache::new(CacheRules {
        max_object_bytes: 1024,
        ..rules()
    });
    let resp = HeaderMap::new();
    let plan = cache
        .plan(&Method::GET, &HeaderMap::new(), 200, &resp, NOW)
        .unwrap();
    let k = key("/large");
    assert!(!cache.insert(
        k.clone(),
        &HeaderMap::new(),
        plan.clone(),
        200,
        resp.clone(),
        Bytes::from(vec![0; 1025]),
        NOW
    ));
    assert_eq!(state(&cache, &k, &[], NOW), "miss");
    assert!(cache.insert(
        k.clone(),
        &HeaderMap::new(),
        plan,
        200,
        resp,
        Bytes::from(vec![0; 1024]),
        NOW
    ));
    assert_eq!(state(&cache, &k, &[], NOW), "fresh");
    assert_eq!(cache.stats().not_stored.load(Relaxed), 1);
    assert_eq!(cache.stats().stores.load(Relaxed), 1);

    // An object that cannot fit in max_bytes at all is refused too.
    let tiny = ResponseCache::new(CacheRules {
        max_bytes: 512,
        ..rules()
    });
    let plan = tiny
        .plan(&Method::GET, &HeaderMap::new(), 200, &HeaderMap::new(), NOW)
        .unwrap();
    assert!(!tiny.insert(
        k,
        &HeaderMap::new(),
        plan,
        200,
        HeaderMap::new(),
        Bytes::from(vec![0; 600]),
        NOW
    ));
}

#[test]
fn revalidated_refreshes_freshness_and_headers() {
    let cache = ResponseCache::new(rules());
    let k = key("/rv");
    let resp = [
        ("cache-control", "max-age=10"),
        ("etag", "\"v1\""),
        ("content-type", "text/plain"),
        ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
    ];
    assert!(put(&cache, &k, &[], &resp, "body", NOW));
    let later = NOW + 15_000;
    let Lookup::Stale(stale) = cache.lookup(&k, &HeaderMap::new(), later) else {
        panic!("stale after max-age");
    };
    assert_eq!(stale.etag, Some(HeaderValue::from_static("\"v1\"")));

    let not_modified = headers(&[
        ("cache-control", "max-age=120"),
        ("etag", "W/\"v1\""),
        ("date", "Sun, 06 Nov 1994 08:49:52 GMT"),
        ("content-type", "application/evil"),
    ]);
    let refreshed = cache
        .revalidated(&k, &HeaderMap::new(), &not_modified, later)
        .unwrap();
    assert_eq!(refreshed.body, Bytes::from("body"));
    assert_eq!(refreshed.fresh_until_ms, later + 120_000);
    assert_eq!(refreshed.stored_ms, later);
    assert_eq!(
        refreshed.headers.get("cache-control").unwrap(),
        "max-age=120"
    );
    assert_eq!(
        refreshed.headers.get("date").unwrap(),
        "Sun, 06 Nov 1994 08:49:52 GMT"
    );
    assert_eq!(
        refreshed.headers.get("content-type").unwrap(),
        "text/plain",
        "not a 304's to change"
    );
    assert_eq!(refreshed.etag, Some(HeaderValue::from_static("W/\"v1\"")));
    assert_eq!(
        state(&cache, &k, &[], later + 119_000),
        "fresh",
        "the store holds the refresh"
    );
    assert_eq!(state(&cache, &k, &[], later + 120_000), "stale");
}

#[test]
fn revalidated_keeps_stored_cache_control_without_one_in_the_304() {
    let cache = ResponseCache::new(rules());
    let k = key("/rv2");
    assert!(put(
        &cache,
        &k,
        &[],
        &[
            ("cache-control", "max-age=10"),
            ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT")
        ],
        "b",
        NOW
    ));
    let refreshed = cache
        .revalidated(&k, &HeaderMap::new(), &HeaderMap::new(), NOW + 20_000)
        .unwrap();
    assert_eq!(refreshed.fresh_until_ms, NOW + 30_000);
    assert!(refreshed.last_modified.is_some());
}

#[test]
fn revalidated_refuses_other_etags_and_no_store() {
    let cache = ResponseCache::new(rules());
    let k = key("/rv3");
    let resp = [("cache-control", "max-age=10"), ("etag", "\"v1\"")];
    assert!(put(&cache, &k, &[], &resp, "b", NOW));
    assert!(cache
        .revalidated(&k, &HeaderMap::new(), &headers(&[("etag", "\"v2\"")]), NOW)
        .is_none());
    assert!(cache
        .revalidated(&key("/none"), &HeaderMap::new(), &HeaderMap::new(), NOW)
        .is_none());
    let no_store = headers(&[("cache-control", "no-store")]);
    assert!(cache
        .revalidated(&k, &HeaderMap::new(), &no_store, NOW)
        .is_none());
    assert_eq!(state(&cache, &k, &[], NOW), "miss", "removed");
}

#[test]
fn revalidated_updates_only_the_selected_variant() {
    let cache = ResponseCache::new(rules());
    let k = key("/rv4");
    let resp = [
        ("cache-control", "max-age=10"),
        ("etag", "\"v\""),
        ("vary", "accept"),
    ];
    assert!(put(&cache, &k, &[("accept", "a")], &resp, "a", NOW));
    assert!(put(&cache, &k, &[("accept", "b")], &resp, "b", NOW));
    let later = NOW + 20_000;
    let refreshed = cache
        .revalidated(
            &k,
            &headers(&[("accept", "b")]),
            &headers(&[("cache-control", "max-age=60")]),
            later,
        )
        .unwrap();
    assert_eq!(refreshed.body, Bytes::from("b"));
    assert_eq!(state(&cache, &k, &[("accept", "b")], later), "fresh");
    assert_eq!(state(&cache, &k, &[("accept", "a")], later), "stale");
}

#[test]
fn peek_and_remove_and_counters() {
    let cache = ResponseCache::new(rules());
    let k = key("/pk");
    assert!(put(
        &cache,
        &k,
        &[],
        &[("cache-control", "max-age=1")],
        "p",
        NOW
    ));
    let peeked = cache.peek(&k, &HeaderMap::new()).unwrap();
    assert!(!peeked.is_fresh(NOW + 5_000));
    assert!(
        cache.peek(&k, &HeaderMap::new()).is_some(),
        "peek returns stale entries too"
    );
    let stats = cache.stats();
    assert_eq!(
        stats.hits.load(Relaxed) + stats.misses.load(Relaxed) + stats.stale.load(Relaxed),
        0
    );

    assert_eq!(state(&cache, &k, &[], NOW), "fresh");
    assert_eq!(state(&cache, &key("/other"), &[], NOW), "miss");
    cache.remove(&k);
    assert_eq!(state(&cache, &k, &[], NOW), "miss");
    assert!(cache.peek(&k, &HeaderMap::new()).is_none());
    assert_eq!(stats.hits.load(Relaxed), 1);
    assert_eq!(stats.misses.load(Relaxed), 2);
    assert_eq!(stats.stores.load(Relaxed), 1);
    assert_eq!(cache.rules(), &rules());
}

#[test]
fn stale_counter_and_age_at_injected_times() {
    let cache = ResponseCache::new(rules());
    let k = key("/st");
    assert!(put(
        &cache,
        &k,
        &[],
        &[("cache-control", "max-age=5"), ("etag", "\"e\"")],
        "s",
        NOW
    ));
    let Lookup::Fresh(entry) = cache.lookup(&k, &HeaderMap::new(), NOW + 4_999) else {
        panic!("fresh");
    };
    assert_eq!(entry.age_secs(NOW + 4_999), 4);
    assert!(entry.is_fresh(NOW + 4_999) && !entry.is_fresh(NOW + 5_000));
    assert!(matches!(
        cache.lookup(&k, &HeaderMap::new(), NOW + 5_000),
        Lookup::Stale(_)
    ));
    assert_eq!(cache.stats().stale.load(Relaxed), 1);
}

#[test]
fn garbage_request_and_response_headers_are_survived() {
    let cache = ResponseCache::new(rules());
    let k = key("/g");
    let mut resp = HeaderMap::new();
    for (name, value) in [
        ("cache-control", &b"max-age=\"\xff, ,=,s-maxage=abc"[..]),
        ("vary", b",,"),
        ("age", b"-4"),
        ("expires", b"\xfe"),
        ("connection", b"\xff, ,"),
        ("etag", b""),
    ] {
        resp.append(
            HeaderName::from_static(name),
            HeaderValue::from_bytes(value).unwrap(),
        );
    }
    let mut req = HeaderMap::new();
    req.append(
        header::CACHE_CONTROL,
        HeaderValue::from_bytes(b"max-age=\xff").unwrap(),
    );
    req.append(header::PRAGMA, HeaderValue::from_bytes(b"\x80").unwrap());
    let plan = storable(&Method::GET, &req, 200, &resp, &rules(), NOW);
    // `Expires` is invalid (already expired) but there is an ETag: stored for revalidation.
    let plan = plan.unwrap();
    assert!(cache.insert(k.clone(), &req, plan, 200, resp, Bytes::new(), NOW));
    assert!(matches!(cache.lookup(&k, &req, NOW), Lookup::Stale(_)));
    assert!(cache.revalidated(&k, &req, &req, NOW).is_some());
}
