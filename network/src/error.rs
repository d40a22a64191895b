/// Errors of the network layer; each names the value, object or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid pod CIDR {value:?}: {reason}")]
    InvalidCidr { value: String, reason: String },
    #[error("network state: {0}")]
    Store(#[from] bulkhead_store::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
