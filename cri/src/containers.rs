//! Containers with kubelet's semantics. `CreateContainer` mounts the
//! image's layers as an overlay under a fresh writable layer, builds the
//! OCI spec ([`crate::spec`]) and asks the pod's monitor to create the
//! container; `Start`, `Stop` (the stop signal, SIGKILL after the timeout)
//! and `Remove` go through the monitor too. The monitor's records are the
//! truth of a container's state, pid and exit; the daemon's record holds
//! what it was made from. `ExecSync` runs `bulkhead-oci exec` (a fresh,
//! single-threaded process) with a deadline.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulkhead_proto::cri::*;
use bulkhead_proto::monitor::{
    ContainerRecord as MonitorRecord, ContainerState as MonitorState, Request as MonitorRequest,
};
use tokio::io::AsyncReadExt;

use crate::pods::{
    CONTAINER, NODE, POD, TARGET, new_id, now_ns, pod_dir, present, required, runtime_root, socket_path,
};
use crate::service::{Context, blocking_on};
use crate::spec::{Ns, PodFiles, PodNamespaces, SpecInput};
use crate::state::{ContainerInfo, ContainerRecord, ContainerState as RecordState, MountInfo, PodRecord, PodState};
use crate::{Error, Result, monitor};

/// The most output ExecSync returns per stream (kubelet's cap, 16 MiB).
const EXEC_OUTPUT_CAP: usize = 16 * 1024 * 1024;
/// How long a SIGKILLed container may take to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// The container's directory of volatile state: its bundle (config.json, rootfs mount point).
fn bundle_dir(ctx: &Context, id: &str) -> PathBuf {
    ctx.config.state.join("containers").join(id)
}

/// The container's writable layer, which survives reboots.
fn layer_dir(ctx: &Context, id: &str) -> PathBuf {
    ctx.config.root.join("containers-rw").join(id)
}

fn pod_of(ctx: &Context, pod_id: &str) -> Result<PodRecord> {
    ctx.state.pod(pod_id).ok_or_else(|| Error::PodNotFound { id: pod_id.to_owned() })
}

/// The container's state and exit as the monitor recorded them, over the daemon's record.
fn effective(ctx: &Context, container: &ContainerRecord) -> (ContainerRecord, Option<MonitorRecord>) {
    let seen = monitor::record(&pod_dir(ctx, &container.pod_id), &container.id);
    let mut merged = container.clone();
    if let Some(m) = &seen {
        merged.state = match m.state {
            MonitorState::Created => RecordState::Created,
            MonitorState::Running => RecordState::Running,
            MonitorState::Exited => RecordState::Exited,
        };
        merged.started_at = m.started_at;
        merged.finished_at = m.finished_at;
        merged.exit_code = m.exit_code;
    }
    (merged, seen)
}

/// The container's state now, as its monitor recorded it.
pub fn current_state(ctx: &Context, container: &ContainerRecord) -> RecordState {
    effective(ctx, container).0.state
}

fn unmount(path: &Path) -> Result<()> {
    match nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(errno) => Err(Error::Io { op: "unmount", path: path.to_owned(), source: errno.into() }),
    }
}

fn remove_dir(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Io { op: "remove", path: path.to_owned(), source: e }),
    }
}

/// CreateContainer; returns the new id. Nothing is left of one that fails.
pub async fn create(ctx: &Arc<Context>, request: CreateContainerRequest) -> Result<String> {
    let config = present(request.config, "config")?;
    let meta = present(config.metadata.clone(), "config.metadata")?;
    required(&meta.name, "config.metadata.name")?;
    let image_name = config.image.as_ref().map(|i| i.image.clone()).unwrap_or_default();
    required(&image_name, "config.image.image")?;
    let pod_id = request.pod_sandbox_id.clone();
    let _pod_lock = ctx.locks.lock(&pod_id).await;
    let pod = pod_of(ctx, &pod_id)?;
    if pod.state != PodState::Ready {
        return Err(Error::WrongState {
            what: "pod sandbox",
            id: pod_id,
            state: "not ready".into(),
            wanted: "containers can only be created in a ready pod",
        });
    }
    if let Some(taken) = ctx
        .state
        .containers()
        .into_iter()
        .find(|c| c.pod_id == pod.id && c.name == meta.name && c.attempt == meta.attempt)
    {
        return Err(Error::NameTaken {
            what: "container",
            name: format!("{}_{}_{}_{}_{}", meta.name, pod.name, pod.namespace, pod.uid, meta.attempt),
            id: taken.id,
        });
    }
    let image = ctx
        .images
        .find(&image_name)?
        .ok_or_else(|| Error::Image(bulkhead_image::Error::ImageNotFound { reference: image_name.clone() }))?;
    let id = new_id()?;
    let bundle = bundle_dir(ctx, &id);
    let layer = layer_dir(ctx, &id);
    let log_path = if pod.sandbox.log_directory.is_empty() || config.log_path.is_empty() {
        String::new()
    } else {
        Path::new(&pod.sandbox.log_directory).join(&config.log_path).display().to_string()
    };
    let stop_signal = crate::spec::stop_signal(&image.config.config)?;
    let record = ContainerRecord {
        id: id.clone(),
        pod_id: pod.id.clone(),
        name: meta.name.clone(),
        attempt: meta.attempt,
        image: image_name.clone(),
        image_ref: image.id.clone(),
        state: RecordState::Created,
        created_at: now_ns(),
        started_at: 0,
        finished_at: 0,
        exit_code: 0,
        log_path: log_path.clone(),
        labels: config.labels.clone().into_iter().collect(),
        annotations: config.annotations.clone().into_iter().collect(),
        made: ContainerInfo {
            image_id: image.id.clone(),
            bundle: bundle.clone(),
            upper: layer.clone(),
            stop_signal,
            mounts: config
                .mounts
                .iter()
                .map(|m| MountInfo {
                    container_path: m.container_path.clone(),
                    host_path: m.host_path.clone(),
                    readonly: m.readonly,
                    propagation: m.propagation,
                })
                .collect(),
            tty: config.tty,
            stdin: config.stdin,
            stdin_once: config.stdin_once,
            ..ContainerInfo::default()
        },
    };
    let made = make(ctx, &pod, &record, &config, request.sandbox_config.as_ref(), &image).await;
    let made = match made {
        Ok(()) => {
            let put = record.clone();
            blocking_on(ctx, move |ctx| ctx.state.put_container(put)).await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = made {
        if let Err(undo) = destroy(ctx, &pod, &record).await {
            tracing::error!(container_id = %id, error = %undo, "undoing a failed CreateContainer");
        }
        return Err(e);
    }
    Ok(id)
}

/// The container's pid namespace, by its own namespace option: the pod's
/// (POD, the default: shared when the pod shares one), its own (CONTAINER),
/// the node's (NODE), or another running container's of the same pod
/// (TARGET, as `kubectl debug --target` asks).
fn pid_namespace(ctx: &Context, pod: &PodRecord, config: &ContainerConfig, dir: &Path) -> Result<Ns> {
    let options =
        config.linux.as_ref().and_then(|l| l.security_context.as_ref()).and_then(|s| s.namespace_options.as_ref());
    match options.map_or(POD, |o| o.pid) {
        NODE => Ok(Ns::Host),
        CONTAINER => Ok(Ns::New),
        TARGET => {
            let target_id = options.map(|o| o.target_id.as_str()).unwrap_or_default();
            if target_id.is_empty() {
                return Err(Error::InvalidArgument {
                    field: "config.linux.security_context.namespace_options.target_id",
                    message: "is empty, and pid TARGET needs the container to share the pid namespace of".into(),
                });
            }
            let target = ctx
                .state
                .container(target_id)
                .filter(|t| t.pod_id == pod.id)
                .ok_or_else(|| Error::ContainerNotFound { id: format!("{target_id} (in pod {})", pod.id) })?;
            let (now, seen) = effective(ctx, &target);
            match (now.state, seen) {
                (RecordState::Running, Some(seen)) if seen.pid > 0 => {
                    Ok(Ns::Join(PathBuf::from(format!("/proc/{}/ns/pid", seen.pid))))
                }
                _ => Err(Error::WrongState {
                    what: "container",
                    id: target.id,
                    state: format!("{:?}", now.state).to_lowercase(),
                    wanted: "a pid TARGET must be running",
                }),
            }
        }
        _ => Ok(match pod.sandbox.pid_mode {
            NODE => Ns::Host,
            POD => Ns::Join(dir.join("ns/pid")),
            _ => Ns::New,
        }),
    }
}

async fn make(
    ctx: &Arc<Context>,
    pod: &PodRecord,
    record: &ContainerRecord,
    config: &ContainerConfig,
    sandbox_config: Option<&PodSandboxConfig>,
    image: &bulkhead_image::ImageRecord,
) -> Result<()> {
    let dir = pod_dir(ctx, &pod.id);
    let pid = pid_namespace(ctx, pod, config, &dir)?;
    let rootfs = record.made.bundle.join("rootfs");
    let (upper, work) = (record.made.upper.join("upper"), record.made.upper.join("work"));
    for dir in [&rootfs, &upper, &work] {
        std::fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
    }
    let snapshots = ctx.images.snapshots();
    let lowers: Vec<PathBuf> = image.chain_ids.iter().rev().map(|c| snapshots.layer_dir(c)).collect();
    bulkhead_image::snapshot::mount_overlay(&lowers, &upper, &work, &rootfs)?;
    let join = |path: PathBuf| Ns::Join(path);
    let namespaces = PodNamespaces {
        network: match &pod.sandbox.netns {
            Some(netns) => join(netns.clone()),
            None => Ns::Host,
        },
        ipc: if pod.sandbox.ipc_mode == NODE { Ns::Host } else { join(dir.join("ns/ipc")) },
        uts: if pod.sandbox.network_mode == NODE { Ns::Host } else { join(dir.join("ns/uts")) },
        pid,
    };
    let files = PodFiles {
        hosts: Some(dir.join("hosts")),
        resolv_conf: Some(dir.join("resolv.conf")),
        hostname: Some(dir.join("hostname")),
        shm: if pod.sandbox.ipc_mode == NODE { Some(PathBuf::from("/dev/shm")) } else { Some(dir.join("shm")) },
    };
    let default_pod = PodSandboxConfig::default();
    let cgroups_path = Path::new(&pod.sandbox.cgroup_parent).join(&record.id).display().to_string();
    let input = SpecInput {
        container_id: &record.id,
        pod: sandbox_config.unwrap_or(&default_pod),
        config,
        image: &image.config.config,
        rootfs: &rootfs,
        namespaces: &namespaces,
        files: &files,
        cgroups_path: &cgroups_path,
    };
    let mut spec = crate::spec::container_spec(&input)?;
    let mut annotations = spec.annotations().clone().unwrap_or_default();
    annotations.insert(crate::spec::ANNOTATION_SANDBOX_ID.to_owned(), pod.id.clone());
    spec.set_annotations(Some(annotations));
    save_spec(record, &spec)?;
    let log_path = (!record.log_path.is_empty()).then(|| PathBuf::from(&record.log_path));
    let create = MonitorRequest::Create {
        id: record.id.clone(),
        bundle: record.made.bundle.clone(),
        log_path,
        tty: config.tty,
        stdin: config.stdin,
        stdin_once: config.stdin_once,
    };
    monitor::ask(&pod.id, &socket_path(ctx, &pod.id), &create).await
}

/// Removes what a container is made of: its runtime state (through the
/// monitor, or directly when the pod's monitor is gone), rootfs mount,
/// bundle, writable layer and records. Idempotent.
pub async fn destroy(ctx: &Arc<Context>, pod: &PodRecord, record: &ContainerRecord) -> Result<()> {
    let dir = pod_dir(ctx, &pod.id);
    let socket = socket_path(ctx, &pod.id);
    let delete = MonitorRequest::Delete { id: record.id.clone() };
    if monitor::is_serving(&socket) {
        monitor::ask(&pod.id, &socket, &delete).await?;
    } else {
        let runtime = bulkhead_runtime::container::Runtime::new(runtime_root(ctx));
        match runtime.delete(&record.id, true) {
            Ok(()) | Err(bulkhead_runtime::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let monitor_record = dir.join(bulkhead_proto::monitor::CONTAINERS).join(format!("{}.json", record.id));
        match std::fs::remove_file(&monitor_record) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::Io { op: "remove", path: monitor_record, source: e }),
        }
    }
    unmount(&record.made.bundle.join("rootfs"))?;
    remove_dir(&record.made.bundle)?;
    remove_dir(&record.made.upper)?;
    let id = record.id.clone();
    blocking_on(ctx, move |ctx| ctx.state.remove_container(&id).map(drop)).await
}

/// The container's current state, or FailedPrecondition saying what `wanted` needs.
pub(crate) fn require_state(
    ctx: &Context,
    record: &ContainerRecord,
    ok: &[RecordState],
    wanted: &'static str,
) -> Result<RecordState> {
    let state = effective(ctx, record).0.state;
    if ok.contains(&state) {
        return Ok(state);
    }
    Err(Error::WrongState {
        what: "container",
        id: record.id.clone(),
        state: format!("{state:?}").to_lowercase(),
        wanted,
    })
}

pub(crate) fn container_of(ctx: &Context, id: &str) -> Result<ContainerRecord> {
    ctx.state.container(id).ok_or_else(|| Error::ContainerNotFound { id: id.to_owned() })
}

/// StartContainer.
pub async fn start(ctx: &Arc<Context>, id: &str) -> Result<()> {
    let record = container_of(ctx, id)?;
    let _pod_lock = ctx.locks.lock(&record.pod_id).await;
    require_state(ctx, &record, &[RecordState::Created], "only a created container can be started")?;
    monitor::ask(&record.pod_id, &socket_path(ctx, &record.pod_id), &MonitorRequest::Start { id: id.to_owned() }).await
}

/// Waits until the monitor records the container's exit, or the deadline.
async fn wait_exit(ctx: &Context, record: &ContainerRecord, deadline: Instant) -> bool {
    let dir = pod_dir(ctx, &record.pod_id);
    loop {
        let exited = monitor::record(&dir, &record.id).is_none_or(|m| m.state == MonitorState::Exited);
        if exited || !monitor::is_serving(&socket_path(ctx, &record.pod_id)) {
            return exited;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// StopContainer: the stop signal, then SIGKILL to every process after
/// `timeout` seconds (at once for 0). Stopping a stopped container is fine.
pub async fn stop(ctx: &Arc<Context>, id: &str, timeout: i64) -> Result<()> {
    let record = container_of(ctx, id)?;
    let (now, _) = effective(ctx, &record);
    if now.state != RecordState::Running && now.state != RecordState::Created {
        return Ok(());
    }
    let dir = socket_path(ctx, &record.pod_id);
    if !monitor::is_serving(&dir) {
        return Ok(());
    }
    if timeout > 0 && now.state == RecordState::Running {
        let signal = MonitorRequest::Signal { id: id.to_owned(), signal: record.made.stop_signal, all: false };
        monitor::ask(&record.pod_id, &dir, &signal).await?;
        let deadline = Instant::now() + Duration::from_secs(u64::try_from(timeout).unwrap_or(0));
        if wait_exit(ctx, &record, deadline).await {
            return Ok(());
        }
    }
    let kill = MonitorRequest::Signal { id: id.to_owned(), signal: nix::libc::SIGKILL, all: true };
    monitor::ask(&record.pod_id, &dir, &kill).await?;
    if now.state == RecordState::Created {
        // Init never ran the program; it is reaped like any other.
    }
    if !wait_exit(ctx, &record, Instant::now() + KILL_WAIT).await {
        return Err(Error::Monitor {
            pod_id: record.pod_id.clone(),
            message: format!("container {id} did not exit within {KILL_WAIT:?} of SIGKILL"),
        });
    }
    Ok(())
}

/// RemoveContainer: kills it if it runs, then removes everything of it. An unknown container is fine.
pub async fn remove(ctx: &Arc<Context>, id: &str) -> Result<()> {
    let Some(record) = ctx.state.container(id) else { return Ok(()) };
    stop(ctx, id, 0).await?;
    let _pod_lock = ctx.locks.lock(&record.pod_id).await;
    let pod = pod_of(ctx, &record.pod_id)?;
    destroy(ctx, &pod, &record).await
}

fn state_of(state: RecordState) -> ContainerState {
    match state {
        RecordState::Created => ContainerState::ContainerCreated,
        RecordState::Running => ContainerState::ContainerRunning,
        RecordState::Exited => ContainerState::ContainerExited,
        RecordState::Unknown => ContainerState::ContainerUnknown,
    }
}

fn metadata(record: &ContainerRecord) -> ContainerMetadata {
    ContainerMetadata { name: record.name.clone(), attempt: record.attempt }
}

/// ContainerStatus.
pub fn status(ctx: &Context, id: &str, verbose: bool) -> Result<ContainerStatusResponse> {
    let record = container_of(ctx, id)?;
    let (now, seen) = effective(ctx, &record);
    let spec = load_spec(&record);
    let (reason, message) = match (&seen, now.state) {
        (Some(m), RecordState::Exited) if m.oom_killed => ("OOMKilled", String::new()),
        (Some(m), RecordState::Exited) if m.exit_code == 0 => ("Completed", String::new()),
        (Some(m), RecordState::Exited) => {
            ("Error", m.signal.map(|s| format!("killed by signal {s}")).unwrap_or_default())
        }
        _ => ("", String::new()),
    };
    let status = ContainerStatus {
        id: record.id.clone(),
        metadata: Some(metadata(&record)),
        state: state_of(now.state) as i32,
        created_at: record.created_at,
        started_at: now.started_at,
        finished_at: now.finished_at,
        exit_code: now.exit_code,
        image: Some(ImageSpec { image: record.image.clone(), ..ImageSpec::default() }),
        image_ref: record.image_ref.clone(),
        reason: reason.into(),
        message,
        labels: record.labels.clone().into_iter().collect(),
        annotations: record.annotations.clone().into_iter().collect(),
        mounts: record
            .made
            .mounts
            .iter()
            .map(|m| Mount {
                container_path: m.container_path.clone(),
                host_path: m.host_path.clone(),
                readonly: m.readonly,
                propagation: m.propagation,
                ..Mount::default()
            })
            .collect(),
        log_path: record.log_path.clone(),
        resources: spec
            .as_ref()
            .and_then(crate::spec::cri_resources)
            .map(|linux| ContainerResources { linux: Some(linux), windows: None }),
        image_id: record.made.image_id.clone(),
        user: spec.as_ref().and_then(crate::spec::cri_user).map(|linux| ContainerUser { linux: Some(linux) }),
    };
    let mut info = HashMap::new();
    if verbose {
        let value = serde_json::json!({
            "pid": seen.as_ref().map(|m| m.pid),
            "bundle": record.made.bundle,
            "writableLayer": record.made.upper,
            "stopSignal": record.made.stop_signal,
        });
        info.insert("info".to_owned(), value.to_string());
    }
    Ok(ContainerStatusResponse { status: Some(status), info })
}

/// ListContainers, with kubelet's filters.
pub fn list(ctx: &Context, filter: Option<ContainerFilter>) -> Vec<Container> {
    let filter = filter.unwrap_or_default();
    let mut containers: Vec<Container> = ctx
        .state
        .containers()
        .into_iter()
        .filter(|c| filter.id.is_empty() || c.id.starts_with(&filter.id))
        .filter(|c| filter.pod_sandbox_id.is_empty() || c.pod_id.starts_with(&filter.pod_sandbox_id))
        .filter(|c| filter.label_selector.iter().all(|(k, v)| c.labels.get(k) == Some(v)))
        .map(|c| effective(ctx, &c).0)
        .filter(|c| filter.state.as_ref().is_none_or(|s| s.state == state_of(c.state) as i32))
        .map(|c| Container {
            id: c.id.clone(),
            pod_sandbox_id: c.pod_id.clone(),
            metadata: Some(metadata(&c)),
            image: Some(ImageSpec { image: c.image.clone(), ..ImageSpec::default() }),
            image_ref: c.image_ref.clone(),
            state: state_of(c.state) as i32,
            created_at: c.created_at,
            labels: c.labels.clone().into_iter().collect(),
            annotations: c.annotations.clone().into_iter().collect(),
            image_id: c.made.image_id.clone(),
        })
        .collect();
    containers.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    containers
}

/// ReopenContainerLog: the monitor reopens the file kubelet rotated.
pub async fn reopen_log(ctx: &Arc<Context>, id: &str) -> Result<()> {
    let record = container_of(ctx, id)?;
    require_state(ctx, &record, &[RecordState::Running], "only a running container's log can be reopened")?;
    monitor::ask(&record.pod_id, &socket_path(ctx, &record.pod_id), &MonitorRequest::ReopenLog { id: id.to_owned() })
        .await
}

async fn read_capped(mut from: impl tokio::io::AsyncRead + Unpin) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => {
                let room = EXEC_OUTPUT_CAP.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// Where `bulkhead-oci exec` records the pid of an exec's process.
pub(crate) fn exec_pid_file(record: &ContainerRecord) -> Result<PathBuf> {
    Ok(record.made.bundle.join(format!("exec-{}.pid", &new_id()?[..16])))
}

/// `bulkhead-oci exec` of `cmd` in container `id` (a fresh, single-threaded
/// process does the clone); with `console`, on a new terminal whose master
/// it sends to that console socket.
pub(crate) fn exec_command(
    ctx: &Context,
    id: &str,
    pid_file: &Path,
    console: Option<&Path>,
    cmd: &[String],
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(monitor::sibling_binary("bulkhead-oci"));
    command.arg("--root").arg(runtime_root(ctx)).arg("exec").arg("--pid-file").arg(pid_file);
    if let Some(console) = console {
        command.arg("--tty").arg("--console-socket").arg(console);
    }
    command.arg(id).arg("--").args(cmd);
    command
}

/// Kills the process an exec started, named by its pid file.
pub(crate) fn kill_exec(pid_file: &Path) {
    if let Some(pid) = std::fs::read_to_string(pid_file).ok().and_then(|p| p.trim().parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

/// ExecSync: runs `cmd` in the container through `bulkhead-oci exec`,
/// collecting its output (16 MiB per stream at most); past `timeout`
/// seconds (0: none) the process is killed and DeadlineExceeded returned.
pub async fn exec_sync(ctx: &Arc<Context>, id: &str, cmd: Vec<String>, timeout: i64) -> Result<ExecSyncResponse> {
    let record = container_of(ctx, id)?;
    if cmd.is_empty() {
        return Err(Error::InvalidArgument { field: "cmd", message: "is empty".into() });
    }
    require_state(ctx, &record, &[RecordState::Running], "exec needs a running container")?;
    let pid_file = exec_pid_file(&record)?;
    let mut child = exec_command(ctx, id, &pid_file, None, &cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::Internal(format!("start bulkhead-oci exec: {e}")))?;
    let stdout = tokio::spawn(read_capped(child.stdout.take().ok_or_else(|| Error::Internal("no stdout".into()))?));
    let stderr = tokio::spawn(read_capped(child.stderr.take().ok_or_else(|| Error::Internal("no stderr".into()))?));
    let waited = match timeout {
        t if t > 0 => tokio::time::timeout(Duration::from_secs(t.unsigned_abs()), child.wait()).await.ok(),
        _ => Some(child.wait().await),
    };
    let result = match waited {
        Some(status) => {
            let status = status.map_err(|e| Error::Internal(format!("wait for bulkhead-oci exec: {e}")))?;
            let exit_code =
                status.code().unwrap_or(128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0));
            let (stdout, stderr) = (stdout.await.unwrap_or_default(), stderr.await.unwrap_or_default());
            Ok(ExecSyncResponse { stdout, stderr, exit_code })
        }
        None => {
            // The process in the container first, then the exec command.
            kill_exec(&pid_file);
            let _ = child.kill().await;
            Err(Error::ExecTimeout { id: id.to_owned(), seconds: timeout })
        }
    };
    let _ = std::fs::remove_file(&pid_file);
    result
}

/// The container's OCI spec (its bundle's config.json).
fn load_spec(record: &ContainerRecord) -> Option<oci_spec::runtime::Spec> {
    oci_spec::runtime::Spec::load(record.made.bundle.join("config.json")).ok()
}

/// Writes the container's OCI spec, atomically (the runtime reads it on exec).
fn save_spec(record: &ContainerRecord, spec: &oci_spec::runtime::Spec) -> Result<()> {
    let path = record.made.bundle.join("config.json");
    let tmp = record.made.bundle.join("config.json.tmp");
    let text = serde_json::to_vec(spec).map_err(|e| Error::Internal(format!("encode the OCI spec: {e}")))?;
    std::fs::write(&tmp, text).map_err(Error::io("write", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(Error::io("rename into place", &path))
}

/// Exec: the request must name a running container, a command, and a
/// stream; a tty has no separate stderr.
pub fn check_exec(ctx: &Context, request: &ExecRequest) -> Result<()> {
    let record = container_of(ctx, &request.container_id)?;
    if request.cmd.is_empty() {
        return Err(Error::InvalidArgument { field: "cmd", message: "is empty".into() });
    }
    check_streams(request.stdin, request.stdout, request.stderr, request.tty)?;
    require_state(ctx, &record, &[RecordState::Running], "exec needs a running container").map(drop)
}

/// Attach: the request must name a running container and a stream; stdin
/// only if the container was created with it.
pub fn check_attach(ctx: &Context, request: &AttachRequest) -> Result<()> {
    let record = container_of(ctx, &request.container_id)?;
    check_streams(request.stdin, request.stdout, request.stderr, request.tty)?;
    if request.stdin && !record.made.stdin {
        return Err(Error::InvalidArgument {
            field: "stdin",
            message: format!("container {} was created without stdin", record.id),
        });
    }
    require_state(ctx, &record, &[RecordState::Running], "attach needs a running container").map(drop)
}

fn check_streams(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<()> {
    if !(stdin || stdout || stderr) {
        return Err(Error::InvalidArgument {
            field: "stdin",
            message: "one of stdin, stdout or stderr must be set".into(),
        });
    }
    if tty && stderr {
        return Err(Error::InvalidArgument {
            field: "stderr",
            message: "a tty has no separate stderr; unset one of tty and stderr".into(),
        });
    }
    Ok(())
}

/// UpdateContainerResources: the new limits are written to the container's
/// cgroup (by the runtime core, which needs no clone for it).
pub async fn update_resources(ctx: &Arc<Context>, id: &str, linux: Option<LinuxContainerResources>) -> Result<()> {
    let record = container_of(ctx, id)?;
    require_state(
        ctx,
        &record,
        &[RecordState::Created, RecordState::Running],
        "resources can only be updated while it exists as a process",
    )?;
    let Some(linux) = linux else { return Ok(()) };
    let resources = crate::spec::update_resources(&linux)?;
    let runtime = bulkhead_runtime::container::Runtime::new(runtime_root(ctx));
    let id = id.to_owned();
    let _lock = ctx.locks.lock(&id).await;
    blocking_on(ctx, move |_| {
        runtime.update(&id, &resources)?;
        // The spec keeps what the container now runs with, for ContainerStatus.
        let mut spec = load_spec(&record)
            .ok_or_else(|| Error::Internal(format!("the OCI spec of container {id} is unreadable")))?;
        crate::spec::merge_resources(&mut spec, &resources);
        save_spec(&record, &spec)
    })
    .await
}

/// A cgroup's cpu counter as the CRI reports it.
pub fn cpu_usage(cg: &bulkhead_runtime::cgroups::Stats, now: i64) -> CpuUsage {
    CpuUsage {
        timestamp: now,
        usage_core_nano_seconds: cg.cpu_usage_ns.map(|value| UInt64Value { value }),
        usage_nano_cores: None,
    }
}

/// A cgroup's memory counters as the CRI reports them.
pub fn memory_usage(cg: &bulkhead_runtime::cgroups::Stats, now: i64) -> MemoryUsage {
    MemoryUsage {
        timestamp: now,
        working_set_bytes: cg.memory_working_set.map(|value| UInt64Value { value }),
        usage_bytes: cg.memory_usage.map(|value| UInt64Value { value }),
        ..MemoryUsage::default()
    }
}

/// The usage figures of one container: cgroup counters and its writable layer.
pub fn stats_of(ctx: &Context, record: &ContainerRecord) -> ContainerStats {
    let runtime = bulkhead_runtime::container::Runtime::new(runtime_root(ctx));
    let now = now_ns();
    let cg = runtime.stats(&record.id).unwrap_or_default();
    let (bytes, inodes) = disk_usage(&record.made.upper.join("upper"));
    ContainerStats {
        attributes: Some(ContainerAttributes {
            id: record.id.clone(),
            metadata: Some(metadata(record)),
            labels: record.labels.clone().into_iter().collect(),
            annotations: record.annotations.clone().into_iter().collect(),
        }),
        cpu: Some(cpu_usage(&cg, now)),
        memory: Some(memory_usage(&cg, now)),
        writable_layer: Some(FilesystemUsage {
            timestamp: now,
            fs_id: Some(FilesystemIdentifier { mountpoint: record.made.upper.display().to_string() }),
            used_bytes: Some(UInt64Value { value: bytes }),
            inodes_used: Some(UInt64Value { value: inodes }),
        }),
        swap: None,
    }
}

/// Bytes and inodes under `dir`, without following symlinks.
fn disk_usage(dir: &Path) -> (u64, u64) {
    let (mut bytes, mut inodes) = (0, 0);
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            inodes += 1;
            bytes += std::os::unix::fs::MetadataExt::blocks(&meta) * 512;
            if meta.is_dir() {
                stack.push(e.path());
            }
        }
    }
    (bytes, inodes)
}

/// ContainerStats.
pub fn stats(ctx: &Context, id: &str) -> Result<ContainerStats> {
    Ok(stats_of(ctx, &container_of(ctx, id)?))
}

/// ListContainerStats, with kubelet's filters.
pub fn list_stats(ctx: &Context, filter: Option<ContainerStatsFilter>) -> Vec<ContainerStats> {
    let filter = filter.unwrap_or_default();
    ctx.state
        .containers()
        .into_iter()
        .filter(|c| filter.id.is_empty() || c.id.starts_with(&filter.id))
        .filter(|c| filter.pod_sandbox_id.is_empty() || c.pod_id.starts_with(&filter.pod_sandbox_id))
        .filter(|c| filter.label_selector.iter().all(|(k, v)| c.labels.get(k) == Some(v)))
        .filter(|c| effective(ctx, c).0.state == RecordState::Running)
        .map(|c| stats_of(ctx, &c))
        .collect()
}
