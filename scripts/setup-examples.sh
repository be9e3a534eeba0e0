#!/usr/bin/env bash
# Prepares the example functions that need installing: the Rust example's
# binary, the Python example's venv (fdk from PyPI), the Node example's
# node_modules (@fnproject/fdk from npm).
set -euo pipefail
cd "$(dirname "$0")/.."
for ex in rust-hello python-hello node-hello; do
  if [ -x "examples/$ex/setup.sh" ] || [ -f "examples/$ex/setup.sh" ]; then
    sh "examples/$ex/setup.sh"
  fi
done
# Functions run as an unprivileged user: the examples must be readable.
chmod -R a+rX examples
