#!/usr/bin/env bash
# Real-data training run behind docs/results.md: prepare the seed layout, train every stage,
# and run the TF-IDF baseline on the same split. Usage: bash bench/real_data.sh SEED_DIR [OUT_DIR]
# Each step's wall time is printed, so the figures in the results can be reproduced.
# TRAIN_EXTRA: more `fbmr train` options for every stage, split on spaces (on a GPU:
# TRAIN_EXTRA="--device cuda --image-mode finetune --trainable-from conv_stem --workers 4").
set -euo pipefail
cd "$(dirname "$0")/.."
SRC="${1:?usage: bench/real_data.sh SEED_DIR [OUT_DIR]}"
OUT="${2:-runs/real}"
FBMR=(bash scripts/uv.sh run --frozen fbmr)
# the image trunk is the default's (EfficientNet-Lite0 from its installed ImageNet weights, the
# last blocks fine-tuned over cached maps); BACKBONE=resnet50 where its weights can be had
TRAIN_ARGS=(--data "$OUT/prepared" --run "$OUT/run" --backbone "${BACKBONE:-efficientnet_lite0}"
            --image-epochs 30 --fusion-epochs 40 --patience 5 --workers 2 --no-progress)
read -r -a EXTRA <<< "${TRAIN_EXTRA:-}"
TRAIN_ARGS+=("${EXTRA[@]}")

timed() { local start=$SECONDS; "$@"; echo "== $* took $((SECONDS - start)) s"; }

[ -f "$OUT/prepared/manifest.json" ] || timed "${FBMR[@]}" data prepare "$SRC" --out "$OUT/prepared" --image-size 256
for stage in word2vec text image fusion; do
  timed "${FBMR[@]}" train "$stage" "${TRAIN_ARGS[@]}"
done
timed bash scripts/uv.sh run --frozen python bench/text_baseline.py "$OUT/prepared"
