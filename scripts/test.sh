#!/usr/bin/env bash
# Runs fnrs's whole test suite on a fresh Debian machine (as root): installs and
# starts what the tests need, then lint, tests and bounded fuzzing.
#   bash scripts/test.sh            everything
#   FNRS_SKIP_FUZZ=1 bash scripts/test.sh   without the fuzzing stage
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STATE=${FNRS_TEST_STATE:-/var/tmp/fnrs-test}
mkdir -p "$STATE"
step() { printf '\n==> %s\n' "$*"; }

step "system packages"
need=()
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v pasta >/dev/null || need+=(passt)
command -v initdb >/dev/null || [ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql)
/usr/bin/python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
command -v node >/dev/null || need+=(nodejs npm)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
PGBIN=$(dirname "$(command -v initdb 2>/dev/null || echo /usr/lib/postgresql/15/bin/initdb)")

step "PostgreSQL (throw-away cluster on 127.0.0.1)"
PGDIR=$(mktemp -d /tmp/fnrs-pg.XXXXXX)
chown postgres:postgres "$PGDIR"
PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDIR/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$PGDIR"
  [ "${FNRS_KEEP_DOCKER:-}" = 1 ] || bash scripts/docker-setup.sh stop >/dev/null 2>&1 || true
}
trap cleanup EXIT
runuser -u postgres -- "$PGBIN/initdb" -D "$PGDIR/data" -A trust -U postgres >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $PGDIR -c fsync=off -c max_connections=300" start >/dev/null
export FNRS_TEST_PG_URL="postgres://postgres@127.0.0.1:$PGPORT/postgres?sslmode=disable"
echo "PostgreSQL at $FNRS_TEST_PG_URL"

step "function development kits (Python fdk from PyPI, Node @fnproject/fdk from npm)"
# A venv of Debian's python3, in a path the sandboxed (unprivileged) functions can read.
if [ ! -x "$STATE/py/bin/fdk" ]; then
  rm -rf "$STATE/py"
  /usr/bin/python3 -m venv "$STATE/py"
  "$STATE/py/bin/pip" install -q fdk
fi
if [ ! -d "$STATE/node/node_modules/@fnproject/fdk" ]; then
  mkdir -p "$STATE/node"
  (cd "$STATE/node" && npm install --silent --no-audit --no-fund @fnproject/fdk >/dev/null)
fi
chmod -R a+rX "$STATE"
chmod a+x /var/tmp "$STATE" 2>/dev/null || true
export FNRS_TEST_PY_VENV="$STATE/py"
export FNRS_TEST_PY_FDK="$STATE/py/bin/fdk"
export FNRS_TEST_NODE_MODULES="$STATE/node/node_modules"
# Sandboxed functions run as uid 65534: the checkout must be reachable by it.
d=$ROOT
while [ "$d" != / ]; do
  runuser -u nobody -- test -x "$d" 2>/dev/null || chmod o+x "$d"
  d=$(dirname "$d")
done
bash scripts/setup-examples.sh

step "Docker engine, local registry and test images"
bash scripts/docker-setup.sh
. "${FNRS_DOCKER_STATE:-/var/tmp/fnrs-docker}/env.sh"

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
cargo nextest run --workspace --locked --no-fail-fast

if [ "${FNRS_SKIP_FUZZ:-}" != 1 ]; then
  step "fuzzing (bounded: every parser of function output)"
  command -v cargo-fuzz >/dev/null || RUSTC_BOOTSTRAP=1 cargo install -q cargo-fuzz --locked
  sh fuzz/run.sh "${FNRS_FUZZ_SECONDS:-45}"
fi
step "done"
