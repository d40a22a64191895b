//! The monitor's life: detach from the daemon, take the pod's namespaces,
//! then one poll loop over the control socket, a signalfd (SIGCHLD, SIGTERM)
//! and the containers' output pipes. Everything runs on the one thread.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bulkhead_proto::monitor::{CONTAINERS, ContainerRecord, ContainerState, Request, Response};
use bulkhead_runtime::container::{CreateOptions, Runtime};
use bulkhead_store::Collection;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, setsid};

use crate::log::{Log, Stream};

/// How the monitor of one pod is set up (its command-line flags).
#[derive(Debug, Clone)]
pub struct Options {
    pub pod_id: String,
    /// The pod's state directory: socket, namespace pins, records, own log.
    pub dir: PathBuf,
    /// The runtime core's state root, shared by the node's monitors.
    pub runtime_root: PathBuf,
    /// The control socket to listen on.
    pub socket: PathBuf,
    /// A UTS namespace of the pod's own, with this hostname.
    pub hostname: Option<String>,
    /// An IPC namespace of the pod's own.
    pub new_ipc: bool,
    /// A pid namespace shared by the pod's containers, held by a child of
    /// the monitor that is its pid 1 (the pause container's other job).
    pub new_pid: bool,
    /// The cgroup the monitor moves into (the pod's own, as the pause
    /// container's), so it is not in the daemon's.
    pub cgroup: Option<PathBuf>,
}

/// The pod's namespace pins, under `<dir>/ns/`.
const NS_DIR: &str = "ns";

/// How long Shutdown waits for killed containers to be reaped.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

struct Container {
    record: ContainerRecord,
    log: Option<Log>,
    /// The read ends of stdout and stderr, until they reach end of file.
    pipes: [Option<File>; 2],
    /// The write end of the container's stdin, held open so that reading
    /// it waits instead of ending (an attach will write to it).
    _stdin: Option<File>,
}

struct Monitor {
    options: Options,
    /// pid 1 of the pod's shared pid namespace, if it has one.
    pid_holder: Option<i32>,
    runtime: Runtime,
    records: Collection<ContainerRecord>,
    containers: BTreeMap<String, Container>,
}

/// Runs the monitor: returns in the daemon's child once the monitor is
/// detached (its readiness line is on stdout by then, or its error on
/// stderr), and never returns in the monitor itself.
pub fn run(options: Options) -> Result<(), String> {
    // SAFETY: called from main before any thread exists; the child goes on single-threaded.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Parent { .. } => Ok(()),
        ForkResult::Child => {
            let code = match serve(options) {
                Ok(()) => 0,
                Err(message) => {
                    eprintln!("bulkhead-monitor: {message}");
                    1
                }
            };
            std::process::exit(code)
        }
    }
}

fn pin_namespace(kind: &str, pin: &Path) -> Result<(), String> {
    File::create(pin).map_err(|e| format!("create {}: {e}", pin.display()))?;
    mount(Some(&PathBuf::from(format!("/proc/self/ns/{kind}"))), pin, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| format!("pin the {kind} namespace at {}: {e}", pin.display()))
}

fn serve(options: Options) -> Result<(), String> {
    setsid().map_err(|e| format!("setsid: {e}"))?;
    if let Some(path) = &options.cgroup {
        let cgroup = bulkhead_runtime::cgroups::Cgroup::for_host(path).map_err(|e| e.to_string())?;
        cgroup.create().and_then(|()| cgroup.join(0)).map_err(|e| format!("join cgroup {}: {e}", path.display()))?;
    }
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("become child subreaper: {e}"))?;
    let ns_dir = options.dir.join(NS_DIR);
    std::fs::create_dir_all(&ns_dir).map_err(|e| format!("create {}: {e}", ns_dir.display()))?;
    let mut flags = CloneFlags::empty();
    if options.new_ipc {
        flags |= CloneFlags::CLONE_NEWIPC;
    }
    if options.hostname.is_some() {
        flags |= CloneFlags::CLONE_NEWUTS;
    }
    unshare(flags).map_err(|e| format!("unshare the pod's namespaces: {e}"))?;
    if let Some(hostname) = &options.hostname {
        nix::unistd::sethostname(hostname).map_err(|e| format!("set hostname {hostname:?}: {e}"))?;
        pin_namespace("uts", &ns_dir.join("uts"))?;
    }
    if options.new_ipc {
        pin_namespace("ipc", &ns_dir.join("ipc"))?;
    }
    let pid_holder = if options.new_pid { Some(hold_pid_namespace(&ns_dir.join("pid"))?) } else { None };
    let records = Collection::open(options.dir.join(CONTAINERS)).map_err(|e| e.to_string())?;
    let socket = options.socket.clone();
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("create {}: {e}", parent.display()))?;
    }
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).map_err(|e| format!("listen on {}: {e}", socket.display()))?;
    let mut mask = SigSet::empty();
    for signal in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        mask.add(signal);
    }
    mask.thread_block().map_err(|e| format!("block signals: {e}"))?;
    // A daemon that hangs up early must not kill us with SIGPIPE.
    // SAFETY: installs SIG_IGN, no handler code.
    unsafe { nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigIgn) }
        .map_err(|e| format!("ignore SIGPIPE: {e}"))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("signalfd: {e}"))?;
    let mut monitor = Monitor {
        runtime: Runtime::new(&options.runtime_root),
        pid_holder,
        options,
        records,
        containers: BTreeMap::new(),
    };
    // Ready: tell the daemon (stdout), then leave its pipes.
    println!("ready {}", std::process::id());
    detach_stdio(&monitor.options.dir)?;
    monitor.event_loop(&listener, &signals);
    monitor.exit(&socket)
}

/// Makes the pod's pid namespace: a child unshares it and forks its pid 1,
/// which reaps whatever is orphaned inside until it is killed; the
/// namespace is pinned at `pin`. Returns pid 1's host pid.
fn hold_pid_namespace(pin: &Path) -> Result<i32, String> {
    let (pid_r, pid_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the monitor is single-threaded; both children stay so.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(pid_r);
            let mut out = File::from(pid_w);
            if let Err(e) = unshare(CloneFlags::CLONE_NEWPID) {
                let _ = write!(out, "error: unshare the pid namespace: {e}");
                std::process::exit(1);
            }
            // SAFETY: as above.
            match unsafe { fork() } {
                Ok(ForkResult::Child) => {
                    drop(out);
                    pid_one()
                }
                Ok(ForkResult::Parent { child }) => {
                    let _ = write!(out, "{child}");
                    std::process::exit(0)
                }
                Err(e) => {
                    let _ = write!(out, "error: fork pid 1: {e}");
                    std::process::exit(1)
                }
            }
        }
        ForkResult::Parent { child } => {
            drop(pid_w);
            let mut text = String::new();
            let _ = File::from(pid_r).read_to_string(&mut text);
            let _ = waitpid(child, None);
            let pid: i32 = text.trim().parse().map_err(|_| format!("the pid namespace holder: {}", text.trim()))?;
            File::create(pin).map_err(|e| format!("create {}: {e}", pin.display()))?;
            let source = PathBuf::from(format!("/proc/{pid}/ns/pid"));
            mount(Some(&source), pin, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .map_err(|e| format!("pin the pid namespace at {}: {e}", pin.display()))?;
            Ok(pid)
        }
    }
}

/// pid 1 of a pod's pid namespace: no descriptors but /dev/null, reaps
/// orphans as SIGCHLD arrives, until SIGKILL.
fn pid_one() -> ! {
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        for target in 0..3 {
            // SAFETY: dup2(2) onto the standard descriptors of this process.
            unsafe { nix::libc::dup2(null.as_raw_fd(), target) };
        }
    }
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        let fds: Vec<i32> = entries.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect();
        for fd in fds.into_iter().filter(|fd| *fd > 2) {
            // SAFETY: closing inherited descriptors nothing here uses.
            unsafe { nix::libc::close(fd) };
        }
    }
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    let _ = mask.thread_block();
    loop {
        let _ = mask.wait();
        while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            if status == WaitStatus::StillAlive {
                break;
            }
        }
    }
}

/// stdin and stdout to /dev/null, stderr to `<dir>/monitor.log`.
fn detach_stdio(dir: &Path) -> Result<(), String> {
    let null = File::options().read(true).write(true).open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    let log_path = dir.join("monitor.log");
    let log = File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("open {}: {e}", log_path.display()))?;
    for (fd, target) in [(null.as_raw_fd(), 0), (null.as_raw_fd(), 1), (log.as_raw_fd(), 2)] {
        // SAFETY: dup2(2) on descriptors this process owns.
        Errno::result(unsafe { nix::libc::dup2(fd, target) }).map_err(|e| format!("redirect fd {target}: {e}"))?;
    }
    Ok(())
}

/// A created container: its runtime state, output pipes and stdin's write end.
type Created = (bulkhead_runtime::container::State, [Option<File>; 2], Option<File>);

fn nonblocking(fd: &OwnedFd) -> Result<(), Errno> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(drop)
}

impl Monitor {
    fn event_loop(&mut self, listener: &UnixListener, signals: &SignalFd) {
        loop {
            // The fds to watch: signals, the socket, then every open pipe.
            let pipe_keys: Vec<(String, usize)> = self
                .containers
                .iter()
                .flat_map(|(id, c)| (0..2).filter(|i| c.pipes[*i].is_some()).map(move |i| (id.clone(), i)))
                .collect();
            let (ready_signals, ready_socket, ready_pipes) = {
                let mut fds = vec![
                    PollFd::new(signals.as_fd(), PollFlags::POLLIN),
                    PollFd::new(listener.as_fd(), PollFlags::POLLIN),
                ];
                for (id, i) in &pipe_keys {
                    if let Some(pipe) = self.containers.get(id).and_then(|c| c.pipes[*i].as_ref()) {
                        fds.push(PollFd::new(pipe.as_fd(), PollFlags::POLLIN));
                    }
                }
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => {
                        eprintln!("bulkhead-monitor: poll: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
                let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
                let pipes: Vec<bool> = fds[2..].iter().map(ready).collect();
                (ready(&fds[0]), ready(&fds[1]), pipes)
            };
            for ((id, i), ready) in pipe_keys.iter().zip(ready_pipes) {
                if ready {
                    self.drain(id, *i);
                }
            }
            if ready_signals {
                let mut stop = false;
                while let Ok(Some(info)) = signals.read_signal() {
                    stop |= info.ssi_signo == Signal::SIGTERM as u32 || info.ssi_signo == Signal::SIGINT as u32;
                }
                self.reap();
                if stop {
                    self.shutdown();
                    return;
                }
            }
            if ready_socket
                && let Ok((conn, _)) = listener.accept()
                && self.serve_one(conn)
            {
                return;
            }
        }
    }

    /// Reads what is waiting on pipe `i` of container `id` into its log;
    /// at end of file closes it.
    fn drain(&mut self, id: &str, i: usize) {
        let Some(container) = self.containers.get_mut(id) else { return };
        let stream = if i == 0 { Stream::Stdout } else { Stream::Stderr };
        let mut buf = [0u8; 32 * 1024];
        loop {
            let Some(pipe) = container.pipes[i].as_mut() else { return };
            match pipe.read(&mut buf) {
                Ok(0) => {
                    if let Some(log) = container.log.as_mut() {
                        let _ = log.finish(stream, SystemTime::now());
                    }
                    container.pipes[i] = None;
                    return;
                }
                Ok(n) => {
                    if let Some(log) = container.log.as_mut()
                        && let Err(e) = log.feed(stream, &buf[..n], SystemTime::now())
                    {
                        eprintln!("bulkhead-monitor: container {id}: write log: {e}");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("bulkhead-monitor: container {id}: read output: {e}");
                    container.pipes[i] = None;
                    return;
                }
            }
        }
    }

    /// Reaps every exited child; a container's init gets its exit recorded.
    fn reap(&mut self) {
        loop {
            let (pid, exit_code, signal) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, code, None),
                Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, 128 + signal as i32, Some(signal as i32)),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    eprintln!("bulkhead-monitor: waitpid: {e}");
                    return;
                }
            };
            let id = self
                .containers
                .iter()
                .find(|(_, c)| c.record.pid == pid.as_raw() && c.record.state != ContainerState::Exited)
                .map(|(id, _)| id.clone());
            if let Some(id) = id {
                self.record_exit(&id, exit_code, signal);
            }
        }
    }

    fn record_exit(&mut self, id: &str, exit_code: i32, signal: Option<i32>) {
        let oom = self.runtime.stats(id).ok().and_then(|s| s.oom_kills).unwrap_or(0) > 0;
        // Output written just before the exit belongs before the exit record.
        for i in 0..2 {
            self.drain(id, i);
        }
        let Some(container) = self.containers.get_mut(id) else { return };
        let record = &mut container.record;
        record.state = ContainerState::Exited;
        record.finished_at = now_ns();
        record.exit_code = exit_code;
        record.signal = signal;
        record.oom_killed = oom;
        if let Err(e) = self.records.put(id, record) {
            eprintln!("bulkhead-monitor: container {id}: record its exit: {e}");
        }
    }

    /// Answers one connection; true when the monitor is to exit.
    fn serve_one(&mut self, conn: UnixStream) -> bool {
        let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
        let mut line = String::new();
        let mut reader = BufReader::new(&conn);
        let request = match reader.read_line(&mut line) {
            Ok(_) => serde_json::from_str::<Request>(&line).map_err(|e| format!("bad request {line:?}: {e}")),
            Err(e) => Err(format!("read request: {e}")),
        };
        let (response, exit) = match request {
            Ok(Request::Shutdown) => {
                self.shutdown();
                (Response::Ok, true)
            }
            Ok(request) => {
                (self.handle(request).map_or_else(|message| Response::Error { message }, |()| Response::Ok), false)
            }
            Err(message) => (Response::Error { message }, false),
        };
        let mut conn = conn;
        if let Ok(mut text) = serde_json::to_string(&response) {
            text.push('\n');
            let _ = conn.write_all(text.as_bytes());
        }
        exit
    }

    fn handle(&mut self, request: Request) -> Result<(), String> {
        match request {
            Request::Create { id, bundle, log_path, tty, stdin } => self.create(id, &bundle, log_path, tty, stdin),
            Request::Start { id } => {
                let container = self.containers.get_mut(&id).ok_or_else(|| format!("container {id} not found"))?;
                self.runtime.start(&id).map_err(|e| e.to_string())?;
                container.record.state = ContainerState::Running;
                container.record.started_at = now_ns();
                self.records.put(&id, &container.record).map_err(|e| e.to_string())
            }
            Request::Signal { id, signal, all } => {
                let container = self.containers.get(&id).ok_or_else(|| format!("container {id} not found"))?;
                if container.record.state == ContainerState::Exited {
                    return Ok(());
                }
                let signal = Signal::try_from(signal).map_err(|e| format!("signal {signal}: {e}"))?;
                self.runtime.kill(&id, signal, all).map_err(|e| e.to_string())
            }
            Request::Delete { id } => {
                if let Some(mut container) = self.containers.remove(&id) {
                    for i in 0..2 {
                        container.pipes[i] = None;
                    }
                }
                match self.runtime.delete(&id, true) {
                    Ok(()) | Err(bulkhead_runtime::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e.to_string()),
                }
                self.reap();
                self.records.delete(&id).map(drop).map_err(|e| e.to_string())
            }
            Request::ReopenLog { id } => {
                let container = self.containers.get_mut(&id).ok_or_else(|| format!("container {id} not found"))?;
                match container.log.as_mut() {
                    Some(log) => log.reopen().map_err(|e| format!("reopen the log of {id}: {e}")),
                    None => Err(format!("container {id} has no log file")),
                }
            }
            Request::Shutdown => Ok(()),
        }
    }

    fn create(
        &mut self,
        id: String,
        bundle: &Path,
        log_path: Option<PathBuf>,
        tty: bool,
        stdin: bool,
    ) -> Result<(), String> {
        if self.containers.contains_key(&id) {
            return Err(format!("container {id} already exists in pod {}", self.options.pod_id));
        }
        let log = log_path.as_deref().map(Log::open).transpose().map_err(|e| format!("open the log file: {e}"))?;
        let (state, pipes, stdin) =
            if tty { self.create_with_terminal(&id, bundle)? } else { self.create_with_pipes(&id, bundle, stdin)? };
        let record = ContainerRecord {
            id: id.clone(),
            state: ContainerState::Created,
            pid: state.pid,
            created_at: now_ns(),
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            signal: None,
            oom_killed: false,
            log_path,
        };
        if let Err(e) = self.records.put(&id, &record) {
            let _ = self.runtime.delete(&id, true);
            return Err(e.to_string());
        }
        self.containers.insert(id, Container { record, log, pipes, _stdin: stdin });
        Ok(())
    }

    /// Creates the container with stdout and stderr on pipes of ours.
    fn create_with_pipes(&mut self, id: &str, bundle: &Path, stdin: bool) -> Result<Created, String> {
        let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"));
        // stdin: a pipe whose write end we keep when asked for, else /dev/null.
        let (in_r, in_w): (OwnedFd, Option<OwnedFd>) = if stdin {
            let (r, w) = pipe()?;
            (r, Some(w))
        } else {
            (File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?.into(), None)
        };
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let options = CreateOptions {
            stdio: Some([in_r.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()]),
            ..CreateOptions::default()
        };
        let state = self.runtime.create(id, bundle, &options).map_err(|e| e.to_string())?;
        drop((out_w, err_w, in_r));
        for pipe in [&out_r, &err_r] {
            nonblocking(pipe).map_err(|e| format!("pipe: {e}"))?;
        }
        Ok((state, [Some(File::from(out_r)), Some(File::from(err_r))], in_w.map(File::from)))
    }

    /// Creates the container with a terminal: its master comes back over
    /// a console socket of ours (runc's protocol) and is read as stdout.
    fn create_with_terminal(&mut self, id: &str, bundle: &Path) -> Result<Created, String> {
        // Beside the control socket, whose directory keeps paths short enough for sun_path.
        let path = self.options.socket.with_extension(format!("{}.console", &id[..id.len().min(12)]));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(|e| format!("console socket {}: {e}", path.display()))?;
        let options = CreateOptions { console_socket: Some(path.clone()), ..CreateOptions::default() };
        // The runtime connects before init sends the master: the connection waits in the backlog.
        let created = self.runtime.create(id, bundle, &options).map_err(|e| e.to_string());
        let master = created.as_ref().ok().map(|_| bulkhead_runtime::receive_master(&listener));
        let _ = std::fs::remove_file(&path);
        let state = created?;
        let master = match master {
            Some(Ok(master)) => master,
            Some(Err(e)) => {
                let _ = self.runtime.delete(id, true);
                return Err(format!("receive the terminal of {id}: {e}"));
            }
            None => return Err(format!("container {id}: no terminal")),
        };
        nonblocking(&master).map_err(|e| format!("terminal: {e}"))?;
        Ok((state, [Some(File::from(master)), None], None))
    }

    /// Kills every container, waits (bounded) for their exits and records them.
    fn shutdown(&mut self) {
        let live: Vec<String> = self
            .containers
            .iter()
            .filter(|(_, c)| c.record.state != ContainerState::Exited)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &live {
            let _ = self.runtime.kill(id, Signal::SIGKILL, true);
        }
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        while Instant::now() < deadline && self.containers.values().any(|c| c.record.state != ContainerState::Exited) {
            self.reap();
            std::thread::sleep(Duration::from_millis(5));
        }
        let ids: Vec<String> = self.containers.keys().cloned().collect();
        for id in ids {
            for i in 0..2 {
                self.drain(&id, i);
            }
        }
        // Last, the pod's pid 1: whatever still lives in its namespace dies with it.
        if let Some(pid) = self.pid_holder.take() {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
        }
    }

    /// Leaves: the socket and namespace pins go; records stay for the daemon.
    fn exit(self, socket: &Path) -> Result<(), String> {
        let _ = std::fs::remove_file(socket);
        for kind in ["uts", "ipc", "pid"] {
            let pin = self.options.dir.join(NS_DIR).join(kind);
            let _ = umount2(&pin, MntFlags::MNT_DETACH);
            let _ = std::fs::remove_file(&pin);
        }
        Ok(())
    }
}
