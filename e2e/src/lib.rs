//! The whole-system test harness: it starts the real `bulkhead` binary as a
//! child process on a private root, state directory and socket, waits until
//! it answers, hands out CRI clients connected over the unix socket, and on
//! drop stops it and asserts that nothing it created is left behind — no
//! process, no mount under its directories, no file outside them. It owns
//! test support only and must not reach into the daemon's crates: tests see
//! bulkhead exactly as kubelet and crictl do, through the socket (it reads
//! host state, such as the mount table, with the runtime crate's parsers).
//!
//! The binary is `target/<profile>/bulkhead` beside the test executable (or
//! `$BULKHEAD_BIN`); the README's test command builds it first.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bulkhead_proto::cri::VersionRequest;
use bulkhead_proto::cri::image_service_client::ImageServiceClient;
use bulkhead_proto::cri::runtime_service_client::RuntimeServiceClient;
use hyper_util::rt::TokioIo;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;
use tonic::transport::{Channel, Endpoint, Uri};

pub use bulkhead_proto::cri;

pub mod pod;
pub mod registry;
pub mod stream;

/// Paths outside a test's temporary directory that a daemon must never
/// create when it is given its own root, state and socket.
const HOST_PATHS: [&str; 4] = ["/var/lib/bulkhead", "/run/bulkhead", "/etc/bulkhead", "/etc/cni/net.d/bulkhead"];

/// The `bulkhead` binary under test.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("BULKHEAD_BIN") {
        return PathBuf::from(path);
    }
    // target/<profile>/deps/<test-binary> -> target/<profile>/bulkhead
    let exe = std::env::current_exe().expect("path of the test executable");
    let path = exe.parent().and_then(Path::parent).map(|d| d.join("bulkhead")).expect("target directory");
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build --bin bulkhead`; scripts/test does)",
        path.display()
    );
    path
}

/// Panics unless the tests run as root, which the daemon requires.
pub fn require_root() {
    assert!(nix::unistd::geteuid().is_root(), "the e2e tests drive a real daemon and must run as root");
}

/// A private directory for one daemon: `root/`, `state/`, and the socket in
/// a directory that does not exist yet (the daemon must create it).
#[derive(Debug)]
pub struct Sandbox {
    pub dir: TempDir,
    pub root: PathBuf,
    pub state: PathBuf,
    pub socket: PathBuf,
    host_paths_before: Vec<Option<BTreeSet<OsString>>>,
}

/// The entries of a directory, or `None` when it does not exist.
fn listing(path: &Path) -> Option<BTreeSet<OsString>> {
    let entries = std::fs::read_dir(path).ok()?;
    Some(entries.filter_map(|e| Some(e.ok()?.file_name())).collect())
}

impl Sandbox {
    pub fn new() -> Sandbox {
        require_root();
        let dir = tempfile::Builder::new().prefix("bulkhead-e2e-").tempdir().expect("temporary directory");
        let root = dir.path().join("root");
        let state = dir.path().join("state");
        let socket = dir.path().join("run/cri/bulkhead.sock");
        let host_paths_before = HOST_PATHS.iter().map(|p| listing(Path::new(p))).collect();
        Sandbox { dir, root, state, socket, host_paths_before }
    }

    /// The flags that point a daemon at this sandbox.
    pub fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for (flag, path) in [("--root", &self.root), ("--state", &self.state), ("--socket", &self.socket)] {
            args.push(flag.to_owned());
            args.push(path.display().to_string());
        }
        args
    }

    /// A `bulkhead` command with this sandbox's flags and then `extra`.
    pub fn command(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new(binary());
        cmd.args(self.args()).args(extra).stdin(Stdio::null());
        cmd
    }

    /// The native bridge (and nftables table) name of this sandbox's pods.
    pub fn bridge(&self) -> String {
        let name = self.dir.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let suffix: String = name.chars().rev().filter(|c| c.is_ascii_alphanumeric()).take(8).collect();
        format!("bhe{suffix}")
    }

    /// A `[network]` config section that keeps this sandbox's pods to
    /// itself: its own bridge, `pod_cidr`, and an empty CNI conf dir.
    pub fn network_config(&self, pod_cidr: &str) -> String {
        format!(
            "[network]\npod_cidr = \"{pod_cidr}\"\nbridge = \"{}\"\ncni_conf_dir = \"{}\"\n",
            self.bridge(),
            self.dir.path().join("net.d").display()
        )
    }

    /// Pod leftovers: processes in the cgroups of this sandbox's pods, the
    /// cgroups, the veths on its bridge, the bridge and its nftables table.
    fn sweep_pods(&self, leftovers: &mut Vec<String>) {
        let pods: Vec<String> = listing(&self.state.join("pods"))
            .unwrap_or_default()
            .into_iter()
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        // Pods with bulkhead's default cgroup parent, and pods whose tests
        // give them a parent below the sandbox's own cgroup (named as its bridge).
        // The parents tests give (kubelet's, in life) are not bulkhead's to
        // remove: only what is below them counts as left behind.
        let mut roots: Vec<(PathBuf, usize)> = pods.iter().map(|p| (Path::new("bulkhead").join(p), 0)).collect();
        roots.push((PathBuf::from(self.bridge()), 2));
        for (pod, depth) in &roots {
            let pod = pod.display();
            for hierarchy in listing(Path::new("/sys/fs/cgroup")).unwrap_or_default() {
                let dir = Path::new("/sys/fs/cgroup").join(&hierarchy).join(pod.to_string());
                if !dir.exists() {
                    continue;
                }
                let mut dirs: Vec<PathBuf> = walk_dirs(&dir);
                dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
                for d in &dirs {
                    for pid in std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default().lines() {
                        if let Ok(pid) = pid.trim().parse::<i32>() {
                            leftovers.push(format!("process {pid} in cgroup {pod} still runs"));
                            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
                for d in &dirs {
                    if d.strip_prefix(&dir).map_or(0, |rest| rest.components().count()) >= *depth {
                        leftovers.push(format!("cgroup {} remains", d.display()));
                    }
                    let _ = std::fs::remove_dir(d);
                }
            }
        }
        let bridge = self.bridge();
        if let Some(ports) = listing(&Path::new("/sys/class/net").join(&bridge).join("brif")) {
            for port in ports {
                leftovers.push(format!("veth {} remains", port.to_string_lossy()));
                let _ = Command::new("ip").arg("link").arg("del").arg(&port).stderr(Stdio::null()).status();
            }
        }
        let _ = Command::new("ip").args(["link", "del", &bridge]).stderr(Stdio::null()).status();
        let _ = Command::new("nft").args(["delete", "table", "inet", &bridge]).stderr(Stdio::null()).status();
    }

    /// Everything this sandbox's daemons left on the host, cleaning it up
    /// as it is found: processes that name the sandbox, pods' processes,
    /// cgroups and veths, mounts under it, host paths that did not exist
    /// before.
    pub fn sweep(&self) -> Vec<String> {
        let mut leftovers = Vec::new();
        self.sweep_pods(&mut leftovers);
        let marker = self.dir.path().to_string_lossy().into_owned();
        for pid in processes_mentioning(&marker) {
            leftovers.push(format!("process {pid} still runs"));
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        for mountpoint in bulkhead_runtime::mountinfo::mounted_under(self.dir.path()) {
            leftovers.push(format!("mount {} remains", mountpoint.display()));
            let _ = nix::mount::umount2(&mountpoint, nix::mount::MntFlags::MNT_DETACH);
        }
        for (path, before) in HOST_PATHS.iter().zip(&self.host_paths_before) {
            let after = listing(Path::new(path));
            match (before, &after) {
                (None, Some(_)) => leftovers.push(format!("{path} was created outside the sandbox")),
                (Some(before), Some(after)) => {
                    for added in after.difference(before) {
                        leftovers.push(format!("{path}/{} was created outside the sandbox", added.to_string_lossy()));
                    }
                }
                _ => {}
            }
        }
        leftovers
    }
}

impl Default for Sandbox {
    fn default() -> Sandbox {
        Sandbox::new()
    }
}

/// `dir` and every directory below it.
fn walk_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_owned()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(walk_dirs(&e.path()));
            }
        }
    }
    out
}

fn processes_mentioning(marker: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(marker))
        })
        .collect()
}

/// A running `bulkhead` daemon.
#[derive(Debug)]
pub struct Daemon {
    pub sandbox: Sandbox,
    extra: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
    starts: u32,
}

impl Daemon {
    /// Starts a daemon on a fresh sandbox and waits until it answers.
    pub async fn start() -> Daemon {
        Daemon::start_with(Sandbox::new(), &[]).await
    }

    /// Starts a daemon on `sandbox` with `extra` flags and waits until it answers.
    pub async fn start_with(sandbox: Sandbox, extra: &[&str]) -> Daemon {
        let log = sandbox.dir.path().join("daemon.log");
        let mut daemon =
            Daemon { sandbox, extra: extra.iter().map(|s| s.to_string()).collect(), child: None, log, starts: 0 };
        daemon.spawn().await;
        daemon
    }

    async fn spawn(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        let log = File::options().create(true).append(true).open(&self.log).expect("daemon log file");
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let child = self
            .sandbox
            .command(&extra)
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary().display()));
        self.child = Some(child);
        self.starts += 1;
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                panic!("bulkhead exited during start ({status}):\n{}", self.log_text());
            }
            if let Ok(mut client) = self.try_runtime().await
                && client.version(VersionRequest::default()).await.is_ok()
            {
                return;
            }
            assert!(Instant::now() < deadline, "bulkhead did not answer within 30s:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// Everything the daemon wrote to stdout and stderr, over all its starts.
    pub fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    async fn channel(&self) -> Result<Channel, tonic::transport::Error> {
        let socket = self.sandbox.socket.clone();
        Endpoint::try_from("http://[::]:50051")?
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(socket).await?)) }
            }))
            .await
    }

    async fn try_runtime(&self) -> Result<RuntimeServiceClient<Channel>, tonic::transport::Error> {
        Ok(RuntimeServiceClient::new(self.channel().await?))
    }

    /// A `RuntimeService` client connected over the socket.
    pub async fn runtime(&self) -> RuntimeServiceClient<Channel> {
        self.try_runtime().await.expect("connect RuntimeService")
    }

    /// An `ImageService` client connected over the socket.
    pub async fn image(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel().await.expect("connect ImageService"))
    }

    /// Kills the daemon with SIGKILL, as a crash would, and reaps it.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("daemon running");
        child.kill().expect("SIGKILL bulkhead");
        child.wait().expect("reap bulkhead");
    }

    /// Sends SIGTERM and waits (up to 30 s) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait for bulkhead") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("bulkhead ignored SIGTERM for 30s:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the daemon again on the same sandbox and flags.
    pub async fn restart(&mut self) {
        self.spawn().await;
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The test failed already: clean up without a second panic.
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            self.sandbox.sweep();
            return;
        }
        if self.child.is_some() {
            let status = self.terminate();
            assert!(status.success(), "bulkhead exited with {status} on SIGTERM:\n{}", self.log_text());
            assert!(!self.sandbox.socket.exists(), "a clean shutdown removes the socket");
        }
        let leftovers = self.sandbox.sweep();
        assert!(leftovers.is_empty(), "bulkhead left things behind: {leftovers:#?}");
    }
}

/// Runs `bulkhead` to completion with `args` (no daemon expected to stay),
/// returning its exit status and stderr.
pub fn run_to_exit(mut cmd: Command) -> (ExitStatus, String) {
    let out = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).output().expect("run bulkhead");
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}
