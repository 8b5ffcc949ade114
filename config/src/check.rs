//! The [`Checker`] every section reports its problems to, and the checks several sections share.
//!
//! ```text
//!  section code ── checker.problem("services[0].name", "…") ──► Problem { file, line:column, path }
//!                                                     ▲
//!                         SourceMap::locate(path) ────┘
//! ```
//!
//! A section never stops at its first problem: it reports, substitutes a harmless value and goes
//! on, so one pass finds every problem in the file.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::source_map::{Position, SourceMap};

/// One problem in a policy file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file (or a label for text that came from elsewhere).
    pub file: PathBuf,
    /// Line and column, when known.
    pub position: Option<Position>,
    /// The node path, e.g. `services[0].routes[1].host`, when known.
    pub path: Option<String>,
    /// What is wrong, lowercase.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(p) = self.position {
            write!(f, ":{}:{}", p.line, p.column)?;
        }
        match &self.path {
            Some(path) if !path.is_empty() => write!(f, ": {path}: {}", self.message),
            _ => write!(f, ": {}", self.message),
        }
    }
}

/// Collects every problem while the sections resolve a policy file.
pub(crate) struct Checker<'a> {
    file: &'a Path,
    map: SourceMap,
    problems: Vec<Problem>,
}

// === impl Checker ===

impl<'a> Checker<'a> {
    /// A checker for `text`, the content of `file`.
    pub(crate) fn new(file: &'a Path, text: &str) -> Self {
        Self {
            file,
            map: SourceMap::build(text),
            problems: Vec::new(),
        }
    }

    /// Every problem reported, in the order found.
    pub(crate) fn into_problems(self) -> Vec<Problem> {
        self.problems
    }

    /// Reports `message` at the node `path`.
    pub(crate) fn problem(&mut self, path: &str, message: impl Into<String>) {
        let problem = Problem {
            file: self.file.to_owned(),
            position: self.map.locate(path),
            path: Some(path.to_owned()),
            message: message.into(),
        };
        // A bad value in `defaults` is inherited by every service: report it once.
        if !self.problems.contains(&problem) {
            self.problems.push(problem);
        }
    }

    /// A path written in the policy: relative ones are taken from the policy file's folder.
    pub(crate) fn relative_path(&self, written: &str) -> PathBuf {
        let path = Path::new(written);
        match self.file.parent() {
            Some(folder) if path.is_relative() => folder.join(path),
            _ => path.to_owned(),
        }
    }

    /// Parses an `ip:port` address at `path` (`0.0.0.0:0` after reporting a bad one).
    pub(crate) fn socket_addr(&mut self, path: &str, text: &str) -> SocketAddr {
        text.parse().unwrap_or_else(|_| {
            self.problem(path, format!("{text:?} is not an ip:port address"));
            SocketAddr::from(([0, 0, 0, 0], 0))
        })
    }

    /// Checks an HTTP header name at `path` and returns it lowercase.
    pub(crate) fn header_name(&mut self, path: &str, name: &str) -> String {
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid {
            self.problem(path, format!("{name:?} is not a valid header name"));
        }
        name.to_ascii_lowercase()
    }
}

/// The path of a setting: in the service when it is set there, else in `defaults`.
pub(crate) fn origin(service_at: &str, set_in_service: bool, section: &str, field: &str) -> String {
    let base = if set_in_service {
        service_at
    } else {
        "defaults"
    };
    if section.is_empty() {
        format!("{base}.{field}")
    } else {
        format!("{base}.{section}.{field}")
    }
}

/// True for a DNS label: 1–63 of `[a-z0-9-]`, not starting or ending with `-` (service and
/// tenant-class names; Kubernetes namespaces and object names).
pub(crate) fn is_label(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}
