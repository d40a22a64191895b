//! Pod sandboxes with kubelet's semantics: `RunPodSandbox` makes the pod's
//! network (unless it uses the node's), its shared files (hostname,
//! /etc/hosts, resolv.conf, a /dev/shm tmpfs) and its monitor, which holds
//! the pod's UTS and IPC namespaces; any failure undoes every step done.
//! Stop kills the pod's containers (through the monitor) and releases the
//! network; Remove also removes the containers and every file; both are
//! idempotent. Status and List read the records.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bulkhead_network::nat::{PortMapping, Protocol as NatProtocol};
use bulkhead_network::{PodRequest, cni};
use bulkhead_proto::cri::*;
use bulkhead_proto::monitor::Request as MonitorRequest;

use crate::service::Context;
use crate::state::{PodRecord, PodState, SandboxInfo};
use crate::{Error, Result, monitor};

/// The CRI NamespaceMode values.
pub const POD: i32 = NamespaceMode::Pod as i32;
pub const CONTAINER: i32 = NamespaceMode::Container as i32;
pub const NODE: i32 = NamespaceMode::Node as i32;
pub const TARGET: i32 = NamespaceMode::Target as i32;

/// The size of a pod's /dev/shm, as containerd's default.
const SHM_SIZE: &str = "size=65536k";

/// A fresh object id: 64 hex digits, as containerd's.
pub fn new_id() -> Result<String> {
    let mut bytes = [0u8; 32];
    random_bytes(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Fills `bytes` from the kernel's random source.
pub fn random_bytes(bytes: &mut [u8]) -> Result<()> {
    let mut urandom = std::fs::File::open("/dev/urandom").map_err(Error::io("open", "/dev/urandom"))?;
    std::io::Read::read_exact(&mut urandom, bytes).map_err(Error::io("read", "/dev/urandom"))
}

pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The pod's state directory: monitor socket and records, shared files.
pub fn pod_dir(ctx: &Context, id: &str) -> PathBuf {
    ctx.config.state.join("pods").join(id)
}

/// The pod monitor's control socket: short, for `sun_path` (108 bytes).
pub fn socket_path(ctx: &Context, id: &str) -> PathBuf {
    ctx.config.state.join("sockets").join(format!("{}.sock", &id[..id.len().min(16)]))
}

/// The runtime core's state root, shared by every monitor and `bulkhead-oci exec`.
pub fn runtime_root(ctx: &Context) -> PathBuf {
    ctx.config.state.join("runtime")
}

/// The pod's cgroup: kubelet's cgroup parent, else one of bulkhead's own.
fn cgroup_parent(linux: &LinuxPodSandboxConfig, id: &str) -> String {
    if linux.cgroup_parent.is_empty() { format!("/bulkhead/{id}") } else { linux.cgroup_parent.clone() }
}

/// The cgroup the monitor lives in, below the pod's (the pause container's place).
fn monitor_cgroup(sandbox: &SandboxInfo, id: &str) -> PathBuf {
    Path::new(&sandbox.cgroup_parent).join(id)
}

/// `value`, or InvalidArgument naming `field` when it is empty.
pub(crate) fn required<'a>(value: &'a str, field: &'static str) -> Result<&'a str> {
    if value.is_empty() {
        return Err(Error::InvalidArgument { field, message: "is required".into() });
    }
    Ok(value)
}

/// `value`, or InvalidArgument naming `field` when it is absent.
pub(crate) fn present<T>(value: Option<T>, field: &'static str) -> Result<T> {
    value.ok_or(Error::InvalidArgument { field, message: "is required".into() })
}

fn port_mappings(mappings: &[PortMapping_]) -> Result<Vec<PortMapping>> {
    mappings
        .iter()
        .enumerate()
        .filter(|(_, m)| m.host_port != 0)
        .map(|(i, m)| {
            let bad = |what: &str| Error::InvalidArgument {
                field: "config.port_mappings",
                message: format!("[{i}]: {what}"),
            };
            let protocol = match Protocol::try_from(m.protocol) {
                Ok(Protocol::Tcp) => NatProtocol::Tcp,
                Ok(Protocol::Udp) => NatProtocol::Udp,
                Ok(Protocol::Sctp) => NatProtocol::Sctp,
                Err(_) => return Err(bad(&format!("unknown protocol {}", m.protocol))),
            };
            let port = |p: i32, name: &str| u16::try_from(p).map_err(|_| bad(&format!("{name} {p} is out of range")));
            let host_ip = match m.host_ip.as_str() {
                "" | "0.0.0.0" | "::" => None,
                ip => Some(ip.parse().map_err(|_| bad(&format!("host_ip {ip:?} is not an address")))?),
            };
            Ok(PortMapping {
                protocol,
                host_ip,
                host_port: port(m.host_port, "host_port")?,
                container_port: port(m.container_port, "container_port")?,
            })
        })
        .collect()
}

/// The CRI's PortMapping (named apart from the network layer's).
type PortMapping_ = bulkhead_proto::cri::PortMapping;

/// /etc/resolv.conf from the pod's DNS config; the node's when it has none.
fn resolv_conf(dns: Option<&DnsConfig>) -> Result<Vec<u8>> {
    match dns.filter(|d| !(d.servers.is_empty() && d.searches.is_empty() && d.options.is_empty())) {
        Some(dns) => {
            let mut text = String::new();
            if !dns.searches.is_empty() {
                text.push_str(&format!("search {}\n", dns.searches.join(" ")));
            }
            for server in &dns.servers {
                text.push_str(&format!("nameserver {server}\n"));
            }
            if !dns.options.is_empty() {
                text.push_str(&format!("options {}\n", dns.options.join(" ")));
            }
            Ok(text.into_bytes())
        }
        None => std::fs::read("/etc/resolv.conf").or_else(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Ok(Vec::new()),
            _ => Err(Error::Io { op: "read", path: "/etc/resolv.conf".into(), source: e }),
        }),
    }
}

/// /etc/hosts: loopback names, then the pod's addresses with its hostname.
fn hosts(hostname: &str, ips: &[String]) -> String {
    let mut text = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    for ip in ips {
        text.push_str(&format!("{ip}\t{hostname}\n"));
    }
    text
}

fn write_file(path: &Path, contents: &[u8]) -> Result<()> {
    std::fs::write(path, contents).map_err(Error::io("write", path))
}

/// Runs a pod; returns its id. Nothing is left of a pod that fails.
pub async fn run(ctx: &Arc<Context>, request: RunPodSandboxRequest) -> Result<String> {
    let config = present(request.config, "config")?;
    let meta = present(config.metadata.clone(), "config.metadata")?;
    required(&meta.name, "config.metadata.name")?;
    required(&meta.namespace, "config.metadata.namespace")?;
    required(&meta.uid, "config.metadata.uid")?;
    if !request.runtime_handler.is_empty() {
        return Err(Error::InvalidArgument {
            field: "runtime_handler",
            message: format!(
                "{:?} is not a runtime handler of bulkhead (only the default, \"\")",
                request.runtime_handler
            ),
        });
    }
    let linux = config.linux.clone().unwrap_or_default();
    let security = linux.security_context.clone().unwrap_or_default();
    let ns = security.namespace_options.clone().unwrap_or_default();
    if ns.pid == TARGET {
        return Err(Error::InvalidArgument {
            field: "config.linux.security_context.namespace_options.pid",
            message: "TARGET shares another container's pid namespace: it applies to containers, not to a pod".into(),
        });
    }
    let ports = port_mappings(&config.port_mappings)?;
    let key = format!("{}_{}_{}_{}", meta.name, meta.namespace, meta.uid, meta.attempt);
    // Checking the name and writing the record happen under the name's own
    // lock: pods of different names are made at the same time.
    let _name = ctx.locks.lock(&format!("pod-name:{key}")).await;
    if let Some(taken) = ctx.state.pods().into_iter().find(|p| {
        (p.name.as_str(), p.namespace.as_str(), p.uid.as_str(), p.attempt)
            == (meta.name.as_str(), meta.namespace.as_str(), meta.uid.as_str(), meta.attempt)
    }) {
        return Err(Error::NameTaken { what: "pod sandbox", name: key, id: taken.id });
    }
    let id = new_id()?;
    let hostname = if ns.network == NODE && config.hostname.is_empty() {
        nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
    } else {
        config.hostname.clone()
    };
    let mut record = PodRecord {
        id: id.clone(),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        namespace: meta.namespace.clone(),
        attempt: meta.attempt,
        state: PodState::Ready,
        created_at: now_ns(),
        runtime_handler: request.runtime_handler.clone(),
        labels: config.labels.clone().into_iter().collect(),
        annotations: config.annotations.clone().into_iter().collect(),
        sandbox: SandboxInfo {
            hostname,
            log_directory: config.log_directory.clone(),
            cgroup_parent: cgroup_parent(&linux, &id),
            network_mode: ns.network,
            pid_mode: ns.pid,
            ipc_mode: ns.ipc,
            netns: None,
            ips: Vec::new(),
            monitor_pid: 0,
            privileged: security.privileged,
        },
    };
    match make(ctx, &mut record, &config, ports).await {
        Ok(()) => {
            let put = record.clone();
            crate::service::blocking_on(ctx, move |ctx| ctx.state.put_pod(put)).await?;
            Ok(id)
        }
        Err(e) => {
            if let Err(undo) = unmake(ctx, &record).await {
                tracing::error!(pod_id = %id, error = %undo, "undoing a failed RunPodSandbox");
            }
            Err(e)
        }
    }
}

async fn make(
    ctx: &Arc<Context>,
    record: &mut PodRecord,
    config: &PodSandboxConfig,
    ports: Vec<PortMapping>,
) -> Result<()> {
    let dir = pod_dir(ctx, &record.id);
    std::fs::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
    let sandbox = &mut record.sandbox;
    if sandbox.network_mode != NODE {
        let dns = config.dns_config.as_ref().map(|d| cni::Dns {
            servers: d.servers.clone(),
            searches: d.searches.clone(),
            options: d.options.clone(),
        });
        let request = PodRequest {
            pod_id: record.id.clone(),
            namespace: record.namespace.clone(),
            name: record.name.clone(),
            uid: record.uid.clone(),
            ports,
            dns,
            bandwidth: None,
            cgroup_parent: Some(sandbox.cgroup_parent.clone()),
        };
        let made = ctx.network.setup(&request).await?;
        sandbox.ips = made.addresses.iter().map(|a| a.addr().to_string()).collect();
        sandbox.netns = Some(made.netns);
    }
    // The files every container of the pod mounts.
    if sandbox.network_mode == NODE {
        write_file(&dir.join("hosts"), &std::fs::read("/etc/hosts").unwrap_or_default())?;
    } else {
        write_file(&dir.join("hosts"), hosts(&sandbox.hostname, &sandbox.ips).as_bytes())?;
    }
    let dns = if sandbox.network_mode == NODE { None } else { config.dns_config.as_ref() };
    write_file(&dir.join("resolv.conf"), &resolv_conf(dns)?)?;
    write_file(&dir.join("hostname"), format!("{}\n", sandbox.hostname).as_bytes())?;
    if sandbox.ipc_mode != NODE {
        let shm = dir.join("shm");
        std::fs::create_dir_all(&shm).map_err(Error::io("create", &shm))?;
        nix::mount::mount(
            Some("shm"),
            &shm,
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV | nix::mount::MsFlags::MS_NOEXEC,
            Some(format!("mode=1777,{SHM_SIZE}").as_str()),
        )
        .map_err(|errno| Error::Io {
            op: "mount the pod's /dev/shm at",
            path: shm.clone(),
            source: errno.into(),
        })?;
    }
    let cgroup = monitor_cgroup(sandbox, &record.id);
    let uts = sandbox.network_mode != NODE;
    let launch = monitor::Launch {
        pod_id: &record.id,
        dir: &dir,
        socket: &socket_path(ctx, &record.id),
        runtime_root: &runtime_root(ctx),
        hostname: uts.then_some(sandbox.hostname.as_str()),
        new_ipc: sandbox.ipc_mode != NODE,
        new_pid: sandbox.pid_mode == POD,
        cgroup: &cgroup,
    };
    sandbox.monitor_pid = monitor::spawn(&launch).await?;
    Ok(())
}

/// Stops the pod's monitor (which kills its containers and records their
/// exits), releases the network and the /dev/shm mount. Idempotent.
async fn stop_runtime(ctx: &Arc<Context>, record: &PodRecord) -> Result<()> {
    let dir = pod_dir(ctx, &record.id);
    let socket = socket_path(ctx, &record.id);
    if monitor::is_serving(&socket) {
        monitor::ask(&record.id, &socket, &MonitorRequest::Shutdown).await?;
    } else {
        stop_without_monitor(ctx, record).await?;
    }
    if record.sandbox.network_mode != NODE {
        ctx.network.teardown(&record.id).await?;
    }
    let shm = dir.join("shm");
    match nix::mount::umount2(&shm, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(errno) => return Err(Error::Io { op: "unmount", path: shm, source: errno.into() }),
    }
    // The monitor's cgroup, once the monitor has left it.
    let cgroup = monitor_cgroup(&record.sandbox, &record.id);
    if let Ok(cg) = bulkhead_runtime::cgroups::Cgroup::for_host(&cgroup) {
        for _ in 0..50 {
            if cg.procs().map(|p| p.is_empty()).unwrap_or(true) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let _ = cg.destroy();
    }
    Ok(())
}

/// What Shutdown does, done by the daemon for a pod whose monitor died:
/// kill its containers (recording them as killed, since no monitor saw
/// them exit) and what is left in the monitor's cgroup (the pid
/// namespace's pid 1), and unpin the namespaces it held.
async fn stop_without_monitor(ctx: &Arc<Context>, record: &PodRecord) -> Result<()> {
    let dir = pod_dir(ctx, &record.id);
    let runtime = bulkhead_runtime::container::Runtime::new(runtime_root(ctx));
    for container in ctx.state.containers().into_iter().filter(|c| c.pod_id == record.id) {
        let Some(mut seen) = monitor::record(&dir, &container.id) else { continue };
        if seen.state == bulkhead_proto::monitor::ContainerState::Exited {
            continue;
        }
        match runtime.kill(&container.id, nix::sys::signal::Signal::SIGKILL, true) {
            Ok(()) | Err(bulkhead_runtime::Error::NotFound { .. } | bulkhead_runtime::Error::WrongStatus { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        seen.state = bulkhead_proto::monitor::ContainerState::Exited;
        seen.finished_at = now_ns();
        seen.exit_code = 128 + nix::libc::SIGKILL;
        seen.signal = Some(nix::libc::SIGKILL);
        monitor::put_record(&dir, &seen)?;
    }
    let cgroup = monitor_cgroup(&record.sandbox, &record.id);
    if let Ok(cg) = bulkhead_runtime::cgroups::Cgroup::for_host(&cgroup) {
        for pid in cg.procs().unwrap_or_default() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
    for kind in ["uts", "ipc", "pid"] {
        let pin = dir.join("ns").join(kind);
        match nix::mount::umount2(&pin, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(errno) => return Err(Error::Io { op: "unmount", path: pin, source: errno.into() }),
        }
    }
    let _ = std::fs::remove_file(socket_path(ctx, &record.id));
    Ok(())
}

/// Everything of a pod but its record: runtime, then files, and the
/// pod's cgroup when it is bulkhead's own (kubelet removes the ones it made).
async fn unmake(ctx: &Arc<Context>, record: &PodRecord) -> Result<()> {
    stop_runtime(ctx, record).await?;
    if record.sandbox.cgroup_parent == format!("/bulkhead/{}", record.id)
        && let Ok(cg) = bulkhead_runtime::cgroups::Cgroup::for_host(Path::new(&record.sandbox.cgroup_parent))
    {
        let _ = cg.destroy();
    }
    let dir = pod_dir(ctx, &record.id);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Io { op: "remove", path: dir, source: e }),
    }
}

/// StopPodSandbox: idempotent; an unknown pod is NotFound. Returns
/// whether the pod was ready until now.
pub async fn stop(ctx: &Arc<Context>, id: &str) -> Result<bool> {
    let _pod = ctx.locks.lock(id).await;
    let mut record = ctx.state.pod(id).ok_or_else(|| Error::PodNotFound { id: id.to_owned() })?;
    stop_runtime(ctx, &record).await?;
    if record.state == PodState::NotReady {
        return Ok(false);
    }
    record.state = PodState::NotReady;
    crate::service::blocking_on(ctx, move |ctx| ctx.state.put_pod(record)).await?;
    Ok(true)
}

/// RemovePodSandbox: stops it, removes its containers and everything else; an unknown pod is fine.
pub async fn remove(ctx: &Arc<Context>, id: &str) -> Result<()> {
    let _pod = ctx.locks.lock(id).await;
    let Some(record) = ctx.state.pod(id) else { return Ok(()) };
    stop_runtime(ctx, &record).await?;
    for container in ctx.state.containers().into_iter().filter(|c| c.pod_id == id) {
        crate::containers::destroy(ctx, &record, &container).await?;
    }
    unmake(ctx, &record).await?;
    let id = id.to_owned();
    crate::service::blocking_on(ctx, move |ctx| ctx.state.remove_pod(&id).map(drop)).await
}

fn namespace_option(record: &PodRecord) -> NamespaceOption {
    NamespaceOption {
        network: record.sandbox.network_mode,
        pid: record.sandbox.pid_mode,
        ipc: record.sandbox.ipc_mode,
        target_id: String::new(),
        userns_options: None,
    }
}

fn metadata(record: &PodRecord) -> PodSandboxMetadata {
    PodSandboxMetadata {
        name: record.name.clone(),
        uid: record.uid.clone(),
        namespace: record.namespace.clone(),
        attempt: record.attempt,
    }
}

/// Whether the pod's monitor process still runs (checked by pid and
/// name, so a reused pid does not count).
fn monitor_alive(record: &PodRecord) -> bool {
    let pid = record.sandbox.monitor_pid;
    pid > 0
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&record.id))
}

/// A ready pod whose monitor died is reported not ready (as containerd
/// reports a sandbox whose pause container died), so kubelet recreates it;
/// its containers' last recorded states stand.
fn state_of(record: &PodRecord) -> PodSandboxState {
    match record.state {
        PodState::Ready if monitor_alive(record) => PodSandboxState::SandboxReady,
        PodState::Ready => {
            tracing::warn!(pod_id = %record.id, pid = record.sandbox.monitor_pid, "the pod's monitor is gone");
            PodSandboxState::SandboxNotready
        }
        PodState::NotReady => PodSandboxState::SandboxNotready,
    }
}

/// PodSandboxStatus.
pub fn status(ctx: &Context, id: &str, verbose: bool) -> Result<PodSandboxStatusResponse> {
    let record = ctx.state.pod(id).ok_or_else(|| Error::PodNotFound { id: id.to_owned() })?;
    let mut ips = record.sandbox.ips.iter();
    let network = PodSandboxNetworkStatus {
        ip: ips.next().cloned().unwrap_or_default(),
        additional_ips: ips.map(|ip| PodIp { ip: ip.clone() }).collect(),
    };
    let status = PodSandboxStatus {
        id: record.id.clone(),
        metadata: Some(metadata(&record)),
        state: state_of(&record) as i32,
        created_at: record.created_at,
        network: Some(network),
        linux: Some(LinuxPodSandboxStatus { namespaces: Some(Namespace { options: Some(namespace_option(&record)) }) }),
        labels: record.labels.clone().into_iter().collect(),
        annotations: record.annotations.clone().into_iter().collect(),
        runtime_handler: record.runtime_handler.clone(),
    };
    let mut info = std::collections::HashMap::new();
    if verbose {
        let dir = pod_dir(ctx, id);
        let value = serde_json::json!({
            "sandbox": record.sandbox,
            "monitorServing": monitor::is_serving(&socket_path(ctx, id)),
            "stateDir": dir,
        });
        info.insert("info".to_owned(), value.to_string());
    }
    // The pod's containers too, as kubelet's evented PLEG reads them here.
    let containers_statuses = ctx
        .state
        .containers()
        .into_iter()
        .filter(|c| c.pod_id == id)
        .filter_map(|c| crate::containers::status(ctx, &c.id, false).ok().and_then(|r| r.status))
        .collect();
    Ok(PodSandboxStatusResponse { status: Some(status), info, containers_statuses, timestamp: now_ns() })
}

fn labels_match(labels: &BTreeMap<String, String>, selector: &std::collections::HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// ListPodSandbox, with kubelet's filters.
pub fn list(ctx: &Context, filter: Option<PodSandboxFilter>) -> Vec<PodSandbox> {
    let filter = filter.unwrap_or_default();
    let mut pods: Vec<PodSandbox> = ctx
        .state
        .pods()
        .into_iter()
        .filter(|p| filter.id.is_empty() || p.id.starts_with(&filter.id))
        .filter(|p| filter.state.as_ref().is_none_or(|s| s.state == state_of(p) as i32))
        .filter(|p| labels_match(&p.labels, &filter.label_selector))
        .map(|p| PodSandbox {
            id: p.id.clone(),
            metadata: Some(metadata(&p)),
            state: state_of(&p) as i32,
            created_at: p.created_at,
            labels: p.labels.clone().into_iter().collect(),
            annotations: p.annotations.clone().into_iter().collect(),
            runtime_handler: p.runtime_handler.clone(),
        })
        .collect();
    pods.sort_by_key(|p| std::cmp::Reverse(p.created_at));
    pods
}

/// The usage of one pod: its cgroup's counters, its network interfaces,
/// and each running container's stats.
pub fn stats_of(ctx: &Context, record: &PodRecord) -> PodSandboxStats {
    let now = now_ns();
    let cg = bulkhead_runtime::cgroups::Cgroup::for_host(Path::new(&record.sandbox.cgroup_parent))
        .map(|c| c.stats())
        .unwrap_or_default();
    let interfaces: Vec<NetworkInterfaceUsage> = ctx
        .network
        .pod_interfaces(&record.id)
        .unwrap_or_default()
        .into_iter()
        .map(|i| NetworkInterfaceUsage {
            name: i.name,
            rx_bytes: Some(UInt64Value { value: i.rx_bytes }),
            rx_errors: Some(UInt64Value { value: i.rx_errors }),
            tx_bytes: Some(UInt64Value { value: i.tx_bytes }),
            tx_errors: Some(UInt64Value { value: i.tx_errors }),
        })
        .collect();
    let containers: Vec<ContainerStats> = crate::containers::list_stats(
        ctx,
        Some(ContainerStatsFilter { pod_sandbox_id: record.id.clone(), ..ContainerStatsFilter::default() }),
    );
    PodSandboxStats {
        attributes: Some(PodSandboxAttributes {
            id: record.id.clone(),
            metadata: Some(metadata(record)),
            labels: record.labels.clone().into_iter().collect(),
            annotations: record.annotations.clone().into_iter().collect(),
        }),
        linux: Some(LinuxPodSandboxStats {
            cpu: Some(crate::containers::cpu_usage(&cg, now)),
            memory: Some(crate::containers::memory_usage(&cg, now)),
            network: Some(NetworkUsage { timestamp: now, default_interface: interfaces.first().cloned(), interfaces }),
            process: Some(ProcessUsage {
                timestamp: now,
                process_count: cg.pids_current.map(|value| UInt64Value { value }),
            }),
            containers,
        }),
        windows: None,
    }
}

/// PodSandboxStats.
pub fn stats(ctx: &Context, id: &str) -> Result<PodSandboxStats> {
    let record = ctx.state.pod(id).ok_or_else(|| Error::PodNotFound { id: id.to_owned() })?;
    Ok(stats_of(ctx, &record))
}

/// ListPodSandboxStats, with kubelet's filters (ready pods only).
pub fn list_stats(ctx: &Context, filter: Option<PodSandboxStatsFilter>) -> Vec<PodSandboxStats> {
    let filter = filter.unwrap_or_default();
    ctx.state
        .pods()
        .into_iter()
        .filter(|p| p.state == PodState::Ready)
        .filter(|p| filter.id.is_empty() || p.id.starts_with(&filter.id))
        .filter(|p| labels_match(&p.labels, &filter.label_selector))
        .map(|p| stats_of(ctx, &p))
        .collect()
}

/// PortForward: the pod must exist and be ready; ports, when given, must be valid.
pub fn check_port_forward(ctx: &Context, request: &PortForwardRequest) -> Result<()> {
    let pod = ctx
        .state
        .pod(&request.pod_sandbox_id)
        .ok_or_else(|| Error::PodNotFound { id: request.pod_sandbox_id.clone() })?;
    if let Some(port) = request.port.iter().find(|p| !(1..=65535).contains(*p)) {
        return Err(Error::InvalidArgument { field: "port", message: format!("{port} is not a port (1-65535)") });
    }
    if pod.state != PodState::Ready {
        return Err(Error::WrongState {
            what: "pod sandbox",
            id: pod.id,
            state: "not ready".into(),
            wanted: "port forwarding needs a ready pod",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_and_hosts_follow_the_pod() {
        let dns = DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["default.svc.cluster.local".into(), "svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        };
        let text = String::from_utf8(resolv_conf(Some(&dns)).unwrap()).unwrap();
        assert_eq!(
            text,
            "search default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
        let hosts = hosts("web-0", &["10.88.0.2".into(), "fd00::2".into()]);
        assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(hosts.ends_with("10.88.0.2\tweb-0\nfd00::2\tweb-0\n"), "{hosts}");
        assert_eq!(new_id().unwrap().len(), 64);
    }

    #[test]
    fn port_mappings_are_checked_and_container_only_ports_skipped() {
        let m = |protocol: i32, container_port: i32, host_port: i32, host_ip: &str| PortMapping_ {
            protocol,
            container_port,
            host_port,
            host_ip: host_ip.into(),
        };
        let ports = port_mappings(&[m(0, 80, 8080, ""), m(1, 53, 0, ""), m(2, 9, 9, "10.0.0.1")]).unwrap();
        assert_eq!(ports.len(), 2);
        assert_eq!(ports[1].protocol, NatProtocol::Sctp);
        let err = port_mappings(&[m(0, 80, 70000, "")]).unwrap_err().to_string();
        assert!(err.contains("config.port_mappings") && err.contains("70000"), "{err}");
        let err = port_mappings(&[m(0, 80, 80, "nope")]).unwrap_err().to_string();
        assert!(err.contains("host_ip"), "{err}");
    }
}
