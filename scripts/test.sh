#!/usr/bin/env bash
# Set up, then lint and run the default test suite (slow tests excluded; add `-m slow` for those).
# Chromium is installed for the browser test of the HTML reports, which is then required to run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/install_browser.sh
export SPARSE_LENS_REQUIRE_BROWSER=1
. .venv/bin/activate
ruff check .
ruff format --check .
# pinned in pyproject; the env var stops its check of PyPI for a newer version (no network)
PYRIGHT_PYTHON_IGNORE_WARNINGS=1 pyright
python -m pytest "$@"
