//! The CRI unix socket: refusing to start when a live daemon already serves
//! it, replacing a stale one left by a dead daemon, binding with mode 0660,
//! and removing it at shutdown only if it is still ours.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// What is found at the socket path before binding.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found {
    Nothing,
    /// A socket nobody accepts on: a daemon died without removing it.
    Stale,
}

/// Fails when a live daemon accepts on `path`, or when `path` is not a socket.
pub(crate) fn probe(path: &Path) -> Result<Found> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Found::Nothing),
        Err(e) => return Err(Error::Io { op: "inspect socket", path: path.to_owned(), source: e }),
        Ok(meta) if !meta.file_type().is_socket() => return Err(Error::NotASocket { path: path.to_owned() }),
        Ok(_) => {}
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(Error::SocketInUse { path: path.to_owned() }),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => Ok(Found::Stale),
        Err(e) => Err(Error::Io { op: "probe socket", path: path.to_owned(), source: e }),
    }
}

/// A bound CRI socket; remembers its inode so shutdown removes only its own file.
#[derive(Debug)]
pub(crate) struct BoundSocket {
    pub listener: tokio::net::UnixListener,
    path: PathBuf,
    inode: (u64, u64),
}

/// Binds `path` (replacing a stale socket) and sets mode 0660.
pub(crate) fn bind(path: &Path) -> Result<BoundSocket> {
    if probe(path)? == Found::Stale {
        tracing::info!(socket = %path.display(), "replacing stale socket of a dead daemon");
        std::fs::remove_file(path).map_err(Error::io("remove stale socket", path))?;
    }
    let std_listener = std::os::unix::net::UnixListener::bind(path).map_err(Error::io("bind socket", path))?;
    let finish = move || -> Result<BoundSocket> {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .map_err(Error::io("set mode 0660 on socket", path))?;
        let meta = std::fs::metadata(path).map_err(Error::io("inspect socket", path))?;
        std_listener.set_nonblocking(true).map_err(Error::io("set socket non-blocking", path))?;
        let listener = tokio::net::UnixListener::from_std(std_listener).map_err(Error::io("register socket", path))?;
        Ok(BoundSocket { listener, path: path.to_owned(), inode: (meta.dev(), meta.ino()) })
    };
    finish().inspect_err(|_| {
        let _ = std::fs::remove_file(path);
    })
}

impl BoundSocket {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Splits off the listener; the returned guard removes the socket file.
    pub fn into_parts(self) -> (tokio::net::UnixListener, SocketFile) {
        (self.listener, SocketFile { path: self.path, inode: self.inode })
    }
}

/// Removes the socket file on drop, if it is still the one we bound.
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    inode: (u64, u64),
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && (meta.dev(), meta.ino()) == self.inode
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn live_stale_and_foreign_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cri.sock");
        assert_eq!(probe(&path).unwrap(), Found::Nothing);

        let bound = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        assert!(matches!(probe(&path), Err(Error::SocketInUse { .. })));

        // Dropping the listener without removing the file leaves a stale socket.
        let (listener, file) = bound.into_parts();
        drop(listener);
        std::mem::forget(file);
        assert_eq!(probe(&path).unwrap(), Found::Stale);
        let rebound = bind(&path).unwrap();
        drop(rebound.into_parts());
        assert!(!path.exists(), "shutdown removes our socket");

        std::fs::write(&path, b"x").unwrap();
        assert!(matches!(bind(&path), Err(Error::NotASocket { .. })));
        assert_eq!(std::fs::read(&path).unwrap(), b"x");
    }
}
