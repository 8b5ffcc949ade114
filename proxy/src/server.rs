//! # The proxy server
//!
//! Assembles the Pingora server of one Forecourt process and its listeners.
//!
//! ```text
//!  proxy listener (TCP, no L4 read buffer) ─► KeepAliveApp (header deadline, size) ─► Ingress
//!  admin listener ─► admin API (hyper)
//!  background: health checks · control loop · policy watcher · cache refresher · drain watcher
//!  graceful upgrade: the listening socket handed over on upgrade_socket(proxy address)
//! ```

pub mod keepalive;

mod background;

use std::sync::{Arc, Mutex};

use pingora::apps::HttpServerApp;
use pingora::listeners::ListenerConfig;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::front_door::FrontDoor;
use background::{
    AdminApi, CacheRefresher, ControlLoop, DrainWatcher, HealthChecks, PolicyWatcher,
};
use keepalive::{HeaderLimits, KeepAliveApp};

/// Why the server could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener's address is taken or not ours.
    #[error("unable to bind the {listener} listener {address}")]
    Bind {
        /// Which listener: `proxy` or `admin`.
        listener: &'static str,
        /// The address it should listen on.
        address: std::net::SocketAddr,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
}

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
pub fn build(front_door: Arc<FrontDoor>, options: &ServerOptions) -> Result<Server, ServerError> {
    let snapshot = front_door.snapshot();
    let listeners = snapshot.policy.listeners.clone();
    // Bind the admin listener now so a taken port is a clear start-up error. In a graceful
    // upgrade the old process still holds it: the admin API binds it once that one lets go.
    let admin = if options.upgrade {
        None
    } else {
        Some(
            std::net::TcpListener::bind(listeners.admin).map_err(|source| ServerError::Bind {
                listener: "admin",
                address: listeners.admin,
                source,
            })?,
        )
    };
    if !options.upgrade {
        // Pingora binds the proxy listener later; check it now for the same reason.
        drop(
            std::net::TcpListener::bind(listeners.proxy).map_err(|source| ServerError::Bind {
                listener: "proxy",
                address: listeners.proxy,
                source,
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
        crate::ingress::Ingress(front_door.clone()),
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
        ControlLoop(front_door.clone()),
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
        PolicyWatcher(front_door.clone()),
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
