//! The CRI container log format kubelet reads:
//! `<RFC3339Nano time> <stdout|stderr> <F|P> <text>\n`. A line longer than
//! the maximum is cut into `P` (partial) pieces ended by an `F` (full) one;
//! text left without a newline when the stream ends is written as `P`, as
//! containerd does.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The longest line piece written at once (containerd's default).
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// One container's log file and each stream's unfinished line.
#[derive(Debug)]
pub struct Log {
    path: PathBuf,
    file: File,
    pending: [Vec<u8>; 2],
}

fn open(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    File::options().create(true).append(true).open(path)
}

impl Log {
    pub fn open(path: &Path) -> std::io::Result<Log> {
        Ok(Log { path: path.to_owned(), file: open(path)?, pending: [Vec::new(), Vec::new()] })
    }

    /// Reopens the file at the same path (kubelet renamed it to rotate).
    pub fn reopen(&mut self) -> std::io::Result<()> {
        self.file = open(&self.path)?;
        Ok(())
    }

    fn write(&mut self, stream: Stream, tag: &str, text: &[u8], now: SystemTime) -> std::io::Result<()> {
        let mut line = Vec::with_capacity(text.len() + 48);
        line.extend_from_slice(humantime::format_rfc3339_nanos(now).to_string().as_bytes());
        line.push(b' ');
        line.extend_from_slice(stream.name().as_bytes());
        line.push(b' ');
        line.extend_from_slice(tag.as_bytes());
        line.push(b' ');
        line.extend_from_slice(text);
        line.push(b'\n');
        // One write per line: O_APPEND keeps concurrent writers' lines whole.
        self.file.write_all(&line)
    }

    /// Takes bytes the container wrote to `stream`; writes every complete
    /// line, and pieces of an over-long one.
    pub fn feed(&mut self, stream: Stream, mut data: &[u8], now: SystemTime) -> std::io::Result<()> {
        while let Some(end) = data.iter().position(|&b| b == b'\n') {
            let mut pending = std::mem::take(&mut self.pending[stream.index()]);
            pending.extend_from_slice(&data[..end]);
            self.write_line(stream, &pending, now)?;
            data = &data[end + 1..];
        }
        let pending = &mut self.pending[stream.index()];
        pending.extend_from_slice(data);
        while self.pending[stream.index()].len() > MAX_LINE {
            let rest = self.pending[stream.index()].split_off(MAX_LINE);
            let piece = std::mem::replace(&mut self.pending[stream.index()], rest);
            self.write(stream, "P", &piece, now)?;
        }
        Ok(())
    }

    fn write_line(&mut self, stream: Stream, line: &[u8], now: SystemTime) -> std::io::Result<()> {
        let mut rest = line;
        while rest.len() > MAX_LINE {
            self.write(stream, "P", &rest[..MAX_LINE], now)?;
            rest = &rest[MAX_LINE..];
        }
        self.write(stream, "F", rest, now)
    }

    /// The stream ended: what is left without a newline is a partial line.
    pub fn finish(&mut self, stream: Stream, now: SystemTime) -> std::io::Result<()> {
        let pending = std::mem::take(&mut self.pending[stream.index()]);
        if pending.is_empty() { Ok(()) } else { self.write(stream, "P", &pending, now) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &Path) -> Vec<(String, String, String)> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let mut parts = l.splitn(4, ' ');
                let time = parts.next().unwrap();
                assert!(humantime::parse_rfc3339(time).is_ok(), "{time}");
                let (stream, tag, text) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap_or(""));
                (stream.to_owned(), tag.to_owned(), text.to_owned())
            })
            .collect()
    }

    fn t(stream: &str, tag: &str, text: &str) -> (String, String, String) {
        (stream.into(), tag.into(), text.into())
    }

    #[test]
    fn lines_are_tagged_split_and_finished_as_kubelet_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pods/c/0.log");
        let mut log = Log::open(&path).unwrap();
        let now = SystemTime::now();
        log.feed(Stream::Stdout, b"hello\nwor", now).unwrap();
        log.feed(Stream::Stderr, b"oops\n", now).unwrap();
        log.feed(Stream::Stdout, b"ld\n\n", now).unwrap();
        let long = "x".repeat(MAX_LINE * 2 + 5);
        log.feed(Stream::Stdout, format!("{long}\n").as_bytes(), now).unwrap();
        log.feed(Stream::Stdout, b"no newline", now).unwrap();
        log.finish(Stream::Stdout, now).unwrap();
        log.finish(Stream::Stderr, now).unwrap();
        let x = |n: usize| "x".repeat(n);
        assert_eq!(
            lines(&path),
            [
                t("stdout", "F", "hello"),
                t("stderr", "F", "oops"),
                t("stdout", "F", "world"),
                t("stdout", "F", ""),
                t("stdout", "P", &x(MAX_LINE)),
                t("stdout", "P", &x(MAX_LINE)),
                t("stdout", "F", &x(5)),
                t("stdout", "P", "no newline"),
            ]
        );
        // Rotation: kubelet renames the file, then asks for a reopen.
        std::fs::rename(&path, dir.path().join("pods/c/0.log.1")).unwrap();
        log.reopen().unwrap();
        log.feed(Stream::Stdout, b"after\n", now).unwrap();
        assert_eq!(lines(&path), [t("stdout", "F", "after")]);
    }

    #[test]
    fn a_long_line_fed_in_small_reads_is_cut_at_the_maximum() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut log = Log::open(&path).unwrap();
        let now = SystemTime::now();
        for _ in 0..(MAX_LINE + 10) / 10 {
            log.feed(Stream::Stdout, b"yyyyyyyyyy", now).unwrap();
        }
        log.feed(Stream::Stdout, b"\n", now).unwrap();
        let got = lines(&path);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].1.as_str(), got[0].2.len()), ("P", MAX_LINE));
        assert_eq!(got[1].1, "F");
    }
}
