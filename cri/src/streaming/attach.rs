//! Attach: to a running container's stdio, which its pod's monitor holds.
//! The daemon asks the monitor to attach (proto::monitor `Attach`) and the
//! connection then carries the container's output and the client's input
//! and resizes as frames. The monitor fans output out to every attacher
//! and still writes the log; detaching leaves the container running.

use std::sync::Arc;

use bulkhead_proto::monitor::Request as MonitorRequest;
use bulkhead_proto::monitor::attach::{self, Decoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::remotecommand::{Outcome, Session};
use crate::containers::{container_of, require_state};
use crate::pods::socket_path;
use crate::service::Context;
use crate::state::ContainerState;

/// Attaches `session` to container `id` until the container's output ends
/// or the client goes.
pub async fn run(ctx: Arc<Context>, id: String, session: Session) {
    let (session, outcome) = attach(&ctx, &id, session).await;
    session.finish(outcome).await;
}

async fn attach(ctx: &Context, id: &str, mut session: Session) -> (Session, Outcome) {
    let record = match container_of(ctx, id)
        .and_then(|r| require_state(ctx, &r, &[ContainerState::Running], "attach needs a running container").map(|_| r))
    {
        Ok(record) => record,
        Err(e) => return (session, Outcome::Failed(e.to_string())),
    };
    let request = MonitorRequest::Attach { id: id.to_owned(), stdin: session.stdin.is_some() };
    let conn = match crate::monitor::open(&record.pod_id, &socket_path(ctx, &record.pod_id), &request).await {
        Ok(conn) => conn,
        Err(e) => return (session, Outcome::Failed(e.to_string())),
    };
    let (reader, mut writer) = conn.into_split();
    let (frames_tx, mut frames) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    let mut tasks = Vec::new();
    if let Some(mut stdin) = session.stdin.take() {
        let tx = frames_tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(data) = stdin.read().await {
                if tx.send(attach::encode(attach::STDIN, &data)).await.is_err() {
                    return;
                }
            }
            let _ = tx.send(attach::encode(attach::STDIN_CLOSE, &[])).await;
        }));
    }
    if let Some(mut resizes) = session.resize.take() {
        let tx = frames_tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(size) = resizes.recv().await {
                let payload = attach::resize(size.width, size.height);
                if tx.send(attach::encode(attach::RESIZE, &payload)).await.is_err() {
                    return;
                }
            }
        }));
    }
    drop(frames_tx);
    tasks.push(tokio::spawn(async move {
        while let Some(frame) = frames.recv().await {
            if writer.write_all(&frame).await.is_err() {
                return;
            }
        }
        // Input is over, the attach is not: dropping the write half would
        // shut the connection's write side, which the monitor reads as a detach.
        std::future::pending::<()>().await;
        drop(writer);
    }));
    let mut stdout = session.stdout.take();
    let mut stderr = session.stderr.take();
    let mut gone = session.gone.clone();
    let copy = async {
        let mut reader = reader;
        let mut decoder = Decoder::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) => return Err(format!("read from the monitor: {e}")),
            };
            decoder.feed(&buf[..n]);
            while let Some(frame) = decoder.next_frame() {
                let (kind, payload) = frame.map_err(|e| format!("the monitor's attach stream: {e}"))?;
                let sink = match kind {
                    attach::STDOUT => stdout.as_mut(),
                    attach::STDERR => stderr.as_mut().or(stdout.as_mut()),
                    _ => None,
                };
                if let Some(sink) = sink
                    && sink.write(&payload).await.is_err()
                {
                    return Ok(());
                }
            }
        }
    };
    let outcome = tokio::select! {
        copied = copy => match copied {
            Ok(()) => Outcome::Exited(0),
            Err(message) => Outcome::Failed(message),
        },
        () = super::transport::went(&mut gone) => Outcome::Failed("the client went away".into()),
    };
    for task in tasks {
        task.abort();
    }
    for sink in [stdout.as_mut(), stderr.as_mut()].into_iter().flatten() {
        sink.close().await;
    }
    (session, outcome)
}
