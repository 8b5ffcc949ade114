//! The adaptive headroom controller: tunes a service's demand quantile online toward its
//! declared waiting objective (`scaling.slo.waiting_percent`).
//!
//! ```text
//!  every evaluation window (5 min, at least 100 requests):
//!    waiting % = requests that waited / requests that arrived, over the window
//!    above the SLO ─────────────► last move was a lowering? revert it and hold lowerings
//!                                  for 6 windows : raise the headroom one step
//!    below half the SLO ─────────► lower one step (explore cheaper), remembering the old
//!                                  offset so the next window can revert it
//!    in between ─────────────────► keep (a lowering that held is accepted)
//!  quantile = σ(logit(newsvendor quantile) + offset), offset within [−4, +6]
//! ```
//!
//! Steps are in log-odds so each one changes the share of seconds provisioned for by the same
//! factor at any quantile; the bounds keep exploration from running away on a window that lies.
//! Everything is pure (time passed in), so the proxy and the replay run the same controller.

use std::time::Duration;

use forecourt_config::scaling::{MAX_DEMAND_QUANTILE, MIN_DEMAND_QUANTILE};

use crate::scale::decide::millis;

/// Length of one evaluation window.
pub const EVALUATION_WINDOW: Duration = Duration::from_secs(300);
/// Requests a window needs before it is judged (a quieter window is extended).
pub const MIN_WINDOW_REQUESTS: u64 = 100;
/// One step of the offset, in log-odds.
pub const STEP: f64 = 0.5;
/// Lowest offset (least headroom).
pub const MIN_OFFSET: f64 = -4.0;
/// Highest offset (most headroom).
pub const MAX_OFFSET: f64 = 6.0;
/// Windows without a lowering after one was reverted.
pub const HOLD_AFTER_REVERT: u32 = 6;

/// What the controller did at the end of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadroomMove {
    /// Waiting was above the objective: more headroom.
    Raised,
    /// Waiting was well below the objective: less headroom, to be reverted if it hurts.
    Lowered,
    /// The last lowering made waiting exceed the objective: undone.
    Reverted,
    /// Within the objective (or holding after a revert): unchanged.
    Kept,
}

impl HeadroomMove {
    /// A stable snake_case label for JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            HeadroomMove::Raised => "raised",
            HeadroomMove::Lowered => "lowered",
            HeadroomMove::Reverted => "reverted",
            HeadroomMove::Kept => "kept",
        }
    }
}

/// The controller's state as the admin API and metrics show it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeadroomState {
    /// The objective: percent of requests that may wait.
    pub slo_waiting_percent: f64,
    /// The offset added to the newsvendor quantile's log-odds.
    pub offset: f64,
    /// Waiting percent over the last judged window.
    pub last_waiting_percent: Option<f64>,
    /// The last move and when it was made (ms on the control loop's clock).
    pub last_move: Option<(HeadroomMove, u64)>,
}

/// One service's adaptive headroom.
#[derive(Debug, Clone)]
pub struct HeadroomController {
    slo_percent: f64,
    offset: f64,
    window_started_ms: Option<u64>,
    arrived: u64,
    waited_at_start: u64,
    /// The offset before the last lowering, while that lowering is on trial.
    before_lowering: Option<f64>,
    hold: u32,
    last_percent: Option<f64>,
    last_move: Option<(HeadroomMove, u64)>,
}

impl HeadroomController {
    /// A controller aiming at `slo_percent` of requests waiting, starting at no offset.
    pub fn new(slo_percent: f64) -> Self {
        Self {
            slo_percent,
            offset: 0.0,
            window_started_ms: None,
            arrived: 0,
            waited_at_start: 0,
            before_lowering: None,
            hold: 0,
            last_percent: None,
            last_move: None,
        }
    }

    /// The objective it aims at.
    pub fn slo_percent(&self) -> f64 {
        self.slo_percent
    }

    /// Records `arrived` new requests at `now_ms` and the service's cumulative count of
    /// requests that waited for capacity; judges the window once it is long and busy enough.
    pub fn observe(&mut self, now_ms: u64, arrived: u64, waited_total: u64) {
        let Some(started) = self.window_started_ms else {
            self.window_started_ms = Some(now_ms);
            self.waited_at_start = waited_total;
            self.arrived = arrived;
            return;
        };
        self.arrived = self.arrived.saturating_add(arrived);
        let long_enough = now_ms.saturating_sub(started) >= millis(EVALUATION_WINDOW);
        if !long_enough || self.arrived < MIN_WINDOW_REQUESTS {
            return;
        }
        let waited = waited_total.saturating_sub(self.waited_at_start);
        let percent = 100.0 * waited as f64 / self.arrived as f64;
        self.judge(now_ms, percent);
        self.window_started_ms = Some(now_ms);
        self.waited_at_start = waited_total;
        self.arrived = 0;
    }

    fn judge(&mut self, now_ms: u64, percent: f64) {
        self.last_percent = Some(percent);
        let chosen = if percent > self.slo_percent {
            match self.before_lowering.take() {
                Some(before) => {
                    self.offset = before;
                    self.hold = HOLD_AFTER_REVERT;
                    HeadroomMove::Reverted
                }
                None => {
                    self.offset = (self.offset + STEP).min(MAX_OFFSET);
                    HeadroomMove::Raised
                }
            }
        } else if percent < self.slo_percent / 2.0 && self.hold == 0 && self.offset > MIN_OFFSET {
            self.before_lowering = Some(self.offset);
            self.offset = (self.offset - STEP).max(MIN_OFFSET);
            HeadroomMove::Lowered
        } else {
            self.before_lowering = None;
            self.hold = self.hold.saturating_sub(1);
            HeadroomMove::Kept
        };
        self.last_move = Some((chosen, now_ms));
    }

    /// The newsvendor quantile `base` moved by the offset in log-odds, within the policy's
    /// quantile bounds.
    pub fn quantile(&self, base: f64) -> f64 {
        let base = base.clamp(MIN_DEMAND_QUANTILE, MAX_DEMAND_QUANTILE);
        let logit = (base / (1.0 - base)).ln() + self.offset;
        (1.0 / (1.0 + (-logit).exp())).clamp(MIN_DEMAND_QUANTILE, MAX_DEMAND_QUANTILE)
    }

    /// Its state for the admin API and metrics.
    pub fn state(&self) -> HeadroomState {
        HeadroomState {
            slo_waiting_percent: self.slo_percent,
            offset: self.offset,
            last_waiting_percent: self.last_percent,
            last_move: self.last_move,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW_MS: u64 = 300_000;

    /// Feeds one whole window of 1,000 requests of which `waited` waited.
    fn window(c: &mut HeadroomController, index: u64, waited_total: &mut u64, waited: u64) {
        *waited_total += waited;
        c.observe((index + 1) * WINDOW_MS, 1_000, *waited_total);
    }

    fn started() -> HeadroomController {
        let mut c = HeadroomController::new(0.5);
        c.observe(0, 0, 0);
        c
    }

    #[test]
    fn waiting_above_the_objective_raises_the_headroom() {
        let mut c = started();
        let mut total = 0;
        window(&mut c, 0, &mut total, 20); // 2 % > 0.5 %
        assert_eq!(c.state().offset, STEP);
        assert_eq!(c.state().last_move.map(|m| m.0), Some(HeadroomMove::Raised));
        assert_eq!(c.state().last_waiting_percent, Some(2.0));
        assert!(c.quantile(0.9) > 0.9);
    }

    #[test]
    fn a_lowering_that_hurts_is_reverted_and_exploration_pauses() {
        let mut c = started();
        let mut total = 0;
        window(&mut c, 0, &mut total, 1); // 0.1 %: explore cheaper
        assert_eq!(c.state().offset, -STEP);
        assert!(c.quantile(0.9) < 0.9);
        window(&mut c, 1, &mut total, 10); // 1 %: the lowering hurt
        assert_eq!(c.state().offset, 0.0);
        assert_eq!(
            c.state().last_move.map(|m| m.0),
            Some(HeadroomMove::Reverted)
        );
        for i in 2..2 + u64::from(HOLD_AFTER_REVERT) {
            window(&mut c, i, &mut total, 0);
            assert_eq!(c.state().offset, 0.0, "holding in window {i}");
        }
        window(&mut c, 8, &mut total, 0);
        assert_eq!(c.state().offset, -STEP, "explores again after the hold");
    }

    #[test]
    fn a_lowering_that_holds_is_kept() {
        let mut c = started();
        let mut total = 0;
        window(&mut c, 0, &mut total, 1);
        window(&mut c, 1, &mut total, 3); // 0.3 %: within the objective
        assert_eq!(c.state().offset, -STEP);
        assert_eq!(c.state().last_move.map(|m| m.0), Some(HeadroomMove::Kept));
        window(&mut c, 2, &mut total, 9); // 0.9 %: a plain raise, not a revert
        assert_eq!(c.state().offset, 0.0);
        assert_eq!(c.state().last_move.map(|m| m.0), Some(HeadroomMove::Raised));
    }

    #[test]
    fn the_offset_is_bounded_and_quiet_windows_wait() {
        let mut c = started();
        let mut total = 0;
        for i in 0..100 {
            window(&mut c, i, &mut total, 500);
        }
        assert_eq!(c.state().offset, MAX_OFFSET);
        assert!(c.quantile(0.9) <= MAX_DEMAND_QUANTILE);
        // Fewer than MIN_WINDOW_REQUESTS: not judged however long it lasts.
        let mut quiet = started();
        quiet.observe(10 * WINDOW_MS, 50, 50);
        assert_eq!(quiet.state().last_move, None);
        quiet.observe(11 * WINDOW_MS, 60, 50);
        assert_eq!(
            quiet.state().last_waiting_percent,
            Some(100.0 * 50.0 / 110.0)
        );
    }
}
