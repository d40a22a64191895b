//! A stream: a pair of byte pipes inside a session, with the headers that
//! opened it.

use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::session::Handle;

/// What every handle on a stream knows and can do, whole or split: its
/// id, its opening headers, and reset. [`Stream`], [`ReadHalf`] and
/// [`WriteHalf`] dereference to it.
pub struct StreamRef {
    handle: Arc<Handle>,
    id: u32,
    headers: Arc<[(String, String)]>,
}

impl StreamRef {
    /// The stream id: odd when the client opened it, even for the server.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The headers of the SYN_STREAM that opened the stream (lower-case
    /// names; a value that held NULs appears once per part).
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The first value of header `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Aborts the stream: RST_STREAM CANCEL, buffered data in both
    /// directions dropped. Reads return end of file, writes fail.
    pub fn reset(&self) {
        self.handle.inner.reset(self.id);
    }

    fn twin(&self) -> StreamRef {
        StreamRef { handle: self.handle.clone(), id: self.id, headers: self.headers.clone() }
    }
}

impl std::fmt::Debug for StreamRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("id", &self.id).field("headers", &self.headers).finish_non_exhaustive()
    }
}

/// One stream of a session: [`AsyncRead`] gives what the peer sends
/// (end of file after its FIN or RST_STREAM), [`AsyncWrite`] sends.
///
/// `poll_write` takes what fits in the stream's send buffer and waits when
/// it is full; `poll_flush` waits until the buffer has gone to the
/// connection's writer; `poll_shutdown` sends FIN (an empty DATA frame
/// with FLAG_FIN, after the buffered data) and waits until it has gone:
/// a half-close, reading goes on. Dropping the stream half-closes the same
/// way and discards whatever else the peer sends; [`StreamRef::reset`]
/// aborts both directions instead.
#[derive(Debug)]
pub struct Stream {
    inner: StreamRef,
    /// Whether dropping this releases the read and write sides (not after
    /// [`Stream::split`]).
    owns: bool,
}

/// The read half of a [`Stream`].
#[derive(Debug)]
pub struct ReadHalf(StreamRef);

/// The write half of a [`Stream`].
#[derive(Debug)]
pub struct WriteHalf(StreamRef);

impl Deref for Stream {
    type Target = StreamRef;
    fn deref(&self) -> &StreamRef {
        &self.inner
    }
}

impl Deref for ReadHalf {
    type Target = StreamRef;
    fn deref(&self) -> &StreamRef {
        &self.0
    }
}

impl Deref for WriteHalf {
    type Target = StreamRef;
    fn deref(&self) -> &StreamRef {
        &self.0
    }
}

impl Stream {
    pub(crate) fn new(handle: Arc<Handle>, id: u32, headers: Vec<(String, String)>) -> Stream {
        Stream { inner: StreamRef { handle, id, headers: headers.into() }, owns: true }
    }

    /// Splits the stream into halves that can move to different tasks.
    /// Dropping the write half half-closes (FIN); dropping the read half
    /// discards what the peer sends from then on.
    pub fn split(mut self) -> (ReadHalf, WriteHalf) {
        self.owns = false;
        (ReadHalf(self.inner.twin()), WriteHalf(self.inner.twin()))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.owns {
            self.handle.inner.drop_read(self.id);
            self.handle.inner.drop_write(self.id);
        }
    }
}

impl Drop for ReadHalf {
    fn drop(&mut self) {
        self.handle.inner.drop_read(self.id);
    }
}

impl Drop for WriteHalf {
    fn drop(&mut self) {
        self.handle.inner.drop_write(self.id);
    }
}

// A whole stream and its halves read and write the same way.
macro_rules! reads {
    ($($t:ty),*) => {$(
        impl AsyncRead for $t {
            fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
                self.handle.inner.poll_read(self.id, cx, buf)
            }
        }
    )*};
}

macro_rules! writes {
    ($($t:ty),*) => {$(
        impl AsyncWrite for $t {
            fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
                self.handle.inner.poll_write(self.id, cx, buf)
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
                self.handle.inner.poll_flush(self.id, cx)
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
                self.handle.inner.poll_shutdown(self.id, cx)
            }
        }
    )*};
}

reads!(Stream, ReadHalf);
writes!(Stream, WriteHalf);
