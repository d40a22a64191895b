//! The per-pod monitor of bulkhead: one small, single-threaded process per
//! pod, started by the daemon (fork+exec, then detached: its own session,
//! not the daemon's child) and living as long as the pod. It holds the
//! pod's IPC and UTS namespaces (no pause image), is child subreaper for
//! the pod's containers, creates and starts them through the runtime core,
//! owns their stdio (writes the CRI log files, serves attach sessions), and records
//! every container's pid, start and exit durably under its directory; it
//! answers the daemon's requests (`bulkhead_proto::monitor`) on a unix
//! socket. It must not depend on the CRI server, the image store or the
//! network layer, must stay single-threaded (it clones containers), and
//! must stay small: it is paid once per pod on every node.

mod attach;
pub mod log;
mod server;

pub use server::{Options, run};
