//! Terminals, with runc's console-socket protocol: when `process.terminal`
//! is set, the container's process gets a new pseudo-terminal from the
//! container's own devpts as its stdio and controlling terminal, and the
//! master end is sent over the unix socket the caller named
//! (`--console-socket`), as an SCM_RIGHTS message, to whoever proxies it
//! (containerd's shim, the pod monitor).

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use nix::sys::stat::Mode;
use oci_spec::runtime::Process;

use crate::error::sys;

/// Makes `/dev/console` the container's terminal (runtime-spec: bind the
/// pty slave there when `process.terminal` is set). Called after pivot_root.
pub(crate) fn bind_dev_console(slave: &str) -> Result<()> {
    let console = "/dev/console";
    match std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(console) {
        Ok(_) => {}
        Err(source) => return Err(Error::Read { path: console.into(), source }),
    }
    nix::mount::mount(Some(slave), console, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>)
        .map_err(sys("bind the terminal on /dev/console", console))
}
use crate::{Error, Result};

/// Connects to the console socket; done before pivot_root, while its path
/// is the host's.
pub(crate) fn connect(path: &Path) -> Result<UnixStream> {
    UnixStream::connect(path).map_err(|source| Error::Read { path: path.to_owned(), source })
}

/// Makes a pty in the container's devpts, sends its master over `socket`,
/// and makes the slave the caller's stdio and controlling terminal; returns
/// the slave's path.
pub(crate) fn attach(socket: UnixStream, process: &Process) -> Result<String> {
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(sys("open /dev/ptmx", "/dev/ptmx"))?;
    nix::pty::grantpt(&master).map_err(sys("grantpt", "/dev/ptmx"))?;
    nix::pty::unlockpt(&master).map_err(sys("unlockpt", "/dev/ptmx"))?;
    let name = nix::pty::ptsname_r(&master).map_err(sys("ptsname", "/dev/ptmx"))?;
    let slave: OwnedFd =
        nix::fcntl::open(name.as_str(), OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(sys("open pty slave", &name))?;
    if let Some(size) = process.console_size() {
        let ws =
            nix::pty::Winsize { ws_row: size.height() as u16, ws_col: size.width() as u16, ws_xpixel: 0, ws_ypixel: 0 };
        crate::sys::set_window_size(&slave, &ws).map_err(sys("set terminal size", &name))?;
    }
    // The slave belongs to the container's user, as a login terminal would.
    let (uid, gid) = (process.user().uid(), process.user().gid());
    nix::unistd::fchown(&slave, Some(nix::unistd::Uid::from_raw(uid)), Some(nix::unistd::Gid::from_raw(gid)))
        .map_err(sys("chown pty slave", &name))?;
    let fds = [master.as_raw_fd()];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &[IoSlice::new(name.as_bytes())],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(sys("send the pty master over the console socket", &name))?;
    drop(master);
    drop(socket);
    nix::unistd::setsid().map_err(sys("setsid", &name))?;
    crate::sys::set_controlling_terminal(&slave).map_err(sys("make the pty the controlling terminal", &name))?;
    nix::unistd::dup2_stdin(&slave).map_err(sys("dup pty onto stdin", &name))?;
    nix::unistd::dup2_stdout(&slave).map_err(sys("dup pty onto stdout", &name))?;
    nix::unistd::dup2_stderr(&slave).map_err(sys("dup pty onto stderr", &name))?;
    Ok(name)
}

/// The receiving end of the console-socket protocol, for a caller that
/// proxies the terminal (the pod monitor): takes the pty master from one
/// connection accepted on `listener`.
pub fn receive_master(listener: &std::os::unix::net::UnixListener) -> Result<OwnedFd> {
    let (stream, _) = listener.accept().map_err(|source| Error::Read { path: "console socket".into(), source })?;
    receive_master_from(&stream)
}

/// Takes the pty master from `stream`, a connection already accepted on a
/// console socket (an async caller accepts it itself).
pub fn receive_master_from(stream: &UnixStream) -> Result<OwnedFd> {
    use std::os::fd::{FromRawFd, RawFd};

    use nix::sys::socket::{ControlMessageOwned, recvmsg};
    let mut buf = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty())
        .map_err(sys("receive the pty master from", "console socket"))?;
    let fd = msg
        .cmsgs()
        .map_err(sys("read the control message from", "console socket"))?
        .find_map(|c| match c {
            ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
            _ => None,
        })
        .ok_or_else(|| Error::Read {
            path: "console socket".into(),
            source: std::io::Error::other("no descriptor in the message"),
        })?;
    // SAFETY: the kernel installed `fd` in this process for this message alone; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets the size of the terminal whose master (or slave) is `fd`, as a
/// client's resize asks.
pub fn set_size(fd: &impl AsRawFd, width: u16, height: u16) -> Result<()> {
    let ws = nix::pty::Winsize { ws_row: height, ws_col: width, ws_xpixel: 0, ws_ypixel: 0 };
    crate::sys::set_window_size(fd, &ws).map_err(sys("set terminal size", "pty"))
}
