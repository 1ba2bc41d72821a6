#!/usr/bin/env bash
# Set-up for a fresh machine: uv (into .tools/ when it is not on PATH), then every fbmr
# distribution, editable, with the test and lint tools, exactly as pinned in uv.lock.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION="0.13.9"
if command -v uv >/dev/null 2>&1; then
  UV=uv
else
  if [ ! -x .tools/bin/uv ]; then
    echo "installing uv ${UV_VERSION} into .tools/"
    python3 -m venv .tools
    .tools/bin/python -m pip install --quiet "uv==${UV_VERSION}"
  fi
  UV=.tools/bin/uv
fi
# Bytecode compiled once into .venv: where PYTHONDONTWRITEBYTECODE is set, every Python process
# (each pytest run, and each server or command a test starts) would otherwise compile torch and
# the rest from source again, about half of a run's start-up (after the first time, seconds).
"$UV" sync --frozen --compile-bytecode
echo "uv: $("$UV" --version); environment ready in .venv/"
