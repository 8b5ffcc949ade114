//! What the API server does with a write beyond storing it: defaulting and validation, the status
//! subresource, patches, the `scale` subresource, and who owns a Deployment's `spec.replicas`
//! under server-side apply.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::patch;
use super::selector::LabelSelector;
use super::status::{self, ApiError};
use super::store::Kind;
use super::{ScaleWrite, State};

/// How a PATCH body is to be applied, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum PatchType {
    /// `application/merge-patch+json`: RFC 7386.
    Merge,
    /// `application/strategic-merge-patch+json`: treated as a merge patch (lists are replaced).
    Strategic,
    /// `application/apply-patch+yaml`: server-side apply, with a JSON body, applied as a merge.
    Apply { force: bool },
    /// `application/json-patch+json`: RFC 6902.
    Json,
}

impl PatchType {
    /// The patch type of `content_type`; 415 for anything else.
    pub(crate) fn from_content_type(content_type: &str, force: bool) -> Result<Self, ApiError> {
        match content_type.split(';').next().unwrap_or("").trim() {
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/apply-patch+yaml" => Ok(Self::Apply { force }),
            "application/json-patch+json" => Ok(Self::Json),
            other => Err(ApiError::unsupported_media_type(other)),
        }
    }

    /// Applies the patch `body` to `target`; an apply body must name `kind` and `api_version`.
    fn apply_to(
        self,
        target: &mut Value,
        body: &[u8],
        kind: &str,
        api_version: &str,
    ) -> Result<(), ApiError> {
        let body = parse_json(body)?;
        match self {
            Self::Json => patch::json_patch(target, &body).map_err(|problem| {
                ApiError::invalid(kind, "", name_of(target), &format!("json patch: {problem}"))
            }),
            Self::Apply { .. } if body["kind"] != kind || body["apiVersion"] != api_version => {
                Err(ApiError::bad_request(format!(
                    "invalid object type: {}, Kind={}; an apply body must be a full {api_version} {kind}",
                    body["apiVersion"], body["kind"]
                )))
            }
            Self::Merge | Self::Strategic | Self::Apply { .. } => {
                patch::merge(target, &body);
                Ok(())
            }
        }
    }
}

/// Who writes, and how they asked.
pub(crate) struct Writer {
    /// The `fieldManager` query parameter as sent.
    pub(crate) field_manager: Option<String>,
    /// The `User-Agent` header, whose program name is the default field manager.
    pub(crate) user_agent: Option<String>,
}

impl Writer {
    /// A writer that names its field manager.
    pub(crate) fn named(manager: &str) -> Self {
        Self {
            field_manager: Some(manager.to_owned()),
            user_agent: None,
        }
    }

    /// The field manager: the parameter, else the user agent's program name, as the server does.
    fn manager(&self) -> String {
        self.field_manager
            .clone()
            .or_else(|| {
                let agent = self.user_agent.as_deref()?;
                Some(agent.split('/').next().unwrap_or(agent).to_owned())
            })
            .unwrap_or_else(|| "unknown".into())
    }

    /// The manager an apply must name (422 Invalid without one).
    fn apply_manager(&self, kind: &str, name: &str) -> Result<String, ApiError> {
        match self.field_manager.as_deref() {
            Some(manager) if !manager.is_empty() => Ok(manager.to_owned()),
            _ => Err(ApiError::invalid(
                kind,
                "",
                name,
                "PatchOptions.meta.k8s.io: fieldManager: Required value: is required for apply patch",
            )),
        }
    }
}

impl State {
    /// POST: defaults, validates and stores a new object.
    pub(crate) fn create_object(
        &mut self,
        kind: Kind,
        namespace: &str,
        mut object: Value,
        writer: &Writer,
    ) -> Result<Value, ApiError> {
        self.default_and_validate(kind, &mut object, None)?;
        let created = self.store.create(kind, namespace, object)?;
        if kind == Kind::Deployment {
            let key = (namespace.to_owned(), name_of(&created).to_owned());
            self.replica_owners.insert(key, [writer.manager()].into());
        }
        Ok(created)
    }

    /// PUT: replaces an object (its status stays: that is a subresource).
    pub(crate) fn replace_object(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        object: Value,
        writer: &Writer,
    ) -> Result<Value, ApiError> {
        let old = self.existing(kind, namespace, name)?;
        self.write(kind, namespace, name, &old, object, &writer.manager(), None)
    }

    /// PATCH: patches an object; an apply of a missing object creates it (`true`: created).
    pub(crate) fn patch_object(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        patch_type: PatchType,
        body: &[u8],
        writer: &Writer,
    ) -> Result<(Value, bool), ApiError> {
        let manager = match patch_type {
            PatchType::Apply { .. } => writer.apply_manager(kind.name(), name)?,
            _ => writer.manager(),
        };
        let Some(old) = self.store.get(kind, namespace, name).cloned() else {
            if !matches!(patch_type, PatchType::Apply { .. }) {
                return Err(ApiError::not_found(kind, name));
            }
            let mut object = json!({"metadata": {"name": name}});
            patch_type.apply_to(&mut object, body, kind.name(), kind.api_version())?;
            let created = self.create_object(kind, namespace, object, &Writer::named(&manager))?;
            return Ok((created, true));
        };
        let mut object = old.clone();
        patch_type.apply_to(&mut object, body, kind.name(), kind.api_version())?;
        let apply = match patch_type {
            PatchType::Apply { force } => {
                let claims = parse_json(body)?["spec"].get("replicas").is_some();
                Some((force, claims))
            }
            _ => None,
        };
        let written = self.write(kind, namespace, name, &old, object, &manager, apply)?;
        Ok((written, false))
    }

    /// DELETE: removes an object; answers a success `Status`. `body` is the request's
    /// `DeleteOptions` (may be empty): its `preconditions` (`uid`, `resourceVersion`) must match
    /// the stored object, or nothing is deleted and the answer is 409 Conflict, as the real
    /// server does.
    pub(crate) fn delete_object(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        body: &[u8],
    ) -> Result<Value, ApiError> {
        let current = self.existing(kind, namespace, name)?;
        if !body.iter().all(u8::is_ascii_whitespace) {
            let options = parse_json(body)?;
            let preconditions = &options["preconditions"];
            for (field, what) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
                let Some(wanted) = preconditions[field].as_str() else {
                    continue;
                };
                let actual = current["metadata"][field].as_str().unwrap_or("");
                if wanted != actual {
                    return Err(ApiError::precondition_failed(
                        kind, name, what, wanted, actual,
                    ));
                }
            }
        }
        let old = self.store.delete(kind, namespace, name)?;
        if kind == Kind::Deployment {
            self.replica_owners
                .remove(&(namespace.to_owned(), name.to_owned()));
        }
        Ok(status::deleted(kind, name, &old["metadata"]["uid"]))
    }

    /// GET of `deployments/{name}/scale`: the Deployment as an `autoscaling/v1` `Scale`.
    pub(crate) fn scale(&self, namespace: &str, name: &str) -> Result<Value, ApiError> {
        Ok(scale_of(&self.existing(
            Kind::Deployment,
            namespace,
            name,
        )?))
    }

    /// PUT (`patch_type` `None`) or PATCH of `deployments/{name}/scale`: changes only the
    /// Deployment's `spec.replicas`; a successful write is recorded in `scale_writes`.
    pub(crate) fn write_scale(
        &mut self,
        namespace: &str,
        name: &str,
        patch_type: Option<PatchType>,
        content_type: &str,
        body: &[u8],
        writer: &Writer,
    ) -> Result<Value, ApiError> {
        let deployment = self.existing(Kind::Deployment, namespace, name)?;
        let current = scale_of(&deployment);
        let (wanted, manager, apply) = match patch_type {
            None => (parse_json(body)?, writer.manager(), None),
            Some(patch_type) => {
                let mut scale = current.clone();
                patch_type.apply_to(&mut scale, body, "Scale", "autoscaling/v1")?;
                match patch_type {
                    PatchType::Apply { force } => {
                        let claims = parse_json(body)?["spec"].get("replicas").is_some();
                        (
                            scale,
                            writer.apply_manager("Scale", name)?,
                            Some((force, claims)),
                        )
                    }
                    _ => (scale, writer.manager(), None),
                }
            }
        };
        let replicas = wanted["spec"]["replicas"].clone();
        if !replicas.is_u64() || replicas.as_u64() > Some(i32::MAX as u64) {
            let problem = format!(
                "spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"
            );
            return Err(ApiError::invalid("Scale", "autoscaling", name, &problem));
        }
        let precondition = wanted["metadata"]["resourceVersion"].as_str().unwrap_or("");
        if !precondition.is_empty() && precondition != deployment["metadata"]["resourceVersion"] {
            return Err(ApiError::conflict(Kind::Deployment, name));
        }
        let mut object = deployment.clone();
        object["spec"]["replicas"] = replicas;
        let updated = self.write(
            Kind::Deployment,
            namespace,
            name,
            &deployment,
            object,
            &manager,
            apply,
        )?;
        self.scale_writes.push(ScaleWrite {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            content_type: content_type.to_owned(),
            field_manager: writer.field_manager.clone(),
            body: serde_json::from_slice(body)
                .unwrap_or_else(|_| String::from_utf8_lossy(body).into()),
        });
        Ok(scale_of(&updated))
    }

    fn existing(&self, kind: Kind, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.store
            .get(kind, namespace, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(kind, name))
    }

    /// Writes `object` over `old`: status kept, defaults and validation, replica ownership
    /// (`apply`: `(force, whether the apply names spec.replicas)`).
    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        old: &Value,
        mut object: Value,
        manager: &str,
        apply: Option<(bool, bool)>,
    ) -> Result<Value, ApiError> {
        check_object(&object)?;
        if kind.has_status() {
            match old.get("status") {
                Some(status) => object["status"] = status.clone(),
                None => {
                    if let Some(fields) = object.as_object_mut() {
                        fields.remove("status");
                    }
                }
            }
        }
        self.default_and_validate(kind, &mut object, Some(old))?;
        let key = (namespace.to_owned(), name.to_owned());
        let owners = match kind {
            Kind::Deployment => {
                let owners = self.replica_owners.get(&key).cloned().unwrap_or_default();
                replica_owners_after(owners, name, old, &object, manager, apply)?
            }
            _ => Default::default(),
        };
        let written = self.store.update(kind, namespace, name, object)?;
        if kind == Kind::Deployment {
            self.replica_owners.insert(key, owners);
        }
        Ok(written)
    }

    /// Fills in what the real server defaults and refuses what it refuses (a subset of both).
    fn default_and_validate(
        &mut self,
        kind: Kind,
        object: &mut Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        check_object(object)?;
        let name = name_of(object).to_owned();
        let invalid =
            |problem: String| ApiError::invalid(kind.name(), kind.group(), &name, &problem);
        if kind.has_status() && !(object["spec"].is_object() || object["spec"].is_null()) {
            return Err(invalid("spec: Invalid value: must be an object".into()));
        }
        match kind {
            Kind::Deployment => {
                let spec = &mut object["spec"];
                if spec["replicas"].is_null() {
                    spec["replicas"] = 1.into();
                }
                for (field, default) in [
                    ("revisionHistoryLimit", json!(10)),
                    ("progressDeadlineSeconds", json!(600)),
                    (
                        "strategy",
                        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
                    ),
                ] {
                    if spec[field].is_null() {
                        spec[field] = default;
                    }
                }
                if !spec["replicas"].is_u64() {
                    let replicas = &spec["replicas"];
                    return Err(invalid(format!(
                        "spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"
                    )));
                }
                let selector = LabelSelector::from_object(&spec["selector"]);
                if selector == LabelSelector::default() {
                    return Err(invalid("spec.selector: Required value".into()));
                }
                if !selector.matches(spec["template"]["metadata"]["labels"].as_object()) {
                    return Err(invalid(
                        "spec.template.metadata.labels: Invalid value: `selector` does not match template `labels`".into(),
                    ));
                }
            }
            Kind::Service => {
                let spec = &mut object["spec"];
                if spec["type"].is_null() {
                    spec["type"] = "ClusterIP".into();
                }
                if spec["clusterIP"].is_null() {
                    spec["clusterIP"] = match old {
                        Some(old) => old["spec"]["clusterIP"].clone(),
                        None => {
                            self.cluster_ips += 1;
                            format!(
                                "10.96.{}.{}",
                                self.cluster_ips / 250,
                                self.cluster_ips % 250 + 1
                            )
                            .into()
                        }
                    };
                    spec["clusterIPs"] = json!([spec["clusterIP"]]);
                }
                for port in spec["ports"].as_array_mut().into_iter().flatten() {
                    if !port.is_object() || !port["port"].is_u64() {
                        return Err(invalid("spec.ports[].port: Required value".into()));
                    }
                    if port["protocol"].is_null() {
                        port["protocol"] = "TCP".into();
                    }
                    if port["targetPort"].is_null() {
                        port["targetPort"] = port["port"].clone();
                    }
                }
            }
            Kind::EndpointSlice | Kind::Lease => {}
        }
        Ok(())
    }
}

/// The managers of `spec.replicas` after a write, as managed fields track them: an update that
/// changes it makes its writer the only owner; an apply of the same value shares it; an apply of
/// another value while someone else owns it is a 409 conflict unless forced. `apply` is
/// `(force, whether the apply names spec.replicas)`.
fn replica_owners_after(
    mut owners: BTreeSet<String>,
    name: &str,
    old: &Value,
    new: &Value,
    manager: &str,
    apply: Option<(bool, bool)>,
) -> Result<BTreeSet<String>, ApiError> {
    let changed = old["spec"]["replicas"] != new["spec"]["replicas"];
    match apply {
        None if changed => owners = [manager.to_owned()].into(),
        None | Some((_, false)) => {}
        Some((_, true)) if !changed => {
            owners.insert(manager.to_owned());
        }
        Some((force, true)) => {
            if let Some(other) = owners.iter().find(|o| *o != manager).filter(|_| !force) {
                return Err(ApiError::apply_conflict(
                    Kind::Deployment,
                    name,
                    other,
                    ".spec.replicas",
                ));
            }
            owners = [manager.to_owned()].into();
        }
    }
    Ok(owners)
}

/// 400 unless `object` is a JSON object whose metadata, if any, is an object.
fn check_object(object: &Value) -> Result<(), ApiError> {
    if object.is_object() && (object["metadata"].is_object() || object["metadata"].is_null()) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "the object must be a JSON object with object metadata",
        ))
    }
}

/// A Deployment as an `autoscaling/v1` `Scale`.
fn scale_of(deployment: &Value) -> Value {
    let metadata = &deployment["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata["uid"],
            "resourceVersion": metadata["resourceVersion"],
            "creationTimestamp": metadata["creationTimestamp"],
        },
        "spec": {"replicas": deployment["spec"]["replicas"]},
        "status": {
            "replicas": deployment["status"]["replicas"].as_u64().unwrap_or(0),
            "selector": LabelSelector::from_object(&deployment["spec"]["selector"]).to_query(),
        },
    })
}

/// `metadata.name`, or `""`.
pub(crate) fn name_of(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or("")
}

/// A JSON request body; 400 if it is not JSON.
pub(crate) fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}
