//! Pod network namespaces, pinned by a bind mount of the namespace onto a
//! file (as `ip netns` does under /run/netns), so they outlive any process
//! and survive a daemon restart; removed by unmounting and deleting the
//! pin, idempotently. A namespace is made on a short-lived thread of its
//! own: unshare(CLONE_NEWNET) changes only the calling thread, so the
//! daemon's other threads never leave the host's network.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

use crate::{Error, Result};

fn sys(op: &'static str, path: &Path) -> impl FnOnce(Errno) -> Error {
    let path = path.to_owned();
    move |errno| Error::Syscall { op, path, errno }
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Io { op, path, source }
}

/// A pinned network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetNs {
    pub path: PathBuf,
}

impl NetNs {
    /// Creates a namespace pinned at `path` (its directory is created), with
    /// loopback up. Nothing is left behind if any step fails.
    pub fn create(path: &Path) -> Result<NetNs> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io("create directory", dir))?;
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(io("create namespace pin", path))?;
        let pin = path.to_owned();
        let made = std::thread::spawn(move || -> Result<()> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(sys("unshare network namespace", &pin))?;
            crate::sys::link_up("lo").map_err(sys("bring loopback up in", &pin))?;
            mount(Some("/proc/thread-self/ns/net"), &pin, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .map_err(sys("pin network namespace", &pin))
        })
        .join()
        .unwrap_or_else(|_| Err(Error::Syscall { op: "namespace thread", path: path.to_owned(), errno: Errno::EIO }));
        if let Err(e) = made {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        Ok(NetNs { path: path.to_owned() })
    }

    /// Runs `work` on a thread inside this namespace and returns its result.
    pub fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let path = self.path.clone();
        std::thread::spawn(move || -> Result<T> {
            let fd = std::fs::File::open(&path).map_err(io("open namespace", &path))?;
            setns(fd, CloneFlags::CLONE_NEWNET).map_err(sys("enter network namespace", &path))?;
            Ok(work())
        })
        .join()
        .unwrap_or_else(|_| Err(Error::Syscall { op: "namespace thread", path: self.path.clone(), errno: Errno::EIO }))
    }

    /// Unpins and deletes the namespace at `path`; a missing one is fine.
    pub fn remove(path: &Path) -> Result<()> {
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(errno) => return Err(Error::Syscall { op: "unpin network namespace", path: path.to_owned(), errno }),
        }
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Io { op: "remove namespace pin", path: path.to_owned(), source: e }),
        }
    }

    /// Whether loopback is up inside (a check for tests and status).
    pub fn loopback_up(&self) -> Result<bool> {
        self.run(|| crate::sys::link_is_up("lo"))?.map_err(sys("read loopback flags in", &self.path))
    }
}
