#!/bin/sh
# Make .venv from Debian's /usr/bin/python3 and install the FDK into it.
set -eu
cd "$(dirname "$0")"
/usr/bin/python3 -m venv .venv
.venv/bin/pip install --quiet -r requirements.txt
echo "python-hello: fdk installed in $(pwd)/.venv"
