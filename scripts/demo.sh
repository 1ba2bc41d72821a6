#!/usr/bin/env bash
# The demo end to end on generated data: set-up, demo listings and photos in the seed layout,
# data preparation, then training with tiny settings. Everything is written under $DEMO_DIR
# (default runs/demo), which the demo empties first.
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO_DIR="${DEMO_DIR:-runs/demo}"
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
fbmr export "$DEMO_DIR/run" --repo "$DEMO_DIR/model_repository" --target cpu --no-progress
echo "== 5. a local tritonserver on it (127.0.0.1), every model ready, then stopped"
ports=(--grpc-port 18001)
trap 'fbmr triton stop "${ports[@]}" >/dev/null' EXIT
fbmr triton start --repo "$DEMO_DIR/model_repository" --http-port 18000 "${ports[@]}" --metrics-port 18002
fbmr triton status "${ports[@]}"
echo "== done in $((SECONDS - started))s; metrics and plots are in $DEMO_DIR/run/*/"
echo "Next, as they land: the FastAPI facade and similar-listing index (fbmr serve, fbmr index)."
