//! A bare Pingora pass-through to one upstream: no classification, predictor, tenants, metrics,
//! balancing or holding. `benches/compare` runs it next to Forecourt to show what Forecourt's
//! features cost on top of Pingora. It uses Forecourt's server settings and listener, so the only
//! difference between the two is the request path.
//!
//! ```sh
//! cargo run --release -p forecourt-proxy --example passthrough -- 127.0.0.1:8080 127.0.0.1:9000
//! ```

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::Opt;
use pingora::server::Server;
use pingora::Result;

// The same allocator as the `forecourt` binary.
#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Forwards every request to one upstream address.
struct Passthrough(SocketAddr);

#[async_trait]
impl ProxyHttp for Passthrough {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.0, false, String::new())))
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: passthrough LISTEN_ADDR UPSTREAM_ADDR [THREADS]";
    let listen = args.next().ok_or_else(|| anyhow::anyhow!(usage))?;
    let upstream: SocketAddr = args.next().ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    let threads = args.next().map_or(Ok(1), |t| t.parse())?;

    let mut server = Server::new_with_opt_and_conf(
        Opt::default(),
        forecourt_proxy::server::server_conf(threads),
    );
    server.bootstrap();
    let proxy = pingora::proxy::http_proxy(&server.configuration, Passthrough(upstream));
    let limits = forecourt_proxy::server::keepalive::FixedHeaderLimits {
        timeout: std::time::Duration::from_secs(10),
        max_bytes: 32 * 1024,
    };
    server.add_service(forecourt_proxy::server::proxy_service(
        "passthrough",
        proxy,
        &listen,
        std::sync::Arc::new(limits),
    ));
    server.run_forever()
}
