//! Layers unpacked for real (as root: ownership, devices, trusted xattrs):
//! every entry kind with its metadata, whiteouts in overlayfs form, every
//! compression, and layers that try to escape.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use bulkhead_image::unpack::{Compression, unpack};

fn header(path: &str, kind: tar::EntryType, mode: u32, uid: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    set_raw_name(&mut h, path);
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(uid);
    h.set_mtime(1_600_000_000);
    h.set_size(0);
    h
}

/// Sets the name without the tar crate's checks, so tests can build hostile layers.
fn set_raw_name(h: &mut tar::Header, path: &str) {
    let name = &mut h.as_old_mut().name;
    name.fill(0);
    name[..path.len()].copy_from_slice(path.as_bytes());
}

fn add(b: &mut tar::Builder<Vec<u8>>, mut h: tar::Header, data: &[u8]) {
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn link(b: &mut tar::Builder<Vec<u8>>, path: &str, kind: tar::EntryType, target: &str) {
    let mut h = header(path, kind, 0o777, 0);
    let name = &mut h.as_old_mut().linkname;
    name.fill(0);
    name[..target.len()].copy_from_slice(target.as_bytes());
    add(b, h, b"");
}

fn rich_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, header("etc/", tar::EntryType::Directory, 0o755, 0), b"");
    add(&mut b, header("etc/passwd", tar::EntryType::Regular, 0o644, 1000), b"root:x:0:0::/root:/bin/sh\n");
    add(&mut b, header("bin/", tar::EntryType::Directory, 0o711, 0), b"");
    add(&mut b, header("bin/busybox", tar::EntryType::Regular, 0o4755, 0), b"#!ELF...");
    link(&mut b, "bin/sh", tar::EntryType::Symlink, "busybox");
    link(&mut b, "bin/ash", tar::EntryType::Link, "bin/busybox");
    add(&mut b, header("run/fifo", tar::EntryType::Fifo, 0o600, 0), b"");
    let mut dev = header("dev/null", tar::EntryType::Char, 0o666, 0);
    dev.set_device_major(1).unwrap();
    dev.set_device_minor(3).unwrap();
    add(&mut b, dev, b"");
    // A file with an xattr, carried in a pax record.
    b.append_pax_extensions([("SCHILY.xattr.user.bulkhead", b"yes".as_slice())]).unwrap();
    add(&mut b, header("etc/tagged", tar::EntryType::Regular, 0o600, 0), b"x");
    b.into_inner().unwrap()
}

#[test]
fn every_entry_kind_keeps_its_metadata() {
    let dest = tempfile::tempdir().unwrap();
    let layer = rich_layer();
    let stats = unpack(layer.as_slice(), Compression::None, dest.path(), None).unwrap();
    assert_eq!(
        stats.diff_id,
        bulkhead_image::Digest::sha256_of(&layer),
        "the diff ID is the uncompressed stream's digest"
    );
    assert_eq!(stats.entries, 9, "the pax record is folded into its entry");
    let d = dest.path();
    let passwd = std::fs::symlink_metadata(d.join("etc/passwd")).unwrap();
    assert_eq!(
        (passwd.uid(), passwd.gid(), passwd.mode() & 0o7777, passwd.mtime()),
        (1000, 1000, 0o644, 1_600_000_000)
    );
    assert_eq!(std::fs::read_to_string(d.join("etc/passwd")).unwrap(), "root:x:0:0::/root:/bin/sh\n");
    let busybox = std::fs::symlink_metadata(d.join("bin/busybox")).unwrap();
    assert_eq!(busybox.mode() & 0o7777, 0o4755, "set-uid kept");
    assert_eq!(busybox.nlink(), 2, "bin/ash is a hard link to it");
    assert_eq!(std::fs::read_link(d.join("bin/sh")).unwrap(), Path::new("busybox"));
    assert_eq!(std::fs::symlink_metadata(d.join("bin")).unwrap().mode() & 0o7777, 0o711);
    assert_eq!(std::fs::symlink_metadata(d.join("etc")).unwrap().mtime(), 1_600_000_000, "directory times set last");
    assert!(std::fs::symlink_metadata(d.join("run/fifo")).unwrap().file_type().is_fifo());
    let null = std::fs::symlink_metadata(d.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    assert_eq!(xattr::get(d.join("etc/tagged"), "user.bulkhead").unwrap(), Some(b"yes".to_vec()));
}

#[test]
fn whiteouts_become_overlayfs_whiteouts_and_opaque_dirs() {
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, header("a/.wh.gone", tar::EntryType::Regular, 0o600, 0), b"");
    add(&mut b, header("b/", tar::EntryType::Directory, 0o755, 0), b"");
    add(&mut b, header("b/.wh..wh..opq", tar::EntryType::Regular, 0o600, 0), b"");
    add(&mut b, header("b/kept", tar::EntryType::Regular, 0o644, 0), b"new");
    let dest = tempfile::tempdir().unwrap();
    unpack(b.into_inner().unwrap().as_slice(), Compression::None, dest.path(), None).unwrap();
    let gone = std::fs::symlink_metadata(dest.path().join("a/gone")).unwrap();
    assert!(gone.file_type().is_char_device() && gone.rdev() == 0, "a 0:0 character device");
    assert!(!dest.path().join("a/.wh.gone").exists());
    assert_eq!(xattr::get(dest.path().join("b"), "trusted.overlay.opaque").unwrap(), Some(b"y".to_vec()));
    assert!(!dest.path().join("b/.wh..wh..opq").exists());
    assert_eq!(std::fs::read_to_string(dest.path().join("b/kept")).unwrap(), "new");
}

#[test]
fn gzip_and_zstd_layers_unpack_the_same() {
    let plain = rich_layer();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).unwrap();
    let zst = zstd::stream::encode_all(plain.as_slice(), 3).unwrap();
    for (bytes, c) in [(gz.finish().unwrap(), Compression::Gzip), (zst, Compression::Zstd)] {
        let dest = tempfile::tempdir().unwrap();
        let diff_id = bulkhead_image::Digest::sha256_of(&plain);
        unpack(bytes.as_slice(), c, dest.path(), Some(&diff_id)).unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.path().join("etc/passwd")).unwrap(),
            "root:x:0:0::/root:/bin/sh\n",
            "{c:?}"
        );
    }
    let dest = tempfile::tempdir().unwrap();
    let wrong = bulkhead_image::Digest::sha256_of(b"not this layer");
    let err = unpack(plain.as_slice(), Compression::None, dest.path(), Some(&wrong)).unwrap_err().to_string();
    assert!(err.contains("not the diff ID"), "{err}");
    let corrupt = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3];
    let dest = tempfile::tempdir().unwrap();
    assert!(
        unpack(corrupt.as_slice(), Compression::Gzip, dest.path(), None).unwrap_err().to_string().contains("corrupt")
    );
}

#[test]
fn layers_that_try_to_escape_are_refused_and_write_nothing_outside() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().to_str().unwrap().to_owned();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            {
                let mut b = tar::Builder::new(Vec::new());
                add(&mut b, header("../escaped", tar::EntryType::Regular, 0o644, 0), b"x");
                b.into_inner().unwrap()
            },
            "..",
        ),
        (
            {
                let mut b = tar::Builder::new(Vec::new());
                add(&mut b, header(&format!("{target}/abs"), tar::EntryType::Regular, 0o644, 0), b"x");
                b.into_inner().unwrap()
            },
            "absolute",
        ),
        (
            {
                let mut b = tar::Builder::new(Vec::new());
                add(&mut b, header("etc/", tar::EntryType::Directory, 0o755, 0), b"");
                link(&mut b, "etc/shadow", tar::EntryType::Link, "../../../etc/shadow");
                b.into_inner().unwrap()
            },
            "..",
        ),
    ];
    for (layer, why) in cases {
        let dest = tempfile::tempdir().unwrap();
        let err = unpack(layer.as_slice(), Compression::None, dest.path(), None).unwrap_err().to_string();
        assert!(err.contains(why), "{err}");
    }
    // A symlink aimed at the host, then a write through it: it lands inside.
    let mut b = tar::Builder::new(Vec::new());
    link(&mut b, "esc", tar::EntryType::Symlink, &target);
    add(&mut b, header("esc/pwned", tar::EntryType::Regular, 0o644, 0), b"x");
    link(&mut b, "up", tar::EntryType::Symlink, "../../../../..");
    add(&mut b, header("up/pwned2", tar::EntryType::Regular, 0o644, 0), b"x");
    let dest = tempfile::tempdir().unwrap();
    unpack(b.into_inner().unwrap().as_slice(), Compression::None, dest.path(), None).unwrap();
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0, "nothing written outside the snapshot");
    assert!(dest.path().join(target.trim_start_matches('/')).join("pwned").exists(), "resolved inside the snapshot");
    assert!(dest.path().join("pwned2").exists());
}

#[test]
fn an_entry_replaces_what_the_layer_wrote_before_it() {
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, header("x", tar::EntryType::Regular, 0o644, 0), b"file");
    add(&mut b, header("x/", tar::EntryType::Directory, 0o755, 0), b"");
    add(&mut b, header("x/inner", tar::EntryType::Regular, 0o644, 0), b"in");
    add(&mut b, header("y/", tar::EntryType::Directory, 0o755, 0), b"");
    add(&mut b, header("y/deep", tar::EntryType::Regular, 0o644, 0), b"d");
    add(&mut b, header("y", tar::EntryType::Regular, 0o644, 0), b"now a file");
    let dest = tempfile::tempdir().unwrap();
    unpack(b.into_inner().unwrap().as_slice(), Compression::None, dest.path(), None).unwrap();
    assert_eq!(std::fs::read_to_string(dest.path().join("x/inner")).unwrap(), "in");
    assert_eq!(std::fs::read_to_string(dest.path().join("y")).unwrap(), "now a file");
}
