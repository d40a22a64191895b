//! The native OCI runtime core of bulkhead (runtime-spec 1.x): it owns turning
//! a bundle into an isolated process — namespaces, mounts and pivot_root,
//! cgroups v1 and v2, capabilities, seccomp, rlimits, users and devices — and
//! the runc-compatible `bulkhead-oci` command. Today it holds the host probes
//! the daemon reports on: the cgroup hierarchy layout, the cgroup driver, and
//! the kernel features a container needs. It must not depend on the CRI, the
//! image store or the network layer, and its spawning path must never run in
//! a multi-threaded process (the daemon reaches it by fork+exec of a fresh,
//! single-threaded process).

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
pub mod resolve;
mod rootfs;
mod seccomp;
pub mod single_thread;
pub mod spec;
mod sys;

pub use error::{Error, Result};
