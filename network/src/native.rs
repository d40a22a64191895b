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
use rtnetlink::packet_route::link::LinkAttribute;
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

/// The veth names of a pod: the host end (stable, from the pod id) and a
/// temporary name for the pod end until it is renamed eth0 inside.
fn veth_names(pod_id: &str) -> (String, String) {
    let short: String = pod_id.chars().filter(|c| c.is_ascii_alphanumeric()).take(11).collect();
    (format!("bh{short}"), format!("bp{short}"))
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
        let (host_end, pod_end) = veth_names(pod_id);
        let attached = self.attach_inner(bridge, &host_end, &pod_end, ns, lease, cidrs).await;
        if attached.is_err() {
            let _ = self.detach(pod_id).await;
        }
        attached.map(|()| host_end)
    }

    async fn attach_inner(
        &self,
        bridge: u32,
        host_end: &str,
        pod_end: &str,
        ns: &NetNs,
        lease: &Lease,
        cidrs: &PodCidrs,
    ) -> Result<()> {
        let handle = connect()?;
        handle
            .link()
            .add(LinkVeth::new(host_end, pod_end).mtu(self.mtu).build())
            .execute()
            .await
            .map_err(nl("create veth pair", host_end))?;
        let host_index = link_index(&handle, host_end).await?.ok_or_else(|| Error::Netlink {
            op: "create veth pair",
            what: host_end.to_owned(),
            message: "not there after creation".into(),
        })?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(host_index).controller(bridge).up().build())
            .execute()
            .await
            .map_err(nl("attach to the bridge", host_end))?;
        // Hairpin: a pod reaching its own host port has its packets sent
        // back out of the bridge port they came in on.
        handle
            .link()
            .set_port(LinkBridgePort::new(host_index).hairpin(true).build())
            .execute()
            .await
            .map_err(nl("turn on hairpin mode", host_end))?;
        let pod_index = link_index(&handle, pod_end).await?.ok_or_else(|| Error::Netlink {
            op: "find the pod end",
            what: pod_end.to_owned(),
            message: "missing".into(),
        })?;
        let ns_file = std::fs::File::open(&ns.path).map_err(|source| Error::Io {
            op: "open namespace",
            path: ns.path.clone(),
            source,
        })?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(pod_index).setns_by_fd(ns_file.as_raw_fd()).build())
            .execute()
            .await
            .map_err(nl("move into the pod namespace", pod_end))?;
        // Inside the namespace, on a thread of its own with a netlink socket made there.
        let (pod_end, addresses, mtu) = (pod_end.to_owned(), lease.addresses.clone(), self.mtu);
        let gateways: Vec<IpAddr> = cidrs.nets().iter().filter_map(gateway).collect();
        ns.run(move || -> Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| Error::Io { op: "start a netlink runtime", path: "netlink".into(), source })?;
            runtime.block_on(async move {
                let handle = connect()?;
                let index = link_index(&handle, &pod_end).await?.ok_or_else(|| Error::Netlink {
                    op: "find the pod end inside",
                    what: pod_end.clone(),
                    message: "missing".into(),
                })?;
                handle
                    .link()
                    .set(LinkUnspec::new_with_index(index).name(POD_INTERFACE.to_owned()).mtu(mtu).build())
                    .execute()
                    .await
                    .map_err(nl("rename to eth0", &pod_end))?;
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

    /// Deletes the pod's veth pair (the pod end goes with it). Idempotent.
    pub async fn detach(&self, pod_id: &str) -> Result<()> {
        let (host_end, _) = veth_names(pod_id);
        let handle = connect()?;
        if let Some(index) = link_index(&handle, &host_end).await? {
            handle.link().del(index).execute().await.map_err(nl("delete veth", &host_end))?;
        }
        Ok(())
    }
}
