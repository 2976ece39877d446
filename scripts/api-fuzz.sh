#!/usr/bin/env bash
# Property-tests the HTTP API against its own OpenAPI document with schemathesis: a real
# `kelp serve` (debug build, SQLite in a fresh directory, the first-party plugins, the
# stand-in model as the OpenAI provider), an admin signed in with an API token, every phase
# (examples, coverage, fuzzing, stateful) and every check. Fails on any finding.
#
#   bash scripts/api-fuzz.sh [MAX_EXAMPLES]      # default 50 cases per operation and phase
#
# Needs Python 3 with pip (schemathesis is installed, pinned, into a virtualenv under
# ~/.cache); not part of scripts/test.sh, whose only requirement is the Rust toolchain.
# Reports (JUnit, NDJSON events) land in target/api-fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."
max_examples="${1:-50}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kelp-target}"
SCHEMATHESIS_VERSION=4.32.5

venv="${KELP_API_FUZZ_VENV:-$HOME/.cache/kelp-schemathesis-$SCHEMATHESIS_VERSION}"
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi

if command -v rustup >/dev/null 2>&1; then
  rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
fi
cargo build --locked -p kelp -p kelp-fake-vendor
kelp="$CARGO_TARGET_DIR/debug/kelp"

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/bundled"
for dir in plugins/*/; do
  "$kelp" plugin build --path "$dir" --out "$work/bundled/$(basename "$dir").kelp" >/dev/null
done

# Free loopback ports for the server and the stand-in model.
read -r port llm_port < <(python3 -c 'import socket
s=[socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1",0)) for x in s]
print(*[x.getsockname()[1] for x in s])')
base="http://127.0.0.1:$port"

"$CARGO_TARGET_DIR/debug/fake-llm" openai "127.0.0.1:$llm_port" >"$work/fake-llm.log" 2>&1 &
pids+=($!)
KELP_BIND="127.0.0.1:$port" RUST_LOG=warn "$kelp" serve --data-dir "$work/data" \
  --bundled "$work/bundled" >"$work/kelp.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 120); do
  curl -fsS "$base/health" >/dev/null 2>&1 && break
  sleep 0.5
done
curl -fsS "$base/health" >/dev/null

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
login_token=$(curl -fsS -X POST "$base/api/auth/setup" -H 'content-type: application/json' \
  -d '{"username":"admin","password":"correct horse battery"}' | json '["token"]')
token=$(curl -fsS -X POST "$base/api/tokens" -H "authorization: Bearer $login_token" \
  -H 'content-type: application/json' -d '{"name":"schemathesis"}' | json '["token"]')
# Runs answer from the stand-in model on loopback (approved for the openai instance).
curl -fsS -X PUT "$base/api/providers/openai/auth" -H "authorization: Bearer $token" \
  -H 'content-type: application/json' \
  -d "{\"base_url\":\"http://127.0.0.1:$llm_port/v1\"}" >/dev/null

report="$PWD/target/api-fuzz"
mkdir -p "$report"
status=0
"$venv/bin/schemathesis" --config-file tests/api-fuzz/schemathesis.toml run "$base/openapi.json" \
  --header "Authorization: Bearer $token" \
  --phases examples,coverage,fuzzing,stateful \
  --checks all \
  --max-examples "$max_examples" \
  --seed "${KELP_API_FUZZ_SEED:-1}" \
  --workers 1 \
  --request-timeout 30 \
  --suppress-health-check too_slow \
  --report junit,ndjson --report-dir "$report" || status=$?
if [ "$status" -ne 0 ]; then
  echo "server log (last 50 lines):" >&2
  tail -n 50 "$work/kelp.log" >&2
fi
exit "$status"
