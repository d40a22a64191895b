//! The native OCI runtime core of bulkhead (runtime-spec 1.2): it owns
//! turning a bundle into an isolated process — namespaces (user, pid, mount,
//! network, ipc, uts, cgroup, time), the root filesystem (mounts resolved
//! inside the root, devices, pivot_root, masked and read-only paths), cgroups
//! v1 and v2, capabilities, seccomp, rlimits, users, hooks, terminals — the
//! container lifecycle and exec, the runc-compatible `bulkhead-oci` command,
//! and the host probes the daemon reports on. It must not depend on the CRI,
//! the image store or the network layer, and its spawning path refuses to run
//! in a multi-threaded process (the daemon reaches it by fork+exec of a
//! fresh, single-threaded process: the pod monitor or `bulkhead-oci`).

pub mod cgroups;
mod console;
pub mod container;
mod error;
mod hooks;
pub mod host;
mod init;
mod lsm;
pub mod mountinfo;
pub mod oci_cli;
mod procfs;
mod rootfs;
mod seccomp;
pub mod single_thread;
pub mod spec;
mod sys;

pub use console::{receive_master, receive_master_from};
/// Terminal helpers for callers that proxy a container's terminal.
pub mod terminal {
    pub use crate::console::set_size;
}
pub use error::{Error, Result};
