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
    #[error(
        "the pod CIDR {cidr} overlaps the host's route to {route} via {device}; choose a pod CIDR the node does not route elsewhere"
    )]
    CidrOverlapsRoute { cidr: String, route: String, device: String },
    #[error("invalid port mapping: {field} {reason}")]
    InvalidPort { field: &'static str, reason: String },
    #[error("CNI config {path}: {reason}")]
    CniConfig { path: std::path::PathBuf, reason: String },
    #[error("no CNI network config found in {dir}")]
    CniNoConfig { dir: std::path::PathBuf },
    #[error("CNI plugin {plugin:?} is not installed in {dirs}")]
    CniPluginMissing { plugin: String, dirs: String },
    #[error("CNI plugin {plugin:?} failed ({command}){}: {message}", code.map(|c| format!(" with code {c}")).unwrap_or_default())]
    CniPlugin { plugin: String, command: &'static str, code: Option<u64>, message: String },
    #[error("CNI plugin {plugin:?} did not finish {command} within {timeout:?}; killed")]
    CniTimeout { plugin: String, command: &'static str, timeout: std::time::Duration },
    #[error("CNI plugin {plugin:?} does not speak CNI version {version} (it speaks: {supported})")]
    CniVersion { plugin: String, version: String, supported: String },
    #[error("pod {container_id} has no CNI attachment")]
    CniNotAttached { container_id: String },
    #[error("network state: {0}")]
    Store(#[from] bulkhead_store::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
