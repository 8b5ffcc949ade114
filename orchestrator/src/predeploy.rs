//! Pre-deployed versions: while a flagged version's traffic is seen (or forecast), keep its
//! `replicas` ordered; after its `grace` without flagged requests, order 0 (and, with
//! `when_idle: delete`, remove what was created for it).
//!
//! ```text
//!  request path: flag matches ─► last_seen_ms (one atomic per version) ─┐
//!  other Forecourt replicas' last seen (max, when wired) ───────────────┤
//!  forecast of flagged load (optional; > 0 counts as seen) ─────────────┴─► want(): Active(n) | Idle
//!                                                                                │
//!  PreDeployer::tick(leading) ── only when leading ──► Orchestrator::set_replicas(service, version, n | 0)
//!        │                                             Orchestrator::remove_version (delete, after 0)
//!        │  a refused order: retried next tick, counted, logged once a minute
//!        └─► VersionBoard (admin API, metrics)
//! ```
//!
//! The decision is the pure [`want`]; [`PreDeployer::tick`] is the small async shell that orders
//! only what differs from what the backend reports, so a steady state makes no calls.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use forecourt_config::{VersionConfig, WhenIdle};

use crate::backend::{Orchestrator, OrchestratorError};
use crate::scale::decide::millis;

/// A refused order is logged again after this long if it keeps failing the same way.
const LOG_EVERY_MS: u64 = 60_000;

/// One flagged version as the pre-deploy step sees it at a tick.
#[derive(Debug, Clone, Copy)]
pub struct VersionInput<'a> {
    /// The service.
    pub service: &'a str,
    /// The version's policy entry.
    pub config: &'a VersionConfig,
    /// When a request carrying the version's flag was last seen (ms on the control loop's
    /// clock), by this Forecourt or any other; `None` when never.
    pub last_seen_ms: Option<u64>,
    /// Forecast flagged requests per second, when one is made; above 0 counts as seen.
    pub forecast: Option<f64>,
    /// Its instances run for this Forecourt alone (the `local` backend): ordered whether or not
    /// this Forecourt leads.
    pub per_replica: bool,
}

/// What a flagged version should have now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Its flag was seen within the grace period (or is forecast): keep `replicas`.
    Active {
        /// Replicas to keep.
        replicas: u32,
    },
    /// No flagged traffic for the grace period: no replicas.
    Idle,
}

// === impl Want ===

impl Want {
    /// The replica count wanted.
    pub fn replicas(self) -> u32 {
        match self {
            Want::Active { replicas } => replicas,
            Want::Idle => 0,
        }
    }
}

/// Decides what a version should have at `now_ms`: active while its flag was seen less than
/// `grace` ago or flagged load is forecast, idle otherwise (also when never seen).
pub fn want(
    config: &VersionConfig,
    last_seen_ms: Option<u64>,
    forecast: Option<f64>,
    now_ms: u64,
) -> Want {
    let forecast = forecast.is_some_and(|rate| rate > 0.0);
    let recent =
        last_seen_ms.is_some_and(|seen| now_ms.saturating_sub(seen) < millis(config.grace));
    if forecast || recent {
        Want::Active {
            replicas: config.replicas,
        }
    } else {
        Want::Idle
    }
}

/// One version's state after the last tick, for the admin API and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionStatus {
    /// The service.
    pub service: String,
    /// The version.
    pub version: String,
    /// Whether its flag's traffic is seen (or forecast) within the grace period.
    pub active: bool,
    /// Replicas wanted now.
    pub wanted: u32,
    /// Replicas the backend reports ordered.
    pub ordered: u32,
    /// When its flag was last seen (ms on the control loop's clock).
    pub last_seen_ms: Option<u64>,
    /// Orders for it the backend refused, in total.
    pub failed_orders: u64,
    /// The last refusal, while orders keep failing.
    pub error: Option<String>,
}

/// Every flagged version's state after the last tick.
#[derive(Debug, Clone, Default)]
pub struct VersionBoard {
    /// Whether this Forecourt ordered (it leads); otherwise another replica decides.
    pub leading: bool,
    /// One entry per flagged version of a scalable service, in policy order.
    pub versions: Vec<VersionStatus>,
    /// Pre-deploy orders the backend refused, in total.
    pub failed_orders: u64,
}

// === impl VersionBoard ===

impl VersionBoard {
    /// The entry of `version` of `service`.
    pub fn version(&self, service: &str, version: &str) -> Option<&VersionStatus> {
        self.versions
            .iter()
            .find(|v| v.service == service && v.version == version)
    }
}

/// What the pre-deploy step remembers of one version between ticks.
#[derive(Debug)]
struct Memory {
    when_idle: WhenIdle,
    /// Ordered whether or not this Forecourt leads (see [`VersionInput::per_replica`]).
    per_replica: bool,
    /// The last order failed: order again at the next tick whatever the backend reports.
    retry: bool,
    /// Replicas were ordered to 0 under `when_idle: delete`; `remove_version` is still owed.
    remove: bool,
    /// Refused orders, in total.
    failures: u64,
    /// The last refusal, while orders keep failing.
    error: Option<String>,
    /// When a refusal was last logged.
    logged_ms: Option<u64>,
}

// === impl Memory ===

impl Memory {
    fn new(when_idle: WhenIdle) -> Self {
        Self {
            when_idle,
            per_replica: false,
            retry: false,
            remove: false,
            failures: 0,
            error: None,
            logged_ms: None,
        }
    }

    /// Counts a refusal; logs it when it is new, differs from the last, or a minute passed.
    fn failed(
        &mut self,
        service: &str,
        version: &str,
        what: &str,
        error: &OrchestratorError,
        now_ms: u64,
    ) {
        self.failures += 1;
        let text = error.to_string();
        let due = self
            .logged_ms
            .is_none_or(|at| now_ms.saturating_sub(at) >= LOG_EVERY_MS);
        if due || self.error.as_deref() != Some(text.as_str()) {
            tracing::warn!(
                service,
                version,
                %error,
                failures = self.failures,
                "the orchestrator refused to {what} a flagged version; retrying every tick"
            );
            self.logged_ms = Some(now_ms);
        }
        self.error = Some(text);
    }

    /// Notes an order that went through.
    fn succeeded(&mut self, service: &str, version: &str) {
        if self.error.take().is_some() {
            tracing::info!(
                service,
                version,
                "orders for the flagged version go through again"
            );
        }
        self.logged_ms = None;
    }
}

/// The pre-deploy step of the control loop: orders each flagged version's replicas.
pub struct PreDeployer {
    orchestrator: Arc<dyn Orchestrator>,
    /// Keyed by (service, version).
    memory: BTreeMap<(String, String), Memory>,
    board: Arc<ArcSwap<VersionBoard>>,
    /// Whether each tick publishes `board` (not in replay: nothing reads it there).
    publish: bool,
    failed_orders: u64,
}

impl std::fmt::Debug for PreDeployer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreDeployer")
            .field("orchestrator", &self.orchestrator.kind())
            .field("versions", &self.memory.len())
            .finish_non_exhaustive()
    }
}

// === impl PreDeployer ===

impl PreDeployer {
    /// A pre-deploy step ordering through `orchestrator`, publishing to `board`.
    pub fn new(orchestrator: Arc<dyn Orchestrator>, board: Arc<ArcSwap<VersionBoard>>) -> Self {
        Self {
            orchestrator,
            memory: BTreeMap::new(),
            board,
            publish: true,
            failed_orders: 0,
        }
    }

    /// Stops publishing the version board, for a host with no admin API to read it (replay);
    /// orders are the same.
    pub fn without_board(mut self) -> Self {
        self.publish = false;
        self
    }

    /// One pass over every flagged version: decide, and when `leading`, order what differs
    /// from what the backend reports (and retry what failed); versions that left the policy are
    /// ordered to 0. When not leading nothing is ordered (another Forecourt decides) except
    /// versions run [`per_replica`](VersionInput::per_replica); the board is published either
    /// way.
    pub async fn tick(&mut self, versions: &[VersionInput<'_>], now_ms: u64, leading: bool) {
        let orchestrator = self.orchestrator.as_ref();
        let mut board = Vec::with_capacity(versions.len());
        for input in versions {
            let version = input.config.version.as_str();
            let want = want(input.config, input.last_seen_ms, input.forecast, now_ms);
            let memory = self
                .memory
                .entry((input.service.to_owned(), version.to_owned()))
                .or_insert_with(|| Memory::new(input.config.when_idle));
            memory.when_idle = input.config.when_idle;
            memory.per_replica = input.per_replica;
            if leading || input.per_replica {
                let failed = converge(
                    orchestrator,
                    input.service,
                    version,
                    want.replicas(),
                    memory,
                    now_ms,
                    false,
                )
                .await;
                self.failed_orders += failed;
            }
            board.push(VersionStatus {
                service: input.service.to_owned(),
                version: version.to_owned(),
                active: want != Want::Idle,
                wanted: want.replicas(),
                ordered: orchestrator.replicas(input.service, version),
                last_seen_ms: input.last_seen_ms,
                failed_orders: memory.failures,
                error: memory.error.clone(),
            });
        }
        // Versions (or services) the policy no longer lists: nothing is wanted of them.
        let gone: Vec<(String, String)> = self
            .memory
            .keys()
            .filter(|(service, version)| {
                !versions
                    .iter()
                    .any(|v| v.service == service && v.config.version == *version)
            })
            .cloned()
            .collect();
        for key in gone {
            let Some(memory) = self.memory.get_mut(&key) else {
                continue;
            };
            let orders = leading || memory.per_replica;
            if orders {
                let (service, version) = (&key.0, &key.1);
                self.failed_orders +=
                    converge(orchestrator, service, version, 0, memory, now_ms, true).await;
            }
            if !orders || !(memory.retry || memory.remove) {
                self.memory.remove(&key);
            }
        }
        if self.publish {
            self.board.store(Arc::new(VersionBoard {
                leading,
                versions: board,
                failed_orders: self.failed_orders,
            }));
        }
    }
}

/// Brings one version's order to `wanted`: orders when the backend reports another count (or
/// the last order failed), then removes the version when that is owed. Returns the refusals.
/// For a version the policy no longer lists (`gone`), a backend that no longer knows the
/// service has nothing left to stop.
async fn converge(
    orchestrator: &dyn Orchestrator,
    service: &str,
    version: &str,
    wanted: u32,
    memory: &mut Memory,
    now_ms: u64,
    gone: bool,
) -> u64 {
    let unknown =
        |e: &OrchestratorError| gone && matches!(e, OrchestratorError::UnknownService { .. });
    let mut failed = 0;
    let ordered = orchestrator.replicas(service, version);
    if ordered != wanted || memory.retry {
        match orchestrator.set_replicas(service, version, wanted).await {
            Err(error) if !unknown(&error) => {
                memory.retry = true;
                memory.failed(service, version, "order replicas for", &error, now_ms);
                failed += 1;
            }
            _ => {
                if ordered != wanted {
                    tracing::info!(
                        service,
                        version,
                        from = ordered,
                        to = wanted,
                        "flagged version ordered"
                    );
                }
                memory.retry = false;
                memory.succeeded(service, version);
                if wanted == 0 && memory.when_idle == WhenIdle::Delete {
                    memory.remove = true;
                }
            }
        }
    }
    if wanted > 0 {
        memory.remove = false;
    } else if memory.remove && !memory.retry {
        match orchestrator.remove_version(service, version).await {
            Err(error) if !unknown(&error) => {
                memory.failed(service, version, "remove", &error, now_ms);
                failed += 1;
            }
            _ => {
                tracing::info!(service, version, "idle flagged version removed");
                memory.remove = false;
                memory.succeeded(service, version);
            }
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    use async_trait::async_trait;
    use forecourt_config::UntilReady;
    use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

    use super::*;
    use crate::backend::Update;

    /// An in-memory backend that records every call and refuses as many as it is told to.
    #[derive(Default)]
    struct Fake {
        ordered: Mutex<BTreeMap<(String, String), u32>>,
        calls: Mutex<Vec<String>>,
        refuse_orders: AtomicU32,
        refuse_removes: AtomicU32,
    }

    impl Fake {
        fn calls(&self) -> Vec<String> {
            std::mem::take(&mut *self.calls.lock().unwrap_or_else(|e| e.into_inner()))
        }

        fn refuse(counter: &AtomicU32) -> Result<(), OrchestratorError> {
            match counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)) {
                Ok(_) => Err(OrchestratorError::InvalidSpec {
                    service: "shop".into(),
                    reason: "refused by the test".into(),
                }),
                Err(_) => Ok(()),
            }
        }
    }

    #[async_trait]
    impl Orchestrator for Fake {
        fn kind(&self) -> &'static str {
            "memory"
        }

        async fn set_replicas(
            &self,
            service: &str,
            version: &str,
            replicas: u32,
        ) -> Result<(), OrchestratorError> {
            self.calls
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("set {service}/{version} {replicas}"));
            Self::refuse(&self.refuse_orders)?;
            self.ordered
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((service.to_owned(), version.to_owned()), replicas);
            Ok(())
        }

        fn replicas(&self, service: &str, version: &str) -> u32 {
            self.ordered
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&(service.to_owned(), version.to_owned()))
                .copied()
                .unwrap_or(0)
        }

        async fn remove_version(
            &self,
            service: &str,
            version: &str,
        ) -> Result<(), OrchestratorError> {
            self.calls
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("remove {service}/{version}"));
            Self::refuse(&self.refuse_removes)
        }

        fn updates(&self) -> UnboundedReceiver<Update> {
            unbounded_channel().1
        }

        async fn shutdown(&self) {}
    }

    fn beta(when_idle: WhenIdle) -> VersionConfig {
        VersionConfig {
            flag: "beta".into(),
            version: "beta".into(),
            image: None,
            container: None,
            labels: Vec::new(),
            command: None,
            replicas: 2,
            until_ready: UntilReady::Stable,
            grace: Duration::from_secs(10),
            when_idle,
        }
    }

    fn input(config: &VersionConfig, last_seen_ms: Option<u64>) -> VersionInput<'_> {
        VersionInput {
            service: "shop",
            config,
            last_seen_ms,
            forecast: None,
            per_replica: false,
        }
    }

    fn setup() -> (Arc<Fake>, Arc<ArcSwap<VersionBoard>>, PreDeployer) {
        let fake = Arc::new(Fake::default());
        let board = Arc::new(ArcSwap::from_pointee(VersionBoard::default()));
        let deployer = PreDeployer::new(fake.clone(), board.clone());
        (fake, board, deployer)
    }

    const T0: u64 = 1_000_000;

    #[test]
    fn a_version_is_active_within_its_grace_or_while_forecast() {
        let config = beta(WhenIdle::ScaleToZero);
        let active = Want::Active { replicas: 2 };
        assert_eq!(want(&config, None, None, T0), Want::Idle, "never seen");
        assert_eq!(want(&config, Some(T0), None, T0), active);
        assert_eq!(want(&config, Some(T0 - 9_999), None, T0), active);
        assert_eq!(want(&config, Some(T0 - 10_000), None, T0), Want::Idle);
        assert_eq!(want(&config, None, Some(0.5), T0), active, "forecast");
        assert_eq!(want(&config, None, Some(0.0), T0), Want::Idle);
        assert_eq!(
            want(&config, Some(T0 + 5), None, T0),
            active,
            "another clock ahead"
        );
    }

    #[tokio::test]
    async fn seen_orders_replicas_and_the_grace_scales_to_zero() {
        let (fake, board, mut deployer) = setup();
        let config = beta(WhenIdle::ScaleToZero);

        // Never seen: nothing is ordered, nothing is called.
        deployer.tick(&[input(&config, None)], T0, true).await;
        assert!(fake.calls().is_empty());
        let status = board
            .load()
            .version("shop", "beta")
            .cloned()
            .expect("listed");
        assert!(!status.active && status.ordered == 0);

        // Seen: the version's replicas are ordered once; later ticks make no calls.
        let seen = Some(T0 + 500);
        deployer
            .tick(&[input(&config, seen)], T0 + 1_000, true)
            .await;
        assert_eq!(fake.calls(), ["set shop/beta 2"]);
        deployer
            .tick(&[input(&config, seen)], T0 + 2_000, true)
            .await;
        assert!(fake.calls().is_empty());
        let status = board
            .load()
            .version("shop", "beta")
            .cloned()
            .expect("listed");
        assert_eq!((status.active, status.wanted, status.ordered), (true, 2, 2));
        assert_eq!(status.last_seen_ms, seen);

        // Still within the grace one tick before it ends; then scaled to zero, not removed.
        deployer
            .tick(&[input(&config, seen)], T0 + 10_499, true)
            .await;
        assert!(fake.calls().is_empty());
        deployer
            .tick(&[input(&config, seen)], T0 + 10_500, true)
            .await;
        assert_eq!(fake.calls(), ["set shop/beta 0"]);
        deployer
            .tick(&[input(&config, seen)], T0 + 11_500, true)
            .await;
        assert!(fake.calls().is_empty());
        assert!(!board.load().versions[0].active);
    }

    #[tokio::test]
    async fn when_idle_delete_removes_the_version_once_after_zero() {
        let (fake, _board, mut deployer) = setup();
        let config = beta(WhenIdle::Delete);
        // Idle and nothing ordered: nothing to delete.
        deployer.tick(&[input(&config, None)], T0, true).await;
        assert!(fake.calls().is_empty());

        deployer.tick(&[input(&config, Some(T0))], T0, true).await;
        assert_eq!(fake.calls(), ["set shop/beta 2"]);
        deployer
            .tick(&[input(&config, Some(T0))], T0 + 10_000, true)
            .await;
        assert_eq!(fake.calls(), ["set shop/beta 0", "remove shop/beta"]);
        deployer
            .tick(&[input(&config, Some(T0))], T0 + 11_000, true)
            .await;
        assert!(fake.calls().is_empty(), "removed once");

        // A failed removal is retried next tick; a new flag cancels a removal still owed.
        deployer
            .tick(&[input(&config, Some(T0 + 12_000))], T0 + 12_000, true)
            .await;
        assert_eq!(fake.calls(), ["set shop/beta 2"]);
        fake.refuse_removes.store(1, Ordering::Relaxed);
        deployer
            .tick(&[input(&config, Some(T0 + 12_000))], T0 + 22_000, true)
            .await;
        assert_eq!(fake.calls(), ["set shop/beta 0", "remove shop/beta"]);
        deployer
            .tick(&[input(&config, Some(T0 + 12_000))], T0 + 23_000, true)
            .await;
        assert_eq!(fake.calls(), ["remove shop/beta"]);
        deployer
            .tick(&[input(&config, Some(T0 + 12_000))], T0 + 24_000, true)
            .await;
        assert!(fake.calls().is_empty());
    }

    #[tokio::test]
    async fn a_follower_orders_nothing_but_publishes_what_it_sees() {
        let (fake, board, mut deployer) = setup();
        let config = beta(WhenIdle::Delete);
        deployer.tick(&[input(&config, Some(T0))], T0, false).await;
        deployer
            .tick(&[input(&config, Some(T0))], T0 + 20_000, false)
            .await;
        assert!(fake.calls().is_empty());
        let board = board.load();
        assert!(!board.leading);
        assert_eq!(board.versions.len(), 1);
        // Once it leads, it orders at its first tick.
        drop(board);
        deployer
            .tick(&[input(&config, Some(T0 + 20_000))], T0 + 20_000, true)
            .await;
        assert_eq!(fake.calls(), ["set shop/beta 2"]);

        // A version whose instances run for this Forecourt alone is ordered by every replica.
        let (fake, _board, mut deployer) = setup();
        let local = VersionInput {
            per_replica: true,
            ..input(&config, Some(T0))
        };
        deployer.tick(&[local], T0, false).await;
        assert_eq!(fake.calls(), ["set shop/beta 2"]);
        deployer.tick(&[], T0 + 1_000, false).await;
        assert_eq!(fake.calls(), ["set shop/beta 0", "remove shop/beta"]);
    }

    #[tokio::test]
    async fn refused_orders_are_retried_every_tick_counted_and_logged_once_a_minute() {
        let (fake, board, mut deployer) = setup();
        let config = beta(WhenIdle::ScaleToZero);
        fake.refuse_orders.store(3, Ordering::Relaxed);
        let seen = Some(T0);
        for tick in 0..3 {
            deployer
                .tick(&[input(&config, seen)], T0 + tick * 1_000, true)
                .await;
            assert_eq!(fake.calls(), ["set shop/beta 2"], "tick {tick}");
        }
        let status = board
            .load()
            .version("shop", "beta")
            .cloned()
            .expect("listed");
        assert_eq!(status.failed_orders, 3);
        assert_eq!(status.ordered, 0);
        assert!(status
            .error
            .as_deref()
            .is_some_and(|e| e.contains("refused by the test")));
        assert_eq!(board.load().failed_orders, 3);
        let key = ("shop".to_owned(), "beta".to_owned());
        assert_eq!(
            deployer.memory.get(&key).and_then(|m| m.logged_ms),
            Some(T0),
            "logged at the first refusal only"
        );

        // The fourth order goes through: the error clears and later ticks are quiet.
        deployer
            .tick(&[input(&config, seen)], T0 + 3_000, true)
            .await;
        assert_eq!(fake.calls(), ["set shop/beta 2"]);
        deployer
            .tick(&[input(&config, seen)], T0 + 4_000, true)
            .await;
        assert!(fake.calls().is_empty());
        let status = board
            .load()
            .version("shop", "beta")
            .cloned()
            .expect("listed");
        assert_eq!((status.ordered, status.error), (2, None));
        assert_eq!(status.failed_orders, 3);
    }

    #[tokio::test]
    async fn a_version_that_leaves_the_policy_is_ordered_to_zero() {
        let (fake, board, mut deployer) = setup();
        let config = beta(WhenIdle::Delete);
        deployer.tick(&[input(&config, Some(T0))], T0, true).await;
        assert_eq!(fake.calls(), ["set shop/beta 2"]);
        deployer.tick(&[], T0 + 1_000, true).await;
        assert_eq!(fake.calls(), ["set shop/beta 0", "remove shop/beta"]);
        assert!(board.load().versions.is_empty());
        deployer.tick(&[], T0 + 2_000, true).await;
        assert!(fake.calls().is_empty(), "forgotten once done");
        assert!(deployer.memory.is_empty());
    }

    #[tokio::test]
    async fn a_forecast_of_flagged_load_orders_before_the_flag_is_seen() {
        let (fake, _board, mut deployer) = setup();
        let config = beta(WhenIdle::ScaleToZero);
        let forecast = VersionInput {
            forecast: Some(3.0),
            ..input(&config, None)
        };
        deployer.tick(&[forecast], T0, true).await;
        assert_eq!(fake.calls(), ["set shop/beta 2"]);
    }
}
