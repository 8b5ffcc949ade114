use std::time::Duration;

use super::*;
use crate::{DEFAULT_ADMIN_ADDR, DEFAULT_TENANT_HEADER, DEFAULT_VERSION};

fn parse(text: &str) -> Result<Policy, LoadError> {
    Policy::parse(text, Path::new("test.yaml"))
}

fn problems(text: &str) -> Vec<Problem> {
    match parse(text) {
        Ok(p) => panic!("expected problems, got a policy: {p:?}"),
        Err(LoadError::Invalid { problems, .. }) => problems,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

const GOOD: &str = "\
listeners:
  proxy: 127.0.0.1:18080
  admin: 127.0.0.1:19901
defaults:
  health_check: { path: /ready, interval: 200ms, timeout: 100ms }
services:
  - name: shop
    routes:
      - host: Shop.Example.com
      - path_prefix: /shop
    instances:
      - address: 127.0.0.1:9001
      - address: 127.0.0.1:9002
        version: v2
  - name: api
    routes:
      - header: { name: X-Service, value: api }
    health_check: { healthy_threshold: 3 }
    retries: 1
";

#[test]
fn good_file_resolves_defaults() {
    let policy = parse(GOOD).expect("valid");
    assert_eq!(policy.listeners.proxy.port(), 18080);
    let shop = policy.service("shop").expect("shop");
    assert_eq!(shop.routes[0].host.as_deref(), Some("shop.example.com"));
    assert_eq!(shop.instances[0].version, DEFAULT_VERSION);
    assert_eq!(shop.instances[1].version, "v2");
    assert_eq!(shop.health_check.path, "/ready");
    assert_eq!(shop.health_check.interval, Duration::from_millis(200));
    assert_eq!(shop.retries, 2);
    let api = policy.service("api").expect("api");
    assert_eq!(api.health_check.healthy_threshold, 3);
    assert_eq!(
        api.health_check.path, "/ready",
        "inherits the rest of defaults"
    );
    assert_eq!(
        api.routes[0].header,
        Some(("x-service".to_owned(), "api".to_owned()))
    );
    assert_eq!(policy.metadata.tenant_header, DEFAULT_TENANT_HEADER);
}

#[test]
fn empty_file_is_a_policy_with_no_services() {
    let policy = parse("").expect("valid");
    assert!(policy.services.is_empty());
    assert_eq!(policy.listeners.admin.to_string(), DEFAULT_ADMIN_ADDR);
}

#[test]
fn unknown_field_is_named_with_its_line() {
    let found = problems("services:\n  - name: a\n    rutes: []\n");
    assert_eq!(found.len(), 1);
    assert!(
        found[0].message.contains("unknown field `rutes`"),
        "{}",
        found[0]
    );
    assert_eq!(found[0].position.map(|p| p.line), Some(3));
}

#[test]
fn syntax_error_is_located() {
    let found = problems("services:\n  - name: a\n   routes: [\n");
    assert!(found[0].position.is_some(), "{}", found[0]);
}

#[test]
fn bad_duration_is_located() {
    let found = problems("defaults:\n  health_check:\n    interval: often\n");
    assert!(
        found[0].message.contains("invalid duration"),
        "{}",
        found[0]
    );
    assert_eq!(found[0].position.map(|p| p.line), Some(3));
}

#[test]
fn every_semantic_problem_is_reported_with_its_line() {
    let text = "\
listeners:
  proxy: nowhere
services:
  - name: Shop
    routes:
      - {}
      - path_prefix: shop
    instances:
      - address: 127.0.0.1:1
      - address: 127.0.0.1:1
  - name: b
    routes:
      - host: a.example
  - name: b
    routes:
      - host: a.example
    health_check: { timeout: 5s, interval: 1s }
    retries: 99
";
    let found = problems(text);
    let lines: Vec<(usize, &str)> = found
        .iter()
        .map(|p| (p.position.map_or(0, |p| p.line), p.message.as_str()))
        .collect();
    let has =
        |line: usize, needle: &str| lines.iter().any(|(l, m)| *l == line && m.contains(needle));
    assert!(has(2, "not an ip:port"), "{lines:?}");
    assert!(has(4, "must be 1-63 lowercase"), "{lines:?}");
    assert!(has(6, "needs a host"), "{lines:?}");
    assert!(has(7, "must start with '/'"), "{lines:?}");
    assert!(has(10, "listed twice"), "{lines:?}");
    assert!(has(14, "duplicate service name"), "{lines:?}");
    assert!(has(16, "same route"), "{lines:?}");
    assert!(has(17, "no longer than the interval"), "{lines:?}");
    assert!(has(18, "more than 10"), "{lines:?}");
    assert_eq!(found.len(), 9, "{lines:?}");
}

#[test]
fn a_bad_default_is_reported_once_at_defaults() {
    let text = "\
defaults:
  health_check: { healthy_threshold: 0 }
services:
  - name: a
  - name: b
";
    let found = problems(text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        found[0].path.as_deref(),
        Some("defaults.health_check.healthy_threshold")
    );
    assert_eq!(found[0].position.map(|p| p.line), Some(2));
}

#[test]
fn problem_display_names_file_line_column_and_path() {
    let found = problems("services:\n  - name: a\n    retries: 11\n");
    assert_eq!(
        found[0].to_string(),
        "test.yaml:3:14: services[0].retries: retries 11 is more than 10"
    );
}

#[test]
fn feature_flag_needs_a_source() {
    let found = problems("metadata:\n  feature_flag: {}\n");
    assert!(
        found[0].message.contains("header, a cookie"),
        "{}",
        found[0]
    );
}

#[test]
fn example_policy_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/forecourt.yaml");
    let policy = Policy::load(&path).expect("the shipped example must be valid");
    assert!(!policy.services.is_empty());
}

const KUBERNETES: &str = "\
kubernetes:
  namespace: shop
  leader_election: { lease: edge, duration: 10s }
services:
  - name: shop
    kubernetes: { deployment: shop-web, port: http }
    versions:
      - flag: beta
        image: registry.example/shop:2.0
        labels: { track: beta, app.kubernetes.io/version: \"2.0\" }
        until_ready: hold
        grace: 1m
";

#[test]
fn kubernetes_service_and_versions_resolve_defaults() {
    let policy = parse(KUBERNETES).expect("valid");
    assert_eq!(policy.kubernetes.namespace.as_deref(), Some("shop"));
    assert_eq!(policy.kubernetes.field_manager, "forecourt");
    assert_eq!(policy.kubernetes.leader_election.lease, "edge");
    assert_eq!(
        policy.kubernetes.leader_election.duration,
        Duration::from_secs(10)
    );
    let shop = policy.service("shop").expect("shop");
    let k8s = shop.kubernetes.as_ref().expect("kubernetes");
    assert_eq!(k8s.deployment, "shop-web");
    assert_eq!(
        k8s.service, "shop-web",
        "the Service defaults to the deployment"
    );
    assert_eq!(k8s.port, Some(crate::PortSpec::Name("http".into())));
    let beta = &shop.versions[0];
    assert_eq!(beta.version, "beta", "the version defaults to the flag");
    assert_eq!(beta.replicas, 1);
    assert_eq!(beta.until_ready, crate::UntilReady::Hold);
    assert_eq!(beta.when_idle, crate::WhenIdle::ScaleToZero);
    assert_eq!(beta.grace, Duration::from_secs(60));
    assert_eq!(beta.labels.len(), 2);
}

#[test]
fn kubernetes_and_version_problems_are_located() {
    let found = problems(
        "\
kubernetes:
  namespace: Shop
  leader_election: { duration: 1s }
services:
  - name: shop
    kubernetes: { deployment: web_1, port: 0 }
    instances: [{ address: 127.0.0.1:9000 }]
    versions:
      - flag: Beta Test
      - flag: beta
        version: stable
        labels: { \"-bad\": x }
        replicas: 0
",
    );
    let text: Vec<String> = found
        .iter()
        .map(|p| format!("{}: {}", p.position.map_or(0, |p| p.line), p.message))
        .collect();
    let has = |line: usize, words: &str| {
        assert!(
            text.iter()
                .any(|t| t.starts_with(&format!("{line}: ")) && t.contains(words)),
            "no problem on line {line} with {words:?} in {text:#?}"
        );
    };
    has(2, "not a Kubernetes name");
    has(3, "between 2s and 5m");
    has(6, "not a Kubernetes name");
    has(6, "port 0");
    has(7, "one of a fixed instance list, launch: or kubernetes:");
    has(9, "must be 1-30 lowercase");
    has(11, "the version unflagged requests go to");
    has(12, "not a Kubernetes label key");
    has(13, "between 1 and 100");
}
