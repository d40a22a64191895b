//! The streaming server behind `Exec`, `Attach` and `PortForward`: those
//! RPCs store their request under a single-use token and answer with a
//! URL on this server (`/exec/{token}`, `/attach/{token}`,
//! `/portforward/{token}`); the client (kubelet's proxy for kubectl, or
//! crictl) then upgrades an HTTP/1.1 request on it to SPDY/3.1 or to a
//! WebSocket, and the session runs: a process in the container, the
//! container's stdio through its pod monitor, or TCP connections inside
//! the pod's network namespace.

mod attach;
mod exec;
mod http;
mod portforward;
mod remotecommand;
mod tokens;
mod transport;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use http::{Listener, bind, serve};
pub use remotecommand::status_json;
pub use tokens::{MAX_IN_FLIGHT, Pending, TTL, Tokens};

use crate::Result;

/// A session's time limits (the `[streaming]` config).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// For the client to open its streams after the upgrade.
    pub creation: Duration,
    /// Of nothing read or written on the connection before it is closed.
    pub idle: Option<Duration>,
}

/// What the CRI service needs of the streaming server: where it is, and
/// the tokens it will honour.
#[derive(Debug)]
pub struct Streaming {
    base_url: String,
    tokens: Arc<Tokens>,
}

impl Streaming {
    pub fn new(address: SocketAddr, tls: bool, tokens: Arc<Tokens>) -> Streaming {
        let scheme = if tls { "https" } else { "http" };
        // An unspecified address serves every interface; kubelet reaches it on loopback.
        let host = match address {
            a if a.ip().is_unspecified() && a.is_ipv4() => format!("127.0.0.1:{}", a.port()),
            a if a.ip().is_unspecified() => format!("[::1]:{}", a.port()),
            a => a.to_string(),
        };
        Streaming { base_url: format!("{scheme}://{host}"), tokens }
    }

    /// Stores `request` and returns the URL that serves it once.
    pub fn url(&self, request: Pending) -> Result<String> {
        let kind = request.kind();
        let token = self.tokens.insert(request)?;
        Ok(format!("{}/{kind}/{token}", self.base_url))
    }

    pub fn tokens(&self) -> Arc<Tokens> {
        self.tokens.clone()
    }

    /// `scheme://host:port` of the server.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }
}
