//! Replays a request trace through the real response cache with an injected clock, to measure
//! its hit ratio with refresh-ahead off and on. The trace gives the requests per second; each
//! request asks for one of `keys` paths drawn from a Zipf distribution (seeded, so a replay is
//! repeatable). The cache, the hot-key ranking and the choice of entries to refresh are the
//! proxy's own code ([`ServiceCache`], [`HotKeys`], [`due_for_refresh`]); only the instance is
//! simulated: it answers at once with `Cache-Control: max-age=ttl`.

use std::time::Duration;

use bytes::Bytes;
use forecourt_config::CacheConfig;
use forecourt_predictor::HotKeys;
use http::{HeaderMap, HeaderValue, Method};

use forecourt_proxy::cache::{Lookup, ServiceCache};
use forecourt_proxy::warm::refresh::due_for_refresh;

/// What to replay.
#[derive(Debug, Clone)]
pub struct CacheReplayConfig {
    /// Distinct paths requested.
    pub keys: usize,
    /// Zipf exponent of their popularity (1.0 is typical of web traffic).
    pub zipf_exponent: f64,
    /// Freshness the simulated instance gives every response.
    pub ttl: Duration,
    /// Refresh hot entries this long before they expire; zero replays without refresh-ahead.
    pub refresh_ahead: Duration,
    /// How many of the hottest keys refresh-ahead looks at.
    pub hot_keys: u32,
    /// Refreshes per second at most.
    pub refresh_rate: u32,
    /// Seed of the key draws.
    pub seed: u64,
}

/// What a replay measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CacheReplayResult {
    /// Requests replayed.
    pub requests: u64,
    /// Answered from the cache.
    pub hits: u64,
    /// Sent to the (simulated) instance.
    pub misses: u64,
    /// Entries re-fetched ahead of expiry (requests to the instance that no client waited for).
    pub refreshes: u64,
}

// === impl CacheReplayResult ===

impl CacheReplayResult {
    /// Share of requests answered from the cache.
    pub fn hit_ratio(&self) -> f64 {
        if self.requests == 0 {
            return 0.0;
        }
        self.hits as f64 / self.requests as f64
    }
}

/// Draws key indices from a Zipf distribution with a splitmix64 generator.
struct ZipfKeys {
    cdf: Vec<f64>,
    state: u64,
}

impl ZipfKeys {
    fn new(keys: usize, exponent: f64, seed: u64) -> Self {
        let mut cdf = Vec::with_capacity(keys.max(1));
        let mut total = 0.0;
        for rank in 1..=keys.max(1) {
            total += 1.0 / (rank as f64).powf(exponent);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Self { cdf, state: seed }
    }

    fn next(&mut self) -> usize {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let u = (z >> 11) as f64 / (1u64 << 53) as f64;
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// Replays `rows` (second, requests in it) through a cache with `cache` settings.
pub fn replay(
    rows: &[(u64, u64)],
    cache: &CacheConfig,
    config: &CacheReplayConfig,
) -> CacheReplayResult {
    let service = ServiceCache::new(cache);
    let hot = HotKeys::new(4, 4096, 64);
    let mut draws = ZipfKeys::new(config.keys, config.zipf_exponent, config.seed);
    let paths: Vec<String> = (0..config.keys.max(1))
        .map(|k| format!("/item/{k}"))
        .collect();
    let request = HeaderMap::new();
    let mut response = HeaderMap::new();
    let max_age = format!("max-age={}", config.ttl.as_secs());
    if let Ok(value) = HeaderValue::from_str(&max_age) {
        response.insert(http::header::CACHE_CONTROL, value);
    }
    let body = Bytes::from_static(&[b'x'; 512]);
    let fetch = |path: &str, now_ms: u64| {
        let key = service.key(b"", path, None);
        if let Ok(plan) = service
            .store
            .plan(&Method::GET, &request, 200, &response, now_ms)
        {
            service.store.insert(
                key,
                &request,
                plan,
                200,
                response.clone(),
                body.clone(),
                now_ms,
            );
        }
    };
    let ahead_ms = u64::try_from(config.refresh_ahead.as_millis()).unwrap_or(u64::MAX);
    let mut result = CacheReplayResult {
        requests: 0,
        hits: 0,
        misses: 0,
        refreshes: 0,
    };
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return result;
    };
    let mut next_row = rows.iter().peekable();
    for second in first.0..=last.0 {
        let start_ms = second * 1_000;
        if ahead_ms > 0 {
            let due = due_for_refresh(&service, &hot, config.hot_keys as usize, start_ms, ahead_ms);
            for entry in due.into_iter().take(config.refresh_rate as usize) {
                fetch(&entry.path, start_ms);
                result.refreshes += 1;
            }
        }
        if second > first.0 && (second - first.0) % 60 == 0 {
            hot.decay();
        }
        let mut count = 0;
        while let Some(&&(t, n)) = next_row.peek() {
            if t > second {
                break;
            }
            count += n;
            next_row.next();
        }
        for i in 0..count {
            let now_ms = start_ms + i * 1_000 / count.max(1);
            let path = &paths[draws.next()];
            hot.record(path);
            result.requests += 1;
            let key = service.key(b"", path, None);
            match service.store.lookup(&key, &request, now_ms) {
                Lookup::Fresh(_) => result.hits += 1,
                Lookup::Stale(_) | Lookup::Miss => {
                    result.misses += 1;
                    fetch(path, now_ms);
                }
            }
        }
    }
    result
}

/// Reads a trace in the shared CSV format (`t,service,count`, one row per second with requests),
/// summing services: (second, requests) in time order.
pub fn read_rows(text: &str) -> Vec<(u64, u64)> {
    let mut rows: Vec<(u64, u64)> = text
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split(',');
            let t = fields.next()?.trim().parse().ok()?;
            let count = fields.nth(1)?.trim().parse().ok()?;
            Some((t, count))
        })
        .collect();
    rows.sort_unstable_by_key(|r| r.0);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLICE: &str = include_str!("../../../testdata/nasa-1995-slice.csv");

    fn cache_config() -> CacheConfig {
        CacheConfig {
            ttl: Duration::from_secs(30),
            max_ttl: Duration::from_secs(600),
            max_bytes: 64 << 20,
            max_object_bytes: 1 << 20,
            shared: true,
            cache_set_cookie: false,
            cache_authorized: false,
            cache_cookies: false,
        }
    }

    fn replay_config(refresh_ahead: Duration) -> CacheReplayConfig {
        CacheReplayConfig {
            keys: 2_000,
            zipf_exponent: 1.0,
            ttl: Duration::from_secs(30),
            refresh_ahead,
            hot_keys: 16,
            refresh_rate: 50,
            seed: 7,
        }
    }

    #[test]
    fn the_hit_ratio_of_a_trace_slice_rises_with_refresh_ahead() {
        let rows = read_rows(SLICE);
        assert!(rows.len() > 1_000, "the slice has {} rows", rows.len());
        let off = replay(&rows, &cache_config(), &replay_config(Duration::ZERO));
        let on = replay(
            &rows,
            &cache_config(),
            &replay_config(Duration::from_secs(5)),
        );
        println!("NASA 1995 slice, 20 min: refresh-ahead off {off:?} hit ratio {:.3}; on {on:?} hit ratio {:.3}", off.hit_ratio(), on.hit_ratio());
        assert_eq!(off.requests, on.requests);
        assert_eq!(off.requests, rows.iter().map(|r| r.1).sum::<u64>());
        assert_eq!(off.hits + off.misses, off.requests);
        assert_eq!(off.refreshes, 0);
        assert!(on.refreshes > 0);
        assert!(
            on.hit_ratio() > off.hit_ratio(),
            "on {:.3} vs off {:.3}",
            on.hit_ratio(),
            off.hit_ratio()
        );
        // The same seed replays the same requests.
        assert_eq!(
            on,
            replay(
                &rows,
                &cache_config(),
                &replay_config(Duration::from_secs(5))
            )
        );
    }

    #[test]
    fn zipf_draws_favour_low_ranks() {
        let mut keys = ZipfKeys::new(100, 1.0, 1);
        let mut counts = [0u32; 100];
        for _ in 0..10_000 {
            counts[keys.next()] += 1;
        }
        assert!(counts[0] > counts[10] && counts[10] > counts[90]);
        // Rank 1 of 100 at exponent 1 has probability 1/H(100) ≈ 0.193.
        assert!((1_700..2_200).contains(&counts[0]), "{}", counts[0]);
    }

    #[test]
    fn rows_are_read_and_summed_in_time_order() {
        let rows = read_rows("t,service,count\n5,a,2\n1,b,3\nbad line\n");
        assert_eq!(rows, [(1, 3), (5, 2)]);
    }
}
