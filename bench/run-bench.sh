#!/bin/sh
# What `make bench` runs: the Python driver bench/mesh_bench.py (method and figures: bench/README.md).
# Loopback only, bounded (~5-7 minutes; --budget caps it), stops everything it started, prints one table.
# Arguments are passed on: sh bench/run-bench.sh --quick | --no-levers | --secs N | --rounds N | --keep
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
: "${PYTHON:=/usr/bin/python3}"
: "${HC_BIN_DIR:=$top/build}"
export HC_BIN_DIR
exec "$PYTHON" "$top/bench/mesh_bench.py" "$@"
