//! Layer snapshots: each layer unpacked once, into a directory keyed by its
//! chain ID and shared by every image that contains it, and the overlay
//! mount that stacks a chain of them under a container's writable layer.
//! A snapshot is built in `tmp/` and renamed into place when complete, so a
//! crash never leaves a half-unpacked layer visible; `tmp/` is cleared at open.

use std::fs;
use std::path::{Path, PathBuf};

use crate::{Digest, Error, Result};

/// The committed layer snapshots under `<root>/images/snapshots`.
#[derive(Debug)]
pub struct Snapshots {
    dir: PathBuf,
    tmp: PathBuf,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Io { op, path, source }
}

impl Snapshots {
    pub fn open(dir: &Path) -> Result<Snapshots> {
        let tmp = dir.join("tmp");
        fs::create_dir_all(&tmp).map_err(io_err("create directory", &tmp))?;
        for entry in fs::read_dir(&tmp).map_err(io_err("read directory", &tmp))?.flatten() {
            let _ = fs::remove_dir_all(entry.path());
        }
        Ok(Snapshots { dir: dir.to_owned(), tmp })
    }

    /// The filesystem of the snapshot for `chain_id`.
    pub fn layer_dir(&self, chain_id: &Digest) -> PathBuf {
        self.dir.join(chain_id.hex()).join("fs")
    }

    pub fn exists(&self, chain_id: &Digest) -> bool {
        self.layer_dir(chain_id).is_dir()
    }

    /// Builds the snapshot for `chain_id` with `build` (given an empty
    /// directory) unless it exists; commits it atomically.
    pub fn create<T>(&self, chain_id: &Digest, build: impl FnOnce(&Path) -> Result<T>) -> Result<Option<T>> {
        if self.exists(chain_id) {
            return Ok(None);
        }
        let staging = tempfile::Builder::new()
            .prefix(chain_id.hex())
            .tempdir_in(&self.tmp)
            .map_err(io_err("create snapshot staging", &self.tmp))?;
        let fs_dir = staging.path().join("fs");
        fs::create_dir(&fs_dir).map_err(io_err("create directory", &fs_dir))?;
        let built = build(&fs_dir)?;
        let target = self.dir.join(chain_id.hex());
        match fs::rename(staging.path(), &target) {
            Ok(()) => {
                // Renamed away: nothing left for the TempDir to remove.
                let _ = staging.keep();
                Ok(Some(built))
            }
            // Another pull committed the same layer first: keep theirs.
            Err(_) if self.exists(chain_id) => Ok(None),
            Err(e) => Err(Error::Io { op: "commit snapshot", path: target, source: e }),
        }
    }

    /// Removes the snapshot for `chain_id`.
    pub fn remove(&self, chain_id: &Digest) -> Result<bool> {
        let dir = self.dir.join(chain_id.hex());
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::Io { op: "remove snapshot", path: dir, source: e }),
        }
    }

    /// The chain IDs of every committed snapshot.
    pub fn list(&self) -> Result<Vec<Digest>> {
        let mut out: Vec<Digest> = fs::read_dir(&self.dir)
            .map_err(io_err("read directory", &self.dir))?
            .flatten()
            .filter_map(|e| format!("sha256:{}", e.file_name().to_string_lossy()).parse().ok())
            .collect();
        out.sort();
        Ok(out)
    }
}

/// Mounts an overlay at `target`: `lowers` (topmost first), under the
/// writable `upper` with its `work` directory (same filesystem as `upper`).
/// Each lower is passed on its own (`lowerdir+`), so no page limit applies.
pub fn mount_overlay(lowers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<()> {
    let fail = |op: &'static str| {
        let target = target.to_owned();
        move |errno: nix::errno::Errno| Error::Mount { op, target, errno }
    };
    let fs = crate::sys::fsopen("overlay").map_err(fail("open an overlay context"))?;
    let mut one_by_one = true;
    for lower in lowers {
        match crate::sys::fsconfig_string(&fs, "lowerdir+", &lower.to_string_lossy()) {
            Ok(()) => {}
            // Kernels before 6.8 lack lowerdir+: fall back to one colon-joined value
            // (which must then fit in a page).
            Err(nix::errno::Errno::EINVAL) if one_by_one && lower == &lowers[0] => {
                one_by_one = false;
                break;
            }
            Err(errno) => return Err(fail("add a lower layer")(errno)),
        }
    }
    if !one_by_one {
        let joined: Vec<String> = lowers.iter().map(|l| l.to_string_lossy().into_owned()).collect();
        crate::sys::fsconfig_string(&fs, "lowerdir", &joined.join(":")).map_err(fail("set the lower layers"))?;
    }
    crate::sys::fsconfig_string(&fs, "upperdir", &upper.to_string_lossy()).map_err(fail("set the upper layer"))?;
    crate::sys::fsconfig_string(&fs, "workdir", &work.to_string_lossy()).map_err(fail("set the work directory"))?;
    crate::sys::fsconfig_create(&fs).map_err(fail("create the overlay"))?;
    crate::sys::fsmount_at(&fs, target).map_err(fail("mount the overlay"))
}
