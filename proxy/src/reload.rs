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
//! Requests in flight finish on the snapshot they started with. This file keeps the policy
//! file's state and history; [`FrontDoor::reload`](crate::FrontDoor::reload) does the swap and
//! the server's policy watcher triggers it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use forecourt_config::LoadError;
use forecourt_predictor::unix_now_ms;
use tokio::sync::watch;

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
            loaded_at_unix_ms: AtomicU64::new(unix_now_ms()),
            applied: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            reloading: tokio::sync::Mutex::new(()),
        }
    }
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

    /// Serialises reloads: held for the whole of one (control path only).
    pub(crate) async fn one_at_a_time(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.reloading.lock().await
    }

    /// Records an applied policy: counts it, clears the last rejection and bumps the generation
    /// (health checkers follow it); returns the new generation.
    pub(crate) fn applied(&self) -> u64 {
        self.applied.fetch_add(1, Ordering::Relaxed);
        self.loaded_at_unix_ms
            .store(unix_now_ms(), Ordering::Relaxed);
        *self
            .last_rejection
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        let mut generation = 0;
        self.generation.send_modify(|g| {
            *g += 1;
            generation = *g;
        });
        generation
    }

    /// Records a refused reload triggered by `trigger`, with its problems.
    pub(crate) fn refused(&self, trigger: &str, problems: &[String]) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        *self
            .last_rejection
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Rejection {
            at_unix_ms: unix_now_ms(),
            trigger: trigger.to_owned(),
            problems: problems.to_vec(),
        });
    }

    /// The last rejected reload, if any since the last applied one.
    pub fn last_rejection(&self) -> Option<Rejection> {
        self.last_rejection
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Every problem of a policy file that failed to load, one line each.
pub(crate) fn problems(error: LoadError) -> Vec<String> {
    match error {
        LoadError::Invalid { problems, .. } => problems.iter().map(ToString::to_string).collect(),
        other => vec![match std::error::Error::source(&other) {
            Some(source) => format!("{other}: {source}"),
            None => other.to_string(),
        }],
    }
}
