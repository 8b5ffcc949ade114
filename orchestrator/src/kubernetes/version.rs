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

use std::collections::BTreeMap;

use forecourt_config::VersionConfig;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// The label that names a pod's version.
pub const VERSION_LABEL: &str = "forecourt.dev/version";
/// The label on every object Forecourt creates.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "forecourt";
/// The annotation naming the stable Deployment a version was derived from.
pub const DERIVED_FROM_ANNOTATION: &str = "forecourt.dev/derived-from";

/// The name of a version's Deployment (and Service): `<stable>-<version>`.
pub fn version_object_name(stable: &str, version: &str) -> String {
    let mut name = format!("{stable}-{version}");
    // Object names are DNS labels for Services: at most 63 characters, no trailing '-'.
    name.truncate(63);
    while name.ends_with('-') {
        name.pop();
    }
    name
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
    fn long_names_are_cut_to_a_dns_label() {
        let name = version_object_name(&"a".repeat(60), "beta");
        assert_eq!(name.len(), 63);
        assert_eq!(version_object_name(&"a".repeat(62), "b-c"), "a".repeat(62));
    }
}
