//! bulkhead-oci as a drop-in for runc under containerd's runc shim
//! (`io.containerd.runc.v2` with `BinaryName`): a private containerd from
//! Debian's package, driven with `ctr`, runs, execs into, kills and removes
//! containers through bulkhead-oci. Root only.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The bulkhead-oci under test: cargo's, or another build of it named by
/// BULKHEAD_OCI_BIN (scripts/test runs these tests on the musl release build).
fn bulkhead_oci() -> String {
    std::env::var("BULKHEAD_OCI_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_bulkhead-oci").to_owned())
}

/// Where containerd's runc shim keeps runtime state for a namespace.
fn shim_root(namespace: &str) -> PathBuf {
    Path::new("/run/containerd/runc").join(namespace)
}

/// A containerd of this test's own: its root, state and sockets in a temp dir.
struct Containerd {
    dir: tempfile::TempDir,
    child: Child,
    /// A containerd namespace of this test's own (the shim's state goes under it).
    namespace: String,
}

impl Containerd {
    fn start() -> Containerd {
        assert!(nix::unistd::geteuid().is_root(), "must run as root");
        let dir = tempfile::Builder::new().prefix("bulkhead-ctrd-").tempdir().unwrap();
        let p = dir.path();
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{ttrpc}\"\n",
            root = p.join("root").display(),
            state = p.join("state").display(),
            sock = p.join("containerd.sock").display(),
            ttrpc = p.join("containerd.ttrpc.sock").display(),
        );
        std::fs::write(p.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(p.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(p.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd (Debian package containerd; scripts/deps installs it)");
        let c = Containerd { dir, child, namespace: format!("bulkhead-test-{}", std::process::id()) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !c.ctr(&["version"]).status.success() {
            assert!(Instant::now() < deadline, "containerd did not start: {}", c.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(self.dir.path().join("containerd.sock"))
            .args(["--namespace", &self.namespace])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// A busybox-static rootfs for `ctr run --rootfs`.
    fn rootfs(&self, name: &str) -> PathBuf {
        let rootfs = self.dir.path().join(name);
        for d in ["bin", "proc", "sys", "dev", "etc", "tmp"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for applet in ["sh", "echo", "hostname", "sleep", "cat", "grep", "id"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        rootfs
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        // Shims outlive containerd by design: end ours.
        let marker = self.dir.path().to_string_lossy().into_owned();
        let mut leftovers = Vec::new();
        for pid in
            std::fs::read_dir("/proc").unwrap().flatten().filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        {
            if std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&marker))
            {
                leftovers.push(pid);
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
        let mounts = bulkhead_runtime::mountinfo::mounted_under(self.dir.path());
        for m in &mounts {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
        // ctr puts containers under /<namespace>/<id>: bulkhead-oci removes the
        // leaves, the parent is the caller's (as kubelet's pod cgroups are).
        let mut cgroups_left = Vec::new();
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let parent = hierarchy.path().join(&self.namespace);
            if let Ok(children) = parent.read_dir() {
                cgroups_left.extend(children.flatten().filter(|c| c.path().is_dir()).map(|c| c.path()));
            }
            let _ = std::fs::remove_dir(&parent);
        }
        let shim_dir = shim_root(&self.namespace);
        let shim_state_left = shim_dir.read_dir().map(|d| d.count()).unwrap_or(0);
        let _ = std::fs::remove_dir(&shim_dir);
        if !std::thread::panicking() {
            assert!(mounts.is_empty(), "mounts left: {mounts:?}");
            assert_eq!(shim_state_left, 0, "container state left in {}", shim_dir.display());
            assert!(cgroups_left.is_empty(), "container cgroups left: {cgroups_left:?}");
        }
        let _ = leftovers;
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn containerd_runs_execs_and_removes_containers_through_bulkhead_oci() {
    let ctrd = Containerd::start();
    let rootfs = ctrd.rootfs("rootfs");
    let rootfs = rootfs.to_str().unwrap();

    let bulkhead_oci = bulkhead_oci();
    let bulkhead_oci = bulkhead_oci.as_str();
    // A foreground run: output through the shim's fifos, exit status back.
    let out = ctrd.ctr(&[
        "run",
        "--rm",
        "--runc-binary",
        bulkhead_oci,
        "--rootfs",
        rootfs,
        "c1",
        "sh",
        "-c",
        "echo hello-from-bulkhead; exit 3",
    ]);
    assert!(
        text(&out.stdout).contains("hello-from-bulkhead"),
        "{}{}\n{}",
        text(&out.stdout),
        text(&out.stderr),
        ctrd.log()
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));

    // Detached: the shim keeps it; exec into it; list its processes; kill; remove.
    let out = ctrd.ctr(&["run", "-d", "--runc-binary", bulkhead_oci, "--rootfs", rootfs, "c2", "sleep", "300"]);
    assert!(out.status.success(), "{}\n{}", text(&out.stderr), ctrd.log());
    let tasks = text(&ctrd.ctr(&["task", "ls"]).stdout);
    assert!(tasks.lines().any(|l| l.starts_with("c2") && l.contains("RUNNING")), "{tasks}");
    // It is bulkhead-oci that holds the container: its state record, its answer.
    let root = shim_root(&ctrd.namespace);
    let state = Command::new(bulkhead_oci).arg("--root").arg(&root).args(["state", "c2"]).output().unwrap();
    assert!(state.status.success(), "{}", text(&state.stderr));
    assert!(text(&state.stdout).contains("\"running\""), "{}", text(&state.stdout));
    let out = ctrd.ctr(&["task", "exec", "--exec-id", "e1", "c2", "sh", "-c", "echo exec-ok; cat /proc/1/cmdline"]);
    assert!(
        text(&out.stdout).contains("exec-ok") && text(&out.stdout).contains("sleep"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let ps = text(&ctrd.ctr(&["task", "ps", "c2"]).stdout);
    assert!(ps.lines().count() >= 2, "{ps}");
    let out = ctrd.ctr(&["task", "pause", "c2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&ctrd.ctr(&["task", "ls"]).stdout).contains("PAUSED"));
    assert!(ctrd.ctr(&["task", "resume", "c2"]).status.success());
    let out = ctrd.ctr(&["task", "kill", "--signal", "SIGKILL", "c2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !text(&ctrd.ctr(&["task", "ls"]).stdout).contains("STOPPED") {
        assert!(Instant::now() < deadline, "c2 never stopped");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = ctrd.ctr(&["task", "rm", "c2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(ctrd.ctr(&["container", "rm", "c2"]).status.success());
    assert!(!text(&ctrd.ctr(&["task", "ls"]).stdout).contains("c2"));
    assert!(!root.join("c2").exists(), "the shim's delete went through bulkhead-oci");
}
