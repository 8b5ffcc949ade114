//! Watches: a chunked `application/json` stream, one event a line. From a `resourceVersion` the
//! store's history is replayed, then changes stream live; bookmarks every second when allowed;
//! the stream ends after `timeoutSeconds`, with an `ERROR` 410 event when the history is gone,
//! or abruptly (no final chunk) when a test drops the watches.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use hyper::body::Frame;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::status::ApiError;
use super::store::{event, Filter, Kind};
use super::wire::{response, Body, Query};
use super::Shared;

/// How often a watch that allows bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(1);
/// How long a watch lasts without `timeoutSeconds`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// What one watch wants.
struct Watch {
    kind: Kind,
    filter: Filter,
    bookmarks: bool,
    deadline: Instant,
}

/// Answers a watch request: headers now, events as they come.
pub(crate) fn start(
    shared: &Arc<Shared>,
    kind: Kind,
    filter: Filter,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let since = match query.get("resourceVersion") {
        None | Some("" | "0") => None,
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version {rv:?}")))?,
        ),
    };
    let initial_events = query.flag("sendInitialEvents");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    // Subscribed before the first read, so no change between the two is missed.
    let changes = shared.changed.subscribe();
    let drops = shared.drops.subscribe();
    let (first, since) = shared.with(|s| match since.filter(|_| !initial_events) {
        Some(since) => (Vec::new(), since),
        None => {
            let revision = s.store.revision();
            let mut first = s.store.current_as_added(kind, &filter);
            if initial_events {
                first.push(bookmark(kind, revision, true));
            }
            (first, revision)
        }
    });
    let watch = Watch {
        kind,
        filter,
        bookmarks: query.flag("allowWatchBookmarks"),
        deadline: Instant::now() + timeout,
    };
    let (lines, body) = mpsc::channel(64);
    tokio::spawn(stream(
        shared.clone(),
        watch,
        first,
        since,
        lines,
        changes,
        drops,
    ));
    Ok(response(200, WatchBody(body).boxed()))
}

/// Sends `first`, then every change after revision `since` until the watch ends.
async fn stream(
    shared: Arc<Shared>,
    watch: Watch,
    first: Vec<Value>,
    mut since: u64,
    lines: mpsc::Sender<io::Result<Bytes>>,
    mut changes: tokio::sync::watch::Receiver<u64>,
    mut drops: tokio::sync::watch::Receiver<u64>,
) {
    if send(&lines, first).await.is_err() {
        return;
    }
    let mut bookmarks = tokio::time::interval_at(Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY);
    let deadline = tokio::time::sleep_until(watch.deadline);
    tokio::pin!(deadline);
    loop {
        match shared.with(|s| s.store.events_since(watch.kind, &watch.filter, &mut since)) {
            Ok(events) => {
                if send(&lines, events).await.is_err() {
                    return;
                }
            }
            Err(expired) => {
                let _ = send(&lines, vec![event("ERROR", expired.to_status())]).await;
                return;
            }
        }
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = bookmarks.tick(), if watch.bookmarks => {
                if send(&lines, vec![bookmark(watch.kind, since, false)]).await.is_err() {
                    return;
                }
            }
            () = &mut deadline => return,
            _ = drops.changed() => {
                let _ = lines.send(Err(io::Error::other("fake-kube: watch dropped"))).await;
                return;
            }
            () = lines.closed() => return,
        }
    }
}

/// Sends events, one JSON line (and chunk) each; `Err` once the client is gone.
async fn send(lines: &mpsc::Sender<io::Result<Bytes>>, events: Vec<Value>) -> Result<(), ()> {
    for event in events {
        let mut line = serde_json::to_vec(&event).expect("JSON values serialize");
        line.push(b'\n');
        lines.send(Ok(line.into())).await.map_err(drop)?;
    }
    Ok(())
}

/// A `BOOKMARK` at `revision`; `initial_end` marks the end of `sendInitialEvents`.
fn bookmark(kind: Kind, revision: u64, initial_end: bool) -> Value {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event(
        "BOOKMARK",
        json!({"kind": kind.name(), "apiVersion": kind.api_version(), "metadata": metadata}),
    )
}

/// A response body fed by the watch task; an `Err` aborts the connection mid-stream.
struct WatchBody(mpsc::Receiver<io::Result<Bytes>>);

impl hyper::body::Body for WatchBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        self.0
            .poll_recv(cx)
            .map(|line| line.map(|line| line.map(Frame::data)))
    }
}
