//! SPDY/3.1 frames: their wire layout, parsing and serialisation.
//!
//! Every frame starts with 8 bytes. A control frame: `1 | version:15 |
//! type:16 | flags:8 | length:24`; a data frame: `0 | stream id:31 |
//! flags:8 | length:24`. Control frames are written with version 3 and
//! read only with version 3. Unknown control types are skipped (the spec
//! says to ignore them); the session never sends one, because spdystream
//! drops the connection on a type it does not know (`spdy/read.go`,
//! `newControlFrame`).

use bytes::{Buf, Bytes, BytesMut};

use crate::headers::{HeaderCompressor, HeaderDecompressor, HeaderError, Headers, MAX_HEADER_BLOCK, decode_block};

/// The protocol version written in, and required of, every control frame.
pub const VERSION: u16 = 3;
/// The length of every frame header.
pub const HEAD_LEN: usize = 8;
/// The largest length the 24-bit length field can carry.
pub const MAX_LENGTH: usize = 0x00ff_ffff;
/// The largest control frame payload accepted. Larger control frames are
/// a session error (GOAWAY PROTOCOL_ERROR) and are never buffered. Header
/// blocks are limited to [`MAX_HEADER_BLOCK`] anyway; data frames of any
/// length are fine, because the session streams them.
pub const MAX_CONTROL_PAYLOAD: usize = MAX_HEADER_BLOCK + 64 * 1024;
/// The largest stream id (31 bits).
pub const MAX_STREAM_ID: u32 = 0x7fff_ffff;

/// FLAG_FIN, on data frames and SYN_STREAM, SYN_REPLY and HEADERS.
pub const FLAG_FIN: u8 = 0x01;
/// FLAG_UNIDIRECTIONAL, on SYN_STREAM.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// FLAG_SETTINGS_CLEAR_SETTINGS, on SETTINGS.
pub const FLAG_SETTINGS_CLEAR: u8 = 0x01;

/// Control frame types.
pub mod kind {
    /// SYN_STREAM
    pub const SYN_STREAM: u16 = 1;
    /// SYN_REPLY
    pub const SYN_REPLY: u16 = 2;
    /// RST_STREAM
    pub const RST_STREAM: u16 = 3;
    /// SETTINGS
    pub const SETTINGS: u16 = 4;
    /// PING
    pub const PING: u16 = 6;
    /// GOAWAY
    pub const GOAWAY: u16 = 7;
    /// HEADERS
    pub const HEADERS: u16 = 8;
    /// WINDOW_UPDATE
    pub const WINDOW_UPDATE: u16 = 9;

    /// The name of a control frame type, for messages.
    pub fn name(kind: u16) -> &'static str {
        match kind {
            SYN_STREAM => "SYN_STREAM",
            SYN_REPLY => "SYN_REPLY",
            RST_STREAM => "RST_STREAM",
            SETTINGS => "SETTINGS",
            PING => "PING",
            GOAWAY => "GOAWAY",
            HEADERS => "HEADERS",
            WINDOW_UPDATE => "WINDOW_UPDATE",
            _ => "unknown control",
        }
    }
}

/// SETTINGS ids (SPDY/3.1 section 2.6.4).
pub mod setting {
    /// SETTINGS_UPLOAD_BANDWIDTH
    pub const UPLOAD_BANDWIDTH: u32 = 1;
    /// SETTINGS_DOWNLOAD_BANDWIDTH
    pub const DOWNLOAD_BANDWIDTH: u32 = 2;
    /// SETTINGS_ROUND_TRIP_TIME
    pub const ROUND_TRIP_TIME: u32 = 3;
    /// SETTINGS_MAX_CONCURRENT_STREAMS
    pub const MAX_CONCURRENT_STREAMS: u32 = 4;
    /// SETTINGS_CURRENT_CWND
    pub const CURRENT_CWND: u32 = 5;
    /// SETTINGS_DOWNLOAD_RETRANS_RATE
    pub const DOWNLOAD_RETRANS_RATE: u32 = 6;
    /// SETTINGS_INITIAL_WINDOW_SIZE
    pub const INITIAL_WINDOW_SIZE: u32 = 7;
    /// SETTINGS_CLIENT_CERTIFICATE_VECTOR_SIZE
    pub const CLIENT_CERTIFICATE_VECTOR_SIZE: u32 = 8;
}

/// A RST_STREAM status code.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RstStatus(pub u32);

impl RstStatus {
    /// PROTOCOL_ERROR
    pub const PROTOCOL_ERROR: RstStatus = RstStatus(1);
    /// INVALID_STREAM
    pub const INVALID_STREAM: RstStatus = RstStatus(2);
    /// REFUSED_STREAM
    pub const REFUSED_STREAM: RstStatus = RstStatus(3);
    /// UNSUPPORTED_VERSION
    pub const UNSUPPORTED_VERSION: RstStatus = RstStatus(4);
    /// CANCEL
    pub const CANCEL: RstStatus = RstStatus(5);
    /// INTERNAL_ERROR
    pub const INTERNAL_ERROR: RstStatus = RstStatus(6);
    /// FLOW_CONTROL_ERROR
    pub const FLOW_CONTROL_ERROR: RstStatus = RstStatus(7);
    /// STREAM_IN_USE
    pub const STREAM_IN_USE: RstStatus = RstStatus(8);
    /// STREAM_ALREADY_CLOSED
    pub const STREAM_ALREADY_CLOSED: RstStatus = RstStatus(9);
    /// INVALID_CREDENTIALS
    pub const INVALID_CREDENTIALS: RstStatus = RstStatus(10);
    /// FRAME_TOO_LARGE
    pub const FRAME_TOO_LARGE: RstStatus = RstStatus(11);

    /// The status' name, if it is one SPDY/3.1 defines.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "PROTOCOL_ERROR",
            2 => "INVALID_STREAM",
            3 => "REFUSED_STREAM",
            4 => "UNSUPPORTED_VERSION",
            5 => "CANCEL",
            6 => "INTERNAL_ERROR",
            7 => "FLOW_CONTROL_ERROR",
            8 => "STREAM_IN_USE",
            9 => "STREAM_ALREADY_CLOSED",
            10 => "INVALID_CREDENTIALS",
            11 => "FRAME_TOO_LARGE",
            _ => return None,
        })
    }
}

impl std::fmt::Display for RstStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "status {}", self.0),
        }
    }
}

impl std::fmt::Debug for RstStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// A GOAWAY status code.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct GoAwayStatus(pub u32);

impl GoAwayStatus {
    /// OK: a normal end.
    pub const OK: GoAwayStatus = GoAwayStatus(0);
    /// PROTOCOL_ERROR
    pub const PROTOCOL_ERROR: GoAwayStatus = GoAwayStatus(1);
    /// INTERNAL_ERROR
    pub const INTERNAL_ERROR: GoAwayStatus = GoAwayStatus(2);
}

impl std::fmt::Display for GoAwayStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            0 => f.write_str("OK"),
            1 => f.write_str("PROTOCOL_ERROR"),
            2 => f.write_str("INTERNAL_ERROR"),
            n => write!(f, "status {n}"),
        }
    }
}

impl std::fmt::Debug for GoAwayStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// One SETTINGS entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// FLAG_SETTINGS_PERSIST_VALUE (1), FLAG_SETTINGS_PERSISTED (2).
    pub flags: u8,
    /// The id (24 bits), see [`setting`].
    pub id: u32,
    /// The value.
    pub value: u32,
}

/// A frame, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// SYN_STREAM: opens a stream.
    SynStream {
        /// The new stream's id.
        stream_id: u32,
        /// Associated-To-Stream-ID (server push; 0 otherwise).
        associated_id: u32,
        /// Priority, 0 (highest) to 7.
        priority: u8,
        /// The credential slot (unused, 0).
        slot: u8,
        /// FLAG_FIN: the sender sends nothing more.
        fin: bool,
        /// FLAG_UNIDIRECTIONAL: the recipient may not send.
        unidirectional: bool,
        /// The header block.
        headers: Headers,
    },
    /// SYN_REPLY: accepts a stream.
    SynReply {
        /// The stream.
        stream_id: u32,
        /// FLAG_FIN
        fin: bool,
        /// The header block.
        headers: Headers,
    },
    /// RST_STREAM: ends a stream abnormally.
    RstStream {
        /// The stream.
        stream_id: u32,
        /// Why.
        status: RstStatus,
    },
    /// SETTINGS
    Settings {
        /// FLAG_SETTINGS_CLEAR_SETTINGS
        clear: bool,
        /// The entries.
        entries: Vec<Setting>,
    },
    /// PING: echoed by the side that did not send it.
    Ping {
        /// Odd from clients, even from servers.
        id: u32,
    },
    /// GOAWAY: the sender accepts no new streams.
    GoAway {
        /// The last stream the sender accepted.
        last_good_stream_id: u32,
        /// Why.
        status: GoAwayStatus,
    },
    /// HEADERS: more headers for a stream.
    Headers {
        /// The stream.
        stream_id: u32,
        /// FLAG_FIN
        fin: bool,
        /// The header block.
        headers: Headers,
    },
    /// WINDOW_UPDATE (stream 0: the session window, SPDY/3.1).
    WindowUpdate {
        /// The stream, or 0.
        stream_id: u32,
        /// Delta-Window-Size (31 bits).
        delta: u32,
    },
    /// DATA
    Data {
        /// The stream.
        stream_id: u32,
        /// FLAG_FIN: the sender's last frame on this stream.
        fin: bool,
        /// The payload.
        data: Bytes,
    },
}

/// A frame's first 8 bytes, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// A control frame.
    Control {
        /// The version (3 for us).
        version: u16,
        /// The type, see [`kind`].
        kind: u16,
        /// The flags.
        flags: u8,
        /// The payload length.
        len: u32,
    },
    /// A data frame.
    Data {
        /// The stream.
        stream_id: u32,
        /// The flags.
        flags: u8,
        /// The payload length.
        len: u32,
    },
}

impl Head {
    /// Decodes a frame header.
    pub fn parse(b: [u8; HEAD_LEN]) -> Head {
        let first = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let flags = b[4];
        let len = u32::from_be_bytes([0, b[5], b[6], b[7]]);
        if first & 0x8000_0000 != 0 {
            Head::Control { version: ((first >> 16) & 0x7fff) as u16, kind: (first & 0xffff) as u16, flags, len }
        } else {
            Head::Data { stream_id: first, flags, len }
        }
    }

    /// The payload length.
    pub fn len(&self) -> usize {
        match *self {
            Head::Control { len, .. } | Head::Data { len, .. } => len as usize,
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A frame that cannot be used.
///
/// With `stream_status` set the fault is confined to one stream, which is
/// answered with RST_STREAM of that status; otherwise it is a session
/// error, answered with GOAWAY PROTOCOL_ERROR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{frame} frame{}: {reason}", stream_suffix(*.stream_id))]
pub struct FrameError {
    /// The frame type's name.
    pub frame: &'static str,
    /// The stream the frame named, 0 if none.
    pub stream_id: u32,
    /// What is wrong.
    pub reason: String,
    /// For a stream error, the RST_STREAM status to answer with.
    pub stream_status: Option<RstStatus>,
}

fn stream_suffix(id: u32) -> String {
    if id == 0 { String::new() } else { format!(" on stream {id}") }
}

impl FrameError {
    fn session(frame: &'static str, stream_id: u32, reason: impl Into<String>) -> Self {
        FrameError { frame, stream_id, reason: reason.into(), stream_status: None }
    }

    fn stream(frame: &'static str, stream_id: u32, status: RstStatus, reason: impl Into<String>) -> Self {
        FrameError { frame, stream_id, reason: reason.into(), stream_status: Some(status) }
    }

    /// Whether the whole session must end (GOAWAY) rather than one stream.
    pub fn is_session_error(&self) -> bool {
        self.stream_status.is_none()
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn expect_len(name: &'static str, payload: &[u8], want: usize) -> Result<(), FrameError> {
    if payload.len() != want {
        return Err(FrameError::session(name, 0, format!("length {} (want {want})", payload.len())));
    }
    Ok(())
}

fn expect_min(name: &'static str, payload: &[u8], min: usize) -> Result<(), FrameError> {
    if payload.len() < min {
        return Err(FrameError::session(name, 0, format!("length {} (want at least {min})", payload.len())));
    }
    Ok(())
}

/// Decompresses and decodes a header block. Decompression failures are
/// session errors (the shared zlib state is lost); a block too large or
/// malformed is the stream's problem.
fn header_block(
    name: &'static str,
    stream_id: u32,
    block: &[u8],
    inflater: &mut HeaderDecompressor,
) -> Result<Headers, FrameError> {
    let raw = match inflater.decompress(block) {
        Ok(raw) => raw,
        Err(HeaderError::TooLarge) => {
            return Err(FrameError::stream(
                name,
                stream_id,
                RstStatus::FRAME_TOO_LARGE,
                HeaderError::TooLarge.to_string(),
            ));
        }
        Err(e) => return Err(FrameError::session(name, stream_id, e.to_string())),
    };
    if stream_id == 0 {
        return Err(FrameError::session(name, 0, "stream id 0"));
    }
    decode_block(&raw).map_err(|e| FrameError::stream(name, stream_id, RstStatus::PROTOCOL_ERROR, e.to_string()))
}

/// Parses a control frame's payload. `Ok(None)` for a type SPDY/3.1 does
/// not define (to be ignored). Header blocks are decompressed with
/// `inflater`, so control frames must be parsed in the order they arrive.
pub fn parse_control(
    version: u16,
    kind: u16,
    flags: u8,
    payload: &[u8],
    inflater: &mut HeaderDecompressor,
) -> Result<Option<Frame>, FrameError> {
    let name = kind::name(kind);
    if version != VERSION {
        return Err(FrameError::session(name, 0, format!("unsupported SPDY version {version}")));
    }
    if payload.len() > MAX_CONTROL_PAYLOAD {
        return Err(FrameError::session(name, 0, format!("{} bytes is too large", payload.len())));
    }
    let fin = flags & FLAG_FIN != 0;
    let frame = match kind {
        kind::SYN_STREAM => {
            expect_min(name, payload, 10)?;
            let stream_id = be32(payload, 0) & MAX_STREAM_ID;
            let associated_id = be32(payload, 4) & MAX_STREAM_ID;
            let priority = payload[8] >> 5;
            let slot = payload[9];
            let headers = header_block(name, stream_id, &payload[10..], inflater)?;
            Frame::SynStream {
                stream_id,
                associated_id,
                priority,
                slot,
                fin,
                unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                headers,
            }
        }
        kind::SYN_REPLY | kind::HEADERS => {
            expect_min(name, payload, 4)?;
            let stream_id = be32(payload, 0) & MAX_STREAM_ID;
            let headers = header_block(name, stream_id, &payload[4..], inflater)?;
            if kind == kind::SYN_REPLY {
                Frame::SynReply { stream_id, fin, headers }
            } else {
                Frame::Headers { stream_id, fin, headers }
            }
        }
        kind::RST_STREAM => {
            expect_len(name, payload, 8)?;
            let stream_id = be32(payload, 0) & MAX_STREAM_ID;
            if stream_id == 0 {
                return Err(FrameError::session(name, 0, "stream id 0"));
            }
            Frame::RstStream { stream_id, status: RstStatus(be32(payload, 4)) }
        }
        kind::SETTINGS => {
            expect_min(name, payload, 4)?;
            let count = be32(payload, 0) as usize;
            if count > (payload.len() - 4) / 8 {
                return Err(FrameError::session(
                    name,
                    0,
                    format!("{count} entries do not fit in {} bytes", payload.len()),
                ));
            }
            let entries = (0..count)
                .map(|i| {
                    let at = 4 + i * 8;
                    let flag_id = be32(payload, at);
                    Setting { flags: (flag_id >> 24) as u8, id: flag_id & 0x00ff_ffff, value: be32(payload, at + 4) }
                })
                .collect();
            Frame::Settings { clear: flags & FLAG_SETTINGS_CLEAR != 0, entries }
        }
        kind::PING => {
            expect_len(name, payload, 4)?;
            Frame::Ping { id: be32(payload, 0) }
        }
        kind::GOAWAY => {
            expect_len(name, payload, 8)?;
            Frame::GoAway {
                last_good_stream_id: be32(payload, 0) & MAX_STREAM_ID,
                status: GoAwayStatus(be32(payload, 4)),
            }
        }
        kind::WINDOW_UPDATE => {
            expect_len(name, payload, 8)?;
            Frame::WindowUpdate { stream_id: be32(payload, 0) & MAX_STREAM_ID, delta: be32(payload, 4) & 0x7fff_ffff }
        }
        _ => return Ok(None),
    };
    Ok(Some(frame))
}

/// Decodes one whole frame from the front of `buf`, skipping control
/// frames of unknown type. `Ok(None)` when `buf` holds no complete frame
/// yet (nothing is consumed then). The session itself reads data frames
/// piecewise and does not use this; it is for tests and tools.
pub fn decode(buf: &mut BytesMut, inflater: &mut HeaderDecompressor) -> Result<Option<Frame>, FrameError> {
    loop {
        let Some(head) = buf.first_chunk::<HEAD_LEN>() else { return Ok(None) };
        let head = Head::parse(*head);
        if let Head::Control { kind, len, .. } = head
            && len as usize > MAX_CONTROL_PAYLOAD
        {
            return Err(FrameError::session(kind::name(kind), 0, format!("{len} bytes is too large")));
        }
        if buf.len() < HEAD_LEN + head.len() {
            return Ok(None);
        }
        buf.advance(HEAD_LEN);
        let payload = buf.split_to(head.len());
        match head {
            Head::Data { stream_id, flags, .. } => {
                if stream_id == 0 {
                    return Err(FrameError::session("DATA", 0, "stream id 0"));
                }
                return Ok(Some(Frame::Data { stream_id, fin: flags & FLAG_FIN != 0, data: payload.freeze() }));
            }
            Head::Control { version, kind, flags, .. } => {
                if let Some(frame) = parse_control(version, kind, flags, &payload, inflater)? {
                    return Ok(Some(frame));
                }
            }
        }
    }
}

/// The header of a data frame.
pub fn data_head(stream_id: u32, fin: bool, len: usize) -> [u8; HEAD_LEN] {
    let mut h = [0u8; HEAD_LEN];
    h[..4].copy_from_slice(&(stream_id & MAX_STREAM_ID).to_be_bytes());
    let len = u32::try_from(len.min(MAX_LENGTH)).unwrap_or(0);
    h[4..].copy_from_slice(&len.to_be_bytes());
    h[4] = if fin { FLAG_FIN } else { 0 };
    h
}

fn control_head(out: &mut Vec<u8>, kind: u16, flags: u8, len: usize) -> Result<(), FrameError> {
    if len > MAX_LENGTH {
        return Err(FrameError::session(kind::name(kind), 0, format!("payload of {len} bytes does not fit")));
    }
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.push(flags);
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    Ok(())
}

fn compressed(name: &'static str, headers: &Headers, deflater: &mut HeaderCompressor) -> Result<Vec<u8>, FrameError> {
    let raw = crate::headers::encode_block(headers).map_err(|e| FrameError::session(name, 0, e.to_string()))?;
    deflater.compress(&raw).map_err(|e| FrameError::session(name, 0, e.to_string()))
}

/// Appends a frame's wire form to `out`. Header blocks go through
/// `deflater`, so frames must be encoded in the order they are sent.
pub fn encode(frame: &Frame, deflater: &mut HeaderCompressor, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let fin_flag = |fin: bool| if fin { FLAG_FIN } else { 0 };
    match frame {
        Frame::SynStream { stream_id, associated_id, priority, slot, fin, unidirectional, headers } => {
            let block = compressed("SYN_STREAM", headers, deflater)?;
            let flags = fin_flag(*fin) | if *unidirectional { FLAG_UNIDIRECTIONAL } else { 0 };
            control_head(out, kind::SYN_STREAM, flags, 10 + block.len())?;
            out.extend_from_slice(&(stream_id & MAX_STREAM_ID).to_be_bytes());
            out.extend_from_slice(&(associated_id & MAX_STREAM_ID).to_be_bytes());
            out.push((priority & 0x7) << 5);
            out.push(*slot);
            out.extend_from_slice(&block);
        }
        Frame::SynReply { stream_id, fin, headers } | Frame::Headers { stream_id, fin, headers } => {
            let (k, name) = if matches!(frame, Frame::SynReply { .. }) {
                (kind::SYN_REPLY, "SYN_REPLY")
            } else {
                (kind::HEADERS, "HEADERS")
            };
            let block = compressed(name, headers, deflater)?;
            control_head(out, k, fin_flag(*fin), 4 + block.len())?;
            out.extend_from_slice(&(stream_id & MAX_STREAM_ID).to_be_bytes());
            out.extend_from_slice(&block);
        }
        Frame::RstStream { stream_id, status } => {
            control_head(out, kind::RST_STREAM, 0, 8)?;
            out.extend_from_slice(&(stream_id & MAX_STREAM_ID).to_be_bytes());
            out.extend_from_slice(&status.0.to_be_bytes());
        }
        Frame::Settings { clear, entries } => {
            control_head(out, kind::SETTINGS, if *clear { FLAG_SETTINGS_CLEAR } else { 0 }, 4 + 8 * entries.len())?;
            out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
            for e in entries {
                out.extend_from_slice(&((u32::from(e.flags) << 24) | (e.id & 0x00ff_ffff)).to_be_bytes());
                out.extend_from_slice(&e.value.to_be_bytes());
            }
        }
        Frame::Ping { id } => {
            control_head(out, kind::PING, 0, 4)?;
            out.extend_from_slice(&id.to_be_bytes());
        }
        Frame::GoAway { last_good_stream_id, status } => {
            control_head(out, kind::GOAWAY, 0, 8)?;
            out.extend_from_slice(&(last_good_stream_id & MAX_STREAM_ID).to_be_bytes());
            out.extend_from_slice(&status.0.to_be_bytes());
        }
        Frame::WindowUpdate { stream_id, delta } => {
            control_head(out, kind::WINDOW_UPDATE, 0, 8)?;
            out.extend_from_slice(&(stream_id & MAX_STREAM_ID).to_be_bytes());
            out.extend_from_slice(&(delta & 0x7fff_ffff).to_be_bytes());
        }
        Frame::Data { stream_id, fin, data } => {
            if data.len() > MAX_LENGTH {
                return Err(FrameError::session(
                    "DATA",
                    *stream_id,
                    format!("payload of {} bytes does not fit", data.len()),
                ));
            }
            out.extend_from_slice(&data_head(*stream_id, *fin, data.len()));
            out.extend_from_slice(data);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    fn all_frames() -> Vec<Frame> {
        vec![
            Frame::SynStream {
                stream_id: 1,
                associated_id: 0,
                priority: 0,
                slot: 0,
                fin: false,
                unidirectional: false,
                headers: h(&[("streamtype", "error"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::SynStream {
                stream_id: 0x7fff_ffff,
                associated_id: 7,
                priority: 7,
                slot: 3,
                fin: true,
                unidirectional: true,
                headers: h(&[("a", "1"), ("a", "2"), ("empty", "")]),
            },
            Frame::SynReply { stream_id: 2, fin: false, headers: vec![] },
            Frame::SynReply { stream_id: 4, fin: true, headers: h(&[(":status", "200 OK")]) },
            Frame::RstStream { stream_id: 3, status: RstStatus::CANCEL },
            Frame::RstStream { stream_id: 5, status: RstStatus(99) },
            Frame::Settings { clear: false, entries: vec![] },
            Frame::Settings {
                clear: true,
                entries: vec![
                    Setting { flags: 1, id: setting::INITIAL_WINDOW_SIZE, value: 1 << 20 },
                    Setting { flags: 2, id: setting::MAX_CONCURRENT_STREAMS, value: 100 },
                ],
            },
            Frame::Ping { id: 1 },
            Frame::Ping { id: 0xffff_fffe },
            Frame::GoAway { last_good_stream_id: 9, status: GoAwayStatus::OK },
            Frame::GoAway { last_good_stream_id: 0, status: GoAwayStatus::PROTOCOL_ERROR },
            Frame::Headers { stream_id: 7, fin: true, headers: h(&[("x-more", "yes")]) },
            Frame::Headers { stream_id: 9, fin: false, headers: vec![] },
            Frame::WindowUpdate { stream_id: 0, delta: 65536 },
            Frame::WindowUpdate { stream_id: 3, delta: 0x7fff_ffff },
            Frame::Data { stream_id: 1, fin: false, data: Bytes::from_static(b"hello") },
            Frame::Data { stream_id: 3, fin: true, data: Bytes::new() },
            Frame::Data { stream_id: 5, fin: true, data: Bytes::from(vec![0xa5; 100_000]) },
        ]
    }

    #[test]
    fn every_frame_type_round_trips_in_one_session() {
        let mut c = HeaderCompressor::new();
        let mut d = HeaderDecompressor::new();
        let frames = all_frames();
        let mut wire = Vec::new();
        for f in &frames {
            encode(f, &mut c, &mut wire).unwrap();
        }
        let mut buf = BytesMut::from(&wire[..]);
        for f in &frames {
            assert_eq!(decode(&mut buf, &mut d).unwrap().as_ref(), Some(f));
        }
        assert!(buf.is_empty());
        assert_eq!(decode(&mut buf, &mut d).unwrap(), None);
    }

    #[test]
    fn partial_frames_wait_for_more_bytes() {
        let mut c = HeaderCompressor::new();
        let mut d = HeaderDecompressor::new();
        let mut wire = Vec::new();
        for f in &all_frames() {
            encode(f, &mut c, &mut wire).unwrap();
        }
        // Feed one byte at a time: every frame comes out exactly once.
        let mut buf = BytesMut::new();
        let mut got = vec![];
        for b in wire {
            buf.extend_from_slice(&[b]);
            while let Some(f) = decode(&mut buf, &mut d).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, all_frames());
    }

    /// Frames as spdystream v0.2.0 writes them: DATA{1, FIN, "hi"},
    /// RST_STREAM{3, CANCEL}, PING{1}, GOAWAY{2, OK}. Ours are identical.
    #[test]
    fn fixed_frames_match_spdystream_bytes() {
        let go = hex(
            "000000010100000268698003000300000008000000030000000580030006000000040000000180030007000000080000000200000000",
        );
        let mut c = HeaderCompressor::new();
        let mut ours = Vec::new();
        for f in [
            Frame::Data { stream_id: 1, fin: true, data: Bytes::from_static(b"hi") },
            Frame::RstStream { stream_id: 3, status: RstStatus::CANCEL },
            Frame::Ping { id: 1 },
            Frame::GoAway { last_good_stream_id: 2, status: GoAwayStatus::OK },
        ] {
            encode(&f, &mut c, &mut ours).unwrap();
        }
        assert_eq!(ours, go);
    }

    /// SYN_STREAM {streamType: error}, SYN_STREAM {streamType: stdout} and
    /// SYN_REPLY {} exactly as spdystream v0.2.0 wrote them, in one session.
    #[test]
    fn decodes_frames_written_by_spdystream() {
        let wire = hex(concat!(
            "80030001000000290000000100000000000078f9e3c6a7c26260606004a7b392a2d4c45c6851c29a0a0a6800000000ffff",
            "800300010000001900000003000000000000c22ac5565c92925f5a02000000ffff",
            "800300020000000e000000026260606000000000ffff",
        ));
        let mut d = HeaderDecompressor::new();
        let mut buf = BytesMut::from(&wire[..]);
        let f1 = decode(&mut buf, &mut d).unwrap().unwrap();
        assert_eq!(
            f1,
            Frame::SynStream {
                stream_id: 1,
                associated_id: 0,
                priority: 0,
                slot: 0,
                fin: false,
                unidirectional: false,
                headers: h(&[("streamtype", "error")]),
            }
        );
        let f2 = decode(&mut buf, &mut d).unwrap().unwrap();
        assert!(
            matches!(f2, Frame::SynStream { stream_id: 3, ref headers, .. } if *headers == h(&[("streamtype", "stdout")]))
        );
        let f3 = decode(&mut buf, &mut d).unwrap().unwrap();
        assert_eq!(f3, Frame::SynReply { stream_id: 2, fin: false, headers: vec![] });
        assert!(buf.is_empty());
    }

    /// SPDY/3.1 vectors from node's spdy-transport tests (another
    /// implementation's zlib and framing).
    #[test]
    fn decodes_spdy_transport_vectors() {
        let mut d = HeaderDecompressor::new();
        let mut buf = BytesMut::from(
            &hex(
                "800300010100002c0000000100000000000078f9e3c6a7c202e50e507ab442a45a77d7105006b32a4804974d8cfa00000000ffff",
            )[..],
        );
        let f = decode(&mut buf, &mut d).unwrap().unwrap();
        assert_eq!(
            f,
            Frame::SynStream {
                stream_id: 1,
                associated_id: 0,
                priority: 0,
                slot: 0,
                fin: true,
                unidirectional: false,
                headers: h(&[(":method", "GET"), (":path", "/")]),
            }
        );
        let mut buf = BytesMut::from(&hex("800300040000000c000000010100000700000100")[..]);
        assert_eq!(
            decode(&mut buf, &mut d).unwrap().unwrap(),
            Frame::Settings {
                clear: false,
                entries: vec![Setting { flags: 1, id: setting::INITIAL_WINDOW_SIZE, value: 256 }]
            }
        );
        let mut buf = BytesMut::from(&hex("000000010100001157726974696e6720746f2073747265616d")[..]);
        assert_eq!(
            decode(&mut buf, &mut d).unwrap().unwrap(),
            Frame::Data { stream_id: 1, fin: true, data: Bytes::from_static(b"Writing to stream") }
        );
    }

    #[test]
    fn head_parsing() {
        assert_eq!(
            Head::parse([0x80, 3, 0, 1, 0x01, 0, 0, 10]),
            Head::Control { version: 3, kind: 1, flags: 1, len: 10 }
        );
        assert_eq!(
            Head::parse([0x7f, 0xff, 0xff, 0xff, 0x01, 0xff, 0xff, 0xff]),
            Head::Data { stream_id: MAX_STREAM_ID, flags: 1, len: 0xff_ffff }
        );
        assert_eq!(data_head(5, true, 3), [0, 0, 0, 5, 1, 0, 0, 3]);
    }

    fn parse_one(bytes: &[u8]) -> Result<Option<Frame>, FrameError> {
        let mut d = HeaderDecompressor::new();
        decode(&mut BytesMut::from(bytes), &mut d)
    }

    #[test]
    fn malformed_control_frames_are_session_errors() {
        for bad in [
            // RST_STREAM with 4 bytes, with stream 0
            &hex("800300030000000400000001")[..],
            &hex("80030003000000080000000000000005")[..],
            // PING of 8 bytes
            &hex("80030006000000080000000100000002")[..],
            // GOAWAY of 4 bytes (SPDY/2 layout)
            &hex("800300070000000400000001")[..],
            // WINDOW_UPDATE of 4 bytes
            &hex("800300090000000400000001")[..],
            // SETTINGS claiming 2 entries with room for 1
            &hex("800300040000000c000000020100000700000100")[..],
            // SYN_STREAM shorter than its fixed part
            &hex("80030001000000040000000100")[..],
            // version 2
            &hex("80020006000000040000000100")[..],
            // data on stream 0
            &hex("0000000000000001ff")[..],
            // SYN_STREAM whose header block is not zlib
            &hex("800300010000000e000000010000000000000102030405")[..],
        ] {
            let e = parse_one(bad).unwrap_err();
            assert!(e.is_session_error(), "{e} for {bad:02x?}");
        }
    }

    #[test]
    fn oversized_control_frames_are_refused_before_buffering() {
        let e = parse_one(&hex("8003000100ffffff")).unwrap_err();
        assert!(e.is_session_error());
        assert!(e.to_string().contains("too large"), "{e}");
    }

    #[test]
    fn unknown_control_types_are_skipped() {
        let mut wire = hex("8003000a00000003010203"); // CREDENTIAL-ish
        wire.extend(hex("800300060000000400000007"));
        assert_eq!(parse_one(&wire).unwrap(), Some(Frame::Ping { id: 7 }));
    }

    #[test]
    fn a_bad_name_value_block_is_a_stream_error() {
        let mut c = HeaderCompressor::new();
        let block = c.compress(&[0, 0, 0, 5, 0, 0]).unwrap();
        let mut wire = Vec::new();
        control_head(&mut wire, kind::SYN_STREAM, 0, 10 + block.len()).unwrap();
        wire.extend_from_slice(&[0, 0, 0, 3, 0, 0, 0, 0, 0, 0]);
        wire.extend_from_slice(&block);
        let e = parse_one(&wire).unwrap_err();
        assert_eq!(e.stream_status, Some(RstStatus::PROTOCOL_ERROR));
        assert_eq!(e.stream_id, 3);
        assert!(e.to_string().starts_with("SYN_STREAM frame on stream 3:"), "{e}");
    }

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// Random bytes, and valid frames with random bytes flipped, never
    /// panic the parser: every input ends in frames, an error or "need
    /// more".
    #[test]
    fn fuzz_the_parser() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut valid = Vec::new();
        let mut c = HeaderCompressor::new();
        for f in &all_frames() {
            encode(f, &mut c, &mut valid).unwrap();
        }
        for round in 0..20_000 {
            let mut input: Vec<u8> = if round % 2 == 0 {
                let n = (rng.next() % 512) as usize;
                (0..n).map(|_| rng.next() as u8).collect()
            } else {
                let mut v = valid.clone();
                for _ in 0..(rng.next() % 8 + 1) {
                    let i = (rng.next() as usize) % v.len();
                    v[i] ^= 1 << (rng.next() % 8);
                }
                v.truncate((rng.next() as usize) % (v.len() + 1));
                v
            };
            // Make control frames likely: set the control bit and version 3.
            if round % 3 == 0 && input.len() >= 2 {
                input[0] = 0x80;
                input[1] = 3;
            }
            let mut d = HeaderDecompressor::new();
            let mut buf = BytesMut::from(&input[..]);
            for _ in 0..10_000 {
                match decode(&mut buf, &mut d) {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}
