//! A stream: a pair of byte pipes inside a session, with the headers that
//! opened it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::session::Handle;

/// One stream of a session: [`AsyncRead`] gives what the peer sends
/// (end of file after its FIN or RST_STREAM), [`AsyncWrite`] sends.
///
/// `poll_write` takes what fits in the stream's send buffer and waits when
/// it is full; `poll_flush` waits until the buffer has gone to the
/// connection's writer; `poll_shutdown` sends FIN (an empty DATA frame
/// with FLAG_FIN, after the buffered data) and waits until it has gone:
/// a half-close, reading goes on. Dropping the stream half-closes the same
/// way and discards whatever else the peer sends; [`Stream::reset`]
/// aborts both directions instead.
pub struct Stream {
    handle: Arc<Handle>,
    id: u32,
    headers: Arc<[(String, String)]>,
    /// Whether dropping this releases the read and write sides (not after
    /// [`Stream::split`]).
    owns: bool,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("id", &self.id).field("headers", &self.headers).finish_non_exhaustive()
    }
}

fn find<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

impl Stream {
    pub(crate) fn new(handle: Arc<Handle>, id: u32, headers: Vec<(String, String)>) -> Stream {
        Stream { handle, id, headers: headers.into(), owns: true }
    }

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
        find(&self.headers, name)
    }

    /// Aborts the stream: RST_STREAM CANCEL, buffered data in both
    /// directions dropped. Reads return end of file, writes fail.
    pub fn reset(&self) {
        self.handle.inner.reset(self.id);
    }

    /// Splits the stream into halves that can move to different tasks.
    /// Dropping the write half half-closes (FIN); dropping the read half
    /// discards what the peer sends from then on.
    pub fn split(mut self) -> (ReadHalf, WriteHalf) {
        self.owns = false;
        let read = ReadHalf { handle: self.handle.clone(), id: self.id, headers: self.headers.clone() };
        let write = WriteHalf { handle: self.handle.clone(), id: self.id, headers: self.headers.clone() };
        (read, write)
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

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        self.handle.inner.poll_read(self.id, cx, buf)
    }
}

impl AsyncWrite for Stream {
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

/// The read half of a [`Stream`].
pub struct ReadHalf {
    handle: Arc<Handle>,
    id: u32,
    headers: Arc<[(String, String)]>,
}

impl std::fmt::Debug for ReadHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadHalf").field("id", &self.id).finish_non_exhaustive()
    }
}

impl ReadHalf {
    /// The stream id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The headers that opened the stream.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }

    /// Aborts the whole stream, see [`Stream::reset`].
    pub fn reset(&self) {
        self.handle.inner.reset(self.id);
    }
}

impl Drop for ReadHalf {
    fn drop(&mut self) {
        self.handle.inner.drop_read(self.id);
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        self.handle.inner.poll_read(self.id, cx, buf)
    }
}

/// The write half of a [`Stream`].
pub struct WriteHalf {
    handle: Arc<Handle>,
    id: u32,
    headers: Arc<[(String, String)]>,
}

impl std::fmt::Debug for WriteHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteHalf").field("id", &self.id).finish_non_exhaustive()
    }
}

impl WriteHalf {
    /// The stream id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The headers that opened the stream.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }

    /// Aborts the whole stream, see [`Stream::reset`].
    pub fn reset(&self) {
        self.handle.inner.reset(self.id);
    }
}

impl Drop for WriteHalf {
    fn drop(&mut self) {
        self.handle.inner.drop_write(self.id);
    }
}

impl AsyncWrite for WriteHalf {
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
