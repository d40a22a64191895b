//! Native pod networking for real (root only): two pod namespaces on a
//! bridge of the test's own reach each other and the host over TCP; pod
//! traffic to an outside namespace is masqueraded and host ports lead in
//! (from outside, from the node, and from the pod itself); teardown leaves
//! no veth, bridge, namespace or nftables table behind.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::net::{SocketAddr, TcpListener};

use common::{Leftovers, Outside, interfaces_in, link_exists, ping, pong_once, pong_server};

use bulkhead_network::PodCidrs;
use bulkhead_network::ipam::Ipam;
use bulkhead_network::nat::{HostPort, Protocol};
use bulkhead_network::native::Native;
use bulkhead_network::netns::NetNs;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pods_reach_each_other_and_the_host_then_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let native = Native { bridge: format!("bhtest{}", std::process::id() % 100_000), mtu: 1500 };
    let _leftovers = Leftovers {
        bridge: native.bridge.clone(),
        nat_table: true,
        namespaces: vec![dir.path().join("ns1"), dir.path().join("ns2")],
    };
    let cidrs = PodCidrs::parse("10.213.7.0/24").unwrap();
    let ipam = Ipam::open(dir.path()).unwrap();
    let (ns1, ns2) = (NetNs::create(&dir.path().join("ns1")).unwrap(), NetNs::create(&dir.path().join("ns2")).unwrap());
    let (lease1, lease2) = (ipam.allocate("pod-one", &cidrs).unwrap(), ipam.allocate("pod-two", &cidrs).unwrap());
    let veth1 = native.attach("pod-one", &ns1, &lease1, &cidrs).await.unwrap();
    let veth2 = native.attach("pod-two", &ns2, &lease2, &cidrs).await.unwrap();
    assert!(link_exists(&veth1) && link_exists(&veth2) && link_exists(&native.bridge));
    let (ip1, ip2) = (lease1.addresses[0].addr(), lease2.addresses[0].addr());

    // Inside the pod: eth0 with its address.
    let mut inside = interfaces_in(&ns1);
    inside.sort();
    assert_eq!(inside, ["eth0", "lo"]);

    // pod one → pod two, over the bridge.
    let server = pong_server(&ns2, 7777);
    let reply = ns1.run(move || ping(SocketAddr::new(ip2, 7777))).unwrap();
    assert_eq!(reply, "pong");
    server.join().unwrap();
    // host → pod one, through the gateway address on the bridge.
    let server = pong_server(&ns1, 7778);
    assert_eq!(ping(SocketAddr::new(ip1, 7778)), "pong");
    server.join().unwrap();
    // pod two → host (the gateway), by its default route.
    let gw = bulkhead_network::ipam::gateway(&cidrs.nets()[0]).unwrap();
    let host_listener = TcpListener::bind(SocketAddr::new(gw, 7779)).unwrap();
    let host_side = pong_once(host_listener);
    assert_eq!(ns2.run(move || ping(SocketAddr::new(gw, 7779))).unwrap(), "pong");
    assert_eq!(host_side.join().unwrap(), ip2, "the host sees the pod's own address");

    // Teardown: veths, bridge, namespaces, leases.
    native.detach("pod-one").await.unwrap();
    native.detach("pod-two").await.unwrap();
    native.detach("pod-two").await.unwrap(); // idempotent
    native.remove_bridge().await.unwrap();
    NetNs::remove(&ns1.path).unwrap();
    NetNs::remove(&ns2.path).unwrap();
    ipam.release("pod-one").unwrap();
    ipam.release("pod-two").unwrap();
    assert!(!link_exists(&veth1) && !link_exists(&veth2) && !link_exists(&native.bridge));
    assert!(ipam.leases().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_leaving_the_pod_cidr_is_masqueraded_and_host_ports_lead_in() {
    let dir = tempfile::tempdir().unwrap();
    let native = Native { bridge: format!("bhnat{}", std::process::id() % 100_000), mtu: 1500 };
    let _leftovers =
        Leftovers { bridge: native.bridge.clone(), nat_table: true, namespaces: vec![dir.path().join("pod")] };
    let cidrs = PodCidrs::parse("10.213.8.0/24").unwrap();
    let ipam = Ipam::open(dir.path()).unwrap();
    let outside = Outside::new("9");
    let pod = NetNs::create(&dir.path().join("pod")).unwrap();
    let lease = ipam.allocate("pod-nat", &cidrs).unwrap();
    native.attach("pod-nat", &pod, &lease, &cidrs).await.unwrap();
    bulkhead_network::nat::apply(&native.bridge, &cidrs, &[]).unwrap();
    let ruleset = std::process::Command::new("nft").args(["list", "table", "inet", &native.bridge]).output().unwrap();
    assert!(String::from_utf8_lossy(&ruleset.stdout).contains("masquerade"));

    let listener = outside.netns().run(|| TcpListener::bind("10.214.9.2:7780")).unwrap().unwrap();
    let far = pong_once(listener);
    let reply = pod.run(|| ping("10.214.9.2:7780".parse().unwrap())).unwrap();
    assert_eq!(reply, "pong");
    assert_eq!(
        far.join().unwrap().to_string(),
        "10.214.9.1",
        "the outside host sees the node's address, not the pod's"
    );

    // A host port: node port 18080 leads to the pod's port 8080, from an
    // outside host, from the node itself, and from the pod (hairpin).
    let port = HostPort {
        protocol: Protocol::Tcp,
        host_ip: None,
        host_port: 18080,
        pod_ip: lease.addresses[0].addr(),
        container_port: 8080,
    };
    bulkhead_network::nat::apply(&native.bridge, &cidrs, std::slice::from_ref(&port)).unwrap();
    let node: SocketAddr = "10.214.9.1:18080".parse().unwrap();
    let server = pong_server(&pod, 8080);
    assert_eq!(outside.netns().run(move || ping(node)).unwrap(), "pong", "outside → host port");
    server.join().unwrap();
    let server = pong_server(&pod, 8080);
    assert_eq!(ping(node), "pong", "node → host port");
    server.join().unwrap();
    let server = pong_server(&pod, 8080);
    assert_eq!(pod.run(move || ping(node)).unwrap(), "pong", "pod → its own host port");
    server.join().unwrap();

    // Applying again replaces rather than appends; removing leaves no table.
    bulkhead_network::nat::apply(&native.bridge, &cidrs, &[port]).unwrap();
    let listed = String::from_utf8_lossy(
        &std::process::Command::new("nft").args(["list", "table", "inet", &native.bridge]).output().unwrap().stdout,
    )
    .into_owned();
    assert_eq!(listed.matches("masquerade").count(), 2, "{listed}");
    assert_eq!(listed.matches("dnat ip to").count(), 2, "{listed}");
    bulkhead_network::nat::remove(&native.bridge).unwrap();
    bulkhead_network::nat::remove(&native.bridge).unwrap();
    let tables =
        String::from_utf8_lossy(&std::process::Command::new("nft").args(["list", "tables"]).output().unwrap().stdout)
            .into_owned();
    assert!(!tables.contains(&native.bridge), "{tables}");
    native.detach("pod-nat").await.unwrap();
    native.remove_bridge().await.unwrap();
    NetNs::remove(&pod.path).unwrap();
    drop(outside);
    assert!(!link_exists(&native.bridge));
}
