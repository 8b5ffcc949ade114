//! Shared support for Forecourt's end-to-end tests: the real `forecourt` binary, real sample
//! backends and a tiny HTTP/1.1 client, all on 127.0.0.1 and every wait bounded.

#![allow(clippy::unwrap_used, missing_docs)]

pub mod fake_kube;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Runs a `forecourt` command that prints JSON, asserts it succeeded (showing its stderr if
/// not) and returns what it printed.
pub fn json_output(command: &mut Command) -> serde_json::Value {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Default bound of every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(20);

/// The `forecourt` binary, built once per test process (cargo does not build another
/// package's binary for this package's tests).
pub fn forecourt_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", "forecourt-proxy", "--bin", "forecourt"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the forecourt binary failed");
        // target/debug/deps/<test> → target/debug/forecourt
        let exe = std::env::current_exe().expect("test exe");
        let dir = exe.parent().and_then(Path::parent).expect("target dir");
        let bin = dir.join("forecourt");
        assert!(bin.exists(), "no binary at {}", bin.display());
        bin
    })
}

/// A free loopback port for a process that binds it later (a spawned backend or Forecourt).
///
/// The port lies below the kernel's ephemeral range, which `bind(0)` and outgoing connections
/// draw from: a port taken from that range and released could be handed to another test's
/// listener before the spawned process binds it (a pod answered by another Forecourt's admin
/// API). Ports below it are handed out in turn from a per-process start, each checked free.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    const LOWEST: u32 = 10_000;
    if ephemeral_low > LOWEST + 1_000 {
        let span = ephemeral_low - LOWEST;
        let start = std::process::id().wrapping_mul(7_919) % span;
        for _ in 0..span {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let port = (LOWEST + (start + n) % span) as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh scratch directory under the system temp dir.
pub fn scratch_dir(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "forecourt-test-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Polls `f` every 20 ms until it returns `Some` or `limit` passes.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct Process {
    pub child: Child,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) {
        let _ = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status();
    }

    /// Kills the process now and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        wait_for(limit, || self.child.try_wait().ok().flatten())
    }

    /// Pids of the process's direct children, from /proc.
    pub fn children(&self) -> Vec<u32> {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) else {
            return Vec::new();
        };
        tasks
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
            .flat_map(|list| {
                list.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect()
    }

    /// Peak resident memory in KiB (`VmHWM`), from /proc.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A sample backend (`forecourt backend`) on its own port.
pub struct Backend {
    pub port: u16,
    pub process: Process,
}

impl Backend {
    /// Starts a backend and waits until it accepts connections (after its boot delay).
    pub fn start() -> Backend {
        let backend = Self::spawn(free_port(), Duration::ZERO);
        backend.wait_listening();
        backend
    }

    /// Starts a backend without waiting; it listens after `boot_delay`.
    pub fn spawn(port: u16, boot_delay: Duration) -> Backend {
        let child = Command::new(forecourt_bin())
            .args([
                "backend",
                "--port",
                &port.to_string(),
                "--boot-delay",
                &format!("{}ms", boot_delay.as_millis()),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Backend {
            port,
            process: Process { child },
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn wait_listening(&self) {
        wait_for(WAIT, || TcpStream::connect(self.addr()).ok())
            .unwrap_or_else(|| panic!("backend on {} never listened", self.port));
    }
}

/// A running `forecourt run` with a policy written to a scratch file.
pub struct Forecourt {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub policy_path: PathBuf,
    pub process: Process,
    pub log_path: PathBuf,
}

impl Forecourt {
    /// Starts Forecourt on `policy`, where `{proxy}` and `{admin}` stand for free ports,
    /// and waits until its admin API answers.
    pub fn start(policy: &str) -> Forecourt {
        Self::start_with_env(policy, &[])
    }

    /// Like [`Forecourt::start`], with extra environment variables.
    pub fn start_with_env(policy: &str, env: &[(&str, &str)]) -> Forecourt {
        let dir = scratch_dir("forecourt");
        let proxy = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let text = policy
            .replace("{proxy}", &proxy.to_string())
            .replace("{admin}", &admin.to_string());
        let policy_path = dir.join("policy.yaml");
        std::fs::write(&policy_path, text).unwrap();
        let log_path = dir.join("forecourt.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(forecourt_bin())
            .args(["run", "--threads", "2", "-c"])
            .arg(&policy_path)
            .envs(env.iter().copied())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let forecourt = Forecourt {
            proxy,
            admin,
            policy_path,
            process: Process { child },
            log_path,
        };
        wait_for(WAIT, || {
            get(forecourt.admin, "/healthz", &[])
                .ok()
                .filter(|r| r.status == 200)
        })
        .unwrap_or_else(|| panic!("forecourt never served; log:\n{}", forecourt.log()));
        wait_for(WAIT, || TcpStream::connect(forecourt.proxy).ok()).expect("proxy listener");
        forecourt
    }

    /// Rewrites the policy file (`{proxy}` and `{admin}` filled in as at start).
    pub fn write_policy(&self, policy: &str) {
        let text = policy
            .replace("{proxy}", &self.proxy.to_string())
            .replace("{admin}", &self.admin.to_string());
        std::fs::write(&self.policy_path, text).unwrap();
    }

    /// `GET` an admin path and parse the JSON answer.
    pub fn admin_json(&self, path: &str) -> serde_json::Value {
        let r = get(self.admin, path, &[]).unwrap();
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        serde_json::from_slice(&r.body).expect("admin answers JSON")
    }

    /// Sends an admin request with a JSON body and optional bearer token.
    pub fn admin_send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> Response {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: admin\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        send_raw(self.admin, request.as_bytes()).unwrap()
    }

    /// Forecourt's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The value of the first `/metrics` line starting with `line_prefix` (0 when absent).
    pub fn metric(&self, line_prefix: &str) -> f64 {
        let text = get(self.admin, "/metrics", &[]).unwrap().text();
        text.lines()
            .find(|l| l.starts_with(line_prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// The readiness JSON of `service`.
    pub fn readiness(&self, service: &str) -> serde_json::Value {
        let r = get(
            self.admin,
            &format!("/v1/services/{service}/readiness"),
            &[],
        )
        .unwrap();
        assert_eq!(r.status, 200, "readiness of {service}: {}", r.text());
        serde_json::from_slice(&r.body).expect("readiness is JSON")
    }

    /// Number of ready instances of `service`.
    pub fn ready_count(&self, service: &str) -> usize {
        self.readiness(service)["ready"]
            .as_array()
            .map_or(0, Vec::len)
    }

    /// Waits until `service` has `n` ready instances.
    pub fn wait_ready(&self, service: &str, n: usize) {
        wait_for(WAIT, || (self.ready_count(service) == n).then_some(())).unwrap_or_else(|| {
            panic!("{service} never had {n} ready: {}", self.readiness(service))
        });
    }
}

/// Whether a process is alive (and not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

impl Drop for Forecourt {
    /// Removes the scratch directory of a passing test; a failing one keeps it for its log.
    fn drop(&mut self) {
        self.process.kill();
        if !std::thread::panicking() {
            if let Some(dir) = self.policy_path.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request on a new connection (`Connection: close`) and reads the response.
pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Response> {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    send_raw(addr, request.as_bytes())
}

/// Writes raw bytes on a new connection and reads one response.
pub fn send_raw(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(bytes)?;
    read_response(&mut BufReader::new(stream))
}

/// Reads one response with a `Content-Length` (or close-delimited) body.
pub fn read_response<R: BufRead>(reader: &mut R) -> std::io::Result<Response> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let mut body = Vec::new();
    match length {
        Some(n) => {
            body.resize(n, 0);
            reader.read_exact(&mut body)?;
        }
        None if status == 101 || status == 204 || status == 304 => {}
        None => {
            reader.read_to_end(&mut body)?;
        }
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Checks a `/metrics` text with Prometheus's own parser (`promtool check metrics`, installed by
/// `.ci/run`); without promtool outside CI, says so and checks nothing.
pub fn check_with_promtool(text: &str) {
    let path = scratch_dir("metrics").join("metrics.prom");
    std::fs::write(&path, text).unwrap();
    match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&path).unwrap())
        .output()
    {
        Ok(out) => {
            let report = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "promtool rejected the metrics: {report}"
            );
        }
        Err(e) if std::env::var_os("CI").is_some() => panic!("promtool is required in CI: {e}"),
        Err(e) => eprintln!("promtool not installed ({e}); checked the line format only"),
    }
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Writes an alibaba-style trace (many services, one file, most of them idle most of the
/// time) of `services` services over `seconds` seconds to `path` and returns its total
/// requests per service, in service order. Deterministic for a `seed`.
///
/// Shapes, by service index: every 50th is busy all the time (about 1–8 requests/s); every
/// third of the rest fires like a timer (a 5–60 s burst of 1–10/s every hour, two hours, six
/// hours or day, at a fixed phase); the others are rare (about three bursts a day at random times, a few to a
/// hundred seconds long).
pub fn write_fleet_trace(path: &Path, services: usize, seconds: u64, seed: u64) -> Vec<u64> {
    struct Draw(u64);
    impl Draw {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n.max(1)
        }
    }
    fn burst(
        rows: &mut Vec<(u64, usize, u64)>,
        draw: &mut Draw,
        s: usize,
        span: (u64, u64),
        rate: u64,
    ) {
        for t in span.0..span.1 {
            rows.push((t, s, rate + draw.below(3)));
        }
    }
    let mut draw = Draw(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut rows: Vec<(u64, usize, u64)> = Vec::new();
    for s in 0..services {
        if s % 50 == 0 {
            let rate = 1 + (s as u64 / 50) % 8;
            for t in 0..seconds {
                let n = draw.below(2 * rate + 1);
                if n > 0 {
                    rows.push((t, s, n));
                }
            }
        } else if s % 3 == 0 {
            let period = [3_600, 7_200, 21_600, 86_400][s % 4];
            let (len, rate) = (5 + (s as u64 * 7) % 56, 1 + (s as u64 * 3) % 10);
            let mut start = (s as u64 * 977) % period;
            while start < seconds {
                burst(
                    &mut rows,
                    &mut draw,
                    s,
                    (start, (start + len).min(seconds)),
                    rate,
                );
                start += period;
            }
        } else {
            for _ in 0..(seconds * 3).div_ceil(86_400) {
                let (start, len, rate) =
                    (draw.below(seconds), 3 + draw.below(100), 1 + draw.below(6));
                burst(
                    &mut rows,
                    &mut draw,
                    s,
                    (start, (start + len).min(seconds)),
                    rate,
                );
            }
        }
    }
    rows.sort_unstable();
    let mut totals = vec![0u64; services];
    let file = std::fs::File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = std::io::BufWriter::new(file);
    let mut write = || -> std::io::Result<()> {
        writeln!(out, "t,service,count")?;
        for &(t, s, n) in &rows {
            totals[s] += n;
            writeln!(out, "{t},svc-{s:04},{n}")?;
        }
        out.flush()
    };
    write().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    totals
}
