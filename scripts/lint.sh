#!/usr/bin/env bash
# The conventions CI enforces (settings in pyproject.toml): ruff's lint rules, ruff's formatting (checked,
# never rewritten here) and mypy on the public API. Every check runs; the script fails if any failed.
# PYTHON picks the interpreter whose ruff and mypy run (default: the project's .venv).
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
PATHS=(src tests benchmarks)

failed=()
"$PY" -m ruff check "${PATHS[@]}" || failed+=("ruff check")
"$PY" -m ruff format --check "${PATHS[@]}" || failed+=("ruff format --check")
"$PY" -m mypy || failed+=("mypy")

if [ ${#failed[@]} -gt 0 ]; then
    joined=$(IFS=,; echo "${failed[*]}")
    echo "lint: failed: ${joined//,/, }" >&2
    exit 1
fi
echo "lint: ruff check, ruff format --check and mypy passed"
