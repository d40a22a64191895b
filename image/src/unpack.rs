//! Unpacking a layer (a tar stream, plain, gzip or zstd) into an empty
//! snapshot directory, in the form overlayfs reads: whiteouts (`.wh.name`)
//! become 0:0 character devices and opaque markers (`.wh..wh..opq`) the
//! `trusted.overlay.opaque` xattr on their directory. Every entry is created
//! through bulkhead-confine inside the snapshot: an absolute path or a `..`
//! fails the layer, and a symlink in the layer can never carry a write out.
//! Ownership, modes, times, xattrs, hard links, devices and fifos are kept.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag, UtimensatFlags, makedev};
use nix::sys::time::TimeSpec;

use crate::{Error, Result};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From a layer media type (OCI or Docker).
    pub fn from_media_type(media_type: &str) -> Result<Compression> {
        Ok(match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Compression::None,
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Compression::Zstd,
            other => return Err(Error::UnsupportedMediaType { media_type: other.to_owned() }),
        })
    }
}

/// What an unpack wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    pub entries: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// The digest of the uncompressed tar stream: the layer's diff ID.
    pub diff_id: crate::Digest,
}

/// Hashes the uncompressed stream as the tar reader consumes it.
struct Hashing<R> {
    inner: R,
    hasher: sha2::Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        sha2::Digest::update(&mut self.hasher, &buf[..n]);
        Ok(n)
    }
}

/// The chain ID of a layer stack (image-spec): the first layer's diff ID,
/// then sha256("<parent chain ID> <diff ID>") for each layer above it.
pub fn chain_id(diff_ids: &[crate::Digest]) -> Option<crate::Digest> {
    let mut ids = diff_ids.iter();
    let first = ids.next()?.clone();
    Some(ids.fold(first, |chain, diff| crate::Digest::sha256_of(format!("{chain} {diff}").as_bytes())))
}

fn layer_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::Layer { path: path.to_owned(), reason: reason.into() }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error {
    let path = path.to_owned();
    move |e| layer_err(&path, e.to_string())
}

fn sys_err(path: &Path, op: &'static str) -> impl FnOnce(Errno) -> Error {
    let path = path.to_owned();
    move |errno| layer_err(&path, format!("{op}: {errno}"))
}

/// The entry's path made relative to the layer root; `..` and absolute
/// paths are refused: no layer may name anything outside itself.
fn clean(path: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err(layer_err(path, "absolute paths are refused")),
            Component::ParentDir => return Err(layer_err(path, "'..' would leave the layer")),
        }
    }
    Ok(out)
}

struct Target {
    parent: OwnedFd,
    name: PathBuf,
    path: PathBuf,
}

/// Unpacks `layer` (compressed as `compression`) into `dest`; when
/// `diff_id` is given, the uncompressed stream must hash to it.
pub fn unpack(
    layer: impl Read,
    compression: Compression,
    dest: &Path,
    diff_id: Option<&crate::Digest>,
) -> Result<Unpacked> {
    let decompressed: Box<dyn Read> = match compression {
        Compression::None => Box::new(layer),
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(layer)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(layer).map_err(io_err(dest))?),
    };
    let root = nix::fcntl::open(dest, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(sys_err(dest, "open snapshot"))?;
    let reader = Hashing { inner: decompressed, hasher: sha2::Digest::new() };
    let mut archive = tar::Archive::new(reader);
    let mut stats = Unpacked { entries: 0, bytes: 0, diff_id: crate::Digest::sha256_of(b"") };
    let mut dirs: Vec<(PathBuf, tar::Header)> = Vec::new();
    for entry in archive.entries().map_err(io_err(dest))? {
        let mut entry = entry.map_err(|e| layer_err(dest, format!("corrupt layer: {e}")))?;
        let raw = entry.path().map_err(io_err(dest))?.into_owned();
        let path = clean(&raw)?;
        stats.entries += 1;
        let Some(name) = path.file_name().map(PathBuf::from) else {
            continue; // the layer root itself
        };
        let parent_path = path.parent().unwrap_or(Path::new("")).to_owned();
        let parent = bulkhead_confine::mkdir_all(&root, &parent_path).map_err(|e| layer_err(&path, e.to_string()))?;
        let name_str = name.as_os_str().to_string_lossy();
        if name_str == OPAQUE_MARKER {
            set_opaque(&root, &parent_path)?;
            continue;
        }
        if let Some(hidden) = name_str.strip_prefix(WHITEOUT_PREFIX) {
            let t = Target { parent, name: PathBuf::from(hidden), path: parent_path.join(hidden) };
            remove_existing(&t)?;
            nix::sys::stat::mknodat(&t.parent, &t.name, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
                .map_err(sys_err(&t.path, "create whiteout"))?;
            continue;
        }
        let t = Target { parent, name, path: path.clone() };
        let header = entry.header().clone();
        let mode = Mode::from_bits_truncate(header.mode().map_err(io_err(&path))? & 0o7777);
        match header.entry_type() {
            tar::EntryType::Directory => {
                match nix::sys::stat::mkdirat(&t.parent, &t.name, Mode::from_bits_truncate(0o700)) {
                    Ok(()) => {}
                    Err(Errno::EEXIST) if is_dir(&t) => {}
                    Err(Errno::EEXIST) => {
                        remove_existing(&t)?;
                        nix::sys::stat::mkdirat(&t.parent, &t.name, Mode::from_bits_truncate(0o700))
                            .map_err(sys_err(&path, "mkdir"))?;
                    }
                    Err(errno) => return Err(layer_err(&path, format!("mkdir: {errno}"))),
                }
                apply_xattrs(&mut entry, &t)?;
                // Owner, mode and times once everything below is written.
                dirs.push((path, header));
                continue;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                remove_existing(&t)?;
                let fd = nix::fcntl::openat(
                    &t.parent,
                    &t.name,
                    OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(sys_err(&path, "create"))?;
                let mut file = std::fs::File::from(fd);
                stats.bytes += io::copy(&mut entry, &mut file).map_err(io_err(&path))?;
            }
            tar::EntryType::Symlink => {
                remove_existing(&t)?;
                let target = header
                    .link_name()
                    .map_err(io_err(&path))?
                    .ok_or_else(|| layer_err(&path, "symlink without a target"))?;
                nix::unistd::symlinkat(target.as_ref(), &t.parent, &t.name).map_err(sys_err(&path, "symlink"))?;
            }
            tar::EntryType::Link => {
                let target = header
                    .link_name()
                    .map_err(io_err(&path))?
                    .ok_or_else(|| layer_err(&path, "hard link without a target"))?;
                let target = clean(&target)?;
                let source = bulkhead_confine::open(&root, &target, OFlag::O_PATH | OFlag::O_NOFOLLOW)
                    .map_err(|e| layer_err(&path, format!("hard link target: {e}")))?;
                remove_existing(&t)?;
                nix::unistd::linkat(&source, "", &t.parent, &t.name, AtFlags::AT_EMPTY_PATH)
                    .map_err(sys_err(&path, "hard link"))?;
                continue; // a hard link shares its target's metadata
            }
            kind @ (tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo) => {
                remove_existing(&t)?;
                let (sflag, dev) = match kind {
                    tar::EntryType::Char => (SFlag::S_IFCHR, device(&header, &path)?),
                    tar::EntryType::Block => (SFlag::S_IFBLK, device(&header, &path)?),
                    _ => (SFlag::S_IFIFO, 0),
                };
                nix::sys::stat::mknodat(&t.parent, &t.name, sflag, Mode::from_bits_truncate(0o600), dev)
                    .map_err(sys_err(&path, "mknod"))?;
            }
            // pax/GNU metadata entries are folded into the next entry by the tar crate.
            _ => continue,
        }
        apply_xattrs(&mut entry, &t)?;
        set_metadata(&t, &header, mode)?;
    }
    // Directories last, deepest first: writing their children changed their times.
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (path, header) in dirs {
        let parent =
            bulkhead_confine::open(&root, path.parent().unwrap_or(Path::new("")), OFlag::O_PATH | OFlag::O_DIRECTORY)
                .map_err(|e| layer_err(&path, e.to_string()))?;
        let name = PathBuf::from(path.file_name().unwrap_or(OsStr::new(".")));
        let mode = Mode::from_bits_truncate(header.mode().map_err(io_err(&path))? & 0o7777);
        set_metadata(&Target { parent, name, path: path.clone() }, &header, mode)?;
    }
    // The diff ID covers the whole stream, padding after the archive included.
    let mut reader = archive.into_inner();
    io::copy(&mut reader, &mut io::sink()).map_err(|e| layer_err(dest, format!("corrupt layer: {e}")))?;
    let hex = hex::encode(sha2::Digest::finalize(reader.hasher));
    stats.diff_id = format!("sha256:{hex}").parse()?;
    if let Some(expected) = diff_id
        && expected != &stats.diff_id
    {
        return Err(layer_err(
            dest,
            format!("the uncompressed layer is {}, not the diff ID {expected}", stats.diff_id),
        ));
    }
    Ok(stats)
}

fn device(header: &tar::Header, path: &Path) -> Result<nix::libc::dev_t> {
    let major = header.device_major().map_err(io_err(path))?.unwrap_or(0);
    let minor = header.device_minor().map_err(io_err(path))?.unwrap_or(0);
    Ok(makedev(u64::from(major), u64::from(minor)))
}

fn is_dir(t: &Target) -> bool {
    nix::sys::stat::fstatat(&t.parent, &t.name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR)
}

/// Removes what a later entry replaces (a file by a directory, a directory
/// by a file...). Directories are removed with their content.
fn remove_existing(t: &Target) -> Result<()> {
    match nix::unistd::unlinkat(&t.parent, &t.name, nix::unistd::UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::EISDIR) | Err(Errno::EPERM) if is_dir(t) => {
            let dir = bulkhead_confine::open(&t.parent, &t.name, OFlag::O_DIRECTORY | OFlag::O_RDONLY)
                .map_err(|e| layer_err(&t.path, e.to_string()))?;
            remove_dir_contents(&dir, &t.path)?;
            drop(dir);
            nix::unistd::unlinkat(&t.parent, &t.name, nix::unistd::UnlinkatFlags::RemoveDir)
                .map_err(sys_err(&t.path, "rmdir"))
        }
        Err(errno) => Err(layer_err(&t.path, format!("replace: {errno}"))),
    }
}

fn remove_dir_contents(dir: &OwnedFd, path: &Path) -> Result<()> {
    let mut listing =
        nix::dir::Dir::openat(dir, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(sys_err(path, "list"))?;
    let names: Vec<PathBuf> = listing
        .iter()
        .flatten()
        .map(|e| PathBuf::from(OsStr::from_bytes(e.file_name().to_bytes())))
        .filter(|n| n != Path::new(".") && n != Path::new(".."))
        .collect();
    for name in names {
        let parent = nix::fcntl::openat(dir, ".", OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(sys_err(path, "open"))?;
        remove_existing(&Target { parent, path: path.join(&name), name })?;
    }
    Ok(())
}

fn set_opaque(root: &OwnedFd, dir: &Path) -> Result<()> {
    let fd = bulkhead_confine::open(root, dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
        .map_err(|e| layer_err(dir, e.to_string()))?;
    xattr::FileExt::set_xattr(&std::fs::File::from(fd), OPAQUE_XATTR, b"y").map_err(io_err(dir))
}

/// `SCHILY.xattr.*` pax records become xattrs (not on symlinks: Linux refuses user xattrs there).
fn apply_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>, t: &Target) -> Result<()> {
    let Some(extensions) = entry.pax_extensions().map_err(io_err(&t.path))? else { return Ok(()) };
    let mut xattrs = Vec::new();
    for ext in extensions {
        let ext = ext.map_err(io_err(&t.path))?;
        if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
            xattrs.push((OsStr::from_bytes(name).to_owned(), ext.value_bytes().to_owned()));
        }
    }
    if xattrs.is_empty() || entry.header().entry_type() == tar::EntryType::Symlink {
        return Ok(());
    }
    let fd = nix::fcntl::openat(
        &t.parent,
        &t.name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::empty(),
    )
    .map_err(sys_err(&t.path, "open for xattrs"))?;
    let file = std::fs::File::from(fd);
    for (name, value) in xattrs {
        xattr::FileExt::set_xattr(&file, &name, &value).map_err(io_err(&t.path))?;
    }
    Ok(())
}

/// Owner, then mode (chown clears set-id bits), then times.
fn set_metadata(t: &Target, header: &tar::Header, mode: Mode) -> Result<()> {
    // Empty numeric fields read as 0, as Go's archive/tar (which wrote most layers) reads them.
    let uid = header.uid().unwrap_or(0) as u32;
    let gid = header.gid().unwrap_or(0) as u32;
    nix::unistd::fchownat(
        &t.parent,
        &t.name,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(sys_err(&t.path, "chown"))?;
    if header.entry_type() != tar::EntryType::Symlink {
        nix::sys::stat::fchmodat(&t.parent, &t.name, mode, nix::sys::stat::FchmodatFlags::FollowSymlink)
            .map_err(sys_err(&t.path, "chmod"))?;
    }
    let mtime = header.mtime().unwrap_or(0) as i64;
    let ts = TimeSpec::new(mtime, 0);
    nix::sys::stat::utimensat(&t.parent, &t.name, &ts, &ts, UtimensatFlags::NoFollowSymlink)
        .map_err(sys_err(&t.path, "set times"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a = crate::Digest::sha256_of(b"a");
        let b = crate::Digest::sha256_of(b"b");
        assert_eq!(chain_id(&[]), None);
        assert_eq!(chain_id(std::slice::from_ref(&a)), Some(a.clone()));
        assert_eq!(chain_id(&[a.clone(), b.clone()]), Some(crate::Digest::sha256_of(format!("{a} {b}").as_bytes())));
    }
}
