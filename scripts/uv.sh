#!/usr/bin/env bash
# Runs uv from PATH, or the copy scripts/setup.sh installed into .tools/.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v uv >/dev/null 2>&1; then exec uv "$@"; else exec .tools/bin/uv "$@"; fi
