//! The controllers, squeezed into one loop: Deployments → pods (real processes) → readiness →
//! EndpointSlices per Service, and Deployment status.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::api::name_of;
use super::pods::RunningPod;
use super::selector::LabelSelector;
use super::store::{random_chars, uid, Filter, Kind};
use super::{Shared, State};

/// How often the controller looks, besides after every write.
const TICK: Duration = Duration::from_millis(50);
/// How long a readiness probe (a TCP connect) may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);
/// Who the EndpointSlices say manages them.
const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

/// A pod: a process started for a Deployment.
pub(crate) struct Pod {
    pub(crate) namespace: String,
    pub(crate) name: String,
    /// The Deployment it belongs to, by name and uid (a recreated Deployment has new pods).
    pub(crate) deployment: String,
    deployment_uid: String,
    /// The hash of the pod template it was made from.
    template_hash: String,
    uid: String,
    labels: Map<String, Value>,
    pub(crate) address: SocketAddr,
    /// Started pods are numbered; scale-down removes the newest first.
    sequence: u64,
    /// The last readiness check passed (TCP connect, or pinned by a test).
    pub(crate) ready: bool,
    /// When the pod started terminating.
    pub(crate) terminating: Option<Instant>,
    _guard: Box<dyn Send + Sync>,
}

impl Pod {
    fn owned_by(&self, deployment: &Value) -> bool {
        deployment["metadata"]["uid"] == self.deployment_uid.as_str()
    }

    fn terminate(&mut self, now: Instant) {
        self.terminating.get_or_insert(now);
    }
}

/// A pod the controller wants started.
struct PodPlan {
    namespace: String,
    deployment: String,
    deployment_uid: String,
    template_hash: String,
    image: String,
    labels: Map<String, Value>,
}

/// Reconciles every tick and after every write until the runtime stops.
pub(crate) async fn run(shared: Arc<Shared>) {
    loop {
        reconcile(&shared).await;
        tokio::select! {
            () = shared.kick.notified() => {}
            () = tokio::time::sleep(TICK) => {}
        }
    }
}

/// One pass: retire and plan pods under the lock, start and probe them outside it, then write
/// EndpointSlices and Deployment status.
async fn reconcile(shared: &Shared) {
    let (plans, finished) = shared.with(plan);
    drop(finished); // stops their processes, outside the lock
    let mut started = Vec::new();
    for plan in plans {
        let runner = shared.runner.clone();
        let (namespace, deployment, image) = (
            plan.namespace.clone(),
            plan.deployment.clone(),
            plan.image.clone(),
        );
        match tokio::task::spawn_blocking(move || runner.start(&namespace, &deployment, &image))
            .await
        {
            Ok(Ok(running)) => started.push((plan, running)),
            Ok(Err(e)) => eprintln!("fake-kube: starting a pod of {}: {e}", plan.deployment),
            Err(e) => eprintln!(
                "fake-kube: starting a pod of {} panicked: {e}",
                plan.deployment
            ),
        }
    }
    let targets: Vec<(String, SocketAddr)> = shared.with(|s| {
        s.pods
            .iter()
            .filter(|p| !s.ready_pins.contains_key(&p.address))
            .map(|p| (p.name.clone(), p.address))
            .collect()
    });
    let mut probed = HashMap::new();
    for (name, address) in targets {
        let connect = tokio::net::TcpStream::connect(address);
        let ready = matches!(
            tokio::time::timeout(PROBE_TIMEOUT, connect).await,
            Ok(Ok(_))
        );
        probed.insert(name, ready);
    }
    shared.with(|s| {
        for (plan, running) in started {
            s.pods.push(new_pod(plan, running, &mut s.pod_sequence));
        }
        for pod in &mut s.pods {
            if let Some(ready) = s.ready_pins.get(&pod.address).or(probed.get(&pod.name)) {
                pod.ready = *ready;
            }
        }
        sync_endpoint_slices(s);
        sync_deployment_status(s);
    });
}

fn new_pod(plan: PodPlan, running: RunningPod, sequence: &mut u64) -> Pod {
    *sequence += 1;
    let name = format!(
        "{}-{}-{}",
        plan.deployment,
        plan.template_hash,
        random_chars(5)
    );
    Pod {
        namespace: plan.namespace,
        uid: uid(),
        name,
        deployment: plan.deployment,
        deployment_uid: plan.deployment_uid,
        template_hash: plan.template_hash,
        labels: plan.labels,
        address: running.address,
        sequence: *sequence,
        ready: false,
        terminating: None,
        _guard: running.guard,
    }
}

/// Removes pods whose termination grace is over (returned, to be dropped outside the lock),
/// starts terminating pods no Deployment wants, and lists the pods to start.
fn plan(s: &mut State) -> (Vec<PodPlan>, Vec<Pod>) {
    let now = Instant::now();
    let grace = s.termination_grace;
    let (finished, kept) = std::mem::take(&mut s.pods).into_iter().partition(|p| {
        p.terminating
            .is_some_and(|t| now.duration_since(t) >= grace)
    });
    s.pods = kept;
    let deployments = s.store.list(Kind::Deployment, &Filter::default());
    for pod in &mut s.pods {
        if !deployments.iter().any(|d| pod.owned_by(d)) {
            pod.terminate(now);
        }
    }
    let mut plans = Vec::new();
    for deployment in &deployments {
        let template = &deployment["spec"]["template"];
        let hash = template_hash(template);
        let mut current: Vec<&mut Pod> = s
            .pods
            .iter_mut()
            .filter(|p| p.owned_by(deployment) && p.terminating.is_none())
            .filter_map(|p| {
                if p.template_hash == hash {
                    Some(p)
                } else {
                    p.terminate(now); // a changed template replaces every pod (strategy Recreate)
                    None
                }
            })
            .collect();
        current.sort_by_key(|p| std::cmp::Reverse(p.sequence));
        let wanted = deployment["spec"]["replicas"].as_u64().unwrap_or(1) as usize;
        let surplus = current.len().saturating_sub(wanted);
        for pod in current.iter_mut().take(surplus) {
            pod.terminate(now);
        }
        let mut labels = template["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        labels.insert("pod-template-hash".into(), hash.clone().into());
        for _ in current.len()..wanted {
            plans.push(PodPlan {
                namespace: deployment["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                deployment: name_of(deployment).to_owned(),
                deployment_uid: deployment["metadata"]["uid"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                template_hash: hash.clone(),
                image: template["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                labels: labels.clone(),
            });
        }
    }
    (plans, finished)
}

/// One EndpointSlice per (Service, selected pod), since loopback pods differ only by port; a
/// slice is written only when its content changes, and deleted when its pod or Service is gone.
fn sync_endpoint_slices(s: &mut State) {
    let mut existing: HashMap<(String, String, String), Value> = HashMap::new();
    for slice in s.store.list(Kind::EndpointSlice, &Filter::default()) {
        let metadata = &slice["metadata"];
        if metadata["labels"]["endpointslice.kubernetes.io/managed-by"] != MANAGED_BY {
            continue;
        }
        let key = (
            metadata["namespace"].as_str().unwrap_or("").to_owned(),
            metadata["labels"]["kubernetes.io/service-name"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
            slice["endpoints"][0]["targetRef"]["uid"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        );
        existing.insert(key, slice);
    }
    let mut wanted = HashSet::new();
    for service in s.store.list(Kind::Service, &Filter::default()) {
        let Some(selector) = service["spec"]["selector"]
            .as_object()
            .filter(|s| !s.is_empty())
        else {
            continue;
        };
        let selector = LabelSelector::from_object(&json!({"matchLabels": selector}));
        let namespace = service["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let service_name = name_of(&service).to_owned();
        for pod in s
            .pods
            .iter()
            .filter(|p| p.namespace == namespace && selector.matches(Some(&p.labels)))
        {
            let key = (namespace.clone(), service_name.clone(), pod.uid.clone());
            let slice = endpoint_slice(&service, pod);
            let result = match existing.get(&key) {
                Some(old) if same_content(old, &slice) => Ok(Value::Null),
                Some(old) => {
                    let mut new = slice;
                    new["metadata"]["name"] = old["metadata"]["name"].clone();
                    s.store
                        .update(Kind::EndpointSlice, &namespace, name_of(old), new)
                }
                None => {
                    let mut new = slice;
                    new["metadata"]["name"] = format!("{service_name}-{}", random_chars(5)).into();
                    s.store.create(Kind::EndpointSlice, &namespace, new)
                }
            };
            if let Err(e) = result {
                eprintln!(
                    "fake-kube: writing the endpoint slice of {}: {e:?}",
                    pod.name
                );
            }
            wanted.insert(key);
        }
    }
    for (key, slice) in existing {
        if !wanted.contains(&key) {
            let _ = s.store.delete(Kind::EndpointSlice, &key.0, name_of(&slice));
        }
    }
}

/// The EndpointSlice (without a name) listing `pod` for `service`.
fn endpoint_slice(service: &Value, pod: &Pod) -> Value {
    let service_name = name_of(service);
    let terminating = pod.terminating.is_some();
    let ports: Vec<Value> = service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|port| {
            json!({
                "name": port["name"].as_str().unwrap_or(""),
                "port": pod.address.port(),
                "protocol": port["protocol"].as_str().unwrap_or("TCP"),
            })
        })
        .collect();
    json!({
        "metadata": {
            "generateName": format!("{service_name}-"),
            "labels": {
                "kubernetes.io/service-name": service_name,
                "endpointslice.kubernetes.io/managed-by": MANAGED_BY,
            },
            "ownerReferences": [{
                "apiVersion": "v1",
                "kind": "Service",
                "name": service_name,
                "uid": service["metadata"]["uid"],
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "addressType": "IPv4",
        "endpoints": [{
            "addresses": [pod.address.ip().to_string()],
            "conditions": {
                "ready": pod.ready && !terminating,
                "serving": pod.ready,
                "terminating": terminating,
            },
            "targetRef": {"kind": "Pod", "name": pod.name, "namespace": pod.namespace, "uid": pod.uid},
            "nodeName": "fake-node",
        }],
        "ports": ports,
    })
}

fn same_content(old: &Value, new: &Value) -> bool {
    ["addressType", "endpoints", "ports"]
        .iter()
        .all(|field| old[field] == new[field])
        && old["metadata"]["labels"] == new["metadata"]["labels"]
        && old["metadata"]["ownerReferences"] == new["metadata"]["ownerReferences"]
}

/// Writes each Deployment's status when it changed: observed generation and replica counts of its
/// pods that are not terminating.
fn sync_deployment_status(s: &mut State) {
    for deployment in s.store.list(Kind::Deployment, &Filter::default()) {
        let hash = template_hash(&deployment["spec"]["template"]);
        let pods: Vec<&Pod> = s
            .pods
            .iter()
            .filter(|p| p.owned_by(&deployment) && p.terminating.is_none())
            .collect();
        let ready = pods.iter().filter(|p| p.ready).count();
        let counts = [
            ("replicas", pods.len()),
            (
                "updatedReplicas",
                pods.iter().filter(|p| p.template_hash == hash).count(),
            ),
            ("readyReplicas", ready),
            ("availableReplicas", ready),
            ("unavailableReplicas", pods.len() - ready),
        ];
        let mut status = json!({"observedGeneration": deployment["metadata"]["generation"]});
        for (field, count) in counts.into_iter().filter(|(_, n)| *n > 0) {
            status[field] = count.into();
        }
        if deployment["status"] != status {
            let mut new = deployment.clone();
            new["status"] = status;
            let namespace = deployment["metadata"]["namespace"].as_str().unwrap_or("");
            let _ = s
                .store
                .update(Kind::Deployment, namespace, name_of(&deployment), new);
        }
    }
}

/// The `pod-template-hash` of a pod template: ten characters of its FNV-1a hash.
fn template_hash(template: &Value) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in template.to_string().bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    (0..10)
        .map(|_| {
            let c = ALPHABET[(hash % ALPHABET.len() as u64) as usize] as char;
            hash /= ALPHABET.len() as u64;
            c
        })
        .collect()
}
