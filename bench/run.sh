#!/bin/sh
# The fnrs benchmark: builds release binaries, starts fnrs on a temp SQLite
# store, deploys a Rust FDK function, measures it against the floor and
# prints one table (JSON in bench/results/). See bench/README.md.
#   bench/run.sh            full run (3 runs per placement, ~10 minutes)
#   bench/run.sh --quick    smoke test (under 2 minutes)
#   bench/run.sh --help     all options
set -eu
cd "$(dirname "$0")/.."
exec python3 bench/bench.py "$@"
