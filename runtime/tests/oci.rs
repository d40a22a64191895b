//! `bulkhead-oci` driven as containerd's shim drives runc, on a busybox
//! bundle, with every outcome checked from inside the container or on the
//! host. Root only.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

const BUSYBOX: &str = "/bin/busybox";

/// A bundle with a busybox-static rootfs and runc's default config, and a
/// private state root; removes everything, and checks nothing leaked, on drop.
struct Bundle {
    dir: tempfile::TempDir,
    config: Value,
}

impl Bundle {
    fn new() -> Bundle {
        assert!(nix::unistd::geteuid().is_root(), "runtime integration tests must run as root");
        // Orphaned container inits are reparented to this process, which reaps them.
        nix::sys::prctl::set_child_subreaper(true).unwrap();
        let dir = tempfile::Builder::new().prefix("bulkhead-oci-test-").tempdir().unwrap();
        let rootfs = dir.path().join("bundle/rootfs");
        for d in ["bin", "proc", "sys", "dev", "etc", "tmp"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy(BUSYBOX, rootfs.join("bin/busybox")).unwrap();
        for applet in [
            "sh", "cat", "echo", "hostname", "id", "mount", "sleep", "touch", "ls", "wc", "grep", "head", "tty", "stty",
        ] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let out = oci(dir.path(), &["spec", "--bundle", dir.path().join("bundle").to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut config: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("bundle/config.json")).unwrap()).unwrap();
        // A cgroup of this test's own, so parallel tests never share one.
        config["linux"]["cgroupsPath"] = json!(format!("/{}", dir.path().file_name().unwrap().to_string_lossy()));
        Bundle { dir, config }
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.path().join("bundle/rootfs")
    }

    fn script(mut self, script: &str) -> Bundle {
        self.config["process"]["args"] = json!(["sh", "-c", script]);
        self
    }

    fn write(&self) -> String {
        std::fs::write(self.dir.path().join("bundle/config.json"), self.config.to_string()).unwrap();
        self.dir.path().join("bundle").display().to_string()
    }

    fn cmd(&self, args: &[&str]) -> Output {
        oci(self.dir.path(), args)
    }

    /// `run`s the bundle in the foreground; returns (exit code, stdout, stderr).
    fn run(&self, id: &str) -> (i32, String, String) {
        let bundle = self.write();
        let out = self.cmd(&["run", "--bundle", &bundle, id]);
        (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
    }

    fn state(&self, id: &str) -> Value {
        let out = self.cmd(&["state", id]);
        assert!(out.status.success(), "state {id}: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let state_root = self.dir.path().join("state");
        let leftovers: Vec<String> = std::fs::read_dir(&state_root)
            .map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        for id in &leftovers {
            let _ = oci(self.dir.path(), &["delete", "--force", id]);
        }
        let mounts = bulkhead_runtime::mountinfo::mounted_under(self.dir.path());
        for m in &mounts {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
        let name = self.dir.path().file_name().unwrap().to_owned();
        let cgroups: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
            .unwrap()
            .flatten()
            .map(|h| h.path().join(&name))
            .filter(|d| d.exists())
            .collect();
        for d in &cgroups {
            let _ = std::fs::remove_dir(d);
        }
        if !std::thread::panicking() {
            assert!(leftovers.is_empty(), "containers left in the state root: {leftovers:?}");
            assert!(mounts.is_empty(), "mounts left on the host: {mounts:?}");
            assert!(cgroups.is_empty(), "cgroups left on the host: {cgroups:?}");
        }
    }
}

/// The bulkhead-oci under test: cargo's, or another build of it named by
/// BULKHEAD_OCI_BIN (scripts/test runs these tests on the musl release build).
fn bulkhead_oci() -> String {
    std::env::var("BULKHEAD_OCI_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_bulkhead-oci").to_owned())
}

/// Runs bulkhead-oci with its output in files, not pipes: a container it
/// leaves running inherits its stdio, and would hold a pipe open.
fn oci(dir: &Path, args: &[&str]) -> Output {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (out_path, err_path) = (dir.join(format!("out.{n}")), dir.join(format!("err.{n}")));
    let status = Command::new(bulkhead_oci())
        .arg("--root")
        .arg(dir.join("state"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .status()
        .unwrap();
    Output { status, stdout: std::fs::read(&out_path).unwrap(), stderr: std::fs::read(&err_path).unwrap() }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn reap(pid: i32) {
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
}

#[test]
fn the_process_is_pid_1_with_the_spec_hostname_and_mounts() {
    let mut b = Bundle::new().script("echo pid=$$; hostname; cat /proc/self/mountinfo; touch /probe 2>&1; echo done");
    b.config["hostname"] = json!("web-1");
    let (code, out, err) = b.run("c1");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("pid=1\n"), "{out}");
    assert!(out.contains("web-1\n"), "{out}");
    for mount in [" /proc ", " /dev ", " /dev/pts ", " /dev/shm ", " /dev/mqueue ", " /sys "] {
        assert!(out.contains(mount), "{mount} missing: {out}");
    }
    assert!(out.contains("Read-only file system"), "the root is read-only: {out}");
    assert!(!b.rootfs().join("probe").exists());
}

#[test]
fn the_program_starts_with_no_signal_ignored_or_blocked() {
    let mut b = Bundle::new();
    // grep itself is the container's process here, not a shell's child.
    b.config["process"]["args"] = json!(["grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"]);
    let (code, out, err) = b.run("c1");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("SigIgn:\t0000000000000000"), "SIGPIPE and the rest at their defaults: {out}");
    assert!(out.contains("SigBlk:\t0000000000000000"), "{out}");
}

#[test]
fn capabilities_of_root_follow_the_spec() {
    let mut b = Bundle::new().script("grep -E '^(CapEff|CapBnd|CapPrm|CapInh)' /proc/self/status");
    b.config["process"]["capabilities"] = json!({
        "bounding": ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_CHOWN", "CAP_SYS_ADMIN"],
        "effective": ["CAP_KILL", "CAP_CHOWN"],
        "permitted": ["CAP_KILL", "CAP_CHOWN", "CAP_NET_BIND_SERVICE"],
        "inheritable": ["CAP_KILL"]
    });
    let (code, out, err) = b.run("c1");
    assert_eq!(code, 0, "{err}");
    // CAP_CHOWN = 0, CAP_KILL = 5, CAP_NET_BIND_SERVICE = 10, CAP_SYS_ADMIN = 21.
    assert!(out.contains("CapBnd:\t0000000000200421"), "{out}");
    assert!(out.contains("CapInh:\t0000000000000020"), "{out}");
    // noNewPrivileges (on in the default spec) keeps root's exec from
    // raising permitted to the bounding set: the spec's permitted stands.
    assert!(out.contains("CapPrm:\t0000000000000421"), "{out}");
}

#[test]
fn a_non_root_user_keeps_exactly_its_ambient_capabilities_with_groups_and_rlimits() {
    let mut b = Bundle::new().script(
        "grep -E '^(CapEff|CapBnd|CapPrm|NoNewPrivs)' /proc/self/status; id; echo soft=$(ulimit -n) hard=$(ulimit -Hn)",
    );
    b.config["process"]["user"] = json!({"uid": 1000, "gid": 1001, "additionalGids": [10, 20]});
    b.config["process"]["capabilities"] = json!({
        "bounding": ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_CHOWN"],
        "effective": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "permitted": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "inheritable": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "ambient": ["CAP_KILL", "CAP_NET_BIND_SERVICE"]
    });
    b.config["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 768}]);
    let (code, out, err) = b.run("c1");
    assert_eq!(code, 0, "{err}");
    // CAP_KILL = 5, CAP_NET_BIND_SERVICE = 10, CAP_CHOWN = 0.
    assert!(out.contains("CapEff:\t0000000000000420"), "{out}");
    assert!(out.contains("CapPrm:\t0000000000000420"), "{out}");
    assert!(out.contains("CapBnd:\t0000000000000421"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("uid=1000 gid=1001 groups=10,20"), "{out}");
    assert!(out.contains("soft=512 hard=768"), "{out}");
}

#[test]
fn masked_paths_read_empty_and_read_only_paths_refuse_writes() {
    let b = Bundle::new()
        .script("echo kcore=$(cat /proc/kcore | wc -c); (echo 1 > /proc/sys/vm/drop_caches) 2>&1; echo done");
    let (code, out, err) = b.run("c1");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("kcore=0"), "{out}");
    assert!(out.contains("Read-only file system"), "{out}");
}

#[test]
fn seccomp_blocks_with_the_configured_errno_and_is_in_filter_mode() {
    for nnp in [true, false] {
        let mut b =
            Bundle::new().script("grep Seccomp: /proc/self/status; mkdir /tmp/x 2>&1; touch /tmp/y && echo touched");
        b.config["process"]["noNewPrivileges"] = json!(nnp);
        b.config["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}));
        b.config["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64"],
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 95},
                {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}
            ]
        });
        let (code, out, err) = b.run("c1");
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("Seccomp:\t2"), "nnp={nnp}: {out}");
        assert!(out.contains("Not supported") || out.contains("not supported"), "errno 95 (EOPNOTSUPP): {out}");
        assert!(out.contains("touched"), "other syscalls pass: {out}");
    }
}

#[test]
fn the_exit_code_of_run_is_the_container_s() {
    let (code, _, err) = Bundle::new().script("exit 7").run("c1");
    assert_eq!(code, 7, "{err}");
    // Killed by a signal from outside: 128 + 9, as runc reports it.
    let b = Bundle::new().script("sleep 300");
    let bundle = b.write();
    let mut run = Command::new(bulkhead_oci())
        .arg("--root")
        .arg(b.dir.path().join("state"))
        .args(["run", "--bundle", &bundle, "c2"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while b.cmd(&["state", "c2"]).stdout.is_empty() || b.state("c2")["status"] != "running" {
        if let Some(status) = run.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut run.stderr.take().unwrap(), &mut err).unwrap();
            panic!("run ended before c2 was seen running: {status}: {err}");
        }
        assert!(std::time::Instant::now() < deadline, "c2 never ran");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(b.cmd(&["kill", "c2", "9"]).status.success());
    assert_eq!(run.wait().unwrap().code(), Some(137));
    assert!(!b.dir.path().join("state/c2").exists(), "run deletes what it created");
}

#[test]
fn a_symlink_to_the_host_cannot_carry_a_mount_or_a_write_out_of_the_root() {
    let mut b = Bundle::new().script("ls /etc; cat /etc/passwd 2>&1 | head -1; echo done");
    // The image holds a symlink to the host's /etc.
    std::os::unix::fs::symlink("/etc", b.rootfs().join("hostetc")).unwrap();
    let host_file = b.dir.path().join("hostfile");
    std::fs::write(&host_file, "from the bundle\n").unwrap();
    let mounts = b.config["mounts"].as_array_mut().unwrap();
    mounts.push(json!({"destination": "/hostetc/bulkhead-escape", "type": "tmpfs", "source": "tmpfs"}));
    mounts.push(
        json!({"destination": "/hostetc/passwd", "type": "bind", "source": host_file, "options": ["rbind", "ro"]}),
    );
    let host_passwd = std::fs::read("/etc/passwd").unwrap();
    let (code, out, err) = b.run("c1");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("bulkhead-escape"), "the mount landed in the rootfs's /etc: {out}");
    assert!(out.contains("from the bundle"), "{out}");
    assert!(!Path::new("/etc/bulkhead-escape").exists(), "nothing was created in the host's /etc");
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), host_passwd, "the host's /etc/passwd is untouched");
    assert!(b.rootfs().join("hostetc").is_symlink(), "the symlink was resolved inside the root, not replaced");
    assert!(b.rootfs().join("etc/bulkhead-escape").is_dir());
}

#[test]
fn create_start_state_kill_delete() {
    let b = Bundle::new().script("sleep 300");
    let bundle = b.write();
    let out = b.cmd(&["create", "--bundle", &bundle, "--pid-file", b.dir.path().join("pid").to_str().unwrap(), "c1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let state = b.state("c1");
    assert_eq!(state["status"], "created");
    assert_eq!(state["id"], "c1");
    assert_eq!(state["bundle"], bundle);
    let pid = state["pid"].as_i64().unwrap() as i32;
    assert_eq!(std::fs::read_to_string(b.dir.path().join("pid")).unwrap(), pid.to_string());
    // Init waits before exec: it is still bulkhead-oci, not sleep.
    assert!(!std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap().contains("sleep"));

    let again = b.cmd(&["create", "--bundle", &bundle, "c1"]);
    assert!(!again.status.success() && text(&again.stderr).contains("already exists"));

    assert!(b.cmd(&["start", "c1"]).status.success());
    assert_eq!(b.state("c1")["status"], "running");
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap().contains("sleep"));
    let start_again = b.cmd(&["start", "c1"]);
    assert!(!start_again.status.success());

    let list = b.cmd(&["list", "--format", "json"]);
    let list: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list[0]["id"], "c1");

    let refused = b.cmd(&["delete", "c1"]);
    assert!(!refused.status.success(), "a running container is not deleted without --force");
    assert!(b.cmd(&["kill", "c1", "KILL"]).status.success());
    reap(pid);
    assert_eq!(b.state("c1")["status"], "stopped");
    assert!(b.cmd(&["delete", "c1"]).status.success());
    assert!(!b.dir.path().join("state/c1").exists());
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "init is gone");
    let gone = b.cmd(&["state", "c1"]);
    assert!(!gone.status.success() && text(&gone.stderr).contains("does not exist"));
}

#[test]
fn kill_all_and_force_delete_remove_every_process() {
    let b = Bundle::new().script("sleep 300 & sleep 300 & wait");
    let bundle = b.write();
    assert!(b.cmd(&["run", "--detach", "--bundle", &bundle, "c1"]).status.success());
    let pid = b.state("c1")["pid"].as_i64().unwrap() as i32;
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    let in_ns = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| std::fs::read_link(e.path().join("ns/pid")).is_ok_and(|l| l == ns))
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while in_ns() < 3 {
        assert!(std::time::Instant::now() < deadline, "sh and two sleeps never all ran");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let ps: Vec<i32> = serde_json::from_slice(&b.cmd(&["ps", "--format", "json", "c1"]).stdout).unwrap();
    assert_eq!(ps.len(), 3, "ps lists the cgroup's processes: {ps:?}");
    assert!(b.cmd(&["delete", "--force", "c1"]).status.success());
    reap(pid);
    assert_eq!(in_ns(), 0, "no process of the container remains");
}

#[test]
fn a_new_container_can_join_another_s_namespaces_by_path() {
    let mut first = Bundle::new().script("sleep 300");
    first.config["hostname"] = json!("shared-host");
    let bundle = first.write();
    assert!(first.cmd(&["run", "--detach", "--bundle", &bundle, "pod"]).status.success());
    let pid = first.state("pod")["pid"].as_i64().unwrap();

    let mut second = Bundle::new().script("hostname; readlink /proc/self/ns/net");
    second.config["hostname"] = json!(null);
    second.config["linux"]["namespaces"] = json!([
        {"type": "pid"}, {"type": "mount"}, {"type": "ipc", "path": format!("/proc/{pid}/ns/ipc")},
        {"type": "uts", "path": format!("/proc/{pid}/ns/uts")}, {"type": "network", "path": format!("/proc/{pid}/ns/net")}
    ]);
    let (code, out, err) = second.run("app");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("shared-host"), "{out}");
    let pod_net = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    assert!(out.contains(pod_net.to_str().unwrap()), "{out} vs {pod_net:?}");
    assert!(first.cmd(&["delete", "--force", "pod"]).status.success());
    reap(pid as i32);
}

#[test]
fn bad_configs_fail_naming_the_field_and_leave_nothing() {
    type Break = fn(&mut Value);
    let cases: [(&str, Break); 6] = [
        ("linux.seccomp.defaultAction", |c| c["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_SHRUG"})),
        ("ociVersion", |c| c["ociVersion"] = json!("9.0.0")),
        ("linux.namespaces[0].type", |c| c["linux"]["namespaces"][0]["type"] = json!("moon")),
        ("process.cwd", |c| c["process"]["cwd"] = json!("relative")),
        ("root.path", |c| c["root"]["path"] = json!("no-such-rootfs")),
        ("process.capabilities.bounding", |c| c["process"]["capabilities"]["bounding"] = json!(["CAP_FLY"])),
    ];
    for (field, break_it) in cases {
        let mut b = Bundle::new();
        break_it(&mut b.config);
        let bundle = b.write();
        let out = b.cmd(&[
            "--log",
            b.dir.path().join("log.json").to_str().unwrap(),
            "--log-format",
            "json",
            "create",
            "--bundle",
            &bundle,
            "c1",
        ]);
        assert_eq!(out.status.code(), Some(1), "{field}");
        let err = text(&out.stderr);
        assert!(err.contains(field), "{field}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        let log: Value =
            serde_json::from_str(std::fs::read_to_string(b.dir.path().join("log.json")).unwrap().trim()).unwrap();
        assert_eq!(log["level"], "error");
        assert!(log["msg"].as_str().unwrap().contains(field));
        assert!(!b.dir.path().join("state/c1").exists(), "no state left for {field}");
    }
}

#[test]
fn an_init_failure_is_reported_and_rolled_back() {
    let mut b = Bundle::new();
    b.config["process"]["args"] = json!(["no-such-program"]);
    let bundle = b.write();
    let out = b.cmd(&["create", "--bundle", &bundle, "c1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("no-such-program") && err.contains("init failed"), "{err}");
    assert!(!b.dir.path().join("state/c1").exists());
}

impl Bundle {
    /// Binds a fresh host directory at /out, writable by the container.
    fn with_out_dir(mut self) -> (Bundle, PathBuf) {
        let out = self.dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        self.config["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/out", "type": "bind", "source": out, "options": ["rbind", "rw"]
        }));
        (self, out)
    }

    fn stats(&self, id: &str) -> Value {
        let out = self.cmd(&["events", "--stats", id]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["data"].clone()
    }

    fn cgroup_dir(&self, controller: &str) -> PathBuf {
        Path::new("/sys/fs/cgroup").join(controller).join(self.dir.path().file_name().unwrap())
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_memory_limit_oom_kills_an_allocation_above_it_and_the_oom_is_reported() {
    let (mut b, out) = Bundle::new().with_out_dir();
    // The allocating pipeline volunteers for the OOM killer (adj 1000) so that a
    // second OOM while `tail` is being reaped takes `head`, never the shell that
    // records the result.
    b = b.script(
        "(echo 1000 > /proc/self/oom_score_adj; head -c 256m /dev/zero | tail > /dev/null); \
         echo rc=$? > /out/result; sleep 300",
    );
    b.config["linux"]["resources"] = json!({"memory": {"limit": 33554432, "swap": 33554432}});
    let bundle = b.write();
    assert!(b.cmd(&["run", "--detach", "--bundle", &bundle, "c1"]).status.success());
    let pid = b.state("c1")["pid"].as_i64().unwrap() as i32;
    wait_for("the allocation to end", || out.join("result").exists());
    assert_eq!(std::fs::read_to_string(out.join("result")).unwrap().trim(), "rc=137", "SIGKILLed by the OOM killer");
    let stats = b.stats("c1");
    assert!(stats["memory"]["oomKills"].as_u64().unwrap() >= 1, "{stats}");
    // The event stream ends when the container does, with stats lines on the way.
    let stream = Command::new(bulkhead_oci())
        .arg("--root")
        .arg(b.dir.path().join("state"))
        .args(["events", "--interval", "1", "c1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(b.cmd(&["kill", "c1", "KILL"]).status.success());
    reap(pid);
    let events = text(&stream.wait_with_output().unwrap().stdout);
    let first: Value = serde_json::from_str(events.lines().next().unwrap()).unwrap();
    assert_eq!(first["type"], "stats", "{events}");
    assert_eq!(stats["memory"]["usage"]["limit"], 33554432);
    assert!(b.cmd(&["delete", "--force", "c1"]).status.success());
    assert!(!b.cgroup_dir("memory").exists(), "the cgroup is removed with the container");
}

#[test]
fn a_pids_limit_stops_a_fork_bomb() {
    let mut b = Bundle::new().script("for i in $(seq 40); do sleep 300 & done; sleep 300");
    b.config["linux"]["resources"] = json!({"pids": {"limit": 10}});
    let bundle = b.write();
    assert!(b.cmd(&["run", "--detach", "--bundle", &bundle, "c1"]).status.success());
    let pid = b.state("c1")["pid"].as_i64().unwrap() as i32;
    let events = b.cgroup_dir("pids").join("pids.events");
    wait_for("a fork to be refused", || std::fs::read_to_string(&events).is_ok_and(|e| e.trim() != "max 0"));
    let stats = b.stats("c1");
    assert!(stats["pids"]["current"].as_u64().unwrap() <= 10, "{stats}");
    assert_eq!(stats["pids"]["limit"], 10);
    assert!(b.cmd(&["delete", "--force", "c1"]).status.success());
    reap(pid);
    assert!(!b.cgroup_dir("pids").exists());
}

#[test]
fn a_denied_device_cannot_be_opened() {
    // /dev/kmsg exists in the container but no rule allows it; /dev/null and
    // the other default devices stay allowed after the spec's rules, as runc
    // appends them.
    let mut b =
        Bundle::new().script("head -c 1 /dev/kmsg 2>&1 | head -c 80; echo; echo ok > /dev/null && echo null-ok");
    b.config["linux"]["devices"] =
        json!([{"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11, "fileMode": 420}]);
    b.config["linux"]["resources"] = json!({"devices": [{"allow": false, "access": "rwm"}]});
    let (code, out, err) = b.run("c1");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(out.contains("null-ok"), "{out}");
}

#[test]
fn the_container_sees_its_own_cgroup_and_limits() {
    let mut b = Bundle::new()
        .script("ls /sys/fs/cgroup; cat /sys/fs/cgroup/memory/memory.limit_in_bytes; cat /proc/self/cgroup");
    b.config["linux"]["resources"] = json!({"memory": {"limit": 67108864}});
    let (code, out, err) = b.run("c1");
    assert_eq!(code, 0, "{err}");
    for hierarchy in ["memory", "cpu", "pids", "devices"] {
        assert!(out.lines().any(|l| l == hierarchy), "{hierarchy}: {out}");
    }
    assert!(out.contains("67108864"), "{out}");
    assert!(out.contains("memory:/\n"), "a cgroup namespace rooted at the container: {out}");
}

#[test]
fn pause_resume_and_update_act_on_a_live_container() {
    let b = Bundle::new().script("sleep 300");
    let bundle = b.write();
    assert!(b.cmd(&["run", "--detach", "--bundle", &bundle, "c1"]).status.success());
    let pid = b.state("c1")["pid"].as_i64().unwrap() as i32;
    assert!(b.cmd(&["pause", "c1"]).status.success());
    assert_eq!(b.state("c1")["status"], "paused");
    assert_eq!(std::fs::read_to_string(b.cgroup_dir("freezer").join("freezer.state")).unwrap().trim(), "FROZEN");
    assert!(!b.cmd(&["pause", "c1"]).status.success(), "a paused container cannot be paused");
    assert!(b.cmd(&["resume", "c1"]).status.success());
    assert_eq!(b.state("c1")["status"], "running");

    assert!(b.cmd(&["update", "--memory", "67108864", "--pids-limit", "50", "c1"]).status.success());
    let read = |c: &str, f: &str| std::fs::read_to_string(b.cgroup_dir(c).join(f)).unwrap().trim().to_owned();
    assert_eq!(read("memory", "memory.limit_in_bytes"), "67108864");
    assert_eq!(read("pids", "pids.max"), "50");
    let resources = b.dir.path().join("resources.json");
    std::fs::write(&resources, r#"{"cpu": {"shares": 512, "quota": 20000, "period": 100000}}"#).unwrap();
    assert!(b.cmd(&["update", "--resources", resources.to_str().unwrap(), "c1"]).status.success());
    assert_eq!(read("cpu", "cpu.shares"), "512");
    assert_eq!(read("cpu", "cpu.cfs_quota_us"), "20000");

    // Force-deleting a paused container thaws and kills it.
    assert!(b.cmd(&["pause", "c1"]).status.success());
    assert!(b.cmd(&["delete", "--force", "c1"]).status.success());
    reap(pid);
    assert!(!b.cgroup_dir("freezer").exists());
}

#[test]
fn hooks_run_at_their_points_with_the_state_on_stdin() {
    let (mut b, out) = Bundle::new().with_out_dir();
    b = b.script("echo running");
    let host_hook = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}/{name}.json; echo $X >> {}/{name}.json", out.display(), out.display())], "env": ["X=from-env"]});
    b.config["hooks"] = json!({
        "createRuntime": [host_hook("createRuntime")],
        "createContainer": [host_hook("createContainer")],
        "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "cat > /out/startContainer.json"]}],
        "poststart": [host_hook("poststart")],
        "poststop": [host_hook("poststop")]
    });
    let (code, stdout, err) = b.run("c1");
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("running"));
    for (hook, status) in [
        ("createRuntime", "creating"),
        ("createContainer", "creating"),
        ("startContainer", "created"),
        ("poststart", "running"),
        ("poststop", "stopped"),
    ] {
        let text = std::fs::read_to_string(out.join(format!("{hook}.json"))).unwrap_or_else(|e| panic!("{hook}: {e}"));
        let state: Value = serde_json::Deserializer::from_str(&text).into_iter().next().unwrap().unwrap();
        assert_eq!(state["id"], "c1", "{hook}");
        assert_eq!(state["status"], status, "{hook}");
        assert!(state["pid"].as_i64().unwrap() > 0, "{hook}");
        if hook != "startContainer" {
            assert!(text.contains("from-env"), "{hook} gets its env: {text}");
        }
    }
}

#[test]
fn a_failing_or_hanging_create_hook_fails_create_and_leaves_nothing() {
    for (hook, expect) in [
        (json!({"path": "/bin/sh", "args": ["sh", "-c", "sleep 30"], "timeout": 1}), "timed out"),
        (json!({"path": "/bin/sh", "args": ["sh", "-c", "exit 3"]}), "exited with"),
    ] {
        let mut b = Bundle::new().script("true");
        b.config["hooks"] = json!({"createRuntime": [hook]});
        let bundle = b.write();
        let started = std::time::Instant::now();
        let out = b.cmd(&["create", "--bundle", &bundle, "c1"]);
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        assert!(err.contains("hooks.createRuntime[0]") && err.contains(expect), "{err}");
        assert!(!b.dir.path().join("state/c1").exists());
        assert!(!b.cgroup_dir("memory").exists());
    }
}

#[test]
fn exec_runs_inside_the_container_with_its_exit_code() {
    let mut b = Bundle::new().script("sleep 300");
    b.config["hostname"] = json!("exec-target");
    let bundle = b.write();
    assert!(b.cmd(&["run", "--detach", "--bundle", &bundle, "c1"]).status.success());
    let pid = b.state("c1")["pid"].as_i64().unwrap() as i32;

    let out = b.cmd(&[
        "exec",
        "c1",
        "sh",
        "-c",
        "hostname; cat /proc/1/cmdline; echo; grep NoNewPrivs /proc/self/status; cat /proc/self/cgroup | grep memory",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("exec-target"), "the container's uts namespace: {stdout}");
    assert!(stdout.contains("sleep\0"), "the container's pid namespace, pid 1 is its init: {stdout}");
    assert!(stdout.contains("NoNewPrivs:\t1"), "the container's process settings: {stdout}");
    assert!(stdout.contains("memory:/\n"), "the container's cgroup: {stdout}");

    assert_eq!(b.cmd(&["exec", "c1", "sh", "-c", "exit 5"]).status.code(), Some(5));
    let out = b.cmd(&[
        "exec",
        "--user",
        "1000:1000",
        "--env",
        "GREETING=hi",
        "--cwd",
        "/dev",
        "c1",
        "sh",
        "-c",
        "id; echo $GREETING; pwd",
    ]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("uid=1000 gid=1000") && stdout.contains("hi\n") && stdout.contains("/dev\n"), "{stdout}");

    let process = b.dir.path().join("process.json");
    std::fs::write(&process, json!({"args": ["sleep", "300"], "cwd": "/", "user": {"uid": 0, "gid": 0}}).to_string())
        .unwrap();
    let exec_pid_file = b.dir.path().join("exec.pid");
    let detached = b.cmd(&[
        "exec",
        "--detach",
        "--pid-file",
        exec_pid_file.to_str().unwrap(),
        "--process",
        process.to_str().unwrap(),
        "c1",
    ]);
    assert!(detached.status.success(), "{}", text(&detached.stderr));
    // Orphaned to this process (the subreaper): reap it when it is killed, or
    // the container's init cannot finish dying.
    let exec_pid: i32 = std::fs::read_to_string(&exec_pid_file).unwrap().parse().unwrap();
    let reaper = std::thread::spawn(move || reap(exec_pid));
    // Init and the exec'd process are in the container's cgroup in every
    // hierarchy, the v2 one included (born there through clone3, or moved).
    let want = format!(":/{}", b.dir.path().file_name().unwrap().to_string_lossy());
    let has_v2 = std::fs::read_to_string("/proc/self/cgroup").unwrap().lines().any(|l| l.starts_with("0::"));
    for p in [pid, exec_pid] {
        let cgroups = std::fs::read_to_string(format!("/proc/{p}/cgroup")).unwrap();
        assert!(cgroups.lines().all(|l| l.ends_with(&want)), "pid {p} outside {want}: {cgroups}");
        assert_eq!(cgroups.lines().any(|l| l.starts_with("0::")), has_v2, "pid {p}: {cgroups}");
    }
    let ps: Vec<i32> = serde_json::from_slice(&b.cmd(&["ps", "--format", "json", "c1"]).stdout).unwrap();
    assert_eq!(ps.len(), 2, "init and the detached exec: {ps:?}");

    let missing = b.cmd(&["exec", "c1", "no-such-program"]);
    assert!(!missing.status.success() && text(&missing.stderr).contains("no-such-program"));

    let deleted = b.cmd(&["delete", "--force", "c1"]);
    assert!(deleted.status.success(), "{}", text(&deleted.stderr));
    reap(pid);
    reaper.join().unwrap();
    let stopped = b.cmd(&["exec", "c1", "true"]);
    assert!(!stopped.status.success() && text(&stopped.stderr).contains("does not exist"));
}

#[test]
fn a_time_namespace_shifts_the_monotonic_clock_for_init_and_exec() {
    let mut b = Bundle::new().script("cat /proc/uptime; sleep 300");
    b.config["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "time"}));
    b.config["linux"]["timeOffsets"] = json!({"boottime": {"secs": 86400 * 365, "nanosecs": 0}});
    let bundle = b.write();
    assert!(b.cmd(&["run", "--detach", "--bundle", &bundle, "c1"]).status.success());
    let pid = b.state("c1")["pid"].as_i64().unwrap() as i32;
    let out = b.cmd(&["exec", "c1", "cat", "/proc/uptime"]);
    let uptime: f64 = text(&out.stdout).split_whitespace().next().unwrap().parse().unwrap();
    assert!(uptime > 86400.0 * 365.0, "boottime is a year ahead inside: {uptime}");
    let host: f64 =
        std::fs::read_to_string("/proc/uptime").unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(host < 86400.0 * 365.0);
    assert!(b.cmd(&["delete", "--force", "c1"]).status.success());
    reap(pid);
}

#[test]
fn an_lsm_profile_on_a_host_without_the_lsm_is_refused() {
    if std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|v| v.trim() == "Y") {
        return; // this host has AppArmor: the refusal cannot be seen here
    }
    let mut b = Bundle::new().script("true");
    b.config["process"]["apparmorProfile"] = json!("docker-default");
    let bundle = b.write();
    let out = b.cmd(&["create", "--bundle", &bundle, "c1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("process.apparmorProfile: AppArmor is not enabled"), "{}", text(&out.stderr));
    assert!(!b.dir.path().join("state/c1").exists());
}

#[test]
fn recursive_read_only_binds_scheduler_io_priority_and_personality_apply() {
    // A host tree with a submount: rro must make both read-only.
    let mut b = Bundle::new().script(
        "touch /data/f 2>&1; touch /data/sub/f 2>&1; grep -E '^(Cpus_allowed_list)' /proc/self/status; cat /proc/self/stat | cut -d' ' -f19; uname -m",
    );
    let data = b.dir.path().join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    nix::mount::mount(Some("tmpfs"), &data.join("sub"), Some("tmpfs"), nix::mount::MsFlags::empty(), None::<&str>)
        .unwrap();
    b.config["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/data", "type": "bind", "source": data, "options": ["rbind", "rro"]}));
    b.config["process"]["scheduler"] = json!({"policy": "SCHED_BATCH", "nice": 7});
    b.config["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_IDLE", "priority": 0});
    b.config["linux"]["personality"] = json!({"domain": "LINUX32"});
    for applet in ["cut", "uname"] {
        std::os::unix::fs::symlink("busybox", b.rootfs().join("bin").join(applet)).unwrap();
    }
    let (code, out, err) = b.run("c1");
    nix::mount::umount2(&data.join("sub"), nix::mount::MntFlags::MNT_DETACH).unwrap();
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("Read-only file system").count(), 2, "both the bind and its submount are read-only: {out}");
    assert!(out.lines().any(|l| l.trim() == "7"), "nice 7: {out}");
    assert!(out.contains("i686") || out.contains("i386") || out.contains("armv"), "a 32-bit personality: {out}");
}

/// Accepts one console-socket connection and takes the pty master from it.
fn receive_pty(listener: &std::os::unix::net::UnixListener) -> (String, std::fs::File) {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::{AsRawFd, FromRawFd, RawFd};
    let (stream, _) = listener.accept().unwrap();
    let mut buf = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty()).unwrap();
    let fd = msg
        .cmsgs()
        .unwrap()
        .find_map(|c| match c {
            ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
            _ => None,
        })
        .expect("an fd in SCM_RIGHTS");
    let len = msg.bytes;
    let name = String::from_utf8_lossy(&buf[..len]).into_owned();
    // SAFETY: the kernel just installed `fd` in this process for us alone.
    (name, unsafe { std::fs::File::from_raw_fd(fd) })
}

fn read_until(pty: &mut std::fs::File, needle: &str) -> String {
    use std::io::Read;
    let mut seen = String::new();
    let mut buf = [0u8; 1024];
    while !seen.contains(needle) {
        match pty.read(&mut buf) {
            Ok(0) | Err(_) => break, // EIO once the slave side is gone
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    seen
}

#[test]
fn a_terminal_is_sent_over_the_console_socket_for_init_and_exec() {
    let mut b = Bundle::new().script("tty; stty size; echo console > /dev/console; echo init-says-hi; sleep 300");
    b.config["process"]["terminal"] = json!(true);
    b.config["process"]["consoleSize"] = json!({"height": 40, "width": 132});
    let bundle = b.write();
    let socket = b.dir.path().join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let out = b.cmd(&["run", "--detach", "--console-socket", socket.to_str().unwrap(), "--bundle", &bundle, "c1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pid = b.state("c1")["pid"].as_i64().unwrap() as i32;
    let (name, mut master) = receive_pty(&listener);
    assert!(name.starts_with("/dev/pts/"), "{name}");
    let seen = read_until(&mut master, "init-says-hi");
    assert!(seen.contains("/dev/pts/0") && seen.contains("init-says-hi"), "{seen:?}");
    assert!(seen.contains("40 132"), "consoleSize applied: {seen:?}");
    assert!(seen.contains("console\r\n"), "/dev/console is the terminal: {seen:?}");

    let pid_file = b.dir.path().join("exec.pid");
    let out = b.cmd(&[
        "exec",
        "--detach",
        "--tty",
        "--console-socket",
        socket.to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        "c1",
        "sh",
        "-c",
        "tty; stty size; echo exec-says-hi",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let exec_pid: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    let (_, mut exec_master) = receive_pty(&listener);
    let seen = read_until(&mut exec_master, "exec-says-hi");
    assert!(seen.contains("/dev/pts/1") && seen.contains("exec-says-hi"), "{seen:?}");
    reap(exec_pid);

    let mismatch = b.cmd(&["exec", "--console-socket", socket.to_str().unwrap(), "c1", "true"]);
    assert!(!mismatch.status.success() && text(&mismatch.stderr).contains("process.terminal"));
    assert!(b.cmd(&["delete", "--force", "c1"]).status.success());
    reap(pid);
}

#[test]
fn a_user_namespace_maps_container_root_to_an_unprivileged_host_uid() {
    let mut b = Bundle::new().script("cat /proc/self/uid_map /proc/self/gid_map; id; echo null > /dev/null && echo dev-ok; ls /sys/fs/cgroup | head -3; sleep 300");
    b.config["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "user"}));
    b.config["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.config["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    let (b, out_dir) = b.with_out_dir();
    let mut b = b;
    b.config["process"]["args"] = json!([
        "sh",
        "-c",
        "(cat /proc/self/uid_map /proc/self/gid_map; id; echo null > /dev/null && echo dev-ok) > /out/result 2>&1; sleep 300"
    ]);
    std::os::unix::fs::chown(&out_dir, Some(100000), Some(100000)).unwrap();
    // The container's root is host uid 100000: it must own its rootfs and
    // be able to reach it, as with any user-namespaced runtime.
    use std::os::unix::fs::PermissionsExt;
    for dir in [b.dir.path().to_path_buf(), b.dir.path().join("bundle")] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    let chown = Command::new("chown").args(["-hR", "100000:100000"]).arg(b.rootfs()).status().unwrap();
    assert!(chown.success());
    let bundle = b.write();
    let out = b.cmd(&["run", "--detach", "--bundle", &bundle, "c1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pid = b.state("c1")["pid"].as_i64().unwrap() as i32;
    wait_for("the container's report", || {
        std::fs::read_to_string(out_dir.join("result")).is_ok_and(|r| r.contains("dev-ok") || r.lines().count() > 3)
    });
    let result = std::fs::read_to_string(out_dir.join("result")).unwrap();
    assert!(result.split_whitespace().collect::<Vec<_>>().starts_with(&["0", "100000", "65536"]), "{result}");
    assert!(result.contains("uid=0(") || result.contains("uid=0 "), "root inside: {result}");
    assert!(result.contains("dev-ok"), "device nodes bound from the host: {result}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status.lines().any(|l| l.starts_with("Uid:") && l.contains("100000")),
        "an unprivileged uid on the host: {status}"
    );

    let out = b.cmd(&["exec", "c1", "cat", "/proc/self/uid_map"]);
    assert!(
        text(&out.stdout).split_whitespace().collect::<Vec<_>>().starts_with(&["0", "100000", "65536"]),
        "exec joins the user namespace: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(b.cmd(&["delete", "--force", "c1"]).status.success());
    reap(pid);
}

#[test]
fn oom_score_adj_applies_and_is_clamped_without_cap_sys_resource() {
    let mut b = Bundle::new().script("cat /proc/self/oom_score_adj");
    b.config["process"]["oomScoreAdj"] = json!(500);
    let (code, out, err) = b.run("c1");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "500");
    // A negative value needs CAP_SYS_RESOURCE, which this host's root may lack.
    let mut b = Bundle::new().script("cat /proc/self/oom_score_adj");
    b.config["process"]["oomScoreAdj"] = json!(-500);
    let (code, out, err) = b.run("c2");
    assert_eq!(code, 0, "{err}");
    assert!(out.trim() == "-500" || err.contains("oomScoreAdj -500 kept"), "{out} / {err}");
}

#[test]
fn descriptors_pass_only_with_preserve_fds_and_no_pivot_works() {
    let b = Bundle::new().script("ls /proc/self/fd | grep -c .");
    let bundle = b.write();
    let state = b.dir.path().join("state");
    let run = |extra: &str, id: &str| {
        // fd 3 is open (not close-on-exec) in bulkhead-oci's caller.
        let script = format!(
            "exec 3</etc/hostname; {} --root {} run {extra} --bundle {bundle} {id}",
            bulkhead_oci(),
            state.display()
        );
        let out = Command::new("/bin/sh").args(["-c", &script]).stdin(Stdio::null()).output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim().parse::<u32>().unwrap()
    };
    // ls sees 0, 1, 2 and its own directory descriptor; plus 3 when passed.
    assert_eq!(run("", "c1"), 4, "a stray descriptor does not leak into the container");
    assert_eq!(run("--preserve-fds 1", "c2"), 5, "--preserve-fds 1 passes fd 3");
    assert_eq!(run("--no-pivot", "c3"), 4, "--no-pivot runs too");
}

#[test]
fn an_ambient_capability_that_is_not_inheritable_is_skipped_as_runc_does() {
    let mut b = Bundle::new().script("grep CapAmb /proc/self/status");
    // runc's own default spec lists ambient capabilities that are not inheritable.
    b.config["process"]["capabilities"] = json!({
        "bounding": ["CAP_KILL", "CAP_CHOWN"], "effective": ["CAP_KILL", "CAP_CHOWN"],
        "permitted": ["CAP_KILL", "CAP_CHOWN"], "inheritable": ["CAP_KILL"], "ambient": ["CAP_KILL", "CAP_CHOWN"]
    });
    let (code, out, err) = b.run("c1");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("CapAmb:\t0000000000000020"), "CAP_KILL raised, CAP_CHOWN skipped: {out}");
    assert!(err.contains("cannot raise CAP_CHOWN"), "{err}");
}
