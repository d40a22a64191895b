use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::marker::PhantomData;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Serialize, de::DeserializeOwned};

use crate::error::{Error, Result};

const RECORD_SUFFIX: &str = ".json";
/// Temporary files are named `.<id>.tmp.<pid>.<seq>`: the leading dot is
/// refused by [`validate_id`], so no record can ever be mistaken for one.
const TEMP_MARKER: &str = ".tmp.";

/// A directory of records of one type, keyed by id.
///
/// Each record lives in `<dir>/<id>.json`. Writes are atomic and durable
/// (write temp file, fsync, rename, fsync directory). Temporary files left by
/// a writer that died mid-write are removed by [`Collection::open`].
#[derive(Debug)]
pub struct Collection<T> {
    dir: PathBuf,
    seq: AtomicU64,
    durability: Durability,
    _record: PhantomData<fn() -> T>,
}

/// What a finished write survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// A crash of any process and a power loss: every write is fsynced,
    /// and so is the directory.
    Durable,
    /// A crash of any process, not a power loss: the write is still
    /// atomic (temporary file, rename), but nothing is fsynced. For
    /// records of things that die with the machine anyway — a container's
    /// runtime state under /run, as runc keeps its own — where an fsync
    /// would cost milliseconds per container for nothing.
    Volatile,
}

/// Checks that `id` can name a record file: 1 to 200 bytes of ASCII
/// letters, digits, `-`, `_`, `.` and `:`, not starting with `.`. Anything
/// else (a `/`, `..`, a NUL) could escape the collection's directory.
pub fn validate_id(id: &str) -> Result<()> {
    let reason = if id.is_empty() {
        Some("empty")
    } else if id.len() > 200 {
        Some("longer than 200 bytes")
    } else if id.starts_with('.') {
        Some("starts with '.'")
    } else if !id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':')) {
        Some("only ASCII letters, digits, '-', '_', '.' and ':' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidId { id: id.to_owned(), reason }),
        None => Ok(()),
    }
}

/// Whether the process that named temporary file `name` still runs: then
/// it is mid-write (another process may open the collection meanwhile,
/// as `bulkhead-oci state` does while `run` writes), and its file must be
/// left alone. A reused pid only delays the removal to a later open.
fn writer_is_alive(name: &str) -> bool {
    name.rsplit_once(TEMP_MARKER)
        .and_then(|(_, rest)| rest.split('.').next())
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| Path::new("/proc").join(pid.to_string()).exists())
}

impl<T: Serialize + DeserializeOwned> Collection<T> {
    /// Opens (creating it with mode 0700 if needed) the collection in `dir`
    /// and removes temporary files left by an interrupted write (by a
    /// writer that is gone).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        Self::open_with(dir, Durability::Durable)
    }

    /// [`Collection::open`] with the given durability.
    pub fn open_with(dir: impl Into<PathBuf>, durability: Durability) -> Result<Self> {
        let dir = dir.into();
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(Error::io("create directory", &dir))?;
        for entry in fs::read_dir(&dir).map_err(Error::io("read directory", &dir))? {
            let entry = entry.map_err(Error::io("read directory", &dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.contains(TEMP_MARKER) && !writer_is_alive(&name) {
                let path = entry.path();
                fs::remove_file(&path).map_err(Error::io("remove stale temporary file", &path))?;
            }
        }
        // The directory entry itself must survive a power loss too.
        if let Some(parent) = dir.parent().filter(|_| durability == Durability::Durable) {
            File::open(parent).and_then(|d| d.sync_all()).map_err(Error::io("fsync directory", parent))?;
        }
        Ok(Collection { dir, seq: AtomicU64::new(0), durability, _record: PhantomData })
    }

    /// The directory holding this collection's records.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, id: &str) -> Result<PathBuf> {
        record_path(&self.dir, id)
    }

    /// Writes `record` under `id`, replacing any previous version atomically.
    /// When this returns, the record survives a crash or power loss.
    pub fn put(&self, id: &str, record: &T) -> Result<()> {
        let path = self.path_of(id)?;
        let bytes = serde_json::to_vec_pretty(record).map_err(|source| Error::Encode { id: id.to_owned(), source })?;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join(format!(".{id}{TEMP_MARKER}{}.{seq}", std::process::id()));
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(Error::io("create", &tmp))?;
            file.write_all(&bytes).map_err(Error::io("write", &tmp))?;
            if self.durability == Durability::Durable {
                file.sync_all().map_err(Error::io("fsync", &tmp))?;
            }
            fs::rename(&tmp, &path).map_err(Error::io("rename into place", &path))
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written?;
        self.sync_dir()
    }

    /// Reads the record stored under `id`, if any.
    pub fn get(&self, id: &str) -> Result<Option<T>> {
        Self::read_from(&self.dir, id)
    }

    /// Reads the record `id` of the collection in `dir` without opening
    /// the collection: no directory is made and no temporary file removed,
    /// so a reader racing the directory's removal cannot bring it back.
    pub fn read_from(dir: &Path, id: &str) -> Result<Option<T>> {
        let path = record_path(dir, id)?;
        match fs::read(&path) {
            Ok(bytes) => decode(&path, &bytes).map(Some),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io { op: "read", path, source: e }),
        }
    }

    /// Removes the record stored under `id`; returns whether it existed.
    pub fn delete(&self, id: &str) -> Result<bool> {
        let path = self.path_of(id)?;
        match fs::remove_file(&path) {
            Ok(()) => self.sync_dir().map(|()| true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::Io { op: "remove", path, source: e }),
        }
    }

    /// Loads every record, sorted by id. A corrupt record is an error naming
    /// its file: atomic writes mean it was damaged outside bulkhead.
    pub fn load_all(&self) -> Result<Vec<(String, T)>> {
        let mut records = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(Error::io("read directory", &self.dir))? {
            let entry = entry.map_err(Error::io("read directory", &self.dir))?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(RECORD_SUFFIX)) else {
                continue;
            };
            if validate_id(id).is_err() {
                continue;
            }
            let path = entry.path();
            let bytes = fs::read(&path).map_err(Error::io("read", &path))?;
            records.push((id.to_owned(), decode(&path, &bytes)?));
        }
        records.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(records)
    }

    fn sync_dir(&self) -> Result<()> {
        if self.durability == Durability::Volatile {
            return Ok(());
        }
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(Error::io("fsync directory", &self.dir))
    }
}

fn record_path(dir: &Path, id: &str) -> Result<PathBuf> {
    validate_id(id)?;
    Ok(dir.join(format!("{id}{RECORD_SUFFIX}")))
}

fn decode<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| Error::Corrupt { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Rec {
        n: u32,
        name: String,
    }

    fn rec(n: u32) -> Rec {
        Rec { n, name: format!("r{n}") }
    }

    #[test]
    fn put_get_replace_delete() {
        for durability in [Durability::Durable, Durability::Volatile] {
            let dir = tempfile::tempdir().unwrap();
            let c: Collection<Rec> = Collection::open_with(dir.path().join("pods"), durability).unwrap();
            assert_eq!(c.get("a").unwrap(), None);
            c.put("a", &rec(1)).unwrap();
            assert_eq!(c.get("a").unwrap(), Some(rec(1)));
            c.put("a", &rec(2)).unwrap();
            assert_eq!(c.get("a").unwrap(), Some(rec(2)));
            c.put("sha256:ab", &rec(3)).unwrap();
            let all = c.load_all().unwrap();
            assert_eq!(all, vec![("a".into(), rec(2)), ("sha256:ab".into(), rec(3))]);
            assert!(c.delete("a").unwrap());
            assert!(!c.delete("a").unwrap());
            assert_eq!(c.load_all().unwrap().len(), 1);
            // No temporary file is left behind either way.
            let names: Vec<_> = fs::read_dir(c.dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(names, vec![std::ffi::OsString::from("sha256:ab.json")], "{durability:?}");
        }
    }

    #[test]
    fn read_from_reads_without_making_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        assert_eq!(Collection::<Rec>::read_from(&gone, "a").unwrap(), None);
        assert!(!gone.exists(), "a reader made the directory");
        let c: Collection<Rec> = Collection::open_with(dir.path().join("c"), Durability::Volatile).unwrap();
        c.put("a", &rec(1)).unwrap();
        assert_eq!(Collection::<Rec>::read_from(c.dir(), "a").unwrap(), Some(rec(1)));
        assert!(Collection::<Rec>::read_from(c.dir(), "../a").is_err());
    }

    #[test]
    fn ids_cannot_escape_the_directory() {
        for bad in ["", "../x", "a/b", ".hidden", "a\0b", &"x".repeat(201)] {
            assert!(matches!(validate_id(bad), Err(Error::InvalidId { .. })), "{bad:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let c: Collection<Rec> = Collection::open(dir.path()).unwrap();
        assert!(c.put("../escape", &rec(1)).is_err());
        assert!(!dir.path().parent().unwrap().join("escape.json").exists());
    }

    #[test]
    fn open_removes_stale_temporaries_and_load_skips_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        // Above the largest pid_max: no such writer can be running.
        fs::write(dir.path().join(".a.tmp.4194305.0"), b"{\"n\":").unwrap();
        // A live writer's file (ours) is mid-write and stays.
        let live = format!(".b.tmp.{}.0", std::process::id());
        fs::write(dir.path().join(&live), b"{\"n\":").unwrap();
        fs::write(dir.path().join("README"), b"not a record").unwrap();
        let c: Collection<Rec> = Collection::open(dir.path()).unwrap();
        assert!(!dir.path().join(".a.tmp.4194305.0").exists());
        assert!(dir.path().join(&live).exists(), "a live writer's temporary is left alone");
        assert!(c.load_all().unwrap().is_empty());
    }

    #[test]
    fn a_record_whose_id_looks_like_a_temporary_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let c: Collection<Rec> = Collection::open(dir.path()).unwrap();
        c.put("a.tmp.1", &rec(1)).unwrap();
        let c: Collection<Rec> = Collection::open(dir.path()).unwrap();
        assert_eq!(c.get("a.tmp.1").unwrap(), Some(rec(1)));
    }

    #[test]
    fn corrupt_record_is_named() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("bad.json"), b"{").unwrap();
        let c: Collection<Rec> = Collection::open(dir.path()).unwrap();
        let err = c.load_all().unwrap_err().to_string();
        assert!(err.contains("bad.json"), "{err}");
    }
}
