#!/usr/bin/env bash
# Builds the Python and JavaScript example plugins in plugins/examples/ into
# components, plugins/dist/examples/{python-guard,js-guard}.wasm. The host's
# tests install them as tenant plugins.
#
# Needs the pinned toolchains in plugins/examples/. With `--install` the
# script installs them first when they are missing (from PyPI and npm, at
# the versions pinned in requirements.txt and package-lock.json), which is
# what .ci/run and the tests (on a fresh machine) do:
#   python3 -m venv plugins/examples/.venv
#   plugins/examples/.venv/bin/pip install -r plugins/examples/requirements.txt
#   npm ci --prefix plugins/examples
set -euo pipefail

plugins_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
examples="$plugins_dir/examples"
if [ "${1:-}" = "--install" ]; then
    if [ ! -x "$examples/.venv/bin/componentize-py" ]; then
        python3 -m venv "$examples/.venv"
        "$examples/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$examples/requirements.txt"
    fi
    if [ ! -d "$examples/node_modules/@bytecodealliance/componentize-js" ]; then
        npm ci --prefix "$examples" --no-audit --no-fund --silent
    fi
fi
wit="$(dirname "$plugins_dir")/wit/lila-hooks-0.1.0"
dist="$plugins_dir/dist/examples"
componentize_py="$examples/.venv/bin/componentize-py"

if [ ! -x "$componentize_py" ] || [ ! -d "$examples/node_modules/@bytecodealliance/componentize-js" ]; then
    echo "build-examples.sh: the toolchains are missing; install them with:" >&2
    sed -n 's/^#   /    /p' "${BASH_SOURCE[0]}" >&2
    exit 1
fi

mkdir -p "$dist"
# Each build writes a dot-file, checked, then renamed, so a watcher (or a
# test) never sees half a component.
check_and_publish() {
    local built="$1" name="$2"
    local preamble
    preamble="$(od -An -tx1 -N8 "$built" | tr -d ' \n')"
    if [ "$preamble" != "0061736d0d000100" ]; then
        echo "build-examples.sh: $built is not a WebAssembly component (preamble $preamble)" >&2
        exit 1
    fi
    mv -f "$built" "$dist/$name.wasm"
    echo "build-examples.sh: $dist/$name.wasm ($(wc -c < "$dist/$name.wasm") bytes)"
}

"$componentize_py" --wit-path "$wit" --world reset-hook componentize \
    -p "$examples/python-guard" app -o "$dist/.python-guard.wasm.tmp" >/dev/null
check_and_publish "$dist/.python-guard.wasm.tmp" python-guard

node "$examples/js-guard/build.mjs" "$wit" "$dist/.js-guard.wasm.tmp"
check_and_publish "$dist/.js-guard.wasm.tmp" js-guard
