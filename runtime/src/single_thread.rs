//! The checked rule that containers are only ever spawned from a
//! single-threaded process. clone/fork and the steps after it (setns, mount,
//! pivot_root, exec) in a multi-threaded process can deadlock on locks held
//! by threads that do not exist in the child, and setns is refused outright
//! for some namespaces (youki #3011, #3027; runwasi #357).

use crate::{Error, Result};

/// How many threads this process has, from `/proc/self/status`.
pub fn thread_count() -> Result<usize> {
    let path = "/proc/self/status";
    let status = crate::procfs::read(path).map_err(|source| Error::Read { path: path.into(), source })?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| Error::Read { path: path.into(), source: std::io::Error::other("no Threads: line") })
}

/// Fails unless this process has exactly one thread.
pub fn ensure_single_threaded() -> Result<()> {
    match thread_count()? {
        1 => Ok(()),
        threads => Err(Error::MultiThreaded { threads }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_process_has_threads_and_is_refused() {
        // The test harness runs tests on their own threads: never one thread.
        let keep = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(200)));
        let err = ensure_single_threaded().unwrap_err();
        assert!(matches!(err, Error::MultiThreaded { threads } if threads >= 2), "{err}");
        assert!(err.to_string().contains("single-threaded"), "{err}");
        keep.join().unwrap();
    }
}
