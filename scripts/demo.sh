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
echo "== done in $((SECONDS - started))s; metrics and plots are in $DEMO_DIR/run/*/"
echo "Next, as they land: export to ONNX and Triton (fbmr export, fbmr triton),"
echo "then the FastAPI facade and similar-listing index (fbmr serve, fbmr index)."
