//! The Kubernetes manifests in `deploy/`: what must stay true of them. The RBAC is exactly the
//! least set Forecourt's `kubernetes` orchestrator needs, the pods have the identity and the
//! policy mount it relies on, shutdown outlasts the drain, and the shipped policy passes
//! `forecourt check`. (`deploy/validate.sh` renders them with kubectl and checks them against the API schemas.)

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use forecourt_test_utils::{forecourt_bin, scratch_dir};
use yaml_rust2::{Yaml, YamlLoader};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// The manifest files of the kustomization, in order.
fn resource_files() -> Vec<String> {
    let path = deploy_dir().join("kustomization.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let doc = YamlLoader::load_from_str(&text).unwrap().remove(0);
    doc["resources"]
        .as_vec()
        .expect("kustomization.yaml lists resources")
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect()
}

/// Every object of every manifest, with the file it is in.
fn objects() -> Vec<(String, Yaml)> {
    let mut out = Vec::new();
    for file in resource_files() {
        let text = std::fs::read_to_string(deploy_dir().join(&file))
            .unwrap_or_else(|e| panic!("deploy/{file}: {e}"));
        let docs = YamlLoader::load_from_str(&text)
            .unwrap_or_else(|e| panic!("deploy/{file} is not YAML: {e}"));
        out.extend(
            docs.into_iter()
                .filter(|d| !d.is_null())
                .map(|d| (file.clone(), d)),
        );
    }
    out
}

/// The one object of `kind` named `name`.
fn object(kind: &str, name: &str) -> Yaml {
    let found: Vec<Yaml> = objects()
        .into_iter()
        .map(|(_, d)| d)
        .filter(|d| {
            d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name)
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {kind} {name}, found {}",
        found.len()
    );
    found.into_iter().next().unwrap()
}

fn strings(list: &Yaml) -> Vec<String> {
    list.as_vec()
        .map(|v| v.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

fn deployment() -> Yaml {
    object("Deployment", "forecourt")
}

fn pod_spec() -> Yaml {
    deployment()["spec"]["template"]["spec"].clone()
}

fn container() -> Yaml {
    let containers = pod_spec()["containers"].as_vec().unwrap().clone();
    assert_eq!(containers.len(), 1, "one container");
    containers.into_iter().next().unwrap()
}

/// The policy the ConfigMap ships.
fn policy_text() -> String {
    let cm = object("ConfigMap", "forecourt-policy");
    cm["data"]["policy.yaml"]
        .as_str()
        .expect("the ConfigMap has data.policy.yaml")
        .to_owned()
}

/// The ConfigMap's policy, loaded as Forecourt loads it (defaults filled in).
fn policy() -> forecourt_config::Policy {
    forecourt_config::Policy::parse(&policy_text(), Path::new("policy.yaml"))
        .unwrap_or_else(|e| panic!("the ConfigMap's policy does not load: {e:?}"))
}

/// Integer or quoted-integer field (Kubernetes accepts both for ports and seconds).
fn int(value: &Yaml) -> Option<i64> {
    value
        .as_i64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
}

#[test]
fn the_kustomization_lists_every_manifest() {
    let listed: BTreeSet<String> = resource_files().into_iter().collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(
        listed, on_disk,
        "deploy/kustomization.yaml resources vs deploy/*.yaml"
    );
    let kinds: BTreeSet<String> = objects()
        .iter()
        .map(|(_, d)| d["kind"].as_str().unwrap().to_owned())
        .collect();
    for kind in [
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    ] {
        assert!(kinds.contains(kind), "no {kind} in deploy/");
    }
}

#[test]
fn rbac_is_exactly_the_least_set() {
    // (api group, resource) → verbs: what the kubernetes orchestrator calls, nothing more.
    let expected: BTreeMap<(&str, &str), BTreeSet<&str>> = [
        (("apps", "deployments/scale"), &["get", "patch"][..]),
        (("apps", "deployments"), &["get", "create", "delete"]),
        (("", "services"), &["get", "create", "delete"]),
        (("discovery.k8s.io", "endpointslices"), &["list", "watch"]),
        (
            ("coordination.k8s.io", "leases"),
            &["get", "list", "create", "update", "delete"],
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.iter().copied().collect()))
    .collect();

    for (file, doc) in objects() {
        let kind = doc["kind"].as_str().unwrap_or("");
        assert!(
            kind != "ClusterRole" && kind != "ClusterRoleBinding",
            "deploy/{file}: {kind}: Forecourt needs nothing cluster-wide"
        );
    }
    let roles: Vec<Yaml> = objects()
        .into_iter()
        .map(|(_, d)| d)
        .filter(|d| d["kind"].as_str() == Some("Role"))
        .collect();
    assert_eq!(roles.len(), 1, "one Role");

    let mut granted: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for rule in roles[0]["rules"].as_vec().unwrap() {
        let keys: BTreeSet<&str> = rule
            .as_hash()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap())
            .collect();
        assert!(
            keys.iter()
                .all(|k| ["apiGroups", "resources", "verbs"].contains(k)),
            "a rule with {keys:?}: only apiGroups, resources and verbs are expected"
        );
        let (groups, resources, verbs) = (
            strings(&rule["apiGroups"]),
            strings(&rule["resources"]),
            strings(&rule["verbs"]),
        );
        for word in groups.iter().chain(&resources).chain(&verbs) {
            assert!(!word.contains('*'), "wildcard {word:?} in {rule:?}");
        }
        for group in &groups {
            for resource in &resources {
                granted
                    .entry((group.clone(), resource.clone()))
                    .or_default()
                    .extend(verbs.iter().cloned());
            }
        }
    }
    let granted: BTreeMap<(&str, &str), BTreeSet<&str>> = granted
        .iter()
        .map(|((g, r), v)| {
            (
                (g.as_str(), r.as_str()),
                v.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(granted, expected, "the Role's rules");

    // Bound to Forecourt's ServiceAccount, in the Role's namespace, and to nothing else.
    let role = &roles[0];
    let binding = object("RoleBinding", "forecourt");
    assert_eq!(binding["roleRef"]["kind"].as_str(), Some("Role"));
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    let subjects = binding["subjects"].as_vec().unwrap();
    assert_eq!(subjects.len(), 1, "one subject");
    assert_eq!(subjects[0]["kind"].as_str(), Some("ServiceAccount"));
    assert_eq!(subjects[0]["name"].as_str(), Some("forecourt"));
    let namespace = &role["metadata"]["namespace"];
    assert_eq!(&binding["metadata"]["namespace"], namespace);
    assert_eq!(&subjects[0]["namespace"], namespace);
    assert_eq!(
        pod_spec()["serviceAccountName"].as_str(),
        Some("forecourt"),
        "the pods use the bound ServiceAccount"
    );
    object("ServiceAccount", "forecourt");
}

#[test]
fn pods_have_their_identity_and_the_policy_mounted_as_a_directory() {
    let c = container();
    let env = c["env"].as_vec().unwrap();
    for (name, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let var = env
            .iter()
            .find(|e| e["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no {name} in the container's env"));
        assert_eq!(
            var["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
            Some(field),
            "{name} comes from the downward API"
        );
    }

    // forecourt run -c /etc/forecourt/policy.yaml, with /etc/forecourt the ConfigMap volume.
    let args = strings(&c["args"]);
    let at = args
        .iter()
        .position(|a| a == "-c" || a == "--config")
        .expect("run -c FILE");
    assert_eq!(args[0], "run");
    assert_eq!(args[at + 1], "/etc/forecourt/policy.yaml");
    let volumes = pod_spec()["volumes"].as_vec().unwrap().clone();
    let policy_volume = volumes
        .iter()
        .find(|v| v["configMap"]["name"].as_str() == Some("forecourt-policy"))
        .expect("a volume of the forecourt-policy ConfigMap");
    let mounts: Vec<Yaml> = c["volumeMounts"]
        .as_vec()
        .unwrap()
        .iter()
        .filter(|m| m["name"] == policy_volume["name"])
        .cloned()
        .collect();
    assert_eq!(mounts.len(), 1, "the policy volume is mounted once");
    assert_eq!(mounts[0]["mountPath"].as_str(), Some("/etc/forecourt"));
    assert!(
        mounts[0]["subPath"].is_badvalue() && mounts[0]["subPathExpr"].is_badvalue(),
        "a subPath mount never sees ConfigMap updates: hot reload needs the directory"
    );

    // The hardening the README promises.
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert!(
        sc["capabilities"]["add"].is_badvalue(),
        "no capability added"
    );
    assert_eq!(
        pod_spec()["securityContext"]["runAsNonRoot"].as_bool(),
        Some(true)
    );
    assert!(sc["privileged"].as_bool() != Some(true));

    // Replicas side by side, spread over nodes, and a disruption budget that keeps one.
    assert!(int(&deployment()["spec"]["replicas"]).unwrap() >= 2);
    let spread = pod_spec()["topologySpreadConstraints"]
        .as_vec()
        .is_some_and(|v| {
            v.iter()
                .any(|t| t["topologyKey"].as_str() == Some("kubernetes.io/hostname"))
        });
    let anti = !pod_spec()["affinity"]["podAntiAffinity"].is_badvalue();
    assert!(spread || anti, "spread the replicas across nodes");
    let pdb = object("PodDisruptionBudget", "forecourt");
    assert_eq!(int(&pdb["spec"]["minAvailable"]), Some(1));
    let labels = &deployment()["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(&deployment()["spec"]["selector"]["matchLabels"], labels);
}

#[test]
fn ports_and_probes_match_the_policy_listeners() {
    let policy = policy();
    let c = container();
    let ports: BTreeMap<String, i64> = c["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                int(&p["containerPort"]).unwrap(),
            )
        })
        .collect();
    let listeners = &policy.listeners;
    assert!(
        listeners.proxy.ip().is_unspecified(),
        "the proxy must listen on all interfaces"
    );
    assert!(
        listeners.admin.ip().is_unspecified(),
        "the kubelet probes the admin port"
    );
    assert_eq!(ports.get("http"), Some(&i64::from(listeners.proxy.port())));
    assert_eq!(ports.get("admin"), Some(&i64::from(listeners.admin.port())));
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let get = &c[probe]["httpGet"];
        if get.is_badvalue() {
            assert_ne!(probe, "readinessProbe", "a readiness probe is required");
            assert_ne!(probe, "livenessProbe", "a liveness probe is required");
            continue;
        }
        // /healthz is the one admin endpoint open without the token.
        assert_eq!(get["path"].as_str(), Some("/healthz"), "{probe}");
        assert_eq!(get["port"].as_str(), Some("admin"), "{probe}");
    }
    // Every Service selects the pods and targets a port they have.
    let labels = deployment()["spec"]["template"]["metadata"]["labels"].clone();
    let services: Vec<Yaml> = objects()
        .into_iter()
        .map(|(_, d)| d)
        .filter(|d| d["kind"].as_str() == Some("Service"))
        .collect();
    for service in &services {
        assert_eq!(
            service["spec"]["selector"], labels,
            "{:?}",
            service["metadata"]["name"]
        );
        for port in service["spec"]["ports"].as_vec().unwrap() {
            let target = &port["targetPort"];
            assert!(
                target.as_str().is_some_and(|t| ports.contains_key(t))
                    || int(target).is_some_and(|t| ports.values().any(|p| *p == t)),
                "Service port {port:?} targets no container port"
            );
        }
    }
    // The admin port never rides on the proxy's Service (which may become a LoadBalancer).
    let proxy_service = object("Service", "forecourt");
    assert!(proxy_service["spec"]["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .all(|p| p["targetPort"].as_str() != Some("admin")));
}

#[test]
fn termination_grace_outlasts_the_prestop_sleep_and_the_drain() {
    let policy = policy();
    let drain = policy.limits.drain_timeout;
    let command = strings(&container()["lifecycle"]["preStop"]["exec"]["command"]);
    let pre_stop = match command.as_slice() {
        [sleep, seconds] if sleep == "sleep" => Duration::from_secs(seconds.parse().unwrap()),
        other => panic!("preStop should be [sleep, N], not {other:?}"),
    };
    let grace = Duration::from_secs(
        int(&pod_spec()["terminationGracePeriodSeconds"])
            .expect("terminationGracePeriodSeconds")
            .try_into()
            .unwrap(),
    );
    // The grace period counts from the start of preStop; SIGTERM comes after it.
    assert!(
        grace > pre_stop + drain,
        "terminationGracePeriodSeconds {grace:?} must exceed preStop {pre_stop:?} + limits.drain_timeout {drain:?}"
    );
}

#[test]
fn the_configmap_policy_passes_forecourt_check() {
    let dir = scratch_dir("deploy-policy");
    let file = dir.join("policy.yaml");
    std::fs::write(&file, policy_text()).unwrap();
    let out = Command::new(forecourt_bin())
        .args(["check", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "forecourt check on deploy/configmap.yaml's policy:\n{text}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
