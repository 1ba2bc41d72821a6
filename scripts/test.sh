#!/usr/bin/env bash
# Set-up, lint, type check, then every test. Extra arguments go to pytest (e.g. `-k prepare`).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
echo "== lint (ruff)"
bash scripts/uv.sh run --frozen ruff check .
bash scripts/uv.sh run --frozen ruff format --check .
echo "== types (mypy, strict on every component and on the benchmarks)"
bash scripts/uv.sh run --frozen mypy -p fbmr.core -p fbmr.serving -p fbmr.client -p fbmr.training -p fbmr.export
# bench/ is a folder of scripts, not a package: mypy takes it as files (a second call, as mypy
# takes packages or files, not both); its exclusions are [tool.mypy] exclude in pyproject.toml.
bash scripts/uv.sh run --frozen mypy bench
echo "== tests (pytest)"
# Two workers (pytest-xdist), each test file on one of them: most tests wait on servers they
# started, so one process leaves a core idle; FBMR_TEST_WORKERS=0 runs them in this process.
# Files are handed out in collection order (the longest first, tests/conftest.py), not xdist's
# default of the files with the most tests first.
bash scripts/uv.sh run --frozen pytest -n "${FBMR_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"
