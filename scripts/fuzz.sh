#!/usr/bin/env bash
# Fuzzes the parsers that take untrusted bytes (see docs/testing.md), each target for the given
# number of seconds (default 60), on the stable toolchain:
#
#   scripts/fuzz.sh [seconds-per-target] [target...]
#
# Stable Rust works because no sanitizer is asked for (`--sanitizer none`): libFuzzer's coverage
# instrumentation (`-Cpasses=sancov-module` and its `-Cllvm-args`) is stable, only the
# sanitizers need `-Z`. The code under test is safe Rust, so a sanitizer would add little; the
# targets are built with debug assertions and overflow checks instead (tests/fuzz/Cargo.toml).
#
# Each target starts from its checked-in seeds (tests/fuzz/seeds/<target>) and the inputs that
# once found a bug (tests/fuzz/regressions/<target>), and grows tests/fuzz/corpus/<target>
# (git-ignored, kept between runs). A failing input lands in tests/fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
# libFuzzer reads a time of 0 as "forever".
if ! [[ $seconds =~ ^[0-9]+$ ]] || [[ $seconds -lt 1 ]]; then
  echo "usage: scripts/fuzz.sh [seconds-per-target >= 1] [target...]" >&2
  exit 2
fi
CARGO_FUZZ_VERSION=0.13.2

# The same cache as scripts/test.sh, in a subdirectory: cargo-fuzz's RUSTFLAGS would otherwise
# rebuild the suite's dependencies each time one follows the other.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kelp-target}/fuzz"

if [[ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

fuzz_dir=tests/fuzz
# cargo-fuzz has no --locked: fetching first fails if Cargo.lock is out of date.
cargo fetch --locked --manifest-path "$fuzz_dir/Cargo.toml"

if [[ $# -gt 0 ]]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list --fuzz-dir "$fuzz_dir")
fi

cargo fuzz build --fuzz-dir "$fuzz_dir" --sanitizer none

summary=()
for target in "${targets[@]}"; do
  corpus="$fuzz_dir/corpus/$target"
  mkdir -p "$corpus" "$fuzz_dir/regressions/$target"
  log="$(mktemp)"
  # A dictionary of the format's tokens gets the fuzzer past the keywords it would not guess.
  case "$target" in
    *_decoder | sse | ndjson) dict="$fuzz_dir/dicts/streams.dict" ;;
    *) dict="$fuzz_dir/dicts/$target.dict" ;;
  esac
  dict_arg=()
  [[ -f $dict ]] && dict_arg=(-dict="$dict")
  echo "== fuzz $target for ${seconds}s"
  # -max_len: a streamed body or a package of up to 64 KiB reaches every branch the seeds do.
  if cargo fuzz run --fuzz-dir "$fuzz_dir" --sanitizer none "$target" \
    "$corpus" "$fuzz_dir/seeds/$target" "$fuzz_dir/regressions/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 "${dict_arg[@]}" >"$log" 2>&1; then
    failed=
  else
    failed=1
  fi
  runs="$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || true)"
  cov="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | grep -oE 'cov: [0-9]+' || true)"
  if [[ -n $failed ]]; then
    tail -60 "$log"
    summary+=("$target: FAILED after ${runs:-?} executions (input in $fuzz_dir/artifacts/$target/)")
  else
    summary+=("$target: ${runs:-?} executions, ${cov:-cov: ?}, no failure")
  fi
  rm -f "$log"
done

echo "== fuzz results (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
failed_count="$(printf '%s\n' "${summary[@]}" | grep -c FAILED || true)"
echo "fuzz: $((${#summary[@]} - failed_count)) passed, $failed_count failed"
[[ $failed_count -eq 0 ]]
