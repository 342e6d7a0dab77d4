#!/usr/bin/env bash
# Lint (ruff, settings in pyproject.toml), then the whole test suite, after setting up
# (or reusing) the environment:
#   bash tools/run_tests.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(bash tools/setup_env.sh)
"$PY" -m ruff check .
if [ $# -gt 0 ]; then
  exec "$PY" -m pytest tests --durations=25 "$@"
fi
# The whole suite passed: its time goes into benchmarks/results/ (acmix_mm/records.py).
start=$(date +%s)
"$PY" -m pytest tests --durations=25
"$PY" -m acmix_mm.records add tests tests.suite_s "$(( $(date +%s) - start ))" s \
  --label 'whole test suite' --command 'bash tools/run_tests.sh'

