use std::path::PathBuf;

/// Errors of the runtime core; each names the file, field, object or
/// setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no cgroup filesystem is mounted (looked in {mountinfo})")]
    NoCgroupFs { mountinfo: PathBuf },
    #[error("cgroup driver \"systemd\" was asked for, but systemd is not running on this host ({marker} is missing)")]
    SystemdNotRunning { marker: PathBuf },
    #[error("config.json: {field}: {message}")]
    Spec { field: String, message: String },
    #[error("{op} {path}: {errno}")]
    Syscall { op: &'static str, path: PathBuf, errno: nix::errno::Errno },
    #[error("containers are only spawned from a single-threaded process; this one has {threads} threads")]
    MultiThreaded { threads: usize },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
