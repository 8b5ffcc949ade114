//! # Fuzz target: the keep-alive reader's header scan
//!
//! ```text
//!  bytes ──► [max_bytes seed, chunk sizes…] + payload ──► reads of those sizes
//!        ──► HeaderScan::check after every read      ── agrees with a naive search
//! ```
//!
//! The keep-alive reader (`server::keepalive`) reads a request's header in whatever pieces the
//! client sends and, after each read, looks for the header's end among the new bytes only. The
//! checks, beyond "never panics": the scan says `Complete` exactly when the bytes read so far
//! hold `\r\n\r\n` or `\n\n` (however the end was split over reads), `TooLarge` only past
//! `max_bytes` and without an end, and it never lets a header grow past `max_bytes` plus one
//! read unnoticed.

#![no_main]

use forecourt_proxy::server::keepalive::{HeaderRead, HeaderScan};
use libfuzzer_sys::fuzz_target;

/// The naive model: does `buf` hold the end of a header block anywhere?
fn has_end(buf: &[u8]) -> bool {
    buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n")
}

fuzz_target!(|data: &[u8]| {
    let Some((&limit, rest)) = data.split_first() else {
        return;
    };
    let Some((&chunking, payload)) = rest.split_first() else {
        return;
    };
    // Small limits so that short inputs reach them; reads of 1 to 16 bytes.
    let max_bytes = usize::from(limit) * 4;
    let read_size = usize::from(chunking % 16) + 1;
    let mut scan = HeaderScan::new(max_bytes);
    let mut buf = Vec::new();
    let mut outcome = scan.check(&buf);
    for piece in payload.chunks(read_size) {
        if outcome.is_some() {
            break;
        }
        assert!(!has_end(&buf), "an end was missed before this read");
        assert!(buf.len() <= max_bytes, "the header grew past the limit unnoticed");
        buf.extend_from_slice(piece);
        outcome = scan.check(&buf);
    }
    match outcome {
        Some(HeaderRead::Complete) => assert!(has_end(&buf), "complete without an end"),
        Some(HeaderRead::TooLarge) => {
            assert!(!has_end(&buf), "too large, though the end is there");
            assert!(buf.len() > max_bytes && buf.len() <= max_bytes + read_size);
        }
        Some(other) => panic!("a scan never says {other:?}"),
        None => assert!(!has_end(&buf) && buf.len() <= max_bytes),
    }
});
