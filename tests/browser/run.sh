#!/usr/bin/env bash
# The console's browser tests: headless Chromium (Debian's `chromium`) driven
# by playwright-core, against the real `lila` and `wa-sim` binaries that
# `cargo test --workspace` leaves in target/debug (built for tests, so with
# the simulator's certificate chain accepted), and the tenant-policy plugin
# from plugins/dist. Screenshots of each page go to target/console-screenshots/.
#
# Usage: bash tests/browser/run.sh     (.ci/run calls it after cargo test)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"

if [ ! -x /usr/bin/chromium ]; then
    echo "run.sh: /usr/bin/chromium is missing; install it with: apt-get install -y chromium" >&2
    exit 1
fi

# The binaries as the test build makes them. `cargo build -p lila` would
# build lila without the simulator's feature and replace the test build's
# binary, so the missing ones are built the way `cargo test` builds them.
if [ ! -x "$target_dir/debug/lila" ] || [ ! -x "$target_dir/debug/wa-sim" ]; then
    (cd "$root" && cargo test -p lila -p wa-sim --no-run)
fi
if [ ! -f "$root/plugins/dist/tenant-policy.wasm" ]; then
    bash "$root/plugins/build.sh"
fi

cd "$here"
# The versions pinned in package-lock.json, nothing else.
npm ci --no-audit --no-fund --loglevel=error

export LILA_BIN="$target_dir/debug/lila"
export WA_SIM_BIN="$target_dir/debug/wa-sim"
export PLUGINS_DIST="$root/plugins/dist"
export SCREENSHOTS="$target_dir/console-screenshots"
export CHROMIUM=/usr/bin/chromium
started=$(date +%s)
node --test --test-reporter=spec console.test.mjs
echo "run.sh: browser tests took $(( $(date +%s) - started )) s; screenshots in $SCREENSHOTS"
