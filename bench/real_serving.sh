#!/usr/bin/env bash
# Serving figures behind docs/results.md, on a trained real-data run (bench/real_data.sh):
# export (cpu target), Triton + facade, the catalogue index (train + val listings), then the
# similar-listing category share and the latency of Triton's ensemble and of the facade.
# Usage: bash bench/real_serving.sh [OUT_DIR]   (default runs/real; servers on 127.0.0.1)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/real}"
fbmr() { bash scripts/uv.sh run --frozen fbmr "$@"; }
py() { bash scripts/uv.sh run --frozen python "$@"; }
timed() { local start=$SECONDS; "$@"; echo "== $* took $((SECONDS - start)) s"; }

[ -d "$OUT/model_repository/product_classifier" ] ||
  timed fbmr export --run "$OUT/run" --repo "$OUT/model_repository" --target cpu --no-progress
.venv/bin/fbmr serve --with-triton --repo "$OUT/model_repository" --index-dir "$OUT/index" \
  --port 18080 --triton-grpc-port 18001 --triton-http-port 18000 --triton-metrics-port 18002 \
  > "$OUT/serve.log" 2>&1 &
serve_pid=$!
trap 'kill $serve_pid 2>/dev/null; wait $serve_pid 2>/dev/null || true' EXIT
for _ in $(seq 300); do
  curl -fs http://127.0.0.1:18080/healthz >/dev/null 2>&1 && break
  kill -0 $serve_pid 2>/dev/null || { tail -20 "$OUT/serve.log"; exit 1; }
  sleep 1
done
[ -f "$OUT/index/CURRENT" ] ||
  timed fbmr index build --data "$OUT/prepared" --out "$OUT/index" --triton-url 127.0.0.1:18001 \
    --repo "$OUT/model_repository" --splits train,val --kind combined --no-progress
fbmr index reload --url http://127.0.0.1:18080
timed py bench/similar_share.py --url http://127.0.0.1:18080 --data "$OUT/prepared" \
  --out runs/bench/similar_share.json
timed py bench/latency.py triton --url 127.0.0.1:18001 --repo "$OUT/model_repository" \
  --data "$OUT/prepared" --out runs/bench/triton
timed py bench/latency.py facade --url http://127.0.0.1:18080 --data "$OUT/prepared" \
  --out runs/bench/facade
