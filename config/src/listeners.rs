//! The `listeners:` section: where the proxy (tenant traffic) and the admin API listen.
//!
//! ```yaml
//! listeners:
//!   proxy: 127.0.0.1:8080   # tenant traffic
//!   admin: 127.0.0.1:9901   # the admin API; loopback only by default
//! ```

use std::net::SocketAddr;

use serde::Deserialize;

use crate::check::Checker;

/// Default proxy listener.
pub const DEFAULT_PROXY_ADDR: &str = "127.0.0.1:8080";
/// Default admin listener: loopback only.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9901";

/// Listener addresses, as `ip:port` strings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenersSpec {
    /// The proxy listener (tenant traffic).
    pub proxy: Option<String>,
    /// The admin API listener.
    pub admin: Option<String>,
}

/// Listener addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listeners {
    /// Tenant traffic.
    pub proxy: SocketAddr,
    /// Admin API.
    pub admin: SocketAddr,
}

// === impl Checker ===

impl Checker<'_> {
    /// Resolves the `listeners:` section.
    pub(crate) fn listeners(&mut self, raw: &ListenersSpec) -> Listeners {
        let listeners = Listeners {
            proxy: self.socket_addr(
                "listeners.proxy",
                raw.proxy.as_deref().unwrap_or(DEFAULT_PROXY_ADDR),
            ),
            admin: self.socket_addr(
                "listeners.admin",
                raw.admin.as_deref().unwrap_or(DEFAULT_ADMIN_ADDR),
            ),
        };
        if listeners.proxy == listeners.admin && listeners.proxy.port() != 0 {
            self.problem(
                "listeners.admin",
                "admin and proxy listeners share an address",
            );
        }
        listeners
    }
}
