#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine that has only the Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

# Reuse one build cache across clones: wasmtime takes minutes to compile.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kelp-target}"

# Cargo does not tell two checkouts of this workspace apart by their path, so this one's crates
# could be taken as built when another checkout built them: with that checkout's paths baked
# in (build scripts' embedded files, `CARGO_MANIFEST_DIR`), which may be gone, or mixed with
# this checkout's copies of the same crates. When the cache was last used from elsewhere, this
# repository's own crates are rebuilt: the host workspace's, and the guest and fuzz builds,
# which hold little else (minutes; wasmtime and the other dependencies stay cached).
mkdir -p "$CARGO_TARGET_DIR"
checkout_mark="$CARGO_TARGET_DIR/.kelp-checkout"
if [ "$(cat "$checkout_mark" 2>/dev/null || true)" != "$PWD" ]; then
  cargo clean -p kelp -p kelp-registry -p kelp-tests -p kelp-fake-vendor >/dev/null 2>&1 || true
  rm -rf "$CARGO_TARGET_DIR/guests" "$CARGO_TARGET_DIR/fuzz"
  printf %s "$PWD" > "$checkout_mark"
fi

if command -v rustup >/dev/null 2>&1; then
  rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
  rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed | grep -q '^clippy' || rustup component add clippy
fi

echo "== format"
cargo fmt --all -- --check
(cd sdk && cargo fmt -- --check)
(cd plugins && cargo fmt --all -- --check)
(cd tests/components && cargo fmt --all -- --check)
(cd tests/fuzz && cargo fmt --all -- --check)

echo "== lint"
cargo clippy --workspace --all-targets --locked -- -D warnings
(cd plugins && cargo clippy --workspace --release --target wasm32-wasip2 --locked -- -D warnings)

echo "== guest-side unit tests (SDK stream parsers, plugin logic), native"
(cd sdk && cargo test --locked)
(cd plugins && cargo test --workspace --locked)

echo "== host, registry and end-to-end suite (builds the plugin components first)"
cargo test --workspace --locked

# The benchmarks were compiled (checked) by clippy's --all-targets above; building them for
# real is a release build of ten minutes that proves nothing more.

echo "== fuzz smoke: every fuzz target for 5 s from its seeds and the inputs that once found bugs"
bash scripts/fuzz.sh 5
