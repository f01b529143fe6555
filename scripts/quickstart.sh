#!/usr/bin/env bash
# Set up (if needed) and run the main job on the built-in default data: the `quick` study preset
# (a few dozen small MLPs on MNIST-1D, trained, measured, evaluated under shift), ending with the report.
# Interrupt it at any time: running it again resumes without redoing finished runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
flatminima study run --preset quick --workers 2 --out flatminima-out/quick "$@"
