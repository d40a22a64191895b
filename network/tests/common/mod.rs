//! Helpers shared by the network integration tests: link checks, a TCP
//! "ping"/"pong" exchange, an outside host in a namespace of its own, and
//! a guard that removes what a test made even when it fails.

#![allow(dead_code, clippy::unwrap_used)] // each test binary uses a part; tests fail loudly

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};

use bulkhead_network::netns::NetNs;

/// The interfaces inside `ns`, from the namespace's own /proc view
/// (/sys/class/net shows the namespace sysfs was mounted in instead).
pub fn interfaces_in(ns: &NetNs) -> Vec<String> {
    ns.run(|| {
        let dev = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap();
        dev.lines().filter_map(|l| l.split_once(':')).map(|(name, _)| name.trim().to_owned()).collect()
    })
    .unwrap()
}

pub fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// Serves one "ping" → "pong" exchange on `listener`; the thread returns
/// the address the peer came from.
pub fn pong_once(listener: TcpListener) -> std::thread::JoinHandle<IpAddr> {
    std::thread::spawn(move || {
        let (mut conn, peer) = listener.accept().unwrap();
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        conn.write_all(b"pong").unwrap();
        peer.ip()
    })
}

/// Serves one "ping" → "pong" exchange on a listener made inside `ns`
/// (on `::`, which takes IPv4 too).
pub fn pong_server(ns: &NetNs, port: u16) -> std::thread::JoinHandle<()> {
    let listener = ns.run(move || TcpListener::bind(("::", port))).unwrap().unwrap();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        conn.write_all(b"pong").unwrap();
    })
}

/// Removes, even when a test fails half-way, what the test may have made:
/// the veths on its bridge (deleting a bridge only releases them), the
/// bridge, its pod namespaces (those listed and every pin in
/// `netns_dir`), and the nftables table named after the bridge.
pub struct Leftovers {
    pub bridge: String,
    /// Whether the nftables table named after the bridge is the test's to remove.
    pub nat_table: bool,
    pub namespaces: Vec<std::path::PathBuf>,
}

impl Leftovers {
    pub fn with_netns_dir(mut self, dir: &std::path::Path) -> Leftovers {
        self.namespaces.push(dir.to_owned());
        self
    }
}

fn ip_quietly(args: &[&str]) {
    let _ = std::process::Command::new("ip").args(args).stderr(std::process::Stdio::null()).status();
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        if let Ok(ports) = std::fs::read_dir(format!("/sys/class/net/{}/brif", self.bridge)) {
            for port in ports.flatten() {
                ip_quietly(&["link", "del", &port.file_name().to_string_lossy()]);
            }
        }
        ip_quietly(&["link", "del", &self.bridge]);
        if self.nat_table {
            let _ = bulkhead_network::nat::remove(&self.bridge);
        }
        for ns in &self.namespaces {
            if ns.is_dir() {
                for pin in std::fs::read_dir(ns).into_iter().flatten().flatten() {
                    let _ = NetNs::remove(&pin.path());
                }
            } else {
                let _ = NetNs::remove(ns);
            }
        }
    }
}

pub fn ping(to: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&to, std::time::Duration::from_secs(5)).unwrap();
    s.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

pub fn ip(args: &[&str]) {
    let status = std::process::Command::new("ip").args(args).status().unwrap();
    assert!(status.success(), "ip {args:?}");
}

/// A host outside the node: a namespace of its own on a /30 link, which
/// knows nothing of the pod CIDR (it can answer only the node's address).
pub struct Outside {
    name: String,
    host_end: String,
}

impl Outside {
    /// An outside host on 10.214.`subnet`.0/30: the node is .1, it is .2.
    pub fn new(subnet: &str) -> Outside {
        let n = std::process::id() % 100_000;
        let (name, host_end, far_end) = (format!("bhout{n}"), format!("bhoa{n}"), format!("bhob{n}"));
        let (node, far) = (format!("10.214.{subnet}.1/30"), format!("10.214.{subnet}.2/30"));
        ip(&["netns", "add", &name]);
        ip(&["link", "add", &host_end, "type", "veth", "peer", "name", &far_end]);
        ip(&["link", "set", &far_end, "netns", &name]);
        ip(&["addr", "add", &node, "dev", &host_end]);
        ip(&["link", "set", &host_end, "up"]);
        ip(&["-n", &name, "addr", "add", &far, "dev", &far_end]);
        ip(&["-n", &name, "link", "set", &far_end, "up"]);
        Outside { name, host_end }
    }

    pub fn netns(&self) -> NetNs {
        NetNs { path: std::path::Path::new("/run/netns").join(&self.name) }
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.name]).status();
        let _ = std::process::Command::new("ip").args(["link", "del", &self.host_end]).status();
    }
}

/// Whether one ICMP echo from inside `ns` to `to` is answered (busybox ping).
pub fn busybox_ping(ns: &NetNs, to: IpAddr) -> bool {
    std::process::Command::new("nsenter")
        .arg(format!("--net={}", ns.path.display()))
        .args(["busybox", "ping", "-c", "1", "-W", "3", &to.to_string()])
        .output()
        .unwrap()
        .status
        .success()
}
