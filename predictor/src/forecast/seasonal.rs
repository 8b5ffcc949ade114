//! Damped Holt on a deseasonalised series, plus a per-minute seasonal profile whose period is
//! detected from the history.
//!
//! ```text
//!  second ─┬─► minute sum ─► (minute closed) ─► history ring (≤ 2 weeks of per-minute rates)
//!          │                                     ├─► profile[minute mod period] += γ·(x − p)
//!          │                                     └─► every max(1 h, history/8): detect period
//!          └─► Holt.update(value − s(t))         s(t) = profile(t) − mean(profile), interpolated
//!  forecast(h) = Holt.project(h) + s(t + h)
//! ```
//!
//! With no significant period the seasonal term is zero and the model is exactly damped Holt.
//! Work per second is O(1); per minute O(1); a detection is an FFT over the history.

use super::holt::{Holt, HoltConfig};
use super::period::{detect_period, PeriodConfig};
use super::Forecaster;

/// Settings of [`Seasonal`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeasonalConfig {
    /// Level and trend of the deseasonalised series (default α 0.01, β 0.001, φ 0.95: with the
    /// seasonal swing removed the level is steadier, so it averages over about 100 s).
    pub holt: HoltConfig,
    /// Period detection limits (in minutes).
    pub period: PeriodConfig,
    /// Per-minute history kept for detection (default 20 160, two weeks).
    pub history_minutes: usize,
    /// Shortest time between two detections in minutes (default 60); the interval grows to an
    /// eighth of the history.
    pub redetect_minutes: usize,
    /// Profile memory in cycles: each profile slot averages about this many past cycles
    /// (default 8).
    pub profile_cycles: u32,
}

impl Default for SeasonalConfig {
    fn default() -> Self {
        Self {
            holt: HoltConfig {
                alpha: 0.01,
                beta: 0.001,
                phi: 0.95,
            },
            period: PeriodConfig::default(),
            history_minutes: 14 * 24 * 60,
            redetect_minutes: 60,
            profile_cycles: 8,
        }
    }
}

/// A ring of per-minute rates, newest at `newest_minute`.
#[derive(Debug, Clone)]
struct MinuteHistory {
    values: Vec<f32>,
    capacity: usize,
    /// Index in `values` of the oldest value once full.
    head: usize,
    newest_minute: Option<u64>,
}

impl MinuteHistory {
    fn new(capacity: usize) -> Self {
        Self {
            values: Vec::new(),
            capacity: capacity.max(1),
            head: 0,
            newest_minute: None,
        }
    }

    fn len(&self) -> usize {
        self.values.len()
    }

    fn push(&mut self, minute: u64, value: f64) {
        if self.values.len() < self.capacity {
            self.values.push(value as f32);
        } else {
            self.values[self.head] = value as f32;
            self.head = (self.head + 1) % self.capacity;
        }
        self.newest_minute = Some(minute);
    }

    /// `(absolute minute, rate)` oldest first.
    fn iter(&self) -> impl Iterator<Item = (u64, f64)> + '_ {
        let len = self.values.len() as u64;
        let oldest = self
            .newest_minute
            .map_or(0, |m| (m + 1).saturating_sub(len));
        let (wrapped, start) = self.values.split_at(self.head);
        start
            .iter()
            .chain(wrapped)
            .enumerate()
            .map(move |(i, v)| (oldest + i as u64, f64::from(*v)))
    }
}

/// Per-minute seasonal profile of one period.
#[derive(Debug, Clone)]
struct Profile {
    period: usize,
    values: Vec<f64>,
    counts: Vec<u32>,
    sum: f64,
    max_cycles: u32,
}

impl Profile {
    fn build(period: usize, history: &MinuteHistory, max_cycles: u32) -> Self {
        let mut profile = Self {
            period,
            values: vec![0.0; period],
            counts: vec![0; period],
            sum: 0.0,
            max_cycles: max_cycles.max(1),
        };
        for (minute, value) in history.iter() {
            profile.update(minute, value);
        }
        // Slots the history never reached take the profile mean: no seasonal effect.
        let seen = profile.counts.iter().filter(|c| **c > 0).count();
        if seen > 0 && seen < period {
            let mean = profile.sum / seen as f64;
            for (value, count) in profile.values.iter_mut().zip(&profile.counts) {
                if *count == 0 {
                    *value = mean;
                    profile.sum += mean;
                }
            }
        }
        profile
    }

    fn update(&mut self, minute: u64, value: f64) {
        let slot = (minute % self.period as u64) as usize;
        let count = self.counts[slot].saturating_add(1);
        self.counts[slot] = count;
        let gamma = 1.0 / f64::from(count.min(self.max_cycles));
        let delta = gamma * (value - self.values[slot]);
        self.values[slot] += delta;
        self.sum += delta;
    }

    /// Seasonal deviation at second `t`: the profile interpolated between minute centres, minus
    /// the profile mean; in arrivals per second.
    fn deviation(&self, t_sec: u64) -> f64 {
        let period = self.period as u64;
        // Minute m's value sits at second 60·m + 30.
        let shifted = t_sec + 60 * period - 30;
        let minute = shifted / 60;
        let frac = (shifted % 60) as f64 / 60.0;
        let a = self.values[(minute % period) as usize];
        let b = self.values[((minute + 1) % period) as usize];
        a + frac * (b - a) - self.sum / self.period as f64
    }
}

/// Holt plus a detected seasonal profile; see the module docs.
#[derive(Debug, Clone)]
pub struct Seasonal {
    config: SeasonalConfig,
    holt: Holt,
    history: MinuteHistory,
    minute: Option<u64>,
    minute_sum: f64,
    minutes_since_detection: usize,
    profile: Option<Profile>,
    last_t: u64,
}

impl Seasonal {
    /// A seasonal model with no history.
    pub fn new(config: SeasonalConfig) -> Self {
        Self {
            config,
            holt: Holt::new(config.holt),
            history: MinuteHistory::new(config.history_minutes),
            minute: None,
            minute_sum: 0.0,
            minutes_since_detection: 0,
            profile: None,
            last_t: 0,
        }
    }

    /// The detected period in minutes, if any.
    pub fn period_minutes(&self) -> Option<usize> {
        self.profile.as_ref().map(|p| p.period)
    }

    fn close_minute(&mut self, minute: u64, rate: f64) {
        self.history.push(minute, rate);
        if let Some(profile) = &mut self.profile {
            profile.update(minute, rate);
        }
        self.minutes_since_detection += 1;
        let interval = self
            .config
            .redetect_minutes
            .max(self.history.len() / 8)
            .max(1);
        if self.minutes_since_detection >= interval {
            self.minutes_since_detection = 0;
            self.detect();
        }
    }

    fn detect(&mut self) {
        let series: Vec<f64> = self.history.iter().map(|(_, v)| v).collect();
        let current = self.profile.as_ref().map(|p| p.period);
        match detect_period(&series, &self.config.period, current) {
            Some(found) if self.profile.as_ref().map(|p| p.period) == Some(found.lag) => {}
            Some(found) => {
                self.profile = Some(Profile::build(
                    found.lag,
                    &self.history,
                    self.config.profile_cycles,
                ));
            }
            None => self.profile = None,
        }
    }

    fn deviation(&self, t_sec: u64) -> f64 {
        self.profile.as_ref().map_or(0.0, |p| p.deviation(t_sec))
    }
}

impl Forecaster for Seasonal {
    fn name(&self) -> &'static str {
        "seasonal"
    }

    fn observe(&mut self, t_sec: u64, value: f64) {
        let minute = t_sec / 60;
        match self.minute {
            Some(current) if minute > current => {
                self.close_minute(current, self.minute_sum / 60.0);
                // Minutes with no observed second at all were idle; a long gap only needs to
                // zero the whole history once.
                let skipped = (minute - current - 1).min(self.config.history_minutes as u64 + 1);
                for m in (minute - skipped)..minute {
                    self.close_minute(m, 0.0);
                }
                self.minute_sum = 0.0;
                self.minute = Some(minute);
            }
            Some(_) => {}
            None => self.minute = Some(minute),
        }
        self.minute_sum += value;
        self.holt.update(value - self.deviation(t_sec));
        self.last_t = t_sec;
    }

    fn forecast(&self, horizon_sec: u64) -> f64 {
        let target = self.last_t.saturating_add(horizon_sec);
        (self.holt.project(horizon_sec) + self.deviation(target)).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::holt::HoltConfig;

    /// A 20-minute cycle: 10 minutes at 2/s, 10 minutes at 20/s.
    fn square(t: u64) -> f64 {
        match (t / 600) % 2 {
            0 => 2.0,
            _ => 20.0,
        }
    }

    #[test]
    fn learns_a_square_wave_and_anticipates_the_switch() {
        let mut model = Seasonal::new(SeasonalConfig::default());
        let mut holt = Holt::new(HoltConfig::default());
        // Six hours: enough history for detection at the one-hour marks.
        let end = 6 * 3_600 + 590;
        for t in 0..end {
            model.observe(t, square(t));
            holt.observe(t, square(t));
        }
        assert_eq!(model.period_minutes(), Some(20));
        // At t = 6 h + 590 s the rate is about to jump from 2 to 20; 30 s ahead it is 20.
        let seasonal = model.forecast(30);
        let flat = holt.forecast(30);
        assert!(seasonal > 10.0, "seasonal {seasonal}");
        assert!(flat < 5.0, "holt {flat}");
    }

    #[test]
    fn without_a_period_it_is_holt() {
        let config = SeasonalConfig::default();
        let mut model = Seasonal::new(config);
        let mut holt = Holt::new(config.holt);
        let mut x = 12_345u64;
        for t in 0..7_200 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let v = 5.0 + (x >> 61) as f64;
            model.observe(t, v);
            holt.observe(t, v);
        }
        assert_eq!(model.period_minutes(), None);
        for h in [5, 60] {
            assert!((model.forecast(h) - holt.forecast(h)).abs() < 1e-9);
        }
    }

    #[test]
    fn history_is_bounded_and_long_gaps_are_cheap() {
        let mut model = Seasonal::new(SeasonalConfig {
            history_minutes: 100,
            ..SeasonalConfig::default()
        });
        model.observe(0, 1.0);
        model.observe(1_000_000_000, 1.0);
        assert!(model.history.len() <= 100);
        assert_eq!(model.history.newest_minute, Some(1_000_000_000 / 60 - 1));
    }

    #[test]
    fn minute_history_iterates_oldest_first() {
        let mut history = MinuteHistory::new(3);
        for m in 10..15 {
            history.push(m, m as f64);
        }
        let items: Vec<_> = history.iter().collect();
        assert_eq!(items, vec![(12, 12.0), (13, 13.0), (14, 14.0)]);
    }

    #[test]
    fn profile_deviation_interpolates_between_minute_centres() {
        let mut history = MinuteHistory::new(10);
        history.push(0, 0.0);
        history.push(1, 6.0);
        let profile = Profile::build(2, &history, 8);
        // Mean 3: minute 0 centre (30 s) is −3, minute 1 centre (90 s) is +3, halfway is 0.
        assert!((profile.deviation(30) + 3.0).abs() < 1e-9);
        assert!((profile.deviation(90) - 3.0).abs() < 1e-9);
        assert!(profile.deviation(60).abs() < 1e-9);
        assert!((profile.deviation(150) + 3.0).abs() < 1e-9);
    }
}
