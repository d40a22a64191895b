//! `bulkhead-oci`: the runc-compatible command over the runtime core, so
//! OCI tooling (and containerd's runc shim, through `BinaryName`) can drive
//! bulkhead as it drives runc: the same subcommands, flags, state output,
//! exit codes, and error line in `--log`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand, ValueEnum};
use nix::sys::signal::Signal;

use crate::container::{CreateOptions, Launch, Runtime, State};
use crate::{Error, Result};

#[derive(Debug, Parser)]
#[command(name = "bulkhead-oci", version, about = "bulkhead's OCI runtime, with runc's command line")]
struct Cli {
    /// Directory for container state.
    #[arg(long, global = true, default_value = "/run/bulkhead-oci")]
    root: PathBuf,
    /// Append error messages to this file (as runc does for containerd's shim).
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Use systemd for cgroups (not supported yet: refused).
    #[arg(long, global = true)]
    systemd_cgroup: bool,
    /// Accepted for compatibility; errors are always logged.
    #[arg(long, global = true)]
    debug: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Each subcommand's arguments are built only when it is the one parsed
/// (`defer`): building all of them cost a tenth of a millisecond of every
/// invocation, three per container.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
enum Command {
    /// Create a container: init waits, set up, for `start`.
    Create {
        id: String,
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
        #[arg(long)]
        pid_file: Option<PathBuf>,
        /// Unix socket to send the terminal's master to (process.terminal).
        #[arg(long)]
        console_socket: Option<PathBuf>,
        #[command(flatten)]
        launch: LaunchFlags,
    },
    /// Start a created container.
    Start { id: String },
    /// Create and start a container; wait for it unless --detach, exiting with its status.
    Run {
        id: String,
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
        #[arg(long)]
        pid_file: Option<PathBuf>,
        #[arg(short, long)]
        detach: bool,
        #[arg(long)]
        console_socket: Option<PathBuf>,
        #[command(flatten)]
        launch: LaunchFlags,
    },
    /// Print the state of a container as JSON.
    State { id: String },
    /// Send a signal (default SIGTERM) to a container's init, or with --all to all its processes.
    Kill {
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
        #[arg(short, long)]
        all: bool,
    },
    /// Delete a stopped container; --force kills a live one first.
    Delete {
        id: String,
        #[arg(short, long)]
        force: bool,
    },
    /// List containers.
    List {
        #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Run a new process inside a container.
    Exec {
        id: String,
        /// The command and its arguments (unless --process is given).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
        /// The process as config.json's `process` object, from a file.
        #[arg(short, long)]
        process: Option<PathBuf>,
        #[arg(short, long)]
        detach: bool,
        #[arg(long)]
        pid_file: Option<PathBuf>,
        #[arg(long)]
        cwd: Option<PathBuf>,
        /// KEY=VALUE, repeatable.
        #[arg(short, long)]
        env: Vec<String>,
        /// uid[:gid]
        #[arg(short, long)]
        user: Option<String>,
        #[arg(short, long)]
        tty: bool,
        #[arg(long)]
        console_socket: Option<PathBuf>,
        /// Pass descriptors 3..3+N into the process.
        #[arg(long, default_value_t = 0)]
        preserve_fds: u32,
    },
    /// Freeze every process of a container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// List the processes of a container.
    Ps {
        id: String,
        #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Change the resource limits of a live container.
    Update {
        id: String,
        /// linux.resources as JSON, from a file or - for stdin.
        #[arg(short, long)]
        resources: Option<PathBuf>,
        #[arg(long)]
        memory: Option<i64>,
        #[arg(long)]
        memory_swap: Option<i64>,
        #[arg(long)]
        memory_reservation: Option<i64>,
        #[arg(long)]
        cpu_shares: Option<u64>,
        #[arg(long)]
        cpu_quota: Option<i64>,
        #[arg(long)]
        cpu_period: Option<u64>,
        #[arg(long)]
        cpuset_cpus: Option<String>,
        #[arg(long)]
        cpuset_mems: Option<String>,
        #[arg(long)]
        pids_limit: Option<i64>,
    },
    /// Print resource usage: one sample with --stats, else a stream of
    /// stats and OOM events (one JSON object a line) until the container stops.
    Events {
        id: String,
        #[arg(long)]
        stats: bool,
        /// Seconds between samples in the stream.
        #[arg(long, default_value = "5")]
        interval: u64,
    },
    /// Print what this runtime implements (runtime-spec features.md).
    Features,
    /// Write a default config.json into the bundle directory.
    Spec {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
        #[arg(long)]
        rootless: bool,
    },
}

// runc's create/run flags that change how init sets up.
#[derive(Debug, Clone, Copy, Args)]
struct LaunchFlags {
    /// Pass descriptors 3..3+N into the container.
    #[arg(long, default_value_t = 0)]
    preserve_fds: u32,
    /// Move the rootfs over / instead of pivot_root (for ramfs roots).
    #[arg(long)]
    no_pivot: bool,
    /// Keep the caller's session keyring instead of creating one.
    #[arg(long)]
    no_new_keyring: bool,
}

impl From<LaunchFlags> for Launch {
    fn from(f: LaunchFlags) -> Launch {
        Launch { preserve_fds: f.preserve_fds, no_pivot: f.no_pivot, no_new_keyring: f.no_new_keyring }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ListFormat {
    Table,
    Json,
}

/// Parses `9`, `KILL` or `SIGKILL`.
pub fn parse_signal(text: &str) -> Result<Signal> {
    let bad = || Error::Spec { field: "signal".into(), message: format!("{text:?} is not a signal") };
    if let Ok(n) = text.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    Signal::from_str(&name).map_err(|_| bad())
}

/// The config.json `spec` writes: runc's default, less what bulkhead does
/// not run yet (a terminal).
pub fn default_spec() -> serde_json::Value {
    serde_json::json!({
        "ociVersion": "1.2.0",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "bulkhead",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

/// The features document: what this build and this host support, truthfully.
pub fn features() -> serde_json::Value {
    let layout = crate::cgroups::Layout::detect().ok();
    let caps: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    let libseccomp =
        libseccomp::ScmpVersion::current().map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro)).unwrap_or_default();
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": [
            "async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec", "lazytime", "loud", "mand",
            "noatime", "nodev", "nodiratime", "noexec", "nolazytime", "nomand", "norelatime", "nostrictatime", "nosuid",
            "private", "rbind", "relatime", "remount", "ro", "rprivate", "rshared", "rslave", "runbindable", "rw",
            "shared", "silent", "slave", "strictatime", "suid", "sync", "unbindable",
            "ratime", "rdev", "rdiratime", "rexec", "rnoatime", "rnodev", "rnodiratime", "rnoexec", "rnorelatime",
            "rnostrictatime", "rnosuid", "rnosymfollow", "rrelatime", "rro", "rrw", "rstrictatime", "rsuid", "rsymfollow"
        ],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": caps,
            "cgroup": {
                "v1": layout.as_ref().is_some_and(|l| !matches!(l, crate::cgroups::Layout::Unified { .. })),
                "v2": true,
                "systemd": false,
                "systemdUser": false,
                "rdma": false
            },
            "seccomp": {
                "enabled": true,
                "actions": [
                    "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
                    "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"
                ],
                "operators": [
                    "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"
                ],
                "archs": [
                    "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM", "SCMP_ARCH_PPC64LE", "SCMP_ARCH_RISCV64", "SCMP_ARCH_S390X",
                    "SCMP_ARCH_X32", "SCMP_ARCH_X86", "SCMP_ARCH_X86_64"
                ],
                "knownFlags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
                "supportedFlags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_TSYNC"]
            },
            "apparmor": {"enabled": crate::lsm::apparmor_enabled()},
            "selinux": {"enabled": crate::lsm::selinux_enabled()},
            "intelRdt": {"enabled": false},
            "mountExtensions": {"idmap": {"enabled": false}}
        },
        "annotations": {
            "io.github.seccomp.libseccomp.version": libseccomp,
            "org.opencontainers.runtime-spec.version": "1.2.0"
        }
    })
}

/// runc's stats event, with the OOM kill count and working set added.
fn stats_event(id: &str, s: &crate::cgroups::Stats) -> serde_json::Value {
    serde_json::json!({
        "type": "stats",
        "id": id,
        "data": {
            "cpu": {"usage": {"total": s.cpu_usage_ns}},
            "memory": {
                "usage": {"usage": s.memory_usage, "limit": s.memory_limit},
                "workingSet": s.memory_working_set,
                "oomKills": s.oom_kills
            },
            "pids": {"current": s.pids_current, "limit": s.pids_limit}
        }
    })
}

/// Writes a line to stdout; a reader that went away is not an error.
fn emit(line: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Spec { field: "(output)".into(), message: e.to_string() })?;
    emit(&text);
    Ok(())
}

/// `run` in the foreground: become the subreaper so init is ours to reap,
/// then exit with its status as runc does (128+n for a signal).
fn run_foreground(rt: &Runtime, id: &str, bundle: &Path, options: &CreateOptions) -> Result<u8> {
    nix::sys::prctl::set_child_subreaper(true).map_err(|errno| Error::Syscall {
        op: "become child subreaper",
        path: PathBuf::from("/"),
        errno,
    })?;
    let state = rt.create(id, bundle, options)?;
    rt.start(id)?;
    let code = wait_exit(state.pid, id)?;
    rt.delete(id, true)?;
    Ok(code)
}

/// Waits for `pid` and turns its end into runc's exit code (128+n for signal n).
fn wait_exit(pid: i32, id: &str) -> Result<u8> {
    let pid = nix::unistd::Pid::from_raw(pid);
    loop {
        match nix::sys::wait::waitpid(pid, None) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => return Ok(code as u8),
            Ok(nix::sys::wait::WaitStatus::Signaled(_, signal, _)) => return Ok(128 + signal as u8),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(errno) => return Err(Error::Syscall { op: "wait", path: PathBuf::from(id), errno }),
        }
    }
}

/// The process `exec` runs without --process: the container's own process
/// (user, env, capabilities, limits) with the given command, env, cwd, user.
fn exec_process(rt: &Runtime, command: &Command, id: &str) -> Result<oci_spec::runtime::Process> {
    let Command::Exec { command: args, cwd, env, user, tty, .. } = command else {
        return Err(Error::Spec { field: "exec".into(), message: "not an exec command".into() });
    };
    if args.is_empty() {
        return Err(Error::Spec { field: "exec".into(), message: "give a command, or --process".into() });
    }
    let mut process = rt.spec(id)?.process().clone().unwrap_or_default();
    process.set_args(Some(args.clone()));
    process.set_terminal(Some(*tty));
    if let Some(cwd) = cwd {
        process.set_cwd(cwd.clone());
    }
    let mut vars = process.env().clone().unwrap_or_default();
    for var in env {
        let key = var.split('=').next().unwrap_or_default();
        vars.retain(|v| v.split('=').next() != Some(key));
        vars.push(var.clone());
    }
    process.set_env(Some(vars));
    if let Some(user) = user {
        let (uid, gid) = user.split_once(':').unwrap_or((user, "0"));
        let bad = || Error::Spec { field: "--user".into(), message: format!("{user:?} is not uid[:gid]") };
        let mut u = process.user().clone();
        u.set_uid(uid.parse().map_err(|_| bad())?);
        u.set_gid(gid.parse().map_err(|_| bad())?);
        process.set_user(u);
    }
    Ok(process)
}

fn execute(cli: &Cli) -> Result<u8> {
    if cli.systemd_cgroup {
        return Err(Error::Unsupported { field: "--systemd-cgroup".into(), what: "the systemd cgroup driver".into() });
    }
    let rt = Runtime::new(&cli.root);
    match &cli.command {
        Command::Create { id, bundle, pid_file, console_socket, launch } => {
            rt.create(
                id,
                bundle,
                &CreateOptions {
                    pid_file: pid_file.clone(),
                    console_socket: console_socket.clone(),
                    launch: (*launch).into(),
                    stdio: None,
                },
            )?;
        }
        Command::Start { id } => rt.start(id)?,
        Command::Run { id, bundle, pid_file, detach, console_socket, launch } => {
            let options = CreateOptions {
                pid_file: pid_file.clone(),
                console_socket: console_socket.clone(),
                launch: (*launch).into(),
                stdio: None,
            };
            if !detach {
                if console_socket.is_some() {
                    return Err(Error::Unsupported {
                        field: "run --console-socket".into(),
                        what: "foreground runs with a terminal (use --detach)".into(),
                    });
                }
                return run_foreground(&rt, id, bundle, &options);
            }
            rt.create(id, bundle, &options)?;
            rt.start(id)?;
        }
        Command::State { id } => print_json(&rt.state(id)?)?,
        Command::Kill { id, signal, all } => rt.kill(id, parse_signal(signal)?, *all)?,
        Command::Delete { id, force } => rt.delete(id, *force)?,
        Command::List { format, quiet } => {
            let states = rt.list()?;
            match (format, quiet) {
                (_, true) => states.iter().for_each(|s| emit(&s.id)),
                (ListFormat::Json, false) => print_json(&states)?,
                (ListFormat::Table, false) => print_table(&states),
            }
        }
        Command::Exec { id, process, detach, pid_file, console_socket, preserve_fds, .. } => {
            let process = match process {
                Some(path) => {
                    let value = read_json(path)?;
                    serde_path_to_error::deserialize(value).map_err(|e| Error::Spec {
                        field: format!("process.{}", e.path()),
                        message: e.inner().to_string(),
                    })?
                }
                None => exec_process(&rt, &cli.command, id)?,
            };
            let launch = Launch { preserve_fds: *preserve_fds, ..Launch::default() };
            let options = CreateOptions {
                pid_file: pid_file.clone(),
                console_socket: console_socket.clone(),
                launch,
                stdio: None,
            };
            // The process is orphaned by its forking stage: be its reaper.
            nix::sys::prctl::set_child_subreaper(true).map_err(|errno| Error::Syscall {
                op: "become child subreaper",
                path: PathBuf::from("/"),
                errno,
            })?;
            let pid = rt.exec(id, &process, &options)?;
            if *detach {
                return Ok(0);
            }
            return wait_exit(pid, id);
        }
        Command::Features => print_json(&features())?,
        Command::Pause { id } => rt.pause(id)?,
        Command::Resume { id } => rt.resume(id)?,
        Command::Ps { id, format } => {
            let pids = rt.processes(id)?;
            match format {
                ListFormat::Json => print_json(&pids)?,
                ListFormat::Table => {
                    emit("PID CMD");
                    for pid in pids {
                        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                        emit(&format!("{pid} {}", cmd.trim_end()));
                    }
                }
            }
        }
        Command::Update { id, resources, .. } => {
            let mut value = match resources {
                Some(path) => read_json(path)?,
                None => serde_json::json!({}),
            };
            apply_update_flags(&cli.command, &mut value);
            let resources: oci_spec::runtime::LinuxResources =
                serde_path_to_error::deserialize(value).map_err(|e| Error::Spec {
                    field: format!("resources.{}", e.path()),
                    message: e.inner().to_string(),
                })?;
            rt.update(id, &resources)?;
        }
        Command::Events { id, stats, interval } => {
            if *stats {
                print_json(&stats_event(id, &rt.stats(id)?))?;
                return Ok(0);
            }
            // A stream: a stats line each interval, an oom line when the OOM count grows.
            let mut ooms = rt.stats(id)?.oom_kills.unwrap_or(0);
            let tick = std::time::Duration::from_millis(100);
            let mut since_stats = std::time::Duration::from_secs(*interval);
            while rt.state(id).is_ok_and(|s| s.status != crate::container::Status::Stopped) {
                let s = rt.stats(id)?;
                if s.oom_kills.unwrap_or(0) > ooms {
                    ooms = s.oom_kills.unwrap_or(0);
                    emit(&serde_json::json!({"type": "oom", "id": id}).to_string());
                }
                if since_stats >= std::time::Duration::from_secs(*interval) {
                    emit(&stats_event(id, &s).to_string());
                    since_stats = std::time::Duration::ZERO;
                }
                std::thread::sleep(tick);
                since_stats += tick;
            }
        }
        Command::Spec { bundle, rootless } => {
            if *rootless {
                return Err(Error::Unsupported { field: "--rootless".into(), what: "rootless specs".into() });
            }
            let path = bundle.join("config.json");
            if path.exists() {
                return Err(Error::Exists { id: path.display().to_string() });
            }
            let text = serde_json::to_string_pretty(&default_spec()).unwrap_or_default();
            std::fs::write(&path, text + "\n").map_err(|source| Error::Read { path, source })?;
        }
    }
    Ok(0)
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = if path == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|source| Error::Read { path: path.into(), source })?;
        text
    } else {
        std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.into(), source })?
    };
    serde_json::from_str(&text).map_err(|e| Error::Spec { field: "resources".into(), message: e.to_string() })
}

/// Lays `update`'s flags over the resources JSON, as runc does.
fn apply_update_flags(command: &Command, value: &mut serde_json::Value) {
    let Command::Update {
        memory,
        memory_swap,
        memory_reservation,
        cpu_shares,
        cpu_quota,
        cpu_period,
        cpuset_cpus,
        cpuset_mems,
        pids_limit,
        ..
    } = command
    else {
        return;
    };
    let mut set = |section: &str, key: &str, v: serde_json::Value| {
        value[section][key] = v;
    };
    memory.map(|v| set("memory", "limit", v.into()));
    memory_swap.map(|v| set("memory", "swap", v.into()));
    memory_reservation.map(|v| set("memory", "reservation", v.into()));
    cpu_shares.map(|v| set("cpu", "shares", v.into()));
    cpu_quota.map(|v| set("cpu", "quota", v.into()));
    cpu_period.map(|v| set("cpu", "period", v.into()));
    if let Some(v) = cpuset_cpus {
        set("cpu", "cpus", v.clone().into());
    }
    if let Some(v) = cpuset_mems {
        set("cpu", "mems", v.clone().into());
    }
    pids_limit.map(|v| set("pids", "limit", v.into()));
}

fn print_table(states: &[State]) {
    emit(&format!("{:<12} {:<10} {:<10} {:<40} {:<32} OWNER", "ID", "PID", "STATUS", "BUNDLE", "CREATED"));
    for s in states {
        let status =
            serde_json::to_value(s.status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        emit(&format!(
            "{:<12} {:<10} {:<10} {:<40} {:<32} {}",
            s.id,
            s.pid,
            status,
            s.bundle.display(),
            s.created,
            s.owner
        ));
    }
}

fn log_error(cli: &Cli, message: &str) {
    let Some(path) = &cli.log else { return };
    let time = humantime::format_rfc3339_nanos(std::time::SystemTime::now());
    let line = match cli.log_format {
        LogFormat::Json => serde_json::json!({"level": "error", "msg": message, "time": time.to_string()}).to_string(),
        LogFormat::Text => format!("time=\"{time}\" level=error msg={message:?}"),
    };
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(f, "{line}");
    }
}

/// Entry point of the `bulkhead-oci` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match execute(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let message = e.to_string();
            log_error(&cli, &message);
            eprintln!("bulkhead-oci: error: {message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_number_and_name() {
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("KILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("sigterm").unwrap(), Signal::SIGTERM);
        assert!(parse_signal("SIGNOPE").unwrap_err().to_string().contains("SIGNOPE"));
    }

    #[test]
    fn features_name_what_is_built() {
        let f = features();
        assert_eq!(f["ociVersionMax"], "1.2.0");
        assert!(f["linux"]["capabilities"].as_array().unwrap().iter().any(|c| c == "CAP_SYS_ADMIN"));
        assert_eq!(f["linux"]["seccomp"]["enabled"], true);
        assert!(f["hooks"].as_array().unwrap().len() == 6);
    }

    #[test]
    fn the_default_spec_parses_and_checks() {
        let spec = crate::spec::parse(default_spec().to_string().as_bytes()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        crate::spec::check(&spec, dir.path()).unwrap();
    }
}
