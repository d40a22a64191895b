//! PortForward: each forwarded connection is a TCP connection to a port on
//! localhost inside the pod's network namespace. The socket is made by a
//! short-lived thread of its own that enters the namespace (a socket stays
//! in the namespace it was made in), so no runtime thread ever changes
//! namespace. Over SPDY (`portforward.k8s.io`) the client opens a data and
//! an error stream per connection, paired by their `requestID` header;
//! over WebSocket, channels 2n (data) and 2n+1 (error) serve the n-th
//! `port` of the URL's query, each starting with the port, little-endian.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;

use super::Timeouts;
use super::transport::{Channels, Codec, Sink, Source};
use crate::service::Context;
use crate::state::PodState;

/// The SPDY subprotocol of port forwarding.
pub const SPDY_PROTOCOLS: &[&str] = &["portforward.k8s.io"];
/// The WebSocket subprotocols of port forwarding; "" is a client that named none.
pub const WEBSOCKET_PROTOCOLS: &[&str] = &["v4.channel.k8s.io", "v4.base64.channel.k8s.io", ""];

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Per direction of a forwarded connection: tokio's default (8 KiB) costs
/// a syscall per 8 KiB, several times the CPU of a large transfer (measured:
/// docs/benchmarks.md, streaming).
const COPY_BUFFER: usize = 64 * 1024;

/// The pod's network namespace (`None`: the node's), if the pod is ready.
pub fn netns_of(ctx: &Context, pod_id: &str) -> Result<Option<PathBuf>, String> {
    let pod = ctx.state.pod(pod_id).ok_or_else(|| format!("pod sandbox {pod_id} not found"))?;
    if pod.state != PodState::Ready {
        return Err(format!("pod sandbox {pod_id} is not ready"));
    }
    Ok(pod.sandbox.netns)
}

/// Connects to `port` on localhost in `netns` (IPv4, then IPv6).
pub async fn connect(netns: Option<PathBuf>, port: u16) -> std::io::Result<TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("bulkhead-portfwd".into()).spawn(move || {
        let _ = tx.send(connect_in(netns.as_deref(), port));
    })?;
    let stream = rx.await.map_err(|_| std::io::Error::other("the connecting thread died"))??;
    stream.set_nonblocking(true)?;
    TcpStream::from_std(stream)
}

/// On a thread of its own, which ends right after (its namespace with it).
fn connect_in(netns: Option<&std::path::Path>, port: u16) -> std::io::Result<std::net::TcpStream> {
    if let Some(netns) = netns {
        let file = std::fs::File::open(netns)?;
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
    }
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match std::net::TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT) {
        Ok(stream) => Ok(stream),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
            std::net::TcpStream::connect_timeout(&v6, CONNECT_TIMEOUT).map_err(|_| e)
        }
        Err(e) => Err(e),
    }
}

/// The error message kubelet sends when a forward fails, as JSON.
fn failure(port: u16, pod_id: &str, e: &std::io::Error) -> String {
    let reset = matches!(e.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset);
    let message = format!("error forwarding port {port} to pod {pod_id}, uid : {e}");
    json!({"closeConnection": !reset, "message": message}).to_string()
}

/// Serves SPDY port forwarding for pod `pod_id` on `io` until the client
/// closes it (or it is idle for `timeouts.idle`).
pub async fn spdy<T>(ctx: Arc<Context>, pod_id: String, io: T, timeouts: Timeouts)
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (session, mut incoming) = bulkhead_spdy::Session::new(io, bulkhead_spdy::Role::Server);
    if let Some(idle) = timeouts.idle {
        session.set_idle_timeout(idle);
    }
    let creation_timeout = timeouts.creation;
    let mut pairs: HashMap<String, (Option<bulkhead_spdy::Stream>, Option<bulkhead_spdy::Stream>)> = HashMap::new();
    let (expire_tx, mut expired) = tokio::sync::mpsc::channel::<String>(16);
    loop {
        let stream = tokio::select! {
            stream = incoming.next() => match stream {
                Some(stream) => stream,
                None => break,
            },
            Some(request_id) = expired.recv() => {
                if let Some((_, Some(mut error))) = pairs.remove(&request_id) {
                    let message = format!("timed out waiting for the streams of request {request_id}");
                    let _ = error.write_all(message.as_bytes()).await;
                    let _ = error.shutdown().await;
                }
                continue;
            }
        };
        let port = stream.header("port").and_then(|p| p.parse::<u16>().ok()).filter(|p| *p > 0);
        let kind = stream.header("streamtype").map(str::to_owned);
        let (Some(port), Some(kind @ ("data" | "error"))) = (port, kind.as_deref()) else {
            tracing::debug!(stream = stream.id(), "port-forward stream without a valid port or stream type; reset");
            stream.reset();
            continue;
        };
        let request_id = match stream.header("requestid") {
            Some(id) => id.to_owned(),
            // Old clients: consecutive stream ids, error first (as kubelet guesses).
            None if kind == "error" => stream.id().to_string(),
            None => stream.id().saturating_sub(2).to_string(),
        };
        if !pairs.contains_key(&request_id) {
            let tx = expire_tx.clone();
            let id = request_id.clone();
            tokio::spawn(async move {
                tokio::time::sleep(creation_timeout).await;
                let _ = tx.send(id).await;
            });
        }
        let pair = pairs.entry(request_id.clone()).or_default();
        let slot = if kind == "data" { &mut pair.0 } else { &mut pair.1 };
        if slot.is_some() {
            tracing::debug!(request = %request_id, kind, "a second stream of one kind for a request; reset");
            stream.reset();
            continue;
        }
        *slot = Some(stream);
        if pair.0.is_some()
            && pair.1.is_some()
            && let Some((Some(data), Some(error))) = pairs.remove(&request_id)
        {
            tokio::spawn(forward_spdy(ctx.clone(), pod_id.clone(), port, data, error));
        }
    }
    session.close().await;
}

async fn forward_spdy(
    ctx: Arc<Context>,
    pod_id: String,
    port: u16,
    mut data: bulkhead_spdy::Stream,
    mut error: bulkhead_spdy::Stream,
) {
    let connected = match netns_of(&ctx, &pod_id) {
        Ok(netns) => connect(netns, port).await,
        Err(message) => Err(std::io::Error::other(message)),
    };
    tracing::debug!(port, stream = data.id(), connected = connected.is_ok(), "port-forward connection");
    match connected {
        Ok(mut tcp) => {
            match tokio::io::copy_bidirectional_with_sizes(&mut data, &mut tcp, COPY_BUFFER, COPY_BUFFER).await {
                Ok((to_pod, from_pod)) => tracing::debug!(port, to_pod, from_pod, "port-forward connection done"),
                Err(e) => tracing::debug!(error = %e, port, "port-forward connection ended"),
            }
        }
        Err(e) => {
            let _ = error.write_all(failure(port, &pod_id, &e).as_bytes()).await;
        }
    }
    let _ = data.shutdown().await;
    let _ = error.shutdown().await;
}

/// Serves WebSocket port forwarding of `ports` for pod `pod_id`, closed once idle for `idle`.
pub async fn websocket<S>(
    ctx: Arc<Context>,
    pod_id: String,
    ws: WebSocketStream<S>,
    protocol: &str,
    ports: Vec<u16>,
    idle: Option<Duration>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let codec = if protocol.contains("base64") { Codec::Base64 } else { Codec::Binary };
    let readable: Vec<bool> = ports.iter().flat_map(|_| [true, false]).collect();
    let mut channels = Channels::open(ws, codec, false, &readable, idle);
    let mut forwards = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let (Ok(n), Some(source)) = (u8::try_from(2 * i), channels.source(u8::try_from(2 * i).unwrap_or(u8::MAX)))
        else {
            break;
        };
        let (mut data, mut error) = (channels.sink(n), channels.sink(n + 1));
        let port_bytes = port.to_le_bytes();
        if data.write(&port_bytes).await.is_err() || error.write(&port_bytes).await.is_err() {
            return;
        }
        forwards.push(tokio::spawn(forward_channels(ctx.clone(), pod_id.clone(), *port, source, data, error)));
    }
    let mut gone = channels.gone();
    drop(channels);
    super::transport::went(&mut gone).await;
    for forward in forwards {
        forward.abort();
    }
}

async fn forward_channels(
    ctx: Arc<Context>,
    pod_id: String,
    port: u16,
    mut from: Source,
    mut to: Sink,
    mut error: Sink,
) {
    let connected = match netns_of(&ctx, &pod_id) {
        Ok(netns) => connect(netns, port).await,
        Err(message) => Err(std::io::Error::other(message)),
    };
    let tcp = match connected {
        Ok(tcp) => tcp,
        Err(e) => {
            let _ = error.write(failure(port, &pod_id, &e).as_bytes()).await;
            return;
        }
    };
    let (mut rd, mut wr) = tcp.into_split();
    let inbound = async {
        while let Some(data) = from.read().await {
            if wr.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    let outbound = async {
        let mut buf = vec![0u8; COPY_BUFFER];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 || to.write(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    tokio::join!(inbound, outbound);
}
