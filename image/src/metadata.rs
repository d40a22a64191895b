//! Durable image metadata: one record per image, keyed by image id (the
//! digest of its config), persisted under `<root>/images/meta`.

use std::path::Path;

use bulkhead_store::Collection;
use serde::{Deserialize, Serialize};

use crate::Result;

/// What bulkhead knows of one image, as the CRI `Image` message reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Image id: the digest of the image config, `sha256:<hex>`.
    pub id: String,
    /// Normalized references that name this image, `registry/repo:tag`.
    pub repo_tags: Vec<String>,
    /// Normalized references by manifest digest, `registry/repo@sha256:<hex>`.
    pub repo_digests: Vec<String>,
    /// Size in bytes of the image's layers as stored.
    pub size: u64,
    /// Pinned images are never garbage collected by kubelet.
    pub pinned: bool,
    /// The image config (what container creation uses).
    #[serde(default)]
    pub config: crate::manifest::ImageConfig,
    /// Every blob the image needs: manifests, config, layers.
    #[serde(default)]
    pub blobs: Vec<crate::Digest>,
    /// The chain IDs of its layer snapshots, bottom first.
    #[serde(default)]
    pub chain_ids: Vec<crate::Digest>,
}

/// The image metadata records under a store root.
#[derive(Debug)]
pub struct Images {
    records: Collection<ImageRecord>,
}

impl Images {
    /// Opens the image metadata below `image_root` (`<root>/images`).
    pub fn open(image_root: &Path) -> Result<Images> {
        Ok(Images { records: Collection::open(image_root.join("meta"))? })
    }

    /// Every image, sorted by id.
    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        Ok(self.records.load_all()?.into_iter().map(|(_, r)| r).collect())
    }

    pub fn get(&self, id: &str) -> Result<Option<ImageRecord>> {
        Ok(self.records.get(id)?)
    }

    /// Stores `image`, replacing the record of the same id atomically.
    pub fn put(&self, image: &ImageRecord) -> Result<()> {
        Ok(self.records.put(&image.id, image)?)
    }

    /// Removes the record of `id`; returns whether it existed.
    pub fn remove(&self, id: &str) -> Result<bool> {
        Ok(self.records.delete(id)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let image = ImageRecord {
            id: format!("sha256:{}", "ab".repeat(32)),
            repo_tags: vec!["docker.io/library/busybox:latest".into()],
            repo_digests: vec![format!("docker.io/library/busybox@sha256:{}", "cd".repeat(32))],
            size: 4096,
            pinned: false,
            config: Default::default(),
            blobs: Vec::new(),
            chain_ids: Vec::new(),
        };
        Images::open(dir.path()).unwrap().put(&image).unwrap();
        let images = Images::open(dir.path()).unwrap();
        assert_eq!(images.list().unwrap(), vec![image.clone()]);
        assert_eq!(images.get(&image.id).unwrap(), Some(image.clone()));
        assert!(images.remove(&image.id).unwrap());
        assert!(images.list().unwrap().is_empty());
    }
}
