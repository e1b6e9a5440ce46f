#!/usr/bin/env bash
# Create .venv with the CPU build of torch and sparse_lens (editable, with test extras).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first: 2.13.0 is the local CPU wheel; any other spec pulls gigabytes of CUDA packages.
python -m pip install -q torch==2.13.0
python -m pip install -q -e '.[dev]'
