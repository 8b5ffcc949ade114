//! Leader election and window publishing between Forecourt replicas: one replica holds a
//! `coordination.k8s.io/v1` Lease and makes the scaling decisions from the sum of every replica's
//! request windows.
//!
//! ```text
//!  every retry period (duration / 3; sooner, backing off, after a failure):
//!
//!   GET Lease {lease} ─► election::decide ─► Create (404) · Renew (mine) · TakeOver (released,
//!        │                                   or unchanged for leaseDurationSeconds) · Follow
//!        │                                        │ POST / PUT with resourceVersion (409 = lost)
//!        ▼                                        ▼
//!   Leadership { is_leader (until renew deadline), leader } ◄── control loop reads, lock-free
//!
//!   publish(ReplicaWindows) ─► PUT Lease {lease}-{identity}   annotation forecourt.dev/windows (JSON)
//!                                                              label forecourt.dev/windows-of={lease}
//!   LIST Leases by that label ─► PeerBook ─► peers(): the others' windows, changed within duration
//!                                     ├─► stale_peers(): known, not fresh, for < 4 × duration
//!                                     │     └─► hold_scale_down(): the backend refuses lower orders
//!                                     └─► (leader) DELETE those unchanged for 10 × duration
//!                                           (only with app.kubernetes.io/managed-by: forecourt)
//!
//!   shutdown ─► step down ─► release {lease} (holder cleared: failover at once)
//!                          ─► DELETE {lease}-{identity}
//! ```
//!
//! ## The election
//!
//! Every retry period (a third of the lease duration) each replica reads the Lease. Nobody has
//! created it: create it as holder (a 409 means another replica was first). This replica holds
//! it: renew it with a PUT of the whole Lease carrying the resourceVersion just read, so a
//! concurrent writer makes one of the two PUTs fail with 409 (optimistic concurrency). Another
//! replica holds it: it has expired when *this* replica has seen neither its resourceVersion nor
//! its renewTime change for `leaseDurationSeconds` of its own monotonic [`Clock`]; then take it
//! over the same way (holder, acquire and renew time, `leaseTransitions + 1`). Wall-clock times on
//! the Lease (MicroTime) are written, never compared, so clock skew between nodes is harmless.
//! A released Lease (empty holder) is free at once.
//!
//! A leader that has not renewed for the renew deadline (two thirds of the duration, counted from
//! the start of its last successful renewal) stops being leader — [`Leadership::is_leader`] reads
//! the deadline itself, so it turns false on time even if the loop is stuck or was aborted —
//! before any other replica can see the Lease as expired: two leaders never overlap.
//!
//! ## The windows
//!
//! Every replica writes its latest [`ReplicaWindows`] as JSON in an annotation of its own Lease,
//! renewing it each period; every replica lists them (cheap, and a new leader then already knows
//! which peers are alive) and keeps the windows of Leases it has seen change within the lease
//! duration. The leader deletes windows Leases nobody renewed for ten durations (crashed replicas),
//! but only those labelled `app.kubernetes.io/managed-by: forecourt` (every windows Lease
//! Forecourt writes is); a replica overwrites or deletes the Lease under its own windows name
//! only when it is its own (that label, or its windows label and holder).
//!
//! A peer whose Lease stops changing drops out of the sum, but its traffic may still be real (it
//! cannot reach the API server, or the leader cannot). While a peer that was listed is stale —
//! until it is deleted or has been stale for [`HOLD_WHILE_STALE_DURATIONS`] more durations —
//! [`Leadership::hold_scale_down`] says so, and the Kubernetes backend refuses orders that would
//! lower replicas (orders that raise them go through).
//!
//! Why Leases and not ConfigMaps: least privilege. The proxy needs no ConfigMap write permission,
//! so a compromised replica cannot rewrite its own policy ConfigMap. Leases are the API's heartbeat
//! object (renewTime, holder; what kubelets and controllers use), and one kind with one permission
//! set serves both jobs: `coordination.k8s.io` `leases`: get, list, create, update, delete, in the
//! Lease's namespace.
//!
//! ## Failures
//!
//! Every failed API call is counted ([`LeadershipStats::api_errors`]), logged at warn (the first
//! of a kind, then every 20th in a row or when the message changes, and once on recovery) and
//! retried with exponential back-off capped at the retry period. Each call is bounded by the
//! retry period. Nothing here panics or blocks a caller: readers load atomics and snapshots.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwap, ArcSwapOption};
use forecourt_predictor::Clock;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

mod election;
mod windows;

use super::retry::{bounded_call, Backoff, CallError, Throttle};
use super::version::{MANAGED_BY, MANAGED_BY_LABEL};
use election::{claim, decide, duration_seconds, observe, released, Claimant, LeaseRecord, Step};
use windows::{is_own_windows_lease, listed, own_lease, PeerBook, Publisher};

pub use windows::{
    windows_label, windows_lease_name, GARBAGE_AFTER_DURATIONS, HOLD_WHILE_STALE_DURATIONS,
    MAX_WINDOWS_JSON, WINDOWS_ANNOTATION, WINDOWS_OF_LABEL,
};

/// Shortest retry period, whatever the duration (a zero period would spin).
const MIN_RETRY_PERIOD: Duration = Duration::from_millis(10);
/// Shortest time one API call may take before it counts as failed.
const MIN_CALL_TIMEOUT: Duration = Duration::from_millis(100);

/// Who this replica is and which Lease it competes for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    /// Namespace of the leader Lease and of every windows Lease.
    pub namespace: String,
    /// Name of the leader Lease.
    pub lease: String,
    /// This replica's identity (unique among replicas; the pod name).
    pub identity: String,
    /// How long a leader that stopped renewing keeps the Lease.
    pub duration: Duration,
    /// Field manager of every write.
    pub field_manager: String,
}

impl LeaseSettings {
    /// How often the Lease is read and renewed, and the windows written: a third of the duration.
    pub fn retry_period(&self) -> Duration {
        (self.duration / 3).max(MIN_RETRY_PERIOD)
    }

    /// How long a leader may go without renewing before it steps down: two thirds of the duration.
    pub fn renew_deadline(&self) -> Duration {
        self.duration.saturating_mul(2) / 3
    }

    /// The name of this replica's windows Lease.
    pub fn windows_lease(&self) -> String {
        windows_lease_name(&self.lease, &self.identity)
    }

    /// The duration in milliseconds.
    fn duration_ms(&self) -> u64 {
        millis(self.duration)
    }
}

/// One replica's window counts, as published for the leader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaWindows {
    /// The publishing replica's identity.
    pub identity: String,
    /// When the counts were taken (UNIX milliseconds, the replica's wall clock; informational).
    pub at_unix_ms: u64,
    /// Per service.
    #[serde(default)]
    pub services: Vec<ServiceWindows>,
}

/// One service's live load on one replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ServiceWindows {
    /// The service's name.
    pub service: String,
    /// Requests per second over the stable window.
    pub stable_rate: f64,
    /// Requests per second over the panic window.
    pub panic_rate: f64,
    /// Mean in-flight requests over the stable window.
    pub stable_concurrency: f64,
    /// Mean in-flight requests over the panic window.
    pub panic_concurrency: f64,
    /// This replica's load forecast at the service's horizon, if it has one.
    pub forecast_point: Option<f64>,
    /// The upper bound of that forecast.
    pub forecast_upper: Option<f64>,
    /// The demand this replica provisions for over the horizon (its demand quantile).
    pub forecast_demand: Option<f64>,
    /// Requests held waiting for an instance.
    pub held: u32,
    /// Flagged versions whose traffic this replica has seen.
    pub flagged: Vec<FlaggedVersion>,
}

/// When a flagged version's traffic was last seen on a replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct FlaggedVersion {
    /// The version.
    pub version: String,
    /// Last request for it (UNIX milliseconds, the replica's wall clock).
    pub last_seen_unix_ms: u64,
}

/// Counters of the election for `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeadershipStats {
    /// Whether this replica leads now.
    pub is_leader: bool,
    /// The holder of the leader Lease as last seen.
    pub leader: Option<String>,
    /// Times this replica became leader or stopped being leader.
    pub transitions: u64,
    /// Successful renewals of the leader Lease by this replica.
    pub renewals: u64,
    /// Failed API calls (timeouts included, lost races not).
    pub api_errors: u64,
    /// Writes refused with 409 Conflict (another replica wrote first).
    pub conflicts: u64,
    /// Other replicas whose windows are fresh.
    pub peers: usize,
    /// Other replicas whose windows are stale but not yet gone: scale-downs are held meanwhile.
    pub stale_peers: usize,
    /// Writes and deletes of Leases not labelled as Forecourt's that were refused.
    pub refused_writes: u64,
}

/// This replica's view of the election, shared with the control loop (lock-free reads).
pub struct Leadership {
    /// Who this replica is and which Lease it competes for.
    settings: LeaseSettings,
    /// Local monotonic time: observation of changes and the renew deadline.
    clock: Arc<dyn Clock>,
    /// Whether this replica believes it leads (flipped by `run`).
    leading: AtomicBool,
    /// Local time at which the current term's renew deadline passes.
    leading_until_ms: AtomicU64,
    /// The holder as last seen.
    leader: ArcSwapOption<String>,
    /// The latest local windows, written out by `run`.
    local: ArcSwapOption<ReplicaWindows>,
    /// The other replicas' fresh windows.
    peers: ArcSwap<Vec<ReplicaWindows>>,
    /// The identities of peers whose windows are stale, not yet gone.
    stale: ArcSwap<Vec<String>>,
    /// See [`LeadershipStats::transitions`].
    transitions: AtomicU64,
    /// See [`LeadershipStats::renewals`].
    renewals: AtomicU64,
    /// See [`LeadershipStats::api_errors`].
    api_errors: AtomicU64,
    /// See [`LeadershipStats::conflicts`].
    conflicts: AtomicU64,
    /// See [`LeadershipStats::refused_writes`].
    refused_writes: AtomicU64,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("settings", &self.settings)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

// === impl Leadership ===

impl Leadership {
    /// A replica that has not joined the election yet (not leader, no peers) until [`Self::run`].
    pub fn new(settings: LeaseSettings, clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Self {
            settings,
            clock,
            leading: AtomicBool::new(false),
            leading_until_ms: AtomicU64::new(0),
            leader: ArcSwapOption::empty(),
            local: ArcSwapOption::empty(),
            peers: ArcSwap::from_pointee(Vec::new()),
            stale: ArcSwap::from_pointee(Vec::new()),
            transitions: AtomicU64::new(0),
            renewals: AtomicU64::new(0),
            api_errors: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            refused_writes: AtomicU64::new(0),
        })
    }

    /// The settings this replica competes with.
    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    /// Whether this replica leads: it won or renewed the Lease, and its renew deadline has not
    /// passed since (so this turns false on time even if [`Self::run`] is stuck or aborted).
    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::Acquire)
            && self.clock.now_ms() < self.leading_until_ms.load(Ordering::Acquire)
    }

    /// The holder of the leader Lease as last seen (`None`: nobody, or not read yet).
    pub fn leader(&self) -> Option<String> {
        self.leader.load_full().map(|holder| (*holder).clone())
    }

    /// Replaces this replica's latest window counts; [`Self::run`] writes them out each period.
    pub fn publish(&self, windows: ReplicaWindows) {
        self.local.store(Some(Arc::new(windows)));
    }

    /// The fresh windows of the other replicas, by identity.
    pub fn peers(&self) -> Arc<Vec<ReplicaWindows>> {
        self.peers.load_full()
    }

    /// The identities of the peers whose windows are stale but that are not gone yet (listed,
    /// not renewed within the lease duration, for less than [`HOLD_WHILE_STALE_DURATIONS`] more
    /// durations), sorted.
    pub fn stale_peers(&self) -> Arc<Vec<String>> {
        self.stale.load_full()
    }

    /// Why orders that lower replicas must wait now (`None`: they need not): some peer's windows
    /// are stale, so the sum of load misses traffic that may still be real.
    pub fn hold_scale_down(&self) -> Option<String> {
        let stale = self.stale.load();
        if stale.is_empty() {
            return None;
        }
        Some(format!(
            "scale-down held while the windows of peer(s) {} are stale (for up to {} more lease durations)",
            stale.join(", "),
            HOLD_WHILE_STALE_DURATIONS
        ))
    }

    /// The counters, for `/metrics`.
    pub fn stats(&self) -> LeadershipStats {
        LeadershipStats {
            is_leader: self.is_leader(),
            leader: self.leader(),
            transitions: self.transitions.load(Ordering::Relaxed),
            renewals: self.renewals.load(Ordering::Relaxed),
            api_errors: self.api_errors.load(Ordering::Relaxed),
            conflicts: self.conflicts.load(Ordering::Relaxed),
            peers: self.peers.load().len(),
            stale_peers: self.stale.load().len(),
            refused_writes: self.refused_writes.load(Ordering::Relaxed),
        }
    }

    /// The background task: elects or renews, publishes this replica's windows and reads the
    /// peers' every retry period. Returns when `shutdown` turns true (or its sender is dropped),
    /// after stepping down, releasing the leader Lease if held (so another replica takes over at
    /// once) and deleting this replica's windows Lease.
    pub async fn run(self: Arc<Self>, client: kube::Client, mut shutdown: watch::Receiver<bool>) {
        let mut shell = Shell::new(
            &self.settings,
            Api::namespaced(client, &self.settings.namespace),
        );
        tracing::debug!(
            namespace = %self.settings.namespace,
            lease = %self.settings.lease,
            identity = %self.settings.identity,
            duration = %humantime::format_duration(self.settings.duration),
            "joining the leader election"
        );
        loop {
            let wait = tokio::select! {
                biased;
                () = stopped(&mut shutdown) => break,
                wait = self.tick(&mut shell) => wait,
            };
            tokio::select! {
                biased;
                () = stopped(&mut shutdown) => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
        self.stop(&mut shell).await;
    }

    /// One period: election, own windows, peers. Returns how long to wait before the next.
    async fn tick(&self, shell: &mut Shell) -> Duration {
        let elected = self.elect(shell).await;
        let published = self.write_windows(shell).await;
        let read = self.read_peers(shell).await;
        self.check_deadline();
        if elected && published && read {
            shell.backoff.reset();
            self.settings.retry_period()
        } else {
            shell.backoff.next()
        }
    }

    // --- the leader Lease ---

    /// Reads the leader Lease and creates, renews or takes it over, or follows its holder.
    /// False when an API call failed.
    async fn elect(&self, shell: &mut Shell) -> bool {
        self.check_deadline();
        let started_ms = self.clock.now_ms();
        let lease_name = self.settings.lease.as_str();
        let current = match self.call(shell.api.get_opt(lease_name)).await {
            Ok(current) => current,
            Err(error) => {
                return self.failed(&mut shell.logs.election, "read the leader lease", &error)
            }
        };
        let now_ms = self.clock.now_ms();
        let record = current.as_ref().map(LeaseRecord::of);
        shell.seen = observe(shell.seen.take(), record.as_ref(), now_ms);
        let step = decide(
            &self.settings.identity,
            record.as_ref(),
            shell.seen.as_ref(),
            now_ms,
            self.settings.duration_ms(),
        );
        let who = Claimant {
            lease: lease_name,
            namespace: &self.settings.namespace,
            identity: &self.settings.identity,
            duration_seconds: duration_seconds(self.settings.duration_ms()),
            now: wall_now(),
        };
        let Some(lease) = claim(&step, current.as_ref(), &who) else {
            if let Step::Follow { holder, .. } = step {
                self.follow(Some(holder));
            }
            self.recovered(&mut shell.logs.election, "the leader lease");
            return true;
        };
        let params = self.post_params();
        let written = match current {
            Some(_) => {
                self.call(shell.api.replace(lease_name, &params, &lease))
                    .await
            }
            None => self.call(shell.api.create(&params, &lease)).await,
        };
        match written {
            Ok(_) => {
                self.lead(started_ms, &step);
                self.recovered(&mut shell.logs.election, "the leader lease");
                true
            }
            Err(CallError::Conflict(_) | CallError::NotFound) => {
                // Someone wrote (or deleted) the Lease since it was read: the next read says who.
                self.conflicts.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(lease = %lease_name, ?step, "lost the race for the leader lease");
                self.step_down("another replica wrote the leader lease first");
                self.recovered(&mut shell.logs.election, "the leader lease");
                true
            }
            Err(error) => self.failed(&mut shell.logs.election, "write the leader lease", &error),
        }
    }

    /// A write of the leader Lease that started at local time `started_ms` succeeded.
    fn lead(&self, started_ms: u64, step: &Step) {
        let deadline = millis(self.settings.renew_deadline());
        self.leading_until_ms
            .store(started_ms.saturating_add(deadline), Ordering::Release);
        self.leader
            .store(Some(Arc::new(self.settings.identity.clone())));
        if matches!(step, Step::Renew) {
            self.renewals.fetch_add(1, Ordering::Relaxed);
        }
        if !self.leading.swap(true, Ordering::AcqRel) {
            self.transitions.fetch_add(1, Ordering::Relaxed);
            let from = match step {
                Step::TakeOver { from: Some(from) } => from.as_str(),
                Step::TakeOver { from: None } => "(released)",
                Step::Create => "(new lease)",
                Step::Renew | Step::Follow { .. } => "(itself)",
            };
            tracing::info!(
                lease = %self.settings.lease,
                identity = %self.settings.identity,
                from,
                "this replica is now the leader"
            );
        }
    }

    /// Another replica holds the Lease (or nobody, as last seen).
    fn follow(&self, holder: Option<String>) {
        if self.leader().as_deref() != holder.as_deref() {
            tracing::info!(lease = %self.settings.lease, leader = ?holder, "leader changed");
            self.leader.store(holder.map(Arc::new));
        }
        self.step_down("another replica holds the leader lease");
    }

    /// Stops leading now, if leading.
    fn step_down(&self, why: &str) {
        if self.leading.swap(false, Ordering::AcqRel) {
            self.leading_until_ms.store(0, Ordering::Release);
            self.transitions.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                lease = %self.settings.lease,
                identity = %self.settings.identity,
                "this replica is no longer the leader: {why}"
            );
        }
    }

    /// Steps down once the renew deadline has passed without a renewal.
    fn check_deadline(&self) {
        if self.leading.load(Ordering::Acquire)
            && self.clock.now_ms() >= self.leading_until_ms.load(Ordering::Acquire)
        {
            self.step_down("could not renew the leader lease within the renew deadline");
        }
    }

    // --- the windows Leases ---

    /// Writes the latest local windows into this replica's windows Lease (nothing before the
    /// first [`Self::publish`]). False when an API call failed.
    async fn write_windows(&self, shell: &mut Shell) -> bool {
        let Some(latest) = self.local.load_full() else {
            return true;
        };
        let json = match windows::to_json(&latest) {
            Ok(json) => json,
            Err(why) => {
                let (log, failures) = shell.logs.too_big.failed(&why);
                if log {
                    tracing::warn!(lease = %shell.own_name, failures, "not publishing windows: {why}");
                }
                return true;
            }
        };
        let by = Publisher {
            name: &shell.own_name,
            namespace: &self.settings.namespace,
            label: &shell.label,
            identity: &self.settings.identity,
            duration_seconds: duration_seconds(self.settings.duration_ms()),
            now: wall_now(),
        };
        let params = self.post_params();
        for attempt in 0..2 {
            let base = match shell.own.take() {
                Some(base) => Some(base),
                None => match self.call(shell.api.get_opt(&shell.own_name)).await {
                    Ok(base) => base,
                    Err(error) => {
                        return self.failed(
                            &mut shell.logs.windows,
                            "read this replica's windows lease",
                            &error,
                        )
                    }
                },
            };
            if let Some(foreign) = base
                .as_ref()
                .filter(|b| !is_own_windows_lease(b, &shell.label, &self.settings.identity))
            {
                self.refuse(&mut shell.logs.foreign, foreign, "overwrite");
                return true;
            }
            let lease = own_lease(base.as_ref(), &by, json.clone());
            let written = match base {
                Some(_) => {
                    self.call(shell.api.replace(&shell.own_name, &params, &lease))
                        .await
                }
                None => self.call(shell.api.create(&params, &lease)).await,
            };
            match written {
                Ok(written) => {
                    shell.own = Some(written);
                    self.recovered(&mut shell.logs.windows, "this replica's windows lease");
                    return true;
                }
                // Changed or deleted since last written: read it afresh once.
                Err(CallError::Conflict(_) | CallError::NotFound) if attempt == 0 => {
                    self.conflicts.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    return self.failed(
                        &mut shell.logs.windows,
                        "write this replica's windows lease",
                        &error,
                    )
                }
            }
        }
        true
    }

    /// Lists the windows Leases, refreshes [`Self::peers`] and, on the leader, deletes the
    /// garbage. False when an API call failed (stale peers still drop out).
    async fn read_peers(&self, shell: &mut Shell) -> bool {
        let selector = format!("{WINDOWS_OF_LABEL}={}", shell.label);
        let listed_ok = match self
            .call(shell.api.list(&ListParams::default().labels(&selector)))
            .await
        {
            Ok(list) => {
                let listing: Vec<_> = list.items.iter().map(listed).collect();
                shell.report_unreadable(&listing);
                shell.book.update(
                    listing,
                    &shell.own_name,
                    &self.settings.identity,
                    self.clock.now_ms(),
                );
                self.recovered(&mut shell.logs.peers, "the windows leases");
                true
            }
            Err(error) => self.failed(&mut shell.logs.peers, "list the windows leases", &error),
        };
        let now_ms = self.clock.now_ms();
        let duration_ms = self.settings.duration_ms();
        self.refresh_peers(&shell.book, now_ms);
        if !listed_ok || !self.is_leader() {
            return listed_ok;
        }
        let garbage = shell.book.garbage(now_ms, duration_ms);
        shell
            .refused
            .retain(|refused| garbage.iter().any(|(name, ..)| name == refused));
        for (name, resource_version, managed) in garbage {
            if !managed {
                if shell.refused.insert(name.clone()) {
                    self.refused_writes.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        lease = %name,
                        "not deleting a stale windows lease without the label {MANAGED_BY_LABEL}={MANAGED_BY}: Forecourt did not create it"
                    );
                }
                continue;
            }
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    resource_version,
                    uid: None,
                }),
                ..DeleteParams::default()
            };
            match self.call(shell.api.delete(&name, &params)).await {
                Ok(_) | Err(CallError::NotFound) => {
                    shell.book.forget(&name);
                    tracing::info!(lease = %name, "deleted a windows lease nobody renewed for {GARBAGE_AFTER_DURATIONS} lease durations");
                }
                // Renewed meanwhile: the next listing shows the change.
                Err(CallError::Conflict(_)) => {
                    self.conflicts.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    return self.failed(
                        &mut shell.logs.garbage,
                        "delete a stale windows lease",
                        &error,
                    )
                }
            }
        }
        self.recovered(&mut shell.logs.garbage, "stale windows leases");
        true
    }

    /// Stores the fresh and the stale peers of `book` as of local time `now_ms`, and logs when
    /// the stale ones change (they hold the leader's scale-downs).
    fn refresh_peers(&self, book: &PeerBook, now_ms: u64) {
        let duration_ms = self.settings.duration_ms();
        self.peers.store(Arc::new(book.fresh(now_ms, duration_ms)));
        let stale = book.stale(now_ms, duration_ms);
        let before = self.stale.swap(Arc::new(stale.clone()));
        if *before == stale {
            return;
        }
        // Only the leader's decisions are held: followers note it quietly.
        if !self.is_leader() {
            tracing::debug!(lease = %self.settings.lease, stale = ?stale, "peers with stale windows");
        } else if stale.is_empty() {
            tracing::info!(
                lease = %self.settings.lease,
                "no peer's windows are stale any more: scale-downs may go ahead"
            );
        } else {
            tracing::info!(
                lease = %self.settings.lease,
                stale = ?stale,
                "peers' windows are not fresh: their load may still be real, so scale-downs are held for up to {HOLD_WHILE_STALE_DURATIONS} more lease durations"
            );
        }
    }

    /// Counts and logs (throttled) a refused write of `lease`, which Forecourt did not create.
    fn refuse(&self, throttle: &mut Throttle, lease: &Lease, what: &str) {
        self.refused_writes.fetch_add(1, Ordering::Relaxed);
        let name = lease.metadata.name.as_deref().unwrap_or("");
        let (log, refusals) = throttle.failed(name);
        if log {
            tracing::warn!(
                lease = %name,
                identity = %self.settings.identity,
                refusals,
                "not going to {what} a lease without the label {MANAGED_BY_LABEL}={MANAGED_BY}: Forecourt did not create it"
            );
        }
    }

    // --- stopping ---

    /// Steps down, releases the leader Lease if this replica holds it, deletes its windows Lease.
    async fn stop(&self, shell: &mut Shell) {
        self.step_down("shutting down");
        let lease_name = self.settings.lease.as_str();
        let params = self.post_params();
        for _attempt in 0..2 {
            let current = match self.call(shell.api.get_opt(lease_name)).await {
                Ok(Some(current)) => current,
                Ok(None) => break,
                Err(error) => {
                    self.failed(
                        &mut shell.logs.election,
                        "read the leader lease to release it",
                        &error,
                    );
                    break;
                }
            };
            if LeaseRecord::of(&current).holder.as_deref() != Some(self.settings.identity.as_str())
            {
                break;
            }
            let free = released(&current, wall_now());
            match self
                .call(shell.api.replace(lease_name, &params, &free))
                .await
            {
                Ok(_) => {
                    self.leader.store(None);
                    tracing::info!(lease = %lease_name, identity = %self.settings.identity, "released the leader lease");
                    break;
                }
                // An in-flight renewal landed: read it again once.
                Err(CallError::Conflict(_)) => {
                    self.conflicts.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    self.failed(&mut shell.logs.election, "release the leader lease", &error);
                    break;
                }
            }
        }
        let own = match shell.own.take() {
            Some(own) => Some(own),
            None => match self.call(shell.api.get_opt(&shell.own_name)).await {
                Ok(found) => found,
                Err(error) => {
                    self.failed(
                        &mut shell.logs.windows,
                        "read this replica's windows lease to delete it",
                        &error,
                    );
                    None
                }
            },
        };
        let own = own.filter(|lease| {
            let mine = is_own_windows_lease(lease, &shell.label, &self.settings.identity);
            if !mine {
                self.refuse(&mut shell.logs.foreign, lease, "delete");
            }
            mine
        });
        let deleted = match own {
            // The uid precondition: only the very Lease just read or written, never a successor.
            Some(own) => {
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        resource_version: None,
                        uid: own.metadata.uid.clone(),
                    }),
                    ..DeleteParams::default()
                };
                self.call(shell.api.delete(&shell.own_name, &params))
                    .await
                    .map(drop)
            }
            None => Ok(()),
        };
        match deleted {
            Ok(()) | Err(CallError::NotFound) => {}
            // Replaced since it was read: not this replica's to delete any more.
            Err(CallError::Conflict(_)) => {
                self.conflicts.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                self.failed(
                    &mut shell.logs.windows,
                    "delete this replica's windows lease",
                    &error,
                );
            }
        }
        tracing::info!(lease = %lease_name, identity = %self.settings.identity, "left the leader election");
    }

    // --- calls and their failures ---

    /// Runs one API call, bounded by the retry period.
    async fn call<T>(
        &self,
        request: impl Future<Output = kube::Result<T>>,
    ) -> Result<T, CallError> {
        bounded_call(self.settings.retry_period().max(MIN_CALL_TIMEOUT), request).await
    }

    /// Counts a failed call and logs it (throttled). Always false, for `return self.failed(..)`.
    fn failed(&self, throttle: &mut Throttle, what: &str, error: &CallError) -> bool {
        self.api_errors.fetch_add(1, Ordering::Relaxed);
        let message = error.to_string();
        let (log, failures) = throttle.failed(&message);
        if log {
            tracing::warn!(
                lease = %self.settings.lease,
                identity = %self.settings.identity,
                failures,
                error = %message,
                "could not {what}; retrying"
            );
        }
        false
    }

    /// Notes a success after failures (logged once).
    fn recovered(&self, throttle: &mut Throttle, what: &str) {
        let failures = throttle.succeeded();
        if failures > 0 {
            tracing::info!(lease = %self.settings.lease, failures, "{what}: API calls work again");
        }
    }

    /// Parameters of every create and replace.
    fn post_params(&self) -> PostParams {
        PostParams {
            dry_run: false,
            field_manager: Some(self.settings.field_manager.clone()),
        }
    }
}

/// Resolves when the shutdown flag turns true or its sender is gone.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // Err: the sender is gone, so nobody can stop this task later either.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// State of the `run` loop, owned by it.
struct Shell {
    /// Leases in the settings' namespace.
    api: Api<Lease>,
    /// This replica's windows Lease name.
    own_name: String,
    /// The windows label value.
    label: String,
    /// The leader Lease's last observed change.
    seen: Option<election::Observation>,
    /// This replica's windows Lease as last written.
    own: Option<Lease>,
    /// The other replicas' windows Leases.
    book: PeerBook,
    /// `name@version` of unreadable windows Leases already reported.
    unreadable: std::collections::HashSet<String>,
    /// Stale windows Leases without the managed-by label, already reported (never deleted).
    refused: std::collections::HashSet<String>,
    /// Wait after failures.
    backoff: Backoff,
    /// Log throttles, per kind of call.
    logs: Logs,
}

/// One log throttle per kind of call.
#[derive(Debug, Default)]
struct Logs {
    /// The leader Lease.
    election: Throttle,
    /// This replica's windows Lease.
    windows: Throttle,
    /// Windows too large to publish.
    too_big: Throttle,
    /// The listing.
    peers: Throttle,
    /// Deleting stale windows Leases.
    garbage: Throttle,
    /// A Lease not Forecourt's under this replica's windows Lease name.
    foreign: Throttle,
}

impl Shell {
    /// Fresh loop state.
    fn new(settings: &LeaseSettings, api: Api<Lease>) -> Self {
        let retry = settings.retry_period();
        Self {
            api,
            own_name: settings.windows_lease(),
            label: windows_label(&settings.lease),
            seen: None,
            own: None,
            book: PeerBook::default(),
            unreadable: std::collections::HashSet::new(),
            refused: std::collections::HashSet::new(),
            backoff: Backoff::new((retry / 8).max(MIN_RETRY_PERIOD), retry),
            logs: Logs::default(),
        }
    }

    /// Logs each unreadable windows Lease once per version.
    fn report_unreadable(&mut self, listing: &[windows::Listed]) {
        let mut now_unreadable = std::collections::HashSet::new();
        for item in listing.iter().filter(|item| item.name != self.own_name) {
            if let Err(why) = &item.windows {
                let key = format!("{}@{}", item.name, item.version);
                if !self.unreadable.contains(&key) {
                    tracing::warn!(lease = %item.name, "ignoring a peer's windows: {why}");
                }
                now_unreadable.insert(key);
            }
        }
        self.unreadable = now_unreadable;
    }
}

/// Now on the wall clock, for the Lease's MicroTime fields (written, never compared).
fn wall_now() -> MicroTime {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|since| i64::try_from(since.as_micros()).ok())
        .unwrap_or(0);
    MicroTime(Timestamp::from_microsecond(micros).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// A duration in whole milliseconds, saturating.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
