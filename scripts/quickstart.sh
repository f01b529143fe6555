#!/usr/bin/env bash
# Set up (if needed) and run the main job on the built-in default data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
flatminima curvature --out flatminima-out/quickstart "$@"
