//! The wire: HTTP/1.1 on a loopback port, paths onto API operations, JSON bodies, `Status` errors,
//! and the faults a test injects.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use http::{HeaderValue, Method, Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use super::api::{parse_json, PatchType, Writer};
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{Filter, Kind};
use super::{watch, Shared, State};

/// A response body: a whole JSON document or a watch stream.
pub(crate) type Body = BoxBody<Bytes, io::Error>;

/// How many requests the request log keeps.
const REQUEST_LOG: usize = 1000;

/// Faults a test injects into the answers.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// The next this many non-watch requests answer with this code.
    pub(crate) fail_next: (u32, u16),
    /// Until then every request answers with this code.
    pub(crate) fail_until: Option<(Instant, u16)>,
    /// Every answer is delayed this long.
    pub(crate) latency: Duration,
    /// New connections are closed at once, requests on open ones get no answer.
    pub(crate) unreachable: bool,
}

impl Faults {
    /// The code a request answers with instead of being served, if a fault is due.
    fn take(&mut self, watch: bool) -> Option<u16> {
        if let Some((until, code)) = self.fail_until {
            if Instant::now() < until {
                return Some(code);
            }
            self.fail_until = None;
        }
        let (count, code) = &mut self.fail_next;
        (!watch && *count > 0).then(|| {
            *count -= 1;
            *code
        })
    }
}

impl State {
    /// Appends to the bounded request log.
    fn log_request(&mut self, method: &Method, path_and_query: &str) {
        if self.requests.len() == REQUEST_LOG {
            self.requests.pop_front();
        }
        self.requests
            .push_back((method.to_string(), path_and_query.to_owned()));
    }
}

/// Accepts connections until the runtime stops.
pub(crate) async fn serve(shared: Arc<Shared>, listener: std::net::TcpListener) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("a non-blocking listener");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if shared.with(|s| s.faults.unreachable) {
            continue; // dropped: closed without an answer
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(shared.clone(), request));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A request, read.
struct Call {
    method: Method,
    query: Query,
    content_type: String,
    writer: Writer,
    body: Bytes,
}

async fn handle(shared: Arc<Shared>, request: Request<Incoming>) -> io::Result<Response<Body>> {
    let query = Query::parse(request.uri().query().unwrap_or(""));
    let watching = query.flag("watch");
    let path_and_query = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let (unreachable, latency, fault) = shared.with(|s| {
        s.log_request(request.method(), path_and_query);
        (
            s.faults.unreachable,
            s.faults.latency,
            s.faults.take(watching),
        )
    });
    if unreachable {
        // An error from the service makes hyper close the connection without an answer.
        return Err(io::Error::other("fake-kube: unreachable"));
    }
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(code) = fault {
        return Ok(error(&ApiError::injected(code)));
    }
    let header = |name| {
        request
            .headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header(CONTENT_TYPE).unwrap_or_default();
    let writer = Writer {
        field_manager: query.get("fieldManager").map(str::to_owned),
        user_agent: header(USER_AGENT),
    };
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let body = request
        .into_body()
        .collect()
        .await
        .map_err(io::Error::other)?
        .to_bytes();
    let call = Call {
        method,
        query,
        content_type,
        writer,
        body,
    };
    Ok(route(&shared, &path, call).unwrap_or_else(|e| error(&e)))
}

/// What a path names.
enum Target {
    Collection {
        kind: Kind,
        namespace: Option<String>,
    },
    Object {
        kind: Kind,
        namespace: String,
        name: String,
    },
    Scale {
        namespace: String,
        name: String,
    },
}

impl Target {
    /// `/api/v1[/namespaces/{ns}]/{plural}[/{name}]`, `/apis/{group}/{version}/...`, and
    /// `.../deployments/{name}/scale`.
    fn parse(path: &str) -> Option<Target> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (api_version, rest) = match segments.as_slice() {
            ["api", "v1", rest @ ..] => ("v1".to_owned(), rest),
            ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
            _ => return None,
        };
        let (namespace, plural, tail) = match rest {
            ["namespaces", namespace, plural, tail @ ..] => (Some(*namespace), *plural, tail),
            [plural] => (None, *plural, &[][..]),
            _ => return None,
        };
        let kind = Kind::from_path(&api_version, plural)?;
        match (namespace, tail) {
            (namespace, []) => Some(Target::Collection {
                kind,
                namespace: namespace.map(str::to_owned),
            }),
            (Some(namespace), [name]) => Some(Target::Object {
                kind,
                namespace: namespace.to_owned(),
                name: (*name).to_owned(),
            }),
            (Some(namespace), [name, "scale"]) if kind == Kind::Deployment => Some(Target::Scale {
                namespace: namespace.to_owned(),
                name: (*name).to_owned(),
            }),
            _ => None,
        }
    }
}

fn route(shared: &Arc<Shared>, path: &str, call: Call) -> Result<Response<Body>, ApiError> {
    if path == "/version" {
        return Ok(json_response(200, &version()));
    }
    let target = Target::parse(path).ok_or_else(ApiError::no_route)?;
    let writes_slices = matches!(
        &target,
        Target::Object {
            kind: Kind::EndpointSlice,
            ..
        } | Target::Collection {
            kind: Kind::EndpointSlice,
            ..
        }
    );
    if writes_slices && call.method != Method::GET {
        return Err(ApiError::method_not_allowed(
            "fake-kube: only its controller writes endpoint slices",
        ));
    }
    match (target, &call.method) {
        (Target::Collection { kind, namespace }, &Method::GET) => {
            let filter = Filter {
                namespace,
                labels: LabelSelector::parse(call.query.get("labelSelector").unwrap_or(""))
                    .map_err(ApiError::bad_request)?,
                fields: FieldSelector::parse(call.query.get("fieldSelector").unwrap_or(""))
                    .map_err(ApiError::bad_request)?,
            };
            if call.query.flag("watch") {
                return watch::start(shared, kind, filter, &call.query);
            }
            let (items, revision) =
                shared.with(|s| (s.store.list(kind, &filter), s.store.revision()));
            Ok(json_response(200, &list(kind, items, revision)))
        }
        (
            Target::Collection {
                kind,
                namespace: Some(namespace),
            },
            &Method::POST,
        ) => {
            let object = call.json()?;
            let created =
                shared.with(|s| s.create_object(kind, &namespace, object, &call.writer))?;
            Ok(json_response(201, &created))
        }
        (
            Target::Object {
                kind,
                namespace,
                name,
            },
            &Method::GET,
        ) => {
            let object = shared.with(|s| s.store.get(kind, &namespace, &name).cloned());
            let object = object.ok_or_else(|| ApiError::not_found(kind, &name))?;
            Ok(json_response(200, &object))
        }
        (
            Target::Object {
                kind,
                namespace,
                name,
            },
            &Method::PUT,
        ) => {
            let object = call.json()?;
            let replaced =
                shared.with(|s| s.replace_object(kind, &namespace, &name, object, &call.writer))?;
            Ok(json_response(200, &replaced))
        }
        (
            Target::Object {
                kind,
                namespace,
                name,
            },
            &Method::PATCH,
        ) => {
            let patch_type = call.patch_type()?;
            let (patched, created) = shared.with(|s| {
                s.patch_object(
                    kind,
                    &namespace,
                    &name,
                    patch_type,
                    &call.body,
                    &call.writer,
                )
            })?;
            Ok(json_response(if created { 201 } else { 200 }, &patched))
        }
        (
            Target::Object {
                kind,
                namespace,
                name,
            },
            &Method::DELETE,
        ) => {
            let status = shared.with(|s| s.delete_object(kind, &namespace, &name, &call.body))?;
            Ok(json_response(200, &status))
        }
        (Target::Scale { namespace, name }, &Method::GET) => {
            let scale = shared.with(|s| s.scale(&namespace, &name))?;
            Ok(json_response(200, &scale))
        }
        (Target::Scale { namespace, name }, &Method::PUT | &Method::PATCH) => {
            let patch_type = match call.method {
                Method::PUT => {
                    call.json()?;
                    None
                }
                _ => Some(call.patch_type()?),
            };
            let scale = shared.with(|s| {
                s.write_scale(
                    &namespace,
                    &name,
                    patch_type,
                    &call.content_type,
                    &call.body,
                    &call.writer,
                )
            })?;
            Ok(json_response(200, &scale))
        }
        (_, method) => Err(ApiError::method_not_allowed(format!(
            "the server does not allow {method} on {path}"
        ))),
    }
}

impl Call {
    /// The body of a POST or PUT: JSON only (415 for another content type).
    fn json(&self) -> Result<Value, ApiError> {
        let media_type = self.content_type.split(';').next().unwrap_or("").trim();
        if !media_type.is_empty() && media_type != "application/json" {
            return Err(ApiError::unsupported_media_type(media_type));
        }
        parse_json(&self.body)
    }

    /// The patch type of a PATCH, from its content type and `?force=`.
    fn patch_type(&self) -> Result<PatchType, ApiError> {
        PatchType::from_content_type(&self.content_type, self.query.flag("force"))
    }
}

/// A typed list: as the real server writes it, the items carry no `kind` and `apiVersion`.
fn list(kind: Kind, items: Vec<Value>, revision: u64) -> Value {
    let items: Vec<Value> = items
        .into_iter()
        .map(|mut item| {
            if let Some(fields) = item.as_object_mut() {
                fields.remove("kind");
                fields.remove("apiVersion");
            }
            item
        })
        .collect();
    json!({
        "apiVersion": kind.api_version(),
        "kind": kind.list_kind(),
        "metadata": {"resourceVersion": revision.to_string()},
        "items": items,
    })
}

fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-fake-kube",
        "platform": "linux/amd64",
    })
}

/// A JSON answer.
pub(crate) fn json_response(code: u16, body: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(body).expect("JSON values serialize");
    response(
        code,
        Full::new(Bytes::from(bytes))
            .map_err(|never| match never {})
            .boxed(),
    )
}

/// An `application/json` answer with `body`.
pub(crate) fn response(code: u16, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() =
        http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// An error answer: its `Status`, and `Retry-After` on 429 as the real server sends it.
fn error(error: &ApiError) -> Response<Body> {
    let mut response = json_response(error.code, &error.to_status());
    if error.code == 429 {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// Query parameters, decoded.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: &str) -> Self {
        Self(
            query
                .split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (decode(key), decode(value))
                })
                .collect(),
        )
    }

    /// The value of parameter `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether parameter `key` is `true` or `1`.
    pub(crate) fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

/// Percent-decoding, `+` as a space.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let query = Query::parse("&watch=true&labelSelector=app%3Dshop%2Ctrack+in+%28a%2Cb%29&x");
        assert!(query.flag("watch"));
        assert_eq!(query.get("labelSelector"), Some("app=shop,track in (a,b)"));
        assert_eq!(query.get("x"), Some(""));
        assert_eq!(query.get("y"), None);
    }
}
