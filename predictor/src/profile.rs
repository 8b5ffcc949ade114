//! A service's daily profile: what it keeps while idle, so that a service that comes back at
//! the same time every day is forecast (and woken) before it does.
//!
//! ```text
//!  per minute of the day (1,440 slots):  arrivals in that minute, averaged over days
//!                                        (v ← ½·v + ½·x when the minute is seen, v = x the
//!                                        first time; a day not seen halves it)
//!  stored:                               one byte, 16·log2(1 + v) (±2.2 %, up to ~60,000 a
//!                                        minute), and the day it was written
//!  read (rate_at):                       v / 60 per second, halved for every day since the
//!                                        day after it was written
//! ```
//!
//! 2.9 KiB per service, allocated at its first arrival, against the hundreds of KiB of a
//! forecast ensemble. A profile untouched for [`PROFILE_MEMORY_DAYS`] reads as empty.

/// Seconds per profile slot.
pub const PROFILE_SLOT_SECS: u64 = 60;
/// Slots in a day.
const SLOTS: usize = 1_440;
/// Days after which a slot (and a profile not written since) no longer counts: by then it is
/// halved below any arrival.
pub const PROFILE_MEMORY_DAYS: u64 = 32;
/// The smallest rate (per second) a profile forecasts: one arrival in the minute, half
/// weighted.
pub const PROFILE_MIN_RATE: f64 = 0.5 / PROFILE_SLOT_SECS as f64;

/// Per minute of the day, the arrivals a service had in it (see the module docs).
#[derive(Clone)]
pub struct DailyProfile {
    codes: Box<[u8; SLOTS]>,
    /// The day (mod 256) each slot was last written.
    days: Box<[u8; SLOTS]>,
    last_day: u64,
}

impl std::fmt::Debug for DailyProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let busy = self.codes.iter().filter(|&&c| c > 0).count();
        f.debug_struct("DailyProfile")
            .field("busy_minutes", &busy)
            .field("last_day", &self.last_day)
            .finish()
    }
}

impl Default for DailyProfile {
    fn default() -> Self {
        Self::new()
    }
}

fn encode(value: f64) -> u8 {
    (16.0 * (1.0 + value.max(0.0)).log2()).round().min(255.0) as u8
}

fn decode(code: u8) -> f64 {
    (f64::from(code) / 16.0).exp2() - 1.0
}

impl DailyProfile {
    /// An empty profile.
    pub fn new() -> Self {
        Self {
            codes: Box::new([0; SLOTS]),
            days: Box::new([0; SLOTS]),
            last_day: 0,
        }
    }

    fn slot(minute: u64) -> (u64, usize) {
        (minute / SLOTS as u64, (minute % SLOTS as u64) as usize)
    }

    /// Whole days since `slot` was written, as seen on `day` (0 the same day).
    fn age(&self, day: u64, slot: usize) -> u64 {
        u64::from((day as u8).wrapping_sub(self.days[slot]))
    }

    /// Records `arrivals` in the minute `minute` (minutes since the clock's epoch; the minute
    /// of the day is `minute % 1440`). Minutes should come in order; an older one is ignored.
    pub fn record(&mut self, minute: u64, arrivals: u64) {
        let (day, slot) = Self::slot(minute);
        if day < self.last_day {
            return;
        }
        if day > self.last_day {
            // A new day: forget slots too old to tell apart modulo 256 (and to matter).
            let gap = day - self.last_day;
            for s in 0..SLOTS {
                if self.codes[s] > 0 && self.age(self.last_day, s) + gap >= PROFILE_MEMORY_DAYS {
                    self.codes[s] = 0;
                }
            }
            self.last_day = day;
        }
        let x = arrivals as f64;
        let value = match self.codes[slot] {
            0 => x,
            code => {
                let age = self.age(day, slot);
                if age == 0 {
                    // The same minute again (a late tick): keep the larger.
                    decode(code).max(x)
                } else {
                    let before = decode(code) * 0.5f64.powi((age - 1).min(64) as i32);
                    0.5 * before + 0.5 * x
                }
            }
        };
        self.codes[slot] = encode(value);
        self.days[slot] = day as u8;
    }

    /// The rate (arrivals per second) the profile expects in the second `sec`; 0 below
    /// [`PROFILE_MIN_RATE`].
    pub fn rate_at(&self, sec: u64) -> f64 {
        let (day, slot) = Self::slot(sec / PROFILE_SLOT_SECS);
        let code = self.codes[slot];
        if code == 0 || day.saturating_sub(self.last_day) >= PROFILE_MEMORY_DAYS {
            return 0.0;
        }
        let age = self.age(day, slot);
        if age == 0 {
            // Written today: the minute has been seen; what it had is what today has.
            let rate = decode(code) / PROFILE_SLOT_SECS as f64;
            return if rate >= PROFILE_MIN_RATE { rate } else { 0.0 };
        }
        let rate = decode(code) * 0.5f64.powi((age - 1).min(64) as i32) / PROFILE_SLOT_SECS as f64;
        if rate >= PROFILE_MIN_RATE {
            rate
        } else {
            0.0
        }
    }

    /// Whether nothing was written for [`PROFILE_MEMORY_DAYS`] before the second `sec`: the
    /// profile reads as empty and may be dropped.
    pub fn is_stale(&self, sec: u64) -> bool {
        (sec / PROFILE_SLOT_SECS / SLOTS as u64).saturating_sub(self.last_day)
            >= PROFILE_MEMORY_DAYS
    }

    /// The first second in `from..to` whose [`Self::rate_at`] is not 0, if any (at most a day
    /// of slots is read).
    pub fn next_busy(&self, from: u64, to: u64) -> Option<u64> {
        let to = to.min(from.saturating_add(86_400 + PROFILE_SLOT_SECS));
        let mut sec = from;
        while sec < to {
            if self.rate_at(sec) > 0.0 {
                return Some(sec);
            }
            sec = (sec / PROFILE_SLOT_SECS + 1) * PROFILE_SLOT_SECS;
        }
        None
    }
}

/// The count a Poisson arrival process at `rate` per second stays at or below in one second
/// with probability `q` (its quantile).
pub fn poisson_quantile(rate: f64, q: f64) -> f64 {
    if rate <= 0.0 || q <= 0.0 {
        return 0.0;
    }
    let q = q.min(1.0 - 1e-12);
    let (mut k, mut p) = (0u64, (-rate).exp());
    let mut cumulative = p;
    while cumulative < q && k < 100_000 {
        k += 1;
        p *= rate / k as f64;
        cumulative += p;
        if p == 0.0 {
            break;
        }
    }
    k as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 1_440;

    #[test]
    fn a_daily_minute_is_forecast_the_next_day_and_fades_without_it() {
        let mut profile = DailyProfile::new();
        // Day 10, 09:00: 120 arrivals in the minute (2 per second).
        let nine = 9 * 60;
        profile.record(10 * DAY + nine, 120);
        let at = |day: u64, minute: u64| profile.rate_at((day * DAY + minute) * 60 + 30);
        assert!((at(10, nine) - 2.0).abs() < 0.05, "{}", at(10, nine));
        assert!(
            (at(11, nine) - 2.0).abs() < 0.05,
            "the next day: {}",
            at(11, nine)
        );
        assert_eq!(at(11, nine + 1), 0.0, "only that minute");
        // Not seen on day 11: day 12 expects half, day 13 a quarter.
        assert!((at(12, nine) - 1.0).abs() < 0.03);
        assert!((at(13, nine) - 0.5).abs() < 0.02);
        assert_eq!(at(10 + PROFILE_MEMORY_DAYS + 1, nine), 0.0, "forgotten");
        assert!(!profile.is_stale((12 * DAY) * 60));
        assert!(profile.is_stale((10 + PROFILE_MEMORY_DAYS) * DAY * 60));
        // Seen again on day 12 with 60: the average of what was expected and what came.
        profile.record(12 * DAY + nine, 60);
        let at = |day: u64, minute: u64| profile.rate_at((day * DAY + minute) * 60);
        assert!((at(13, nine) - 1.0).abs() < 0.03, "{}", at(13, nine));
        assert_eq!(
            profile.next_busy(13 * DAY * 60, 14 * DAY * 60),
            Some((13 * DAY + nine) * 60)
        );
        assert_eq!(
            profile.next_busy((13 * DAY + nine + 1) * 60, (13 * DAY + 600) * 60),
            None
        );
    }

    #[test]
    fn old_slots_are_forgotten_when_a_later_day_is_written() {
        let mut profile = DailyProfile::new();
        profile.record(5, 600);
        profile.record(300 * DAY + 7, 60);
        // 300 days later slot 5 would alias modulo 256: it was cleared instead.
        assert_eq!(profile.rate_at((300 * DAY + 5) * 60), 0.0);
        assert_eq!(profile.rate_at((301 * DAY + 5) * 60), 0.0);
        assert!(profile.rate_at((301 * DAY + 7) * 60) > 0.9);
        // An older minute after a newer one is ignored.
        profile.record(10, 600);
        assert_eq!(profile.rate_at((301 * DAY + 10) * 60), 0.0);
    }

    #[test]
    fn encoding_is_within_a_few_percent() {
        for x in [1.0, 2.0, 10.0, 59.0, 600.0, 6_000.0, 50_000.0] {
            let back = decode(encode(x));
            assert!((back - x).abs() / x < 0.05, "{x} → {back}");
        }
        assert_eq!(decode(encode(0.0)), 0.0);
    }

    #[test]
    fn poisson_quantiles() {
        assert_eq!(poisson_quantile(0.0, 0.9), 0.0);
        // P(0) = e^-1 ≈ 0.37, P(≤1) ≈ 0.74, P(≤2) ≈ 0.92.
        assert_eq!(poisson_quantile(1.0, 0.3), 0.0);
        assert_eq!(poisson_quantile(1.0, 0.5), 1.0);
        assert_eq!(poisson_quantile(1.0, 0.9), 2.0);
        assert!((poisson_quantile(100.0, 0.5) - 100.0).abs() <= 1.0);
    }
}
