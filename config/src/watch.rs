//! Noticing that the policy file changed on disk, so the caller loads and validates it again.
//!
//! ```text
//!  every poll: PolicyFileWatch::changed()
//!      fingerprint = (modification time, length, content hash), or none if unreadable
//!      none, or the same as last seen ──► false (a half-written file is retried next poll)
//!      different ─────────────────────► remember it, true ──► Policy::load
//! ```
//!
//! Synchronous and IO-only: the caller owns the timer (and any signal that reloads as well).

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What identifies one version of the policy file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    /// Last modification time.
    modified: SystemTime,
    /// Length in bytes.
    len: u64,
    /// Hash of the content (stable within one process).
    hash: u64,
}

// === impl Fingerprint ===

impl Fingerprint {
    /// The fingerprint of the file at `path` now; `None` when it cannot be read.
    fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        let content = std::fs::read(path).ok()?;
        let mut hasher = DefaultHasher::new();
        hasher.write(&content);
        Some(Self {
            modified: meta.modified().ok()?,
            len: meta.len(),
            hash: hasher.finish(),
        })
    }
}

/// Polls a policy file and tells when it changed since it was last seen.
#[derive(Debug)]
pub struct PolicyFileWatch {
    path: PathBuf,
    seen: Option<Fingerprint>,
}

// === impl PolicyFileWatch ===

impl PolicyFileWatch {
    /// Watches the file at `path`, taking what is there now as seen.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let seen = Fingerprint::of(&path);
        Self { path, seen }
    }

    /// The file watched.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when the file is readable and its modification time, length or content differs from
    /// what was last seen; that version then counts as seen. An unreadable file is no change.
    pub fn changed(&mut self) -> bool {
        match Fingerprint::of(&self.path) {
            Some(now) if self.seen != Some(now) => {
                self.seen = Some(now);
                true
            }
            _ => false,
        }
    }

    /// Takes the file as it is now as seen, after a reload that something else triggered.
    pub fn mark_seen(&mut self) {
        self.seen = Fingerprint::of(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A file under the system temp dir, unique to this test, removed when dropped.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str) -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let unique = NEXT.fetch_add(1, Ordering::Relaxed);
            let file = format!(
                "forecourt-config-watch-{}-{unique}-{name}.yaml",
                std::process::id()
            );
            Self(std::env::temp_dir().join(file))
        }

        fn write(&self, text: &str) {
            std::fs::write(&self.0, text).expect("write the temp file");
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn an_unchanged_file_is_no_change() {
        let file = TempFile::new("unchanged");
        file.write("services: []\n");
        let mut watch = PolicyFileWatch::new(&file.0);
        assert_eq!(watch.path(), file.0);
        assert!(!watch.changed());
        assert!(!watch.changed());
    }

    #[test]
    fn new_content_is_a_change_once() {
        let file = TempFile::new("changed");
        file.write("services: []\n");
        let mut watch = PolicyFileWatch::new(&file.0);
        file.write("services:\n  - name: shop\n");
        assert!(watch.changed());
        assert!(!watch.changed(), "the new version is seen now");
    }

    #[test]
    fn new_content_of_the_same_length_is_a_change() {
        let file = TempFile::new("same-length");
        file.write("limits: { max_in_flight: 100 }\n");
        let mut watch = PolicyFileWatch::new(&file.0);
        file.write("limits: { max_in_flight: 200 }\n");
        assert!(watch.changed(), "the content hash tells them apart");
    }

    #[test]
    fn a_deleted_file_is_no_change_until_it_is_back() {
        let file = TempFile::new("deleted");
        file.write("services: []\n");
        let mut watch = PolicyFileWatch::new(&file.0);
        std::fs::remove_file(&file.0).expect("remove the temp file");
        assert!(!watch.changed());
        assert!(!watch.changed());
        file.write("services:\n  - name: shop\n");
        assert!(watch.changed(), "retried on the next poll");
    }

    #[test]
    fn a_file_that_appears_is_a_change() {
        let file = TempFile::new("appears");
        let mut watch = PolicyFileWatch::new(&file.0);
        assert!(!watch.changed());
        file.write("services: []\n");
        assert!(watch.changed());
    }

    #[test]
    fn a_version_marked_seen_is_no_change() {
        let file = TempFile::new("marked");
        file.write("services: []\n");
        let mut watch = PolicyFileWatch::new(&file.0);
        file.write("services:\n  - name: shop\n");
        watch.mark_seen();
        assert!(!watch.changed());
    }
}
