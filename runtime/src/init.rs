//! The container's init process: what runs between the fork and the exec
//! of the user's program. It enters or creates the namespaces, builds the
//! root filesystem, sets the hostname, limits, user and capabilities, tells
//! the `create` caller it is ready (or why it failed), then waits on the
//! exec FIFO until `start` writes to it, and finally execs.
//!
//! This code runs in a freshly forked, single-threaded child; it returns
//! only through `_exit`.

use std::collections::HashSet;
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{LinuxNamespaceType, LinuxSeccomp, PosixRlimitType, Process, Spec};

use crate::cgroups::Cgroup;
use crate::error::sys;
use crate::spec::Bundle;
use crate::{Error, Result, rootfs};

/// The clone flag of a namespace type; pid and time are "for children"
/// namespaces, entered by the stage that forks init, not by init itself.
pub(crate) fn clone_flag(typ: LinuxNamespaceType) -> CloneFlags {
    match typ {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(nix::libc::CLONE_NEWTIME),
    }
}

/// Joins the namespaces the spec names by path, and creates the new ones
/// (all but pid and time, which the forking stage handled).
fn enter_namespaces(spec: &Spec, join_cgroup: Option<CgroupJoin>, cgroup: &Cgroup) -> Result<()> {
    let namespaces = spec.linux().as_ref().and_then(|l| l.namespaces().clone()).unwrap_or_default();
    let mut new = CloneFlags::empty();
    // Join the mount namespace last: its paths would hide the others' paths.
    let mut ordered: Vec<_> = namespaces.iter().collect();
    ordered.sort_by_key(|n| n.typ() == LinuxNamespaceType::Mount);
    for ns in ordered {
        let flag = clone_flag(ns.typ());
        // pid, time and user were entered by the stage that forked init.
        if matches!(ns.typ(), LinuxNamespaceType::Pid | LinuxNamespaceType::Time | LinuxNamespaceType::User) {
            continue;
        }
        match ns.path() {
            Some(path) => {
                let fd = nix::fcntl::open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
                    .map_err(sys("open namespace", path))?;
                setns(fd, flag).map_err(sys("join namespace", path))?;
            }
            None => new |= flag,
        }
    }
    let Some(join) = join_cgroup else {
        return unshare(new).map_err(sys("unshare namespaces", "/"));
    };
    // The cgroup namespace last: its root is the cgroup init is in.
    unshare(new - CloneFlags::CLONE_NEWCGROUP).map_err(sys("unshare namespaces", "/"))?;
    let mut byte = [0u8; 1];
    std::fs::File::from(join.ready).read_exact(&mut byte).map_err(|e| Error::Read {
        path: "the cgroup directories (the caller failed to make them)".into(),
        source: e,
    })?;
    cgroup.join_self(join.in_unified)?;
    if new.contains(CloneFlags::CLONE_NEWCGROUP) {
        unshare(CloneFlags::CLONE_NEWCGROUP).map_err(sys("unshare cgroup namespace", "/"))?;
    }
    Ok(())
}

/// Init joins its cgroup's v1 hierarchies itself, once the caller, which
/// makes their directories meanwhile, writes a byte to `ready`: the
/// directories are made while init makes its namespaces (see `create_in`).
pub(crate) struct CgroupJoin {
    pub ready: OwnedFd,
    /// Whether init was born in the cgroup's v2 directory.
    pub in_unified: bool,
}

/// Writes the OOM score adjustment. Lowering it below the current value
/// needs CAP_SYS_RESOURCE: without it, the current value stays, with a
/// warning, as containerd clamps it.
fn set_oom_score_adj(adj: i32) -> Result<()> {
    let path = "/proc/self/oom_score_adj";
    match std::fs::write(path, adj.to_string()) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(nix::libc::EACCES) || e.raw_os_error() == Some(nix::libc::EPERM) => {
            let current = std::fs::read_to_string(path).unwrap_or_default();
            eprintln!(
                "bulkhead-oci: warning: process.oomScoreAdj {adj} kept at {} (lowering it needs CAP_SYS_RESOURCE)",
                current.trim()
            );
            Ok(())
        }
        Err(source) => Err(Error::Read { path: path.into(), source }),
    }
}

fn set_rlimits(process: &Process) -> Result<()> {
    use nix::sys::resource::{Resource, setrlimit};
    for limit in process.rlimits().clone().unwrap_or_default() {
        let resource = match limit.typ() {
            PosixRlimitType::RlimitCpu => Resource::RLIMIT_CPU,
            PosixRlimitType::RlimitFsize => Resource::RLIMIT_FSIZE,
            PosixRlimitType::RlimitData => Resource::RLIMIT_DATA,
            PosixRlimitType::RlimitStack => Resource::RLIMIT_STACK,
            PosixRlimitType::RlimitCore => Resource::RLIMIT_CORE,
            PosixRlimitType::RlimitRss => Resource::RLIMIT_RSS,
            PosixRlimitType::RlimitNproc => Resource::RLIMIT_NPROC,
            PosixRlimitType::RlimitNofile => Resource::RLIMIT_NOFILE,
            PosixRlimitType::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
            PosixRlimitType::RlimitAs => Resource::RLIMIT_AS,
            PosixRlimitType::RlimitLocks => Resource::RLIMIT_LOCKS,
            PosixRlimitType::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
            PosixRlimitType::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
            PosixRlimitType::RlimitNice => Resource::RLIMIT_NICE,
            PosixRlimitType::RlimitRtprio => Resource::RLIMIT_RTPRIO,
            PosixRlimitType::RlimitRttime => Resource::RLIMIT_RTTIME,
        };
        let (mut soft, mut hard) = (limit.soft(), limit.hard());
        if let Err(Errno::EPERM) = setrlimit(resource, soft, hard) {
            // Raising a hard limit needs CAP_SYS_RESOURCE: keep the current one.
            let (_, current) = nix::sys::resource::getrlimit(resource).unwrap_or((0, 0));
            hard = hard.min(current);
            soft = soft.min(hard);
            eprintln!(
                "bulkhead-oci: warning: process.rlimits {:?}: clamped to soft {soft} hard {hard} (no CAP_SYS_RESOURCE)",
                limit.typ()
            );
        }
        setrlimit(resource, soft, hard).map_err(|errno| Error::Syscall {
            op: "setrlimit",
            path: PathBuf::from(format!("process.rlimits {:?}", limit.typ())),
            errno,
        })?;
    }
    Ok(())
}

fn cap_set(list: &Option<oci_spec::runtime::Capabilities>, field: &str) -> Result<HashSet<caps::Capability>> {
    list.iter()
        .flatten()
        .map(|cap| {
            let name = serde_json::to_value(cap).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
            name.parse::<caps::Capability>().map_err(|_| Error::Unsupported {
                field: format!("process.capabilities.{field}"),
                what: format!("capability {name} (unknown to this kernel interface)"),
            })
        })
        .collect()
}

fn caps_err(op: &'static str) -> impl FnOnce(caps::errors::CapsError) -> Error {
    move |e| Error::Syscall { op, path: PathBuf::from(e.to_string()), errno: Errno::last() }
}

/// Switches to the spec's user and groups and sets the five capability
/// sets, in the order the kernel allows: bounding (needs CAP_SETPCAP) before
/// the uid change, the others after it (kept across it with KEEPCAPS).
fn set_user_and_capabilities(process: &Process) -> Result<()> {
    let user = process.user();
    let wanted = process.capabilities().clone();
    let sets = match &wanted {
        Some(c) => Some((
            cap_set(c.bounding(), "bounding")?,
            cap_set(c.effective(), "effective")?,
            cap_set(c.permitted(), "permitted")?,
            cap_set(c.inheritable(), "inheritable")?,
            cap_set(c.ambient(), "ambient")?,
        )),
        None => None,
    };
    if let Some((bounding, ..)) = &sets {
        for cap in caps::all() {
            if !bounding.contains(&cap) && caps::has_cap(None, caps::CapSet::Bounding, cap).unwrap_or(false) {
                caps::drop(None, caps::CapSet::Bounding, cap).map_err(caps_err("drop bounding capability"))?;
            }
        }
    }
    nix::sys::prctl::set_keepcaps(true).map_err(sys("prctl keepcaps", "/"))?;
    let groups: Vec<Gid> = user.additional_gids().iter().flatten().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&groups).map_err(sys("setgroups", "process.user.additionalGids"))?;
    let (uid, gid) = (Uid::from_raw(user.uid()), Gid::from_raw(user.gid()));
    nix::unistd::setresgid(gid, gid, gid).map_err(sys("setresgid", "process.user.gid"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(sys("setresuid", "process.user.uid"))?;
    nix::sys::prctl::set_keepcaps(false).map_err(sys("prctl keepcaps", "/"))?;
    if let Some((_, effective, permitted, inheritable, ambient)) = sets {
        caps::set(None, caps::CapSet::Effective, &effective).map_err(caps_err("set effective capabilities"))?;
        caps::set(None, caps::CapSet::Permitted, &permitted).map_err(caps_err("set permitted capabilities"))?;
        caps::set(None, caps::CapSet::Inheritable, &inheritable).map_err(caps_err("set inheritable capabilities"))?;
        // An ambient capability must be permitted and inheritable; runc warns
        // and goes on for one that is not (its own default spec has such).
        caps::clear(None, caps::CapSet::Ambient).map_err(caps_err("clear ambient capabilities"))?;
        for cap in ambient {
            if let Err(e) = caps::raise(None, caps::CapSet::Ambient, cap) {
                eprintln!("bulkhead-oci: warning: process.capabilities.ambient: cannot raise {cap}: {e}");
            }
        }
    }
    if process.no_new_privileges().unwrap_or(false) {
        nix::sys::prctl::set_no_new_privs().map_err(sys("prctl no_new_privs", "/"))?;
    }
    Ok(())
}

/// `process.scheduler` (sched_setattr) and `process.ioPriority` (ioprio_set).
fn set_scheduling(process: &Process) -> Result<()> {
    use oci_spec::runtime::{IOPriorityClass, LinuxSchedulerFlag, LinuxSchedulerPolicy};
    if let Some(s) = process.scheduler() {
        let policy = match s.policy() {
            LinuxSchedulerPolicy::SchedOther => 0,
            LinuxSchedulerPolicy::SchedFifo => 1,
            LinuxSchedulerPolicy::SchedRr => 2,
            LinuxSchedulerPolicy::SchedBatch => 3,
            LinuxSchedulerPolicy::SchedIso => 4,
            LinuxSchedulerPolicy::SchedIdle => 5,
            LinuxSchedulerPolicy::SchedDeadline => 6,
        };
        let mut flags = 0u64;
        for flag in s.flags().iter().flatten() {
            flags |= match flag {
                LinuxSchedulerFlag::SchedResetOnFork => 0x01,
                LinuxSchedulerFlag::SchedFlagReclaim => 0x02,
                LinuxSchedulerFlag::SchedFlagDLOverrun => 0x04,
                LinuxSchedulerFlag::SchedFlagKeepPolicy => 0x08,
                LinuxSchedulerFlag::SchedFlagKeepParams => 0x10,
                LinuxSchedulerFlag::SchedFlagUtilClampMin => 0x20,
                LinuxSchedulerFlag::SchedFlagUtilClampMax => 0x40,
            };
        }
        let attr = nix::libc::sched_attr {
            size: std::mem::size_of::<nix::libc::sched_attr>() as u32,
            sched_policy: policy,
            sched_flags: flags,
            sched_nice: s.nice().unwrap_or(0),
            sched_priority: s.priority().unwrap_or(0).max(0) as u32,
            sched_runtime: s.runtime().unwrap_or(0),
            sched_deadline: s.deadline().unwrap_or(0),
            sched_period: s.period().unwrap_or(0),
        };
        crate::sys::sched_setattr(&attr).map_err(sys("sched_setattr", "process.scheduler"))?;
    }
    if let Some(io) = process.io_priority() {
        let class = match io.class() {
            IOPriorityClass::IoprioClassRt => 1,
            IOPriorityClass::IoprioClassBe => 2,
            IOPriorityClass::IoprioClassIdle => 3,
        };
        let level = u32::try_from(io.priority()).ok().filter(|p| *p <= 7).ok_or_else(|| Error::Spec {
            field: "process.ioPriority.priority".into(),
            message: format!("{} is outside 0..=7", io.priority()),
        })?;
        crate::sys::ioprio_set(class, level).map_err(sys("ioprio_set", "process.ioPriority"))?;
    }
    Ok(())
}

/// Finds the program to exec, as execvp would, but before we commit to it.
fn find_program(arg0: &str, env: &[String]) -> Result<PathBuf> {
    if arg0.contains('/') {
        return Ok(PathBuf::from(arg0));
    }
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path_var.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(arg0);
        if nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK).is_ok() && candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(Error::Syscall { op: "find executable in $PATH", path: PathBuf::from(arg0), errno: Errno::ENOENT })
}

fn cstrings(items: &[String], field: &str) -> Result<Vec<CString>> {
    items
        .iter()
        .map(|s| {
            CString::new(s.as_bytes())
                .map_err(|_| Error::Spec { field: field.into(), message: "contains a NUL byte".into() })
        })
        .collect()
}

/// Everything up to the point where init waits for `start`.
/// A process ready to exec: everything checked, the user and limits set.
pub(crate) struct Prepared {
    pub program: CString,
    pub args: Vec<CString>,
    pub env: Vec<CString>,
    /// A seccomp filter still to load, last, just before exec.
    pub seccomp: Option<libseccomp::ScmpFilterContext>,
}

impl Prepared {
    /// Loads a pending seccomp filter and execs; returns only on failure.
    pub(crate) fn exec(self, umask: u32, preserve_fds: u32) -> Error {
        nix::sys::stat::umask(Mode::from_bits_truncate(umask));
        crate::sys::reset_signals();
        crate::sys::close_fds_on_exec_from(3 + preserve_fds as i32);
        if let Some(filter) = &self.seccomp
            && let Err(e) = crate::seccomp::load(filter)
        {
            return e;
        }
        match nix::unistd::execve(&self.program, &self.args, &self.env) {
            Err(errno) => {
                Error::Syscall { op: "exec", path: PathBuf::from(self.program.to_string_lossy().into_owned()), errno }
            }
            Ok(never) => match never {},
        }
    }
}

/// Sets up the calling process, already inside the container's namespaces
/// and root, to run `process`: oom score, rlimits, the program's path,
/// seccomp, user and capabilities, cwd. Shared by init and exec.
pub(crate) fn prepare_process(process: &Process, seccomp: Option<&LinuxSeccomp>) -> Result<Prepared> {
    if let Some(adj) = process.oom_score_adj() {
        set_oom_score_adj(adj)?;
    }
    set_rlimits(process)?;
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(Error::Spec { field: "process.args".into(), message: "must name the program to run".into() });
    }
    let env = process.env().clone().unwrap_or_default();
    let program = find_program(&args[0], &env)?;
    let mut seccomp = match seccomp {
        Some(profile) => Some(crate::seccomp::compile(profile)?),
        None => None,
    };
    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it
    // while the process still has it, as runc does. With it, load it last.
    if !process.no_new_privileges().unwrap_or(false)
        && let Some(filter) = seccomp.take()
    {
        crate::seccomp::load(&filter)?;
    }
    set_scheduling(process)?;
    crate::lsm::apply(process)?;
    set_user_and_capabilities(process)?;
    nix::unistd::chdir(process.cwd()).map_err(sys("chdir", process.cwd()))?;
    let program = CString::new(program.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::Spec { field: "process.args".into(), message: "contains a NUL byte".into() })?;
    Ok(Prepared { program, args: cstrings(&args, "process.args")?, env: cstrings(&env, "process.env")?, seccomp })
}

/// What init holds between `setup` and exec.
struct Ready {
    fifo: OwnedFd,
    process: Prepared,
}

/// Everything up to the point where init waits for `start`. `sync` is
/// called once the namespaces and cgroup are in place, before the root
/// filesystem is built (the createRuntime/createContainer hook point).
fn setup(
    bundle: &Bundle,
    fifo: &Path,
    cgroup: &Cgroup,
    sync: &mut dyn FnMut() -> Result<()>,
    console: Option<std::os::unix::net::UnixStream>,
    join_cgroup: Option<CgroupJoin>,
    no_pivot: bool,
) -> Result<Ready> {
    let spec = &bundle.spec;
    let process = spec.process().clone().unwrap_or_default();
    nix::sys::stat::umask(Mode::empty());
    enter_namespaces(spec, join_cgroup, cgroup)?;
    // The FIFO is held read-write so this open never blocks; `start` writes a byte to it.
    let fifo_fd =
        nix::fcntl::open(fifo, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty()).map_err(sys("open exec fifo", fifo))?;
    sync()?;
    let root = rootfs::prepare(bundle)?;
    rootfs::mount_all(bundle, &root, cgroup)?;
    rootfs::create_devices(spec, &root)?;
    drop(root);
    rootfs::pivot(&bundle.rootfs, no_pivot)?;
    rootfs::sysctls(spec)?;
    if let Some(socket) = console {
        let slave = crate::console::attach(socket, &process)?;
        crate::console::bind_dev_console(&slave)?;
    }
    rootfs::finish(spec)?;
    if let Some(hostname) = spec.hostname().as_ref().filter(|h| !h.is_empty()) {
        nix::unistd::sethostname(hostname).map_err(sys("sethostname", "hostname"))?;
    }
    if let Some(domain) = spec.domainname().as_ref().filter(|d| !d.is_empty()) {
        crate::sys::setdomainname(domain).map_err(sys("setdomainname", "domainname"))?;
    }
    if let Some(personality) = spec.linux().as_ref().and_then(|l| l.personality().as_ref()) {
        use nix::sys::personality::Persona;
        let domain = match personality.domain() {
            oci_spec::runtime::LinuxPersonalityDomain::PerLinux => Persona::empty(),
            oci_spec::runtime::LinuxPersonalityDomain::PerLinux32 => Persona::from_bits_retain(0x0008),
        };
        nix::sys::personality::set(domain).map_err(sys("personality", "linux.personality"))?;
    }
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref());
    Ok(Ready { fifo: fifo_fd, process: prepare_process(&process, seccomp)? })
}

/// What links init to the `create` caller.
pub(crate) struct Channels {
    /// Init writes "hooks", then "ok" or "error: ..." here.
    pub report: OwnedFd,
    /// The caller writes a byte here once the createRuntime hooks ran.
    pub go: OwnedFd,
    /// The console socket, connected, when the process wants a terminal.
    pub console: Option<std::os::unix::net::UnixStream>,
    pub launch: crate::container::Launch,
    /// Set when init is still to join its cgroup's v1 hierarchies.
    pub join_cgroup: Option<CgroupJoin>,
}

/// Runs init: sets the container up, reports to the `create` caller
/// through `report` ("hooks" when it should run the createRuntime hooks,
/// then "ok" or "error: ..."), waits for `start`, runs the startContainer
/// hooks, and execs the user's program.
pub(crate) fn run(bundle: &Bundle, fifo: &Path, cgroup: &Cgroup, channels: Channels) -> ! {
    let Channels { report, go, console, launch, join_cgroup } = channels;
    let mut report = std::fs::File::from(report);
    let mut go = std::fs::File::from(go);
    let hooks = bundle.spec.hooks().clone().unwrap_or_default();
    let mut sync = || -> Result<()> {
        if crate::hooks::runtime_side_create_hooks(&hooks) {
            report.write_all(b"hooks\n").map_err(|e| Error::Read { path: "create pipe".into(), source: e })?;
            let mut byte = [0u8; 1];
            go.read_exact(&mut byte).map_err(|e| Error::Read { path: "create pipe".into(), source: e })?;
        }
        // Before pivot_root, /proc is the host's: it names init's host pid.
        let pid = std::fs::read_link("/proc/self").ok().and_then(|p| p.to_str()?.parse().ok()).unwrap_or(0);
        let state = crate::hooks::HookState::new(bundle, pid, "creating");
        crate::hooks::run_all(hooks.create_container(), "hooks.createContainer", &state)
    };
    if !launch.no_new_keyring {
        crate::sys::join_session_keyring(&format!("_ses.{}", bundle.id));
    }
    let ready = setup(bundle, fifo, cgroup, &mut sync, console, join_cgroup, launch.no_pivot);
    drop(go);
    let Ready { fifo: fifo_fd, process } = match ready {
        Ok(ready) => ready,
        Err(e) => {
            let _ = report.write_all(format!("error: {e}").as_bytes());
            exit(1)
        }
    };
    // Closing the report pipe tells `create` that init is ready.
    let _ = report.write_all(b"ok");
    drop(report);
    let mut fifo = std::fs::File::from(fifo_fd);
    let mut byte = [0u8; 1];
    if let Err(e) = fifo.read_exact(&mut byte) {
        let _ = writeln!(std::io::stderr(), "bulkhead-oci init: read exec fifo: {e}");
        exit(127)
    }
    drop(fifo);
    let state = crate::hooks::HookState::new(bundle, 1, "created");
    if let Err(e) = crate::hooks::run_all(hooks.start_container(), "hooks.startContainer", &state) {
        let _ = writeln!(std::io::stderr(), "bulkhead-oci init: {e}");
        exit(127)
    }
    let umask = bundle.spec.process().as_ref().and_then(|p| p.user().umask()).unwrap_or(0o022);
    let e = process.exec(umask, launch.preserve_fds);
    let _ = writeln!(std::io::stderr(), "bulkhead-oci init: {e}");
    exit(127)
}

/// Leaves the forked child without running the parent's exit handlers or
/// flushing buffers it inherited.
pub(crate) fn exit(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { nix::libc::_exit(code) }
}
