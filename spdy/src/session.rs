//! The public face of a session: [`Session`] to open streams, ping and
//! close; [`Incoming`] for the streams the peer opens.

use std::future::poll_fn;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};

use crate::driver;
use crate::error::Error;
use crate::frame::GoAwayStatus;
use crate::headers::{decode_block, encode_block};
use crate::state::{Inner, Stats};
use crate::stream::Stream;

/// Which end of the connection this is. Clients open odd-numbered streams
/// and send odd ping ids; servers even.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The side that made the connection (kubectl, crictl, the e2e client).
    Client,
    /// The side that accepted it (the CRI streaming server).
    Server,
}

/// What every user-facing object holds. When the last one is dropped
/// nobody can use the session any more, and it closes itself (GOAWAY,
/// after what was written).
pub(crate) struct Handle {
    pub(crate) inner: Arc<Inner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.inner.close(GoAwayStatus::OK, true, Error::Closed);
    }
}

/// A SPDY/3.1 session over one connection. Cheap to clone; all clones are
/// the same session. The session lives while any clone, its [`Incoming`]
/// or one of its [`Stream`]s does (or until it is closed or the peer ends
/// it).
#[derive(Clone)]
pub struct Session {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

impl Session {
    /// Starts a session on `io`, a connection already upgraded to SPDY/3.1,
    /// and spawns its reader and writer tasks on the current tokio runtime
    /// (so it must be called within one).
    pub fn new<T>(io: T, role: Role) -> (Session, Incoming)
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let inner = Arc::new(Inner::new(role));
        let (rd, wr) = tokio::io::split(io);
        let reader = tokio::spawn(driver::reader(inner.clone(), rd));
        inner.add_task(reader.abort_handle());
        let writer = tokio::spawn(driver::writer(inner.clone(), wr));
        inner.add_task(writer.abort_handle());
        let handle = Arc::new(Handle { inner });
        (Session { handle: handle.clone() }, Incoming { handle })
    }

    fn inner(&self) -> &Inner {
        &self.handle.inner
    }

    /// Opens a stream: sends SYN_STREAM with `headers` (names lower-cased,
    /// repeated names merged) and waits for the peer's SYN_REPLY. Fails if
    /// the peer resets the stream, went away, or the session ends first.
    /// Dropping the future before it resolves cancels the stream.
    pub async fn open(&self, headers: &[(&str, &str)]) -> Result<Stream, Error> {
        let block = encode_block(headers)?;
        // What the peer will see, in the form received headers take.
        let sent = decode_block(&block)?;
        let (id, reply) = self.inner().open(sent.clone())?;
        let mut guard = OpenGuard { inner: &self.handle.inner, id: Some(id) };
        let result = reply.await;
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(self.inner().end_reason().unwrap_or(Error::Closed)),
        };
        match result {
            Ok(()) => {
                guard.id = None;
                Ok(Stream::new(self.handle.clone(), id, sent))
            }
            Err(e) => Err(e),
        }
    }

    /// Sends PING and waits for the echo; returns the round-trip time.
    pub async fn ping(&self) -> Result<Duration, Error> {
        let start = Instant::now();
        let rx = self.inner().ping()?;
        match rx.await {
            Ok(()) => Ok(start.elapsed()),
            Err(_) => Err(self.inner().end_reason().unwrap_or(Error::Closed)),
        }
    }

    /// Ends the session: what streams already wrote is sent, then GOAWAY,
    /// then the connection's write side is shut down. New writes fail at
    /// once; every stream ends (reads not finished by the peer fail with
    /// `ConnectionAborted`). Resolves when the connection is done with.
    pub async fn close(&self) {
        self.inner().close(GoAwayStatus::OK, true, Error::Closed);
        self.closed().await;
    }

    /// Resolves when the session has ended: the peer closed the
    /// connection, GOAWAY was exchanged and no stream is left, an I/O or
    /// protocol error, or [`Session::close`].
    pub async fn closed(&self) {
        let mut rx = self.inner().ended_receiver();
        let _ = rx.wait_for(|ended| *ended).await;
    }

    /// Why the session ended, once it has.
    pub fn end_reason(&self) -> Option<Error> {
        self.inner().end_reason()
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.end_reason().is_some()
    }

    /// Ends the session once no frame has been read or written for
    /// `timeout`: its streams fail and the connection is dropped, as
    /// spdystream's `SetIdleTimeout` does for Kubernetes' streaming
    /// servers. Call it once per session.
    pub fn set_idle_timeout(&self, timeout: Duration) {
        let inner = self.handle.inner.clone();
        let watchdog = tokio::spawn(async move {
            inner.activity.idle_for(timeout).await;
            tracing::debug!(?timeout, "spdy: session idle, closing it");
            inner.end(Error::IdleTimeout(timeout));
        });
        self.inner().add_task(watchdog.abort_handle());
    }

    /// Counters: streams tracked and bytes buffered each way.
    pub fn stats(&self) -> Stats {
        self.inner().stats()
    }
}

/// Cancels the stream of an `open` that did not complete.
struct OpenGuard<'a> {
    inner: &'a Inner,
    id: Option<u32>,
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.inner.abandon_open(id);
        }
    }
}

/// The streams the peer opens, in the order it opened them. Each was
/// already answered with SYN_REPLY (no headers), as Kubernetes' servers
/// do. Dropping this refuses further streams with RST_STREAM
/// REFUSED_STREAM.
pub struct Incoming {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming").finish_non_exhaustive()
    }
}

impl Incoming {
    /// The next stream the peer opened; `None` once the session is closing
    /// or over and no accepted stream is left.
    pub async fn next(&mut self) -> Option<Stream> {
        let (id, headers) = poll_fn(|cx| self.handle.inner.poll_accept(cx)).await?;
        Some(Stream::new(self.handle.clone(), id, headers))
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.handle.inner.drop_incoming();
    }
}
