//! A service's `cache:` (the response cache) and `warm:` (warming new instances and the cache)
//! sections.
//!
//! ```yaml
//! cache:
//!   ttl: 30s               # freshness when a response gives none (0 = only max-age/s-maxage)
//!   max_ttl: 10m           # cap on any response's freshness
//!   max_bytes: 64MiB       # all of this service's cached responses, headers included
//!   max_object_bytes: 1MiB # a larger response streams through uncached
//!   shared: false          # true: one entry for every tenant
//!   cache_set_cookie: false  # store responses that set cookies
//!   cache_authorized: false  # store answers to requests with Authorization
//!   cache_cookies: false     # store answers to requests with Cookie
//!                            # (without these, only a response saying public or s-maxage is)
//! warm:
//!   urls: [/, /catalog]    # GET through every new instance before it is confirmed ready
//!   hot_keys: 16           # and the service's hottest cacheable paths
//!   hook: /warmup          # POST here on the instance first (the service implements it)
//!   rate: 50               # warm requests per second per instance
//!   timeout: 10s           # longest warm-up; the instance is confirmed ready after it anyway
//!   refresh_ahead: 5s      # re-fetch hot cached entries this long before they expire (0 = off)
//! ```

use std::time::Duration;

use serde::Deserialize;

use crate::check::Checker;
pub use crate::de::parse_byte_size;

/// `cache:` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSpec {
    /// Freshness when a response gives none.
    #[serde(default, deserialize_with = "crate::de::duration")]
    pub ttl: Option<Duration>,
    /// Cap on any response's freshness.
    #[serde(default, deserialize_with = "crate::de::duration")]
    pub max_ttl: Option<Duration>,
    /// Bytes of all cached responses of the service.
    #[serde(default, deserialize_with = "crate::de::byte_size")]
    pub max_bytes: Option<u64>,
    /// Bytes of the largest response that is cached.
    #[serde(default, deserialize_with = "crate::de::byte_size")]
    pub max_object_bytes: Option<u64>,
    /// One entry for all tenants instead of one per tenant.
    pub shared: Option<bool>,
    /// Cache responses that set cookies.
    pub cache_set_cookie: Option<bool>,
    /// Cache responses to requests with `Authorization`.
    pub cache_authorized: Option<bool>,
    /// Cache responses to requests with `Cookie`.
    pub cache_cookies: Option<bool>,
}

/// `warm:` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmSpec {
    /// Paths (with query) requested through every new instance before it is ready.
    #[serde(default)]
    pub urls: Vec<String>,
    /// How many of the service's hottest cacheable paths are requested too.
    pub hot_keys: Option<u32>,
    /// A path on the instance that is POSTed to first.
    pub hook: Option<String>,
    /// Warm requests per second per instance.
    pub rate: Option<u32>,
    /// Longest warm-up of one instance.
    #[serde(default, deserialize_with = "crate::de::duration")]
    pub timeout: Option<Duration>,
    /// Re-fetch hot cached entries this long before they expire; 0 turns it off.
    #[serde(default, deserialize_with = "crate::de::duration")]
    pub refresh_ahead: Option<Duration>,
}

/// A service's resolved response cache settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Freshness when a response gives none; zero caches only responses with a lifetime.
    pub ttl: Duration,
    /// Cap on any response's freshness.
    pub max_ttl: Duration,
    /// Bytes of all cached responses of the service.
    pub max_bytes: u64,
    /// Bytes of the largest response that is cached; larger ones stream through.
    pub max_object_bytes: u64,
    /// One entry for all tenants.
    pub shared: bool,
    /// Cache responses with `Set-Cookie`.
    pub cache_set_cookie: bool,
    /// Cache responses to requests with `Authorization`.
    pub cache_authorized: bool,
    /// Cache responses to requests with `Cookie`.
    pub cache_cookies: bool,
}

/// A service's resolved warming settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmConfig {
    /// Paths requested through every new instance before it is confirmed ready.
    pub urls: Vec<String>,
    /// How many of the hottest cacheable paths are requested too.
    pub hot_keys: u32,
    /// Path POSTed to on the instance before anything else.
    pub hook: Option<String>,
    /// Warm requests per second per instance.
    pub rate: u32,
    /// Longest warm-up of one instance.
    pub timeout: Duration,
    /// How long before expiry hot cached entries are re-fetched; zero is off.
    pub refresh_ahead: Duration,
}

/// Largest `max_bytes` accepted: 64 GiB.
const MAX_CACHE_BYTES: u64 = 64 << 30;

// === impl Checker ===

impl Checker<'_> {
    /// Resolves a service's `cache:` section.
    pub(crate) fn cache(&mut self, at: &str, spec: &CacheSpec) -> CacheConfig {
        let at = format!("{at}.cache");
        let config = CacheConfig {
            ttl: spec.ttl.unwrap_or(Duration::from_secs(30)),
            max_ttl: spec.max_ttl.unwrap_or(Duration::from_secs(600)),
            max_bytes: spec.max_bytes.unwrap_or(64 << 20),
            max_object_bytes: spec.max_object_bytes.unwrap_or(1 << 20),
            shared: spec.shared.unwrap_or(false),
            cache_set_cookie: spec.cache_set_cookie.unwrap_or(false),
            cache_authorized: spec.cache_authorized.unwrap_or(false),
            cache_cookies: spec.cache_cookies.unwrap_or(false),
        };
        if config.max_ttl.is_zero() || config.max_ttl > Duration::from_secs(7 * 86_400) {
            self.problem(&format!("{at}.max_ttl"), "between 1s and 7 days");
        }
        if config.ttl > config.max_ttl {
            self.problem(&format!("{at}.ttl"), "must not exceed max_ttl");
        }
        if config.max_bytes == 0 || config.max_bytes > MAX_CACHE_BYTES {
            self.problem(&format!("{at}.max_bytes"), "between 1 byte and 64GiB");
        }
        if config.max_object_bytes == 0 || config.max_object_bytes > config.max_bytes {
            self.problem(
                &format!("{at}.max_object_bytes"),
                "at least 1 byte and at most max_bytes",
            );
        }
        config
    }

    /// Resolves a service's `warm:` section.
    pub(crate) fn warm(&mut self, at: &str, spec: &WarmSpec) -> WarmConfig {
        let at = format!("{at}.warm");
        for url in &spec.urls {
            if !url.starts_with('/') || url.contains(char::is_whitespace) {
                self.problem(
                    &format!("{at}.urls"),
                    format!("{url:?} must be a path starting with '/', without spaces"),
                );
            }
        }
        if let Some(hook) = &spec.hook {
            if !hook.starts_with('/') || hook.contains(char::is_whitespace) {
                self.problem(
                    &format!("{at}.hook"),
                    format!("{hook:?} must be a path starting with '/', without spaces"),
                );
            }
        }
        let config = WarmConfig {
            urls: spec.urls.clone(),
            hot_keys: spec.hot_keys.unwrap_or(16),
            hook: spec.hook.clone(),
            rate: spec.rate.unwrap_or(50),
            timeout: spec.timeout.unwrap_or(Duration::from_secs(10)),
            refresh_ahead: spec.refresh_ahead.unwrap_or(Duration::from_secs(5)),
        };
        if config.hot_keys > 1_000 {
            self.problem(&format!("{at}.hot_keys"), "at most 1000");
        }
        if config.rate == 0 || config.rate > 10_000 {
            self.problem(
                &format!("{at}.rate"),
                "between 1 and 10000 requests per second",
            );
        }
        if config.timeout.is_zero() || config.timeout > Duration::from_secs(600) {
            self.problem(&format!("{at}.timeout"), "between 1ms and 10m");
        }
        if config.refresh_ahead > Duration::from_secs(3_600) {
            self.problem(&format!("{at}.refresh_ahead"), "at most 1h");
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse_rendered as parse;

    const SERVICE: &str = "services:
  - name: shop
    routes: [{path_prefix: /shop}]
    instances: [{address: 127.0.0.1:9001}]
";

    #[test]
    fn resolves_cache_and_warm_with_defaults() {
        let text = format!(
            "{SERVICE}    cache: {{ ttl: 5s, max_bytes: 8MiB, shared: true }}
    warm: {{ urls: [/, /shop/catalog], hook: /warmup, rate: 20 }}
"
        );
        let policy = parse(&text).expect("valid");
        let shop = &policy.services[0];
        let cache = shop.cache.as_ref().expect("cache");
        assert_eq!(cache.ttl, Duration::from_secs(5));
        assert_eq!(cache.max_ttl, Duration::from_secs(600));
        assert_eq!(cache.max_bytes, 8 << 20);
        assert_eq!(cache.max_object_bytes, 1 << 20);
        assert!(cache.shared && !cache.cache_set_cookie && !cache.cache_authorized);
        let warm = shop.warm.as_ref().expect("warm");
        assert_eq!(warm.urls, ["/", "/shop/catalog"]);
        assert_eq!(warm.hook.as_deref(), Some("/warmup"));
        assert_eq!((warm.rate, warm.hot_keys), (20, 16));
        assert_eq!(warm.refresh_ahead, Duration::from_secs(5));
        // Neither section: no cache, no warming.
        let plain = parse(SERVICE).expect("valid");
        assert!(plain.services[0].cache.is_none() && plain.services[0].warm.is_none());
    }

    #[test]
    fn locates_cache_and_warm_problems() {
        let text = format!(
            "{SERVICE}    cache: {{ ttl: 1h, max_ttl: 10m, max_bytes: 1KiB, max_object_bytes: 1MiB }}
    warm: {{ urls: [catalog], hook: \"/warm up\", rate: 0, hot_keys: 5000 }}
"
        );
        let found = parse(&text).expect_err("invalid");
        let expected = [
            "p.yaml:5:19: services[0].cache.ttl: must not exceed max_ttl",
            "p.yaml:5:72: services[0].cache.max_object_bytes: at least 1 byte and at most max_bytes",
            "p.yaml:6:13: services[0].warm.urls: \"catalog\" must be a path",
            "p.yaml:6:36: services[0].warm.hook: \"/warm up\" must be a path",
            "p.yaml:6:54: services[0].warm.rate: between 1 and 10000",
            "p.yaml:6:67: services[0].warm.hot_keys: at most 1000",
        ];
        for want in expected {
            assert!(
                found.iter().any(|p| p.starts_with(want)),
                "missing {want:?} in {found:#?}"
            );
        }
        let bad_size = format!("{SERVICE}    cache: {{ max_bytes: 12 parsecs }}\n");
        let found = parse(&bad_size).expect_err("invalid");
        assert!(
            found
                .iter()
                .any(|p| p.contains("invalid size") && p.contains("p.yaml:5")),
            "{found:#?}"
        );
    }

    #[test]
    fn byte_sizes_take_binary_and_decimal_units() {
        assert_eq!(parse_byte_size("4096"), Some(4096));
        assert_eq!(parse_byte_size("4096B"), Some(4096));
        assert_eq!(parse_byte_size("512KiB"), Some(512 << 10));
        assert_eq!(parse_byte_size("64 MiB"), Some(64 << 20));
        assert_eq!(parse_byte_size("1gib"), Some(1 << 30));
        assert_eq!(parse_byte_size("10MB"), Some(10_000_000));
        assert_eq!(parse_byte_size("10 parsecs"), None);
        assert_eq!(parse_byte_size("MiB"), None);
        assert_eq!(parse_byte_size("99999999999999999999GiB"), None);
    }
}
