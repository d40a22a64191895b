//! A CRI v1 container request turned into an OCI runtime spec, as
//! containerd's CRI plugin builds it (`internal/cri/server/container_create*.go`,
//! `internal/cri/opts`, `pkg/oci` defaults, `contrib/seccomp`): kubelet's
//! command/args rules over the image's Entrypoint/Cmd, the environment, the
//! user resolved in the image's own `/etc/passwd` and `/etc/group` (read
//! inside the rootfs with `bulkhead_confine`, never through a symlink out of
//! it), capabilities, the pod's namespaces, containerd's default mounts plus
//! the pod's files and the request's binds, devices, masked paths, seccomp,
//! resources, sysctls and the `io.kubernetes.cri.*` annotations.
//!
//! Every refusal is `InvalidArgument` naming the request field (`config.…`
//! for the container config, `sandbox_config.…` for the pod's, `image.…` for
//! the image config). What the host offers (cgroup v2, swap and hugetlb
//! controllers, the last capability, the mount table) is probed once per
//! spec by [`container_spec`]; the tests pass their own.

mod seccomp;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Read;
use std::num::IntErrorKind;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use bulkhead_image::manifest::RunConfig;
use bulkhead_proto::cri::{
    ContainerConfig, HugepageLimit, LinuxContainerResources, LinuxContainerSecurityContext, LinuxContainerUser,
    MountPropagation, NamespaceMode, PodSandboxConfig, SupplementalGroupsPolicy, security_profile::ProfileType,
};
use bulkhead_runtime::cgroups::Layout;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use oci_spec::OciSpecError;
use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpu, LinuxCpuBuilder, LinuxDevice,
    LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxHugepageLimit,
    LinuxHugepageLimitBuilder, LinuxMemory, LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxResourcesBuilder, LinuxSeccomp, Mount, MountBuilder, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};

use crate::{Error, Result};

/// How a container gets one of the pod's namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ns {
    /// a new one of its own
    New,
    /// join the namespace file at this path
    Join(PathBuf),
    /// the host's (no namespace entry in the spec)
    Host,
}

/// The pod's namespaces, as the container gets them.
#[derive(Debug, Clone)]
pub struct PodNamespaces {
    pub network: Ns,
    pub ipc: Ns,
    pub uts: Ns,
    pub pid: Ns,
}

/// Files the pod shares with its containers, on the host; `None` = not
/// provided. For host-network pods containerd bind-mounts the host's
/// `/etc/hosts` and `/etc/resolv.conf`: the caller passes those paths here.
/// A path that does not exist is skipped, as containerd skips it.
#[derive(Debug, Clone, Default)]
pub struct PodFiles {
    pub hosts: Option<PathBuf>,
    pub resolv_conf: Option<PathBuf>,
    pub hostname: Option<PathBuf>,
    pub shm: Option<PathBuf>,
}

/// Everything a container's spec is made of.
pub struct SpecInput<'a> {
    pub container_id: &'a str,
    pub pod: &'a PodSandboxConfig,
    pub config: &'a ContainerConfig,
    pub image: &'a RunConfig,
    /// The container's root filesystem, already mounted (absolute host path).
    pub rootfs: &'a Path,
    pub namespaces: &'a PodNamespaces,
    pub files: &'a PodFiles,
    /// cgroupsPath for the container (cgroupfs form, e.g. "/kubepods/pod<uid>/<container-id>"); computed by the caller.
    pub cgroups_path: &'a str,
}

/// The annotation naming the pod sandbox's id. [`SpecInput`] does not carry
/// the pod's id, so the caller adds this one to the spec's annotations.
pub const ANNOTATION_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
const ANNOTATION_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
const ANNOTATION_CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
const ANNOTATION_IMAGE_NAME: &str = "io.kubernetes.cri.image-name";
const ANNOTATION_SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
const ANNOTATION_SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
const ANNOTATION_SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";

/// The OCI runtime-spec version the specs declare.
const OCI_VERSION: &str = "1.2.0";
/// containerd's `defaultUnixEnv`.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The umask of the container's process (runc's default, made explicit).
const UMASK: u32 = 0o022;

/// The capabilities every container gets (containerd's CRI default, Docker's).
const DEFAULT_CAPS: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Every capability by number and name (capabilities(7)).
const ALL_CAPS: [(u32, &str, Capability); 41] = [
    (0, "CHOWN", Capability::Chown),
    (1, "DAC_OVERRIDE", Capability::DacOverride),
    (2, "DAC_READ_SEARCH", Capability::DacReadSearch),
    (3, "FOWNER", Capability::Fowner),
    (4, "FSETID", Capability::Fsetid),
    (5, "KILL", Capability::Kill),
    (6, "SETGID", Capability::Setgid),
    (7, "SETUID", Capability::Setuid),
    (8, "SETPCAP", Capability::Setpcap),
    (9, "LINUX_IMMUTABLE", Capability::LinuxImmutable),
    (10, "NET_BIND_SERVICE", Capability::NetBindService),
    (11, "NET_BROADCAST", Capability::NetBroadcast),
    (12, "NET_ADMIN", Capability::NetAdmin),
    (13, "NET_RAW", Capability::NetRaw),
    (14, "IPC_LOCK", Capability::IpcLock),
    (15, "IPC_OWNER", Capability::IpcOwner),
    (16, "SYS_MODULE", Capability::SysModule),
    (17, "SYS_RAWIO", Capability::SysRawio),
    (18, "SYS_CHROOT", Capability::SysChroot),
    (19, "SYS_PTRACE", Capability::SysPtrace),
    (20, "SYS_PACCT", Capability::SysPacct),
    (21, "SYS_ADMIN", Capability::SysAdmin),
    (22, "SYS_BOOT", Capability::SysBoot),
    (23, "SYS_NICE", Capability::SysNice),
    (24, "SYS_RESOURCE", Capability::SysResource),
    (25, "SYS_TIME", Capability::SysTime),
    (26, "SYS_TTY_CONFIG", Capability::SysTtyConfig),
    (27, "MKNOD", Capability::Mknod),
    (28, "LEASE", Capability::Lease),
    (29, "AUDIT_WRITE", Capability::AuditWrite),
    (30, "AUDIT_CONTROL", Capability::AuditControl),
    (31, "SETFCAP", Capability::Setfcap),
    (32, "MAC_OVERRIDE", Capability::MacOverride),
    (33, "MAC_ADMIN", Capability::MacAdmin),
    (34, "SYSLOG", Capability::Syslog),
    (35, "WAKE_ALARM", Capability::WakeAlarm),
    (36, "BLOCK_SUSPEND", Capability::BlockSuspend),
    (37, "AUDIT_READ", Capability::AuditRead),
    (38, "PERFMON", Capability::Perfmon),
    (39, "BPF", Capability::Bpf),
    (40, "CHECKPOINT_RESTORE", Capability::CheckpointRestore),
];

/// containerd's default masked paths (`pkg/oci` `populateDefaultUnixSpec`).
const DEFAULT_MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/scsi",
];
/// containerd's default read-only paths.
const DEFAULT_READONLY_PATHS: [&str; 5] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

const F_COMMAND: &str = "config.command";
const F_MOUNTS: &str = "config.mounts";
const F_DEVICES: &str = "config.devices";
const F_PRIVILEGED: &str = "config.linux.security_context.privileged";
const F_USERNS: &str = "config.linux.security_context.namespace_options.userns_options";
const F_RUN_AS_USER: &str = "config.linux.security_context.run_as_user";
const F_RUN_AS_USERNAME: &str = "config.linux.security_context.run_as_username";
const F_RUN_AS_GROUP: &str = "config.linux.security_context.run_as_group";
const F_SUPPLEMENTAL_GROUPS: &str = "config.linux.security_context.supplemental_groups";
const F_GROUPS_POLICY: &str = "config.linux.security_context.supplemental_groups_policy";
const F_SECCOMP_TYPE: &str = "config.linux.security_context.seccomp.profile_type";
const F_SECCOMP_REF: &str = "config.linux.security_context.seccomp.localhost_ref";
const F_SECCOMP_PATH: &str = "config.linux.security_context.seccomp_profile_path";
const F_SYSCTLS: &str = "sandbox_config.linux.sysctls";
const F_IMAGE_USER: &str = "image.User";
const F_IMAGE_STOP_SIGNAL: &str = "image.StopSignal";

fn invalid(field: &'static str, message: impl Into<String>) -> Error {
    Error::InvalidArgument { field, message: message.into() }
}

fn oci<T>(built: std::result::Result<T, OciSpecError>) -> Result<T> {
    built.map_err(|e| Error::Internal(format!("building the OCI spec: {e}")))
}

/// What the host offers a container, probed once per spec.
#[derive(Debug, Clone)]
struct Host {
    /// cgroup v2 only (containerd then gives non-privileged containers a cgroup namespace).
    cgroup_v2: bool,
    /// The hugetlb controller is there (containerd skips hugepage limits otherwise).
    hugetlb: bool,
    /// The swap controller is there (containerd sets swap = memory limit only then).
    swap: bool,
    /// `/proc/sys/kernel/cap_last_cap`: privileged containers get capabilities 0 to this.
    cap_last_cap: u32,
    /// The node's hostname, for `HOSTNAME` when the pod has none.
    hostname: String,
    /// `/proc/self/mountinfo`, to check the propagation of bind sources:
    /// read when a bind first needs it (the table grows with every pod).
    mountinfo: std::cell::OnceCell<String>,
    /// Where the host's device nodes are, for privileged containers.
    dev: PathBuf,
}

/// The host's cgroup facts: cgroup v2 alone, hugetlb, swap accounting.
/// They do not change while the daemon runs, and finding them reads the
/// mount table, which grows with every pod: found once.
fn cgroup_facts() -> Result<(bool, bool, bool)> {
    static FACTS: std::sync::OnceLock<(bool, bool, bool)> = std::sync::OnceLock::new();
    if let Some(facts) = FACTS.get() {
        return Ok(*facts);
    }
    let path = Path::new("/proc/self/mountinfo");
    let mountinfo = std::fs::read_to_string(path).map_err(Error::io("read", path))?;
    Ok(*FACTS.get_or_init(|| match Layout::parse(&mountinfo) {
        Some(Layout::Unified { mountpoint }) => {
            let controllers = std::fs::read_to_string(mountpoint.join("cgroup.controllers")).unwrap_or_default();
            let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
            let swap = own
                .lines()
                .find_map(|line| line.strip_prefix("0::"))
                .is_some_and(|cg| mountpoint.join(cg.trim_start_matches('/')).join("memory.swap.max").exists());
            (true, controllers.split_whitespace().any(|c| c == "hugetlb"), swap)
        }
        Some(Layout::Hybrid { v1_controllers, .. } | Layout::Legacy { v1_controllers }) => {
            let swap = Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists();
            (false, v1_controllers.iter().any(|c| c == "hugetlb"), swap)
        }
        None => (false, false, false),
    }))
}

impl Host {
    fn probe() -> Result<Host> {
        let (cgroup_v2, hugetlb, swap) = cgroup_facts()?;
        let path = Path::new("/proc/sys/kernel/cap_last_cap");
        let text = std::fs::read_to_string(path).map_err(Error::io("read", path))?;
        let cap_last_cap = text
            .trim()
            .parse()
            .map_err(|e| Error::Internal(format!("{}: {text:?} is not a number: {e}", path.display())))?;
        let hostname = nix::unistd::gethostname()
            .map_err(|e| Error::Internal(format!("gethostname: {e}")))?
            .to_string_lossy()
            .into_owned();
        let mountinfo = std::cell::OnceCell::new();
        Ok(Host { cgroup_v2, hugetlb, swap, cap_last_cap, hostname, mountinfo, dev: PathBuf::from("/dev") })
    }

    /// The mount table, read on first use.
    fn mountinfo(&self) -> Result<&str> {
        if let Some(text) = self.mountinfo.get() {
            return Ok(text);
        }
        let path = Path::new("/proc/self/mountinfo");
        let text = std::fs::read_to_string(path).map_err(Error::io("read", path))?;
        Ok(self.mountinfo.get_or_init(|| text))
    }
}

/// The OCI spec of a CRI container, as containerd's CRI plugin builds it.
pub fn container_spec(input: &SpecInput<'_>) -> Result<Spec> {
    build(input, &Host::probe()?)
}

/// The image's StopSignal as a signal number (SIGTERM when unset); an
/// unknown name is InvalidArgument naming the image's StopSignal.
pub fn stop_signal(image: &RunConfig) -> Result<i32> {
    let raw = image.stop_signal.as_deref().unwrap_or("").trim();
    if raw.is_empty() {
        return Ok(nix::libc::SIGTERM);
    }
    parse_signal(raw).ok_or_else(|| invalid(F_IMAGE_STOP_SIGNAL, format!("{raw:?} is not a signal")))
}

/// A signal by number or by name, with or without `SIG` (moby's `ParseSignal`).
fn parse_signal(raw: &str) -> Option<i32> {
    let (min, max) = (nix::libc::SIGRTMIN(), nix::libc::SIGRTMAX());
    if let Ok(n) = raw.parse::<i32>() {
        return (1..=max).contains(&n).then_some(n);
    }
    let upper = raw.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(rest) = name.strip_prefix("RTMIN") {
        let offset = if rest.is_empty() { 0 } else { rest.strip_prefix('+')?.parse::<i32>().ok()? };
        return (0..=15).contains(&offset).then_some(min + offset);
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        let offset = if rest.is_empty() { 0 } else { rest.strip_prefix('-')?.parse::<i32>().ok()? };
        return (0..=14).contains(&offset).then_some(max - offset);
    }
    format!("SIG{name}").parse::<nix::sys::signal::Signal>().ok().map(|s| s as i32)
}

fn build(input: &SpecInput<'_>, host: &Host) -> Result<Spec> {
    let config = input.config;
    let pod = input.pod;
    let container_name = config
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .ok_or_else(|| invalid("config.metadata", "the container config must include metadata"))?;
    let pod_meta = pod
        .metadata
        .as_ref()
        .ok_or_else(|| invalid("sandbox_config.metadata", "the pod config must include metadata"))?;
    let default_sc = LinuxContainerSecurityContext::default();
    let sc = config.linux.as_ref().and_then(|l| l.security_context.as_ref()).unwrap_or(&default_sc);
    let resources = config.linux.as_ref().and_then(|l| l.resources.as_ref());
    let privileged = sc.privileged;
    let pod_privileged = pod.linux.as_ref().and_then(|l| l.security_context.as_ref()).is_some_and(|s| s.privileged);
    if privileged && !pod_privileged {
        return Err(invalid(F_PRIVILEGED, "no privileged container allowed in a pod sandbox that is not privileged"));
    }

    // A user namespace cannot be expressed in PodNamespaces: refuse it
    // rather than run the container with the host's ids.
    let userns = sc.namespace_options.as_ref().and_then(|n| n.userns_options.as_ref());
    if userns.is_some_and(|u| u.mode != NamespaceMode::Node as i32) {
        return Err(invalid(F_USERNS, "user namespaces are not supported yet (only NODE)"));
    }

    // The process.
    let args = process_args(config, input.image)?;
    let hostname_env = if pod.hostname.is_empty() { host.hostname.as_str() } else { pod.hostname.as_str() };
    let env = environment(config, input.image, hostname_env);
    let cwd = [config.working_dir.as_str(), input.image.working_dir.as_deref().unwrap_or("")]
        .into_iter()
        .find(|d| !d.is_empty())
        .unwrap_or("/");
    let files = RootFiles::read(input.rootfs)?;
    let user = process_user(sc, input.image, &files)?;
    let (bounding, ambient) = capabilities(sc, privileged, host.cap_last_cap);
    // The builders start from oci-spec's defaults (runc's example config):
    // every field they fill that containerd leaves empty is cleared.
    let mut caps = oci(LinuxCapabilitiesBuilder::default()
        .bounding(bounding.clone())
        .effective(bounding.clone())
        .permitted(bounding.clone())
        .build())?;
    caps.set_inheritable(ambient.clone());
    caps.set_ambient(ambient);
    let user = oci(UserBuilder::default()
        .uid(user.uid)
        .gid(user.gid)
        .umask(UMASK)
        .additional_gids(user.additional_gids)
        .build())?;
    let mut process = ProcessBuilder::default()
        .terminal(config.tty)
        .user(user)
        .args(args)
        .env(env)
        .cwd(cwd)
        .capabilities(caps)
        .no_new_privileges(sc.no_new_privs);
    if let Some(r) = resources {
        let adj = i32::try_from(r.oom_score_adj).ok().filter(|a| (-1000..=1000).contains(a)).ok_or_else(|| {
            invalid("config.linux.resources.oom_score_adj", format!("{} is not in [-1000, 1000]", r.oom_score_adj))
        })?;
        process = process.oom_score_adj(adj);
    }

    let mut process = oci(process.build())?;
    process.set_rlimits(None);

    // Namespaces: containerd's order (pid, ipc, uts, mount, network), then cgroup.
    let ns = input.namespaces;
    let mut namespaces = Vec::new();
    for (typ, want) in [
        (LinuxNamespaceType::Pid, &ns.pid),
        (LinuxNamespaceType::Ipc, &ns.ipc),
        (LinuxNamespaceType::Uts, &ns.uts),
        (LinuxNamespaceType::Mount, &Ns::New),
        (LinuxNamespaceType::Network, &ns.network),
    ] {
        if let Some(entry) = namespace(typ, want)? {
            namespaces.push(entry);
        }
    }
    // cgroupns hides the host's /sys/fs/cgroup; not on v1 nor for privileged containers.
    if host.cgroup_v2 && !privileged {
        namespaces.extend(namespace(LinuxNamespaceType::Cgroup, &Ns::New)?);
    }

    // Mounts, devices, resources.
    let mut rootfs_propagation = None;
    let mounts = mounts(input, sc, host, &mut rootfs_propagation)?;
    let (devices, device_rules) = devices(config, privileged, host)?;
    let mut linux_resources = LinuxResourcesBuilder::default().devices(device_rules);
    if let Some(r) = resources {
        linux_resources = with_resources(linux_resources, r, host)?;
    }

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(input.cgroups_path))
        .resources(oci(linux_resources.build())?);
    if !devices.is_empty() {
        linux = linux.devices(devices);
    }
    if !privileged {
        let masked = if sc.masked_paths.is_empty() {
            DEFAULT_MASKED_PATHS.iter().map(|p| (*p).to_owned()).collect()
        } else {
            sc.masked_paths.clone()
        };
        let readonly = if sc.readonly_paths.is_empty() {
            DEFAULT_READONLY_PATHS.iter().map(|p| (*p).to_owned()).collect()
        } else {
            sc.readonly_paths.clone()
        };
        linux = linux.masked_paths(masked).readonly_paths(readonly);
    }
    if let Some(profile) = seccomp_profile(sc, privileged, &bounding)? {
        linux = linux.seccomp(profile);
    }
    if let Some(propagation) = rootfs_propagation {
        linux = linux.rootfs_propagation(propagation);
    }
    let sysctls = sysctls(pod, ns)?;
    if !sysctls.is_empty() {
        linux = linux.sysctl(sysctls);
    }

    // Annotations: the request's, then containerd's (which win).
    let image_name = config
        .image
        .as_ref()
        .map(|i| if i.user_specified_image.is_empty() { i.image.clone() } else { i.user_specified_image.clone() })
        .unwrap_or_default();
    let mut annotations: HashMap<String, String> = config.annotations.clone();
    for (key, value) in [
        (ANNOTATION_SANDBOX_NAMESPACE, pod_meta.namespace.clone()),
        (ANNOTATION_SANDBOX_UID, pod_meta.uid.clone()),
        (ANNOTATION_SANDBOX_NAME, pod_meta.name.clone()),
        (ANNOTATION_CONTAINER_NAME, container_name),
        (ANNOTATION_IMAGE_NAME, image_name),
        (ANNOTATION_CONTAINER_TYPE, "container".to_owned()),
    ] {
        annotations.insert(key.to_owned(), value);
    }

    let mut linux = oci(linux.build())?;
    if privileged {
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
    }
    let mut spec = oci(SpecBuilder::default()
        .version(OCI_VERSION)
        .root(oci(RootBuilder::default().path(input.rootfs).readonly(sc.readonly_rootfs).build())?)
        .process(process)
        .mounts(mounts)
        .annotations(annotations)
        .linux(linux)
        .build())?;
    // The hostname lives in the UTS namespace: none to set in the host's.
    let hostname = (ns.uts != Ns::Host && !pod.hostname.is_empty()).then(|| pod.hostname.clone());
    spec.set_hostname(hostname);
    tracing::debug!(container_id = input.container_id, "built the container's OCI spec");
    Ok(spec)
}

/// kubelet's rules (containerd's `WithProcessArgs`): `command` replaces the
/// image's Entrypoint and drops its Cmd; `args` replaces Cmd.
fn process_args(config: &ContainerConfig, image: &RunConfig) -> Result<Vec<String>> {
    let mut command = config.command.clone();
    let mut args = config.args.clone();
    if command.is_empty() {
        if args.is_empty() {
            args = image.cmd.clone().unwrap_or_default();
        }
        let entrypoint = image.entrypoint.clone().unwrap_or_default();
        // `ENTRYPOINT [""]` clears the entrypoint.
        if !(entrypoint.len() == 1 && entrypoint[0].is_empty()) {
            command = entrypoint;
        }
    }
    if command.is_empty() && args.is_empty() {
        return Err(invalid(F_COMMAND, "no command specified: neither the request nor the image gives one"));
    }
    command.extend(args);
    Ok(command)
}

/// The default PATH, `TERM` for a terminal, `HOSTNAME`, then the image's
/// environment and the request's, each overriding by key; a bare `KEY`
/// (no `=`) unsets it.
fn environment(config: &ContainerConfig, image: &RunConfig, hostname: &str) -> Vec<String> {
    let mut env = vec![DEFAULT_PATH.to_owned()];
    if config.tty {
        env.push("TERM=xterm".to_owned());
    }
    env.push(format!("HOSTNAME={hostname}"));
    let overrides =
        image.env.iter().flatten().cloned().chain(config.envs.iter().map(|kv| format!("{}={}", kv.key, kv.value)));
    for value in overrides {
        let key = value.split_once('=').map_or(value.as_str(), |(k, _)| k).to_owned();
        let found = env.iter().position(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key);
        match (found, value.contains('=')) {
            (Some(i), true) => env[i] = value,
            (Some(i), false) => {
                env.remove(i);
            }
            (None, true) => env.push(value),
            (None, false) => {}
        }
    }
    env
}

/// One line of the image's `/etc/passwd`.
#[derive(Debug, Clone)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

/// One line of the image's `/etc/group`.
#[derive(Debug, Clone)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// The image's user database, read inside the rootfs; `None` = no such file.
#[derive(Debug, Default)]
struct RootFiles {
    passwd: Option<Vec<PasswdEntry>>,
    group: Option<Vec<GroupEntry>>,
}

/// The largest user database read (a larger one is refused).
const MAX_USER_DB: u64 = 16 << 20;

impl RootFiles {
    fn read(rootfs: &Path) -> Result<RootFiles> {
        let root = nix::fcntl::open(rootfs, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| Error::Io { op: "open the container rootfs", path: rootfs.to_owned(), source: e.into() })?;
        let passwd = read_in_root(&root, rootfs, "/etc/passwd")?.map(|text| {
            text.lines()
                .filter_map(|line| {
                    let f: Vec<&str> = line.trim().split(':').collect();
                    let (name, uid, gid) = (f.first()?, f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?);
                    (!name.is_empty() && !name.starts_with('#')).then(|| PasswdEntry {
                        name: (*name).to_owned(),
                        uid,
                        gid,
                    })
                })
                .collect()
        });
        let group = read_in_root(&root, rootfs, "/etc/group")?.map(|text| {
            text.lines()
                .filter_map(|line| {
                    let f: Vec<&str> = line.trim().split(':').collect();
                    let (name, gid) = (f.first()?, f.get(2)?.parse().ok()?);
                    let members = f
                        .get(3)
                        .map(|m| m.split(',').map(str::trim).filter(|m| !m.is_empty()).map(str::to_owned).collect())
                        .unwrap_or_default();
                    (!name.is_empty() && !name.starts_with('#')).then(|| GroupEntry {
                        name: (*name).to_owned(),
                        gid,
                        members,
                    })
                })
                .collect()
        });
        Ok(RootFiles { passwd, group })
    }

    fn user_by_uid(&self, uid: u32) -> Option<&PasswdEntry> {
        self.passwd.iter().flatten().find(|u| u.uid == uid)
    }

    fn user_by_name(&self, name: &str) -> Option<&PasswdEntry> {
        self.passwd.iter().flatten().find(|u| u.name == name)
    }

    fn group_by_name(&self, name: &str) -> Option<&GroupEntry> {
        self.group.iter().flatten().find(|g| g.name == name)
    }

    /// The groups listing `user` (a name, or a uid looked up in passwd),
    /// except the one named like the user (containerd's `WithAdditionalGIDs`).
    fn groups_of(&self, user: &str) -> Vec<u32> {
        let name = match user.parse::<i64>() {
            Ok(uid) => match u32::try_from(uid).ok().and_then(|uid| self.user_by_uid(uid)) {
                Some(entry) => entry.name.as_str(),
                None => return Vec::new(),
            },
            Err(_) => user,
        };
        self.group
            .iter()
            .flatten()
            .filter(|g| g.name != name && g.members.iter().any(|m| m == name))
            .map(|g| g.gid)
            .collect()
    }
}

/// Reads a small regular file at `path` inside the root; `None` when absent.
/// Symlinks resolve inside the root (`RESOLVE_IN_ROOT`), never on the host.
fn read_in_root(root: &OwnedFd, rootfs: &Path, path: &str) -> Result<Option<String>> {
    let shown = rootfs.join(path.trim_start_matches('/'));
    let fd = match bulkhead_confine::open(root, Path::new(path), OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY)
    {
        Ok(fd) => fd,
        Err(e) if matches!(e.errno, Errno::ENOENT | Errno::ENOTDIR) => return Ok(None),
        Err(e) => return Err(Error::Io { op: "open in the container rootfs", path: shown, source: e.errno.into() }),
    };
    let file = std::fs::File::from(fd);
    let meta = file.metadata().map_err(Error::io("stat", &shown))?;
    if !meta.is_file() {
        return Err(invalid("image", format!("{path} in the image is not a regular file")));
    }
    let mut bytes = Vec::new();
    file.take(MAX_USER_DB + 1).read_to_end(&mut bytes).map_err(Error::io("read", &shown))?;
    if bytes.len() as u64 > MAX_USER_DB {
        return Err(invalid("image", format!("{path} in the image is larger than {MAX_USER_DB} bytes")));
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// The user of the container's process.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ProcessUser {
    uid: u32,
    gid: u32,
    additional_gids: Vec<u32>,
}

/// runc's limit on ids, which containerd follows.
const MAX_ID: i64 = i32::MAX as i64;

fn id_in_range(field: &'static str, value: i64) -> Result<i64> {
    if (0..=MAX_ID).contains(&value) {
        Ok(value)
    } else {
        Err(invalid(field, format!("{value} is not in [0, {MAX_ID}]")))
    }
}

/// A uid/gid part of a user string: a number, or a name to look up.
enum IdPart {
    Id(u32),
    Name(String),
}

fn id_part(part: &str, what: &str, userstr: &str, field: &'static str) -> Result<IdPart> {
    match part.parse::<i64>() {
        Ok(v) => u32::try_from(v)
            .ok()
            .filter(|v| i64::from(*v) <= MAX_ID)
            .map(IdPart::Id)
            .ok_or_else(|| invalid(field, format!("user {userstr:?}: {what} out of range"))),
        Err(e) if matches!(e.kind(), IntErrorKind::PosOverflow | IntErrorKind::NegOverflow) => {
            Err(invalid(field, format!("user {userstr:?}: {what} out of range")))
        }
        Err(_) => Ok(IdPart::Name(part.to_owned())),
    }
}

/// uid and gid of an OCI image user string (`uid`, `uid:gid`, `name`,
/// `name:group`, and mixes), as containerd's `oci.WithUser` resolves it.
fn resolve_user(userstr: &str, field: &'static str, files: &RootFiles) -> Result<(u32, u32)> {
    let parts: Vec<&str> = userstr.split(':').collect();
    let by_name = |name: &str| {
        files
            .user_by_name(name)
            .ok_or_else(|| invalid(field, format!("user {name:?} is not in the image's /etc/passwd")))
            .map(|u| (u.uid, u.gid))
    };
    match parts.as_slice() {
        [user] => match id_part(user, "uid", userstr, field)? {
            // A uid absent from passwd runs with gid 0.
            IdPart::Id(uid) => Ok((uid, files.user_by_uid(uid).map_or(0, |u| u.gid))),
            IdPart::Name(name) => by_name(&name),
        },
        [user, group] => {
            let uid = match id_part(user, "uid", userstr, field)? {
                IdPart::Id(uid) => uid,
                IdPart::Name(name) => by_name(&name)?.0,
            };
            let gid = match id_part(group, "gid", userstr, field)? {
                IdPart::Id(gid) => gid,
                IdPart::Name(name) => files
                    .group_by_name(&name)
                    .map(|g| g.gid)
                    .ok_or_else(|| invalid(field, format!("group {name:?} is not in the image's /etc/group")))?,
            };
            Ok((uid, gid))
        }
        _ => Err(invalid(field, format!("user {userstr:?} is not uid, uid:gid, name or name:group"))),
    }
}

/// The process's user: run_as_username / run_as_user (+ run_as_group), else
/// the image's User; additional gids by the supplemental groups policy.
fn process_user(sc: &LinuxContainerSecurityContext, image: &RunConfig, files: &RootFiles) -> Result<ProcessUser> {
    // containerd's GenerateUserString.
    let mut userstr = String::new();
    let mut field = F_IMAGE_USER;
    if let Some(uid) = &sc.run_as_user {
        userstr = id_in_range(F_RUN_AS_USER, uid.value)?.to_string();
        field = F_RUN_AS_USER;
    }
    if !sc.run_as_username.is_empty() {
        userstr = sc.run_as_username.clone();
        field = F_RUN_AS_USERNAME;
    }
    if let Some(gid) = &sc.run_as_group {
        let gid = id_in_range(F_RUN_AS_GROUP, gid.value)?;
        if userstr.is_empty() {
            return Err(invalid(F_RUN_AS_GROUP, format!("group {gid} is specified without a user")));
        }
        userstr = format!("{userstr}:{gid}");
    }
    let image_user = image.user.as_deref().unwrap_or("");
    if userstr.is_empty() && !image_user.is_empty() {
        userstr = image_user.to_owned();
        field = F_IMAGE_USER;
    }
    let (uid, gid) = if userstr.is_empty() { (0, 0) } else { resolve_user(&userstr, field, files)? };

    let supplemental = sc
        .supplemental_groups
        .iter()
        .map(|g| {
            u32::try_from(*g)
                .ok()
                .filter(|g| i64::from(*g) <= MAX_ID)
                .ok_or_else(|| invalid(F_SUPPLEMENTAL_GROUPS, format!("{g} is not in [0, {MAX_ID}]")))
        })
        .collect::<Result<Vec<u32>>>()?;
    let mut gids = BTreeSet::new();
    match SupplementalGroupsPolicy::try_from(sc.supplemental_groups_policy) {
        Ok(SupplementalGroupsPolicy::Merge) => {
            // The image's groups listing the user, found by the name or uid
            // the request or the image gives (the group part is not used).
            let who = if !sc.run_as_username.is_empty() {
                sc.run_as_username.clone()
            } else if let Some(uid) = &sc.run_as_user {
                uid.value.to_string()
            } else if !image_user.is_empty() {
                image_user.split(':').next().unwrap_or("").to_owned()
            } else {
                "0".to_owned()
            };
            gids.insert(gid);
            gids.extend(files.groups_of(&who));
        }
        Ok(SupplementalGroupsPolicy::Strict) => {
            if !userstr.is_empty() {
                gids.insert(gid);
            }
        }
        Err(_) => {
            return Err(invalid(F_GROUPS_POLICY, format!("unknown policy {}", sc.supplemental_groups_policy)));
        }
    }
    gids.extend(supplemental);
    Ok(ProcessUser { uid, gid, additional_gids: gids.into_iter().collect() })
}

/// A capability by CRI name (`NET_ADMIN`, `net_admin` or `CAP_NET_ADMIN`).
fn parse_capability(name: &str) -> Option<Capability> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    ALL_CAPS.iter().find(|(_, n, _)| *n == bare).map(|(_, _, c)| *c)
}

/// Every capability the host kernel knows.
fn all_capabilities(cap_last_cap: u32) -> Capabilities {
    ALL_CAPS.iter().filter(|(n, _, _)| *n <= cap_last_cap).map(|(_, _, c)| *c).collect()
}

/// The bounding (= effective = permitted) set, and the ambient set if asked:
/// containerd's defaults, `ALL` then single adds and drops, all caps when
/// privileged. Unknown names are skipped with a warning, as runc skips them.
fn capabilities(
    sc: &LinuxContainerSecurityContext,
    privileged: bool,
    cap_last_cap: u32,
) -> (Capabilities, Option<Capabilities>) {
    let mut set: Capabilities = DEFAULT_CAPS.into_iter().collect();
    let mut ambient = None;
    if let Some(c) = &sc.capabilities {
        let is_all = |n: &String| n.trim().eq_ignore_ascii_case("ALL");
        if c.add_capabilities.iter().any(is_all) {
            set = all_capabilities(cap_last_cap);
        }
        if c.drop_capabilities.iter().any(is_all) {
            set.clear();
        }
        for name in c.add_capabilities.iter().filter(|n| !is_all(n)) {
            match parse_capability(name) {
                Some(cap) => {
                    set.insert(cap);
                }
                None => tracing::warn!(capability = %name, "ignoring unknown capability in add_capabilities"),
            }
        }
        for name in c.drop_capabilities.iter().filter(|n| !is_all(n)) {
            match parse_capability(name) {
                Some(cap) => {
                    set.remove(&cap);
                }
                None => tracing::warn!(capability = %name, "ignoring unknown capability in drop_capabilities"),
            }
        }
        if !c.add_ambient_capabilities.is_empty() {
            let mut wanted = Capabilities::new();
            for name in &c.add_ambient_capabilities {
                match parse_capability(name) {
                    Some(cap) => {
                        wanted.insert(cap);
                    }
                    None => {
                        tracing::warn!(capability = %name, "ignoring unknown capability in add_ambient_capabilities")
                    }
                }
            }
            ambient = Some(wanted);
        }
    }
    if privileged {
        set = all_capabilities(cap_last_cap);
    }
    // An ambient capability must be permitted and inheritable too.
    if let Some(ambient) = &ambient {
        set.extend(ambient.iter().copied());
    }
    (set, ambient)
}

fn namespace(typ: LinuxNamespaceType, want: &Ns) -> Result<Option<LinuxNamespace>> {
    Ok(match want {
        Ns::Host => None,
        Ns::New => Some(oci(LinuxNamespaceBuilder::default().typ(typ).build())?),
        Ns::Join(path) => Some(oci(LinuxNamespaceBuilder::default().typ(typ).path(path.clone()).build())?),
    })
}

/// A path cleaned lexically, as Go's `filepath.Clean`.
fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    if rooted {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".to_owned()
    } else {
        joined
    }
}

fn mount(destination: &str, typ: &str, source: impl Into<PathBuf>, options: &[&str]) -> Result<Mount> {
    oci(MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source.into())
        .options(options.iter().map(|o| (*o).to_owned()).collect::<Vec<_>>())
        .build())
}

/// containerd's default mounts (`pkg/oci` `defaultMounts` without `/run`,
/// and the cgroup mount the CRI plugin adds); sysfs and cgroup are
/// read-write for privileged containers.
fn default_mounts(privileged: bool) -> Result<Vec<Mount>> {
    let mode = if privileged { "rw" } else { "ro" };
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"])?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        )?,
        mount("/dev/shm", "tmpfs", "shm", &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"])?,
        mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"])?,
        mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", mode])?,
        mount("/sys/fs/cgroup", "cgroup", "cgroup", &["nosuid", "noexec", "nodev", "relatime", mode])?,
    ])
}

/// A bind mount from the request or from the pod's files.
struct Bind {
    /// `mounts[i]` or the pod file it is, for messages.
    what: String,
    container_path: String,
    /// Resolved (symlinks followed), as containerd resolves it.
    host_path: PathBuf,
    readonly: bool,
    propagation: i32,
    recursive_read_only: bool,
}

/// The mount table line holding `path`: its mount point and optional fields.
fn mount_of(mountinfo: &str, path: &Path) -> Option<(PathBuf, String)> {
    let mut best: Option<(PathBuf, String)> = None;
    for line in mountinfo.lines() {
        let Some((left, _)) = line.split_once(" - ") else { continue };
        let fields: Vec<&str> = left.split_whitespace().collect();
        let Some(point) = fields.get(4) else { continue };
        let point = PathBuf::from(bulkhead_runtime::mountinfo::unescape(point));
        let longer = best.as_ref().is_none_or(|(b, _)| point.as_os_str().len() >= b.as_os_str().len());
        if path.starts_with(&point) && longer {
            best = Some((point, fields.get(6..).unwrap_or_default().join(" ")));
        }
    }
    best
}

/// containerd's `ensureShared` / `ensureSharedOrSlave` for a bind source.
fn check_propagation(host: &Host, bind: &Bind, slave_ok: bool) -> Result<()> {
    let (point, optional) = mount_of(host.mountinfo()?, &bind.host_path).unwrap_or_default();
    let ok = optional.split(' ').any(|o| o.starts_with("shared:") || (slave_ok && o.starts_with("master:")));
    if ok {
        return Ok(());
    }
    let want = if slave_ok { "a shared or slave mount (HOST_TO_CONTAINER)" } else { "a shared mount (BIDIRECTIONAL)" };
    Err(invalid(
        F_MOUNTS,
        format!("{}: {} is mounted on {}, which is not {want}", bind.what, bind.host_path.display(), point.display()),
    ))
}

/// The mounts: containerd's defaults (those the request or the pod files
/// replace left out), then the binds sorted so parents come before children.
fn mounts(
    input: &SpecInput<'_>,
    sc: &LinuxContainerSecurityContext,
    host: &Host,
    rootfs_propagation: &mut Option<String>,
) -> Result<Vec<Mount>> {
    let config = input.config;
    let mut binds = Vec::new();
    for (i, m) in config.mounts.iter().enumerate() {
        let what = format!("mounts[{i}]");
        if !m.container_path.starts_with('/') {
            return Err(invalid(
                F_MOUNTS,
                format!("{what}.container_path {:?} is not an absolute path", m.container_path),
            ));
        }
        if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
            return Err(invalid(F_MOUNTS, format!("{what}: id-mapped mounts need user namespaces, not supported yet")));
        }
        if m.host_path.is_empty() && m.image.is_some() {
            return Err(invalid(F_MOUNTS, format!("{what}: image volumes are not supported yet")));
        }
        let host_path = std::fs::canonicalize(&m.host_path).map_err(|e| {
            let why =
                if e.kind() == std::io::ErrorKind::NotFound { "does not exist".to_owned() } else { e.to_string() };
            invalid(F_MOUNTS, format!("{what}.host_path {:?} {why}", m.host_path))
        })?;
        binds.push(Bind {
            what,
            container_path: m.container_path.clone(),
            host_path,
            readonly: m.readonly,
            propagation: m.propagation,
            recursive_read_only: m.recursive_read_only,
        });
    }
    // The pod's files, unless the request mounts something there; read-only
    // with a read-only rootfs, except /dev/shm.
    let requested: HashSet<String> = config.mounts.iter().map(|m| clean(&m.container_path)).collect();
    let files = input.files;
    for (destination, source, readonly) in [
        ("/etc/hostname", &files.hostname, sc.readonly_rootfs),
        ("/etc/hosts", &files.hosts, sc.readonly_rootfs),
        ("/etc/resolv.conf", &files.resolv_conf, sc.readonly_rootfs),
        ("/dev/shm", &files.shm, false),
    ] {
        let Some(source) = source else { continue };
        if requested.contains(destination) {
            continue;
        }
        let Ok(host_path) = std::fs::canonicalize(source) else {
            tracing::debug!(path = %source.display(), "pod file does not exist; not mounted");
            continue;
        };
        binds.push(Bind {
            what: format!("the pod's {destination}"),
            container_path: destination.to_owned(),
            host_path,
            readonly,
            propagation: MountPropagation::PropagationPrivate as i32,
            recursive_read_only: false,
        });
    }
    binds.sort_by_key(|b| clean(&b.container_path).matches('/').count());

    let taken: HashSet<String> = binds.iter().map(|b| clean(&b.container_path)).collect();
    let mut mounts: Vec<Mount> = default_mounts(sc.privileged)?
        .into_iter()
        .filter(|m| {
            let destination = clean(&m.destination().to_string_lossy());
            let under_dev = taken.contains("/dev") && destination.starts_with("/dev/");
            !(taken.contains(&destination) || under_dev)
        })
        .collect();

    for bind in &binds {
        let mut options = vec!["rbind"];
        match MountPropagation::try_from(bind.propagation) {
            Ok(MountPropagation::PropagationPrivate) => options.push("rprivate"),
            Ok(MountPropagation::PropagationBidirectional) => {
                check_propagation(host, bind, false)?;
                options.push("rshared");
                *rootfs_propagation = Some("rshared".to_owned());
            }
            Ok(MountPropagation::PropagationHostToContainer) => {
                check_propagation(host, bind, true)?;
                options.push("rslave");
                if !matches!(rootfs_propagation.as_deref(), Some("rshared" | "rslave")) {
                    *rootfs_propagation = Some("rslave".to_owned());
                }
            }
            Err(_) => {
                tracing::warn!(mount = %bind.what, propagation = bind.propagation, "unknown propagation; using private");
                options.push("rprivate");
            }
        }
        // As containerd (unlike Docker), a read-only rootfs leaves binds as asked.
        if bind.readonly {
            if bind.recursive_read_only {
                if bind.propagation != MountPropagation::PropagationPrivate as i32 {
                    return Err(invalid(
                        F_MOUNTS,
                        format!("{}.recursive_read_only needs PROPAGATION_PRIVATE", bind.what),
                    ));
                }
                options.push("rro");
            } else {
                options.push("ro");
            }
        } else {
            if bind.recursive_read_only {
                return Err(invalid(
                    F_MOUNTS,
                    format!("{}.recursive_read_only conflicts with a read-write mount", bind.what),
                ));
            }
            options.push("rw");
        }
        mounts.push(mount(&bind.container_path, "bind", bind.host_path.clone(), &options)?);
    }
    Ok(mounts)
}

/// A device node at `path` (lstat: a symlink is not a device).
fn device_at(path: &Path) -> std::io::Result<Option<LinuxDevice>> {
    let meta = std::fs::symlink_metadata(path)?;
    let ft = meta.file_type();
    let typ = if ft.is_block_device() {
        LinuxDeviceType::B
    } else if ft.is_char_device() {
        LinuxDeviceType::C
    } else if ft.is_fifo() {
        LinuxDeviceType::P
    } else {
        return Ok(None);
    };
    let rdev = meta.rdev();
    let device = LinuxDeviceBuilder::default()
        .path(path)
        .typ(typ)
        .major(i64::try_from(nix::sys::stat::major(rdev)).unwrap_or(-1))
        .minor(i64::try_from(nix::sys::stat::minor(rdev)).unwrap_or(-1))
        .file_mode(meta.mode() & 0o7777)
        .uid(meta.uid())
        .gid(meta.gid())
        .build()
        .map_err(std::io::Error::other)?;
    Ok(Some(device))
}

/// The devices at `path` (containerd's `getDevices`): the node itself
/// (symlinks followed), or every node under a directory (not following
/// symlinks, skipping pts, shm, fd, mqueue, console and fifos), placed at
/// `container_path` (the host path when empty).
fn devices_at(path: &Path, container_path: &Path) -> std::result::Result<Vec<LinuxDevice>, (PathBuf, std::io::Error)> {
    let fail = |e| (path.to_owned(), e);
    let meta = std::fs::metadata(path).map_err(fail)?;
    if !meta.is_dir() {
        let resolved = std::fs::canonicalize(path).map_err(fail)?;
        let mut device = device_at(&resolved)
            .map_err(fail)?
            .ok_or_else(|| fail(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a device node")))?;
        if !container_path.as_os_str().is_empty() {
            device.set_path(container_path.to_owned());
        }
        return Ok(vec![device]);
    }
    let mut entries: Vec<_> =
        std::fs::read_dir(path).map_err(fail)?.collect::<std::io::Result<Vec<_>>>().map_err(fail)?;
    entries.sort_by_key(|e| e.file_name());
    let mut out = Vec::new();
    for entry in entries {
        let name = entry.file_name();
        let file_type = entry.file_type().map_err(fail)?;
        let inside = if container_path.as_os_str().is_empty() { PathBuf::new() } else { container_path.join(&name) };
        if file_type.is_dir() {
            if matches!(name.to_str(), Some("pts" | "shm" | "fd" | "mqueue" | ".lxc" | ".lxd-mounts" | ".udev")) {
                continue;
            }
            out.extend(devices_at(&entry.path(), &inside)?);
            continue;
        }
        if name == "console" {
            continue;
        }
        match device_at(&entry.path()) {
            Ok(Some(mut device)) if device.typ() != LinuxDeviceType::P => {
                if !inside.as_os_str().is_empty() {
                    device.set_path(inside);
                }
                out.push(device);
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err((entry.path(), e)),
        }
    }
    Ok(out)
}

fn device_rule(allow: bool, device: Option<&LinuxDevice>, access: &str) -> Result<LinuxDeviceCgroup> {
    let mut rule = LinuxDeviceCgroupBuilder::default().allow(allow).access(access);
    if let Some(d) = device {
        rule = rule.typ(d.typ()).major(d.major()).minor(d.minor());
    }
    oci(rule.build())
}

/// The request's devices and their cgroup rules after containerd's deny-all;
/// for privileged containers also every host device, and allow-all.
fn devices(
    config: &ContainerConfig,
    privileged: bool,
    host: &Host,
) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>)> {
    let mut wanted: Vec<(String, String, String, String)> = config
        .devices
        .iter()
        .enumerate()
        .map(|(i, d)| (format!("devices[{i}]"), d.host_path.clone(), d.container_path.clone(), d.permissions.clone()))
        .collect();
    // A terminal over a /dev bind from the host needs /dev/console.
    let dev_bound = config.mounts.iter().any(|m| m.container_path == "/dev" && m.host_path == "/dev");
    let has_console = config.devices.iter().any(|d| d.container_path == "/dev/console" && !d.host_path.is_empty());
    if config.tty && dev_bound && !has_console {
        wanted.push(("/dev/console".into(), "/dev/console".into(), "/dev/console".into(), "rwm".into()));
    }
    let mut devices = Vec::new();
    let mut rules = vec![device_rule(false, None, "rwm")?];
    for (what, host_path, container_path, permissions) in wanted {
        let access = if permissions.is_empty() { "rwm".to_owned() } else { permissions };
        if !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(invalid(F_DEVICES, format!("{what}.permissions {access:?} is not a subset of \"rwm\"")));
        }
        if host_path.is_empty() {
            return Err(invalid(F_DEVICES, format!("{what}.host_path is empty")));
        }
        let found = devices_at(Path::new(&host_path), Path::new(&container_path)).map_err(|(path, e)| {
            invalid(F_DEVICES, format!("{what}.host_path {host_path:?}: {}: {e}", path.display()))
        })?;
        for device in found {
            rules.push(device_rule(true, Some(&device), &access)?);
            devices.push(device);
        }
    }
    if privileged {
        let host_devices = devices_at(&host.dev, Path::new("")).map_err(|(path, source)| Error::Io {
            op: "list host devices",
            path,
            source,
        })?;
        devices.extend(host_devices);
        rules = vec![device_rule(true, None, "rwm")?];
    }
    Ok((devices, rules))
}

/// A cpuset list (`0-3,5`).
fn valid_cpuset(list: &str) -> bool {
    list.split(',').all(|item| match item.split_once('-') {
        Some((a, b)) => matches!((a.parse::<u32>(), b.parse::<u32>()), (Ok(a), Ok(b)) if a <= b),
        None => item.parse::<u32>().is_ok(),
    })
}

/// `r` (cpu, memory, hugepages, unified) added to `builder`, each value checked.
fn with_resources(
    mut builder: LinuxResourcesBuilder,
    r: &LinuxContainerResources,
    host: &Host,
) -> Result<LinuxResourcesBuilder> {
    if let Some(cpu) = cpu(r)? {
        builder = builder.cpu(cpu);
    }
    if let Some(memory) = memory(r, host.swap)? {
        builder = builder.memory(memory);
    }
    let hugepages = hugepages(r, host.hugetlb)?;
    if !hugepages.is_empty() {
        builder = builder.hugepage_limits(hugepages);
    }
    if !r.unified.is_empty() {
        builder = builder.unified(r.unified.clone());
    }
    Ok(builder)
}

/// The cgroup resources `UpdateContainerResources` asks for, checked as
/// at creation.
pub fn update_resources(r: &LinuxContainerResources) -> Result<oci_spec::runtime::LinuxResources> {
    let host = Host::probe()?;
    oci(with_resources(LinuxResourcesBuilder::default(), r, &host)?.build())
}

/// The resources a container runs with, as `ContainerStatus` reports them:
/// read back from its OCI spec (as containerd does), with its OOM score.
pub fn cri_resources(spec: &oci_spec::runtime::Spec) -> Option<LinuxContainerResources> {
    let resources = spec.linux().as_ref()?.resources().as_ref()?;
    let cpu = resources.cpu().clone().unwrap_or_default();
    let memory = resources.memory().unwrap_or_default();
    let as_i64 = |v: Option<u64>| v.and_then(|v| i64::try_from(v).ok()).unwrap_or(0);
    Some(LinuxContainerResources {
        cpu_period: as_i64(cpu.period()),
        cpu_quota: cpu.quota().unwrap_or(0),
        cpu_shares: as_i64(cpu.shares()),
        memory_limit_in_bytes: memory.limit().unwrap_or(0),
        oom_score_adj: spec.process().as_ref().and_then(|p| p.oom_score_adj()).map_or(0, i64::from),
        cpuset_cpus: cpu.cpus().clone().unwrap_or_default(),
        cpuset_mems: cpu.mems().clone().unwrap_or_default(),
        hugepage_limits: resources
            .hugepage_limits()
            .iter()
            .flatten()
            .map(|h| HugepageLimit { page_size: h.page_size().clone(), limit: u64::try_from(h.limit()).unwrap_or(0) })
            .collect(),
        unified: resources.unified().clone().unwrap_or_default().into_iter().collect(),
        memory_swap_limit_in_bytes: memory.swap().unwrap_or(0),
    })
}

/// The user a container's process runs as, from its OCI spec.
pub fn cri_user(spec: &oci_spec::runtime::Spec) -> Option<LinuxContainerUser> {
    let user = spec.process().as_ref()?.user();
    Some(LinuxContainerUser {
        uid: i64::from(user.uid()),
        gid: i64::from(user.gid()),
        supplemental_groups: user.additional_gids().iter().flatten().map(|g| i64::from(*g)).collect(),
    })
}

/// `update` (from UpdateContainerResources) written into `spec`: the
/// values it sets replace the spec's, the rest stay.
pub fn merge_resources(spec: &mut oci_spec::runtime::Spec, update: &oci_spec::runtime::LinuxResources) {
    let Some(linux) = spec.linux_mut() else { return };
    let mut resources = linux.resources().clone().unwrap_or_default();
    if let Some(new) = update.cpu() {
        let mut cpu = resources.cpu().clone().unwrap_or_default();
        if let Some(v) = new.shares() {
            cpu.set_shares(Some(v));
        }
        if let Some(v) = new.quota() {
            cpu.set_quota(Some(v));
        }
        if let Some(v) = new.period() {
            cpu.set_period(Some(v));
        }
        if let Some(v) = new.cpus() {
            cpu.set_cpus(Some(v.clone()));
        }
        if let Some(v) = new.mems() {
            cpu.set_mems(Some(v.clone()));
        }
        resources.set_cpu(Some(cpu));
    }
    if let Some(new) = update.memory() {
        let mut memory = resources.memory().unwrap_or_default();
        if let Some(v) = new.limit() {
            memory.set_limit(Some(v));
        }
        if let Some(v) = new.swap() {
            memory.set_swap(Some(v));
        }
        resources.set_memory(Some(memory));
    }
    if let Some(new) = update.hugepage_limits() {
        resources.set_hugepage_limits(Some(new.clone()));
    }
    if let Some(new) = update.unified() {
        let mut unified = resources.unified().clone().unwrap_or_default();
        unified.extend(new.clone());
        resources.set_unified(Some(unified));
    }
    linux.set_resources(Some(resources));
}

fn cpu(r: &LinuxContainerResources) -> Result<Option<LinuxCpu>> {
    let mut cpu = LinuxCpuBuilder::default();
    let mut any = false;
    if r.cpu_period != 0 {
        let period = u64::try_from(r.cpu_period)
            .map_err(|_| invalid("config.linux.resources.cpu_period", format!("{} is negative", r.cpu_period)))?;
        cpu = cpu.period(period);
        any = true;
    }
    if r.cpu_quota != 0 {
        if r.cpu_quota < -1 {
            return Err(invalid("config.linux.resources.cpu_quota", format!("{} is below -1", r.cpu_quota)));
        }
        cpu = cpu.quota(r.cpu_quota);
        any = true;
    }
    if r.cpu_shares != 0 {
        let shares = u64::try_from(r.cpu_shares)
            .map_err(|_| invalid("config.linux.resources.cpu_shares", format!("{} is negative", r.cpu_shares)))?;
        cpu = cpu.shares(shares);
        any = true;
    }
    if !r.cpuset_cpus.is_empty() {
        if !valid_cpuset(&r.cpuset_cpus) {
            return Err(invalid(
                "config.linux.resources.cpuset_cpus",
                format!("{:?} is not a cpu list", r.cpuset_cpus),
            ));
        }
        cpu = cpu.cpus(r.cpuset_cpus.clone());
        any = true;
    }
    if !r.cpuset_mems.is_empty() {
        if !valid_cpuset(&r.cpuset_mems) {
            return Err(invalid(
                "config.linux.resources.cpuset_mems",
                format!("{:?} is not a node list", r.cpuset_mems),
            ));
        }
        cpu = cpu.mems(r.cpuset_mems.clone());
        any = true;
    }
    if any { Ok(Some(oci(cpu.build())?)) } else { Ok(None) }
}

/// The memory limit, and swap: as asked, else equal to the limit (no swap)
/// when the host has a swap controller, as containerd does.
fn memory(r: &LinuxContainerResources, swap_controller: bool) -> Result<Option<LinuxMemory>> {
    let limit = r.memory_limit_in_bytes;
    let swap = r.memory_swap_limit_in_bytes;
    if limit < 0 {
        return Err(invalid("config.linux.resources.memory_limit_in_bytes", format!("{limit} is negative")));
    }
    if swap < -1 {
        return Err(invalid("config.linux.resources.memory_swap_limit_in_bytes", format!("{swap} is below -1")));
    }
    let mut memory = LinuxMemoryBuilder::default();
    let mut any = false;
    if limit != 0 {
        memory = memory.limit(limit);
        any = true;
        if swap == 0 && swap_controller {
            memory = memory.swap(limit);
        }
    }
    if swap != 0 && swap_controller {
        memory = memory.swap(swap);
        any = true;
    }
    if any { Ok(Some(oci(memory.build())?)) } else { Ok(None) }
}

/// Hugepage limits; left out (with a warning) when the host has no hugetlb
/// controller, as containerd's default `tolerate_missing_hugetlb_controller`.
fn hugepages(r: &LinuxContainerResources, hugetlb: bool) -> Result<Vec<LinuxHugepageLimit>> {
    if r.hugepage_limits.is_empty() {
        return Ok(Vec::new());
    }
    if !hugetlb {
        tracing::warn!("the hugetlb cgroup controller is absent; skipping hugepage limits");
        return Ok(Vec::new());
    }
    r.hugepage_limits
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let field = "config.linux.resources.hugepage_limits";
            if h.page_size.is_empty() {
                return Err(invalid(field, format!("hugepage_limits[{i}].page_size is empty")));
            }
            let limit = i64::try_from(h.limit)
                .map_err(|_| invalid(field, format!("hugepage_limits[{i}].limit {} is too large", h.limit)))?;
            oci(LinuxHugepageLimitBuilder::default().page_size(h.page_size.clone()).limit(limit).build())
        })
        .collect()
}

/// The seccomp profile: the `seccomp` field, else the deprecated
/// `seccomp_profile_path` (empty = unconfined, containerd's default
/// `unset_seccomp_profile`); none for privileged containers.
#[allow(deprecated)] // seccomp_profile_path: deprecated in CRI, still honored by containerd
fn seccomp_profile(
    sc: &LinuxContainerSecurityContext,
    privileged: bool,
    bounding: &Capabilities,
) -> Result<Option<LinuxSeccomp>> {
    if privileged {
        return Ok(None);
    }
    let (profile_type, localhost_ref, ref_field) = match &sc.seccomp {
        Some(sp) => {
            let t = ProfileType::try_from(sp.profile_type)
                .map_err(|_| invalid(F_SECCOMP_TYPE, format!("unknown profile type {}", sp.profile_type)))?;
            (t, sp.localhost_ref.clone(), F_SECCOMP_REF)
        }
        None => match sc.seccomp_profile_path.as_str() {
            "" => return Ok(None),
            "runtime/default" | "docker/default" => (ProfileType::RuntimeDefault, String::new(), F_SECCOMP_PATH),
            "unconfined" => (ProfileType::Unconfined, String::new(), F_SECCOMP_PATH),
            other => match other.strip_prefix("localhost/") {
                Some(path) => (ProfileType::Localhost, path.to_owned(), F_SECCOMP_PATH),
                None => {
                    return Err(invalid(
                        F_SECCOMP_PATH,
                        format!("{other:?} is not runtime/default, docker/default, unconfined or localhost/<path>"),
                    ));
                }
            },
        },
    };
    if profile_type != ProfileType::Localhost && !localhost_ref.is_empty() {
        return Err(invalid(F_SECCOMP_REF, "localhost_ref is only valid with the Localhost profile type"));
    }
    match profile_type {
        ProfileType::Unconfined => Ok(None),
        ProfileType::RuntimeDefault => seccomp::default_profile(bounding).map(Some),
        ProfileType::Localhost => {
            let path = localhost_ref.strip_prefix("localhost/").unwrap_or(&localhost_ref);
            localhost_profile(Path::new(path), ref_field).map(Some)
        }
    }
}

/// A seccomp profile (runtime-spec JSON) from the host.
fn localhost_profile(path: &Path, field: &'static str) -> Result<LinuxSeccomp> {
    if !path.is_absolute() {
        return Err(invalid(field, format!("seccomp profile {:?} is not an absolute path", path)));
    }
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => invalid(field, format!("seccomp profile {} does not exist", path.display())),
        _ => invalid(field, format!("seccomp profile {}: {e}", path.display())),
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| invalid(field, format!("seccomp profile {} is not a runtime-spec profile: {e}", path.display())))
}

/// The pod's sysctls (containerd sets them on the pod's sandbox container;
/// bulkhead has none, so every container carries them into the namespaces
/// it shares). A namespaced sysctl of a host namespace is refused.
fn sysctls(pod: &PodSandboxConfig, ns: &PodNamespaces) -> Result<HashMap<String, String>> {
    let sysctls = pod.linux.as_ref().map(|l| l.sysctls.clone()).unwrap_or_default();
    for key in sysctls.keys() {
        let net = key.starts_with("net.");
        let ipc = key.starts_with("fs.mqueue.")
            || matches!(
                key.as_str(),
                "kernel.msgmax"
                    | "kernel.msgmnb"
                    | "kernel.msgmni"
                    | "kernel.sem"
                    | "kernel.shmall"
                    | "kernel.shmmax"
                    | "kernel.shmmni"
                    | "kernel.shm_rmid_forced"
            );
        if net && ns.network == Ns::Host {
            return Err(invalid(F_SYSCTLS, format!("{key} cannot be set in a pod on the host's network")));
        }
        if ipc && ns.ipc == Ns::Host {
            return Err(invalid(F_SYSCTLS, format!("{key} cannot be set in a pod sharing the host's IPC")));
        }
    }
    Ok(sysctls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_proto::cri::{
        Capability as CriCapability, ContainerMetadata, Device, HugepageLimit, ImageSpec, Int64Value, KeyValue,
        LinuxContainerConfig, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, Mount as CriMount, NamespaceOption,
        PodSandboxMetadata, SecurityProfile, UserNamespace,
    };
    use oci_spec::runtime::{LinuxSeccompAction, LinuxSeccompOperator, Process};
    use tonic::Code;

    #[test]
    fn resources_read_back_from_the_spec_and_updates_merge() {
        let mut spec = oci_spec::runtime::Spec::default();
        let asked = LinuxContainerResources {
            cpu_shares: 512,
            cpu_period: 100_000,
            cpu_quota: 50_000,
            memory_limit_in_bytes: 64 << 20,
            cpuset_cpus: "0".into(),
            ..Default::default()
        };
        let resources = update_resources(&asked).unwrap();
        spec.linux_mut().as_mut().unwrap().set_resources(Some(resources));
        let back = cri_resources(&spec).unwrap();
        assert_eq!((back.cpu_shares, back.cpu_period, back.cpu_quota), (512, 100_000, 50_000));
        assert_eq!((back.memory_limit_in_bytes, back.cpuset_cpus.as_str()), (64 << 20, "0"));
        let update = update_resources(&LinuxContainerResources { cpu_quota: 20_000, ..Default::default() }).unwrap();
        merge_resources(&mut spec, &update);
        let back = cri_resources(&spec).unwrap();
        assert_eq!((back.cpu_shares, back.cpu_quota, back.memory_limit_in_bytes), (512, 20_000, 64 << 20));
        let user = cri_user(&spec).unwrap();
        assert_eq!((user.uid, user.gid), (0, 0));
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        daemon:x:1:1::/:/sbin/nologin\n\
        # a comment\n\
        app:x:1000:1000:App:/home/app:/bin/sh\n\
        nobody:x:65534:65534::/:/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:root,app\napp:x:1000:app\nstaff:x:50:app,daemon\nvideo:x:44:daemon\n";

    /// A rootfs with a user database, pod files, and a request to build.
    struct Fixture {
        dir: tempfile::TempDir,
        host: Host,
        pod: PodSandboxConfig,
        config: ContainerConfig,
        image: RunConfig,
        namespaces: PodNamespaces,
        files: PodFiles,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let rootfs = dir.path().join("rootfs");
            std::fs::create_dir_all(rootfs.join("etc")).unwrap();
            std::fs::write(rootfs.join("etc/passwd"), PASSWD).unwrap();
            std::fs::write(rootfs.join("etc/group"), GROUP).unwrap();
            std::fs::create_dir_all(dir.path().join("dev")).unwrap();
            let pod_dir = dir.path().join("pod");
            std::fs::create_dir_all(pod_dir.join("shm")).unwrap();
            for f in ["hosts", "resolv.conf", "hostname"] {
                std::fs::write(pod_dir.join(f), "x\n").unwrap();
            }
            let host = Host {
                cgroup_v2: true,
                hugetlb: true,
                swap: true,
                cap_last_cap: 40,
                hostname: "node-1".into(),
                mountinfo: std::cell::OnceCell::from(String::new()),
                dev: dir.path().join("dev"),
            };
            let pod = PodSandboxConfig {
                metadata: Some(PodSandboxMetadata {
                    name: "web".into(),
                    uid: "uid-1".into(),
                    namespace: "default".into(),
                    attempt: 0,
                }),
                hostname: "web-pod".into(),
                ..Default::default()
            };
            let config = ContainerConfig {
                metadata: Some(ContainerMetadata { name: "app".into(), attempt: 0 }),
                image: Some(ImageSpec { image: "docker.io/library/app:1".into(), ..Default::default() }),
                ..Default::default()
            };
            let image = RunConfig {
                entrypoint: Some(vec!["/entry".into()]),
                cmd: Some(vec!["serve".into()]),
                env: Some(vec!["PATH=/app/bin:/usr/bin".into(), "MODE=image".into()]),
                ..Default::default()
            };
            let namespaces = PodNamespaces {
                network: Ns::Join("/run/netns/pod".into()),
                ipc: Ns::Join("/proc/10/ns/ipc".into()),
                uts: Ns::Join("/proc/10/ns/uts".into()),
                pid: Ns::New,
            };
            let files = PodFiles {
                hosts: Some(pod_dir.join("hosts")),
                resolv_conf: Some(pod_dir.join("resolv.conf")),
                hostname: Some(pod_dir.join("hostname")),
                shm: Some(pod_dir.join("shm")),
            };
            Fixture { dir, host, pod, config, image, namespaces, files }
        }

        fn rootfs(&self) -> PathBuf {
            self.dir.path().join("rootfs")
        }

        fn spec(&self) -> Result<Spec> {
            let rootfs = self.rootfs();
            let input = SpecInput {
                container_id: "c1",
                pod: &self.pod,
                config: &self.config,
                image: &self.image,
                rootfs: &rootfs,
                namespaces: &self.namespaces,
                files: &self.files,
                cgroups_path: "/kubepods/poduid-1/c1",
            };
            build(&input, &self.host)
        }

        fn sc(&mut self) -> &mut LinuxContainerSecurityContext {
            self.config.linux.get_or_insert_with(Default::default).security_context.get_or_insert_with(Default::default)
        }

        fn resources(&mut self) -> &mut LinuxContainerResources {
            self.config
                .linux
                .get_or_insert_with(LinuxContainerConfig::default)
                .resources
                .get_or_insert_with(Default::default)
        }

        fn privileged_pod(&mut self) {
            self.pod.linux = Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext { privileged: true, ..Default::default() }),
                ..Default::default()
            });
        }

        fn bind(&self, name: &str) -> String {
            let path = self.dir.path().join("host").join(name);
            std::fs::create_dir_all(&path).unwrap();
            path.to_string_lossy().into_owned()
        }
    }

    fn process(spec: &Spec) -> &Process {
        spec.process().as_ref().unwrap()
    }

    fn linux(spec: &Spec) -> &oci_spec::runtime::Linux {
        spec.linux().as_ref().unwrap()
    }

    fn field_of(err: Error) -> (&'static str, String) {
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        match err {
            Error::InvalidArgument { field, message } => (field, message),
            other => panic!("not InvalidArgument: {other}"),
        }
    }

    fn destinations(spec: &Spec) -> Vec<String> {
        spec.mounts().iter().flatten().map(|m| m.destination().to_string_lossy().into_owned()).collect()
    }

    fn mount_at<'a>(spec: &'a Spec, destination: &str) -> &'a Mount {
        spec.mounts().iter().flatten().find(|m| m.destination() == Path::new(destination)).unwrap()
    }

    fn options(m: &Mount) -> Vec<&str> {
        m.options().iter().flatten().map(String::as_str).collect()
    }

    fn bounding(spec: &Spec) -> Capabilities {
        process(spec).capabilities().as_ref().unwrap().bounding().clone().unwrap()
    }

    fn syscall_rules<'a>(profile: &'a LinuxSeccomp, name: &str) -> Vec<&'a oci_spec::runtime::LinuxSyscall> {
        profile.syscalls().iter().flatten().filter(|s| s.names().iter().any(|n| n == name)).collect()
    }

    #[test]
    fn defaults_follow_containerd() {
        let f = Fixture::new();
        let spec = f.spec().unwrap();
        assert_eq!(spec.version(), OCI_VERSION);
        let p = process(&spec);
        assert_eq!(p.args().as_ref().unwrap(), &["/entry", "serve"]);
        assert_eq!(p.cwd(), Path::new("/"));
        assert_eq!(p.terminal(), Some(false));
        assert_eq!(p.no_new_privileges(), Some(false));
        assert_eq!(p.oom_score_adj(), None);
        assert_eq!(p.rlimits(), &None);
        assert_eq!(p.user().uid(), 0);
        assert_eq!(p.user().gid(), 0);
        assert_eq!(p.user().umask(), Some(0o022));
        assert_eq!(p.user().additional_gids().as_ref().unwrap(), &[0, 10], "root's groups from the image");
        assert_eq!(bounding(&spec), DEFAULT_CAPS.into_iter().collect::<Capabilities>());
        let caps = p.capabilities().as_ref().unwrap();
        assert_eq!(caps.effective(), caps.bounding());
        assert_eq!(caps.permitted(), caps.bounding());
        assert_eq!(caps.ambient(), &None);
        assert_eq!(caps.inheritable(), &None);
        assert_eq!(spec.root().as_ref().unwrap().path(), &f.rootfs());
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(false));
        assert_eq!(spec.hostname().as_deref(), Some("web-pod"));
        let l = linux(&spec);
        assert_eq!(l.cgroups_path().as_deref(), Some(Path::new("/kubepods/poduid-1/c1")));
        assert_eq!(l.masked_paths().as_ref().unwrap().len(), DEFAULT_MASKED_PATHS.len());
        assert_eq!(l.readonly_paths().as_ref().unwrap(), &DEFAULT_READONLY_PATHS.map(String::from));
        assert!(l.seccomp().is_none(), "no profile asked: unconfined, as containerd's unset_seccomp_profile");
        assert!(l.rootfs_propagation().is_none());
        assert!(l.sysctl().is_none());
        let rules = l.resources().as_ref().unwrap().devices().clone().unwrap();
        assert_eq!(rules.len(), 1);
        assert!(!rules[0].allow() && rules[0].access().as_deref() == Some("rwm"), "deny-all first");
        assert!(l.resources().as_ref().unwrap().cpu().is_none());
        // Round trip through the runtime's own parser.
        let json = serde_json::to_vec(&spec).unwrap();
        assert_eq!(bulkhead_runtime::spec::parse(&json).unwrap(), spec);
    }

    #[test]
    fn command_and_args_follow_kubelets_rules() {
        let cases: [(&[&str], &[&str], &[&str]); 4] = [
            (&[], &[], &["/entry", "serve"]),
            (&[], &["debug"], &["/entry", "debug"]),
            (&["/bin/sh"], &[], &["/bin/sh"]),
            (&["/bin/sh"], &["-c", "true"], &["/bin/sh", "-c", "true"]),
        ];
        for (command, args, want) in cases {
            let mut f = Fixture::new();
            f.config.command = command.iter().map(|s| s.to_string()).collect();
            f.config.args = args.iter().map(|s| s.to_string()).collect();
            assert_eq!(process(&f.spec().unwrap()).args().as_ref().unwrap(), want, "{command:?} {args:?}");
        }
        // ENTRYPOINT [""] clears the entrypoint.
        let mut f = Fixture::new();
        f.image.entrypoint = Some(vec![String::new()]);
        assert_eq!(process(&f.spec().unwrap()).args().as_ref().unwrap(), &["serve"]);
        // Nothing at all.
        f.image.cmd = None;
        let (field, message) = field_of(f.spec().unwrap_err());
        assert_eq!(field, "config.command");
        assert!(message.contains("no command"), "{message}");
    }

    #[test]
    fn environment_overrides_by_key() {
        let mut f = Fixture::new();
        f.config.tty = true;
        f.config.envs = vec![
            KeyValue { key: "MODE".into(), value: "request".into() },
            KeyValue { key: "EXTRA".into(), value: "a=b".into() },
        ];
        let spec = f.spec().unwrap();
        assert_eq!(
            process(&spec).env().as_ref().unwrap(),
            &["PATH=/app/bin:/usr/bin", "TERM=xterm", "HOSTNAME=web-pod", "MODE=request", "EXTRA=a=b"]
        );
        assert_eq!(process(&spec).terminal(), Some(true));
        // No PATH from the image: the default; no pod hostname: the node's.
        f.image.env = Some(vec!["GONE".into()]);
        f.config.tty = false;
        f.config.envs.clear();
        f.pod.hostname.clear();
        let spec = f.spec().unwrap();
        assert_eq!(process(&spec).env().as_ref().unwrap(), &[DEFAULT_PATH, "HOSTNAME=node-1"]);
        assert_eq!(spec.hostname(), &None);
    }

    #[test]
    fn working_dir_request_then_image_then_root() {
        let mut f = Fixture::new();
        f.image.working_dir = Some("/srv".into());
        assert_eq!(process(&f.spec().unwrap()).cwd(), Path::new("/srv"));
        f.config.working_dir = "/work".into();
        assert_eq!(process(&f.spec().unwrap()).cwd(), Path::new("/work"));
    }

    #[test]
    fn users_resolve_in_the_images_passwd_and_group() {
        let user = |f: &Fixture| {
            let spec = f.spec().unwrap();
            let u = process(&spec).user().clone();
            (u.uid(), u.gid(), u.additional_gids().clone().unwrap_or_default())
        };
        let mut f = Fixture::new();
        f.image.user = Some("app".into());
        assert_eq!(user(&f), (1000, 1000, vec![10, 50, 1000]));
        f.image.user = Some("app:video".into());
        assert_eq!(user(&f), (1000, 44, vec![10, 44, 50]), "the image's group part, groups of the user part");
        f.image.user = Some("4242".into());
        assert_eq!(user(&f), (4242, 0, vec![0]), "a uid absent from passwd runs with gid 0");
        f.image.user = Some("1:2".into());
        assert_eq!(user(&f), (1, 2, vec![2, 44, 50]), "numeric: no lookup; daemon's groups");
        f.image.user = Some("nobody-here".into());
        let (field, message) = field_of(f.spec().unwrap_err());
        assert_eq!((field, message.contains("nobody-here")), ("image.User", true));
        f.image.user = Some("app:nogroup".into());
        assert_eq!(field_of(f.spec().unwrap_err()).0, "image.User");
        f.image.user = Some("a:b:c".into());
        assert_eq!(field_of(f.spec().unwrap_err()).0, "image.User");

        // The request wins over the image; supplemental groups merge.
        f.image.user = Some("app".into());
        f.sc().run_as_user = Some(Int64Value { value: 1 });
        f.sc().supplemental_groups = vec![3000, 10];
        assert_eq!(user(&f), (1, 1, vec![1, 10, 44, 50, 3000]));
        f.sc().run_as_group = Some(Int64Value { value: 7 });
        assert_eq!(user(&f), (1, 7, vec![7, 10, 44, 50, 3000]));
        f.sc().run_as_username = "app".into();
        assert_eq!(user(&f), (1000, 7, vec![7, 10, 50, 3000]));
        f.sc().run_as_username = "ghost".into();
        assert_eq!(field_of(f.spec().unwrap_err()).0, "config.linux.security_context.run_as_username");
        f.sc().run_as_username.clear();
        f.sc().run_as_user = Some(Int64Value { value: -1 });
        assert_eq!(field_of(f.spec().unwrap_err()).0, "config.linux.security_context.run_as_user");
        f.sc().run_as_user = None;
        assert_eq!(
            field_of(f.spec().unwrap_err()).0,
            "config.linux.security_context.run_as_group",
            "group without user"
        );

        // Strict: no groups from the image.
        f.sc().run_as_group = None;
        f.sc().run_as_username = "app".into();
        f.sc().supplemental_groups_policy = SupplementalGroupsPolicy::Strict as i32;
        assert_eq!(user(&f), (1000, 1000, vec![10, 1000, 3000]));
        f.sc().supplemental_groups_policy = 7;
        assert_eq!(field_of(f.spec().unwrap_err()).0, "config.linux.security_context.supplemental_groups_policy");
        f.sc().supplemental_groups_policy = 0;
        f.sc().supplemental_groups = vec![-3];
        assert_eq!(field_of(f.spec().unwrap_err()).0, "config.linux.security_context.supplemental_groups");
    }

    #[test]
    fn the_user_database_is_read_inside_the_rootfs() {
        let mut f = Fixture::new();
        // An image whose /etc/passwd points at a host file: resolved inside the root, not found.
        let outside = f.dir.path().join("outside-passwd");
        std::fs::write(&outside, "evil:x:0:0::/:/bin/sh\n").unwrap();
        let passwd = f.rootfs().join("etc/passwd");
        std::fs::remove_file(&passwd).unwrap();
        std::os::unix::fs::symlink(&outside, &passwd).unwrap();
        f.image.user = Some("evil".into());
        let (field, message) = field_of(f.spec().unwrap_err());
        assert_eq!(field, "image.User");
        assert!(message.contains("/etc/passwd"), "{message}");
        // Relative escapes stop at the root too; a uid needs no passwd.
        std::fs::remove_file(&passwd).unwrap();
        std::os::unix::fs::symlink("../../../../../../outside-passwd", &passwd).unwrap();
        assert!(f.spec().is_err());
        f.image.user = Some("5".into());
        assert_eq!(process(&f.spec().unwrap()).user().uid(), 5);
        // A FIFO is refused rather than blocking the daemon.
        std::fs::remove_file(&passwd).unwrap();
        nix::unistd::mkfifo(&passwd, Mode::from_bits_truncate(0o644)).unwrap();
        let (field, message) = field_of(f.spec().unwrap_err());
        assert_eq!(field, "image");
        assert!(message.contains("not a regular file"), "{message}");
    }

    #[test]
    fn capabilities_add_drop_all_and_ambient() {
        let mut f = Fixture::new();
        let caps = |add: &[&str], drop: &[&str]| CriCapability {
            add_capabilities: add.iter().map(|s| s.to_string()).collect(),
            drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
            add_ambient_capabilities: Vec::new(),
        };
        f.sc().capabilities = Some(caps(&["NET_ADMIN", "cap_sys_time", "NOT_A_CAP"], &["MKNOD", "CAP_NET_RAW"]));
        let set = bounding(&f.spec().unwrap());
        assert!(set.contains(&Capability::NetAdmin) && set.contains(&Capability::SysTime));
        assert!(!set.contains(&Capability::Mknod) && !set.contains(&Capability::NetRaw));
        assert_eq!(set.len(), 14);
        f.sc().capabilities = Some(caps(&["ALL"], &["CHOWN"]));
        let set = bounding(&f.spec().unwrap());
        assert_eq!(set.len(), 40);
        assert!(!set.contains(&Capability::Chown));
        f.sc().capabilities = Some(caps(&["KILL"], &["all"]));
        assert_eq!(bounding(&f.spec().unwrap()), [Capability::Kill].into_iter().collect());
        f.host.cap_last_cap = 37;
        f.sc().capabilities = Some(caps(&["ALL"], &[]));
        assert_eq!(bounding(&f.spec().unwrap()).len(), 38, "only what the kernel knows");

        let mut c = caps(&[], &["NET_BIND_SERVICE"]);
        c.add_ambient_capabilities = vec!["NET_BIND_SERVICE".into()];
        f.sc().capabilities = Some(c);
        let spec = f.spec().unwrap();
        let lc = process(&spec).capabilities().as_ref().unwrap();
        let want: Capabilities = [Capability::NetBindService].into_iter().collect();
        assert_eq!(lc.ambient().as_ref(), Some(&want));
        assert_eq!(lc.inheritable().as_ref(), Some(&want));
        assert!(lc.bounding().as_ref().unwrap().contains(&Capability::NetBindService), "kept for ambient");
    }

    #[test]
    fn privileged_containers_get_everything() {
        let mut f = Fixture::new();
        f.sc().privileged = true;
        let (field, _) = field_of(f.spec().unwrap_err());
        assert_eq!(field, "config.linux.security_context.privileged");
        f.privileged_pod();
        f.sc().capabilities = Some(CriCapability { drop_capabilities: vec!["ALL".into()], ..Default::default() });
        f.sc().seccomp =
            Some(SecurityProfile { profile_type: ProfileType::RuntimeDefault as i32, ..Default::default() });
        f.sc().masked_paths = vec!["/proc/x".into()];
        nix::sys::stat::mknod(
            &f.dir.path().join("dev/null"),
            nix::sys::stat::SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        std::fs::create_dir(f.dir.path().join("dev/pts")).unwrap();
        std::fs::write(f.dir.path().join("dev/not-a-device"), "").unwrap();
        let spec = f.spec().unwrap();
        assert_eq!(bounding(&spec).len(), 41, "all caps, whatever was dropped");
        let l = linux(&spec);
        assert!(l.seccomp().is_none());
        assert!(l.masked_paths().is_none() && l.readonly_paths().is_none());
        assert!(options(mount_at(&spec, "/sys")).contains(&"rw"));
        assert!(options(mount_at(&spec, "/sys/fs/cgroup")).contains(&"rw"));
        assert!(!l.namespaces().as_ref().unwrap().iter().any(|n| n.typ() == LinuxNamespaceType::Cgroup));
        let devices = l.devices().as_ref().unwrap();
        assert_eq!(devices.len(), 1);
        assert_eq!(
            (devices[0].path().clone(), devices[0].major(), devices[0].minor()),
            (f.dir.path().join("dev/null"), 1, 3)
        );
        let rules = l.resources().as_ref().unwrap().devices().clone().unwrap();
        assert_eq!(rules.len(), 1);
        assert!(rules[0].allow() && rules[0].typ().is_none() && rules[0].access().as_deref() == Some("rwm"));
    }

    #[test]
    fn namespaces_come_from_the_pod() {
        let mut f = Fixture::new();
        let ns_of = |spec: &Spec| -> Vec<(LinuxNamespaceType, Option<PathBuf>)> {
            linux(spec).namespaces().iter().flatten().map(|n| (n.typ(), n.path().clone())).collect()
        };
        assert_eq!(
            ns_of(&f.spec().unwrap()),
            vec![
                (LinuxNamespaceType::Pid, None),
                (LinuxNamespaceType::Ipc, Some("/proc/10/ns/ipc".into())),
                (LinuxNamespaceType::Uts, Some("/proc/10/ns/uts".into())),
                (LinuxNamespaceType::Mount, None),
                (LinuxNamespaceType::Network, Some("/run/netns/pod".into())),
                (LinuxNamespaceType::Cgroup, None),
            ]
        );
        f.sc().namespace_options = Some(NamespaceOption {
            userns_options: Some(UserNamespace { mode: NamespaceMode::Pod as i32, ..Default::default() }),
            ..Default::default()
        });
        assert_eq!(field_of(f.spec().unwrap_err()).0, "config.linux.security_context.namespace_options.userns_options");
        f.sc().namespace_options = None;
        f.namespaces = PodNamespaces { network: Ns::Host, ipc: Ns::Host, uts: Ns::Host, pid: Ns::Host };
        f.host.cgroup_v2 = false;
        let spec = f.spec().unwrap();
        assert_eq!(ns_of(&spec), vec![(LinuxNamespaceType::Mount, None)]);
        assert_eq!(spec.hostname(), &None, "no hostname in the host's UTS namespace");
    }

    #[test]
    fn default_mounts_then_pod_files_then_binds_parents_first() {
        let mut f = Fixture::new();
        let data = f.bind("data");
        let logs = f.bind("logs");
        f.config.mounts = vec![
            CriMount { container_path: "/data/logs".into(), host_path: logs.clone(), ..Default::default() },
            CriMount { container_path: "/data".into(), host_path: data.clone(), readonly: true, ..Default::default() },
        ];
        f.sc().readonly_rootfs = true;
        let spec = f.spec().unwrap();
        assert_eq!(
            destinations(&spec),
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup",
                "/data",
                "/data/logs",
                "/etc/hostname",
                "/etc/hosts",
                "/etc/resolv.conf",
                "/dev/shm"
            ]
        );
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
        assert_eq!(options(mount_at(&spec, "/sys")), ["nosuid", "noexec", "nodev", "ro"]);
        assert_eq!(options(mount_at(&spec, "/sys/fs/cgroup")), ["nosuid", "noexec", "nodev", "relatime", "ro"]);
        assert_eq!(options(mount_at(&spec, "/data")), ["rbind", "rprivate", "ro"]);
        assert_eq!(options(mount_at(&spec, "/data/logs")), ["rbind", "rprivate", "rw"]);
        assert_eq!(options(mount_at(&spec, "/etc/hosts")), ["rbind", "rprivate", "ro"], "ro with a ro rootfs");
        assert_eq!(options(mount_at(&spec, "/dev/shm")), ["rbind", "rprivate", "rw"]);
        let shm = mount_at(&spec, "/dev/shm");
        assert_eq!((shm.typ().as_deref(), shm.source().clone()), (Some("bind"), f.files.shm.clone()));

        // No pod shm: containerd's 64m tmpfs; a request mount replaces a pod file.
        f.files.shm = None;
        f.sc().readonly_rootfs = false;
        let hosts = f.dir.path().join("host/hosts");
        std::fs::write(&hosts, "").unwrap();
        f.config.mounts = vec![CriMount {
            container_path: "/etc/hosts".into(),
            host_path: hosts.to_string_lossy().into(),
            ..Default::default()
        }];
        let spec = f.spec().unwrap();
        let shm = mount_at(&spec, "/dev/shm");
        assert_eq!(shm.typ().as_deref(), Some("tmpfs"));
        assert!(options(shm).contains(&"size=65536k"));
        assert_eq!(mount_at(&spec, "/etc/hosts").source().as_deref(), Some(hosts.as_path()));
        assert_eq!(options(mount_at(&spec, "/etc/hostname")), ["rbind", "rprivate", "rw"]);
        assert_eq!(destinations(&spec).iter().filter(|d| *d == "/etc/hosts").count(), 1);

        // A /dev bind drops every default under /dev.
        f.config.mounts =
            vec![CriMount { container_path: "/dev".into(), host_path: "/dev".into(), ..Default::default() }];
        let spec = f.spec().unwrap();
        assert!(!destinations(&spec).iter().any(|d| d.starts_with("/dev/")), "{:?}", destinations(&spec));
        assert_eq!(mount_at(&spec, "/dev").typ().as_deref(), Some("bind"));
    }

    #[test]
    fn bind_sources_must_exist_and_symlinks_resolve() {
        let mut f = Fixture::new();
        let data = f.bind("data");
        let link = f.dir.path().join("host/link");
        std::os::unix::fs::symlink(&data, &link).unwrap();
        f.config.mounts = vec![
            CriMount { container_path: "/a".into(), host_path: link.to_string_lossy().into(), ..Default::default() },
            CriMount { container_path: "/b".into(), host_path: "/no/such/dir".into(), ..Default::default() },
        ];
        let (field, message) = field_of(f.spec().unwrap_err());
        assert_eq!(field, "config.mounts");
        assert!(message.starts_with("mounts[1].host_path \"/no/such/dir\" does not exist"), "{message}");
        f.config.mounts.pop();
        assert_eq!(mount_at(&f.spec().unwrap(), "/a").source().as_deref(), Some(Path::new(&data)));
        f.config.mounts[0].container_path = "relative".into();
        assert!(field_of(f.spec().unwrap_err()).1.contains("mounts[0].container_path"));
    }

    #[test]
    fn propagation_and_recursive_read_only() {
        let mut f = Fixture::new();
        let shared = f.bind("shared");
        let slave = f.bind("slave");
        let private = f.bind("private");
        f.host.mountinfo = std::cell::OnceCell::from(format!(
            "1 0 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n\
             2 1 0:40 / {shared} rw shared:7 - tmpfs tmpfs rw\n\
             3 1 0:41 / {slave} rw master:9 - tmpfs tmpfs rw\n\
             4 1 0:42 / {private} rw - tmpfs tmpfs rw\n"
        ));
        let m = |path: &str, host: &str, propagation: MountPropagation| CriMount {
            container_path: path.into(),
            host_path: host.into(),
            propagation: propagation as i32,
            ..Default::default()
        };
        f.config.mounts = vec![m("/slave", &slave, MountPropagation::PropagationHostToContainer)];
        let spec = f.spec().unwrap();
        assert_eq!(options(mount_at(&spec, "/slave")), ["rbind", "rslave", "rw"]);
        assert_eq!(linux(&spec).rootfs_propagation().as_deref(), Some("rslave"));
        f.config.mounts.push(m("/shared", &shared, MountPropagation::PropagationBidirectional));
        let spec = f.spec().unwrap();
        assert_eq!(options(mount_at(&spec, "/shared")), ["rbind", "rshared", "rw"]);
        assert_eq!(linux(&spec).rootfs_propagation().as_deref(), Some("rshared"));
        // Bidirectional needs a shared source; host-to-container a shared or slave one.
        f.config.mounts = vec![m("/x", &slave, MountPropagation::PropagationBidirectional)];
        assert!(field_of(f.spec().unwrap_err()).1.contains("not a shared mount"));
        f.config.mounts = vec![m("/x", &private, MountPropagation::PropagationHostToContainer)];
        assert!(field_of(f.spec().unwrap_err()).1.contains("mounts[0]"));

        // rro: read-only and private only.
        f.config.mounts = vec![m("/ro", &private, MountPropagation::PropagationPrivate)];
        f.config.mounts[0].recursive_read_only = true;
        assert!(field_of(f.spec().unwrap_err()).1.contains("conflicts with a read-write mount"));
        f.config.mounts[0].readonly = true;
        assert_eq!(options(mount_at(&f.spec().unwrap(), "/ro")), ["rbind", "rprivate", "rro"]);
        f.config.mounts[0].propagation = MountPropagation::PropagationHostToContainer as i32;
        f.config.mounts[0].host_path = slave;
        assert!(field_of(f.spec().unwrap_err()).1.contains("needs PROPAGATION_PRIVATE"));
    }

    #[test]
    fn devices_are_stated_on_the_host() {
        let mut f = Fixture::new();
        f.config.devices = vec![Device {
            container_path: "/dev/mynull".into(),
            host_path: "/dev/null".into(),
            permissions: "rw".into(),
        }];
        let spec = f.spec().unwrap();
        let l = linux(&spec);
        let d = &l.devices().as_ref().unwrap()[0];
        assert_eq!(
            (d.path().as_path(), d.typ(), d.major(), d.minor()),
            (Path::new("/dev/mynull"), LinuxDeviceType::C, 1, 3)
        );
        assert_eq!(d.file_mode(), Some(0o666));
        let rules = l.resources().as_ref().unwrap().devices().clone().unwrap();
        assert_eq!(rules.len(), 2);
        assert!(!rules[0].allow());
        assert_eq!(
            (rules[1].allow(), rules[1].typ(), rules[1].major(), rules[1].minor(), rules[1].access().as_deref()),
            (true, Some(LinuxDeviceType::C), Some(1), Some(3), Some("rw"))
        );
        f.config.devices[0].host_path = "/dev/no-such-device".into();
        let (field, message) = field_of(f.spec().unwrap_err());
        assert_eq!(field, "config.devices");
        assert!(message.starts_with("devices[0].host_path"), "{message}");
        f.config.devices[0].host_path = f.rootfs().join("etc/passwd").to_string_lossy().into();
        assert!(field_of(f.spec().unwrap_err()).1.contains("not a device node"));
        f.config.devices[0].host_path = "/dev/null".into();
        f.config.devices[0].permissions = "rwx".into();
        assert!(field_of(f.spec().unwrap_err()).1.contains("devices[0].permissions"));
    }

    #[test]
    fn resources_map_and_are_checked() {
        let mut f = Fixture::new();
        *f.resources() = LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 256 << 20,
            oom_score_adj: 999,
            cpuset_cpus: "0-1,3".into(),
            cpuset_mems: "0".into(),
            hugepage_limits: vec![HugepageLimit { page_size: "2MB".into(), limit: 4 << 20 }],
            unified: [("memory.high".to_string(), "200M".to_string())].into(),
            ..Default::default()
        };
        let spec = f.spec().unwrap();
        assert_eq!(process(&spec).oom_score_adj(), Some(999));
        let r = linux(&spec).resources().clone().unwrap();
        let cpu = r.cpu().clone().unwrap();
        assert_eq!((cpu.period(), cpu.quota(), cpu.shares()), (Some(100_000), Some(50_000), Some(512)));
        assert_eq!((cpu.cpus().as_deref(), cpu.mems().as_deref()), (Some("0-1,3"), Some("0")));
        let memory = r.memory().unwrap();
        assert_eq!((memory.limit(), memory.swap()), (Some(256 << 20), Some(256 << 20)), "swap = limit");
        let huge = r.hugepage_limits().clone().unwrap();
        assert_eq!((huge[0].page_size().as_str(), huge[0].limit()), ("2MB", 4 << 20));
        assert_eq!(r.unified().as_ref().unwrap()["memory.high"], "200M");

        f.host.swap = false;
        f.host.hugetlb = false;
        let r = linux(&f.spec().unwrap()).resources().clone().unwrap();
        assert_eq!(r.memory().unwrap().swap(), None, "no swap controller: no swap limit");
        assert!(r.hugepage_limits().is_none(), "no hugetlb controller: skipped");
        f.resources().memory_swap_limit_in_bytes = 1 << 30;
        f.host.swap = true;
        assert_eq!(linux(&f.spec().unwrap()).resources().clone().unwrap().memory().unwrap().swap(), Some(1 << 30));

        type Breaking = fn(&mut LinuxContainerResources);
        let bad: [(Breaking, &str); 6] = [
            (|r| r.cpu_shares = -2, "config.linux.resources.cpu_shares"),
            (|r| r.cpu_quota = -5, "config.linux.resources.cpu_quota"),
            (|r| r.memory_limit_in_bytes = -1, "config.linux.resources.memory_limit_in_bytes"),
            (|r| r.cpuset_cpus = "3-1".into(), "config.linux.resources.cpuset_cpus"),
            (|r| r.cpuset_mems = "0,,1".into(), "config.linux.resources.cpuset_mems"),
            (|r| r.oom_score_adj = 1001, "config.linux.resources.oom_score_adj"),
        ];
        for (breaking, want) in bad {
            let mut f = Fixture::new();
            breaking(f.resources());
            assert_eq!(field_of(f.spec().unwrap_err()).0, want);
        }
    }

    #[test]
    fn runtime_default_seccomp_depends_on_capabilities() {
        let mut f = Fixture::new();
        f.sc().seccomp =
            Some(SecurityProfile { profile_type: ProfileType::RuntimeDefault as i32, ..Default::default() });
        let spec = f.spec().unwrap();
        let profile = linux(&spec).seccomp().clone().unwrap();
        assert_eq!(profile.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert!(!syscall_rules(&profile, "read").is_empty());
        assert!(syscall_rules(&profile, "io_uring_setup").is_empty(), "io_uring refused since containerd 2.0");
        assert!(syscall_rules(&profile, "mount").is_empty());
        assert!(!syscall_rules(&profile, "chroot").is_empty(), "CAP_SYS_CHROOT is a default");
        let clone = syscall_rules(&profile, "clone");
        assert_eq!(clone.len(), 1);
        let arg = clone[0].args().as_ref().unwrap()[0];
        assert_eq!(
            (arg.op(), arg.value(), arg.value_two()),
            (LinuxSeccompOperator::ScmpCmpMaskedEq, 0x7e02_0000, Some(0))
        );
        let clone3 = syscall_rules(&profile, "clone3");
        assert_eq!((clone3[0].action(), clone3[0].errno_ret()), (LinuxSeccompAction::ScmpActErrno, Some(38)));
        assert_eq!(syscall_rules(&profile, "personality").len(), 5);
        if cfg!(target_arch = "x86_64") {
            assert!(!syscall_rules(&profile, "arch_prctl").is_empty());
            assert_eq!(profile.architectures().as_ref().unwrap().len(), 3);
        }

        f.sc().capabilities = Some(CriCapability { add_capabilities: vec!["SYS_ADMIN".into()], ..Default::default() });
        let profile = linux(&f.spec().unwrap()).seccomp().clone().unwrap();
        assert!(!syscall_rules(&profile, "mount").is_empty());
        assert!(syscall_rules(&profile, "clone").iter().all(|r| r.args().as_ref().is_none_or(|a| a.is_empty())));
        assert!(syscall_rules(&profile, "clone3").iter().all(|r| r.action() == LinuxSeccompAction::ScmpActAllow));
    }

    #[test]
    #[allow(deprecated)]
    fn seccomp_profiles_by_field_and_by_deprecated_path() {
        let mut f = Fixture::new();
        let profile_path = f.dir.path().join("profile.json");
        std::fs::write(
            &profile_path,
            r#"{"defaultAction":"SCMP_ACT_LOG","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#,
        )
        .unwrap();
        let local = |r: &str| SecurityProfile { profile_type: ProfileType::Localhost as i32, localhost_ref: r.into() };
        f.sc().seccomp = Some(local(&profile_path.to_string_lossy()));
        let profile = linux(&f.spec().unwrap()).seccomp().clone().unwrap();
        assert_eq!(profile.default_action(), LinuxSeccompAction::ScmpActLog);
        f.sc().seccomp = Some(local("/no/such/profile.json"));
        let (field, message) = field_of(f.spec().unwrap_err());
        assert_eq!(field, "config.linux.security_context.seccomp.localhost_ref");
        assert!(message.contains("/no/such/profile.json"), "{message}");
        f.sc().seccomp = Some(local("profile.json"));
        assert!(field_of(f.spec().unwrap_err()).1.contains("not an absolute path"));
        f.sc().seccomp = Some(SecurityProfile { profile_type: ProfileType::Unconfined as i32, ..Default::default() });
        assert!(linux(&f.spec().unwrap()).seccomp().is_none());
        f.sc().seccomp =
            Some(SecurityProfile { profile_type: ProfileType::RuntimeDefault as i32, localhost_ref: "/x".into() });
        assert_eq!(field_of(f.spec().unwrap_err()).0, "config.linux.security_context.seccomp.localhost_ref");

        f.sc().seccomp = None;
        for (path, confined) in
            [("runtime/default", true), ("docker/default", true), ("unconfined", false), ("", false)]
        {
            f.sc().seccomp_profile_path = path.into();
            assert_eq!(linux(&f.spec().unwrap()).seccomp().is_some(), confined, "{path:?}");
        }
        f.sc().seccomp_profile_path = format!("localhost/{}", profile_path.display());
        assert_eq!(
            linux(&f.spec().unwrap()).seccomp().clone().unwrap().default_action(),
            LinuxSeccompAction::ScmpActLog
        );
        f.sc().seccomp_profile_path = "localhost//missing.json".into();
        let (field, message) = field_of(f.spec().unwrap_err());
        assert_eq!(
            (field, message.contains("/missing.json")),
            ("config.linux.security_context.seccomp_profile_path", true)
        );
        f.sc().seccomp_profile_path = "strict".into();
        assert_eq!(field_of(f.spec().unwrap_err()).0, "config.linux.security_context.seccomp_profile_path");
    }

    #[test]
    fn masked_and_readonly_paths_from_the_request() {
        let mut f = Fixture::new();
        f.sc().masked_paths = vec!["/proc/kcore".into()];
        f.sc().readonly_paths = vec!["/proc/sys".into()];
        f.sc().no_new_privs = true;
        let spec = f.spec().unwrap();
        assert_eq!(linux(&spec).masked_paths().as_ref().unwrap(), &["/proc/kcore"]);
        assert_eq!(linux(&spec).readonly_paths().as_ref().unwrap(), &["/proc/sys"]);
        assert_eq!(process(&spec).no_new_privileges(), Some(true));
    }

    #[test]
    fn sysctls_come_from_the_pod() {
        let mut f = Fixture::new();
        f.pod.linux = Some(LinuxPodSandboxConfig {
            sysctls: [("net.ipv4.ip_unprivileged_port_start".to_string(), "0".to_string())].into(),
            ..Default::default()
        });
        let spec = f.spec().unwrap();
        assert_eq!(linux(&spec).sysctl().as_ref().unwrap()["net.ipv4.ip_unprivileged_port_start"], "0");
        f.namespaces.network = Ns::Host;
        assert_eq!(field_of(f.spec().unwrap_err()).0, "sandbox_config.linux.sysctls");
    }

    #[test]
    fn annotations_are_the_requests_then_containerds() {
        let mut f = Fixture::new();
        f.config.annotations =
            [("team".to_string(), "web".to_string()), (ANNOTATION_CONTAINER_TYPE.to_string(), "spoofed".to_string())]
                .into();
        let spec = f.spec().unwrap();
        let a = spec.annotations().as_ref().unwrap();
        assert_eq!(a["team"], "web");
        assert_eq!(a[ANNOTATION_CONTAINER_TYPE], "container");
        assert_eq!(a[ANNOTATION_CONTAINER_NAME], "app");
        assert_eq!(a[ANNOTATION_IMAGE_NAME], "docker.io/library/app:1");
        assert_eq!(a[ANNOTATION_SANDBOX_NAME], "web");
        assert_eq!(a[ANNOTATION_SANDBOX_NAMESPACE], "default");
        assert_eq!(a[ANNOTATION_SANDBOX_UID], "uid-1");
        f.config.image.as_mut().unwrap().user_specified_image = "app:1".into();
        assert_eq!(f.spec().unwrap().annotations().as_ref().unwrap()[ANNOTATION_IMAGE_NAME], "app:1");
        f.config.metadata = None;
        assert_eq!(field_of(f.spec().unwrap_err()).0, "config.metadata");
    }

    #[test]
    fn stop_signals_by_name_or_number() {
        let image = |s: Option<&str>| RunConfig { stop_signal: s.map(str::to_owned), ..Default::default() };
        assert_eq!(stop_signal(&image(None)).unwrap(), 15);
        assert_eq!(stop_signal(&image(Some("SIGKILL"))).unwrap(), 9);
        assert_eq!(stop_signal(&image(Some("quit"))).unwrap(), 3);
        assert_eq!(stop_signal(&image(Some("10"))).unwrap(), 10);
        assert_eq!(stop_signal(&image(Some("SIGRTMIN+2"))).unwrap(), nix::libc::SIGRTMIN() + 2);
        assert_eq!(stop_signal(&image(Some("RTMAX"))).unwrap(), nix::libc::SIGRTMAX());
        for bad in ["SIGNOPE", "0", "99", "RTMIN+16"] {
            let (field, message) = field_of(stop_signal(&image(Some(bad))).unwrap_err());
            assert_eq!(field, "image.StopSignal");
            assert!(message.contains(bad), "{message}");
        }
    }

    #[test]
    fn clean_matches_go() {
        for (raw, want) in
            [("/", "/"), ("/a/../b/./c/", "/b/c"), ("/..", "/"), ("a//b", "a/b"), ("", "."), ("../x", "../x")]
        {
            assert_eq!(clean(raw), want, "{raw}");
        }
    }
}
