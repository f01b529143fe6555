#!/usr/bin/env bash
# Set up flatminima in ./.venv on a fresh machine: the CPU build of torch first (a bare `torch`
# requirement would pull a multi-GB CUDA build), then the package.
#
#   bash scripts/setup.sh          # core: what `flatminima` needs to run (the main job, the library)
#   bash scripts/setup.sh test     # core + the test extras (Ray, Lightning, transformers, notebook runner, ...)
#
# One plain line per phase; pip runs quietly and its output goes to .venv/setup.log, shown on failure.
# SETUP_STEP / SETUP_STEPS number the phases when a calling script has more of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=${1:-core}
case "$EXTRAS" in
  core) SPEC="." ; WHAT="flatminima" ;;
  test) SPEC=".[test]" ; WHAT="flatminima with its test extras" ;;
  *) echo "usage: bash scripts/setup.sh [core|test]" >&2; exit 2 ;;
esac
PY=${PYTHON:-python3}
STEP=${SETUP_STEP:-1}
STEPS=${SETUP_STEPS:-2}
LOG=.venv/setup.log

if [ -x .venv/bin/python ]; then
  echo "[$STEP/$STEPS] using the existing .venv"
else
  echo "[$STEP/$STEPS] creating .venv"
  "$PY" -m venv .venv
fi
. .venv/bin/activate
: >"$LOG"

fail() {
  echo "set-up failed: $1. The last lines of $LOG:" >&2
  tail -n 40 "$LOG" >&2
  exit 1
}
quiet() { "$@" >>"$LOG" 2>&1; }

# Installed already with these extras from this pyproject.toml? Then nothing to do.
HASH=$(python -c 'import hashlib,sys;print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest()[:16])' pyproject.toml)
STAMP=.venv/.flatminima-$EXTRAS-$HASH
if { [ -f "$STAMP" ] || [ -f ".venv/.flatminima-test-$HASH" ]; } && python -c "import flatminima, torch" >/dev/null 2>&1; then
  echo "[$((STEP + 1))/$STEPS] torch (CPU build) and $WHAT: already installed"
  exit 0
fi

echo "[$((STEP + 1))/$STEPS] installing torch (CPU build) and $WHAT"
quiet python -m pip install -q --upgrade pip || true
if ! python -c "import torch" >/dev/null 2>&1; then
  quiet pip install -q torch==2.13.0 \
    || quiet pip install -q torch --index-url https://download.pytorch.org/whl/cpu \
    || fail "could not install the CPU build of torch"
fi
quiet pip install -q -e "$SPEC" || fail "could not install $WHAT"
rm -f .venv/.flatminima-"$EXTRAS"-*
touch "$STAMP"
