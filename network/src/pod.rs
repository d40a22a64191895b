//! A pod's network, start to end, in whichever mode is in force: its own
//! pinned namespace, then natively a lease, a veth on the bridge and its
//! host ports in bulkhead's nftables table, or in CNI mode the plugins'
//! ADD. Whatever a pod's network holds can be found again after a crash,
//! each piece recorded before what it names is made: the pinned namespace
//! (by its path), the lease, the pod's record (before its veth and host
//! ports), the CNI cache entry (before ADD). So teardown — after a
//! failure, a StopPodSandbox, or a restart — finds everything to undo; teardown is idempotent, and returns once the pod is cut off and
//! its address, ports and namespace are released (its veth is deleted in
//! the background). At start, `reconcile` tears down what no live pod
//! owns, sweeps stray veths and rebuilds the nftables table.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::cni::{Attachment, Bandwidth, Dns, RuntimeConfig};
use crate::nat::{self, HostPort, PortMapping};
use crate::native::POD_INTERFACE;
use crate::netns::NetNs;
use crate::{Error, Network, PodCidrs, Result};

/// How a pod was networked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// bulkhead's bridge, veth and nftables, over netlink.
    Native,
    /// The plugins of the CNI configuration.
    Cni,
}

/// What a pod asks of the network (from `RunPodSandbox`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRequest {
    pub pod_id: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub ports: Vec<PortMapping>,
    pub dns: Option<Dns>,
    pub bandwidth: Option<Bandwidth>,
    pub cgroup_parent: Option<String>,
}

/// A pod's network as made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNetwork {
    pub mode: Mode,
    /// The pinned network namespace, for the pod's processes to join.
    pub netns: PathBuf,
    /// The pod's addresses, IPv4 first: the pod IP, then additional IPs.
    pub addresses: Vec<IpNet>,
}

/// A pod's durable network record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PodRecord {
    pub(crate) pod_id: String,
    pub(crate) network: PodNetwork,
    pub(crate) ports: Vec<PortMapping>,
    pub(crate) args: Vec<(String, String)>,
}

/// What native mode last made node-wide: the bridge for these CIDRs, and
/// the nftables ruleset applied.
#[derive(Debug, Default)]
pub(crate) struct NodeState {
    bridge: Option<(PodCidrs, u32)>,
    applied: Option<(PodCidrs, Vec<HostPort>)>,
}

fn check_ports(ports: &[PortMapping]) -> Result<()> {
    for p in ports {
        if p.container_port == 0 {
            return Err(Error::InvalidPort {
                field: "container_port",
                reason: format!("0 for host port {}/{}", p.protocol.name(), p.host_port),
            });
        }
    }
    Ok(())
}

impl Network {
    /// The mode new pods get: CNI when the conf dir holds a configuration
    /// (even a broken one, whose error then names the fault), else native.
    pub fn mode(&self) -> Mode {
        match self.cni.network() {
            Ok(None) => Mode::Native,
            Ok(Some(_)) | Err(_) => Mode::Cni,
        }
    }

    fn netns_path(&self, pod_id: &str) -> PathBuf {
        self.options.netns_dir.join(pod_id)
    }

    /// The network of a pod, if it has one.
    pub fn pod(&self, pod_id: &str) -> Result<Option<PodNetwork>> {
        Ok(self.pods.get(pod_id)?.map(|r| r.network))
    }

    /// Makes the pod's network. On any failure everything made so far is
    /// undone before the error returns: no half-made pod.
    pub async fn setup(&self, request: &PodRequest) -> Result<PodNetwork> {
        bulkhead_store::validate_id(&request.pod_id)?;
        // Port 0 on the host side only documents a container port; kubelet sends those too.
        let ports: Vec<PortMapping> = request.ports.iter().copied().filter(|p| p.host_port != 0).collect();
        check_ports(&ports)?;
        let netns = self.netns_path(&request.pod_id);
        let attachment = Attachment::for_pod(&request.pod_id, &netns, &request.namespace, &request.name, &request.uid);
        let mut record = PodRecord {
            pod_id: request.pod_id.clone(),
            network: PodNetwork { mode: self.mode(), netns, addresses: Vec::new() },
            ports,
            args: attachment.args.clone(),
        };
        match self.make(&mut record, request, &attachment).await {
            Ok(()) => Ok(record.network),
            Err(e) => {
                let _ = self.teardown(&request.pod_id).await;
                Err(e)
            }
        }
    }

    async fn make(&self, record: &mut PodRecord, request: &PodRequest, attachment: &Attachment) -> Result<()> {
        let ns = NetNs::create(&record.network.netns)?;
        match record.network.mode {
            Mode::Native => {
                let cidrs = self.pod_cidrs();
                let bridge = self.bridge_for(&cidrs).await?;
                let lease = self.ipam.allocate(&record.pod_id, &cidrs)?;
                record.network.addresses = lease.addresses.clone();
                self.pods.put(&record.pod_id, record)?;
                self.native.attach_to(bridge, &record.pod_id, &ns, &lease, &cidrs).await?;
                self.apply_nat(None).await?;
            }
            Mode::Cni => {
                let runtime = RuntimeConfig {
                    port_mappings: record.ports.clone(),
                    bandwidth: request.bandwidth,
                    dns: request.dns.clone(),
                    ip_ranges: Vec::new(),
                    cgroup_path: request.cgroup_parent.clone(),
                };
                let attached = self.cni.add(attachment, &runtime).await?;
                record.network.addresses = attached.addresses;
                self.pods.put(&record.pod_id, record)?;
            }
        }
        Ok(())
    }

    /// The bridge for `cidrs`, made (and the CIDRs checked against the
    /// host's routes) the first time.
    async fn bridge_for(&self, cidrs: &PodCidrs) -> Result<u32> {
        let mut node = self.node.lock().await;
        if let Some((made_for, index)) = &node.bridge
            && made_for == cidrs
        {
            return Ok(*index);
        }
        self.native.check_routes(cidrs).await?;
        let index = self.native.ensure_bridge(cidrs).await?;
        node.bridge = Some((cidrs.clone(), index));
        Ok(index)
    }

    /// Brings bulkhead's nftables table in line with the native pods'
    /// records (less `leaving`): masquerade for the pod CIDRs, and every
    /// host port. A host port wanted twice is refused, naming it.
    async fn apply_nat(&self, leaving: Option<&str>) -> Result<()> {
        let mut node = self.node.lock().await;
        let mut ports = Vec::new();
        for (id, record) in self.pods.load_all()? {
            if record.network.mode != Mode::Native || Some(id.as_str()) == leaving {
                continue;
            }
            for address in &record.network.addresses {
                for p in &record.ports {
                    if p.host_ip.is_none_or(|ip| ip.is_ipv4() == address.addr().is_ipv4()) {
                        ports.push(p.to(address.addr()));
                    }
                }
            }
        }
        nat::check_conflicts(&ports)?;
        let cidrs = self.pod_cidrs();
        if node.applied.as_ref().is_some_and(|(c, p)| *c == cidrs && *p == ports) {
            return Ok(());
        }
        nat::apply(&self.native.bridge, &cidrs, &ports)?;
        node.applied = Some((cidrs, ports));
        Ok(())
    }

    /// Removes the pod's network — veth or CNI attachment, lease, host
    /// ports, namespace, record — whatever of it exists. Idempotent.
    pub async fn teardown(&self, pod_id: &str) -> Result<()> {
        bulkhead_store::validate_id(pod_id)?;
        let record = self.pods.get(pod_id)?;
        let netns = record.as_ref().map_or_else(|| self.netns_path(pod_id), |r| r.network.netns.clone());
        let mode = record.as_ref().map(|r| r.network.mode);
        let native = mode != Some(Mode::Cni);
        if native {
            // Cut off at once; the veth itself is deleted below, in the background.
            self.native.isolate(pod_id).await?;
            if self.ipam.release(pod_id)? || record.as_ref().is_some_and(|r| !r.ports.is_empty()) {
                self.apply_nat(Some(pod_id)).await?;
            }
        }
        if mode == Some(Mode::Cni) || self.cni.is_attached(pod_id, POD_INTERFACE)? {
            let args = record.as_ref().map(|r| r.args.clone()).unwrap_or_default();
            let attachment = Attachment {
                container_id: pod_id.to_owned(),
                netns: netns.clone(),
                ifname: POD_INTERFACE.to_owned(),
                args,
            };
            self.cni.del(&attachment).await?;
        }
        NetNs::remove(&netns)?;
        self.pods.delete(pod_id)?;
        if native {
            // Deleting a device waits for an RCU grace period (tens of
            // milliseconds) that nothing here needs to wait for: the veth is
            // down and its address free to reuse. Usually the namespace's
            // destruction has removed it already; a crash before this ran
            // is swept by `reconcile`.
            let (native, pod_id) = (self.native.clone(), pod_id.to_owned());
            tokio::spawn(async move {
                if let Err(e) = native.detach(&pod_id).await {
                    tracing::warn!(pod_id, error = %e, "deleting a torn-down pod's veth failed; the next start sweeps it");
                }
            });
        }
        Ok(())
    }

    /// At daemon start: tears down the network of every pod not in `live`
    /// (and leases, attachments and namespaces nothing records), then
    /// rebuilds the bridge and the nftables table of the native pods that
    /// remain, and asks CNI 1.1 plugins to collect their garbage.
    pub async fn reconcile(&self, live: &[String]) -> Result<()> {
        let live: BTreeSet<&str> = live.iter().map(String::as_str).collect();
        let mut ids: BTreeSet<String> = self.pods.load_all()?.into_iter().map(|(id, _)| id).collect();
        ids.extend(self.ipam.leases()?.into_iter().map(|l| l.pod_id));
        ids.extend(self.cni.attached()?);
        ids.extend(pinned_namespaces(&self.options.netns_dir)?);
        for id in ids.iter().filter(|id| !live.contains(id.as_str())) {
            self.teardown(id).await?;
        }
        let records = self.pods.load_all()?;
        let native: Vec<String> =
            records.iter().filter(|(_, r)| r.network.mode == Mode::Native).map(|(id, _)| id.clone()).collect();
        for veth in self.native.sweep(&native).await? {
            tracing::info!(veth, "deleted a veth no pod owns");
        }
        if !native.is_empty() {
            self.bridge_for(&self.pod_cidrs()).await?;
            self.apply_nat(None).await?;
        }
        let cni_pods: Vec<String> =
            records.iter().filter(|(_, r)| r.network.mode == Mode::Cni).map(|(id, _)| id.clone()).collect();
        if self.mode() == Mode::Cni {
            self.cni.gc(&cni_pods).await?;
        }
        Ok(())
    }
}

/// One interface's traffic counters, as /proc/net/dev shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceCounters {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_errors: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
}

/// Parses /proc/net/dev: every interface but loopback.
fn parse_net_dev(text: &str) -> Vec<InterfaceCounters> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let fields: Vec<u64> = rest.split_whitespace().filter_map(|f| f.parse().ok()).collect();
            let name = name.trim();
            (name != "lo" && fields.len() >= 11).then(|| InterfaceCounters {
                name: name.to_owned(),
                rx_bytes: fields[0],
                rx_errors: fields[2],
                tx_bytes: fields[8],
                tx_errors: fields[10],
            })
        })
        .collect()
}

impl Network {
    /// The traffic counters of the interfaces inside the pod's network
    /// namespace (eth0 first); none for a pod without one.
    pub fn pod_interfaces(&self, pod_id: &str) -> Result<Vec<InterfaceCounters>> {
        let Some(pod) = self.pod(pod_id)? else { return Ok(Vec::new()) };
        let text = NetNs { path: pod.netns }
            .run(|| std::fs::read_to_string("/proc/thread-self/net/dev"))?
            .map_err(|source| Error::Io { op: "read", path: "/proc/thread-self/net/dev".into(), source })?;
        let mut interfaces = parse_net_dev(&text);
        interfaces.sort_by_key(|i| i.name != POD_INTERFACE);
        Ok(interfaces)
    }
}

/// The pod ids with a namespace pinned in `dir`.
fn pinned_namespaces(dir: &Path) -> Result<Vec<String>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => Ok(entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(Error::Io { op: "list pinned namespaces", path: dir.to_owned(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_counters_are_read_without_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
            face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
            lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  \
            eth0:    5000      40    2    0    0     0          0         0     3000      30    1    0    0     0       0          0\n";
        let got = parse_net_dev(text);
        assert_eq!(
            got,
            [InterfaceCounters { name: "eth0".into(), rx_bytes: 5000, rx_errors: 2, tx_bytes: 3000, tx_errors: 1 }]
        );
    }
}
