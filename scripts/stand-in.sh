#!/usr/bin/env bash
# Runs the stand-in model of the README: an OpenAI-compatible (or Anthropic, or Ollama)
# server on loopback that calls the `calc` tool for arithmetic and answers with its result.
# Builds in seconds after scripts/serve.sh (same build cache, no guest components).
#
#   bash scripts/stand-in.sh [openai|anthropic|ollama] [ADDRESS]   # default: openai 127.0.0.1:8000
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kelp-target}"
cargo build --release --locked -p kelp-fake-vendor
exec "$CARGO_TARGET_DIR/release/fake-llm" "$@"
