//! The `bulkhead` daemon and its `config` subcommands; all logic lives in
//! the `bulkhead_cri` library.

fn main() -> std::process::ExitCode {
    bulkhead_cri::cli::main()
}
