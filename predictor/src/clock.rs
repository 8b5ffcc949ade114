//! Injected time: every window, forecaster and detector in this crate takes `now_ms` from a
//! [`Clock`], so tests and the replay simulator drive a [`ManualClock`] and never sleep.
//!
//! [`SystemClock`] and [`unix_now_ms`] are the only places in the crate that read the real clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A source of milliseconds since an arbitrary, fixed epoch; never goes backwards.
pub trait Clock: Send + Sync {
    /// Milliseconds since this clock's epoch.
    fn now_ms(&self) -> u64;
}

// === impl SystemClock ===

/// The real, monotonic clock: an [`Instant`] origin plus a fixed millisecond offset.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
    origin_ms: u64,
}

impl SystemClock {
    /// A clock that reads 0 now and counts up monotonically.
    pub fn new() -> Self {
        Self::starting_at(0)
    }

    /// A monotonic clock that reads `origin_ms` now.
    pub fn starting_at(origin_ms: u64) -> Self {
        Self {
            origin: Instant::now(),
            origin_ms,
        }
    }

    /// A monotonic clock that starts at the current UNIX time in milliseconds, so its minutes and
    /// days line up with wall time (useful for seasonal profiles and scheduled events).
    pub fn aligned_to_unix_time() -> Self {
        Self::starting_at(unix_now_ms())
    }
}

/// Wall-clock UNIX milliseconds now (may jump), for timestamps that other processes or people
/// read; 0 before 1970. Intervals are measured on a [`Clock`], never with this.
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.origin_ms.saturating_add(elapsed)
    }
}

// === impl ManualClock ===

/// A clock that only moves when told to: for tests and the trace-replay simulator.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: AtomicU64,
}

impl ManualClock {
    /// A manual clock reading `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        Self {
            now_ms: AtomicU64::new(start_ms),
        }
    }

    /// Sets the time; callers keep it monotonic.
    pub fn set_ms(&self, now_ms: u64) {
        self.now_ms.store(now_ms, Ordering::Release);
    }

    /// Moves the time forward by `delta_ms` and returns the new time.
    pub fn advance_ms(&self, delta_ms: u64) -> u64 {
        self.now_ms
            .fetch_add(delta_ms, Ordering::AcqRel)
            .saturating_add(delta_ms)
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::Acquire)
    }
}

impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(5);
        assert_eq!(clock.now_ms(), 5);
        assert_eq!(clock.advance_ms(10), 15);
        assert_eq!(clock.now_ms(), 15);
        clock.set_ms(1_000);
        assert_eq!(clock.now_ms(), 1_000);
    }

    #[test]
    fn system_clock_starts_at_origin_and_is_monotonic() {
        let clock = SystemClock::starting_at(1_000_000);
        let a = clock.now_ms();
        let b = clock.now_ms();
        assert!(a >= 1_000_000);
        assert!(b >= a);
    }

    #[test]
    fn clock_is_object_safe_and_shareable() {
        let clock: std::sync::Arc<dyn Clock> = std::sync::Arc::new(ManualClock::new(7));
        assert_eq!(clock.now_ms(), 7);
    }
}
