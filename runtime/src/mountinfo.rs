//! The kernel's mount table as `/proc/<pid>/mountinfo` shows it (proc(5)).

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// One mount of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The path within the filesystem that is mounted (a cgroup mount's root).
    pub root: PathBuf,
    /// Where it is mounted, unescaped.
    pub mountpoint: PathBuf,
    pub fstype: String,
    pub source: String,
    /// Per-superblock options, e.g. `rw,cpu,cpuacct`.
    pub super_options: String,
}

/// Reads and parses a mountinfo file.
pub fn read(path: &Path) -> Result<Vec<Mount>> {
    let text = crate::procfs::read(path).map_err(|source| Error::Read { path: path.to_owned(), source })?;
    Ok(parse(&text))
}

/// The mount points at or below `dir` in this process's mount table,
/// deepest first (the order to unmount them in).
pub fn mounted_under(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = read(Path::new("/proc/self/mountinfo"))
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.mountpoint)
        .filter(|m| m.starts_with(dir))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    found
}

/// Parses mountinfo text, skipping malformed lines.
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Mount> {
    // "<id> <parent> <maj:min> <root> <mountpoint> <opts> [optional...] - <fstype> <source> <superopts>"
    let (left, right) = line.split_once(" - ")?;
    let mut left = left.split_whitespace().skip(3);
    let (root, mountpoint) = (left.next()?, left.next()?);
    let mut right = right.split_whitespace();
    Some(Mount {
        root: PathBuf::from(unescape(root)),
        mountpoint: PathBuf::from(unescape(mountpoint)),
        fstype: right.next()?.to_owned(),
        source: unescape(right.next()?),
        super_options: right.next().unwrap_or_default().to_owned(),
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal `\NNN`.
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal =
            bytes.get(i + 1..i + 4).filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        let value = octal.map(|d| d.iter().fold(0u32, |n, b| n * 8 + u32::from(b - b'0')));
        if let Some(byte) = value.and_then(|v| u8::try_from(v).ok()) {
            out.push(byte);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_with_optional_fields_and_escapes() {
        let text = "36 31 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct\n\
                    90 23 0:50 / /tmp/a\\040b rw - tmpfs my\\040tmp rw\n\
                    garbage\n";
        let mounts = parse(text);
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].fstype, "cgroup");
        assert_eq!(mounts[0].super_options, "rw,cpu,cpuacct");
        assert_eq!(mounts[1].mountpoint, PathBuf::from("/tmp/a b"));
        assert_eq!(mounts[1].source, "my tmp");
    }

    #[test]
    fn escapes() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape(r"/a\\"), r"/a\\");
        assert_eq!(unescape(r"/a\777"), r"/a\777", "out of byte range: kept as is");
        assert_eq!(unescape(r"/a\04"), r"/a\04");
    }
}
