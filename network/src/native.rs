//! Native pod networking over netlink (rtnetlink), bulkhead's default: a
//! Linux bridge that holds each pod CIDR's gateway address, and per pod a
//! veth pair — the host end on the bridge, the other end moved into the
//! pod's namespace and named `eth0`, with the pod's addresses and default
//! routes via the gateways. Nothing here runs `ip`.

use std::net::IpAddr;
use std::os::fd::AsRawFd;

use futures_util::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::ipam::{Lease, gateway};
use crate::netns::NetNs;
use crate::{Error, PodCidrs, Result};

/// The pod's interface name inside its namespace.
pub const POD_INTERFACE: &str = "eth0";

fn nl(op: &'static str, what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Error {
    let what = what.into();
    move |e| Error::Netlink { op, what, message: e.to_string() }
}

/// A netlink handle in the calling thread's network namespace.
fn connect() -> Result<Handle> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(|source| Error::Io {
        op: "open netlink socket",
        path: "netlink".into(),
        source,
    })?;
    tokio::spawn(connection);
    Ok(handle)
}

async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(Some(link.header.index)),
        Ok(None) => Ok(None),
        // The kernel answers ENODEV for a name it does not know.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -nix::libc::ENODEV => Ok(None),
        Err(e) => Err(nl("look up link", name)(e)),
    }
}

/// The name of link `index`.
async fn link_name(handle: &Handle, index: u32) -> Option<String> {
    let mut links = handle.link().get().match_index(index).execute();
    let link = links.try_next().await.ok()??;
    link.attributes.into_iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name),
        _ => None,
    })
}

/// The kernel's main routing table (RT_TABLE_MAIN).
const MAIN_TABLE: u32 = 254;

/// Adds `addr/prefix` to link `index`, tolerating it being there already.
/// IPv6 addresses skip duplicate address detection (IPAM made them
/// unique), so they work at once instead of after DAD's second or so.
async fn add_address(handle: &Handle, index: u32, net: &IpNet, what: &str) -> Result<()> {
    let mut request = handle.address().add(index, net.addr(), net.prefix_len());
    if net.addr().is_ipv6() {
        request.message_mut().attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    match request.execute().await {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -nix::libc::EEXIST => Ok(()),
        Err(e) => Err(nl("add address", format!("{net} on {what}"))(e)),
    }
}

/// The host end of a pod's veth pair, stable from the pod id.
fn veth_name(pod_id: &str) -> String {
    let short: String = pod_id.chars().filter(|c| c.is_ascii_alphanumeric()).take(11).collect();
    format!("bh{short}")
}

/// Turns on IP forwarding for each family among `cidrs` (the sysctls
/// `net.ipv4.ip_forward`, `net.ipv6.conf.all.forwarding`), as the CNI
/// bridge plugin does; a node that runs pods needs it and keeps it on.
fn enable_forwarding(cidrs: &PodCidrs) -> Result<()> {
    for net in cidrs.nets() {
        let path = match net {
            IpNet::V4(_) => "/proc/sys/net/ipv4/ip_forward",
            IpNet::V6(_) => "/proc/sys/net/ipv6/conf/all/forwarding",
        };
        if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1") {
            continue;
        }
        std::fs::write(path, "1").map_err(|source| Error::Io {
            op: "turn on forwarding",
            path: path.into(),
            source,
        })?;
    }
    Ok(())
}

/// The node's native network: one bridge.
#[derive(Debug, Clone)]
pub struct Native {
    pub bridge: String,
    pub mtu: u32,
}

impl Native {
    /// Creates the bridge if needed, with the gateway of each pod CIDR, and
    /// brings it up; turns on forwarding for the CIDRs' families, as pod
    /// traffic leaving the node is routed. Idempotent.
    pub async fn ensure_bridge(&self, cidrs: &PodCidrs) -> Result<u32> {
        enable_forwarding(cidrs)?;
        let handle = connect()?;
        let index = match link_index(&handle, &self.bridge).await? {
            Some(index) => index,
            None => {
                handle
                    .link()
                    .add(LinkBridge::new(&self.bridge).mtu(self.mtu).build())
                    .execute()
                    .await
                    .map_err(nl("create bridge", &self.bridge))?;
                link_index(&handle, &self.bridge).await?.ok_or_else(|| Error::Netlink {
                    op: "create bridge",
                    what: self.bridge.clone(),
                    message: "not there after creation".into(),
                })?
            }
        };
        for net in cidrs.nets() {
            if let Some(gw) = gateway(net) {
                let gw_net =
                    IpNet::new(gw, net.prefix_len()).map_err(|_| Error::PoolExhausted { cidr: net.to_string() })?;
                add_address(&handle, index, &gw_net, &self.bridge).await?;
            }
        }
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(nl("bring up", &self.bridge))?;
        Ok(index)
    }

    /// Removes the bridge (veths still on it are released, not deleted:
    /// detach pods first). Idempotent.
    pub async fn remove_bridge(&self) -> Result<()> {
        let handle = connect()?;
        if let Some(index) = link_index(&handle, &self.bridge).await? {
            handle.link().del(index).execute().await.map_err(nl("delete bridge", &self.bridge))?;
        }
        Ok(())
    }

    /// Refuses pod CIDRs that overlap a route of the host's main table
    /// through another interface than the bridge (a LAN, a VPN, a cluster
    /// route): pods would shadow, or be shadowed by, real destinations.
    /// The default route is no overlap.
    pub async fn check_routes(&self, cidrs: &PodCidrs) -> Result<()> {
        let handle = connect()?;
        let bridge = link_index(&handle, &self.bridge).await?;
        for pod_net in cidrs.nets() {
            let query = match pod_net {
                IpNet::V4(_) => RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
                IpNet::V6(_) => RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
            };
            let mut routes = handle.route().get(query).execute();
            while let Some(route) = routes.try_next().await.map_err(nl("list routes", "main table"))? {
                let prefix = route.header.destination_prefix_length;
                let (mut dst, mut oif, mut table) = (None, None, u32::from(route.header.table));
                for attr in &route.attributes {
                    match attr {
                        RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = Some(IpAddr::V4(*a)),
                        RouteAttribute::Destination(RouteAddress::Inet6(a)) => dst = Some(IpAddr::V6(*a)),
                        RouteAttribute::Oif(i) => oif = Some(*i),
                        RouteAttribute::Table(t) => table = *t,
                        _ => {}
                    }
                }
                let Some(route_net) = dst.and_then(|d| IpNet::new(d, prefix).ok()) else { continue };
                let overlaps = route_net.contains(&pod_net.network()) || pod_net.contains(&route_net.network());
                if table == MAIN_TABLE && prefix > 0 && overlaps && oif.is_some() && oif != bridge {
                    let device = match oif {
                        Some(index) => link_name(&handle, index).await.unwrap_or_else(|| format!("#{index}")),
                        None => String::new(),
                    };
                    return Err(Error::CidrOverlapsRoute {
                        cidr: pod_net.to_string(),
                        route: route_net.trunc().to_string(),
                        device,
                    });
                }
            }
        }
        Ok(())
    }

    /// Gives the pod in `ns` its veth, addresses and default routes. On any
    /// failure the veth is deleted again: no half-configured pod.
    pub async fn attach(&self, pod_id: &str, ns: &NetNs, lease: &Lease, cidrs: &PodCidrs) -> Result<String> {
        let bridge = self.ensure_bridge(cidrs).await?;
        self.attach_to(bridge, pod_id, ns, lease, cidrs).await
    }

    /// [`Native::attach`] to a bridge already ensured (`bridge` is its index).
    pub async fn attach_to(
        &self,
        bridge: u32,
        pod_id: &str,
        ns: &NetNs,
        lease: &Lease,
        cidrs: &PodCidrs,
    ) -> Result<String> {
        let host_end = veth_name(pod_id);
        let attached = self.attach_inner(bridge, &host_end, ns, lease, cidrs).await;
        if attached.is_err() {
            let _ = self.detach(pod_id).await;
        }
        attached.map(|()| host_end)
    }

    async fn attach_inner(
        &self,
        bridge: u32,
        host_end: &str,
        ns: &NetNs,
        lease: &Lease,
        cidrs: &PodCidrs,
    ) -> Result<()> {
        let handle = connect()?;
        let ns_file = std::fs::File::open(&ns.path).map_err(|source| Error::Io {
            op: "open namespace",
            path: ns.path.clone(),
            source,
        })?;
        // The pod end is made inside the pod's namespace, already named
        // eth0: moving a device between namespaces waits for an RCU grace
        // period (tens of milliseconds), creating it there does not. The
        // host end is born on the bridge and up.
        let pod_end = LinkUnspec::new_with_name(POD_INTERFACE).mtu(self.mtu).setns_by_fd(ns_file.as_raw_fd()).build();
        let veth = LinkVeth::new(host_end, POD_INTERFACE)
            .mtu(self.mtu)
            .controller(bridge)
            .up()
            .set_info_data(InfoData::Veth(InfoVeth::Peer(pod_end)))
            .build();
        handle.link().add(veth).execute().await.map_err(nl("create veth pair", host_end))?;
        let host_index = link_index(&handle, host_end).await?.ok_or_else(|| Error::Netlink {
            op: "create veth pair",
            what: host_end.to_owned(),
            message: "not there after creation".into(),
        })?;
        // Hairpin: a pod reaching its own host port has its packets sent
        // back out of the bridge port they came in on.
        handle
            .link()
            .set_port(LinkBridgePort::new(host_index).hairpin(true).build())
            .execute()
            .await
            .map_err(nl("turn on hairpin mode", host_end))?;
        // Inside the namespace, on a thread of its own with a netlink socket made there.
        let addresses = lease.addresses.clone();
        let gateways: Vec<IpAddr> = cidrs.nets().iter().filter_map(gateway).collect();
        ns.run(move || -> Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| Error::Io { op: "start a netlink runtime", path: "netlink".into(), source })?;
            runtime.block_on(async move {
                let handle = connect()?;
                let index = link_index(&handle, POD_INTERFACE).await?.ok_or_else(|| Error::Netlink {
                    op: "find the pod end inside",
                    what: POD_INTERFACE.to_owned(),
                    message: "missing".into(),
                })?;
                for net in &addresses {
                    add_address(&handle, index, net, POD_INTERFACE).await?;
                }
                handle
                    .link()
                    .set(LinkUnspec::new_with_index(index).up().build())
                    .execute()
                    .await
                    .map_err(nl("bring up", POD_INTERFACE))?;
                for gw in gateways {
                    let route = match gw {
                        IpAddr::V4(v4) => RouteMessageBuilder::<std::net::Ipv4Addr>::new().gateway(v4).build(),
                        IpAddr::V6(v6) => RouteMessageBuilder::<std::net::Ipv6Addr>::new().gateway(v6).build(),
                    };
                    handle.route().add(route).execute().await.map_err(nl("add default route", gw.to_string()))?;
                }
                Ok(())
            })
        })?
    }

    /// Takes the host end of the pod's veth down, which cuts the pod off
    /// at once (deleting it waits for an RCU grace period, tens of
    /// milliseconds; see [`Native::detach`]). Returns whether it existed.
    pub async fn isolate(&self, pod_id: &str) -> Result<bool> {
        let host_end = veth_name(pod_id);
        let handle = connect()?;
        let Some(index) = link_index(&handle, &host_end).await? else {
            return Ok(false);
        };
        match handle.link().set(LinkUnspec::new_with_index(index).down().build()).execute().await {
            Ok(()) => Ok(true),
            // Gone meanwhile: its namespace was destroyed.
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -nix::libc::ENODEV => Ok(false),
            Err(e) => Err(nl("take down", &host_end)(e)),
        }
    }

    /// Deletes every veth on the bridge that belongs to none of `pods`
    /// (left by a teardown whose deletion a crash interrupted). Returns
    /// their names.
    pub async fn sweep(&self, pods: &[String]) -> Result<Vec<String>> {
        let handle = connect()?;
        let Some(bridge) = link_index(&handle, &self.bridge).await? else {
            return Ok(Vec::new());
        };
        let keep: Vec<String> = pods.iter().map(|p| veth_name(p)).collect();
        let mut stale = Vec::new();
        let mut links = handle.link().get().execute();
        while let Some(link) = links.try_next().await.map_err(nl("list links", "all"))? {
            let mut name = None;
            let mut on_bridge = false;
            for attr in &link.attributes {
                match attr {
                    LinkAttribute::IfName(n) => name = Some(n.clone()),
                    LinkAttribute::Controller(c) => on_bridge = *c == bridge,
                    _ => {}
                }
            }
            if let Some(name) = name.filter(|n| on_bridge && !keep.contains(n)) {
                stale.push((link.header.index, name));
            }
        }
        for (index, name) in &stale {
            match handle.link().del(*index).execute().await {
                Ok(()) => {}
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -nix::libc::ENODEV => {}
                Err(e) => return Err(nl("delete veth", name)(e)),
            }
        }
        Ok(stale.into_iter().map(|(_, name)| name).collect())
    }

    /// Deletes the pod's veth pair (the pod end goes with it). Idempotent.
    pub async fn detach(&self, pod_id: &str) -> Result<()> {
        let host_end = veth_name(pod_id);
        let handle = connect()?;
        if let Some(index) = link_index(&handle, &host_end).await? {
            match handle.link().del(index).execute().await {
                Ok(()) => {}
                // Gone meanwhile: its namespace was destroyed.
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -nix::libc::ENODEV => {}
                Err(e) => return Err(nl("delete veth", &host_end)(e)),
            }
        }
        Ok(())
    }
}
