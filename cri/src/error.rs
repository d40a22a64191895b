//! The CRI server's error type, and the one place where errors become gRPC
//! statuses.

use std::path::PathBuf;

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config {origin}: key `{key}`: {message}")]
    Config { origin: PathBuf, key: String, message: String },
    #[error("config {origin}: line {line}: not valid TOML: {message}")]
    ConfigSyntax { origin: PathBuf, line: usize, message: String },
    #[error("read config {path}: {source}")]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bulkhead must run as root: it creates namespaces, mounts and cgroups (running as uid {euid})")]
    NotRoot { euid: u32 },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "socket {path} is held by a live daemon (it accepts connections); stop it first or choose another --socket"
    )]
    SocketInUse { path: PathBuf },
    #[error("socket path {path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error(
        "{path} is locked by another bulkhead daemon ({holder}); two daemons cannot share a root or state directory"
    )]
    Locked { path: PathBuf, holder: String },
    #[error("metrics endpoint {address} (metrics.address, --metrics-addr): {source}")]
    Metrics {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Runtime(#[from] bulkhead_runtime::Error),
    #[error(transparent)]
    Image(#[from] bulkhead_image::Error),
    #[error(transparent)]
    Network(#[from] bulkhead_network::Error),
    #[error(transparent)]
    Store(#[from] bulkhead_store::Error),
    #[error("pod sandbox {id} not found")]
    PodNotFound { id: String },
    #[error("container {id} not found")]
    ContainerNotFound { id: String },
    #[error("{what} name {name:?} is already reserved for {id}")]
    NameTaken { what: &'static str, name: String, id: String },
    #[error("{what} {id} is {state}: {wanted}")]
    WrongState { what: &'static str, id: String, state: String, wanted: &'static str },
    #[error("exec in container {id} did not finish within {seconds}s; killed")]
    ExecTimeout { id: String, seconds: i64 },
    #[error("the monitor of pod {pod_id}: {message}")]
    Monitor { pod_id: String, message: String },
    #[error("{what} is not supported by bulkhead {version} yet", version = env!("CARGO_PKG_VERSION"))]
    Unsupported { what: String },
    #[error("{rpc} is not implemented in bulkhead {version} yet", version = env!("CARGO_PKG_VERSION"))]
    Unimplemented { rpc: &'static str },
    #[error("too many streaming requests waiting to be used (at most {limit}); try again")]
    TooManyStreams { limit: usize },
    #[error("streaming server on {address} (streaming.address): {message}")]
    Streaming { address: String, message: String },
    #[error("{field}: {message}")]
    InvalidArgument { field: &'static str, message: String },
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }

    /// The gRPC status code this error is reported with.
    pub fn code(&self) -> Code {
        match self {
            Error::Unimplemented { .. } => Code::Unimplemented,
            Error::InvalidArgument { .. } | Error::Network(bulkhead_network::Error::InvalidCidr { .. }) => {
                Code::InvalidArgument
            }
            Error::Config { .. } | Error::ConfigSyntax { .. } => Code::InvalidArgument,
            Error::PodNotFound { .. } | Error::ContainerNotFound { .. } => Code::NotFound,
            Error::NameTaken { .. } => Code::AlreadyExists,
            Error::WrongState { .. } => Code::FailedPrecondition,
            Error::ExecTimeout { .. } => Code::DeadlineExceeded,
            Error::Unsupported { .. } => Code::Unimplemented,
            Error::Network(bulkhead_network::Error::PoolExhausted { .. }) | Error::TooManyStreams { .. } => {
                Code::ResourceExhausted
            }
            Error::Network(bulkhead_network::Error::HostPortTaken { .. }) => Code::AlreadyExists,
            Error::Network(
                bulkhead_network::Error::InvalidPort { .. } | bulkhead_network::Error::CidrOverlapsRoute { .. },
            ) => Code::InvalidArgument,
            Error::Network(
                bulkhead_network::Error::NoPodCidr
                | bulkhead_network::Error::CniNoConfig { .. }
                | bulkhead_network::Error::CniConfig { .. }
                | bulkhead_network::Error::CniPluginMissing { .. }
                | bulkhead_network::Error::CniVersion { .. },
            ) => Code::FailedPrecondition,
            Error::Image(bulkhead_image::Error::ImageNotFound { .. }) => Code::NotFound,
            Error::Image(
                bulkhead_image::Error::InvalidReference { .. } | bulkhead_image::Error::InvalidDigest { .. },
            ) => Code::InvalidArgument,
            Error::Image(bulkhead_image::Error::Unauthorized { .. }) => Code::Unauthenticated,
            Error::Image(bulkhead_image::Error::Registry { .. }) => Code::Unavailable,
            Error::Store(bulkhead_store::Error::InvalidId { .. }) => Code::InvalidArgument,
            Error::SocketInUse { .. } | Error::Locked { .. } => Code::FailedPrecondition,
            Error::NotRoot { .. } => Code::PermissionDenied,
            Error::ReadConfig { .. }
            | Error::Io { .. }
            | Error::NotASocket { .. }
            | Error::Metrics { .. }
            | Error::Streaming { .. }
            | Error::Runtime(_)
            | Error::Image(_)
            | Error::Network(_)
            | Error::Store(_)
            | Error::Monitor { .. }
            | Error::Internal(_) => Code::Internal,
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_carry_code_and_names() {
        let s = Status::from(Error::Unimplemented { rpc: "RunPodSandbox" });
        assert_eq!(s.code(), Code::Unimplemented);
        assert!(s.message().contains("RunPodSandbox"));
        let s = Status::from(Error::InvalidArgument {
            field: "runtime_config.network_config.pod_cidr",
            message: "bad".into(),
        });
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().starts_with("runtime_config.network_config.pod_cidr"));
    }
}
