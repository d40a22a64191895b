//! The image store as the CRI uses it: pull (resolve, fetch every blob
//! once, unpack every layer once into its chain-ID snapshot, record the
//! image), find an image by reference, id or digest, remove it and
//! collect what no image uses any more, and measure the space used.
//! Records change under one lock; two concurrent pulls of one blob may both
//! download it (the content store keeps one copy). A crash mid-pull leaves
//! only temporaries, which the next open clears, and no image record.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::content::ContentStore;
use crate::manifest::{self, Fetched, ImageConfig, Platform};
use crate::registry::{Credentials, RegistryClient, RegistryConfig};
use crate::snapshot::Snapshots;
use crate::unpack::{Compression, chain_id, unpack};
use crate::{Digest, Error, ImageRecord, Images, Reference, Result};

fn body_len(body: &[u8]) -> u64 {
    body.len() as u64
}

/// Content, snapshots and records under `<root>/images`.
#[derive(Debug)]
pub struct ImageStore {
    root: PathBuf,
    content: ContentStore,
    snapshots: Snapshots,
    images: Images,
    client: RegistryClient,
    /// One pull or removal at a time changes records and collects garbage.
    lock: tokio::sync::Mutex<()>,
}

impl ImageStore {
    /// Opens (creating) the store under `root`, clearing unfinished work.
    pub fn open(root: &Path, registry: RegistryConfig) -> Result<ImageStore> {
        Ok(ImageStore {
            root: root.to_owned(),
            content: ContentStore::open(&root.join("content"))?,
            snapshots: Snapshots::open(&root.join("snapshots"))?,
            images: Images::open(root)?,
            client: RegistryClient::new(registry)?,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    pub fn snapshots(&self) -> &Snapshots {
        &self.snapshots
    }

    /// Every image.
    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        self.images.list()
    }

    /// The image named by `name`: an image id (`sha256:...` or its hex, or a
    /// unique prefix of it), or a reference by tag or digest.
    pub fn find(&self, name: &str) -> Result<Option<ImageRecord>> {
        let images = self.images.list()?;
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if hex.len() >= 12 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut by_id = images.iter().filter(|i| i.id.trim_start_matches("sha256:").starts_with(hex));
            if let (Some(image), None) = (by_id.next(), by_id.next()) {
                return Ok(Some(image.clone()));
            }
        }
        let reference: Reference = name.parse()?;
        let wanted = reference.to_string();
        Ok(images.into_iter().find(|i| i.repo_tags.contains(&wanted) || i.repo_digests.contains(&wanted)))
    }

    /// Pulls `reference` and records it; returns the image and the bytes
    /// downloaded (blobs already in the store cost nothing).
    pub async fn pull(self: &Arc<Self>, reference: &Reference, creds: &Credentials) -> Result<(ImageRecord, u64)> {
        let mut downloaded = 0;
        let (manifest_digest, media_type, body) = self.client.manifest(reference, &reference.object(), creds).await?;
        downloaded += body_len(&body);
        let mut blobs = vec![manifest_digest.clone()];
        self.put_blob(&manifest_digest, body.clone()).await?;
        let manifest = match manifest::parse(media_type.as_deref(), &body)? {
            Fetched::Manifest(m) => m,
            Fetched::Index(index) => {
                let chosen = index.select(&Platform::host())?.digest.clone();
                let (digest, media_type, body) = self.client.manifest(reference, &chosen.to_string(), creds).await?;
                downloaded += body_len(&body);
                self.put_blob(&digest, body.clone()).await?;
                blobs.push(digest);
                match manifest::parse(media_type.as_deref(), &body)? {
                    Fetched::Manifest(m) => m,
                    Fetched::Index(_) => {
                        return Err(Error::InvalidManifest { reason: "an index inside an index".into() });
                    }
                }
            }
        };
        downloaded += self.client.blob(reference, &manifest.config, &self.content, creds).await?;
        blobs.push(manifest.config.digest.clone());
        let config = ImageConfig::parse(&self.content.read(&manifest.config.digest)?)?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(Error::InvalidManifest {
                reason: format!(
                    "{} layers but {} diff IDs in the config",
                    manifest.layers.len(),
                    config.rootfs.diff_ids.len()
                ),
            });
        }
        // Each layer is downloaded, then unpacked into its own snapshot, as soon
        // as it can: up to image.max_concurrent_downloads at once, so unpacking one layer
        // overlaps downloading the next and several cores unpack.
        let mut chain_ids = Vec::new();
        for i in 0..manifest.layers.len() {
            let chain = chain_id(&config.rootfs.diff_ids[..=i])
                .ok_or_else(|| Error::InvalidManifest { reason: "no layers".into() })?;
            chain_ids.push(chain);
        }
        let slots = tokio::sync::Semaphore::new(self.client.max_concurrent_layers());
        let layer_jobs = manifest.layers.iter().enumerate().map(|(i, layer)| {
            let (slots, chain, diff_id) = (&slots, chain_ids[i].clone(), config.rootfs.diff_ids[i].clone());
            async move {
                let _slot = slots.acquire().await.map_err(|e| Error::Registry {
                    registry: reference.registry().to_owned(),
                    message: format!("layer slots: {e}"),
                })?;
                let fetched = self.client.blob(reference, layer, &self.content, creds).await?;
                let compression = Compression::from_media_type(&layer.media_type)?;
                let store = Arc::clone(self);
                let digest = layer.digest.clone();
                tokio::task::spawn_blocking(move || {
                    store.snapshots.create(&chain, |dir| {
                        let blob = store.content.open_blob(&digest)?;
                        unpack(std::io::BufReader::with_capacity(256 * 1024, blob), compression, dir, Some(&diff_id))
                    })
                })
                .await
                .map_err(|e| Error::Registry {
                    registry: reference.registry().to_owned(),
                    message: format!("unpack task: {e}"),
                })??;
                Ok::<u64, Error>(fetched)
            }
        });
        for done in futures_util::future::join_all(layer_jobs).await {
            downloaded += done?;
        }
        blobs.extend(manifest.layers.iter().map(|l| l.digest.clone()));
        let _guard = self.lock.lock().await;
        let id = manifest.config.digest.to_string();
        let mut record = self.images.get(&id)?.unwrap_or(ImageRecord {
            id: id.clone(),
            repo_tags: Vec::new(),
            repo_digests: Vec::new(),
            size: 0,
            pinned: false,
            config: config.clone(),
            blobs: Vec::new(),
            chain_ids: chain_ids.clone(),
        });
        record.size = manifest.layers.iter().map(|l| l.size).sum::<u64>() + manifest.config.size;
        record.config = config;
        record.chain_ids = chain_ids;
        for blob in blobs {
            if !record.blobs.contains(&blob) {
                record.blobs.push(blob);
            }
        }
        let repo_digest = reference.with_digest(manifest_digest).to_string();
        if !record.repo_digests.contains(&repo_digest) {
            record.repo_digests.push(repo_digest);
        }
        if reference.digest().is_none() {
            let tag = reference.to_string();
            // A tag names one image: take it from any other.
            for mut other in self.images.list()?.into_iter().filter(|o| o.id != id && o.repo_tags.contains(&tag)) {
                other.repo_tags.retain(|t| t != &tag);
                self.images.put(&other)?;
            }
            if !record.repo_tags.contains(&tag) {
                record.repo_tags.push(tag);
            }
        }
        self.images.put(&record)?;
        Ok((record, downloaded))
    }

    async fn put_blob(self: &Arc<Self>, digest: &Digest, bytes: Vec<u8>) -> Result<()> {
        let store = Arc::clone(self);
        let digest = digest.clone();
        tokio::task::spawn_blocking(move || store.content.put(&digest, &bytes))
            .await
            .map_err(|e| Error::Registry { registry: String::new(), message: format!("store task: {e}") })?
    }

    /// Removes the image `name` names (by tag, digest or id) with all its
    /// names, as containerd's CRI does, then frees what no image uses.
    /// Returns whether an image was found.
    pub async fn remove(&self, name: &str) -> Result<bool> {
        let _guard = self.lock.lock().await;
        let Some(image) = self.find(name)? else { return Ok(false) };
        self.images.remove(&image.id)?;
        self.collect_garbage()?;
        Ok(true)
    }

    /// Deletes blobs and snapshots that no image record uses.
    pub fn collect_garbage(&self) -> Result<(u64, u64)> {
        let images = self.images.list()?;
        let used_blobs: std::collections::BTreeSet<&Digest> = images.iter().flat_map(|i| i.blobs.iter()).collect();
        let used_chains: std::collections::BTreeSet<&Digest> = images.iter().flat_map(|i| i.chain_ids.iter()).collect();
        let (mut blobs, mut snapshots) = (0, 0);
        for (digest, _) in self.content.list()? {
            if !used_blobs.contains(&digest) && self.content.delete(&digest)? {
                blobs += 1;
            }
        }
        for chain in self.snapshots.list()? {
            if !used_chains.contains(&chain) && self.snapshots.remove(&chain)? {
                snapshots += 1;
            }
        }
        Ok((blobs, snapshots))
    }

    /// Bytes and inodes used under the store's root.
    pub fn usage(&self) -> (u64, u64) {
        fn walk(dir: &Path, bytes: &mut u64, inodes: &mut u64) {
            let Ok(entries) = std::fs::read_dir(dir) else { return };
            for entry in entries.flatten() {
                let Ok(meta) = entry.metadata() else { continue };
                *inodes += 1;
                *bytes += std::os::unix::fs::MetadataExt::blocks(&meta) * 512;
                if meta.is_dir() {
                    walk(&entry.path(), bytes, inodes);
                }
            }
        }
        let (mut bytes, mut inodes) = (0, 0);
        walk(&self.root, &mut bytes, &mut inodes);
        (bytes, inodes)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}
