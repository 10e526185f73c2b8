//! Test-only crate: see `tests/`. It drives the real `kura` binary (path in `KURA_BIN`,
//! default `target/debug/kura`) with the AWS SDK for Rust, the way a Rust application
//! would use kura.
