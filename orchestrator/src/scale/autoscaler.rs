//! The control loop's scaling step: once a tick (and at once when a request is held), turn each
//! scaled service's live windows and forecast into a replica count and order it.
//!
//! ```text
//!  Predictor windows ─► stable/panic rate, concurrency ─┐
//!  ForecastEngine ─► forecast at the horizon ───────────┤
//!  (horizon = measured time-to-ready + margin)          ├─► decide() ─► Orchestrator::set_replicas
//!  upstream surges × fan-out ─► dependency demand ──────┤      │
//!  held requests, ready instances ──────────────────────┘      └─► ScalingBoard (admin, metrics)
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ahash::{AHashMap, AHashSet};
use arc_swap::ArcSwap;
use forecourt_config::{Capacity, ScalingConfig, ServiceConfig, DEFAULT_VERSION};
use forecourt_predictor::{ForecastEngine, Predictor, ServiceId};

use crate::backend::{Orchestrator, OrchestratorError};
use crate::scale::decide::{
    decide, dependency_demand, millis, Decision, ForecastAtHorizon, Reason, ScalingInputs,
    ScalingState, ServiceLoad, TimeToReady,
};
use crate::scale::headroom::{HeadroomController, HeadroomState};

/// One service as the scaling step sees it at a tick.
#[derive(Debug, Clone, Copy)]
pub struct ServiceView<'a> {
    /// Its settings (scaled when `config.scaling` is set).
    pub config: &'a ServiceConfig,
    /// Its unflagged instances confirmed ready.
    pub ready: u32,
    /// Requests held now waiting for a ready instance.
    pub held: u32,
    /// Mean request latency in seconds (0 when unknown).
    pub mean_latency_secs: f64,
    /// Requests that have waited for capacity since the host started (cumulative).
    pub waited: u64,
    /// The load the other Forecourt replicas see (zero with one replica).
    pub peers: PeerLoad,
    /// Whether this replica may order capacity for the service (on Kubernetes, only the leader).
    pub may_order: bool,
}

/// The sum of the other Forecourt replicas' live load on one service, from their published
/// windows: the leader adds it to its own before deciding.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PeerLoad {
    /// Requests per second over the stable window.
    pub stable_rate: f64,
    /// Requests per second over the panic window.
    pub panic_rate: f64,
    /// Mean requests in flight over the stable window.
    pub stable_concurrency: f64,
    /// Mean requests in flight over the panic window.
    pub panic_concurrency: f64,
    /// Their forecasts at the horizon, summed, when any has one.
    pub forecast: Option<ForecastAtHorizon>,
    /// Requests they hold.
    pub held: u32,
}

impl PeerLoad {
    /// Every service's windows summed over `peers`, by service name (one pass over them all,
    /// not one per service).
    pub fn by_service(
        peers: &[crate::kubernetes::leader::ReplicaWindows],
    ) -> AHashMap<&str, PeerLoad> {
        let mut loads: AHashMap<&str, PeerLoad> = AHashMap::new();
        for window in peers.iter().flat_map(|p| p.services.iter()) {
            let load = loads.entry(window.service.as_str()).or_default();
            load.stable_rate += window.stable_rate;
            load.panic_rate += window.panic_rate;
            load.stable_concurrency += window.stable_concurrency;
            load.panic_concurrency += window.panic_concurrency;
            load.held = load.held.saturating_add(window.held);
            if let (Some(point), Some(upper)) = (window.forecast_point, window.forecast_upper) {
                let sum = load.forecast.get_or_insert(ForecastAtHorizon::default());
                sum.point += point;
                sum.upper += upper;
                // Quantiles do not add; their sum is on the safe side. A peer of an older
                // version publishes no demand: its p90 bound stands in.
                sum.demand += window.forecast_demand.unwrap_or(upper);
            }
        }
        loads
    }
}

/// The last decision for one service, for the admin API, metrics and the demo.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceScaling {
    /// Service name.
    pub service: String,
    /// Replicas ordered from the orchestrator.
    pub ordered: u32,
    /// Replicas confirmed ready.
    pub ready: u32,
    /// Replicas the policy wants.
    pub desired: u32,
    /// Why.
    pub reason: Reason,
    /// Forecast horizon used (seconds): measured time-to-ready plus margin, or fixed.
    pub horizon_secs: u64,
    /// Measured time from order to confirmed ready (90th percentile), once measured.
    pub time_to_ready_ms: Option<u64>,
    /// Forecast upper bound plus dependency demand at the horizon, req/s.
    pub predicted_load: f64,
    /// Capacity of the replicas ordered, in the capacity's unit.
    pub capacity: f64,
    /// The capacity's unit: `requests_per_second` or `concurrency`.
    pub capacity_kind: &'static str,
    /// Predicted load over current capacity.
    pub predicted_utilization: Option<f64>,
    /// The demand quantile provisioned for (newsvendor, moved by the headroom controller).
    pub demand_quantile: f64,
    /// The adaptive headroom controller's state, when the service declares an `slo`.
    pub headroom: Option<HeadroomState>,
    /// Whether the panic window runs far above what the ready replicas can take.
    pub panicking: bool,
    /// The last ordering error, if the orchestrator refused.
    pub error: Option<String>,
}

/// Every scaled service's last decision.
#[derive(Debug, Clone, Default)]
pub struct ScalingBoard {
    /// One entry per scaled service, in policy order.
    pub services: Vec<ServiceScaling>,
}

impl ScalingBoard {
    /// The entry of the service named `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceScaling> {
        self.services.iter().find(|s| s.service == name)
    }
}

/// Decisions counted by reason, for `/metrics` (only decisions that changed the count).
#[derive(Debug, Default)]
pub struct DecisionCounters {
    counts: std::sync::Mutex<AHashMap<(String, &'static str), u64>>,
    /// Orders the orchestrator refused.
    pub failed_orders: AtomicU64,
}

impl DecisionCounters {
    fn count(&self, service: &str, reason: Reason) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts
            .entry((service.to_owned(), reason.as_str()))
            .or_insert(0) += 1;
    }

    /// Every (service, reason) count, sorted.
    pub fn snapshot(&self) -> Vec<(String, &'static str, u64)> {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<_> = counts
            .iter()
            .map(|((service, reason), n)| (service.clone(), *reason, *n))
            .collect();
        rows.sort();
        rows
    }
}

/// One service's scaling memory and the single place its inputs are assembled: the production
/// control loop and the trace-replay simulator both decide through it.
#[derive(Debug, Default)]
pub struct ServiceScaler {
    state: ScalingState,
    time_to_ready: TimeToReady,
    last_ready: u32,
    last_arrival_ms: Option<u64>,
    local: crate::kubernetes::leader::ServiceWindows,
    headroom: Option<HeadroomController>,
    /// The next second whose arrivals the headroom controller has not counted.
    next_counted_sec: Option<u64>,
    /// Whether the last decision was a fixed point of no traffic (see [`Self::at_rest`]).
    at_rest: bool,
}

/// What the scaler needs to know about one service at a tick, besides its windows and forecast.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServiceNow {
    /// Replicas ordered.
    pub ordered: u32,
    /// Replicas confirmed ready.
    pub ready: u32,
    /// Requests held waiting for a ready instance.
    pub held: u32,
    /// Mean request latency in seconds (0 when unknown).
    pub mean_latency_secs: f64,
    /// Requests that have waited for capacity since the host started (cumulative).
    pub waited: u64,
    /// Extra req/s pushed by upstream services.
    pub dependency_demand: f64,
    /// The other Forecourt replicas' load.
    pub peers: PeerLoad,
}

// === impl ServiceScaler ===

impl ServiceScaler {
    /// The forecast at this service's horizon (measured time-to-ready + margin, or fixed) and
    /// the demand to provision for: the highest demand quantile over the seconds from now to
    /// the horizon (1 s, every configured horizon below it, and the horizon itself); `None`
    /// for a reactive policy or while the predictor knows nothing.
    pub fn forecast(
        &self,
        scaling: &ScalingConfig,
        engine: &ForecastEngine,
        id: ServiceId,
        mean_latency_secs: f64,
    ) -> Option<ForecastAtHorizon> {
        if !scaling.predictive {
            return None;
        }
        let horizon = self.time_to_ready.horizon_secs(&scaling.horizon).max(1);
        let at = engine.forecast(id, horizon)?;
        let q = self.demand_quantile(scaling, mean_latency_secs);
        let configured = &engine.config().ensemble.horizons;
        let demand = std::iter::once(1)
            .chain(configured.iter().copied().filter(|&h| h > 1 && h < horizon))
            .chain(std::iter::once(horizon))
            .filter_map(|h| engine.demand(id, h, q))
            .fold(0.0, f64::max);
        Some(ForecastAtHorizon {
            point: at.point,
            upper: at.upper,
            demand,
        })
    }

    /// The demand quantile this service provisions for: the newsvendor quantile of its
    /// `waiting_cost` and what one replica serves (concurrency over latency for a concurrency
    /// capacity; the lowest quantile while no latency is known), moved by the headroom
    /// controller when the service declares an `slo`.
    pub fn demand_quantile(&self, scaling: &ScalingConfig, mean_latency_secs: f64) -> f64 {
        let per_replica = match scaling.capacity {
            Capacity::RequestsPerSecond(rps) => rps,
            Capacity::Concurrency(c) if mean_latency_secs > 0.0 => c / mean_latency_secs,
            Capacity::Concurrency(_) => 0.0,
        };
        let base = scaling.demand_quantile(per_replica);
        self.headroom.as_ref().map_or(base, |h| h.quantile(base))
    }

    /// The headroom controller's state, when the service declares an `slo`.
    pub fn headroom(&self) -> Option<HeadroomState> {
        self.headroom.as_ref().map(HeadroomController::state)
    }

    /// Feeds the headroom controller the seconds closed since the last tick and the service's
    /// cumulative waiting; starts, replaces or drops it when the policy's `slo` changes.
    fn observe_waiting(
        &mut self,
        scaling: &ScalingConfig,
        predictor: &Predictor,
        id: ServiceId,
        waited: u64,
        now_ms: u64,
    ) {
        let Some(slo) = scaling.slo else {
            self.headroom = None;
            return;
        };
        if self
            .headroom
            .as_ref()
            .is_none_or(|h| h.slo_percent() != slo.waiting_percent)
        {
            self.headroom = Some(HeadroomController::new(slo.waiting_percent));
        }
        let current_sec = now_ms / 1_000;
        let from = self.next_counted_sec.unwrap_or(current_sec);
        // The windows hold a bounded past: a long pause counts only what they still hold.
        let from = from.max(current_sec.saturating_sub(predictor.held_seconds()));
        let arrived: u64 = (from..current_sec)
            .map(|sec| predictor.second_count(id, now_ms, sec).unwrap_or(0))
            .sum();
        self.next_counted_sec = Some(current_sec.max(from));
        if let Some(headroom) = &mut self.headroom {
            headroom.observe(now_ms, arrived, waited);
        }
    }

    /// The forecast horizon in seconds.
    pub fn horizon_secs(&self, scaling: &ScalingConfig) -> u64 {
        self.time_to_ready.horizon_secs(&scaling.horizon)
    }

    /// Measured order-to-ready time (90th percentile), once measured.
    pub fn time_to_ready(&self) -> Option<std::time::Duration> {
        self.time_to_ready.estimate()
    }

    /// Decides the replica count from the live windows, the forecast and `now`.
    pub fn decide(
        &mut self,
        scaling: &ScalingConfig,
        predictor: &Predictor,
        id: ServiceId,
        forecast: Option<ForecastAtHorizon>,
        service: ServiceNow,
        now_ms: u64,
    ) -> Decision {
        self.observe_waiting(scaling, predictor, id, service.waited, now_ms);
        if service.ready > self.last_ready {
            self.time_to_ready
                .became_ready(now_ms, service.ready - self.last_ready);
        }
        self.last_ready = service.ready;
        if arrived_recently(predictor, id, now_ms) || service.held > 0 {
            self.last_arrival_ms = Some(now_ms);
        }
        let stable_ms = millis(scaling.stable_window);
        let panic_ms = millis(scaling.panic.window);
        let windows = predictor.service(id);
        let rate = |span| windows.map_or(0.0, |w| w.arrival_rate(now_ms, span));
        let concurrency = |span| windows.map_or(0.0, |w| w.average_concurrency(now_ms, span));
        self.local = crate::kubernetes::leader::ServiceWindows {
            service: String::new(),
            stable_rate: rate(stable_ms),
            panic_rate: rate(panic_ms),
            stable_concurrency: concurrency(stable_ms),
            panic_concurrency: concurrency(panic_ms),
            forecast_point: forecast.map(|f| f.point),
            forecast_upper: forecast.map(|f| f.upper),
            forecast_demand: forecast.map(|f| f.demand),
            held: service.held,
            flagged: Vec::new(),
        };
        let peers = service.peers;
        if peers.stable_rate > 0.0 || peers.held > 0 {
            self.last_arrival_ms = Some(now_ms);
        }
        let forecast = match (forecast, peers.forecast) {
            (Some(own), Some(theirs)) => Some(ForecastAtHorizon {
                point: own.point + theirs.point,
                upper: own.upper + theirs.upper,
                demand: own.demand + theirs.demand,
            }),
            (own, theirs) => own.or(theirs),
        };
        let inputs = ScalingInputs {
            now_ms,
            current: service.ordered,
            ready: service.ready,
            stable_rate: self.local.stable_rate + peers.stable_rate,
            panic_rate: self.local.panic_rate + peers.panic_rate,
            stable_concurrency: self.local.stable_concurrency + peers.stable_concurrency,
            panic_concurrency: self.local.panic_concurrency + peers.panic_concurrency,
            mean_latency_secs: service.mean_latency_secs,
            forecast,
            dependency_demand: if scaling.predictive {
                service.dependency_demand
            } else {
                0.0
            },
            held_requests: service.held.saturating_add(peers.held),
            last_arrival_ms: self.last_arrival_ms,
            horizon_secs: self.horizon_secs(scaling) as f64,
        };
        let decision = decide(scaling, &mut self.state, &inputs);
        self.at_rest = scaling.slo.is_none()
            && decision.desired == service.ordered
            && decision.desired == scaling.min_replicas
            && !decision.panicking
            && decision.predictive.is_none_or(|p| p == 0)
            && decision.demand == 0.0
            && inputs.held_requests == 0
            && inputs.stable_rate == 0.0
            && inputs.panic_rate == 0.0
            && inputs.stable_concurrency == 0.0
            && inputs.panic_concurrency == 0.0
            && inputs.dependency_demand == 0.0;
        decision
    }

    /// Whether the last decision was at rest: no traffic, nothing forecast, held or pushed
    /// from upstream, no panic, no headroom controller, and the replicas ordered already at
    /// `min_replicas`. Ticks with no traffic then decide the same until something arrives or is
    /// forecast: the replay simulator skips them.
    pub fn at_rest(&self) -> bool {
        self.at_rest
    }

    /// Records that `decision` was ordered (time-to-ready is measured from here).
    pub fn ordered(&mut self, decision: &Decision, now_ms: u64) {
        if decision.desired > decision.current {
            self.time_to_ready
                .ordered(now_ms, decision.desired - decision.current);
        } else {
            self.time_to_ready
                .cancelled(decision.current - decision.desired);
        }
    }
}

/// The scaling step: remembers each service's scaling state and orders replicas.
pub struct Autoscaler {
    orchestrator: Arc<dyn Orchestrator>,
    memory: AHashMap<String, ServiceScaler>,
    board: Arc<ArcSwap<ScalingBoard>>,
    /// Whether each tick publishes `board` (not in replay: nothing reads it there).
    publish: bool,
    counters: Arc<DecisionCounters>,
}

impl std::fmt::Debug for Autoscaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Autoscaler")
            .field("orchestrator", &self.orchestrator.kind())
            .field("services", &self.memory.len())
            .finish_non_exhaustive()
    }
}

// === impl Autoscaler ===

impl Autoscaler {
    /// A scaling step ordering through `orchestrator`, publishing to `board`.
    pub fn new(
        orchestrator: Arc<dyn Orchestrator>,
        board: Arc<ArcSwap<ScalingBoard>>,
        counters: Arc<DecisionCounters>,
    ) -> Self {
        Self {
            orchestrator,
            memory: AHashMap::new(),
            board,
            publish: true,
            counters,
        }
    }

    /// Stops publishing the scaling board, for a host with no admin API to read it (replay):
    /// decisions never read it, so they are the same; a tick does less (building and storing
    /// a board was 7 % of a replay's time).
    pub fn without_board(mut self) -> Self {
        self.publish = false;
        self
    }

    /// One pass over every service: decide, order what changed, publish.
    pub async fn tick(
        &mut self,
        services: &[ServiceView<'_>],
        predictor: &Predictor,
        engine: &ForecastEngine,
        now_ms: u64,
    ) {
        // Forget services the policy no longer has (a set: a scan per entry is quadratic, and
        // at ten thousand services it was most of an idle proxy's CPU).
        let names: AHashSet<&str> = services.iter().map(|s| s.config.name.as_str()).collect();
        self.memory.retain(|name, _| names.contains(name.as_str()));
        // The forecast each service's own horizon sees, before dependencies.
        let mut forecasts = Vec::with_capacity(services.len());
        for view in services {
            let forecast = view.config.scaling.as_ref().and_then(|scaling| {
                let id = predictor.service_id(&view.config.name)?;
                let memory = scaler(&mut self.memory, &view.config.name);
                memory.forecast(scaling, engine, id, view.mean_latency_secs)
            });
            forecasts.push(forecast);
        }
        let loads: Vec<ServiceLoad<'_>> = services
            .iter()
            .zip(&forecasts)
            .map(|(view, forecast)| ServiceLoad {
                name: &view.config.name,
                dependencies: &view.config.dependencies,
                forecast: forecast.map(|f| f.point),
                // Only a surge passed on along a dependency reads it: skip the window sum
                // for the (many) services without dependencies.
                current_rate: if view.config.dependencies.is_empty() {
                    0.0
                } else {
                    rate(predictor, &view.config.name, now_ms, 60_000)
                },
            })
            .collect();
        let demand = dependency_demand(&loads);

        let mut board = Vec::new();
        for ((view, forecast), extra) in services.iter().zip(forecasts).zip(demand) {
            let Some(scaling) = view.config.scaling.as_ref() else {
                continue;
            };
            let name = view.config.name.as_str();
            let Some(id) = predictor.service_id(name) else {
                continue;
            };
            // Never decide from a count the backend has not read yet (a new Kubernetes leader).
            if !self.orchestrator.replicas_known(name, DEFAULT_VERSION) {
                continue;
            }
            let memory = scaler(&mut self.memory, name);
            let ready = view.ready;
            let now = ServiceNow {
                ordered: self.orchestrator.replicas(name, DEFAULT_VERSION),
                ready,
                held: view.held,
                mean_latency_secs: view.mean_latency_secs,
                waited: view.waited,
                dependency_demand: extra,
                peers: view.peers,
            };
            let decision = memory.decide(scaling, predictor, id, forecast, now, now_ms);
            let mut error = None;
            if decision.changed() && view.may_order {
                error = order(
                    self.orchestrator.as_ref(),
                    &self.counters,
                    name,
                    &decision,
                    memory,
                    now_ms,
                )
                .await;
            }
            if !self.publish {
                continue;
            }
            board.push(ServiceScaling {
                service: name.to_owned(),
                ordered: self.orchestrator.replicas(name, DEFAULT_VERSION),
                ready,
                desired: decision.desired,
                reason: decision.reason,
                horizon_secs: memory.horizon_secs(scaling),
                time_to_ready_ms: memory.time_to_ready().map(millis),
                predicted_load: decision.demand,
                capacity: f64::from(decision.current.max(decision.desired))
                    * scaling.capacity.per_replica(),
                capacity_kind: match scaling.capacity {
                    Capacity::RequestsPerSecond(_) => "requests_per_second",
                    Capacity::Concurrency(_) => "concurrency",
                },
                predicted_utilization: decision.predicted_utilization,
                demand_quantile: memory.demand_quantile(scaling, view.mean_latency_secs),
                headroom: memory.headroom(),
                panicking: decision.panicking,
                error,
            });
        }
        if self.publish {
            self.board.store(Arc::new(ScalingBoard { services: board }));
        }
    }

    /// The headroom controller's state for `service`, when it declares an `slo`.
    pub fn headroom(&self, service: &str) -> Option<HeadroomState> {
        self.memory.get(service)?.headroom()
    }

    /// Whether `service`'s last decision was at rest (see [`ServiceScaler::at_rest`]).
    pub fn at_rest(&self, service: &str) -> bool {
        self.memory.get(service).is_some_and(ServiceScaler::at_rest)
    }

    /// The upper forecast at the horizon that the last tick used for `service`, if it forecasts.
    pub fn last_forecast(&self, service: &str) -> Option<f64> {
        self.memory.get(service)?.local.forecast_upper
    }

    /// This replica's own load per scaled service at the last tick, as published for the leader.
    pub fn local_windows(&self) -> Vec<crate::kubernetes::leader::ServiceWindows> {
        let mut windows: Vec<_> = self
            .memory
            .iter()
            .map(|(name, memory)| crate::kubernetes::leader::ServiceWindows {
                service: name.clone(),
                ..memory.local.clone()
            })
            .collect();
        windows.sort_by(|a, b| a.service.cmp(&b.service));
        windows
    }
}

/// Orders a decision's replica count; returns the orchestrator's refusal, if any.
async fn order(
    orchestrator: &dyn Orchestrator,
    counters: &DecisionCounters,
    name: &str,
    decision: &Decision,
    memory: &mut ServiceScaler,
    now_ms: u64,
) -> Option<String> {
    tracing::info!(
        service = name,
        from = decision.current,
        to = decision.desired,
        reason = %decision.reason,
        demand = format_args!("{:.1}", decision.demand),
        ready = memory.last_ready,
        "scaling"
    );
    counters.count(name, decision.reason);
    match orchestrator
        .set_replicas(name, DEFAULT_VERSION, decision.desired)
        .await
    {
        Ok(()) => {
            memory.ordered(decision, now_ms);
            None
        }
        Err(error @ OrchestratorError::ScaleDownHeld { .. }) => {
            // Held on purpose (logged once by the backend); asked again next tick.
            tracing::debug!(service = name, %error, "scale-down held");
            Some(error.to_string())
        }
        Err(error) => {
            counters.failed_orders.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(service = name, %error, "the orchestrator refused the order");
            Some(error.to_string())
        }
    }
}

/// Arrivals per second of a service over the last `span_ms`.
fn rate(predictor: &Predictor, name: &str, now_ms: u64, span_ms: u64) -> f64 {
    predictor
        .service_id(name)
        .and_then(|id| predictor.service(id))
        .map_or(0.0, |w| w.arrival_rate(now_ms, span_ms))
}

/// Whether the service saw a request in the last two seconds.
fn arrived_recently(predictor: &Predictor, id: ServiceId, now_ms: u64) -> bool {
    predictor
        .service(id)
        .is_some_and(|w| w.arrivals().sum(now_ms, 2_000) > 0)
}

/// The scaler kept for `service`, made on first use (without cloning its name on every tick).
fn scaler<'a>(
    memory: &'a mut AHashMap<String, ServiceScaler>,
    service: &str,
) -> &'a mut ServiceScaler {
    if !memory.contains_key(service) {
        memory.insert(service.to_owned(), ServiceScaler::default());
    }
    memory
        .get_mut(service)
        .unwrap_or_else(|| unreachable!("inserted above"))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Mutex;

    use crate::fleet::ServiceInstances;

    use async_trait::async_trait;
    use forecourt_config::Policy;
    use forecourt_predictor::{EngineConfig, PredictorConfig};
    use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

    use super::*;
    use crate::backend::Update;

    /// An in-memory orchestrator that records every order.
    #[derive(Default)]
    struct Recorder {
        orders: Mutex<Vec<(String, u32)>>,
    }

    #[async_trait]
    impl Orchestrator for Recorder {
        fn kind(&self) -> &'static str {
            "memory"
        }

        async fn set_replicas(
            &self,
            service: &str,
            _version: &str,
            replicas: u32,
        ) -> Result<(), OrchestratorError> {
            self.orders
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((service.to_owned(), replicas));
            Ok(())
        }

        fn replicas(&self, service: &str, _version: &str) -> u32 {
            self.orders
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .rev()
                .find(|(s, _)| s == service)
                .map_or(0, |(_, n)| *n)
        }

        fn updates(&self) -> UnboundedReceiver<Update> {
            unbounded_channel().1
        }

        async fn shutdown(&self) {}
    }

    const POLICY: &str = "services:
  - name: shop
    routes: [{ path_prefix: /shop }]
    launch: { command: [app, \"{port}\"] }
    scaling: { min_replicas: 0, max_replicas: 20, capacity: { requests_per_second: 10 }, target_utilization: 1.0 }
    dependencies: [{ service: api, fan_out: 1.0 }]
  - name: api
    routes: [{ path_prefix: /api }]
    launch: { command: [app, \"{port}\"] }
    scaling: { min_replicas: 0, max_replicas: 20, capacity: { requests_per_second: 10 }, target_utilization: 1.0 }
";

    #[tokio::test]
    async fn held_requests_wake_a_service_from_zero_and_a_ramp_scales_it_and_its_dependency() {
        let policy = Policy::parse(POLICY, std::path::Path::new("p.yaml")).expect("valid");
        let predictor =
            Predictor::new(["shop", "api"], PredictorConfig::default()).expect("predictor");
        let mut engine = ForecastEngine::new(&predictor, EngineConfig::default());
        let instances: Vec<ServiceInstances> = ["shop", "api"]
            .iter()
            .map(|name| ServiceInstances::new(name, Vec::new()))
            .collect();
        let recorder = Arc::new(Recorder::default());
        let board = Arc::new(ArcSwap::from_pointee(ScalingBoard::default()));
        let counters = Arc::new(DecisionCounters::default());
        let mut autoscaler = Autoscaler::new(recorder.clone(), board.clone(), counters.clone());
        let views = |held: u32| -> Vec<ServiceView<'_>> {
            policy
                .services
                .iter()
                .zip(&instances)
                .map(|(config, instances)| ServiceView {
                    config,
                    ready: u32::try_from(instances.ready().unflagged().len())
                        .expect("a few instances"),
                    held: if config.name == "shop" { held } else { 0 },
                    mean_latency_secs: 0.0,
                    waited: 0,
                    peers: PeerLoad::default(),
                    may_order: true,
                })
                .collect()
        };

        // A held request with nothing running orders one replica at once.
        let start = 1_000_000;
        autoscaler.tick(&views(1), &predictor, &engine, start).await;
        assert_eq!(recorder.replicas("shop", "stable"), 1);
        assert_eq!(
            board.load().service("shop").map(|s| s.reason),
            Some(Reason::ScaleFromZero)
        );

        // The instance comes up; then a ramp from 5 to 65 requests/s over 30 s.
        let address = SocketAddr::from(([127, 0, 0, 1], 9));
        let _ = instances[0].add(address, "stable");
        let shop = predictor.service_id("shop").expect("shop");
        for second in 0..30u64 {
            let now = start + (second + 1) * 1_000;
            for i in 0..(5 + 2 * second) {
                predictor.record_arrival(shop, None, now - 1_000 + i);
            }
            engine.tick(&predictor, now);
            autoscaler.tick(&views(0), &predictor, &engine, now).await;
        }
        let shop_board = board
            .load()
            .service("shop")
            .cloned()
            .expect("shop decision");
        // Live load is 63/s (7 replicas at 10/s); the forecast asks for more, ahead of the ramp.
        assert!(shop_board.desired >= 8, "{shop_board:?}");
        assert!(shop_board.predicted_load > 63.0, "{shop_board:?}");
        // api gets no traffic of its own, but shop's forecast surge passes on to it.
        let api = board.load().service("api").cloned().expect("api decision");
        assert!(api.desired >= 1, "{api:?}");
        assert!(counters
            .snapshot()
            .iter()
            .any(|(s, r, n)| s == "shop" && *r == "predicted_load" && *n > 0));
        // No instance was ever confirmed ready, so no time-to-ready was measured.
        assert!(shop_board.time_to_ready_ms.is_none());
    }
}
