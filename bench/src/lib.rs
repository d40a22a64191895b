//! Shared by bulkhead's benchmark programs (the binaries in `src/`), which
//! run bulkhead and its peers on one host and print medians and ratios.
//! It must not hold a benchmark's logic: only what two of them repeat.

pub mod daemon;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Runs a bench's `run` on a two-thread tokio runtime; an error is printed
/// after the program's name and fails the exit code.
pub fn main_with(name: &str, run: impl Future<Output = daemon::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The `bulkhead` binary: `given`, else the one beside this program.
pub fn bulkhead_binary(given: Option<&Path>) -> daemon::Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path.to_owned());
    }
    let exe = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
    Ok(exe.with_file_name("bulkhead"))
}

/// Fails naming the first of `paths` that is not a file (a binary to run).
pub fn require_files<'a>(paths: impl IntoIterator<Item = &'a Path>) -> daemon::Result<()> {
    match paths.into_iter().find(|p| !p.is_file()) {
        Some(missing) => Err(format!("{} is missing", missing.display())),
        None => Ok(()),
    }
}

/// A fresh work directory named `prefix…`, under `under` (else the
/// system's temporary directory); removed when dropped.
pub fn work_dir(prefix: &str, under: Option<&Path>) -> daemon::Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix);
    match under {
        Some(dir) => builder.tempdir_in(dir),
        None => builder.tempdir(),
    }
    .map_err(|e| format!("work directory: {e}"))
}
