//! Paths inside a root — a container's rootfs, an image layer being
//! unpacked — resolved as if the root were `/`.
//! Every lookup goes through openat2(2) with `RESOLVE_IN_ROOT`: `..` stops
//! at the root and an absolute symlink such as `etc -> /etc` lands on the
//! rootfs's `etc`, never the host's. Callers then act on the returned file
//! descriptor (or its `/proc/self/fd/N` path), not on a path that could be
//! swapped underneath them. This crate owns nothing else: no policy, no
//! knowledge of containers or images.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{Mode, mkdirat};

/// A failed lookup or creation inside a root, naming the path.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {errno}")]
pub struct Error {
    pub op: &'static str,
    pub path: PathBuf,
    pub errno: Errno,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn sys(op: &'static str, path: &Path) -> impl FnOnce(Errno) -> Error {
    let path = path.to_owned();
    move |errno| Error { op, path, errno }
}

fn how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

fn relative(path: &Path) -> PathBuf {
    path.components().filter(|c| matches!(c, Component::Normal(_) | Component::ParentDir)).collect()
}

/// Opens `path` inside `root` with `flags` (for example `O_PATH`).
pub fn open(root: impl AsFd, path: &Path, flags: OFlag) -> Result<OwnedFd> {
    let rel = relative(path);
    let rel = if rel.as_os_str().is_empty() { PathBuf::from(".") } else { rel };
    openat2(root, &rel, how(flags)).map_err(sys("open in root", path))
}

/// Opens the directory `path` inside `root`, creating it and any missing
/// parents (mode 0755) inside the root.
pub fn mkdir_all(root: impl AsFd, path: &Path) -> Result<OwnedFd> {
    mkdir_all_within(root.as_fd(), path, MAX_SYMLINKS)
}

/// How many dangling symlinks one lookup may follow (as the kernel's ELOOP limit).
const MAX_SYMLINKS: u32 = 40;

fn mkdir_all_within(root: std::os::fd::BorrowedFd<'_>, path: &Path, budget: u32) -> Result<OwnedFd> {
    let mut done = PathBuf::new();
    let mut dir = open(root, &done, OFlag::O_PATH | OFlag::O_DIRECTORY)?;
    for component in relative(path).components() {
        done.push(component);
        dir = match open(root, &done, OFlag::O_PATH | OFlag::O_DIRECTORY) {
            Ok(fd) => fd,
            Err(Error { errno: Errno::ENOENT, .. }) => {
                let name: &OsStr = component.as_os_str();
                // The parent was resolved in the root; create the last name in it.
                let parent_path = done.parent().unwrap_or(Path::new("")).to_owned();
                let parent = open(root, &parent_path, OFlag::O_DIRECTORY)?;
                match mkdirat(&parent, name, Mode::from_bits_truncate(0o755)) {
                    Ok(()) => {}
                    // A dangling symlink: create what it points at, inside the root.
                    Err(Errno::EEXIST) => {
                        if let Ok(target) = nix::fcntl::readlinkat(&parent, name) {
                            if budget == 0 {
                                return Err(Error { op: "mkdir in root", path: done.clone(), errno: Errno::ELOOP });
                            }
                            let target = Path::new(&target);
                            let within =
                                if target.is_absolute() { target.to_owned() } else { parent_path.join(target) };
                            mkdir_all_within(root, &within, budget - 1)?;
                        }
                    }
                    Err(errno) => return Err(Error { op: "mkdir in root", path: done.clone(), errno }),
                }
                open(root, &done, OFlag::O_PATH | OFlag::O_DIRECTORY)?
            }
            Err(e) => return Err(e),
        };
    }
    Ok(dir)
}

/// Opens the file `path` inside `root`, creating it empty (and its parent
/// directories) if missing: the target of a bind mount of a file.
pub fn create_file(root: impl AsFd, path: &Path) -> Result<OwnedFd> {
    let root = root.as_fd();
    match open(root, path, OFlag::O_PATH) {
        Ok(fd) => return Ok(fd),
        Err(Error { errno: Errno::ENOENT, .. }) => {}
        Err(e) => return Err(e),
    }
    let rel = relative(path);
    let name =
        rel.file_name().ok_or_else(|| Error { op: "create in root", path: path.to_owned(), errno: Errno::EINVAL })?;
    // An O_PATH directory descriptor serves as the dirfd of openat.
    let parent = mkdir_all(root, rel.parent().unwrap_or(Path::new("")))?;
    match nix::fcntl::openat(
        &parent,
        name,
        OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::from_bits_truncate(0o644),
    ) {
        Ok(_) | Err(Errno::EEXIST) => {}
        Err(errno) => return Err(Error { op: "create in root", path: path.to_owned(), errno }),
    }
    open(root, path, OFlag::O_PATH)
}

/// The `/proc/self/fd/N` path of `fd`, for syscalls that take a path.
pub fn fd_path(fd: &impl std::os::fd::AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn root_fd(dir: &Path) -> OwnedFd {
        nix::fcntl::open(dir, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).unwrap()
    }

    #[test]
    fn symlinks_and_dotdot_stay_inside_the_root() {
        let host = tempfile::tempdir().unwrap();
        let rootfs = host.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        std::fs::write(host.path().join("secret"), b"host").unwrap();
        // An image that tries to escape: absolute and relative symlinks out.
        symlink("/", rootfs.join("escape-abs")).unwrap();
        symlink("../..", rootfs.join("etc/escape-rel")).unwrap();
        let root = root_fd(&rootfs);

        let made = mkdir_all(&root, Path::new("/escape-abs/data/x")).unwrap();
        drop(made);
        assert!(rootfs.join("data/x").is_dir(), "created inside the rootfs");
        let file = create_file(&root, Path::new("/etc/escape-rel/secret")).unwrap();
        drop(file);
        assert!(rootfs.join("secret").exists(), "landed at the rootfs top, not the host");
        assert_eq!(std::fs::read(host.path().join("secret")).unwrap(), b"host");
        assert!(open(&root, Path::new("/../../secret"), OFlag::O_RDONLY).is_ok(), "'..' stops at the root");
        assert_eq!(
            std::fs::read_to_string(fd_path(&open(&root, Path::new("/../../secret"), OFlag::O_RDONLY).unwrap()))
                .unwrap(),
            ""
        );
    }

    #[test]
    fn missing_paths_are_named() {
        let host = tempfile::tempdir().unwrap();
        let root = root_fd(host.path());
        let err = open(&root, Path::new("/nope/x"), OFlag::O_RDONLY).unwrap_err().to_string();
        assert!(err.contains("/nope/x"), "{err}");
    }
}
