//! `bulkhead-oci`, the runc-compatible command; all logic lives in the
//! `bulkhead_runtime` library.

/// dlmalloc keeps what it has mapped: a short-lived command that builds and
/// drops many small values (argument parsing, JSON) would otherwise map,
/// fault in and unmap the same pages over and over with musl's allocator.
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

fn main() -> std::process::ExitCode {
    bulkhead_runtime::oci_cli::main()
}
