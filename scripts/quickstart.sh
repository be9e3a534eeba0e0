#!/usr/bin/env bash
# Builds fnrs, starts it on its embedded defaults (SQLite in ./data, functions
# as sandboxed local processes) and deploys the Rust example function.
# Ctrl-C stops the server. PROFILE=release builds optimised binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${FN_PORT:-8080}
profile=${PROFILE:-debug}
flag=; [ "$profile" = release ] && flag=--release

pkgs=()
command -v bwrap >/dev/null || pkgs+=(bubblewrap)   # the process sandbox
command -v pasta >/dev/null || pkgs+=(passt)        # the sandbox's private network
if [ ${#pkgs[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "==> installing ${pkgs[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null 2>&1 ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null; }
fi

echo "==> building fnrs and the example function ($profile)"
cargo build --locked $flag -p fnrs-cli
PROFILE=$profile sh examples/rust-hello/setup.sh
chmod -R a+rX examples/rust-hello
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
FNRS="$target/$profile/fnrs"

echo "==> starting fnrs on 127.0.0.1:$PORT (data in ./data)"
FN_PORT=$PORT "$FNRS" serve &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null' EXIT INT TERM
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$PORT/version" >/dev/null && break
  kill -0 $server 2>/dev/null || { echo "fnrs did not start" >&2; exit 1; }
  sleep 0.1
done

export FN_API_URL="http://127.0.0.1:$PORT"
"$FNRS" deploy examples/rust-hello --app demo
fn_id=$("$FNRS" fns get demo rust-hello --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
cat <<MSG

fnrs is running. Call the example function:

  curl -X POST -d '{"name":"you"}' http://127.0.0.1:$PORT/invoke/$fn_id
  curl -X POST -d '{"name":"you"}' http://127.0.0.1:$PORT/t/demo/hello

and read its calls and logs:

  FN_API_URL=$FN_API_URL $FNRS calls demo rust-hello
  FN_API_URL=$FN_API_URL $FNRS logs demo rust-hello <call id>

Ctrl-C stops the server.
MSG
wait $server
