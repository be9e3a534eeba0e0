#!/usr/bin/env bash
# Prepares a Docker engine, test images and a local registry for the Docker
# driver's tests (crates/fnrs-driver-docker/tests/docker.rs). Idempotent; run
# as root on Debian. Nothing is fetched from a public container registry.
#
#   bash scripts/docker-setup.sh        # then: . /var/tmp/fnrs-docker/env.sh
#
# Steps (each printed):
#   1. apt-get install docker.io docker-registry busybox-static apache2-utils
#      when any is missing;
#   2. start dockerd in the background when no engine answers (log:
#      $STATE/dockerd.log), wait for `docker info` (bounded);
#   3. build the test images locally from testimages/: fnrs-test/shell
#      (busybox + a default-format fn), fnrs-test/rust-hello (examples/rust-hello,
#      static), fnrs-test/volume (an image with a VOLUME);
#   4. start a registry (Debian's docker-registry) on 127.0.0.1 with basic auth
#      (htpasswd), storage under $STATE/registry, and push fnrs-test/shell there;
#   5. write $STATE/env.sh with the variables the tests read:
#        FNRS_TEST_DOCKER=1
#        FNRS_TEST_DOCKER_IMAGE_SHELL, FNRS_TEST_DOCKER_IMAGE_RUST,
#        FNRS_TEST_DOCKER_IMAGE_VOLUME
#        FNRS_TEST_REGISTRY (127.0.0.1:PORT), FNRS_TEST_REGISTRY_USER,
#        FNRS_TEST_REGISTRY_PASS, FNRS_TEST_REGISTRY_IMAGE (pushed there)
#
# Settings: FNRS_DOCKER_STATE (default /var/tmp/fnrs-docker),
# FNRS_REGISTRY_PORT (default 45123), CARGO_TARGET_DIR (for the Rust build).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STATE=${FNRS_DOCKER_STATE:-/var/tmp/fnrs-docker}
PORT=${FNRS_REGISTRY_PORT:-45123}
REG_USER=fnrs
REG_PASS=fnrs-test-pass
mkdir -p "$STATE"
step() { printf '\n==> docker-setup: %s\n' "$*"; }
export DOCKER_BUILDKIT=0

step "system packages"
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v docker-registry >/dev/null || need+=(docker-registry)
[ -x /bin/busybox ] && /bin/busybox --list >/dev/null 2>&1 && ldd /bin/busybox 2>&1 | grep -q 'not a dynamic' || need+=(busybox-static)
command -v htpasswd >/dev/null || need+=(apache2-utils)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "all present"
fi

step "Docker engine"
if docker info >/dev/null 2>&1; then
  echo "an engine answers at ${DOCKER_HOST:-unix:///var/run/docker.sock}"
else
  echo "starting dockerd (log: $STATE/dockerd.log)"
  nohup dockerd >"$STATE/dockerd.log" 2>&1 </dev/null &
  echo $! >"$STATE/dockerd.pid"
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  if ! docker info >/dev/null 2>&1; then
    echo "dockerd did not come up within 60 s; last log lines:" >&2
    tail -20 "$STATE/dockerd.log" >&2
    exit 1
  fi
  echo "dockerd is up (pid $(cat "$STATE/dockerd.pid"))"
fi

step "test image fnrs-test/shell (busybox + testimages/shell/fn.sh)"
CTX=$(mktemp -d /tmp/fnrs-img.XXXXXX)
trap 'rm -rf "$CTX"' EXIT
mkdir -p "$CTX/shell/rootfs/bin" "$CTX/shell/rootfs/tmp"
cp /bin/busybox "$CTX/shell/rootfs/bin/busybox"
for app in $(/bin/busybox --list); do
  [ "$app" = busybox ] || ln -sf busybox "$CTX/shell/rootfs/bin/$app"
done
cp testimages/shell/fn.sh "$CTX/shell/rootfs/fn.sh"
cp testimages/shell/Dockerfile "$CTX/shell/Dockerfile"
docker build -q -t fnrs-test/shell:latest "$CTX/shell"

step "test image fnrs-test/volume"
docker build -q --build-arg BASE=fnrs-test/shell:latest -t fnrs-test/volume:latest testimages/volume

step "test image fnrs-test/rust-hello (static examples/rust-hello)"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
  TRIPLE=x86_64-unknown-linux-musl
  echo "building for $TRIPLE"
  cargo build -q -p rust-hello --target "$TRIPLE"
else
  # No musl target: glibc static linking works for this pure-Rust binary.
  TRIPLE=x86_64-unknown-linux-gnu
  echo "building for $TRIPLE with crt-static"
  RUSTFLAGS='-C target-feature=+crt-static' cargo build -q -p rust-hello --target "$TRIPLE"
fi
BIN=$TARGET_DIR/$TRIPLE/debug/rust-hello
if ldd "$BIN" 2>&1 | grep -qv 'not a dynamic\|statically linked'; then
  echo "$BIN is not static:" >&2
  ldd "$BIN" >&2
  exit 1
fi
mkdir -p "$CTX/rust"
cp "$BIN" "$CTX/rust/rust-hello"
cp testimages/rust-hello/Dockerfile "$CTX/rust/Dockerfile"
docker build -q -t fnrs-test/rust-hello:latest "$CTX/rust"

step "registry on 127.0.0.1:$PORT with basic auth"
REG=$STATE/registry
mkdir -p "$REG/data"
htpasswd -Bbn "$REG_USER" "$REG_PASS" >"$REG/htpasswd"
cat >"$REG/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $REG/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$PORT
auth:
  htpasswd:
    realm: fnrs-test
    path: $REG/htpasswd
EOF
reg_up() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/v2/")" = 401 ]; }
if reg_up; then
  echo "a registry answers on 127.0.0.1:$PORT"
else
  echo "starting docker-registry (log: $REG/registry.log)"
  nohup docker-registry serve "$REG/config.yml" >"$REG/registry.log" 2>&1 </dev/null &
  echo $! >"$REG/registry.pid"
  for _ in $(seq 1 30); do
    reg_up && break
    sleep 0.5
  done
  if ! reg_up; then
    echo "the registry did not come up; log:" >&2
    tail -20 "$REG/registry.log" >&2
    exit 1
  fi
fi
export DOCKER_CONFIG=$STATE/docker-config # keeps the login out of ~/.docker
echo "$REG_PASS" | docker login -u "$REG_USER" --password-stdin "127.0.0.1:$PORT" >/dev/null
REG_IMAGE=127.0.0.1:$PORT/fnrs-test/shell:latest
docker tag fnrs-test/shell:latest "$REG_IMAGE"
docker push -q "$REG_IMAGE" >/dev/null
docker rmi "$REG_IMAGE" >/dev/null
echo "pushed $REG_IMAGE"

step "environment for the tests: $STATE/env.sh"
cat >"$STATE/env.sh" <<EOF
export FNRS_TEST_DOCKER=1
export FNRS_TEST_DOCKER_IMAGE_SHELL=fnrs-test/shell:latest
export FNRS_TEST_DOCKER_IMAGE_RUST=fnrs-test/rust-hello:latest
export FNRS_TEST_DOCKER_IMAGE_VOLUME=fnrs-test/volume:latest
export FNRS_TEST_REGISTRY=127.0.0.1:$PORT
export FNRS_TEST_REGISTRY_USER=$REG_USER
export FNRS_TEST_REGISTRY_PASS=$REG_PASS
export FNRS_TEST_REGISTRY_IMAGE=$REG_IMAGE
EOF
cat "$STATE/env.sh"
