//! The new mount API (fsopen, fsconfig, fsmount, move_mount), which nix
//! does not wrap: it lets an overlay take its lower layers one by one
//! (`lowerdir+`, Linux 6.8+), so images with hundreds of layers mount even
//! though their classic option string would exceed a page. Each unsafe
//! block is one syscall.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::libc;

const FSOPEN_CLOEXEC: libc::c_uint = 0x1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 0x1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

fn cstring(s: &str) -> Result<CString, Errno> {
    CString::new(s).map_err(|_| Errno::EINVAL)
}

/// fsopen(2): a filesystem context for `fstype`.
pub(crate) fn fsopen(fstype: &str) -> Result<OwnedFd, Errno> {
    let name = cstring(fstype)?;
    // SAFETY: a valid C string and flags; returns a new descriptor or -1.
    let fd = Errno::result(unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC) })?;
    // SAFETY: the kernel returned a descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// fsconfig(2) FSCONFIG_SET_STRING `key=value`.
pub(crate) fn fsconfig_string(fs: &OwnedFd, key: &str, value: &str) -> Result<(), Errno> {
    let (key, value) = (cstring(key)?, cstring(value)?);
    // SAFETY: valid descriptor and C strings.
    Errno::result(unsafe {
        libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), FSCONFIG_SET_STRING, key.as_ptr(), value.as_ptr(), 0)
    })
    .map(drop)
}

/// fsconfig(2) FSCONFIG_CMD_CREATE: make the superblock.
pub(crate) fn fsconfig_create(fs: &OwnedFd) -> Result<(), Errno> {
    // SAFETY: a valid descriptor; the command takes no pointers.
    Errno::result(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    })
    .map(drop)
}

/// fsmount(2) then move_mount(2) onto `target`.
pub(crate) fn fsmount_at(fs: &OwnedFd, target: &Path) -> Result<(), Errno> {
    // SAFETY: a valid descriptor and flags.
    let mnt = Errno::result(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) })?;
    // SAFETY: the kernel returned a descriptor that nothing else owns.
    let mnt = unsafe { OwnedFd::from_raw_fd(mnt as i32) };
    let target = cstring(&target.to_string_lossy())?;
    let empty = c"";
    // SAFETY: valid descriptor and C strings.
    Errno::result(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
    .map(drop)
}
