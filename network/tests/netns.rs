//! Pod network namespaces, for real (root only): pinned, with loopback up,
//! separate from the host's, and gone without a trace when removed.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use bulkhead_network::netns::NetNs;

fn is_mounted(path: &std::path::Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().any(|l| {
        let mountpoint = l.split_whitespace().nth(4).unwrap_or_default();
        mountpoint == path.to_str().unwrap() && l.contains(" - nsfs ")
    })
}

#[test]
fn a_namespace_is_pinned_isolated_and_removed_without_a_trace() {
    let dir = tempfile::tempdir().unwrap();
    let pin = dir.path().join("netns/pod-1");
    let ns = NetNs::create(&pin).unwrap();
    assert!(is_mounted(&pin), "pinned by an nsfs bind mount");
    assert!(ns.loopback_up().unwrap(), "loopback is up inside");
    let inside = ns.run(|| std::fs::read_link("/proc/thread-self/ns/net").unwrap()).unwrap();
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(inside, host, "a namespace of its own");
    assert_eq!(std::fs::read_link("/proc/self/ns/net").unwrap(), host, "the caller never left the host's");
    let interfaces = ns.run(|| std::fs::read_dir("/sys/class/net").map(|d| d.count()).unwrap_or(0)).unwrap();
    assert!(interfaces >= 1);

    NetNs::remove(&pin).unwrap();
    assert!(!is_mounted(&pin) && !pin.exists());
    NetNs::remove(&pin).unwrap(); // again: fine
}

#[test]
fn creating_over_an_existing_pin_fails_and_leaves_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let pin = dir.path().join("pod-1");
    NetNs::create(&pin).unwrap();
    let err = NetNs::create(&pin).unwrap_err().to_string();
    assert!(err.contains("pod-1"), "{err}");
    assert!(is_mounted(&pin), "the first namespace is untouched");
    NetNs::remove(&pin).unwrap();
}
