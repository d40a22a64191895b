//! The CRI side of bulkhead and its daemon: it owns the CRI v1 gRPC server
//! (`RuntimeService`, `ImageService`) on a unix socket, the streaming
//! server behind Exec, Attach and PortForward (SPDY and WebSocket), the daemon's
//! configuration, start-up and shutdown, the durable state of pods and
//! containers, per-object request ordering, and per-RPC tracing and metrics.
//! It maps CRI semantics onto the `image`, `network` and `runtime` crates and
//! is the only crate that turns errors into gRPC statuses. Nothing depends on
//! it. It must never clone a container itself: the daemon is multi-threaded,
//! so containers are started by single-threaded processes it fork+execs (the
//! per-pod monitor, `bulkhead-oci`).

pub mod cli;
pub mod config;
pub mod containers;
pub mod daemon;
mod error;
pub mod events;
pub mod locks;
pub mod metrics;
pub mod monitor;
pub mod pods;
pub mod service;
mod socket;
pub mod spec;
pub mod state;
pub mod streaming;

pub use error::{Error, Result};
