//! A streaming client of our own that speaks what kubectl, kubelet and
//! crictl speak: the HTTP upgrade to SPDY/3.1 (remote command
//! `v4.channel.k8s.io`… and `portforward.k8s.io`) or to a WebSocket (the
//! `channel.k8s.io` family, v5 with its close signal), so the tests drive
//! the streaming server as those clients would.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)] // test support fails loudly by design

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Which upgrade the client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Spdy,
    WebSocket,
}

/// The parts of a streaming URL: TLS or not, host:port, path.
fn split_url(url: &str) -> (bool, String, String) {
    let (tls, rest) = match url.strip_prefix("https://") {
        Some(rest) => (true, rest),
        None => (false, url.strip_prefix("http://").unwrap_or(url)),
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    (tls, host.to_owned(), format!("/{path}"))
}

/// A connection to the streaming server, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// The server's answer to an upgrade request, and the connection.
pub struct Upgraded {
    pub io: Box<dyn Io>,
    pub status: u16,
    /// Reply headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// A refusal's body.
    pub body: String,
    /// The TCP connection under `io`, to cut it as a dying client would.
    cut: std::net::TcpStream,
}

impl Upgraded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Connects to `url`'s server, over TLS trusting `ca` for https URLs.
async fn dial(url: &str, ca: Option<&Path>) -> (Box<dyn Io>, std::net::TcpStream) {
    let (tls, host, _) = split_url(url);
    let tcp = TcpStream::connect(&host).await.expect("connect to the streaming server");
    tcp.set_nodelay(true).unwrap();
    let std = tcp.into_std().unwrap();
    let cut = std.try_clone().unwrap();
    let tcp = TcpStream::from_std(std).unwrap();
    if !tls {
        return (Box::new(tcp), cut);
    }
    let mut roots = rustls::RootCertStore::empty();
    let ca = ca.expect("an https URL needs the CA that signed the server's certificate");
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let name =
        rustls::pki_types::ServerName::try_from(host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h).to_owned())
            .unwrap();
    let stream =
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await.expect("TLS handshake");
    (Box::new(stream), cut)
}

/// Sends an upgrade request to `url` and reads the reply's head.
pub async fn upgrade_request(url: &str, headers: &[(&str, &str)]) -> Upgraded {
    upgrade_request_with(url, None, headers).await
}

/// [`upgrade_request`], trusting `ca` for https URLs.
pub async fn upgrade_request_with(url: &str, ca: Option<&Path>, headers: &[(&str, &str)]) -> Upgraded {
    let (_, host, path) = split_url(url);
    let (mut io, cut) = dial(url, ca).await;
    let mut request = format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    io.write_all(request.as_bytes()).await.unwrap();
    // Byte by byte: nothing after the head may be taken from the connection.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        match io.read_u8().await {
            Ok(b) => head.push(b),
            Err(_) => break,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut reply_headers = Vec::new();
    for line in lines.by_ref() {
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            reply_headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    // A refusal has a body; read what is there.
    let mut body = String::new();
    if status != 101 {
        let _ = tokio::time::timeout(Duration::from_secs(2), io.read_to_string(&mut body)).await;
    }
    Upgraded { io, status, headers: reply_headers, body, cut }
}

/// A client-side channel to write: stdin or resize.
enum Out {
    Spdy(bulkhead_spdy::Stream),
    Ws { channel: u8, tx: mpsc::Sender<Message> },
}

impl Out {
    async fn write(&mut self, data: &[u8]) {
        match self {
            Out::Spdy(s) => s.write_all(data).await.expect("write to the stream"),
            Out::Ws { channel, tx } => {
                let mut frame = vec![*channel];
                frame.extend_from_slice(data);
                tx.send(Message::Binary(frame.into())).await.expect("the WebSocket writer ended");
            }
        }
    }

    async fn close(&mut self, v5: bool) {
        match self {
            Out::Spdy(s) => s.shutdown().await.expect("half-close the stream"),
            Out::Ws { channel, tx } => {
                if v5 {
                    let _ = tx.send(Message::Binary(vec![255, *channel].into())).await;
                }
            }
        }
    }
}

/// What a remote-command session asks for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// A client's exec or attach session.
pub struct RemoteCommand {
    stdin: Option<Out>,
    resize: Option<Out>,
    /// Output by channel (1 stdout, 2 stderr, 3 error), until each ends.
    output: mpsc::Receiver<(u8, Vec<u8>)>,
    v5: bool,
    pub protocol: String,
    _keep: Option<bulkhead_spdy::Session>,
    /// stderr and status seen while looking for stdout.
    seen: Finished,
    /// Keeps the WebSocket writer open (it closes the socket when the last sender goes).
    _writer: Option<mpsc::Sender<Message>>,
    /// The SPDY connection, to cut it as a client that dies would.
    tcp: Option<std::net::TcpStream>,
}

impl RemoteCommand {
    /// Cuts the connection under the session, as a killed client's does.
    pub fn disconnect(mut self) {
        if let Some(tcp) = self.tcp.take() {
            let _ = tcp.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// What came back from a session.
#[derive(Debug, Default)]
pub struct Finished {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The error stream: a JSON status from v4 on.
    pub status: String,
}

impl Finished {
    /// The exit code the status reports (0 on Success).
    pub fn exit_code(&self) -> Option<i32> {
        let status: serde_json::Value = serde_json::from_str(&self.status).ok()?;
        if status["status"] == "Success" {
            return Some(0);
        }
        status["details"]["causes"]
            .as_array()?
            .iter()
            .find(|c| c["reason"] == "ExitCode")
            .and_then(|c| c["message"].as_str())
            .and_then(|m| m.parse().ok())
    }
}

impl RemoteCommand {
    /// Opens a session on `url` with `protocols` offered (most preferred first).
    pub async fn connect(url: &str, transport: Transport, streams: Streams, protocols: &[&str]) -> RemoteCommand {
        match transport {
            Transport::Spdy => Self::spdy(url, None, streams, protocols).await,
            Transport::WebSocket => Self::websocket(url, streams, protocols).await,
        }
    }

    /// A SPDY session on an https URL, trusting `ca`.
    pub async fn connect_tls(url: &str, ca: &Path, streams: Streams, protocols: &[&str]) -> RemoteCommand {
        Self::spdy(url, Some(ca), streams, protocols).await
    }

    async fn spdy(url: &str, ca: Option<&Path>, streams: Streams, protocols: &[&str]) -> RemoteCommand {
        let mut headers = vec![("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")];
        headers.extend(protocols.iter().map(|p| ("X-Stream-Protocol-Version", *p)));
        let upgraded = upgrade_request_with(url, ca, &headers).await;
        assert_eq!(upgraded.status, 101, "SPDY upgrade refused: {}", upgraded.body);
        let protocol = upgraded.header("x-stream-protocol-version").unwrap_or_default().to_owned();
        let Upgraded { io, cut, .. } = upgraded;
        let (session, _incoming) = bulkhead_spdy::Session::new(io, bulkhead_spdy::Role::Client);
        let (tx, output) = mpsc::channel(64);
        let open = |kind: &'static str| {
            let session = session.clone();
            async move { session.open(&[("streamType", kind)]).await.expect("open a stream") }
        };
        // As client-go: error first, then stdin, stdout, stderr, resize.
        let error = open("error").await;
        let stdin = if streams.stdin { Some(Out::Spdy(open("stdin").await)) } else { None };
        let mut readers = vec![(3u8, error)];
        if streams.stdout {
            readers.push((1, open("stdout").await));
        }
        if streams.stderr && !streams.tty {
            readers.push((2, open("stderr").await));
        }
        let resize = if streams.tty { Some(Out::Spdy(open("resize").await)) } else { None };
        for (channel, mut stream) in readers {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || tx.send((channel, buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            });
        }
        RemoteCommand {
            stdin,
            resize,
            output,
            v5: false,
            protocol,
            _keep: Some(session),
            seen: Finished::default(),
            _writer: None,
            tcp: Some(cut),
        }
    }

    async fn websocket(url: &str, streams: Streams, protocols: &[&str]) -> RemoteCommand {
        let (ws, protocol) = ws_connect(url, protocols).await;
        let v5 = protocol.starts_with("v5.");
        let base64 = protocol.contains("base64");
        let (mut sink, mut stream) = ws.split();
        let (out_tx, mut out_rx) = mpsc::channel::<Message>(16);
        tokio::spawn(async move {
            while let Some(message) = out_rx.recv().await {
                let message = match (base64, message) {
                    (true, Message::Binary(data)) if data.first() != Some(&255) => {
                        let mut text = String::from(char::from(b'0' + data[0]));
                        text.push_str(&base64::engine::general_purpose::STANDARD.encode(&data[1..]));
                        Message::Text(text.into())
                    }
                    (_, m) => m,
                };
                if sink.send(message).await.is_err() {
                    return;
                }
            }
            let _ = sink.close().await;
        });
        let (tx, output) = mpsc::channel(64);
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let (channel, data) = match message {
                    Message::Binary(data) if !data.is_empty() => (data[0], data[1..].to_vec()),
                    Message::Text(text) if !text.is_empty() => {
                        let channel = text.as_bytes()[0] - b'0';
                        (channel, base64::engine::general_purpose::STANDARD.decode(&text.as_bytes()[1..]).unwrap())
                    }
                    Message::Close(_) => break,
                    _ => continue,
                };
                if tx.send((channel, data)).await.is_err() {
                    break;
                }
            }
        });
        let stdin = streams.stdin.then(|| Out::Ws { channel: 0, tx: out_tx.clone() });
        let resize = streams.tty.then(|| Out::Ws { channel: 4, tx: out_tx.clone() });
        RemoteCommand {
            stdin,
            resize,
            output,
            v5,
            protocol,
            _keep: None,
            seen: Finished::default(),
            _writer: Some(out_tx),
            tcp: None,
        }
    }

    pub async fn write_stdin(&mut self, data: &[u8]) {
        self.stdin.as_mut().expect("the session has stdin").write(data).await;
    }

    /// Ends stdin (SPDY: half-close; WebSocket v5: the close signal; older: nothing to say it).
    pub async fn close_stdin(&mut self) {
        let v5 = self.v5;
        if let Some(stdin) = self.stdin.as_mut() {
            stdin.close(v5).await;
        }
        if self.v5 || matches!(self.stdin, Some(Out::Spdy(_))) {
            self.stdin = None;
        }
    }

    pub async fn resize(&mut self, width: u16, height: u16) {
        let size = format!("{{\"Width\":{width},\"Height\":{height}}}");
        self.resize.as_mut().expect("the session has a tty").write(size.as_bytes()).await;
    }

    /// Reads stdout until it holds `needle` (or `timeout`); returns what was read.
    pub async fn stdout_until(&mut self, needle: &str, timeout: Duration) -> String {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        while !String::from_utf8_lossy(&seen).contains(needle) {
            match tokio::time::timeout_at(deadline, self.output.recv()).await {
                Ok(Some((1, data))) => seen.extend_from_slice(&data),
                Ok(Some((2, data))) => self.seen.stderr.extend_from_slice(&data),
                Ok(Some((3, data))) => self.seen.status.push_str(&String::from_utf8_lossy(&data)),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    }

    /// Reads everything to the end of the session.
    pub async fn finish(mut self, timeout: Duration) -> Finished {
        let mut finished = std::mem::take(&mut self.seen);
        let mut status = finished.status.clone().into_bytes();
        let deadline = tokio::time::Instant::now() + timeout;
        self.stdin = None;
        self.resize = None;
        loop {
            match tokio::time::timeout_at(deadline, self.output.recv()).await {
                Ok(Some((1, data))) => finished.stdout.extend_from_slice(&data),
                Ok(Some((2, data))) => finished.stderr.extend_from_slice(&data),
                Ok(Some((3, data))) => status.extend_from_slice(&data),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => panic!("the session did not end within {timeout:?}"),
            }
        }
        finished.status = String::from_utf8_lossy(&status).into_owned();
        finished
    }

    /// Reads to the end, counting stdout bytes and checking them against
    /// `expected_byte(offset)`, without keeping them.
    pub async fn count_stdout(mut self, timeout: Duration, expected: impl Fn(u64) -> u8) -> (u64, String) {
        let mut count = 0u64;
        let mut status = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        self.stdin = None;
        loop {
            match tokio::time::timeout_at(deadline, self.output.recv()).await {
                Ok(Some((1, data))) => {
                    for b in &data {
                        assert_eq!(*b, expected(count), "stdout byte {count}");
                        count += 1;
                    }
                }
                Ok(Some((3, data))) => status.extend_from_slice(&data),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => panic!("the session did not end within {timeout:?} ({count} bytes so far)"),
            }
        }
        (count, String::from_utf8_lossy(&status).into_owned())
    }
}

/// A WebSocket to `url` offering `protocols`; returns it and the protocol chosen.
pub async fn ws_connect(url: &str, protocols: &[&str]) -> (tokio_tungstenite::WebSocketStream<TcpStream>, String) {
    let (_, host, _) = split_url(url);
    let ws_url = url.replacen("http://", "ws://", 1);
    let mut request = ws_url.into_client_request().unwrap();
    if !protocols.is_empty() {
        request.headers_mut().insert("Sec-WebSocket-Protocol", protocols.join(", ").parse().unwrap());
    }
    let tcp = TcpStream::connect(&host).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (ws, response) = tokio_tungstenite::client_async(request, tcp).await.expect("WebSocket upgrade");
    let protocol =
        response.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    (ws, protocol)
}

/// A SPDY port-forward session: one forwarded connection per [`PortForward::open`].
pub struct PortForward {
    session: bulkhead_spdy::Session,
    next_request: u32,
}

impl PortForward {
    pub async fn connect(url: &str) -> PortForward {
        let headers =
            [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"), ("X-Stream-Protocol-Version", "portforward.k8s.io")];
        let upgraded = upgrade_request(url, &headers).await;
        assert_eq!(upgraded.status, 101, "port-forward upgrade refused: {}", upgraded.body);
        let (session, _incoming) = bulkhead_spdy::Session::new(upgraded.io, bulkhead_spdy::Role::Client);
        PortForward { session, next_request: 0 }
    }

    /// Opens the error and data streams of one connection to `port`, as
    /// client-go does (error first, its write side closed at once).
    pub async fn open(&mut self, port: u16) -> (bulkhead_spdy::Stream, bulkhead_spdy::Stream) {
        let request = self.next_request.to_string();
        self.next_request += 1;
        let port = port.to_string();
        let mut error = self
            .session
            .open(&[("streamType", "error"), ("port", &port), ("requestID", &request)])
            .await
            .expect("open the error stream");
        error.shutdown().await.unwrap();
        let data = self
            .session
            .open(&[("streamType", "data"), ("port", &port), ("requestID", &request)])
            .await
            .expect("open the data stream");
        (data, error)
    }

    pub async fn close(self) {
        self.session.close().await;
    }

    /// Resolves once the session has ended (either side closed it).
    pub async fn closed(&self) {
        self.session.closed().await;
    }
}

/// Reads a stream to its end (bounded by `timeout`).
pub async fn read_all(stream: &mut bulkhead_spdy::Stream, timeout: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(timeout, stream.read_to_end(&mut out)).await;
    out
}

/// Messages of a WebSocket by channel, until it closes.
pub async fn ws_channels(
    ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>,
    timeout: Duration,
) -> HashMap<u8, Vec<u8>> {
    let mut channels: HashMap<u8, Vec<u8>> = HashMap::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, ws.next()).await {
        match message {
            Message::Binary(data) if !data.is_empty() => {
                channels.entry(data[0]).or_default().extend_from_slice(&data[1..])
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    channels
}
