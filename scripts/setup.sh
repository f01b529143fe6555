#!/usr/bin/env bash
# Set up flatminima in ./.venv on a fresh machine: the CPU build of torch first (a bare `torch`
# requirement would pull a multi-GB CUDA build), then the package with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
python -c "import torch" 2>/dev/null || pip install -q torch==2.13.0 || pip install -q torch --index-url https://download.pytorch.org/whl/cpu
pip install -q -e ".[test]"
