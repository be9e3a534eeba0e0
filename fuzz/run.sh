#!/bin/sh
# Run every fuzz target for SECONDS seconds each (default 45).
#
# Needs cargo-fuzz (`RUSTC_BOOTSTRAP=1 cargo install cargo-fuzz --locked`).
# Only stable Rust is available, so nightly flags are unlocked with
# RUSTC_BOOTSTRAP=1. FUZZ_SANITIZER=address|none (default: none, faster; the
# code under test has no unsafe). Crashes land in fuzz/artifacts/<target>/.
set -eu
secs=${1:-45}
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
sanitizer=${FUZZ_SANITIZER:-none}
targets=$(cargo fuzz list)
# Build all targets once (debug assertions on: overflows are bugs too).
cargo fuzz build -s "$sanitizer" --debug-assertions
status=0
for t in $targets; do
    echo "== fuzz $t for ${secs}s"
    mkdir -p "corpus/$t"
    if ! cargo fuzz run -s "$sanitizer" --debug-assertions "$t" "corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=20; then
        echo "fuzz $t FAILED (see fuzz/artifacts/$t)"
        status=1
    fi
done
# The http_stream_head target leaves its socket directory behind.
rm -rf "${TMPDIR:-/tmp}"/fnrs-fuzz-*
exit $status
