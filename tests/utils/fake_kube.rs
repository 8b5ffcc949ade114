//! # A fake Kubernetes API server
//!
//! Speaks the real HTTP API (JSON over plain HTTP/1.1, any bearer token) for what Forecourt's
//! `kubernetes` backend uses — Deployments and their `scale` subresource, Services,
//! EndpointSlices, Leases — and runs a tiny controller that turns Deployments into real processes.
//! Tests drive it with the real `kube` client and inspect it with synchronous methods.
//!
//! ```text
//!  kube::Client ──HTTP──▶ wire ──────────▶ api ─────────────────▶ store
//!       ▲                 paths, faults,   defaults, status,     one revision counter,
//!       │                 JSON, Status     scale, apply owners   objects, change history
//!       │                                                          │        ▲
//!       └── chunked events ◀── watch: replay history, then live ◀──┘        │ pods, slices,
//!                                                                           │ status
//!          PodRunner processes ◀── controller: every 50 ms and after writes ┘
//!          (TCP readiness)         Deployments → pods → EndpointSlices
//! ```
//!
//! Everything lives in one [`Mutex`]; the server and the controller run on a runtime of their
//! own, so tests stay synchronous. Dropping the [`FakeKube`] stops the server and every pod.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tokio::sync::Notify;

mod api;
mod controller;
mod patch;
mod pods;
mod selector;
mod status;
mod store;
mod watch;
mod wire;

pub use pods::{BackendPods, PodRunner, RunningPod};

use api::{PatchType, Writer};
use store::{Filter, Kind, Store};

/// A running fake API server with its controller.
pub struct FakeKube {
    shared: Arc<Shared>,
    address: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

/// A pod as the controller sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodView {
    /// `{deployment}-{template hash}-{5 random}`.
    pub name: String,
    /// Where its process listens.
    pub address: SocketAddr,
    /// Its readiness check passes (a terminating pod may still be ready: its endpoint `serving`).
    pub ready: bool,
    /// It was removed and waits out its termination grace.
    pub terminating: bool,
}

/// One accepted write of a Deployment's `scale` subresource.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleWrite {
    /// The Deployment's namespace.
    pub namespace: String,
    /// The Deployment's name.
    pub name: String,
    /// The request's `Content-Type` (the patch type).
    pub content_type: String,
    /// The `fieldManager` query parameter.
    pub field_manager: Option<String>,
    /// The request body.
    pub body: Value,
}

/// What the server, its watches and the controller share.
struct Shared {
    state: Mutex<State>,
    /// The store's revision after each write; wakes the watches.
    changed: tokio::sync::watch::Sender<u64>,
    /// Bumped to end every open watch abruptly.
    drops: tokio::sync::watch::Sender<u64>,
    /// Wakes the controller after a write.
    kick: Notify,
    runner: Arc<dyn PodRunner>,
}

/// All the state, behind one lock.
struct State {
    store: Store,
    pods: Vec<controller::Pod>,
    pod_sequence: u64,
    /// Readiness a test pinned, by pod address.
    ready_pins: HashMap<SocketAddr, bool>,
    termination_grace: Duration,
    faults: wire::Faults,
    requests: VecDeque<(String, String)>,
    scale_writes: Vec<ScaleWrite>,
    /// The field managers of each Deployment's `spec.replicas`, by namespace and name.
    replica_owners: HashMap<(String, String), BTreeSet<String>>,
    cluster_ips: u32,
}

impl Shared {
    /// Runs `f` under the lock; if it wrote, wakes the watches and the controller.
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let before = state.store.revision();
        let result = f(&mut state);
        let after = state.store.revision();
        drop(state);
        if after != before {
            self.changed.send_replace(after);
            self.kick.notify_one();
        }
        result
    }
}

impl FakeKube {
    /// Starts the server on `127.0.0.1:0` and the controller, which starts pods with `runner`.
    pub fn start(runner: Arc<dyn PodRunner>) -> FakeKube {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fake-kube")
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let address = listener.local_addr().expect("a bound address");
        let state = State {
            store: Store::default(),
            pods: Vec::new(),
            pod_sequence: 0,
            ready_pins: HashMap::new(),
            termination_grace: Duration::from_secs(1),
            faults: wire::Faults::default(),
            requests: VecDeque::new(),
            scale_writes: Vec::new(),
            replica_owners: HashMap::new(),
            cluster_ips: 0,
        };
        let shared = Arc::new(Shared {
            changed: tokio::sync::watch::Sender::new(state.store.revision()),
            state: Mutex::new(state),
            drops: tokio::sync::watch::Sender::new(0),
            kick: Notify::new(),
            runner,
        });
        runtime.spawn(wire::serve(shared.clone(), listener));
        runtime.spawn(controller::run(shared.clone()));
        FakeKube {
            shared,
            address,
            runtime: Some(runtime),
        }
    }

    /// The server's URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Writes `dir/kubeconfig`: this server, a context with namespace `default`, token `fake`.
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    namespace: default\n    user: fake\n\
             current-context: fake\nusers:\n- name: fake\n  user:\n    token: fake\n",
            self.url()
        );
        std::fs::write(&path, text).expect("write the kubeconfig");
        path
    }

    /// Creates a Deployment (as `kubectl create` would) whose selector and pod labels are `labels`.
    pub fn create_deployment(
        &self,
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
        container: &str,
        image: &str,
        replicas: u32,
    ) -> Value {
        let labels = label_map(labels);
        let deployment = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": container, "image": image}]},
                },
            },
        });
        self.create(Kind::Deployment, namespace, deployment)
    }

    /// Creates a Service selecting pods by `selector`, with one TCP port named `port_name`.
    pub fn create_service(
        &self,
        namespace: &str,
        name: &str,
        selector: &[(&str, &str)],
        port_name: &str,
        port: u16,
    ) -> Value {
        let service = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "selector": label_map(selector),
                "ports": [{"name": port_name, "port": port, "targetPort": port, "protocol": "TCP"}],
            },
        });
        self.create(Kind::Service, namespace, service)
    }

    fn create(&self, kind: Kind, namespace: &str, object: Value) -> Value {
        let writer = Writer::named("kubectl-create");
        self.shared
            .with(|s| s.create_object(kind, namespace, object, &writer))
            .unwrap_or_else(|e| panic!("fake-kube: creating a {}: {e:?}", kind.name()))
    }

    /// A Deployment as stored.
    pub fn deployment(&self, namespace: &str, name: &str) -> Option<Value> {
        self.get(Kind::Deployment, namespace, name)
    }

    /// Every Deployment of `namespace`, by name.
    pub fn deployments(&self, namespace: &str) -> Vec<Value> {
        self.list(Kind::Deployment, namespace)
    }

    /// A Service as stored.
    pub fn service(&self, namespace: &str, name: &str) -> Option<Value> {
        self.get(Kind::Service, namespace, name)
    }

    /// A Deployment's `spec.replicas`.
    pub fn spec_replicas(&self, namespace: &str, name: &str) -> Option<u32> {
        let deployment = self.deployment(namespace, name)?;
        deployment["spec"]["replicas"].as_u64().map(|n| n as u32)
    }

    /// Every accepted write of a `scale` subresource so far, oldest first.
    pub fn scale_writes(&self) -> Vec<ScaleWrite> {
        self.shared.with(|s| s.scale_writes.clone())
    }

    /// A Lease as stored.
    pub fn lease(&self, namespace: &str, name: &str) -> Option<Value> {
        self.get(Kind::Lease, namespace, name)
    }

    /// Every Lease of `namespace`, by name.
    pub fn leases(&self, namespace: &str) -> Vec<Value> {
        self.list(Kind::Lease, namespace)
    }

    /// The pods of a Deployment, terminating ones included, oldest first.
    pub fn pods(&self, namespace: &str, deployment: &str) -> Vec<PodView> {
        self.shared.with(|s| {
            s.pods
                .iter()
                .filter(|p| p.namespace == namespace && p.deployment == deployment)
                .map(|p| PodView {
                    name: p.name.clone(),
                    address: p.address,
                    ready: p.ready,
                    terminating: p.terminating.is_some(),
                })
                .collect()
        })
    }

    /// The EndpointSlices of a Service, by name.
    pub fn endpoint_slices(&self, namespace: &str, service: &str) -> Vec<Value> {
        self.list(Kind::EndpointSlice, namespace)
            .into_iter()
            .filter(|slice| slice["metadata"]["labels"]["kubernetes.io/service-name"] == service)
            .collect()
    }

    /// The last requests (up to 1000), as method and path with query, oldest first.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.shared.with(|s| s.requests.iter().cloned().collect())
    }

    /// Scales a Deployment as `kubectl scale` does: a merge patch of `scale` by `field_manager`.
    pub fn set_replicas_as(&self, namespace: &str, name: &str, replicas: u32, field_manager: &str) {
        let body = json!({"spec": {"replicas": replicas}}).to_string();
        let writer = Writer::named(field_manager);
        self.shared
            .with(|s| {
                let patch = Some(PatchType::Merge);
                let content_type = "application/merge-patch+json";
                s.write_scale(
                    namespace,
                    name,
                    patch,
                    content_type,
                    body.as_bytes(),
                    &writer,
                )
            })
            .unwrap_or_else(|e| panic!("fake-kube: scaling {namespace}/{name}: {e:?}"));
    }

    /// Pins the readiness of the pod at `address` (`None`: back to its TCP check).
    pub fn set_ready(&self, address: SocketAddr, ready: Option<bool>) {
        self.shared.with(|s| match ready {
            Some(ready) => s.ready_pins.insert(address, ready),
            None => s.ready_pins.remove(&address),
        });
        self.shared.kick.notify_one();
    }

    /// How long a removed pod stays terminating before its process is stopped (default 1 s).
    pub fn set_termination_grace(&self, grace: Duration) {
        self.shared.with(|s| s.termination_grace = grace);
    }

    /// The next `n` non-watch requests answer `code` with a `Status`.
    pub fn fail_next(&self, n: u32, code: u16) {
        self.shared.with(|s| s.faults.fail_next = (n, code));
    }

    /// For `duration`, every request (watches included) answers `code` with a `Status`.
    pub fn fail_for(&self, duration: Duration, code: u16) {
        self.shared
            .with(|s| s.faults.fail_until = Some((Instant::now() + duration, code)));
    }

    /// Delays every answer by `latency`.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.with(|s| s.faults.latency = latency);
    }

    /// Ends every open watch abruptly: the connection closes without a final chunk.
    pub fn drop_watches(&self) {
        self.shared.drops.send_modify(|n| *n += 1);
    }

    /// While set, connections close without an answer (open watches are dropped as well).
    pub fn set_unreachable(&self, unreachable: bool) {
        self.shared.with(|s| s.faults.unreachable = unreachable);
        if unreachable {
            self.drop_watches();
        }
    }

    /// Compacts the history: watches from a `resourceVersion` before now get 410 Expired.
    pub fn compact(&self) {
        self.shared.with(|s| s.store.compact());
    }

    fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        self.shared
            .with(|s| s.store.get(kind, namespace, name).cloned())
    }

    fn list(&self, kind: Kind, namespace: &str) -> Vec<Value> {
        self.shared
            .with(|s| s.store.list(kind, &Filter::namespace(namespace)))
    }
}

impl Drop for FakeKube {
    /// Stops the server and the controller, then every pod.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        let pods = self.shared.with(|s| std::mem::take(&mut s.pods));
        drop(pods);
    }
}

fn label_map(labels: &[(&str, &str)]) -> Map<String, Value> {
    labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
        .collect()
}
