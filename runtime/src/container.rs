//! The container lifecycle of runtime-spec 1.x — create, start, state,
//! kill, delete — over a state directory per container, as runc keeps
//! them: `<root>/<id>/state.json` (our record, written atomically) and
//! `<root>/<id>/exec.fifo`, whose presence means "created".
//!
//! `create` forks twice: a first child enters or creates the pid
//! namespace (it applies to children only) and forks init, which becomes
//! pid 1 there; the first child reports init's pid and exits. Init is then
//! reparented to the caller's subreaper (containerd's shim, the pod monitor)
//! or to the host's init, which reaps it, as with runc.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use bulkhead_store::{Collection, Durability};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::{Signal, kill};
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork};
use oci_spec::runtime::LinuxNamespaceType;
use serde::{Deserialize, Serialize};

use crate::cgroups::Cgroup;
use crate::single_thread::ensure_single_threaded;
use crate::spec::Bundle;
use crate::{Error, Result, init};

const STATE_RECORD: &str = "state";
const FIFO: &str = "exec.fifo";
const CONFIG: &str = "config.json";
/// A container's state dies with the machine (its processes do), and the
/// state root is normally on tmpfs: writes are atomic, not fsynced, as runc's.
const DURABILITY: Durability = Durability::Volatile;

/// The lifecycle states of runtime-spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

/// What bulkhead records of a container it created.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub pid: i32,
    /// Start time of `pid` in clock ticks since boot, so a recycled pid is
    /// never mistaken for our init.
    pub pid_start: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub annotations: BTreeMap<String, String>,
    /// Whether init has its own pid namespace (then SIGKILL to init kills all).
    pub own_pid_namespace: bool,
    /// The container's cgroup.
    pub cgroup: Cgroup,
    /// Whether the config has poststart or poststop hooks; unknown in
    /// records of older versions. `start` and `delete` read the config
    /// only when it may have some.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_hooks: Option<bool>,
}

/// The state of a container as runtime-spec (and `runc state`) prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: Status,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub annotations: BTreeMap<String, String>,
}

/// Options of `create`.
#[derive(Debug, Default, Clone)]
pub struct CreateOptions {
    /// Write init's pid here (runc's `--pid-file`).
    pub pid_file: Option<PathBuf>,
    /// Where to send the pty master when `process.terminal` is set.
    pub console_socket: Option<PathBuf>,
    /// runc's --preserve-fds, --no-pivot and --no-new-keyring.
    pub launch: Launch,
    /// The container's stdin, stdout and stderr, when not the caller's own
    /// (the pod monitor gives each container its log pipes).
    pub stdio: Option<[std::os::fd::RawFd; 3]>,
}

/// runc's flags that change how a process is set up.
#[derive(Debug, Clone, Copy, Default)]
pub struct Launch {
    /// Descriptors 3..3+N from the caller pass into the container.
    pub preserve_fds: u32,
    /// Move the rootfs over / and chroot instead of pivot_root.
    pub no_pivot: bool,
    /// Keep the caller's session keyring instead of a new one.
    pub no_new_keyring: bool,
}

/// What the stages of `create` share.
#[derive(Clone, Copy)]
struct Creating<'a> {
    id: &'a str,
    dir: &'a Path,
    bundle: &'a Bundle,
    cgroup: &'a Cgroup,
    options: &'a CreateOptions,
}

/// The console socket, connected, when the process wants a terminal; a
/// mismatch between `terminal` and the socket is refused as runc does.
fn console_for(
    process: Option<&oci_spec::runtime::Process>,
    options: &CreateOptions,
) -> Result<Option<std::os::unix::net::UnixStream>> {
    let terminal = process.and_then(|p| p.terminal()).unwrap_or(false);
    match (terminal, &options.console_socket) {
        (true, Some(path)) => crate::console::connect(path).map(Some),
        (false, None) => Ok(None),
        (true, None) => {
            Err(Error::Spec { field: "process.terminal".into(), message: "a terminal needs --console-socket".into() })
        }
        (false, Some(_)) => Err(Error::Spec {
            field: "process.terminal".into(),
            message: "--console-socket was given but the process wants no terminal".into(),
        }),
    }
}

/// Container ids are file names under the state root: runc's alphabet.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'+'));
    if ok { Ok(()) } else { Err(Error::InvalidId { id: id.to_owned() }) }
}

/// The start time and state letter of a process, from `/proc/<pid>/stat`.
fn proc_stat(pid: i32) -> Option<(u64, char)> {
    let stat = crate::procfs::read(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state))
}

/// The containers under one state root (runc's `--root`).
#[derive(Debug, Clone)]
pub struct Runtime {
    root: PathBuf,
}

impl Runtime {
    pub fn new(root: impl Into<PathBuf>) -> Runtime {
        Runtime { root: root.into() }
    }

    fn dir(&self, id: &str) -> Result<PathBuf> {
        validate_id(id)?;
        Ok(self.root.join(id))
    }

    fn record(&self, id: &str) -> Result<Record> {
        let dir = self.dir(id)?;
        if !dir.is_dir() {
            return Err(Error::NotFound { id: id.to_owned() });
        }
        // Read without opening the collection: that would make the directory
        // again if a concurrent delete just removed it.
        Collection::<Record>::read_from(&dir, STATE_RECORD)?.ok_or_else(|| Error::NotFound { id: id.to_owned() })
    }

    fn status_of(&self, record: &Record) -> Status {
        match proc_stat(record.pid) {
            Some((start, state)) if start == record.pid_start && state != 'Z' && state != 'X' => {
                if self.root.join(&record.id).join(FIFO).exists() {
                    Status::Created
                } else if record.cgroup.is_frozen() {
                    Status::Paused
                } else {
                    Status::Running
                }
            }
            _ => Status::Stopped,
        }
    }

    /// The state of container `id`.
    pub fn state(&self, id: &str) -> Result<State> {
        Ok(self.state_of(self.record(id)?))
    }

    fn state_of(&self, record: Record) -> State {
        let status = self.status_of(&record);
        State {
            oci_version: "1.2.0".into(),
            id: record.id.clone(),
            pid: if status == Status::Stopped { 0 } else { record.pid },
            status,
            bundle: record.bundle,
            rootfs: record.rootfs,
            created: record.created,
            owner: String::new(),
            annotations: record.annotations,
        }
    }

    /// Every container under the root, sorted by id.
    pub fn list(&self) -> Result<Vec<State>> {
        let mut states = Vec::new();
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(states),
            Err(source) => return Err(Error::Read { path: self.root.clone(), source }),
        };
        for entry in entries.flatten() {
            if let Some(id) = entry.file_name().to_str()
                && let Ok(state) = self.state(id)
            {
                states.push(state);
            }
        }
        states.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(states)
    }

    /// Creates container `id` from the bundle in `bundle_dir`: init waits,
    /// fully set up, for [`Runtime::start`]. Must run single-threaded.
    pub fn create(&self, id: &str, bundle_dir: &Path, options: &CreateOptions) -> Result<State> {
        ensure_single_threaded()?;
        let dir = self.dir(id)?;
        let (mut bundle, config) = Bundle::load_with_text(bundle_dir)?;
        bundle.id = id.to_owned();
        crate::lsm::check(&bundle.spec)?;
        std::fs::create_dir_all(&self.root).map_err(|source| Error::Read { path: self.root.clone(), source })?;
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Err(Error::Exists { id: id.to_owned() }),
            Err(source) => return Err(Error::Read { path: dir, source }),
        }
        let cgroup_path =
            bundle.spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()).unwrap_or_else(|| PathBuf::from(id));
        let cgroup = match Cgroup::for_host(&cgroup_path) {
            Ok(cgroup) => cgroup,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let mut pid = None;
        // The config as created: exec and the poststop hooks need it after the bundle may be gone.
        let config_copy = dir.join(CONFIG);
        let created = std::fs::write(&config_copy, &config)
            .map_err(|source| Error::Read { path: config_copy, source })
            .and_then(|()| {
                let creating = Creating { id, dir: &dir, bundle: &bundle, cgroup: &cgroup, options };
                self.create_in(creating, &mut pid)
            });
        if created.is_err() {
            for pid in pid.into_iter().chain(cgroup.procs().unwrap_or_default()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = cgroup.destroy();
            let _ = std::fs::remove_dir_all(&dir);
        }
        created
    }

    fn create_in(&self, creating: Creating<'_>, init_pid: &mut Option<i32>) -> Result<State> {
        let Creating { id, dir, bundle, cgroup, options } = creating;
        let console = console_for(bundle.spec.process().as_ref(), options)?;
        let fifo = dir.join(FIFO);
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).map_err(|errno| Error::Syscall {
            op: "mkfifo",
            path: fifo.clone(),
            errno,
        })?;
        let (caller, child) = Pipes::new(dir)?.split();
        let namespaces = bundle.spec.linux().as_ref().and_then(|l| l.namespaces().clone()).unwrap_or_default();
        let pid_ns = namespaces.iter().find(|n| n.typ() == LinuxNamespaceType::Pid).cloned();
        let user_ns = namespaces.iter().find(|n| n.typ() == LinuxNamespaceType::User).cloned();
        if user_ns.as_ref().is_some_and(|n| n.path().is_none()) {
            // Init opens the FIFO as the container's root: give it to that user.
            let linux = bundle.spec.linux().clone().unwrap_or_default();
            let (uid, gid) = (host_id(linux.uid_mappings(), 0), host_id(linux.gid_mappings(), 0));
            nix::unistd::chown(&fifo, Some(nix::unistd::Uid::from_raw(uid)), Some(nix::unistd::Gid::from_raw(gid)))
                .map_err(|errno| Error::Syscall { op: "chown exec fifo", path: fifo.clone(), errno })?;
        }

        // One clone makes init, pid 1 of its new pid namespace, where no
        // stage must come between: no user namespace to enter first, no
        // time namespace to set up (both must precede the pid namespace's
        // first process), and a kernel with clone3.
        let time_ns = namespaces.iter().any(|n| n.typ() == LinuxNamespaceType::Time);
        let direct = pid_ns.as_ref().is_some_and(|n| n.path().is_none()) && user_ns.is_none() && !time_ns;
        // Then, unless init is to join a mount or cgroup namespace (where
        // the host's cgroup paths may not be the same), this process makes
        // the cgroup's v1 directories while init makes its namespaces, and
        // init joins them after: half a millisecond of mkdirs off the path.
        // On v2 init is born in its cgroup; on v1 the kernel objects of its
        // namespaces are then charged to the caller's cgroup, as with crun.
        let overlap = direct
            && !namespaces.iter().any(|n| {
                n.path().is_some() && matches!(n.typ(), LinuxNamespaceType::Mount | LinuxNamespaceType::Cgroup)
            });
        if overlap {
            cgroup.create_where(|h| h.unified)?;
        } else {
            cgroup.create()?;
        }
        let cloned = if direct {
            let dir = cgroup.unified_dir();
            clone_in(dir.as_ref(), CloneFlags::CLONE_NEWPID).ok().map(|forked| (forked, dir.is_some()))
        } else {
            None
        };
        // From here each process drops the other side's ends at once: a
        // reader sees end-of-file when the writer's process dies only if
        // no other process still holds the write end.
        if let Some((ForkResult::Child, in_unified)) = cloned {
            drop(caller);
            let join_cgroup = overlap.then_some(init::CgroupJoin { ready: child.ready, in_unified });
            let join_now = join_cgroup.is_none();
            let channels =
                init::Channels { report: child.report, go: child.go, console, launch: options.launch, join_cgroup };
            init_direct(bundle, &fifo, (cgroup, in_unified, join_now), channels, options.stdio)
        }
        if overlap && cloned.is_none() {
            cgroup.create_where(|h| !h.unified)?;
        }
        // This process has one thread (checked above), so the child can run
        // arbitrary code, including allocation, until it execs or exits.
        let forked = match cloned {
            Some((parent, _)) => (Ok(parent), false),
            None => fork_in(cgroup),
        };
        let (forked, in_unified) = forked;
        match forked.map_err(|errno| Error::Syscall { op: "fork", path: dir.to_owned(), errno })? {
            ForkResult::Parent { child: pid } if cloned.is_some() => {
                drop(child);
                *init_pid = Some(pid.as_raw());
                if overlap {
                    // Init waits for this byte; on failure it reads EOF and gives up.
                    cgroup.create_where(|h| !h.unified)?;
                    std::fs::File::from(caller.ready)
                        .write_all(b"g")
                        .map_err(|source| Error::Read { path: "init's cgroup pipe".into(), source })?;
                }
                self.created(creating, init_pid, pid.as_raw(), (caller.report, caller.go))
            }
            ForkResult::Child => {
                drop(caller);
                let channels = init::Channels {
                    report: child.report,
                    go: child.go,
                    console,
                    launch: options.launch,
                    join_cgroup: None,
                };
                stage1(Stage1 {
                    bundle,
                    fifo: &fifo,
                    cgroup,
                    in_unified,
                    pid_ns: pid_ns.as_ref(),
                    user_ns: user_ns.as_ref(),
                    pid_w: child.pid,
                    map_go: child.map,
                    channels,
                    stdio: options.stdio,
                })
            }
            ForkResult::Parent { child: stage1_pid } => {
                drop(child);
                let text = read_stage1(caller.pid, caller.map, stage1_pid, bundle)?;
                let _ = waitpid(stage1_pid, None);
                let pid: i32 = text.trim().parse().map_err(|_| Error::InitFailed {
                    id: id.to_owned(),
                    message: format!("the forking stage failed: {}", text.trim()),
                })?;
                self.created(creating, init_pid, pid, (caller.report, caller.go))
            }
        }
    }

    /// The caller's side of `create` once init `pid` exists: waits for it
    /// to be ready (`report`, `go`: init's report pipe and the hooks' go
    /// pipe), sets the limits and records the container.
    fn created(
        &self,
        creating: Creating<'_>,
        init_pid: &mut Option<i32>,
        pid: i32,
        pipes: (OwnedFd, OwnedFd),
    ) -> Result<State> {
        let Creating { id, dir, bundle, cgroup, options } = creating;
        let (report_r, go_w) = pipes;
        let namespaces = bundle.spec.linux().as_ref().and_then(|l| l.namespaces().clone()).unwrap_or_default();
        let pid_ns = namespaces.iter().find(|n| n.typ() == LinuxNamespaceType::Pid);
        *init_pid = Some(pid);
        let report = read_report(report_r, go_w, bundle, pid)?;
        match report.as_str() {
            "ok" => {}
            other => {
                // Init exits right after reporting: reap it if it is ours.
                let _ = waitpid(Pid::from_raw(pid), None);
                let message = other.strip_prefix("error: ").unwrap_or("init exited before it was ready");
                return Err(Error::InitFailed { id: id.to_owned(), message: message.to_owned() });
            }
        }
        // Limits apply once init has built the rootfs (device nodes need
        // mknod, which device rules may deny) and before the user's
        // program runs, as runc does.
        if let Some(resources) = bundle.spec.linux().as_ref().and_then(|l| l.resources().as_ref()) {
            cgroup.set(&crate::cgroups::with_default_devices(resources))?;
        }
        let (pid_start, _) =
            proc_stat(pid).ok_or_else(|| Error::InitFailed { id: id.to_owned(), message: "init exited".into() })?;
        let record = Record {
            id: id.to_owned(),
            pid,
            pid_start,
            bundle: bundle.dir.clone(),
            rootfs: bundle.rootfs.clone(),
            created: humantime::format_rfc3339_nanos(SystemTime::now()).to_string(),
            annotations: bundle.spec.annotations().clone().unwrap_or_default().into_iter().collect(),
            own_pid_namespace: pid_ns.is_some_and(|n| n.path().is_none()),
            cgroup: cgroup.clone(),
            late_hooks: Some(bundle.spec.hooks().as_ref().is_some_and(|h| {
                h.poststart().as_ref().is_some_and(|v| !v.is_empty())
                    || h.poststop().as_ref().is_some_and(|v| !v.is_empty())
            })),
        };
        Collection::open_with(dir, DURABILITY)?.put(STATE_RECORD, &record)?;
        if let Some(pid_file) = &options.pid_file {
            write_pid_file(pid_file, pid)?;
        }
        Ok(self.state_of(record))
    }

    /// Releases init of a created container to exec the user's program.
    pub fn start(&self, id: &str) -> Result<()> {
        let record = self.record(id)?;
        let status = self.status_of(&record);
        if status != Status::Created {
            return Err(Error::WrongStatus { id: id.to_owned(), status, wanted: "created" });
        }
        let fifo = self.root.join(id).join(FIFO);
        // Init holds the FIFO open for reading: if it is gone, this fails with ENXIO.
        let fd = nix::fcntl::open(&fifo, OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|errno| Error::Syscall { op: "open exec fifo", path: fifo.clone(), errno })?;
        std::fs::File::from(fd).write_all(b"0").map_err(|source| Error::Read { path: fifo.clone(), source })?;
        std::fs::remove_file(&fifo).map_err(|source| Error::Read { path: fifo, source })?;
        if let Some(Ok(bundle)) = self.late_hooks_bundle(&record) {
            let hooks = bundle.spec.hooks().clone().unwrap_or_default();
            let state = crate::hooks::HookState::new(&bundle, record.pid, "running");
            crate::hooks::run_all_reporting(hooks.poststart(), "hooks.poststart", &state);
        }
        Ok(())
    }

    /// The config a container was created with.
    pub fn spec(&self, id: &str) -> Result<oci_spec::runtime::Spec> {
        Ok(self.bundle_of(&self.record(id)?)?.spec)
    }

    /// The bundle as it was created (its config copied into the state dir).
    fn bundle_of(&self, record: &Record) -> Result<Bundle> {
        let path = self.root.join(&record.id).join(CONFIG);
        let text = std::fs::read(&path).map_err(|source| Error::Read { path, source })?;
        Ok(Bundle {
            id: record.id.clone(),
            dir: record.bundle.clone(),
            spec: crate::spec::parse(&text)?,
            rootfs: record.rootfs.clone(),
        })
    }

    /// The bundle as created, when its config may have poststart or
    /// poststop hooks (None when the record knows it has none).
    fn late_hooks_bundle(&self, record: &Record) -> Option<Result<Bundle>> {
        (record.late_hooks != Some(false)).then(|| self.bundle_of(record))
    }

    /// Sends `signal` to init, or with `all` to every process of the container.
    pub fn kill(&self, id: &str, signal: Signal, all: bool) -> Result<()> {
        let record = self.record(id)?;
        let status = self.status_of(&record);
        if status == Status::Stopped {
            return Err(Error::WrongStatus { id: id.to_owned(), status, wanted: "created or running" });
        }
        let targets = if all { processes_of(&record) } else { vec![record.pid] };
        for pid in targets {
            match kill(Pid::from_raw(pid), signal) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(errno) => {
                    return Err(Error::Syscall { op: "kill", path: PathBuf::from(format!("pid {pid}")), errno });
                }
            }
        }
        Ok(())
    }

    /// Removes a stopped container; with `force`, kills a live one first.
    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        let dir = self.dir(id)?;
        let record = match self.record(id) {
            Ok(record) => record,
            // A directory without a record: a create that died half-way.
            Err(Error::NotFound { .. }) if dir.is_dir() && force => {
                return std::fs::remove_dir_all(&dir).map_err(|source| Error::Read { path: dir, source });
            }
            Err(e) => return Err(e),
        };
        let status = self.status_of(&record);
        if status != Status::Stopped {
            if !force {
                return Err(Error::WrongStatus { id: id.to_owned(), status, wanted: "stopped (or use --force)" });
            }
            for pid in processes_of(&record) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            // Frozen processes die only once thawed.
            if record.cgroup.is_frozen() {
                let _ = record.cgroup.freeze(false);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.status_of(&record) != Status::Stopped {
                if Instant::now() > deadline {
                    return Err(Error::InitFailed {
                        id: id.to_owned(),
                        message: "init did not die after SIGKILL".into(),
                    });
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        // Processes other than init (no pid namespace of its own) may outlive it.
        for pid in record.cgroup.procs().unwrap_or_default() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        record.cgroup.destroy()?;
        let bundle = self.late_hooks_bundle(&record);
        std::fs::remove_dir_all(&dir).map_err(|source| Error::Read { path: dir, source })?;
        if let Some(Ok(bundle)) = bundle {
            let hooks = bundle.spec.hooks().clone().unwrap_or_default();
            let state = crate::hooks::HookState::new(&bundle, record.pid, "stopped");
            crate::hooks::run_all_reporting(hooks.poststop(), "hooks.poststop", &state);
        }
        Ok(())
    }

    /// Freezes every process of a running container.
    pub fn pause(&self, id: &str) -> Result<()> {
        let record = self.record(id)?;
        match self.status_of(&record) {
            Status::Running => record.cgroup.freeze(true),
            status => Err(Error::WrongStatus { id: id.to_owned(), status, wanted: "running" }),
        }
    }

    /// Thaws a paused container.
    pub fn resume(&self, id: &str) -> Result<()> {
        let record = self.record(id)?;
        match self.status_of(&record) {
            Status::Paused => record.cgroup.freeze(false),
            status => Err(Error::WrongStatus { id: id.to_owned(), status, wanted: "paused" }),
        }
    }

    /// The processes of a container (host pids).
    pub fn processes(&self, id: &str) -> Result<Vec<i32>> {
        let record = self.record(id)?;
        if self.status_of(&record) == Status::Stopped {
            return Ok(Vec::new());
        }
        Ok(processes_of(&record))
    }

    /// Changes the resource limits of a live container.
    pub fn update(&self, id: &str, resources: &oci_spec::runtime::LinuxResources) -> Result<()> {
        let record = self.record(id)?;
        match self.status_of(&record) {
            Status::Stopped => Err(Error::WrongStatus { id: id.to_owned(), status: Status::Stopped, wanted: "live" }),
            _ => record.cgroup.set(resources),
        }
    }

    /// Runs `process` inside container `id` (its namespaces, cgroup, and
    /// the container's seccomp profile) and returns its host pid once it
    /// has exec'd. The caller reaps it: be its subreaper, or its parent's.
    /// Must run single-threaded.
    pub fn exec(&self, id: &str, process: &oci_spec::runtime::Process, options: &CreateOptions) -> Result<i32> {
        ensure_single_threaded()?;
        let record = self.record(id)?;
        let status = self.status_of(&record);
        if !matches!(status, Status::Created | Status::Running) {
            return Err(Error::WrongStatus { id: id.to_owned(), status, wanted: "created or running" });
        }
        let bundle = self.bundle_of(&record)?;
        let mut asked = bundle.spec.clone();
        asked.set_process(Some(process.clone()));
        crate::lsm::check(&asked)?;
        // The container's namespaces, from its init: the pid namespace applies to children.
        let mut namespaces = Vec::new();
        // pid and time namespaces apply to children: the forking stage joins them.
        let mut for_children = Vec::new();
        for ns in bundle.spec.linux().as_ref().and_then(|l| l.namespaces().clone()).unwrap_or_default() {
            let name = match ns.typ() {
                LinuxNamespaceType::Pid => "pid",
                LinuxNamespaceType::Network => "net",
                LinuxNamespaceType::Ipc => "ipc",
                LinuxNamespaceType::Uts => "uts",
                LinuxNamespaceType::Cgroup => "cgroup",
                LinuxNamespaceType::Mount => "mnt",
                LinuxNamespaceType::Time => "time",
                LinuxNamespaceType::User => "user",
            };
            let path = PathBuf::from(format!("/proc/{}/ns/{name}", record.pid));
            let fd = nix::fcntl::open(&path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(|errno| Error::Syscall { op: "open namespace", path: path.clone(), errno })?;
            if ns.typ() == LinuxNamespaceType::User {
                // First: the other namespaces belong to it.
                for_children.insert(0, (init::clone_flag(ns.typ()), fd));
            } else if matches!(ns.typ(), LinuxNamespaceType::Pid | LinuxNamespaceType::Time) {
                for_children.push((init::clone_flag(ns.typ()), fd));
            } else {
                namespaces.push((init::clone_flag(ns.typ()), fd));
            }
        }
        // Mount last: it changes the root that the other paths were resolved in.
        namespaces.sort_by_key(|(flag, _)| *flag == CloneFlags::CLONE_NEWNS);
        let pipe = || {
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|errno| Error::Syscall {
                op: "pipe",
                path: PathBuf::from(id),
                errno,
            })
        };
        let (pid_r, pid_w) = pipe()?;
        let (report_r, report_w) = pipe()?;
        let seccomp = bundle.spec.linux().as_ref().and_then(|l| l.seccomp().clone());
        let console = console_for(Some(process), options)?;

        // SAFETY: this process has one thread (checked above).
        match unsafe { fork() }.map_err(|errno| Error::Syscall { op: "fork", path: PathBuf::from(id), errno })? {
            ForkResult::Child => {
                drop(pid_r);
                drop(report_r);
                let mut pid_out = std::fs::File::from(pid_w);
                for (flag, fd) in for_children {
                    if let Err(errno) = setns(fd, flag) {
                        let _ = pid_out.write_all(format!("join {flag:?} namespace: {errno}").as_bytes());
                        init::exit(1);
                    }
                }
                // A fork of a single-threaded process is single-threaded.
                let (forked, in_unified) = fork_in(&record.cgroup);
                match forked {
                    Ok(ForkResult::Child) => {
                        drop(pid_out);
                        let cgroup = (&record.cgroup, in_unified);
                        let preserve = options.launch.preserve_fds;
                        exec_child(cgroup, namespaces, process, seccomp.as_ref(), report_w, console, preserve)
                    }
                    Ok(ForkResult::Parent { child }) => {
                        let _ = pid_out.write_all(child.as_raw().to_string().as_bytes());
                        init::exit(0)
                    }
                    Err(errno) => {
                        let _ = pid_out.write_all(format!("fork: {errno}").as_bytes());
                        init::exit(1)
                    }
                }
            }
            ForkResult::Parent { child } => {
                drop(pid_w);
                drop(report_w);
                let mut text = String::new();
                let _ = std::fs::File::from(pid_r).read_to_string(&mut text);
                let _ = waitpid(child, None);
                let pid: i32 = text
                    .trim()
                    .parse()
                    .map_err(|_| Error::InitFailed { id: id.to_owned(), message: format!("exec: {}", text.trim()) })?;
                let mut report = String::new();
                let _ = std::fs::File::from(report_r).read_to_string(&mut report);
                if !report.is_empty() {
                    // It exits right after reporting: reap it if it is ours (we are its subreaper).
                    let _ = waitpid(Pid::from_raw(pid), None);
                    return Err(Error::InitFailed { id: id.to_owned(), message: format!("exec: {report}") });
                }
                if let Some(pid_file) = &options.pid_file {
                    write_pid_file(pid_file, pid)?;
                }
                Ok(pid)
            }
        }
    }

    /// Resource usage of a container.
    pub fn stats(&self, id: &str) -> Result<crate::cgroups::Stats> {
        Ok(self.record(id)?.cgroup.stats())
    }
}

fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let tmp = path.with_extension("tmp-bulkhead");
    std::fs::write(&tmp, pid.to_string()).map_err(|source| Error::Read { path: tmp.clone(), source })?;
    std::fs::rename(&tmp, path).map_err(|source| Error::Read { path: path.to_owned(), source })
}

/// The processes of a container: with its own pid namespace, every process
/// in that namespace; otherwise init alone (cgroups will list the rest).
fn processes_of(record: &Record) -> Vec<i32> {
    let mut pids = vec![record.pid];
    for pid in record.cgroup.procs().unwrap_or_default() {
        if !pids.contains(&pid) {
            pids.push(pid);
        }
    }
    if !record.own_pid_namespace {
        return pids;
    }
    let Ok(ns) = std::fs::read_link(format!("/proc/{}/ns/pid", record.pid)) else { return pids };
    let Ok(entries) = std::fs::read_dir("/proc") else { return pids };
    for pid in entries.flatten().filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok()) {
        if !pids.contains(&pid) && std::fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|l| l == ns) {
            pids.push(pid);
        }
    }
    pids
}

/// The first child: enters the pid namespace (it applies to children), forks
/// init, reports init's pid, and exits.
/// The exec'd process: joins the cgroup and namespaces, sets itself up
/// as `process` asks, and execs; a failure is written to `report` (which
/// closes empty on a successful exec).
fn exec_child(
    (cgroup, in_unified): (&Cgroup, bool),
    namespaces: Vec<(CloneFlags, OwnedFd)>,
    process: &oci_spec::runtime::Process,
    seccomp: Option<&oci_spec::runtime::LinuxSeccomp>,
    report: OwnedFd,
    console: Option<std::os::unix::net::UnixStream>,
    preserve_fds: u32,
) -> ! {
    let mut report = std::fs::File::from(report);
    let outcome = (|| -> Result<init::Prepared> {
        cgroup.join_self(in_unified)?;
        for (flag, fd) in namespaces {
            setns(fd, flag).map_err(|errno| Error::Syscall {
                op: "join namespace",
                path: PathBuf::from(format!("{flag:?}")),
                errno,
            })?;
        }
        if let Some(socket) = console {
            crate::console::attach(socket, process)?;
        }
        init::prepare_process(process, seccomp)
    })();
    let error = match outcome {
        Ok(prepared) => prepared.exec(process.user().umask().unwrap_or(0o022), preserve_fds),
        Err(e) => e,
    };
    let _ = report.write_all(error.to_string().as_bytes());
    init::exit(127)
}

/// The pipes between `create` and the processes it makes, made before
/// the fork or clone and split into the ends each side keeps.
struct Pipes {
    /// The forking stage's "map" requests, then init's pid or an error.
    pid: (OwnedFd, OwnedFd),
    /// Init's "hooks" requests, then "ok" or "error: …".
    report: (OwnedFd, OwnedFd),
    /// The caller's go-ahead after the runtime-side create hooks.
    go: (OwnedFd, OwnedFd),
    /// The caller's go-ahead once a new user namespace's id maps are written.
    map: (OwnedFd, OwnedFd),
    /// The caller's go-ahead once the cgroup's v1 directories exist.
    ready: (OwnedFd, OwnedFd),
}

/// One side's end of each pipe: for the caller, the read ends of `pid` and
/// `report` and the write ends of the rest; for the child, the other halves.
struct Ends {
    pid: OwnedFd,
    report: OwnedFd,
    go: OwnedFd,
    map: OwnedFd,
    ready: OwnedFd,
}

impl Pipes {
    fn new(dir: &Path) -> Result<Pipes> {
        let pipe = || {
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|errno| Error::Syscall {
                op: "pipe",
                path: dir.to_owned(),
                errno,
            })
        };
        Ok(Pipes { pid: pipe()?, report: pipe()?, go: pipe()?, map: pipe()?, ready: pipe()? })
    }

    /// (the caller's ends, the child's ends)
    fn split(self) -> (Ends, Ends) {
        let Pipes { pid, report, go, map, ready } = self;
        (
            Ends { pid: pid.0, report: report.0, go: go.1, map: map.1, ready: ready.1 },
            Ends { pid: pid.1, report: report.1, go: go.0, map: map.0, ready: ready.0 },
        )
    }
}

/// fork(2), the child born in `cgroup`'s v2 directory where the kernel can
/// ([`crate::sys::clone3_fork`]); the bool says whether it was. The child
/// joins the rest with [`Cgroup::join_self`]. Only for single-threaded
/// callers: `create` and `exec` check it, and their children are.
fn fork_in(cgroup: &Cgroup) -> (nix::Result<ForkResult>, bool) {
    // On failure (a kernel before 5.7, a cgroup that refuses processes)
    // fork plainly: the child's join then names the refusal.
    if let Some(dir) = cgroup.unified_dir()
        && let Ok(forked) = clone_in(Some(&dir), CloneFlags::empty())
    {
        return (Ok(forked), true);
    }
    // SAFETY: the caller is single-threaded (see above).
    (unsafe { fork() }, false)
}

/// clone3 as a fork with new `namespaces`, the child born in the cgroup v2
/// directory `dir` if given. Same rule as [`fork_in`].
fn clone_in(dir: Option<&OwnedFd>, namespaces: CloneFlags) -> nix::Result<ForkResult> {
    use std::os::fd::AsFd;
    let flags = namespaces.bits() as u64;
    // SAFETY: the caller is single-threaded (see fork_in).
    unsafe { crate::sys::clone3_fork(flags, dir.map(|d| d.as_fd())) }
}

/// Joins the namespace at `ns.path`, or creates a new one; returns whether
/// it created one.
fn join_or_create(ns: &oci_spec::runtime::LinuxNamespace, flag: CloneFlags) -> std::result::Result<bool, String> {
    match ns.path() {
        Some(path) => nix::fcntl::open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
            .and_then(|fd| setns(fd, flag))
            .map(|()| false)
            .map_err(|errno| format!("join {} namespace {}: {errno}", ns.typ(), path.display())),
        None => unshare(flag).map(|()| true).map_err(|errno| format!("create {} namespace: {errno}", ns.typ())),
    }
}

/// Joins or creates the time namespace (it applies to children, like pid),
/// writing `linux.timeOffsets` into a new one before any child exists.
fn enter_time_namespace(bundle: &Bundle) -> std::result::Result<(), String> {
    let linux = bundle.spec.linux().clone().unwrap_or_default();
    let Some(ns) = linux.namespaces().iter().flatten().find(|n| n.typ() == LinuxNamespaceType::Time) else {
        return Ok(());
    };
    if !join_or_create(ns, init::clone_flag(LinuxNamespaceType::Time))? {
        return Ok(());
    }
    let mut offsets = String::new();
    for (clock, offset) in linux.time_offsets().iter().flatten() {
        offsets.push_str(&format!("{clock} {} {}\n", offset.secs().unwrap_or(0), offset.nanosecs().unwrap_or(0)));
    }
    if !offsets.is_empty() {
        std::fs::write("/proc/self/timens_offsets", offsets).map_err(|e| format!("linux.timeOffsets: {e}"))?;
    }
    Ok(())
}

/// The host id that container id `id` maps to (the first mapping's base
/// when `id` is not mapped).
fn host_id(mappings: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>, id: u32) -> u32 {
    let mappings = mappings.clone().unwrap_or_default();
    mappings
        .iter()
        .find(|m| (m.container_id()..m.container_id().saturating_add(m.size())).contains(&id))
        .map(|m| m.host_id() + (id - m.container_id()))
        .or_else(|| mappings.first().map(|m| m.host_id()))
        .unwrap_or(id)
}

/// Reads what the first child says: "map" (write its new user namespace's
/// id maps, then let it go on), then init's pid or an error.
fn read_stage1(pid_r: OwnedFd, map_go: OwnedFd, child: Pid, bundle: &Bundle) -> Result<String> {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(std::fs::File::from(pid_r));
    let mut go = std::fs::File::from(map_go);
    loop {
        let mut line = Vec::new();
        let _ = reader.read_until(b'\n', &mut line);
        if line != b"map\n" {
            let mut rest = String::from_utf8_lossy(&line).into_owned();
            let _ = reader.read_to_string(&mut rest);
            return Ok(rest);
        }
        let linux = bundle.spec.linux().clone().unwrap_or_default();
        for (file, mappings) in [("uid_map", linux.uid_mappings()), ("gid_map", linux.gid_mappings())] {
            let text: String = mappings
                .iter()
                .flatten()
                .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
                .collect();
            let path = PathBuf::from(format!("/proc/{}/{file}", child.as_raw()));
            std::fs::write(&path, text).map_err(|source| Error::Read { path, source })?;
        }
        let _ = go.write_all(b"g");
    }
}

/// Reads init's reports: "hooks" (run the runtime-side create hooks, then
/// let init go on), then "ok" or "error: ..." at the end.
fn read_report(report: OwnedFd, go: OwnedFd, bundle: &Bundle, pid: i32) -> Result<String> {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(std::fs::File::from(report));
    let mut go = std::fs::File::from(go);
    loop {
        let mut line = Vec::new();
        let _ = reader.read_until(b'\n', &mut line);
        if line != b"hooks\n" {
            let mut rest = String::from_utf8_lossy(&line).into_owned();
            let _ = reader.read_to_string(&mut rest);
            return Ok(rest);
        }
        let hooks = bundle.spec.hooks().clone().unwrap_or_default();
        crate::hooks::run_create_runtime(&hooks, &crate::hooks::HookState::new(bundle, pid, "creating"))?;
        let _ = go.write_all(b"g");
    }
}

/// Init made by one clone (see `create_in`): joins the rest of its cgroup,
/// takes its stdio, and runs; a failure before that goes to the report pipe.
fn init_direct(
    bundle: &Bundle,
    fifo: &Path,
    (cgroup, in_unified, join_now): (&Cgroup, bool, bool),
    channels: init::Channels,
    stdio: Option<[std::os::fd::RawFd; 3]>,
) -> ! {
    let ready = stdio
        .into_iter()
        .flatten()
        .zip(0..)
        .try_for_each(|(fd, target)| {
            crate::sys::dup2_raw(fd, target).map_err(|errno| format!("set up stdio fd {target}: {errno}"))
        })
        .and_then(|()| if join_now { cgroup.join_self(in_unified).map_err(|e| e.to_string()) } else { Ok(()) });
    if let Err(message) = ready {
        let _ = std::fs::File::from(channels.report).write_all(format!("error: {message}").as_bytes());
        init::exit(1)
    }
    init::run(bundle, fifo, cgroup, channels)
}

/// What the first child needs.
struct Stage1<'a> {
    bundle: &'a Bundle,
    fifo: &'a Path,
    cgroup: &'a Cgroup,
    /// Whether stage 1 was born in the cgroup's v2 directory.
    in_unified: bool,
    pid_ns: Option<&'a oci_spec::runtime::LinuxNamespace>,
    user_ns: Option<&'a oci_spec::runtime::LinuxNamespace>,
    /// Init's pid (or an error, or "map") goes here.
    pid_w: OwnedFd,
    /// The caller writes a byte here once the id maps are written.
    map_go: OwnedFd,
    channels: init::Channels,
    stdio: Option<[std::os::fd::RawFd; 3]>,
}

/// Joins or creates the user namespace; a new one waits for the caller to
/// write its id maps. Then becomes the namespace's root, if it is mapped.
fn enter_user_namespace(
    ns: &oci_spec::runtime::LinuxNamespace,
    pid_out: &mut std::fs::File,
    map_go: OwnedFd,
) -> std::result::Result<(), String> {
    if join_or_create(ns, CloneFlags::CLONE_NEWUSER)? {
        pid_out.write_all(b"map\n").map_err(|e| format!("ask for id maps: {e}"))?;
        let mut byte = [0u8; 1];
        std::fs::File::from(map_go).read_exact(&mut byte).map_err(|e| format!("wait for id maps: {e}"))?;
    }
    let root_gid = nix::unistd::Gid::from_raw(0);
    let root_uid = nix::unistd::Uid::from_raw(0);
    // An unmapped root stays the overflow id; the process keeps its namespace capabilities.
    let _ = nix::unistd::setresgid(root_gid, root_gid, root_gid);
    let _ = nix::unistd::setresuid(root_uid, root_uid, root_uid);
    Ok(())
}

fn stage1(stage: Stage1<'_>) -> ! {
    let Stage1 { bundle, fifo, cgroup, in_unified, pid_ns, user_ns, pid_w, map_go, channels, stdio } = stage;
    let mut pid_out = std::fs::File::from(pid_w);
    // The container's stdio, inherited by init (dup2 clears close-on-exec).
    for (fd, target) in stdio.into_iter().flatten().zip(0..) {
        if let Err(errno) = crate::sys::dup2_raw(fd, target) {
            let _ = pid_out.write_all(format!("set up stdio fd {target}: {errno}").as_bytes());
            init::exit(1);
        }
    }
    // Join the cgroup before forking init, so init starts (and unshares its
    // cgroup namespace) inside it.
    if let Err(e) = cgroup.join_self(in_unified) {
        let _ = pid_out.write_all(e.to_string().as_bytes());
        init::exit(1);
    }
    // The user namespace first: every other namespace is then owned by it.
    if let Some(ns) = user_ns
        && let Err(message) = enter_user_namespace(ns, &mut pid_out, map_go)
    {
        let _ = pid_out.write_all(message.as_bytes());
        init::exit(1);
    }
    let entered = pid_ns.map_or(Ok(false), |ns| join_or_create(ns, CloneFlags::CLONE_NEWPID)).map(drop);
    if let Err(message) = entered.and_then(|()| enter_time_namespace(bundle)) {
        let _ = pid_out.write_all(message.as_bytes());
        init::exit(1);
    }
    // SAFETY: stage1 is a fork of a single-threaded process and is itself single-threaded.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(pid_out);
            init::run(bundle, fifo, cgroup, channels)
        }
        Ok(ForkResult::Parent { child }) => {
            let _ = pid_out.write_all(child.as_raw().to_string().as_bytes());
            init::exit(0)
        }
        Err(errno) => {
            let _ = pid_out.write_all(format!("fork init: {errno}").as_bytes());
            init::exit(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_file_names() {
        for good in ["abc", "a-b_c.d+1", &"x".repeat(64)] {
            validate_id(good).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "a b", "../x"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn own_stat_is_read() {
        let (start, state) = proc_stat(std::process::id() as i32).unwrap();
        assert!(start > 0);
        assert!(state == 'R' || state == 'S');
    }

    #[test]
    fn unknown_containers_are_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let rt = Runtime::new(dir.path());
        assert!(matches!(rt.state("nope"), Err(Error::NotFound { .. })));
        assert!(rt.list().unwrap().is_empty());
    }
}
