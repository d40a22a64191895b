/// Errors of the image store; each names the image, reference or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("image metadata: {0}")]
    Store(#[from] bulkhead_store::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
