//! Hostile input end to end: raw bytes from a `TcpStream` to the real `forecourt` binary in front
//! of a raw backend that records every request it parses, all on 127.0.0.1.
//!
//! ```text
//!  test ── raw bytes ──► forecourt run ── what it forwards ──► recording backend
//!    ▲                        │                                  │ head, body as the backend frames it
//!    └──── status, then EOF ──┘                                  ▼
//!                                                          assertions: nothing ambiguous arrived
//! ```
//!
//! Request smuggling vectors (CL.TE, TE.CL, obfuscated `Transfer-Encoding`, duplicate
//! `Content-Length`, obs-fold, bare LF, NUL, oversized heads, absolute-form targets) must be
//! refused with a 4xx and the connection closed, or forwarded in one framing the backend cannot
//! read differently. Slow clients (slowloris headers, trickled bodies) must not hold up anybody
//! else; a trickled header is cut off by the header timeout (`limits.header_timeout`, 10 s), and
//! a trickled or stalled body within 15 s, releasing the instance.
//! Every read and every wait is bounded; each test takes under 20 s.

#![allow(clippy::unwrap_used)]

use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use forecourt_test_utils::*;

/// The policy: one service for every path, on `instance`, with fast health checks.
fn policy(instance: SocketAddr) -> String {
    format!(
        "listeners: {{ proxy: \"{{proxy}}\", admin: \"{{admin}}\" }}
defaults:
  health_check: {{ interval: 100ms, timeout: 100ms, healthy_threshold: 2, unhealthy_threshold: 2 }}
services:
  - name: guarded
    routes: [{{ path_prefix: / }}]
    instances: [{{ address: \"{instance}\" }}]
"
    )
}

/// One request as the recording backend parsed it.
#[derive(Debug, Clone, Default)]
struct Recorded {
    /// Which request this is, in the order the backend read them.
    id: u64,
    /// The raw head, request line to the blank line included.
    head: Vec<u8>,
    /// The body, as the backend framed it (`Transfer-Encoding: chunked` first, else
    /// `Content-Length`, else none), de-chunked; filled in once read.
    body: Vec<u8>,
    /// Whether the whole body arrived.
    complete: bool,
}

impl Recorded {
    fn head_text(&self) -> String {
        String::from_utf8_lossy(&self.head).into_owned()
    }

    fn request_line(&self) -> String {
        self.head_text().lines().next().unwrap_or("").to_owned()
    }

    fn is_health_check(&self) -> bool {
        self.request_line().starts_with("GET /healthz ")
    }

    /// Every value of header `name`, in order.
    fn headers(&self, name: &str) -> Vec<String> {
        header_values(&self.head, name)
    }
}

/// Every value of header `name` in a raw head, in order.
fn header_values(head: &[u8], name: &str) -> Vec<String> {
    String::from_utf8_lossy(head)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_owned())
        .collect()
}

/// What the recording backend has seen, shared with the test.
type Log = Arc<Mutex<Vec<Recorded>>>;

/// A raw backend: one thread per connection, a strict HTTP/1.1 reader that records every
/// request head as soon as it has it, then its body, and answers `200 ok`.
fn recording_backend() -> (SocketAddr, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let log: Log = Arc::default();
    let shared = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(10_000) {
            let Ok(stream) = stream else { continue };
            let log = shared.clone();
            std::thread::spawn(move || serve_recorded(stream, &log));
        }
    });
    (addr, log)
}

/// Ids of recorded requests (the log may be cleared while a request is being read).
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Serves one backend connection until it closes or stalls for 30 s.
fn serve_recorded(mut stream: TcpStream, log: &Log) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    loop {
        let Some(end) = fill_until(&mut stream, &mut buf, head_end) else {
            return;
        };
        let head: Vec<u8> = buf.drain(..end).collect();
        let te = header_values(&head, "transfer-encoding");
        let chunked = te.last().is_some_and(|v| {
            v.rsplit(',')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"))
        });
        let length = header_values(&head, "content-length")
            .first()
            .and_then(|v| v.parse::<usize>().ok());
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        log.lock().unwrap().push(Recorded {
            id,
            head,
            ..Recorded::default()
        });
        let body = if chunked {
            read_chunked(&mut stream, &mut buf)
        } else if let Some(n) = length {
            fill_until(&mut stream, &mut buf, |b| (b.len() >= n).then_some(n))
                .map(|n| buf.drain(..n).collect())
        } else {
            Some(Vec::new())
        };
        let Some(body) = body else {
            return;
        };
        if let Some(entry) = log.lock().unwrap().iter_mut().find(|r| r.id == id) {
            entry.body = body;
            entry.complete = true;
        }
        if stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
            .is_err()
        {
            return;
        }
    }
}

/// Where a request head ends in `buf` (after CRLF CRLF, or LF LF from a lax sender).
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Reads into `buf` until `done` finds what it needs; `None` on EOF, error or timeout.
fn fill_until(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    done: impl Fn(&[u8]) -> Option<usize>,
) -> Option<usize> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(n) = done(buf) {
            return Some(n);
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads a chunked body (strictly: hex size, optional extension, CRLF) and its trailers.
fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let line_end = |b: &[u8]| b.windows(2).position(|w| w == b"\r\n").map(|i| i + 2);
    let mut body = Vec::new();
    loop {
        let end = fill_until(stream, buf, line_end)?;
        let line: Vec<u8> = buf.drain(..end).collect();
        let size = std::str::from_utf8(&line[..end - 2]).ok()?;
        let size = size.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16).ok()?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                let end = fill_until(stream, buf, line_end)?;
                let line: Vec<u8> = buf.drain(..end).collect();
                if line == b"\r\n" {
                    return Some(body);
                }
            }
        }
        fill_until(stream, buf, |b| (b.len() >= size + 2).then_some(size + 2))?;
        body.extend(buf.drain(..size));
        if buf.drain(..2).as_slice() != b"\r\n" {
            return None;
        }
    }
}

/// The requests the backend saw that are not Forecourt's health checks.
fn forwarded(log: &Log) -> Vec<Recorded> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|r| !r.is_health_check())
        .cloned()
        .collect()
}

/// Forecourt in front of a fresh recording backend, with the instance confirmed ready.
fn front_door() -> (Forecourt, Log) {
    let (addr, log) = recording_backend();
    let fc = Forecourt::start(&policy(addr));
    fc.wait_ready("guarded", 1);
    (fc, log)
}

/// What a client got for its bytes.
#[derive(Debug)]
struct Outcome {
    /// The first response, if one came.
    response: Option<Response>,
    /// Whether the connection was closed after it (EOF or reset within 3 s).
    closed: bool,
}

/// Sends `bytes` on a new connection and reads one response; with `wait_close`, then waits up
/// to 3 s for the connection to close.
fn exchange(proxy: SocketAddr, bytes: &[u8], wait_close: bool) -> Outcome {
    let mut stream = TcpStream::connect(proxy).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // A refused head may be answered (and the socket closed) before the last bytes are sent.
    let _ = stream.write_all(bytes);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let response = read_response(&mut reader).ok();
    if !wait_close {
        return Outcome {
            response,
            closed: false,
        };
    }
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut rest = Vec::new();
    let closed = match reader.read_to_end(&mut rest) {
        Ok(_) => true,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    };
    Outcome { response, closed }
}

/// A request head that must be refused with `status`, and what follows it on the wire.
struct Refused {
    name: &'static str,
    bytes: Vec<u8>,
    status: u16,
}

/// A case of [`refused_cases`].
fn refused(name: &'static str, bytes: &[u8], status: u16) -> Refused {
    Refused {
        name,
        bytes: bytes.to_vec(),
        status,
    }
}

/// A smuggled second request, appended after the first request's declared body.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";

/// Every ambiguous or malformed head, what it must get, and its smuggled payload.
fn refused_cases() -> Vec<Refused> {
    let s = SMUGGLED;
    let big_header: String = (0..9)
        .map(|i| format!("X-Big-{i}: {}\r\n", "a".repeat(4000)))
        .collect();
    let many_headers: String = (0..300).map(|i| format!("X-H{i}: v\r\n")).collect();
    vec![
        refused(
            "CL.TE",
            format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{s}").as_bytes(),
            400,
        ),
        refused(
            "TE.CL",
            format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{:x}\r\n{s}\r\n0\r\n\r\n", s.len()).as_bytes(),
            400,
        ),
        refused(
            "TE.TE xchunked with CL",
            format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{s}").as_bytes(),
            400,
        ),
        refused(
            "TE xchunked alone",
            format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{s}").as_bytes(),
            400,
        ),
        refused(
            "TE.TE leading space with CL",
            format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding:  chunked\r\n\r\n0\r\n\r\n{s}").as_bytes(),
            400,
        ),
        refused(
            "TE.TE tab with CL",
            format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n{s}").as_bytes(),
            400,
        ),
        refused(
            "TE chunked, identity",
            format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{s}").as_bytes(),
            400,
        ),
        refused(
            "two TE headers, chunked first",
            format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n{s}").as_bytes(),
            400,
        ),
        refused(
            "two TE headers with CL",
            format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{s}").as_bytes(),
            400,
        ),
        refused(
            "space before the TE colon",
            format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{s}").as_bytes(),
            400,
        ),
        refused(
            "space before the CL colon with TE",
            format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{s}").as_bytes(),
            400,
        ),
        refused(
            "TE on HTTP/1.0",
            format!("POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{s}").as_bytes(),
            400,
        ),
        refused(
            "different duplicate CL",
            format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello{s}").as_bytes(),
            400,
        ),
        refused(
            "different CLs in one list",
            format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello{s}").as_bytes(),
            400,
        ),
        refused(
            "signed CL",
            format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello{s}").as_bytes(),
            400,
        ),
        refused(
            "obs-fold",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
            400,
        ),
        refused(
            "obs-fold of TE",
            format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n{s}").as_bytes(),
            400,
        ),
        refused(
            "bare LF CL.TE",
            format!("POST / HTTP/1.1\nHost: a\nContent-Length: 6\nTransfer-Encoding: chunked\n\n0\r\n\r\n{s}").as_bytes(),
            400,
        ),
        refused(
            "bare CR in a header",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rX-B: c\r\n\r\n",
            400,
        ),
        refused(
            "NUL in a header value",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n",
            400,
        ),
        refused(
            "NUL in a header name",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-\0A: b\r\n\r\n",
            400,
        ),
        refused(
            "header block over 32 KiB",
            format!("GET / HTTP/1.1\r\nHost: a\r\n{big_header}\r\n").as_bytes(),
            431,
        ),
        refused(
            "more than 256 headers",
            format!("GET / HTTP/1.1\r\nHost: a\r\n{many_headers}\r\n").as_bytes(),
            400,
        ),
        refused(
            "target over 8 KiB",
            format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000)).as_bytes(),
            414,
        ),
        refused(
            "absolute-form target for another host",
            b"GET http://evil.example/x HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        refused(
            "two Host headers",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: evil.example\r\n\r\n",
            400,
        ),
        refused(
            "userinfo in an absolute-form target",
            b"GET http://a@evil.example/ HTTP/1.1\r\nHost: a@evil.example\r\n\r\n",
            400,
        ),
    ]
}

/// Every smuggling vector and malformed head gets its 4xx, the connection is closed, and the
/// backend never sees any of them (nor the request smuggled behind them).
#[test]
fn ambiguous_and_malformed_requests_are_refused_and_never_forwarded() {
    let (fc, log) = front_door();
    let mut failures = Vec::new();
    for case in refused_cases() {
        let outcome = exchange(fc.proxy, &case.bytes, true);
        let status = outcome.response.as_ref().map(|r| r.status);
        if status != Some(case.status) || !outcome.closed {
            failures.push(format!(
                "{}: got {status:?}, closed {} (want {}, closed)",
                case.name, outcome.closed, case.status
            ));
        }
        let reached = forwarded(&log);
        if !reached.is_empty() {
            let lines: Vec<String> = reached.iter().map(Recorded::request_line).collect();
            failures.push(format!("{}: reached the backend: {lines:?}", case.name));
            log.lock().unwrap().clear();
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Still serving afterwards.
    assert_eq!(get(fc.proxy, "/fine", &[]).unwrap().status, 200);
}

/// A smuggling attempt after a good request on the same keep-alive connection is refused the
/// same way: sent after the good one's answer it gets 400; pipelined right behind it, the
/// connection is closed after the good one's answer. Either way the connection closes and only
/// the good request reaches the backend.
#[test]
fn smuggling_on_a_reused_connection_is_refused_too() {
    let (fc, log) = front_door();
    let good = b"POST /good HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
    let bad = format!(
        "POST /bad HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
    );
    for pipelined in [false, true] {
        log.lock().unwrap().retain(Recorded::is_health_check);
        let mut stream = TcpStream::connect(fc.proxy).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        if pipelined {
            stream
                .write_all(&[&good[..], bad.as_bytes()].concat())
                .unwrap();
        } else {
            stream.write_all(good).unwrap();
        }
        let first = read_response(&mut reader).unwrap();
        assert_eq!(first.status, 200, "pipelined {pipelined}");
        if !pipelined {
            stream.write_all(bad.as_bytes()).unwrap();
        }
        // Without pipelining, Forecourt closes after the first answer and never reads the
        // second request; sent after the answer, it is read and refused.
        let second = read_response(&mut reader).ok().map(|r| r.status);
        match (pipelined, second) {
            (_, Some(400)) | (true, None) => {}
            (_, other) => panic!("pipelined {pipelined}: second request got {other:?}"),
        }
        let mut rest = Vec::new();
        let closed = match reader.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        };
        assert!(closed, "pipelined {pipelined}: still open after the 400");
        let lines: Vec<String> = forwarded(&log).iter().map(Recorded::request_line).collect();
        assert_eq!(lines, ["POST /good HTTP/1.1"], "pipelined {pipelined}");
    }
}

/// Sends `bytes`, expects the backend's `200 ok` and returns the one request the backend saw.
fn forwarded_once(fc: &Forecourt, log: &Log, name: &str, bytes: &[u8]) -> Recorded {
    log.lock().unwrap().retain(Recorded::is_health_check);
    let outcome = exchange(fc.proxy, bytes, false);
    let response = outcome
        .response
        .unwrap_or_else(|| panic!("{name}: no response"));
    assert_eq!(response.status, 200, "{name}: {}", response.text());
    assert_eq!(response.text(), "ok\n", "{name}");
    let seen = wait_for(Duration::from_secs(5), || {
        Some(forwarded(log)).filter(|f| f.iter().all(|r| r.complete) && !f.is_empty())
    })
    .unwrap_or_else(|| panic!("{name}: nothing complete reached the backend"));
    assert_eq!(
        seen.len(),
        1,
        "{name}: {:?}",
        seen.iter().map(Recorded::head_text).collect::<Vec<_>>()
    );
    let request = seen.into_iter().next().unwrap();
    // Whatever the client sent, the backend gets one framing: CRLF lines, never both
    // Content-Length and Transfer-Encoding, one Transfer-Encoding, Content-Lengths that agree.
    let head = &request.head;
    let bare_lf = head
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r'));
    assert!(
        !bare_lf,
        "{name}: bare LF forwarded: {:?}",
        request.head_text()
    );
    let te = request.headers("transfer-encoding");
    let cl = request.headers("content-length");
    assert!(
        te.is_empty() || cl.is_empty(),
        "{name}: both framings forwarded: {:?}",
        request.head_text()
    );
    assert!(cl.windows(2).all(|w| w[0] == w[1]), "{name}: {cl:?}");
    assert!(te.len() <= 1, "{name}: {te:?}");
    request
}

/// Where Forecourt accepts an unusual but unambiguous head, the backend gets exactly one
/// request in one canonical framing, with the body the client meant.
#[test]
fn lenient_heads_are_forwarded_in_one_canonical_framing() {
    let (fc, log) = front_door();
    let s = SMUGGLED;

    let r = forwarded_once(
        &fc,
        &log,
        "bare LF line endings",
        b"GET /lf HTTP/1.1\nHost: a\nX-Case: lf\n\n",
    );
    assert_eq!(r.request_line(), "GET /lf HTTP/1.1");
    assert_eq!(r.headers("x-case"), ["lf"]);

    let r = forwarded_once(
        &fc,
        &log,
        "equal duplicate CL",
        b"POST /dup HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(r.request_line(), "POST /dup HTTP/1.1");
    // Identical duplicates are valid (RFC 9110 8.6) and forwarded as they came: both say 5.
    assert_eq!(r.headers("content-length"), ["5", "5"]);
    assert_eq!(r.body, b"hello");

    let r = forwarded_once(
        &fc,
        &log,
        "TE with leading whitespace, no CL",
        b"POST /ws HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \t chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(r.headers("transfer-encoding"), ["chunked"]);
    assert_eq!(r.body, b"hello");

    let r = forwarded_once(
        &fc,
        &log,
        "two TE headers, chunked last, no CL",
        format!("POST /two-te HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{s}\r\n0\r\n\r\n", s.len()).as_bytes(),
    );
    // Both client headers are dropped and the body re-framed with one canonical header.
    assert_eq!(r.headers("transfer-encoding"), ["chunked"]);
    assert_eq!(r.body, s.as_bytes());

    let r = forwarded_once(
        &fc,
        &log,
        "chunked body hiding a request",
        format!("POST /hide HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{s}\r\n0\r\n\r\n", s.len()).as_bytes(),
    );
    assert_eq!(r.request_line(), "POST /hide HTTP/1.1");
    assert_eq!(r.body, s.as_bytes(), "the hidden request stays body");

    let r = forwarded_once(
        &fc,
        &log,
        "absolute-form target matching Host",
        b"GET http://a/abs?q=1 HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    assert_eq!(r.headers("host"), ["a"]);
    // Forwarded in absolute form, as it came (origin servers must accept it, RFC 9112 3.2.2).
    assert_eq!(r.request_line(), "GET http://a/abs?q=1 HTTP/1.1");
}

/// How a slow client's connection ended: when, and what Forecourt answered first (if anything).
type Cut = Option<(Duration, Vec<u8>)>;

/// A client that sends its header one byte at a time, every `every`, for up to `limit`.
/// Returns when Forecourt closed the connection (EOF, reset or an answer), if it did.
fn slow_header_client(proxy: SocketAddr, every: Duration, limit: Duration) -> Cut {
    let start = Instant::now();
    let mut stream = TcpStream::connect(proxy).unwrap();
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(every)).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let header = b"GET /slow HTTP/1.1\r\nHost: a\r\nX-Slow: ";
    let mut sent = 0usize;
    let mut reply = [0u8; 256];
    while start.elapsed() < limit {
        let byte = header.get(sent).copied().unwrap_or(b'a');
        if stream.write_all(&[byte]).is_err() {
            return Some((start.elapsed(), Vec::new()));
        }
        sent += 1;
        // The read is the pause between bytes: anything but a timeout means it was closed.
        match stream.read(&mut reply) {
            Ok(n) => return Some((start.elapsed(), reply[..n].to_vec())),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some((start.elapsed(), Vec::new())),
        }
    }
    None
}

/// Normal requests every 200 ms for `limit`: the slowest answer, and any that was not a 200.
fn normal_traffic(proxy: SocketAddr, limit: Duration) -> (Duration, Vec<String>) {
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut failures = Vec::new();
    while start.elapsed() < limit {
        let sent = Instant::now();
        match get(proxy, "/normal", &[]) {
            Ok(r) if r.status == 200 => {}
            Ok(r) => failures.push(format!("status {}", r.status)),
            Err(e) => failures.push(e.to_string()),
        }
        slowest = slowest.max(sent.elapsed());
        std::thread::sleep(Duration::from_millis(200));
    }
    (slowest, failures)
}

/// Twenty slowloris clients (one header byte every 500 ms) tie up nothing: normal requests on
/// other connections are answered promptly meanwhile, and no slow request reaches the backend.
#[test]
fn slow_header_clients_do_not_hold_up_others() {
    let (fc, log) = front_door();
    let proxy = fc.proxy;
    let slow: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                slow_header_client(proxy, Duration::from_millis(500), Duration::from_secs(12))
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (slowest, failures) = normal_traffic(proxy, Duration::from_secs(10));
    let closed: Vec<Option<Duration>> = slow
        .into_iter()
        .map(|h| h.join().unwrap().map(|(at, _)| at))
        .collect();
    eprintln!(
        "slowloris: normal requests slowest {slowest:?}; slow connections closed at {closed:?}"
    );
    assert!(failures.is_empty(), "normal requests failed: {failures:?}");
    assert!(
        slowest < Duration::from_secs(1),
        "a normal request took {slowest:?}"
    );
    let reached: Vec<String> = forwarded(&log)
        .iter()
        .filter(|r| r.request_line().contains("/slow"))
        .map(Recorded::request_line)
        .collect();
    assert!(reached.is_empty(), "{reached:?}");
}

/// A production proxy bounds the time a request header may take to arrive (HAProxy's
/// `timeout http-request`, nginx's `client_header_timeout`): a header trickled one byte every
/// 500 ms is cut off within 15 s instead of holding its connection for as long as bytes come.
#[test]
fn a_slow_header_is_cut_off_by_a_header_timeout() {
    let (fc, _log) = front_door();
    let closed = slow_header_client(
        fc.proxy,
        Duration::from_millis(500),
        Duration::from_secs(16),
    );
    let (at, answer) = closed.expect("a header trickled for 16 s was never cut off");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    eprintln!("slow header cut off at {at:?} with {answer:?}");
    assert!(at <= Duration::from_secs(15), "cut off only at {at:?}");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408 "),
        "answered {answer:?}"
    );
}

/// A client that declares a 1,000,000-byte body and sends 10 bytes a second for `limit` (or,
/// with `stall`, 10 bytes once and then nothing). Returns the bytes it managed to send and when
/// Forecourt closed the connection, if it did.
fn slow_body_client(proxy: SocketAddr, limit: Duration, stall: bool) -> (usize, Option<Duration>) {
    let start = Instant::now();
    let mut stream = TcpStream::connect(proxy).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let head = b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n";
    if stream.write_all(head).is_err() {
        return (0, Some(start.elapsed()));
    }
    let mut sent = 0;
    let mut reply = [0u8; 256];
    while start.elapsed() < limit {
        if stall && sent > 0 {
            // Only watch for the close.
        } else if stream.write_all(b"0123456789").is_err() {
            return (sent, Some(start.elapsed()));
        } else {
            sent += 10;
        }
        match stream.read(&mut reply) {
            Ok(_) => return (sent, Some(start.elapsed())),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (sent, Some(start.elapsed())),
        }
    }
    (sent, None)
}

/// In-flight requests on the service's one instance, from the admin API.
fn instance_in_flight(fc: &Forecourt) -> u64 {
    fc.readiness("guarded")["ready"][0]["in_flight"]
        .as_u64()
        .unwrap_or(0)
}

/// Twenty clients trickling a 1 MB body at 10 bytes a second do not hold up normal requests
/// on other connections.
#[test]
fn slow_bodies_do_not_hold_up_others() {
    let (fc, log) = front_door();
    let proxy = fc.proxy;
    let slow: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || slow_body_client(proxy, Duration::from_secs(10), false))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (slowest, failures) = normal_traffic(proxy, Duration::from_secs(8));
    let in_flight = instance_in_flight(&fc);
    let results: Vec<(usize, Option<Duration>)> =
        slow.into_iter().map(|h| h.join().unwrap()).collect();
    let uploads = forwarded(&log)
        .iter()
        .filter(|r| r.request_line().starts_with("POST /upload"))
        .count();
    eprintln!(
        "slow bodies: normal requests slowest {slowest:?}; clients (sent, closed at) {results:?}; \
         {uploads} upload heads reached the backend; {in_flight} in flight on the instance"
    );
    assert!(failures.is_empty(), "normal requests failed: {failures:?}");
    assert!(
        slowest < Duration::from_secs(1),
        "a normal request took {slowest:?}"
    );
}

/// Sends a 1 MB body at 10 bytes a second (or stops after its first bytes when `stalled`) and
/// checks the connection is cut within 15 s and the instance's slot released.
fn assert_slow_body_is_cut_off(stalled: bool) {
    let what = if stalled { "stalled" } else { "trickled" };
    let (fc, _log) = front_door();
    let (sent, closed) = slow_body_client(fc.proxy, Duration::from_secs(16), stalled);
    eprintln!("{what} body: sent {sent} bytes, closed at {closed:?}");
    let closed = closed.unwrap_or_else(|| panic!("a body {what} for 16 s was never cut off"));
    assert!(
        closed <= Duration::from_secs(15),
        "cut off only at {closed:?}"
    );
    let released = wait_for(Duration::from_secs(2), || {
        (instance_in_flight(&fc) == 0).then_some(())
    });
    assert!(released.is_some(), "the instance still counts it in flight");
}

/// A production proxy does not let a trickled body pin an instance for as long as bytes come
/// (Apache's `mod_reqtimeout` body rate, nginx's request buffering): a body declared 1 MB and
/// sent at 10 bytes a second is cut off within 15 s, and the instance's slot is released.
#[test]
fn a_trickled_body_is_cut_off_and_releases_the_instance() {
    assert_slow_body_is_cut_off(false);
}

/// The same for a body that stops altogether after its first bytes: no more bytes come to be
/// checked against a rate, yet the connection, the upstream connection and the instance's slot
/// must be released within 15 s, as for a trickled body.
#[test]
fn a_stalled_body_is_cut_off_and_releases_the_instance() {
    assert_slow_body_is_cut_off(true);
}
