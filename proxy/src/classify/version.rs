//! Feature-flagged versions on the request path: which version a request's flag names, and
//! which of the ready instances it may go to.
//!
//! ```text
//!  request_filter ── service has no versions: ──► unflagged: ReadySet::unflagged()  (no new work)
//!        │ it has
//!        ▼
//!  flag (header, cookie) == versions[i].flag? (bytes) ── no ──► unflagged (never a flagged version)
//!        │ yes: last seen, arrivals, routed count (atomics)
//!        ▼
//!  ReadySet::version(v) has instances ──► pick among them                       routed="version"
//!        │ none ready yet
//!        ├─ until_ready: stable ──► ReadySet::unflagged()                        routed="stable"
//!        └─ until_ready: hold ────► held until the version is ready (503 at the deadline)  "held"
//!
//!  control loop (orchestrator): last seen per version (HostState) ─► PreDeployer ─► set_replicas
//! ```
//!
//! The ready set is partitioned by version when it is built (see
//! [`forecourt_orchestrator::ReadySet`]), so choosing among a version's instances is a slice, not a
//! filter. Flagged requests skip the response cache, which holds the stable version's answers.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use forecourt_config::{ServiceConfig, UntilReady, VersionConfig};
use forecourt_orchestrator::{Instance, ReadySet};
use forecourt_predictor::{SlidingWindow, WindowConfig};

/// Where a flagged request was sent when it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// To its version's ready instances.
    Version,
    /// To the stable instances, because its version had none ready (`until_ready: stable`).
    Stable,
    /// Held until its version is ready (`until_ready: hold`).
    Held,
}

// === impl Routed ===

impl Routed {
    /// Every outcome, in metric order.
    pub const ALL: [Routed; 3] = [Routed::Version, Routed::Stable, Routed::Held];

    /// The `routed` label.
    pub fn label(self) -> &'static str {
        match self {
            Routed::Version => "version",
            Routed::Stable => "stable",
            Routed::Held => "held",
        }
    }
}

/// A flagged version's live counters, kept across reloads while the version stays.
#[derive(Debug)]
pub struct VersionStats {
    /// When a request with the flag was last seen (proxy clock ms); 0 = never.
    last_seen_ms: AtomicU64,
    /// Flagged arrivals, in the predictor's 1 s × 60 windows.
    arrivals: SlidingWindow,
    /// Flagged requests by [`Routed`].
    routed: [AtomicU64; 3],
}

impl Default for VersionStats {
    fn default() -> Self {
        Self {
            last_seen_ms: AtomicU64::new(0),
            arrivals: SlidingWindow::new(WindowConfig::default()),
            routed: Default::default(),
        }
    }
}

// === impl VersionStats ===

impl VersionStats {
    /// Records a request carrying the flag at `now_ms` (atomics only); true when the flag had
    /// not been seen for `grace_ms`, so the version is idle and wants ordering now.
    pub fn seen(&self, now_ms: u64, grace_ms: u64) -> bool {
        let now_ms = now_ms.max(1);
        self.arrivals.record(now_ms, 1);
        let last = self.last_seen_ms.load(Relaxed);
        if last < now_ms {
            // Read first: concurrent flagged requests in the same millisecond write nothing.
            self.last_seen_ms.fetch_max(now_ms, Relaxed);
        }
        last == 0 || now_ms.saturating_sub(last) >= grace_ms
    }

    /// When the flag was last seen, if ever.
    pub fn last_seen_ms(&self) -> Option<u64> {
        Some(self.last_seen_ms.load(Relaxed)).filter(|&ms| ms > 0)
    }

    /// Flagged requests in the last minute.
    pub fn requests_last_minute(&self, now_ms: u64) -> u64 {
        self.arrivals.sum(now_ms, 60_000)
    }

    /// Counts where a flagged request was sent.
    pub fn count(&self, routed: Routed) {
        self.routed[routed as usize].fetch_add(1, Relaxed);
    }

    /// Flagged requests sent `routed`.
    pub fn routed(&self, routed: Routed) -> u64 {
        self.routed[routed as usize].load(Relaxed)
    }
}

/// One flagged version of a service as the request path sees it.
#[derive(Debug)]
pub struct VersionRuntime {
    /// Its policy entry.
    pub config: VersionConfig,
    /// Its counters (kept across reloads).
    pub stats: Arc<VersionStats>,
    /// `config.grace` in ms.
    grace_ms: u64,
}

/// The flagged versions of `config`, keeping the counters of versions `before` had.
pub fn runtimes(
    config: &ServiceConfig,
    before: Option<&[VersionRuntime]>,
) -> Box<[VersionRuntime]> {
    config
        .versions
        .iter()
        .map(|version| VersionRuntime {
            stats: before
                .and_then(|b| b.iter().find(|v| v.config.version == version.version))
                .map(|v| Arc::clone(&v.stats))
                .unwrap_or_default(),
            grace_ms: u64::try_from(version.grace.as_millis()).unwrap_or(u64::MAX),
            config: version.clone(),
        })
        .collect()
}

/// The version whose flag is `flag` (byte compare; no allocation), by index.
pub fn matching(versions: &[VersionRuntime], flag: &[u8]) -> Option<usize> {
    versions
        .iter()
        .position(|v| v.config.flag.as_bytes() == flag)
}

// === impl VersionRuntime ===

impl VersionRuntime {
    /// Records a request carrying this version's flag; true when the version was idle.
    pub fn seen(&self, now_ms: u64) -> bool {
        self.stats.seen(now_ms, self.grace_ms)
    }

    /// Where a request for this version goes with `ready` as the ready set, and counts it.
    pub fn route(&self, ready: &ReadySet) -> Routed {
        let routed = if !ready.version(&self.config.version).is_empty() {
            Routed::Version
        } else {
            match self.config.until_ready {
                UntilReady::Stable => Routed::Stable,
                UntilReady::Hold => Routed::Held,
            }
        };
        self.stats.count(routed);
        routed
    }
}

/// The instances a request may go to: an unflagged one (`version` is `None`) only to instances
/// of no flagged version; a flagged one to its version's, or, while none is ready, to the
/// unflagged ones (`until_ready: stable`) or to none (`hold`: it waits).
pub fn candidates<'r>(
    ready: &'r ReadySet,
    version: Option<&VersionRuntime>,
) -> &'r [Arc<Instance>] {
    let Some(version) = version else {
        return ready.unflagged();
    };
    let own = ready.version(&version.config.version);
    match version.config.until_ready {
        UntilReady::Stable if own.is_empty() => ready.unflagged(),
        _ => own,
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use forecourt_config::WhenIdle;

    use super::*;

    fn version(flag: &str, until_ready: UntilReady) -> VersionConfig {
        VersionConfig {
            flag: flag.into(),
            version: flag.into(),
            image: None,
            container: None,
            labels: Vec::new(),
            command: None,
            replicas: 1,
            until_ready,
            grace: Duration::from_secs(10),
            when_idle: WhenIdle::ScaleToZero,
        }
    }

    fn service(versions: Vec<VersionConfig>) -> ServiceConfig {
        let policy = forecourt_config::Policy::parse(
            "services: [{ name: shop, routes: [{ path_prefix: /shop }], instances: [{ address: \"127.0.0.1:1\" }] }]",
            std::path::Path::new("p.yaml"),
        )
        .expect("valid");
        let mut config = policy.services[0].clone();
        config.versions = versions;
        config
    }

    /// A ready set of instances with these versions, on ports 1, 2, ….
    fn ready(versions: &[&str], flagged: &[&str]) -> ReadySet {
        let instances = versions
            .iter()
            .zip(1..)
            .map(|(v, port)| Arc::new(Instance::new(SocketAddr::from(([127, 0, 0, 1], port)), v)))
            .collect();
        let flagged: Vec<Arc<str>> = flagged.iter().map(|v| Arc::from(*v)).collect();
        ReadySet::new(instances, &flagged)
    }

    fn ports(instances: &[Arc<Instance>]) -> Vec<u16> {
        instances.iter().map(|i| i.address.port()).collect()
    }

    #[test]
    fn flags_match_by_bytes() {
        let config = service(vec![
            version("beta", UntilReady::Stable),
            version("gamma", UntilReady::Hold),
        ]);
        let versions = runtimes(&config, None);
        assert_eq!(matching(&versions, b"beta"), Some(0));
        assert_eq!(matching(&versions, b"gamma"), Some(1));
        assert_eq!(matching(&versions, b"Beta"), None);
        assert_eq!(matching(&versions, b"bet"), None);
        assert_eq!(matching(&[], b"beta"), None);
    }

    #[test]
    fn unflagged_requests_never_reach_a_flagged_version() {
        let set = ready(&["beta", "stable", "v2", "beta"], &["beta"]);
        assert_eq!(
            ports(candidates(&set, None)),
            [2, 3],
            "v2 is no flagged version"
        );
        // Without flagged versions every ready instance is a candidate, as before.
        let plain = ready(&["beta", "stable"], &[]);
        assert_eq!(ports(candidates(&plain, None)), [1, 2]);
    }

    #[test]
    fn flagged_requests_go_to_their_version_once_ready_and_until_then_per_policy() {
        let config = service(vec![
            version("beta", UntilReady::Stable),
            version("gamma", UntilReady::Hold),
        ]);
        let versions = runtimes(&config, None);
        let (beta, gamma) = (&versions[0], &versions[1]);

        // Nothing of either version is ready yet.
        let early = ready(&["stable", "stable"], &["beta", "gamma"]);
        assert_eq!(beta.route(&early), Routed::Stable);
        assert_eq!(ports(candidates(&early, Some(beta))), [1, 2]);
        assert_eq!(gamma.route(&early), Routed::Held);
        assert!(
            candidates(&early, Some(gamma)).is_empty(),
            "held until ready"
        );

        // Both are ready: each flag gets only its own version.
        let later = ready(&["gamma", "stable", "beta", "beta"], &["beta", "gamma"]);
        assert_eq!(beta.route(&later), Routed::Version);
        assert_eq!(ports(candidates(&later, Some(beta))), [3, 4]);
        assert_eq!(gamma.route(&later), Routed::Version);
        assert_eq!(ports(candidates(&later, Some(gamma))), [1]);
        assert_eq!(ports(candidates(&later, None)), [2]);

        assert_eq!(beta.stats.routed(Routed::Stable), 1);
        assert_eq!(beta.stats.routed(Routed::Version), 1);
        assert_eq!(gamma.stats.routed(Routed::Held), 1);
    }

    #[test]
    fn sightings_wake_an_idle_version_and_survive_a_reload() {
        let config = service(vec![version("beta", UntilReady::Stable)]);
        let versions = runtimes(&config, None);
        let beta = &versions[0];
        assert_eq!(beta.stats.last_seen_ms(), None);
        assert!(beta.seen(1_000), "first sighting wakes it");
        assert!(!beta.seen(5_000));
        assert!(!beta.seen(4_000), "late clock reads never move it back");
        assert_eq!(beta.stats.last_seen_ms(), Some(5_000));
        assert!(beta.seen(15_000), "a grace later it is idle again");
        assert_eq!(beta.stats.requests_last_minute(15_000), 4);

        // A reload keeps a remaining version's counters and starts a new one's afresh.
        let reloaded = service(vec![
            version("gamma", UntilReady::Stable),
            version("beta", UntilReady::Hold),
        ]);
        let after = runtimes(&reloaded, Some(&versions));
        assert!(Arc::ptr_eq(&after[1].stats, &beta.stats));
        assert_eq!(after[1].config.until_ready, UntilReady::Hold);
        assert_eq!(after[0].stats.last_seen_ms(), None);
    }
}
