#!/usr/bin/env bash
# Set up (if needed: the core dependencies only, in ./.venv) and run the main job on the built-in default
# data: the `quick` study preset (a few dozen small MLPs on MNIST-1D, trained, measured, evaluated under
# shift), ending with the report. Interrupt it at any time: running it again resumes without redoing
# finished runs. Extra arguments go to `flatminima study run`.
set -euo pipefail
cd "$(dirname "$0")/.."
SETUP_STEP=1 SETUP_STEPS=3 bash scripts/setup.sh core
. .venv/bin/activate
echo "[3/3] running the quick study (flatminima-out/quick)"
flatminima study run --preset quick --workers 2 --out flatminima-out/quick "$@"
