//! Tests of the local backend: pure helpers, then real processes on loopback (`sh`, `sleep`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::backend::NoDrain;

/// Upper bound for any single wait in these tests.
const STEP: Duration = Duration::from_secs(5);

// === pure helpers ===

#[test]
fn substitute_replaces_every_placeholder_once() {
    assert_eq!(
        substitute(
            "--port={port} {service}/{version}:{port}",
            "web",
            "v2",
            8080
        ),
        "--port=8080 web/v2:8080"
    );
    assert_eq!(
        substitute("{unknown} {port", "s", "v", 1),
        "{unknown} {port"
    );
    // Substituted text is not substituted again.
    assert_eq!(substitute("{service}", "{port}", "v", 9), "{port}");
    assert_eq!(substitute("", "s", "v", 1), "");
}

#[test]
fn restart_delay_doubles_up_to_the_cap() {
    let ms = Duration::from_millis;
    let delays: Vec<_> = (1..=6)
        .map(|n| restart_delay(ms(100), ms(1000), n))
        .collect();
    assert_eq!(
        delays,
        vec![ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
    );
    assert_eq!(restart_delay(ms(100), ms(1000), u32::MAX), ms(1000));
    assert_eq!(
        restart_delay(Duration::ZERO, ms(50), 1),
        MIN_BACKOFF,
        "never spins"
    );
    assert_eq!(
        restart_delay(ms(500), ms(100), 3),
        ms(500),
        "cap below the start"
    );
}

#[test]
fn victims_are_restarting_slots_first_then_the_newest() {
    let slot = |id: u64, version: &str, running: bool, launch: u64| Slot {
        id,
        version: version.to_owned(),
        address: running.then(|| loopback(10_000 + u16::try_from(id).expect("small id"))),
        launch,
        stop: watch::channel(false).0,
    };
    let slots = vec![
        slot(1, "v1", true, 1),
        slot(2, "v1", true, 5),
        slot(3, "v2", true, 9),
        slot(4, "v1", false, 2),
        slot(5, "v1", true, 3),
    ];
    assert_eq!(pick_victims(&slots, "v1", 1), vec![4]);
    assert_eq!(pick_victims(&slots, "v1", 3), vec![4, 2, 5]);
    assert_eq!(pick_victims(&slots, "v2", 5), vec![3]);
    assert!(pick_victims(&slots, "v3", 1).is_empty());
}

#[tokio::test]
async fn long_lines_are_cut_and_lines_split() {
    let input: &[u8] = b"short\nabcdefghij\r\nend";
    let mut reader = BufReader::new(input);
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = read_line_limited(&mut reader, &mut line, 4)
            .await
            .expect("in memory");
        if n == 0 {
            break;
        }
        lines.push(String::from_utf8(line).expect("ascii"));
    }
    assert_eq!(lines, vec!["shor", "abcd", "end"]);
}

#[test]
fn port_taken_sees_a_listener() {
    let listener = TcpListener::bind(loopback(0)).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    assert!(port_taken(port));
    drop(listener);
    assert!(!port_taken(port));
}

#[test]
fn invalid_specs_are_refused() {
    let drain: Arc<dyn Drain> = Arc::new(NoDrain);
    let err = LocalOrchestrator::new(vec![LocalService::new("web", vec![])], drain.clone())
        .expect_err("empty command");
    assert_eq!(
        err.to_string(),
        "invalid launch spec for service web: the command is empty"
    );
    let twice = vec![
        LocalService::new("web", vec!["sleep".into()]),
        LocalService::new("web", vec!["sleep".into()]),
    ];
    let err = LocalOrchestrator::new(twice, drain).expect_err("duplicate");
    assert!(err.to_string().contains("configured twice"), "{err}");
}

// === real processes ===

/// A scratch directory for files the children write, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "forecourt-local-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn dir(&self) -> String {
        self.0.to_str().expect("utf-8 temp dir").to_owned()
    }

    /// Waits for `name` to exist with content ending in a newline and returns it.
    async fn read(&self, name: &str) -> String {
        let path = self.0.join(name);
        let read = async {
            loop {
                if let Ok(text) = std::fs::read_to_string(&path) {
                    if text.ends_with('\n') {
                        return text.trim_end().to_owned();
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(STEP, read)
            .await
            .unwrap_or_else(|_| panic!("{} never appeared", path.display()))
    }

    async fn pid(&self, name: &str) -> i32 {
        self.read(name).await.parse().expect("a pid")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether `pid` runs (a zombie waiting for its parent counts as gone).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

async fn wait_dead(pid: i32) {
    let dead = async {
        while alive(pid) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(STEP, dead)
        .await
        .unwrap_or_else(|_| panic!("pid {pid} is still alive"));
}

async fn next(rx: &mut UnboundedReceiver<Update>) -> Update {
    tokio::time::timeout(STEP, rx.recv())
        .await
        .expect("an update in time")
        .expect("the feed is open")
}

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

fn service(name: &str, command: Vec<String>) -> LocalService {
    LocalService {
        drain_timeout: Duration::from_secs(2),
        stop_grace: Duration::from_secs(2),
        restart_backoff: Duration::from_millis(50),
        restart_backoff_max: Duration::from_millis(400),
        ..LocalService::new(name, command)
    }
}

fn added(update: Update) -> InstanceInfo {
    match update {
        Update::Add { instance, .. } => instance,
        other => panic!("expected an add, got {other:?}"),
    }
}

fn removed(update: Update) -> SocketAddr {
    match update {
        Update::Remove { address, .. } => address,
        other => panic!("expected a remove, got {other:?}"),
    }
}

/// Every `Add` of the updates already queued, after the initial resets.
fn drain_queue(rx: &mut UnboundedReceiver<Update>) -> Vec<Update> {
    let mut out = Vec::new();
    while let Ok(update) = rx.try_recv() {
        out.push(update);
    }
    out
}

async fn shut(orch: &LocalOrchestrator) {
    tokio::time::timeout(Duration::from_secs(10), orch.shutdown())
        .await
        .expect("shutdown in time");
}

#[tokio::test]
async fn scale_up_adds_instances_on_distinct_ports_with_placeholders() {
    let scratch = Scratch::new();
    let script = format!(
        "echo \"{{service}} {{version}} {{port}} $TAG\" > {dir}/{{port}}.tmp && \
         mv {dir}/{{port}}.tmp {dir}/{{port}}; exec sleep 30",
        dir = scratch.dir()
    );
    let mut spec = service("web", sh(&script));
    spec.env = vec![("TAG".into(), "tag-{service}-{port}".into())];
    let orch = LocalOrchestrator::new(vec![spec], Arc::new(NoDrain)).expect("valid");
    assert_eq!(orch.kind(), "local");
    let mut rx = orch.updates();
    assert_eq!(
        next(&mut rx).await,
        Update::Reset {
            service: "web".into(),
            instances: vec![],
        }
    );

    orch.set_replicas("web", "v1", 3).await.expect("started");
    // The adds are emitted before `set_replicas` returns.
    let adds: Vec<InstanceInfo> = drain_queue(&mut rx).into_iter().map(added).collect();
    assert_eq!(adds.len(), 3);
    let ports: HashSet<u16> = adds.iter().map(|i| i.address.port()).collect();
    assert_eq!(ports.len(), 3, "distinct ports: {adds:?}");
    for instance in &adds {
        assert_eq!(instance.version, "v1");
        assert!(instance.address.ip().is_loopback());
        let port = instance.address.port();
        let written = scratch.read(&port.to_string()).await;
        assert_eq!(written, format!("web v1 {port} tag-web-{port}"));
    }
    assert_eq!(orch.replicas("web", "v1"), 3);
    assert_eq!(orch.replicas("web", "v2"), 0);

    // A second subscriber starts from a reset holding the three instances.
    let mut late = orch.updates();
    match next(&mut late).await {
        Update::Reset { service, instances } => {
            assert_eq!(service, "web");
            let mut got: Vec<u16> = instances.iter().map(|i| i.address.port()).collect();
            got.sort_unstable();
            let mut want: Vec<u16> = ports.iter().copied().collect();
            want.sort_unstable();
            assert_eq!(got, want);
        }
        other => panic!("expected a reset, got {other:?}"),
    }
    shut(&orch).await;
}

#[tokio::test]
async fn set_replicas_is_idempotent_and_checks_the_service() {
    let orch = LocalOrchestrator::new(
        vec![service("web", vec!["sleep".into(), "30".into()])],
        Arc::new(NoDrain),
    )
    .expect("valid");
    let mut rx = orch.updates();
    let _reset = next(&mut rx).await;
    orch.set_replicas("web", "v1", 2).await.expect("started");
    orch.set_replicas("web", "v1", 2).await.expect("same order");
    tokio::time::sleep(Duration::from_millis(200)).await;
    orch.set_replicas("web", "v1", 2).await.expect("same order");
    let updates = drain_queue(&mut rx);
    assert_eq!(updates.len(), 2, "two adds only: {updates:?}");
    assert!(updates.iter().all(|u| matches!(u, Update::Add { .. })));
    assert_eq!(orch.replicas("web", "v1"), 2);

    let err = orch
        .set_replicas("api", "v1", 1)
        .await
        .expect_err("unknown");
    assert_eq!(err.to_string(), "unknown service api");
    shut(&orch).await;
    let err = orch
        .set_replicas("web", "v1", 1)
        .await
        .expect_err("shut down");
    assert!(matches!(err, OrchestratorError::ShuttingDown));
    assert_eq!(orch.replicas("web", "v1"), 0);
}

/// A drain that records when it is called, checks the instance still runs, and waits for the
/// test to release it.
struct HeldDrain {
    calls: mpsc::UnboundedSender<(String, SocketAddr)>,
    release: tokio::sync::Notify,
}

#[async_trait]
impl Drain for HeldDrain {
    async fn drained(&self, service: &str, address: SocketAddr, timeout: Duration) {
        assert_eq!(timeout, Duration::from_secs(2), "the spec's drain timeout");
        let _ = self.calls.send((service.to_owned(), address));
        self.release.notified().await;
    }
}

#[tokio::test]
async fn scale_down_removes_then_drains_then_stops_the_newest() {
    let scratch = Scratch::new();
    let script = format!("echo $$ > {}/{{port}}; exec sleep 30", scratch.dir());
    let (calls, mut drained) = mpsc::unbounded_channel();
    let drain = Arc::new(HeldDrain {
        calls,
        release: tokio::sync::Notify::new(),
    });
    let orch =
        LocalOrchestrator::new(vec![service("web", sh(&script))], drain.clone()).expect("valid");
    let mut rx = orch.updates();
    let _reset = next(&mut rx).await;

    orch.set_replicas("web", "v1", 2).await.expect("started");
    let first = added(next(&mut rx).await);
    let second = added(next(&mut rx).await);
    let first_pid = scratch.pid(&first.address.port().to_string()).await;
    let second_pid = scratch.pid(&second.address.port().to_string()).await;

    orch.set_replicas("web", "v1", 1).await.expect("ordered");
    // The remove is already queued when `set_replicas` returns, before any signal.
    let gone = removed(rx.try_recv().expect("remove emitted synchronously"));
    assert_eq!(gone, second.address, "the newest instance goes first");
    let (service, address) = tokio::time::timeout(STEP, drained.recv())
        .await
        .expect("drain called in time")
        .expect("drain called");
    assert_eq!((service.as_str(), address), ("web", second.address));
    // While the drain holds, the process is left alone.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(alive(second_pid), "signalled before the drain finished");
    drain.release.notify_one();
    wait_dead(second_pid).await;
    assert!(alive(first_pid), "the older instance keeps running");
    assert_eq!(orch.replicas("web", "v1"), 1);
    assert!(rx.try_recv().is_err(), "no further updates");

    // Shutdown drains the last one too.
    let shutdown = tokio::spawn(async move {
        shut(&orch).await;
        orch
    });
    let (_, address) = tokio::time::timeout(STEP, drained.recv())
        .await
        .expect("drain called in time")
        .expect("drain called");
    assert_eq!(address, first.address);
    assert_eq!(removed(next(&mut rx).await), first.address);
    drain.release.notify_one();
    let _orch = tokio::time::timeout(STEP, shutdown)
        .await
        .expect("shutdown in time")
        .expect("no panic");
    assert!(!alive(first_pid));
    assert!(rx.recv().await.is_none(), "the feed ends after shutdown");
}

#[tokio::test]
async fn a_child_ignoring_sigterm_is_killed_after_the_grace() {
    let scratch = Scratch::new();
    // The trap makes the shell survive SIGTERM (it notes it), the loop keeps it busy.
    let script = format!(
        "trap 'echo term > {dir}/term' TERM; echo $$ > {dir}/pid; \
         while :; do sleep 0.05; done",
        dir = scratch.dir()
    );
    let mut spec = service("stubborn", sh(&script));
    spec.stop_grace = Duration::from_millis(400);
    let orch = LocalOrchestrator::new(vec![spec], Arc::new(NoDrain)).expect("valid");
    orch.set_replicas("stubborn", "v1", 1)
        .await
        .expect("started");
    let pid = scratch.pid("pid").await;

    let stopping = Instant::now();
    orch.set_replicas("stubborn", "v1", 0)
        .await
        .expect("ordered");
    assert_eq!(scratch.read("term").await, "term", "SIGTERM was sent first");
    wait_dead(pid).await;
    let took = stopping.elapsed();
    assert!(
        took >= Duration::from_millis(400),
        "killed before the grace: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "kill too late: {took:?}");
    shut(&orch).await;
}

#[tokio::test]
async fn a_crashing_child_is_removed_and_restarted_with_back_off() {
    let scratch = Scratch::new();
    let script = format!(
        "echo start >> {}/starts; echo boom on {{port}} >&2; exit 3",
        scratch.dir()
    );
    let orch = LocalOrchestrator::new(vec![service("crashy", sh(&script))], Arc::new(NoDrain))
        .expect("valid");
    let mut rx = orch.updates();
    let _reset = next(&mut rx).await;
    orch.set_replicas("crashy", "v1", 1).await.expect("started");

    let mut times = Vec::new();
    let mut addresses = Vec::new();
    for _ in 0..4 {
        let instance = added(next(&mut rx).await);
        times.push(Instant::now());
        assert_eq!(removed(next(&mut rx).await), instance.address);
        addresses.push(instance.address);
    }
    assert_eq!(orch.replicas("crashy", "v1"), 1, "still ordered");
    // 50 ms, 100 ms, 200 ms between restarts (plus the process's own run time).
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[0] >= Duration::from_millis(50), "{gaps:?}");
    assert!(gaps[2] >= Duration::from_millis(200), "{gaps:?}");

    orch.set_replicas("crashy", "v1", 0).await.expect("ordered");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = drain_queue(&mut rx);
    assert!(
        after.iter().all(|u| matches!(u, Update::Remove { .. })),
        "no restart once unordered: {after:?}"
    );
    let starts = std::fs::read_to_string(scratch.path().join("starts")).expect("starts");
    assert!(starts.lines().count() <= 5, "{starts}");
    shut(&orch).await;
}

#[tokio::test]
async fn a_failed_spawn_is_reported_and_retried() {
    let scratch = Scratch::new();
    let marker = scratch.path().join("bin");
    let program = marker.to_str().expect("utf-8").to_owned();
    let orch = LocalOrchestrator::new(
        vec![service("late", vec![program.clone(), "30".into()])],
        Arc::new(NoDrain),
    )
    .expect("valid");
    let mut rx = orch.updates();
    let _reset = next(&mut rx).await;
    let err = orch
        .set_replicas("late", "v1", 1)
        .await
        .expect_err("no such program");
    assert!(
        err.to_string()
            .starts_with("failed to start service late version v1 on port"),
        "{err}"
    );
    assert_eq!(orch.replicas("late", "v1"), 1, "the order stands");
    // The program appears (as if a build finished): the back-off retry starts it.
    std::os::unix::fs::symlink(which_sleep(), &marker).expect("symlink");
    let instance = added(next(&mut rx).await);
    assert_eq!(instance.version, "v1");
    shut(&orch).await;
}

fn which_sleep() -> PathBuf {
    ["/usr/bin/sleep", "/bin/sleep"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("sleep is installed")
}

#[tokio::test]
async fn shutdown_leaves_no_process_behind() {
    let scratch = Scratch::new();
    // A shell that is not replaced by exec, with a child of its own.
    let script = format!(
        "sleep 30 & echo $! > {dir}/{{port}}.child; echo $$ > {dir}/{{port}}; wait",
        dir = scratch.dir()
    );
    let orch = LocalOrchestrator::new(
        vec![service("web", sh(&script)), service("api", sh(&script))],
        Arc::new(NoDrain),
    )
    .expect("valid");
    let mut rx = orch.updates();
    orch.set_replicas("web", "v1", 2).await.expect("started");
    orch.set_replicas("api", "v2", 1).await.expect("started");
    let mut pids = Vec::new();
    for update in drain_queue(&mut rx) {
        if let Update::Add { instance, .. } = update {
            let port = instance.address.port();
            pids.push(scratch.pid(&port.to_string()).await);
            pids.push(scratch.pid(&format!("{port}.child")).await);
        }
    }
    assert_eq!(pids.len(), 6);
    assert!(pids.iter().all(|&pid| alive(pid)));

    let started = Instant::now();
    shut(&orch).await;
    for pid in &pids {
        assert!(!alive(*pid), "pid {pid} survived the shutdown");
    }
    let removes = drain_queue(&mut rx)
        .into_iter()
        .filter(|u| matches!(u, Update::Remove { .. }))
        .count();
    assert_eq!(removes, 3);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stopped in parallel"
    );
    // Idempotent.
    shut(&orch).await;
}

#[tokio::test]
async fn dropping_the_orchestrator_kills_its_children() {
    let scratch = Scratch::new();
    let script = format!(
        "sleep 30 & echo $! > {dir}/child; echo $$ > {dir}/pid; wait",
        dir = scratch.dir()
    );
    let orch = LocalOrchestrator::new(vec![service("web", sh(&script))], Arc::new(NoDrain))
        .expect("valid");
    orch.set_replicas("web", "v1", 1).await.expect("started");
    let pid = scratch.pid("pid").await;
    let child = scratch.pid("child").await;
    drop(orch);
    wait_dead(pid).await;
    wait_dead(child).await;
}

#[tokio::test]
async fn configure_adds_and_removes_services() {
    let orch = LocalOrchestrator::new(
        vec![service("web", vec!["sleep".into(), "30".into()])],
        Arc::new(NoDrain),
    )
    .expect("valid");
    let mut rx = orch.updates();
    let _reset = next(&mut rx).await;
    orch.set_replicas("web", "v1", 1).await.expect("started");
    let web = added(next(&mut rx).await);

    orch.configure(vec![service("api", vec!["sleep".into(), "30".into()])])
        .expect("valid");
    assert_eq!(removed(rx.try_recv().expect("web removed")), web.address);
    assert_eq!(
        rx.try_recv().expect("api announced"),
        Update::Reset {
            service: "api".into(),
            instances: vec![],
        }
    );
    assert_eq!(orch.services(), vec!["api".to_owned()]);
    assert_eq!(orch.replicas("web", "v1"), 0);
    assert!(matches!(
        orch.set_replicas("web", "v1", 1).await,
        Err(OrchestratorError::UnknownService { .. })
    ));
    orch.set_replicas("api", "v1", 1).await.expect("started");
    assert_eq!(added(next(&mut rx).await).version, "v1");

    let err = orch
        .configure(vec![LocalService::new("bad", vec![])])
        .expect_err("invalid");
    assert!(matches!(err, OrchestratorError::InvalidSpec { .. }));
    assert_eq!(orch.services(), vec!["api".to_owned()], "nothing changed");
    shut(&orch).await;
}

#[tokio::test]
async fn a_version_runs_its_own_command_and_reloads_change_it() {
    let scratch = Scratch::new();
    let script = |tag: &str| {
        sh(&format!(
            "echo \"{tag} {{version}}\" > {dir}/{{port}}.tmp && mv {dir}/{{port}}.tmp {dir}/{{port}}; exec sleep 30",
            dir = scratch.dir()
        ))
    };
    let mut spec = service("web", script("stable-command"));
    spec.version_commands
        .insert("beta".into(), script("beta-command"));
    let orch = LocalOrchestrator::new(vec![spec.clone()], Arc::new(NoDrain)).expect("valid");
    let mut rx = orch.updates();
    let _reset = next(&mut rx).await;

    orch.set_replicas("web", "stable", 1)
        .await
        .expect("started");
    orch.set_replicas("web", "beta", 2).await.expect("started");
    let adds: Vec<InstanceInfo> = drain_queue(&mut rx).into_iter().map(added).collect();
    assert_eq!(adds.len(), 3);
    for instance in &adds {
        let written = scratch.read(&instance.address.port().to_string()).await;
        let want = match instance.version.as_str() {
            "beta" => "beta-command beta",
            _ => "stable-command stable",
        };
        assert_eq!(written, want);
    }
    assert_eq!(
        (orch.replicas("web", "stable"), orch.replicas("web", "beta")),
        (1, 2)
    );

    // A reload changes the version's command for instances launched from then on.
    spec.version_commands
        .insert("beta".into(), script("beta-reloaded"));
    orch.configure(vec![spec.clone()]).expect("valid");
    orch.set_replicas("web", "beta", 3).await.expect("started");
    let third = added(next(&mut rx).await);
    assert_eq!(third.version, "beta");
    let written = scratch.read(&third.address.port().to_string()).await;
    assert_eq!(written, "beta-reloaded beta");

    // Zero replicas removes every instance of the version and leaves the others.
    orch.set_replicas("web", "beta", 0).await.expect("ordered");
    let gone: Vec<Update> = drain_queue(&mut rx);
    assert_eq!(gone.len(), 3, "{gone:?}");
    assert!(gone.iter().all(|u| matches!(u, Update::Remove { .. })));
    assert_eq!(orch.replicas("web", "stable"), 1);

    // A version's empty command is refused like the service's.
    spec.version_commands.insert("beta".into(), Vec::new());
    let err = orch.configure(vec![spec]).expect_err("invalid");
    assert!(err.to_string().contains("of version beta"), "{err}");
    shut(&orch).await;
}

#[test]
fn a_child_dies_with_the_thread_that_spawned_it() {
    // PR_SET_PDEATHSIG fires when the spawning *thread* exits. A thread spawns a child, then
    // leaks its runtime and the orchestrator (so no drop or shutdown kills anything) and exits:
    // only the kernel can kill the child now, as when Forecourt is killed with SIGKILL.
    let scratch = Scratch::new();
    let script = format!("echo $$ > {}/pid; exec sleep 30", scratch.dir());
    let spawner = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let pid = runtime.block_on(async {
            let orch = LocalOrchestrator::new(vec![service("web", sh(&script))], Arc::new(NoDrain))
                .expect("valid");
            orch.set_replicas("web", "v1", 1).await.expect("started");
            let pid = scratch.pid("pid").await;
            std::mem::forget(orch);
            pid
        });
        std::mem::forget(runtime);
        pid
    });
    let pid = spawner.join().expect("spawner thread");
    let deadline = std::time::Instant::now() + STEP;
    while alive(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "pid {pid} outlived its parent thread"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
