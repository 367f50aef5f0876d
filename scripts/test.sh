#!/usr/bin/env bash
# Set up (scripts/setup.sh dev) and run the default test suite: everything but tests marked slow.
# Extra arguments go to pytest, e.g. scripts/test.sh -m slow   or   scripts/test.sh tests/cli
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
if [ "$#" -eq 0 ]; then
  set -- -m "not slow"
fi
exec .venv/bin/python -m pytest -n 2 --durations=15 "$@"
