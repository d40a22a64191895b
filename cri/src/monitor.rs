//! The daemon's side of the pod monitor: starting one (fork+exec of
//! `bulkhead-monitor`, which detaches and says `ready <pid>`), asking it
//! things over its socket, and reading the container records it writes.
//! The monitor's binary sits beside the daemon's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bulkhead_proto::monitor::{CONTAINERS, ContainerRecord, Request, Response};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::{Error, Result};

/// How long a monitor may take to say it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may take (Shutdown waits for containers to die).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A program installed beside the running `bulkhead` binary.
pub fn sibling_binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

/// What a new monitor is to hold.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    pub pod_id: &'a str,
    pub dir: &'a Path,
    pub socket: &'a Path,
    pub runtime_root: &'a Path,
    pub hostname: Option<&'a str>,
    pub new_ipc: bool,
    pub new_pid: bool,
    pub cgroup: &'a Path,
}

/// Starts the monitor of a pod; returns its pid once it serves.
pub async fn spawn(launch: &Launch<'_>) -> Result<i32> {
    let failed = |message: String| Error::Monitor { pod_id: launch.pod_id.to_owned(), message };
    let binary = sibling_binary("bulkhead-monitor");
    let mut command = tokio::process::Command::new(&binary);
    command
        .arg("--pod-id")
        .arg(launch.pod_id)
        .arg("--dir")
        .arg(launch.dir)
        .arg("--runtime-root")
        .arg(launch.runtime_root)
        .arg("--socket")
        .arg(launch.socket)
        .arg("--cgroup")
        .arg(launch.cgroup)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(hostname) = launch.hostname {
        command.arg("--hostname").arg(hostname);
    }
    if launch.new_ipc {
        command.arg("--new-ipc");
    }
    if launch.new_pid {
        command.arg("--new-pid");
    }
    let mut child = command.spawn().map_err(|e| failed(format!("start {}: {e}", binary.display())))?;
    let stdout = child.stdout.take().ok_or_else(|| failed("no stdout".into()))?;
    let mut stderr = child.stderr.take().ok_or_else(|| failed("no stderr".into()))?;
    let mut line = String::new();
    let read = tokio::time::timeout(START_TIMEOUT, BufReader::new(stdout).read_line(&mut line)).await;
    // The launcher exits at once; the monitor itself is not our child.
    let _ = child.wait().await;
    let mut errors = String::new();
    let _ = tokio::time::timeout(Duration::from_millis(200), stderr.read_to_string(&mut errors)).await;
    match read {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(failed(format!("read its readiness: {e}"))),
        Err(_) => return Err(failed(format!("not ready within {START_TIMEOUT:?}"))),
    }
    line.trim()
        .strip_prefix("ready ")
        .and_then(|pid| pid.parse().ok())
        .ok_or_else(|| failed(format!("did not start: {}", errors.trim())))
}

/// Sends one request to the monitor on `socket` and waits for its answer.
pub async fn ask(pod_id: &str, socket: &Path, request: &Request) -> Result<()> {
    open(pod_id, socket, request).await.map(drop)
}

/// Sends `request` and reads the answer; on `Ok`, returns the connection,
/// which an attach goes on using. The answer is read a byte at a time so
/// that nothing after its line is taken from the connection.
pub async fn open(pod_id: &str, socket: &Path, request: &Request) -> Result<tokio::net::UnixStream> {
    let failed = |message: String| Error::Monitor { pod_id: pod_id.to_owned(), message };
    let exchange = async {
        let mut conn = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|e| failed(format!("connect: {e} (is the monitor gone?)")))?;
        let mut text = serde_json::to_string(request).map_err(|e| failed(format!("encode: {e}")))?;
        text.push('\n');
        conn.write_all(text.as_bytes()).await.map_err(|e| failed(format!("send: {e}")))?;
        let mut line = Vec::new();
        loop {
            let byte = conn.read_u8().await.map_err(|e| failed(format!("read the answer: {e}")))?;
            if byte == b'\n' {
                break;
            }
            line.push(byte);
        }
        match serde_json::from_slice::<Response>(&line) {
            Ok(Response::Ok) => Ok(conn),
            Ok(Response::Error { message }) => Err(failed(message)),
            Err(e) => Err(failed(format!("bad answer {:?}: {e}", String::from_utf8_lossy(&line)))),
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| failed(format!("no answer within {REQUEST_TIMEOUT:?}")))?
}

/// Whether a monitor answers on `socket`.
pub fn is_serving(socket: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(socket).is_ok()
}

/// The record the monitor in `dir` keeps of container `id`.
pub fn record(dir: &Path, id: &str) -> Option<ContainerRecord> {
    let bytes = std::fs::read(dir.join(CONTAINERS).join(format!("{id}.json"))).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes a container record in the monitor's place (for a pod whose
/// monitor died), atomically.
pub fn put_record(dir: &Path, record: &ContainerRecord) -> Result<()> {
    let records: bulkhead_store::Collection<ContainerRecord> = bulkhead_store::Collection::open(dir.join(CONTAINERS))?;
    Ok(records.put(&record.id, record)?)
}

/// Every container record the monitor in `dir` keeps.
pub fn records(dir: &Path) -> HashMap<String, ContainerRecord> {
    let Ok(entries) = std::fs::read_dir(dir.join(CONTAINERS)) else { return HashMap::new() };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let id = name.strip_suffix(".json")?;
            record(dir, id).map(|r| (id.to_owned(), r))
        })
        .collect()
}
