#!/usr/bin/env bash
# Fresh-machine set-up, idempotent: real Fashion-MNIST from Debian, a virtual environment with the CPU
# build of torch 2.13.0 (an unpinned torch would pull several GB of CUDA wheels) and ticketlab itself.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -e /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c scripts/constraints.txt torch
# The optional extras are installed too, so CI runs the parquet, Ray executor and ONNX export tests (~40 s more).
.venv/bin/python -m pip install -q -c scripts/constraints.txt -e ".[test,parquet,ray,export]"
