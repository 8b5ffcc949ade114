//! The control-loop side: once a second, feed every service's closed seconds to its ensemble,
//! update panic mode, and answer forecasts with scheduled events applied.
//!
//! ```text
//!  tick(now) ─► per service:
//!     sample in-flight time ─► concurrency window
//!     closed seconds since the last tick ─► Ensemble::observe (score, update, forecast)
//!     6 s vs 60 s arrival rates ─► PanicSignal
//!  forecast(service, h) ─► ensemble (+ scheduled events at the target second)
//! ```
//!
//! The engine is owned by one task (`&mut self`); it publishes [`ServiceForecast`] snapshots for
//! the admin API. When the service list changes, build a new [`crate::Predictor`] and engine.

use crate::burst::{BurstConfig, BurstState, PanicSignal};
use crate::ensemble::{Ensemble, EnsembleConfig, EnsembleSnapshot};
use crate::events::{apply_events, ScheduledEvent};
use crate::forecast::Forecast;
use crate::predictor::{Predictor, PredictorError, ServiceId};

/// Settings of the [`ForecastEngine`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EngineConfig {
    /// Models, horizons and scoring of each service's ensemble.
    pub ensemble: EnsembleConfig,
    /// Panic-mode thresholds.
    pub burst: BurstConfig,
}

/// A forecast for one horizon with scheduled events applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HorizonForecast {
    /// Seconds after the last closed second.
    pub horizon_sec: u64,
    /// Ensemble point forecast (arrivals per second), events applied.
    pub point: f64,
    /// Upper bound (point plus the configured error quantile), events applied.
    pub upper: f64,
    /// Whether a scheduled event changed this horizon's forecast.
    pub event_active: bool,
}

/// Everything the admin API and metrics show about one service's load and forecasts.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceForecast {
    /// The service's id.
    pub id: ServiceId,
    /// The service's name.
    pub service: String,
    /// Arrivals per second over the stable window.
    pub stable_rate: f64,
    /// Arrivals per second over the panic window.
    pub panic_rate: f64,
    /// Whether the service is in panic mode.
    pub panicking: bool,
    /// Requests in flight now.
    pub in_flight: i64,
    /// Time-averaged requests in flight over the stable window.
    pub concurrency: f64,
    /// The ensemble forecast at each configured horizon, events applied.
    pub horizons: Vec<HorizonForecast>,
    /// Every model's forecast, weight and recent errors.
    pub ensemble: EnsembleSnapshot,
}

#[derive(Debug)]
struct ServiceState {
    ensemble: Ensemble,
    panic: PanicSignal,
    burst: BurstState,
    next_sec: Option<u64>,
    events: Vec<ScheduledEvent>,
}

/// Per-service ensembles and panic signals, ticked once a second by the control loop.
#[derive(Debug)]
pub struct ForecastEngine {
    config: EngineConfig,
    services: Vec<ServiceState>,
}

impl ForecastEngine {
    /// An engine for every service of `predictor`.
    pub fn new(predictor: &Predictor, config: EngineConfig) -> Self {
        let services = (0..predictor.len())
            .map(|_| ServiceState {
                ensemble: Ensemble::new(config.ensemble.clone()),
                panic: PanicSignal::new(config.burst),
                burst: BurstState::default(),
                next_sec: None,
                events: Vec::new(),
            })
            .collect();
        Self { config, services }
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Replaces all scheduled events; every event must name a known service (nothing changes
    /// otherwise).
    pub fn set_events(
        &mut self,
        predictor: &Predictor,
        events: impl IntoIterator<Item = ScheduledEvent>,
    ) -> Result<(), PredictorError> {
        let mut per_service: Vec<Vec<ScheduledEvent>> = vec![Vec::new(); self.services.len()];
        for event in events {
            let id = predictor
                .service_id(&event.service)
                .filter(|id| id.index() < per_service.len())
                .ok_or_else(|| PredictorError::UnknownService {
                    name: event.service.clone(),
                })?;
            per_service[id.index()].push(event);
        }
        for (state, events) in self.services.iter_mut().zip(per_service) {
            state.events = events;
        }
        Ok(())
    }

    /// Feeds every service the seconds that closed since the last tick, samples concurrency and
    /// updates panic mode. Call about once a second; late ticks catch up on what the windows
    /// still hold.
    pub fn tick(&mut self, predictor: &Predictor, now_ms: u64) {
        let current_sec = now_ms / 1_000;
        let held = predictor.held_seconds();
        for ((id, _, windows), state) in predictor.services().zip(self.services.iter_mut()) {
            windows.sample_concurrency(now_ms);
            let oldest_held = current_sec.saturating_sub(held);
            let start = state.next_sec.unwrap_or(current_sec).max(oldest_held);
            for sec in start..current_sec {
                let count = predictor.second_count(id, now_ms, sec).unwrap_or(0);
                state.ensemble.observe(sec, count as f64);
            }
            state.next_sec = Some(current_sec.max(start));
            state.burst = state.panic.update(now_ms, windows.arrivals());
        }
    }

    fn state(&self, id: ServiceId) -> Option<&ServiceState> {
        self.services.get(id.index())
    }

    /// Panic state of a service as of the last tick.
    pub fn burst(&self, id: ServiceId) -> Option<BurstState> {
        self.state(id).map(|s| s.burst)
    }

    /// The ensemble of a service (weights, scoreboard).
    pub fn ensemble(&self, id: ServiceId) -> Option<&Ensemble> {
        self.state(id).map(|s| &s.ensemble)
    }

    /// The forecast `horizon_sec` after the last closed second (any horizon, e.g. the service's
    /// time-to-ready), with scheduled events applied.
    pub fn forecast(&self, id: ServiceId, horizon_sec: u64) -> Option<HorizonForecast> {
        let state = self.state(id)?;
        let raw = state.ensemble.forecast_at(horizon_sec);
        Some(Self::with_events(state, raw))
    }

    /// The count the second `horizon_sec` after the last closed second stays at or below with
    /// probability `q` (see [`Ensemble::demand_at`]), with scheduled events applied.
    pub fn demand(&self, id: ServiceId, horizon_sec: u64, q: f64) -> Option<f64> {
        let state = self.state(id)?;
        let demand = state.ensemble.demand_at(horizon_sec, q);
        Some(apply_events(
            &state.events,
            Self::target_ms(state, horizon_sec),
            demand,
        ))
    }

    /// The start (ms) of the second `horizon_sec` after the service's last observed one.
    fn target_ms(state: &ServiceState, horizon_sec: u64) -> u64 {
        state
            .ensemble
            .last_observed()
            .map_or(horizon_sec, |t| t.saturating_add(horizon_sec))
            .saturating_mul(1_000)
    }

    fn with_events(state: &ServiceState, raw: Forecast) -> HorizonForecast {
        let target_ms = Self::target_ms(state, raw.horizon_sec);
        let event_active = state.events.iter().any(|e| e.is_active_at(target_ms));
        let (point, upper) = if event_active {
            (
                apply_events(&state.events, target_ms, raw.point),
                apply_events(&state.events, target_ms, raw.upper),
            )
        } else {
            (raw.point, raw.upper)
        };
        HorizonForecast {
            horizon_sec: raw.horizon_sec,
            point,
            upper: upper.max(point),
            event_active,
        }
    }

    /// A snapshot of one service for the admin API and metrics.
    pub fn snapshot(
        &self,
        predictor: &Predictor,
        id: ServiceId,
        now_ms: u64,
    ) -> Option<ServiceForecast> {
        let state = self.state(id)?;
        let windows = predictor.service(id)?;
        let ensemble = state.ensemble.snapshot();
        let horizons = ensemble
            .horizons
            .iter()
            .map(|h| Self::with_events(state, h.ensemble))
            .collect();
        Some(ServiceForecast {
            id,
            service: predictor.name(id)?.to_string(),
            stable_rate: state.burst.stable_rate,
            panic_rate: state.burst.panic_rate,
            panicking: state.burst.panicking,
            in_flight: windows.in_flight(),
            concurrency: windows.average_concurrency(now_ms, self.config.burst.stable_window_ms),
            horizons,
            ensemble,
        })
    }

    /// Snapshots of every service.
    pub fn snapshots(&self, predictor: &Predictor, now_ms: u64) -> Vec<ServiceForecast> {
        predictor
            .services()
            .filter_map(|(id, _, _)| self.snapshot(predictor, id, now_ms))
            .collect()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::events::EventEffect;
    use crate::predictor::PredictorConfig;

    fn setup() -> (Predictor, ForecastEngine, ServiceId) {
        let predictor =
            Predictor::new(["web", "api"], PredictorConfig::default()).expect("predictor");
        let engine = ForecastEngine::new(&predictor, EngineConfig::default());
        let web = predictor.service_id("web").expect("web");
        (predictor, engine, web)
    }

    #[test]
    fn ticks_feed_closed_seconds_to_the_ensemble() {
        let (predictor, mut engine, web) = setup();
        let clock = ManualClock::new(1_000_000);
        engine.tick(&predictor, clock.now_ms());
        for _ in 0..600 {
            for i in 0..20 {
                predictor.record_arrival(web, None, clock.now_ms() + i * 10);
            }
            clock.advance_ms(1_000);
            engine.tick(&predictor, clock.now_ms());
        }
        let f = engine.forecast(web, 10).expect("forecast");
        assert!((f.point - 20.0).abs() < 0.5, "{f:?}");
        assert!(f.upper >= f.point);
        let snap = engine
            .snapshot(&predictor, web, clock.now_ms())
            .expect("snapshot");
        assert_eq!(snap.service, "web");
        assert_eq!(snap.ensemble.at_sec, Some(clock.now_ms() / 1_000 - 1));
        assert!((snap.stable_rate - 20.0).abs() < 1.0);
        assert!(!snap.panicking);
        assert_eq!(snap.horizons.len(), 4);
        let api = predictor.service_id("api").expect("api");
        assert_eq!(engine.forecast(api, 10).map(|f| f.point), Some(0.0));
        assert_eq!(engine.snapshots(&predictor, clock.now_ms()).len(), 2);
    }

    #[test]
    fn a_late_tick_catches_up_on_held_seconds() {
        let (predictor, mut engine, web) = setup();
        engine.tick(&predictor, 0);
        for s in 0..30 {
            predictor.record_arrival(web, None, s * 1_000);
        }
        engine.tick(&predictor, 30_000);
        assert_eq!(
            engine.ensemble(web).and_then(Ensemble::last_observed),
            Some(29)
        );
        // Ten minutes without a tick: only what the window holds is fed.
        engine.tick(&predictor, 630_000);
        assert_eq!(
            engine.ensemble(web).and_then(Ensemble::last_observed),
            Some(629)
        );
    }

    #[test]
    fn scheduled_events_change_forecasts_inside_them() {
        let (predictor, mut engine, web) = setup();
        engine.tick(&predictor, 0);
        for s in 0..120 {
            for _ in 0..10 {
                predictor.record_arrival(web, None, s * 1_000);
            }
            engine.tick(&predictor, (s + 1) * 1_000);
        }
        // Last closed second is 119; an event from 140 s to 160 s triples the load.
        engine
            .set_events(
                &predictor,
                [ScheduledEvent {
                    service: "web".to_string(),
                    start_ms: 140_000,
                    duration_ms: 20_000,
                    effect: EventEffect::Multiply(3.0),
                }],
            )
            .expect("events");
        let before = engine.forecast(web, 10).expect("forecast");
        let during = engine.forecast(web, 30).expect("forecast");
        assert!(!before.event_active);
        assert!(during.event_active);
        assert!(
            (during.point / before.point - 3.0).abs() < 0.1,
            "{before:?} {during:?}"
        );
        let bad = engine.set_events(
            &predictor,
            [ScheduledEvent {
                service: "nope".to_string(),
                start_ms: 0,
                duration_ms: 1,
                effect: EventEffect::AddRate(1.0),
            }],
        );
        assert_eq!(
            bad,
            Err(PredictorError::UnknownService {
                name: "nope".to_string()
            })
        );
        // The rejected list changed nothing.
        assert!(engine.forecast(web, 30).is_some_and(|f| f.event_active));
    }

    #[test]
    fn panic_mode_follows_a_burst() {
        let (predictor, mut engine, web) = setup();
        engine.tick(&predictor, 0);
        for s in 0..200u64 {
            let n = if s < 120 { 10 } else { 60 };
            for _ in 0..n {
                predictor.record_arrival(web, None, s * 1_000 + 500);
            }
            engine.tick(&predictor, s * 1_000 + 999);
            let burst = engine.burst(web).expect("burst");
            if s < 120 {
                assert!(!burst.panicking, "second {s}");
            }
            if s == 125 {
                assert!(burst.panicking, "second {s}");
            }
        }
    }
}
