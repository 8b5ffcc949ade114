//! Request traces in the shared CSV format: a header `t,service,count`, then one row per second
//! that had requests (`t` whole seconds from the trace's start).
//!
//! ```text
//!  BufRead (caller handles gzip) ─► parse_trace ─► Trace { services, rows }
//!                                                    └─► dense_series: one value per second,
//!                                                        zeros for seconds without a row
//! ```

use std::io::BufRead;
use std::num::ParseIntError;

/// The header every trace starts with.
pub const TRACE_HEADER: &str = "t,service,count";

/// Longest trace accepted: ten years of seconds (guards the dense series against a typo'd `t`).
pub const MAX_TRACE_SECONDS: u64 = 10 * 366 * 24 * 3_600;

/// Errors reading a trace; every row error names its 1-based line.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The reader failed.
    #[error("failed to read trace at line {line}")]
    Read {
        /// Line being read.
        line: usize,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The input has no lines.
    #[error("trace is empty: expected the header `t,service,count`")]
    Empty,
    /// The first line is not the header.
    #[error("line {line}: expected the header `t,service,count`, found {found:?}")]
    Header {
        /// Line number.
        line: usize,
        /// What was there.
        found: String,
    },
    /// A row does not have three comma-separated fields.
    #[error("line {line}: expected 3 fields `t,service,count`, found {found}")]
    FieldCount {
        /// Line number.
        line: usize,
        /// Fields found.
        found: usize,
    },
    /// `t` is not a whole number of seconds.
    #[error("line {line}: invalid second {value:?}")]
    Second {
        /// Line number.
        line: usize,
        /// The field.
        value: String,
        /// Why it did not parse.
        #[source]
        source: ParseIntError,
    },
    /// `t` is beyond [`MAX_TRACE_SECONDS`].
    #[error("line {line}: second {second} is beyond the longest supported trace ({max} s)")]
    SecondOutOfRange {
        /// Line number.
        line: usize,
        /// The second given.
        second: u64,
        /// The limit.
        max: u64,
    },
    /// The service name is empty.
    #[error("line {line}: empty service name")]
    EmptyService {
        /// Line number.
        line: usize,
    },
    /// `count` is not a whole number.
    #[error("line {line}: invalid count {value:?}")]
    Count {
        /// Line number.
        line: usize,
        /// The field.
        value: String,
        /// Why it did not parse.
        #[source]
        source: ParseIntError,
    },
}

/// One service's rows: `(second, count)` in file order; repeated seconds add up.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceTrace {
    /// Service name.
    pub name: String,
    /// `(second, count)` rows.
    pub rows: Vec<(u64, u64)>,
}

impl ServiceTrace {
    /// Total requests.
    pub fn total(&self) -> u64 {
        self.rows.iter().map(|(_, c)| c).sum()
    }

    /// One value per second for seconds `0..len`, zeros where the trace has no row.
    pub fn dense_series(&self, len: u64) -> Vec<f64> {
        let mut series = vec![0.0; usize::try_from(len).unwrap_or(usize::MAX)];
        for &(t, count) in &self.rows {
            if let Some(slot) = usize::try_from(t).ok().and_then(|i| series.get_mut(i)) {
                *slot += count as f64;
            }
        }
        series
    }
}

/// A parsed trace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Trace {
    /// Services in order of first appearance.
    pub services: Vec<ServiceTrace>,
}

impl Trace {
    /// The trace of one service.
    pub fn service(&self, name: &str) -> Option<&ServiceTrace> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Seconds from 0 to the last row of any service, inclusive.
    pub fn duration_sec(&self) -> u64 {
        self.services
            .iter()
            .flat_map(|s| s.rows.iter().map(|(t, _)| t + 1))
            .max()
            .unwrap_or(0)
    }
}

/// Parses a trace; blank lines are skipped, fields may have surrounding spaces.
pub fn parse_trace<R: BufRead>(mut reader: R) -> Result<Trace, TraceError> {
    let mut trace = Trace::default();
    let mut line = String::new();
    let mut number = 0usize;
    let mut saw_header = false;
    let mut index: ahash::AHashMap<String, usize> = ahash::AHashMap::new();
    loop {
        line.clear();
        number += 1;
        let read = reader
            .read_line(&mut line)
            .map_err(|source| TraceError::Read {
                line: number,
                source,
            })?;
        if read == 0 {
            break;
        }
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        if !saw_header {
            let header: Vec<&str> = text.split(',').map(str::trim).collect();
            if header != ["t", "service", "count"] {
                return Err(TraceError::Header {
                    line: number,
                    found: text.chars().take(80).collect(),
                });
            }
            saw_header = true;
            continue;
        }
        let (t, service, count) = parse_row(text, number)?;
        let slot = match index.get(service) {
            Some(slot) => *slot,
            None => {
                trace.services.push(ServiceTrace {
                    name: service.to_string(),
                    rows: Vec::new(),
                });
                index.insert(service.to_string(), trace.services.len() - 1);
                trace.services.len() - 1
            }
        };
        trace.services[slot].rows.push((t, count));
    }
    if !saw_header {
        return Err(TraceError::Empty);
    }
    Ok(trace)
}

fn parse_row(text: &str, line: usize) -> Result<(u64, &str, u64), TraceError> {
    let mut fields = text.split(',').map(str::trim);
    let (Some(t), Some(service), Some(count), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(TraceError::FieldCount {
            line,
            found: text.split(',').count(),
        });
    };
    let second: u64 = t.parse().map_err(|source| TraceError::Second {
        line,
        value: t.to_string(),
        source,
    })?;
    if second >= MAX_TRACE_SECONDS {
        return Err(TraceError::SecondOutOfRange {
            line,
            second,
            max: MAX_TRACE_SECONDS,
        });
    }
    if service.is_empty() {
        return Err(TraceError::EmptyService { line });
    }
    let count: u64 = count.parse().map_err(|source| TraceError::Count {
        line,
        value: count.to_string(),
        source,
    })?;
    Ok((second, service, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Trace, TraceError> {
        parse_trace(text.as_bytes())
    }

    #[test]
    fn parses_services_and_fills_gaps_with_zeros() {
        let trace =
            parse("t,service,count\n0,web,1\n3,web,2\n1,api,5\n3,web,1\n\n").expect("trace");
        assert_eq!(trace.services.len(), 2);
        assert_eq!(trace.duration_sec(), 4);
        let web = trace.service("web").expect("web");
        assert_eq!(web.total(), 4);
        assert_eq!(
            web.dense_series(trace.duration_sec()),
            vec![1.0, 0.0, 0.0, 3.0]
        );
        assert_eq!(
            trace.service("api").map(|s| s.dense_series(4)),
            Some(vec![0.0, 5.0, 0.0, 0.0])
        );
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("", "trace is empty: expected the header `t,service,count`"),
            (
                "time,svc,n\n",
                "line 1: expected the header `t,service,count`, found \"time,svc,n\"",
            ),
            (
                "t,service,count\n1,web\n",
                "line 2: expected 3 fields `t,service,count`, found 2",
            ),
            (
                "t,service,count\n1,web,2,3\n",
                "line 2: expected 3 fields `t,service,count`, found 4",
            ),
            (
                "t,service,count\n0,web,1\n-1,web,2\n",
                "line 3: invalid second \"-1\"",
            ),
            ("t,service,count\n0,,1\n", "line 2: empty service name"),
            (
                "t,service,count\n\n0,web,x\n",
                "line 3: invalid count \"x\"",
            ),
            (
                "t,service,count\n99999999999,web,1\n",
                "line 2: second 99999999999 is beyond the longest supported trace (316224000 s)",
            ),
        ];
        for (input, message) in cases {
            let err = parse(input).expect_err(input);
            assert_eq!(err.to_string(), message);
        }
    }

    #[test]
    fn read_errors_keep_their_source() {
        struct Broken;
        impl std::io::Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk on fire"))
            }
        }
        let err = parse_trace(std::io::BufReader::new(Broken)).expect_err("broken reader");
        assert_eq!(err.to_string(), "failed to read trace at line 1");
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn reads_the_shipped_azure_trace() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/traces/azure-llm-code-2023.csv"
        );
        let Ok(file) = std::fs::File::open(path) else {
            return; // the shared traces are not part of the repository
        };
        let trace = parse_trace(std::io::BufReader::new(file)).expect("azure trace");
        assert_eq!(trace.services.len(), 1);
        assert_eq!(trace.services[0].total(), 8_819);
    }
}
