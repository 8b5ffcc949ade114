//! The `local` backend: instances are child processes on free loopback ports.
//!
//! ```text
//!  set_replicas(svc, v, n) ──► slots (one per ordered replica) ──► one supervisor task per slot
//!                                                                      │
//!    pick 127.0.0.1:0 ─► spawn the version's command ({port} {service} {version}) ─► Update::Add
//!    child exits      ─► Update::Remove, log status + stderr tail ─► back-off ─► spawn again
//!    scale-down       ─► Update::Remove ─► Drain::drained ─► SIGTERM group ─► grace ─► SIGKILL
//!    stdout / stderr  ─► tracing (debug, with service and port)
//! ```
//!
//! Each child runs in its own process group, so stopping an instance also stops whatever it
//! started (`sh -c '...'` and its children). Children are killed with Forecourt: on `shutdown`
//! gracefully, on drop with SIGKILL, and (Linux) by the kernel via `PR_SET_PDEATHSIG` if Forecourt
//! itself is killed. The backend says which instances *exist*; Forecourt's health checker decides
//! which are ready.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use forecourt_config::launch::FORECOURT_PLACEHOLDER;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::backend::{Drain, InstanceInfo, Orchestrator, OrchestratorError, Update};

#[cfg(test)]
mod tests;

/// Stderr lines kept per instance for the crash log.
const STDERR_TAIL_LINES: usize = 20;
/// Longest output line logged; the rest of a longer line is dropped.
const MAX_LINE_BYTES: usize = 4096;
/// An exit this soon after the spawn, with the port now held by someone else, is a port collision.
const COLLISION_WINDOW: Duration = Duration::from_secs(5);
/// Port collisions in a row retried at once before they count as crashes.
const MAX_COLLISIONS: u32 = 5;
/// Shortest restart back-off, whatever the spec says (a zero back-off would spin).
const MIN_BACKOFF: Duration = Duration::from_millis(10);
/// How long to wait for a dead child's output pipes to close.
const OUTPUT_FLUSH: Duration = Duration::from_millis(500);
/// How long to wait for a child to be reaped after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How often to look whether a stopped child's process group is empty.
const GROUP_POLL: Duration = Duration::from_millis(25);

/// The launch specs of every launched service of `policy`, with `{forecourt}` replaced by the
/// running binary.
pub fn local_services(policy: &forecourt_config::Policy) -> Vec<LocalService> {
    let exe = std::env::current_exe()
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| "forecourt".to_owned());
    let fill = |text: &str| text.replace(FORECOURT_PLACEHOLDER, &exe);
    policy
        .services
        .iter()
        .filter_map(|service| {
            let launch = service.launch.as_ref()?;
            let mut local = LocalService::new(
                service.name.clone(),
                launch.command.iter().map(|a| fill(a)).collect(),
            );
            local.env = launch
                .env
                .iter()
                .map(|(k, v)| (k.clone(), fill(v)))
                .collect();
            local.version_commands = service
                .versions
                .iter()
                .filter_map(|v| {
                    let command = v.command.as_ref()?;
                    Some((v.version.clone(), command.iter().map(|a| fill(a)).collect()))
                })
                .collect();
            local.working_dir = launch
                .directory
                .as_deref()
                .map(std::path::Path::to_path_buf);
            local.drain_timeout = launch.drain_timeout;
            local.stop_grace = launch.stop_grace;
            Some(local)
        })
        .collect()
}

/// How to launch one service's instances as local processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalService {
    /// The service's name (also the `{service}` placeholder).
    pub name: String,
    /// Program and arguments; `{port}`, `{service}` and `{version}` are substituted in each.
    pub command: Vec<String>,
    /// Versions with a command of their own (a flagged version's `command:`); every other
    /// version runs `command`.
    pub version_commands: BTreeMap<String, Vec<String>>,
    /// Extra environment variables (placeholders substituted in values); the rest is inherited.
    pub env: Vec<(String, String)>,
    /// Working directory (placeholders substituted); Forecourt's own when `None`.
    pub working_dir: Option<PathBuf>,
    /// Longest wait for in-flight requests to finish before an instance is signalled.
    pub drain_timeout: Duration,
    /// Time between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// First restart delay after a crash; doubles per crash in a row.
    pub restart_backoff: Duration,
    /// Longest restart delay; an instance that stayed up this long resets the back-off.
    pub restart_backoff_max: Duration,
}

// === impl LocalService ===

impl LocalService {
    /// Default for [`LocalService::drain_timeout`].
    pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default for [`LocalService::stop_grace`].
    pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(5);
    /// Default for [`LocalService::restart_backoff`].
    pub const DEFAULT_RESTART_BACKOFF: Duration = Duration::from_millis(500);
    /// Default for [`LocalService::restart_backoff_max`].
    pub const DEFAULT_RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);

    /// A spec with the default timeouts, no extra environment and Forecourt's working directory.
    pub fn new(name: impl Into<String>, command: Vec<String>) -> Self {
        Self {
            name: name.into(),
            command,
            version_commands: BTreeMap::new(),
            env: Vec::new(),
            working_dir: None,
            drain_timeout: Self::DEFAULT_DRAIN_TIMEOUT,
            stop_grace: Self::DEFAULT_STOP_GRACE,
            restart_backoff: Self::DEFAULT_RESTART_BACKOFF,
            restart_backoff_max: Self::DEFAULT_RESTART_BACKOFF_MAX,
        }
    }

    /// The command template instances of `version` run.
    pub fn command_for(&self, version: &str) -> &[String] {
        self.version_commands
            .get(version)
            .map_or(&self.command, |command| command)
    }

    fn validate(&self) -> Result<(), OrchestratorError> {
        let invalid = |reason: String| OrchestratorError::InvalidSpec {
            service: self.name.clone(),
            reason,
        };
        if self.name.is_empty() {
            return Err(invalid("the service name is empty".to_owned()));
        }
        let commands = std::iter::once((None, &self.command))
            .chain(self.version_commands.iter().map(|(v, c)| (Some(v), c)));
        for (version, command) in commands {
            let of = version.map_or(String::new(), |v| format!(" of version {v}"));
            match command.first() {
                None => return Err(invalid(format!("the command{of} is empty"))),
                Some(program) if program.is_empty() => {
                    return Err(invalid(format!("the program name{of} is empty")))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// Replaces `{port}`, `{service}` and `{version}` in `template` (in one pass: substituted text is
/// never substituted again); other braces are left alone.
pub fn substitute(template: &str, service: &str, version: &str, port: u16) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(at) = rest.find('{') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("{port}") {
            out.push_str(&port.to_string());
            rest = after;
        } else if let Some(after) = tail.strip_prefix("{service}") {
            out.push_str(service);
            rest = after;
        } else if let Some(after) = tail.strip_prefix("{version}") {
            out.push_str(version);
            rest = after;
        } else {
            out.push('{');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The delay before restart number `failures` (1 for the first crash in a row): `initial`
/// doubled per crash, capped at `max` (and never below a few milliseconds).
fn restart_delay(initial: Duration, max: Duration, failures: u32) -> Duration {
    let initial = initial.max(MIN_BACKOFF);
    let max = max.max(initial);
    let doublings = failures.saturating_sub(1).min(31);
    initial
        .checked_mul(1u32 << doublings)
        .map_or(max, |delay| delay.min(max))
}

/// An orchestrator that runs instances as child processes of Forecourt.
///
/// Use it from a long-lived runtime: on Linux a child gets SIGKILL when the *thread* that spawned
/// it exits (`PR_SET_PDEATHSIG` is per thread), so never call it from `spawn_blocking` or a
/// short-lived runtime. Call [`Orchestrator::shutdown`] before exiting; dropping it instead kills
/// every child at once with SIGKILL.
pub struct LocalOrchestrator {
    shared: Arc<Shared>,
    /// The supervisors; dropping the orchestrator aborts them, which kills their children.
    tasks: Mutex<JoinSet<()>>,
}

struct Shared {
    state: Mutex<State>,
    drain: Arc<dyn Drain>,
    /// Slots whose supervisor has not finished yet; `shutdown` waits for zero.
    live: watch::Sender<usize>,
}

struct State {
    services: BTreeMap<String, ServiceState>,
    subscribers: Vec<UnboundedSender<Update>>,
    /// Ports handed to instances that may still be running.
    ports: HashSet<u16>,
    next_slot: u64,
    next_launch: u64,
    shutting_down: bool,
}

struct ServiceState {
    spec: Arc<LocalService>,
    ordered: BTreeMap<String, u32>,
    /// Slots still wanted, oldest first; a slot leaves this list when it is told to stop.
    slots: Vec<Slot>,
}

/// One ordered replica: its supervisor keeps a process running for it.
struct Slot {
    id: u64,
    version: String,
    /// Announced with `Add` and not yet removed.
    address: Option<SocketAddr>,
    /// Increases with every launch: the newest instance has the largest.
    launch: u64,
    stop: watch::Sender<bool>,
}

/// Counts a slot as live until its supervisor ends.
struct LiveGuard(Arc<Shared>);

/// A running child process.
struct Running {
    child: Child,
    pgid: u32,
    port: u16,
    spec: Arc<LocalService>,
    started: Instant,
    /// An `Add` was emitted for it.
    published: bool,
    /// Its exit was collected; from then on its pid may be reused and must not be signalled.
    reaped: bool,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    readers: Vec<JoinHandle<()>>,
}

/// Keeps one slot's process running until the slot is told to stop.
struct Supervisor {
    shared: Arc<Shared>,
    service: String,
    version: String,
    slot: u64,
    stop: watch::Receiver<bool>,
    _live: LiveGuard,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the state consistent before it can panic, so a poisoned
    // lock is still usable (and refusing it would leave children unsupervised).
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn emit(subscribers: &mut Vec<UnboundedSender<Update>>, update: Update) {
    subscribers.retain(|tx| tx.send(update.clone()).is_ok());
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Slots of `version` to stop: first those without a running process (in back-off), then the
/// most recently launched (least likely to be ready or warm).
fn pick_victims(slots: &[Slot], version: &str, count: usize) -> Vec<u64> {
    let mut candidates: Vec<&Slot> = slots.iter().filter(|s| s.version == version).collect();
    candidates.sort_by_key(|s| (s.address.is_some(), std::cmp::Reverse(s.launch)));
    candidates.into_iter().take(count).map(|s| s.id).collect()
}

/// Whether someone is listening on (or holds) `port` on loopback.
fn port_taken(port: u16) -> bool {
    let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
        return false;
    };
    // With SO_REUSEADDR only a live listener makes the bind fail, not TIME_WAIT leftovers.
    if socket.set_reuseaddr(true).is_err() {
        return false;
    }
    matches!(socket.bind(loopback(port)), Err(e) if e.kind() == io::ErrorKind::AddrInUse)
}

// === impl LocalOrchestrator ===

impl LocalOrchestrator {
    /// An orchestrator for `services`, draining removed instances through `drain`.
    pub fn new(
        services: Vec<LocalService>,
        drain: Arc<dyn Drain>,
    ) -> Result<Self, OrchestratorError> {
        let specs = validate_all(services)?;
        let services = specs
            .into_iter()
            .map(|spec| {
                let state = ServiceState {
                    spec: Arc::new(spec),
                    ordered: BTreeMap::new(),
                    slots: Vec::new(),
                };
                (state.spec.name.clone(), state)
            })
            .collect();
        let (live, _) = watch::channel(0);
        Ok(Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    services,
                    subscribers: Vec::new(),
                    ports: HashSet::new(),
                    next_slot: 0,
                    next_launch: 0,
                    shutting_down: false,
                }),
                drain,
                live,
            }),
            tasks: Mutex::new(JoinSet::new()),
        })
    }

    /// Whether [`Self::configure`] would take these launch specs, changing nothing.
    pub fn check(&self, services: Vec<LocalService>) -> Result<(), OrchestratorError> {
        validate_all(services)?;
        if self.shared.lock().shutting_down {
            return Err(OrchestratorError::ShuttingDown);
        }
        Ok(())
    }

    /// Applies a new set of launch specs (hot reload). New services are announced with an empty
    /// `Reset`; changed specs apply to instances launched (or restarted) from now on; removed
    /// services have every instance removed, drained and stopped in the background. Nothing
    /// changes when a spec is invalid.
    pub fn configure(&self, services: Vec<LocalService>) -> Result<(), OrchestratorError> {
        let specs = validate_all(services)?;
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        if state.shutting_down {
            return Err(OrchestratorError::ShuttingDown);
        }
        let names: HashSet<String> = specs.iter().map(|s| s.name.clone()).collect();
        let removed: Vec<String> = state
            .services
            .keys()
            .filter(|name| !names.contains(*name))
            .cloned()
            .collect();
        for name in removed {
            let Some(service) = state.services.remove(&name) else {
                continue;
            };
            tracing::info!(service = %name, "service removed, stopping its instances");
            for slot in service.slots {
                stop_slot(&mut state.subscribers, &name, slot);
            }
        }
        for spec in specs {
            match state.services.get_mut(&spec.name) {
                Some(service) => {
                    if *service.spec != spec {
                        tracing::info!(service = %spec.name, "launch spec changed");
                        service.spec = Arc::new(spec);
                    }
                }
                None => {
                    let name = spec.name.clone();
                    state.services.insert(
                        name.clone(),
                        ServiceState {
                            spec: Arc::new(spec),
                            ordered: BTreeMap::new(),
                            slots: Vec::new(),
                        },
                    );
                    emit(
                        &mut state.subscribers,
                        Update::Reset {
                            service: name,
                            instances: Vec::new(),
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// Services this backend can launch, sorted by name.
    pub fn services(&self) -> Vec<String> {
        self.shared.lock().services.keys().cloned().collect()
    }

    fn spawn_supervisor(&self, supervisor: Supervisor, first: Option<Running>, failures: u32) {
        let mut tasks = lock(&self.tasks);
        while tasks.try_join_next().is_some() {}
        tasks.spawn(supervisor.run(first, failures));
    }
}

fn validate_all(services: Vec<LocalService>) -> Result<Vec<LocalService>, OrchestratorError> {
    let mut seen = HashSet::new();
    for spec in &services {
        spec.validate()?;
        if !seen.insert(spec.name.as_str()) {
            return Err(OrchestratorError::InvalidSpec {
                service: spec.name.clone(),
                reason: "the service is configured twice".to_owned(),
            });
        }
    }
    Ok(services)
}

/// Tells a slot's supervisor to stop, announcing the removal first.
fn stop_slot(subscribers: &mut Vec<UnboundedSender<Update>>, service: &str, slot: Slot) {
    if let Some(address) = slot.address {
        emit(
            subscribers,
            Update::Remove {
                service: service.to_owned(),
                address,
            },
        );
    }
    slot.stop.send_replace(true);
}

impl std::fmt::Debug for LocalOrchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("LocalOrchestrator")
            .field("services", &state.services.keys().collect::<Vec<_>>())
            .field("shutting_down", &state.shutting_down)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Orchestrator for LocalOrchestrator {
    fn kind(&self) -> &'static str {
        "local"
    }

    async fn set_replicas(
        &self,
        service: &str,
        version: &str,
        replicas: u32,
    ) -> Result<(), OrchestratorError> {
        // No await in here: the order is applied completely or not at all, even if the caller's
        // future is dropped.
        let (spec, new_slots) = {
            let mut guard = self.shared.lock();
            let state = &mut *guard;
            if state.shutting_down {
                return Err(OrchestratorError::ShuttingDown);
            }
            let entry = state.services.get_mut(service).ok_or_else(|| {
                OrchestratorError::UnknownService {
                    service: service.to_owned(),
                }
            })?;
            let previous = entry.ordered.get(version).copied().unwrap_or(0);
            if replicas == 0 {
                entry.ordered.remove(version);
            } else {
                entry.ordered.insert(version.to_owned(), replicas);
            }
            if previous != replicas {
                tracing::info!(
                    service,
                    version,
                    from = previous,
                    to = replicas,
                    "replicas ordered"
                );
            }
            let active = entry.slots.iter().filter(|s| s.version == version).count();
            let wanted = usize::try_from(replicas).unwrap_or(usize::MAX);
            let mut new_slots = Vec::new();
            if active < wanted {
                for _ in active..wanted {
                    let id = state.next_slot;
                    state.next_slot += 1;
                    let (stop, stop_rx) = watch::channel(false);
                    entry.slots.push(Slot {
                        id,
                        version: version.to_owned(),
                        address: None,
                        launch: 0,
                        stop,
                    });
                    self.shared.live.send_modify(|n| *n += 1);
                    new_slots.push(Supervisor {
                        shared: self.shared.clone(),
                        service: service.to_owned(),
                        version: version.to_owned(),
                        slot: id,
                        stop: stop_rx,
                        _live: LiveGuard(self.shared.clone()),
                    });
                }
            } else if active > wanted {
                for id in pick_victims(&entry.slots, version, active - wanted) {
                    if let Some(at) = entry.slots.iter().position(|s| s.id == id) {
                        let slot = entry.slots.remove(at);
                        stop_slot(&mut state.subscribers, service, slot);
                    }
                }
            }
            (entry.spec.clone(), new_slots)
        };
        let mut first_error = None;
        for supervisor in new_slots {
            match supervisor.start(&spec) {
                Ok(run) => self.spawn_supervisor(supervisor, Some(run), 0),
                Err(e) => {
                    // Returned to the caller (the first one) rather than logged; the
                    // supervisor logs its retries.
                    first_error.get_or_insert(e);
                    self.spawn_supervisor(supervisor, None, 1);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn replicas(&self, service: &str, version: &str) -> u32 {
        let state = self.shared.lock();
        state
            .services
            .get(service)
            .and_then(|s| s.ordered.get(version).copied())
            .unwrap_or(0)
    }

    fn updates(&self) -> UnboundedReceiver<Update> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self.shared.lock();
        if state.shutting_down {
            return rx;
        }
        for (name, service) in &state.services {
            let instances = service
                .slots
                .iter()
                .filter_map(|slot| {
                    slot.address.map(|address| InstanceInfo {
                        address,
                        version: slot.version.clone(),
                    })
                })
                .collect();
            let _ = tx.send(Update::Reset {
                service: name.clone(),
                instances,
            });
        }
        state.subscribers.push(tx);
        rx
    }

    async fn shutdown(&self) {
        {
            let mut guard = self.shared.lock();
            let state = &mut *guard;
            if !state.shutting_down {
                tracing::info!("stopping every local instance");
            }
            state.shutting_down = true;
            for (name, service) in &mut state.services {
                service.ordered.clear();
                for slot in service.slots.drain(..) {
                    stop_slot(&mut state.subscribers, name, slot);
                }
            }
        }
        // Every slot was created under the lock before `shutting_down` was set, so waiting for
        // the live count covers supervisors a concurrent `set_replicas` is still spawning.
        let mut live = self.shared.live.subscribe();
        let _ = live.wait_for(|n| *n == 0).await;
        let mut tasks = std::mem::take(&mut *lock(&self.tasks));
        while let Some(result) = tasks.join_next().await {
            if let Err(e) = result {
                tracing::error!(error = %e, "an instance supervisor failed");
            }
        }
        self.shared.lock().subscribers.clear();
    }
}

// === impl Shared ===

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Reserves a free loopback port: bind port 0, note the port, release it for the child.
    fn reserve_port(&self, service: &str) -> Result<u16, OrchestratorError> {
        let mut last = io::Error::new(io::ErrorKind::AddrInUse, "every picked port was in use");
        for _ in 0..16 {
            let port = match TcpListener::bind(loopback(0)).and_then(|l| l.local_addr()) {
                Ok(address) => address.port(),
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            if self.lock().ports.insert(port) {
                return Ok(port);
            }
        }
        Err(OrchestratorError::NoFreePort {
            service: service.to_owned(),
            source: last,
        })
    }

    fn release_port(&self, port: u16) {
        self.lock().ports.remove(&port);
    }

    fn spec(&self, service: &str) -> Option<Arc<LocalService>> {
        self.lock().services.get(service).map(|s| s.spec.clone())
    }

    /// Announces a slot's new instance; false when the slot is no longer wanted.
    fn publish(&self, service: &str, slot: u64, instance: InstanceInfo) -> bool {
        let mut guard = self.lock();
        let state = &mut *guard;
        if state.shutting_down {
            return false;
        }
        let Some(entry) = state.services.get_mut(service) else {
            return false;
        };
        let Some(slot) = entry.slots.iter_mut().find(|s| s.id == slot) else {
            return false;
        };
        state.next_launch += 1;
        slot.launch = state.next_launch;
        slot.address = Some(instance.address);
        emit(
            &mut state.subscribers,
            Update::Add {
                service: service.to_owned(),
                instance,
            },
        );
        true
    }

    /// Announces that a slot's instance is gone (if it was announced and not removed already).
    fn unpublish(&self, service: &str, slot: u64) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(entry) = state.services.get_mut(service) else {
            return;
        };
        let Some(slot) = entry.slots.iter_mut().find(|s| s.id == slot) else {
            return;
        };
        if let Some(address) = slot.address.take() {
            emit(
                &mut state.subscribers,
                Update::Remove {
                    service: service.to_owned(),
                    address,
                },
            );
        }
    }
}

// === impl LiveGuard ===

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live.send_modify(|n| *n = n.saturating_sub(1));
    }
}

// === impl Supervisor ===

impl Supervisor {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Picks a port, spawns the process and announces it.
    fn start(&self, spec: &Arc<LocalService>) -> Result<Running, OrchestratorError> {
        let port = self.shared.reserve_port(&self.service)?;
        match launch(spec, &self.version, port) {
            Ok(mut run) => {
                tracing::info!(service = %self.service, version = %self.version, port, pid = run.pgid, "instance started");
                run.published = self.shared.publish(
                    &self.service,
                    self.slot,
                    InstanceInfo {
                        address: loopback(port),
                        version: self.version.clone(),
                    },
                );
                Ok(run)
            }
            Err(source) => {
                self.shared.release_port(port);
                Err(OrchestratorError::Spawn {
                    service: self.service.clone(),
                    version: self.version.clone(),
                    port,
                    source,
                })
            }
        }
    }

    /// Sleeps for `delay`; true when told to stop meanwhile.
    async fn sleep_or_stop(&mut self, delay: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(delay) => self.stopping(),
            () = stopped(&mut self.stop) => true,
        }
    }

    async fn run(mut self, mut current: Option<Running>, mut failures: u32) {
        let mut collisions = 0;
        let mut delay = match (failures, self.shared.spec(&self.service)) {
            (0, _) | (_, None) => Duration::ZERO,
            (n, Some(spec)) => restart_delay(spec.restart_backoff, spec.restart_backoff_max, n),
        };
        loop {
            let mut run = match current.take() {
                Some(run) => run,
                None => {
                    if !delay.is_zero() && self.sleep_or_stop(delay).await {
                        return;
                    }
                    if self.stopping() {
                        return;
                    }
                    // Read the spec again: a reload may have changed it.
                    let Some(spec) = self.shared.spec(&self.service) else {
                        return;
                    };
                    match self.start(&spec) {
                        Ok(run) => run,
                        Err(e) => {
                            failures = failures.saturating_add(1);
                            delay = restart_delay(
                                spec.restart_backoff,
                                spec.restart_backoff_max,
                                failures,
                            );
                            tracing::error!(service = %self.service, version = %self.version, error = %e, "failed to start an instance, retrying in {delay:?}");
                            continue;
                        }
                    }
                }
            };
            if !run.published {
                // The slot was given up between the spawn and the announcement.
                stop_instance(&self.shared, &self.service, run, false).await;
                return;
            }
            let exit = tokio::select! {
                status = run.child.wait() => Some(status),
                () = stopped(&mut self.stop) => None,
            };
            match exit {
                Some(status) => {
                    run.reaped = status.is_ok();
                    match self
                        .exited(run, status, &mut failures, &mut collisions)
                        .await
                    {
                        Some(next) => delay = next,
                        None => return,
                    }
                }
                None => {
                    stop_instance(&self.shared, &self.service, run, true).await;
                    return;
                }
            }
        }
    }

    /// Handles an unexpected exit: announce, log, clean up. Returns the delay before the restart,
    /// or `None` when the slot is no longer wanted.
    async fn exited(
        &mut self,
        mut run: Running,
        status: io::Result<ExitStatus>,
        failures: &mut u32,
        collisions: &mut u32,
    ) -> Option<Duration> {
        let uptime = run.started.elapsed();
        self.shared.unpublish(&self.service, self.slot);
        if !run.reaped {
            let _ = run.child.start_kill();
        }
        // Whatever the child left behind in its group goes with it.
        sys::signal_group(run.pgid, libc::SIGKILL);
        let tail = run.finish_output().await;
        self.shared.release_port(run.port);
        let status = match &status {
            Ok(status) => status.to_string(),
            Err(e) => format!("unknown ({e})"),
        };
        if self.stopping() {
            tracing::info!(service = %self.service, version = %self.version, port = run.port, %status, "instance exited while stopping");
            return None;
        }
        if uptime < COLLISION_WINDOW && *collisions < MAX_COLLISIONS && port_taken(run.port) {
            *collisions += 1;
            tracing::warn!(service = %self.service, version = %self.version, port = run.port, %status, "instance exited early and its port is taken by another process, retrying on a new port");
            return Some(Duration::ZERO);
        }
        *collisions = 0;
        if uptime >= run.spec.restart_backoff_max {
            *failures = 0;
        }
        *failures = failures.saturating_add(1);
        let delay = restart_delay(
            run.spec.restart_backoff,
            run.spec.restart_backoff_max,
            *failures,
        );
        tracing::warn!(
            service = %self.service,
            version = %self.version,
            port = run.port,
            pid = run.pgid,
            %status,
            uptime_ms = u64::try_from(uptime.as_millis()).unwrap_or(u64::MAX),
            stderr = %tail.join("\n"),
            "instance exited unexpectedly, restarting in {delay:?}"
        );
        Some(delay)
    }
}

/// Resolves once the slot is told to stop (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Drains (when announced), then SIGTERM, grace, SIGKILL; releases the port.
async fn stop_instance(shared: &Shared, service: &str, mut run: Running, drain: bool) {
    let address = loopback(run.port);
    if drain {
        let timeout = run.spec.drain_timeout;
        let exited = tokio::select! {
            _ = tokio::time::timeout(timeout, shared.drain.drained(service, address, timeout)) => None,
            status = run.child.wait() => Some(status.is_ok()),
        };
        // The child died while draining: nothing left to drain.
        if exited == Some(true) {
            run.reaped = true;
        }
    }
    let status = terminate(&mut run).await;
    let _ = run.finish_output().await;
    shared.release_port(run.port);
    tracing::info!(service, port = run.port, pid = run.pgid, status = %status, "instance stopped");
}

/// SIGTERM to the group, up to the grace for it to go, then SIGKILL; returns the exit status.
async fn terminate(run: &mut Running) -> String {
    let deadline = Instant::now() + run.spec.stop_grace;
    let mut status = String::from("exited before it was signalled");
    if !run.reaped {
        if let Ok(Some(exit)) = run.child.try_wait() {
            run.reaped = true;
            status = exit.to_string();
        }
    }
    if !run.reaped {
        sys::signal_group(run.pgid, libc::SIGTERM);
        match tokio::time::timeout_at(deadline, run.child.wait()).await {
            Ok(Ok(exit)) => {
                run.reaped = true;
                status = exit.to_string();
            }
            Ok(Err(e)) => status = format!("unknown ({e})"),
            Err(_) => {
                tracing::warn!(port = run.port, pid = run.pgid, grace = ?run.spec.stop_grace, "instance ignored SIGTERM, sending SIGKILL");
                status = "killed after the grace period".to_owned();
            }
        }
    }
    if !run.reaped {
        sys::signal_group(run.pgid, libc::SIGKILL);
        let _ = run.child.start_kill();
        match tokio::time::timeout(KILL_WAIT, run.child.wait()).await {
            Ok(Ok(_)) => run.reaped = true,
            Ok(Err(e)) => {
                tracing::warn!(port = run.port, error = %e, "failed to reap a killed instance")
            }
            Err(_) => tracing::warn!(
                port = run.port,
                pid = run.pgid,
                "a killed instance did not exit"
            ),
        }
    }
    // The leader is gone; the rest of its group gets what is left of the grace, then SIGKILL.
    while Instant::now() < deadline && sys::signal_group(run.pgid, 0) {
        tokio::time::sleep(GROUP_POLL).await;
    }
    sys::signal_group(run.pgid, libc::SIGKILL);
    status
}

/// Spawns one instance of `version` of `spec` on `port`.
fn launch(spec: &Arc<LocalService>, version: &str, port: u16) -> io::Result<Running> {
    let service = spec.name.as_str();
    let argv: Vec<String> = spec
        .command_for(version)
        .iter()
        .map(|arg| substitute(arg, service, version, port))
        .collect();
    let Some((program, args)) = argv.split_first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(
            spec.env
                .iter()
                .map(|(key, value)| (key, substitute(value, service, version, port))),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    if let Some(dir) = &spec.working_dir {
        match dir.to_str() {
            Some(dir) => command.current_dir(substitute(dir, service, version, port)),
            None => command.current_dir(dir),
        };
    }
    sys::kill_with_parent(&mut command);
    let mut child = command.spawn()?;
    let Some(pid) = child.id() else {
        return Err(io::Error::other("the child exited before its pid was read"));
    };
    let stderr_tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL_LINES)));
    let mut readers = Vec::with_capacity(2);
    let name: Arc<str> = Arc::from(service);
    if let Some(stdout) = child.stdout.take() {
        readers.push(tokio::spawn(pump(
            stdout,
            name.clone(),
            port,
            "stdout",
            None,
        )));
    }
    if let Some(stderr) = child.stderr.take() {
        readers.push(tokio::spawn(pump(
            stderr,
            name,
            port,
            "stderr",
            Some(stderr_tail.clone()),
        )));
    }
    Ok(Running {
        child,
        pgid: pid,
        port,
        spec: spec.clone(),
        started: Instant::now(),
        published: false,
        reaped: false,
        stderr_tail,
        readers,
    })
}

/// Logs a child's output line by line at debug; keeps the last stderr lines in `tail`.
async fn pump<R: AsyncRead + Unpin>(
    output: R,
    service: Arc<str>,
    port: u16,
    stream: &'static str,
    tail: Option<Arc<Mutex<VecDeque<String>>>>,
) {
    let mut reader = BufReader::new(output);
    let mut line = Vec::new();
    loop {
        line.clear();
        match read_line_limited(&mut reader, &mut line, MAX_LINE_BYTES).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        let text = String::from_utf8_lossy(&line);
        tracing::debug!(service = %service, port, stream, "{text}");
        if let Some(tail) = &tail {
            let mut tail = lock(tail);
            if tail.len() == STDERR_TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(text.into_owned());
        }
    }
}

/// Reads one line into `buf`, keeping at most `max` bytes of it; returns the bytes consumed
/// (0 at the end of the stream).
async fn read_line_limited<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<usize> {
    let mut consumed = 0;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(consumed);
        }
        let (used, done) = match available.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (available.len(), false),
        };
        let room = max.saturating_sub(buf.len());
        buf.extend_from_slice(&available[..used.min(room)]);
        reader.consume(used);
        consumed += used;
        if done {
            return Ok(consumed);
        }
    }
}

// === impl Running ===

impl Running {
    /// Waits briefly for the output pipes to close and returns the last stderr lines.
    async fn finish_output(&mut self) -> Vec<String> {
        for reader in &mut self.readers {
            let _ = tokio::time::timeout(OUTPUT_FLUSH, reader).await;
        }
        lock(&self.stderr_tail).iter().cloned().collect()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Dropped without being stopped (the orchestrator itself was dropped, or a task was
        // aborted): kill the whole group, not only the leader `kill_on_drop` takes care of.
        if !self.reaped {
            sys::signal_group(self.pgid, libc::SIGKILL);
        }
    }
}

/// The only unsafe code of the crate: two system calls around child processes.
#[allow(unsafe_code)]
mod sys {
    use std::io;

    use tokio::process::Command;

    /// Linux: makes the child get SIGKILL when the thread that spawned it dies (so Forecourt
    /// killed with SIGKILL leaves no orphan), and refuses to exec if Forecourt already died.
    pub(super) fn kill_with_parent(command: &mut Command) {
        #[cfg(target_os = "linux")]
        {
            let parent = std::process::id();
            // SAFETY: the closure runs in the forked child before exec, where only
            // async-signal-safe operations are allowed. It only makes the prctl(2) and
            // getppid(2) system calls and builds `io::Error`s from raw errno values (no
            // allocation, no locks, no shared memory).
            unsafe {
                command.pre_exec(move || {
                    const UNUSED: libc::c_ulong = 0;
                    let signal = libc::SIGKILL as libc::c_ulong;
                    if libc::prctl(libc::PR_SET_PDEATHSIG, signal, UNUSED, UNUSED, UNUSED) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    // prctl(2): the parent may have died before the call; then we were
                    // re-parented and no signal will ever come.
                    if u32::try_from(libc::getppid()).ok() != Some(parent) {
                        return Err(io::Error::from_raw_os_error(libc::ESRCH));
                    }
                    Ok(())
                });
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = command;
    }

    /// Sends `signal` (0 only checks) to every process in group `pgid`; false when none got it.
    pub(super) fn signal_group(pgid: u32, signal: libc::c_int) -> bool {
        let Ok(pgid) = libc::pid_t::try_from(pgid) else {
            return false;
        };
        // Never 0 or 1: kill(0, ..) is our own group and kill(-1, ..) is every process.
        if pgid <= 1 {
            return false;
        }
        // SAFETY: kill(2) takes plain integers and has no memory-safety preconditions; the
        // negative pid targets only the process group created for one child with
        // `process_group(0)`, whose leader's pid is `pgid`.
        unsafe { libc::kill(-pgid, signal) == 0 }
    }
}
