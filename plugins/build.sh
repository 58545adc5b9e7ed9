#!/usr/bin/env bash
# Builds every plugin crate in plugins/ as a WebAssembly component
# (wasm32-wasip2, release) and copies the components to plugins/dist/NAME.wasm.
#
# Usage: bash plugins/build.sh            (from anywhere; CARGO_TARGET_DIR is honoured)
set -euo pipefail

plugins_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
workspace_dir="$(dirname "$plugins_dir")"
target=wasm32-wasip2
dist="$plugins_dir/dist"

# A fresh machine or CI runner has only the host target; the plugins need this one.
if ! rustup target list --installed | grep -qx "$target"; then
    rustup target add "$target"
fi

# Every folder with a Cargo.toml is a plugin crate, named like its folder.
plugins=()
for manifest in "$plugins_dir"/*/Cargo.toml; do
    plugins+=("$(basename "$(dirname "$manifest")")")
done
if [ "${#plugins[@]}" -eq 0 ]; then
    echo "build.sh: no plugin crates found in $plugins_dir" >&2
    exit 1
fi

package_args=()
for plugin in "${plugins[@]}"; do
    package_args+=(-p "$plugin")
done

cd "$workspace_dir"
cargo build --release --target "$target" "${package_args[@]}"

target_dir="${CARGO_TARGET_DIR:-$workspace_dir/target}"
mkdir -p "$dist"
for plugin in "${plugins[@]}"; do
    # Cargo names the cdylib after the crate with '-' turned into '_'.
    built="$target_dir/$target/release/${plugin//-/_}.wasm"
    if [ ! -f "$built" ]; then
        echo "build.sh: $built was not produced" >&2
        exit 1
    fi
    # A component starts with the wasm magic and the component-layer version
    # 0d 00 01 00; a core module (01 00 00 00) would not load in the host.
    preamble="$(od -An -tx1 -N8 "$built" | tr -d ' \n')"
    if [ "$preamble" != "0061736d0d000100" ]; then
        echo "build.sh: $built is not a WebAssembly component (preamble $preamble)" >&2
        exit 1
    fi
    # Copy then rename, so a watcher on dist/ never sees a half-written file.
    cp "$built" "$dist/.$plugin.wasm.tmp"
    mv -f "$dist/.$plugin.wasm.tmp" "$dist/$plugin.wasm"
    echo "build.sh: $dist/$plugin.wasm ($(wc -c < "$dist/$plugin.wasm") bytes)"
done
