//! The daemon ↔ pod monitor protocol. The monitor of a pod listens on a
//! unix socket the daemon names (`<state>/sockets/<pod-id prefix>.sock`,
//! short enough for `sun_path`); the daemon connects,
//! writes one [`Request`] as a JSON line, reads one [`Response`] as a JSON
//! line, and the connection ends. What the monitor knows durably — each
//! container's pid, start, and exit — it writes as [`ContainerRecord`]s
//! under `<state>/pods/<pod-id>/containers/`, which the daemon reads
//! directly: the records, not the socket, are the truth that outlives
//! either process.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The directory of container records in the pod's state directory.
pub const CONTAINERS: &str = "containers";

/// One request to a pod's monitor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Creates container `id` from the OCI bundle at `bundle` (its init
    /// waits for `Start`); its stdout and stderr go to the CRI log at
    /// `log_path` (none: discarded). With `tty` (the bundle's
    /// `process.terminal`), its terminal's output goes there as stdout.
    /// With `stdin`, its stdin is a pipe the monitor holds open (for an
    /// attach to write to); else /dev/null.
    Create {
        id: String,
        bundle: PathBuf,
        log_path: Option<PathBuf>,
        #[serde(default)]
        tty: bool,
        #[serde(default)]
        stdin: bool,
    },
    /// Lets a created container run its program.
    Start { id: String },
    /// Sends `signal` to the container's init, or with `all` to every process in it.
    Signal { id: String, signal: i32, all: bool },
    /// Removes a stopped container's runtime state and record (kills it first if it runs).
    Delete { id: String },
    /// Closes and reopens the container's log file (after kubelet rotated it).
    ReopenLog { id: String },
    /// Stops the pod: kills every container, records their exits, exits.
    Shutdown,
}

/// The monitor's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Ok,
    /// The request failed; `message` says why, naming the object.
    Error {
        message: String,
    },
}

/// Where a container is in its life, as the monitor saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    Created,
    Running,
    Exited,
}

/// What the monitor records of one container, durably. Times are
/// nanoseconds since the Unix epoch; 0 is "not yet".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub state: ContainerState,
    /// The container's init process on the host.
    pub pid: i32,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    /// The exit status, or 128 + the signal that killed it.
    pub exit_code: i32,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// Whether the kernel's OOM killer killed a process of the container.
    pub oom_killed: bool,
    pub log_path: Option<PathBuf>,
}
