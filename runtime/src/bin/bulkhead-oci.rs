//! `bulkhead-oci`, the runc-compatible command; all logic lives in the
//! `bulkhead_runtime` library.

fn main() -> std::process::ExitCode {
    bulkhead_runtime::oci_cli::main()
}
