//! Which cgroup hierarchy the host runs, and which cgroup driver bulkhead
//! uses to place pods in it. The layout is read from the mount table at run
//! time — never assumed — because nodes run pure cgroup v2, pure v1, or the
//! hybrid of both (v1 controllers with cgroup2 mounted beside them).

use std::path::{Path, PathBuf};

pub(crate) mod devices_bpf;
pub mod fs;

pub use fs::{Cgroup, Stats};

use serde::Serialize;

use crate::{Error, Result};

/// The cgroup hierarchy layout of the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// cgroup v2 only, mounted at the cgroup root (most production nodes).
    Unified { mountpoint: PathBuf },
    /// cgroup v1 controllers, plus a cgroup2 hierarchy mounted elsewhere
    /// (commonly `/sys/fs/cgroup/unified`) that holds no controllers of use.
    Hybrid { v1_controllers: Vec<String>, v2_mountpoint: PathBuf },
    /// cgroup v1 controllers only.
    Legacy { v1_controllers: Vec<String> },
}

impl Layout {
    /// Reads the layout from `/proc/self/mountinfo`.
    pub fn detect() -> Result<Layout> {
        Self::detect_from(Path::new("/proc/self/mountinfo"))
    }

    /// Reads the layout from a mountinfo file.
    pub fn detect_from(mountinfo: &Path) -> Result<Layout> {
        let text =
            std::fs::read_to_string(mountinfo).map_err(|source| Error::Read { path: mountinfo.to_owned(), source })?;
        Self::parse(&text).ok_or_else(|| Error::NoCgroupFs { mountinfo: mountinfo.to_owned() })
    }

    /// Parses mountinfo text (proc(5) format); `None` when no cgroup
    /// filesystem is mounted at all.
    pub fn parse(mountinfo: &str) -> Option<Layout> {
        let mut v1_controllers = Vec::new();
        let mut v2_mountpoint = None;
        for mount in crate::mountinfo::parse(mountinfo) {
            match mount.fstype.as_str() {
                "cgroup2" if v2_mountpoint.is_none() => v2_mountpoint = Some(mount.mountpoint),
                "cgroup" => {
                    for opt in mount.super_options.split(',') {
                        if is_v1_controller(opt) && !v1_controllers.iter().any(|c| c == opt) {
                            v1_controllers.push(opt.to_owned());
                        }
                    }
                }
                _ => {}
            }
        }
        v1_controllers.sort();
        match (v1_controllers.is_empty(), v2_mountpoint) {
            (true, Some(mountpoint)) => Some(Layout::Unified { mountpoint }),
            (false, Some(v2_mountpoint)) => Some(Layout::Hybrid { v1_controllers, v2_mountpoint }),
            (false, None) => Some(Layout::Legacy { v1_controllers }),
            (true, None) => None,
        }
    }

    /// The short name operators see: `v2`, `hybrid` or `v1`.
    pub fn name(&self) -> &'static str {
        match self {
            Layout::Unified { .. } => "v2",
            Layout::Hybrid { .. } => "hybrid",
            Layout::Legacy { .. } => "v1",
        }
    }
}

/// Mount options of a v1 cgroup mount that are not controllers.
pub(crate) fn is_v1_controller(opt: &str) -> bool {
    !(opt.is_empty()
        || opt.starts_with("name=")
        || opt.starts_with("release_agent=")
        || matches!(opt, "rw" | "ro" | "noprefix" | "clone_children" | "xattr" | "cpuset_v2_mode"))
}

/// Who manages the cgroups of pods: systemd (slices and scopes, through its
/// D-Bus API) or bulkhead writing cgroupfs directly. kubelet's
/// `cgroupDriver` must match, and learns it from the `RuntimeConfig` RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    Systemd,
    Cgroupfs,
}

/// The file whose presence means the host was booted with systemd
/// (sd_booted(3)).
pub const SYSTEMD_MARKER: &str = "/run/systemd/system";

impl Driver {
    /// Chooses the driver: `wanted` if given (refusing `systemd` on a host
    /// without it), else systemd when it runs the host, as kubelet's
    /// defaults on systemd hosts expect, else cgroupfs.
    pub fn choose(wanted: Option<Driver>, systemd_marker: &Path) -> Result<Driver> {
        let systemd = systemd_marker.is_dir();
        match wanted {
            Some(Driver::Systemd) if !systemd => Err(Error::SystemdNotRunning { marker: systemd_marker.to_owned() }),
            Some(driver) => Ok(driver),
            None if systemd => Ok(Driver::Systemd),
            None => Ok(Driver::Cgroupfs),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Driver::Systemd => "systemd",
            Driver::Cgroupfs => "cgroupfs",
        }
    }
}

/// The device rules every container gets after its spec's, as runc adds
/// them (its `AllowedDevices`): mknod of any character or block device,
/// and full use of the devices the runtime creates in /dev (null, random,
/// full, tty, zero, urandom, the pts and ptmx). Without them a spec that
/// denies all devices, as containerd's and runc's defaults do, could not
/// even open /dev/null.
pub fn with_default_devices(resources: &oci_spec::runtime::LinuxResources) -> oci_spec::runtime::LinuxResources {
    use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};
    let Some(rules) = resources.devices().as_ref().filter(|r| !r.is_empty()) else {
        return resources.clone();
    };
    let rule = |typ: LinuxDeviceType, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut r = LinuxDeviceCgroup::default();
        r.set_allow(true);
        r.set_typ(Some(typ));
        r.set_major(major);
        r.set_minor(minor);
        r.set_access(Some(access.to_owned()));
        r
    };
    let c = LinuxDeviceType::C;
    let mut all = rules.clone();
    all.extend([
        rule(c, None, None, "m"),
        rule(LinuxDeviceType::B, None, None, "m"),
        rule(c, Some(1), Some(3), "rwm"),
        rule(c, Some(1), Some(8), "rwm"),
        rule(c, Some(1), Some(7), "rwm"),
        rule(c, Some(5), Some(0), "rwm"),
        rule(c, Some(1), Some(5), "rwm"),
        rule(c, Some(1), Some(9), "rwm"),
        rule(c, Some(136), None, "rwm"),
        rule(c, Some(5), Some(2), "rwm"),
    ]);
    let mut out = resources.clone();
    out.set_devices(Some(all));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_host() {
        assert_eq!(
            Layout::parse(HYBRID),
            Some(Layout::Hybrid {
                v1_controllers: vec!["cpu".into(), "cpuacct".into(), "memory".into()],
                v2_mountpoint: "/sys/fs/cgroup/unified".into(),
            })
        );
    }

    #[test]
    fn unified_host() {
        let text = "25 21 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        assert_eq!(Layout::parse(text), Some(Layout::Unified { mountpoint: "/sys/fs/cgroup".into() }));
        assert_eq!(Layout::parse(text).unwrap().name(), "v2");
    }

    #[test]
    fn legacy_host_and_no_cgroups() {
        let legacy: String = HYBRID.lines().filter(|l| !l.contains("cgroup2")).map(|l| format!("{l}\n")).collect();
        assert!(matches!(Layout::parse(&legacy), Some(Layout::Legacy { .. })));
        assert_eq!(Layout::parse("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"), None);
    }

    #[test]
    fn driver_choice() {
        let dir = std::env::temp_dir().join(format!("bulkhead-driver-test-{}", std::process::id()));
        let missing = dir.join("missing");
        assert_eq!(Driver::choose(None, &missing).unwrap(), Driver::Cgroupfs);
        assert!(Driver::choose(Some(Driver::Systemd), &missing).unwrap_err().to_string().contains("systemd"));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(Driver::choose(None, &dir).unwrap(), Driver::Systemd);
        assert_eq!(Driver::choose(Some(Driver::Cgroupfs), &dir).unwrap(), Driver::Cgroupfs);
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn default_device_rules_follow_the_spec_s() {
        let none = oci_spec::runtime::LinuxResources::default();
        assert_eq!(with_default_devices(&none), none, "no device rules: the cgroup's own stay");
        let deny: oci_spec::runtime::LinuxResources =
            serde_json::from_value(serde_json::json!({"devices": [{"allow": false, "access": "rwm"}]})).unwrap();
        let rules = with_default_devices(&deny).devices().clone().unwrap();
        assert_eq!(rules.len(), 11);
        assert!(!rules[0].allow(), "the spec's first");
        assert!(rules.iter().any(|r| r.allow() && r.major() == Some(1) && r.minor() == Some(5)), "/dev/zero");
    }
}
