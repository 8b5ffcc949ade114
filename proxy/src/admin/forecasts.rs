//! Forecast views of the admin API: `GET /v1/forecasts`, scheduled events (`POST`/`DELETE
//! /v1/events`) and the forecast metrics.

use std::time::Duration;

use forecourt_config::forecast::{format_time, parse_time, ChangeError, TimeError};
use forecourt_config::{EventChange, EventConfig};
use forecourt_orchestrator::{EventEntry, ForecastBoard, ScalingBoard, ServiceScaling};
use forecourt_predictor::score::ErrorStats;
use forecourt_predictor::ServiceForecast;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::snapshot::Snapshot;

/// Rounds for JSON: four significant decimals are plenty for rates and ratios.
fn round(value: f64) -> f64 {
    if value.is_finite() {
        (value * 10_000.0).round() / 10_000.0
    } else {
        0.0
    }
}

fn stats(stats: &ErrorStats) -> Value {
    let opt = |v: Option<f64>| v.map(round);
    json!({
        "scored": round(stats.points),
        "wape": opt(stats.wape),
        "mase": opt(stats.mase),
        "bias": opt(stats.bias),
        "under_prediction_rate": opt(stats.under_rate),
        "upper_coverage": opt(stats.coverage),
    })
}

fn event(entry: &EventEntry) -> Value {
    let e = &entry.event;
    let (kind, value) = match e.change {
        EventChange::Multiply(m) => ("multiply", m),
        EventChange::AddRate(r) => ("add_rate", r),
    };
    json!({
        "name": e.name,
        "service": e.service,
        "source": entry.source.as_str(),
        "start": format_time(e.start_unix_ms),
        "duration_seconds": e.duration.as_secs(),
        kind: value,
    })
}

/// What the scaling step provisions a service for: the demand quantile and the adaptive
/// headroom controller's state (`null` for a service that is not scaled).
fn provisioning(scaling: Option<&ServiceScaling>) -> Value {
    let Some(s) = scaling else {
        return Value::Null;
    };
    let headroom = s.headroom.map(|h| {
        json!({
            "slo_waiting_percent": h.slo_waiting_percent,
            "offset": round(h.offset),
            "last_waiting_percent": h.last_waiting_percent.map(round),
            "last_move": h.last_move.map(|(m, _)| m.as_str()),
            "last_move_at": h.last_move.map(|(_, at)| format_time(at)),
        })
    });
    json!({
        "demand_quantile": round(s.demand_quantile),
        "demand": round(s.predicted_load),
        "horizon_seconds": s.horizon_secs,
        "headroom": headroom,
    })
}

fn service(forecast: &ServiceForecast, scaling: &ScalingBoard) -> Value {
    let horizons: Vec<Value> = forecast
        .horizons
        .iter()
        .zip(&forecast.ensemble.horizons)
        .map(|(h, detail)| {
            let models: Vec<Value> = detail
                .models
                .iter()
                .map(|m| {
                    json!({
                        "model": m.forecast.model,
                        "point": round(m.forecast.point),
                        "upper": round(m.forecast.upper),
                        "weight": round(m.weight),
                        "errors": stats(&m.recent),
                    })
                })
                .collect();
            json!({
                "horizon_seconds": h.horizon_sec,
                "point": round(h.point),
                "upper": round(h.upper),
                "event_active": h.event_active,
                "errors": stats(&detail.ensemble_recent),
                "models": models,
            })
        })
        .collect();
    json!({
        "service": forecast.service,
        "rate": {
            "stable": round(forecast.stable_rate),
            "panic": round(forecast.panic_rate),
        },
        "panicking": forecast.panicking,
        "provisioning": provisioning(scaling.service(&forecast.service)),
        "in_flight": forecast.in_flight,
        "concurrency": round(forecast.concurrency),
        "forecasts": horizons,
    })
}

/// The `GET /v1/forecasts` answer: each service's current rate, forecast, bound and model errors,
/// what it is provisioned for, and the scheduled events.
pub fn forecasts_json(board: &ForecastBoard, scaling: &ScalingBoard) -> Value {
    json!({
        "at": format_time(board.at_ms),
        "trained_seconds": board.trained_seconds,
        "services": board.services.iter().map(|s| service(s, scaling)).collect::<Vec<_>>(),
        "events": board.events.iter().map(event).collect::<Vec<_>>(),
    })
}

/// An event as posted to `POST /v1/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostedEvent {
    /// Label (used to cancel it).
    pub name: String,
    /// The service it affects.
    pub service: String,
    /// Start time, RFC 3339; or use `starts_in`.
    pub start: Option<String>,
    /// Start relative to now (`"30s"`); or use `start`.
    pub starts_in: Option<String>,
    /// How long it lasts (`"10m"`).
    pub duration: String,
    /// Multiply the forecast by this factor.
    pub multiply: Option<f64>,
    /// Add this many requests per second.
    pub add_rate: Option<f64>,
}

/// Why a posted event was refused (the answer is a 400 with this message).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventError {
    /// The name is empty or too long.
    #[error("name must be 1 to 128 characters")]
    Name,
    /// No service of the running policy has that name.
    #[error("no service is named {0:?}")]
    UnknownService(String),
    /// `start` is not an RFC 3339 time.
    #[error(transparent)]
    Start(#[from] TimeError),
    /// `starts_in` is not a duration.
    #[error("starts_in {value:?}: {reason}")]
    StartsIn {
        /// What was posted.
        value: String,
        /// Why it is not a duration.
        reason: String,
    },
    /// Neither or both of `start` and `starts_in`.
    #[error("give exactly one of start and starts_in")]
    StartGiven,
    /// `duration` is not a duration.
    #[error("duration {value:?}: {reason}")]
    Duration {
        /// What was posted.
        value: String,
        /// Why it is not a duration.
        reason: String,
    },
    /// The duration is zero or over the limit.
    #[error("duration must be between 1s and 7 days")]
    DurationRange,
    /// `multiply` and `add_rate` do not make one change.
    #[error(transparent)]
    Change(#[from] ChangeError),
}

/// Longest event the admin API accepts.
const MAX_EVENT: Duration = Duration::from_secs(7 * 24 * 3600);

impl PostedEvent {
    /// Checks the event against the current services; `now_ms` is UNIX ms.
    pub fn resolve(self, snapshot: &Snapshot, now_ms: u64) -> Result<EventConfig, EventError> {
        if self.name.is_empty() || self.name.len() > 128 {
            return Err(EventError::Name);
        }
        if snapshot.service(&self.service).is_none() {
            return Err(EventError::UnknownService(self.service));
        }
        let start_unix_ms = match (&self.start, &self.starts_in) {
            (Some(start), None) => parse_time(start).map_err(EventError::Start)?,
            (None, Some(delay)) => {
                let delay = humantime::parse_duration(delay).map_err(|e| EventError::StartsIn {
                    value: delay.clone(),
                    reason: e.to_string(),
                })?;
                now_ms.saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
            }
            _ => return Err(EventError::StartGiven),
        };
        let duration =
            humantime::parse_duration(&self.duration).map_err(|e| EventError::Duration {
                value: self.duration.clone(),
                reason: e.to_string(),
            })?;
        if duration.is_zero() || duration > MAX_EVENT {
            return Err(EventError::DurationRange);
        }
        let change =
            EventChange::from_fields(self.multiply, self.add_rate).map_err(EventError::Change)?;
        Ok(EventConfig {
            name: self.name,
            service: self.service,
            start_unix_ms,
            duration,
            change,
        })
    }
}
