//! Address management over the pod CIDRs: one IPv4 and/or one IPv6 address
//! per pod, the first free one after the gateway (the first host address,
//! which the bridge holds), with each pod's lease written durably before it
//! is handed out, so a restart never gives an address twice and removal
//! frees it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;

use bulkhead_store::Collection;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{Error, PodCidrs, Result};

/// The addresses one pod holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub pod_id: String,
    /// Each address with its network's prefix length.
    pub addresses: Vec<IpNet>,
}

/// The addresses pods may get: the network's hosts less the network
/// address itself (IPv6 lists it: the subnet-router anycast address).
fn usable(net: &IpNet) -> impl Iterator<Item = IpAddr> + '_ {
    net.hosts().filter(move |a| *a != net.network())
}

/// The gateway of a pod network: its first usable address.
pub fn gateway(net: &IpNet) -> Option<IpAddr> {
    usable(net).next()
}

/// Leases under `<root>/network/leases`.
#[derive(Debug)]
pub struct Ipam {
    leases: Collection<Lease>,
    /// Every lease, as on disk; the lock serializes allocations so two
    /// pods never get the same address.
    held: Mutex<BTreeMap<String, Lease>>,
}

impl Ipam {
    pub fn open(network_root: &Path) -> Result<Ipam> {
        let leases = Collection::open(network_root.join("leases"))?;
        let held = leases.load_all()?.into_iter().collect();
        Ok(Ipam { leases, held: Mutex::new(held) })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Lease>> {
        // Entries change only after their file did: a panicked holder leaves it consistent.
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The lease of `pod_id`, if it has one.
    pub fn lease(&self, pod_id: &str) -> Result<Option<Lease>> {
        Ok(self.held().get(pod_id).cloned())
    }

    /// Every lease.
    pub fn leases(&self) -> Result<Vec<Lease>> {
        Ok(self.held().values().cloned().collect())
    }

    /// Gives `pod_id` one address in each of `cidrs` (its existing lease if
    /// it has one), recorded durably before it returns.
    pub fn allocate(&self, pod_id: &str, cidrs: &PodCidrs) -> Result<Lease> {
        let mut held = self.held();
        if let Some(lease) = held.get(pod_id) {
            return Ok(lease.clone());
        }
        if cidrs.is_empty() {
            return Err(Error::NoPodCidr);
        }
        let taken: BTreeSet<IpAddr> = held.values().flat_map(|l| l.addresses.iter().map(|a| a.addr())).collect();
        let mut addresses = Vec::new();
        for net in cidrs.nets() {
            let gw = gateway(net);
            let free = usable(net)
                .filter(|a| Some(*a) != gw)
                .find(|a| !taken.contains(a))
                .ok_or_else(|| Error::PoolExhausted { cidr: net.to_string() })?;
            addresses
                .push(IpNet::new(free, net.prefix_len()).map_err(|_| Error::PoolExhausted { cidr: net.to_string() })?);
        }
        let lease = Lease { pod_id: pod_id.to_owned(), addresses };
        self.leases.put(pod_id, &lease)?;
        held.insert(pod_id.to_owned(), lease.clone());
        Ok(lease)
    }

    /// Frees the lease of `pod_id`; returns whether it had one.
    pub fn release(&self, pod_id: &str) -> Result<bool> {
        let mut held = self.held();
        let had = self.leases.delete(pod_id)?;
        held.remove(pod_id);
        Ok(had)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_unique_durable_and_freed() {
        let dir = tempfile::tempdir().unwrap();
        let cidrs = PodCidrs::parse("10.244.1.0/24,fd00:10:244:1::/64").unwrap();
        let ipam = Ipam::open(dir.path()).unwrap();
        let a = ipam.allocate("pod-a", &cidrs).unwrap();
        let b = ipam.allocate("pod-b", &cidrs).unwrap();
        assert_eq!(a.addresses[0].to_string(), "10.244.1.2/24", "after the gateway .1");
        assert_eq!(a.addresses[1].to_string(), "fd00:10:244:1::2/64");
        assert_eq!(b.addresses[0].to_string(), "10.244.1.3/24");
        assert_eq!(ipam.allocate("pod-a", &cidrs).unwrap(), a, "the same lease again");
        drop(ipam);
        // After a restart: no address twice.
        let ipam = Ipam::open(dir.path()).unwrap();
        let c = ipam.allocate("pod-c", &cidrs).unwrap();
        assert_eq!(c.addresses[0].to_string(), "10.244.1.4/24");
        assert!(ipam.release("pod-a").unwrap());
        assert!(!ipam.release("pod-a").unwrap());
        let d = ipam.allocate("pod-d", &cidrs).unwrap();
        assert_eq!(d.addresses[0].to_string(), "10.244.1.2/24", "a freed address is reused");
    }

    #[test]
    fn an_exhausted_pool_and_no_cidr_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path()).unwrap();
        // A /30 has two hosts: the gateway and one pod.
        let small = PodCidrs::parse("10.9.0.0/30").unwrap();
        ipam.allocate("p1", &small).unwrap();
        let err = ipam.allocate("p2", &small).unwrap_err();
        assert!(matches!(&err, Error::PoolExhausted { cidr } if cidr == "10.9.0.0/30"), "{err}");
        assert!(ipam.lease("p2").unwrap().is_none(), "nothing half-made");
        assert!(matches!(ipam.allocate("p3", &PodCidrs::default()), Err(Error::NoPodCidr)));
    }
}
