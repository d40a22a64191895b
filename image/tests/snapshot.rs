//! Layer snapshots stacked by a real overlay mount (root only): whiteouts
//! and opaque directories hide what is below, the upper layer takes the
//! writes, and hundreds of layers mount although their option string would
//! not fit in a page.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};

use bulkhead_image::unpack::{Compression, chain_id, unpack};
use bulkhead_image::{Digest, Snapshots};

fn layer(files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).unwrap();
        h.set_mode(0o644);
        h.set_size(content.len() as u64);
        h.set_cksum();
        b.append(&h, content.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}

/// Unpacks `layers` (bottom first) as snapshots; returns their dirs, topmost first.
fn stack(snapshots: &Snapshots, layers: &[Vec<u8>]) -> Vec<PathBuf> {
    let mut diff_ids = Vec::new();
    let mut dirs = Vec::new();
    for l in layers {
        diff_ids.push(Digest::sha256_of(l));
        let chain = chain_id(&diff_ids).unwrap();
        snapshots.create(&chain, |dir| unpack(l.as_slice(), Compression::None, dir, diff_ids.last())).unwrap();
        dirs.push(snapshots.layer_dir(&chain));
    }
    dirs.reverse();
    dirs
}

struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn mount(lowers: &[PathBuf], base: &Path) -> Mounted {
    let (upper, work, target) = (base.join("upper"), base.join("work"), base.join("rootfs"));
    for d in [&upper, &work, &target] {
        std::fs::create_dir_all(d).unwrap();
    }
    bulkhead_image::snapshot::mount_overlay(lowers, &upper, &work, &target).unwrap();
    Mounted(target)
}

#[test]
fn whiteouts_and_opaque_directories_hide_lower_content() {
    let dir = tempfile::tempdir().unwrap();
    let snapshots = Snapshots::open(&dir.path().join("snapshots")).unwrap();
    let lowers = stack(
        &snapshots,
        &[
            layer(&[("a/x", "1"), ("a/y", "1"), ("b/old", "1"), ("c/keep", "1")]),
            layer(&[("a/.wh.x", ""), ("b/.wh..wh..opq", ""), ("b/new", "2")]),
            layer(&[("c/keep", "3")]),
        ],
    );
    let m = mount(&lowers, dir.path());
    let root = &m.0;
    assert!(!root.join("a/x").exists(), "whited out");
    assert_eq!(std::fs::read_to_string(root.join("a/y")).unwrap(), "1");
    assert!(!root.join("b/old").exists(), "hidden by the opaque directory");
    assert_eq!(std::fs::read_to_string(root.join("b/new")).unwrap(), "2");
    assert_eq!(std::fs::read_to_string(root.join("c/keep")).unwrap(), "3");
    std::fs::write(root.join("written"), "by the container").unwrap();
    assert!(dir.path().join("upper/written").exists(), "writes go to the upper layer");
    for lower in &lowers {
        assert!(!lower.join("written").exists(), "never to a shared snapshot");
    }
    assert_eq!(snapshots.list().unwrap().len(), 3);
}

#[test]
fn hundreds_of_layers_mount_beyond_a_page_of_options() {
    let dir = tempfile::tempdir().unwrap();
    let snapshots = Snapshots::open(&dir.path().join("snapshots")).unwrap();
    let layers: Vec<Vec<u8>> = (0..300).map(|i| layer(&[(&format!("f{i}"), &i.to_string())])).collect();
    let lowers = stack(&snapshots, &layers);
    let option_len: usize = lowers.iter().map(|l| l.as_os_str().len() + 1).sum();
    assert!(option_len > 4096, "the classic lowerdir= string would be {option_len} bytes");
    let m = mount(&lowers, dir.path());
    assert_eq!(std::fs::read_to_string(m.0.join("f0")).unwrap(), "0");
    assert_eq!(std::fs::read_to_string(m.0.join("f299")).unwrap(), "299");
}

#[test]
fn a_snapshot_is_made_once_and_a_failed_one_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let snapshots = Snapshots::open(&dir.path().join("snapshots")).unwrap();
    let l = layer(&[("x", "1")]);
    let chain = Digest::sha256_of(&l);
    assert!(snapshots.create(&chain, |d| unpack(l.as_slice(), Compression::None, d, None)).unwrap().is_some());
    assert!(snapshots.create(&chain, |_| -> bulkhead_image::Result<()> { panic!("already there") }).unwrap().is_none());
    let other = Digest::sha256_of(b"other");
    let bad = b"not a tar at all, just bytes that are long enough to be read as a header..........".repeat(8);
    assert!(snapshots.create(&other, |d| unpack(bad.as_slice(), Compression::None, d, None)).is_err());
    assert!(!snapshots.exists(&other));
    assert_eq!(std::fs::read_dir(dir.path().join("snapshots/tmp")).unwrap().count(), 0, "the failed staging is gone");
}
