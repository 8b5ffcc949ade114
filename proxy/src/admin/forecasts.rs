//! Forecast views of the admin API: `GET /v1/forecasts` (`?service=NAME`, `?limit=N&offset=M`
//! over the services sorted by name) and scheduled events (`POST`/`DELETE /v1/events`).

use std::time::Duration;

use ahash::AHashMap;

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

fn service(forecast: &ServiceForecast, scaling: Option<&ServiceScaling>) -> Value {
    // A service without an ensemble (idle) still has its horizons: no models, no errors yet.
    let no_errors = ErrorStats::default();
    let horizons: Vec<Value> = forecast
        .horizons
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let detail = forecast.ensemble.horizons.get(i);
            let models: Vec<Value> = detail
                .into_iter()
                .flat_map(|d| &d.models)
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
                "errors": stats(detail.map_or(&no_errors, |d| &d.ensemble_recent)),
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
        "provisioning": provisioning(scaling),
        "in_flight": forecast.in_flight,
        "concurrency": round(forecast.concurrency),
        "forecasts": horizons,
    })
}

/// Services `GET /v1/forecasts` answers when no `limit` is given.
pub const DEFAULT_LIMIT: usize = 100;
/// Most services one `GET /v1/forecasts` answers.
pub const MAX_LIMIT: usize = 1_000;

/// What `GET /v1/forecasts` was asked for: one service, and a page of the services sorted by
/// name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForecastQuery {
    /// Only this service (`?service=NAME`).
    pub service: Option<String>,
    /// Services per page (`?limit=N`, 1 to [`MAX_LIMIT`], default [`DEFAULT_LIMIT`]).
    pub limit: usize,
    /// Services skipped before the page (`?offset=M`, default 0).
    pub offset: usize,
}

/// Why a `GET /v1/forecasts` query was refused (the answer is a 400 with this message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A parameter other than `service`, `limit` and `offset`.
    #[error("unknown query parameter {0:?} (known: service, limit, offset)")]
    Unknown(String),
    /// The same parameter twice.
    #[error("query parameter {0:?} given more than once")]
    Repeated(String),
    /// A value with a bad percent escape or that is not UTF-8.
    #[error("query parameter {0:?} is not valid percent-encoded UTF-8")]
    Encoding(String),
    /// `limit` is not a whole number from 1 to [`MAX_LIMIT`].
    #[error("limit {0:?} must be a whole number from 1 to 1000")]
    Limit(String),
    /// `offset` is not a whole number.
    #[error("offset {0:?} must be a whole number, 0 or more")]
    Offset(String),
}

/// Why `GET /v1/forecasts` answered nothing (a 404 with this message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForecastsError {
    /// `?service=` names no service on the forecast board.
    #[error("no service is named {0:?}")]
    UnknownService(String),
}

// === impl ForecastQuery ===

impl Default for ForecastQuery {
    fn default() -> Self {
        Self {
            service: None,
            limit: DEFAULT_LIMIT,
            offset: 0,
        }
    }
}

impl ForecastQuery {
    /// Parses the query string of a `GET /v1/forecasts` (without the `?`; `None` when absent).
    pub fn parse(query: Option<&str>) -> Result<Self, QueryError> {
        let mut parsed = Self::default();
        let mut seen: [bool; 3] = [false; 3];
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode(key).ok_or_else(|| QueryError::Encoding(key.to_owned()))?;
            let slot = match key.as_str() {
                "service" => 0,
                "limit" => 1,
                "offset" => 2,
                _ => return Err(QueryError::Unknown(key)),
            };
            if std::mem::replace(&mut seen[slot], true) {
                return Err(QueryError::Repeated(key));
            }
            let value = percent_decode(value).ok_or_else(|| QueryError::Encoding(key.clone()))?;
            match slot {
                0 => parsed.service = Some(value),
                1 => {
                    parsed.limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or(QueryError::Limit(value))?;
                }
                _ => {
                    parsed.offset = value.parse().map_err(|_| QueryError::Offset(value))?;
                }
            }
        }
        Ok(parsed)
    }
}

/// Decodes `%XX` escapes and `+` (a space in a query); `None` for a bad escape or non-UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        match b {
            b'%' => {
                let hex = rest.get(..2)?;
                let hex = std::str::from_utf8(hex).ok()?;
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
                rest = &rest[2..];
            }
            b'+' => bytes.push(b' '),
            b => bytes.push(b),
        }
    }
    String::from_utf8(bytes).ok()
}

/// The `GET /v1/forecasts` answer: each service's current rate, forecast, bound and model errors,
/// what it is provisioned for, and the scheduled events. Services are sorted by name and paged by
/// `query` (`total` counts them all; `next_offset` is where the next page starts, `null` after
/// the last).
pub fn forecasts_json(
    board: &ForecastBoard,
    scaling: &ScalingBoard,
    query: &ForecastQuery,
) -> Result<Value, ForecastsError> {
    let mut services: Vec<&ServiceForecast> = match &query.service {
        Some(name) => vec![board
            .service(name)
            .ok_or_else(|| ForecastsError::UnknownService(name.clone()))?],
        None => board.services.iter().map(AsRef::as_ref).collect(),
    };
    services.sort_unstable_by(|a, b| a.service.cmp(&b.service));
    let total = services.len();
    let page: Vec<&ServiceForecast> = services
        .into_iter()
        .skip(query.offset)
        .take(query.limit)
        .collect();
    let end = query.offset.saturating_add(page.len());
    let scaled: AHashMap<&str, &ServiceScaling> = scaling
        .services
        .iter()
        .map(|s| (s.service.as_str(), s))
        .collect();
    Ok(json!({
        "at": format_time(board.at_ms),
        "trained_seconds": board.trained_seconds,
        "total": total,
        "next_offset": (end < total).then_some(end),
        "services": page
            .iter()
            .map(|s| service(s, scaled.get(s.service.as_str()).copied()))
            .collect::<Vec<_>>(),
        "events": board.events.iter().map(event).collect::<Vec<_>>(),
    }))
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::admin::fixture::{front_door, publish_board};

    fn query(text: &str) -> Result<ForecastQuery, QueryError> {
        ForecastQuery::parse(Some(text))
    }

    #[test]
    fn queries_parse_with_defaults() {
        assert_eq!(ForecastQuery::parse(None), Ok(ForecastQuery::default()));
        assert_eq!(query(""), Ok(ForecastQuery::default()));
        assert_eq!(
            query("limit=5&offset=10"),
            Ok(ForecastQuery {
                service: None,
                limit: 5,
                offset: 10
            })
        );
        let one = query("service=shop%2Dweb&").unwrap();
        assert_eq!(one.service.as_deref(), Some("shop-web"));
        assert_eq!((one.limit, one.offset), (DEFAULT_LIMIT, 0));
        assert_eq!(query("limit=1000").unwrap().limit, MAX_LIMIT);
    }

    #[test]
    fn bad_queries_are_refused_with_a_reason() {
        for (text, refused) in [
            ("limit=0", QueryError::Limit("0".into())),
            ("limit=1001", QueryError::Limit("1001".into())),
            ("limit=-1", QueryError::Limit("-1".into())),
            ("limit=ten", QueryError::Limit("ten".into())),
            ("limit", QueryError::Limit(String::new())),
            ("offset=1e3", QueryError::Offset("1e3".into())),
            (
                "offset=99999999999999999999999",
                QueryError::Offset("99999999999999999999999".into()),
            ),
            ("limit=5&limit=6", QueryError::Repeated("limit".into())),
            ("page=2", QueryError::Unknown("page".into())),
            ("service=%zz", QueryError::Encoding("service".into())),
            ("service=%ff", QueryError::Encoding("service".into())),
            ("service=%2", QueryError::Encoding("service".into())),
        ] {
            assert_eq!(query(text), Err(refused), "{text}");
        }
        assert_eq!(
            query("limit=0").unwrap_err().to_string(),
            "limit \"0\" must be a whole number from 1 to 1000"
        );
    }

    #[test]
    fn pages_follow_names_and_one_service_can_be_asked_for() {
        let front_door = front_door(5, "");
        publish_board(&front_door, &[("svc-00003", 10)]);
        let board = front_door.control.forecasts.load();
        let scaling = ScalingBoard::default();
        let names = |answer: &Value| -> Vec<String> {
            answer["services"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["service"].as_str().unwrap().to_owned())
                .collect()
        };
        let page = |text| forecasts_json(&board, &scaling, &query(text).unwrap()).unwrap();
        let first = page("limit=2");
        assert_eq!(names(&first), ["svc-00000", "svc-00001"]);
        assert_eq!(
            (first["total"].as_u64(), first["next_offset"].as_u64()),
            (Some(5), Some(2))
        );
        let last = page("limit=2&offset=4");
        assert_eq!(names(&last), ["svc-00004"]);
        assert!(last["next_offset"].is_null());
        let beyond = page("offset=9");
        assert!(names(&beyond).is_empty() && beyond["next_offset"].is_null());
        let all = page("");
        assert_eq!(all["services"].as_array().unwrap().len(), 5);
        assert!(all["next_offset"].is_null());
        let one = page("service=svc-00003");
        assert_eq!(names(&one), ["svc-00003"]);
        assert_eq!(one["total"], 1);
        assert!(one["services"][0]["rate"]["stable"].as_f64().unwrap() > 0.0);
        // The fields of a service are those of the whole list.
        assert_eq!(one["services"][0], all["services"][3]);
        assert_eq!(
            forecasts_json(&board, &scaling, &query("service=nope").unwrap()),
            Err(ForecastsError::UnknownService("nope".into()))
        );
    }
}
