/// Errors of the image store; each names the image, reference or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("layer entry {path}: {reason}")]
    Layer { path: std::path::PathBuf, reason: String },
    #[error("unsupported media type {media_type:?}")]
    UnsupportedMediaType { media_type: String },
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest { digest: String, reason: String },
    #[error("image metadata: {0}")]
    Store(#[from] bulkhead_store::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
