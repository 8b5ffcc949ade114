//! Rates: a GCRA token bucket in one atomic word, and the `Retry-After` of a refusal.

use std::sync::atomic::{
    AtomicU64,
    Ordering::{Relaxed, SeqCst},
};

/// Nanoseconds per millisecond: bucket state is kept in nanoseconds of the proxy's clock.
pub(super) const NANOS_PER_MS: u64 = 1_000_000;

/// Nanoseconds per second, for turning a rate into an emission interval.
const NANOS_PER_SEC: f64 = 1e9;

/// Emission intervals from this long on (about 31 years a token) are a rate of 0.
const MAX_EMISSION_NS: f64 = 1e18;

/// Marks a bucket state that counts the tokens taken from a bucket without refill (rate 0).
/// Times stay below it (292 years of nanoseconds), so the two never mix up.
pub(super) const COUNTED: u64 = 1 << 63;

// === RetryAfter ===

/// How long until a refused request could be admitted: the value of a `Retry-After` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RetryAfter {
    millis: u64,
}

// === impl RetryAfter ===

impl RetryAfter {
    /// No token will ever come again (a rate of 0 with its burst spent).
    pub const NEVER: Self = Self { millis: u64::MAX };

    /// A wait of `millis` milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        Self { millis }
    }

    /// A wait of `nanos` nanoseconds, rounded up to whole milliseconds.
    fn from_nanos(nanos: u64) -> Self {
        Self::from_millis(nanos.div_ceil(NANOS_PER_MS))
    }

    /// Milliseconds until a token is there (`u64::MAX` for [`RetryAfter::NEVER`]).
    pub const fn millis(self) -> u64 {
        self.millis
    }

    /// Whole seconds for a `Retry-After` header: rounded up, at least 1.
    pub const fn seconds(self) -> u64 {
        let seconds = self.millis.div_ceil(1000);
        if seconds == 0 {
            1
        } else {
            seconds
        }
    }

    /// Whether no token will ever come (the caller may leave out `Retry-After`).
    pub const fn is_never(self) -> bool {
        self.millis == u64::MAX
    }
}

// === Pace ===

/// How a bucket refills, decided from a rate and a burst; the state lives in one `AtomicU64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pace {
    /// No limit: a rate too high for nanosecond resolution.
    Unlimited,
    /// `burst` tokens in all, never refilled (a rate of 0): the state counts tokens taken.
    Fixed { burst: u64 },
    /// GCRA: one token every `emission` ns, up to `tolerance` ns of them saved up. The state is
    /// the theoretical arrival time: when the bucket will be full again.
    Every { emission: u64, tolerance: u64 },
}

// === impl Pace ===

impl Pace {
    /// The pace of `rate` tokens a second with `burst` saved up at most.
    ///
    /// A rate that is 0, negative or NaN gives `burst` tokens and never more; a rate above 1e9
    /// a second is unlimited; with a positive rate the burst is at least 1.
    pub(super) fn new(rate: f64, burst: u32) -> Self {
        if rate.is_nan() || rate <= 0.0 {
            return Self::Fixed {
                burst: u64::from(burst),
            };
        }
        let emission = NANOS_PER_SEC / rate;
        if emission < 1.0 {
            return Self::Unlimited;
        }
        if emission >= MAX_EMISSION_NS {
            return Self::Fixed {
                burst: u64::from(burst),
            };
        }
        // In range: 1 ≤ emission < 1e18.
        let emission = emission.round() as u64;
        Self::Every {
            emission,
            tolerance: emission.saturating_mul(u64::from(burst.max(1))),
        }
    }

    /// Takes one token from the bucket whose state is `state`, or says how long until one.
    pub(super) fn take(self, state: &AtomicU64, now_ms: u64) -> Result<(), RetryAfter> {
        match self {
            Self::Unlimited => Ok(()),
            Self::Fixed { burst } => state
                .fetch_update(SeqCst, Relaxed, |current| {
                    // A time (the limit was a positive rate until now) starts the count afresh.
                    let taken = if current & COUNTED == 0 {
                        0
                    } else {
                        current & !COUNTED
                    };
                    (taken < burst).then_some(COUNTED | (taken + 1))
                })
                .map(drop)
                .map_err(|_| RetryAfter::NEVER),
            Self::Every {
                emission,
                tolerance,
            } => {
                let now = now_ms.saturating_mul(NANOS_PER_MS).min(COUNTED - 1);
                let mut current = state.load(Relaxed);
                loop {
                    // A count (the limit was a rate of 0 until now) starts the bucket afresh.
                    let full_at = if current & COUNTED == 0 { current } else { 0 };
                    // A clock that went back only makes `now` smaller: stricter, never a token.
                    let next = match full_at.max(now).checked_add(emission) {
                        Some(next) if next < COUNTED => next,
                        _ => return Err(RetryAfter::NEVER),
                    };
                    let allowed_at = next.saturating_sub(tolerance);
                    if allowed_at > now {
                        return Err(RetryAfter::from_nanos(allowed_at - now));
                    }
                    match state.compare_exchange_weak(current, next, SeqCst, Relaxed) {
                        Ok(_) => return Ok(()),
                        Err(actual) => current = actual,
                    }
                }
            }
        }
    }
}

// === TokenBucket ===

/// A rate limit: `rate` tokens a second, at most `burst` saved up; lock-free GCRA on one atomic.
#[derive(Debug)]
pub struct TokenBucket {
    pace: Pace,
    state: AtomicU64,
}

// === impl TokenBucket ===

impl TokenBucket {
    /// A full bucket of `burst` tokens refilled at `rate_per_sec`.
    ///
    /// A rate of 0 (or negative, or NaN) admits `burst` requests in all; a rate above 1e9 a
    /// second is unlimited; with a positive rate a burst of 0 counts as 1, and a burst longer
    /// than 292 years of the rate is cut to what fits.
    pub fn new(rate_per_sec: f64, burst: u32) -> Self {
        Self {
            pace: Pace::new(rate_per_sec, burst),
            state: AtomicU64::new(0),
        }
    }

    /// Takes one token at `now_ms`, or says how long until the next one will be there.
    pub fn try_take(&self, now_ms: u64) -> Result<(), RetryAfter> {
        self.pace.take(&self.state, now_ms)
    }
}
