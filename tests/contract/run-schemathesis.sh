#!/usr/bin/env bash
# Contract test: schemathesis fuzzes the real lila binary against the OpenAPI
# document that binary serves (GET /api/openapi.json), once with a tenant's
# token and once with an operator's.
#
# Checks: no 5xx (not_a_server_error), every response matches its schema
# (response_schema_conformance), every status code is documented
# (status_code_conformance), and a route that needs a token refuses a
# request without one or with a bad one (ignored_auth). Phases: examples,
# coverage, fuzzing and the stateful phase, which follows the document's
# OpenAPI links (create -> status / qr / messages -> message status / clear).
#
# lila runs in simulator mode against tests/wa-sim (nothing reaches the
# internet), on free ports, over a temporary data root, with a known secret.
# It needs the binaries `cargo test --workspace` builds (target/debug/lila,
# whose test build accepts the simulator's certificate, and
# target/debug/wa-sim); LILA_BIN and WA_SIM_BIN override them.
#
#   bash tests/contract/run-schemathesis.sh          # CI: bounded examples
#   bash tests/contract/run-schemathesis.sh --long   # docs/RELIABILITY.md: many more
#   LILA_SCHEMATHESIS_SEED=7 bash tests/contract/run-schemathesis.sh   # another generation (default seed 1)
#
# schemathesis is installed, at the versions pinned in requirements.txt,
# into target/schemathesis-venv the first time.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$root/target/schemathesis-venv"
lila="${LILA_BIN:-$root/target/debug/lila}"
wa_sim="${WA_SIM_BIN:-$root/target/debug/wa-sim}"

max_examples=25
if [ "${1:-}" = "--long" ]; then
    max_examples=500
fi

pinned="$(grep -E '^schemathesis==' "$here/requirements.txt")"
if [ ! -x "$venv/bin/schemathesis" ] || ! "$venv/bin/pip" freeze 2>/dev/null | grep -qx "$pinned"; then
    echo "run-schemathesis.sh: installing $pinned into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
fi

for binary in "$lila" "$wa_sim"; do
    if [ ! -x "$binary" ]; then
        echo "run-schemathesis.sh: $binary is missing; run 'cargo test --workspace' first" >&2
        exit 1
    fi
done

work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

sim_port="$(free_port)"
lila_port="$(free_port)"
base="http://127.0.0.1:$lila_port"

# The binaries run in $work, so that no ./lila.toml of the checkout is read.
cd "$work"
"$wa_sim" --listen "127.0.0.1:$sim_port" >"$work/wa-sim.log" 2>&1 &
pids+=("$!")

export LILA_JWT_SECRET="schemathesis-secret-schemathesis-secret"
export LILA_DATA_DIR="$work/data"
export LILA_BIND="127.0.0.1:$lila_port"
export LILA_WA_URL="ws://127.0.0.1:$sim_port/ws/chat"
export RUST_LOG="${RUST_LOG:-warn}"
"$lila" serve >"$work/lila.log" 2>&1 &
lila_pid="$!"
pids+=("$lila_pid")

for _ in $(seq 1 100); do
    if curl -fsS "$base/health" >/dev/null 2>&1; then
        break
    fi
    sleep 0.1
done
curl -fsS "$base/health" >/dev/null

tenant_token="$("$lila" token --company schemathesis --hours 2)"
operator_token="$("$lila" token --operator --hours 2)"

status=0
# GET /api/events is a stream that never ends (heartbeats keep every read
# inside the request timeout), so schemathesis would wait on it for ever;
# host/tests/events.rs and the browser tests read it instead.
run() {
    local who="$1" token="$2"
    echo "== schemathesis as $who ($max_examples examples per operation and phase)"
    "$venv/bin/schemathesis" run "$base/api/openapi.json" \
        --url "$base" \
        --header "Authorization: Bearer $token" \
        --checks not_a_server_error,response_schema_conformance,status_code_conformance,ignored_auth \
        --phases examples,coverage,fuzzing,stateful \
        --max-examples "$max_examples" \
        --exclude-path /api/events \
        --seed "${LILA_SCHEMATHESIS_SEED:-1}" \
        --workers 1 \
        --request-timeout 20 \
        --generation-database none \
        --suppress-health-check too_slow,filter_too_much \
        --no-color \
        --report junit --report-dir "$root/target/schemathesis-report/$who" || status=1
}
run tenant "$tenant_token"
run operator "$operator_token"

if ! kill -0 "$lila_pid" 2>/dev/null; then
    echo "run-schemathesis.sh: lila exited during the run" >&2
    status=1
fi
if grep -q "panicked" "$work/lila.log"; then
    echo "run-schemathesis.sh: lila panicked:" >&2
    grep -A3 "panicked" "$work/lila.log" >&2
    status=1
fi
# Kept with the reports (CI artifacts under target/), so that a failure can
# be explained after the temporary directory is gone.
mkdir -p "$root/target/schemathesis-report"
cp "$work/lila.log" "$root/target/schemathesis-report/lila.log"
if [ "$status" -ne 0 ]; then
    echo "run-schemathesis.sh: failures; the end of lila's log (all of it: target/schemathesis-report/lila.log):" >&2
    tail -n 40 "$work/lila.log" >&2
fi
exit "$status"
