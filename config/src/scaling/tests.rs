use std::path::Path;
use std::time::Duration;

use super::*;
use crate::{LoadError, Policy, Problem};

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

/// The single problem in `text`, as (line, path, message).
fn one(text: &str) -> (usize, String, String) {
    let found = problems(text);
    assert_eq!(found.len(), 1, "expected one problem, got {found:#?}");
    let p = &found[0];
    (
        p.position.map_or(0, |p| p.line),
        p.path.clone().unwrap_or_default(),
        p.message.clone(),
    )
}

/// A one-service file whose `scaling:` section is `body` (indented by the caller to 6 spaces).
fn service_with(body: &str) -> String {
    format!(
        "\
services:
  - name: shop
    routes: [{{ path_prefix: /shop }}]
    scaling:
      capacity: {{ requests_per_second: 50 }}
{body}"
    )
}

const FULL: &str = "\
defaults:
  scaling:
    max_replicas: 20
    target_utilization: 0.6
    scale_down: { stabilization: 45s }
    panic: { threshold: 3 }
services:
  - name: shop
    routes: [{ path_prefix: /shop }]
    scaling:
      min_replicas: 0
      max_replicas: 10
      capacity:
        requests_per_second: 50
      target_utilization: 0.7
      rules:
        - when_predicted_utilization_above: 0.8
          scale_up_by: 2
        - when_predicted_utilization_above: 1.5
          scale_up_by: 5
      horizon: auto
      horizon_margin: 3s
      scale_up: { max_step: 4, cooldown: 0s }
      scale_down: { max_step: 2, cooldown: 10s }
      panic: { window: 5s }
      stable_window: 50s
      idle_to_zero_after: 90s
      warm_pool: 1
    dependencies:
      - service: api
        fan_out: 0.5
      - service: search
  - name: api
    routes: [{ path_prefix: /api }]
    scaling:
      capacity: { concurrency: 20 }
      horizon: 15s
    dependencies:
      - service: search
        fan_out: 2
  - name: search
    routes: [{ path_prefix: /search }]
    scaling: { enabled: false }
";

#[test]
fn full_section_resolves_field_by_field() {
    let policy = parse(FULL).expect("valid");
    let shop = policy.service("shop").expect("shop");
    let scaling = shop.scaling.as_ref().expect("shop is scaled");
    assert_eq!(scaling.min_replicas, 0);
    assert_eq!(scaling.max_replicas, 10);
    assert_eq!(scaling.capacity, Capacity::RequestsPerSecond(50.0));
    assert_eq!(scaling.target_utilization, 0.7);
    assert_eq!(
        scaling.rules,
        vec![
            ScalingRule {
                above: 0.8,
                scale_up_by: 2
            },
            ScalingRule {
                above: 1.5,
                scale_up_by: 5
            },
        ]
    );
    assert_eq!(
        scaling.horizon,
        Horizon::Auto {
            margin: Duration::from_secs(3)
        }
    );
    assert_eq!(
        scaling.scale_up,
        ScaleUp {
            max_step: 4,
            cooldown: Duration::ZERO
        }
    );
    assert_eq!(
        scaling.scale_down,
        ScaleDown {
            max_step: 2,
            cooldown: Duration::from_secs(10),
            stabilization: Duration::from_secs(45), // from defaults, the rest of the block here
        }
    );
    assert_eq!(
        scaling.panic,
        PanicWindow {
            window: Duration::from_secs(5),
            threshold: 3.0 // from defaults
        }
    );
    assert_eq!(scaling.stable_window, Duration::from_secs(50));
    assert_eq!(scaling.idle_to_zero_after, Duration::from_secs(90));
    assert_eq!(scaling.warm_pool, 1);
    assert_eq!(
        shop.dependencies,
        vec![
            Dependency {
                service: "api".to_owned(),
                fan_out: 0.5
            },
            Dependency {
                service: "search".to_owned(),
                fan_out: DEFAULT_FAN_OUT
            },
        ]
    );

    let api = policy.service("api").expect("api");
    let scaling = api.scaling.as_ref().expect("api is scaled");
    assert_eq!(scaling.capacity, Capacity::Concurrency(20.0));
    assert_eq!(scaling.horizon, Horizon::Fixed(Duration::from_secs(15)));
    assert_eq!(scaling.max_replicas, 20, "inherited from defaults");
    assert_eq!(scaling.target_utilization, 0.6, "inherited from defaults");
    assert_eq!(scaling.min_replicas, DEFAULT_MIN_REPLICAS, "built in");
    assert_eq!(scaling.scale_down.max_step, DEFAULT_SCALE_DOWN_STEP);
    assert_eq!(api.dependencies[0].fan_out, 2.0);

    let search = policy.service("search").expect("search");
    assert_eq!(search.scaling, None, "enabled: false opts out of defaults");
}

#[test]
fn a_service_without_scaling_is_never_scaled() {
    let policy =
        parse("services:\n  - name: a\n    routes: [{ path_prefix: /a }]\n").expect("valid");
    assert_eq!(policy.services[0].scaling, None);
    assert!(policy.services[0].dependencies.is_empty());
}

#[test]
fn built_in_defaults_need_only_a_capacity() {
    let policy = parse(&service_with("")).expect("valid");
    let scaling = policy.services[0].scaling.clone().expect("scaled");
    assert_eq!(
        scaling,
        ScalingConfig::with_capacity(Capacity::RequestsPerSecond(50.0))
    );
    assert!((scaling.target_per_replica() - 35.0).abs() < 1e-9);
}

#[test]
fn defaults_scaling_applies_to_every_service() {
    let text = "\
defaults:
  scaling: { capacity: { concurrency: 8 }, max_replicas: 3 }
services:
  - name: a
    routes: [{ path_prefix: /a }]
  - name: b
    routes: [{ path_prefix: /b }]
    scaling: { max_replicas: 5 }
";
    let policy = parse(text).expect("valid");
    let a = policy.services[0]
        .scaling
        .as_ref()
        .expect("a inherits scaling");
    assert_eq!(a.max_replicas, 3);
    assert_eq!(a.capacity, Capacity::Concurrency(8.0));
    let b = policy.services[1].scaling.as_ref().expect("b");
    assert_eq!(b.max_replicas, 5);
    assert_eq!(b.capacity, Capacity::Concurrency(8.0));
}

#[test]
fn disabled_defaults_apply_only_to_services_with_their_own_section() {
    let text = "\
defaults:
  scaling: { enabled: false, capacity: { requests_per_second: 10 } }
services:
  - name: a
    routes: [{ path_prefix: /a }]
  - name: b
    routes: [{ path_prefix: /b }]
    scaling: { max_replicas: 4 }
";
    let policy = parse(text).expect("valid");
    assert_eq!(policy.services[0].scaling, None);
    let b = policy.services[1].scaling.as_ref().expect("b opted in");
    assert_eq!(b.capacity, Capacity::RequestsPerSecond(10.0));
    assert_eq!(b.max_replicas, 4);
}

#[test]
fn max_replicas_must_be_at_least_one() {
    let (line, path, message) = one(&service_with("      max_replicas: 0\n"));
    assert_eq!(line, 6);
    assert_eq!(path, "services[0].scaling.max_replicas");
    assert!(message.contains("between 1 and"), "{message}");
}

#[test]
fn min_above_max_is_reported_at_the_more_specific_value() {
    let (line, path, message) = one(&service_with(
        "      min_replicas: 5\n      max_replicas: 3\n",
    ));
    assert_eq!(
        (line, path.as_str()),
        (6, "services[0].scaling.min_replicas")
    );
    assert!(message.contains("above max_replicas 3"), "{message}");

    // min from defaults, max in the service: the service's value is the one to fix.
    let text = "\
defaults:
  scaling:
    min_replicas: 4
services:
  - name: a
    routes: [{ path_prefix: /a }]
    scaling:
      capacity: { requests_per_second: 5 }
      max_replicas: 2
";
    let (line, path, _) = one(text);
    assert_eq!(
        (line, path.as_str()),
        (9, "services[0].scaling.max_replicas")
    );
}

#[test]
fn scaling_without_capacity_is_rejected() {
    let text = "\
services:
  - name: a
    routes: [{ path_prefix: /a }]
    scaling:
      max_replicas: 3
";
    let (line, path, message) = one(text);
    assert_eq!(path, "services[0].scaling");
    assert_eq!(line, 4, "the `scaling:` line");
    assert!(message.contains("needs a capacity"), "{message}");
}

#[test]
fn defaults_without_capacity_are_reported_once_at_defaults() {
    let text = "\
defaults:
  scaling:
    max_replicas: 3
services:
  - name: a
    routes: [{ path_prefix: /a }]
  - name: b
    routes: [{ path_prefix: /b }]
";
    let (line, path, message) = one(text);
    assert_eq!(path, "defaults.scaling");
    assert_eq!(line, 2);
    assert!(message.contains("every service"), "{message}");
}

#[test]
fn capacity_needs_exactly_one_positive_kind() {
    let text = "\
services:
  - name: a
    routes: [{ path_prefix: /a }]
    scaling:
      capacity: { requests_per_second: 5, concurrency: 3 }
";
    let (line, path, message) = one(text);
    assert_eq!((line, path.as_str()), (5, "services[0].scaling.capacity"));
    assert!(message.contains("not both"), "{message}");

    let (line, path, _) = one(&text.replace("requests_per_second: 5, concurrency: 3", ""));
    assert_eq!((line, path.as_str()), (5, "services[0].scaling.capacity"));

    let (line, path, message) = one(&text.replace(", concurrency: 3", "").replace("5", "0"));
    assert_eq!(line, 5);
    assert_eq!(path, "services[0].scaling.capacity.requests_per_second");
    assert!(message.contains("above 0"), "{message}");

    let (_, path, _) = one(&text
        .replace("requests_per_second: 5, ", "")
        .replace("3", ".nan"));
    assert_eq!(path, "services[0].scaling.capacity.concurrency");
}

#[test]
fn target_utilization_must_be_in_zero_one() {
    for bad in ["0", "1.5", "-0.2", ".nan"] {
        let (line, path, _) = one(&service_with(&format!("      target_utilization: {bad}\n")));
        assert_eq!(line, 6, "{bad}");
        assert_eq!(path, "services[0].scaling.target_utilization");
    }
    parse(&service_with("      target_utilization: 1\n")).expect("1 is allowed");
}

#[test]
fn rules_are_checked_one_by_one() {
    let body = concat!(
        "      rules:\n",
        "        - when_predicted_utilization_above: 0.8\n",
        "          scale_up_by: 1\n",
        "        - when_predicted_utilization_above: 11\n",
        "          scale_up_by: 0\n",
    );
    let found = problems(&service_with(body));
    let located: Vec<_> = found
        .iter()
        .map(|p| {
            (
                p.position.map_or(0, |p| p.line),
                p.path.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        located,
        vec![
            (
                9,
                "services[0].scaling.rules[1].when_predicted_utilization_above".to_owned()
            ),
            (10, "services[0].scaling.rules[1].scale_up_by".to_owned()),
        ]
    );
}

#[test]
fn a_rule_needs_both_fields() {
    let found = problems(&service_with("      rules:\n        - scale_up_by: 2\n"));
    assert!(
        found[0]
            .message
            .contains("when_predicted_utilization_above"),
        "{}",
        found[0]
    );
    assert_eq!(found[0].position.map(|p| p.line), Some(7));
}

#[test]
fn horizon_is_auto_or_a_bounded_duration() {
    let (line, path, message) = one(&service_with("      horizon: 0s\n"));
    assert_eq!((line, path.as_str()), (6, "services[0].scaling.horizon"));
    assert!(message.contains("between 1s and 10m"), "{message}");
    let (_, path, _) = one(&service_with("      horizon: 20m\n"));
    assert_eq!(path, "services[0].scaling.horizon");

    let (line, path, message) = one(&service_with("      horizon: soon\n"));
    assert_eq!((line, path.as_str()), (6, "services[0].scaling.horizon"));
    assert!(message.contains("auto or a duration"), "{message}");
}

#[test]
fn horizon_margin_with_a_fixed_horizon_is_reported() {
    let (line, path, message) = one(&service_with(
        "      horizon: 10s\n      horizon_margin: 2s\n",
    ));
    assert_eq!(
        (line, path.as_str()),
        (7, "services[0].scaling.horizon_margin")
    );
    assert!(message.contains("horizon: auto"), "{message}");

    // A margin inherited from defaults may be overridden by a fixed horizon.
    let text = "\
defaults:
  scaling: { horizon_margin: 2s }
services:
  - name: a
    routes: [{ path_prefix: /a }]
    scaling: { capacity: { requests_per_second: 5 }, horizon: 10s }
";
    parse(text).expect("valid");
}

#[test]
fn steps_must_be_at_least_one() {
    let (line, path, _) = one(&service_with("      scale_up: { max_step: 0 }\n"));
    assert_eq!(
        (line, path.as_str()),
        (6, "services[0].scaling.scale_up.max_step")
    );
    let (line, path, _) = one(&service_with(
        "      scale_down:\n        cooldown: 5s\n        max_step: 0\n",
    ));
    assert_eq!(
        (line, path.as_str()),
        (8, "services[0].scaling.scale_down.max_step")
    );
}

#[test]
fn panic_window_must_be_shorter_than_the_stable_window() {
    let (line, path, message) = one(&service_with(
        "      panic: { window: 30s }\n      stable_window: 20s\n",
    ));
    assert_eq!(
        (line, path.as_str()),
        (6, "services[0].scaling.panic.window")
    );
    assert!(message.contains("shorter than stable_window"), "{message}");

    let (_, path, _) = one(&service_with("      panic: { window: 0s }\n"));
    assert_eq!(path, "services[0].scaling.panic.window");
    let (_, path, message) = one(&service_with("      panic: { threshold: 1 }\n"));
    assert_eq!(path, "services[0].scaling.panic.threshold");
    assert!(message.contains("above 1"), "{message}");
    let (_, path, _) = one(&service_with("      stable_window: 0s\n"));
    assert_eq!(path, "services[0].scaling.stable_window");
    let (_, path, _) = one(&service_with("      stable_window: 11m\n"));
    assert_eq!(path, "services[0].scaling.stable_window");
}

#[test]
fn idle_to_zero_needs_min_zero_when_set_together() {
    let (line, path, message) = one(&service_with(
        "      min_replicas: 1\n      idle_to_zero_after: 30s\n",
    ));
    assert_eq!(
        (line, path.as_str()),
        (7, "services[0].scaling.idle_to_zero_after")
    );
    assert!(message.contains("min_replicas: 0"), "{message}");

    let (_, path, _) = one(&service_with(
        "      min_replicas: 0\n      idle_to_zero_after: 0s\n",
    ));
    assert_eq!(path, "services[0].scaling.idle_to_zero_after");

    // Defaults allow scale to zero; a service that keeps one replica simply ignores them.
    let text = "\
defaults:
  scaling: { min_replicas: 0, idle_to_zero_after: 30s }
services:
  - name: a
    routes: [{ path_prefix: /a }]
    scaling: { capacity: { requests_per_second: 5 }, min_replicas: 1 }
";
    parse(text).expect("valid");
}

#[test]
fn warm_pool_must_fit_under_max() {
    let (line, path, message) = one(&service_with("      max_replicas: 2\n      warm_pool: 3\n"));
    assert_eq!((line, path.as_str()), (7, "services[0].scaling.warm_pool"));
    assert!(message.contains("above max_replicas 2"), "{message}");
}

#[test]
fn unknown_scaling_field_is_named_with_its_line() {
    let found = problems(&service_with("      max_replica: 3\n"));
    assert!(
        found[0].message.contains("unknown field `max_replica`"),
        "{}",
        found[0]
    );
    assert_eq!(found[0].position.map(|p| p.line), Some(6));
}

#[test]
fn a_bad_default_is_reported_once_even_without_services() {
    let (line, path, _) = one("defaults:\n  scaling:\n    target_utilization: 2\n");
    assert_eq!(
        (line, path.as_str()),
        (3, "defaults.scaling.target_utilization")
    );

    let text = "\
defaults:
  scaling:
    capacity: { requests_per_second: 5 }
    scale_up: { max_step: 0 }
services:
  - name: a
    routes: [{ path_prefix: /a }]
  - name: b
    routes: [{ path_prefix: /b }]
";
    let (line, path, _) = one(text);
    assert_eq!(
        (line, path.as_str()),
        (4, "defaults.scaling.scale_up.max_step")
    );
}

#[test]
fn a_disabled_section_is_still_checked_on_its_own() {
    let (line, path, _) = one(&service_with(
        "      enabled: false\n      max_replicas: 0\n",
    ));
    assert_eq!(
        (line, path.as_str()),
        (7, "services[0].scaling.max_replicas")
    );
}

const DEPS: &str = "\
services:
  - name: a
    routes: [{ path_prefix: /a }]
    dependencies:
      - service: b
  - name: b
    routes: [{ path_prefix: /b }]
";

#[test]
fn dependencies_must_name_an_existing_other_service() {
    let (line, path, message) = one(&DEPS.replace("service: b", "service: nope"));
    assert_eq!(
        (line, path.as_str()),
        (5, "services[0].dependencies[0].service")
    );
    assert!(
        message.contains("no service is named \"nope\""),
        "{message}"
    );

    let (line, path, message) = one(&DEPS.replace("service: b", "service: a"));
    assert_eq!(
        (line, path.as_str()),
        (5, "services[0].dependencies[0].service")
    );
    assert!(message.contains("cannot depend on itself"), "{message}");

    let twice = DEPS.replace(
        "      - service: b\n",
        "      - service: b\n      - service: b\n",
    );
    let (line, path, message) = one(&twice);
    assert_eq!(
        (line, path.as_str()),
        (6, "services[0].dependencies[1].service")
    );
    assert!(message.contains("listed twice"), "{message}");
}

#[test]
fn fan_out_must_be_positive_and_finite() {
    for bad in ["0", "-1", ".inf", ".nan", "5000"] {
        let text = DEPS.replace(
            "      - service: b\n",
            &format!("      - service: b\n        fan_out: {bad}\n"),
        );
        let (line, path, _) = one(&text);
        assert_eq!(
            (line, path.as_str()),
            (6, "services[0].dependencies[0].fan_out"),
            "{bad}"
        );
    }
}

#[test]
fn dependency_cycles_are_reported_where_they_close() {
    let text = "\
services:
  - name: a
    routes: [{ path_prefix: /a }]
    dependencies: [{ service: b }]
  - name: b
    routes: [{ path_prefix: /b }]
    dependencies: [{ service: c }]
  - name: c
    routes: [{ path_prefix: /c }]
    dependencies:
      - service: d
      - service: a
  - name: d
    routes: [{ path_prefix: /d }]
";
    let (line, path, message) = one(text);
    assert_eq!(
        (line, path.as_str()),
        (12, "services[2].dependencies[1].service")
    );
    assert_eq!(message, "dependency cycle: a -> b -> c -> a");

    // A diamond is not a cycle.
    let diamond = text.replace("      - service: a\n", "").replace(
        "    dependencies: [{ service: b }]\n",
        "    dependencies: [{ service: b }, { service: c }]\n",
    );
    parse(&diamond).expect("a diamond is fine");
}

#[test]
fn example_declares_scaling_and_dependencies() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/forecourt.yaml");
    let policy = Policy::load(&path).expect("the shipped example must be valid");
    let shop = policy.service("shop").expect("shop");
    assert!(shop.scaling.is_some(), "the example scales shop");
    assert_eq!(shop.dependencies[0].service, "api");
}

#[test]
fn waiting_cost_sets_the_newsvendor_quantile() {
    let policy = parse(&service_with(
        "      waiting_cost: 2\n      slo: { waiting_percent: 0.5 }\n",
    ))
    .expect("valid");
    let scaling = policy.services[0].scaling.clone().expect("scaled");
    assert_eq!(scaling.waiting_cost, 2.0);
    assert_eq!(
        scaling.slo,
        Some(Slo {
            waiting_percent: 0.5
        })
    );
    // c·r / (c·r + 1) with 50 req/s per replica: 100 / 101.
    assert!((scaling.demand_quantile(50.0) - 100.0 / 101.0).abs() < 1e-12);
    // Bounded both ways.
    assert_eq!(scaling.demand_quantile(0.0), MIN_DEMAND_QUANTILE);
    assert_eq!(scaling.demand_quantile(f64::INFINITY), MAX_DEMAND_QUANTILE);
    let defaults = parse(&service_with("")).expect("valid");
    let scaling = defaults.services[0].scaling.clone().expect("scaled");
    assert_eq!(scaling.waiting_cost, DEFAULT_WAITING_COST);
    assert_eq!(scaling.slo, None);
}

#[test]
fn bad_waiting_costs_and_objectives_are_located() {
    let (line, path, message) = one(&service_with("      waiting_cost: 0\n"));
    assert_eq!(
        (line, path.as_str()),
        (6, "services[0].scaling.waiting_cost")
    );
    assert!(
        message.contains("waiting_cost 0 must be above 0"),
        "{message}"
    );
    let (line, path, message) = one(&service_with("      slo: { waiting_percent: 150 }\n"));
    assert_eq!(
        (line, path.as_str()),
        (6, "services[0].scaling.slo.waiting_percent")
    );
    assert!(message.contains("below 100"), "{message}");
    let (_, path, message) = one(&service_with("      slo: {}\n"));
    assert_eq!(path, "services[0].scaling.slo.waiting_percent");
    assert!(message.contains("needs waiting_percent"), "{message}");
}
