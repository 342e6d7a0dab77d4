#!/usr/bin/env bash
# The whole test suite, after setting up (or reusing) the environment:
#   bash tools/run_tests.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(bash tools/setup_env.sh)
exec "$PY" -m pytest tests "$@"
