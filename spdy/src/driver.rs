//! The two tasks that drive a session: the reader turns the connection's
//! bytes into frames and hands them to the state; the writer takes frames
//! from the state and writes them. Each owns its half of the header
//! compression, so header blocks are (de)compressed in wire order.

use std::future::poll_fn;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};

use crate::error::Error;
use crate::frame::{FLAG_FIN, FrameError, HEAD_LEN, Head, MAX_CONTROL_PAYLOAD, data_head, encode, kind, parse_control};
use crate::headers::{HeaderCompressor, HeaderDecompressor};
use crate::idle::IdleClock;
use crate::state::{Inner, Out, Room, Step};

/// What the reader reads ahead from the connection.
const READ_BUFFER: usize = 64 * 1024;
/// What the writer gathers before a write to the connection.
const WRITE_BUFFER: usize = 64 * 1024;
/// After our GOAWAY and the shutdown of our write side, how long the
/// reader goes on (the peer's last WINDOW_UPDATEs and FINs) waiting for
/// the peer to close its side. Closing a socket with unread bytes in it
/// makes the kernel send RST, and a peer that gets RST can lose data it has
/// received but not yet read: the end of a transfer.
const LINGER: std::time::Duration = std::time::Duration::from_secs(5);

enum ReadEnd {
    Io(std::io::Error),
    Protocol(FrameError),
}

impl From<std::io::Error> for ReadEnd {
    fn from(e: std::io::Error) -> Self {
        ReadEnd::Io(e)
    }
}

pub(crate) async fn reader<R: AsyncRead + Unpin>(inner: Arc<Inner>, mut rd: R) {
    match read_frames(&inner, &mut rd).await {
        Ok(()) => inner.end(Error::PeerClosed),
        Err(ReadEnd::Io(e)) => inner.end(Error::from(e)),
        Err(ReadEnd::Protocol(e)) => {
            tracing::debug!(error = %e, "spdy: protocol error, sending GOAWAY");
            inner.close(crate::frame::GoAwayStatus::PROTOCOL_ERROR, false, Error::Protocol(e.clone()));
            // Read on (discarding) while the writer lingers, so the socket
            // closes with nothing unread in it; the peer's end ends it.
            let mut sink = [0u8; 4096];
            let drained = async { while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {} };
            let _ = tokio::time::timeout(LINGER, drained).await;
            inner.end(Error::Protocol(e));
        }
    }
}

/// Makes `buf` hold at least `n` bytes, touching `activity` for every read
/// that brings some. `Ok(false)` on a clean end of the connection (only
/// allowed where `eof_ok`, between frames).
async fn fill<R: AsyncRead + Unpin>(
    rd: &mut R,
    activity: &IdleClock,
    buf: &mut BytesMut,
    n: usize,
    eof_ok: bool,
) -> Result<bool, ReadEnd> {
    while buf.len() < n {
        buf.reserve((n - buf.len()).max(READ_BUFFER / 4));
        let read = rd.read_buf(buf).await?;
        if read > 0 {
            activity.touch();
            continue;
        }
        if eof_ok && buf.is_empty() {
            return Ok(false);
        }
        return Err(ReadEnd::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed in the middle of a frame",
        )));
    }
    Ok(true)
}

async fn read_frames<R: AsyncRead + Unpin>(inner: &Inner, rd: &mut R) -> Result<(), ReadEnd> {
    let mut buf = BytesMut::with_capacity(READ_BUFFER);
    let mut inflater = HeaderDecompressor::new();
    loop {
        if !fill(rd, &inner.activity, &mut buf, HEAD_LEN, true).await? {
            return Ok(());
        }
        let Some(head) = buf.first_chunk::<HEAD_LEN>() else { continue };
        let head = Head::parse(*head);
        buf.advance(HEAD_LEN);
        match head {
            Head::Control { version, kind: k, flags, len } => {
                let len = len as usize;
                let known = matches!(
                    k,
                    kind::SYN_STREAM
                        | kind::SYN_REPLY
                        | kind::RST_STREAM
                        | kind::SETTINGS
                        | kind::PING
                        | kind::GOAWAY
                        | kind::HEADERS
                        | kind::WINDOW_UPDATE
                );
                if !known {
                    tracing::debug!(kind = k, len, "spdy: unknown control frame skipped");
                    skip(rd, &inner.activity, &mut buf, len).await?;
                    continue;
                }
                if len > MAX_CONTROL_PAYLOAD {
                    return Err(ReadEnd::Protocol(FrameError {
                        frame: kind::name(k),
                        stream_id: 0,
                        reason: format!("{len} bytes is more than the {MAX_CONTROL_PAYLOAD} accepted"),
                        stream_status: None,
                    }));
                }
                fill(rd, &inner.activity, &mut buf, len, false).await?;
                let payload = buf.split_to(len);
                poll_fn(|cx| inner.poll_control_room(cx)).await;
                match parse_control(version, k, flags, &payload, &mut inflater) {
                    Ok(Some(frame)) => inner.on_control(frame),
                    Ok(None) => {}
                    Err(e) if e.is_session_error() => return Err(ReadEnd::Protocol(e)),
                    Err(e) => inner.on_stream_error(&e),
                }
                if buf.capacity() > 4 * READ_BUFFER && buf.len() <= READ_BUFFER {
                    // A large control frame grew the buffer: give it back.
                    let mut small = BytesMut::with_capacity(READ_BUFFER);
                    small.extend_from_slice(&buf);
                    buf = small;
                }
            }
            Head::Data { stream_id, flags, len } => {
                if stream_id == 0 {
                    return Err(ReadEnd::Protocol(FrameError {
                        frame: "DATA",
                        stream_id: 0,
                        reason: "stream id 0".into(),
                        stream_status: None,
                    }));
                }
                let fin = flags & FLAG_FIN != 0;
                inner.on_data_start(stream_id, len, fin);
                let mut remaining = len as usize;
                while remaining > 0 {
                    if buf.is_empty() {
                        fill(rd, &inner.activity, &mut buf, 1, false).await?;
                    }
                    let at_hand = buf.len().min(remaining);
                    match poll_fn(|cx| inner.poll_data_room(stream_id, cx)).await {
                        Room::Deliver(room) => {
                            let n = at_hand.min(room);
                            inner.deliver(stream_id, &buf[..n]);
                            buf.advance(n);
                            remaining -= n;
                        }
                        Room::Discard => {
                            inner.discard(at_hand);
                            buf.advance(at_hand);
                            remaining -= at_hand;
                        }
                    }
                }
                if fin {
                    inner.on_data_fin(stream_id);
                }
            }
        }
    }
}

/// Reads past `n` bytes without keeping them.
async fn skip<R: AsyncRead + Unpin>(
    rd: &mut R,
    activity: &IdleClock,
    buf: &mut BytesMut,
    mut n: usize,
) -> Result<(), ReadEnd> {
    while n > 0 {
        if buf.is_empty() {
            fill(rd, activity, buf, 1, false).await?;
        }
        let k = buf.len().min(n);
        buf.advance(k);
        n -= k;
    }
    Ok(())
}

pub(crate) async fn writer<W: AsyncWrite + Unpin>(inner: Arc<Inner>, wr: W) {
    let mut wr = BufWriter::with_capacity(WRITE_BUFFER, wr);
    let mut deflater = HeaderCompressor::new();
    let mut batch = Vec::new();
    let mut scratch = Vec::new();
    loop {
        let step = poll_fn(|cx| inner.poll_batch(cx, &mut batch)).await;
        if let Err(e) = write_batch(&mut wr, &inner.activity, &mut deflater, &mut batch, &mut scratch).await {
            tracing::debug!(error = %e, "spdy: connection write failed");
            inner.end(e);
            return;
        }
        match step {
            Step::More => {}
            Step::Finish => {
                if let Err(e) = wr.shutdown().await {
                    tracing::debug!(error = %e, "spdy: connection shutdown failed");
                }
                // Linger: the reader ends the session when the peer closes.
                let mut ended = inner.ended_receiver();
                let _ = tokio::time::timeout(LINGER, ended.wait_for(|ended| *ended)).await;
                inner.end(Error::Closed);
                return;
            }
            Step::Ended => {
                let _ = wr.shutdown().await;
                return;
            }
        }
    }
}

/// Writes `batch`, touching `activity` as each frame goes into the buffer
/// (which writes to the connection whenever it fills), and flushes.
async fn write_batch<W: AsyncWrite + Unpin>(
    wr: &mut BufWriter<W>,
    activity: &IdleClock,
    deflater: &mut HeaderCompressor,
    batch: &mut Vec<Out>,
    scratch: &mut Vec<u8>,
) -> Result<(), Error> {
    if batch.is_empty() {
        return Ok(());
    }
    for out in batch.drain(..) {
        match out {
            Out::Control(frame) => {
                scratch.clear();
                encode(&frame, deflater, scratch).map_err(Error::Protocol)?;
                wr.write_all(scratch).await?;
            }
            Out::Data { stream_id, fin, data } => {
                wr.write_all(&data_head(stream_id, fin, data.len())).await?;
                wr.write_all(&data).await?;
            }
        }
        activity.touch();
    }
    wr.flush().await?;
    activity.touch();
    Ok(())
}
