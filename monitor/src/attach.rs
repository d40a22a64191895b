//! Attach sessions (`proto::monitor::attach`): each attacher is a
//! non-blocking connection with a bounded queue of output frames owed to it
//! and a decoder of the frames it sends; a container's stdin is a
//! non-blocking writer with a bounded buffer of bytes owed to it. The
//! server's poll loop decides when each is read or written.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use bulkhead_proto::monitor::attach::{self, Decoder};

/// The most output an attacher may be owed; one further behind is dropped.
pub(crate) const MAX_QUEUE: usize = 4 << 20;

/// How much is read from an attacher at once.
const READ_CHUNK: usize = 32 * 1024;

/// Capacity an emptied buffer keeps; more is given back.
const KEEP: usize = 64 * 1024;

/// One attach connection.
pub(crate) struct Attacher {
    conn: UnixStream,
    /// It asked for stdin, the container has one, and this session has not
    /// ended its stdin yet.
    pub(crate) stdin: bool,
    pub(crate) decoder: Decoder,
    /// Encoded frames owed to it, from `sent` on.
    out: Vec<u8>,
    sent: usize,
    /// Set once the container is done: the rest is flushed, then the
    /// connection closed (at this instant at the latest).
    pub(crate) closing: Option<Instant>,
    /// Writing to it failed (it hung up): it gets no more output, but what
    /// it sent is still read, to its end of file.
    deaf: bool,
}

impl Attacher {
    /// An attacher on `conn` (made non-blocking); `early` is what it sent
    /// after its request line that was already read.
    pub(crate) fn new(conn: UnixStream, stdin: bool, early: &[u8]) -> std::io::Result<Attacher> {
        conn.set_read_timeout(None)?;
        conn.set_nonblocking(true)?;
        let mut decoder = Decoder::new();
        decoder.feed(early);
        Ok(Attacher { conn, stdin, decoder, out: Vec::new(), sent: 0, closing: None, deaf: false })
    }

    pub(crate) fn conn(&self) -> &UnixStream {
        &self.conn
    }

    /// Bytes owed and not yet written.
    pub(crate) fn queued(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Queues `data` as frames of `kind`; false if that would put it more
    /// than [`MAX_QUEUE`] behind even after writing what the socket takes now.
    pub(crate) fn enqueue(&mut self, kind: u8, data: &[u8]) -> bool {
        if self.deaf {
            return true;
        }
        let need = data.len() + attach::HEADER_LEN;
        if self.queued() + need > MAX_QUEUE {
            self.flush();
            if self.deaf {
                return true;
            }
            if self.queued() + need > MAX_QUEUE {
                return false;
            }
        }
        if self.sent > 0 && self.sent >= self.out.len() / 2 {
            self.out.drain(..self.sent);
            self.sent = 0;
        }
        attach::encode_into(kind, data, &mut self.out);
        true
    }

    /// Writes what the socket takes now. If that fails (it hung up), what
    /// it is owed is dropped and it gets no more: it is then dropped once
    /// its input ends (or at once if its container is done).
    pub(crate) fn flush(&mut self) {
        while self.sent < self.out.len() {
            match self.conn.write(&self.out[self.sent..]) {
                Ok(n) if n > 0 => self.sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                _ => {
                    self.deaf = true;
                    break;
                }
            }
        }
        self.out.clear();
        self.out.shrink_to(KEEP);
        self.sent = 0;
    }

    /// Reads one chunk into the decoder; false once it has hung up (or its
    /// connection failed).
    pub(crate) fn read(&mut self) -> bool {
        let mut buf = [0u8; READ_CHUNK];
        loop {
            return match self.conn.read(&mut buf) {
                Ok(0) => false,
                Ok(n) => {
                    self.decoder.feed(&buf[..n]);
                    true
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => true,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => false,
            };
        }
    }
}

impl Drop for Attacher {
    fn drop(&mut self) {
        discard_input(&self.conn);
    }
}

/// Reads and drops what the peer sent and nobody read (bounded), so that
/// it sees end of file at our close: Linux gives the peer of a unix
/// socket closed with unread data ECONNRESET instead. `conn` must be
/// non-blocking.
pub(crate) fn discard_input(mut conn: &UnixStream) {
    let mut buf = [0u8; READ_CHUNK];
    for _ in 0..32 {
        match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// A container's stdin as the monitor writes it: the pipe's write end, or
/// a second descriptor of the terminal's master; non-blocking.
pub(crate) struct Stdin {
    file: File,
    /// Bytes owed to it, in order.
    pub(crate) pending: Vec<u8>,
}

impl Stdin {
    pub(crate) fn new(file: File) -> Stdin {
        Stdin { file, pending: Vec::new() }
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Writes what the fd takes now. Data the container can no longer read
    /// (EPIPE: it exited; or another error, returned) is dropped.
    pub(crate) fn flush(&mut self) -> std::io::Result<()> {
        let mut written = 0;
        let result = loop {
            if written == self.pending.len() {
                break Ok(());
            }
            match self.file.write(&self.pending[written..]) {
                Ok(0) => break Ok(()),
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    written = self.pending.len();
                    break if e.kind() == ErrorKind::BrokenPipe { Ok(()) } else { Err(e) };
                }
            }
        };
        self.pending.drain(..written);
        if self.pending.is_empty() {
            self.pending.shrink_to(KEEP);
        }
        result
    }
}
