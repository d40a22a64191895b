//! The monitor for real (root only): started as the daemon starts it, it
//! detaches, holds the pod's UTS and IPC namespaces, runs busybox
//! containers that join them, writes their output as CRI log lines,
//! records exits (code, signal, times) on disk, and on Shutdown kills what
//! runs, records it and leaves no process, socket or namespace pin.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
        let bundle = self.dir.path().join("bundles").join(id);
        let rootfs = bundle.join("rootfs");
        for d in ["bin", "proc", "sys", "dev", "etc", "tmp"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for applet in ["sh", "echo", "hostname", "sleep", "cat"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let mut config = bulkhead_runtime::oci_cli::default_spec();
        config["process"]["args"] = json!(["sh", "-c", script]);
        config["process"]["terminal"] = json!(false);
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
    let created =
        pod.ask(&Request::Create { id: "c1".into(), bundle, log_path: Some(log.clone()), tty: false, stdin: false });
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
        pod.ask(&Request::Create { id: "c2".into(), bundle, log_path: None, tty: false, stdin: false }),
        Response::Ok
    );
    assert_eq!(pod.ask(&Request::Start { id: "c2".into() }), Response::Ok);
    let bundle = pod.bundle("c3", "exec sleep 1000");
    assert_eq!(
        pod.ask(&Request::Create { id: "c3".into(), bundle, log_path: None, tty: false, stdin: false }),
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
