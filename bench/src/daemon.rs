//! What the bench programs share: the daemons they start (bulkhead and
//! containerd, each on private paths), killed if a bench fails, and the
//! gRPC channel over a daemon's unix socket, connected as the e2e harness
//! connects.

use std::fs;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tonic::transport::{Channel, Endpoint, Uri};

pub type Result<T> = std::result::Result<T, String>;

/// A daemon this bench started; killed on drop if still running.
pub struct Daemon {
    pub name: &'static str,
    child: Option<Child>,
    /// Where its stdout and stderr go (appended).
    pub log: PathBuf,
}

impl Daemon {
    pub fn spawn(name: &'static str, command: &mut Command, log: &Path) -> Result<Daemon> {
        let out = fs::File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("open {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| format!("dup {}: {e}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("start {name} ({:?}): {e}", command.get_program()))?;
        Ok(Daemon { name, child: Some(child), log: log.to_owned() })
    }

    /// Starts `bulkhead` on its own root, state directory, socket and
    /// configuration file, logging at `log_level` to `log`.
    pub fn bulkhead(
        binary: &Path,
        dirs: [&Path; 2],
        socket: &Path,
        config: &Path,
        log_level: &str,
        log: &Path,
    ) -> Result<Daemon> {
        let [root, state] = dirs;
        let mut command = Command::new(binary);
        command.arg("--root").arg(root).arg("--state").arg(state).arg("--socket").arg(socket);
        command.arg("--config").arg(config).args(["--log-level", log_level]);
        Daemon::spawn("bulkhead", &mut command, log)
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Fails, with the end of the log, if the daemon has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else { return Err(format!("{} is stopped", self.name)) };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                self.child = None;
                Err(format!("{} exited: {status}; the end of its log:\n{}", self.name, tail(&self.log)))
            }
            Err(e) => Err(format!("wait for {}: {e}", self.name)),
        }
    }

    /// Polls every 20 ms, up to 60 s, until `ready` (given a channel over
    /// `socket`, once it exists) says yes; `ready`'s error is what the
    /// failure names.
    pub async fn wait_until<T, F, Fut>(&mut self, socket: &Path, mut ready: F) -> Result<T>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::from("no socket yet");
        loop {
            self.check_alive()?;
            if socket.exists() {
                match connect(socket).await {
                    Ok(channel) => match ready(channel).await {
                        Ok(value) => return Ok(value),
                        Err(e) => last = e,
                    },
                    Err(e) => last = e,
                }
            }
            if Instant::now() > deadline {
                return Err(format!("{} was not ready within 60 s: {last}", self.name));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then SIGKILL after 20 s; an exit other than 0 is an error.
    pub async fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(format!(
                        "{} stopped with {status}; the end of its log:\n{}",
                        self.name,
                        tail(&self.log)
                    ));
                }
                Ok(None) if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("{} did not stop within 20 s of SIGTERM: killed", self.name));
                }
                Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => return Err(format!("wait for {}: {e}", self.name)),
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The last lines of a log file.
pub fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A gRPC channel over the unix socket, as the e2e harness connects.
pub async fn connect(socket: &Path) -> Result<Channel> {
    let socket = socket.to_owned();
    Endpoint::try_from("http://[::]:50051")
        .map_err(|e| e.to_string())?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(socket).await?)) }
        }))
        .await
        .map_err(|e| format!("connect {}: {e}", socket_display(&e)))
}

fn socket_display(e: &tonic::transport::Error) -> String {
    use std::error::Error as _;
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// What a bench sets in containerd's configuration beyond what every
/// bench's containerd has.
#[derive(Debug)]
pub struct ContainerdConfig<'a> {
    /// Where its state and sockets go (else `dir`).
    pub state: Option<&'a Path>,
    /// The CRI plugin's `sandbox_image`.
    pub sandbox_image: &'a str,
    /// The CNI plugins' directory.
    pub cni_bin: &'a Path,
    /// Lines for the CRI plugin's table and for its `containerd` table.
    pub cri: &'a str,
    pub containerd: &'a str,
    /// More tables, at the end.
    pub tables: &'a str,
}

impl Default for ContainerdConfig<'_> {
    /// Debian's CNI plugins, nothing else set.
    fn default() -> Self {
        ContainerdConfig {
            state: None,
            sandbox_image: "",
            cni_bin: Path::new("/usr/lib/cni"),
            cri: "",
            containerd: "",
            tables: "",
        }
    }
}

/// Writes containerd's `config.toml` in `dir`, and returns its path:
/// config version 2 with its own root (`dir/root`), state, gRPC, ttrpc and
/// debug sockets and `opt` path; the CRI plugin with its streaming server
/// on 127.0.0.1 (any port), the overlayfs snapshotter, CNI configurations
/// from `dir/cni`, and `registry` (`host:port`, plain HTTP) through a
/// `hosts.toml` under `dir/certs.d`.
pub fn write_containerd_config(dir: &Path, registry: &str, c: &ContainerdConfig) -> Result<PathBuf> {
    let hosts = dir.join("certs.d").join(registry);
    fs::create_dir_all(&hosts).map_err(|e| format!("create {}: {e}", hosts.display()))?;
    let hosts_toml = format!(
        "server = \"http://{registry}\"\n\n[host.\"http://{registry}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
    );
    fs::write(hosts.join("hosts.toml"), hosts_toml).map_err(|e| format!("write hosts.toml: {e}"))?;
    let d = dir.display();
    let r = c.state.unwrap_or(dir).display();
    let config = format!(
        r#"version = 2
root = "{d}/root"
state = "{r}/state"

[grpc]
  address = "{r}/containerd.sock"

[ttrpc]
  address = "{r}/containerd.sock.ttrpc"

[debug]
  address = "{r}/debug.sock"
  level = "warn"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
{cri}
[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
{containerd}
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{cni_bin}"
  conf_dir = "{d}/cni"

[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "{d}/certs.d"
{tables}"#,
        sandbox_image = c.sandbox_image,
        cri = c.cri,
        containerd = c.containerd,
        cni_bin = c.cni_bin.display(),
        tables = c.tables,
    );
    let path = dir.join("config.toml");
    fs::write(&path, config).map_err(|e| format!("write {}: {e}", path.display()))?;
    Ok(path)
}
