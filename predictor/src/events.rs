//! Scheduled events from the policy file: known surges (a launch, a batch job, a sale) that the
//! forecast includes when its target time falls inside them.
//!
//! ```text
//!  forecast for second T ─► every event of the service active at T ─► ×multiplier, +extra rate
//! ```

/// What an event does to the forecast while it is active.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EventEffect {
    /// Multiply the forecast (point and upper) by this factor.
    Multiply(f64),
    /// Add this many arrivals per second to the forecast (point and upper).
    AddRate(f64),
}

/// A known period of changed load for one service, in the predictor clock's milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledEvent {
    /// Service name, as given to the predictor.
    pub service: String,
    /// Start, in the predictor clock's milliseconds.
    pub start_ms: u64,
    /// Length in milliseconds.
    pub duration_ms: u64,
    /// The change to the forecast.
    pub effect: EventEffect,
}

impl ScheduledEvent {
    /// Whether the event covers `at_ms` (start inclusive, end exclusive).
    pub fn is_active_at(&self, at_ms: u64) -> bool {
        at_ms >= self.start_ms && at_ms - self.start_ms < self.duration_ms
    }

    /// Whether the event ended before `at_ms`.
    pub fn has_ended_by(&self, at_ms: u64) -> bool {
        at_ms.saturating_sub(self.start_ms) >= self.duration_ms && at_ms >= self.start_ms
    }
}

/// Applies every event in `events` that covers `target_ms` to a forecast value (never negative).
/// Multipliers apply first, then extra rates.
pub fn apply_events<'a>(
    events: impl IntoIterator<Item = &'a ScheduledEvent>,
    target_ms: u64,
    value: f64,
) -> f64 {
    let mut factor = 1.0;
    let mut extra = 0.0;
    for event in events.into_iter().filter(|e| e.is_active_at(target_ms)) {
        match event.effect {
            EventEffect::Multiply(m) => factor *= m.max(0.0),
            EventEffect::AddRate(r) => extra += r,
        }
    }
    (value * factor + extra).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(start_ms: u64, duration_ms: u64, effect: EventEffect) -> ScheduledEvent {
        ScheduledEvent {
            service: "checkout".to_string(),
            start_ms,
            duration_ms,
            effect,
        }
    }

    #[test]
    fn active_window_is_half_open() {
        let e = event(10_000, 5_000, EventEffect::Multiply(2.0));
        assert!(!e.is_active_at(9_999));
        assert!(e.is_active_at(10_000));
        assert!(e.is_active_at(14_999));
        assert!(!e.is_active_at(15_000));
        assert!(e.has_ended_by(15_000));
        assert!(!e.has_ended_by(9_000));
    }

    #[test]
    fn multiplies_and_adds_only_inside_events() {
        let events = [
            event(10_000, 5_000, EventEffect::Multiply(3.0)),
            event(12_000, 10_000, EventEffect::AddRate(5.0)),
        ];
        assert_eq!(apply_events(&events, 9_000, 10.0), 10.0);
        assert_eq!(apply_events(&events, 10_000, 10.0), 30.0);
        assert_eq!(apply_events(&events, 13_000, 10.0), 35.0);
        assert_eq!(apply_events(&events, 20_000, 10.0), 15.0);
        assert_eq!(apply_events(&events, 22_000, 10.0), 10.0);
    }

    #[test]
    fn never_negative() {
        let events = [event(0, 1_000, EventEffect::AddRate(-50.0))];
        assert_eq!(apply_events(&events, 500, 10.0), 0.0);
    }
}
