//! Netfilter rules for pod networking, in one nftables table that bulkhead
//! alone owns (`inet bulkhead`), written through nftables' JSON API (the
//! `nftables` crate, which drives `nft -j`): masquerade for traffic that
//! leaves the pod CIDRs. Each apply replaces the table's rules in one
//! atomic batch, so a daemon start reconciles whatever was there.

use std::borrow::Cow;

use nftables::batch::Batch;
use nftables::expr::{Expression, NamedExpression, Payload, PayloadField, Prefix};
use nftables::schema::{Chain, FlushObject, NfCmd, NfListObject, Nftables, Rule, Table};
use nftables::stmt::{Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use crate::{Error, PodCidrs, Result};

/// The table bulkhead owns.
pub const TABLE: &str = "bulkhead";
const POSTROUTING: &str = "postrouting";
/// The priority of source NAT (nft's `srcnat`).
const SRCNAT: i32 = 100;

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

/// The ruleset for `cidrs`: the table, its NAT chain, and one masquerade
/// rule per pod CIDR for traffic from it to anywhere outside it.
pub fn ruleset(cidrs: &PodCidrs) -> Nftables<'static> {
    let mut batch = Batch::new();
    let table = Table { family: NfFamily::INet, name: Cow::Borrowed(TABLE), ..Table::default() };
    batch.add(NfListObject::Table(table.clone()));
    // Replace, not append: empty the table before writing it again.
    batch.add_cmd(NfCmd::Flush(FlushObject::Table(table)));
    batch.add(NfListObject::Chain(Chain {
        family: NfFamily::INet,
        table: Cow::Borrowed(TABLE),
        name: Cow::Borrowed(POSTROUTING),
        _type: Some(NfChainType::NAT),
        hook: Some(NfHook::Postrouting),
        prio: Some(SRCNAT),
        policy: Some(NfChainPolicy::Accept),
        ..Chain::default()
    }));
    for net in cidrs.nets() {
        let (src_left, src_right) = address(net, "saddr");
        let (dst_left, dst_right) = address(net, "daddr");
        batch.add(NfListObject::Rule(Rule {
            family: NfFamily::INet,
            table: Cow::Borrowed(TABLE),
            chain: Cow::Borrowed(POSTROUTING),
            expr: Cow::Owned(vec![
                Statement::Match(Match { left: src_left, right: src_right, op: Operator::EQ }),
                Statement::Match(Match { left: dst_left, right: dst_right, op: Operator::NEQ }),
                Statement::Masquerade(None),
            ]),
            ..Rule::default()
        }));
    }
    batch.to_nftables()
}

/// Writes the rules for `cidrs`, replacing the table's previous content.
pub fn apply(cidrs: &PodCidrs) -> Result<()> {
    nftables::helper::apply_ruleset(&ruleset(cidrs)).map_err(nft_err("apply the bulkhead table"))
}

/// Deletes bulkhead's table, if it exists.
pub fn remove() -> Result<()> {
    let mut batch = Batch::new();
    let table = Table { family: NfFamily::INet, name: Cow::Borrowed(TABLE), ..Table::default() };
    // Adding first makes the delete succeed whether or not the table existed.
    batch.add(NfListObject::Table(table.clone()));
    batch.delete(NfListObject::Table(table));
    nftables::helper::apply_ruleset(&batch.to_nftables()).map_err(nft_err("delete the bulkhead table"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_masquerade_rule_per_pod_cidr() {
        let cidrs = PodCidrs::parse("10.244.1.0/24,fd00:10:244:1::/64").unwrap();
        let json = serde_json::to_string(&ruleset(&cidrs)).unwrap();
        assert_eq!(json.matches("\"masquerade\"").count(), 2, "{json}");
        assert!(json.contains("\"10.244.1.0\"") && json.contains("\"fd00:10:244:1::\""), "{json}");
        assert!(json.contains("\"flush\""), "the table is replaced, not appended to: {json}");
    }
}
