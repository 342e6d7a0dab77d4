#!/usr/bin/env bash
# Lint (ruff, settings in pyproject.toml), then the whole test suite, after setting up
# (or reusing) the environment:
#   bash tools/run_tests.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(bash tools/setup_env.sh)
"$PY" -m ruff check .
exec "$PY" -m pytest tests --durations=25 "$@"
