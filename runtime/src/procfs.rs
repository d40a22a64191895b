//! Reading the kernel's generated files under /proc. They report a size of
//! zero, so a plain `read_to_string` starts with a tiny buffer and grows it
//! through a series of short reads; these start with room for the whole file.

use std::io::Read;
use std::path::Path;

/// The text of a /proc file, read with a buffer big enough for it at once.
pub(crate) fn read(path: impl AsRef<Path>) -> std::io::Result<String> {
    let mut text = String::with_capacity(8192);
    std::fs::File::open(path)?.read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_a_whole_proc_file() {
        let status = super::read("/proc/self/status").unwrap();
        assert!(status.starts_with("Name:") && status.contains("\nThreads:"), "{status}");
    }
}
