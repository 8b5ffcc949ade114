//! End to end on "Kubernetes": the real `forecourt` binary talks to a fake API server
//! (`forecourt_test_utils::fake_kube`) over the real HTTP API, with the `kube` crate, through a
//! kubeconfig. The fake's controller turns Deployment replicas into pods that are real sample
//! backends on 127.0.0.1 and lists them in EndpointSlices whose readiness a test can flip.
//!
//! What a real cluster adds (scheduling, kubelet probes, RBAC, API priority and fairness) is not
//! here; `real_cluster_*` tests run against one when `KUBECONFIG` is set (`--ignored`).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use forecourt_test_utils::fake_kube::{BackendPods, FakeKube};
use forecourt_test_utils::*;

const NS: &str = "default";

/// A fake cluster with the `shop` Deployment (`replicas` pods) behind the `shop` Service.
fn cluster(replicas: u32, boot_delay: Duration) -> (FakeKube, PathBuf) {
    let fake = FakeKube::start(Arc::new(BackendPods { boot_delay }));
    let labels = [("app", "shop"), ("track", "stable")];
    fake.create_deployment(
        NS,
        "shop",
        &labels,
        "shop",
        "registry.example/shop:1",
        replicas,
    );
    fake.create_service(NS, "shop", &[("app", "shop")], "http", 80);
    let kubeconfig = fake.write_kubeconfig(&scratch_dir("kube"));
    (fake, kubeconfig)
}

/// Starts Forecourt as pod `name` against the fake cluster.
fn forecourt(policy: &str, kubeconfig: &Path, name: &str) -> Forecourt {
    Forecourt::start_with_env(
        policy,
        &[
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("POD_NAME", name),
            ("POD_NAMESPACE", NS),
            ("RUST_LOG", "info"),
        ],
    )
}

fn policy(service_extra: &str, top_extra: &str) -> String {
    format!(
        "listeners: {{ proxy: \"{{proxy}}\", admin: \"{{admin}}\" }}
admin: {{ public_reads: true }}
kubernetes:
  leader_election: {{ duration: 3s }}
  retry: {{ base: 100ms, max: 1s }}
{top_extra}defaults:
  health_check: {{ interval: 100ms, timeout: 100ms, healthy_threshold: 1, unhealthy_threshold: 2 }}
services:
  - name: shop
    routes: [{{ path_prefix: /shop }}]
    kubernetes: {{ deployment: shop, port: http }}
    hold: {{ timeout: 10s }}
{service_extra}"
    )
}

/// The ready instances' addresses.
fn ready(fc: &Forecourt) -> BTreeSet<SocketAddr> {
    fc.readiness("shop")["ready"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["address"].as_str()?.parse().ok())
        .collect()
}

/// Which instance (port) answered, or `None` for anything but a 200.
fn answered_by(proxy: SocketAddr, headers: &[(&str, &str)]) -> Option<u16> {
    let response = get(proxy, "/shop/item", headers).ok()?;
    (response.status == 200)
        .then(|| response.header("x-instance")?.parse().ok())
        .flatten()
}

/// Steady traffic at about `rate` requests/s until stopped; counts answers and failures.
struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    workers: Vec<JoinHandle<Vec<String>>>,
}

impl Traffic {
    fn start(proxy: SocketAddr, rate: u64, clients: u64) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let period = Duration::from_micros(1_000_000 * clients / rate);
        let workers = (0..clients)
            .map(|_| {
                let (stop, ok) = (stop.clone(), ok.clone());
                std::thread::spawn(move || {
                    let mut failures = Vec::new();
                    let mut next = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        match get(proxy, "/shop/item", &[]) {
                            Ok(r) if r.status == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            other => {
                                failures.push(format!("{:?}", other.map(|r| r.status)));
                            }
                        }
                        next += period;
                        std::thread::sleep(next.saturating_duration_since(Instant::now()));
                    }
                    failures
                })
            })
            .collect();
        Traffic { stop, ok, workers }
    }

    /// Stops and returns (answered, failures).
    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self
            .workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

#[test]
fn predictive_scale_up_patches_the_scale_subresource_and_outside_changes_are_not_fought() {
    let (fake, kubeconfig) = cluster(1, Duration::from_millis(300));
    let fc = forecourt(
        &policy(
            "    scaling:
      min_replicas: 1
      max_replicas: 6
      capacity: { requests_per_second: 10 }
      scale_down: { stabilization: 1m, cooldown: 1m }
",
            "",
        ),
        &kubeconfig,
        "forecourt-0",
    );
    fc.wait_ready("shop", 1);
    // 30 requests/s: three times one replica's capacity.
    let traffic = Traffic::start(fc.proxy, 30, 3);
    let patched = wait_for(Duration::from_secs(20), || {
        fake.scale_writes()
            .into_iter()
            .find(|w| w.name == "shop" && w.body["spec"]["replicas"].as_u64() > Some(1))
    });
    let patched = patched.unwrap_or_else(|| panic!("no scale-up patch; log:\n{}", fc.log()));
    assert_eq!(patched.content_type, "application/merge-patch+json");
    assert_eq!(patched.field_manager.as_deref(), Some("forecourt"));
    assert_eq!(
        patched.body,
        serde_json::json!({ "spec": { "replicas": patched.body["spec"]["replicas"] } }),
        "only spec.replicas is patched"
    );
    // The new pods boot, the controller lists them, Forecourt's health check confirms them.
    wait_for(WAIT, || (ready(&fc).len() >= 2).then_some(()))
        .unwrap_or_else(|| panic!("new pods never ready: {}", fc.readiness("shop")));
    let (answered, failures) = traffic.finish();
    assert!(failures.is_empty(), "{failures:?}");
    assert!(answered > 20, "{answered}");

    // A person scales to 6 (the most the policy allows, above what the load asks for): Forecourt
    // notices, logs it, drops its own order and plans from 6, where the policy's scale-down
    // cooldown keeps it; it never writes its old count back.
    wait_for(WAIT, || {
        (fake.spec_replicas(NS, "shop") < Some(6)).then_some(())
    })
    .expect("below the maximum");
    let before = fake.scale_writes().len();
    fake.set_replicas_as(NS, "shop", 6, "kubectl");
    wait_for(WAIT, || {
        (fc.metric("forecourt_kubernetes_external_changes_total") >= 1.0).then_some(())
    })
    .unwrap_or_else(|| panic!("the outside change was not noticed; log:\n{}", fc.log()));
    assert!(fc.log().contains("replicas were changed outside Forecourt"));
    wait_for(WAIT, || {
        (fc.readiness("shop")["scaling"]["ordered"] == 6).then_some(())
    })
    .unwrap_or_else(|| panic!("never planned from 6: {}", fc.readiness("shop")));
    // Past another re-read of the scale (every 5 s), nothing was written back.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(fake.spec_replicas(NS, "shop"), Some(6));
    let ours: Vec<_> = fake.scale_writes()[before..]
        .iter()
        .filter(|w| w.field_manager.as_deref() == Some("forecourt"))
        .cloned()
        .collect();
    assert!(
        ours.is_empty(),
        "Forecourt wrote after the change: {ours:?}"
    );
}

#[test]
fn traffic_goes_only_to_ready_endpoints_and_terminating_ones_drain() {
    let (fake, kubeconfig) = cluster(2, Duration::ZERO);
    fake.set_termination_grace(Duration::from_secs(3));
    let fc = forecourt(&policy("", ""), &kubeconfig, "forecourt-0");
    fc.wait_ready("shop", 2);
    let pods = fake.pods(NS, "shop");
    assert_eq!(ready(&fc), pods.iter().map(|p| p.address).collect());
    let traffic = Traffic::start(fc.proxy, 50, 2);

    // The endpoint of the first pod turns not ready: it leaves the ready set, nothing goes to it.
    let (gone, kept) = (pods[0].address, pods[1].address);
    fake.set_ready(gone, Some(false));
    wait_for(WAIT, || {
        (ready(&fc) == BTreeSet::from([kept])).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "still routed to a not-ready endpoint: {}",
            fc.readiness("shop")
        )
    });
    for _ in 0..20 {
        assert_eq!(answered_by(fc.proxy, &[]), Some(kept.port()));
    }
    fake.set_ready(gone, None);
    wait_for(WAIT, || (ready(&fc).len() == 2).then_some(())).expect("ready again");

    // Scaled down by a human: the removed pod is terminating (still serving) for 3 s; Forecourt
    // stops sending it new requests at once.
    fake.set_replicas_as(NS, "shop", 1, "kubectl");
    let terminating = wait_for(WAIT, || {
        fake.pods(NS, "shop").into_iter().find(|p| p.terminating)
    })
    .expect("a pod terminates");
    wait_for(Duration::from_secs(2), || {
        (!ready(&fc).contains(&terminating.address)).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "a terminating endpoint kept traffic: {}",
            fc.readiness("shop")
        )
    });
    for _ in 0..20 {
        assert_ne!(answered_by(fc.proxy, &[]), Some(terminating.address.port()));
    }
    // Past the grace the pod's process is killed; no request was still going to it.
    wait_for(WAIT, || {
        fake.pods(NS, "shop")
            .iter()
            .all(|p| !p.terminating)
            .then_some(())
    })
    .expect("the terminating pod goes away");
    std::thread::sleep(Duration::from_millis(500));
    let (answered, failures) = traffic.finish();
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert!(answered > 100, "{answered}");
}

#[test]
fn a_flagged_request_reaches_the_new_version_only_once_it_is_ready() {
    let (fake, kubeconfig) = cluster(1, Duration::from_secs(2));
    let fc = forecourt(
        &policy(
            "    versions:
      - flag: beta
        image: registry.example/shop:2
        labels: { track: beta }
        until_ready: stable
        grace: 3s
",
            "",
        ),
        &kubeconfig,
        "forecourt-0",
    );
    fc.wait_ready("shop", 1);
    let stable = fake.pods(NS, "shop")[0].address.port();
    let beta = [("x-feature-flag", "beta")];

    // The first flagged request is answered by the stable version and deploys beta.
    assert_eq!(answered_by(fc.proxy, &beta), Some(stable));
    let deployment = wait_for(WAIT, || fake.deployment(NS, "shop-beta"))
        .unwrap_or_else(|| panic!("no version Deployment; log:\n{}", fc.log()));
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example/shop:2"
    );
    assert_eq!(
        deployment["spec"]["selector"]["matchLabels"]["track"],
        "beta"
    );
    assert_eq!(
        deployment["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "forecourt"
    );
    // The Service is created by a second API call after the Deployment: wait for it too.
    assert!(
        wait_for(WAIT, || fake.service(NS, "shop-beta")).is_some(),
        "no version Service"
    );

    // Until beta is confirmed ready, flagged requests still go to stable.
    let started = Instant::now();
    let beta_port = loop {
        assert!(
            started.elapsed() < WAIT,
            "beta never answered: {}",
            fc.readiness("shop")
        );
        let port = answered_by(fc.proxy, &beta).expect("a flagged request failed");
        if port != stable {
            break port;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let beta_pod = fake.pods(NS, "shop-beta");
    assert_eq!(beta_pod.len(), 1);
    assert_eq!(beta_pod[0].address.port(), beta_port);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "beta answered before it booted"
    );
    for _ in 0..10 {
        assert_eq!(answered_by(fc.proxy, &beta), Some(beta_port));
        assert_eq!(
            answered_by(fc.proxy, &[]),
            Some(stable),
            "unflagged went to beta"
        );
    }

    // The flag's traffic stops: after the 3 s grace, beta is scaled to zero.
    wait_for(Duration::from_secs(15), || {
        (fake.spec_replicas(NS, "shop-beta") == Some(0)).then_some(())
    })
    .unwrap_or_else(|| panic!("beta never scaled to zero; log:\n{}", fc.log()));
    assert_eq!(answered_by(fc.proxy, &[]), Some(stable));
}

#[test]
fn two_replicas_elect_one_leader_which_scales_from_both_windows_and_fails_over() {
    let (fake, kubeconfig) = cluster(1, Duration::ZERO);
    let text = policy(
        "    scaling:
      min_replicas: 1
      max_replicas: 4
      capacity: { requests_per_second: 10 }
      scale_down: { stabilization: 1m }
",
        "",
    );
    let names = ["forecourt-a", "forecourt-b"];
    let mut replicas = names.map(|name| forecourt(&text, &kubeconfig, name));
    let leaders = |replicas: &[Forecourt; 2]| {
        replicas
            .iter()
            .map(|fc| fc.metric("forecourt_leader ") as u32)
            .collect::<Vec<_>>()
    };
    let leader = wait_for(WAIT, || {
        let l = leaders(&replicas);
        (l.iter().sum::<u32>() == 1).then(|| l.iter().position(|n| *n == 1))?
    })
    .unwrap_or_else(|| panic!("no single leader: {:?}", leaders(&replicas)));
    let follower = 1 - leader;
    let holder = &fake.lease(NS, "forecourt").expect("the leader Lease")["spec"]["holderIdentity"];
    assert_eq!(holder, names[leader]);
    // Both publish their windows on their own Lease.
    wait_for(WAIT, || {
        let windows = fake
            .leases(NS)
            .iter()
            .filter(|l| l["metadata"]["labels"]["forecourt.dev/windows-of"] == "forecourt")
            .count();
        (windows == 2).then_some(())
    })
    .expect("two windows Leases");

    // Traffic through the follower only: the leader sees it in the follower's windows and scales.
    replicas[follower].wait_ready("shop", 1);
    let traffic = Traffic::start(replicas[follower].proxy, 40, 4);
    wait_for(Duration::from_secs(20), || {
        (fake.spec_replicas(NS, "shop") > Some(1)).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the leader never scaled for the follower's load; leader log:\n{}",
            replicas[leader].log()
        )
    });

    // The leader dies without releasing the Lease: the follower takes over within the lease
    // duration (3 s) plus a retry period, and routes throughout.
    let scaled_to = fake.spec_replicas(NS, "shop").unwrap_or(0);
    let killed = Instant::now();
    replicas[leader].process.kill();
    let took_over = wait_for(Duration::from_secs(10), || {
        let lease = fake.lease(NS, "forecourt")?;
        (lease["spec"]["holderIdentity"] == names[follower]).then(|| killed.elapsed())
    })
    .expect("no failover");
    eprintln!("failover {took_over:?} after the leader was killed (lease duration 3 s)");
    assert!(
        took_over < Duration::from_secs(6),
        "failover took {took_over:?}"
    );
    wait_for(WAIT, || {
        (replicas[follower].metric("forecourt_leader ") == 1.0).then_some(())
    })
    .expect("the follower leads");
    // The new leader plans from the count it had already read, not from zero: the traffic
    // still needs what the old leader ordered, so nothing is scaled down.
    std::thread::sleep(Duration::from_secs(2));
    let last_ordered = fake
        .scale_writes()
        .iter()
        .rev()
        .filter(|w| w.field_manager.as_deref() == Some("forecourt"))
        .find_map(|w| w.body["spec"]["replicas"].as_u64());
    assert!(
        fake.spec_replicas(NS, "shop") >= Some(scaled_to)
            && last_ordered >= Some(u64::from(scaled_to)),
        "the new leader scaled down from {scaled_to}: {:?}",
        fake.scale_writes()
    );
    let (answered, failures) = traffic.finish();
    assert!(failures.is_empty(), "{failures:?}");
    assert!(answered > 100, "{answered}");
}

#[test]
fn api_errors_and_dropped_watches_fail_no_request() {
    let (fake, kubeconfig) = cluster(2, Duration::ZERO);
    let fc = forecourt(
        &policy(
            "    scaling: { min_replicas: 2, max_replicas: 3, capacity: { requests_per_second: 1000 } }
",
            "",
        ),
        &kubeconfig,
        "forecourt-0",
    );
    fc.wait_ready("shop", 2);
    let traffic = Traffic::start(fc.proxy, 60, 3);
    std::thread::sleep(Duration::from_millis(500));
    fake.fail_for(Duration::from_secs(2), 500);
    fake.drop_watches();
    std::thread::sleep(Duration::from_secs(2));
    fake.compact();
    fake.drop_watches();
    fake.set_latency(Duration::from_millis(800));
    std::thread::sleep(Duration::from_secs(1));
    fake.set_latency(Duration::ZERO);
    fake.set_unreachable(true);
    fake.drop_watches();
    std::thread::sleep(Duration::from_secs(2));
    fake.set_unreachable(false);
    std::thread::sleep(Duration::from_secs(2));
    let (answered, failures) = traffic.finish();
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert!(answered > 200, "{answered}");
    assert_eq!(fc.ready_count("shop"), 2, "ready instances were dropped");
    assert!(fc.metric("forecourt_kubernetes_watch_restarts_total") >= 1.0);
    let metrics = get(fc.admin, "/metrics", &[]).unwrap().text();
    check_with_promtool(&metrics);
    let errors: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("forecourt_kubernetes_api_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(errors >= 1.0, "no API error counted");
    assert!(!fc.log().contains("panicked"), "{}", fc.log());
}

/// Against a real cluster (`KUBECONFIG` set): Forecourt lists the endpoints of a Service named
/// by `FORECOURT_TEST_SERVICE` (namespace `FORECOURT_TEST_NAMESPACE`, default `default`) and
/// confirms them; it does not scale anything.
#[test]
#[ignore = "needs a real cluster: KUBECONFIG and FORECOURT_TEST_SERVICE"]
fn real_cluster_endpoints_are_listed_and_confirmed() {
    let kubeconfig = PathBuf::from(std::env::var("KUBECONFIG").expect("KUBECONFIG"));
    let service = std::env::var("FORECOURT_TEST_SERVICE").expect("FORECOURT_TEST_SERVICE");
    let namespace =
        std::env::var("FORECOURT_TEST_NAMESPACE").unwrap_or_else(|_| "default".to_owned());
    let text = format!(
        "listeners: {{ proxy: \"{{proxy}}\", admin: \"{{admin}}\" }}
admin: {{ public_reads: true }}
kubernetes: {{ namespace: {namespace} }}
services:
  - name: shop
    routes: [{{ path_prefix: / }}]
    kubernetes: {{ deployment: {service}, service: {service} }}
"
    );
    let fc = Forecourt::start_with_env(&text, &[("KUBECONFIG", kubeconfig.to_str().unwrap())]);
    wait_for(Duration::from_secs(60), || {
        (fc.ready_count("shop") > 0).then_some(())
    })
    .unwrap_or_else(|| panic!("no endpoint confirmed: {}", fc.readiness("shop")));
}
