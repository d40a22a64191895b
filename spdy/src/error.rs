//! The crate's error type.

use std::sync::Arc;

use crate::frame::{FrameError, GoAwayStatus, RstStatus};
use crate::headers::HeaderError;

/// What went wrong with a session or one of its streams. Cloneable: a
/// session's end is reported to every waiter.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer answered the stream with RST_STREAM.
    #[error("stream {stream_id}: reset by peer ({status})")]
    Reset {
        /// The stream.
        stream_id: u32,
        /// The peer's status.
        status: RstStatus,
    },
    /// The peer's GOAWAY says it never processed the stream.
    #[error("stream {stream_id}: not accepted, the peer went away after stream {last_good_stream_id}")]
    GoneAway {
        /// The stream.
        stream_id: u32,
        /// The last stream the peer accepted.
        last_good_stream_id: u32,
    },
    /// The peer sent GOAWAY: no new streams can be opened.
    #[error("cannot open a stream: the peer sent GOAWAY ({0})")]
    GoingAway(GoAwayStatus),
    /// This side closed the session.
    #[error("session closed")]
    Closed,
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    PeerClosed,
    /// All 2^30 stream ids of this side are used up.
    #[error("stream ids exhausted")]
    StreamIdsExhausted,
    /// A header given to [`crate::Session::open`] cannot be sent.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// The peer broke the protocol badly enough to end the session (we
    /// sent GOAWAY PROTOCOL_ERROR).
    #[error("protocol error: {0}")]
    Protocol(FrameError),
    /// A stream-level protocol error (we sent RST_STREAM).
    #[error("stream {stream_id}: protocol error: {reason}")]
    StreamProtocol {
        /// The stream.
        stream_id: u32,
        /// What the peer did.
        reason: String,
    },
    /// Nothing was read or written for the session's idle timeout
    /// ([`crate::Session::set_idle_timeout`]).
    #[error("idle for {0:?}: connection closed")]
    IdleTimeout(std::time::Duration),
    /// Reading or writing the connection failed.
    #[error("connection I/O: {0}")]
    Io(Arc<std::io::Error>),
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(Arc::new(e))
    }
}
