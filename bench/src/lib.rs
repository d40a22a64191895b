//! Shared by bulkhead's benchmark programs (the binaries in `src/`), which
//! run bulkhead and its peers on one host and print medians and ratios.
//! It must not hold a benchmark's logic: only what two of them repeat.

pub mod daemon;
