#!/usr/bin/env bash
# The demo end to end on generated data: set-up, demo listings and photos in the seed layout,
# data preparation, training with tiny settings, ONNX export into a Triton model repository,
# tritonserver and the facade, the similar-listing index, a few real requests, then everything
# stopped. Everything is written under $DEMO_DIR (default runs/demo), emptied first; the servers
# bind to 127.0.0.1 on ports 18000-18002 (Triton HTTP, gRPC, metrics) and 18080 (facade), or
# $TRITON_HTTP_PORT, $TRITON_GRPC_PORT, $TRITON_METRICS_PORT and $FACADE_PORT.
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO_DIR="${DEMO_DIR:-runs/demo}"
TRITON_HTTP_PORT="${TRITON_HTTP_PORT:-18000}"
TRITON_GRPC_PORT="${TRITON_GRPC_PORT:-18001}"
TRITON_METRICS_PORT="${TRITON_METRICS_PORT:-18002}"
FACADE_PORT="${FACADE_PORT:-18080}"
FACADE="http://127.0.0.1:$FACADE_PORT"
started=$SECONDS
bash scripts/setup.sh
fbmr() { bash scripts/uv.sh run --frozen fbmr "$@"; }

rm -rf "$DEMO_DIR"
echo "== 1. demo data in the seed layout -> $DEMO_DIR/seed"
fbmr data demo --out "$DEMO_DIR/seed"
echo "== 2. clean, join and split -> $DEMO_DIR/prepared"
fbmr data prepare "$DEMO_DIR/seed" --out "$DEMO_DIR/prepared" --image-size 128
echo "== 3. train word2vec, image, text and fusion models (tiny settings) -> $DEMO_DIR/run"
fbmr train all --data "$DEMO_DIR/prepared" --run "$DEMO_DIR/run" --preset tiny --no-progress
echo "== 4. export to ONNX (parity-checked) and a Triton model repository -> $DEMO_DIR/model_repository"
fbmr export --run "$DEMO_DIR/run" --repo "$DEMO_DIR/model_repository" --target cpu --no-progress
echo "== 5. tritonserver and the facade on 127.0.0.1 (fbmr serve --with-triton)"
.venv/bin/fbmr serve --with-triton --repo "$DEMO_DIR/model_repository" --index-dir "$DEMO_DIR/index" \
  --port "$FACADE_PORT" --triton-grpc-port "$TRITON_GRPC_PORT" \
  --triton-http-port "$TRITON_HTTP_PORT" --triton-metrics-port "$TRITON_METRICS_PORT" \
  > "$DEMO_DIR/serve.log" 2>&1 &
serve_pid=$!
trap 'kill $serve_pid 2>/dev/null; wait $serve_pid 2>/dev/null' EXIT
for _ in $(seq 180); do
  curl -fs "$FACADE/healthz" >/dev/null 2>&1 && break
  kill -0 $serve_pid 2>/dev/null || { cat "$DEMO_DIR/serve.log"; exit 1; }
  sleep 1
done
echo "== 6. the catalogue (train + val listings) embedded through Triton into a FAISS index"
fbmr index build --data "$DEMO_DIR/prepared" --out "$DEMO_DIR/index" \
  --triton-url "127.0.0.1:$TRITON_GRPC_PORT" --repo "$DEMO_DIR/model_repository" \
  --splits train,val --no-progress
fbmr index reload --url "$FACADE"
echo "== 7. requests to the facade (a test-split listing the index has not seen)"
bash scripts/uv.sh run --frozen python scripts/demo_requests.py "$FACADE" "$DEMO_DIR/prepared"
echo "== 8. stopping the facade and Triton"
kill $serve_pid && wait $serve_pid || true
trap - EXIT
echo "== done in $((SECONDS - started))s; metrics and plots are in $DEMO_DIR/run/*/, logs in $DEMO_DIR/"
