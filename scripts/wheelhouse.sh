#!/usr/bin/env bash
# The wheelhouse the images install from: every third-party wheel at the version pinned in uv.lock
# (hash-checked), plus wheels of fbmr-core and fbmr-serving built from this checkout, and the
# pinned requirement lists the Dockerfiles use as constraints. Images then install with
# `pip install --no-index`, so a build needs no network and gets exactly what the tests ran on.
#   bash scripts/wheelhouse.sh [OUT]   (default build/wheelhouse; third-party wheels are kept while
#                                       uv.lock is unchanged)
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${1:-build/wheelhouse}"
uv() { bash scripts/uv.sh "$@"; }
mkdir -p "$OUT"
stamp="$(sha256sum uv.lock | cut -c1-16)"
export_args=(--frozen --no-dev --no-emit-workspace --package fbmr-serving)

if [ "$(cat "$OUT/.lock-stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "== wheelhouse: third-party wheels pinned by uv.lock -> $OUT"
  rm -f "$OUT"/*.whl "$OUT/.lock-stamp"
  # facade.txt: what fbmr-serving needs; all.txt adds the local-triton extra (nvidia-pytriton,
  # onnxruntime) for the CPU Triton image. Both serve as pip constraints inside the images.
  uv export "${export_args[@]}" --no-hashes --no-header --no-annotate > "$OUT/facade.txt"
  uv export "${export_args[@]}" --extra local-triton --no-hashes --no-header --no-annotate \
    > "$OUT/all.txt"
  uv export "${export_args[@]}" --extra local-triton --no-header --no-annotate > "$OUT/.hashed.txt"
  # pip comes from a throw-away virtual environment, so the host's Python needs none.
  [ -x build/pip-venv/bin/pip ] || uv venv --quiet --seed build/pip-venv
  build/pip-venv/bin/pip wheel --quiet --no-deps --require-hashes -r "$OUT/.hashed.txt" -w "$OUT"
  echo "$stamp" > "$OUT/.lock-stamp"
fi
echo "== wheelhouse: fbmr-core and fbmr-serving from this checkout -> $OUT"
rm -f "$OUT"/fbmr_*.whl
uv build --quiet --wheel --package fbmr-core --out-dir "$OUT"
uv build --quiet --wheel --package fbmr-serving --out-dir "$OUT"
echo "== wheelhouse: $(find "$OUT" -name '*.whl' | wc -l) wheels, $(du -sh "$OUT" | cut -f1)"
