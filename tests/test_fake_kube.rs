//! The fake Kubernetes API server checked against the real `kube` client: if these pass, the
//! wire format Forecourt's `kubernetes` backend reads and writes is the real one.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use forecourt_orchestrator::kubernetes::{KubernetesOrchestrator, ScaleDownGate};
use forecourt_orchestrator::Orchestrator;
use forecourt_test_utils::fake_kube::{BackendPods, FakeKube, PodRunner, RunningPod};
use forecourt_test_utils::{forecourt_bin, get, scratch_dir, send_raw, wait_for};
use futures::{pin_mut, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions, WatchEvent,
    WatchParams,
};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::Event;
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use serde_json::json;

/// Bound of every wait here: the fake answers on loopback within milliseconds.
const WAIT: Duration = Duration::from_secs(10);

/// Pods served in-process: a listener that accepts and closes connections until dropped.
struct ListenerPods;

struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl PodRunner for ListenerPods {
    fn start(&self, _: &str, _: &str, _: &str) -> std::io::Result<RunningPod> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                if listener.accept().is_err() {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        Ok(RunningPod {
            address,
            guard: Box::new(StopOnDrop(stop)),
        })
    }
}

/// A fake API server, a runtime for the client, and a client in namespace `default`.
struct Harness {
    kube: FakeKube,
    client: kube::Client,
    runtime: tokio::runtime::Runtime,
}

impl Harness {
    fn start(runner: Arc<dyn PodRunner>) -> Harness {
        let kube = FakeKube::start(runner);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut config = kube::Config::new(kube.url().parse().unwrap());
        config.default_namespace = "default".into();
        let client = {
            let _inside = runtime.enter();
            kube::Client::try_from(config).unwrap()
        };
        Harness {
            kube,
            client,
            runtime,
        }
    }

    /// Runs `f` on the client runtime, bounded by [`WAIT`].
    fn run<F: Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(async {
            tokio::time::timeout(WAIT, f)
                .await
                .expect("a kube call hung")
        })
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::default_namespaced(self.client.clone())
    }

    fn address(&self) -> SocketAddr {
        self.kube
            .url()
            .trim_start_matches("http://")
            .parse()
            .unwrap()
    }
}

/// The API status code of a failed kube call.
fn code<T: std::fmt::Debug>(result: kube::Result<T>) -> u16 {
    match result {
        Err(kube::Error::Api(status)) => status.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[test]
fn scale_subresource_reads_and_writes_replicas() {
    let h = Harness::start(Arc::new(ListenerPods));
    let labels = [("app", "shop"), ("track", "stable")];
    h.kube
        .create_deployment("default", "shop", &labels, "shop", "shop:1", 2);
    let deployments: Api<Deployment> = h.api();
    wait_for(WAIT, || {
        (h.kube.pods("default", "shop").len() == 2).then_some(())
    })
    .expect("two pods");
    wait_for(WAIT, || {
        let scale = h.run(deployments.get_scale("shop")).unwrap();
        (scale.status?.replicas == 2).then_some(())
    })
    .expect("status.replicas counts the pods");

    let scale = h.run(deployments.get_scale("shop")).unwrap();
    assert_eq!(scale.metadata.name.as_deref(), Some("shop"));
    assert_eq!(scale.spec.unwrap().replicas, Some(2));
    let status = scale.status.unwrap();
    assert_eq!(status.selector.as_deref(), Some("app=shop,track=stable"));
    let generation =
        h.kube.deployment("default", "shop").unwrap()["metadata"]["generation"].clone();

    // `kubectl create` owns spec.replicas: applying another value conflicts unless forced.
    let apply = |n: i32| {
        Patch::Apply(
            json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "spec": {"replicas": n}}),
        )
    };
    let conflict =
        h.run(deployments.patch_scale("shop", &PatchParams::apply("forecourt"), &apply(4)));
    assert_eq!(code(conflict), 409);
    let scale = h
        .run(deployments.patch_scale("shop", &PatchParams::apply("forecourt").force(), &apply(4)))
        .unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(4));
    assert_eq!(h.kube.spec_replicas("default", "shop"), Some(4));
    let deployment = h.kube.deployment("default", "shop").unwrap();
    assert_eq!(
        deployment["metadata"]["generation"],
        generation.as_u64().unwrap() + 1
    );

    let write = h.kube.scale_writes().last().cloned().unwrap();
    assert_eq!(write.name, "shop");
    assert_eq!(write.content_type, "application/apply-patch+yaml");
    assert_eq!(write.field_manager.as_deref(), Some("forecourt"));
    assert_eq!(write.body["spec"]["replicas"], 4);

    let merge = PatchParams {
        field_manager: Some("forecourt".into()),
        ..PatchParams::default()
    };
    let patch = Patch::Merge(json!({"spec": {"replicas": 3}}));
    h.run(deployments.patch_scale("shop", &merge, &patch))
        .unwrap();
    assert_eq!(h.kube.spec_replicas("default", "shop"), Some(3));
    let write = h.kube.scale_writes().last().cloned().unwrap();
    assert_eq!(write.content_type, "application/merge-patch+json");
    assert_eq!(
        h.kube.scale_writes().len(),
        2,
        "the refused apply is not a write"
    );

    // A human scales: Forecourt's next apply conflicts with them, and wins only by force.
    h.kube
        .set_replicas_as("default", "shop", 5, "kubectl-scale");
    let conflict =
        h.run(deployments.patch_scale("shop", &PatchParams::apply("forecourt"), &apply(1)));
    match conflict {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
            assert!(
                status.message.contains("kubectl-scale"),
                "{}",
                status.message
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    wait_for(WAIT, || {
        let deployment = h.run(deployments.get("shop")).ok()?;
        let status = deployment.status?;
        (status.ready_replicas == Some(5)
            && status.observed_generation == deployment.metadata.generation)
            .then_some(())
    })
    .expect("five ready replicas in the status");
}

/// What a `kube::runtime::watcher` has seen, kept like a reflector keeps it.
#[derive(Default)]
struct Seen {
    slices: BTreeMap<String, EndpointSlice>,
    relisting: Option<BTreeMap<String, EndpointSlice>>,
    lists: usize,
    errors: Vec<String>,
}

impl Seen {
    /// `(port, ready, serving, terminating)` of every endpoint, by port.
    fn endpoints(&self) -> Vec<(u16, bool, bool, bool)> {
        let mut endpoints: Vec<_> = self
            .slices
            .values()
            .flat_map(|slice| {
                let port = slice.ports.as_ref().unwrap()[0].port.unwrap() as u16;
                slice.endpoints.iter().map(move |e| {
                    let c = e.conditions.clone().unwrap();
                    (
                        port,
                        c.ready.unwrap(),
                        c.serving.unwrap(),
                        c.terminating.unwrap(),
                    )
                })
            })
            .collect();
        endpoints.sort();
        endpoints
    }
}

/// A constant, short backoff, so recoveries take milliseconds.
struct Quick;

impl Iterator for Quick {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        Some(Duration::from_millis(50))
    }
}

impl Backoff for Quick {
    fn reset(&mut self) {}
}

/// Follows the EndpointSlices of `selector` with the real watcher, in the background.
fn follow_slices(h: &Harness, selector: &str) -> Arc<Mutex<Seen>> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stream = watcher(
        h.api::<EndpointSlice>(),
        watcher::Config::default().labels(selector),
    );
    let into = seen.clone();
    h.runtime.spawn(async move {
        let stream = stream.backoff(Quick);
        pin_mut!(stream);
        while let Some(event) = stream.next().await {
            let mut seen = into.lock().unwrap();
            match event {
                Ok(Event::Init) => {
                    seen.lists += 1;
                    seen.relisting = Some(BTreeMap::new());
                }
                Ok(Event::InitApply(slice)) => {
                    if let Some(relisting) = &mut seen.relisting {
                        relisting.insert(slice.name_any(), slice);
                    }
                }
                Ok(Event::InitDone) => seen.slices = seen.relisting.take().unwrap_or_default(),
                Ok(Event::Apply(slice)) => {
                    seen.slices.insert(slice.name_any(), slice);
                }
                Ok(Event::Delete(slice)) => {
                    seen.slices.remove(&slice.name_any());
                }
                Err(e) => seen.errors.push(e.to_string()),
            }
        }
    });
    seen
}

/// Waits until the watcher's endpoints satisfy `f`.
fn wait_endpoints(seen: &Mutex<Seen>, what: &str, f: impl Fn(&[(u16, bool, bool, bool)]) -> bool) {
    wait_for(WAIT, || f(&seen.lock().unwrap().endpoints()).then_some(()))
        .unwrap_or_else(|| panic!("never {what}: {:?}", seen.lock().unwrap().endpoints()));
}

fn all_ready(n: usize) -> impl Fn(&[(u16, bool, bool, bool)]) -> bool {
    move |e| {
        e.len() == n
            && e.iter()
                .all(|&(_, ready, serving, terminating)| ready && serving && !terminating)
    }
}

#[test]
fn a_watcher_follows_endpoints_through_scaling_drops_and_compaction() {
    let h = Harness::start(Arc::new(ListenerPods));
    h.kube.set_termination_grace(Duration::from_millis(400));
    h.kube
        .create_deployment("default", "shop", &[("app", "shop")], "shop", "shop:1", 1);
    h.kube
        .create_service("default", "shop", &[("app", "shop")], "http", 80);
    h.kube
        .create_service("default", "other", &[("app", "other")], "http", 80);
    let seen = follow_slices(&h, "kubernetes.io/service-name=shop");
    wait_endpoints(&seen, "one ready endpoint", all_ready(1));

    // The slice is the real controller's shape, with the pod's own port.
    let pod = h.kube.pods("default", "shop")[0].clone();
    let slice = seen
        .lock()
        .unwrap()
        .slices
        .values()
        .next()
        .cloned()
        .unwrap();
    assert!(slice.metadata.name.as_deref().unwrap().starts_with("shop-"));
    assert_eq!(slice.address_type, "IPv4");
    let endpoint = &slice.endpoints[0];
    assert_eq!(endpoint.addresses, ["127.0.0.1"]);
    assert_eq!(
        endpoint.target_ref.as_ref().unwrap().name.as_deref(),
        Some(pod.name.as_str())
    );
    let port = &slice.ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.port),
        (Some("http"), Some(i32::from(pod.address.port())))
    );
    assert_eq!(
        slice.metadata.owner_references.as_ref().unwrap()[0].name,
        "shop"
    );

    let deployments: Api<Deployment> = h.api();
    let scale = |n: u32| {
        let patch = Patch::Merge(json!({"spec": {"replicas": n}}));
        h.run(deployments.patch_scale("shop", &PatchParams::default(), &patch))
            .unwrap();
    };
    scale(3);
    wait_endpoints(&seen, "three ready endpoints", all_ready(3));
    scale(1);
    wait_endpoints(&seen, "two terminating endpoints", |e| {
        e.iter()
            .filter(|&&(_, ready, serving, terminating)| !ready && serving && terminating)
            .count()
            == 2
    });
    wait_endpoints(&seen, "back to one endpoint", all_ready(1));
    assert_eq!(
        h.kube.pods("default", "shop").len(),
        1,
        "terminated pods are gone"
    );

    // A dropped watch resumes from its resourceVersion: no new list.
    h.kube.drop_watches();
    scale(2);
    wait_endpoints(&seen, "two endpoints after the drop", all_ready(2));
    assert_eq!(seen.lock().unwrap().lists, 1, "resumed without a list");
    let watches: Vec<String> = h
        .kube
        .requests()
        .into_iter()
        .filter(|(_, path)| path.contains("endpointslices") && path.contains("watch=true"))
        .map(|(_, path)| path)
        .collect();
    assert!(watches.len() >= 2, "{watches:?}");
    assert!(
        !watches.last().unwrap().contains("resourceVersion=0"),
        "{watches:?}"
    );

    // Missed changes that were compacted away: 410 Expired, and the watcher lists again.
    h.kube.set_unreachable(true);
    h.kube
        .set_replicas_as("default", "shop", 3, "kubectl-scale");
    wait_for(WAIT, || {
        let slices = h.kube.endpoint_slices("default", "shop");
        let ready = |s: &serde_json::Value| s["endpoints"][0]["conditions"]["ready"] == true;
        (slices.len() == 3 && slices.iter().all(ready)).then_some(())
    })
    .expect("three ready endpoints in the fake");
    h.kube.compact();
    h.kube.set_unreachable(false);
    wait_endpoints(&seen, "three endpoints after compaction", all_ready(3));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.lists, 2, "listed again after 410");
    assert!(
        seen.errors.iter().any(|e| e.contains("Expired")),
        "{:?}",
        seen.errors
    );
    assert!(h.kube.endpoint_slices("default", "other").is_empty());
}

#[test]
fn watches_replay_filter_and_expire() {
    let h = Harness::start(Arc::new(ListenerPods));
    let deployments: Api<Deployment> = h.api();
    h.kube
        .create_deployment("default", "a", &[("app", "a")], "a", "a:1", 0);
    let list = h.run(deployments.list(&ListParams::default())).unwrap();
    let from = list.metadata.resource_version.unwrap();

    h.kube
        .create_deployment("default", "b", &[("app", "b")], "b", "b:1", 0);
    wait_for(WAIT, || {
        h.kube.deployment("default", "b")?.get("status").map(drop)
    })
    .expect("the controller writes b's status");
    let relabel = Patch::Merge(json!({"metadata": {"labels": {"app": "c"}}}));
    h.run(deployments.patch("b", &PatchParams::default(), &relabel))
        .unwrap();

    // From `from`: b was added, then left the selection `app=b`, which is a DELETED.
    let events = h.run(async {
        let params = WatchParams::default().labels("app=b").timeout(1);
        let stream = deployments.watch(&params, &from).await.unwrap();
        stream
            .filter_map(|e| async move {
                match e.unwrap() {
                    WatchEvent::Added(d) => Some(format!("ADDED {}", d.name_any())),
                    WatchEvent::Modified(d) => Some(format!("MODIFIED {}", d.name_any())),
                    WatchEvent::Deleted(d) => Some(format!("DELETED {}", d.name_any())),
                    WatchEvent::Bookmark(_) => None,
                    WatchEvent::Error(s) => Some(format!("ERROR {}", s.code)),
                }
            })
            .collect::<Vec<_>>()
            .await
    });
    // The status write is MODIFIED; the relabel takes b out of the selection: DELETED. The stream
    // ends after timeoutSeconds.
    assert_eq!(events, ["ADDED b", "MODIFIED b", "DELETED b"]);

    // A streaming list: the current objects, then the initial-events-end bookmark.
    let seen = h.run(async {
        let config = watcher::Config::default().streaming_lists();
        let stream = watcher(deployments.clone(), config);
        pin_mut!(stream);
        let mut names = Vec::new();
        while let Some(event) = stream.next().await {
            match event.unwrap() {
                Event::InitApply(d) => names.push(d.name_any()),
                Event::InitDone => break,
                _ => {}
            }
        }
        names
    });
    assert_eq!(seen, ["a", "b"]);

    h.kube.compact();
    let first = h.run(async {
        let stream = deployments
            .watch(&WatchParams::default(), &from)
            .await
            .unwrap();
        pin_mut!(stream);
        stream.next().await.unwrap().unwrap()
    });
    match first {
        WatchEvent::Error(status) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected 410 Expired, got {other:?}"),
    }
}

#[test]
fn leases_use_optimistic_concurrency() {
    let h = Harness::start(Arc::new(ListenerPods));
    let leases: Api<Lease> = h.api();
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "forecourt", "labels": {"app": "forecourt"}},
        "spec": {
            "holderIdentity": "a",
            "leaseDurationSeconds": 10,
            "acquireTime": "2025-01-01T00:00:00.000000Z",
            "renewTime": "2025-01-01T00:00:00.000000Z",
            "leaseTransitions": 0,
        },
    }))
    .unwrap();
    let created = h
        .run(leases.create(&PostParams::default(), &lease))
        .unwrap();
    assert_eq!(
        code(h.run(leases.create(&PostParams::default(), &lease))),
        409
    );
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());

    let mut renewed = created.clone();
    renewed.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let replaced = h
        .run(leases.replace("forecourt", &PostParams::default(), &renewed))
        .unwrap();
    assert_ne!(
        replaced.metadata.resource_version,
        created.metadata.resource_version
    );
    // `renewed` still carries the version `replaced` superseded.
    assert_eq!(
        code(h.run(leases.replace("forecourt", &PostParams::default(), &renewed))),
        409
    );
    assert_eq!(
        h.kube.lease("default", "forecourt").unwrap()["spec"]["holderIdentity"],
        "b"
    );
    assert_eq!(
        h.kube.lease("default", "forecourt").unwrap()["spec"]["renewTime"],
        "2025-01-01T00:00:00.000000Z",
        "stored as given"
    );

    let listed = h
        .run(leases.list(&ListParams::default().labels("app=forecourt")))
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    let deleted = h
        .run(leases.delete("forecourt", &DeleteParams::default()))
        .unwrap();
    assert!(deleted.is_right(), "a Status answers a delete");
    assert!(h.kube.leases("default").is_empty());
    assert_eq!(code(h.run(leases.get("forecourt"))), 404);
}

#[test]
fn label_and_field_selectors_filter_lists() {
    let h = Harness::start(Arc::new(ListenerPods));
    for (name, labels) in [
        ("a", &[("app", "shop"), ("track", "stable")][..]),
        ("b", &[("app", "shop"), ("track", "canary")][..]),
        ("c", &[("app", "api")][..]),
    ] {
        h.kube
            .create_deployment("default", name, labels, name, "img:1", 0);
    }
    h.kube
        .create_deployment("prod", "d", &[("app", "shop")], "d", "img:1", 0);
    let deployments: Api<Deployment> = h.api();
    let names = |params: ListParams| -> Vec<String> {
        let list = h.run(deployments.list(&params)).unwrap();
        list.items.iter().map(|d| d.name_any()).collect()
    };
    let labels = |selector: &str| names(ListParams::default().labels(selector));
    assert_eq!(labels("app=shop"), ["a", "b"]);
    assert_eq!(labels("app==shop,track!=canary"), ["a"]);
    assert_eq!(labels("track in (canary,beta)"), ["b"]);
    assert_eq!(labels("app,track notin (canary)"), ["a", "c"]);
    assert_eq!(labels("!track"), ["c"]);
    assert_eq!(
        names(ListParams::default().fields("metadata.name=b")),
        ["b"]
    );
    let all: Api<Deployment> = Api::all(h.client.clone());
    let list = h
        .run(all.list(&ListParams::default().labels("app=shop")))
        .unwrap();
    assert_eq!(list.items.len(), 3, "a cluster-wide list spans namespaces");
    assert_eq!(
        code(h.run(deployments.list(&ListParams::default().labels("app in shop")))),
        400
    );
}

#[test]
fn faults_reach_the_client_as_real_errors() {
    let h = Harness::start(Arc::new(ListenerPods));
    h.kube
        .create_deployment("default", "shop", &[("app", "shop")], "shop", "shop:1", 0);
    let deployments: Api<Deployment> = h.api();
    let gets = || {
        let requests = h.kube.requests();
        let path = |p: &String| p.split('?').next().unwrap().to_owned();
        requests
            .iter()
            .filter(|(m, p)| m == "GET" && path(p).ends_with("/deployments/shop"))
            .count()
    };

    h.kube.fail_next(1, 500);
    match h.run(deployments.get("shop")) {
        Err(kube::Error::Api(status)) => {
            assert_eq!(
                (status.code, status.reason.as_str()),
                (500, "InternalError")
            )
        }
        other => panic!("expected a 500, got {other:?}"),
    }
    // kube retries 503 on its own: two failures, then the answer.
    let before = gets();
    h.kube.fail_next(2, 503);
    h.run(deployments.get("shop")).unwrap();
    assert_eq!(gets() - before, 3);

    h.kube.fail_for(Duration::from_millis(300), 409);
    assert_eq!(code(h.run(deployments.get("shop"))), 409);
    std::thread::sleep(Duration::from_millis(350));
    h.run(deployments.get("shop")).unwrap();

    h.kube.set_latency(Duration::from_millis(200));
    let start = Instant::now();
    h.run(deployments.get("shop")).unwrap();
    assert!(start.elapsed() >= Duration::from_millis(200));
    h.kube.set_latency(Duration::ZERO);

    h.kube.set_unreachable(true);
    assert!(matches!(h.run(deployments.get("shop")), Err(e) if !matches!(e, kube::Error::Api(_))));
    h.kube.set_unreachable(false);
    h.run(deployments.get("shop")).unwrap();

    // Wire-level refusals: an unknown patch type, and an apply without a field manager.
    let patch = |content_type: &str, query: &str| {
        let body = r#"{"apiVersion":"apps/v1","kind":"Deployment","spec":{"replicas":2}}"#;
        let request = format!(
            "PATCH /apis/apps/v1/namespaces/default/deployments/shop{query} HTTP/1.1\r\nHost: k\r\n\
             Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let response = send_raw(h.address(), request.as_bytes()).unwrap();
        let status: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        (
            response.status,
            status["reason"].as_str().unwrap_or("").to_owned(),
        )
    };
    assert_eq!(
        patch("text/plain", ""),
        (415, "UnsupportedMediaType".into())
    );
    assert_eq!(
        patch("application/apply-patch+yaml", ""),
        (422, "Invalid".into())
    );
    assert_eq!(
        patch("application/apply-patch+yaml", "?fieldManager=x&force=true").0,
        200
    );
    assert_eq!(h.kube.spec_replicas("default", "shop"), Some(2));

    // Dropped watches end abruptly: the connection closes without the final empty chunk.
    let mut watch = TcpStream::connect(h.address()).unwrap();
    watch.set_read_timeout(Some(WAIT)).unwrap();
    let request =
        "GET /apis/apps/v1/namespaces/default/deployments?watch=true HTTP/1.1\r\nHost: k\r\n\r\n";
    watch.write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(watch);
    let mut line = String::new();
    while !line.contains(r#""type":"ADDED""#) {
        line.clear();
        assert_ne!(
            reader.read_line(&mut line).unwrap(),
            0,
            "the watch ended early"
        );
    }
    h.kube.drop_watches();
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
    let rest = String::from_utf8_lossy(&rest);
    assert!(!rest.contains("0\r\n\r\n"), "{rest}");
}

#[test]
fn a_kubeconfig_reaches_backend_pods() {
    forecourt_bin(); // built before any wait starts
    let h = Harness::start(Arc::new(BackendPods {
        boot_delay: Duration::from_millis(200),
    }));
    let path = h.kube.write_kubeconfig(&scratch_dir("fake-kube"));
    let client = h.run(async {
        let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
        let options = kube::config::KubeConfigOptions::default();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .unwrap();
        assert_eq!(config.default_namespace, "default");
        kube::Client::try_from(config).unwrap()
    });
    let deployments: Api<Deployment> = Api::default_namespaced(client);
    h.kube
        .create_deployment("default", "shop", &[("app", "shop")], "shop", "shop:1", 1);
    let pod = wait_for(WAIT, || {
        h.kube.pods("default", "shop").into_iter().find(|p| p.ready)
    })
    .expect("the backend pod became ready");
    let answer = get(pod.address, "/healthz", &[]).unwrap();
    assert_eq!(answer.status, 200);

    h.kube.set_termination_grace(Duration::from_millis(100));
    h.run(deployments.delete("shop", &DeleteParams::default()))
        .unwrap();
    wait_for(WAIT, || {
        h.kube.pods("default", "shop").is_empty().then_some(())
    })
    .expect("the pod is gone with its deployment");
    wait_for(WAIT, || {
        TcpStream::connect(pod.address).is_err().then_some(())
    })
    .expect("the backend process was stopped");
}

#[test]
fn a_delete_checks_its_preconditions_like_the_real_server() {
    let h = Harness::start(Arc::new(ListenerPods));
    let leases: Api<Lease> = h.api();
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "l"}})).unwrap();
    let created = h
        .run(leases.create(&PostParams::default(), &lease))
        .unwrap();
    let precondition = |uid: Option<&str>, version: Option<&str>| DeleteParams {
        preconditions: Some(Preconditions {
            uid: uid.map(str::to_owned),
            resource_version: version.map(str::to_owned),
        }),
        ..DeleteParams::default()
    };
    let uid = created.metadata.uid.as_deref();
    let version = created.metadata.resource_version.as_deref();
    for wrong in [
        precondition(Some("another-uid"), None),
        precondition(uid, Some("1")),
    ] {
        match h.run(leases.delete("l", &wrong)) {
            Err(kube::Error::Api(status)) => {
                assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
                assert!(status.message.contains("Precondition failed"), "{status:?}");
            }
            other => panic!("expected a 409, got {other:?}"),
        }
        assert!(h.kube.lease("default", "l").is_some(), "deleted anyway");
    }
    h.run(leases.delete("l", &precondition(uid, version)))
        .unwrap();
    assert!(h.kube.lease("default", "l").is_none());
}

// === Forecourt's Kubernetes backend against the fake ===

/// A policy with `shop` on Kubernetes and two flagged versions, `beta` and `gamma`.
fn versions_policy() -> forecourt_config::Policy {
    let text = "listeners: { proxy: \"127.0.0.1:18080\", admin: \"127.0.0.1:18081\" }
kubernetes:
  retry: { base: 50ms, max: 200ms }
services:
  - name: shop
    routes: [{ path_prefix: /shop }]
    kubernetes: { deployment: shop, port: http }
    versions:
      - { flag: beta, image: \"shop:2\", labels: { track: beta } }
      - { flag: gamma, image: \"shop:3\", labels: { track: gamma } }
";
    forecourt_config::Policy::parse(text, std::path::Path::new("policy.yaml"))
        .unwrap_or_else(|e| panic!("the test policy does not load: {e:?}"))
}

/// The fake with the stable `shop` Deployment (`replicas` pods) and Service, and Forecourt's
/// backend for [`versions_policy`] on it.
fn backend(replicas: u32) -> (Harness, KubernetesOrchestrator) {
    let h = Harness::start(Arc::new(ListenerPods));
    let labels = [("app", "shop"), ("track", "stable")];
    h.kube
        .create_deployment("default", "shop", &labels, "shop", "shop:1", replicas);
    h.kube
        .create_service("default", "shop", &[("app", "shop")], "http", 80);
    let orchestrator = {
        let _inside = h.runtime.enter();
        KubernetesOrchestrator::new(h.client.clone(), &versions_policy(), "default")
    };
    (h, orchestrator)
}

/// Writes (not reads) of the fake's requests whose path contains `part`.
fn writes_to(h: &Harness, part: &str) -> Vec<(String, String)> {
    h.kube
        .requests()
        .into_iter()
        .filter(|(method, path)| method != "GET" && path.contains(part))
        .collect()
}

#[test]
fn objects_without_the_managed_by_label_are_never_patched_or_deleted() {
    let (h, forecourt) = backend(1);
    // The user's own shop-beta: the very names Forecourt would give version beta's objects.
    let labels = [("app", "shop"), ("track", "users-own")];
    h.kube
        .create_deployment("default", "shop-beta", &labels, "shop", "other:1", 2);
    let stats = forecourt.stats();

    // Ordering beta's replicas reads shop-beta, finds no managed-by label and refuses.
    let order = |n: u32| h.run(forecourt.set_replicas("shop", "beta", n));
    let _ = order(1);
    let refusal = wait_for(WAIT, || order(1).err())
        .expect("the order is refused once the Deployment is read");
    assert!(
        refusal.to_string().contains("app.kubernetes.io/managed-by"),
        "{refusal}"
    );
    assert!(
        refusal.to_string().contains("Deployment shop-beta"),
        "{refusal}"
    );
    assert!(stats.refused_writes.load(Ordering::Relaxed) >= 1);
    assert!(
        h.kube.service("default", "shop-beta").is_none(),
        "no Service is made for a Deployment that is not Forecourt's"
    );
    // The user has a Service of that name too.
    h.kube
        .create_service("default", "shop-beta", &[("app", "other")], "http", 80);

    // Removing the version reads both objects and deletes neither.
    let before = stats.refused_writes.load(Ordering::Relaxed);
    h.run(forecourt.remove_version("shop", "beta")).unwrap();
    wait_for(WAIT, || {
        (stats.refused_writes.load(Ordering::Relaxed) >= before + 2).then_some(())
    })
    .expect("the removal refuses both objects");

    assert_eq!(h.kube.spec_replicas("default", "shop-beta"), Some(2));
    let deployment = h.kube.deployment("default", "shop-beta").unwrap();
    assert_eq!(deployment["metadata"]["labels"]["track"], "users-own");
    assert!(deployment["metadata"]["labels"]["app.kubernetes.io/managed-by"].is_null());
    assert!(h.kube.service("default", "shop-beta").is_some());
    assert!(
        h.kube.scale_writes().iter().all(|w| w.name != "shop-beta"),
        "{:?}",
        h.kube.scale_writes()
    );
    assert_eq!(
        writes_to(&h, "/shop-beta"),
        [],
        "no write reached shop-beta"
    );

    // The same steps on a version Forecourt did create do write: create, scale, delete.
    let order = |n: u32| h.run(forecourt.set_replicas("shop", "gamma", n));
    order(1).unwrap();
    let created = wait_for(WAIT, || h.kube.deployment("default", "shop-gamma"))
        .expect("the gamma Deployment is created");
    assert_eq!(
        created["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "forecourt"
    );
    wait_for(WAIT, || h.kube.service("default", "shop-gamma")).expect("gamma's Service");
    wait_for(WAIT, || {
        forecourt.replicas_known("shop", "gamma").then_some(())
    })
    .expect("gamma's replicas are read");
    order(2).unwrap();
    wait_for(WAIT, || {
        (h.kube.spec_replicas("default", "shop-gamma") == Some(2)).then_some(())
    })
    .expect("gamma scaled to 2");
    let write = h.kube.scale_writes().last().cloned().unwrap();
    assert_eq!(write.name, "shop-gamma");
    assert!(
        write.body["metadata"]["resourceVersion"].is_string(),
        "a version's scale patch names the resourceVersion checked: {:?}",
        write.body
    );
    order(0).unwrap();
    h.run(forecourt.remove_version("shop", "gamma")).unwrap();
    wait_for(WAIT, || {
        (h.kube.deployment("default", "shop-gamma").is_none()
            && h.kube.service("default", "shop-gamma").is_none())
        .then_some(())
    })
    .expect("gamma's objects are deleted");
    // ...and shop-beta still stands.
    assert!(h.kube.deployment("default", "shop-beta").is_some());
    assert!(h.kube.service("default", "shop-beta").is_some());
    h.run(forecourt.shutdown());
}

/// A scale-down gate a test turns on and off.
#[derive(Default)]
struct Gate(Mutex<Option<String>>);

impl ScaleDownGate for Gate {
    fn hold_scale_down(&self) -> Option<String> {
        self.0.lock().unwrap().clone()
    }
}

#[test]
fn a_held_scale_down_writes_nothing_and_a_scale_up_goes_through() {
    let (h, forecourt) = backend(3);
    let gate = Arc::new(Gate::default());
    // Reading the replicas starts the target's task: inside the client runtime.
    let _inside = h.runtime.enter();
    forecourt.hold_scale_downs_with(gate.clone());
    wait_for(WAIT, || {
        forecourt.replicas_known("shop", "stable").then_some(())
    })
    .expect("the stable replicas are read");
    assert_eq!(forecourt.replicas("shop", "stable"), 3);
    let order = |n: u32| h.run(forecourt.set_replicas("shop", "stable", n));

    *gate.0.lock().unwrap() = Some("the windows of forecourt-b are stale".into());
    let held = order(1).expect_err("a scale-down is held");
    assert!(held.to_string().contains("forecourt-b"), "{held}");
    assert!(
        held.to_string().contains("scale-down held"),
        "a hold, not a failure: {held}"
    );
    // Raising goes through while held...
    order(5).unwrap();
    wait_for(WAIT, || {
        (h.kube.spec_replicas("default", "shop") == Some(5)).then_some(())
    })
    .expect("scaled up to 5");
    wait_for(WAIT, || {
        (forecourt.replicas("shop", "stable") == 5).then_some(())
    })
    .expect("5 read back");
    // ...lowering does not, however often it is ordered.
    for n in [4, 2, 0] {
        assert!(order(n).is_err(), "{n} went through");
    }
    assert_eq!(
        forecourt.stats().held_scale_downs.load(Ordering::Relaxed),
        4
    );
    let writes: Vec<_> = h
        .kube
        .scale_writes()
        .iter()
        .map(|w| w.body["spec"]["replicas"].as_u64())
        .collect();
    assert_eq!(writes, [Some(5)], "only the scale-up was written");
    assert_eq!(h.kube.spec_replicas("default", "shop"), Some(5));

    // The hold ends: the same scale-down goes through.
    *gate.0.lock().unwrap() = None;
    order(2).unwrap();
    wait_for(WAIT, || {
        (h.kube.spec_replicas("default", "shop") == Some(2)).then_some(())
    })
    .expect("scaled down to 2 once no longer held");
    h.run(forecourt.shutdown());
}
