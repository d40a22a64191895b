//! What the bench programs share: the daemons they start (bulkhead and
//! containerd, each on private paths), killed if a bench fails, and the
//! gRPC channel over a daemon's unix socket, connected as the e2e harness
//! connects.

use std::fs;
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
