//! # Fuzz target: the policy parser
//!
//! ```text
//!  bytes ──► UTF-8 (lossy) ──► Policy::parse(text, "fuzz.yaml") ──┬─► Ok(policy) ──► RouteTable, MetadataRules
//!                                                                 └─► Err(e) ──► e.to_string(), every problem names the file
//! ```
//!
//! Checks: the parser never panics on any text; every error renders; every problem of
//! `LoadError::Invalid` names `fuzz.yaml` (in its `file` field and in its rendered line) and has
//! a 1-based line and column when it has a position; and every
//! policy the parser accepts compiles into the proxy's route table and metadata rules and
//! classifies a request without panicking.

#![no_main]

use std::path::Path;

use forecourt_config::{LoadError, Policy};
use forecourt_proxy::classify::metadata::MetadataRules;
use forecourt_proxy::classify::routes::RouteTable;
use libfuzzer_sys::fuzz_target;

/// The label every problem must carry.
const FILE: &str = "fuzz.yaml";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let file = Path::new(FILE);
    match Policy::parse(&text, file) {
        Ok(policy) => accepted(&policy),
        Err(error) => rejected(&error, file),
    }
});

/// A policy the parser accepted is usable by the request path.
fn accepted(policy: &Policy) {
    let routes = RouteTable::new(policy);
    let rules = MetadataRules::new(&policy.metadata);
    let mut headers = http::HeaderMap::new();
    headers.insert(
        rules.tenant_header().clone(),
        http::HeaderValue::from_static("acme"),
    );
    if let Some(service) = routes.classify(Some(b"Example.COM:80"), "/a/b?c", &headers) {
        assert!(service < policy.services.len(), "classify out of range");
    }
    let class = rules.class_of(rules.tenant(&headers));
    assert!(class < rules.classes().len(), "tenant class out of range");
}

/// Every rejection renders and names the file it is about.
fn rejected(error: &LoadError, file: &Path) {
    let rendered = error.to_string();
    assert!(!rendered.is_empty(), "an error rendered empty");
    match error {
        LoadError::Invalid {
            file: named,
            problems,
        } => {
            assert_eq!(named, file, "error names another file");
            assert!(!problems.is_empty(), "invalid with no problem: {rendered}");
            for problem in problems {
                assert_eq!(problem.file, file, "problem without the file: {problem:?}");
                let line = problem.to_string();
                assert!(line.starts_with(FILE), "problem line {line:?}");
                assert!(!problem.message.is_empty(), "problem without a message");
                if let Some(position) = problem.position {
                    assert!(position.line >= 1 && position.column >= 1, "{line:?}");
                }
            }
        }
        LoadError::Read { .. } => panic!("parse read a file: {rendered}"),
        #[allow(unreachable_patterns)]
        _ => {}
    }
}
