//! The `forecast:` section: the horizons every service is forecast and scored at, and scheduled
//! events (known surges) the forecast includes.
//!
//! ```yaml
//! forecast:
//!   horizons: [5s, 10s, 30s, 60s]
//!   events:
//!     - name: black-friday
//!       service: shop
//!       start: 2026-11-27T12:00:00Z
//!       duration: 10m
//!       multiply: 5
//! ```

use std::time::{Duration, UNIX_EPOCH};

use serde::Deserialize;

use crate::check::Checker;

/// Default forecast horizons in seconds.
pub const DEFAULT_HORIZONS: [u64; 4] = [5, 10, 30, 60];
/// Longest horizon a service may be forecast at.
pub const MAX_HORIZON: Duration = Duration::from_secs(600);

/// The `forecast:` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForecastSpec {
    /// Horizons forecast and scored every second (default 5s, 10s, 30s, 60s).
    #[serde(default, deserialize_with = "crate::de::durations")]
    pub horizons: Option<Vec<Duration>>,
    /// Known surges.
    #[serde(default)]
    pub events: Vec<EventSpec>,
}

/// One scheduled event as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    /// A label for logs and the admin API.
    pub name: Option<String>,
    /// The service it affects.
    pub service: String,
    /// When it starts, RFC 3339 (`2026-11-27T12:00:00Z`).
    pub start: String,
    /// How long it lasts.
    #[serde(deserialize_with = "crate::de::duration")]
    pub duration: Option<Duration>,
    /// Multiply the forecast by this factor while it lasts.
    pub multiply: Option<f64>,
    /// Add this many requests per second to the forecast while it lasts.
    pub add_rate: Option<f64>,
}

/// The resolved `forecast:` section.
#[derive(Debug, Clone, PartialEq)]
pub struct ForecastConfig {
    /// Horizons in whole seconds, ascending, without duplicates.
    pub horizons: Vec<u64>,
    /// Scheduled events from the policy file.
    pub events: Vec<EventConfig>,
}

// === impl ForecastConfig ===

impl Default for ForecastConfig {
    fn default() -> Self {
        Self {
            horizons: DEFAULT_HORIZONS.to_vec(),
            events: Vec::new(),
        }
    }
}

/// What an event does to the forecast.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EventChange {
    /// Multiply the forecast by this factor.
    Multiply(f64),
    /// Add this many requests per second.
    AddRate(f64),
}

/// A resolved scheduled event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventConfig {
    /// Its label (`events[i]` when the file gives none).
    pub name: String,
    /// The service it affects.
    pub service: String,
    /// Start as UNIX milliseconds.
    pub start_unix_ms: u64,
    /// Length.
    pub duration: Duration,
    /// What it does to the forecast.
    pub change: EventChange,
}

/// Why a text is not an event's start time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// Not RFC 3339 at all.
    #[error("{text:?} is not an RFC 3339 time ({reason})")]
    NotRfc3339 {
        /// The text given.
        text: String,
        /// What the parser said.
        reason: String,
    },
    /// Before the UNIX epoch.
    #[error("{0:?} is before 1970")]
    BeforeEpoch(String),
    /// Past what milliseconds in a `u64` hold.
    #[error("{0:?} is too far away")]
    TooFar(String),
}

/// Parses an RFC 3339 time into UNIX milliseconds.
pub fn parse_time(text: &str) -> Result<u64, TimeError> {
    let time = humantime::parse_rfc3339_weak(text.trim()).map_err(|e| TimeError::NotRfc3339 {
        text: text.to_owned(),
        reason: e.to_string(),
    })?;
    let since = time
        .duration_since(UNIX_EPOCH)
        .map_err(|_| TimeError::BeforeEpoch(text.to_owned()))?;
    u64::try_from(since.as_millis()).map_err(|_| TimeError::TooFar(text.to_owned()))
}

/// Why an event's `multiply` and `add_rate` make no change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChangeError {
    /// `multiply` out of range.
    #[error("multiply {0} must be between 0 and 1000")]
    Multiply(f64),
    /// `add_rate` negative or not a number.
    #[error("add_rate {0} must be a non-negative number")]
    AddRate(f64),
    /// Both given.
    #[error("give either multiply or add_rate, not both")]
    Both,
    /// Neither given.
    #[error("an event needs multiply or add_rate")]
    Neither,
}

/// Formats UNIX milliseconds as RFC 3339 (UTC, seconds).
pub fn format_time(unix_ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(unix_ms)).to_string()
}

// === impl EventChange ===

impl EventChange {
    /// Builds the change from the two optional fields; exactly one must be given.
    pub fn from_fields(multiply: Option<f64>, add_rate: Option<f64>) -> Result<Self, ChangeError> {
        match (multiply, add_rate) {
            (Some(m), None) if (0.0..=1_000.0).contains(&m) => Ok(Self::Multiply(m)),
            (Some(m), None) => Err(ChangeError::Multiply(m)),
            (None, Some(r)) if r.is_finite() && r >= 0.0 => Ok(Self::AddRate(r)),
            (None, Some(r)) => Err(ChangeError::AddRate(r)),
            (Some(_), Some(_)) => Err(ChangeError::Both),
            (None, None) => Err(ChangeError::Neither),
        }
    }
}

// === impl Checker ===

impl Checker<'_> {
    /// Resolves the `forecast:` section; events must name one of `services`.
    pub(crate) fn forecast(&mut self, raw: ForecastSpec, services: &[&str]) -> ForecastConfig {
        let mut horizons = Vec::new();
        match raw.horizons {
            None => horizons.extend(DEFAULT_HORIZONS),
            Some(list) => {
                if list.is_empty() {
                    self.problem("forecast.horizons", "give at least one horizon");
                }
                for (i, h) in list.iter().enumerate() {
                    let at = format!("forecast.horizons[{i}]");
                    if h.subsec_nanos() != 0 || h.as_secs() == 0 {
                        self.problem(&at, "a horizon is a whole number of seconds, at least 1s");
                    } else if *h > MAX_HORIZON {
                        self.problem(&at, "a horizon is at most 10m");
                    } else {
                        horizons.push(h.as_secs());
                    }
                }
                horizons.sort_unstable();
                horizons.dedup();
            }
        }
        let mut events = Vec::with_capacity(raw.events.len());
        for (i, spec) in raw.events.into_iter().enumerate() {
            let at = format!("forecast.events[{i}]");
            if !services.contains(&spec.service.as_str()) {
                self.problem(
                    &format!("{at}.service"),
                    format!("no service is named {:?}", spec.service),
                );
            }
            let start_unix_ms = parse_time(&spec.start).unwrap_or_else(|error| {
                self.problem(&format!("{at}.start"), error.to_string());
                0
            });
            let duration = spec.duration.unwrap_or_default();
            if duration.is_zero() {
                self.problem(&format!("{at}.duration"), "an event lasts at least 1s");
            }
            let change =
                EventChange::from_fields(spec.multiply, spec.add_rate).unwrap_or_else(|error| {
                    let field = match (spec.multiply, spec.add_rate) {
                        (_, Some(_)) => ".add_rate",
                        (Some(_), None) => ".multiply",
                        (None, None) => "",
                    };
                    self.problem(&format!("{at}{field}"), error.to_string());
                    EventChange::AddRate(0.0)
                });
            events.push(EventConfig {
                name: spec.name.unwrap_or_else(|| format!("events[{i}]")),
                service: spec.service,
                start_unix_ms,
                duration,
                change,
            });
        }
        ForecastConfig { horizons, events }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{LoadError, Policy};

    const SERVICE: &str = "services:\n  - name: shop\n    routes: [{path_prefix: /shop}]\n    instances: [{address: 127.0.0.1:9001}]\n";

    fn problems(text: &str) -> Vec<String> {
        match Policy::parse(text, Path::new("p.yaml")) {
            Ok(_) => Vec::new(),
            Err(LoadError::Invalid { problems, .. }) => {
                problems.iter().map(ToString::to_string).collect()
            }
            Err(e) => vec![e.to_string()],
        }
    }

    #[test]
    fn defaults_to_the_standard_horizons_and_no_events() {
        let policy = Policy::parse(SERVICE, Path::new("p.yaml")).expect("valid");
        assert_eq!(policy.forecast, ForecastConfig::default());
    }

    #[test]
    fn resolves_horizons_and_events() {
        let text = format!(
            "{SERVICE}forecast:\n  horizons: [30s, 5s, 30s]\n  events:\n    - service: shop\n      start: 2026-11-27T12:00:00Z\n      duration: 10m\n      multiply: 5\n"
        );
        let policy = Policy::parse(&text, Path::new("p.yaml")).expect("valid");
        assert_eq!(policy.forecast.horizons, [5, 30]);
        let event = &policy.forecast.events[0];
        assert_eq!(event.name, "events[0]");
        assert_eq!(event.start_unix_ms, 1_795_780_800_000);
        assert_eq!(event.duration, Duration::from_secs(600));
        assert_eq!(event.change, EventChange::Multiply(5.0));
        assert_eq!(format_time(event.start_unix_ms), "2026-11-27T12:00:00Z");
    }

    #[test]
    fn locates_every_bad_event_field() {
        let text = format!(
            "{SERVICE}forecast:\n  horizons: [1500ms]\n  events:\n    - service: cart\n      start: tomorrow\n      duration: 0s\n      multiply: 2\n      add_rate: 3\n"
        );
        let found = problems(&text);
        let expected = [
            "p.yaml:6:14: forecast.horizons[0]: a horizon is a whole number of seconds",
            "p.yaml:8:16: forecast.events[0].service: no service is named \"cart\"",
            "p.yaml:9:14: forecast.events[0].start: \"tomorrow\" is not an RFC 3339 time",
            "p.yaml:10:17: forecast.events[0].duration: an event lasts at least 1s",
            "p.yaml:12:17: forecast.events[0].add_rate: give either multiply or add_rate",
        ];
        for want in expected {
            assert!(
                found.iter().any(|p| p.starts_with(want)),
                "missing {want:?} in {found:#?}"
            );
        }
        assert_eq!(found.len(), expected.len(), "{found:#?}");
    }
}
