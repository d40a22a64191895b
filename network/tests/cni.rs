//! CNI mode for real (root only), with Debian's containernetworking-plugins
//! (bridge, host-local, portmap, loopback): two pods reach each other (TCP
//! and ICMP), the host and an outside host; a host port leads in from
//! outside, from the node and from another pod; DEL works after a restart
//! with the conf dir gone; a failing or hanging plugin leaves nothing
//! half-made; readiness names a missing or broken configuration.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bulkhead_network::Error;
use bulkhead_network::cni::{Attachment, Cni, RuntimeConfig, Settings};
use bulkhead_network::nat::{PortMapping, Protocol};
use bulkhead_network::netns::NetNs;
use common::{Leftovers, Outside, busybox_ping, interfaces_in, link_exists, ping, pong_once, pong_server};

const PLUGINS: &str = "/usr/lib/cni";

fn settings(dir: &Path, extra_bin: Option<&Path>, timeout: Duration) -> Settings {
    let mut bin_dirs = extra_bin.map(|p| vec![p.to_owned()]).unwrap_or_default();
    bin_dirs.push(PLUGINS.into());
    Settings { conf_dir: dir.join("net.d"), bin_dirs, timeout }
}

/// A bridge + host-local (+ extra plugins) list on `subnet`, leases kept in the test's dir.
fn write_conflist(dir: &Path, bridge: &str, subnet: &str, extra: &str) {
    std::fs::create_dir_all(dir.join("net.d")).unwrap();
    let ipam_dir = dir.join("ipam");
    let text = format!(
        r#"{{"cniVersion":"1.0.0","name":"bhtest","plugins":[
            {{"type":"bridge","bridge":"{bridge}","isGateway":true,"ipMasq":true,"hairpinMode":true,
              "ipam":{{"type":"host-local","ranges":[[{{"subnet":"{subnet}"}}]],"routes":[{{"dst":"0.0.0.0/0"}}],
                       "dataDir":"{}"}}}}{extra}]}}"#,
        ipam_dir.display()
    );
    std::fs::write(dir.join("net.d/10-bhtest.conflist"), text).unwrap();
}

const PORTMAP: &str = r#",{"type":"portmap","capabilities":{"portMappings":true},"snat":true}"#;

/// The host-local leases held in `dir` (files named by address).
fn leases(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir.join("ipam/bhtest")) else { return Vec::new() };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.parse::<IpAddr>().is_ok())
        .collect();
    names.sort();
    names
}

fn iptables_nat() -> String {
    let out = std::process::Command::new("iptables-save").args(["-t", "nat"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The interfaces on `bridge`.
fn bridge_ports(bridge: &str) -> Vec<String> {
    match std::fs::read_dir(format!("/sys/class/net/{bridge}/brif")) {
        Ok(entries) => entries.map(|e| e.unwrap().file_name().into_string().unwrap()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Runs DEL for attachments a failed test left, then removes the bridge
/// and namespaces (through `Leftovers`).
struct Attached {
    cni: Arc<Cni>,
    attachments: Vec<Attachment>,
    _leftovers: Leftovers,
}

impl Drop for Attached {
    fn drop(&mut self) {
        let (cni, attachments) = (self.cni.clone(), std::mem::take(&mut self.attachments));
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            for a in attachments {
                let _ = runtime.block_on(cni.del(&a));
            }
        })
        .join();
    }
}

fn attachment(id: &str, ns: &NetNs) -> Attachment {
    Attachment::for_pod(id, &ns.path, "default", id, &format!("uid-{id}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_on_the_cni_bridge_chain_connect_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = format!("bhcni{}", std::process::id() % 100_000);
    write_conflist(dir.path(), &bridge, "10.214.11.0/24", PORTMAP);
    let cni =
        Arc::new(Cni::open(settings(dir.path(), None, Duration::from_secs(20)), &dir.path().join("cni")).unwrap());
    let (ns1, ns2) = (dir.path().join("ns1"), dir.path().join("ns2"));
    let mut guard = Attached {
        cni: cni.clone(),
        attachments: Vec::new(),
        _leftovers: Leftovers { bridge: bridge.clone(), nat_table: false, namespaces: vec![ns1.clone(), ns2.clone()] },
    };
    assert!(cni.readiness().await.ready, "{:?}", cni.readiness().await);
    let outside = Outside::new("10");
    let (ns1, ns2) = (NetNs::create(&ns1).unwrap(), NetNs::create(&ns2).unwrap());
    let (a1, a2) = (attachment("cnipod1", &ns1), attachment("cnipod2", &ns2));
    guard.attachments = vec![a1.clone(), a2.clone()];
    let ports = RuntimeConfig {
        port_mappings: vec![PortMapping {
            protocol: Protocol::Tcp,
            host_ip: None,
            host_port: 18081,
            container_port: 80,
        }],
        ..RuntimeConfig::default()
    };
    let got1 = cni.add(&a1, &ports).await.unwrap();
    let got2 = cni.add(&a2, &RuntimeConfig::default()).await.unwrap();
    let (ip1, ip2) = (got1.ips()[0], got2.ips()[0]);
    assert!(ip1.to_string().starts_with("10.214.11.") && ip2.to_string().starts_with("10.214.11."), "{ip1} {ip2}");
    assert_ne!(ip1, ip2);
    assert_eq!(leases(dir.path()), {
        let mut l = vec![ip1.to_string(), ip2.to_string()];
        l.sort();
        l
    });
    assert_eq!(interfaces_in(&ns1), ["lo", "eth0"]);
    // CHECK on the pod without host ports: the Debian portmap (1.1.1) fails
    // CHECK when a pod has ports, looking for an IPv6 chain it never made.
    cni.check(&a2).await.unwrap();

    // pod ↔ pod over TCP and ICMP; host → pod; pod → host.
    let server = pong_server(&ns2, 7001);
    assert_eq!(ns1.run(move || ping(SocketAddr::new(ip2, 7001))).unwrap(), "pong");
    server.join().unwrap();
    assert!(busybox_ping(&ns1, ip2) && busybox_ping(&ns2, ip1), "ICMP between the pods");
    let server = pong_server(&ns1, 7002);
    assert_eq!(ping(SocketAddr::new(ip1, 7002)), "pong", "host → pod");
    server.join().unwrap();
    let gateway: IpAddr = "10.214.11.1".parse().unwrap();
    assert!(busybox_ping(&ns2, gateway), "pod → host");

    // pod → outside host, masqueraded to the node's address.
    let listener = outside.netns().run(|| std::net::TcpListener::bind("10.214.10.2:7003")).unwrap().unwrap();
    let far = pong_once(listener);
    assert_eq!(ns1.run(|| ping("10.214.10.2:7003".parse().unwrap())).unwrap(), "pong");
    assert_eq!(far.join().unwrap().to_string(), "10.214.10.1", "masqueraded");

    // Host port 18081 → pod one's port 80: from outside, the node and pod two.
    let node: SocketAddr = "10.214.10.1:18081".parse().unwrap();
    for (from, reach) in [("outside", Some(outside.netns())), ("node", None), ("pod two", Some(ns2.clone()))] {
        let server = pong_server(&ns1, 80);
        let reply = match reach {
            Some(ns) => ns.run(move || ping(node)).unwrap(),
            None => ping(node),
        };
        assert_eq!(reply, "pong", "{from} → host port");
        server.join().unwrap();
    }

    // DEL after a "restart" with the conf dir gone: the cache has what ADD ran.
    drop(guard.cni.clone());
    std::fs::remove_dir_all(dir.path().join("net.d")).unwrap();
    let restarted = Cni::open(settings(dir.path(), None, Duration::from_secs(20)), &dir.path().join("cni")).unwrap();
    assert!(!restarted.readiness().await.ready);
    let mut attached = restarted.attached().unwrap();
    attached.sort();
    assert_eq!(attached, ["cnipod1", "cnipod2"]);
    restarted.del(&a1).await.unwrap();
    restarted.del(&a2).await.unwrap();
    restarted.del(&a2).await.unwrap(); // idempotent
    assert!(bridge_ports(&bridge).is_empty(), "{:?}", bridge_ports(&bridge));
    assert!(leases(dir.path()).is_empty(), "{:?}", leases(dir.path()));
    assert!(restarted.attached().unwrap().is_empty());
    let nat = iptables_nat();
    assert!(!nat.contains("cnipod1") && !nat.contains("cnipod2"), "{nat}");
    guard.attachments.clear();
    NetNs::remove(&ns1.path).unwrap();
    NetNs::remove(&ns2.path).unwrap();
}

/// A plugin of the test's own in `bin`: it speaks 1.0.0 and does `add` on ADD.
fn fake_plugin(bin: &Path, name: &str, add: &str) {
    std::fs::create_dir_all(bin).unwrap();
    let path = bin.join(name);
    let script = format!(
        r#"#!/bin/sh
cat >/dev/null
case "$CNI_COMMAND" in
VERSION) echo '{{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}}' ;;
ADD) {add} ;;
*) exit 0 ;;
esac
"#
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_hanging_plugin_leaves_nothing_half_made() {
    let dir = tempfile::tempdir().unwrap();
    let bin: PathBuf = dir.path().join("bin");
    fake_plugin(
        &bin,
        "refuses",
        r#"echo '{"cniVersion":"1.0.0","code":11,"msg":"try again","details":"busy"}'; exit 1"#,
    );
    fake_plugin(&bin, "hangs", "exec sleep 60");
    let bridge = format!("bhcnf{}", std::process::id() % 100_000);
    let ns_path = dir.path().join("ns");
    let cni_for = |timeout| Cni::open(settings(dir.path(), Some(&bin), timeout), &dir.path().join("cni")).unwrap();
    let guard = Attached {
        cni: Arc::new(cni_for(Duration::from_secs(20))),
        attachments: Vec::new(),
        _leftovers: Leftovers { bridge: bridge.clone(), nat_table: false, namespaces: vec![ns_path.clone()] },
    };
    let ns = NetNs::create(&ns_path).unwrap();
    let a = attachment("cnifail", &ns);
    for (plugin, timeout) in [("refuses", Duration::from_secs(20)), ("hangs", Duration::from_millis(1500))] {
        write_conflist(dir.path(), &bridge, "10.214.12.0/24", &format!(r#",{{"type":"{plugin}"}}"#));
        let cni = cni_for(timeout);
        let err = cni.add(&a, &RuntimeConfig::default()).await.unwrap_err();
        match (plugin, &err) {
            ("refuses", Error::CniPlugin { code: Some(11), .. }) => {
                assert!(err.to_string().contains("refuses") && err.to_string().contains("try again: busy"), "{err}")
            }
            ("hangs", Error::CniTimeout { .. }) => assert!(err.to_string().contains("hangs"), "{err}"),
            _ => panic!("{plugin}: unexpected {err:?}"),
        }
        // The bridge plugin's work was undone: no veth, no lease, no cache.
        assert!(bridge_ports(&bridge).is_empty(), "{plugin}: {:?}", bridge_ports(&bridge));
        assert!(leases(dir.path()).is_empty(), "{plugin}: {:?}", leases(dir.path()));
        assert!(cni.attached().unwrap().is_empty());
        assert_eq!(interfaces_in(&ns), ["lo"], "{plugin}: an interface left in the pod");
    }
    drop(guard);
    assert!(!link_exists(&bridge));
}

#[tokio::test]
async fn readiness_names_a_missing_broken_or_unknown_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let cni = Cni::open(settings(dir.path(), None, Duration::from_secs(10)), &dir.path().join("cni")).unwrap();
    let r = cni.readiness().await;
    assert!(!r.ready && r.reason == "NetworkPluginNotReady", "{r:?}");
    assert!(r.message.contains("no CNI network config found") && r.message.contains("net.d"), "{r:?}");

    std::fs::create_dir_all(dir.path().join("net.d")).unwrap();
    std::fs::write(dir.path().join("net.d/05-broken.conflist"), "{\"cniVersion\":").unwrap();
    let r = cni.readiness().await;
    assert!(!r.ready && r.message.contains("05-broken.conflist") && r.message.contains("not valid JSON"), "{r:?}");

    std::fs::write(
        dir.path().join("net.d/05-broken.conflist"),
        r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"no-such-plugin"}]}"#,
    )
    .unwrap();
    let r = cni.readiness().await;
    assert!(!r.ready && r.message.contains("no-such-plugin") && r.message.contains("not installed"), "{r:?}");
    let ns = NetNs::create(&dir.path().join("ns")).unwrap();
    let err = cni.add(&attachment("cnimissing", &ns), &RuntimeConfig::default()).await.unwrap_err();
    assert!(matches!(err, Error::CniPluginMissing { .. }), "{err}");
    assert!(cni.attached().unwrap().is_empty());
    NetNs::remove(&ns.path).unwrap();

    // The Debian plugins speak up to 1.0.0: a 1.1.0 list is refused by version.
    std::fs::write(
        dir.path().join("net.d/05-broken.conflist"),
        r#"{"cniVersion":"1.1.0","name":"n","plugins":[{"type":"loopback"}]}"#,
    )
    .unwrap();
    let r = cni.readiness().await;
    assert!(!r.ready && r.message.contains("does not speak CNI version 1.1.0"), "{r:?}");
}

#[tokio::test]
async fn the_loopback_plugin_brings_lo_up() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("net.d")).unwrap();
    std::fs::write(
        dir.path().join("net.d/99-loopback.conf"),
        r#"{"cniVersion":"1.0.0","name":"lo","type":"loopback"}"#,
    )
    .unwrap();
    let cni = Cni::open(settings(dir.path(), None, Duration::from_secs(10)), &dir.path().join("cni")).unwrap();
    let ns = NetNs::create(&dir.path().join("ns")).unwrap();
    let status = std::process::Command::new("nsenter")
        .arg(format!("--net={}", ns.path.display()))
        .args(["ip", "link", "set", "lo", "down"])
        .status()
        .unwrap();
    assert!(status.success());
    let mut a = attachment("cnilo", &ns);
    a.ifname = "lo".into();
    let got = cni.add(&a, &RuntimeConfig::default()).await.unwrap();
    assert_eq!(got.ips().iter().map(|i| i.to_string()).collect::<Vec<_>>(), ["127.0.0.1", "::1"]);
    let flags = ns.run(|| std::fs::read_to_string("/sys/class/net/lo/flags").unwrap()).unwrap();
    assert_eq!(u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap() & 1, 1, "lo is up");
    cni.del(&a).await.unwrap();
    NetNs::remove(&ns.path).unwrap();
}

/// A CNI 1.1 plugin of the test's own that records every call (command and
/// stdin) in `calls`, answers ADD with an address, and STATUS and GC with success.
fn recording_plugin(bin: &Path, calls: &Path) {
    std::fs::create_dir_all(bin).unwrap();
    let path = bin.join("recorder");
    let script = format!(
        r#"#!/bin/sh
input=$(cat)
printf '%s %s\n' "$CNI_COMMAND" "$input" >> {calls}
case "$CNI_COMMAND" in
VERSION) echo '{{"cniVersion":"1.1.0","supportedVersions":["1.0.0","1.1.0"]}}' ;;
ADD) echo '{{"cniVersion":"1.1.0","interfaces":[{{"name":"eth0","sandbox":"x"}}],"ips":[{{"address":"10.99.0.5/24","interface":0}}]}}' ;;
*) exit 0 ;;
esac
"#,
        calls = calls.display()
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn cni_1_1_status_gc_and_runtime_capabilities_reach_the_plugins() {
    use bulkhead_network::cni::{Bandwidth, Dns};
    let dir = tempfile::tempdir().unwrap();
    let (bin, calls) = (dir.path().join("bin"), dir.path().join("calls"));
    recording_plugin(&bin, &calls);
    std::fs::create_dir_all(dir.path().join("net.d")).unwrap();
    std::fs::write(
        dir.path().join("net.d/10-rec.conflist"),
        r#"{"cniVersion":"1.0.0","cniVersions":["1.0.0","1.1.0"],"name":"rec","plugins":[
            {"type":"recorder","capabilities":{"portMappings":true,"dns":true}},
            {"type":"recorder","capabilities":{"bandwidth":true}}]}"#,
    )
    .unwrap();
    let cni = Cni::open(settings(dir.path(), Some(&bin), Duration::from_secs(10)), &dir.path().join("cni")).unwrap();
    let r = cni.readiness().await;
    assert!(r.ready, "{r:?}");
    let ns = NetNs::create(&dir.path().join("ns")).unwrap();
    let a = attachment("recpod", &ns);
    let runtime = RuntimeConfig {
        port_mappings: vec![PortMapping {
            protocol: Protocol::Udp,
            host_ip: None,
            host_port: 5353,
            container_port: 53,
        }],
        bandwidth: Some(Bandwidth { ingress_rate: 1000, ingress_burst: 2000, egress_rate: 3000, egress_burst: 4000 }),
        dns: Some(Dns { servers: vec!["10.96.0.10".into()], searches: vec![], options: vec![] }),
        ..RuntimeConfig::default()
    };
    let got = cni.add(&a, &runtime).await.unwrap();
    assert_eq!(got.ips()[0].to_string(), "10.99.0.5");
    cni.check(&a).await.unwrap();
    cni.gc(&["recpod".into()]).await.unwrap();
    cni.del(&a).await.unwrap();
    NetNs::remove(&ns.path).unwrap();

    let text = std::fs::read_to_string(&calls).unwrap();
    let lines: Vec<(String, serde_json::Value)> = text
        .lines()
        .map(|l| {
            let (command, json) = l.split_once(' ').unwrap();
            (command.to_owned(), serde_json::from_str(json).unwrap_or(serde_json::Value::Null))
        })
        .collect();
    let commands: Vec<&str> = lines.iter().map(|(c, _)| c.as_str()).filter(|c| *c != "VERSION").collect();
    assert_eq!(commands, ["STATUS", "STATUS", "ADD", "ADD", "CHECK", "CHECK", "GC", "GC", "DEL", "DEL"], "{text}");
    let adds: Vec<&serde_json::Value> = lines.iter().filter(|(c, _)| c == "ADD").map(|(_, j)| j).collect();
    assert_eq!(adds[0]["cniVersion"], "1.1.0", "the highest of cniVersions");
    assert_eq!(adds[0]["runtimeConfig"]["portMappings"][0]["hostPort"], 5353);
    assert_eq!(adds[0]["runtimeConfig"]["portMappings"][0]["protocol"], "udp");
    assert_eq!(adds[0]["runtimeConfig"]["dns"]["servers"][0], "10.96.0.10");
    assert!(adds[0]["runtimeConfig"].get("bandwidth").is_none(), "only what the plugin declares");
    assert_eq!(adds[1]["runtimeConfig"]["bandwidth"]["egressRate"], 3000);
    assert!(adds[1]["prevResult"]["ips"].is_array(), "the first plugin's result");
    let gc = lines.iter().find(|(c, _)| c == "GC").map(|(_, j)| j).unwrap();
    assert_eq!(gc["cni.dev/valid-attachments"][0]["containerID"], "recpod");
    let del = lines.iter().find(|(c, _)| c == "DEL").map(|(_, j)| j).unwrap();
    assert!(del["prevResult"]["ips"].is_array(), "DEL gets the cached result");
}
