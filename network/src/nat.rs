//! Netfilter rules for pod networking, in one nftables table that bulkhead
//! alone owns (`inet <bridge>`, named after native mode's bridge), written through nftables' JSON API (the
//! `nftables` crate, which drives `nft -j`): masquerade for traffic that
//! leaves the pod CIDRs, and host ports (DNAT from a node port to a pod
//! port, for traffic arriving from outside and from the node itself, with
//! hairpin masquerade so a pod can reach itself through its host port).
//! Each apply replaces the table's rules in one atomic batch, so a daemon
//! start reconciles whatever was there.

use std::borrow::Cow;
use std::collections::HashSet;
use std::net::IpAddr;

use nftables::batch::Batch;
use nftables::expr::{
    CT, Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix,
};
use nftables::schema::{Chain, FlushObject, NfCmd, NfListObject, Nftables, Rule, Table};
use nftables::stmt::{Match, NAT, NATFamily, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use crate::{Error, PodCidrs, Result};

const POSTROUTING: &str = "postrouting";
const PREROUTING: &str = "prerouting";
const OUTPUT: &str = "output";
/// The priority of source NAT (nft's `srcnat`).
const SRCNAT: i32 = 100;
/// The priority of destination NAT (nft's `dstnat`).
const DSTNAT: i32 = -100;

/// A host port's transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One published port: traffic to `host_port` (on `host_ip`, or on any
/// local address of the node) goes to `pod_ip:container_port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub protocol: Protocol,
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub pod_ip: IpAddr,
    pub container_port: u16,
}

/// A port the pod asks to publish (the CRI `PortMapping`), before it is
/// bound to the pod's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortMapping {
    pub protocol: Protocol,
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
}

impl PortMapping {
    /// The host port that leads to `pod_ip`.
    pub fn to(self, pod_ip: IpAddr) -> HostPort {
        let PortMapping { protocol, host_ip, host_port, container_port } = self;
        HostPort { protocol, host_ip, host_port, pod_ip, container_port }
    }
}

fn nft_err(what: &'static str) -> impl FnOnce(nftables::helper::NftablesError) -> Error {
    move |e| Error::Nftables { what, message: e.to_string() }
}

fn address(net: &ipnet::IpNet, field: &'static str) -> (Expression<'static>, Expression<'static>) {
    let protocol = if net.addr().is_ipv4() { "ip" } else { "ip6" };
    let left = Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField {
        protocol: Cow::Borrowed(protocol),
        field: Cow::Borrowed(field),
    })));
    let right = Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(Expression::String(Cow::Owned(net.network().to_string()))),
        len: u32::from(net.prefix_len()),
    }));
    (left, right)
}

fn matches(left: Expression<'static>, right: Expression<'static>, op: Operator) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

fn string(value: impl Into<String>) -> Expression<'static> {
    Expression::String(Cow::Owned(value.into()))
}

fn nat_chain(table: &str, name: &'static str, hook: NfHook, prio: i32) -> NfListObject<'static> {
    NfListObject::Chain(Chain {
        family: NfFamily::INet,
        table: Cow::Owned(table.to_owned()),
        name: Cow::Borrowed(name),
        _type: Some(NfChainType::NAT),
        hook: Some(hook),
        prio: Some(prio),
        policy: Some(NfChainPolicy::Accept),
        ..Chain::default()
    })
}

fn rule(table: &str, chain: &'static str, expr: Vec<Statement<'static>>) -> NfListObject<'static> {
    NfListObject::Rule(Rule {
        family: NfFamily::INet,
        table: Cow::Owned(table.to_owned()),
        chain: Cow::Borrowed(chain),
        expr: Cow::Owned(expr),
        ..Rule::default()
    })
}

/// The DNAT rule for `port`: its address family, its destination (the
/// given host address, or any address local to the node), its port.
fn host_port_rule(table: &str, chain: &'static str, port: &HostPort) -> NfListObject<'static> {
    let (nfproto, family, l3) =
        if port.pod_ip.is_ipv4() { ("ipv4", NATFamily::IP, "ip") } else { ("ipv6", NATFamily::IP6, "ip6") };
    let mut expr = vec![matches(
        Expression::Named(NamedExpression::Meta(Meta { key: MetaKey::Nfproto })),
        string(nfproto),
        Operator::EQ,
    )];
    expr.push(match port.host_ip {
        Some(ip) => matches(
            Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField {
                protocol: Cow::Borrowed(l3),
                field: Cow::Borrowed("daddr"),
            }))),
            string(ip.to_string()),
            Operator::EQ,
        ),
        None => matches(
            Expression::Named(NamedExpression::Fib(Fib {
                result: FibResult::Type,
                flags: HashSet::from([FibFlag::Daddr]),
            })),
            string("local"),
            Operator::EQ,
        ),
    });
    expr.push(matches(
        Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField {
            protocol: Cow::Borrowed(port.protocol.name()),
            field: Cow::Borrowed("dport"),
        }))),
        Expression::Number(u32::from(port.host_port)),
        Operator::EQ,
    ));
    expr.push(Statement::DNAT(Some(NAT {
        addr: Some(string(port.pod_ip.to_string())),
        family: Some(family),
        port: Some(Expression::Number(u32::from(port.container_port))),
        flags: None,
    })));
    rule(table, chain, expr)
}

/// The ruleset for `cidrs` and `ports`: the table; in postrouting, one
/// masquerade rule per pod CIDR for traffic from it to anywhere outside it
/// and one for traffic from it that a host port sent back into it
/// (hairpin); in prerouting and output, one DNAT rule per host port.
pub fn ruleset(name: &str, cidrs: &PodCidrs, ports: &[HostPort]) -> Nftables<'static> {
    let mut batch = Batch::new();
    let table = Table { family: NfFamily::INet, name: Cow::Owned(name.to_owned()), ..Table::default() };
    batch.add(NfListObject::Table(table.clone()));
    // Replace, not append: empty the table before writing it again.
    batch.add_cmd(NfCmd::Flush(FlushObject::Table(table)));
    batch.add(nat_chain(name, POSTROUTING, NfHook::Postrouting, SRCNAT));
    batch.add(nat_chain(name, PREROUTING, NfHook::Prerouting, DSTNAT));
    batch.add(nat_chain(name, OUTPUT, NfHook::Output, DSTNAT));
    for net in cidrs.nets() {
        let (src_left, src_right) = address(net, "saddr");
        let (dst_left, dst_right) = address(net, "daddr");
        batch.add(rule(
            name,
            POSTROUTING,
            vec![
                matches(src_left.clone(), src_right.clone(), Operator::EQ),
                matches(dst_left, dst_right, Operator::NEQ),
                Statement::Masquerade(None),
            ],
        ));
        let ct_status = Expression::Named(NamedExpression::CT(CT { key: Cow::Borrowed("status"), ..CT::default() }));
        batch.add(rule(
            name,
            POSTROUTING,
            vec![
                matches(src_left, src_right, Operator::EQ),
                matches(ct_status, string("dnat"), Operator::IN),
                Statement::Masquerade(None),
            ],
        ));
    }
    for port in ports {
        batch.add(host_port_rule(name, PREROUTING, port));
        batch.add(host_port_rule(name, OUTPUT, port));
    }
    batch.to_nftables()
}

/// Refuses two host ports that would catch the same packets: same
/// protocol and port, on the same host address or with either on every
/// address, in the same address family.
pub fn check_conflicts(ports: &[HostPort]) -> Result<()> {
    for (i, a) in ports.iter().enumerate() {
        let clash = ports[..i].iter().find(|b| {
            a.protocol == b.protocol
                && a.host_port == b.host_port
                && a.pod_ip.is_ipv4() == b.pod_ip.is_ipv4()
                && match (a.host_ip, b.host_ip) {
                    (Some(x), Some(y)) => x == y,
                    _ => true,
                }
        });
        if let Some(b) = clash {
            return Err(Error::HostPortTaken {
                protocol: a.protocol.name(),
                host_port: a.host_port,
                on: a.host_ip.map(|ip| format!(" on {ip}")).unwrap_or_default(),
                taken_by: b.pod_ip,
            });
        }
    }
    Ok(())
}

/// Writes the rules for `cidrs` and `ports` into table `inet <name>`,
/// replacing its previous content. Conflicting host ports are refused
/// before anything changes.
pub fn apply(name: &str, cidrs: &PodCidrs, ports: &[HostPort]) -> Result<()> {
    check_conflicts(ports)?;
    nftables::helper::apply_ruleset(&ruleset(name, cidrs, ports)).map_err(nft_err("apply bulkhead's table"))
}

/// Deletes table `inet <name>`, if it exists.
pub fn remove(name: &str) -> Result<()> {
    let mut batch = Batch::new();
    let table = Table { family: NfFamily::INet, name: Cow::Owned(name.to_owned()), ..Table::default() };
    // Adding first makes the delete succeed whether or not the table existed.
    batch.add(NfListObject::Table(table.clone()));
    batch.delete(NfListObject::Table(table));
    nftables::helper::apply_ruleset(&batch.to_nftables()).map_err(nft_err("delete bulkhead's table"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(host_ip: Option<&str>, host_port: u16, pod_ip: &str) -> HostPort {
        HostPort {
            protocol: Protocol::Tcp,
            host_ip: host_ip.map(|ip| ip.parse().unwrap()),
            host_port,
            pod_ip: pod_ip.parse().unwrap(),
            container_port: 80,
        }
    }

    #[test]
    fn a_host_port_already_taken_is_refused_naming_it() {
        let ok = [
            port(None, 8080, "10.0.0.2"),
            port(None, 8081, "10.0.0.3"),
            port(None, 8080, "fd00::2"),
            HostPort { protocol: Protocol::Udp, ..port(None, 8080, "10.0.0.3") },
            port(Some("192.0.2.1"), 9090, "10.0.0.2"),
            port(Some("192.0.2.2"), 9090, "10.0.0.3"),
        ];
        check_conflicts(&ok).unwrap();
        for clash in [
            [port(None, 8080, "10.0.0.2"), port(None, 8080, "10.0.0.3")],
            [port(Some("192.0.2.1"), 8080, "10.0.0.2"), port(None, 8080, "10.0.0.3")],
            [port(Some("192.0.2.1"), 8080, "10.0.0.2"), port(Some("192.0.2.1"), 8080, "10.0.0.3")],
        ] {
            let err = check_conflicts(&clash).unwrap_err().to_string();
            assert!(err.contains("tcp/8080") && err.contains("10.0.0.2"), "{err}");
        }
    }

    #[test]
    fn one_masquerade_rule_per_pod_cidr() {
        let cidrs = PodCidrs::parse("10.244.1.0/24,fd00:10:244:1::/64").unwrap();
        let json = serde_json::to_string(&ruleset("bulkhead0", &cidrs, &[])).unwrap();
        assert_eq!(json.matches("\"masquerade\"").count(), 4, "outbound and hairpin: {json}");
        assert!(json.contains("\"10.244.1.0\"") && json.contains("\"fd00:10:244:1::\""), "{json}");
        assert!(json.contains("\"flush\""), "the table is replaced, not appended to: {json}");
    }
}
