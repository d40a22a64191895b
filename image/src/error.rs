/// Errors of the image store; each names the image, reference or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("blob {digest} not found in the content store")]
    BlobNotFound { digest: crate::Digest },
    #[error("blob {digest} failed verification: {reason}")]
    BlobMismatch { digest: crate::Digest, reason: String },
    #[error("{op} at {target}: {errno}")]
    Mount { op: &'static str, target: std::path::PathBuf, errno: nix::errno::Errno },
    #[error("layer entry {path}: {reason}")]
    Layer { path: std::path::PathBuf, reason: String },
    #[error("registry {registry}: {message}")]
    Registry { registry: String, message: String },
    #[error("registry {registry} refused the credentials: {message}")]
    Unauthorized { registry: String, message: String },
    #[error("image {reference} not found")]
    ImageNotFound { reference: String },
    #[error("invalid manifest: {reason}")]
    InvalidManifest { reason: String },
    #[error("no image for platform {wanted} (the index has: {available})")]
    NoMatchingPlatform { wanted: String, available: String },
    #[error("unsupported media type {media_type:?}")]
    UnsupportedMediaType { media_type: String },
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest { digest: String, reason: String },
    #[error("image metadata: {0}")]
    Store(#[from] bulkhead_store::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
