//! The Deployment and headless Service of a version pre-deployed for feature-flagged traffic,
//! derived from the stable Deployment.
//!
//! ```text
//!  stable Deployment shop ──copy template──► Deployment shop-beta   (image, labels from the policy,
//!  (selector app=shop)                        replicas ordered,      forecourt.dev/version=beta,
//!                                             owned by shop)         managed-by forecourt)
//!  stable Service shop ──copy ports──► Service shop-beta (headless, selects the version's pods)
//!                                        └─► EndpointSlices kubernetes.io/service-name=shop-beta
//! ```
//!
//! The version's pods carry `forecourt.dev/version: <version>` and the policy's labels on top of
//! the stable pod labels; its selector is the stable selector with the same overrides, so the
//! two Deployments never own each other's pods. Give the version a label that replaces one the
//! stable Service selects (for example `track`), or the stable Service lists the version's pods
//! too (Forecourt still keeps them apart: an address listed by the version's Service is the
//! version's).
//!
//! Both objects are named [`version_object_name`]: `<stable>-<version>` when that is a valid
//! Service name (a DNS-1035 label of at most 63 characters), else shortened with a stable hash of
//! the full name appended, so two versions never share a name and every replica agrees on it.
//! Both carry [`MANAGED_BY_LABEL`]; Forecourt changes or deletes an object of such a name only
//! when it does ([`is_managed`]).

use std::collections::BTreeMap;

use forecourt_config::VersionConfig;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::names;

/// The label that names a pod's version.
pub const VERSION_LABEL: &str = "forecourt.dev/version";
/// The label on every object Forecourt creates.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "forecourt";
/// The annotation naming the stable Deployment a version was derived from.
pub const DERIVED_FROM_ANNOTATION: &str = "forecourt.dev/derived-from";

/// Longest version part kept in a shortened name (the policy allows 30 characters).
const MAX_VERSION_PART: usize = 30;

/// The name of a version's Deployment (and Service): `<stable>-<version>` when that is a valid
/// DNS-1035 label (what a Service name must be: at most 63 characters, lowercase letters, digits
/// and `-`, starting with a letter); otherwise the two sanitized, the stable part shortened to fit,
/// and `-` plus eight hex digits of a stable hash of `<stable>-<version>` appended. Distinct inputs
/// stay distinct after shortening, and every replica computes the same name.
pub fn version_object_name(stable: &str, version: &str) -> String {
    let full = format!("{stable}-{version}");
    if names::is_dns_1035_label(&full) {
        return full;
    }
    let hash = names::hash_suffix(&full);
    let version = names::sanitize(version);
    let version = names::cut(&version, MAX_VERSION_PART);
    let mut stable = names::sanitize(stable);
    // A DNS-1035 label starts with a letter.
    let first = stable.chars().next().or_else(|| version.chars().next());
    if !first.is_some_and(|c| c.is_ascii_lowercase()) {
        stable.insert(0, 'v');
    }
    let version_room = if version.is_empty() {
        0
    } else {
        version.len() + 1
    };
    let room = names::MAX_LABEL - hash.len() - 1 - version_room;
    let stable = names::cut(&stable, room);
    [stable, version, hash.as_str()]
        .iter()
        .filter(|part| !part.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("-")
}

/// Whether `meta` carries [`MANAGED_BY_LABEL`]` = `[`MANAGED_BY`]: the object was created by
/// Forecourt, and Forecourt may scale or delete it.
pub fn is_managed(meta: &ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|labels| labels.get(MANAGED_BY_LABEL))
        .is_some_and(|value| value == MANAGED_BY)
}

/// Why a version Deployment cannot be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeriveError {
    /// The stable Deployment has no pod template containers.
    #[error("the stable Deployment has no containers")]
    NoContainers,
    /// The policy names a container the stable Deployment does not have.
    #[error("the stable Deployment has no container named {0:?}")]
    NoSuchContainer(String),
}

/// The version's Deployment: the stable one's template with the version's image and labels,
/// `replicas` replicas, owned by the stable Deployment (deleted with it).
pub fn derive_deployment(
    stable: &Deployment,
    version: &VersionConfig,
    replicas: u32,
) -> Result<Deployment, DeriveError> {
    let stable_name = stable.metadata.name.clone().unwrap_or_default();
    let name = version_object_name(&stable_name, &version.version);
    let mut spec = stable.spec.clone().unwrap_or_default();
    spec.replicas = Some(i32::try_from(replicas).unwrap_or(i32::MAX));
    let overrides = version_labels(version);
    let selector = spec.selector.match_labels.get_or_insert_with(BTreeMap::new);
    selector.extend(overrides.clone());
    let template_meta = spec
        .template
        .metadata
        .get_or_insert_with(ObjectMeta::default);
    template_meta
        .labels
        .get_or_insert_with(BTreeMap::new)
        .extend(overrides.clone());
    let pod = spec.template.spec.get_or_insert_with(Default::default);
    if let Some(image) = &version.image {
        let container = match &version.container {
            Some(wanted) => pod
                .containers
                .iter_mut()
                .find(|c| c.name == *wanted)
                .ok_or_else(|| DeriveError::NoSuchContainer(wanted.clone()))?,
            None => pod
                .containers
                .first_mut()
                .ok_or(DeriveError::NoContainers)?,
        };
        container.image = Some(image.clone());
    }
    let mut labels = stable.metadata.labels.clone().unwrap_or_default();
    labels.extend(overrides);
    labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned());
    Ok(Deployment {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: stable.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                DERIVED_FROM_ANNOTATION.to_owned(),
                stable_name.clone(),
            )])),
            owner_references: stable.metadata.uid.clone().map(|uid| {
                vec![OwnerReference {
                    api_version: "apps/v1".to_owned(),
                    kind: "Deployment".to_owned(),
                    name: stable_name,
                    uid,
                    ..OwnerReference::default()
                }]
            }),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    })
}

/// The version's headless Service: selects the version Deployment's pods, with the stable
/// Service's ports, owned by the version Deployment.
pub fn derive_service(
    stable_service: &Service,
    deployment: &Deployment,
    version: &VersionConfig,
) -> Service {
    let selector = deployment
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default();
    let ports: Vec<ServicePort> = stable_service
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let stable_name = stable_service.metadata.name.clone().unwrap_or_default();
    Service {
        metadata: ObjectMeta {
            name: Some(version_object_name(&stable_name, &version.version)),
            namespace: deployment.metadata.namespace.clone(),
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
                (VERSION_LABEL.to_owned(), version.version.clone()),
            ])),
            owner_references: deployment.metadata.uid.clone().map(|uid| {
                vec![OwnerReference {
                    api_version: "apps/v1".to_owned(),
                    kind: "Deployment".to_owned(),
                    name: deployment.metadata.name.clone().unwrap_or_default(),
                    uid,
                    ..OwnerReference::default()
                }]
            }),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            selector: Some(selector),
            ports: Some(ports),
            publish_not_ready_addresses: Some(false),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn version_labels(version: &VersionConfig) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = version.labels.iter().cloned().collect();
    labels.insert(VERSION_LABEL.to_owned(), version.version.clone());
    labels
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentSpec;
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn stable() -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("shop".into()),
                namespace: Some("web".into()),
                uid: Some("uid-1".into()),
                labels: Some(labels(&[("app", "shop")])),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(3),
                selector: LabelSelector {
                    match_labels: Some(labels(&[("app", "shop"), ("track", "stable")])),
                    ..LabelSelector::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels(&[("app", "shop"), ("track", "stable")])),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![
                            Container {
                                name: "sidecar".into(),
                                image: Some("proxy:1".into()),
                                ..Container::default()
                            },
                            Container {
                                name: "shop".into(),
                                image: Some("shop:1".into()),
                                ..Container::default()
                            },
                        ],
                        ..PodSpec::default()
                    }),
                },
                ..DeploymentSpec::default()
            }),
            status: None,
        }
    }

    fn beta() -> VersionConfig {
        VersionConfig {
            flag: "beta".into(),
            version: "beta".into(),
            image: Some("shop:2".into()),
            container: Some("shop".into()),
            labels: vec![("track".into(), "beta".into())],
            command: None,
            replicas: 1,
            until_ready: forecourt_config::UntilReady::Stable,
            grace: std::time::Duration::from_secs(60),
            when_idle: forecourt_config::WhenIdle::ScaleToZero,
        }
    }

    #[test]
    fn the_version_deployment_overrides_image_and_labels_and_selects_only_its_pods() {
        let derived = derive_deployment(&stable(), &beta(), 2).expect("derived");
        assert_eq!(derived.metadata.name.as_deref(), Some("shop-beta"));
        assert_eq!(derived.metadata.namespace.as_deref(), Some("web"));
        let spec = derived.spec.as_ref().expect("spec");
        assert_eq!(spec.replicas, Some(2));
        let want = labels(&[("app", "shop"), ("track", "beta"), (VERSION_LABEL, "beta")]);
        assert_eq!(spec.selector.match_labels.as_ref(), Some(&want));
        let template = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref());
        assert_eq!(template, Some(&want));
        let containers = &spec.template.spec.as_ref().expect("pod").containers;
        assert_eq!(containers[0].image.as_deref(), Some("proxy:1"));
        assert_eq!(containers[1].image.as_deref(), Some("shop:2"));
        let owner = &derived.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Deployment", "uid-1")
        );
        let meta_labels = derived.metadata.labels.as_ref().expect("labels");
        assert_eq!(
            meta_labels.get(MANAGED_BY_LABEL).map(String::as_str),
            Some(MANAGED_BY)
        );
    }

    #[test]
    fn an_unknown_container_is_refused_and_no_name_takes_the_first() {
        let mut version = beta();
        version.container = Some("nope".into());
        assert_eq!(
            derive_deployment(&stable(), &version, 1),
            Err(DeriveError::NoSuchContainer("nope".into()))
        );
        version.container = None;
        let derived = derive_deployment(&stable(), &version, 1).expect("derived");
        let containers = &derived
            .spec
            .expect("spec")
            .template
            .spec
            .expect("pod")
            .containers;
        assert_eq!(containers[0].image.as_deref(), Some("shop:2"));
    }

    #[test]
    fn the_version_service_is_headless_and_selects_the_version_pods() {
        let deployment = derive_deployment(&stable(), &beta(), 1).expect("derived");
        let stable_service = Service {
            metadata: ObjectMeta {
                name: Some("shop".into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            status: None,
        };
        let service = derive_service(&stable_service, &deployment, &beta());
        assert_eq!(service.metadata.name.as_deref(), Some("shop-beta"));
        let spec = service.spec.expect("spec");
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(
            spec.selector.as_ref().and_then(|s| s.get(VERSION_LABEL)),
            Some(&"beta".to_owned())
        );
        assert_eq!(spec.ports.expect("ports")[0].port, 80);
    }

    #[test]
    fn names_that_fit_are_kept() {
        assert_eq!(version_object_name("shop", "beta"), "shop-beta");
        let fits = version_object_name(&"a".repeat(58), "beta");
        assert_eq!(fits, format!("{}-beta", "a".repeat(58)));
        assert_eq!(fits.len(), 63);
    }

    #[test]
    fn long_names_sharing_a_prefix_stay_distinct_valid_and_stable() {
        // Both full names share their first 63 characters: truncation alone made them collide.
        let stable = "a".repeat(60);
        let one = version_object_name(&stable, "beta-one");
        let two = version_object_name(&stable, "beta-two");
        assert_eq!(
            format!("{stable}-beta-one")[..63],
            format!("{stable}-beta-two")[..63]
        );
        assert_ne!(one, two);
        for name in [&one, &two] {
            assert!(names::is_dns_1035_label(name), "{name}");
            assert!(names::is_label_value(name), "{name}");
        }
        // The version stays readable; the same input always gives the same name.
        assert!(one.contains("-beta-one-"), "{one}");
        assert_eq!(one, version_object_name(&stable, "beta-one"));
        // Two stable names that differ only past the cut.
        let long_a = version_object_name(&format!("{}x", "s".repeat(70)), "beta");
        let long_b = version_object_name(&format!("{}y", "s".repeat(70)), "beta");
        assert_ne!(long_a, long_b);
        assert!(long_a.len() <= 63 && long_b.len() <= 63);
    }

    #[test]
    fn a_cut_never_ends_in_a_dash_and_odd_names_become_labels() {
        // Truncating "aaa…a-b-c" at 63 used to leave "…a-" (then "…a").
        let name = version_object_name(&"a".repeat(62), "b-c");
        assert!(names::is_dns_1035_label(&name), "{name}");
        assert_ne!(name, version_object_name(&"a".repeat(62), "b-d"));
        // Deployment names are DNS subdomains: dots, up to 253 characters, may start with a digit.
        for stable in [
            "shop.web".to_owned(),
            "9shop".to_owned(),
            format!("{}.x", "d".repeat(250)),
            "-".to_owned(),
            String::new(),
        ] {
            for version in ["beta", "1", "-"] {
                let name = version_object_name(&stable, version);
                assert!(
                    names::is_dns_1035_label(&name),
                    "{stable:?} {version:?}: {name}"
                );
            }
        }
        assert_ne!(
            version_object_name("shop.web", "beta"),
            version_object_name("shop-web", "beta")
        );
    }

    #[test]
    fn every_label_value_on_derived_objects_is_valid() {
        let mut long = stable();
        long.metadata.name = Some(format!("{}.shop", "d".repeat(120)));
        let mut version = beta();
        version.version = "v".repeat(30);
        let deployment = derive_deployment(&long, &version, 1).expect("derived");
        let name = deployment.metadata.name.clone().expect("a name");
        assert!(names::is_dns_1035_label(&name), "{name}");
        let stable_service = Service {
            metadata: ObjectMeta {
                name: Some("s".repeat(63)),
                ..ObjectMeta::default()
            },
            ..Service::default()
        };
        let service = derive_service(&stable_service, &deployment, &version);
        let service_name = service.metadata.name.clone().expect("a name");
        assert!(names::is_dns_1035_label(&service_name), "{service_name}");
        let spec = deployment.spec.as_ref().expect("spec");
        let label_maps = [
            deployment.metadata.labels.as_ref(),
            spec.selector.match_labels.as_ref(),
            spec.template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.as_ref()),
            service.metadata.labels.as_ref(),
            service.spec.as_ref().and_then(|s| s.selector.as_ref()),
        ];
        for labels in label_maps.into_iter().flatten() {
            for (key, value) in labels {
                assert!(names::is_label_value(value), "{key}={value}");
            }
        }
        // The endpoint watch selects kubernetes.io/service-name=<the Service's name>.
        assert!(names::is_label_value(&service_name));
    }

    #[test]
    fn only_the_managed_by_label_marks_an_object_as_forecourts() {
        let mut meta = ObjectMeta::default();
        assert!(!is_managed(&meta));
        meta.labels = Some(labels(&[(MANAGED_BY_LABEL, "helm")]));
        assert!(!is_managed(&meta));
        meta.labels = Some(labels(&[("app", "shop")]));
        assert!(!is_managed(&meta));
        meta.labels = Some(labels(&[(MANAGED_BY_LABEL, MANAGED_BY)]));
        assert!(is_managed(&meta));
        let derived = derive_deployment(&stable(), &beta(), 1).expect("derived");
        assert!(is_managed(&derived.metadata));
    }
}
