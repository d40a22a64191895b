//! The monitor for real (root only): started as the daemon starts it, it
//! detaches, holds the pod's UTS and IPC namespaces, runs busybox
//! containers that join them, writes their output as CRI log lines,
//! records exits (code, signal, times) on disk, and on Shutdown kills what
//! runs, records it and leaves no process, socket or namespace pin. Attach
//! sessions stream containers' stdio (pipes and terminals) over the
//! monitor's socket.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bulkhead_proto::monitor::attach::{self, Decoder};
use bulkhead_proto::monitor::{ContainerRecord, ContainerState, Request, Response};
use serde_json::json;

struct Pod {
    dir: tempfile::TempDir,
    pid: i32,
}

impl Pod {
    fn pod_dir(&self) -> PathBuf {
        self.dir.path().join("pod")
    }

    fn start(hostname: &str) -> Pod {
        assert!(nix::unistd::geteuid().is_root(), "monitor tests must run as root");
        let dir = tempfile::Builder::new().prefix("bulkhead-monitor-test-").tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_bulkhead-monitor"))
            .args(["--pod-id", "pod1", "--dir"])
            .arg(dir.path().join("pod"))
            .arg("--runtime-root")
            .arg(dir.path().join("runtime"))
            .arg("--socket")
            .arg(dir.path().join("pod/monitor.sock"))
            .args(["--hostname", hostname, "--new-ipc"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(child.wait().unwrap().success(), "the launching process exits at once");
        let pid: i32 = line.trim().strip_prefix("ready ").unwrap_or_else(|| panic!("{line:?}")).parse().unwrap();
        Pod { dir, pid }
    }

    fn ask(&self, request: &Request) -> Response {
        let mut conn = UnixStream::connect(self.pod_dir().join("monitor.sock")).unwrap();
        conn.write_all(format!("{}\n", serde_json::to_string(request).unwrap()).as_bytes()).unwrap();
        let mut line = String::new();
        BufReader::new(conn).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }

    /// A busybox bundle running `script`, joining the pod's UTS and IPC namespaces.
    fn bundle(&self, id: &str, script: &str) -> PathBuf {
        self.bundle_with(id, script, false)
    }

    /// As [`Pod::bundle`], with a terminal if `tty`.
    fn bundle_with(&self, id: &str, script: &str, tty: bool) -> PathBuf {
        let bundle = self.dir.path().join("bundles").join(id);
        let rootfs = bundle.join("rootfs");
        for d in ["bin", "proc", "sys", "dev", "etc", "tmp"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for applet in ["sh", "echo", "hostname", "sleep", "cat", "stty", "head", "tr"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let mut config = bulkhead_runtime::oci_cli::default_spec();
        config["process"]["args"] = json!(["sh", "-c", script]);
        config["process"]["terminal"] = json!(tty);
        let ns = self.pod_dir().join("ns");
        let namespaces = config["linux"]["namespaces"].as_array_mut().unwrap();
        namespaces.retain(|n| n["type"] != "uts" && n["type"] != "ipc");
        namespaces.push(json!({"type": "uts", "path": ns.join("uts")}));
        namespaces.push(json!({"type": "ipc", "path": ns.join("ipc")}));
        config["linux"]["cgroupsPath"] =
            json!(format!("/{}-{id}", self.dir.path().file_name().unwrap().to_string_lossy()));
        config.as_object_mut().unwrap().remove("hostname");
        std::fs::write(bundle.join("config.json"), config.to_string()).unwrap();
        bundle
    }

    fn record(&self, id: &str) -> Option<ContainerRecord> {
        let path = self.pod_dir().join("containers").join(format!("{id}.json"));
        std::fs::read(path).ok().map(|b| serde_json::from_slice(&b).unwrap())
    }

    fn wait_exit(&self, id: &str) -> ContainerRecord {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(r) = self.record(id).filter(|r| r.state == ContainerState::Exited) {
                return r;
            }
            assert!(Instant::now() < deadline, "{id} did not exit: {:?}", self.record(id));
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Creates and starts container `id` running `script` (log at `log`, if any).
    fn run(&self, id: &str, script: &str, tty: bool, stdin: bool, stdin_once: bool, log: Option<&Path>) {
        let bundle = self.bundle_with(id, script, tty);
        let log_path = log.map(Path::to_path_buf);
        let create = Request::Create { id: id.into(), bundle, log_path, tty, stdin, stdin_once };
        assert_eq!(self.ask(&create), Response::Ok);
        assert_eq!(self.ask(&Request::Start { id: id.into() }), Response::Ok);
    }

    /// Attaches to `id`, sending `early` right after the request (before
    /// the answer is read); the monitor's error message if it refuses.
    fn attach_with(&self, id: &str, stdin: bool, early: &[u8]) -> Result<Session, String> {
        let mut conn = UnixStream::connect(self.pod_dir().join("monitor.sock")).unwrap();
        let mut request = serde_json::to_vec(&Request::Attach { id: id.into(), stdin }).unwrap();
        request.push(b'\n');
        request.extend_from_slice(early);
        conn.write_all(&request).unwrap();
        // The answer line, byte by byte: frames may follow it.
        conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut line = Vec::new();
        let mut byte = [0u8];
        while line.last() != Some(&b'\n') {
            assert_eq!(conn.read(&mut byte).unwrap(), 1, "answer so far: {line:?}");
            line.push(byte[0]);
        }
        match serde_json::from_slice(&line).unwrap() {
            Response::Ok => Ok(Session { conn, decoder: Decoder::new(), out: Vec::new(), err: Vec::new(), eof: false }),
            Response::Error { message } => Err(message),
        }
    }

    fn attach(&self, id: &str, stdin: bool) -> Session {
        self.attach_with(id, stdin, b"").unwrap()
    }

    fn state(&self, id: &str) -> ContainerState {
        self.record(id).unwrap().state
    }

    fn alive(&self) -> bool {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), None).is_ok()
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if self.alive() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), nix::sys::signal::Signal::SIGKILL);
        }
        let runtime = bulkhead_runtime::container::Runtime::new(self.dir.path().join("runtime"));
        for state in runtime.list().unwrap_or_default() {
            let _ = runtime.delete(&state.id, true);
        }
        for m in bulkhead_runtime::mountinfo::mounted_under(self.dir.path()) {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// An attach session, after the monitor's Ok.
struct Session {
    conn: UnixStream,
    decoder: Decoder,
    /// What came as STDOUT and as STDERR frames.
    out: Vec<u8>,
    err: Vec<u8>,
    eof: bool,
}

const WAIT: Duration = Duration::from_secs(10);

impl Session {
    fn send(&mut self, kind: u8, payload: &[u8]) {
        self.conn.write_all(&attach::encode(kind, payload)).unwrap();
    }

    /// Reads what comes by `deadline`; at end of file sets `eof`.
    fn read(&mut self, deadline: Instant) {
        let wait = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        self.conn.set_read_timeout(Some(wait)).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        match self.conn.read(&mut buf) {
            Ok(0) => self.eof = true,
            Ok(n) => {
                self.decoder.feed(&buf[..n]);
                while let Some(frame) = self.decoder.next_frame() {
                    match frame.unwrap() {
                        (attach::STDOUT, payload) => self.out.extend_from_slice(&payload),
                        (attach::STDERR, payload) => self.err.extend_from_slice(&payload),
                        (kind, _) => panic!("the monitor sent a frame of kind {kind}"),
                    }
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("read the attach session: {e}"),
        }
    }

    fn text(&self, kind: u8) -> String {
        String::from_utf8_lossy(if kind == attach::STDOUT { &self.out } else { &self.err }).into_owned()
    }

    /// Reads until the `kind` stream (STDOUT or STDERR) has shown `want`.
    fn wait_for(&mut self, kind: u8, want: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.text(kind).contains(want) {
            assert!(!self.eof && Instant::now() < deadline, "no {want:?} in {:?} (eof {})", self.text(kind), self.eof);
            self.read(deadline);
        }
    }

    /// Reads until the monitor closes the session.
    fn wait_eof(&mut self) {
        let deadline = Instant::now() + WAIT;
        while !self.eof {
            assert!(Instant::now() < deadline, "the session did not end; got {:?}", self.text(attach::STDOUT));
            self.read(deadline);
        }
    }
}

fn log_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split_once(' ').unwrap().1.to_owned()) // without the time
        .collect()
}

#[test]
fn containers_run_in_the_pod_with_logs_and_exits_recorded_then_shutdown_leaves_nothing() {
    let pod = Pod::start("pod-host");
    let log = pod.dir.path().join("logs/c1/0.log");
    let bundle = pod.bundle("c1", "hostname; echo to-err >&2; printf 'no newline'; exit 3");
    let created = pod.ask(&Request::Create {
        id: "c1".into(),
        bundle,
        log_path: Some(log.clone()),
        tty: false,
        stdin: false,
        stdin_once: false,
    });
    assert_eq!(created, Response::Ok);
    assert_eq!(pod.record("c1").unwrap().state, ContainerState::Created);
    assert_eq!(pod.ask(&Request::Start { id: "c1".into() }), Response::Ok);
    let exited = pod.wait_exit("c1");
    assert_eq!((exited.exit_code, exited.signal, exited.oom_killed), (3, None, false));
    assert!(exited.created_at <= exited.started_at && exited.started_at <= exited.finished_at, "{exited:?}");
    let mut lines = log_lines(&log);
    lines.sort(); // stdout and stderr interleave freely
    assert_eq!(lines, ["stderr F to-err", "stdout F pod-host", "stdout P no newline"]);

    // A long runner stopped by a signal; another left for Shutdown.
    let bundle = pod.bundle("c2", "trap 'exit 143' TERM; echo up; while true; do sleep 0.1; done");
    assert_eq!(
        pod.ask(&Request::Create {
            id: "c2".into(),
            bundle,
            log_path: None,
            tty: false,
            stdin: false,
            stdin_once: false
        }),
        Response::Ok
    );
    assert_eq!(pod.ask(&Request::Start { id: "c2".into() }), Response::Ok);
    let bundle = pod.bundle("c3", "exec sleep 1000");
    assert_eq!(
        pod.ask(&Request::Create {
            id: "c3".into(),
            bundle,
            log_path: None,
            tty: false,
            stdin: false,
            stdin_once: false
        }),
        Response::Ok
    );
    assert_eq!(pod.ask(&Request::Start { id: "c3".into() }), Response::Ok);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(pod.ask(&Request::Signal { id: "c2".into(), signal: 15, all: false }), Response::Ok);
    assert_eq!(pod.wait_exit("c2").exit_code, 143);
    match pod.ask(&Request::Start { id: "nope".into() }) {
        Response::Error { message } => assert!(message.contains("nope"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(pod.ask(&Request::Delete { id: "c2".into() }), Response::Ok);
    assert!(pod.record("c2").is_none());

    assert_eq!(pod.ask(&Request::Shutdown), Response::Ok);
    let c3 = pod.record("c3").unwrap();
    assert_eq!((c3.state, c3.exit_code, c3.signal), (ContainerState::Exited, 137, Some(9)));
    let deadline = Instant::now() + Duration::from_secs(5);
    while pod.alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!pod.alive(), "the monitor exited");
    assert!(!pod.pod_dir().join("monitor.sock").exists());
    assert!(bulkhead_runtime::mountinfo::mounted_under(&pod.pod_dir()).is_empty(), "namespace pins unmounted");
    for id in ["c1", "c3"] {
        bulkhead_runtime::container::Runtime::new(pod.dir.path().join("runtime")).delete(id, true).unwrap();
    }
}

/// Waits until the log at `path` has `line` (without its time).
fn wait_log(path: &Path, line: &str) {
    let deadline = Instant::now() + WAIT;
    while !std::fs::read_to_string(path).is_ok_and(|_| log_lines(path).iter().any(|l| l == line)) {
        assert!(Instant::now() < deadline, "no {line:?} in the log");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn attachers_write_stdin_and_each_see_the_output_while_the_log_gets_it_too() {
    let pod = Pod::start("pod-attach");
    let log = pod.dir.path().join("logs/echo/0.log");
    let script = r#"while read l; do echo "got $l"; echo "err $l" >&2; done"#;
    let bundle = pod.bundle("echo", script);
    let create = Request::Create {
        id: "echo".into(),
        bundle,
        log_path: Some(log.clone()),
        tty: false,
        stdin: true,
        stdin_once: false,
    };
    assert_eq!(pod.ask(&create), Response::Ok);
    let refused = pod.attach_with("echo", true, b"").err().unwrap();
    assert!(refused.contains("echo") && refused.contains("not running"), "{refused}");
    let refused = pod.attach_with("nope", false, b"").err().unwrap();
    assert!(refused.contains("nope"), "{refused}");
    assert_eq!(pod.ask(&Request::Start { id: "echo".into() }), Response::Ok);

    // Two at once; only the one that asked for stdin writes it.
    let mut writer = pod.attach("echo", true);
    let mut watcher = pod.attach("echo", false);
    writer.send(attach::STDIN, b"one\n");
    for session in [&mut writer, &mut watcher] {
        session.wait_for(attach::STDOUT, "got one\n");
        session.wait_for(attach::STDERR, "err one\n");
    }
    watcher.send(attach::STDIN, b"ignored\n");
    writer.send(attach::STDIN, b"tw");
    writer.send(attach::STDIN, b"o\n");
    watcher.wait_for(attach::STDOUT, "got two\n");
    writer.wait_for(attach::STDOUT, "got two\n");
    assert_eq!(watcher.text(attach::STDOUT), "got one\ngot two\n");

    // Detaching leaves the container running; the next writer writes (no
    // stdin_once), sees only what comes after it attached.
    drop(writer);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(pod.state("echo"), ContainerState::Running);
    let mut second = pod.attach("echo", true);
    second.send(attach::STDIN, b"three\n");
    second.wait_for(attach::STDOUT, "got three\n");
    watcher.wait_for(attach::STDOUT, "got three\n");
    assert_eq!(second.text(attach::STDOUT), "got three\n");
    // Its stdin's end does not close the container's without stdin_once.
    second.send(attach::STDIN_CLOSE, b"");
    second.send(attach::STDIN, b"dropped\n");
    let mut third = pod.attach("echo", true);
    third.send(attach::STDIN, b"four\n");
    watcher.wait_for(attach::STDOUT, "got four\n");
    assert_eq!(watcher.text(attach::STDOUT), "got one\ngot two\ngot three\ngot four\n");

    // A frame longer than the protocol allows drops that attacher only.
    let mut rude = pod.attach("echo", true);
    rude.conn.write_all(&[attach::STDIN, 0x00, 0x10, 0x00, 0x01]).unwrap();
    rude.wait_eof();
    third.send(attach::STDIN, b"five\n");
    watcher.wait_for(attach::STDOUT, "got five\n");

    // The log got it all, as before.
    wait_log(&log, "stdout F got five");
    wait_log(&log, "stderr F err five");
    let lines = log_lines(&log);
    for word in ["one", "two", "three", "four", "five"] {
        assert!(lines.contains(&format!("stdout F got {word}")), "{lines:?}");
        assert!(lines.contains(&format!("stderr F err {word}")), "{lines:?}");
    }
    assert!(!lines.iter().any(|l| l.contains("ignored") || l.contains("dropped")), "{lines:?}");

    // The container's end ends every session.
    assert_eq!(pod.ask(&Request::Signal { id: "echo".into(), signal: 9, all: true }), Response::Ok);
    assert_eq!(pod.wait_exit("echo").signal, Some(9));
    for session in [&mut watcher, &mut second, &mut third] {
        session.wait_eof();
    }
    let refused = pod.attach_with("echo", false, b"").err().unwrap();
    assert!(refused.contains("echo") && refused.contains("exited"), "{refused}");
    assert_eq!(pod.ask(&Request::Shutdown), Response::Ok);
}

#[test]
fn with_stdin_once_the_first_session_ending_its_stdin_closes_the_container_s() {
    let pod = Pod::start("pod-once");
    let log = pod.dir.path().join("logs/cat/0.log");
    pod.run("cat", "cat; echo cat done", false, true, true, Some(&log));
    // Stdin sent with the request, before the answer, is not lost.
    let mut writer = pod.attach_with("cat", true, &attach::encode(attach::STDIN, b"hello\n")).unwrap();
    let mut watcher = pod.attach("cat", false);
    writer.wait_for(attach::STDOUT, "hello\n");
    writer.send(attach::STDIN, b"world\n");
    watcher.wait_for(attach::STDOUT, "world\n");
    // The watcher leaving (it had no stdin) changes nothing.
    drop(watcher);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(pod.state("cat"), ContainerState::Running);
    writer.send(attach::STDIN_CLOSE, b"");
    writer.wait_for(attach::STDOUT, "cat done\n");
    writer.wait_eof();
    assert_eq!(pod.wait_exit("cat").exit_code, 0);
    assert_eq!(log_lines(&log), ["stdout F hello", "stdout F world", "stdout F cat done"]);

    // A hang-up ends the session's stdin too.
    pod.run("cat2", "cat", false, true, true, None);
    let mut writer = pod.attach("cat2", true);
    let mut watcher = pod.attach("cat2", false);
    writer.send(attach::STDIN, b"bye\n");
    watcher.wait_for(attach::STDOUT, "bye\n");
    drop(writer);
    watcher.wait_eof();
    assert_eq!(pod.wait_exit("cat2").exit_code, 0);

    // More stdin than the pipe holds, sent before the container reads and
    // followed by a hang-up while it is owed output: the monitor holds the
    // writer back (its socket fills), still takes all it sent, and closes
    // stdin only after it.
    const BANNER: usize = 300_000;
    let script = format!(r"sleep 0.5; head -c {BANNER} /dev/zero | tr '\0' y; echo; sleep 0.5; cat");
    pod.run("late", &script, false, true, true, None);
    let input: Vec<u8> = (0..20_000).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
    let mut watcher = pod.attach("late", false);
    let mut writer = pod.attach("late", true);
    for chunk in input.chunks(8192) {
        writer.send(attach::STDIN, chunk);
    }
    watcher.wait_for(attach::STDOUT, "y\n");
    drop(writer); // owed the banner, which it never read
    watcher.wait_eof();
    let mut want = vec![b'y'; BANNER];
    want.push(b'\n');
    want.extend_from_slice(&input);
    assert_eq!(watcher.out.len(), want.len());
    assert!(watcher.out == want, "the container's stdin came back changed");
    assert_eq!(pod.wait_exit("late").exit_code, 0);
    assert_eq!(pod.ask(&Request::Shutdown), Response::Ok);
}

#[test]
fn a_terminal_is_resized_written_and_closed_with_eot() {
    let pod = Pod::start("pod-tty");
    let log = pod.dir.path().join("logs/tty/0.log");
    pod.run("tty", "read x; stty size", true, true, false, Some(&log));
    let mut session = pod.attach("tty", true);
    session.send(attach::RESIZE, &attach::resize(120, 40));
    session.send(attach::STDIN, b"go\n");
    session.wait_for(attach::STDOUT, "40 120");
    session.wait_eof();
    assert_eq!(pod.wait_exit("tty").exit_code, 0);
    assert!(session.err.is_empty());
    assert!(log_lines(&log).iter().any(|l| l.starts_with("stdout F 40 120")), "{:?}", log_lines(&log));

    // stdin_once on a terminal: the end of the session's stdin is an EOT.
    pod.run("ttycat", "cat", true, true, true, None);
    let mut session = pod.attach("ttycat", true);
    session.send(attach::STDIN, b"hi\n");
    session.wait_for(attach::STDOUT, "hi\r\nhi\r\n"); // the terminal's echo, then cat's
    session.send(attach::STDIN_CLOSE, b"");
    session.wait_eof();
    assert_eq!(pod.wait_exit("ttycat").exit_code, 0);
    assert_eq!(pod.ask(&Request::Shutdown), Response::Ok);
}

#[test]
fn an_attacher_that_falls_behind_is_dropped_and_neither_log_nor_container_wait() {
    let pod = Pod::start("pod-slow");
    let log = pod.dir.path().join("logs/loud/0.log");
    const TOTAL: usize = 6_000_000;
    let script = format!(r"read x; head -c {TOTAL} /dev/zero | tr '\0' x; echo; echo done; exec sleep 1000");
    pod.run("loud", &script, false, true, false, Some(&log));
    let mut slow = pod.attach("loud", true);
    slow.send(attach::STDIN, b"go\n");
    // It reads nothing while the container writes it all.
    wait_log(&log, "stdout F done");
    let text: usize = log_lines(&log).iter().map(|l| l.len() - "stdout X ".len()).sum();
    assert_eq!(text, TOTAL + "done".len());
    assert_eq!(pod.state("loud"), ContainerState::Running);
    slow.wait_eof();
    assert!(slow.out.len() < TOTAL, "it got {} bytes", slow.out.len());
    let monitor_log = std::fs::read_to_string(pod.pod_dir().join("monitor.log")).unwrap();
    assert!(monitor_log.contains("container loud: an attacher fell more than"), "{monitor_log}");
    // The container runs on, and a new attacher is welcome.
    let mut next = pod.attach("loud", false);
    assert_eq!(pod.ask(&Request::Signal { id: "loud".into(), signal: 9, all: true }), Response::Ok);
    next.wait_eof();
    assert_eq!(pod.ask(&Request::Shutdown), Response::Ok);
}
