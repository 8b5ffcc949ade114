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
//!
//! A service's ensemble (tens to hundreds of KiB: models, scores, demand residuals) exists only
//! while it has traffic: it is built at the first second with an arrival and dropped after
//! [`EnsembleConfig::idle_forget_secs`] (an hour by default) without one, so ten thousand
//! services of which a few hundred are busy hold a few hundred ensembles and tick only those.
//! What an idle service keeps is its [`DailyProfile`] (2.9 KiB: arrivals per minute of the day,
//! averaged over days): without an ensemble it forecasts the profile's rate for the target
//! second, so a service that comes back at the same minute every day is forecast, and scaled
//! up, a horizon before it does; elsewhere it forecasts nothing (`None`: scaling reacts to live
//! load, like a service still warming up) unless a scheduled event says otherwise.
//! [`ForecastEngine::next_wake_sec`] says when the profile next has something to say.

use crate::burst::{BurstConfig, BurstState, PanicSignal};
#[cfg(test)]
use crate::ensemble::IDLE_FORGET_SECS;
use crate::ensemble::{Ensemble, EnsembleConfig, EnsembleSnapshot};
use crate::events::{apply_events, ScheduledEvent};
use crate::forecast::Forecast;
use crate::predictor::{Predictor, PredictorError, ServiceId};
use crate::profile::{poisson_quantile, DailyProfile, PROFILE_SLOT_SECS};

/// Name of the forecast an idle service's daily profile makes.
pub const PROFILE: &str = "daily_profile";

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
    /// Every model's forecast, weight and recent errors (no horizons while the service is idle
    /// and holds no ensemble).
    pub ensemble: EnsembleSnapshot,
    /// Whether the service holds an ensemble: it has had an arrival within
    /// [`EnsembleConfig::idle_forget_secs`].
    pub modelled: bool,
}

#[derive(Debug)]
struct ServiceState {
    /// `None` before the first arrival and after [`EnsembleConfig::idle_forget_secs`] without
    /// one.
    ensemble: Option<Box<Ensemble>>,
    /// The last second with an arrival.
    last_arrival_sec: Option<u64>,
    panic: PanicSignal,
    burst: BurstState,
    next_sec: Option<u64>,
    events: Vec<ScheduledEvent>,
    /// Allocated at the first arrival; kept while idle.
    profile: Option<Box<DailyProfile>>,
    /// The minute being counted for the profile, and its arrivals so far.
    minute: u64,
    minute_count: u64,
}

impl ServiceState {
    /// Closes the counted minute when `sec` is in a later one: a minute with arrivals, or any
    /// minute while the service is modelled, goes into the profile.
    fn count_minute(&mut self, sec: u64, count: u64) {
        let minute = sec / PROFILE_SLOT_SECS;
        if minute != self.minute {
            if self.minute_count > 0 || (self.ensemble.is_some() && self.profile.is_some()) {
                self.profile
                    .get_or_insert_with(|| Box::new(DailyProfile::new()))
                    .record(self.minute, self.minute_count);
            }
            self.minute = minute;
            self.minute_count = 0;
        }
        self.minute_count += count;
    }

    /// The profile's rate for the second `sec` (0 without a profile).
    fn profile_rate(&self, sec: u64) -> f64 {
        self.profile.as_ref().map_or(0.0, |p| p.rate_at(sec))
    }
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
                ensemble: None,
                last_arrival_sec: None,
                panic: PanicSignal::new(config.burst),
                burst: BurstState::default(),
                next_sec: None,
                events: Vec::new(),
                profile: None,
                minute: 0,
                minute_count: 0,
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
        let forget = self.config.ensemble.idle_forget_secs();
        for ((id, _, windows), state) in predictor.services().zip(self.services.iter_mut()) {
            windows.sample_concurrency(now_ms);
            let oldest_held = current_sec.saturating_sub(held);
            let start = state.next_sec.unwrap_or(current_sec).max(oldest_held);
            for sec in start..current_sec {
                let count = predictor.second_count(id, now_ms, sec).unwrap_or(0);
                if count > 0 {
                    state.last_arrival_sec = Some(sec);
                }
                state.count_minute(sec, count);
                match &mut state.ensemble {
                    Some(ensemble) => ensemble.observe(sec, count as f64),
                    None if count > 0 => {
                        let mut ensemble = Box::new(Ensemble::new(self.config.ensemble.clone()));
                        ensemble.observe(sec, count as f64);
                        state.ensemble = Some(ensemble);
                    }
                    None => {}
                }
            }
            state.next_sec = Some(current_sec.max(start));
            let quiet = state
                .last_arrival_sec
                .is_none_or(|last| current_sec.saturating_sub(last) > forget);
            if quiet {
                state.ensemble = None;
                if state
                    .profile
                    .as_ref()
                    .is_some_and(|p| p.is_stale(current_sec))
                {
                    state.profile = None;
                }
            }
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

    /// The ensemble of a service (weights, scoreboard); `None` while it is idle.
    pub fn ensemble(&self, id: ServiceId) -> Option<&Ensemble> {
        self.state(id).and_then(|s| s.ensemble.as_deref())
    }

    /// Services holding an ensemble (an arrival within [`EnsembleConfig::idle_forget_secs`]).
    pub fn modelled(&self) -> usize {
        self.services
            .iter()
            .filter(|s| s.ensemble.is_some())
            .count()
    }

    /// The forecast `horizon_sec` after the last closed second (any horizon, e.g. the service's
    /// time-to-ready), with scheduled events applied; for an idle service, its daily profile's
    /// (events applied on top), and `None` where the profile has nothing and no event is
    /// active.
    pub fn forecast(&self, id: ServiceId, horizon_sec: u64) -> Option<HorizonForecast> {
        let state = self.state(id)?;
        match &state.ensemble {
            Some(ensemble) => Some(Self::with_events(state, ensemble.forecast_at(horizon_sec))),
            None => {
                let raw = self.idle_forecast(state, horizon_sec);
                let forecast = Self::with_events(state, raw);
                (forecast.event_active || raw.point > 0.0).then_some(forecast)
            }
        }
    }

    /// An idle service's forecast: its daily profile's rate at the target second (upper: the
    /// Poisson quantile at the ensemble's upper quantile), or none.
    fn idle_forecast(&self, state: &ServiceState, horizon_sec: u64) -> Forecast {
        let rate = state.profile_rate(Self::target_ms(state, horizon_sec) / 1_000);
        if rate <= 0.0 {
            return Forecast::none(horizon_sec);
        }
        Forecast {
            model: PROFILE,
            horizon_sec,
            point: rate,
            upper: poisson_quantile(rate, self.config.ensemble.score.upper_quantile).max(rate),
        }
    }

    /// The first second, from the service's next one, at which an idle service's forecast at
    /// some horizon up to `lookahead_secs` may come from its daily profile (the profile's next
    /// busy minute, `lookahead_secs` early), looking a day ahead; `None` if the profile has
    /// nothing in that day, or the service holds an ensemble (it is not idle).
    pub fn next_wake_sec(&self, id: ServiceId, lookahead_secs: u64) -> Option<u64> {
        let state = self.state(id)?;
        if state.ensemble.is_some() {
            return None;
        }
        let profile = state.profile.as_ref()?;
        let from = state.next_sec?;
        let busy = profile.next_busy(from, from.saturating_add(86_400 + lookahead_secs))?;
        Some(busy.saturating_sub(lookahead_secs).max(from))
    }

    /// The count the second `horizon_sec` after the last closed second stays at or below with
    /// probability `q` (see [`Ensemble::demand_at`]), with scheduled events applied; for an idle
    /// service, the Poisson quantile of its daily profile's rate (0 where it has none).
    pub fn demand(&self, id: ServiceId, horizon_sec: u64, q: f64) -> Option<f64> {
        let state = self.state(id)?;
        let demand = match &state.ensemble {
            Some(ensemble) => ensemble.demand_at(horizon_sec, q),
            None => poisson_quantile(
                state.profile_rate(Self::target_ms(state, horizon_sec) / 1_000),
                q,
            ),
        };
        Some(apply_events(
            &state.events,
            Self::target_ms(state, horizon_sec),
            demand,
        ))
    }

    /// The start (ms) of the second `horizon_sec` after the service's last closed one.
    fn target_ms(state: &ServiceState, horizon_sec: u64) -> u64 {
        state
            .next_sec
            .and_then(|next| next.checked_sub(1))
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
        let (ensemble, horizons) = match &state.ensemble {
            Some(ensemble) => {
                let ensemble = ensemble.snapshot();
                let horizons = ensemble
                    .horizons
                    .iter()
                    .map(|h| Self::with_events(state, h.ensemble))
                    .collect();
                (ensemble, horizons)
            }
            None => {
                let horizons = self
                    .config
                    .ensemble
                    .horizons
                    .iter()
                    .map(|&h| Self::with_events(state, self.idle_forecast(state, h)))
                    .collect();
                let empty = EnsembleSnapshot {
                    at_sec: None,
                    horizons: Vec::new(),
                };
                (empty, horizons)
            }
        };
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
            modelled: state.ensemble.is_some(),
        })
    }

    /// Whether the service's snapshot is its idle one: no ensemble, no scheduled event, no
    /// arrivals in the stable window, nothing in flight over it, and nothing in its daily
    /// profile within the longest horizon. Such a snapshot does not change from tick to tick,
    /// so a publisher may keep the one it built before.
    pub fn is_idle(&self, predictor: &Predictor, id: ServiceId, now_ms: u64) -> bool {
        let (Some(state), Some(windows)) = (self.state(id), predictor.service(id)) else {
            return false;
        };
        let longest = self
            .config
            .ensemble
            .horizons
            .iter()
            .copied()
            .max()
            .unwrap_or(0);
        state.ensemble.is_none()
            && state.events.is_empty()
            && state.profile.as_ref().is_none_or(|p| {
                let from = state.next_sec.unwrap_or(now_ms / 1_000);
                p.next_busy(from, from + longest + 1).is_none()
            })
            && !state.burst.panicking
            && state.burst.stable_rate == 0.0
            && state.burst.panic_rate == 0.0
            && windows.in_flight() == 0
            && windows.average_concurrency(now_ms, self.config.burst.stable_window_ms) == 0.0
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
        assert!(snap.modelled);
        let api = predictor.service_id("api").expect("api");
        assert_eq!(engine.forecast(api, 10), None, "no traffic, no forecast");
        let snapshots = engine.snapshots(&predictor, clock.now_ms());
        assert_eq!(snapshots.len(), 2);
        let idle = &snapshots[1];
        assert!(!idle.modelled && idle.ensemble.horizons.is_empty());
        assert_eq!(idle.horizons.len(), 4);
        assert!(idle
            .horizons
            .iter()
            .all(|h| h.point == 0.0 && h.upper == 0.0));
    }

    #[test]
    fn an_ensemble_exists_from_the_first_arrival_until_an_idle_hour() {
        let (predictor, mut engine, web) = setup();
        let api = predictor.service_id("api").expect("api");
        engine.tick(&predictor, 0);
        engine.tick(&predictor, 30_000);
        assert!(engine.ensemble(web).is_none() && engine.ensemble(api).is_none());
        assert_eq!(engine.modelled(), 0);
        predictor.record_arrival(web, None, 30_500);
        engine.tick(&predictor, 32_000);
        assert_eq!(
            engine.ensemble(web).and_then(Ensemble::last_observed),
            Some(31),
            "built at the first arrival and fed every second after it"
        );
        assert!(engine.forecast(web, 5).is_some());
        assert!(engine.demand(web, 5, 0.9).is_some_and(|d| d >= 0.0));
        assert_eq!(engine.modelled(), 1);
        // Quiet for just under the hour: kept (ticks catch up only on held seconds).
        let last = 30_000;
        engine.tick(&predictor, last + IDLE_FORGET_SECS * 1_000);
        assert!(engine.ensemble(web).is_some());
        engine.tick(&predictor, last + (IDLE_FORGET_SECS + 2) * 1_000);
        assert!(
            engine.ensemble(web).is_none(),
            "forgotten after an idle hour"
        );
        assert_eq!(engine.forecast(web, 5), None);
        assert_eq!(engine.demand(web, 5, 0.9), Some(0.0));
        // The next arrival starts a new, untrained ensemble.
        let back = last + (IDLE_FORGET_SECS + 10) * 1_000;
        predictor.record_arrival(web, None, back);
        engine.tick(&predictor, back + 1_000);
        assert_eq!(
            engine.ensemble(web).and_then(Ensemble::last_observed),
            Some(back / 1_000)
        );
    }

    #[test]
    fn an_idle_service_is_forecast_from_its_daily_profile_when_it_comes_back() {
        let (predictor, mut engine, web) = setup();
        let day = 86_400_000u64;
        let nine = 10 * day + 9 * 3_600_000;
        engine.tick(&predictor, nine - 5_000);
        // Day 10, 09:00:00–09:00:29: two arrivals a second; ticked through 09:01:05.
        let mut now = nine - 5_000;
        while now < nine + 65_000 {
            if (nine..nine + 30_000).contains(&now) {
                predictor.record_arrivals(web, 2, now + 100);
            }
            now += 1_000;
            engine.tick(&predictor, now);
        }
        assert!(engine.ensemble(web).is_some());
        // Two hours later the ensemble is gone; the profile stays.
        engine.tick(&predictor, nine + 2 * 3_600_000);
        assert!(engine.ensemble(web).is_none());
        // Day 11, 08:58:00: the forecast 150 s ahead (09:00:29) is the profile's 1/s.
        let before = nine + day - 120_000;
        engine.tick(&predictor, before);
        assert_eq!(engine.forecast(web, 60), None, "08:58:59: nothing");
        let ahead = engine.forecast(web, 150).expect("the profile's forecast");
        assert!((ahead.point - 1.0).abs() < 0.05, "{ahead:?}");
        assert!(ahead.upper >= 2.0 && !ahead.event_active, "{ahead:?}");
        assert_eq!(engine.demand(web, 150, 0.9), Some(2.0));
        assert_eq!(engine.demand(web, 60, 0.9), Some(0.0));
        // Wake-up: the busy minute, a lookahead early; idle until then (horizons ≤ 60 s).
        assert_eq!(
            engine.next_wake_sec(web, 120),
            Some((nine + day) / 1_000 - 120)
        );
        assert!(engine.is_idle(&predictor, web, before));
        engine.tick(&predictor, nine + day - 30_000);
        assert!(!engine.is_idle(&predictor, web, nine + day - 30_000));
        let snap = engine
            .snapshot(&predictor, web, nine + day - 30_000)
            .expect("snapshot");
        assert!(!snap.modelled && snap.horizons.iter().any(|h| h.point > 0.9));
        // The other service never had traffic: no profile, no wake.
        let api = predictor.service_id("api").expect("api");
        assert_eq!(engine.next_wake_sec(api, 120), None);
    }

    #[test]
    fn an_idle_service_forecasts_a_scheduled_event() {
        let (predictor, mut engine, _) = setup();
        let api = predictor.service_id("api").expect("api");
        engine.tick(&predictor, 0);
        engine.tick(&predictor, 100_000);
        engine
            .set_events(
                &predictor,
                [ScheduledEvent {
                    service: "api".to_string(),
                    start_ms: 120_000,
                    duration_ms: 60_000,
                    effect: EventEffect::AddRate(40.0),
                }],
            )
            .expect("events");
        assert_eq!(engine.forecast(api, 5), None, "before the event");
        let during = engine.forecast(api, 30).expect("the event's forecast");
        assert!(during.event_active);
        assert!((during.point - 40.0).abs() < 1e-9, "{during:?}");
        assert!(engine
            .demand(api, 30, 0.9)
            .is_some_and(|d| (d - 40.0).abs() < 1e-9));
        assert!(
            engine.ensemble(api).is_none(),
            "an event builds no ensemble"
        );
    }

    #[test]
    fn an_idle_snapshot_stays_the_same_until_traffic_or_an_event() {
        let (predictor, mut engine, web) = setup();
        engine.tick(&predictor, 0);
        engine.tick(&predictor, 10_000);
        assert!(engine.is_idle(&predictor, web, 10_000));
        let before = engine.snapshot(&predictor, web, 10_000).expect("snapshot");
        engine.tick(&predictor, 20_000);
        assert_eq!(engine.snapshot(&predictor, web, 20_000), Some(before));
        // A request in flight, then an arrival, make it live.
        predictor.request_started(web, 20_100);
        assert!(!engine.is_idle(&predictor, web, 20_200));
        predictor.request_finished(web, 20_100, 20_300);
        predictor.record_arrival(web, None, 20_400);
        engine.tick(&predictor, 21_000);
        assert!(!engine.is_idle(&predictor, web, 21_000));
        // An idle service with a scheduled event is not idle either.
        let api = predictor.service_id("api").expect("api");
        assert!(engine.is_idle(&predictor, api, 21_000));
        engine
            .set_events(
                &predictor,
                [ScheduledEvent {
                    service: "api".to_string(),
                    start_ms: 60_000,
                    duration_ms: 60_000,
                    effect: EventEffect::Multiply(2.0),
                }],
            )
            .expect("events");
        assert!(!engine.is_idle(&predictor, api, 21_000));
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
