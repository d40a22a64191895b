/// Errors of the network layer; each names the value, object or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid pod CIDR {value:?}: {reason}")]
    InvalidCidr { value: String, reason: String },
    #[error("the pod CIDR {cidr} has no free address left")]
    PoolExhausted { cidr: String },
    #[error("no pod CIDR is set (network.pod_cidr, or kubelet's UpdateRuntimeConfig)")]
    NoPodCidr,
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{op} {path}: {errno}")]
    Syscall { op: &'static str, path: std::path::PathBuf, errno: nix::errno::Errno },
    #[error("netlink: {op} {what}: {message}")]
    Netlink { op: &'static str, what: String, message: String },
    #[error("host port {protocol}/{host_port}{on} is already taken (by pod address {taken_by})")]
    HostPortTaken { protocol: &'static str, host_port: u16, on: String, taken_by: std::net::IpAddr },
    #[error("nftables: {what}: {message}")]
    Nftables { what: &'static str, message: String },
    #[error("network state: {0}")]
    Store(#[from] bulkhead_store::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
