//! Hot reload of the policy file: on a change of the file, SIGHUP or `POST /v1/reload`, the new
//! file is parsed and validated in full, then swapped in atomically. A rejected file changes
//! nothing; its problems are logged, counted and shown by `GET /v1/config`.
//!
//! ```text
//!  file changed (polled) ─┐
//!  SIGHUP ────────────────┼─► Policy::load ─► rejected: log + metric + /v1/config, keep serving
//!  POST /v1/reload ───────┘        │ valid
//!                                  ▼
//!        Snapshot::new(policy, previous)  (same services keep instances, windows, counters)
//!        ─► install (ArcSwap)  ─► retire removed services ─► LocalOrchestrator::configure
//!        ─► health checkers follow (reloaded watch)
//! ```
//!
//! Requests in flight finish on the snapshot they started with.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use forecourt_config::{LoadError, Policy};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::watch;

use crate::control::local_services;
use crate::state::{FrontDoor, Snapshot};

/// How often the policy file is checked for changes.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new policy serves now.
    Applied {
        /// The new generation.
        generation: u64,
    },
    /// The file was refused; the running policy keeps serving.
    Rejected {
        /// Every problem, `file:line:column: path: reason`.
        problems: Vec<String>,
    },
    /// Forecourt runs without a policy file (the embedded demo): nothing to reload.
    NoFile,
}

/// The last rejected reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// When (UNIX ms).
    pub at_unix_ms: u64,
    /// What triggered it: `file`, `signal` or `api`.
    pub trigger: String,
    /// Every problem found.
    pub problems: Vec<String>,
}

/// The policy file and the history of its reloads.
#[derive(Debug)]
pub struct ConfigState {
    path: Mutex<Option<PathBuf>>,
    /// Bumped on every applied policy; health checkers follow it.
    generation: watch::Sender<u64>,
    last_rejection: Mutex<Option<Rejection>>,
    loaded_at_unix_ms: AtomicU64,
    /// Reloads applied.
    pub applied: AtomicU64,
    /// Reloads rejected.
    pub rejected: AtomicU64,
    /// Serialises reloads (control path only).
    reloading: tokio::sync::Mutex<()>,
}

impl Default for ConfigState {
    fn default() -> Self {
        Self {
            path: Mutex::new(None),
            generation: watch::channel(1).0,
            last_rejection: Mutex::new(None),
            loaded_at_unix_ms: AtomicU64::new(unix_ms()),
            applied: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            reloading: tokio::sync::Mutex::new(()),
        }
    }
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

// === impl ConfigState ===

impl ConfigState {
    /// Remembers the file the running policy came from.
    pub fn set_path(&self, path: &Path) {
        *self.path.lock().unwrap_or_else(|e| e.into_inner()) = Some(path.to_owned());
    }

    /// The policy file, if Forecourt runs from one.
    pub fn path(&self) -> Option<PathBuf> {
        self.path.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The generation of the running policy (1 at start).
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    /// A receiver that sees every applied policy.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// When the running policy was applied (UNIX ms).
    pub fn loaded_at_unix_ms(&self) -> u64 {
        self.loaded_at_unix_ms.load(Ordering::Relaxed)
    }

    /// The last rejected reload, if any since the last applied one.
    pub fn last_rejection(&self) -> Option<Rejection> {
        self.last_rejection
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

// === impl FrontDoor ===

impl FrontDoor {
    /// Reads, validates and applies the policy file; `trigger` names what asked for it.
    pub async fn reload(&self, trigger: &str) -> ReloadOutcome {
        let _one_at_a_time = self.config.reloading.lock().await;
        let Some(path) = self.config.path() else {
            return ReloadOutcome::NoFile;
        };
        let loaded = tokio::task::spawn_blocking(move || Policy::load(&path)).await;
        let result = match loaded {
            Ok(result) => result,
            Err(e) => Err(LoadError::Read {
                path: self.config.path().unwrap_or_default(),
                source: std::io::Error::other(e.to_string()),
            }),
        };
        match result.map_err(problems).and_then(|p| self.apply(p)) {
            Ok(generation) => {
                tracing::info!(trigger, generation, "policy reloaded");
                ReloadOutcome::Applied { generation }
            }
            Err(problems) => {
                for problem in &problems {
                    tracing::error!(trigger, %problem, "policy reload rejected");
                }
                self.config.rejected.fetch_add(1, Ordering::Relaxed);
                *self
                    .config
                    .last_rejection
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(Rejection {
                    at_unix_ms: unix_ms(),
                    trigger: trigger.to_owned(),
                    problems: problems.clone(),
                });
                ReloadOutcome::Rejected { problems }
            }
        }
    }

    /// Swaps in a validated policy; returns its generation, or why it cannot apply while running.
    pub fn apply(&self, policy: Policy) -> Result<u64, Vec<String>> {
        let old = self.snapshot();
        if policy.listeners != old.policy.listeners {
            let file = self.config.path().unwrap_or_default();
            return Err(vec![format!(
                "{}: listeners: the proxy and admin addresses cannot change while running; restart forecourt (or start the new one with --upgrade)",
                file.display()
            )]);
        }
        let local = local_services(&policy);
        let snapshot = Snapshot::new(Arc::new(policy), Some(&old));
        for service in old.fleet.services() {
            if snapshot.fleet.service(&service.name).is_none() {
                let _ = service.retire_all();
                self.retire(Arc::clone(service));
            }
        }
        self.install(snapshot);
        if let Some(orchestrator) = self.orchestrator.get() {
            if let Err(error) = orchestrator.configure(local) {
                tracing::error!(%error, "the local orchestrator refused the new launch specs");
            }
        }
        if let Some((kubernetes, _)) = self.kubernetes.get() {
            kubernetes.reconfigure(&self.snapshot().policy);
        } else if self
            .snapshot()
            .policy
            .services
            .iter()
            .any(|s| s.kubernetes.is_some())
        {
            tracing::warn!("services with kubernetes: need a restart when the policy Forecourt started with had none");
        }
        self.config.applied.fetch_add(1, Ordering::Relaxed);
        self.config
            .loaded_at_unix_ms
            .store(unix_ms(), Ordering::Relaxed);
        *self
            .config
            .last_rejection
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        let mut generation = 0;
        self.config.generation.send_modify(|g| {
            *g += 1;
            generation = *g;
        });
        Ok(generation)
    }
}

fn problems(error: LoadError) -> Vec<String> {
    match error {
        LoadError::Invalid { problems, .. } => problems.iter().map(ToString::to_string).collect(),
        other => vec![match std::error::Error::source(&other) {
            Some(source) => format!("{other}: {source}"),
            None => other.to_string(),
        }],
    }
}

/// What identifies a version of the policy file on disk.
fn fingerprint(path: &Path) -> Option<(SystemTime, u64, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    let text = std::fs::read(path).ok()?;
    let hash = ahash::RandomState::with_seeds(1, 2, 3, 4).hash_one(&text);
    Some((meta.modified().ok()?, meta.len(), hash))
}

/// Watches the policy file (polling) and SIGHUP, and reloads on either.
pub struct PolicyWatcher(pub Arc<FrontDoor>);

#[async_trait]
impl BackgroundService for PolicyWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let front_door = &self.0;
        let Some(path) = front_door.config.path() else {
            return;
        };
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut seen = fingerprint(&path);
        let mut ticker = tokio::time::interval(WATCH_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let trigger = tokio::select! {
                _ = ticker.tick() => "file",
                Some(()) = async { hangup.as_mut()?.recv().await } => "signal",
                _ = shutdown.changed() => return,
            };
            let now = fingerprint(&path);
            // A file being written may be caught half-way; the next poll sees the rest.
            if trigger == "file" && (now == seen || now.is_none()) {
                continue;
            }
            seen = now;
            let _ = front_door.reload(trigger).await;
        }
    }
}
