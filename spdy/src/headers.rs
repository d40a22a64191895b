//! Header blocks: the SPDY/3 name/value layout and its zlib compression.
//!
//! A name/value block is `u32 count`, then per pair `u32 len, name, u32 len,
//! value`, all big-endian. Names are lower-case; one name appears once, its
//! values joined by NUL. spdystream rejects a block whose names are not
//! lower-case or repeat (`spdy/read.go`, `parseHeaderValueBlock`) and then
//! drops the whole connection, so [`encode_block`] lower-cases and merges.
//!
//! Blocks are compressed with one zlib stream per direction for the whole
//! session (not raw deflate: a zlib header with FDICT and the dictionary's
//! id), primed with the SPDY/3 dictionary and sync-flushed after each block
//! so that every frame can be decoded on its own arrival. Go's
//! `zlib.NewWriterLevelDict` + `Flush()` produce exactly this.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::dictionary::{DICTIONARY, DICTIONARY_ID};

/// Header pairs as they travel: lower-case names, in block order. A name
/// whose value held NULs appears once per value.
pub type Headers = Vec<(String, String)>;

/// The largest decompressed header block accepted (and the largest raw
/// block we send). spdystream's own limits are 1 MiB per name or value and
/// 1000 pairs; Kubernetes' blocks are a few dozen bytes.
pub const MAX_HEADER_BLOCK: usize = 1 << 20;

/// Why a header block could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The zlib stream is broken; the session cannot go on (its state is
    /// shared by every later block).
    #[error("header decompression failed: {0}")]
    Decompress(String),
    /// Compression failed (an internal error).
    #[error("header compression failed: {0}")]
    Compress(String),
    /// The block decompressed fine but is larger than [`MAX_HEADER_BLOCK`].
    #[error("header block larger than {MAX_HEADER_BLOCK} bytes")]
    TooLarge,
    /// The name/value layout is wrong (truncated, counts that do not add up).
    #[error("malformed name/value block: {0}")]
    Malformed(&'static str),
    /// A header we were asked to send cannot be sent.
    #[error("invalid header name {0:?}: {1}")]
    InvalidName(String, &'static str),
}

impl HeaderError {
    /// Whether the error breaks the session's shared compression state
    /// (a session error) rather than one block (a stream error).
    pub fn is_fatal(&self) -> bool {
        matches!(self, HeaderError::Decompress(_) | HeaderError::Compress(_))
    }
}

/// Encodes headers as an uncompressed name/value block: names lower-cased,
/// repeated names merged with their values joined by NUL, first-seen order.
pub fn encode_block<N: AsRef<str>, V: AsRef<str>>(headers: &[(N, V)]) -> Result<Vec<u8>, HeaderError> {
    let mut merged: Vec<(String, String)> = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let name = name.as_ref();
        if name.is_empty() {
            return Err(HeaderError::InvalidName(name.to_owned(), "empty"));
        }
        if name.contains('\0') {
            return Err(HeaderError::InvalidName(name.to_owned(), "contains NUL"));
        }
        let name = name.to_lowercase();
        match merged.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => {
                v.push('\0');
                v.push_str(value.as_ref());
            }
            None => merged.push((name, value.as_ref().to_owned())),
        }
    }
    let size = 4 + merged.iter().map(|(n, v)| 8 + n.len() + v.len()).sum::<usize>();
    if size > MAX_HEADER_BLOCK {
        return Err(HeaderError::TooLarge);
    }
    let mut out = Vec::with_capacity(size);
    put_len(&mut out, merged.len());
    for (n, v) in &merged {
        put_len(&mut out, n.len());
        out.extend_from_slice(n.as_bytes());
        put_len(&mut out, v.len());
        out.extend_from_slice(v.as_bytes());
    }
    Ok(out)
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    // Callers bound every length by MAX_HEADER_BLOCK, far below u32::MAX.
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
}

/// Decodes an uncompressed name/value block. Names are lower-cased (a peer
/// that sends upper case is tolerated) and NUL-joined values are split.
/// Bytes that are not UTF-8 are replaced, never rejected.
pub fn decode_block(block: &[u8]) -> Result<Headers, HeaderError> {
    let mut rest = block;
    let count = take_u32(&mut rest)?;
    // Each pair needs at least 8 bytes; a count beyond that is a lie that
    // must not size an allocation.
    if count as usize > rest.len() / 8 {
        return Err(HeaderError::Malformed("pair count exceeds the block"));
    }
    let mut headers = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let name = take_bytes(&mut rest)?;
        let value = take_bytes(&mut rest)?;
        let name = String::from_utf8_lossy(name).to_lowercase();
        for v in value.split(|b| *b == 0) {
            headers.push((name.clone(), String::from_utf8_lossy(v).into_owned()));
        }
    }
    if !rest.is_empty() {
        return Err(HeaderError::Malformed("trailing bytes after the last pair"));
    }
    Ok(headers)
}

fn take_u32(rest: &mut &[u8]) -> Result<u32, HeaderError> {
    let Some((head, tail)) = rest.split_first_chunk::<4>() else {
        return Err(HeaderError::Malformed("truncated length"));
    };
    *rest = tail;
    Ok(u32::from_be_bytes(*head))
}

fn take_bytes<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], HeaderError> {
    let len = take_u32(rest)? as usize;
    if len > rest.len() {
        return Err(HeaderError::Malformed("string runs past the block"));
    }
    let (s, tail) = rest.split_at(len);
    *rest = tail;
    Ok(s)
}

/// The sending half of a session's header compression: one zlib stream,
/// primed with the dictionary, sync-flushed after each block.
pub struct HeaderCompressor {
    z: Compress,
    primed: bool,
}

impl Default for HeaderCompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderCompressor {
    /// A compressor for a new session.
    pub fn new() -> Self {
        HeaderCompressor { z: Compress::new(Compression::default(), true), primed: false }
    }

    /// Compresses one uncompressed name/value block (see [`encode_block`])
    /// and returns the bytes that go into the frame.
    pub fn compress(&mut self, block: &[u8]) -> Result<Vec<u8>, HeaderError> {
        if !self.primed {
            self.z.set_dictionary(DICTIONARY).map_err(|e| HeaderError::Compress(e.to_string()))?;
            self.primed = true;
        }
        let mut out = Vec::with_capacity(block.len() / 2 + 64);
        let mut pos = 0;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let before_in = self.z.total_in();
            self.z
                .compress_vec(&block[pos..], &mut out, FlushCompress::Sync)
                .map_err(|e| HeaderError::Compress(e.to_string()))?;
            pos += usize::try_from(self.z.total_in() - before_in).unwrap_or(usize::MAX).min(block.len() - pos);
            // The flush is complete once all input is in and zlib stopped
            // with room to spare in the output.
            if pos == block.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// The receiving half: one zlib stream for all header blocks of a session.
pub struct HeaderDecompressor {
    z: Decompress,
}

impl Default for HeaderDecompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderDecompressor {
    /// A decompressor for a new session.
    pub fn new() -> Self {
        HeaderDecompressor { z: Decompress::new(true) }
    }

    /// Decompresses the compressed bytes of one frame. The whole input is
    /// always consumed, so the shared state stays in step even when the
    /// block is refused as too large ([`HeaderError::TooLarge`]): that is a
    /// stream error, everything else is fatal to the session.
    pub fn decompress(&mut self, input: &[u8]) -> Result<Vec<u8>, HeaderError> {
        let mut out: Vec<u8> = Vec::with_capacity((input.len() * 4).clamp(64, 64 * 1024));
        let mut pos = 0;
        let mut too_large = false;
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(out.capacity().clamp(1024, 64 * 1024));
            }
            let room = out.capacity() - out.len();
            let before_in = self.z.total_in();
            let before_out = out.len();
            let res = self.z.decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync);
            let consumed = usize::try_from(self.z.total_in() - before_in).unwrap_or(usize::MAX).min(input.len() - pos);
            pos += consumed;
            let produced = out.len() - before_out;
            match res {
                Ok(Status::StreamEnd) => {
                    // A peer that finishes its zlib stream cannot send
                    // another block; this one is still good.
                    if pos < input.len() {
                        return Err(HeaderError::Decompress("data after the end of the zlib stream".into()));
                    }
                    break;
                }
                Ok(_) => {}
                Err(e) => match e.needs_dictionary() {
                    Some(id) if id == DICTIONARY_ID => {
                        self.z.set_dictionary(DICTIONARY).map_err(|e| HeaderError::Decompress(e.to_string()))?;
                        continue;
                    }
                    Some(id) => {
                        return Err(HeaderError::Decompress(format!(
                            "peer uses dictionary {id:#010x}, not the SPDY/3 one"
                        )));
                    }
                    None => return Err(HeaderError::Decompress(e.to_string())),
                },
            }
            if out.len() > MAX_HEADER_BLOCK {
                too_large = true;
                out.clear();
            }
            if pos == input.len() && produced < room {
                break;
            }
            if consumed == 0 && produced == 0 {
                // No progress with room to spare: the input is exhausted
                // mid-block (a truncated block) or zlib is stuck.
                if pos == input.len() {
                    break;
                }
                return Err(HeaderError::Decompress("zlib made no progress".into()));
            }
        }
        if too_large {
            return Err(HeaderError::TooLarge);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adler32(data: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for &x in data {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        (b << 16) | a
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn dictionary_is_the_spdy3_one() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert_eq!(adler32(DICTIONARY), DICTIONARY_ID);
        assert!(DICTIONARY.starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
        assert!(DICTIONARY.ends_with(b"utf-,*,enq=0."));
    }

    #[test]
    fn block_round_trip_lowercases_merges_and_splits() {
        let block = encode_block(&[("StreamType", "error"), ("Port", "80"), ("port", "81"), ("x", "")]).unwrap();
        let h = decode_block(&block).unwrap();
        assert_eq!(
            h,
            vec![
                ("streamtype".to_owned(), "error".to_owned()),
                ("port".to_owned(), "80".to_owned()),
                ("port".to_owned(), "81".to_owned()),
                ("x".to_owned(), String::new()),
            ]
        );
        // Exact layout: count 3, then "streamtype"/"error", ...
        assert_eq!(&block[..4], &[0, 0, 0, 3]);
        assert_eq!(&block[4..8], &[0, 0, 0, 10]);
        assert_eq!(&block[8..18], b"streamtype");
    }

    #[test]
    fn empty_block() {
        let block = encode_block::<&str, &str>(&[]).unwrap();
        assert_eq!(block, vec![0, 0, 0, 0]);
        assert!(decode_block(&block).unwrap().is_empty());
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(matches!(encode_block(&[("", "x")]), Err(HeaderError::InvalidName(..))));
        assert!(matches!(encode_block(&[("a\0b", "x")]), Err(HeaderError::InvalidName(..))));
        let huge = "v".repeat(MAX_HEADER_BLOCK);
        assert_eq!(encode_block(&[("a", huge.as_str())]), Err(HeaderError::TooLarge));
    }

    #[test]
    fn malformed_blocks_are_errors() {
        for bad in [
            &[][..],
            &[0, 0, 0][..],
            &[0, 0, 0, 1][..],
            &[0, 0, 0, 1, 0, 0, 0, 9, b'a', 0, 0, 0, 0][..],
            &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0][..],
            &[0, 0, 0, 0, 1][..],
            &[0, 0, 0, 1, 0, 0, 0, 1, b'a', 0xff, 0xff, 0xff, 0xff][..],
        ] {
            assert!(matches!(decode_block(bad), Err(HeaderError::Malformed(_))), "{bad:?}");
        }
    }

    #[test]
    fn blocks_share_one_zlib_stream() {
        let mut c = HeaderCompressor::new();
        let mut d = HeaderDecompressor::new();
        let blocks: Vec<Vec<(&str, &str)>> = vec![
            vec![("streamtype", "error"), ("port", "8080"), ("requestid", "0")],
            vec![("streamtype", "data"), ("port", "8080"), ("requestid", "0")],
            vec![],
            vec![("streamtype", "stdout")],
        ];
        let mut sizes = vec![];
        for b in &blocks {
            let raw = encode_block(b).unwrap();
            let z = c.compress(&raw).unwrap();
            sizes.push(z.len());
            // Every block ends with a sync flush marker.
            assert!(z.ends_with(&[0, 0, 0xff, 0xff]), "{z:02x?}");
            assert_eq!(d.decompress(&z).unwrap(), raw);
        }
        // The first block carries the zlib header with FDICT and the
        // dictionary id; later ones reuse the context and are smaller.
        assert!(sizes[1] < sizes[0], "{sizes:?}");
    }

    #[test]
    fn first_block_has_a_zlib_header_naming_the_dictionary() {
        let mut c = HeaderCompressor::new();
        let z = c.compress(&encode_block::<&str, &str>(&[]).unwrap()).unwrap();
        assert_eq!(z[0] & 0x0f, 8, "deflate");
        assert_ne!(z[1] & 0x20, 0, "FDICT");
        assert_eq!((u16::from(z[0]) << 8 | u16::from(z[1])) % 31, 0, "FCHECK");
        assert_eq!(&z[2..6], &DICTIONARY_ID.to_be_bytes());
    }

    /// Blocks written by spdystream v0.2.0's framer (Go's compress/zlib at
    /// BestCompression): SYN_STREAM {streamType: error}, SYN_STREAM
    /// {streamType: stdout}, SYN_REPLY {} - the header-block parts only.
    #[test]
    fn decodes_blocks_compressed_by_spdystream() {
        let mut d = HeaderDecompressor::new();
        let b1 = d.decompress(&hex("78f9e3c6a7c26260606004a7b392a2d4c45c6851c29a0a0a6800000000ffff")).unwrap();
        assert_eq!(decode_block(&b1).unwrap(), vec![("streamtype".to_owned(), "error".to_owned())]);
        let b2 = d.decompress(&hex("c22ac5565c92925f5a02000000ffff")).unwrap();
        assert_eq!(decode_block(&b2).unwrap(), vec![("streamtype".to_owned(), "stdout".to_owned())]);
        let b3 = d.decompress(&hex("6260606000000000ffff")).unwrap();
        assert!(decode_block(&b3).unwrap().is_empty());
    }

    /// A block from node's spdy-transport test suite, compressed with a
    /// 2 KiB window (zlib header 0x38) and stored, not deflated.
    #[test]
    fn decodes_a_small_window_stored_block() {
        let mut d = HeaderDecompressor::new();
        let z = hex("3830e3c6a7c2004300bcff00000003000000057468657265000000057468657265000000073a7374617475730000\
             0006323030204f4b000000083a76657273696f6e00000008485454502f312e31000000ffff");
        let h = decode_block(&d.decompress(&z).unwrap()).unwrap();
        assert_eq!(h[0], ("there".to_owned(), "there".to_owned()));
        assert_eq!(h[1], (":status".to_owned(), "200 OK".to_owned()));
        assert_eq!(h[2], (":version".to_owned(), "HTTP/1.1".to_owned()));
    }

    #[test]
    fn a_wrong_dictionary_or_garbage_is_fatal() {
        let mut d = HeaderDecompressor::new();
        // zlib header with FDICT and SPDY/2's dictionary id.
        let e = d.decompress(&hex("78f9dfa251b2626000000000ffff")).unwrap_err();
        assert!(e.is_fatal(), "{e}");
        let mut d = HeaderDecompressor::new();
        assert!(d.decompress(&[0x17, 0xf9, 1, 2, 3, 4, 5]).unwrap_err().is_fatal());
    }

    #[test]
    fn oversized_blocks_are_refused_but_the_stream_stays_in_step() {
        let mut c = HeaderCompressor::new();
        let mut d = HeaderDecompressor::new();
        // Compresses to almost nothing, inflates past the limit.
        let mut raw = vec![0u8; MAX_HEADER_BLOCK + 4096];
        raw[3] = 1;
        let z = c.compress(&raw).unwrap();
        assert!(z.len() < 8192);
        assert_eq!(d.decompress(&z), Err(HeaderError::TooLarge));
        let next = encode_block(&[("a", "b")]).unwrap();
        assert_eq!(d.decompress(&c.compress(&next).unwrap()).unwrap(), next);
    }

    #[test]
    fn empty_input_decodes_to_nothing() {
        let mut d = HeaderDecompressor::new();
        assert_eq!(d.decompress(&[]).unwrap(), Vec::<u8>::new());
    }
}
