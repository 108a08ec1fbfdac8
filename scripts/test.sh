#!/usr/bin/env bash
# Install everything (scripts/setup.sh), check the conventions (scripts/lint.sh: ruff, ruff format, mypy),
# then run the whole test suite, slow end-to-end tests included. The tests run even when a check failed,
# so one CI run reports both; it fails if either did.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
lint_status=0
bash scripts/lint.sh || lint_status=$?
test_status=0
.venv/bin/python -m pytest -q -p no:cacheprovider "$@" || test_status=$?
if [ "$test_status" -ne 0 ]; then
    exit "$test_status"
fi
exit "$lint_status"
