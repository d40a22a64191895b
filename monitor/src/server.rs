//! The monitor's life: detach from the daemon, take the pod's namespaces,
//! then one poll loop over the control socket, a signalfd (SIGCHLD, SIGTERM),
//! the containers' output pipes and stdin, and the attach connections.
//! Everything runs on the one thread; no descriptor but the control
//! socket's accepted requests is ever waited on (those briefly, as before).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bulkhead_proto::monitor::{CONTAINERS, ContainerRecord, ContainerState, Request, Response, attach};
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

use crate::attach::{Attacher, MAX_QUEUE, Stdin};
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

/// How long a done container's attachers get to take what they are owed.
const FLUSH_WAIT: Duration = Duration::from_secs(10);

/// End of transmission: a terminal's reader sees end of file.
const EOT: u8 = 0x04;

fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

struct Container {
    record: ContainerRecord,
    log: Option<Log>,
    /// The read ends of stdout and stderr, until they reach end of file
    /// (for a terminal: its master, then nothing).
    pipes: [Option<File>; 2],
    /// Whether `pipes[0]` is a terminal's master.
    tty: bool,
    /// The write end of the container's stdin (a pipe, or the terminal's
    /// master again), held open so that reading it waits instead of ending;
    /// attachers write to it. Gone once closed for good (`stdin_once`) or
    /// the container is done.
    stdin: Option<Stdin>,
    stdin_once: bool,
    /// With `stdin_once`, the first session's stdin ended: the stdin
    /// closes once what it is owed is written.
    closing_stdin: bool,
    /// The attach sessions, by the number the monitor gave each.
    attachers: BTreeMap<u64, Attacher>,
}

impl Container {
    /// The container is done: exited, and its output read to the end.
    fn done(&self) -> bool {
        self.record.state == ContainerState::Exited && self.pipes.iter().all(Option::is_none)
    }

    /// An attach session's stdin ended: with `stdin_once`, the container's
    /// stdin closes for good, after what it is owed (a terminal gets EOT).
    fn end_stdin(&mut self) {
        if !self.stdin_once || self.closing_stdin {
            return;
        }
        if let Some(stdin) = self.stdin.as_mut() {
            self.closing_stdin = true;
            if self.tty {
                stdin.pending.push(EOT);
            }
        }
    }

    /// Drops attacher `key`; its hang-up ends its stdin.
    fn detach(&mut self, key: u64) {
        if self.attachers.remove(&key).is_some_and(|a| a.stdin) {
            self.end_stdin();
        }
    }
}

/// What one polled descriptor is.
enum Source {
    Pipe(String, usize),
    Stdin,
    Attacher(String, u64),
}

struct Monitor {
    options: Options,
    /// pid 1 of the pod's shared pid namespace, if it has one.
    pid_holder: Option<i32>,
    runtime: Runtime,
    records: Collection<ContainerRecord>,
    containers: BTreeMap<String, Container>,
    /// The number the next attacher gets.
    next_attacher: u64,
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
        cgroup
            .create()
            .and_then(|()| cgroup.join_self(false))
            .map_err(|e| format!("join cgroup {}: {e}", path.display()))?;
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
        next_attacher: 0,
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

/// Writes `response` as one line; false if the connection failed.
fn respond(mut conn: &UnixStream, response: &Response) -> bool {
    serde_json::to_string(response).is_ok_and(|mut text| {
        text.push('\n');
        conn.write_all(text.as_bytes()).is_ok()
    })
}

fn nonblocking(fd: &OwnedFd) -> Result<(), Errno> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(drop)
}

impl Monitor {
    fn event_loop(&mut self, listener: &UnixListener, signals: &SignalFd) {
        loop {
            // The fds to watch: signals, the socket, then each container's
            // open pipes, its stdin while it is owed bytes, and its attachers:
            // for input unless the stdin they write to is still owed bytes
            // (they wait in their sockets meanwhile), for output while they
            // are owed some, and always for a hang-up (which poll reports
            // unasked: what a gone peer left unread is bounded, so it is read).
            let mut sources = Vec::new();
            let (ready_signals, ready_socket, ready) = {
                let mut fds = vec![
                    PollFd::new(signals.as_fd(), PollFlags::POLLIN),
                    PollFd::new(listener.as_fd(), PollFlags::POLLIN),
                ];
                for (id, c) in &self.containers {
                    for (i, pipe) in c.pipes.iter().enumerate() {
                        if let Some(pipe) = pipe {
                            fds.push(PollFd::new(pipe.as_fd(), PollFlags::POLLIN));
                            sources.push(Source::Pipe(id.clone(), i));
                        }
                    }
                    let stdin_owed = c.stdin.as_ref().filter(|s| !s.pending.is_empty());
                    if let Some(stdin) = stdin_owed {
                        fds.push(PollFd::new(stdin.file().as_fd(), PollFlags::POLLOUT));
                        sources.push(Source::Stdin);
                    }
                    for (key, a) in &c.attachers {
                        let reading = a.closing.is_none() && !(a.stdin && stdin_owed.is_some());
                        let mut events = PollFlags::empty();
                        if reading {
                            events |= PollFlags::POLLIN;
                        }
                        if a.queued() > 0 {
                            events |= PollFlags::POLLOUT;
                        }
                        fds.push(PollFd::new(a.conn().as_fd(), events));
                        sources.push(Source::Attacher(id.clone(), *key));
                    }
                }
                match poll(&mut fds, self.poll_timeout()) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => {
                        eprintln!("bulkhead-monitor: poll: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
                let revents = |fd: &PollFd<'_>| fd.revents().unwrap_or(PollFlags::empty());
                let ready: Vec<PollFlags> = fds[2..].iter().map(revents).collect();
                (!revents(&fds[0]).is_empty(), !revents(&fds[1]).is_empty(), ready)
            };
            for (source, revents) in sources.iter().zip(ready) {
                match source {
                    _ if revents.is_empty() => {}
                    Source::Pipe(id, i) => self.drain(id, *i),
                    Source::Attacher(id, key)
                        if revents.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) =>
                    {
                        self.read_attacher(id, *key)
                    }
                    // Writes happen in settle.
                    Source::Stdin | Source::Attacher(..) => {}
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
            self.settle();
        }
    }

    /// Until the earliest deadline of a done container's attacher, or none.
    fn poll_timeout(&self) -> PollTimeout {
        let deadline = self.containers.values().flat_map(|c| c.attachers.values()).filter_map(|a| a.closing).min();
        match deadline {
            None => PollTimeout::NONE,
            Some(deadline) => {
                let wait = deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(1);
                PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX)
            }
        }
    }

    /// Does the writes the loop owes: to each container's stdin (closing it
    /// once written if it is to close), to each attacher; a done
    /// container's attachers get what they are owed and are closed.
    fn settle(&mut self) {
        let now = Instant::now();
        for (id, c) in &mut self.containers {
            if c.done() {
                c.stdin = None;
                for a in c.attachers.values_mut() {
                    a.closing.get_or_insert(now + FLUSH_WAIT);
                }
            }
            let mut gone = Vec::new();
            for (key, a) in &mut c.attachers {
                if a.queued() > 0 {
                    a.flush();
                }
                if let Some(deadline) = a.closing
                    && (a.queued() == 0 || now >= deadline)
                {
                    if a.queued() > 0 {
                        eprintln!("bulkhead-monitor: container {id}: an attacher took not all of its output in time");
                    }
                    gone.push(*key);
                }
            }
            for key in gone {
                c.detach(key);
            }
            if let Some(stdin) = c.stdin.as_mut() {
                if let Err(e) = stdin.flush() {
                    eprintln!("bulkhead-monitor: container {id}: write stdin: {e}");
                }
                if c.closing_stdin && stdin.pending.is_empty() {
                    c.stdin = None;
                }
            }
        }
    }

    /// Reads what attacher `key` of container `id` sent and acts on it.
    fn read_attacher(&mut self, id: &str, key: u64) {
        let open = self.containers.get_mut(id).and_then(|c| c.attachers.get_mut(&key)).is_some_and(Attacher::read);
        self.take_frames(id, key, open);
    }

    /// Acts on the whole frames attacher `key` of container `id` sent;
    /// drops it if it broke the protocol or (`open` false) hung up.
    fn take_frames(&mut self, id: &str, key: u64, open: bool) {
        let Some(c) = self.containers.get_mut(id) else { return };
        let mut keep = open;
        loop {
            let Some(a) = c.attachers.get_mut(&key) else { return };
            let (kind, payload) = match a.decoder.next_frame() {
                Some(Ok(frame)) => frame,
                None => break,
                Some(Err(e)) => {
                    eprintln!("bulkhead-monitor: container {id}: attacher dropped: {e}");
                    keep = false;
                    break;
                }
            };
            match kind {
                attach::STDIN if a.stdin && !c.closing_stdin => {
                    if let Some(stdin) = c.stdin.as_mut() {
                        stdin.pending.extend_from_slice(&payload);
                    }
                }
                attach::RESIZE if c.tty => match (attach::parse_resize(&payload), c.pipes[0].as_ref()) {
                    (Some((width, height)), Some(master)) => {
                        if let Err(e) = bulkhead_runtime::terminal::set_size(master, width, height) {
                            eprintln!("bulkhead-monitor: container {id}: resize the terminal: {e}");
                        }
                    }
                    (None, _) => eprintln!("bulkhead-monitor: container {id}: bad resize {payload:?}"),
                    (_, None) => {}
                },
                attach::STDIN_CLOSE if a.stdin => {
                    a.stdin = false;
                    c.end_stdin();
                }
                // Stdin it may not write, a resize without a terminal, and
                // kinds that are not the daemon's to send are ignored.
                _ => {}
            }
        }
        if !keep {
            c.detach(key);
        }
    }

    /// Reads what is waiting on pipe `i` of container `id` into its log;
    /// at end of file closes it.
    fn drain(&mut self, id: &str, i: usize) {
        let Some(container) = self.containers.get_mut(id) else { return };
        let (stream, kind) = if i == 0 { (Stream::Stdout, attach::STDOUT) } else { (Stream::Stderr, attach::STDERR) };
        let mut buf = [0u8; 32 * 1024];
        loop {
            let Some(pipe) = container.pipes[i].as_mut() else { return };
            let read = match pipe.read(&mut buf) {
                // A terminal's master reads EIO once no process holds its
                // other end: that is its end of file.
                Err(e) if container.tty && e.raw_os_error() == Some(Errno::EIO as i32) => Ok(0),
                read => read,
            };
            match read {
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
                    // Then to each attacher: one too far behind is dropped, never waited for.
                    let mut slow = Vec::new();
                    for (key, a) in &mut container.attachers {
                        if a.closing.is_none() && !a.enqueue(kind, &buf[..n]) {
                            slow.push(*key);
                        }
                    }
                    for key in slow {
                        eprintln!(
                            "bulkhead-monitor: container {id}: an attacher fell more than {MAX_QUEUE} bytes behind: disconnected"
                        );
                        container.detach(key);
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
            Ok(Request::Attach { id, stdin }) => {
                // Frames the daemon sent right after its request are read already.
                let early = reader.buffer().to_vec();
                self.attach(conn, &id, stdin, &early);
                return false;
            }
            Ok(request) => {
                (self.handle(request).map_or_else(|message| Response::Error { message }, |()| Response::Ok), false)
            }
            Err(message) => (Response::Error { message }, false),
        };
        respond(&conn, &response);
        exit
    }

    /// Answers an attach request; on success the connection stays, as an
    /// attacher of the container.
    fn attach(&mut self, conn: UnixStream, id: &str, stdin: bool, early: &[u8]) {
        let container = match self.containers.get(id) {
            None => Err(format!("container {id} not found")),
            Some(c) => match c.record.state {
                ContainerState::Running => Ok(()),
                ContainerState::Created => Err(format!("container {id} is not running: it has not started")),
                ContainerState::Exited => Err(format!("container {id} is not running: it has exited")),
            },
        };
        if let Err(message) = container {
            respond(&conn, &Response::Error { message });
            if conn.set_nonblocking(true).is_ok() {
                crate::attach::discard_input(&conn);
            }
            return;
        }
        if !respond(&conn, &Response::Ok) {
            return;
        }
        let Some(c) = self.containers.get_mut(id) else { return };
        let stdin = stdin && c.stdin.is_some() && !c.closing_stdin;
        let attacher = match Attacher::new(conn, stdin, early) {
            Ok(attacher) => attacher,
            Err(e) => {
                eprintln!("bulkhead-monitor: container {id}: attach: {e}");
                return;
            }
        };
        let key = self.next_attacher;
        self.next_attacher += 1;
        c.attachers.insert(key, attacher);
        self.take_frames(id, key, true);
    }

    fn handle(&mut self, request: Request) -> Result<(), String> {
        match request {
            Request::Create { id, bundle, log_path, tty, stdin, stdin_once } => {
                self.create(id, &bundle, log_path, tty, stdin, stdin_once)
            }
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
            // Served by serve_one: these keep or end the connection.
            Request::Attach { .. } | Request::Shutdown => Ok(()),
        }
    }

    fn create(
        &mut self,
        id: String,
        bundle: &Path,
        log_path: Option<PathBuf>,
        tty: bool,
        stdin: bool,
        stdin_once: bool,
    ) -> Result<(), String> {
        if self.containers.contains_key(&id) {
            return Err(format!("container {id} already exists in pod {}", self.options.pod_id));
        }
        let log = log_path.as_deref().map(Log::open).transpose().map_err(|e| format!("open the log file: {e}"))?;
        let (state, pipes, stdin) = if tty {
            self.create_with_terminal(&id, bundle, stdin)?
        } else {
            self.create_with_pipes(&id, bundle, stdin)?
        };
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
        let container = Container {
            record,
            log,
            pipes,
            tty,
            stdin: stdin.map(Stdin::new),
            stdin_once,
            closing_stdin: false,
            attachers: BTreeMap::new(),
        };
        self.containers.insert(id, container);
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
        for pipe in [Some(&out_r), Some(&err_r), in_w.as_ref()].into_iter().flatten() {
            nonblocking(pipe).map_err(|e| format!("pipe: {e}"))?;
        }
        Ok((state, [Some(File::from(out_r)), Some(File::from(err_r))], in_w.map(File::from)))
    }

    /// Creates the container with a terminal: its master comes back over
    /// a console socket of ours (runc's protocol) and is read as stdout;
    /// with `stdin`, a second descriptor of it is stdin's write end.
    fn create_with_terminal(&mut self, id: &str, bundle: &Path, stdin: bool) -> Result<Created, String> {
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
        let master = File::from(master);
        let writer = if stdin {
            match master.try_clone() {
                Ok(writer) => Some(writer),
                Err(e) => {
                    let _ = self.runtime.delete(id, true);
                    return Err(format!("container {id}: duplicate the terminal: {e}"));
                }
            }
        } else {
            None
        };
        Ok((state, [Some(master), None], writer))
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
        // Attachers get what their sockets take now; they see end of file as the monitor exits.
        for a in self.containers.values_mut().flat_map(|c| c.attachers.values_mut()) {
            a.flush();
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
