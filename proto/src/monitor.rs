//! The daemon ↔ pod monitor protocol. The monitor of a pod listens on a
//! unix socket the daemon names (`<state>/sockets/<pod-id prefix>.sock`,
//! short enough for `sun_path`); the daemon connects,
//! writes one [`Request`] as a JSON line, reads one [`Response`] as a JSON
//! line, and the connection ends. What the monitor knows durably — each
//! container's pid, start, and exit — it writes as [`ContainerRecord`]s
//! under `<state>/pods/<pod-id>/containers/`, which the daemon reads
//! directly: the records, not the socket, are the truth that outlives
//! either process.
//!
//! One request keeps its connection: [`Request::Attach`]. After its
//! `Ok` line the same connection carries binary frames both ways
//! ([`attach`]) until either side closes it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The directory of container records in the pod's state directory.
pub const CONTAINERS: &str = "containers";

/// One request to a pod's monitor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Creates container `id` from the OCI bundle at `bundle` (its init
    /// waits for `Start`); its stdout and stderr go to the CRI log at
    /// `log_path` (none: discarded). With `tty` (the bundle's
    /// `process.terminal`), its terminal's output goes there as stdout.
    /// With `stdin`, its stdin is a pipe the monitor holds open (for an
    /// attach to write to); else /dev/null. (With `tty` too, attachers
    /// write to the terminal instead.) With `stdin_once`, the container's
    /// stdin is closed for good when the first attach session that wrote
    /// to it ends its stdin ([`attach::STDIN_CLOSE`] or a hang-up): the
    /// pipe's write end is dropped, or a terminal gets an EOT (`\x04`).
    Create {
        id: String,
        bundle: PathBuf,
        log_path: Option<PathBuf>,
        #[serde(default)]
        tty: bool,
        #[serde(default)]
        stdin: bool,
        #[serde(default)]
        stdin_once: bool,
    },
    /// Lets a created container run its program.
    Start { id: String },
    /// Sends `signal` to the container's init, or with `all` to every process in it.
    Signal { id: String, signal: i32, all: bool },
    /// Removes a stopped container's runtime state and record (kills it first if it runs).
    Delete { id: String },
    /// Closes and reopens the container's log file (after kubelet rotated it).
    ReopenLog { id: String },
    /// Attaches to running container `id`'s stdio. The monitor answers one
    /// [`Response`] line; on `Ok` the connection then carries [`attach`]
    /// frames both ways: the container's output produced from now on (no
    /// replay; the log gets it as before), and from the daemon stdin (used
    /// only with `stdin`, and if the container has one), resizes and the
    /// end of this session's stdin. When the container has exited and its
    /// output has reached end of file, the monitor sends what it still owes
    /// and closes the connection: end of file means the container is done.
    /// Closing the connection detaches, which never affects the container
    /// (but see `stdin_once` in [`Request::Create`]). An attacher that
    /// falls more than a few MiB behind the output is disconnected. An
    /// unknown, not yet started or exited container gets `Error` naming it.
    Attach { id: String, stdin: bool },
    /// Stops the pod: kills every container, records their exits, exits.
    Shutdown,
}

/// The monitor's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Ok,
    /// The request failed; `message` says why, naming the object.
    Error {
        message: String,
    },
}

/// Where a container is in its life, as the monitor saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    Created,
    Running,
    Exited,
}

/// What the monitor records of one container, durably. Times are
/// nanoseconds since the Unix epoch; 0 is "not yet".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub state: ContainerState,
    /// The container's init process on the host.
    pub pid: i32,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    /// The exit status, or 128 + the signal that killed it.
    pub exit_code: i32,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// Whether the kernel's OOM killer killed a process of the container.
    pub oom_killed: bool,
    pub log_path: Option<PathBuf>,
}

/// The frames of an attach session, after its `Ok` line: each is
/// `[kind: u8][len: u32 big-endian][payload: len bytes]`, with `len` at
/// most [`MAX_PAYLOAD`](attach::MAX_PAYLOAD); a bigger declared length is
/// a protocol error (the monitor drops that attacher). The same encoder and
/// decoder serve both sides.
pub mod attach {
    use std::fmt;

    /// Daemon → monitor: bytes for the container's stdin (ignored if the
    /// attach did not ask for stdin, the container has none, or this
    /// session's stdin ended).
    pub const STDIN: u8 = 0;
    /// Monitor → daemon: the container's stdout (a terminal's output too).
    pub const STDOUT: u8 = 1;
    /// Monitor → daemon: the container's stderr.
    pub const STDERR: u8 = 2;
    /// Daemon → monitor: the terminal's size, `width: u16 BE, height: u16 BE`
    /// ([`resize`]); ignored without a terminal.
    pub const RESIZE: u8 = 3;
    /// Daemon → monitor, empty: this session's stdin ended.
    pub const STDIN_CLOSE: u8 = 4;

    /// The bytes before a frame's payload: kind and length.
    pub const HEADER_LEN: usize = 5;
    /// The largest payload a frame may declare: 1 MiB.
    pub const MAX_PAYLOAD: usize = 1 << 20;

    /// `payload` as frames of `kind`: one frame, or several of at most
    /// [`MAX_PAYLOAD`] bytes each for a longer payload. An empty payload
    /// is one empty frame.
    pub fn encode(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
        encode_into(kind, payload, &mut out);
        out
    }

    /// As [`encode`], appending to `out`.
    pub fn encode_into(kind: u8, payload: &[u8], out: &mut Vec<u8>) {
        let mut chunks = payload.chunks(MAX_PAYLOAD);
        let first = chunks.next().unwrap_or(&[]);
        for chunk in std::iter::once(first).chain(chunks) {
            out.push(kind);
            // A chunk is at most MAX_PAYLOAD (1 MiB) long: it fits a u32.
            out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
            out.extend_from_slice(chunk);
        }
    }

    /// The payload of a [`RESIZE`] frame.
    pub fn resize(width: u16, height: u16) -> [u8; 4] {
        let [w0, w1] = width.to_be_bytes();
        let [h0, h1] = height.to_be_bytes();
        [w0, w1, h0, h1]
    }

    /// `(width, height)` from a [`RESIZE`] payload; `None` if it is not 4 bytes.
    pub fn parse_resize(payload: &[u8]) -> Option<(u16, u16)> {
        match *payload {
            [w0, w1, h0, h1] => Some((u16::from_be_bytes([w0, w1]), u16::from_be_bytes([h0, h1]))),
            _ => None,
        }
    }

    /// One decoded frame: its kind and payload.
    pub type Frame = (u8, Vec<u8>);

    /// A frame declared a payload longer than [`MAX_PAYLOAD`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct TooLong {
        pub kind: u8,
        pub len: u32,
    }

    impl fmt::Display for TooLong {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(
                f,
                "attach frame of kind {} declares {} bytes, more than the {MAX_PAYLOAD} allowed",
                self.kind, self.len
            )
        }
    }

    impl std::error::Error for TooLong {}

    /// Buffers bytes as they arrive and pops whole frames: [`feed`]
    /// whatever was read, then call [`next_frame`] until it gives `None`
    /// (or an error: the peer broke the protocol; drop the connection).
    /// It holds at most one incomplete frame beyond what was fed and not
    /// yet popped.
    ///
    /// [`feed`]: Decoder::feed
    /// [`next_frame`]: Decoder::next_frame
    #[derive(Debug, Default)]
    pub struct Decoder {
        buf: Vec<u8>,
        /// Where the next frame starts in `buf`.
        start: usize,
    }

    /// Capacity a drained decoder keeps; more is given back.
    const KEEP: usize = 64 * 1024;

    impl Decoder {
        pub fn new() -> Decoder {
            Decoder::default()
        }

        /// Takes bytes read from the connection.
        pub fn feed(&mut self, bytes: &[u8]) {
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            self.buf.extend_from_slice(bytes);
        }

        /// Bytes fed and not yet popped as frames.
        pub fn buffered(&self) -> usize {
            self.buf.len() - self.start
        }

        /// The next whole frame, `None` until more bytes arrive, or the
        /// error of a frame declaring too long a payload (as soon as its
        /// header is in; the decoder then stays at that frame).
        pub fn next_frame(&mut self) -> Option<Result<Frame, TooLong>> {
            let rest = &self.buf[self.start..];
            let &[kind, l0, l1, l2, l3] = rest.get(..HEADER_LEN)? else { return None };
            let len = u32::from_be_bytes([l0, l1, l2, l3]);
            let size = usize::try_from(len).unwrap_or(usize::MAX);
            if size > MAX_PAYLOAD {
                return Some(Err(TooLong { kind, len }));
            }
            let frame = (kind, rest.get(HEADER_LEN..HEADER_LEN + size)?.to_vec());
            self.start += HEADER_LEN + size;
            if self.start == self.buf.len() {
                self.buf.clear();
                self.start = 0;
                self.buf.shrink_to(KEEP);
            }
            Some(Ok(frame))
        }
    }

    #[cfg(test)]
    mod tests {
        #![allow(clippy::unwrap_used)]

        use super::*;

        fn drain(decoder: &mut Decoder) -> Vec<Frame> {
            std::iter::from_fn(|| decoder.next_frame().map(Result::unwrap)).collect()
        }

        #[test]
        fn frames_decode_from_any_split_of_the_input() {
            let mut wire = encode(STDIN, b"hello\n");
            encode_into(RESIZE, &resize(120, 40), &mut wire);
            encode_into(STDIN_CLOSE, b"", &mut wire);
            encode_into(STDOUT, &[7u8; 300], &mut wire);
            assert_eq!(&wire[..HEADER_LEN], &[0, 0, 0, 0, 6]);
            assert_eq!(&wire[11..11 + HEADER_LEN + 4], &[3, 0, 0, 0, 4, 0, 120, 0, 40]);
            let want: Vec<Frame> = vec![
                (STDIN, b"hello\n".to_vec()),
                (RESIZE, vec![0, 120, 0, 40]),
                (STDIN_CLOSE, vec![]),
                (STDOUT, vec![7u8; 300]),
            ];
            for step in [1, 2, 3, 5, 7, 64, wire.len()] {
                let mut decoder = Decoder::new();
                let mut got = Vec::new();
                for piece in wire.chunks(step) {
                    decoder.feed(piece);
                    got.extend(drain(&mut decoder));
                }
                assert_eq!(got, want, "fed {step} bytes at a time");
                assert_eq!(decoder.buffered(), 0);
            }
            assert_eq!(parse_resize(&want[1].1), Some((120, 40)));
            assert_eq!(parse_resize(b"abc"), None);
        }

        #[test]
        fn an_incomplete_frame_waits_for_the_rest() {
            let mut decoder = Decoder::new();
            decoder.feed(&[STDERR, 0, 0]);
            assert_eq!(decoder.next_frame(), None);
            decoder.feed(&[0, 2, b'o']);
            assert_eq!(decoder.next_frame(), None);
            assert_eq!(decoder.buffered(), 6);
            decoder.feed(b"k!");
            assert_eq!(decoder.next_frame(), Some(Ok((STDERR, b"ok".to_vec()))));
            assert_eq!(decoder.next_frame(), None);
            assert_eq!(decoder.buffered(), 1);
        }

        #[test]
        fn a_length_over_the_maximum_is_an_error_as_soon_as_the_header_is_in() {
            let mut decoder = Decoder::new();
            decoder.feed(&encode(STDIN, b"ok"));
            let len = MAX_PAYLOAD as u32 + 1;
            decoder.feed(&[STDIN]);
            decoder.feed(&len.to_be_bytes()[..2]);
            assert_eq!(decoder.next_frame(), Some(Ok((STDIN, b"ok".to_vec()))));
            assert_eq!(decoder.next_frame(), None);
            decoder.feed(&len.to_be_bytes()[2..]);
            let err = decoder.next_frame().unwrap().unwrap_err();
            assert_eq!(err, TooLong { kind: STDIN, len });
            assert!(err.to_string().contains("1048577"), "{err}");
            assert_eq!(decoder.next_frame(), Some(Err(err)), "it stays at the bad frame");
            let mut decoder = Decoder::new();
            decoder.feed(&[STDIN, 0xff, 0xff, 0xff, 0xff]);
            assert!(decoder.next_frame().unwrap().is_err());
            // Exactly the maximum is fine.
            let mut decoder = Decoder::new();
            decoder.feed(&encode(STDIN, &vec![1u8; MAX_PAYLOAD]));
            assert_eq!(decoder.next_frame().unwrap().unwrap().1.len(), MAX_PAYLOAD);
        }

        #[test]
        fn a_payload_over_the_maximum_is_encoded_as_several_frames() {
            let data: Vec<u8> = (0..MAX_PAYLOAD * 2 + 10).map(|i| i as u8).collect();
            let mut decoder = Decoder::new();
            decoder.feed(&encode(STDOUT, &data));
            let frames = drain(&mut decoder);
            let lens: Vec<usize> = frames.iter().map(|(_, payload)| payload.len()).collect();
            assert_eq!(lens, [MAX_PAYLOAD, MAX_PAYLOAD, 10]);
            assert!(frames.iter().all(|(kind, _)| *kind == STDOUT));
            assert_eq!(frames.into_iter().flat_map(|(_, payload)| payload).collect::<Vec<u8>>(), data);
        }
    }
}
