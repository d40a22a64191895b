//! Pods on bulkhead and on containerd's CRI plugin (runc and crun as two
//! runtime handlers of one containerd), driven by one CRI client: what the
//! pod benchmarks share (`pod-start`, `streaming`).
//!
//! - the contenders, and their daemons' configuration on private paths: a
//!   root and configs in the work directory, state and sockets in the state
//!   directory (the run scripts put the first on a journaled ext4 image and
//!   the second on a tmpfs, as a node keeps /var/lib and /run);
//! - the images, from a docker-registry started by the `bulkhead-e2e`
//!   fixture: its busybox image (Debian's static busybox as `/bin/busybox`
//!   and `/bin/sh`) and, as containerd's `sandbox_image`, a "pause" image of
//!   the same layer whose entrypoint is `/bin/busybox sleep 2147483647`;
//! - sessions: a contender's daemon started for its turn (waiting until
//!   Status says RuntimeReady and NetworkReady) and stopped after it, once
//!   every pod it ran has been removed (StopContainer with timeout 0,
//!   RemoveContainer, StopPodSandbox, RemovePodSandbox); the pods' cgroup
//!   parents are then removed, as kubelet would, and nothing of the pods may
//!   be left (processes, mounts, veths, cgroups below the parents);
//! - pods configured as kubelet configures them: a cgroup parent, a log
//!   directory, DNS, and namespace options network POD, ipc POD, pid
//!   CONTAINER (POD with `share_pid`), on the container too; one container
//!   running the bench's workload.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tonic::transport::Channel;

use crate::daemon::{ContainerdConfig, Daemon, Result, connect, tail, write_containerd_config};

/// The pause image's entrypoint (containerd's sandbox container).
pub const PAUSE_ARGS: [&str; 3] = ["/bin/busybox", "sleep", "2147483647"];
/// The cgroup under which every pod's parent goes (kubelet's `kubepods`).
pub const CGROUP_TOP: &str = "bhbench";
const BULKHEAD_BRIDGE: &str = "bhbench0";
const BULKHEAD_CIDR: &str = "10.219.0.0/16";
const CONTAINERD_BRIDGE: &str = "bhbenchc0";
const CONTAINERD_CIDR: &str = "10.220.0.0/16";

/// The options every pod benchmark takes: the binaries and where the
/// daemons keep their files.
#[derive(Debug, Clone, clap::Args)]
pub struct PeerArgs {
    /// The bulkhead daemon; bulkhead-monitor and bulkhead-oci must be beside it [default: `bulkhead` next to this program].
    #[arg(long)]
    pub bulkhead: Option<PathBuf>,
    /// bulkhead's --log-level (`debug` logs every RPC's elapsed_us).
    #[arg(long, default_value = "warn")]
    pub bulkhead_log_level: String,
    #[arg(long, default_value = "/usr/bin/containerd")]
    pub containerd: PathBuf,
    #[arg(long, default_value = "/usr/sbin/runc")]
    pub runc: PathBuf,
    #[arg(long, default_value = "/usr/bin/crun")]
    pub crun: PathBuf,
    /// Where the CNI plugins are (containerd's bin_dir).
    #[arg(long, default_value = "/usr/lib/cni")]
    pub cni_bin: PathBuf,
    /// Where to make the bench's work directory, which holds the daemons'
    /// roots, configs and pod logs [default: $TMPDIR or /tmp].
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// Where to make the directory of the daemons' state and sockets (what
    /// a node keeps under /run, a tmpfs) [default: in the work directory].
    #[arg(long)]
    pub statedir: Option<PathBuf>,
    /// Copy the daemons' logs into this directory at the end.
    #[arg(long)]
    pub keep_logs: Option<PathBuf>,
}

// ------------------------------------------------------------- contenders

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Contender {
    Bulkhead,
    ContainerdRunc,
    ContainerdCrun,
}

pub const CONTENDERS: [Contender; 3] = [Contender::Bulkhead, Contender::ContainerdRunc, Contender::ContainerdCrun];
/// What the ratios are taken against.
pub const BASELINE: Contender = Contender::ContainerdRunc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Bulkhead,
    Containerd,
}

impl Contender {
    pub fn name(self) -> &'static str {
        match self {
            Contender::Bulkhead => "bulkhead",
            Contender::ContainerdRunc => "containerd+runc",
            Contender::ContainerdCrun => "containerd+crun",
        }
    }

    /// Used in pod names and cgroup paths.
    pub fn short(self) -> &'static str {
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

    pub fn kind(self) -> Kind {
        match self {
            Contender::Bulkhead => Kind::Bulkhead,
            _ => Kind::Containerd,
        }
    }

    fn kind_name(self) -> &'static str {
        match self.kind() {
            Kind::Bulkhead => "bulkhead",
            Kind::Containerd => "containerd",
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
    daemon
        .wait_until(socket, |channel| async move {
            let reply = RuntimeServiceClient::new(channel.clone())
                .status(StatusRequest::default())
                .await
                .map_err(|status| rpc_error("Status", &status))?;
            let conditions = reply.into_inner().status.map(|s| s.conditions).unwrap_or_default();
            let not_ready: Vec<String> = conditions
                .iter()
                .filter(|c| !c.status)
                .map(|c| format!("{} ({}: {})", c.r#type, c.reason, c.message))
                .collect();
            if conditions.len() >= 2 && not_ready.is_empty() {
                Ok(channel)
            } else {
                Err(format!("not ready: {}", not_ready.join(", ")))
            }
        })
        .await
}

pub fn rpc_error(rpc: &str, status: &tonic::Status) -> String {
    format!("{rpc}: {:?}: {}", status.code(), status.message())
}

// ------------------------------------------------------------------- pods

/// What a bench's pods run: one container.
#[derive(Debug, Clone)]
pub struct Workload {
    /// The container's name.
    pub container: String,
    /// Its command (the image has no entrypoint).
    pub command: Vec<String>,
    /// The pods' `app` label.
    pub app: String,
    /// Pods share one pid namespace (namespace_options.pid POD; kubelet's
    /// shareProcessNamespace) instead of one per container (CONTAINER, kubelet's default).
    pub share_pid: bool,
}

/// A pod this bench started.
#[derive(Debug, Clone)]
pub struct Pod {
    pub name: String,
    pub id: String,
    pub container: String,
}

/// The time of each step of one pod start.
#[derive(Debug, Clone, Copy, Default)]
pub struct Steps {
    pub run: Duration,
    pub create: Duration,
    pub start: Duration,
    /// ContainerStatus calls until RUNNING.
    pub status: Duration,
    pub total: Duration,
    /// How many ContainerStatus calls it took (1: RUNNING at once).
    pub polls: u32,
}

/// Makes the pods of one contender, as kubelet configures them.
#[derive(Debug, Clone)]
pub struct PodMaker {
    who: Contender,
    /// The image reference for CreateContainer: PullImage's answer, as kubelet passes it.
    image: String,
    logs: PathBuf,
    workload: Workload,
}

impl PodMaker {
    fn namespaces(&self) -> NamespaceOption {
        NamespaceOption {
            network: NamespaceMode::Pod as i32,
            pid: if self.workload.share_pid { NamespaceMode::Pod as i32 } else { NamespaceMode::Container as i32 },
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
            labels: HashMap::from([("app".into(), self.workload.app.clone())]),
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
        let name = &self.workload.container;
        ContainerConfig {
            metadata: Some(ContainerMetadata { name: name.clone(), attempt: 0 }),
            image: Some(ImageSpec { image: self.image.clone(), ..ImageSpec::default() }),
            command: self.workload.command.clone(),
            log_path: format!("{name}/0.log"),
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
    pub async fn start(&self, rt: &mut RuntimeServiceClient<Channel>, n: usize) -> Result<(Pod, Steps)> {
        let config = self.pod_config(n);
        let name = config.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
        // kubelet makes the pod's log directory and the container's.
        let logs = self.logs.join(&name).join(&self.workload.container);
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
pub async fn remove_pod(rt: &mut RuntimeServiceClient<Channel>, pod: &Pod) -> Result<Duration> {
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
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    pub argv: Vec<String>,
}

pub fn processes() -> Vec<Proc> {
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

pub fn mentions(p: &Proc, text: &str) -> bool {
    p.argv.iter().any(|a| a.contains(text))
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

/// A pod bench's `main`: [`in_work_dirs`] on a tokio runtime
/// ([`crate::main_with`]), with `name-` as the directories' prefix.
pub fn main<F, Fut>(name: &str, peers: &PeerArgs, measure: F) -> ExitCode
where
    F: FnOnce(PathBuf, PathBuf, PathBuf) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    crate::main_with(name, in_work_dirs(&format!("{name}-"), peers, measure))
}

/// Runs a pod bench as root: checks the binaries, makes the work and state
/// directories, runs `measure(bulkhead, work, state)` in them, copies the
/// daemons' logs if asked, and removes the directories unless something is
/// still mounted below them.
pub async fn in_work_dirs<F, Fut>(prefix: &str, peers: &PeerArgs, measure: F) -> Result<()>
where
    F: FnOnce(PathBuf, PathBuf, PathBuf) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    if !nix::unistd::geteuid().is_root() {
        return Err("run as root: the daemons need it".into());
    }
    let bulkhead = crate::bulkhead_binary(peers.bulkhead.as_deref())?;
    let monitor = bulkhead.with_file_name("bulkhead-monitor");
    let oci = bulkhead.with_file_name("bulkhead-oci");
    let bridge = peers.cni_bin.join("bridge");
    let binaries = [&bulkhead, &monitor, &oci, &peers.containerd, &peers.runc, &peers.crun, &bridge];
    crate::require_files(binaries.map(|b| b.as_path()))?;
    let work = crate::work_dir(prefix, peers.workdir.as_deref())?;
    let run = crate::work_dir(prefix, Some(peers.statedir.as_deref().unwrap_or(work.path())))?;
    println!("work directory: {}; state directory: {}", work.path().display(), run.path().display());
    let result = measure(bulkhead, work.path().to_owned(), run.path().to_owned()).await;
    if let Some(dir) = &peers.keep_logs {
        let _ = fs::create_dir_all(dir);
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

/// The daemons, their images and the pods' workload, for one bench run.
pub struct Bench {
    pub peers: PeerArgs,
    pub workload: Workload,
    work: PathBuf,
    /// The daemons' state directories and sockets.
    run: PathBuf,
    bulkhead: PathBuf,
    /// Serves the images while the bench runs.
    _registry: Registry,
    registry_host: String,
    busybox: String,
    pause: String,
    /// The image reference CreateContainer gets, per daemon.
    images: BTreeMap<Kind, String>,
    next_pod: AtomicUsize,
}

/// One contender's daemon, running, and the pods it runs.
pub struct Session {
    pub who: Contender,
    pub daemon: Daemon,
    pub socket: PathBuf,
    /// The daemon's directories: root and the rest (`work`), state and sockets (`run`).
    pub dirs: [PathBuf; 2],
    pub rt: RuntimeServiceClient<Channel>,
    pub maker: Arc<PodMaker>,
    pub pods: Vec<Pod>,
}

/// Runs `work` on a fresh session of `who` (a `Bench`), then closes it
/// whatever happened; the value of `work`, or every error.
#[macro_export]
macro_rules! session {
    ($bench:expr, $who:expr, |$s:ident| $work:block) => {{
        let mut $s = $bench.open($who).await?;
        let result: $crate::daemon::Result<_> = async { $work }.await;
        let closed = $bench.close($s).await;
        match (result, closed) {
            (Ok(v), Ok(())) => Ok(v),
            (Err(e), Ok(())) => Err(e),
            (Ok(_), Err(c)) => Err(c),
            (Err(e), Err(c)) => Err(format!("{e}\nand while cleaning up: {c}")),
        }
    }};
}

impl Bench {
    /// Starts the registry, pushes the images, writes both daemons'
    /// configurations and pulls the images through each daemon.
    pub async fn prepare(
        peers: PeerArgs,
        workload: Workload,
        bulkhead: PathBuf,
        work: &Path,
        run: &Path,
    ) -> Result<Bench> {
        let registry = Registry::start();
        let pushed = registry.push_busybox("bench/busybox", "v1").await;
        push_pause(&registry, "bench/pause", "v1", &pushed.layer_tar).await?;
        let busybox = format!("{}/bench/busybox:v1", registry.host);
        let pause = format!("{}/bench/pause:v1", registry.host);
        println!("images: {busybox} (busybox-static), {pause} (the same layer; entrypoint {})", PAUSE_ARGS.join(" "));
        let mut bench = Bench {
            peers,
            workload,
            work: work.to_owned(),
            run: run.to_owned(),
            bulkhead,
            registry_host: registry.host.clone(),
            _registry: registry,
            busybox,
            pause,
            images: BTreeMap::new(),
            next_pod: AtomicUsize::new(0),
        };
        bench.configure()?;
        bench.pull().await?;
        Ok(bench)
    }

    /// After the bench: removes the pods' cgroup tree; `outcome`, or what is left.
    pub async fn finish(&self, outcome: Result<()>) -> Result<()> {
        let cgroups = remove_cgroups(Path::new(CGROUP_TOP), 2).await;
        outcome?;
        if !cgroups.is_empty() {
            return Err(cgroups.join("\n"));
        }
        Ok(())
    }

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
        let r = self.run_dir(Kind::Containerd);
        let (runc, crun) = (self.peers.runc.display(), self.peers.crun.display());
        let rd = r.display();
        let tables = format!(
            r#"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  BinaryName = "{runc}"
  Root = "{rd}/runc-root"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun.options]
  BinaryName = "{crun}"
  Root = "{rd}/crun-root"
"#
        );
        let config = ContainerdConfig {
            state: Some(&r),
            sandbox_image: &self.pause,
            cni_bin: &self.peers.cni_bin,
            cri: "  netns_mounts_under_state_dir = true
  # No CAP_SYS_RESOURCE here: runc cannot lower the pause's oom_score_adj
  # to -998 and fails; this clamps it to containerd's own, as bulkhead does.
  restrict_oom_score_adj = true
",
            containerd: "  default_runtime_name = \"runc\"\n",
            tables: &tables,
        };
        write_containerd_config(&c, host, &config)?;
        Ok(())
    }

    /// Starts `who`'s daemon and waits until it is ready.
    pub async fn open(&self, who: Contender) -> Result<Session> {
        let kind = who.kind();
        let dir = self.dir(kind);
        let run = self.run_dir(kind);
        let socket = self.socket(kind);
        let mut daemon = match kind {
            Kind::Bulkhead => Daemon::bulkhead(
                &self.bulkhead,
                [&dir.join("root"), &run.join("state")],
                &socket,
                &dir.join("config.toml"),
                &self.peers.bulkhead_log_level,
                &dir.join("daemon.log"),
            )?,
            Kind::Containerd => Daemon::spawn(
                "containerd",
                Command::new(&self.peers.containerd).arg("--config").arg(dir.join("config.toml")),
                &dir.join("daemon.log"),
            )?,
        };
        let channel = wait_ready(&mut daemon, &socket).await?;
        let maker = Arc::new(PodMaker {
            who,
            image: self.images.get(&kind).cloned().unwrap_or_default(),
            logs: dir.join("pod-logs"),
            workload: self.workload.clone(),
        });
        let dirs = [dir, run];
        Ok(Session { who, daemon, socket, dirs, rt: RuntimeServiceClient::new(channel), maker, pods: Vec::new() })
    }

    /// A number for the next pod, unique in the run.
    pub fn next_pod(&self) -> usize {
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
    pub async fn close(&self, mut s: Session) -> Result<()> {
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
}

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
