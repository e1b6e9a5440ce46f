#!/usr/bin/env bash
# Set up, then run the main job: train the demo model, table its tasks, prune circuits, write the report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
sparse-lens demo --out runs/demo "$@"
