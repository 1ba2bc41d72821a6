#!/usr/bin/env bash
# Set-up, lint, type check, then every test. Extra arguments go to pytest (e.g. `-k prepare`).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
echo "== lint (ruff)"
bash scripts/uv.sh run --frozen ruff check .
bash scripts/uv.sh run --frozen ruff format --check .
echo "== types (mypy, strict on every component)"
bash scripts/uv.sh run --frozen mypy -p fbmr.core -p fbmr.serving -p fbmr.client -p fbmr.training -p fbmr.export
echo "== tests (pytest)"
bash scripts/uv.sh run --frozen pytest "$@"
