#!/usr/bin/env bash
# Set-up, lint, then every test. Extra arguments go to pytest (e.g. `-k prepare`).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
echo "== lint (ruff)"
bash scripts/uv.sh run --frozen ruff check .
bash scripts/uv.sh run --frozen ruff format --check .
echo "== tests (pytest)"
bash scripts/uv.sh run --frozen pytest "$@"
