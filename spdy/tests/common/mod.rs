//! Helpers shared by the integration tests: a frame-level peer that
//! speaks raw SPDY to a session, and a deterministic byte pattern.
#![allow(dead_code)]

use std::time::Duration;

use bulkhead_spdy::frame::{self, Frame};
use bulkhead_spdy::headers::{HeaderCompressor, HeaderDecompressor};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Fails the test if `f` takes longer than `secs`.
pub async fn within<F: std::future::Future>(secs: u64, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), f).await.expect("timed out")
}

/// A peer that writes and reads frames by hand.
pub struct RawPeer<T> {
    pub io: T,
    deflate: HeaderCompressor,
    inflate: HeaderDecompressor,
    buf: BytesMut,
}

impl<T: AsyncRead + AsyncWrite + Unpin> RawPeer<T> {
    pub fn new(io: T) -> Self {
        RawPeer { io, deflate: HeaderCompressor::new(), inflate: HeaderDecompressor::new(), buf: BytesMut::new() }
    }

    pub async fn send(&mut self, f: Frame) {
        let mut out = Vec::new();
        frame::encode(&f, &mut self.deflate, &mut out).unwrap();
        self.io.write_all(&out).await.unwrap();
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
    }

    /// The next frame; `None` at end of connection.
    pub async fn recv(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = frame::decode(&mut self.buf, &mut self.inflate).unwrap() {
                return Some(f);
            }
            let n = within(10, self.io.read_buf(&mut self.buf)).await.unwrap();
            if n == 0 {
                return None;
            }
        }
    }

    /// The next frame that is not a WINDOW_UPDATE.
    pub async fn recv_skip_wu(&mut self) -> Option<Frame> {
        loop {
            match self.recv().await? {
                Frame::WindowUpdate { .. } => continue,
                f => return Some(f),
            }
        }
    }

    /// Compresses a raw name/value block with this peer's compressor.
    pub fn compress(&mut self, raw: &[u8]) -> Vec<u8> {
        self.deflate.compress(raw).unwrap()
    }
}

pub fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

pub fn syn(id: u32, headers: &[(&str, &str)]) -> Frame {
    Frame::SynStream {
        stream_id: id,
        associated_id: 0,
        priority: 0,
        slot: 0,
        fin: false,
        unidirectional: false,
        headers: h(headers),
    }
}

pub fn data(id: u32, fin: bool, bytes: &[u8]) -> Frame {
    Frame::Data { stream_id: id, fin, data: bytes::Bytes::copy_from_slice(bytes) }
}

/// A deterministic byte stream with a prime period (65521), so a lost,
/// repeated or reordered chunk of any power-of-two size shows.
pub struct Pattern {
    block: Vec<u8>,
}

impl Pattern {
    const PERIOD: usize = 65521;

    pub fn new() -> Self {
        let mut x = XorShift(0x1234_5678_9abc_def1);
        // Twice the period, so any window of up to one period is one slice.
        let first: Vec<u8> = (0..Self::PERIOD).map(|_| x.next() as u8).collect();
        let mut block = first.clone();
        block.extend_from_slice(&first);
        Pattern { block }
    }

    /// Fills `buf` with the pattern's bytes from `offset` on.
    pub fn fill(&self, buf: &mut [u8], offset: u64) {
        let mut off = (offset % Self::PERIOD as u64) as usize;
        for chunk in buf.chunks_mut(Self::PERIOD) {
            chunk.copy_from_slice(&self.block[off..off + chunk.len()]);
            off = (off + chunk.len()) % Self::PERIOD;
        }
    }

    /// Whether `buf` holds the pattern's bytes from `offset` on.
    pub fn check(&self, buf: &[u8], offset: u64) -> bool {
        let mut off = (offset % Self::PERIOD as u64) as usize;
        for chunk in buf.chunks(Self::PERIOD) {
            if chunk != &self.block[off..off + chunk.len()] {
                return false;
            }
            off = (off + chunk.len()) % Self::PERIOD;
        }
        true
    }
}

pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Resident memory of this process, in bytes (Linux).
pub fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    pages * 4096
}
