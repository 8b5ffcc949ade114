//! The proxy process's background services: health checkers, the control loop, the policy
//! watcher, cache refresh-ahead, the admin API and the drain watcher. Each is a thin shell over
//! the code that does the work, started and stopped with the Pingora server.

use std::sync::{Arc, Mutex};

use ahash::AHashMap;
use async_trait::async_trait;
use forecourt_config::{HealthCheck, PolicyFileWatch, WarmConfig};
use forecourt_orchestrator::{ControlHost, ServiceInstances, WarmInstance};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::front_door::FrontDoor;
use crate::reload::WATCH_INTERVAL;
use crate::warm::ServiceWarmer;

/// Runs one health checker per service of the current snapshot, all sharing their probes (one
/// per instance address), and follows reloads: new services get a checker, removed ones lose
/// theirs, a changed health check restarts it.
pub(super) struct HealthChecks(pub(super) Arc<FrontDoor>);

#[async_trait]
impl BackgroundService for HealthChecks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        /// A running checker: whom it checks, with which settings, and how to stop it.
        struct Checker {
            /// Held so that its address, the checker's key, stays unique while it runs.
            _instances: Arc<ServiceInstances>,
            check: HealthCheck,
            warm: Option<WarmConfig>,
            handle: tokio::task::AbortHandle,
        }
        let mut generations = self.0.config.subscribe();
        let mut tasks = tokio::task::JoinSet::new();
        // By the address of the instance set each checks (a checker holds it, so the address
        // is unique while it runs): a reload of 10,000 services is linear, not quadratic.
        let mut running: AHashMap<usize, Checker> = AHashMap::new();
        // One probe per instance address however many services list it.
        let shared = Arc::new(forecourt_orchestrator::SharedProbes::new());
        loop {
            let snapshot = self.0.snapshot();
            let current: AHashMap<usize, &crate::snapshot::ServiceRuntime> = snapshot
                .services
                .iter()
                .map(|s| (Arc::as_ptr(&s.instances) as usize, s))
                .collect();
            running.retain(|key, c| {
                let keep = current
                    .get(key)
                    .is_some_and(|s| s.config.health_check == c.check && s.config.warm == c.warm);
                if !keep {
                    c.handle.abort();
                }
                keep
            });
            for service in &snapshot.services {
                let key = Arc::as_ptr(&service.instances) as usize;
                if running.contains_key(&key) {
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
                    Arc::clone(&shared),
                    shutdown.clone(),
                    warm,
                ));
                running.insert(
                    key,
                    Checker {
                        _instances: service.instances.clone(),
                        check: service.config.health_check.clone(),
                        warm: service.config.warm.clone(),
                        handle,
                    },
                );
            }
            drop(current);
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
pub(super) struct DrainWatcher(pub(super) Arc<FrontDoor>);

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
            if idle && self.0.control.instances_stopped.load(Acquire) {
                tracing::info!(after = ?started.elapsed(), "drained: exiting");
                std::process::exit(0);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// Refreshes hot cached entries before they expire, once a second, and ages the hot-key counts
/// once a minute so the ranking follows the workload.
pub(super) struct CacheRefresher(pub(super) Arc<FrontDoor>);

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
            crate::warm::refresh::refresh_tick(&self.0).await;
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
pub(super) struct AdminApi {
    pub(super) front_door: Arc<FrontDoor>,
    pub(super) listener: Mutex<Option<std::net::TcpListener>>,
    pub(super) address: std::net::SocketAddr,
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

/// Runs the orchestrator's control loop for the front door until the server shuts down.
pub(super) struct ControlLoop(pub(super) Arc<FrontDoor>);

#[async_trait]
impl BackgroundService for ControlLoop {
    async fn start(&self, shutdown: ShutdownWatch) {
        let host: Arc<dyn ControlHost> = self.0.clone();
        forecourt_orchestrator::control_loop::run(
            host,
            Arc::clone(&self.0.control),
            Arc::clone(&self.0.clock),
            shutdown,
        )
        .await;
    }
}

/// Watches the policy file (polling) and SIGHUP, and reloads on either.
pub(super) struct PolicyWatcher(pub(super) Arc<FrontDoor>);

#[async_trait]
impl BackgroundService for PolicyWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let front_door = &self.0;
        let Some(path) = front_door.config.path() else {
            return;
        };
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut watch = PolicyFileWatch::new(path);
        let mut ticker = tokio::time::interval(WATCH_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let trigger = tokio::select! {
                _ = ticker.tick() => "file",
                Some(()) = async { hangup.as_mut()?.recv().await } => "signal",
                _ = shutdown.changed() => return,
            };
            // A file being written may be caught half-way; the next poll sees the rest.
            if trigger == "file" {
                if !watch.changed() {
                    continue;
                }
            } else {
                watch.mark_seen();
            }
            let _ = front_door.reload(trigger).await;
        }
    }
}
