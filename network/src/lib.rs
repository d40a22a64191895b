//! Pod networking for bulkhead: it owns network namespaces, the bridge, veth
//! pairs, addresses and routes (through netlink, never by running `ip`), IP
//! address management over the pod CIDRs, NAT and host ports in an
//! nftables table of its own, and running standard CNI plugins when a CNI
//! configuration is present. [`Network`] is its face: `setup` and
//! `teardown` of one pod's network in the mode in force (native or CNI),
//! `reconcile` at daemon start, and the readiness the CRI reports. Every
//! pod's network is recorded on disk before it is made, so nothing is left
//! half-made by a failure or a crash. It must not depend on the CRI
//! server, the image store or the runtime core, and writes container files
//! (resolv.conf, hosts) never: that is the CRI server's job.

mod cidr;
pub mod cni;
mod error;
pub mod ipam;
pub mod nat;
pub mod native;
pub mod netns;
pub mod pod;
mod state;
mod sys;

pub use cidr::PodCidrs;
pub use error::{Error, Result};
pub use pod::{InterfaceCounters, Mode, PodNetwork, PodRequest};
pub use state::{Network, Options, Readiness};
