#!/bin/sh
# Build the example and copy the binary into examples/rust-hello/bin/.
# PROFILE=release for an optimised build (default: debug).
set -eu
cd "$(dirname "$0")"
profile=${PROFILE:-debug}
if [ "$profile" = release ]; then flag=--release; else flag=; fi
cargo build --locked $flag -p rust-hello
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
mkdir -p bin
cp "$target/$profile/rust-hello" bin/rust-hello
echo "rust-hello: built bin/rust-hello ($profile)"
