//! The cgroupfs driver: a container's cgroup as directories that bulkhead
//! writes itself, on cgroup v1 (one directory per hierarchy), v2 (one
//! directory in the unified tree) or the hybrid of both. `cgroupsPath`
//! follows runc: an absolute path is taken from each hierarchy's root, a
//! relative one from the cgroup of the calling process.
//!
//! [`Cgroup`] is the seam for the systemd driver (a later issue): the same
//! operations, done through systemd's units.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::{LinuxDeviceType, LinuxResources};
use serde::{Deserialize, Serialize};

use crate::mountinfo::Mount;
use crate::{Error, Result};

/// One cgroup hierarchy the container is placed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hierarchy {
    /// v1 controllers (and `name=...`) of the hierarchy; empty on v2.
    pub controllers: Vec<String>,
    /// The container's directory in it.
    pub dir: PathBuf,
    pub unified: bool,
    /// The hierarchy's directory name under the cgroup root (`cpu`, `systemd`, `unified`).
    pub name: String,
}

/// A container's cgroup: its directory in every hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroup {
    pub hierarchies: Vec<Hierarchy>,
}

/// Resource usage, as `events --stats` and the CRI report it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub cpu_usage_ns: Option<u64>,
    pub memory_usage: Option<u64>,
    pub memory_working_set: Option<u64>,
    pub memory_limit: Option<u64>,
    pub pids_current: Option<u64>,
    pub pids_limit: Option<u64>,
    pub oom_kills: Option<u64>,
}

fn write_err(path: &Path, value: &str) -> impl FnOnce(std::io::Error) -> Error {
    let (path, value) = (path.to_owned(), value.to_owned());
    move |source| Error::CgroupWrite { path, value, source }
}

/// The host's cgroup mounts, read from /proc/self/mountinfo once per
/// process: hierarchies are mounted at boot, while the whole table grows
/// with every container and pod (a third of a pod start's CPU went into
/// reading it on each cgroup lookup).
fn host_cgroup_mounts() -> Result<Vec<crate::mountinfo::Mount>> {
    static MOUNTS: std::sync::OnceLock<Vec<crate::mountinfo::Mount>> = std::sync::OnceLock::new();
    if let Some(mounts) = MOUNTS.get() {
        return Ok(mounts.clone());
    }
    let all = crate::mountinfo::read(Path::new("/proc/self/mountinfo"))?;
    let cgroup: Vec<_> = all.into_iter().filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2").collect();
    Ok(MOUNTS.get_or_init(|| cgroup).clone())
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Read { path, source }
}

/// The cgroup of the calling process in each hierarchy, from `/proc/self/cgroup`:
/// keyed by the hierarchy's controller list (`cpu,cpuacct`, `name=systemd`; `` for v2).
fn own_cgroups(text: &str) -> BTreeMap<String, PathBuf> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            Some((controllers.to_owned(), PathBuf::from(path)))
        })
        .collect()
}

fn under(mount: &Mount, cgroup: &Path) -> Result<PathBuf> {
    let rel = cgroup.strip_prefix(&mount.root).map_err(|_| Error::Spec {
        field: "linux.cgroupsPath".into(),
        message: format!(
            "{} is outside the part of the hierarchy mounted at {}",
            cgroup.display(),
            mount.mountpoint.display()
        ),
    })?;
    Ok(mount.mountpoint.join(rel))
}

impl Cgroup {
    /// The cgroup at `path` (`linux.cgroupsPath`) in every hierarchy of
    /// the mount table `mounts`; `own` is `/proc/self/cgroup`'s text.
    pub fn resolve(mounts: &[Mount], own: &str, path: &Path) -> Result<Cgroup> {
        if path.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            return Err(Error::Spec { field: "linux.cgroupsPath".into(), message: "must not contain '..'".into() });
        }
        let own = own_cgroups(own);
        let mut hierarchies = Vec::new();
        let mut seen_v1: Vec<Vec<String>> = Vec::new();
        let v1_exists = mounts.iter().any(|m| m.fstype == "cgroup");
        for mount in mounts {
            let (controllers, unified, key) = match mount.fstype.as_str() {
                "cgroup2" => (Vec::new(), true, String::new()),
                "cgroup" => {
                    let c: Vec<String> = mount
                        .super_options
                        .split(',')
                        .filter(|o| super::is_v1_controller(o) || o.starts_with("name="))
                        .map(str::to_owned)
                        .collect();
                    let key = c.join(",");
                    (c, false, key)
                }
                _ => continue,
            };
            if (!unified && seen_v1.contains(&controllers))
                || (unified && hierarchies.iter().any(|h: &Hierarchy| h.unified))
            {
                continue; // the same hierarchy mounted twice
            }
            let base = own.get(&key).cloned().unwrap_or_else(|| PathBuf::from("/"));
            let cgroup = if path.is_absolute() { path.to_owned() } else { base.join(path) };
            let name = mount.mountpoint.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            hierarchies.push(Hierarchy {
                controllers: controllers.clone(),
                dir: under(mount, &cgroup)?,
                unified,
                name,
            });
            if !unified {
                seen_v1.push(controllers);
            }
        }
        // On a hybrid host the v2 tree holds no controllers, but joining it keeps
        // systemd's view right, as runc does; it must exist for a pure v2 host.
        if hierarchies.is_empty() || (!v1_exists && !hierarchies.iter().any(|h| h.unified)) {
            return Err(Error::NoCgroupFs { mountinfo: PathBuf::from("/proc/self/mountinfo") });
        }
        Ok(Cgroup { hierarchies })
    }

    /// The cgroup at `path` on this host.
    pub fn for_host(path: &Path) -> Result<Cgroup> {
        let mounts = host_cgroup_mounts()?;
        let own = crate::procfs::read("/proc/self/cgroup").map_err(read_err(Path::new("/proc/self/cgroup")))?;
        Cgroup::resolve(&mounts, &own, path)
    }

    /// Whether the host runs cgroup v2 alone.
    pub fn is_v2(&self) -> bool {
        self.hierarchies.iter().all(|h| h.unified)
    }

    /// The directory holding `controller`'s files, if the host has it.
    fn dir_of(&self, controller: &str) -> Option<&Path> {
        self.hierarchies
            .iter()
            .find(|h| if h.unified { self.is_v2() } else { h.controllers.iter().any(|c| c == controller) })
            .map(|h| h.dir.as_path())
    }

    fn need(&self, controller: &str, field: &str) -> Result<&Path> {
        self.dir_of(controller).ok_or_else(|| Error::Unsupported {
            field: field.into(),
            what: format!("limits without the {controller} cgroup controller on this host"),
        })
    }

    fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
        let path = dir.join(file);
        std::fs::write(&path, value).map_err(write_err(&path, value))
    }

    fn read(dir: &Path, file: &str) -> Option<String> {
        std::fs::read_to_string(dir.join(file)).ok().map(|s| s.trim().to_owned())
    }

    /// Creates the directories; on v1 seeds cpuset from the parent, on v2
    /// enables the parent's controllers for it.
    pub fn create(&self) -> Result<()> {
        self.create_where(|_| true)
    }

    /// [`Cgroup::create`] for the hierarchies `which` selects.
    pub fn create_where(&self, which: impl Fn(&Hierarchy) -> bool) -> Result<()> {
        for h in self.hierarchies.iter().filter(|h| which(h)) {
            std::fs::create_dir_all(&h.dir).map_err(write_err(&h.dir, "(mkdir)"))?;
            if !h.unified && h.controllers.iter().any(|c| c == "cpuset") {
                seed_cpuset(&h.dir)?;
            }
            if h.unified && self.is_v2() {
                enable_controllers(&h.dir)?;
            }
        }
        Ok(())
    }

    /// Moves the calling process, which must be single-threaded, into the
    /// cgroup everywhere; `in_unified` says it was born in the v2 directory
    /// already ([`Cgroup::unified_dir`], `fork_into_cgroup`).
    ///
    /// On v1 it writes its own thread to `tasks` ("0"): the kernel moves
    /// the calling thread alone without write-locking the threadgroup
    /// semaphore, where a `cgroup.procs` write waits out an RCU grace period
    /// (milliseconds on every create). For a single-threaded process the
    /// thread is the process. v2 has no such path (`cgroup.threads` only
    /// moves threads within a threaded subtree): there a process not born
    /// in its cgroup goes through `cgroup.procs`.
    pub fn join_self(&self, in_unified: bool) -> Result<()> {
        for h in &self.hierarchies {
            match (h.unified, in_unified) {
                (true, true) => {}
                (true, false) => Self::write(&h.dir, "cgroup.procs", "0")?,
                (false, _) => Self::write(&h.dir, "tasks", "0")?,
            }
        }
        Ok(())
    }

    /// The container's directory in the v2 hierarchy, opened for
    /// clone3's CLONE_INTO_CGROUP; None on a v1-only host.
    pub fn unified_dir(&self) -> Option<std::os::fd::OwnedFd> {
        use nix::fcntl::OFlag;
        let h = self.hierarchies.iter().find(|h| h.unified)?;
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        nix::fcntl::open(&h.dir, flags, nix::sys::stat::Mode::empty()).ok()
    }

    /// Every process in the cgroup.
    pub fn procs(&self) -> Result<Vec<i32>> {
        let Some(h) = self.hierarchies.iter().find(|h| h.unified).or(self.hierarchies.first()) else {
            return Ok(Vec::new());
        };
        let path = h.dir.join("cgroup.procs");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::Read { path, source: e }),
        };
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Freezes (pause) or thaws (resume) every process.
    pub fn freeze(&self, frozen: bool) -> Result<()> {
        if self.is_v2() {
            let dir = self.need("", "pause")?;
            return Self::write(dir, "cgroup.freeze", if frozen { "1" } else { "0" });
        }
        let dir = self.need("freezer", "pause")?;
        let wanted = if frozen { "FROZEN" } else { "THAWED" };
        Self::write(dir, "freezer.state", wanted)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Self::read(dir, "freezer.state").as_deref() != Some(wanted) {
            if Instant::now() > deadline {
                return Err(Error::CgroupWrite {
                    path: dir.join("freezer.state"),
                    value: wanted.into(),
                    source: std::io::Error::other("the freezer did not settle"),
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Whether the cgroup is frozen.
    pub fn is_frozen(&self) -> bool {
        if self.is_v2() {
            return self.dir_of("").and_then(|d| Self::read(d, "cgroup.freeze")).as_deref() == Some("1");
        }
        self.dir_of("freezer").and_then(|d| Self::read(d, "freezer.state")).as_deref() == Some("FROZEN")
    }

    /// Removes the directories, waiting briefly for exiting processes.
    pub fn destroy(&self) -> Result<()> {
        for h in &self.hierarchies {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match std::fs::remove_dir(&h.dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => {
                        return Err(Error::CgroupWrite { path: h.dir.clone(), value: "(rmdir)".into(), source: e });
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies `linux.resources`.
    pub fn set(&self, r: &LinuxResources) -> Result<()> {
        if self.is_v2() { self.set_v2(r) } else { self.set_v1(r) }
    }

    fn set_v1(&self, r: &LinuxResources) -> Result<()> {
        if let Some(m) = r.memory() {
            let dir = self.need("memory", "linux.resources.memory")?;
            let limit = m.limit().map(|l| if l < 0 { "-1".to_owned() } else { l.to_string() });
            let swap = m.swap().map(|s| if s < 0 { "-1".to_owned() } else { s.to_string() });
            match (&limit, &swap) {
                (Some(limit), Some(swap)) => {
                    // memsw must stay >= limit at every step: try one order, then the other.
                    if Self::write(dir, "memory.memsw.limit_in_bytes", swap).is_err() {
                        Self::write(dir, "memory.limit_in_bytes", limit)?;
                        Self::write(dir, "memory.memsw.limit_in_bytes", swap)?;
                    }
                    Self::write(dir, "memory.limit_in_bytes", limit)?;
                }
                (Some(limit), None) => Self::write(dir, "memory.limit_in_bytes", limit)?,
                (None, Some(swap)) => Self::write(dir, "memory.memsw.limit_in_bytes", swap)?,
                (None, None) => {}
            }
            if let Some(reservation) = m.reservation() {
                Self::write(dir, "memory.soft_limit_in_bytes", &reservation.to_string())?;
            }
            if let Some(swappiness) = m.swappiness() {
                Self::write(dir, "memory.swappiness", &swappiness.to_string())?;
            }
            if m.disable_oom_killer() == Some(true) {
                Self::write(dir, "memory.oom_control", "1")?;
            }
        }
        if let Some(c) = r.cpu() {
            if let Some(shares) = c.shares() {
                Self::write(self.need("cpu", "linux.resources.cpu.shares")?, "cpu.shares", &shares.to_string())?;
            }
            if let Some(period) = c.period() {
                Self::write(self.need("cpu", "linux.resources.cpu.period")?, "cpu.cfs_period_us", &period.to_string())?;
            }
            if let Some(quota) = c.quota() {
                Self::write(self.need("cpu", "linux.resources.cpu.quota")?, "cpu.cfs_quota_us", &quota.to_string())?;
            }
            if let Some(period) = c.realtime_period() {
                Self::write(
                    self.need("cpu", "linux.resources.cpu.realtimePeriod")?,
                    "cpu.rt_period_us",
                    &period.to_string(),
                )?;
            }
            if let Some(runtime) = c.realtime_runtime() {
                Self::write(
                    self.need("cpu", "linux.resources.cpu.realtimeRuntime")?,
                    "cpu.rt_runtime_us",
                    &runtime.to_string(),
                )?;
            }
            if let Some(idle) = c.idle() {
                Self::write(self.need("cpu", "linux.resources.cpu.idle")?, "cpu.idle", &idle.to_string())?;
            }
            if let Some(cpus) = c.cpus().as_ref().filter(|s| !s.is_empty()) {
                Self::write(self.need("cpuset", "linux.resources.cpu.cpus")?, "cpuset.cpus", cpus)?;
            }
            if let Some(mems) = c.mems().as_ref().filter(|s| !s.is_empty()) {
                Self::write(self.need("cpuset", "linux.resources.cpu.mems")?, "cpuset.mems", mems)?;
            }
        }
        if let Some(p) = r.pids() {
            let value = if p.limit() > 0 { p.limit().to_string() } else { "max".into() };
            Self::write(self.need("pids", "linux.resources.pids")?, "pids.max", &value)?;
        }
        if let Some(b) = r.block_io() {
            let dir = self.need("blkio", "linux.resources.blockIO")?;
            if let Some(weight) = b.weight() {
                let file = if dir.join("blkio.weight").exists() { "blkio.weight" } else { "blkio.bfq.weight" };
                Self::write(dir, file, &weight.to_string())?;
            }
            if let Some(weight) = b.leaf_weight() {
                Self::write(dir, "blkio.leaf_weight", &weight.to_string())?;
            }
            for d in b.weight_device().iter().flatten() {
                if let Some(w) = d.weight() {
                    Self::write(dir, "blkio.weight_device", &format!("{}:{} {w}", d.major(), d.minor()))?;
                }
                if let Some(w) = d.leaf_weight() {
                    Self::write(dir, "blkio.leaf_weight_device", &format!("{}:{} {w}", d.major(), d.minor()))?;
                }
            }
            for (file, list) in [
                ("blkio.throttle.read_bps_device", b.throttle_read_bps_device()),
                ("blkio.throttle.write_bps_device", b.throttle_write_bps_device()),
                ("blkio.throttle.read_iops_device", b.throttle_read_iops_device()),
                ("blkio.throttle.write_iops_device", b.throttle_write_iops_device()),
            ] {
                for d in list.iter().flatten() {
                    Self::write(dir, file, &format!("{}:{} {}", d.major(), d.minor(), d.rate()))?;
                }
            }
        }
        for h in r.hugepage_limits().iter().flatten() {
            let dir = self.need("hugetlb", "linux.resources.hugepageLimits")?;
            Self::write(dir, &format!("hugetlb.{}.limit_in_bytes", h.page_size()), &h.limit().to_string())?;
        }
        if let Some(n) = r.network() {
            if let Some(id) = n.class_id() {
                Self::write(
                    self.need("net_cls", "linux.resources.network.classID")?,
                    "net_cls.classid",
                    &id.to_string(),
                )?;
            }
            for p in n.priorities().iter().flatten() {
                let dir = self.need("net_prio", "linux.resources.network.priorities")?;
                Self::write(dir, "net_prio.ifpriomap", &format!("{} {}", p.name(), p.priority()))?;
            }
        }
        if let Some(devices) = r.devices() {
            let dir = self.need("devices", "linux.resources.devices")?;
            for d in devices {
                let file = if d.allow() { "devices.allow" } else { "devices.deny" };
                Self::write(dir, file, &device_rule(d))?;
            }
        }
        if r.unified().as_ref().is_some_and(|u| !u.is_empty()) {
            return Err(Error::Unsupported {
                field: "linux.resources.unified".into(),
                what: "unified keys on a cgroup v1 host".into(),
            });
        }
        Ok(())
    }

    fn set_v2(&self, r: &LinuxResources) -> Result<()> {
        let dir = self.need("", "linux.resources")?.to_owned();
        let dir = dir.as_path();
        if let Some(m) = r.memory() {
            if let Some(limit) = m.limit() {
                Self::write(dir, "memory.max", &max_or(limit))?;
            }
            if let Some(swap) = m.swap() {
                // v1 semantics in the spec: memory+swap. v2 limits swap alone.
                let value = match (swap, m.limit()) {
                    (s, _) if s < 0 => "max".to_owned(),
                    (s, Some(l)) if l > 0 => (s - l).max(0).to_string(),
                    (s, _) => s.to_string(),
                };
                Self::write(dir, "memory.swap.max", &value)?;
            }
            if let Some(reservation) = m.reservation() {
                Self::write(dir, "memory.low", &reservation.to_string())?;
            }
        }
        if let Some(c) = r.cpu() {
            if let Some(shares) = c.shares().filter(|s| *s > 0) {
                // runc's conversion of shares [2, 262144] to weight [1, 10000].
                let weight = 1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142;
                Self::write(dir, "cpu.weight", &weight.to_string())?;
            }
            if c.quota().is_some() || c.period().is_some() {
                let quota = c.quota().filter(|q| *q > 0).map_or("max".to_owned(), |q| q.to_string());
                let period = c.period().unwrap_or(100_000);
                Self::write(dir, "cpu.max", &format!("{quota} {period}"))?;
            }
            if let Some(idle) = c.idle() {
                Self::write(dir, "cpu.idle", &idle.to_string())?;
            }
            if let Some(cpus) = c.cpus().as_ref().filter(|s| !s.is_empty()) {
                Self::write(dir, "cpuset.cpus", cpus)?;
            }
            if let Some(mems) = c.mems().as_ref().filter(|s| !s.is_empty()) {
                Self::write(dir, "cpuset.mems", mems)?;
            }
        }
        if let Some(p) = r.pids() {
            Self::write(dir, "pids.max", &max_or(p.limit()))?;
        }
        if let Some(b) = r.block_io() {
            if let Some(weight) = b.weight() {
                Self::write(dir, "io.weight", &format!("default {}", blkio_to_io_weight(weight)))?;
            }
            for d in b.weight_device().iter().flatten() {
                if let Some(w) = d.weight() {
                    Self::write(dir, "io.weight", &format!("{}:{} {}", d.major(), d.minor(), blkio_to_io_weight(w)))?;
                }
            }
            for (key, list) in [
                ("rbps", b.throttle_read_bps_device()),
                ("wbps", b.throttle_write_bps_device()),
                ("riops", b.throttle_read_iops_device()),
                ("wiops", b.throttle_write_iops_device()),
            ] {
                for d in list.iter().flatten() {
                    Self::write(dir, "io.max", &format!("{}:{} {key}={}", d.major(), d.minor(), d.rate()))?;
                }
            }
        }
        for h in r.hugepage_limits().iter().flatten() {
            Self::write(dir, &format!("hugetlb.{}.max", h.page_size()), &max_or(h.limit()))?;
        }
        if let Some(rules) = r.devices().as_ref().filter(|d| !d.is_empty()) {
            super::devices_bpf::apply(dir, rules)?;
        }
        for (key, value) in r.unified().iter().flatten() {
            if key.contains('/') || key.starts_with('.') {
                return Err(Error::Spec {
                    field: format!("linux.resources.unified.{key}"),
                    message: "is not a cgroup file".into(),
                });
            }
            Self::write(dir, key, value)?;
        }
        Ok(())
    }

    /// Current usage and limits.
    pub fn stats(&self) -> Stats {
        let num =
            |dir: Option<&Path>, file: &str| dir.and_then(|d| Self::read(d, file)).and_then(|v| v.parse::<u64>().ok());
        let field = |dir: Option<&Path>, file: &str, key: &str| {
            dir.and_then(|d| Self::read(d, file)).and_then(|text| {
                text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse::<u64>().ok())
            })
        };
        if self.is_v2() {
            let d = self.dir_of("");
            let usage = num(d, "memory.current");
            let inactive = field(d, "memory.stat", "inactive_file");
            return Stats {
                cpu_usage_ns: field(d, "cpu.stat", "usage_usec").map(|u| u * 1000),
                memory_usage: usage,
                memory_working_set: usage.map(|u| u.saturating_sub(inactive.unwrap_or(0))),
                memory_limit: num(d, "memory.max"),
                pids_current: num(d, "pids.current"),
                pids_limit: num(d, "pids.max"),
                oom_kills: field(d, "memory.events", "oom_kill"),
            };
        }
        let mem = self.dir_of("memory");
        let usage = num(mem, "memory.usage_in_bytes");
        let inactive = field(mem, "memory.stat", "total_inactive_file");
        Stats {
            cpu_usage_ns: num(self.dir_of("cpuacct"), "cpuacct.usage"),
            memory_usage: usage,
            memory_working_set: usage.map(|u| u.saturating_sub(inactive.unwrap_or(0))),
            memory_limit: num(mem, "memory.limit_in_bytes"),
            pids_current: num(self.dir_of("pids"), "pids.current"),
            pids_limit: num(self.dir_of("pids"), "pids.max"),
            oom_kills: field(mem, "memory.oom_control", "oom_kill"),
        }
    }
}

fn max_or(limit: i64) -> String {
    if limit > 0 { limit.to_string() } else { "max".into() }
}

/// blkio weight [10, 1000] to io.weight [1, 10000], as runc converts it.
fn blkio_to_io_weight(weight: u16) -> u64 {
    1 + (u64::from(weight.clamp(10, 1000)) - 10) * 9999 / 990
}

/// A v1 devices rule line: `c 1:3 rwm`, `a *:* rwm`.
fn device_rule(d: &oci_spec::runtime::LinuxDeviceCgroup) -> String {
    let typ = match d.typ() {
        Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => "c",
        Some(LinuxDeviceType::B) => "b",
        Some(LinuxDeviceType::P) => "p",
        Some(LinuxDeviceType::A) | None => "a",
    };
    let num = |n: Option<i64>| n.filter(|n| *n >= 0).map_or("*".to_owned(), |n| n.to_string());
    let access = d.access().clone().filter(|a| !a.is_empty()).unwrap_or_else(|| "rwm".into());
    if typ == "a" {
        return format!("a *:* {access}");
    }
    format!("{typ} {}:{} {access}", num(d.major()), num(d.minor()))
}

/// A new v1 cpuset cgroup has empty cpus/mems: copy them down from the
/// nearest ancestor that has them, so processes can join.
fn seed_cpuset(dir: &Path) -> Result<()> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let mut chain: Vec<&Path> = dir.ancestors().take_while(|d| d.join(file).exists()).collect();
        chain.reverse();
        let mut value = String::new();
        for d in chain {
            let current = Cgroup::read(d, file).unwrap_or_default();
            if current.is_empty() {
                Cgroup::write(d, file, &value)?;
            } else {
                value = current;
            }
        }
    }
    Ok(())
}

/// On v2, a child only gets the controllers its parent delegates: enable
/// every available one in each ancestor's `cgroup.subtree_control`.
fn enable_controllers(dir: &Path) -> Result<()> {
    let mut chain: Vec<&Path> = dir.ancestors().skip(1).take_while(|d| d.join("cgroup.controllers").exists()).collect();
    chain.reverse();
    for d in chain {
        let available = Cgroup::read(d, "cgroup.controllers").unwrap_or_default();
        let wanted: Vec<String> = available.split_whitespace().map(|c| format!("+{c}")).collect();
        if !wanted.is_empty() {
            Cgroup::write(d, "cgroup.subtree_control", &wanted.join(" "))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_paths_absolute_and_relative() {
        let mounts = crate::mountinfo::parse(HYBRID);
        let own = "4:memory:/svc/a\n2:cpu,cpuacct:/\n1:name=systemd:/init.scope\n0::/init.scope\n";
        let cg = Cgroup::resolve(&mounts, own, Path::new("/pods/c1")).unwrap();
        let dirs: Vec<_> = cg.hierarchies.iter().map(|h| h.dir.clone()).collect();
        assert_eq!(
            dirs,
            [
                "/sys/fs/cgroup/cpu,cpuacct/pods/c1",
                "/sys/fs/cgroup/memory/pods/c1",
                "/sys/fs/cgroup/systemd/pods/c1",
                "/sys/fs/cgroup/unified/pods/c1"
            ]
            .map(PathBuf::from)
        );
        assert_eq!(cg.dir_of("cpuacct"), Some(Path::new("/sys/fs/cgroup/cpu,cpuacct/pods/c1")));
        let rel = Cgroup::resolve(&mounts, own, Path::new("c1")).unwrap();
        assert_eq!(rel.dir_of("memory"), Some(Path::new("/sys/fs/cgroup/memory/svc/a/c1")));
        assert!(Cgroup::resolve(&mounts, own, Path::new("/a/../b")).is_err());
    }

    /// A fake cgroup v2 tree, laid out as on a v2 host, to check the files written.
    fn fake_v2() -> (tempfile::TempDir, Cgroup) {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpuset cpu io memory hugetlb pids\n").unwrap();
        std::fs::write(root.path().join("cgroup.subtree_control"), "").unwrap();
        let mountinfo = format!("25 21 0:22 / {} rw - cgroup2 cgroup2 rw\n", root.path().display());
        let cg = Cgroup::resolve(&crate::mountinfo::parse(&mountinfo), "0::/\n", Path::new("/kubepods/c1")).unwrap();
        (root, cg)
    }

    #[test]
    fn v2_resources_are_written_in_v2_terms() {
        let (root, cg) = fake_v2();
        std::fs::create_dir_all(root.path().join("kubepods")).unwrap();
        std::fs::write(root.path().join("kubepods/cgroup.controllers"), "cpu memory pids\n").unwrap();
        cg.create().unwrap();
        assert_eq!(
            std::fs::read_to_string(root.path().join("cgroup.subtree_control")).unwrap(),
            "+cpuset +cpu +io +memory +hugetlb +pids"
        );
        let resources: LinuxResources = serde_json::from_value(serde_json::json!({
            "memory": {"limit": 67108864, "swap": 134217728, "reservation": 1024},
            "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0-1"},
            "pids": {"limit": 32},
            "blockIO": {"weight": 500, "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}]},
            "unified": {"memory.high": "50000000"}
        }))
        .unwrap();
        cg.set(&resources).unwrap();
        let dir = root.path().join("kubepods/c1");
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(read("memory.max"), "67108864");
        assert_eq!(read("memory.swap.max"), "67108864");
        assert_eq!(read("memory.low"), "1024");
        assert_eq!(read("cpu.weight"), "39");
        assert_eq!(read("cpu.max"), "50000 100000");
        assert_eq!(read("cpuset.cpus"), "0-1");
        assert_eq!(read("pids.max"), "32");
        assert_eq!(read("io.weight"), "default 4950");
        assert_eq!(read("io.max"), "8:0 rbps=1048576");
        assert_eq!(read("memory.high"), "50000000");

        std::fs::write(dir.join("memory.current"), "4096\n").unwrap();
        std::fs::write(dir.join("memory.stat"), "anon 1\ninactive_file 1024\n").unwrap();
        std::fs::write(dir.join("memory.events"), "low 0\noom 2\noom_kill 1\n").unwrap();
        std::fs::write(dir.join("cpu.stat"), "usage_usec 7\n").unwrap();
        let stats = cg.stats();
        assert_eq!(stats.memory_working_set, Some(3072));
        assert_eq!(stats.oom_kills, Some(1));
        assert_eq!(stats.cpu_usage_ns, Some(7000));

        let devices: LinuxResources =
            serde_json::from_value(serde_json::json!({"devices": [{"allow": false, "access": "rwm"}]})).unwrap();
        // Not a real cgroup: attaching the device program fails, and says so.
        assert!(cg.set(&devices).unwrap_err().to_string().contains("eBPF device program"));
    }

    #[test]
    fn device_rules_in_v1_syntax() {
        let rule = |v| device_rule(&serde_json::from_value(v).unwrap());
        assert_eq!(rule(serde_json::json!({"allow": false, "access": "rwm"})), "a *:* rwm");
        assert_eq!(
            rule(serde_json::json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"})),
            "c 1:3 rwm"
        );
        assert_eq!(rule(serde_json::json!({"allow": true, "type": "c", "major": 136, "access": "rw"})), "c 136:* rw");
    }
}
