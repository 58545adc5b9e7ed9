#!/usr/bin/env bash
# The fuzzing campaign: every target of fuzz/Cargo.toml under cargo fuzz
# (nightly), for a number of executions each (default 1,000,000).
#
#   bash fuzz/run.sh                 # every target, 1,000,000 runs each
#   bash fuzz/run.sh 10000 outbox    # one target, 10,000 runs
#
# New inputs go to fuzz/corpus/{target}/ (not committed; the seeds are in
# fuzz/seeds/). A crash, a panic, a timeout or an out-of-memory leaves the
# input in fuzz/artifacts/{target}/; reproduce it with
# `cargo +nightly fuzz run {target} fuzz/artifacts/{target}/{file}`, and copy
# it to fuzz/regressions/{target}/ once fixed, where the stable test
# host/tests/fuzz_corpus.rs replays it for ever. The last line is
# "N passed, M failed".
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

runs="${1:-1000000}"
shift || true
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(ls fuzz/fuzz_targets | sed 's/\.rs$//')
fi

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --version 0.13.2 --locked
# The same versions of every dependency as the server itself.
[ -f fuzz/Cargo.lock ] || cp Cargo.lock fuzz/Cargo.lock

# No sanitizer: the targets reach only safe Rust (the one `unsafe` block of
# the host is never called from here), and without ASan each target runs
# several times faster. libFuzzer still catches panics, timeouts and
# out-of-memory (-rss_limit_mb, -malloc_limit_mb).
fuzz=(cargo +nightly fuzz run --fuzz-dir fuzz --sanitizer none --release --debug-assertions)
cargo +nightly fuzz build --fuzz-dir fuzz --sanitizer none --release --debug-assertions

passed=0
failed=0
for target in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
  log="fuzz/artifacts/$target.log"
  start=$(date +%s)
  if "${fuzz[@]}" "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
      -runs="$runs" -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 \
      -max_len=65536 -artifact_prefix="fuzz/artifacts/$target/" >"$log" 2>&1; then
    passed=$((passed + 1))
    verdict=passed
  else
    failed=$((failed + 1))
    verdict="FAILED (log: $log; input in fuzz/artifacts/$target/)"
  fi
  done_line=$(grep -E '^Done [0-9]+ runs' "$log" | tail -1)
  corpus=$(ls "fuzz/corpus/$target" | wc -l)
  echo "$target: $verdict in $(( $(date +%s) - start )) s; ${done_line:-no 'Done' line}; corpus $corpus inputs"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
