//! Forecast views of the admin API: `GET /v1/forecasts`, scheduled events (`POST`/`DELETE
//! /v1/events`) and the forecast metrics.

use std::fmt::Write as _;
use std::time::Duration;

use forecourt_config::forecast::{format_time, parse_time};
use forecourt_config::{EventChange, EventConfig};
use forecourt_orchestrator::{EventEntry, ForecastBoard};
use forecourt_predictor::score::ErrorStats;
use forecourt_predictor::ServiceForecast;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::metrics::{label, write_per_service};
use crate::state::Snapshot;

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

fn service(forecast: &ServiceForecast) -> Value {
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
        "in_flight": forecast.in_flight,
        "concurrency": round(forecast.concurrency),
        "forecasts": horizons,
    })
}

/// The `GET /v1/forecasts` answer: each service's current rate, forecast, bound and model errors,
/// and the scheduled events.
pub fn forecasts_json(board: &ForecastBoard) -> Value {
    json!({
        "at": format_time(board.at_ms),
        "trained_seconds": board.trained_seconds,
        "services": board.services.iter().map(service).collect::<Vec<_>>(),
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

/// Longest event the admin API accepts.
const MAX_EVENT: Duration = Duration::from_secs(7 * 24 * 3600);

impl PostedEvent {
    /// Checks the event against the current services; `now_ms` is UNIX ms.
    pub fn resolve(self, snapshot: &Snapshot, now_ms: u64) -> Result<EventConfig, String> {
        if self.name.is_empty() || self.name.len() > 128 {
            return Err("name must be 1 to 128 characters".to_owned());
        }
        if snapshot.service(&self.service).is_none() {
            return Err(format!("no service is named {:?}", self.service));
        }
        let start_unix_ms = match (&self.start, &self.starts_in) {
            (Some(start), None) => parse_time(start)?,
            (None, Some(delay)) => {
                let delay = humantime::parse_duration(delay)
                    .map_err(|e| format!("starts_in {delay:?}: {e}"))?;
                now_ms.saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
            }
            _ => return Err("give exactly one of start and starts_in".to_owned()),
        };
        let duration = humantime::parse_duration(&self.duration)
            .map_err(|e| format!("duration {:?}: {e}", self.duration))?;
        if duration.is_zero() || duration > MAX_EVENT {
            return Err("duration must be between 1s and 7 days".to_owned());
        }
        let change = EventChange::from_fields(self.multiply, self.add_rate)?;
        Ok(EventConfig {
            name: self.name,
            service: self.service,
            start_unix_ms,
            duration,
            change,
        })
    }
}

/// Writes the forecast metrics: rates, panic mode, forecasts, model weights and errors.
pub fn render_forecast_metrics(out: &mut String, board: &ForecastBoard) {
    out.push_str("# HELP forecourt_arrival_rate Arrivals per second over the stable and panic windows.\n# TYPE forecourt_arrival_rate gauge\n");
    for s in &board.services {
        let name = label(&s.service);
        let _ = writeln!(
            out,
            "forecourt_arrival_rate{{service=\"{name}\",window=\"stable\"}} {}\nforecourt_arrival_rate{{service=\"{name}\",window=\"panic\"}} {}",
            s.stable_rate, s.panic_rate
        );
    }
    write_per_service(
        out,
        "forecourt_panic_mode",
        "gauge",
        "1 while a service's short window runs far above its stable window.",
        board
            .services
            .iter()
            .map(|s| (s.service.as_str(), u8::from(s.panicking))),
    );
    write_per_service(
        out,
        "forecourt_concurrency",
        "gauge",
        "Time-averaged requests in flight over the stable window.",
        board
            .services
            .iter()
            .map(|s| (s.service.as_str(), s.concurrency)),
    );
    out.push_str("# HELP forecourt_forecast_requests_per_second Ensemble forecast at a horizon (point and upper bound, events applied).\n# TYPE forecourt_forecast_requests_per_second gauge\n");
    for s in &board.services {
        let name = label(&s.service);
        for h in &s.horizons {
            let _ = writeln!(
                out,
                "forecourt_forecast_requests_per_second{{service=\"{name}\",horizon=\"{}s\",bound=\"point\"}} {}\nforecourt_forecast_requests_per_second{{service=\"{name}\",horizon=\"{}s\",bound=\"upper\"}} {}",
                h.horizon_sec, h.point, h.horizon_sec, h.upper
            );
        }
    }
    out.push_str("# HELP forecourt_forecast_model_weight Weight of a model in the ensemble at a horizon.\n# TYPE forecourt_forecast_model_weight gauge\n");
    for s in &board.services {
        let name = label(&s.service);
        for h in &s.ensemble.horizons {
            for m in &h.models {
                let _ = writeln!(
                    out,
                    "forecourt_forecast_model_weight{{service=\"{name}\",horizon=\"{}s\",model=\"{}\"}} {}",
                    m.forecast.horizon_sec, m.forecast.model, m.weight
                );
            }
        }
    }
    type Pick = fn(&ErrorStats) -> Option<f64>;
    let errors: [(&str, &str, Pick); 4] = [
        (
            "forecourt_forecast_wape",
            "Recent weighted absolute percentage error of a model at a horizon.",
            |s| s.wape,
        ),
        (
            "forecourt_forecast_mase",
            "Recent mean absolute scaled error against last value (below 1 beats it).",
            |s| s.mase,
        ),
        (
            "forecourt_forecast_under_prediction_ratio",
            "Fraction of recent seconds whose load exceeded the point forecast.",
            |s| s.under_rate,
        ),
        (
            "forecourt_forecast_upper_coverage_ratio",
            "Fraction of recent seconds whose load stayed within the upper bound.",
            |s| s.coverage,
        ),
    ];
    for (metric, help, pick) in errors {
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} gauge");
        for s in &board.services {
            let name = label(&s.service);
            for h in &s.ensemble.horizons {
                let horizon = h.ensemble.horizon_sec;
                let rows = std::iter::once(("ensemble", &h.ensemble_recent))
                    .chain(h.models.iter().map(|m| (m.forecast.model, &m.recent)));
                for (model, recent) in rows {
                    if let Some(value) = pick(recent).filter(|v| v.is_finite()) {
                        let _ = writeln!(
                            out,
                            "{metric}{{service=\"{name}\",horizon=\"{horizon}s\",model=\"{model}\"}} {value}"
                        );
                    }
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP forecourt_scheduled_events Scheduled events not yet over.\n# TYPE forecourt_scheduled_events gauge\nforecourt_scheduled_events {}",
        board.events.len()
    );
}
