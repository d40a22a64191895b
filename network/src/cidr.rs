use std::fmt;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The pod CIDRs of this node: none, one IPv4 or IPv6 range, or one of each
/// (dual stack). kubelet sends them comma-separated in
/// `UpdateRuntimeConfig`, e.g. `10.244.1.0/24,fd00:10:244:1::/64`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PodCidrs(Vec<IpNet>);

impl PodCidrs {
    /// Parses a comma-separated list; the empty string is no CIDR.
    pub fn parse(text: &str) -> Result<PodCidrs> {
        let invalid = |reason: String| Error::InvalidCidr { value: text.to_owned(), reason };
        let mut nets: Vec<IpNet> = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let net: IpNet = part.parse().map_err(|_| invalid(format!("{part:?} is not an address/prefix")))?;
            if net.prefix_len() == net.max_prefix_len() {
                return Err(invalid(format!("{part} leaves no room for pod addresses")));
            }
            if nets.iter().any(|n| n.addr().is_ipv4() == net.addr().is_ipv4()) {
                return Err(invalid("at most one IPv4 and one IPv6 range are allowed".into()));
            }
            nets.push(net.trunc());
        }
        Ok(PodCidrs(nets))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn nets(&self) -> &[IpNet] {
        &self.0
    }
}

impl fmt::Display for PodCidrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, net) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{net}")?;
        }
        Ok(())
    }
}

impl TryFrom<String> for PodCidrs {
    type Error = Error;
    fn try_from(text: String) -> Result<PodCidrs> {
        PodCidrs::parse(&text)
    }
}

impl From<PodCidrs> for String {
    fn from(cidrs: PodCidrs) -> String {
        cidrs.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_dual_stack() {
        assert!(PodCidrs::parse("").unwrap().is_empty());
        assert_eq!(PodCidrs::parse("10.244.1.0/24").unwrap().to_string(), "10.244.1.0/24");
        let dual = PodCidrs::parse("10.244.1.0/24, fd00:10:244:1::/64").unwrap();
        assert_eq!(dual.to_string(), "10.244.1.0/24,fd00:10:244:1::/64");
        // Host bits are dropped, as net.ParseCIDR does for kubelet's values.
        assert_eq!(PodCidrs::parse("10.244.1.7/24").unwrap().to_string(), "10.244.1.0/24");
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        for bad in ["10.0.0.0", "banana", "10.0.0.0/33", "10.0.0.1/32", "10.0.0.0/24,10.1.0.0/24"] {
            let err = PodCidrs::parse(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }
}
