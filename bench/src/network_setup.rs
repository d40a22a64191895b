//! Per-pod network setup and teardown: bulkhead's native mode (netlink and
//! one nftables table) against the CNI bridge plugin chain (Debian's
//! containernetworking-plugins: bridge with host-local IPAM, then portmap,
//! exec'd per the CNI spec by bulkhead's CNI runner, as containerd's go-cni
//! execs them), on the same host in one run, interleaved pod by pod. Each
//! pod gets a fresh network namespace, an address, a veth on a bridge and
//! (with --host-port) one host port; teardown removes all of it. Prints
//! medians, p90 and the ratio. Run as root (bench/run-network-setup.sh).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench fails loudly

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bulkhead_network::cni::Settings;
use bulkhead_network::nat::{PortMapping, Protocol};
use bulkhead_network::{Mode, Network, Options, PodCidrs, PodRequest};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Per-pod network setup and teardown: native vs the CNI bridge chain")]
struct Args {
    /// Pods per contender.
    #[arg(long, default_value_t = 100)]
    pods: usize,
    /// Give every pod one TCP host port (nftables DNAT natively, portmap for CNI).
    #[arg(long)]
    host_port: bool,
    /// Where the CNI plugins are.
    #[arg(long, default_value = "/usr/lib/cni")]
    cni_bin: PathBuf,
}

struct Contender {
    name: &'static str,
    network: Network,
    bridge: String,
    setup: Vec<Duration>,
    teardown: Vec<Duration>,
}

fn open(dir: &Path, bridge: &str, cidr: &str, cni_bin: &Path) -> Network {
    let options = Options {
        netns_dir: dir.join("netns"),
        bridge: bridge.to_owned(),
        mtu: 1500,
        cni: Settings {
            conf_dir: dir.join("net.d"),
            bin_dirs: vec![cni_bin.to_owned()],
            timeout: Duration::from_secs(30),
        },
    };
    Network::open(&dir.join("root"), PodCidrs::parse(cidr).unwrap(), options).unwrap()
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let args = Args::parse();
    assert!(nix::unistd::geteuid().is_root(), "run as root");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(run(args));
}

async fn run(args: Args) {
    let base = tempfile::Builder::new().prefix("bulkhead-network-bench-").tempdir().unwrap();
    let tag = std::process::id() % 10_000;
    let native_dir = base.path().join("native");
    let cni_dir = base.path().join("cni");
    let cni_bridge = format!("bhbc{tag}");
    std::fs::create_dir_all(cni_dir.join("net.d")).unwrap();
    let portmap = r#",{"type":"portmap","capabilities":{"portMappings":true},"snat":true}"#;
    std::fs::write(
        cni_dir.join("net.d/10-bench.conflist"),
        format!(
            r#"{{"cniVersion":"1.0.0","name":"bench","plugins":[
                {{"type":"bridge","bridge":"{cni_bridge}","isGateway":true,"ipMasq":true,"hairpinMode":true,
                  "ipam":{{"type":"host-local","ranges":[[{{"subnet":"10.217.0.0/16"}}]],
                           "routes":[{{"dst":"0.0.0.0/0"}}],"dataDir":"{}"}}}}{portmap}]}}"#,
            cni_dir.join("ipam").display()
        ),
    )
    .unwrap();
    let mut contenders = vec![
        Contender {
            name: "bulkhead native",
            bridge: format!("bhbn{tag}"),
            network: open(&native_dir, &format!("bhbn{tag}"), "10.216.0.0/16", &args.cni_bin),
            setup: Vec::new(),
            teardown: Vec::new(),
        },
        Contender {
            name: "CNI bridge+host-local+portmap",
            bridge: cni_bridge.clone(),
            network: open(&cni_dir, &cni_bridge, "", &args.cni_bin),
            setup: Vec::new(),
            teardown: Vec::new(),
        },
    ];
    assert_eq!(contenders[0].network.mode(), Mode::Native);
    assert_eq!(contenders[1].network.mode(), Mode::Cni);
    for c in &contenders {
        let ready = c.network.readiness().await;
        assert!(ready.ready, "{}: {ready:?}", c.name);
    }
    let ports = if args.host_port {
        vec![PortMapping { protocol: Protocol::Tcp, host_ip: None, host_port: 30080, container_port: 80 }]
    } else {
        Vec::new()
    };
    // One untimed pod each first: the bridge, the nftables table, the page cache.
    for c in &contenders {
        let request = PodRequest { pod_id: "warmup".into(), ports: ports.clone(), ..PodRequest::default() };
        c.network.setup(&request).await.unwrap();
        c.network.teardown("warmup").await.unwrap();
    }
    for i in 0..args.pods {
        for c in &mut contenders {
            let request = PodRequest {
                pod_id: format!("benchpod{i:04}"),
                namespace: "default".into(),
                name: format!("pod-{i}"),
                uid: format!("uid-{i}"),
                ports: ports.clone(),
                ..PodRequest::default()
            };
            let started = Instant::now();
            let pod = c.network.setup(&request).await.unwrap();
            c.setup.push(started.elapsed());
            assert!(!pod.addresses.is_empty() && pod.netns.exists(), "{}: {pod:?}", c.name);
            let started = Instant::now();
            c.network.teardown(&request.pod_id).await.unwrap();
            c.teardown.push(started.elapsed());
        }
    }
    println!(
        "per-pod network, N={} pods each, {}interleaved (setup: namespace + address + veth{}; teardown: all of it)",
        args.pods,
        if args.host_port { "one host port each, " } else { "" },
        if args.host_port { " + host port" } else { "" }
    );
    println!("{:<32} {:>14} {:>14} {:>14} {:>14}", "", "setup p50", "setup p90", "teardown p50", "teardown p90");
    for c in &contenders {
        println!(
            "{:<32} {:>14} {:>14} {:>14} {:>14}",
            c.name,
            ms(percentile(&c.setup, 0.5)),
            ms(percentile(&c.setup, 0.9)),
            ms(percentile(&c.teardown, 0.5)),
            ms(percentile(&c.teardown, 0.9))
        );
    }
    let total = |c: &Contender| percentile(&c.setup, 0.5) + percentile(&c.teardown, 0.5);
    let (native, cni) = (&contenders[0], &contenders[1]);
    println!(
        "ratio CNI / native: setup p50 {:.1}x, teardown p50 {:.1}x, setup+teardown p50 {:.1}x",
        percentile(&cni.setup, 0.5).as_secs_f64() / percentile(&native.setup, 0.5).as_secs_f64(),
        percentile(&cni.teardown, 0.5).as_secs_f64() / percentile(&native.teardown, 0.5).as_secs_f64(),
        total(cni).as_secs_f64() / total(native).as_secs_f64()
    );
    // Clean up: bridges, our nftables table; what pods made is gone already.
    for c in &contenders {
        let _ = std::process::Command::new("ip").args(["link", "del", &c.bridge]).status();
        let _ = bulkhead_network::nat::remove(&c.bridge);
    }
}
