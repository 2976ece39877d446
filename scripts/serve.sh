#!/usr/bin/env bash
# Builds Kelp — with its first-party plugins built into the binary — and runs `kelp serve` on
# the embedded defaults: SQLite in the data directory (~/.local/share/kelp, or
# $KELP_DATA_DIR), listening on 127.0.0.1:7777. Needs only the Rust toolchain; works offline
# once crates are fetched. Extra arguments go to `kelp serve` (e.g. --data-dir /tmp/kelp).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kelp-target}"
if command -v rustup >/dev/null 2>&1; then
  rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
fi
cargo build --release --locked -p kelp
exec "$CARGO_TARGET_DIR/release/kelp" serve "$@"
