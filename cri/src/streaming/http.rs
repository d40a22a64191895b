//! The HTTP side: one hyper HTTP/1.1 server (TLS when configured) whose
//! only routes take a token and upgrade the connection. Unknown, used or
//! expired tokens get 404 and nothing runs; a request that upgrades to
//! neither SPDY/3.1 nor WebSocket gets 400; a client whose subprotocols we
//! do not speak gets 403 with the ones we do, as kubelet's handshake.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bulkhead_proto::cri::{AttachRequest, ExecRequest};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONNECTION, HeaderMap, HeaderValue, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::remotecommand::{self, Options, Session};
use super::tokens::{Pending, Tokens};
use super::{Timeouts, attach, exec, portforward};
use crate::config::StreamingConfig;
use crate::service::Context;
use crate::{Error, Result};

const PROTOCOL_HEADER: &str = "x-stream-protocol-version";
const ACCEPTED_HEADER: &str = "x-accepted-stream-protocol-versions";

type Reply = Response<Full<Bytes>>;

/// The bound streaming listener, with its TLS acceptor when configured.
pub struct Listener {
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
}

impl Listener {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// Binds the streaming server's address and loads its TLS key pair.
pub async fn bind(config: &StreamingConfig, address: SocketAddr) -> Result<Listener> {
    let failed = |message: String| Error::Streaming { address: address.to_string(), message };
    let tls = if config.tls_cert_file.is_empty() {
        None
    } else {
        Some(tls_acceptor(Path::new(&config.tls_cert_file), Path::new(&config.tls_key_file)).map_err(failed)?)
    };
    let tcp = TcpListener::bind(address).await.map_err(|e| failed(format!("listen: {e}")))?;
    Ok(Listener { tcp, tls })
}

fn tls_acceptor(cert: &Path, key: &Path) -> std::result::Result<TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| format!("certificate {}: {e}", cert.display()))?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key_der))
        .map_err(|e| format!("TLS key pair {} / {}: {e}", cert.display(), key.display()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts connections until the task is dropped.
pub async fn serve(ctx: Arc<Context>, listener: Listener) {
    let tokens = ctx.streaming.tokens();
    loop {
        let (tcp, peer) = match listener.tcp.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "streaming server: accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (ctx, tokens, tls) = (ctx.clone(), tokens.clone(), listener.tls.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (ctx, tokens) = (ctx.clone(), tokens.clone());
                async move { Ok::<_, Infallible>(route(ctx, &tokens, req)) }
            });
            let http = hyper::server::conn::http1::Builder::new();
            let served = match tls {
                Some(tls) => match tls.accept(tcp).await {
                    Ok(stream) => http.serve_connection(TokioIo::new(stream), service).with_upgrades().await,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "streaming server: TLS handshake");
                        return;
                    }
                },
                None => http.serve_connection(TokioIo::new(tcp), service).with_upgrades().await,
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "streaming connection ended");
            }
        });
    }
}

fn reply(status: StatusCode, text: &str) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert("content-type", HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

fn route(ctx: Arc<Context>, tokens: &Tokens, req: Request<Incoming>) -> Reply {
    let path = req.uri().path().to_owned();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (Some(kind), Some(token)) = (parts.next(), parts.next()) else {
        return reply(StatusCode::NOT_FOUND, "404 page not found");
    };
    if !matches!(kind, "exec" | "attach" | "portforward") || req.method() != "GET" && req.method() != "POST" {
        return reply(StatusCode::NOT_FOUND, "404 page not found");
    }
    let Some(pending) = tokens.take(token, kind) else {
        tracing::debug!(kind, "streaming request with an unknown, used or expired token");
        return reply(StatusCode::NOT_FOUND, "404 page not found");
    };
    let timeouts = Timeouts {
        creation: Duration::from_secs(ctx.config.streaming.stream_creation_timeout_seconds),
        idle: ctx.config.streaming.idle_timeout(),
    };
    match pending {
        Pending::Exec(request) => remote_command(ctx, req, Command::Exec(request), timeouts),
        Pending::Attach(request) => remote_command(ctx, req, Command::Attach(request), timeouts),
        Pending::PortForward(request) => port_forward(ctx, req, request.pod_sandbox_id, timeouts),
    }
}

enum Command {
    Exec(ExecRequest),
    Attach(AttachRequest),
}

/// The protocols the client offers in `name` headers (each may list several).
fn offered(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The client's first choice that we speak; "" when it offered none.
fn negotiate(offered: &[String], supported: &[&'static str]) -> Option<&'static str> {
    if offered.is_empty() {
        // kubelet's handshake: a client that offers nothing gets the oldest protocol.
        return Some("");
    }
    offered.iter().find_map(|o| supported.iter().find(|s| **s == o.as_str()).copied())
}

fn has_token(headers: &HeaderMap, name: hyper::header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case(token))
}

enum Upgrade {
    Spdy(&'static str),
    WebSocket { protocol: &'static str, accept: String },
}

/// Decides the upgrade, or the reply that refuses it.
fn upgrade_of(
    headers: &HeaderMap,
    spdy: &[&'static str],
    websocket: &[&'static str],
) -> std::result::Result<Upgrade, Box<Reply>> {
    if !has_token(headers, CONNECTION, "upgrade") {
        return Err(Box::new(reply(StatusCode::BAD_REQUEST, "unable to upgrade: missing upgrade headers in request")));
    }
    if has_token(headers, UPGRADE, "websocket") {
        let Some(key) = headers.get("sec-websocket-key") else {
            return Err(Box::new(reply(StatusCode::BAD_REQUEST, "unable to upgrade: missing Sec-WebSocket-Key")));
        };
        let asked = offered(headers, "sec-websocket-protocol");
        let Some(protocol) = negotiate(&asked, websocket) else {
            return Err(Box::new(reply(
                StatusCode::FORBIDDEN,
                &format!(
                    "unable to upgrade: requested protocol(s) are not supported: {asked:?}; supports {websocket:?}"
                ),
            )));
        };
        return Ok(Upgrade::WebSocket { protocol, accept: derive_accept_key(key.as_bytes()) });
    }
    if has_token(headers, UPGRADE, "SPDY/3.1") {
        let asked = offered(headers, PROTOCOL_HEADER);
        let Some(protocol) = negotiate(&asked, spdy) else {
            let mut refused = reply(
                StatusCode::FORBIDDEN,
                &format!(
                    "unable to upgrade: unable to negotiate protocol: client supports {asked:?}, server accepts {spdy:?}"
                ),
            );
            for p in spdy {
                refused.headers_mut().append(ACCEPTED_HEADER, HeaderValue::from_static(p));
            }
            return Err(Box::new(refused));
        };
        return Ok(Upgrade::Spdy(protocol));
    }
    Err(Box::new(reply(
        StatusCode::BAD_REQUEST,
        "unable to upgrade: the Upgrade header names neither SPDY/3.1 nor websocket",
    )))
}

/// The 101 reply that completes `upgrade`.
fn switching(upgrade: &Upgrade) -> Reply {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    match upgrade {
        Upgrade::Spdy(protocol) => {
            headers.insert(UPGRADE, HeaderValue::from_static("SPDY/3.1"));
            if !protocol.is_empty() {
                headers.insert(PROTOCOL_HEADER, HeaderValue::from_static(protocol));
            }
        }
        Upgrade::WebSocket { protocol, accept } => {
            headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
            if let Ok(accept) = HeaderValue::from_str(accept) {
                headers.insert("sec-websocket-accept", accept);
            }
            if !protocol.is_empty() {
                headers.insert("sec-websocket-protocol", HeaderValue::from_static(protocol));
            }
        }
    }
    response
}

fn remote_command(ctx: Arc<Context>, mut req: Request<Incoming>, command: Command, timeouts: Timeouts) -> Reply {
    let (options, container_id) = match &command {
        Command::Exec(r) => {
            (Options { stdin: r.stdin, stdout: r.stdout, stderr: r.stderr, tty: r.tty }, r.container_id.clone())
        }
        Command::Attach(r) => {
            (Options { stdin: r.stdin, stdout: r.stdout, stderr: r.stderr, tty: r.tty }, r.container_id.clone())
        }
    };
    let upgrade = match upgrade_of(req.headers(), remotecommand::SPDY_PROTOCOLS, remotecommand::WEBSOCKET_PROTOCOLS) {
        Ok(upgrade) => upgrade,
        Err(refused) => return *refused,
    };
    let kind = match command {
        Command::Exec(_) => "exec",
        Command::Attach(_) => "attach",
    };
    let span = tracing::info_span!("stream", kind, container_id = %container_id);
    upgraded(&mut req, upgrade, span, move |io, upgrade| async move {
        let session = match upgrade {
            Upgrade::Spdy(protocol) => match Session::spdy(io, protocol, options, timeouts).await {
                Ok(session) => session,
                Err(message) => {
                    tracing::warn!(%message, "streaming session not started");
                    return;
                }
            },
            Upgrade::WebSocket { protocol, .. } => {
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
                Session::websocket(ws, protocol, options, timeouts.idle).await
            }
        };
        tracing::debug!("session started");
        match command {
            Command::Exec(r) => exec::run(ctx, r.container_id, r.cmd, r.tty, session).await,
            Command::Attach(r) => attach::run(ctx, r.container_id, session).await,
        }
        tracing::debug!("session ended");
    })
}

/// Answers 101 for `upgrade` and, once hyper hands the connection over,
/// runs `session` on it in a task of its own, inside `span`.
fn upgraded<F, Fut>(req: &mut Request<Incoming>, upgrade: Upgrade, span: tracing::Span, session: F) -> Reply
where
    F: FnOnce(TokioIo<hyper::upgrade::Upgraded>, Upgrade) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let response = switching(&upgrade);
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            match on_upgrade.await {
                Ok(io) => session(TokioIo::new(io), upgrade).await,
                Err(e) => tracing::debug!(error = %e, "upgrade failed"),
            }
        },
        span,
    ));
    response
}

/// The ports of a WebSocket port forward: `port` query parameters, each
/// possibly a comma-separated list.
fn query_ports(query: Option<&str>) -> std::result::Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for (key, value) in query.unwrap_or("").split('&').filter_map(|kv| kv.split_once('=')) {
        if key != "port" {
            continue;
        }
        for port in value.split(',').filter(|p| !p.is_empty()) {
            match port.parse::<u16>() {
                Ok(p) if p > 0 => ports.push(p),
                _ => return Err(format!("unable to parse {port:?} as a port")),
            }
        }
    }
    if ports.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    Ok(ports)
}

fn port_forward(ctx: Arc<Context>, mut req: Request<Incoming>, pod_id: String, timeouts: Timeouts) -> Reply {
    let upgrade = match upgrade_of(req.headers(), portforward::SPDY_PROTOCOLS, portforward::WEBSOCKET_PROTOCOLS) {
        Ok(upgrade) => upgrade,
        Err(refused) => return *refused,
    };
    let ports = match &upgrade {
        Upgrade::WebSocket { .. } => match query_ports(req.uri().query()) {
            Ok(ports) => ports,
            Err(message) => return reply(StatusCode::BAD_REQUEST, &message),
        },
        Upgrade::Spdy(_) => Vec::new(),
    };
    let span = tracing::info_span!("stream", kind = "portforward", pod_id = %pod_id);
    upgraded(&mut req, upgrade, span, move |io, upgrade| async move {
        match upgrade {
            Upgrade::Spdy(_) => portforward::spdy(ctx, pod_id, io, timeouts).await,
            Upgrade::WebSocket { protocol, .. } => {
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
                portforward::websocket(ctx, pod_id, ws, protocol, ports, timeouts.idle).await
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_first_supported_protocol_wins() {
        let offered =
            vec!["v9.channel.k8s.io".to_owned(), "v4.channel.k8s.io".to_owned(), "v5.channel.k8s.io".to_owned()];
        assert_eq!(negotiate(&offered, remotecommand::SPDY_PROTOCOLS), Some("v4.channel.k8s.io"));
        assert_eq!(negotiate(&[], remotecommand::SPDY_PROTOCOLS), Some(""));
        assert_eq!(negotiate(&["x".to_owned()], remotecommand::SPDY_PROTOCOLS), None);
    }

    #[test]
    fn ports_come_from_the_query() {
        assert_eq!(query_ports(Some("port=80&port=8080,9090")).unwrap(), vec![80, 8080, 9090]);
        assert!(query_ports(Some("ports=80")).unwrap_err().contains("required"));
        assert!(query_ports(Some("port=0")).is_err());
        assert!(query_ports(Some("port=70000")).is_err());
        assert!(query_ports(None).is_err());
    }
}
