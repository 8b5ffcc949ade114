//! The object store: what etcd is to the API server. One revision counter for every write, the
//! objects by kind, namespace and name, and a bounded history of changes that watches replay.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;

/// How many changes the store keeps for watches to replay.
const HISTORY: usize = 1000;

/// The kinds the fake serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Kind {
    Deployment,
    Service,
    EndpointSlice,
    Lease,
}

impl Kind {
    const ALL: [Kind; 4] = [
        Kind::Deployment,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Lease,
    ];

    /// The kind served at `/api/v1/...` or `/apis/{group}/{version}/...` as `plural`.
    pub(crate) fn from_path(api_version: &str, plural: &str) -> Option<Kind> {
        Self::ALL
            .into_iter()
            .find(|k| k.api_version() == api_version && k.plural() == plural)
    }

    /// `Deployment`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Lease => "Lease",
        }
    }

    /// `apps/v1`.
    pub(crate) fn api_version(self) -> &'static str {
        match self {
            Kind::Deployment => "apps/v1",
            Kind::Service => "v1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            Kind::Lease => "coordination.k8s.io/v1",
        }
    }

    /// `deployments`.
    pub(crate) fn plural(self) -> &'static str {
        match self {
            Kind::Deployment => "deployments",
            Kind::Service => "services",
            Kind::EndpointSlice => "endpointslices",
            Kind::Lease => "leases",
        }
    }

    /// `apps`, or `""` for the core group.
    pub(crate) fn group(self) -> &'static str {
        self.api_version().rsplit_once('/').map_or("", |(g, _)| g)
    }

    /// `deployments.apps`, as error messages name a resource.
    pub(crate) fn qualified(self) -> String {
        match self.group() {
            "" => self.plural().to_owned(),
            group => format!("{}.{group}", self.plural()),
        }
    }

    /// The `details` of a `Status` about object `name`.
    pub(crate) fn details(self, name: &str) -> Value {
        let mut details = json!({"name": name, "kind": self.plural()});
        if !self.group().is_empty() {
            details["group"] = self.group().into();
        }
        details
    }

    /// Whether `metadata.generation` counts changes to everything but metadata and status.
    fn has_generation(self) -> bool {
        matches!(self, Kind::Deployment | Kind::EndpointSlice)
    }

    /// Whether `status` is a subresource, which writes to the object itself leave alone.
    pub(crate) fn has_status(self) -> bool {
        matches!(self, Kind::Deployment | Kind::Service)
    }

    /// The `{kind}List` kind of a list of these.
    pub(crate) fn list_kind(self) -> String {
        format!("{}List", self.name())
    }
}

/// Which objects a list or watch wants.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    pub(crate) namespace: Option<String>,
    pub(crate) labels: LabelSelector,
    pub(crate) fields: FieldSelector,
}

impl Filter {
    /// Every object of namespace `namespace`.
    pub(crate) fn namespace(namespace: &str) -> Self {
        Self {
            namespace: Some(namespace.to_owned()),
            ..Self::default()
        }
    }

    fn matches(&self, object: &Value) -> bool {
        let metadata = &object["metadata"];
        self.namespace
            .as_deref()
            .is_none_or(|ns| metadata["namespace"] == ns)
            && self.labels.matches(metadata["labels"].as_object())
            && self.fields.matches(object)
    }
}

/// One committed write.
struct Change {
    revision: u64,
    kind: Kind,
    old: Option<Value>,
    new: Option<Value>,
}

/// Objects, the revision counter and the change history.
pub(crate) struct Store {
    revision: u64,
    objects: BTreeMap<(Kind, String, String), Value>,
    history: VecDeque<Change>,
    /// Every change after this revision is still in `history`.
    history_floor: u64,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            revision: 1,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_floor: 1,
        }
    }
}

impl Store {
    /// The revision of the last write.
    pub(crate) fn revision(&self) -> u64 {
        self.revision
    }

    /// One object.
    pub(crate) fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(&(kind, namespace.to_owned(), name.to_owned()))
    }

    /// The objects of `kind` that `filter` selects, by namespace and name.
    pub(crate) fn list(&self, kind: Kind, filter: &Filter) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((k, _, _), object)| *k == kind && filter.matches(object))
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// Stores a new object: names it (`generateName`), stamps uid, creation time and generation.
    pub(crate) fn create(
        &mut self,
        kind: Kind,
        namespace: &str,
        mut object: Value,
    ) -> Result<Value, ApiError> {
        if !object.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        let metadata = &mut object["metadata"];
        let mut name = metadata["name"].as_str().unwrap_or("").to_owned();
        if name.is_empty() {
            if let Some(prefix) = metadata["generateName"].as_str() {
                name = format!("{prefix}{}", random_chars(5));
            }
        }
        if name.is_empty() {
            return Err(ApiError::invalid(
                kind.name(),
                kind.group(),
                "",
                "metadata.name: Required value: name or generateName is required",
            ));
        }
        check_namespace(metadata, namespace)?;
        if self.get(kind, namespace, &name).is_some() {
            return Err(ApiError::already_exists(kind, &name));
        }
        metadata["name"] = name.clone().into();
        metadata["namespace"] = namespace.into();
        metadata["uid"] = uid().into();
        metadata["creationTimestamp"] = now_rfc3339().into();
        if kind.has_generation() {
            metadata["generation"] = 1.into();
        }
        object["kind"] = kind.name().into();
        object["apiVersion"] = kind.api_version().into();
        Ok(self.commit(kind, namespace, &name, Some(object)))
    }

    /// Replaces an object. A set `metadata.resourceVersion` must be the current one (409 Conflict);
    /// uid and creation time stay; generation counts changes outside metadata and status; a write
    /// that changes nothing is not a write (no new revision, no event).
    pub(crate) fn update(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        mut object: Value,
    ) -> Result<Value, ApiError> {
        let old = self
            .get(kind, namespace, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(kind, name))?;
        let metadata = &mut object["metadata"];
        if !metadata.is_object() {
            return Err(ApiError::bad_request("metadata must be an object"));
        }
        let given = metadata["resourceVersion"].as_str().unwrap_or("");
        if !given.is_empty() && given != old["metadata"]["resourceVersion"] {
            return Err(ApiError::conflict(kind, name));
        }
        match metadata["name"].as_str() {
            None | Some("") => metadata["name"] = name.into(),
            Some(n) if n == name => {}
            Some(n) => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )))
            }
        }
        check_namespace(metadata, namespace)?;
        metadata["namespace"] = namespace.into();
        for field in ["uid", "creationTimestamp", "generation", "resourceVersion"] {
            metadata[field] = old["metadata"][field].clone();
        }
        if kind.has_generation()
            && without_metadata_and_status(&object) != without_metadata_and_status(&old)
        {
            let generation = old["metadata"]["generation"].as_u64().unwrap_or(0) + 1;
            object["metadata"]["generation"] = generation.into();
        }
        object["kind"] = kind.name().into();
        object["apiVersion"] = kind.api_version().into();
        if object == old {
            return Ok(old);
        }
        Ok(self.commit(kind, namespace, name, Some(object)))
    }

    /// Removes an object and answers it.
    pub(crate) fn delete(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        let old = self
            .get(kind, namespace, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(kind, name))?;
        self.commit(kind, namespace, name, None);
        Ok(old)
    }

    /// Forgets the history, as etcd's compaction does: watches from before now get 410 Expired.
    pub(crate) fn compact(&mut self) {
        self.history.clear();
        self.history_floor = self.revision;
    }

    /// `ADDED` events for every current object `filter` selects.
    pub(crate) fn current_as_added(&self, kind: Kind, filter: &Filter) -> Vec<Value> {
        self.list(kind, filter)
            .into_iter()
            .map(|object| event("ADDED", object))
            .collect()
    }

    /// The events of changes after revision `*since` that a watch with `filter` sees, moving
    /// `*since` to the current revision; 410 Expired once those changes are no longer kept.
    ///
    /// Relative to the filter, as the API server's watch cache does: an object that starts to
    /// match is `ADDED`, one that stops matching is `DELETED` (with its last matching content).
    pub(crate) fn events_since(
        &self,
        kind: Kind,
        filter: &Filter,
        since: &mut u64,
    ) -> Result<Vec<Value>, ApiError> {
        if *since < self.history_floor {
            return Err(ApiError::expired(*since, self.history_floor));
        }
        let events = self
            .history
            .iter()
            .filter(|change| change.revision > *since && change.kind == kind)
            .filter_map(|change| {
                let selected =
                    |o: &Option<Value>| o.as_ref().filter(|o| filter.matches(o)).cloned();
                match (selected(&change.old), selected(&change.new)) {
                    (None, Some(new)) => Some(event("ADDED", new)),
                    (Some(_), Some(new)) => Some(event("MODIFIED", new)),
                    (Some(mut old), None) => {
                        old["metadata"]["resourceVersion"] = change.revision.to_string().into();
                        Some(event("DELETED", old))
                    }
                    (None, None) => None,
                }
            })
            .collect();
        *since = self.revision;
        Ok(events)
    }

    /// Bumps the revision and records the change of one object (`None`: deleted).
    fn commit(&mut self, kind: Kind, namespace: &str, name: &str, mut new: Option<Value>) -> Value {
        self.revision += 1;
        let key = (kind, namespace.to_owned(), name.to_owned());
        if let Some(object) = &mut new {
            object["metadata"]["resourceVersion"] = self.revision.to_string().into();
        }
        let old = match &new {
            Some(object) => self.objects.insert(key, object.clone()),
            None => self.objects.remove(&key),
        };
        let answer = new.clone().or_else(|| old.clone()).unwrap_or_default();
        self.history.push_back(Change {
            revision: self.revision,
            kind,
            old,
            new,
        });
        if self.history.len() > HISTORY {
            if let Some(dropped) = self.history.pop_front() {
                self.history_floor = dropped.revision;
            }
        }
        answer
    }
}

/// A watch event line's JSON.
pub(crate) fn event(kind: &str, object: Value) -> Value {
    json!({"type": kind, "object": object})
}

fn check_namespace(metadata: &Value, namespace: &str) -> Result<(), ApiError> {
    match metadata["namespace"].as_str() {
        None | Some("") => Ok(()),
        Some(ns) if ns == namespace => Ok(()),
        Some(_) => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
    }
}

fn without_metadata_and_status(object: &Value) -> Value {
    let mut rest = object.clone();
    if let Value::Object(fields) = &mut rest {
        fields.remove("metadata");
        fields.remove("status");
    }
    rest
}

/// The current time as RFC 3339 seconds, as `creationTimestamp` is written.
pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// `n` random characters from the alphabet Kubernetes uses in generated names.
pub(crate) fn random_chars(n: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bits = random_u64();
    (0..n)
        .map(|_| {
            let c = ALPHABET[(bits % ALPHABET.len() as u64) as usize] as char;
            bits /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// A random version 4 UUID.
pub(crate) fn uid() -> String {
    let (a, b) = (random_u64(), random_u64());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}

/// SplitMix64 over a process-wide counter seeded from the clock.
fn random_u64() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let _ = STATE.compare_exchange(0, seed | 1, Ordering::Relaxed, Ordering::Relaxed);
    let mut z = STATE.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
