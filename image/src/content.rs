//! The content store: every blob (manifests, configs, layers) once, by
//! digest, under `<root>/images/blobs/<algorithm>/<hex>`. A blob is written
//! to `ingest/` while its digest is computed, and renamed into place only
//! after its size and digest check out, so a reader never sees a partial or
//! wrong blob; ingest leftovers from a crash are removed at open.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::Digest as _;

use crate::{Algorithm, Digest, Error, Result};

/// Blobs by digest.
#[derive(Debug)]
pub struct ContentStore {
    blobs: PathBuf,
    ingest: PathBuf,
    seq: AtomicU64,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Io { op, path, source }
}

impl ContentStore {
    /// Opens the store in `dir`, creating it, and removes unfinished writes.
    pub fn open(dir: &Path) -> Result<ContentStore> {
        let blobs = dir.join("blobs");
        let ingest = dir.join("ingest");
        for d in [blobs.join("sha256"), blobs.join("sha512"), ingest.clone()] {
            fs::create_dir_all(&d).map_err(io_err("create directory", &d))?;
        }
        for entry in fs::read_dir(&ingest).map_err(io_err("read directory", &ingest))?.flatten() {
            let _ = fs::remove_file(entry.path());
        }
        Ok(ContentStore { blobs, ingest, seq: AtomicU64::new(0) })
    }

    /// Where the blob `digest` lives (whether or not it is there).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.algorithm().name()).join(digest.hex())
    }

    /// The size of blob `digest`, if the store has it.
    pub fn size(&self, digest: &Digest) -> Option<u64> {
        fs::metadata(self.path(digest)).ok().map(|m| m.len())
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.size(digest).is_some()
    }

    /// Opens blob `digest` for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.path(digest);
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::BlobNotFound { digest: digest.clone() },
            _ => Error::Io { op: "open blob", path, source: e },
        })
    }

    /// Reads a small blob (a manifest, a config) whole.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.path(digest);
        fs::read(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::BlobNotFound { digest: digest.clone() },
            _ => Error::Io { op: "read blob", path, source: e },
        })
    }

    /// Starts writing blob `digest`, which must turn out `size` bytes long if given.
    pub fn writer(&self, digest: &Digest, size: Option<u64>) -> Result<BlobWriter> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self.ingest.join(format!("{}-{}.{}", digest.hex(), std::process::id(), seq));
        let file =
            OpenOptions::new().write(true).create_new(true).mode(0o644).open(&tmp).map_err(io_err("create", &tmp))?;
        let hasher = match digest.algorithm() {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        };
        Ok(BlobWriter {
            file,
            tmp,
            target: self.path(digest),
            digest: digest.clone(),
            size,
            written: 0,
            hasher,
            done: false,
        })
    }

    /// Stores `bytes` as blob `digest`, verifying it.
    pub fn put(&self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        let mut w = self.writer(digest, Some(bytes.len() as u64))?;
        w.write_all(bytes).map_err(io_err("write", &w.tmp.clone()))?;
        w.commit()
    }

    /// Removes blob `digest`; returns whether it was there.
    pub fn delete(&self, digest: &Digest) -> Result<bool> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::Io { op: "remove blob", path, source: e }),
        }
    }

    /// Every blob and its size.
    pub fn list(&self) -> Result<Vec<(Digest, u64)>> {
        let mut out = Vec::new();
        for alg in ["sha256", "sha512"] {
            let dir = self.blobs.join(alg);
            for entry in fs::read_dir(&dir).map_err(io_err("read directory", &dir))?.flatten() {
                let name = format!("{alg}:{}", entry.file_name().to_string_lossy());
                if let (Ok(digest), Ok(meta)) = (name.parse::<Digest>(), entry.metadata()) {
                    out.push((digest, meta.len()));
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    fn hex(self) -> String {
        match self {
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
        }
    }
}

/// A blob being written: hashed as it arrives, verified at commit.
pub struct BlobWriter {
    file: File,
    tmp: PathBuf,
    target: PathBuf,
    digest: Digest,
    size: Option<u64>,
    written: u64,
    hasher: Hasher,
    done: bool,
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter").field("digest", &self.digest).field("written", &self.written).finish()
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(size) = self.size
            && self.written + buf.len() as u64 > size
        {
            return Err(io::Error::other(format!("blob {} is longer than its {size} bytes", self.digest)));
        }
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Checks size and digest, makes the blob durable and visible.
    pub fn commit(mut self) -> Result<()> {
        self.done = true;
        let cleanup = |e: Error, tmp: &Path| {
            let _ = fs::remove_file(tmp);
            e
        };
        if let Some(size) = self.size
            && size != self.written
        {
            let e = Error::BlobMismatch {
                digest: self.digest.clone(),
                reason: format!("{} bytes, expected {size}", self.written),
            };
            return Err(cleanup(e, &self.tmp));
        }
        let hasher = std::mem::replace(&mut self.hasher, Hasher::Sha256(sha2::Sha256::new()));
        let actual = hasher.hex();
        if actual != self.digest.hex() {
            let e = Error::BlobMismatch { digest: self.digest.clone(), reason: format!("content hashes to {actual}") };
            return Err(cleanup(e, &self.tmp));
        }
        self.file
            .sync_all()
            .map_err(|e| cleanup(Error::Io { op: "fsync", path: self.tmp.clone(), source: e }, &self.tmp))?;
        fs::rename(&self.tmp, &self.target).map_err(|e| {
            cleanup(Error::Io { op: "rename into place", path: self.target.clone(), source: e }, &self.tmp)
        })
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_verified_before_they_are_visible() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let d = Digest::sha256_of(b"hello");
        store.put(&d, b"hello").unwrap();
        assert_eq!(store.read(&d).unwrap(), b"hello");
        assert_eq!(store.size(&d), Some(5));
        // The same blob again (a concurrent pull): fine.
        store.put(&d, b"hello").unwrap();

        let wrong = Digest::sha256_of(b"other");
        let err = store.put(&wrong, b"hello").unwrap_err().to_string();
        assert!(err.contains(&wrong.to_string()) && err.contains("hashes to"), "{err}");
        assert!(!store.contains(&wrong));
        let mut w = store.writer(&d, Some(3)).unwrap();
        assert!(w.write_all(b"hello").is_err(), "longer than announced");
        drop(w);
        let mut w = store.writer(&d, Some(9)).unwrap();
        w.write_all(b"hello").unwrap();
        assert!(w.commit().unwrap_err().to_string().contains("expected 9"));
        assert_eq!(std::fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0, "no temporary left");

        assert_eq!(store.list().unwrap(), vec![(d.clone(), 5)]);
        assert!(store.delete(&d).unwrap());
        assert!(matches!(store.read(&d), Err(Error::BlobNotFound { .. })));
    }

    #[test]
    fn open_clears_unfinished_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let w = store.writer(&Digest::sha256_of(b"x"), None).unwrap();
        std::mem::forget(w); // a crash mid-pull
        assert_eq!(std::fs::read_dir(dir.path().join("ingest")).unwrap().count(), 1);
        ContentStore::open(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
    }
}
