#!/usr/bin/env bash
# Installs what is missing, builds kura, and starts it with its embedded defaults:
# http://127.0.0.1:5872, data in ./kura-data, region us-east-1. Extra arguments go to
# `kura serve` (see `kura serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh run
cargo build --release --locked -p kura
exec target/release/kura serve "$@"
