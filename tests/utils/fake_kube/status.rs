//! `Status` objects: how the API server reports an error (and a delete).

use serde_json::{json, Value};

use super::store::Kind;

/// An error answer: HTTP code, machine-readable reason, message and optional details.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) code: u16,
    reason: &'static str,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String, details: Option<Value>) -> Self {
        Self {
            code,
            reason,
            message,
            details,
        }
    }

    /// An injected fault: the reason the real server gives with `code`.
    pub(crate) fn injected(code: u16) -> Self {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            409 => "Conflict",
            410 => "Gone",
            415 => "UnsupportedMediaType",
            422 => "Invalid",
            429 => "TooManyRequests",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "InternalError",
        };
        let details = (code == 429).then(|| json!({"retryAfterSeconds": 1}));
        Self::new(
            code,
            reason,
            format!("fake-kube: injected {code} {reason}"),
            details,
        )
    }

    /// `deployments.apps "shop" not found`.
    pub(crate) fn not_found(kind: Kind, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} {name:?} not found", kind.qualified()),
            Some(kind.details(name)),
        )
    }

    /// A path this server does not serve.
    pub(crate) fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
            None,
        )
    }

    /// `deployments.apps "shop" already exists`.
    pub(crate) fn already_exists(kind: Kind, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} {name:?} already exists", kind.qualified()),
            Some(kind.details(name)),
        )
    }

    /// A write whose `resourceVersion` precondition failed.
    pub(crate) fn conflict(kind: Kind, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {name:?}: the object has been modified; \
                 please apply your changes to the latest version and try again",
                kind.qualified()
            ),
            Some(kind.details(name)),
        )
    }

    /// A delete whose `preconditions` do not match the object: `Precondition failed: UID in
    /// precondition: …, UID in object meta: …`.
    pub(crate) fn precondition_failed(
        kind: Kind,
        name: &str,
        what: &str,
        wanted: &str,
        actual: &str,
    ) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {name:?}: Precondition failed: \
                 {what} in precondition: {wanted}, {what} in object meta: {actual}",
                kind.qualified()
            ),
            Some(kind.details(name)),
        )
    }

    /// A server-side apply that would take `field` from `manager` without `force=true`.
    pub(crate) fn apply_conflict(kind: Kind, name: &str, manager: &str, field: &str) -> Self {
        let cause = format!("conflict with {manager:?}");
        let mut details = kind.details(name);
        details["causes"] =
            json!([{"reason": "FieldManagerConflict", "message": cause, "field": field}]);
        Self::new(
            409,
            "Conflict",
            format!("Apply failed with 1 conflict: {cause}: {field}"),
            Some(details),
        )
    }

    /// `Deployment.apps "shop" is invalid: spec.replicas: ...` (`kind` and `group` as in the message).
    pub(crate) fn invalid(kind: &str, group: &str, name: &str, problem: &str) -> Self {
        let qualified = if group.is_empty() {
            kind.to_owned()
        } else {
            format!("{kind}.{group}")
        };
        Self::new(
            422,
            "Invalid",
            format!("{qualified} {name:?} is invalid: {problem}"),
            Some(json!({"name": name, "group": group, "kind": kind})),
        )
    }

    /// A request the server cannot make sense of.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into(), None)
    }

    /// A write this server does not allow on this path.
    pub(crate) fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message.into(), None)
    }

    /// A body in a content type the endpoint does not take.
    pub(crate) fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml; got {content_type:?}"),
            None,
        )
    }

    /// A watch from a `resourceVersion` older than the kept history.
    pub(crate) fn expired(requested: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
            None,
        )
    }

    /// The `Status` object sent as the body (or as a watch `ERROR` event's object).
    pub(crate) fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

/// The `Status` a successful delete answers with.
pub(crate) fn deleted(kind: Kind, name: &str, uid: &Value) -> Value {
    let mut details = kind.details(name);
    details["uid"] = uid.clone();
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}
