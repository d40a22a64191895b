//! The pod's addresses in a CNI result, whatever version wrote it: `ips`
//! (0.3.0 and later, tied to an interface by index) or `ip4`/`ip6` (0.1
//! and 0.2). IPv4 comes first, as containerd takes the first IPv4 address
//! as the pod IP.

use ipnet::IpNet;
use serde_json::Value;

/// The addresses on interface `ifname`, and those the result ties to no
/// interface (go-cni counts those as the pod interface's too).
pub fn pod_addresses(result: &Value, ifname: &str) -> Vec<IpNet> {
    let parse = |v: &Value| v.as_str().and_then(|s| s.parse::<IpNet>().ok());
    let mut found: Vec<IpNet> = Vec::new();
    if let Some(ips) = result.get("ips").and_then(Value::as_array) {
        let interfaces = result.get("interfaces").and_then(Value::as_array);
        let on_pod = |ip: &Value| match ip.get("interface").and_then(Value::as_u64) {
            None => true,
            Some(index) => interfaces
                .and_then(|list| usize::try_from(index).ok().and_then(|i| list.get(i)))
                .is_some_and(|iface| iface.get("name").and_then(Value::as_str) == Some(ifname)),
        };
        found = ips.iter().filter(|ip| on_pod(ip)).filter_map(|ip| ip.get("address").and_then(parse)).collect();
    } else {
        for key in ["ip4", "ip6"] {
            if let Some(ip) = result.get(key).and_then(|v| v.get("ip")).and_then(parse) {
                found.push(ip);
            }
        }
    }
    found.sort_by_key(|n| n.addr().is_ipv6());
    found
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn strings(nets: Vec<IpNet>) -> Vec<String> {
        nets.into_iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn every_result_version_yields_the_pod_addresses() {
        let v1 = json!({"cniVersion":"1.0.0",
            "interfaces":[{"name":"cni0"},{"name":"veth1"},{"name":"eth0","sandbox":"/run/netns/x"}],
            "ips":[{"address":"fd00::5/64","interface":2},{"address":"10.1.0.5/24","interface":2,"gateway":"10.1.0.1"},
                   {"address":"10.9.9.9/24","interface":0}]});
        assert_eq!(strings(pod_addresses(&v1, "eth0")), ["10.1.0.5/24", "fd00::5/64"]);
        let v03 = json!({"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.1.0.6/24"}]});
        assert_eq!(strings(pod_addresses(&v03, "eth0")), ["10.1.0.6/24"]);
        let v02 = json!({"cniVersion":"0.2.0","ip4":{"ip":"10.1.0.7/24"},"ip6":{"ip":"fd00::7/64"}});
        assert_eq!(strings(pod_addresses(&v02, "eth0")), ["10.1.0.7/24", "fd00::7/64"]);
        assert!(pod_addresses(&json!({"cniVersion":"1.0.0"}), "eth0").is_empty());
    }
}
