use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bulkhead_store::Collection;
use serde::{Deserialize, Serialize};

use crate::{PodCidrs, Result};

/// The record id under which kubelet's pod CIDRs are kept.
const POD_CIDRS_ID: &str = "pod-cidrs";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PodCidrsRecord {
    pod_cidrs: PodCidrs,
}

/// Whether pods can get a network, with the reason when they cannot, as the
/// CRI `NetworkReady` condition reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// CamelCase reason; empty when ready.
    pub reason: String,
    pub message: String,
}

/// The node's network layer and its durable state under `<root>/network`.
#[derive(Debug)]
pub struct Network {
    records: Collection<PodCidrsRecord>,
    configured: PodCidrs,
    /// The CIDRs kubelet sent last, which take precedence over `configured`.
    from_kubelet: Mutex<Option<PodCidrs>>,
}

impl Network {
    /// Opens the network state below `network_root` (`<root>/network`);
    /// `configured` are the pod CIDRs from the config file.
    pub fn open(network_root: &Path, configured: PodCidrs) -> Result<Network> {
        let records: Collection<PodCidrsRecord> = Collection::open(network_root.join("state"))?;
        let from_kubelet = records.get(POD_CIDRS_ID)?.map(|r| r.pod_cidrs);
        Ok(Network { records, configured, from_kubelet: Mutex::new(from_kubelet) })
    }

    fn kubelet_cidrs(&self) -> MutexGuard<'_, Option<PodCidrs>> {
        // The value is replaced whole, so a panicked holder cannot leave it half-written.
        self.from_kubelet.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The pod CIDRs in force: kubelet's, else the configured ones.
    pub fn pod_cidrs(&self) -> PodCidrs {
        self.kubelet_cidrs().clone().unwrap_or_else(|| self.configured.clone())
    }

    /// The CIDRs kubelet sent, if it ever did.
    pub fn pod_cidrs_from_kubelet(&self) -> Option<PodCidrs> {
        self.kubelet_cidrs().clone()
    }

    /// Records the pod CIDRs kubelet sent, durably, before they take effect.
    /// Blocks on disk I/O. An empty value is ignored, as the CRI asks.
    pub fn set_pod_cidrs(&self, cidrs: PodCidrs) -> Result<()> {
        if cidrs.is_empty() {
            return Ok(());
        }
        let mut current = self.kubelet_cidrs();
        if current.as_ref() == Some(&cidrs) {
            return Ok(());
        }
        self.records.put(POD_CIDRS_ID, &PodCidrsRecord { pod_cidrs: cidrs.clone() })?;
        *current = Some(cidrs);
        Ok(())
    }

    /// Whether pods can be given a network now.
    pub fn readiness(&self) -> Readiness {
        Readiness {
            ready: false,
            reason: "NetworkNotImplemented".into(),
            message: "pod networking (native netlink and CNI) is not implemented in this bulkhead version".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_cidrs_persist_and_take_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let configured = PodCidrs::parse("10.88.0.0/16").unwrap();
        let net = Network::open(dir.path(), configured.clone()).unwrap();
        assert_eq!(net.pod_cidrs(), configured);
        net.set_pod_cidrs(PodCidrs::parse("").unwrap()).unwrap();
        assert_eq!(net.pod_cidrs_from_kubelet(), None);
        let kubelet = PodCidrs::parse("10.244.3.0/24,fd00::/64").unwrap();
        net.set_pod_cidrs(kubelet.clone()).unwrap();
        drop(net);
        let net = Network::open(dir.path(), configured).unwrap();
        assert_eq!(net.pod_cidrs(), kubelet);
        assert!(!net.readiness().ready);
    }
}
