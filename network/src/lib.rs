//! Pod networking for bulkhead: it owns network namespaces, the bridge, veth
//! pairs, addresses and routes (through netlink, never by running `ip`), IP
//! address management over the pod CIDRs, NAT and host ports, and running
//! standard CNI plugins when a CNI configuration is present. Built so far:
//! the pod CIDRs (from the config file or kubelet's `UpdateRuntimeConfig`,
//! persisted), durable IPAM leases, pinned pod network namespaces, and the
//! native bridge and veth plumbing over rtnetlink (hairpin on), and in an
//! nftables table of our own masquerade of pod traffic leaving the pod
//! CIDRs and host ports; CNI and the CRI wiring are to come, so it reports
//! that pod networking is not ready yet. It must not depend on the CRI server, the image store or
//! the runtime core.

mod cidr;
pub mod cni;
mod error;
pub mod ipam;
pub mod nat;
pub mod native;
pub mod netns;
mod state;
mod sys;

pub use cidr::PodCidrs;
pub use error::{Error, Result};
pub use state::{Network, Readiness};
