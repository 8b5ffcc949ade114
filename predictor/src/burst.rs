//! Knative-style panic detection: a short window running well above the stable window.
//!
//! ```text
//!  arrivals window ─► stable rate (60 s) ─┐
//!                  └► panic rate  (6 s)  ─┴─► panic_rate ≥ ratio · stable_rate
//!                                             and panic_rate ≥ min_rate
//!                                             and the excess is ≥ z standard deviations
//!                                                 (Anscombe-transformed Poisson counts)
//!                                          ─► panicking; held for `hold_ms` after the last trigger
//! ```
//!
//! The z test keeps Poisson noise on a quiet service from looking like a burst: at 0.5 arrivals
//! per second a 6 s window doubling its expectation is common; three standard deviations are not.

use crate::window::SlidingWindow;

/// Thresholds of the [`PanicSignal`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurstConfig {
    /// Stable window span (default 60 s).
    pub stable_window_ms: u64,
    /// Panic window span (default 6 s).
    pub panic_window_ms: u64,
    /// Panic when the panic rate is at least this multiple of the stable rate (default 2.0).
    pub panic_ratio: f64,
    /// Minimum panic-window rate in arrivals per second to panic at all (default 1.0).
    pub min_rate_per_sec: f64,
    /// Minimum excess of the panic window's count over its stable expectation, in standard
    /// deviations of Anscombe-transformed Poisson counts (default 3.0).
    pub min_z: f64,
    /// Panic lasts this long after the last trigger (default 60 s, one stable window).
    pub hold_ms: u64,
}

impl Default for BurstConfig {
    fn default() -> Self {
        Self {
            stable_window_ms: 60_000,
            panic_window_ms: 6_000,
            panic_ratio: 2.0,
            min_rate_per_sec: 1.0,
            min_z: 3.0,
            hold_ms: 60_000,
        }
    }
}

/// The outcome of one [`PanicSignal::update`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BurstState {
    /// In panic mode (triggered now or within the hold time).
    pub panicking: bool,
    /// The trigger condition held at this update.
    pub triggered: bool,
    /// Stable-window arrivals per second.
    pub stable_rate: f64,
    /// Panic-window arrivals per second.
    pub panic_rate: f64,
}

/// Whether a panic-window rate is a burst over a stable rate (the pure trigger condition).
pub fn is_burst(config: &BurstConfig, stable_rate: f64, panic_rate: f64) -> bool {
    if panic_rate < config.min_rate_per_sec || panic_rate < config.panic_ratio * stable_rate {
        return false;
    }
    // Anscombe's transform makes Poisson counts about unit-normal, tails included, even at the
    // handful of arrivals a quiet service sees in a panic window.
    let seconds = config.panic_window_ms as f64 / 1_000.0;
    let count = panic_rate * seconds;
    let expected = stable_rate * seconds;
    2.0 * ((count + 0.375).sqrt() - (expected + 0.375).sqrt()) >= config.min_z
}

/// Panic mode of one service, updated once per tick.
#[derive(Debug, Clone)]
pub struct PanicSignal {
    config: BurstConfig,
    last_trigger_ms: Option<u64>,
}

impl PanicSignal {
    /// A signal that is not panicking.
    pub fn new(config: BurstConfig) -> Self {
        Self {
            config,
            last_trigger_ms: None,
        }
    }

    /// The thresholds.
    pub fn config(&self) -> &BurstConfig {
        &self.config
    }

    /// Reads both windows of `arrivals` at `now_ms` and updates panic mode.
    pub fn update(&mut self, now_ms: u64, arrivals: &SlidingWindow) -> BurstState {
        let stable_rate = arrivals.rate_per_sec(now_ms, self.config.stable_window_ms);
        let panic_rate = arrivals.rate_per_sec(now_ms, self.config.panic_window_ms);
        self.update_rates(now_ms, stable_rate, panic_rate)
    }

    /// Updates panic mode from rates read elsewhere (e.g. summed over replicas).
    pub fn update_rates(&mut self, now_ms: u64, stable_rate: f64, panic_rate: f64) -> BurstState {
        let triggered = is_burst(&self.config, stable_rate, panic_rate);
        if triggered {
            self.last_trigger_ms = Some(now_ms);
        }
        let panicking = self
            .last_trigger_ms
            .is_some_and(|at| now_ms.saturating_sub(at) < self.config.hold_ms);
        BurstState {
            panicking,
            triggered,
            stable_rate,
            panic_rate,
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::window::WindowConfig;

    /// A deterministic Poisson sample (Knuth's method on a fixed-seed LCG).
    struct Poisson(u64);

    impl Poisson {
        fn uniform(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }

        fn sample(&mut self, mean: f64) -> u64 {
            let limit = (-mean).exp();
            let mut k = 0;
            let mut p = 1.0;
            loop {
                p *= self.uniform();
                if p <= limit {
                    return k;
                }
                k += 1;
            }
        }
    }

    fn run(rates: impl Fn(u64) -> f64, seconds: u64) -> Vec<BurstState> {
        let window = SlidingWindow::new(WindowConfig::default());
        let mut signal = PanicSignal::new(BurstConfig::default());
        let mut poisson = Poisson(7);
        (0..seconds)
            .map(|s| {
                window.record(s * 1_000, poisson.sample(rates(s)));
                signal.update(s * 1_000 + 999, &window)
            })
            .collect()
    }

    #[test]
    fn fires_on_a_step() {
        let states = run(|s| if s < 120 { 10.0 } else { 40.0 }, 200);
        assert!(states[..120].iter().all(|s| !s.panicking));
        let first = states.iter().position(|s| s.triggered).expect("a trigger");
        assert!((120..=124).contains(&first), "triggered at {first}");
        // Held for the stable window even after the 60 s window catches up.
        assert!(states[first..first + 60].iter().all(|s| s.panicking));
    }

    #[test]
    fn quiet_on_poisson_noise() {
        for rate in [0.3, 2.0, 20.0, 200.0] {
            let states = run(|_| rate, 3_600);
            let triggers = states.iter().filter(|s| s.triggered).count();
            assert_eq!(triggers, 0, "rate {rate}");
        }
    }

    #[test]
    fn trigger_condition_needs_ratio_rate_and_significance() {
        let config = BurstConfig::default();
        assert!(is_burst(&config, 10.0, 30.0));
        assert!(!is_burst(&config, 10.0, 15.0), "below the ratio");
        assert!(!is_burst(&config, 0.1, 0.8), "below the minimum rate");
        // Over 6 s: 9 arrivals against 3 expected is noise; 24 against 3 is not.
        assert!(!is_burst(&config, 0.5, 1.5));
        assert!(is_burst(&config, 0.5, 4.0));
    }

    #[test]
    fn panic_ends_after_the_hold_time() {
        let mut signal = PanicSignal::new(BurstConfig::default());
        assert!(signal.update_rates(0, 10.0, 40.0).panicking);
        assert!(signal.update_rates(59_999, 10.0, 10.0).panicking);
        assert!(!signal.update_rates(60_000, 10.0, 10.0).panicking);
    }
}
