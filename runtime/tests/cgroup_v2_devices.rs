//! Device rules on cgroup v2 are an eBPF program attached to the cgroup.
//! cgroup2 is mounted on every host this runs on (alone on v2 hosts, beside
//! the v1 controllers on hybrid ones), and device programs need no
//! controller, so the program is tested for real: a shell that joins the
//! cgroup can open exactly the devices the rules allow. Root only.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::Path;
use std::process::Command;

use bulkhead_runtime::cgroups::Cgroup;
use oci_spec::runtime::LinuxResources;

#[test]
fn the_ebpf_device_program_enforces_the_rules() {
    let mounts: Vec<_> = bulkhead_runtime::mountinfo::read(Path::new("/proc/self/mountinfo"))
        .unwrap()
        .into_iter()
        .filter(|m| m.fstype == "cgroup2")
        .collect();
    assert!(!mounts.is_empty(), "no cgroup2 filesystem is mounted");
    let name = format!("/bulkhead-bpf-test-{}", std::process::id());
    // Only the v2 hierarchy: the cgroup takes its v2 code path.
    let cgroup = Cgroup::resolve(&mounts, "0::/\n", Path::new(&name)).unwrap();
    assert!(cgroup.is_v2());
    cgroup.create().unwrap();
    let resources: LinuxResources = serde_json::from_value(serde_json::json!({"devices": [
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "r"}
    ]}))
    .unwrap();
    let applied = cgroup.set(&resources);
    let dir = &cgroup.hierarchies[0].dir;
    let script = format!(
        "echo $$ > {}/cgroup.procs; \
         head -c1 /dev/full >/dev/null 2>&1; echo full=$?; \
         head -c1 /dev/zero >/dev/null; echo zero-read=$?; \
         (echo x > /dev/zero) 2>/dev/null; echo zero-write=$?; \
         echo x > /dev/null; echo null=$?",
        dir.display()
    );
    let out = applied.as_ref().ok().map(|()| Command::new("/bin/sh").args(["-c", &script]).output().unwrap());
    cgroup.destroy().unwrap();
    applied.unwrap();
    let out = String::from_utf8_lossy(&out.unwrap().stdout).into_owned();
    assert!(out.contains("full=1"), "/dev/full (not allowed) is refused: {out}");
    assert!(out.contains("zero-read=0"), "/dev/zero may be read: {out}");
    assert!(!out.contains("zero-write=0"), "but not written: {out}");
    assert!(out.contains("null=0"), "/dev/null is allowed: {out}");
    assert!(!dir.exists());
}
