#!/usr/bin/env bash
# Prepares a Docker engine, test images and a local registry for the Docker
# driver's tests (crates/fnrs-driver-docker/tests/docker.rs). Idempotent; run
# as root on Debian. Nothing is fetched from a public container registry.
#
#   bash scripts/docker-setup.sh        # then: . /var/tmp/fnrs-docker/env.sh
#   bash scripts/docker-setup.sh stop   # stops the dockerd and registry it started
#
# Steps (each printed):
#   1. apt-get install docker.io docker-registry busybox-static apache2-utils
#      when any is missing;
#   2. start dockerd in the background when no engine answers (log:
#      $STATE/dockerd.log), wait for `docker info` (bounded);
#   3. build the test images locally from testimages/: fnrs-test/shell
#      (busybox + a default-format fn), fnrs-test/rust-hello (examples/rust-hello,
#      static), fnrs-test/volume (an image with a VOLUME), fnrs-test/python
#      (Debian's python3 from a debootstrap rootfs, cached as
#      $STATE/python-base.tar, and the real `fdk` from PyPI);
#   4. start a registry (Debian's docker-registry) on 127.0.0.1 with basic auth
#      (htpasswd), storage under $STATE/registry, and push fnrs-test/shell there;
#   5. write $STATE/env.sh with the variables the tests read:
#        FNRS_TEST_DOCKER=1
#        FNRS_TEST_DOCKER_IMAGE_SHELL, FNRS_TEST_DOCKER_IMAGE_RUST,
#        FNRS_TEST_DOCKER_IMAGE_VOLUME, FNRS_TEST_DOCKER_IMAGE_PYTHON
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

if [ "${1:-}" = stop ]; then
  # Stop what this script started (by the pids it recorded), nothing else.
  for f in "$STATE/registry/registry.pid" "$STATE/dockerd.pid"; do
    if [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then
      echo "stopping pid $(cat "$f") ($f)"
      kill "$(cat "$f")" || true
      for _ in $(seq 1 40); do kill -0 "$(cat "$f")" 2>/dev/null || break; sleep 0.5; done
    fi
    rm -f "$f"
  done
  exit 0
fi
export DOCKER_BUILDKIT=0

step "system packages"
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v docker-registry >/dev/null || need+=(docker-registry)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static) # a static /bin/busybox
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
LDD=$(ldd "$BIN" 2>&1 || true)
case "$LDD" in
  *"not a dynamic"* | *"statically linked"*) echo "$BIN is static" ;;
  *)
    echo "$BIN is not static:" >&2
    echo "$LDD" >&2
    exit 1
    ;;
esac
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

step "test image fnrs-test/python (Debian python3 + the fdk from PyPI)"
# The base is a debootstrap rootfs of the release this machine runs, from the
# mirror its apt uses; its tarball is kept in $STATE between runs.
if docker image inspect fnrs-test/python-base:latest >/dev/null 2>&1; then
  echo "fnrs-test/python-base present"
else
  BASE_TAR=$STATE/python-base.tar
  if [ ! -s "$BASE_TAR" ]; then
    command -v debootstrap >/dev/null || {
      export DEBIAN_FRONTEND=noninteractive
      apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
    }
    . /etc/os-release
    MIRROR=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -1)
    [ -n "$MIRROR" ] || MIRROR=$(grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}' | head -1)
    ROOTFS=$(mktemp -d /var/tmp/fnrs-pyroot.XXXXXX)
    echo "debootstrap $VERSION_CODENAME from $MIRROR (minutes; log: $STATE/debootstrap.log)"
    if ! debootstrap --variant=minbase --include=python3 "$VERSION_CODENAME" "$ROOTFS" "$MIRROR" >"$STATE/debootstrap.log" 2>&1; then
      tail -20 "$STATE/debootstrap.log" >&2
      rm -rf "$ROOTFS"
      exit 1
    fi
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
    tar -C "$ROOTFS" -cf "$BASE_TAR.tmp" . && mv "$BASE_TAR.tmp" "$BASE_TAR"
    rm -rf "$ROOTFS"
  fi
  docker import "$BASE_TAR" fnrs-test/python-base:latest
fi
PYV=$(docker run --rm --entrypoint /usr/bin/python3 fnrs-test/python-base:latest -c 'import sys; print("%d.%d" % sys.version_info[:2])')
FDK_DIR=$STATE/python-fdk-$PYV
if [ ! -d "$FDK_DIR" ]; then
  # pip of a python3 of the same version as the image's (wheels must match).
  PIP_PY=""
  for p in "python$PYV" python3 /usr/bin/python3; do
    if command -v "$p" >/dev/null && [ "$("$p" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = "$PYV" ] \
      && "$p" -m pip --version >/dev/null 2>&1; then
      PIP_PY=$p
      break
    fi
  done
  PIP_ARGS=()
  if [ -z "$PIP_PY" ] && [ "$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = "$PYV" ]; then
    # Debian's own python3 (the image's): its pip from Debian's packages.
    /usr/bin/python3 -m pip --version >/dev/null 2>&1 || {
      export DEBIAN_FRONTEND=noninteractive
      apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
    }
    PIP_PY=/usr/bin/python3
    PIP_ARGS=(--break-system-packages)
  fi
  if [ -z "$PIP_PY" ]; then
    echo "no python$PYV with pip on this machine to install the fdk with" >&2
    exit 1
  fi
  echo "pip install fdk with $PIP_PY into $FDK_DIR"
  rm -rf "$FDK_DIR.tmp"
  "$PIP_PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore "${PIP_ARGS[@]}" --target "$FDK_DIR.tmp" fdk
  mv "$FDK_DIR.tmp" "$FDK_DIR"
fi
mkdir -p "$CTX/python"
cp -a "$FDK_DIR" "$CTX/python/python"
cp testimages/python/func.py testimages/python/fdk testimages/python/Dockerfile "$CTX/python/"
docker build -q --build-arg BASE=fnrs-test/python-base:latest -t fnrs-test/python:latest "$CTX/python"

step "environment for the tests: $STATE/env.sh"
cat >"$STATE/env.sh" <<EOF
export FNRS_TEST_DOCKER=1
export FNRS_TEST_DOCKER_IMAGE_SHELL=fnrs-test/shell:latest
export FNRS_TEST_DOCKER_IMAGE_RUST=fnrs-test/rust-hello:latest
export FNRS_TEST_DOCKER_IMAGE_VOLUME=fnrs-test/volume:latest
export FNRS_TEST_DOCKER_IMAGE_PYTHON=fnrs-test/python:latest
export FNRS_TEST_REGISTRY=127.0.0.1:$PORT
export FNRS_TEST_REGISTRY_USER=$REG_USER
export FNRS_TEST_REGISTRY_PASS=$REG_PASS
export FNRS_TEST_REGISTRY_IMAGE=$REG_IMAGE
EOF
cat "$STATE/env.sh"
