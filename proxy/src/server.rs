//! Assembles the Pingora server: the proxy listener, the admin API and the health checkers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use forecourt_orchestrator::ForecastLoop;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};

use crate::state::FrontDoor;

/// How to run the proxy process.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// Take over the listening sockets of a running Forecourt (graceful upgrade).
    pub upgrade: bool,
}

/// Runs the health checker of every service of the current snapshot.
struct HealthChecks(Arc<FrontDoor>);

#[async_trait]
impl BackgroundService for HealthChecks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let snapshot = self.0.snapshot();
        let mut tasks = tokio::task::JoinSet::new();
        for service in &snapshot.services {
            tasks.spawn(forecourt_orchestrator::check_service(
                service.instances.clone(),
                service.config.health_check.clone(),
                shutdown.clone(),
            ));
        }
        let _ = shutdown.changed().await;
        tasks.shutdown().await;
    }
}

/// The control loop: once a second, just after each second closes, feed the forecasts.
struct ControlLoop(Arc<FrontDoor>);

/// How long after a second boundary the loop ticks, so that second is closed for every worker.
const TICK_OFFSET_MS: u64 = 20;

#[async_trait]
impl BackgroundService for ControlLoop {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let front_door = &self.0;
        let snapshot = front_door.snapshot();
        let mut forecasts = ForecastLoop::new(
            snapshot.predictor.clone(),
            &snapshot.policy.forecast,
            front_door.forecasts.clone(),
        );
        drop(snapshot);
        loop {
            let now = front_door.clock.now_ms();
            let wait = 1_000 - now % 1_000 + TICK_OFFSET_MS;
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(wait)) => {}
                _ = shutdown.changed() => return,
            }
            let snapshot = front_door.snapshot();
            forecasts.tick(
                &snapshot.predictor,
                &snapshot.policy.forecast,
                &front_door.events,
                front_door.clock.now_ms(),
            );
        }
    }
}

/// Serves the admin API on a listener bound before the server starts.
struct AdminApi {
    front_door: Arc<FrontDoor>,
    listener: Mutex<Option<std::net::TcpListener>>,
}

#[async_trait]
impl BackgroundService for AdminApi {
    async fn start(&self, shutdown: ShutdownWatch) {
        let listener = self.listener.lock().ok().and_then(|mut l| l.take());
        if let Some(listener) = listener {
            crate::admin::serve(self.front_door.clone(), listener, shutdown).await;
        }
    }
}

/// Builds the Pingora server for `front_door`; the caller runs it.
pub fn build(front_door: Arc<FrontDoor>, options: &ServerOptions) -> anyhow::Result<Server> {
    let snapshot = front_door.snapshot();
    let listeners = snapshot.policy.listeners.clone();
    // Bind the admin listener now so a taken port is a clear start-up error.
    let admin = std::net::TcpListener::bind(listeners.admin)
        .with_context(|| format!("unable to bind the admin listener {}", listeners.admin))?;
    if !options.upgrade {
        // Pingora binds the proxy listener later; check it now for the same reason.
        drop(
            std::net::TcpListener::bind(listeners.proxy).with_context(|| {
                format!("unable to bind the proxy listener {}", listeners.proxy)
            })?,
        );
    }

    let conf = ServerConf {
        threads: options.threads.max(1),
        // Measured faster off on two cores: each worker keeps its own connections.
        work_stealing: false,
        upstream_keepalive_pool_size: 1024,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(10),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: options.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        crate::proxy::Ingress(front_door.clone()),
        "forecourt proxy",
    );
    proxy.add_tcp(&listeners.proxy.to_string());
    server.add_service(proxy);
    server.add_service(background_service(
        "health checks",
        HealthChecks(front_door.clone()),
    ));
    server.add_service(background_service(
        "control loop",
        ControlLoop(front_door.clone()),
    ));
    server.add_service(background_service(
        "admin api",
        AdminApi {
            front_door,
            listener: Mutex::new(Some(admin)),
        },
    ));
    Ok(server)
}
