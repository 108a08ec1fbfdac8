#!/usr/bin/env bash
# Install everything (scripts/setup.sh, plus headless Chromium for the report test), check the conventions (scripts/lint.sh: ruff, ruff format, mypy),
# then run the whole test suite, slow end-to-end tests included. The tests run even when a check failed,
# so one CI run reports both; it fails if either did.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Headless Chromium for the HTML report test (tests/test_report.py skips without it); only the tests need
# it, so it is installed here and not by setup.sh, which scripts/demo.sh runs too.
if ! command -v chromedriver >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
lint_status=0
bash scripts/lint.sh || lint_status=$?
test_status=0
.venv/bin/python -m pytest -q -p no:cacheprovider "$@" || test_status=$?
if [ "$test_status" -ne 0 ]; then
    exit "$test_status"
fi
exit "$lint_status"
