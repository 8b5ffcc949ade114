//! The instances of one service confirmed ready, as one immutable snapshot partitioned by version.

use std::ops::Range;
use std::sync::Arc;

use super::instance::Instance;

/// The instances of one service that are confirmed ready, as one immutable snapshot.
#[derive(Debug, Default)]
pub struct ReadySet {
    /// Every ready instance, in a stable order: those unflagged requests may use first, then
    /// each flagged version's together (in the order the policy lists the versions).
    pub instances: Vec<Arc<Instance>>,
    /// How many of `instances`, from the start, unflagged requests may use.
    unflagged: usize,
    /// Each flagged version with ready instances, and where they are in `instances`.
    versions: Vec<(Arc<str>, Range<usize>)>,
}

// === impl ReadySet ===

impl ReadySet {
    /// Partitions `ready` (in a stable order) for a service whose flagged versions are
    /// `flagged`: instances of those versions go last, grouped by version.
    pub fn new(mut ready: Vec<Arc<Instance>>, flagged: &[Arc<str>]) -> Self {
        if flagged.is_empty() {
            return Self {
                unflagged: ready.len(),
                instances: ready,
                versions: Vec::new(),
            };
        }
        let group = |i: &Instance| flagged.iter().position(|v| **v == *i.version);
        // Stable: each part keeps the order the instances had.
        ready.sort_by_key(|i| group(i).map_or(0, |g| g + 1));
        let unflagged = ready.iter().take_while(|i| group(i).is_none()).count();
        let mut versions = Vec::new();
        let mut start = unflagged;
        for (g, name) in flagged.iter().enumerate() {
            let len = ready[start..]
                .iter()
                .take_while(|i| group(i) == Some(g))
                .count();
            if len > 0 {
                versions.push((Arc::clone(name), start..start + len));
            }
            start += len;
        }
        Self {
            instances: ready,
            unflagged,
            versions,
        }
    }

    /// The ready instances unflagged requests may use: every one whose version is not one of
    /// the service's flagged versions (all of them when it has none).
    pub fn unflagged(&self) -> &[Arc<Instance>] {
        self.instances.get(..self.unflagged).unwrap_or_default()
    }

    /// The ready instances of flagged version `version` (empty when it has none ready).
    pub fn version(&self, version: &str) -> &[Arc<Instance>] {
        self.versions
            .iter()
            .find(|(name, _)| **name == *version)
            .and_then(|(_, range)| self.instances.get(range.clone()))
            .unwrap_or_default()
    }

    /// Each flagged version with ready instances, and those instances.
    pub fn versions(&self) -> impl Iterator<Item = (&str, &[Arc<Instance>])> + '_ {
        self.versions.iter().map(|(name, range)| {
            (
                &**name,
                self.instances.get(range.clone()).unwrap_or_default(),
            )
        })
    }
}
