//! Thin wrappers over the syscalls that nix does not cover. Each is the one
//! place its `unsafe` lives.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::unistd::{ForkResult, Pid};

use nix::errno::Errno;
use nix::libc;

/// sethostname's sibling for the NIS domain name.
pub(crate) fn setdomainname(name: &str) -> Result<(), Errno> {
    let c = CString::new(name).map_err(|_| Errno::EINVAL)?;
    // SAFETY: the kernel reads `len` bytes from a valid C string we own.
    Errno::result(unsafe { libc::setdomainname(c.as_ptr(), name.len()) }).map(drop)
}

/// sched_setattr(2) on the calling thread.
pub(crate) fn sched_setattr(attr: &libc::sched_attr) -> Result<(), Errno> {
    // SAFETY: `attr` is a valid sched_attr whose `size` field says how much the kernel may read.
    Errno::result(unsafe { libc::syscall(libc::SYS_sched_setattr, 0, attr as *const libc::sched_attr, 0) }).map(drop)
}

/// ioprio_set(2) on the calling process.
pub(crate) fn ioprio_set(class: u32, level: u32) -> Result<(), Errno> {
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const IOPRIO_CLASS_SHIFT: u32 = 13;
    let prio = (class << IOPRIO_CLASS_SHIFT) | level;
    // SAFETY: ioprio_set takes integers only.
    Errno::result(unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, prio as libc::c_long) }).map(drop)
}

/// struct mount_attr of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

pub(crate) const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
pub(crate) const MOUNT_ATTR_NOSUID: u64 = 0x0000_0002;
pub(crate) const MOUNT_ATTR_NODEV: u64 = 0x0000_0004;
pub(crate) const MOUNT_ATTR_NOEXEC: u64 = 0x0000_0008;
pub(crate) const MOUNT_ATTR__ATIME: u64 = 0x0000_0070;
pub(crate) const MOUNT_ATTR_RELATIME: u64 = 0x0000_0000;
pub(crate) const MOUNT_ATTR_NOATIME: u64 = 0x0000_0010;
pub(crate) const MOUNT_ATTR_STRICTATIME: u64 = 0x0000_0020;
pub(crate) const MOUNT_ATTR_NODIRATIME: u64 = 0x0000_0080;
pub(crate) const MOUNT_ATTR_NOSYMFOLLOW: u64 = 0x0020_0000;

/// Sets and clears mount attributes on the mount at `fd` and every mount
/// below it (mount_setattr with AT_RECURSIVE; Linux 5.12+).
pub(crate) fn mount_setattr_recursive(fd: BorrowedFd<'_>, set: u64, clear: u64) -> Result<(), Errno> {
    let attr = MountAttr { attr_set: set, attr_clr: clear, propagation: 0, userns_fd: 0 };
    let empty = c"";
    // SAFETY: `fd` is an open descriptor, `empty` a valid C string, and `attr`
    // a valid mount_attr whose size is passed along.
    Errno::result(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(drop)
}

/// Whether the kernel has mount_setattr(2) (Linux 5.12+): a call on no
/// descriptor fails with EBADF where it exists, ENOSYS where it does not.
pub(crate) fn has_mount_setattr() -> bool {
    // SAFETY: mount_setattr with fd -1 and null pointers reads nothing; it fails at once.
    let result = Errno::result(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            -1,
            std::ptr::null::<libc::c_char>(),
            0,
            std::ptr::null::<MountAttr>(),
            0,
        )
    });
    result != Err(Errno::ENOSYS)
}

/// The kernel's struct sigaction for rt_sigaction(2) (not libc's).
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// Gives an exec'd program default signal dispositions and no blocked
/// signals: an ignored signal stays ignored across exec, and the Rust
/// runtime (SIGPIPE) or whoever started us may have ignored some. The raw
/// syscall also reaches the signals glibc reserves for itself (32, 33).
pub(crate) fn reset_signals() {
    use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
    let default = KernelSigaction { handler: 0, flags: 0, restorer: 0, mask: 0 };
    for signo in 1..=libc::SIGRTMAX() {
        if signo == libc::SIGKILL || signo == libc::SIGSTOP {
            continue;
        }
        // SAFETY: installs SIG_DFL (no handler code runs) from a valid struct;
        // the kernel reads 8 bytes of mask, as passed.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signo,
                &default as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            )
        };
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// Marks every descriptor from `first` up close-on-exec, so nothing the
/// runtime's caller left open leaks into the container (runc does the same).
pub(crate) fn close_fds_on_exec_from(first: i32) {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else { return };
    let fds: Vec<i32> =
        entries.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).filter(|fd| *fd >= first).collect();
    for fd in fds {
        // SAFETY: F_SETFD with FD_CLOEXEC only changes a flag; closed or
        // invalid descriptors just fail with EBADF.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

/// Joins a new session keyring named `name`, so containers do not share the
/// caller's keys. Kernels without keyrings (ENOSYS) or refusing it are fine.
pub(crate) fn join_session_keyring(name: &str) {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    let Ok(name) = CString::new(name) else { return };
    // SAFETY: keyctl reads a valid C string we own.
    unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) };
}

/// TIOCSWINSZ on a terminal.
pub(crate) fn set_window_size(fd: &impl AsRawFd, size: &nix::pty::Winsize) -> Result<(), Errno> {
    // SAFETY: TIOCSWINSZ reads one struct winsize from a valid pointer.
    Errno::result(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, size as *const nix::pty::Winsize) }).map(drop)
}

/// TIOCSCTTY: make `fd` the controlling terminal of this session.
pub(crate) fn set_controlling_terminal(fd: &impl AsRawFd) -> Result<(), Errno> {
    // SAFETY: TIOCSCTTY takes an integer argument.
    Errno::result(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) }).map(drop)
}

/// bpf(2) with BPF_PROG_LOAD for a BPF_PROG_TYPE_CGROUP_DEVICE program.
pub(crate) fn bpf_load_cgroup_device(
    prog: &[crate::cgroups::devices_bpf::Insn],
) -> Result<std::os::fd::OwnedFd, Errno> {
    use std::os::fd::FromRawFd;
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
    #[repr(C)]
    #[derive(Default)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
        prog_ifindex: u32,
        expected_attach_type: u32,
    }
    let license = c"Apache";
    let mut name = [0u8; 16];
    name[..8].copy_from_slice(b"bulkhead");
    let attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        ..ProgLoad::default()
    };
    // SAFETY: `attr` is a valid bpf_attr prefix for BPF_PROG_LOAD whose pointers
    // (instructions, license) outlive the call; its size is passed along.
    let fd = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, &attr as *const ProgLoad, std::mem::size_of::<ProgLoad>())
    };
    let fd = Errno::result(fd)?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// bpf(2) with BPF_PROG_ATTACH of a device program to a cgroup, replacing
/// the single program attached before (no BPF_F_ALLOW_MULTI).
pub(crate) fn bpf_attach_cgroup_device(cgroup_fd: i32, prog_fd: i32) -> Result<(), Errno> {
    const BPF_PROG_ATTACH: libc::c_long = 8;
    const BPF_CGROUP_DEVICE: u32 = 6;
    #[repr(C)]
    struct Attach {
        target_fd: u32,
        attach_bpf_fd: u32,
        attach_type: u32,
        attach_flags: u32,
        replace_bpf_fd: u32,
    }
    let attr = Attach {
        target_fd: cgroup_fd as u32,
        attach_bpf_fd: prog_fd as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: 0,
        replace_bpf_fd: 0,
    };
    // SAFETY: `attr` is a valid bpf_attr prefix for BPF_PROG_ATTACH; its size is passed along.
    Errno::result(unsafe {
        libc::syscall(libc::SYS_bpf, BPF_PROG_ATTACH, &attr as *const Attach, std::mem::size_of::<Attach>())
    })
    .map(drop)
}

/// dup2(2) on raw descriptors: `target` becomes a copy of `fd`, without
/// close-on-exec. A no-op when they are the same descriptor.
pub(crate) fn dup2_raw(fd: i32, target: i32) -> Result<(), Errno> {
    if fd == target {
        // dup2 would keep close-on-exec: clear it instead.
        // SAFETY: fcntl(2) on a descriptor number; the kernel checks it.
        return Errno::result(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }).map(drop);
    }
    // SAFETY: dup2(2) on descriptor numbers; the kernel checks both.
    Errno::result(unsafe { libc::dup2(fd, target) }).map(drop)
}

/// struct clone_args of clone3(2), up to `cgroup` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// fork(2) through clone3 (Linux 5.7+; no new stack, so the child returns
/// here as fork's does), with `namespaces` (CLONE_NEW* flags) for the
/// child, which starts in the cgroup v2 directory `cgroup` when given
/// (CLONE_INTO_CGROUP). Being born there, the child is never migrated: a
/// migration through `cgroup.procs` write-locks the kernel's threadgroup
/// semaphore and waits out an RCU grace period, milliseconds per container.
///
/// # Safety
/// As for fork(2): the caller must be single-threaded, for the child runs
/// on with a copy of its memory, locks included. Unlike glibc's fork, this
/// does not update glibc's cached thread id in the child; glibc reads it
/// only for recursive and error-checking pthread mutexes, whose owner stays
/// consistent in a single-threaded child.
pub(crate) unsafe fn clone3_fork(namespaces: u64, cgroup: Option<BorrowedFd<'_>>) -> Result<ForkResult, Errno> {
    let args = CloneArgs {
        flags: namespaces | cgroup.map_or(0, |_| CLONE_INTO_CGROUP),
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.map_or(0, |fd| fd.as_raw_fd() as u64),
        ..CloneArgs::default()
    };
    // SAFETY: `args` is a valid clone_args whose size is passed along; with no
    // stack the child continues on a copy of this one, as after fork(2), and
    // the caller guarantees that is sound (single-threaded).
    let pid = Errno::result(unsafe {
        libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, std::mem::size_of::<CloneArgs>())
    })?;
    Ok(match pid {
        0 => ForkResult::Child,
        pid => ForkResult::Parent { child: Pid::from_raw(pid as i32) },
    })
}
