//! `Cache-Control` and the decision to store a response: the subset of RFC 9111 a shared cache in
//! front of one service needs.
//!
//! Parsing is tolerant: directive names in any case, spaces around `=` and `,`, quoted values,
//! several `Cache-Control` lines combined; unknown directives are ignored and a malformed number
//! makes its directive absent. Nothing here panics on what a client or an instance sends.

use std::time::Duration;

use http::{header, HeaderMap, HeaderName, HeaderValue, Method};

/// A service's `cache:` settings as the cache library sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRules {
    /// Freshness of a response that gives none (`Duration::ZERO`: only validated responses).
    pub default_ttl: Duration,
    /// Cap on any response's freshness.
    pub max_ttl: Duration,
    /// All of the service's cached responses, headers and bookkeeping included.
    pub max_bytes: u64,
    /// The largest body stored; a larger response is never stored.
    pub max_object_bytes: u64,
    /// One entry for every tenant (the key ignores the tenant).
    pub shared: bool,
    /// Store responses that set cookies.
    pub cache_set_cookie: bool,
    /// Store responses to requests with `Authorization`.
    pub cache_authorized: bool,
    /// Store responses to requests with `Cookie`.
    pub cache_cookies: bool,
}

/// The largest delta-seconds a cache must represent (RFC 9111 §1.2.2); larger values clamp to it.
const DELTA_SECONDS_MAX: u64 = 2_147_483_648;

/// Statuses a response may be stored with.
const STORABLE_STATUSES: [u16; 7] = [200, 203, 204, 300, 301, 404, 410];

/// The directives of a request's `Cache-Control` (and `Pragma`) that the cache obeys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestDirectives {
    /// `no-cache` (or `Pragma: no-cache` without `Cache-Control`): revalidate before answering.
    pub no_cache: bool,
    /// `no-store`: neither answer from the cache nor store the response.
    pub no_store: bool,
    /// `max-age=N`: the oldest stored response, in seconds, the client accepts.
    pub max_age: Option<u64>,
}

/// The directives of a response's `Cache-Control` that the cache obeys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseDirectives {
    /// `max-age=N`: fresh for N seconds.
    pub max_age: Option<u64>,
    /// `s-maxage=N`: fresh for N seconds in a shared cache (wins over `max-age`).
    pub s_maxage: Option<u64>,
    /// `no-store`: never stored.
    pub no_store: bool,
    /// `no-cache` (qualified or not): stored, but revalidated before every use.
    pub no_cache: bool,
    /// `private` (qualified or not): for one user only, never stored by this shared cache.
    pub private: bool,
    /// `public`: storable even for a request with `Authorization` or `Cookie`.
    pub public: bool,
    /// `must-revalidate`: never served stale (this cache never does).
    pub must_revalidate: bool,
}

/// Why a response was not stored: one variant per reason, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotStored {
    /// The request was not a GET (HEAD is looked up, never stored).
    Method,
    /// The status is not one the cache stores.
    Status,
    /// The request said `no-store`.
    RequestNoStore,
    /// The response said `no-store`.
    NoStore,
    /// The response said `private`.
    Private,
    /// The response sets a cookie and the service does not allow caching those.
    SetCookie,
    /// The request carried `Authorization` and neither the service nor the response allows it.
    Authorization,
    /// The request carried `Cookie` and neither the service nor the response allows it.
    Cookie,
    /// The response varies on everything (`Vary: *`).
    VaryAll,
    /// The response's `Vary` is not a list of header names.
    BadVary,
    /// The response is fresh for no time (or must always be revalidated) and has no validator.
    NoFreshness,
    /// The response is larger than the service's largest cacheable object (for callers that
    /// check sizes; [`storable`] does not see the body).
    TooLarge,
}

/// What storing a response takes: its freshness on the proxy's clock and the request headers
/// it varies on. Made by [`storable`], consumed by `ResponseCache::insert`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorePlan {
    /// When the response's age was zero, on the proxy's clock (arrival minus any upstream `Age`).
    pub stored_ms: u64,
    /// Until when the response is fresh, on the proxy's clock.
    pub fresh_until_ms: u64,
    /// The response said `no-cache`: revalidate before every use.
    pub must_revalidate: bool,
    /// The request headers the response varies on, lowercased, sorted, without duplicates.
    pub vary: Vec<HeaderName>,
}

// === impl RequestDirectives ===

impl RequestDirectives {
    /// Reads a request's `Cache-Control` lines; `Pragma: no-cache` counts only without them
    /// (RFC 7234 §5.4). Allocates nothing.
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut directives = Self::default();
        for_each_directive(headers, &header::CACHE_CONTROL, |name, value| {
            if name.eq_ignore_ascii_case(b"no-cache") {
                directives.no_cache = true;
            } else if name.eq_ignore_ascii_case(b"no-store") {
                directives.no_store = true;
            } else if name.eq_ignore_ascii_case(b"max-age") {
                directives.max_age = directives.max_age.or_else(|| delta_seconds(value));
            }
        });
        if !headers.contains_key(header::CACHE_CONTROL) {
            for_each_directive(headers, &header::PRAGMA, |name, _| {
                if name.eq_ignore_ascii_case(b"no-cache") {
                    directives.no_cache = true;
                }
            });
        }
        directives
    }
}

// === impl ResponseDirectives ===

impl ResponseDirectives {
    /// Reads a response's `Cache-Control` lines. A directive given twice keeps its first valid
    /// value.
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut d = Self::default();
        for_each_directive(headers, &header::CACHE_CONTROL, |name, value| {
            let is = |known: &str| name.eq_ignore_ascii_case(known.as_bytes());
            if is("max-age") {
                d.max_age = d.max_age.or_else(|| delta_seconds(value));
            } else if is("s-maxage") {
                d.s_maxage = d.s_maxage.or_else(|| delta_seconds(value));
            } else if is("no-store") {
                d.no_store = true;
            } else if is("no-cache") {
                d.no_cache = true;
            } else if is("private") {
                d.private = true;
            } else if is("public") {
                d.public = true;
            } else if is("must-revalidate") {
                d.must_revalidate = true;
            }
        });
        d
    }
}

impl ResponseDirectives {
    /// The response says it may be given to everyone: `public` or `s-maxage`.
    pub fn is_shared(&self) -> bool {
        self.public || self.s_maxage.is_some()
    }
}

/// Why a request's answer is personal unless the response says otherwise: it carries
/// `Authorization` or `Cookie` and the service did not opt in to caching those.
pub fn personal_request(req_headers: &HeaderMap, rules: &CacheRules) -> Option<NotStored> {
    if !rules.cache_authorized && req_headers.contains_key(header::AUTHORIZATION) {
        return Some(NotStored::Authorization);
    }
    if !rules.cache_cookies && req_headers.contains_key(header::COOKIE) {
        return Some(NotStored::Cookie);
    }
    None
}

// === impl NotStored ===

impl NotStored {
    /// The reason as a short snake_case label (a metric label value or log field).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Method => "method",
            Self::Status => "status",
            Self::RequestNoStore => "request_no_store",
            Self::NoStore => "no_store",
            Self::Private => "private",
            Self::SetCookie => "set_cookie",
            Self::Authorization => "authorization",
            Self::Cookie => "cookie",
            Self::VaryAll => "vary_all",
            Self::BadVary => "bad_vary",
            Self::NoFreshness => "no_freshness",
            Self::TooLarge => "too_large",
        }
    }
}

impl std::fmt::Display for NotStored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decides whether a response may be stored and, if so, for how long it is fresh.
///
/// Only GET; only statuses 200, 203, 204, 300, 301, 404, 410; never `no-store` (either side),
/// `private`, `Vary: *`, `Set-Cookie` (unless `rules.cache_set_cookie`); never a response to a
/// request with `Authorization` or `Cookie` (a personal answer) unless the response says
/// `public` or `s-maxage` or the service opts in (`rules.cache_authorized`,
/// `rules.cache_cookies`) — Varnish's safe default, stricter than RFC 9111 §3.5.
/// Freshness: `s-maxage`, else `max-age`, else `Expires` minus `Date`, else `rules.default_ttl`; capped at `rules.max_ttl`, minus the response's `Age`.
/// A response fresh for no time (or `no-cache`) is stored only with a validator (ETag or
/// Last-Modified) to revalidate it with.
pub fn storable(
    method: &Method,
    req_headers: &HeaderMap,
    status: u16,
    resp_headers: &HeaderMap,
    rules: &CacheRules,
    now_ms: u64,
) -> Result<StorePlan, NotStored> {
    if method != Method::GET {
        return Err(NotStored::Method);
    }
    if !STORABLE_STATUSES.contains(&status) {
        return Err(NotStored::Status);
    }
    if RequestDirectives::parse(req_headers).no_store {
        return Err(NotStored::RequestNoStore);
    }
    let directives = ResponseDirectives::parse(resp_headers);
    if directives.no_store {
        return Err(NotStored::NoStore);
    }
    if directives.private {
        return Err(NotStored::Private);
    }
    let vary = vary_names(resp_headers)?;
    if let Some(personal) = personal_request(req_headers, rules) {
        if !directives.is_shared() {
            return Err(personal);
        }
    }
    if resp_headers.contains_key(header::SET_COOKIE) && !rules.cache_set_cookie {
        return Err(NotStored::SetCookie);
    }
    let stored_ms = now_ms.saturating_sub(age_ms(resp_headers));
    let fresh_until_ms = stored_ms.saturating_add(lifetime_ms(&directives, resp_headers, rules));
    let validated =
        resp_headers.contains_key(header::ETAG) || resp_headers.contains_key(header::LAST_MODIFIED);
    if (fresh_until_ms <= now_ms || directives.no_cache) && !validated {
        return Err(NotStored::NoFreshness);
    }
    Ok(StorePlan {
        stored_ms,
        fresh_until_ms,
        must_revalidate: directives.no_cache,
        vary,
    })
}

/// How long a response is fresh, in milliseconds from when its age was zero: `s-maxage`, else
/// `max-age`, else `Expires` minus `Date`, else the service's default; capped at `max_ttl`.
pub(crate) fn lifetime_ms(
    directives: &ResponseDirectives,
    headers: &HeaderMap,
    rules: &CacheRules,
) -> u64 {
    let explicit = directives
        .s_maxage
        .or(directives.max_age)
        .map(|secs| secs.saturating_mul(1000))
        .or_else(|| expires_lifetime_ms(headers));
    let lifetime = explicit.unwrap_or_else(|| millis(rules.default_ttl));
    lifetime.min(millis(rules.max_ttl))
}

/// The response's `Age` in milliseconds (0 when absent or malformed).
pub(crate) fn age_ms(headers: &HeaderMap) -> u64 {
    let age = headers
        .get(header::AGE)
        .and_then(|value| delta_seconds(Some(trim(value.as_bytes()))));
    age.unwrap_or(0).saturating_mul(1000)
}

/// A duration in whole milliseconds, saturating.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// `Expires` minus `Date`: `Some(0)` for an invalid `Expires` (RFC 9111 §5.3: in the past),
/// `None` without `Expires`, or without a valid `Date` (the proxy's clock has no calendar).
fn expires_lifetime_ms(headers: &HeaderMap) -> Option<u64> {
    let expires = headers.get(header::EXPIRES)?;
    let Some(expires) = http_date_secs(expires) else {
        return Some(0);
    };
    let date = headers.get(header::DATE).and_then(http_date_secs)?;
    Some(expires.saturating_sub(date).saturating_mul(1000))
}

/// Seconds since 1970 of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the format every
/// sender must use; the obsolete formats read as invalid.
fn http_date_secs(value: &HeaderValue) -> Option<u64> {
    let b = trim(value.as_bytes());
    if b.len() != 29 || b[3] != b',' || b[4] != b' ' || &b[25..] != b" GMT" {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u64> {
        let digits = &b[range];
        digits.iter().try_fold(0u64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
        })
    };
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let month = MONTHS.iter().position(|m| &b[8..11] == *m)? as u64 + 1;
    if b[7] != b' ' || b[11] != b' ' || b[16] != b' ' || b[19] != b':' || b[22] != b':' {
        return None;
    }
    let (day, year) = (number(5..7)?, number(12..16)?);
    let (hour, minute, second) = (number(17..19)?, number(20..22)?, number(23..25)?);
    if !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 || year < 1970 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm), for years from 1970.
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

/// The header names a response varies on: lowercased, sorted, deduplicated. `Vary: *` and a
/// name that is not a header name refuse the response.
fn vary_names(headers: &HeaderMap) -> Result<Vec<HeaderName>, NotStored> {
    let mut names = Vec::new();
    for value in headers.get_all(header::VARY) {
        for item in value.as_bytes().split(|&b| b == b',') {
            let item = trim(item);
            if item.is_empty() {
                continue;
            }
            if item == b"*" {
                return Err(NotStored::VaryAll);
            }
            let name = HeaderName::from_bytes(item).map_err(|_| NotStored::BadVary)?;
            names.push(name);
        }
    }
    names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    Ok(names)
}

/// Calls `f(name, value)` for every directive in every `name` header line; quoted values come
/// unquoted, commas inside quotes do not split. Allocates nothing.
fn for_each_directive(
    headers: &HeaderMap,
    name: &HeaderName,
    mut f: impl FnMut(&[u8], Option<&[u8]>),
) {
    for line in headers.get_all(name) {
        let mut rest = line.as_bytes();
        while !rest.is_empty() {
            let (item, tail) = split_directive(rest);
            rest = tail;
            let (name, value) = match item.iter().position(|&b| b == b'=') {
                Some(eq) => (trim(&item[..eq]), Some(unquote(trim(&item[eq + 1..])))),
                None => (trim(item), None),
            };
            if !name.is_empty() {
                f(name, value);
            }
        }
    }
}

/// Splits off the first directive: everything up to the first comma outside a quoted string.
fn split_directive(bytes: &[u8]) -> (&[u8], &[u8]) {
    let mut quoted = false;
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => return (&bytes[..i], &bytes[i + 1..]),
            _ => {}
        }
    }
    (bytes, &[])
}

/// A value without its surrounding double quotes, if it has both.
fn unquote(value: &[u8]) -> &[u8] {
    match value {
        [b'"', inner @ .., b'"'] => inner,
        _ => value,
    }
}

/// Bytes without leading and trailing spaces and tabs.
fn trim(bytes: &[u8]) -> &[u8] {
    let is_space = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes
        .iter()
        .position(|b| !is_space(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// A delta-seconds value: digits only, clamped to 2^31; anything else is absent.
fn delta_seconds(value: Option<&[u8]>) -> Option<u64> {
    let digits = value?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    });
    Some(n.unwrap_or(DELTA_SECONDS_MAX).min(DELTA_SECONDS_MAX))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    use crate::cache::tests::headers;

    fn rules() -> CacheRules {
        CacheRules {
            default_ttl: Duration::from_secs(30),
            max_ttl: Duration::from_secs(600),
            max_bytes: 1 << 20,
            max_object_bytes: 1 << 16,
            shared: false,
            cache_set_cookie: false,
            cache_authorized: false,
            cache_cookies: false,
        }
    }

    const NOW: u64 = 1_000_000;

    fn plan(
        req: &[(&str, &str)],
        status: u16,
        resp: &[(&str, &str)],
    ) -> Result<StorePlan, NotStored> {
        storable(
            &Method::GET,
            &headers(req),
            status,
            &headers(resp),
            &rules(),
            NOW,
        )
    }

    fn lifetime(resp: &[(&str, &str)]) -> u64 {
        let plan = plan(&[], 200, resp).unwrap();
        plan.fresh_until_ms - NOW
    }

    #[test]
    fn response_directives_tolerate_case_spacing_quotes_and_unknowns() {
        let d = ResponseDirectives::parse(&headers(&[(
            "cache-control",
            " Max-Age = \"60\" ,PUBLIC,, community=\"UCI, x\" , S-MAXAGE=120,Must-Revalidate ",
        )]));
        assert_eq!(d.max_age, Some(60));
        assert_eq!(d.s_maxage, Some(120));
        assert!(d.public && d.must_revalidate);
        assert!(!d.no_store && !d.no_cache && !d.private);
    }

    #[test]
    fn several_cache_control_lines_combine() {
        let d = ResponseDirectives::parse(&headers(&[
            ("cache-control", "max-age=10"),
            ("cache-control", "no-cache=\"set-cookie, x-a\""),
            ("cache-control", "private"),
        ]));
        assert_eq!(d.max_age, Some(10));
        assert!(d.no_cache && d.private);
    }

    #[test]
    fn malformed_numbers_make_the_directive_absent() {
        for value in [
            "max-age",
            "max-age=",
            "max-age=-1",
            "max-age=1.5",
            "max-age=abc",
            "max-age=\"",
            "max-age=12 34",
            "max-age=+5",
        ] {
            let d = ResponseDirectives::parse(&headers(&[("cache-control", value)]));
            assert_eq!(d.max_age, None, "{value}");
        }
        let d = ResponseDirectives::parse(&headers(&[("cache-control", "max-age=x, max-age=7")]));
        assert_eq!(d.max_age, Some(7), "the first valid value wins");
    }

    #[test]
    fn huge_numbers_clamp_to_two_to_the_31() {
        let d = ResponseDirectives::parse(&headers(&[(
            "cache-control",
            "max-age=99999999999999999999999999999",
        )]));
        assert_eq!(d.max_age, Some(DELTA_SECONDS_MAX));
    }

    #[test]
    fn garbage_headers_never_panic() {
        let garbage: &[&[u8]] = &[
            b"",
            b",,,",
            b"=",
            b"==,=",
            b"\"",
            b"\"unterminated, max-age=5",
            b"max-age=\"5",
            b"\\\"",
            b"no-store\xff",
            b"\xfe\xff=\x80",
            b"max-age=5\t;q=1",
            b"s-maxage=18446744073709551616",
        ];
        for &bytes in garbage {
            let mut map = HeaderMap::new();
            let value = HeaderValue::from_bytes(bytes).unwrap();
            for name in ["cache-control", "pragma", "vary", "age", "expires", "date"] {
                map.append(HeaderName::from_static(name), value.clone());
            }
            let _ = RequestDirectives::parse(&map);
            let _ = ResponseDirectives::parse(&map);
            let _ = storable(&Method::GET, &map, 200, &map, &rules(), NOW);
        }
    }

    #[test]
    fn request_directives() {
        let d = RequestDirectives::parse(&headers(&[("cache-control", "No-Cache, max-age=0")]));
        assert_eq!(
            d,
            RequestDirectives {
                no_cache: true,
                no_store: false,
                max_age: Some(0)
            }
        );
        let d = RequestDirectives::parse(&headers(&[("cache-control", "no-store")]));
        assert!(d.no_store);
        let d = RequestDirectives::parse(&headers(&[("pragma", "no-cache")]));
        assert!(d.no_cache, "pragma without cache-control");
        let d = RequestDirectives::parse(&headers(&[
            ("pragma", "no-cache"),
            ("cache-control", "max-age=5"),
        ]));
        assert!(!d.no_cache, "cache-control wins over pragma");
        assert_eq!(
            RequestDirectives::parse(&HeaderMap::new()),
            RequestDirectives::default()
        );
    }

    #[test]
    fn max_age_sets_freshness() {
        assert_eq!(lifetime(&[("cache-control", "max-age=60")]), 60_000);
    }

    #[test]
    fn s_maxage_wins_over_max_age() {
        assert_eq!(
            lifetime(&[("cache-control", "max-age=60, s-maxage=5")]),
            5_000
        );
        assert_eq!(
            lifetime(&[("cache-control", "s-maxage=5, max-age=60")]),
            5_000
        );
    }

    #[test]
    fn default_ttl_without_directives_and_max_ttl_caps() {
        assert_eq!(lifetime(&[]), 30_000);
        assert_eq!(lifetime(&[("cache-control", "public")]), 30_000);
        assert_eq!(lifetime(&[("cache-control", "max-age=86400")]), 600_000);
    }

    #[test]
    fn upstream_age_is_subtracted() {
        let aged = plan(&[], 200, &[("cache-control", "max-age=60"), ("age", "20")]).unwrap();
        assert_eq!(aged.stored_ms, NOW - 20_000);
        assert_eq!(aged.fresh_until_ms, NOW + 40_000);
        assert_eq!(
            plan(&[], 200, &[("cache-control", "max-age=60"), ("age", "90")]),
            Err(NotStored::NoFreshness)
        );
    }

    #[test]
    fn expires_minus_date() {
        let date = ("date", "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(
            lifetime(&[date, ("expires", "Sun, 06 Nov 1994 08:50:37 GMT")]),
            60_000
        );
        assert_eq!(
            lifetime(&[
                date,
                ("expires", "Mon, 07 Nov 1994 08:49:37 GMT"),
                ("cache-control", "max-age=5")
            ]),
            5_000,
            "max-age wins over expires"
        );
        assert_eq!(
            plan(&[], 200, &[date, ("expires", "0")]),
            Err(NotStored::NoFreshness),
            "an invalid expires is in the past"
        );
        assert_eq!(
            plan(
                &[],
                200,
                &[date, ("expires", "Sat, 05 Nov 1994 08:49:37 GMT")]
            ),
            Err(NotStored::NoFreshness)
        );
        assert_eq!(
            lifetime(&[("expires", "Mon, 07 Nov 1994 08:49:37 GMT")]),
            30_000,
            "no date"
        );
    }

    #[test]
    fn http_dates() {
        let secs = |s: &str| http_date_secs(&HeaderValue::from_str(s).unwrap());
        assert_eq!(secs("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(secs("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(secs("Tue, 29 Feb 2000 12:00:00 GMT"), Some(951_825_600));
        assert_eq!(secs("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(secs("Sun, 06 Foo 1994 08:49:37 GMT"), None);
        assert_eq!(secs("Sun, 06 Nov 1994 28:49:37 GMT"), None);
        assert_eq!(secs("Sun, 06 Nov 19x4 08:49:37 GMT"), None);
    }

    #[test]
    fn only_get_and_storable_statuses() {
        let h = HeaderMap::new();
        assert_eq!(
            storable(&Method::HEAD, &h, 200, &h, &rules(), NOW),
            Err(NotStored::Method)
        );
        assert_eq!(
            storable(&Method::POST, &h, 200, &h, &rules(), NOW),
            Err(NotStored::Method)
        );
        for status in STORABLE_STATUSES {
            assert!(plan(&[], status, &[]).is_ok(), "{status}");
        }
        for status in [201, 206, 302, 304, 307, 400, 500, 503] {
            assert_eq!(plan(&[], status, &[]), Err(NotStored::Status), "{status}");
        }
    }

    #[test]
    fn no_store_on_either_side() {
        assert_eq!(
            plan(&[("cache-control", "no-store")], 200, &[]),
            Err(NotStored::RequestNoStore)
        );
        assert_eq!(
            plan(&[], 200, &[("cache-control", "max-age=60, NO-STORE")]),
            Err(NotStored::NoStore)
        );
    }

    #[test]
    fn private_is_refused() {
        assert_eq!(
            plan(&[], 200, &[("cache-control", "private, max-age=60")]),
            Err(NotStored::Private)
        );
        assert_eq!(
            plan(&[], 200, &[("cache-control", "private=\"x-user\"")]),
            Err(NotStored::Private)
        );
    }

    #[test]
    fn no_cache_stores_with_revalidation_when_validated() {
        let plan1 = plan(
            &[],
            200,
            &[("cache-control", "no-cache"), ("etag", "\"v1\"")],
        )
        .unwrap();
        assert!(plan1.must_revalidate);
        let plan2 = plan(
            &[],
            200,
            &[
                ("cache-control", "no-cache"),
                ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ],
        )
        .unwrap();
        assert!(plan2.must_revalidate);
        assert_eq!(
            plan(&[], 200, &[("cache-control", "no-cache")]),
            Err(NotStored::NoFreshness)
        );
        assert!(!plan(&[], 200, &[]).unwrap().must_revalidate);
    }

    #[test]
    fn zero_lifetime_needs_a_validator() {
        assert_eq!(
            plan(&[], 200, &[("cache-control", "max-age=0")]),
            Err(NotStored::NoFreshness)
        );
        let validated = plan(
            &[],
            200,
            &[("cache-control", "max-age=0"), ("etag", "W/\"1\"")],
        )
        .unwrap();
        assert_eq!(validated.fresh_until_ms, NOW);
        let mut zero = rules();
        zero.default_ttl = Duration::ZERO;
        let h = HeaderMap::new();
        assert_eq!(
            storable(&Method::GET, &h, 200, &h, &zero, NOW),
            Err(NotStored::NoFreshness)
        );
    }

    #[test]
    fn set_cookie_only_when_allowed() {
        let resp = headers(&[("set-cookie", "a=b"), ("cache-control", "max-age=60")]);
        let h = HeaderMap::new();
        assert_eq!(
            storable(&Method::GET, &h, 200, &resp, &rules(), NOW),
            Err(NotStored::SetCookie)
        );
        let allowed = CacheRules {
            cache_set_cookie: true,
            ..rules()
        };
        assert!(storable(&Method::GET, &h, 200, &resp, &allowed, NOW).is_ok());
    }

    #[test]
    fn authorization_needs_permission_or_public() {
        let auth = [("authorization", "Bearer x")];
        assert_eq!(
            plan(&auth, 200, &[("cache-control", "max-age=60")]),
            Err(NotStored::Authorization)
        );
        assert!(plan(&auth, 200, &[("cache-control", "public, max-age=60")]).is_ok());
        assert!(plan(&auth, 200, &[("cache-control", "s-maxage=60")]).is_ok());
        // Stricter than RFC 9111 §3.5: must-revalidate alone does not make it shared.
        assert_eq!(
            plan(
                &auth,
                200,
                &[("cache-control", "must-revalidate, max-age=60")]
            ),
            Err(NotStored::Authorization)
        );
        let allowed = CacheRules {
            cache_authorized: true,
            ..rules()
        };
        let h = HeaderMap::new();
        assert!(storable(&Method::GET, &headers(&auth), 200, &h, &allowed, NOW).is_ok());
    }

    #[test]
    fn cookie_requests_need_permission_or_public() {
        let cookie = [("cookie", "session=alice")];
        // No Cache-Control at all: the default TTL must not make a personal page shared.
        assert_eq!(plan(&cookie, 200, &[]), Err(NotStored::Cookie));
        assert_eq!(
            plan(&cookie, 200, &[("cache-control", "max-age=60")]),
            Err(NotStored::Cookie)
        );
        assert!(plan(&cookie, 200, &[("cache-control", "public, max-age=60")]).is_ok());
        assert!(plan(&cookie, 200, &[("cache-control", "s-maxage=60")]).is_ok());
        let allowed = CacheRules {
            cache_cookies: true,
            ..rules()
        };
        let h = HeaderMap::new();
        assert!(storable(&Method::GET, &headers(&cookie), 200, &h, &allowed, NOW).is_ok());
        assert_eq!(NotStored::Cookie.as_str(), "cookie");
    }

    #[test]
    fn vary_names_are_lowercased_sorted_and_star_refused() {
        let plan1 = plan(
            &[],
            200,
            &[("vary", "Accept-Encoding, ACCEPT"), ("vary", " accept ,,")],
        )
        .unwrap();
        assert_eq!(plan1.vary, vec![header::ACCEPT, header::ACCEPT_ENCODING]);
        assert_eq!(
            plan(&[], 200, &[("vary", "accept, *")]),
            Err(NotStored::VaryAll)
        );
        assert_eq!(
            plan(&[], 200, &[("vary", "bad name")]),
            Err(NotStored::BadVary)
        );
        assert!(plan(&[], 200, &[]).unwrap().vary.is_empty());
    }

    #[test]
    fn reasons_have_labels() {
        assert_eq!(NotStored::VaryAll.as_str(), "vary_all");
        assert_eq!(NotStored::Authorization.to_string(), "authorization");
    }
}
