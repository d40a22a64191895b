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
    #[error("config.json: {field}: {what} are not supported yet")]
    Unsupported { field: String, what: String },
    #[error("container {id} does not exist")]
    NotFound { id: String },
    #[error("container {id} already exists")]
    Exists { id: String },
    #[error("invalid container id {id:?}: use letters, digits, '_', '-', '.' and '+'")]
    InvalidId { id: String },
    #[error("container {id} is {status:?}, not {wanted}")]
    WrongStatus { id: String, status: crate::container::Status, wanted: &'static str },
    #[error("container {id}: init failed: {message}")]
    InitFailed { id: String, message: String },
    #[error("state: {0}")]
    Store(#[from] bulkhead_store::Error),
    #[error("write {value:?} to {path}: {source}")]
    CgroupWrite {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{field} ({path}): {message}")]
    Hook { field: String, path: PathBuf, message: String },
    #[error(transparent)]
    Confine(#[from] bulkhead_confine::Error),
    #[error("containers are only spawned from a single-threaded process; this one has {threads} threads")]
    MultiThreaded { threads: usize },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Maps a failed syscall to [`Error::Syscall`], naming the operation and
/// the path (or object) it acted on.
pub(crate) fn sys(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(nix::errno::Errno) -> Error {
    let path = path.into();
    move |errno| Error::Syscall { op, path, errno }
}
