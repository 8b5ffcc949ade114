//! How the Kubernetes backend's and the election's API calls fail, how long they may take, how
//! long they wait after a failure, and how often they say so.
//!
//! ```text
//!  call fails ─► Backoff::next ─► base, 2·base, 4·base … capped at the retry period
//!             └► Throttle::failed(message) ─► log? first failure, every Nth in a row, new message
//!  call works ─► Backoff::reset · Throttle::succeeded ─► "recovered after n failures" once
//! ```

use std::time::Duration;

/// Failures in a row between two logs of the same message.
pub(crate) const LOG_EVERY: u64 = 20;

/// Exponential back-off: `base` doubling per failure in a row, never above `cap`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    /// First wait.
    base: Duration,
    /// Longest wait.
    cap: Duration,
    /// Failures in a row so far.
    failures: u32,
}

impl Backoff {
    /// A back-off starting at `base` (at most `cap`) and capped at `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base: base.min(cap),
            cap,
            failures: 0,
        }
    }

    /// The wait after one more failure.
    pub fn next(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
        self.failures = self.failures.saturating_add(1);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Back to `base` after a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Decides which failures of one kind of call are logged: the first, every [`LOG_EVERY`]th in a
/// row, and any whose message differs from the one before.
#[derive(Debug, Default, Clone)]
pub(crate) struct Throttle {
    /// Failures in a row.
    failures: u64,
    /// The last message logged or seen.
    last: Option<String>,
}

impl Throttle {
    /// Records a failure; true when it should be logged. Also returns the failures in a row.
    pub fn failed(&mut self, message: &str) -> (bool, u64) {
        self.failures = self.failures.saturating_add(1);
        let changed = self.last.as_deref() != Some(message);
        if changed {
            self.last = Some(message.to_owned());
        }
        let log = changed || self.failures % LOG_EVERY == 1;
        (log, self.failures)
    }

    /// Records a success; returns the failures in a row it ends (0: nothing to report).
    pub fn succeeded(&mut self) -> u64 {
        self.last = None;
        std::mem::take(&mut self.failures)
    }
}

/// How an API call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallError {
    /// 409: someone else wrote first (or the object already exists).
    Conflict(String),
    /// 404.
    NotFound,
    /// Anything else, timeouts included (the message says what).
    Failed(String),
}

impl From<kube::Error> for CallError {
    fn from(error: kube::Error) -> Self {
        match error {
            kube::Error::Api(status) => {
                let message = format!("{} {}: {}", status.code, status.reason, status.message);
                match status.code {
                    409 => Self::Conflict(message),
                    404 => Self::NotFound,
                    _ => Self::Failed(message),
                }
            }
            other => Self::Failed(other.to_string()),
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Conflict(message) | Self::Failed(message) => f.write_str(message),
            Self::NotFound => f.write_str("404 not found"),
        }
    }
}

/// Runs one API call, bounded by `limit`: a call with no answer by then fails.
pub(crate) async fn bounded_call<T>(
    limit: Duration,
    request: impl std::future::Future<Output = kube::Result<T>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(limit, request).await {
        Ok(result) => result.map_err(CallError::from),
        Err(_) => Err(CallError::Failed(format!(
            "timed out after {}",
            humantime::format_duration(Duration::from_millis(
                u64::try_from(limit.as_millis()).unwrap_or(u64::MAX)
            ))
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(1_000));
        let waits: Vec<u128> = (0..6).map(|_| backoff.next().as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1_000, 1_000]);
        backoff.reset();
        assert_eq!(backoff.next(), Duration::from_millis(100));
    }

    #[test]
    fn backoff_never_overflows_or_exceeds_the_cap() {
        let mut backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(1));
        for _ in 0..100 {
            assert_eq!(backoff.next(), Duration::from_secs(1));
        }
    }

    #[test]
    fn throttle_logs_first_every_nth_and_changes() {
        let mut throttle = Throttle::default();
        let logged: Vec<u64> = (1..=45)
            .filter_map(|_| match throttle.failed("timed out") {
                (true, n) => Some(n),
                (false, _) => None,
            })
            .collect();
        assert_eq!(logged, [1, 21, 41]);
        assert_eq!(throttle.failed("403 forbidden"), (true, 46));
        assert_eq!(throttle.failed("403 forbidden"), (false, 47));
        assert_eq!(throttle.succeeded(), 47);
        assert_eq!(throttle.succeeded(), 0);
        assert_eq!(throttle.failed("403 forbidden"), (true, 1));
    }
}
