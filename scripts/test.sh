#!/usr/bin/env bash
# Runs every check and test kura has: formatting, lints, unit tests, and the integration
# tests that drive the real binary with real clients (boto3, the aws CLI v2).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test

step() { printf '\n==> %s\n' "$*"; }
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "the fuzz targets still compile (fuzz/ is its own workspace; running them needs nightly)"
cargo check --locked --manifest-path fuzz/Cargo.toml --target-dir target/fuzz-check
step "build the binary for the integration tests"
cargo build --locked -p kura
step "unit tests, and the AWS SDK for Rust against the real binary"
KURA_BIN="$PWD/target/debug/kura" cargo test --workspace --locked
step "integration tests (real kura, real clients)"
KURA_BIN="$PWD/target/debug/kura" python3 -m pytest -q -p no:cacheprovider tests/python "$@"
