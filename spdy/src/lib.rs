//! SPDY/3.1 sessions over tokio, client and server, wire-compatible with
//! the Go implementation Kubernetes uses (github.com/moby/spdystream, under
//! k8s.io/apimachinery/pkg/util/httpstream/spdy, in kubectl, crictl and
//! the kubelet). This crate owns the framing, the header compression, the
//! stream multiplexing and its backpressure: give it a connection that is
//! already upgraded and it gives back streams of bytes. It must not do the
//! HTTP upgrade, know what a stream is for (stdin, port 8080, the error
//! channel) or any other Kubernetes semantics: those live in `cri/` (the
//! streaming server) and `e2e/` (the test client).
//!
//! ```no_run
//! # async fn demo(tcp: tokio::net::TcpStream) -> Result<(), bulkhead_spdy::Error> {
//! use bulkhead_spdy::{Role, Session};
//! use tokio::io::AsyncWriteExt;
//!
//! let (session, _incoming) = Session::new(tcp, Role::Client);
//! let mut stream = session.open(&[("streamType", "stdin")]).await?;
//! stream.write_all(b"hello").await?;
//! stream.shutdown().await?; // FIN: half-close
//! session.close().await;
//! # Ok(()) }
//! ```
//!
//! # How it behaves on the wire
//!
//! - Frames are SPDY/3.1 with control version 3; every frame type is
//!   parsed and written ([`frame`]). Header blocks use one zlib stream per
//!   direction primed with the SPDY/3 dictionary, sync-flushed per block
//!   ([`headers`]). Names go out lower-case and unique, because spdystream
//!   drops the connection otherwise.
//! - A stream we open waits for SYN_REPLY; a stream the peer opens is
//!   answered at once with an empty SYN_REPLY, as Kubernetes' servers do.
//! - PINGs from the peer are echoed at once (ahead of queued data); ours
//!   use the role's parity (client odd, server even) as spdystream's do.
//! - RST_STREAM ends one stream; GOAWAY ends the session after the streams
//!   it leaves alive. A control frame over [`frame::MAX_CONTROL_PAYLOAD`],
//!   a broken header stream, a bad frame length or version: GOAWAY
//!   PROTOCOL_ERROR. A bad header block or a bad stream id on SYN_STREAM:
//!   RST_STREAM for that stream only. DATA for an unknown stream is
//!   dropped, as spdystream drops it. Nothing the peer sends panics.
//! - DATA payloads we send are at most [`MAX_DATA_FRAME`] (32 KiB, what
//!   Go's `io.Copy` writes per frame); any size up to 2^24-1 is read.
//!
//! # Flow control: none is enforced; WINDOW_UPDATE is sent, never awaited
//!
//! spdystream implements no SPDY flow control. Read in v0.2.0 (Debian's
//! golang-github-docker-spdystream-dev, which `tests/go_interop.rs` runs
//! against; line numbers below are its) and in the v0.5 copy Kubernetes
//! vendors today (`vendor/github.com/moby/spdystream`), which is the same
//! in all of this:
//!
//! - it never sends SETTINGS or WINDOW_UPDATE: `connection.go` and
//!   `stream.go` build only SYN_STREAM, SYN_REPLY, HEADERS, RST_STREAM,
//!   PING, GOAWAY and DATA frames (`SettingsFrame` and `WindowUpdateFrame`
//!   appear only in `spdy/types.go`, `spdy/read.go` and `spdy/write.go`);
//! - `Stream.Write` sends one DATA frame per call with no window check
//!   (`stream.go`, `WriteData`), so a peer that waited on the 64 KiB
//!   initial window would stall every transfer after 64 KiB;
//! - WINDOW_UPDATE and SETTINGS it receives are parsed
//!   (`spdy/read.go`, `(*WindowUpdateFrame).read`: flags 0, length 8),
//!   queued at priority 7 by `Serve`'s `default:` case (connection.go
//!   lines 383-386) and dropped by `frameHandler`'s `default:` case with
//!   a debug message, "unhandled frame type" (lines 435-436): tolerated.
//! - Its receive side blocks: `handleDataFrame` hands each frame to the
//!   reader over an unbuffered channel, so a slow reader stops its frame
//!   worker, its bounded queue (`QUEUE_SIZE` 50) fills and `Serve` stops
//!   reading the socket. TCP is the only backpressure.
//!
//! So this crate never waits on a send window (WINDOW_UPDATE and SETTINGS
//! INITIAL_WINDOW_SIZE from a peer are accepted and ignored), and gets its
//! backpressure as spdystream does: each stream buffers at most 128 KiB
//! from the peer, and when a reader falls behind the session stops reading
//! the connection; each stream buffers at most 64 KiB to send and
//! `poll_write` waits beyond that. It does send WINDOW_UPDATEs (stream and
//! session, per 32 KiB consumed) because spdystream tolerates them and a
//! strict SPDY/3.1 sender would otherwise stall on us; the cost is one
//! 16-byte frame per 32 KiB read. A strict peer that enforces its own
//! receive window could still see us overrun it: no Kubernetes peer does.

mod dictionary;
mod driver;
mod error;
pub mod frame;
pub mod headers;
mod idle;
mod session;
mod state;
mod stream;

pub use error::Error;
pub use frame::{GoAwayStatus, RstStatus};
pub use idle::IdleClock;
pub use session::{Incoming, Role, Session};
pub use state::{MAX_DATA_FRAME, Stats};
pub use stream::{ReadHalf, Stream, StreamRef, WriteHalf};
