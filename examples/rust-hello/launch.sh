#!/bin/sh
# Start the function binary that setup.sh copied into bin/ (the function
# directory is all a sandboxed function sees, so the binary must live here,
# not in cargo's target directory).
dir=$(dirname "$0")
if [ ! -x "$dir/bin/rust-hello" ]; then
    echo "rust-hello: $dir/bin/rust-hello is missing; run examples/rust-hello/setup.sh" >&2
    exit 1
fi
exec "$dir/bin/rust-hello" "$@"
