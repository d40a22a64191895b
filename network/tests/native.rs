//! Native pod networking for real (root only): two pod namespaces on a
//! bridge of the test's own reach each other and the host over TCP, and
//! teardown leaves no veth, bridge or namespace behind.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use bulkhead_network::PodCidrs;
use bulkhead_network::ipam::Ipam;
use bulkhead_network::native::Native;
use bulkhead_network::netns::NetNs;

fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// Serves one "ping" → "pong" exchange on a listener made inside `ns`.
fn pong_server(ns: &NetNs, port: u16) -> std::thread::JoinHandle<()> {
    let listener = ns.run(move || TcpListener::bind(("0.0.0.0", port))).unwrap().unwrap();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        conn.write_all(b"pong").unwrap();
    })
}

fn ping(to: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&to, std::time::Duration::from_secs(5)).unwrap();
    s.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pods_reach_each_other_and_the_host_then_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let native = Native { bridge: format!("bhtest{}", std::process::id() % 100_000), mtu: 1500 };
    let cidrs = PodCidrs::parse("10.213.7.0/24").unwrap();
    let ipam = Ipam::open(dir.path()).unwrap();
    let (ns1, ns2) = (NetNs::create(&dir.path().join("ns1")).unwrap(), NetNs::create(&dir.path().join("ns2")).unwrap());
    let (lease1, lease2) = (ipam.allocate("pod-one", &cidrs).unwrap(), ipam.allocate("pod-two", &cidrs).unwrap());
    let veth1 = native.attach("pod-one", &ns1, &lease1, &cidrs).await.unwrap();
    let veth2 = native.attach("pod-two", &ns2, &lease2, &cidrs).await.unwrap();
    assert!(link_exists(&veth1) && link_exists(&veth2) && link_exists(&native.bridge));
    let (ip1, ip2) = (lease1.addresses[0].addr(), lease2.addresses[0].addr());

    // Inside the pod: eth0 with its address.
    let inside = ns1
        .run(|| {
            std::fs::read_dir("/sys/class/net")
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect::<Vec<_>>()
        })
        .unwrap();
    assert!(inside.contains(&"eth0".to_string()) && inside.contains(&"lo".to_string()), "{inside:?}");

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
    let host_side = std::thread::spawn(move || {
        let (mut conn, peer) = host_listener.accept().unwrap();
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).unwrap();
        conn.write_all(b"pong").unwrap();
        peer.ip()
    });
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
