#!/bin/sh
# Run the Python FDK from .venv (made by setup.sh from Debian's python3).
# The venv's console scripts carry the build-time absolute path in their
# shebang, so call the interpreter explicitly.
dir=$(dirname "$0")
exec "$dir/.venv/bin/python3" "$dir/.venv/bin/fdk" "$dir/func.py" handler
