//! Shared by bulkhead's benchmark programs (the binaries in `src/`), which
//! run bulkhead and its peers on one host and print medians and ratios.
//! It must not hold a benchmark's logic: only what two of them repeat.

pub mod daemon;
pub mod pods;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

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

/// Milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile (`q` in 0..=1) of unsorted samples.
pub fn percentile(xs: &[Duration], q: f64) -> Duration {
    let mut v = xs.to_vec();
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// The median of `xs` (the mean of the middle two for an even count).
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub fn mean(xs: &[Duration]) -> Duration {
    if xs.is_empty() { Duration::ZERO } else { xs.iter().sum::<Duration>() / xs.len() as u32 }
}

/// "met" or "missed", for a goal.
pub fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "missed" }
}

/// Prints a Markdown table with a blank line before it: `header`, then
/// `rows`; the first `left` columns aligned left, the rest (numbers) right.
pub fn print_table<R: AsRef<[String]>>(header: &[&str], left: usize, rows: &[R]) {
    let align: Vec<&str> = (0..header.len()).map(|i| if i < left { "---" } else { "---:" }).collect();
    println!();
    println!("| {} |", header.join(" | "));
    println!("|{}|", align.join("|"));
    for row in rows {
        println!("| {} |", row.as_ref().join(" | "));
    }
}
