#!/usr/bin/env bash
# A lila built the way a user builds it (`cargo build --release` at the root,
# no features asked for) verifies WhatsApp's certificate chain: it says so at
# start and in /health, and it refuses the simulator's chain, whose
# signatures are not WhatsApp's, and its session's lastError says so. As a control, the tests' build of lila
# (target/debug/lila, with the `simulator` feature) gets a QR code from the
# same simulator within seconds, so the window watched here is long enough.
#
# Usage: bash tests/release/certificate-check.sh   (.ci/run runs it after the tests)
# Everything runs on loopback, on free ports, over temporary data roots.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
cd "$root"

started=$(date +%s)
cargo build --release
echo "certificate-check: cargo build --release took $(( $(date +%s) - started )) s"

# What cargo resolved for that build: no crate in it enables the feature.
if cargo tree --workspace -e normal,build,features -i wacore-noise 2>/dev/null \
    | grep -q 'danger-skip-cert-chain-verify'; then
    echo "certificate-check: FAIL: cargo build --release enables danger-skip-cert-chain-verify:" >&2
    cargo tree --workspace -e normal,build,features -i wacore-noise >&2
    exit 1
fi

work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_for_port() {
    for _ in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "certificate-check: nothing listens on port $1" >&2
    return 1
}

sim_port=$(free_port)
"$target_dir/release/wa-sim" --listen "127.0.0.1:$sim_port" >"$work/wa-sim.log" 2>&1 &
pids+=($!)
wait_for_port "$sim_port"

secret="certificate-check-secret-certificate-check"
phone=51911112222

# Runs `$1 serve` on a fresh data root against the simulator; sets $port.
start_lila() {
    local bin="$1" name="$2"
    port=$(free_port)
    : >"$work/none.toml"
    LILA_DATA_DIR="$work/$name" LILA_BIND="127.0.0.1:$port" LILA_JWT_SECRET="$secret" \
        LILA_WA_URL="ws://127.0.0.1:$sim_port/ws/chat" LILA_CONFIG="$work/none.toml" \
        NO_COLOR=1 RUST_LOG=info "$bin" serve >"$work/$name.log" 2>&1 &
    pids+=($!)
    wait_for_port "$port" || { cat "$work/$name.log" >&2; return 1; }
}

api() {
    local method="$1" path="$2"
    curl -s -X "$method" -H "Authorization: Bearer $token" -H 'content-type: application/json' \
        ${3:+-d "$3"} "http://127.0.0.1:$port$path"
}

field() { python3 -c "import json,sys; print(json.load(sys.stdin).get('$1'))"; }

token=$(LILA_JWT_SECRET="$secret" LILA_DATA_DIR="$work/token" "$target_dir/release/lila" token --company acme)

# The release build.
start_lila "$target_dir/release/lila" release
health=$(curl -s "http://127.0.0.1:$port/health")
if [ "$(echo "$health" | field certificateVerification)" != "True" ]; then
    echo "certificate-check: FAIL: the release build's /health says $health" >&2
    exit 1
fi
grep -q 'certificate_verification="on"' "$work/release.log" || {
    echo "certificate-check: FAIL: the release build's log does not say the check is on:" >&2
    cat "$work/release.log" >&2
    exit 1
}
api POST /api/sessions "{\"phoneNumber\":\"$phone\"}" >/dev/null
watched=15
for _ in $(seq 1 $((watched * 5))); do
    status=$(api GET "/api/sessions/$phone/status")
    case "$(echo "$status" | field status)" in
        qr|connected)
            echo "certificate-check: FAIL: the release build accepted the simulator's chain: $status" >&2
            exit 1 ;;
    esac
    sleep 0.2
done
qr_code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" \
    "http://127.0.0.1:$port/api/sessions/$phone/qr")
[ "$qr_code" = 404 ] || { echo "certificate-check: FAIL: GET /qr answered $qr_code" >&2; exit 1; }
# And it says why: the session's lastError names the refused handshake.
case "$(echo "$status" | field lastError)" in
    *"certificate chain was refused"*) ;;
    *) echo "certificate-check: FAIL: the refused chain is not in the session's lastError: $status" >&2
       exit 1 ;;
esac
echo "certificate-check: the release build refused the simulator's chain for ${watched} s: $status"

# The control: the tests' build, same simulator, shows a QR code.
debug_bin="$target_dir/debug/lila"
if [ -x "$debug_bin" ]; then
    start_lila "$debug_bin" test-build
    api POST /api/sessions "{\"phoneNumber\":\"$phone\"}" >/dev/null
    seen=""
    for _ in $(seq 1 $((watched * 5))); do
        if [ "$(api GET "/api/sessions/$phone/status" | field status)" = qr ]; then seen=yes; break; fi
        sleep 0.2
    done
    [ -n "$seen" ] || { echo "certificate-check: FAIL: the control (the tests' build) got no QR either" >&2; exit 1; }
    echo "certificate-check: control: the tests' build (certificate check off) got a QR from the same simulator"
fi
echo "certificate-check: ok"
