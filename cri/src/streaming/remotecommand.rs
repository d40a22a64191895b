//! The remote-command protocol of exec and attach, as kubelet's streaming
//! server speaks it: which streams a session has, how the client opens
//! them (SPDY: one stream per kind, named by its `streamType` header;
//! WebSocket: channels 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize), and
//! how the session ends: on the error stream, a JSON `metav1.Status` from
//! v4 on (`NonZeroExitCode` with an `ExitCode` cause), plain text before.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;

use super::Timeouts;
use super::transport::{Channels, Codec, Sink, Size, Source, resizes};

/// SPDY subprotocols, most preferred first (v5 is v4 on SPDY).
pub const SPDY_PROTOCOLS: &[&str] =
    &["v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"];
/// WebSocket subprotocols; "" is a client that named none.
pub const WEBSOCKET_PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "base64.channel.k8s.io",
    "channel.k8s.io",
    "",
];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;

/// The streams a session asked for (from the CRI request).
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// How a session ended, for the error stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The process exited with this code.
    Exited(i32),
    /// Nothing ran, or it could not be followed to its end.
    Failed(String),
}

enum End {
    Spdy(bulkhead_spdy::Session),
    WebSocket(Channels),
}

/// An exec or attach session, its streams open.
pub struct Session {
    pub stdin: Option<Source>,
    pub stdout: Option<Sink>,
    pub stderr: Option<Sink>,
    pub resize: Option<mpsc::Receiver<Size>>,
    /// Turns true when the client has gone.
    pub gone: watch::Receiver<bool>,
    error: Option<Sink>,
    json_status: bool,
    end: End,
}

fn version(protocol: &str) -> u32 {
    protocol.strip_prefix('v').and_then(|p| p.split('.').next()).and_then(|v| v.parse().ok()).unwrap_or(1)
}

impl Session {
    /// Serves SPDY on `io`: waits (at most `timeouts.creation`) for the
    /// client to open the streams `options` and `protocol` call for; the
    /// connection closes once idle for `timeouts.idle`.
    pub async fn spdy<T>(io: T, protocol: &str, options: Options, timeouts: Timeouts) -> Result<Session, String>
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (session, mut incoming) = bulkhead_spdy::Session::new(io, bulkhead_spdy::Role::Server);
        if let Some(idle) = timeouts.idle {
            session.set_idle_timeout(idle);
        }
        let timeout = timeouts.creation;
        let version = version(protocol);
        let resizing = options.tty && version >= 3;
        let expected = 1 + [options.stdin, options.stdout, options.stderr && !options.tty, resizing]
            .iter()
            .filter(|wanted| **wanted)
            .count();
        let (mut stdin, mut stdout, mut stderr, mut resize, mut error) = (None, None, None, None, None);
        let mut received = 0;
        let collect = async {
            while received < expected {
                let Some(stream) = incoming.next().await else {
                    let why = session.end_reason().map_or_else(|| "closed".to_owned(), |e| e.to_string());
                    return Err(format!("the connection ended before the client opened its streams: {why}"));
                };
                let slot = match stream.header("streamtype") {
                    Some("error") => &mut error,
                    Some("stdin") => &mut stdin,
                    Some("stdout") => &mut stdout,
                    Some("stderr") => &mut stderr,
                    Some("resize") => &mut resize,
                    other => {
                        tracing::debug!(stream_type = ?other, "unexpected stream type; reset");
                        stream.reset();
                        continue;
                    }
                };
                *slot = Some(stream);
                received += 1;
            }
            Ok(())
        };
        match tokio::time::timeout(timeout, collect).await {
            Ok(Ok(())) => {}
            Ok(Err(message)) => return Err(message),
            Err(_) => {
                session.close().await;
                return Err(format!("timed out after {timeout:?} waiting for the client to create streams"));
            }
        }
        // Later streams have no meaning here: the session ignores them.
        tokio::spawn(async move { while incoming.next().await.is_some() {} });
        let (gone_tx, gone) = watch::channel(false);
        let watched = session.clone();
        tokio::spawn(async move {
            watched.closed().await;
            let _ = gone_tx.send(true);
        });
        Ok(Session {
            stdin: stdin.map(Source::Spdy),
            stdout: stdout.map(Sink::Spdy),
            stderr: stderr.map(Sink::Spdy),
            resize: resize.filter(|_| resizing).map(|r| resizes(Source::Spdy(r))),
            gone,
            error: error.map(Sink::Spdy),
            json_status: version >= 4,
            end: End::Spdy(session),
        })
    }

    /// Serves the channel protocol `protocol` on a WebSocket, closed once idle for `idle`.
    pub async fn websocket<S>(
        ws: WebSocketStream<S>,
        protocol: &str,
        options: Options,
        idle: Option<Duration>,
    ) -> Session
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let codec = if protocol.contains("base64") { Codec::Base64 } else { Codec::Binary };
        let readable = [options.stdin, false, false, false, options.tty];
        let mut channels = Channels::open(ws, codec, protocol.starts_with("v5."), &readable, idle);
        let stderr_wanted = options.stderr && !options.tty;
        let mut stdout = options.stdout.then(|| channels.sink(STDOUT));
        let mut stderr = stderr_wanted.then(|| channels.sink(STDERR));
        let mut error = channels.sink(ERROR);
        // As kubelet: an empty message on the lowest writable channel says the session is up.
        let first = match (stdout.as_mut(), stderr.as_mut()) {
            (Some(out), _) => out.write(&[]).await,
            (None, Some(err)) => err.write(&[]).await,
            (None, None) => error.write(&[]).await,
        };
        if let Err(e) = first {
            tracing::debug!(error = %e, "client gone before the session started");
        }
        Session {
            stdin: channels.source(STDIN),
            stdout,
            stderr,
            resize: channels.source(RESIZE).filter(|_| options.tty).map(resizes),
            gone: channels.gone(),
            error: Some(error),
            json_status: version(protocol) >= 4,
            end: End::WebSocket(channels),
        }
    }

    /// Reports `outcome` on the error stream and closes the session.
    pub async fn finish(mut self, outcome: Outcome) {
        if let Some(error) = self.error.as_mut() {
            let report = if self.json_status {
                Some(status_json(&outcome))
            } else {
                match &outcome {
                    Outcome::Exited(0) => None,
                    Outcome::Exited(code) => Some(format!("command terminated with non-zero exit code: {code}")),
                    Outcome::Failed(message) => Some(message.clone()),
                }
            };
            if let Some(report) = report {
                let _ = error.write(report.as_bytes()).await;
            }
            error.close().await;
        }
        for sink in [self.stdout.as_mut(), self.stderr.as_mut()].into_iter().flatten() {
            sink.close().await;
        }
        drop((self.stdout, self.stderr, self.error, self.stdin, self.resize));
        match self.end {
            End::Spdy(session) => session.close().await,
            // The writer sends the close frame once every sink is gone.
            End::WebSocket(channels) => drop(channels),
        }
    }
}

/// The `metav1.Status` that ends a v4 session, as kubelet writes it.
pub fn status_json(outcome: &Outcome) -> String {
    let status = match outcome {
        Outcome::Exited(0) => json!({"metadata": {}, "status": "Success"}),
        Outcome::Exited(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Outcome::Failed(message) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("Internal error occurred: {message}"),
            "reason": "InternalError",
            "details": {"causes": [{"message": message}]},
            "code": 500,
        }),
    };
    status.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_kubelets() {
        let ok: serde_json::Value = serde_json::from_str(&status_json(&Outcome::Exited(0))).unwrap();
        assert_eq!(ok["status"], "Success");
        let failed: serde_json::Value = serde_json::from_str(&status_json(&Outcome::Exited(3))).unwrap();
        assert_eq!(failed["status"], "Failure");
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(failed["details"]["causes"][0]["message"], "3");
        let broken: serde_json::Value = serde_json::from_str(&status_json(&Outcome::Failed("no".into()))).unwrap();
        assert_eq!(broken["reason"], "InternalError");
        assert_eq!(broken["code"], 500);
    }

    #[test]
    fn versions_are_read_from_protocol_names() {
        assert_eq!(version("v5.channel.k8s.io"), 5);
        assert_eq!(version("v4.base64.channel.k8s.io"), 4);
        assert_eq!(version("channel.k8s.io"), 1);
        assert_eq!(version(""), 1);
    }
}
