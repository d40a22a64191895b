//! Exec: a new process in a running container, through `bulkhead-oci exec`
//! (a fresh single-threaded process does the clone, joining the
//! container's namespaces and cgroup with its user, capabilities,
//! no_new_privs and seccomp profile), its stdio proxied to the session.
//! With a tty, the terminal's master comes back over a console socket of
//! ours and resizes are applied to it. When the client goes away, the
//! exec'd process is killed; the container is not touched.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::process::Child;

use super::remotecommand::{Outcome, Session};
use super::transport::{Sink, Source};
use crate::containers::{container_of, exec_command, exec_pid_file, kill_exec, require_state};
use crate::service::Context;
use crate::state::ContainerState;

/// How much of `bulkhead-oci`'s own complaint is kept for the status.
const COMPLAINT_CAP: usize = 4096;

/// Runs `cmd` in container `id` for `session`, then ends the session.
pub async fn run(ctx: Arc<Context>, id: String, cmd: Vec<String>, tty: bool, session: Session) {
    let outcome = match prepare(&ctx, &id) {
        Ok(pid_file) => {
            let outcome = if tty {
                with_terminal(&Job { ctx: &ctx, id: &id, cmd: &cmd, pid_file: &pid_file }, session).await
            } else {
                with_pipes(&Job { ctx: &ctx, id: &id, cmd: &cmd, pid_file: &pid_file }, session).await
            };
            let _ = std::fs::remove_file(&pid_file);
            outcome
        }
        Err(message) => (session, Outcome::Failed(message)),
    };
    let (session, outcome) = outcome;
    session.finish(outcome).await;
}

fn prepare(ctx: &Context, id: &str) -> Result<PathBuf, String> {
    let record = container_of(ctx, id).map_err(|e| e.to_string())?;
    require_state(ctx, &record, &[ContainerState::Running], "exec needs a running container")
        .map_err(|e| e.to_string())?;
    exec_pid_file(&record).map_err(|e| e.to_string())
}

/// Copies `from` to `to` until end of file, then closes `to`.
async fn pump(mut from: impl AsyncRead + Unpin, mut to: Sink) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    to.close().await;
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    status.code().unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0))
}

/// Waits for `child`, unless the client goes first: then the exec'd
/// process dies. `None` when the client went.
async fn wait(child: &mut Child, session: &mut Session, pid_file: &std::path::Path) -> Option<std::io::Result<i32>> {
    let mut gone = session.gone.clone();
    tokio::select! {
        status = child.wait() => Some(status.map(exit_code)),
        () = super::transport::went(&mut gone) => {
            kill_exec(pid_file);
            let _ = child.wait().await;
            None
        }
    }
}

/// One exec: what runs, where, and where its pid is recorded.
struct Job<'a> {
    ctx: &'a Context,
    id: &'a str,
    cmd: &'a [String],
    pid_file: &'a std::path::Path,
}

impl Job<'_> {
    /// `bulkhead-oci exec` of the job, on a terminal sent to `console` if given.
    fn command(&self, console: Option<&std::path::Path>) -> tokio::process::Command {
        exec_command(self.ctx, self.id, self.pid_file, console, self.cmd)
    }
}

async fn with_pipes(job: &Job<'_>, mut session: Session) -> (Session, Outcome) {
    let pid_file = job.pid_file;
    let piped = |wanted: bool| if wanted { Stdio::piped() } else { Stdio::null() };
    let spawned = job
        .command(None)
        .stdin(piped(session.stdin.is_some()))
        .stdout(piped(session.stdout.is_some()))
        .stderr(piped(session.stderr.is_some()))
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return (session, Outcome::Failed(format!("start bulkhead-oci exec: {e}"))),
    };
    let feeding = match (session.stdin.take(), child.stdin.take()) {
        (Some(mut from), Some(mut to)) => Some(tokio::spawn(async move {
            while let Some(data) = from.read().await {
                if to.write_all(&data).await.is_err() {
                    break;
                }
            }
            // Dropping `to` closes the process's stdin: end of file.
        })),
        _ => None,
    };
    let mut outputs = Vec::new();
    if let (Some(out), Some(sink)) = (child.stdout.take(), session.stdout.take()) {
        outputs.push(tokio::spawn(pump(out, sink)));
    }
    if let (Some(err), Some(sink)) = (child.stderr.take(), session.stderr.take()) {
        outputs.push(tokio::spawn(pump(err, sink)));
    }
    let waited = wait(&mut child, &mut session, pid_file).await;
    if let Some(feeding) = feeding {
        feeding.abort();
    }
    let outcome = match waited {
        Some(Ok(code)) => {
            // Everything the process wrote reaches the client before the status.
            for output in outputs {
                let _ = output.await;
            }
            Outcome::Exited(code)
        }
        Some(Err(e)) => Outcome::Failed(format!("wait for bulkhead-oci exec: {e}")),
        None => Outcome::Failed("the client went away".into()),
    };
    (session, outcome)
}

/// A pty master, read and written without blocking the runtime.
struct Master(AsyncFd<OwnedFd>);

impl Master {
    fn new(fd: OwnedFd) -> std::io::Result<Master> {
        let flags = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL)?);
        fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        // SAFETY: `fd` is an owned, open descriptor that the AsyncFd owns (and closes) from here on.
        unsafe { AsyncFd::register(fd) }.map(Master).map_err(|e| e.into_parts().1)
    }

    /// Reads output; 0 once the terminal is closed (EIO from a master whose slave is gone).
    async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut ready = self.0.readable().await?;
            match ready.try_io(|fd| nix::unistd::read(fd.get_ref(), buf).map_err(std::io::Error::from)) {
                Ok(Err(e)) if e.raw_os_error() == Some(nix::libc::EIO) => return Ok(0),
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    async fn write_all(&self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let mut ready = self.0.writable().await?;
            match ready.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(std::io::Error::from)) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}

async fn with_terminal(job: &Job<'_>, mut session: Session) -> (Session, Outcome) {
    let (ctx, pid_file) = (job.ctx, job.pid_file);
    let dir = ctx.config.state.join("sockets");
    let console = dir.join(format!("exec-{}.sock", pid_file.file_stem().and_then(|s| s.to_str()).unwrap_or("tty")));
    let _ = std::fs::create_dir_all(&dir);
    let listener = match UnixListener::bind(&console) {
        Ok(listener) => listener,
        Err(e) => return (session, Outcome::Failed(format!("console socket {}: {e}", console.display()))),
    };
    let spawned = job
        .command(Some(&console))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let _ = std::fs::remove_file(&console);
            return (session, Outcome::Failed(format!("start bulkhead-oci exec: {e}")));
        }
    };
    let mut complaint = child.stderr.take();
    let accepted = tokio::select! {
        accepted = listener.accept() => accepted.map_err(|e| format!("accept on the console socket: {e}")),
        status = child.wait() => {
            let mut text = String::new();
            if let Some(err) = complaint.as_mut() {
                let _ = err.take(COMPLAINT_CAP as u64).read_to_string(&mut text).await;
            }
            Err(match status {
                Ok(status) => format!("bulkhead-oci exec exited ({status}) before its terminal was ready: {}", text.trim()),
                Err(e) => format!("wait for bulkhead-oci exec: {e}"),
            })
        }
    };
    drop(listener);
    let _ = std::fs::remove_file(&console);
    let master = accepted.and_then(|(stream, _)| {
        let stream = stream.into_std().map_err(|e| format!("console socket: {e}"))?;
        stream.set_nonblocking(false).map_err(|e| format!("console socket: {e}"))?;
        let fd = bulkhead_runtime::receive_master_from(&stream).map_err(|e| e.to_string())?;
        Master::new(fd).map_err(|e| format!("terminal: {e}"))
    });
    let master = match master {
        Ok(master) => Arc::new(master),
        Err(message) => {
            kill_exec(pid_file);
            let _ = child.kill().await;
            return (session, Outcome::Failed(message));
        }
    };
    // Drain bulkhead-oci's stderr so it can never block on it.
    if let Some(mut err) = complaint {
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut err, &mut tokio::io::sink()).await;
        });
    }
    let mut tasks = Vec::new();
    if let Some(mut resizes) = session.resize.take() {
        let master = master.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(size) = resizes.recv().await {
                if let Err(e) =
                    bulkhead_runtime::terminal::set_size(&master.0.get_ref().as_raw_fd(), size.width, size.height)
                {
                    tracing::debug!(error = %e, "resize");
                }
            }
        }));
    }
    if let Some(mut from) = session.stdin.take() {
        let master = master.clone();
        tasks.push(tokio::spawn(async move { feed_terminal(&mut from, &master).await }));
    }
    let output = session.stdout.take().map(|mut sink| {
        let master = master.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = master.read(&mut buf).await {
                if n == 0 || sink.write(&buf[..n]).await.is_err() {
                    break;
                }
            }
            sink.close().await;
        })
    });
    let waited = wait(&mut child, &mut session, pid_file).await;
    for task in tasks {
        task.abort();
    }
    let outcome = match waited {
        Some(Ok(code)) => {
            if let Some(output) = output {
                let _ = output.await;
            }
            Outcome::Exited(code)
        }
        Some(Err(e)) => Outcome::Failed(format!("wait for bulkhead-oci exec: {e}")),
        None => Outcome::Failed("the client went away".into()),
    };
    (session, outcome)
}

/// Client input to the terminal; at its end, an end-of-file character, as
/// a closed terminal input reads in canonical mode.
async fn feed_terminal(from: &mut Source, master: &Master) {
    while let Some(data) = from.read().await {
        if master.write_all(&data).await.is_err() {
            return;
        }
    }
    let _ = master.write_all(&[0x04]).await;
}
