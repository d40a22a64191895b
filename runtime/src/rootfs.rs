//! The container's root filesystem, built inside its new mount namespace:
//! the mounts of the spec (every destination resolved inside the root),
//! the default and listed device nodes, pivot_root, masked and read-only
//! paths, and a read-only root.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, SFlag, makedev, mknodat};
use oci_spec::runtime::{LinuxDeviceType, LinuxNamespaceType, Mount, Spec};

use crate::cgroups::Cgroup;
use crate::error::sys;
use crate::spec::Bundle;
use crate::{Error, Result};
use bulkhead_confine::{self as resolve, fd_path};

/// Mount options split into flags, propagation and filesystem data, as
/// mount(8) reads them.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Options {
    pub flags: MsFlags,
    pub clear: MsFlags,
    pub propagation: MsFlags,
    pub data: Vec<String>,
    /// Recursive attributes (`rro`, `rnosuid`, ...) for mount_setattr.
    pub recursive_set: u64,
    pub recursive_clear: u64,
}

/// The recursive mount options of runtime-spec 1.1: (attributes to set, to clear).
fn recursive_option(option: &str) -> Option<(u64, u64)> {
    use crate::sys::*;
    Some(match option {
        "rro" => (MOUNT_ATTR_RDONLY, 0),
        "rrw" => (0, MOUNT_ATTR_RDONLY),
        "rnosuid" => (MOUNT_ATTR_NOSUID, 0),
        "rsuid" => (0, MOUNT_ATTR_NOSUID),
        "rnodev" => (MOUNT_ATTR_NODEV, 0),
        "rdev" => (0, MOUNT_ATTR_NODEV),
        "rnoexec" => (MOUNT_ATTR_NOEXEC, 0),
        "rexec" => (0, MOUNT_ATTR_NOEXEC),
        "rnodiratime" => (MOUNT_ATTR_NODIRATIME, 0),
        "rdiratime" => (0, MOUNT_ATTR_NODIRATIME),
        "rrelatime" => (MOUNT_ATTR_RELATIME, MOUNT_ATTR__ATIME),
        "rnorelatime" => (0, MOUNT_ATTR__ATIME),
        "rnoatime" => (MOUNT_ATTR_NOATIME, MOUNT_ATTR__ATIME),
        "ratime" => (0, MOUNT_ATTR__ATIME),
        "rstrictatime" => (MOUNT_ATTR_STRICTATIME, MOUNT_ATTR__ATIME),
        "rnostrictatime" => (0, MOUNT_ATTR__ATIME),
        "rnosymfollow" => (MOUNT_ATTR_NOSYMFOLLOW, 0),
        "rsymfollow" => (0, MOUNT_ATTR_NOSYMFOLLOW),
        _ => return None,
    })
}

pub(crate) fn parse_options(options: &[String]) -> Options {
    let mut o = Options {
        flags: MsFlags::empty(),
        clear: MsFlags::empty(),
        propagation: MsFlags::empty(),
        data: Vec::new(),
        recursive_set: 0,
        recursive_clear: 0,
    };
    for opt in options {
        if let Some((set, clear)) = recursive_option(opt) {
            o.recursive_set = (o.recursive_set & !clear) | set;
            o.recursive_clear |= clear;
            continue;
        }
        let (set, clear, propagation) = match opt.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty(), MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty(), MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID, MsFlags::empty()),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty(), MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV, MsFlags::empty()),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty(), MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC, MsFlags::empty()),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty(), MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty(), MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty(), MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty(), MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty(), MsFlags::empty()),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME, MsFlags::empty()),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty(), MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty(), MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME, MsFlags::empty()),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty(), MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "lazytime" => (MsFlags::MS_LAZYTIME, MsFlags::empty(), MsFlags::empty()),
            "nolazytime" => (MsFlags::empty(), MsFlags::MS_LAZYTIME, MsFlags::empty()),
            "silent" => (MsFlags::MS_SILENT, MsFlags::empty(), MsFlags::empty()),
            "loud" => (MsFlags::empty(), MsFlags::MS_SILENT, MsFlags::empty()),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty(), MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty(), MsFlags::empty()),
            "private" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_PRIVATE),
            "rprivate" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_PRIVATE | MsFlags::MS_REC),
            "shared" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_SHARED),
            "rshared" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_SHARED | MsFlags::MS_REC),
            "slave" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_SLAVE),
            "rslave" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_SLAVE | MsFlags::MS_REC),
            "unbindable" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_UNBINDABLE),
            "runbindable" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_UNBINDABLE | MsFlags::MS_REC),
            data => {
                o.data.push(data.to_owned());
                continue;
            }
        };
        o.flags = (o.flags | set) - clear;
        o.clear |= clear;
        o.propagation |= propagation;
    }
    o
}

fn propagation_of(value: &str) -> Option<MsFlags> {
    Some(match value {
        "" | "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// Detaches the new mount namespace from the host's propagation, makes the
/// rootfs a mount point, and returns a descriptor of it.
pub(crate) fn prepare(bundle: &Bundle) -> Result<OwnedFd> {
    let wanted = bundle.spec.linux().as_ref().and_then(|l| l.rootfs_propagation().clone()).unwrap_or_default();
    let propagation = propagation_of(&wanted).ok_or_else(|| Error::Spec {
        field: "linux.rootfsPropagation".into(),
        message: format!("{wanted:?} is not a propagation mode"),
    })?;
    // Never let the container's mounts propagate back to the host.
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_SLAVE | MsFlags::MS_REC, None::<&str>)
        .map_err(sys("make / rslave", "/"))?;
    if !propagation.contains(MsFlags::MS_SLAVE) {
        mount(None::<&str>, "/", None::<&str>, propagation, None::<&str>).map_err(sys("set rootfsPropagation", "/"))?;
    }
    let rootfs = &bundle.rootfs;
    mount(Some(rootfs), rootfs, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .map_err(sys("bind rootfs", rootfs))?;
    nix::fcntl::open(rootfs, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(sys("open rootfs", rootfs))
}

/// Mounts every entry of `spec.mounts`, in order, inside the root.
pub(crate) fn mount_all(bundle: &Bundle, root: &OwnedFd, cgroup: &Cgroup) -> Result<()> {
    // Fresh cgroup v1 filesystems cannot be mounted inside a user namespace:
    // there the container's cgroup directories are bound instead.
    let fresh_cgroupfs = has_namespace(&bundle.spec, LinuxNamespaceType::Cgroup)
        && !has_namespace(&bundle.spec, LinuxNamespaceType::User);
    for m in bundle.spec.mounts().iter().flatten() {
        if matches!(m.typ().as_deref(), Some("cgroup" | "cgroup2")) {
            mount_cgroup(root, m, cgroup, fresh_cgroupfs)?;
        } else {
            mount_one(bundle, root, m)?;
        }
    }
    Ok(())
}

/// Binds `source` onto `target` inside the root, then applies `flags`.
fn bind(root: &OwnedFd, source: &Path, dest: &Path, flags: MsFlags) -> Result<()> {
    let target = resolve::mkdir_all(root, dest)?;
    mount(Some(source), &fd_path(&target), None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .map_err(sys("bind mount", dest))?;
    if !flags.is_empty() {
        remount_bind(root, dest, flags)?;
    }
    Ok(())
}

/// Applies `flags` to the bind mount at `dest` inside the root (re-opened:
/// a descriptor taken before the mount points below it).
fn remount_bind(root: &OwnedFd, dest: &Path, flags: MsFlags) -> Result<()> {
    let mounted = resolve::open(root, dest, OFlag::O_PATH)?;
    mount(None::<&str>, &fd_path(&mounted), None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags, None::<&str>)
        .map_err(sys("remount bind mount", dest))
}

/// The container's view of its cgroup at a `cgroup` mount: with a cgroup
/// namespace, fresh cgroup filesystems (whose root is the container's
/// cgroup); without one, binds of the container's own cgroup directories.
/// On v1 each hierarchy sits in a tmpfs, as on a host.
fn mount_cgroup(root: &OwnedFd, m: &Mount, cgroup: &Cgroup, fresh: bool) -> Result<()> {
    let opts = parse_options(m.options().as_deref().unwrap_or_default());
    let dest = m.destination();
    let flags = opts.flags - (MsFlags::MS_BIND | MsFlags::MS_REC);
    if cgroup.is_v2() {
        let Some(h) = cgroup.hierarchies.first() else { return Ok(()) };
        if !fresh {
            return bind(root, &h.dir, dest, flags);
        }
        let target = resolve::mkdir_all(root, dest)?;
        return mount(Some("cgroup2"), &fd_path(&target), Some("cgroup2"), flags, None::<&str>)
            .map_err(sys("mount cgroup2", dest));
    }
    let target = resolve::mkdir_all(root, dest)?;
    let tmpfs_flags = flags - MsFlags::MS_RDONLY;
    mount(Some("tmpfs"), &fd_path(&target), Some("tmpfs"), tmpfs_flags, Some("mode=755"))
        .map_err(sys("mount cgroup tmpfs", dest))?;
    // The binds get their flags in one recursive mount_setattr over the
    // tmpfs where the kernel has it, rather than a remount each.
    let attrs = mount_attrs(flags).filter(|_| !fresh && crate::sys::has_mount_setattr());
    // The tmpfs is new and empty: its directories are made in it directly,
    // with no path to resolve through the root.
    let tmpfs = resolve::open(root, dest, OFlag::O_PATH | OFlag::O_DIRECTORY)?;
    for h in &cgroup.hierarchies {
        let sub = dest.join(&h.name);
        nix::sys::stat::mkdirat(&tmpfs, h.name.as_str(), Mode::from_bits_truncate(0o755))
            .map_err(sys("mkdir", &sub))?;
        let target = nix::fcntl::openat(
            &tmpfs,
            h.name.as_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(sys("open", &sub))?;
        if !fresh {
            mount(Some(&h.dir), &fd_path(&target), None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
                .map_err(sys("bind mount", &sub))?;
            if attrs.is_none() && !flags.is_empty() {
                remount_bind(root, &sub, flags)?;
            }
            continue;
        }
        let (fstype, data) = if h.unified { ("cgroup2", String::new()) } else { ("cgroup", h.controllers.join(",")) };
        mount(Some("cgroup"), &fd_path(&target), Some(fstype), flags, (!data.is_empty()).then_some(data.as_str()))
            .map_err(sys("mount cgroup", &sub))?;
    }
    drop(tmpfs);
    let mounted = resolve::open(root, dest, OFlag::O_PATH)?;
    if let Some((set, clear)) = attrs {
        return crate::sys::mount_setattr_recursive(std::os::fd::AsFd::as_fd(&mounted), set, clear)
            .map_err(sys("set cgroup mount attributes (mount_setattr)", dest));
    }
    if flags.contains(MsFlags::MS_RDONLY) {
        mount(None::<&str>, &fd_path(&mounted), None::<&str>, MsFlags::MS_REMOUNT | flags, Some("mode=755"))
            .map_err(sys("make cgroup tmpfs read-only", dest))?;
    }
    Ok(())
}

/// `flags` of a bind remount as mount_setattr attributes (to set, to
/// clear), when they can all be expressed so.
fn mount_attrs(flags: MsFlags) -> Option<(u64, u64)> {
    use crate::sys::*;
    let expressible = MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC
        | MsFlags::MS_NOATIME
        | MsFlags::MS_STRICTATIME
        | MsFlags::MS_RELATIME
        | MsFlags::MS_NODIRATIME;
    if !(flags - expressible).is_empty() {
        return None;
    }
    let mut set = 0;
    for (flag, attr) in [
        (MsFlags::MS_RDONLY, MOUNT_ATTR_RDONLY),
        (MsFlags::MS_NOSUID, MOUNT_ATTR_NOSUID),
        (MsFlags::MS_NODEV, MOUNT_ATTR_NODEV),
        (MsFlags::MS_NOEXEC, MOUNT_ATTR_NOEXEC),
        (MsFlags::MS_NODIRATIME, MOUNT_ATTR_NODIRATIME),
    ] {
        if flags.contains(flag) {
            set |= attr;
        }
    }
    // A remount sets one atime mode; relatime is the default one.
    let atime = if flags.contains(MsFlags::MS_NOATIME) {
        MOUNT_ATTR_NOATIME
    } else if flags.contains(MsFlags::MS_STRICTATIME) {
        MOUNT_ATTR_STRICTATIME
    } else {
        MOUNT_ATTR_RELATIME
    };
    Some((set | atime, MOUNT_ATTR__ATIME))
}

fn mount_one(bundle: &Bundle, root: &OwnedFd, m: &Mount) -> Result<()> {
    let opts = parse_options(m.options().as_deref().unwrap_or_default());
    let typ = m.typ().clone().unwrap_or_else(|| "bind".into());
    let bind = typ == "bind" || opts.flags.contains(MsFlags::MS_BIND);
    let dest = m.destination();
    if bind {
        let source = m.source().clone().unwrap_or_default();
        let source = if source.is_absolute() { source } else { bundle.dir.join(source) };
        let meta = std::fs::metadata(&source).map_err(|e| Error::Read { path: source.clone(), source: e })?;
        let target = if meta.is_dir() { resolve::mkdir_all(root, dest)? } else { resolve::create_file(root, dest)? };
        let rec = opts.flags & MsFlags::MS_REC;
        mount(Some(&source), &fd_path(&target), None::<&str>, MsFlags::MS_BIND | rec, None::<&str>)
            .map_err(sys("bind mount", dest))?;
        let extra = opts.flags - (MsFlags::MS_BIND | MsFlags::MS_REC);
        if !extra.is_empty() {
            remount_bind(root, dest, extra)?;
        }
    } else {
        let target = resolve::mkdir_all(root, dest)?;
        let source = m.source().clone().unwrap_or_else(|| PathBuf::from(&typ));
        let data = opts.data.join(",");
        mount(
            Some(&source),
            &fd_path(&target),
            Some(typ.as_str()),
            opts.flags,
            (!data.is_empty()).then_some(data.as_str()),
        )
        .map_err(sys("mount", dest))?;
    }
    if !opts.propagation.is_empty() {
        let mounted = resolve::open(root, dest, OFlag::O_PATH)?;
        mount(None::<&str>, &fd_path(&mounted), None::<&str>, opts.propagation, None::<&str>)
            .map_err(sys("set mount propagation", dest))?;
    }
    if opts.recursive_set != 0 || opts.recursive_clear != 0 {
        let mounted = resolve::open(root, dest, OFlag::O_PATH)?;
        crate::sys::mount_setattr_recursive(
            std::os::fd::AsFd::as_fd(&mounted),
            opts.recursive_set,
            opts.recursive_clear,
        )
        .map_err(sys("set recursive mount attributes (mount_setattr)", dest))?;
    }
    Ok(())
}

/// Device nodes every container gets (runtime-spec "Default Devices").
const DEFAULT_DEVICES: [(&str, u64, u64); 6] =
    [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)];

/// Links every container's /dev has.
const DEFAULT_LINKS: [(&str, &str); 5] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
];

fn mknod_in(root: &OwnedFd, path: &Path, kind: SFlag, mode: u32, major: u64, minor: u64) -> Result<()> {
    let parent = resolve::mkdir_all(root, path.parent().unwrap_or(Path::new("/")))?;
    let name =
        path.file_name().ok_or_else(|| Error::Syscall { op: "mknod", path: path.to_owned(), errno: Errno::EINVAL })?;
    match mknodat(&parent, name, kind, Mode::from_bits_truncate(mode), makedev(major, minor)) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(errno) => Err(Error::Syscall { op: "mknod", path: path.to_owned(), errno }),
    }
}

/// Whether the spec lists a namespace of type `typ`.
pub(crate) fn has_namespace(spec: &Spec, typ: LinuxNamespaceType) -> bool {
    spec.linux().as_ref().and_then(|l| l.namespaces().as_ref()).is_some_and(|n| n.iter().any(|n| n.typ() == typ))
}

/// Inside a user namespace mknod is refused: bind the host's node instead.
fn bind_device(root: &OwnedFd, path: &Path, host: &Path) -> Result<()> {
    let target = resolve::create_file(root, path)?;
    mount(Some(host), &fd_path(&target), None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(sys("bind device", path))
}

/// Creates the default devices, the spec's devices and the /dev links.
pub(crate) fn create_devices(spec: &Spec, root: &OwnedFd) -> Result<()> {
    let dev = resolve::mkdir_all(root, Path::new("/dev"))?;
    let in_user_ns = has_namespace(spec, LinuxNamespaceType::User);
    for (name, major, minor) in DEFAULT_DEVICES {
        let path = Path::new("/dev").join(name);
        if in_user_ns {
            bind_device(root, &path, &path)?;
        } else {
            mknod_in(root, &path, SFlag::S_IFCHR, 0o666, major, minor)?;
        }
    }
    for device in spec.linux().as_ref().and_then(|l| l.devices().clone()).unwrap_or_default() {
        let kind = match device.typ() {
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            LinuxDeviceType::C | LinuxDeviceType::U | LinuxDeviceType::A => SFlag::S_IFCHR,
        };
        let mode = device.file_mode().unwrap_or(0o666);
        let (major, minor) = (device.major().max(0) as u64, device.minor().max(0) as u64);
        if in_user_ns {
            bind_device(root, device.path(), device.path())?;
            continue;
        }
        mknod_in(root, device.path(), kind, mode, major, minor)?;
        let node = resolve::open(root, device.path(), OFlag::O_PATH)?;
        let (uid, gid) = (device.uid().unwrap_or(0), device.gid().unwrap_or(0));
        nix::unistd::fchownat(
            &node,
            "",
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
            nix::fcntl::AtFlags::AT_EMPTY_PATH,
        )
        .map_err(sys("chown device", device.path()))?;
    }
    let dev_dir = resolve::open(root, Path::new("/dev"), OFlag::O_DIRECTORY)?;
    drop(dev);
    for (name, target) in DEFAULT_LINKS {
        match nix::unistd::symlinkat(target, &dev_dir, name) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(errno) => return Err(Error::Syscall { op: "symlink", path: Path::new("/dev").join(name), errno }),
        }
    }
    Ok(())
}

/// Makes the rootfs the process's `/`, detaching the old root.
pub(crate) fn pivot(rootfs: &Path, no_pivot: bool) -> Result<()> {
    let new_root = nix::fcntl::open(rootfs, OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(sys("open rootfs", rootfs))?;
    nix::unistd::fchdir(&new_root).map_err(sys("chdir", rootfs))?;
    let pivoted = if no_pivot { Err(Errno::EINVAL) } else { nix::unistd::pivot_root(".", ".") };
    match pivoted {
        Ok(()) => {
            // The old root is now stacked under "."; detach it without touching the host.
            mount(None::<&str>, ".", None::<&str>, MsFlags::MS_SLAVE | MsFlags::MS_REC, None::<&str>)
                .map_err(sys("make old root rslave", "/"))?;
            umount2(".", MntFlags::MNT_DETACH).map_err(sys("detach old root", "/"))?;
        }
        // pivot_root cannot leave a rootfs on ramfs (or --no-pivot): move it over / and chroot.
        Err(Errno::EINVAL) => {
            mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
                .map_err(sys("move rootfs to /", rootfs))?;
            nix::unistd::chroot(".").map_err(sys("chroot", rootfs))?;
        }
        Err(errno) => return Err(Error::Syscall { op: "pivot_root", path: rootfs.to_owned(), errno }),
    }
    nix::unistd::chdir("/").map_err(sys("chdir", "/"))
}

/// After pivot_root: masked paths, read-only paths and a read-only root.
pub(crate) fn finish(spec: &Spec) -> Result<()> {
    let linux = spec.linux().clone().unwrap_or_default();
    for path in linux.masked_paths().clone().unwrap_or_default() {
        let result = match std::fs::metadata(&path) {
            Err(_) => continue,
            Ok(meta) if meta.is_dir() => {
                mount(Some("tmpfs"), path.as_str(), Some("tmpfs"), MsFlags::MS_RDONLY, None::<&str>)
            }
            Ok(_) => mount(Some("/dev/null"), path.as_str(), None::<&str>, MsFlags::MS_BIND, None::<&str>),
        };
        result.map_err(sys("mask", &path))?;
    }
    for path in linux.readonly_paths().clone().unwrap_or_default() {
        if std::fs::symlink_metadata(&path).is_err() {
            continue;
        }
        mount(Some(path.as_str()), path.as_str(), None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
            .map_err(sys("bind read-only path", &path))?;
        let flags =
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC | current_flags(&path);
        mount(None::<&str>, path.as_str(), None::<&str>, flags, None::<&str>).map_err(sys("make read-only", &path))?;
    }
    if spec.root().as_ref().is_some_and(|r| r.readonly().unwrap_or(false)) {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | current_flags("/");
        mount(None::<&str>, "/", None::<&str>, flags, None::<&str>).map_err(sys("make root read-only", "/"))?;
    }
    Ok(())
}

/// The locked per-mount flags of `path`, which a bind remount must keep.
fn current_flags(path: &str) -> MsFlags {
    use nix::sys::statvfs::{FsFlags, statvfs};
    let Ok(st) = statvfs(path) else { return MsFlags::empty() };
    let f = st.flags();
    // ST_RELATIME as the kernel reports it (include/linux/statfs.h); nix
    // names it only for glibc, and musl passes the kernel's bits through.
    const ST_RELATIME: FsFlags = FsFlags::from_bits_retain(0x1000);
    let mut flags = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(fs) {
            flags |= ms;
        }
    }
    flags
}

/// Applies `linux.sysctl` through the container's own /proc/sys.
pub(crate) fn sysctls(spec: &Spec) -> Result<()> {
    for (key, value) in spec.linux().as_ref().and_then(|l| l.sysctl().clone()).unwrap_or_default() {
        if key.contains('/') || key.contains("..") {
            return Err(Error::Spec { field: format!("linux.sysctl.{key}"), message: "is not a sysctl name".into() });
        }
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value.as_bytes()).map_err(|e| Error::Read { path, source: e })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let o = parse_options(&["rbind", "ro", "nosuid", "rprivate", "size=65536k", "mode=755"].map(String::from));
        assert!(o.flags.contains(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID));
        assert_eq!(o.propagation, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
        assert_eq!(o.data, vec!["size=65536k".to_string(), "mode=755".to_string()]);
        let o = parse_options(&["ro", "rw"].map(String::from));
        assert!(!o.flags.contains(MsFlags::MS_RDONLY));
        let o = parse_options(&["rbind", "rro", "rnosuid", "rnoatime"].map(String::from));
        use crate::sys::{MOUNT_ATTR__ATIME, MOUNT_ATTR_NOATIME, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY};
        assert_eq!(o.recursive_set, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOATIME);
        assert_eq!(o.recursive_clear, MOUNT_ATTR__ATIME);
        assert!(o.data.is_empty());
    }

    #[test]
    fn rootfs_propagation_values() {
        assert_eq!(propagation_of(""), Some(MsFlags::MS_SLAVE | MsFlags::MS_REC));
        assert_eq!(propagation_of("rprivate"), Some(MsFlags::MS_PRIVATE | MsFlags::MS_REC));
        assert_eq!(propagation_of("sideways"), None);
    }
}
