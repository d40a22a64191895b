use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bulkhead_store::Collection;
use serde::{Deserialize, Serialize};

use crate::cni::{self, Cni};
use crate::ipam::Ipam;
use crate::native::Native;
use crate::pod::{Mode, NodeState, PodRecord};
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

/// How the node's pods are networked, from the daemon's configuration.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where pod network namespaces are pinned (`<state>/netns`).
    pub netns_dir: PathBuf,
    /// Native mode's bridge and MTU.
    pub bridge: String,
    pub mtu: u32,
    /// CNI mode, in force when the conf dir holds a configuration.
    pub cni: cni::Settings,
}

/// The node's network layer and its durable state under `<root>/network`.
#[derive(Debug)]
pub struct Network {
    records: Collection<PodCidrsRecord>,
    configured: PodCidrs,
    /// The CIDRs kubelet sent last, which take precedence over `configured`.
    from_kubelet: Mutex<Option<PodCidrs>>,
    pub(crate) options: Options,
    pub(crate) native: Native,
    pub(crate) ipam: Ipam,
    pub(crate) cni: Cni,
    /// Each pod's network, written before its veth or CNI result is relied on.
    pub(crate) pods: Collection<PodRecord>,
    /// Native mode's node-wide state, changed one pod at a time.
    pub(crate) node: tokio::sync::Mutex<NodeState>,
}

impl Network {
    /// Opens the network state below `network_root` (`<root>/network`);
    /// `configured` are the pod CIDRs from the config file.
    pub fn open(network_root: &Path, configured: PodCidrs, options: Options) -> Result<Network> {
        let records: Collection<PodCidrsRecord> = Collection::open(network_root.join("state"))?;
        let from_kubelet = records.get(POD_CIDRS_ID)?.map(|r| r.pod_cidrs);
        Ok(Network {
            records,
            configured,
            from_kubelet: Mutex::new(from_kubelet),
            native: Native { bridge: options.bridge.clone(), mtu: options.mtu },
            ipam: Ipam::open(network_root)?,
            cni: Cni::open(options.cni.clone(), &network_root.join("cni"))?,
            pods: Collection::open(network_root.join("pods"))?,
            node: tokio::sync::Mutex::new(NodeState::default()),
            options,
        })
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

    /// Whether pods can be given a network now: in CNI mode, whether the
    /// configuration and its plugins are usable; natively, whether a pod
    /// CIDR is set.
    pub async fn readiness(&self) -> Readiness {
        if self.mode() == Mode::Cni {
            return self.cni.readiness().await;
        }
        if self.pod_cidrs().is_empty() {
            return Readiness {
                ready: false,
                reason: "NoPodCidr".into(),
                message: crate::Error::NoPodCidr.to_string(),
            };
        }
        Readiness { ready: true, reason: String::new(), message: String::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn options(dir: &Path) -> Options {
        Options {
            netns_dir: dir.join("netns"),
            bridge: "bhunit0".into(),
            mtu: 1500,
            cni: cni::Settings {
                conf_dir: dir.join("net.d"),
                bin_dirs: vec![],
                timeout: std::time::Duration::from_secs(5),
            },
        }
    }

    #[tokio::test]
    async fn kubelet_cidrs_persist_and_take_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let configured = PodCidrs::parse("10.88.0.0/16").unwrap();
        let net = Network::open(dir.path(), configured.clone(), options(dir.path())).unwrap();
        assert_eq!(net.pod_cidrs(), configured);
        assert!(net.readiness().await.ready);
        net.set_pod_cidrs(PodCidrs::parse("").unwrap()).unwrap();
        assert_eq!(net.pod_cidrs_from_kubelet(), None);
        let kubelet = PodCidrs::parse("10.244.3.0/24,fd00::/64").unwrap();
        net.set_pod_cidrs(kubelet.clone()).unwrap();
        drop(net);
        let net = Network::open(dir.path(), configured, options(dir.path())).unwrap();
        assert_eq!(net.pod_cidrs(), kubelet);
    }

    #[tokio::test]
    async fn readiness_says_why_not() {
        let dir = tempfile::tempdir().unwrap();
        let net = Network::open(dir.path(), PodCidrs::default(), options(dir.path())).unwrap();
        let r = net.readiness().await;
        assert!(!r.ready && r.reason == "NoPodCidr" && r.message.contains("network.pod_cidr"), "{r:?}");
        // A CNI configuration puts the node in CNI mode, whose plugins are missing here.
        std::fs::create_dir_all(dir.path().join("net.d")).unwrap();
        std::fs::write(
            dir.path().join("net.d/10-x.conflist"),
            r#"{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        let r = net.readiness().await;
        assert!(!r.ready && r.reason == "NetworkPluginNotReady" && r.message.contains("bridge"), "{r:?}");
    }
}
