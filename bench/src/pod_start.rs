//! `pod-start`: the headline pod benchmark. With one CRI client, the same
//! images, host and run, for bulkhead and for containerd's CRI plugin with
//! runc and with crun (one containerd, two runtime handlers):
//!
//! - **latency**: RunPodSandbox + CreateContainer + StartContainer, then
//!   ContainerStatus until it says RUNNING, of a busybox container running
//!   `/bin/busybox sleep 3600`, one pod after another; p50 and p99;
//! - **memory**: with M pods running, the PSS (`/proc/PID/smaps_rollup`) of
//!   the runtime's own per-pod processes — bulkhead's monitors (and their
//!   pid-namespace holders when the pod shares one), containerd's shims and
//!   pause processes — divided by M, and the daemon's own PSS;
//! - **scale**: the wall time until 110 pods run, started by 8 clients at once.
//!
//! Rounds interleave the contenders in a rotated order. Each contender's
//! daemon is started for its turn, on its own root, state and socket under
//! the work directory, and stopped after it, once every pod it ran has been
//! removed (StopContainer with timeout 0, RemoveContainer, StopPodSandbox,
//! RemovePodSandbox); the bench then removes the pods' cgroup parents, as
//! kubelet would, and checks that nothing of the pods is left (processes,
//! mounts, veths, cgroups below the parents).
//!
//! The images come from a docker-registry started by the `bulkhead-e2e`
//! fixture: its busybox image (Debian's static busybox as `/bin/busybox` and
//! `/bin/sh`) and, as containerd's `sandbox_image`, a "pause" image of the
//! same layer whose entrypoint is `/bin/busybox sleep 2147483647`. Pods are
//! configured as kubelet configures them: a cgroup parent, a log directory,
//! DNS, and namespace options network POD, ipc POD, pid CONTAINER (POD with
//! `--share-pid`), on the container too.
//!
//! The daemons' roots, configs and the pods' log directories go in the
//! work directory (`--workdir`), their state directories and sockets in
//! another (`--statedir`): the run script puts the first on a journaled
//! ext4 file system and the second on a tmpfs, as a node keeps /var/lib and
//! /run.
//!
//! Run it as root through `bench/run-pod-start.sh`; the results are in
//! `docs/benchmarks.md`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bulkhead_bench::daemon::{Daemon, connect, tail};
use bulkhead_e2e::registry::{LayerCompression, OCI_CONFIG, OCI_MANIFEST, Registry, oci_arch, sha256};
use bulkhead_proto::cri::image_service_client::ImageServiceClient;
use bulkhead_proto::cri::runtime_service_client::RuntimeServiceClient;
use bulkhead_proto::cri::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest, CreateContainerRequest, DnsConfig,
    ImageSpec, LinuxContainerConfig, LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    ListContainersRequest, ListPodSandboxRequest, NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata,
    PullImageRequest, RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StatusRequest, StopContainerRequest, StopPodSandboxRequest,
};
use clap::{Parser, ValueEnum};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tonic::transport::Channel;

type Result<T> = std::result::Result<T, String>;

#[derive(Debug, Parser)]
#[command(
    args_override_self = true,
    about = "pod start latency, per-pod memory and 110-pod start time: bulkhead vs containerd+runc/crun"
)]
struct Args {
    /// Which measurements to make.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Phase::Latency, Phase::Memory, Phase::Scale])]
    phases: Vec<Phase>,
    /// Latency: measured pods per contender and round, started one after another.
    #[arg(long, default_value_t = 50)]
    pods: usize,
    /// Latency: rounds (each runs every contender once, in a rotated order).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Latency: unmeasured pods at the start of each contender's round.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Memory: pods running while PSS is read.
    #[arg(long, default_value_t = 20)]
    memory_pods: usize,
    /// Scale: pods to start.
    #[arg(long, default_value_t = 110)]
    scale_pods: usize,
    /// Scale: clients starting pods at once (each with its own connection).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Pods share one pid namespace (namespace_options.pid POD; kubelet's
    /// shareProcessNamespace) instead of one per container (CONTAINER, kubelet's default).
    #[arg(long)]
    share_pid: bool,
    /// The bulkhead daemon; bulkhead-monitor must be beside it [default: `bulkhead` next to this program].
    #[arg(long)]
    bulkhead: Option<PathBuf>,
    /// bulkhead's --log-level (`debug` logs every RPC's elapsed_us).
    #[arg(long, default_value = "warn")]
    bulkhead_log_level: String,
    #[arg(long, default_value = "/usr/bin/containerd")]
    containerd: PathBuf,
    #[arg(long, default_value = "/usr/sbin/runc")]
    runc: PathBuf,
    #[arg(long, default_value = "/usr/bin/crun")]
    crun: PathBuf,
    /// Where the CNI plugins are (containerd's bin_dir).
    #[arg(long, default_value = "/usr/lib/cni")]
    cni_bin: PathBuf,
    /// Where to make the bench's work directory, which holds the daemons'
    /// roots, configs and pod logs [default: $TMPDIR or /tmp].
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Where to make the directory of the daemons' state and sockets (what
    /// a node keeps under /run, a tmpfs) [default: in the work directory].
    #[arg(long)]
    statedir: Option<PathBuf>,
    /// Copy the daemons' logs into this directory at the end.
    #[arg(long)]
    keep_logs: Option<PathBuf>,
    /// Write every latency sample to this CSV file (contender, round, pod
    /// index in the round, pods already running, each step in ms).
    #[arg(long)]
    samples: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Phase {
    Latency,
    Memory,
    Scale,
}

/// The pause image's entrypoint (containerd's sandbox container).
const PAUSE_ARGS: [&str; 3] = ["/bin/busybox", "sleep", "2147483647"];
/// The workload.
const WORKLOAD_ARGS: [&str; 3] = ["/bin/busybox", "sleep", "3600"];
const CONTAINER_NAME: &str = "sleep";
/// The cgroup under which every pod's parent goes (kubelet's `kubepods`).
const CGROUP_TOP: &str = "bhbench";
const BULKHEAD_BRIDGE: &str = "bhbench0";
const BULKHEAD_CIDR: &str = "10.219.0.0/16";
const CONTAINERD_BRIDGE: &str = "bhbenchc0";
const CONTAINERD_CIDR: &str = "10.220.0.0/16";

// ------------------------------------------------------------- contenders

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Contender {
    Bulkhead,
    ContainerdRunc,
    ContainerdCrun,
}

const CONTENDERS: [Contender; 3] = [Contender::Bulkhead, Contender::ContainerdRunc, Contender::ContainerdCrun];
/// What the ratios are taken against.
const BASELINE: Contender = Contender::ContainerdRunc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Bulkhead,
    Containerd,
}

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::Bulkhead => "bulkhead",
            Contender::ContainerdRunc => "containerd+runc",
            Contender::ContainerdCrun => "containerd+crun",
        }
    }

    /// Used in pod names and cgroup paths.
    fn short(self) -> &'static str {
        match self {
            Contender::Bulkhead => "bh",
            Contender::ContainerdRunc => "runc",
            Contender::ContainerdCrun => "crun",
        }
    }

    fn handler(self) -> &'static str {
        match self {
            Contender::Bulkhead => "",
            Contender::ContainerdRunc => "runc",
            Contender::ContainerdCrun => "crun",
        }
    }

    fn kind(self) -> Kind {
        match self {
            Contender::Bulkhead => Kind::Bulkhead,
            _ => Kind::Containerd,
        }
    }

    fn bridge(self) -> &'static str {
        match self.kind() {
            Kind::Bulkhead => BULKHEAD_BRIDGE,
            Kind::Containerd => CONTAINERD_BRIDGE,
        }
    }
}

// ------------------------------------------------------------- the daemons

/// A channel once the daemon says RuntimeReady and NetworkReady (up to 60 s).
async fn wait_ready(daemon: &mut Daemon, socket: &Path) -> Result<Channel> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::from("no socket yet");
    loop {
        daemon.check_alive()?;
        if socket.exists() {
            match connect(socket).await {
                Ok(channel) => {
                    match RuntimeServiceClient::new(channel.clone()).status(StatusRequest::default()).await {
                        Ok(reply) => {
                            let conditions = reply.into_inner().status.map(|s| s.conditions).unwrap_or_default();
                            let not_ready: Vec<String> = conditions
                                .iter()
                                .filter(|c| !c.status)
                                .map(|c| format!("{} ({}: {})", c.r#type, c.reason, c.message))
                                .collect();
                            if conditions.len() >= 2 && not_ready.is_empty() {
                                return Ok(channel);
                            }
                            last = format!("not ready: {}", not_ready.join(", "));
                        }
                        Err(status) => last = rpc_error("Status", &status),
                    }
                }
                Err(e) => last = e,
            }
        }
        if Instant::now() > deadline {
            return Err(format!("{} was not ready within 60 s: {last}", daemon.name));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn rpc_error(rpc: &str, status: &tonic::Status) -> String {
    format!("{rpc}: {:?}: {}", status.code(), status.message())
}

// ------------------------------------------------------------------- pods

/// A pod this bench started.
#[derive(Debug, Clone)]
struct Pod {
    name: String,
    id: String,
    container: String,
}

/// The time of each step of one pod start.
#[derive(Debug, Clone, Copy, Default)]
struct Steps {
    run: Duration,
    create: Duration,
    start: Duration,
    /// ContainerStatus calls until RUNNING.
    status: Duration,
    total: Duration,
    /// How many ContainerStatus calls it took (1: RUNNING at once).
    polls: u32,
}

/// Makes the pods of one contender, as kubelet configures them.
#[derive(Debug, Clone)]
struct PodMaker {
    who: Contender,
    /// The image reference for CreateContainer: PullImage's answer, as kubelet passes it.
    image: String,
    logs: PathBuf,
    share_pid: bool,
}

impl PodMaker {
    fn namespaces(&self) -> NamespaceOption {
        NamespaceOption {
            network: NamespaceMode::Pod as i32,
            pid: if self.share_pid { NamespaceMode::Pod as i32 } else { NamespaceMode::Container as i32 },
            ipc: NamespaceMode::Pod as i32,
            ..NamespaceOption::default()
        }
    }

    fn pod_config(&self, n: usize) -> PodSandboxConfig {
        let name = format!("{}-{n}", self.who.short());
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.clone(),
                uid: format!("uid-{name}"),
                namespace: "bench".into(),
                attempt: 0,
            }),
            hostname: name.clone(),
            log_directory: self.logs.join(&name).display().to_string(),
            dns_config: Some(DnsConfig {
                servers: vec!["10.96.0.10".into()],
                searches: vec!["bench.svc.cluster.local".into(), "svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            }),
            labels: HashMap::from([("app".into(), "pod-start".into())]),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("/{CGROUP_TOP}/{}/pod{n}", self.who.short()),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(self.namespaces()),
                    ..LinuxSandboxSecurityContext::default()
                }),
                ..LinuxPodSandboxConfig::default()
            }),
            ..PodSandboxConfig::default()
        }
    }

    fn container_config(&self) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata { name: CONTAINER_NAME.into(), attempt: 0 }),
            image: Some(ImageSpec { image: self.image.clone(), ..ImageSpec::default() }),
            command: WORKLOAD_ARGS.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{CONTAINER_NAME}/0.log"),
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(self.namespaces()),
                    ..LinuxContainerSecurityContext::default()
                }),
                ..LinuxContainerConfig::default()
            }),
            ..ContainerConfig::default()
        }
    }

    /// Starts pod `n` and its container; returns once ContainerStatus says RUNNING.
    async fn start(&self, rt: &mut RuntimeServiceClient<Channel>, n: usize) -> Result<(Pod, Steps)> {
        let config = self.pod_config(n);
        let name = config.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
        // kubelet makes the pod's log directory and the container's.
        let logs = self.logs.join(&name).join(CONTAINER_NAME);
        fs::create_dir_all(&logs).map_err(|e| format!("create {}: {e}", logs.display()))?;
        let container = self.container_config();
        let fail = |rpc: &str, s: tonic::Status| format!("{} pod {name}: {}", self.who.name(), rpc_error(rpc, &s));

        let t0 = Instant::now();
        let run = RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: self.who.handler().into() };
        let id = rt.run_pod_sandbox(run).await.map_err(|s| fail("RunPodSandbox", s))?.into_inner().pod_sandbox_id;
        let t1 = Instant::now();
        let create = CreateContainerRequest {
            pod_sandbox_id: id.clone(),
            config: Some(container),
            sandbox_config: Some(config),
        };
        let created = rt.create_container(create).await;
        let cid = match created {
            Ok(reply) => reply.into_inner().container_id,
            Err(s) => {
                let pod = Pod { name: name.clone(), id, container: String::new() };
                let _ = remove_pod(rt, &pod).await;
                return Err(fail("CreateContainer", s));
            }
        };
        let pod = Pod { name: name.clone(), id, container: cid.clone() };
        let t2 = Instant::now();
        if let Err(s) = rt.start_container(StartContainerRequest { container_id: cid.clone() }).await {
            let _ = remove_pod(rt, &pod).await;
            return Err(fail("StartContainer", s));
        }
        let t3 = Instant::now();
        let mut polls = 0;
        let deadline = t3 + Duration::from_secs(10);
        loop {
            polls += 1;
            let request = ContainerStatusRequest { container_id: cid.clone(), verbose: false };
            let state = match rt.container_status(request).await {
                Ok(reply) => reply.into_inner().status.map(|s| s.state),
                Err(s) => {
                    let _ = remove_pod(rt, &pod).await;
                    return Err(fail("ContainerStatus", s));
                }
            };
            if state == Some(ContainerState::ContainerRunning as i32) {
                break;
            }
            if Instant::now() > deadline {
                let _ = remove_pod(rt, &pod).await;
                return Err(format!(
                    "{} pod {name}: container {cid} not RUNNING 10 s after StartContainer (state {state:?})",
                    self.who.name()
                ));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let t4 = Instant::now();
        let steps = Steps { run: t1 - t0, create: t2 - t1, start: t3 - t2, status: t4 - t3, total: t4 - t0, polls };
        Ok((pod, steps))
    }
}

/// StopContainer (timeout 0: SIGKILL at once; busybox sleep as pid 1
/// ignores SIGTERM), RemoveContainer, StopPodSandbox, RemovePodSandbox.
async fn remove_pod(rt: &mut RuntimeServiceClient<Channel>, pod: &Pod) -> Result<Duration> {
    let fail = |rpc: &str, s: tonic::Status| format!("pod {}: {}", pod.name, rpc_error(rpc, &s));
    let t0 = Instant::now();
    if !pod.container.is_empty() {
        let stop = StopContainerRequest { container_id: pod.container.clone(), timeout: 0 };
        rt.stop_container(stop).await.map_err(|s| fail("StopContainer", s))?;
        let remove = RemoveContainerRequest { container_id: pod.container.clone() };
        rt.remove_container(remove).await.map_err(|s| fail("RemoveContainer", s))?;
    }
    let stop = StopPodSandboxRequest { pod_sandbox_id: pod.id.clone() };
    rt.stop_pod_sandbox(stop).await.map_err(|s| fail("StopPodSandbox", s))?;
    let remove = RemovePodSandboxRequest { pod_sandbox_id: pod.id.clone() };
    rt.remove_pod_sandbox(remove).await.map_err(|s| fail("RemovePodSandbox", s))?;
    Ok(t0.elapsed())
}

// --------------------------------------------------------- host processes

/// A process on the host.
#[derive(Debug, Clone)]
struct Proc {
    pid: i32,
    ppid: i32,
    argv: Vec<String>,
}

fn processes() -> Vec<Proc> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            let argv = cmdline
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            Some(Proc { pid, ppid, argv })
        })
        .collect()
}

fn program(p: &Proc) -> &str {
    p.argv.first().map(|a| a.rsplit('/').next().unwrap_or(a)).unwrap_or("")
}

fn mentions(p: &Proc, text: &str) -> bool {
    p.argv.iter().any(|a| a.contains(text))
}

/// The proportional set size of a process, KiB.
fn pss_kib(pid: i32) -> Result<u64> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{path}: no Pss line"))
}

/// What the memory phase reads.
#[derive(Debug, Clone, Default)]
struct Memory {
    pods: usize,
    /// The per-pod runtime processes, by program name: (count, PSS KiB).
    per_pod: BTreeMap<String, (usize, u64)>,
    daemon_kib: u64,
}

impl Memory {
    fn per_pod_mib(&self) -> f64 {
        let total: u64 = self.per_pod.values().map(|(_, kib)| kib).sum();
        total as f64 / 1024.0 / self.pods as f64
    }

    fn describe(&self) -> String {
        self.per_pod
            .iter()
            .map(|(name, (count, kib))| {
                format!("{count} × {name} ({:.2} MiB each)", *kib as f64 / 1024.0 / (*count).max(1) as f64)
            })
            .collect::<Vec<_>>()
            .join(" + ")
    }
}

// ---------------------------------------------------------------- cgroups

/// The mount points of every cgroup hierarchy.
fn cgroup_mounts() -> Vec<PathBuf> {
    bulkhead_runtime::mountinfo::read(Path::new("/proc/self/mountinfo"))
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2")
        .map(|m| m.mountpoint)
        .collect()
}

/// `dir` and every directory below it, deepest first.
fn dirs_below(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        out.push(dir.to_owned());
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path(), out);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    out
}

/// Removes `<hierarchy>/<rel>` in every hierarchy, deepest first, as
/// kubelet removes the pod cgroups it made. Returns the cgroups found below
/// depth `ours` (the runtime's, which it should have removed itself) and
/// any it could not remove.
async fn remove_cgroups(rel: &Path, ours: usize) -> Vec<String> {
    let mut left = Vec::new();
    for mount in cgroup_mounts() {
        let top = mount.join(rel);
        if !top.exists() {
            continue;
        }
        for dir in dirs_below(&top) {
            let depth = dir.strip_prefix(&top).map_or(0, |rest| rest.components().count());
            if depth > ours {
                left.push(format!("cgroup {} was left by the runtime", dir.display()));
            }
            let mut removed = false;
            for _ in 0..50 {
                if fs::remove_dir(&dir).is_ok() || !dir.exists() {
                    removed = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if !removed {
                let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                left.push(format!("cgroup {} cannot be removed (processes: {})", dir.display(), procs.trim()));
            }
        }
    }
    left
}

// ------------------------------------------------------------------ bench

struct Bench {
    args: Args,
    work: PathBuf,
    /// The daemons' state directories and sockets.
    run: PathBuf,
    bulkhead: PathBuf,
    registry_host: String,
    busybox: String,
    pause: String,
    /// The image reference CreateContainer gets, per daemon.
    images: BTreeMap<Kind, String>,
    next_pod: AtomicUsize,
}

/// One contender's daemon, running, and the pods it runs.
struct Session {
    who: Contender,
    daemon: Daemon,
    socket: PathBuf,
    /// The daemon's directories: root and the rest (`work`), state and sockets (`run`).
    dirs: [PathBuf; 2],
    rt: RuntimeServiceClient<Channel>,
    maker: Arc<PodMaker>,
    pods: Vec<Pod>,
}

impl Bench {
    fn dir(&self, kind: Kind) -> PathBuf {
        match kind {
            Kind::Bulkhead => self.work.join("bulkhead"),
            Kind::Containerd => self.work.join("containerd"),
        }
    }

    fn run_dir(&self, kind: Kind) -> PathBuf {
        match kind {
            Kind::Bulkhead => self.run.join("bulkhead"),
            Kind::Containerd => self.run.join("containerd"),
        }
    }

    fn socket(&self, kind: Kind) -> PathBuf {
        match kind {
            Kind::Bulkhead => self.run_dir(kind).join("run/bulkhead.sock"),
            Kind::Containerd => self.run_dir(kind).join("containerd.sock"),
        }
    }

    /// Writes both daemons' configuration files.
    fn configure(&self) -> Result<()> {
        let write =
            |path: &Path, text: &str| fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()));
        let mkdir = |path: &Path| fs::create_dir_all(path).map_err(|e| format!("create {}: {e}", path.display()));
        let host = &self.registry_host;

        let b = self.dir(Kind::Bulkhead);
        mkdir(&b.join("net.d"))?;
        write(
            &b.join("config.toml"),
            &format!(
                "[image]\nplain_http_registries = [\"{host}\"]\n\n[network]\npod_cidr = \"{BULKHEAD_CIDR}\"\nbridge = \"{BULKHEAD_BRIDGE}\"\ncni_conf_dir = \"{}\"\n",
                b.join("net.d").display()
            ),
        )?;

        let c = self.dir(Kind::Containerd);
        let hosts = c.join("certs.d").join(host);
        mkdir(&hosts)?;
        write(
            &hosts.join("hosts.toml"),
            &format!(
                "server = \"http://{host}\"\n\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
            ),
        )?;
        mkdir(&c.join("cni"))?;
        write(
            &c.join("cni/10-bench.conflist"),
            &format!(
                r#"{{"cniVersion":"1.0.0","name":"bhbenchc","plugins":[
  {{"type":"bridge","bridge":"{CONTAINERD_BRIDGE}","isGateway":true,"ipMasq":true,"hairpinMode":true,
    "ipam":{{"type":"host-local","ranges":[[{{"subnet":"{CONTAINERD_CIDR}"}}]],"routes":[{{"dst":"0.0.0.0/0"}}],"dataDir":"{}"}}}},
  {{"type":"portmap","capabilities":{{"portMappings":true}}}}
]}}
"#,
                c.join("ipam").display()
            ),
        )?;
        let d = c.display();
        let r = self.run_dir(Kind::Containerd);
        let r = r.display();
        let (runc, crun, cni_bin) = (self.args.runc.display(), self.args.crun.display(), self.args.cni_bin.display());
        write(
            &c.join("config.toml"),
            &format!(
                r#"version = 2
root = "{d}/root"
state = "{r}/state"

[grpc]
  address = "{r}/containerd.sock"

[ttrpc]
  address = "{r}/containerd.sock.ttrpc"

[debug]
  address = "{r}/debug.sock"
  level = "warn"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  # No CAP_SYS_RESOURCE here: runc cannot lower the pause's oom_score_adj
  # to -998 and fails; this clamps it to containerd's own, as bulkhead does.
  restrict_oom_score_adj = true

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  BinaryName = "{runc}"
  Root = "{r}/runc-root"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun.options]
  BinaryName = "{crun}"
  Root = "{r}/crun-root"

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{cni_bin}"
  conf_dir = "{d}/cni"

[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "{d}/certs.d"
"#,
                pause = self.pause
            ),
        )?;
        Ok(())
    }

    /// Starts `who`'s daemon and waits until it is ready.
    async fn open(&self, who: Contender) -> Result<Session> {
        let kind = who.kind();
        let dir = self.dir(kind);
        let run = self.run_dir(kind);
        let socket = self.socket(kind);
        let mut daemon = match kind {
            Kind::Bulkhead => Daemon::spawn(
                "bulkhead",
                Command::new(&self.bulkhead)
                    .arg("--root")
                    .arg(dir.join("root"))
                    .arg("--state")
                    .arg(run.join("state"))
                    .arg("--socket")
                    .arg(&socket)
                    .arg("--config")
                    .arg(dir.join("config.toml"))
                    .args(["--log-level", &self.args.bulkhead_log_level]),
                &dir.join("daemon.log"),
            )?,
            Kind::Containerd => Daemon::spawn(
                "containerd",
                Command::new(&self.args.containerd).arg("--config").arg(dir.join("config.toml")),
                &dir.join("daemon.log"),
            )?,
        };
        let channel = wait_ready(&mut daemon, &socket).await?;
        let maker = Arc::new(PodMaker {
            who,
            image: self.images.get(&kind).cloned().unwrap_or_default(),
            logs: dir.join("pod-logs"),
            share_pid: self.args.share_pid,
        });
        let dirs = [dir, run];
        Ok(Session { who, daemon, socket, dirs, rt: RuntimeServiceClient::new(channel), maker, pods: Vec::new() })
    }

    fn next_pod(&self) -> usize {
        self.next_pod.fetch_add(1, Ordering::SeqCst)
    }

    /// Pulls the images each daemon needs; remembers the busybox reference
    /// each returns.
    async fn pull(&mut self) -> Result<()> {
        for (who, images) in [
            (Contender::Bulkhead, vec![self.busybox.clone()]),
            (Contender::ContainerdRunc, vec![self.busybox.clone(), self.pause.clone()]),
        ] {
            let session = self.open(who).await?;
            let mut image = ImageServiceClient::new(connect(&session.socket).await?);
            let mut result = Ok(());
            for reference in images {
                let t = Instant::now();
                let request = PullImageRequest {
                    image: Some(ImageSpec { image: reference.clone(), ..ImageSpec::default() }),
                    ..PullImageRequest::default()
                };
                match image.pull_image(request).await {
                    Ok(reply) => {
                        let image_ref = reply.into_inner().image_ref;
                        println!(
                            "{}: pulled {reference} as {image_ref} in {:.2} s",
                            who.kind_name(),
                            t.elapsed().as_secs_f64()
                        );
                        if reference == self.busybox {
                            self.images.insert(who.kind(), image_ref);
                        }
                    }
                    Err(s) => {
                        result = Err(format!("{}: {}", who.kind_name(), rpc_error("PullImage", &s)));
                        break;
                    }
                }
            }
            let closed = self.close(session).await;
            result?;
            closed?;
        }
        Ok(())
    }

    /// Removes every pod of the session, stops the daemon and checks that
    /// nothing of the pods is left.
    async fn close(&self, mut s: Session) -> Result<()> {
        let mut errors = Vec::new();
        let pods = std::mem::take(&mut s.pods);
        for pod in &pods {
            if let Err(e) = remove_pod(&mut s.rt, pod).await {
                errors.push(e);
            }
        }
        match s.rt.list_pod_sandbox(ListPodSandboxRequest::default()).await {
            Ok(reply) if !reply.get_ref().items.is_empty() => {
                errors.push(format!("{} pod sandboxes remain after removal", reply.get_ref().items.len()))
            }
            Ok(_) => {}
            Err(st) => errors.push(rpc_error("ListPodSandbox", &st)),
        }
        match s.rt.list_containers(ListContainersRequest::default()).await {
            Ok(reply) if !reply.get_ref().containers.is_empty() => {
                errors.push(format!("{} containers remain after removal", reply.get_ref().containers.len()))
            }
            Ok(_) => {}
            Err(st) => errors.push(rpc_error("ListContainers", &st)),
        }
        let daemon_log = s.daemon.log.clone();
        if let Err(e) = s.daemon.stop().await {
            errors.push(e);
        }
        errors.extend(remove_cgroups(&Path::new(CGROUP_TOP).join(s.who.short()), 1).await);
        // Per-pod processes of this daemon, mounts under its state, veths on its bridge.
        for dir in &s.dirs {
            let marker = dir.display().to_string();
            for p in processes() {
                if mentions(&p, &marker) {
                    errors.push(format!("process {} ({}) still runs", p.pid, p.argv.join(" ")));
                    let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
                }
            }
            for mount in bulkhead_runtime::mountinfo::mounted_under(dir) {
                errors.push(format!("mount {} remains", mount.display()));
            }
        }
        let brif = Path::new("/sys/class/net").join(s.who.bridge()).join("brif");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let ports: Vec<String> = fs::read_dir(&brif)
                .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            if ports.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                errors.push(format!("veths on {}: {}", s.who.bridge(), ports.join(" ")));
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!("{}: {}\n(the end of its log:\n{})", s.who.name(), errors.join("\n  "), tail(&daemon_log)))
        }
    }

    /// The per-pod runtime processes of a session's daemon, and its own PSS.
    fn memory(&self, s: &Session) -> Result<Memory> {
        let procs = processes();
        // Monitors name their pod's state directory, shims containerd's socket.
        let marker = s.dirs[1].display().to_string();
        let mut chosen: Vec<&Proc> = Vec::new();
        match s.who.kind() {
            Kind::Bulkhead => {
                // Every process of the monitor's program (the monitor and,
                // with a shared pid namespace, the namespace's pid 1 it forks,
                // which never execs); container processes run busybox.
                chosen.extend(procs.iter().filter(|p| program(p) == "bulkhead-monitor" && mentions(p, &marker)));
            }
            Kind::Containerd => {
                let shims: BTreeSet<i32> = procs
                    .iter()
                    .filter(|p| program(p) == "containerd-shim-runc-v2" && mentions(p, &marker))
                    .map(|p| p.pid)
                    .collect();
                chosen.extend(procs.iter().filter(|p| shims.contains(&p.pid)));
                chosen.extend(procs.iter().filter(|p| shims.contains(&p.ppid) && p.argv == PAUSE_ARGS));
            }
        }
        let pids: BTreeSet<i32> = chosen.iter().map(|p| p.pid).collect();
        let mut per_pod: BTreeMap<String, (usize, u64)> = BTreeMap::new();
        for p in chosen {
            let name = if p.argv == PAUSE_ARGS {
                "pause".to_owned()
            } else if pids.contains(&p.ppid) {
                // A monitor's child that never exec'd: its pid namespace's pid 1.
                format!("{} (pid-namespace holder)", program(p))
            } else {
                program(p).to_owned()
            };
            let entry = per_pod.entry(name).or_default();
            entry.0 += 1;
            entry.1 += pss_kib(p.pid)?;
        }
        let pods = s.pods.len();
        // Each pod must have its own: a monitor, or a shim and a pause.
        let expect: &[&str] = match s.who.kind() {
            Kind::Bulkhead => &["bulkhead-monitor"],
            Kind::Containerd => &["containerd-shim-runc-v2", "pause"],
        };
        for name in expect {
            let count = per_pod.get(*name).map_or(0, |(c, _)| *c);
            if count < pods {
                return Err(format!("{}: {count} {name} processes for {pods} pods", s.who.name()));
            }
        }
        let daemon = s.daemon.pid().ok_or_else(|| format!("{} is not running", s.who.name()))?;
        Ok(Memory { pods, per_pod, daemon_kib: pss_kib(daemon)? })
    }

    /// Starts `count` pods with `concurrency` clients, each on its own
    /// connection; returns the wall time until every container runs.
    async fn start_many(&self, s: &mut Session, count: usize, concurrency: usize) -> Result<Duration> {
        let mut clients = Vec::new();
        for _ in 0..concurrency.max(1) {
            clients.push(RuntimeServiceClient::new(connect(&s.socket).await?));
        }
        let numbers: Arc<Vec<usize>> = Arc::new((0..count).map(|_| self.next_pod()).collect());
        let next = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        nix::unistd::sync();
        let t0 = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for mut rt in clients {
            let (numbers, next, started, errors, maker) =
                (numbers.clone(), next.clone(), started.clone(), errors.clone(), s.maker.clone());
            tasks.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&n) = numbers.get(i) else { break };
                    match maker.start(&mut rt, n).await {
                        Ok((pod, _)) => started.lock().unwrap_or_else(PoisonError::into_inner).push(pod),
                        Err(e) => {
                            errors.lock().unwrap_or_else(PoisonError::into_inner).push(e);
                            break;
                        }
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        let wall = t0.elapsed();
        s.pods.extend(std::mem::take(&mut *started.lock().unwrap_or_else(PoisonError::into_inner)));
        let errors = std::mem::take(&mut *errors.lock().unwrap_or_else(PoisonError::into_inner));
        if !errors.is_empty() {
            return Err(errors.join("\n"));
        }
        Ok(wall)
    }

    /// Removes every pod of the session with `concurrency` clients; returns the wall time.
    async fn remove_many(&self, s: &mut Session, concurrency: usize) -> Result<Duration> {
        let mut clients = Vec::new();
        for _ in 0..concurrency.max(1) {
            clients.push(RuntimeServiceClient::new(connect(&s.socket).await?));
        }
        let pods = Arc::new(Mutex::new(std::mem::take(&mut s.pods)));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let t0 = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for mut rt in clients {
            let (pods, failed) = (pods.clone(), failed.clone());
            tasks.spawn(async move {
                loop {
                    let Some(pod) = pods.lock().unwrap_or_else(PoisonError::into_inner).pop() else { break };
                    if let Err(e) = remove_pod(&mut rt, &pod).await {
                        failed.lock().unwrap_or_else(PoisonError::into_inner).push((pod, e));
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        let wall = t0.elapsed();
        let failed = std::mem::take(&mut *failed.lock().unwrap_or_else(PoisonError::into_inner));
        if failed.is_empty() {
            return Ok(wall);
        }
        let message = failed.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>().join("\n");
        s.pods.extend(failed.into_iter().map(|(pod, _)| pod));
        Err(message)
    }
}

impl Contender {
    fn kind_name(self) -> &'static str {
        match self.kind() {
            Kind::Bulkhead => "bulkhead",
            Kind::Containerd => "containerd",
        }
    }
}

// ----------------------------------------------------------------- phases

#[derive(Debug, Default)]
struct Results {
    latency: BTreeMap<Contender, Vec<Steps>>,
    teardown: BTreeMap<Contender, Vec<Duration>>,
    memory: BTreeMap<Contender, Memory>,
    scale: BTreeMap<Contender, (Duration, Duration, Memory)>,
}

/// Runs `work` on a fresh session of `who`, then closes it whatever happened.
macro_rules! session {
    ($bench:expr, $who:expr, |$s:ident| $work:block) => {{
        let mut $s = $bench.open($who).await?;
        let result: Result<_> = async { $work }.await;
        let closed = $bench.close($s).await;
        match (result, closed) {
            (Ok(v), Ok(())) => Ok(v),
            (Err(e), Ok(())) => Err(e),
            (Ok(_), Err(c)) => Err(c),
            (Err(e), Err(c)) => Err(format!("{e}\nand while cleaning up: {c}")),
        }
    }};
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile (`q` in 0..=1) of unsorted samples.
fn percentile(xs: &[Duration], q: f64) -> Duration {
    let mut v = xs.to_vec();
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn mean(xs: &[Duration]) -> Duration {
    if xs.is_empty() { Duration::ZERO } else { xs.iter().sum::<Duration>() / xs.len() as u32 }
}

async fn latency(bench: &Bench, results: &mut Results) -> Result<()> {
    let args = &bench.args;
    println!();
    println!(
        "latency: {} rounds × {} pods per contender (after {} unmeasured), one at a time",
        args.rounds, args.pods, args.warmup
    );
    println!(
        "round  contender          p50 ms   p99 ms  max ms   (RunPodSandbox/Create/Start/Status p50)  teardown p50 ms"
    );
    for round in 0..args.rounds {
        for k in 0..CONTENDERS.len() {
            let who = CONTENDERS[(round + k) % CONTENDERS.len()];
            let (samples, teardown) = session!(bench, who, |s| {
                nix::unistd::sync();
                let mut samples = Vec::new();
                for i in 0..args.warmup + args.pods {
                    let n = bench.next_pod();
                    let (pod, steps) = s.maker.start(&mut s.rt, n).await?;
                    s.pods.push(pod);
                    if i >= args.warmup {
                        samples.push(steps);
                    }
                }
                let mut teardown = Vec::new();
                while let Some(pod) = s.pods.pop() {
                    match remove_pod(&mut s.rt, &pod).await {
                        Ok(d) => teardown.push(d),
                        Err(e) => {
                            s.pods.push(pod);
                            return Err(e);
                        }
                    }
                }
                Ok((samples, teardown))
            })?;
            let totals: Vec<Duration> = samples.iter().map(|s| s.total).collect();
            let p50 = |f: fn(&Steps) -> Duration| ms(percentile(&samples.iter().map(f).collect::<Vec<_>>(), 0.5));
            println!(
                "{:<6} {:<16} {:>8.2} {:>8.2} {:>7.2}   ({:.2}/{:.2}/{:.2}/{:.2})  {:>28.2}",
                round + 1,
                who.name(),
                ms(percentile(&totals, 0.5)),
                ms(percentile(&totals, 0.99)),
                ms(percentile(&totals, 1.0)),
                p50(|s| s.run),
                p50(|s| s.create),
                p50(|s| s.start),
                p50(|s| s.status),
                ms(percentile(&teardown, 0.5)),
            );
            if let Some(path) = &args.samples {
                let mut csv = String::new();
                if round == 0 && k == 0 {
                    csv.push_str("contender,round,index,running,run_ms,create_ms,start_ms,status_ms,total_ms\n");
                }
                for (i, x) in samples.iter().enumerate() {
                    csv.push_str(&format!(
                        "{},{},{i},{},{:.3},{:.3},{:.3},{:.3},{:.3}\n",
                        who.name(),
                        round + 1,
                        i + args.warmup,
                        ms(x.run),
                        ms(x.create),
                        ms(x.start),
                        ms(x.status),
                        ms(x.total)
                    ));
                }
                use std::io::Write as _;
                fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .and_then(|mut f| f.write_all(csv.as_bytes()))
                    .map_err(|e| format!("write {}: {e}", path.display()))?;
            }
            results.latency.entry(who).or_default().extend(samples);
            results.teardown.entry(who).or_default().extend(teardown);
        }
    }
    Ok(())
}

async fn memory(bench: &Bench, results: &mut Results) -> Result<()> {
    let m = bench.args.memory_pods;
    println!();
    println!("memory: PSS with {m} pods running (started one at a time, read 2 s after the last)");
    for who in CONTENDERS {
        let memory = session!(bench, who, |s| {
            for _ in 0..m {
                let n = bench.next_pod();
                let (pod, _) = s.maker.start(&mut s.rt, n).await?;
                s.pods.push(pod);
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            bench.memory(&s)
        })?;
        println!(
            "{:<16} {:.2} MiB per pod: {}; daemon {:.1} MiB",
            who.name(),
            memory.per_pod_mib(),
            memory.describe(),
            memory.daemon_kib as f64 / 1024.0
        );
        results.memory.insert(who, memory);
    }
    Ok(())
}

async fn scale(bench: &Bench, results: &mut Results) -> Result<()> {
    let (count, concurrency) = (bench.args.scale_pods, bench.args.concurrency);
    println!();
    println!("scale: {count} pods, {concurrency} clients at once, until every container runs");
    for who in CONTENDERS {
        let (wall, teardown, memory) = session!(bench, who, |s| {
            let wall = bench.start_many(&mut s, count, concurrency).await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let memory = bench.memory(&s)?;
            let teardown = bench.remove_many(&mut s, concurrency).await?;
            Ok((wall, teardown, memory))
        })?;
        println!(
            "{:<16} {count} pods running after {:.2} s ({:.1} pods/s); then {:.2} MiB PSS per pod, daemon {:.1} MiB; removed in {:.2} s",
            who.name(),
            wall.as_secs_f64(),
            count as f64 / wall.as_secs_f64(),
            memory.per_pod_mib(),
            memory.daemon_kib as f64 / 1024.0,
            teardown.as_secs_f64()
        );
        results.scale.insert(who, (wall, teardown, memory));
    }
    Ok(())
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "missed" }
}

fn report(bench: &Bench, r: &Results) {
    if !r.latency.is_empty() {
        let totals = |who: Contender| r.latency[&who].iter().map(|s| s.total).collect::<Vec<_>>();
        let step = |who: Contender, f: fn(&Steps) -> Duration| {
            ms(percentile(&r.latency[&who].iter().map(f).collect::<Vec<_>>(), 0.5))
        };
        let base = totals(BASELINE);
        let (b50, b99) = (ms(percentile(&base, 0.5)), ms(percentile(&base, 0.99)));
        println!();
        println!(
            "pod + container ready (RunPodSandbox + CreateContainer + StartContainer + ContainerStatus RUNNING), {} samples each, ms:",
            base.len()
        );
        println!();
        println!(
            "| contender | p50 | p99 | mean | RunPodSandbox p50 | CreateContainer p50 | StartContainer p50 | ContainerStatus p50 | p50 ÷ containerd+runc's | p99 ÷ containerd+runc's | teardown p50 |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for who in CONTENDERS {
            let t = totals(who);
            let (p50, p99) = (ms(percentile(&t, 0.5)), ms(percentile(&t, 0.99)));
            println!(
                "| {} | {p50:.1} | {p99:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.3} | {:.3} | {:.1} |",
                who.name(),
                ms(mean(&t)),
                step(who, |s| s.run),
                step(who, |s| s.create),
                step(who, |s| s.start),
                step(who, |s| s.status),
                p50 / b50,
                p99 / b99,
                ms(percentile(&r.teardown[&who], 0.5)),
            );
        }
        let polls: Vec<u32> = CONTENDERS.iter().flat_map(|w| r.latency[w].iter().map(|s| s.polls)).collect();
        let at_once = polls.iter().filter(|&&p| p == 1).count();
        println!();
        println!(
            "ContainerStatus said RUNNING at the first call after StartContainer in {at_once} of {} starts",
            polls.len()
        );
        let ratio = ms(percentile(&totals(Contender::Bulkhead), 0.5)) / b50;
        println!(
            "goal: bulkhead's p50 at most 1/5 of containerd+runc's: {:.3} ({:.1}× faster): {}",
            ratio,
            1.0 / ratio,
            verdict(ratio <= 0.2)
        );
    }
    if !r.memory.is_empty() {
        println!();
        println!(
            "per-pod runtime memory, PSS with {} pods running ({}):",
            bench.args.memory_pods,
            if bench.args.share_pid { "pid namespace per pod" } else { "pid namespace per container" }
        );
        println!();
        println!("| contender | PSS per pod MiB | per-pod processes | daemon PSS MiB |");
        println!("|---|---:|---|---:|");
        for (who, m) in &r.memory {
            println!(
                "| {} | {:.2} | {} | {:.1} |",
                who.name(),
                m.per_pod_mib(),
                m.describe(),
                m.daemon_kib as f64 / 1024.0
            );
        }
        if let Some(m) = r.memory.get(&Contender::Bulkhead) {
            let mib = m.per_pod_mib();
            println!();
            println!("goal: at most 2 MiB PSS per pod: {mib:.2} MiB: {}", verdict(mib <= 2.0));
        }
    }
    if !r.scale.is_empty() {
        let base = r.scale.get(&BASELINE).map(|(w, _, _)| w.as_secs_f64());
        println!();
        println!(
            "{} pods, {} clients at once, until every container runs:",
            bench.args.scale_pods, bench.args.concurrency
        );
        println!();
        println!(
            "| contender | wall s | pods/s | ÷ containerd+runc's | PSS per pod MiB (all running) | daemon PSS MiB | removal s |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for (who, (wall, teardown, m)) in &r.scale {
            let w = wall.as_secs_f64();
            println!(
                "| {} | {w:.2} | {:.1} | {} | {:.2} | {:.1} | {:.2} |",
                who.name(),
                bench.args.scale_pods as f64 / w,
                base.map_or("-".into(), |b| format!("{:.3}", w / b)),
                m.per_pod_mib(),
                m.daemon_kib as f64 / 1024.0,
                teardown.as_secs_f64()
            );
        }
        if let (Some(b), Some((w, _, _))) = (base, r.scale.get(&Contender::Bulkhead)) {
            let ratio = w.as_secs_f64() / b;
            println!();
            println!(
                "goal: {} pods in at most 1/4 of containerd+runc's time: {ratio:.3} ({:.1}× faster): {}",
                bench.args.scale_pods,
                1.0 / ratio,
                verdict(ratio <= 0.25)
            );
        }
    }
}

// ------------------------------------------------------------------- main

/// Pushes the pause image: busybox's layer, with `PAUSE_ARGS` as entrypoint.
async fn push_pause(registry: &Registry, repo: &str, tag: &str, layer_tar: &[u8]) -> Result<()> {
    // The fixture pushes the layer (and a config we do not use) ...
    registry.push_image(repo, "layer", &[(layer_tar.to_vec(), LayerCompression::Gzip)], false).await;
    // ... then our own config and manifest go up beside it.
    let http = reqwest::Client::builder().build().map_err(|e| format!("HTTP client: {e}"))?;
    let base = format!("http://{}/v2/{repo}", registry.host);
    let get = http
        .get(format!("{base}/manifests/layer"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .map_err(|e| format!("GET manifest: {e}"))?;
    let body = get.bytes().await.map_err(|e| format!("GET manifest: {e}"))?;
    let manifest: serde_json::Value = serde_json::from_slice(&body).map_err(|e| format!("manifest: {e}"))?;
    let layer = manifest["layers"][0].clone();
    let config = serde_json::json!({
        "architecture": oci_arch(), "os": "linux",
        "config": {"Entrypoint": PAUSE_ARGS, "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256(layer_tar)]}
    })
    .to_string();
    let digest = sha256(config.as_bytes());
    let start = http.post(format!("{base}/blobs/uploads/")).send().await.map_err(|e| format!("start upload: {e}"))?;
    let location = start
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .ok_or_else(|| format!("start upload: {} without a location", start.status()))?
        .to_owned();
    let location = if location.starts_with("http") { location } else { format!("http://{}{location}", registry.host) };
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = http
        .put(format!("{location}{sep}digest={digest}"))
        .body(config.clone())
        .send()
        .await
        .map_err(|e| format!("upload config: {e}"))?;
    if put.status() != 201 {
        return Err(format!("upload config: {}", put.status()));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest, "size": config.len()},
        "layers": [layer]
    })
    .to_string();
    let put = http
        .put(format!("{base}/manifests/{tag}"))
        .header("content-type", OCI_MANIFEST)
        .body(manifest)
        .send()
        .await
        .map_err(|e| format!("push manifest: {e}"))?;
    if put.status() != 201 {
        return Err(format!("push manifest: {}", put.status()));
    }
    Ok(())
}

async fn run(args: Args) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err("run as root: the daemons need it".into());
    }
    let bulkhead = bulkhead_bench::bulkhead_binary(args.bulkhead.as_deref())?;
    let monitor = bulkhead.with_file_name("bulkhead-monitor");
    let bridge = args.cni_bin.join("bridge");
    let binaries = [&bulkhead, &monitor, &args.containerd, &args.runc, &args.crun, &bridge];
    bulkhead_bench::require_files(binaries.map(|b| b.as_path()))?;
    let work = bulkhead_bench::work_dir("pod-start-", args.workdir.as_deref())?;
    let run = bulkhead_bench::work_dir("pod-start-", Some(args.statedir.as_deref().unwrap_or(work.path())))?;
    println!("work directory: {}; state directory: {}", work.path().display(), run.path().display());
    let keep_logs = args.keep_logs.clone();
    let result = measure(args, bulkhead, work.path(), run.path()).await;
    if let Some(dir) = keep_logs {
        let _ = fs::create_dir_all(&dir);
        for kind in ["bulkhead", "containerd"] {
            let _ = fs::copy(work.path().join(kind).join("daemon.log"), dir.join(format!("{kind}.log")));
        }
        println!("daemon logs copied to {}", dir.display());
    }
    // Never remove a directory that still has something mounted under it.
    let mut left = bulkhead_runtime::mountinfo::mounted_under(run.path());
    left.extend(bulkhead_runtime::mountinfo::mounted_under(work.path()));
    if !left.is_empty() {
        let kept = (run.keep(), work.keep());
        let err = format!("mounts left under {} and {} (kept): {left:?}", kept.0.display(), kept.1.display());
        return Err(match result {
            Ok(()) => err,
            Err(e) => format!("{e}\n{err}"),
        });
    }
    run.close().map_err(|e| format!("remove the state directory: {e}"))?;
    work.close().map_err(|e| format!("remove the work directory: {e}"))?;
    result
}

async fn measure(args: Args, bulkhead: PathBuf, work: &Path, run: &Path) -> Result<()> {
    let registry = Registry::start();
    let pushed = registry.push_busybox("bench/busybox", "v1").await;
    push_pause(&registry, "bench/pause", "v1", &pushed.layer_tar).await?;
    let busybox = format!("{}/bench/busybox:v1", registry.host);
    let pause = format!("{}/bench/pause:v1", registry.host);
    println!("images: {busybox} (busybox-static), {pause} (the same layer; entrypoint {})", PAUSE_ARGS.join(" "));
    println!(
        "pods: namespace_options network POD, ipc POD, pid {}; container: {} as the image's user, default security context",
        if args.share_pid { "POD" } else { "CONTAINER" },
        WORKLOAD_ARGS.join(" ")
    );

    let mut bench = Bench {
        args,
        work: work.to_owned(),
        run: run.to_owned(),
        bulkhead,
        registry_host: registry.host.clone(),
        busybox,
        pause,
        images: BTreeMap::new(),
        next_pod: AtomicUsize::new(0),
    };
    bench.configure()?;
    bench.pull().await?;
    let mut results = Results::default();
    let phases = bench.args.phases.clone();
    let outcome = async {
        if phases.contains(&Phase::Latency) {
            latency(&bench, &mut results).await?;
        }
        if phases.contains(&Phase::Memory) {
            memory(&bench, &mut results).await?;
        }
        if phases.contains(&Phase::Scale) {
            scale(&bench, &mut results).await?;
        }
        Ok::<(), String>(())
    }
    .await;
    let cgroups = remove_cgroups(Path::new(CGROUP_TOP), 2).await;
    outcome?;
    if !cgroups.is_empty() {
        return Err(cgroups.join("\n"));
    }
    report(&bench, &results);
    Ok(())
}

fn main() -> ExitCode {
    bulkhead_bench::main_with("pod-start", run(Args::parse()))
}
