//! Pod networks through `Network`, the face the CRI server uses (root
//! only): dual-stack native pods reach each other over IPv4 and IPv6;
//! a restart keeps every pod's network and lease and reconciles what no
//! pod owns; bad input (a taken host port, an exhausted pool, a CIDR over
//! a host route) leaves nothing half-made; 200 create/delete cycles leave
//! no veth, namespace, lease, record, route or nftables rule; CNI mode
//! goes through the same calls.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bulkhead_network::cni::Settings;
use bulkhead_network::nat::{PortMapping, Protocol};
use bulkhead_network::netns::NetNs;
use bulkhead_network::{Error, Mode, Network, Options, PodCidrs, PodRequest};
use common::{Leftovers, Outside, busybox_ping, interfaces_in, ping, pong_server};

/// The tests of this binary that make native pods share nothing but run
/// one at a time: host ports and forwarding are node-wide.
static NODE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Node {
    dir: tempfile::TempDir,
    bridge: String,
    _leftovers: Leftovers,
}

impl Node {
    fn new(tag: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let bridge = format!("bh{tag}{}", std::process::id() % 100_000);
        let leftovers = Leftovers { bridge: bridge.clone(), nat_table: true, namespaces: Vec::new() }
            .with_netns_dir(&dir.path().join("netns"));
        Node { dir, bridge, _leftovers: leftovers }
    }

    fn open(&self, cidrs: &str) -> Network {
        let options = Options {
            netns_dir: self.dir.path().join("netns"),
            bridge: self.bridge.clone(),
            mtu: 1500,
            cni: Settings {
                conf_dir: self.dir.path().join("net.d"),
                bin_dirs: vec![PathBuf::from("/usr/lib/cni")],
                timeout: Duration::from_secs(20),
            },
        };
        Network::open(&self.dir.path().join("root"), PodCidrs::parse(cidrs).unwrap(), options).unwrap()
    }

    fn files(&self, sub: &str) -> Vec<String> {
        match std::fs::read_dir(self.dir.path().join(sub)) {
            Ok(entries) => entries.map(|e| e.unwrap().file_name().into_string().unwrap()).collect(),
            Err(_) => Vec::new(),
        }
    }

    fn nft(&self) -> String {
        let out = std::process::Command::new("nft").args(["list", "table", "inet", &self.bridge]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Nothing of any pod is left: no veth on the bridge, pinned namespace,
    /// nsfs mount, lease, record, CNI cache entry, host-port rule or route
    /// to a pod.
    fn assert_clean(&self) {
        // Veths go in the background (teardown only takes them down): wait.
        let brif = format!("/sys/class/net/{}/brif", self.bridge);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !self.files(&brif).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let ports = self.files(&brif);
        assert!(ports.is_empty(), "veths left on the bridge: {ports:?}");
        assert!(self.files("netns").is_empty(), "namespaces left: {:?}", self.files("netns"));
        assert!(self.files("root/leases").is_empty(), "leases left: {:?}", self.files("root/leases"));
        assert!(self.files("root/pods").is_empty(), "records left: {:?}", self.files("root/pods"));
        assert!(self.files("root/cni/results").is_empty(), "CNI cache left");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let dir = self.dir.path().to_str().unwrap();
        assert!(!mounts.lines().any(|l| l.contains(dir)), "mounts left under {dir}");
        assert!(!self.nft().contains("dnat ip"), "host-port rules left: {}", self.nft());
        let routes = std::process::Command::new("ip").args(["-o", "route", "show", "dev", &self.bridge]).output();
        let routes = String::from_utf8_lossy(&routes.unwrap().stdout).into_owned();
        assert!(routes.lines().all(|l| l.contains("proto kernel")), "routes to pods left: {routes}");
    }
}

fn request(id: &str, ports: &[PortMapping]) -> PodRequest {
    PodRequest {
        pod_id: id.into(),
        namespace: "default".into(),
        name: id.into(),
        uid: format!("uid-{id}"),
        ports: ports.to_vec(),
        ..PodRequest::default()
    }
}

fn tcp(host_port: u16, container_port: u16) -> PortMapping {
    PortMapping { protocol: Protocol::Tcp, host_ip: None, host_port, container_port }
}

fn ns(path: &Path) -> NetNs {
    NetNs { path: path.to_owned() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_pods_survive_a_restart_and_reconcile_leaves_only_live_pods() {
    let _node = NODE.lock().await;
    let node = Node::new("ds");
    let cidrs = "10.215.1.0/24,fd00:215:1::/64";
    let net = node.open(cidrs);
    assert!(net.readiness().await.ready);
    assert_eq!(net.mode(), Mode::Native);
    let one = net.setup(&request("dspod1", &[tcp(18091, 80)])).await.unwrap();
    let two = net.setup(&request("dspod2", &[])).await.unwrap();
    let addrs = |n: &bulkhead_network::PodNetwork| n.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    assert_eq!(addrs(&one), ["10.215.1.2/24", "fd00:215:1::2/64"]);
    assert_eq!(addrs(&two), ["10.215.1.3/24", "fd00:215:1::3/64"]);
    assert_eq!(net.pod("dspod1").unwrap().unwrap(), one);
    let (ns1, ns2) = (ns(&one.netns), ns(&two.netns));
    assert_eq!(interfaces_in(&ns1), ["lo", "eth0"]);

    // Pod → pod over IPv4 and IPv6; host → pod over IPv6; host port from the node.
    for (i, target) in [two.addresses[0].addr(), two.addresses[1].addr()].into_iter().enumerate() {
        let port = 7100 + i as u16;
        let server = pong_server(&ns2, port);
        assert_eq!(ns1.run(move || ping(SocketAddr::new(target, port))).unwrap(), "pong", "to {target}");
        server.join().unwrap();
    }
    for target in &two.addresses {
        assert!(busybox_ping(&ns1, target.addr()), "ICMP to {target}");
    }
    let v6 = one.addresses[1].addr();
    let server = pong_server(&ns1, 7102);
    assert_eq!(ping(SocketAddr::new(v6, 7102)), "pong", "host → pod over IPv6");
    server.join().unwrap();

    // A "restart": the same state reopened; reconcile with both pods live
    // rebuilds the table (emptied meanwhile) and keeps both networks.
    drop(net);
    bulkhead_network::nat::remove(&node.bridge).unwrap();
    let net = node.open(cidrs);
    net.reconcile(&["dspod1".into(), "dspod2".into()]).await.unwrap();
    assert_eq!(net.pod("dspod2").unwrap().unwrap(), two);
    assert!(node.nft().contains("dnat ip to"), "host port restored: {}", node.nft());
    let server = pong_server(&ns1, 80);
    assert_eq!(ping("10.215.1.1:18091".parse().unwrap()), "pong", "node → host port after the restart");
    server.join().unwrap();
    let third = net.setup(&request("dspod3", &[])).await.unwrap();
    assert_eq!(addrs(&third)[0], "10.215.1.4/24", "no address handed out twice after a restart");
    net.teardown("dspod3").await.unwrap();

    // Pod two is gone from the runtime's records: reconcile removes its
    // network, and a veth on the bridge that no pod owns.
    common::ip(&["link", "add", "bhstray", "type", "veth", "peer", "name", "bhstrayp"]);
    common::ip(&["link", "set", "bhstray", "master", &node.bridge]);
    net.reconcile(&["dspod1".into()]).await.unwrap();
    assert!(!common::link_exists("bhstray") && !common::link_exists("bhstrayp"), "stray veth swept");
    assert!(net.pod("dspod2").unwrap().is_none());
    assert!(!two.netns.exists());
    net.teardown("dspod1").await.unwrap();
    net.teardown("dspod1").await.unwrap(); // idempotent
    node.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_named_and_leaves_nothing_half_made() {
    let _node = NODE.lock().await;
    let node = Node::new("bad");
    let net = node.open("10.215.2.0/30");
    net.setup(&request("badpod1", &[tcp(18092, 80)])).await.unwrap();
    // The /30 has one pod address: the pool is exhausted.
    let err = net.setup(&request("badpod2", &[])).await.unwrap_err();
    assert!(matches!(&err, Error::PoolExhausted { cidr } if cidr == "10.215.2.0/30"), "{err}");
    assert!(net.pod("badpod2").unwrap().is_none());
    net.teardown("badpod1").await.unwrap();
    drop(net);

    let net = node.open("10.215.2.0/24");
    net.setup(&request("badpod1", &[tcp(18092, 80)])).await.unwrap();
    let err = net.setup(&request("badpod3", &[tcp(18092, 8080)])).await.unwrap_err();
    assert!(matches!(err, Error::HostPortTaken { host_port: 18092, .. }), "{err}");
    assert!(err.to_string().contains("tcp/18092") && err.to_string().contains("10.215.2.2"), "{err}");
    let err = net.setup(&request("badpod4", &[tcp(18093, 0)])).await.unwrap_err();
    assert!(err.to_string().contains("container_port"), "{err}");
    let err = net.setup(&request("../escape", &[])).await.unwrap_err();
    assert!(err.to_string().contains("../escape"), "{err}");
    net.teardown("badpod1").await.unwrap();
    node.assert_clean();
    drop(net);

    // A pod CIDR over a route the host has elsewhere.
    let outside = Outside::new("16");
    let net = node.open("10.214.16.0/24");
    let err = net.setup(&request("badpod5", &[])).await.unwrap_err();
    assert!(matches!(err, Error::CidrOverlapsRoute { .. }), "{err}");
    assert!(err.to_string().contains("10.214.16.0/30") && err.to_string().contains("bhoa"), "{err}");
    node.assert_clean();
    drop(outside);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_cycles_leave_nothing_behind() {
    let _node = NODE.lock().await;
    let node = Node::new("cy");
    let net = node.open("10.215.3.0/24");
    for i in 0..200 {
        let id = format!("cycle{i}");
        let pod = net.setup(&request(&id, &[tcp(18094, 80)])).await.unwrap();
        assert_eq!(pod.addresses[0].to_string(), "10.215.3.2/24", "the freed address comes back");
        net.teardown(&id).await.unwrap();
    }
    node.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cni_mode_goes_through_the_same_calls() {
    let node = Node::new("cn");
    std::fs::create_dir_all(node.dir.path().join("net.d")).unwrap();
    let conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"bhpods","plugins":[
            {{"type":"bridge","bridge":"{}","isGateway":true,"ipMasq":true,
              "ipam":{{"type":"host-local","ranges":[[{{"subnet":"10.215.4.0/24"}}]],"dataDir":"{}"}}}},
            {{"type":"portmap","capabilities":{{"portMappings":true}}}}]}}"#,
        node.bridge,
        node.dir.path().join("ipam").display()
    );
    std::fs::write(node.dir.path().join("net.d/10-bhpods.conflist"), conf).unwrap();
    let net = node.open("");
    assert_eq!(net.mode(), Mode::Cni);
    assert!(net.readiness().await.ready, "{:?}", net.readiness().await);
    let one = net.setup(&request("cnpod1", &[tcp(18095, 80)])).await.unwrap();
    let two = net.setup(&request("cnpod2", &[])).await.unwrap();
    assert_eq!(one.mode, Mode::Cni);
    let ip2: IpAddr = two.addresses[0].addr();
    assert!(ip2.to_string().starts_with("10.215.4."), "{two:?}");
    let server = pong_server(&ns(&two.netns), 7200);
    assert_eq!(ns(&one.netns).run(move || ping(SocketAddr::new(ip2, 7200))).unwrap(), "pong");
    server.join().unwrap();
    // After a restart, with the configuration gone, reconcile tears down
    // the pod no one owns with what its ADD used.
    drop(net);
    std::fs::remove_dir_all(node.dir.path().join("net.d")).unwrap();
    let net = node.open("");
    net.reconcile(&["cnpod1".into()]).await.unwrap();
    assert!(net.pod("cnpod2").unwrap().is_none() && !two.netns.exists());
    net.teardown("cnpod1").await.unwrap();
    assert!(node.files("ipam/bhpods").iter().all(|f| f.parse::<IpAddr>().is_err()), "host-local leases left");
    node.assert_clean();
}
