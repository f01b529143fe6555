#!/usr/bin/env bash
# Set up (if needed: core + test extras, in ./.venv) and run the whole test suite: ruff, then pytest
# (which also runs the example scripts and notebooks in examples/), after the doctests of src/flatminima.
# Extra arguments go to `pytest tests`.
set -euo pipefail
cd "$(dirname "$0")/.."
SETUP_STEP=1 SETUP_STEPS=4 bash scripts/setup.sh test
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} HF_HUB_OFFLINE=1  # tiny models, several processes on few cores
# Headless Chromium renders the study report in one test; install it where we may (Debian, as root).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }) \
    || echo "note: could not install chromium; the browser test will be skipped"
fi
. .venv/bin/activate
echo "[3/4] ruff check src tests"
ruff check src tests
echo "[4/4] the docstrings' examples (doctests), then pytest tests"
# The Examples in the public entry points' docstrings. Left out: the two `python -m` entry points (importing
# them runs the CLI) and the integrations (they need the optional Lightning / Hugging Face packages).
python -m pytest --doctest-modules src/flatminima -p no:cacheprovider \
  --ignore=src/flatminima/__main__.py --ignore=src/flatminima/cli/__main__.py --ignore=src/flatminima/integrations
python -m pytest tests "$@"
