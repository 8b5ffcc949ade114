//! The control loop's forecasting step: once a second, feed the predictor's closed seconds to the
//! forecast engine and publish a [`ForecastBoard`] for the admin API, metrics and scaling.
//!
//! ```text
//!  Arc<Predictor> (request path records) ──► ForecastLoop::tick(now) ──► ForecastEngine::tick
//!  policy events + EventBook (admin POST) ──► engine.set_events (when either changed)
//!                                                 │
//!                                                 └─► ArcSwap<ForecastBoard> (read by admin, metrics)
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ahash::AHashMap;
use arc_swap::ArcSwap;
use forecourt_config::{EventChange, EventConfig, ForecastConfig};
use forecourt_predictor::{
    EngineConfig, EnsembleConfig, EventEffect, ForecastEngine, Predictor, ScheduledEvent,
    ServiceForecast,
};

/// Most events the admin API keeps at once.
pub const MAX_POSTED_EVENTS: usize = 256;

/// Where a scheduled event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventSource {
    /// Declared in the policy file.
    Policy,
    /// Posted to the admin API.
    Api,
}

impl EventSource {
    /// Label for JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            EventSource::Policy => "policy",
            EventSource::Api => "api",
        }
    }
}

/// A scheduled event as the admin API lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventEntry {
    /// Where it came from.
    pub source: EventSource,
    /// The event itself.
    pub event: EventConfig,
}

impl EventEntry {
    /// Whether the event is over at `now_ms` (predictor clock = UNIX ms).
    pub fn has_ended(&self, now_ms: u64) -> bool {
        let end = self
            .event
            .start_unix_ms
            .saturating_add(u64::try_from(self.event.duration.as_millis()).unwrap_or(u64::MAX));
        end <= now_ms
    }

    fn scheduled(&self) -> ScheduledEvent {
        ScheduledEvent {
            service: self.event.service.clone(),
            start_ms: self.event.start_unix_ms,
            duration_ms: u64::try_from(self.event.duration.as_millis()).unwrap_or(u64::MAX),
            effect: match self.event.change {
                EventChange::Multiply(m) => EventEffect::Multiply(m),
                EventChange::AddRate(r) => EventEffect::AddRate(r),
            },
        }
    }
}

/// Why the admin API refused an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventBookError {
    /// Too many events are scheduled already.
    #[error("at most {MAX_POSTED_EVENTS} posted events may be scheduled at once")]
    Full,
}

/// Events posted through the admin API, shared between the admin task and the control loop.
/// Only those two touch it (never the request path), so a mutex is fine.
#[derive(Debug, Default)]
pub struct EventBook {
    events: Mutex<Vec<EventConfig>>,
    version: AtomicU64,
}

// === impl EventBook ===

impl EventBook {
    /// Adds an event; the next control-loop tick includes it in forecasts.
    pub fn post(&self, event: EventConfig, now_ms: u64) -> Result<(), EventBookError> {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        events.retain(|e| {
            !EventEntry {
                source: EventSource::Api,
                event: e.clone(),
            }
            .has_ended(now_ms)
        });
        if events.len() >= MAX_POSTED_EVENTS {
            return Err(EventBookError::Full);
        }
        events.push(event);
        self.version.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Removes every posted event named `name`; returns how many were removed.
    pub fn cancel(&self, name: &str) -> usize {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let before = events.len();
        events.retain(|e| e.name != name);
        let removed = before - events.len();
        if removed > 0 {
            self.version.fetch_add(1, Ordering::Release);
        }
        removed
    }

    /// Changes with every post or cancel.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// A copy of the posted events.
    pub fn events(&self) -> Vec<EventConfig> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What the control loop last published about every service's load.
#[derive(Debug, Clone, Default)]
pub struct ForecastBoard {
    /// When it was computed (predictor clock, UNIX ms in production).
    pub at_ms: u64,
    /// Seconds of history the engine has seen since it was (re)built.
    pub trained_seconds: u64,
    /// One entry per service, in policy order; an idle service's entry is shared from board to
    /// board until it sees traffic.
    pub services: Vec<Arc<ServiceForecast>>,
    /// Scheduled events not yet over.
    pub events: Vec<EventEntry>,
    /// Where each service's entry is in `services`, by name (shared while the services stay).
    index: Arc<AHashMap<String, usize>>,
}

impl ForecastBoard {
    /// The forecast of the service named `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceForecast> {
        match self.index.get(name) {
            Some(&i) => self.services.get(i).map(Arc::as_ref),
            // A board assembled by hand (tests) has no index.
            None if self.index.is_empty() => self
                .services
                .iter()
                .map(Arc::as_ref)
                .find(|s| s.service == name),
            None => None,
        }
    }
}

/// The forecasting step of the control loop: owns the engine, rebuilds it when the predictor or
/// the horizons change, and publishes a [`ForecastBoard`] after every tick.
pub struct ForecastLoop {
    predictor: Arc<Predictor>,
    horizons: Vec<u64>,
    engine: ForecastEngine,
    events_key: Option<(usize, u64)>,
    events: Vec<EventEntry>,
    started_ms: Option<u64>,
    board: Arc<ArcSwap<ForecastBoard>>,
    /// Whether [`Self::tick`] builds the board (off under replay, which has no reader of it).
    publish: bool,
    /// Each service's idle entry, built the first time it is idle and published while it stays
    /// so: 10,000 idle services cost a pointer each per tick, not three allocations.
    idle: Vec<Option<Arc<ServiceForecast>>>,
    /// The board's name index for the current services.
    index: Arc<AHashMap<String, usize>>,
}

impl std::fmt::Debug for ForecastLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForecastLoop")
            .field("services", &self.predictor.len())
            .field("horizons", &self.horizons)
            .finish_non_exhaustive()
    }
}

// === impl ForecastLoop ===

impl ForecastLoop {
    /// A loop over `predictor`'s services, publishing to `board`.
    pub fn new(
        predictor: Arc<Predictor>,
        config: &ForecastConfig,
        board: Arc<ArcSwap<ForecastBoard>>,
    ) -> Self {
        let engine = Self::engine(&predictor, &config.horizons);
        Self {
            predictor,
            horizons: config.horizons.clone(),
            engine,
            events_key: None,
            events: Vec::new(),
            started_ms: None,
            board,
            publish: true,
            idle: Vec::new(),
            index: Arc::default(),
        }
    }

    fn engine(predictor: &Predictor, horizons: &[u64]) -> ForecastEngine {
        let config = EngineConfig {
            ensemble: EnsembleConfig {
                horizons: horizons.to_vec(),
                ..EnsembleConfig::default()
            },
            ..EngineConfig::default()
        };
        ForecastEngine::new(predictor, config)
    }

    /// Stops building the board at every tick: for the replay simulator, where nothing reads it
    /// (every model's snapshot at every horizon, rebuilt each second). Forecasts are unchanged.
    pub fn without_board(mut self) -> Self {
        self.publish = false;
        self
    }

    /// The engine, for forecasts at other horizons (e.g. a service's time-to-ready).
    pub fn engine_ref(&self) -> &ForecastEngine {
        &self.engine
    }

    /// The predictor the engine reads.
    pub fn predictor(&self) -> &Arc<Predictor> {
        &self.predictor
    }

    /// One tick: follow a new predictor or horizons (after a reload), refresh events, feed closed
    /// seconds, publish. `now_ms` is the predictor clock (UNIX ms in production).
    pub fn tick(
        &mut self,
        predictor: &Arc<Predictor>,
        config: &ForecastConfig,
        book: &EventBook,
        now_ms: u64,
    ) {
        if !Arc::ptr_eq(predictor, &self.predictor) || config.horizons != self.horizons {
            self.predictor = Arc::clone(predictor);
            self.horizons = config.horizons.clone();
            self.engine = Self::engine(predictor, &config.horizons);
            self.events_key = None;
            self.started_ms = None;
            self.idle.clear();
            self.index = Arc::default();
        }
        let started = *self.started_ms.get_or_insert(now_ms);
        let key = (config.events.as_ptr() as usize, book.version());
        let expired = self.events.iter().any(|e| e.has_ended(now_ms));
        if self.events_key != Some(key) || expired {
            self.refresh_events(config, book, now_ms);
            self.events_key = Some(key);
        }
        self.engine.tick(&self.predictor, now_ms);
        if !self.publish {
            return;
        }
        let services = self.entries(now_ms);
        if self.index.len() != services.len() {
            let index = services
                .iter()
                .enumerate()
                .map(|(i, s)| (s.service.clone(), i))
                .collect();
            self.index = Arc::new(index);
        }
        self.board.store(Arc::new(ForecastBoard {
            at_ms: now_ms,
            trained_seconds: now_ms.saturating_sub(started) / 1_000,
            services,
            events: self.events.clone(),
            index: Arc::clone(&self.index),
        }));
    }

    /// Every service's board entry: a fresh snapshot for a live service, the kept one for an
    /// idle service.
    fn entries(&mut self, now_ms: u64) -> Vec<Arc<ServiceForecast>> {
        self.idle.resize(self.predictor.len(), None);
        let mut entries = Vec::with_capacity(self.predictor.len());
        for (id, _, _) in self.predictor.services() {
            let slot = &mut self.idle[id.index()];
            if !self.engine.is_idle(&self.predictor, id, now_ms) {
                *slot = None;
                if let Some(s) = self.engine.snapshot(&self.predictor, id, now_ms) {
                    entries.push(Arc::new(s));
                }
                continue;
            }
            if slot.is_none() {
                *slot = self
                    .engine
                    .snapshot(&self.predictor, id, now_ms)
                    .map(Arc::new);
            }
            if let Some(entry) = slot {
                entries.push(Arc::clone(entry));
            }
        }
        entries
    }

    fn refresh_events(&mut self, config: &ForecastConfig, book: &EventBook, now_ms: u64) {
        let policy = config.events.iter().map(|event| EventEntry {
            source: EventSource::Policy,
            event: event.clone(),
        });
        let posted = book.events().into_iter().map(|event| EventEntry {
            source: EventSource::Api,
            event,
        });
        let mut entries: Vec<EventEntry> = policy
            .chain(posted)
            .filter(|e| !e.has_ended(now_ms))
            .filter(|e| self.predictor.service_id(&e.event.service).is_some())
            .collect();
        entries.sort_by_key(|e| e.event.start_unix_ms);
        // Every event names a known service (filtered above), so this cannot fail.
        if let Err(error) = self
            .engine
            .set_events(&self.predictor, entries.iter().map(EventEntry::scheduled))
        {
            tracing::warn!(%error, "scheduled events not applied");
        }
        self.events = entries;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use forecourt_predictor::{Clock, ManualClock, PredictorConfig};

    use super::*;

    fn setup() -> (Arc<Predictor>, ForecastLoop, Arc<ArcSwap<ForecastBoard>>) {
        let predictor = Arc::new(
            Predictor::new(["shop", "api"], PredictorConfig::default()).expect("predictor"),
        );
        let board = Arc::new(ArcSwap::from_pointee(ForecastBoard::default()));
        let forecasts = ForecastLoop::new(
            Arc::clone(&predictor),
            &ForecastConfig::default(),
            Arc::clone(&board),
        );
        (predictor, forecasts, board)
    }

    fn event(name: &str, service: &str, start_ms: u64, seconds: u64) -> EventConfig {
        EventConfig {
            name: name.to_owned(),
            service: service.to_owned(),
            start_unix_ms: start_ms,
            duration: Duration::from_secs(seconds),
            change: EventChange::Multiply(4.0),
        }
    }

    #[test]
    fn publishes_rates_and_forecasts_every_tick() {
        let (predictor, mut forecasts, board) = setup();
        let shop = predictor.service_id("shop").expect("shop");
        let clock = ManualClock::new(1_000_000);
        let config = ForecastConfig::default();
        let book = EventBook::default();
        for _ in 0..120 {
            for i in 0..10 {
                predictor.record_arrival(shop, Some("acme"), clock.now_ms() + i * 50);
            }
            clock.advance_ms(1_000);
            forecasts.tick(&predictor, &config, &book, clock.now_ms());
        }
        let board = board.load();
        assert_eq!(board.at_ms, clock.now_ms());
        assert_eq!(board.trained_seconds, 119);
        let shop = board.service("shop").expect("shop");
        assert!((shop.stable_rate - 10.0).abs() < 0.5, "{shop:?}");
        let at_10 = shop.horizons.iter().find(|h| h.horizon_sec == 10);
        assert!(
            at_10.is_some_and(|h| (h.point - 10.0).abs() < 1.0),
            "{at_10:?}"
        );
        assert_eq!(board.service("api").map(|s| s.stable_rate), Some(0.0));
    }

    #[test]
    fn an_idle_services_entry_is_shared_from_board_to_board_until_it_sees_traffic() {
        let (predictor, mut forecasts, board) = setup();
        let shop = predictor.service_id("shop").expect("shop");
        let clock = ManualClock::new(1_000_000);
        let config = ForecastConfig::default();
        let book = EventBook::default();
        forecasts.tick(&predictor, &config, &book, clock.now_ms());
        let first = board.load_full();
        clock.advance_ms(1_000);
        predictor.record_arrival(shop, None, clock.now_ms());
        clock.advance_ms(1_000);
        forecasts.tick(&predictor, &config, &book, clock.now_ms());
        let second = board.load_full();
        assert!(Arc::ptr_eq(&first.services[1], &second.services[1]), "api");
        assert!(
            !Arc::ptr_eq(&first.services[0], &second.services[0]),
            "shop"
        );
        assert!(second.service("shop").is_some_and(|s| s.modelled));
        assert_eq!(second.service("api").map(|s| s.modelled), Some(false));
        assert!(second.service("nope").is_none());
        clock.advance_ms(1_000);
        forecasts.tick(&predictor, &config, &book, clock.now_ms());
        let third = board.load_full();
        assert!(!Arc::ptr_eq(&second.services[0], &third.services[0]));
        assert!(Arc::ptr_eq(&first.services[1], &third.services[1]));
    }

    #[test]
    fn posted_and_policy_events_shape_the_forecast_until_they_end() {
        let (predictor, mut forecasts, board) = setup();
        let shop = predictor.service_id("shop").expect("shop");
        let clock = ManualClock::new(1_000_000);
        let book = EventBook::default();
        let mut config = ForecastConfig::default();
        config.events.push(event("launch", "shop", 1_200_000, 60));
        for _ in 0..150 {
            for _ in 0..10 {
                predictor.record_arrival(shop, None, clock.now_ms());
            }
            clock.advance_ms(1_000);
            forecasts.tick(&predictor, &config, &book, clock.now_ms());
        }
        // 30 s ahead is inside the policy event (starts at 1 200 s): 4× the level.
        let now = clock.now_ms();
        let snapshot = board.load();
        let at_60 = snapshot.services[0]
            .horizons
            .iter()
            .find(|h| h.horizon_sec == 60)
            .copied()
            .expect("60 s");
        assert!(at_60.event_active && at_60.point > 30.0, "{at_60:?}");
        // A posted event for api is listed after the next tick, with its source.
        book.post(event("batch", "api", now + 5_000, 10), now)
            .expect("posted");
        clock.advance_ms(1_000);
        forecasts.tick(&predictor, &config, &book, clock.now_ms());
        let sources: Vec<_> = board
            .load()
            .events
            .iter()
            .map(|e| (e.event.name.clone(), e.source))
            .collect();
        assert_eq!(
            sources,
            [
                ("batch".to_owned(), EventSource::Api),
                ("launch".to_owned(), EventSource::Policy)
            ]
        );
        // Ended events drop off the board.
        clock.advance_ms(20_000);
        forecasts.tick(&predictor, &config, &book, clock.now_ms());
        assert_eq!(board.load().events.len(), 1);
        assert_eq!(book.cancel("batch"), 1);
    }

    #[test]
    fn a_new_predictor_rebuilds_the_engine() {
        let (_, mut forecasts, board) = setup();
        let other =
            Arc::new(Predictor::new(["cart"], PredictorConfig::default()).expect("predictor"));
        forecasts.tick(
            &other,
            &ForecastConfig::default(),
            &EventBook::default(),
            5_000,
        );
        assert!(Arc::ptr_eq(forecasts.predictor(), &other));
        let names: Vec<_> = board
            .load()
            .services
            .iter()
            .map(|s| s.service.clone())
            .collect();
        assert_eq!(names, ["cart"]);
    }

    #[test]
    fn the_book_is_bounded() {
        let book = EventBook::default();
        for i in 0..MAX_POSTED_EVENTS {
            book.post(event(&format!("e{i}"), "shop", 10_000, 60), 0)
                .expect("room");
        }
        assert_eq!(
            book.post(event("one-more", "shop", 10_000, 60), 0),
            Err(EventBookError::Full)
        );
        // Once they are over they make room.
        assert!(book
            .post(event("later", "shop", 200_000, 60), 100_000)
            .is_ok());
        assert_eq!(book.events().len(), 1);
    }
}
