//! What the host kernel offers that containers need. The daemon reports the
//! outcome in the CRI `Status` RPC (RuntimeReady), so a node lacking a
//! prerequisite says so plainly instead of failing on its first pod.

use std::path::Path;

use serde::Serialize;

use crate::cgroups::Layout;

/// Namespaces every pod uses; each must appear under `/proc/self/ns`.
const REQUIRED_NAMESPACES: [&str; 6] = ["mnt", "uts", "ipc", "pid", "net", "cgroup"];

/// The outcome of probing the host.
#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    /// The cgroup layout, when one was found.
    pub cgroup_layout: Option<Layout>,
    /// One line per missing prerequisite; empty when the host is fit.
    pub missing: Vec<String>,
    /// Recursive read-only mounts (`rro`) work: the kernel has mount_setattr.
    pub recursive_read_only: bool,
}

impl HostReport {
    /// Probes the running host.
    pub fn probe() -> HostReport {
        Self::probe_at(Path::new("/proc"))
    }

    /// Probes a host whose procfs is mounted at `proc`.
    pub fn probe_at(proc: &Path) -> HostReport {
        let mut missing = Vec::new();
        let cgroup_layout = match Layout::detect_from(&proc.join("self/mountinfo")) {
            Ok(layout) => Some(layout),
            Err(e) => {
                missing.push(e.to_string());
                None
            }
        };
        for ns in REQUIRED_NAMESPACES {
            let path = proc.join("self/ns").join(ns);
            if !path.exists() {
                missing.push(format!("the kernel lacks {ns} namespaces ({} is missing)", path.display()));
            }
        }
        let filesystems = proc.join("filesystems");
        match std::fs::read_to_string(&filesystems) {
            Ok(text) if text.lines().any(|l| l.split_whitespace().last() == Some("overlay")) => {}
            Ok(_) => missing.push(format!(
                "the kernel has no overlay filesystem (not listed in {}; try `modprobe overlay`)",
                filesystems.display()
            )),
            Err(e) => missing.push(format!("read {}: {e}", filesystems.display())),
        }
        HostReport { cgroup_layout, missing, recursive_read_only: crate::sys::has_mount_setattr() }
    }

    pub fn is_fit(&self) -> bool {
        self.missing.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_host_is_probed() {
        let report = HostReport::probe();
        // The CI and development hosts are container hosts.
        assert!(report.is_fit(), "{:?}", report.missing);
        assert!(report.cgroup_layout.is_some());
    }

    #[test]
    fn missing_prerequisites_are_named() {
        let dir = std::env::temp_dir().join(format!("bulkhead-host-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("self/ns")).unwrap();
        std::fs::write(dir.join("self/mountinfo"), "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n").unwrap();
        std::fs::write(dir.join("filesystems"), "nodev\tproc\n\text4\n").unwrap();
        std::fs::write(dir.join("self/ns/net"), "").unwrap();
        let report = HostReport::probe_at(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        let text = report.missing.join("\n");
        assert!(text.contains("no cgroup filesystem"), "{text}");
        assert!(text.contains("pid namespaces"), "{text}");
        assert!(!text.contains("net namespaces"), "{text}");
        assert!(text.contains("overlay"), "{text}");
    }
}
