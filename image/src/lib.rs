//! The image store of bulkhead (image-spec 1.x and Docker v2): it owns image
//! references, the registry client, the content store of blobs by digest,
//! layer unpacking into overlayfs snapshots, garbage collection, and the
//! durable image metadata that the CRI `ImageService` reports. Built so far:
//! references and digests, the content store, layer unpacking, and the
//! metadata records; the registry client, snapshots and the ImageService
//! come next. It must not depend on the CRI server, the network layer or the
//! runtime core, and must never write outside its own directory under the
//! bulkhead root.

pub mod content;
mod digest;
mod error;
pub mod manifest;
mod metadata;
pub mod reference;
pub mod registry;
pub mod snapshot;
pub mod store;
mod sys;
pub mod unpack;

pub use content::ContentStore;
pub use digest::{Algorithm, Digest};
pub use error::{Error, Result};
pub use metadata::{ImageRecord, Images};
pub use reference::Reference;
pub use snapshot::Snapshots;
pub use store::ImageStore;
