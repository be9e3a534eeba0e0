#!/bin/sh
# Install @fnproject/fdk into examples/node-hello/node_modules.
set -eu
cd "$(dirname "$0")"
npm install --no-audit --no-fund --silent
echo "node-hello: @fnproject/fdk installed in $(pwd)/node_modules"
