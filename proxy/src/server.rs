//! Assembles the Pingora server: the proxy listener, the admin API and the health checkers.

use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use async_trait::async_trait;
use forecourt_config::{HealthCheck, WarmConfig};
use forecourt_orchestrator::{ServiceInstances, WarmInstance};
use pingora::apps::HttpServerApp;
use pingora::listeners::ListenerConfig;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;

use crate::keepalive::{HeaderLimits, KeepAliveApp};
use crate::state::FrontDoor;
use crate::warm::ServiceWarmer;

/// How to run the proxy process.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// Take over the listening sockets of a running Forecourt (graceful upgrade).
    pub upgrade: bool,
    /// The server is the process: on SIGTERM it waits for requests in flight (up to
    /// `limits.drain_timeout`) and exits the process once they are done. False when embedded
    /// (the demo), whose caller stops its own traffic first and needs `run` to return.
    pub exit_when_drained: bool,
}

/// Runs one health checker per service of the current snapshot, and follows reloads: new
/// services get a checker, removed ones lose theirs, a changed health check restarts it.
struct HealthChecks(Arc<FrontDoor>);

#[async_trait]
impl BackgroundService for HealthChecks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        /// A running checker: whom it checks, with which settings, and how to stop it.
        struct Checker {
            instances: Arc<ServiceInstances>,
            check: HealthCheck,
            warm: Option<WarmConfig>,
            handle: tokio::task::AbortHandle,
        }
        let mut generations = self.0.config.subscribe();
        let mut tasks = tokio::task::JoinSet::new();
        let mut running: Vec<Checker> = Vec::new();
        loop {
            let snapshot = self.0.snapshot();
            running.retain(|c| {
                let keep = snapshot.services.iter().any(|s| {
                    Arc::ptr_eq(&s.instances, &c.instances)
                        && s.config.health_check == c.check
                        && s.config.warm == c.warm
                });
                if !keep {
                    c.handle.abort();
                }
                keep
            });
            for service in &snapshot.services {
                if running
                    .iter()
                    .any(|c| Arc::ptr_eq(&c.instances, &service.instances))
                {
                    continue;
                }
                let warm = service.config.warm.clone().map(|config| {
                    Arc::new(ServiceWarmer {
                        config,
                        hot_keys: service.hot_keys.clone(),
                        metrics: Arc::clone(&service.warm_metrics),
                    }) as Arc<dyn WarmInstance>
                });
                let handle = tasks.spawn(forecourt_orchestrator::check_service(
                    service.instances.clone(),
                    service.config.health_check.clone(),
                    shutdown.clone(),
                    warm,
                ));
                running.push(Checker {
                    instances: service.instances.clone(),
                    check: service.config.health_check.clone(),
                    warm: service.config.warm.clone(),
                    handle,
                });
            }
            drop(snapshot);
            tokio::select! {
                changed = generations.changed() => if changed.is_err() { break },
                _ = shutdown.changed() => break,
                Some(_) = tasks.join_next() => {}
            }
        }
        tasks.shutdown().await;
    }
}

/// After a graceful shutdown starts (SIGTERM), ends the process as soon as no request is in
/// flight and the launched instances are stopped, instead of waiting out the whole drain
/// timeout. Pingora cuts whatever is left when the drain timeout ends.
struct DrainWatcher(Arc<FrontDoor>);

#[async_trait]
impl BackgroundService for DrainWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use std::sync::atomic::Ordering::Acquire;
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                return;
            }
        }
        let started = std::time::Instant::now();
        loop {
            let idle = self.0.in_flight.in_flight() == 0;
            if idle && self.0.instances_stopped.load(Acquire) {
                tracing::info!(after = ?started.elapsed(), "drained: exiting");
                std::process::exit(0);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// Refreshes hot cached entries before they expire, once a second, and ages the hot-key counts
/// once a minute so the ranking follows the workload.
struct CacheRefresher(Arc<FrontDoor>);

#[async_trait]
impl BackgroundService for CacheRefresher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut ticker = tokio::time::interval(std::time::Duration::from_secs(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.changed() => break,
            }
            crate::caching::refresh_tick(&self.0).await;
            ticks += 1;
            if ticks.is_multiple_of(60) {
                for service in &self.0.snapshot().services {
                    if let Some(hot) = &service.hot_keys {
                        hot.decay();
                    }
                }
            }
        }
    }
}

/// Serves the admin API on a listener bound before the server starts, or (in a graceful
/// upgrade) bound as soon as the previous process releases the address.
struct AdminApi {
    front_door: Arc<FrontDoor>,
    listener: Mutex<Option<std::net::TcpListener>>,
    address: std::net::SocketAddr,
}

#[async_trait]
impl BackgroundService for AdminApi {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let bound = self.listener.lock().ok().and_then(|mut l| l.take());
        let listener = match bound {
            Some(listener) => listener,
            None => loop {
                match std::net::TcpListener::bind(self.address) {
                    Ok(listener) => break listener,
                    Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
                        tokio::select! {
                            () = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                            _ = shutdown.changed() => return,
                        }
                    }
                    Err(error) => {
                        tracing::error!(address = %self.address, %error, "unable to bind the admin listener");
                        return;
                    }
                }
            },
        };
        crate::admin::serve(self.front_door.clone(), listener, shutdown).await;
    }
}

/// Bytes of a downstream connection's L4 write buffer: one segment, so a response header and a
/// small body leave in one `send`.
const DOWNSTREAM_WRITE_BUFFER: usize = 1460;

/// The proxy listener at `addr`, with no L4 read buffer on its connections.
///
/// Pingora's default puts a 64 KiB read buffer (zeroed at accept) in front of every downstream
/// connection. The HTTP/1 layer reads the request header into its own 4 KiB buffer and bodies
/// into their own, so that buffer only adds a copy and holds 64 KiB per idle keep-alive
/// connection. Measured in `benches/compare`: see its README.
pub fn proxy_listener(addr: &str) -> ListenerConfig {
    ListenerConfig::tcp(addr).l4_buffer(L4BufferSettings::new(0, DOWNSTREAM_WRITE_BUFFER))
}

/// A listening service that serves `app` (a Pingora proxy) on `addr`, holding only the socket
/// while a keep-alive connection waits and bounding each request header's arrival by `limits`
/// (see [`KeepAliveApp`]).
pub fn proxy_service<A>(
    name: &str,
    app: A,
    addr: &str,
    limits: Arc<dyn HeaderLimits>,
) -> Service<KeepAliveApp<A>>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    let app = KeepAliveApp {
        app: Arc::new(app),
        limits,
    };
    let mut service = Service::new(name.to_string(), app);
    service.add_listener(proxy_listener(addr));
    service
}

/// Where a running Forecourt on `proxy` hands its listening socket to its successor
/// (`forecourt run --upgrade`, then SIGQUIT to the old process).
pub fn upgrade_socket(proxy: std::net::SocketAddr) -> String {
    std::env::temp_dir()
        .join(format!("forecourt-upgrade-{}.sock", proxy.port()))
        .display()
        .to_string()
}

/// Pingora's server settings for `threads` workers: no work stealing, a large upstream pool.
pub fn server_conf(threads: usize) -> ServerConf {
    ServerConf {
        threads: threads.max(1),
        // Measured faster off on two cores: each worker keeps its own connections.
        work_stealing: false,
        upstream_keepalive_pool_size: 1024,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(10),
        ..ServerConf::default()
    }
}

/// Builds the Pingora server for `front_door`; the caller runs it.
pub fn build(front_door: Arc<FrontDoor>, options: &ServerOptions) -> anyhow::Result<Server> {
    let snapshot = front_door.snapshot();
    let listeners = snapshot.policy.listeners.clone();
    // Bind the admin listener now so a taken port is a clear start-up error. In a graceful
    // upgrade the old process still holds it: the admin API binds it once that one lets go.
    let admin = if options.upgrade {
        None
    } else {
        Some(
            std::net::TcpListener::bind(listeners.admin).with_context(|| {
                format!("unable to bind the admin listener {}", listeners.admin)
            })?,
        )
    };
    if !options.upgrade {
        // Pingora binds the proxy listener later; check it now for the same reason.
        drop(
            std::net::TcpListener::bind(listeners.proxy).with_context(|| {
                format!("unable to bind the proxy listener {}", listeners.proxy)
            })?,
        );
    }

    let mut conf = server_conf(options.threads);
    if options.exit_when_drained {
        // SIGTERM: Pingora stops accepting, then waits this long before cutting what is left;
        // the drain watcher ends the process as soon as nothing is in flight.
        conf.grace_period_seconds =
            Some(snapshot.policy.limits.drain_timeout.as_secs_f64().ceil() as u64);
    }
    // One upgrade socket per proxy address, so Forecourts on one host upgrade independently.
    conf.upgrade_sock = upgrade_socket(listeners.proxy);
    let opt = Opt {
        upgrade: options.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let proxy = pingora::proxy::http_proxy(
        &server.configuration,
        crate::proxy::Ingress(front_door.clone()),
    );
    server.add_service(proxy_service(
        "forecourt proxy",
        proxy,
        &listeners.proxy.to_string(),
        front_door.clone(),
    ));
    server.add_service(background_service(
        "health checks",
        HealthChecks(front_door.clone()),
    ));
    server.add_service(background_service(
        "control loop",
        crate::control::ControlLoop(front_door.clone()),
    ));
    if options.exit_when_drained {
        server.add_service(background_service(
            "drain watcher",
            DrainWatcher(front_door.clone()),
        ));
    }
    server.add_service(background_service(
        "cache refresher",
        CacheRefresher(front_door.clone()),
    ));
    server.add_service(background_service(
        "policy watcher",
        crate::reload::PolicyWatcher(front_door.clone()),
    ));
    server.add_service(background_service(
        "admin api",
        AdminApi {
            front_door,
            listener: Mutex::new(admin),
            address: listeners.admin,
        },
    ));
    Ok(server)
}
