#!/usr/bin/env bash
# Side by side, in one run, on one machine: the same trained run, the same listings, one system
# after another, so that the ratios between them hold even where the machine is shared.
#   1. bare onnxruntime: the exported ONNX files in-process, batch 1, 8 and 32 (the limit), then
#      batch 1 and 8 from the photo files the Locust steps send, decoded on the clock
#   2. Triton direct: the product_classifier ensemble over gRPC, preprocessed inputs, 1 and 8 clients
#   3. the facade under Locust: /v1/predict/combined at 1 and 8 users, then the mix at 8, then
#      combined at 8 once more with the CPU seconds each process used (bench/cpu_share.py)
#   4. the seed-style server (bench/seed_style_app.py) under the same Locust runs (its mix has no
#      similar listings: it has no index)
#   5. INT8 (fbmr export --precision int8): bare onnxruntime, Triton direct and the facade
#      (combined at 1 and 8 users, and the CPU split at 8) on the INT8 files, with the same ratios
#      to float32 bare
#   6. bare onnxruntime again (the reference is the mean of both; their gap shows the drift)
#   7. the image encoder alone per trunk, ResNet-50 beside EfficientNet-Lite0 (bench/image_trunks.py)
# then one table (compare.md) and one plot (compare.png) with the ratios to bare onnxruntime.
#
# Usage: bash bench/compare.sh RUN [OUT_DIR]
#   RUN       a trained run (fbmr train); exported here to OUT_DIR/model_repository for $TARGET
#   OUT_DIR   default runs/bench/compare-<time>
# Environment: DATA (prepared dataset whose val listings are sent; default the run's own data),
#   REPO (an exported repository to use instead of exporting RUN), TARGET (cpu or gpu, default
#   cpu), INT8 (1: the INT8 steps, default 1 on the cpu target), REPO_INT8 (an INT8 export to use
#   instead of exporting RUN), INT8_EXPORT_ARGS (more `fbmr export` options for it, e.g. the
#   gate's), TRUNKS (0 leaves step 8 out), REQUESTS (Triton direct, per level, default 300),
#   BARE_SECONDS (bare onnxruntime, at least per batch size, default 15),
#   DURATION / WARMUP (Locust seconds measured / left out per step, default 40 / 10),
#   INDEX_SPLITS (listings in the facade's similar-listing index, default test), BASE_PORT
#   (default 18100: Triton 18100-18102, facade +80, seed-style server +90), NICE (default 0),
#   PHOTOS (a folder of photos as sellers upload them, named by image id: the Locust steps send
#   those, with their listings' texts, instead of DATA's prepared photos, and bare onnxruntime
#   decodes them in its from-files step; Triton direct and bare onnxruntime's first step take
#   preprocessed inputs either way. Unset: the raw_images/ folder of the source DATA was prepared from, when
#   it has one, as the real sample does; PHOTOS= sends the prepared photos).
# Everything listens on 127.0.0.1 and is stopped at the end, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { sed -n '2,20p' "$0"; exit 2; }
RUN="$1"
OUT="${2:-runs/bench/compare-$(date +%Y%m%d-%H%M%S)}"
TARGET="${TARGET:-cpu}"
DURATION="${DURATION:-40}"
WARMUP="${WARMUP:-10}"
INDEX_SPLITS="${INDEX_SPLITS:-test}"
INT8="${INT8:-$([ "$TARGET" = cpu ] && echo 1 || echo 0)}"
TRUNKS="${TRUNKS:-1}"
REQUESTS="${REQUESTS:-300}"
BARE_SECONDS="${BARE_SECONDS:-15}"
BASE_PORT="${BASE_PORT:-18100}"
NICE="${NICE:-0}"
TRITON_HTTP=$BASE_PORT TRITON_GRPC=$((BASE_PORT + 1)) TRITON_METRICS=$((BASE_PORT + 2))
FACADE_PORT=$((BASE_PORT + 80)) SEED_PORT=$((BASE_PORT + 90))
FACADE="http://127.0.0.1:$FACADE_PORT" SEED="http://127.0.0.1:$SEED_PORT"
mkdir -p "$OUT"
py() { nice -n "$NICE" .venv/bin/python "$@"; }
fbmr() { nice -n "$NICE" .venv/bin/fbmr "$@"; }
started=$SECONDS
step() { echo "== [$((SECONDS - started)) s] $*"; }

DATA="${DATA:-$(py -c 'import json, sys; print(json.load(open(sys.argv[1]))["data"])' "$RUN/config.json")}"
if [ -z "${PHOTOS+set}" ]; then  # unset: the photos sellers uploaded, where the data has them
  PHOTOS=$(py bench/sellers_photos.py "$DATA")
fi
export FBMR_BENCH_PHOTOS="$PHOTOS"  # read by bench/locustfile.py
if [ -z "${REPO:-}" ]; then
  REPO="$OUT/model_repository"
  step "export $RUN ($TARGET target) -> $REPO"
  fbmr export --run "$RUN" --repo "$REPO" --target "$TARGET" --no-progress > "$OUT/export.log" 2>&1 ||
    { tail -20 "$OUT/export.log"; exit 1; }
fi
if [ "$INT8" = 1 ] && [ -z "${REPO_INT8:-}" ]; then
  REPO_INT8="$OUT/model_repository_int8"
  step "export $RUN (cpu target, INT8) -> $REPO_INT8"
  # shellcheck disable=SC2086  # INT8_EXPORT_ARGS is a list of options
  fbmr export --run "$RUN" --repo "$REPO_INT8" --target cpu --precision int8 ${INT8_EXPORT_ARGS:-} \
    --no-progress > "$OUT/export-int8.log" 2>&1 || { tail -20 "$OUT/export-int8.log"; exit 1; }
fi
printf 'run=%s\nrepo=%s\nrepo_int8=%s\ndata=%s\nphotos=%s\ntarget=%s\nduration=%s\nwarmup=%s\n' \
  "$RUN" "$REPO" "${REPO_INT8:-}" "$DATA" "${PHOTOS:-prepared}" "$TARGET" "$DURATION" "$WARMUP" \
  > "$OUT/settings.txt"

pids=()
stop_all() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  pids=()
  # the facade stops its Triton on exit; this catches one left behind by a harder stop
  .venv/bin/fbmr triton stop --grpc-port "$TRITON_GRPC" >/dev/null 2>&1 || true
}
trap stop_all EXIT
trap 'exit 130' INT TERM
wait_for() {  # URL PID LOG
  for _ in $(seq 600); do
    curl -fs "$1" >/dev/null 2>&1 && return 0
    kill -0 "$2" 2>/dev/null || { tail -30 "$3"; return 1; }
    sleep 1
  done
  echo "timed out waiting for $1"; return 1
}
locust_steps() {  # URL NAME USERS... -- CLASSES...
  local url=$1 name=$2; shift 2
  local users=() classes=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do users+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  classes=("$@")
  py bench/load.py "$url" "${classes[@]}" --data "$DATA" --users "${users[@]}" \
    --duration "$DURATION" --warmup "$WARMUP" --out "$OUT/$name"
}
cpu_split() {  # NAME USERS CLASS: one Locust step with the CPU each process used (cpu_share.py)
  mkdir -p "$OUT/$1"
  py bench/cpu_share.py --out "$OUT/$1/cpu.json" -- .venv/bin/python bench/load.py "$FACADE" "$3" \
    --data "$DATA" --users "$2" --duration "$DURATION" --warmup "$WARMUP" --out "$OUT/$1" \
    > "$OUT/$1/cpu.log"
}

step "1. bare onnxruntime (no server running)"
bare() {  # REPO OUT [--from-files]: bench/bare_onnxruntime.py on the repository's latest files,
  # preprocessed inputs; with --from-files, then from the photos the Locust steps send (decoded
  # on the clock: the float32 reference only)
  py bench/bare_onnxruntime.py --repo "$1" --data "$DATA" --seconds "$BARE_SECONDS" --out "$2" \
    ${3:+"$3"} ${3:+${PHOTOS:+--photos "$PHOTOS"}}
}
bare "$REPO" "$OUT/bare" --from-files

serve() {  # REPO LOG [fbmr serve options]: the facade and its Triton on 127.0.0.1, until stop_all
  local repo=$1 log=$2; shift 2
  .venv/bin/fbmr serve --with-triton --repo "$repo" --port "$FACADE_PORT" \
    --triton-grpc-port "$TRITON_GRPC" --triton-http-port "$TRITON_HTTP" \
    --triton-metrics-port "$TRITON_METRICS" "$@" > "$log" 2>&1 &
  pids+=($!)
  wait_for "$FACADE/healthz" "${pids[-1]}" "$log"
}

step "2. Triton + the facade on 127.0.0.1"
serve "$REPO" "$OUT/facade.log" --index-dir "$OUT/index"
step "   similar-listing index of the $INDEX_SPLITS listings (combined embeddings)"
fbmr index build --data "$DATA" --out "$OUT/index" --triton-url "127.0.0.1:$TRITON_GRPC" \
  --repo "$REPO" --splits "$INDEX_SPLITS" --kind combined --no-progress > "$OUT/index.log" 2>&1 ||
  { tail -20 "$OUT/index.log"; exit 1; }
fbmr index reload --url "$FACADE" > /dev/null
wait_for "$FACADE/readyz" "${pids[-1]}" "$OUT/facade.log"
step "3. Triton direct: product_classifier over gRPC, 1 and 8 clients"
py bench/latency.py triton --url "127.0.0.1:$TRITON_GRPC" --repo "$REPO" --data "$DATA" \
  --requests "$REQUESTS" --concurrency 1 8 --out "$OUT/triton"

step "4. the facade under Locust: combined at 1 and 8 users, the mix at 8"
locust_steps "$FACADE" facade-combined 1 8 -- CombinedUser
locust_steps "$FACADE" facade-mix 8 -- CombinedUser TextUser ImageUser SimilarUser
step "   where the cores went: the facade at 8 users once more, CPU seconds per process"
cpu_split facade-cpu-split 8 CombinedUser
stop_all

step "5. the seed-style server under Locust: combined at 1 and 8 users, the mix at 8 (no similar)"
nice -n "$NICE" .venv/bin/python bench/seed_style_app.py "$RUN" --port "$SEED_PORT" \
  > "$OUT/seed.log" 2>&1 &
pids+=($!)
wait_for "$SEED/healthz" "${pids[-1]}" "$OUT/seed.log"
locust_steps "$SEED" seed-combined 1 8 -- CombinedUser
locust_steps "$SEED" seed-mix 8 -- CombinedUser TextUser ImageUser
stop_all

if [ "$INT8" = 1 ]; then
  step "6. INT8: bare onnxruntime, Triton direct, the facade (combined at 1 and 8 users)"
  bare "$REPO_INT8" "$OUT/bare-int8"
  serve "$REPO_INT8" "$OUT/facade-int8.log"
  wait_for "$FACADE/readyz" "${pids[-1]}" "$OUT/facade-int8.log"
  py bench/latency.py triton --url "127.0.0.1:$TRITON_GRPC" --repo "$REPO_INT8" --data "$DATA" \
    --requests "$REQUESTS" --concurrency 1 8 --out "$OUT/triton-int8"
  locust_steps "$FACADE" facade-int8-combined 1 8 -- CombinedUser
  cpu_split facade-int8-cpu-split 8 CombinedUser
  stop_all
fi

step "7. bare onnxruntime again: how far the machine drifted during the run"
bare "$REPO" "$OUT/bare-end" --from-files

if [ "$TRUNKS" = 1 ]; then
  step "8. the image encoder alone, trunk beside trunk: ResNet-50 and EfficientNet-Lite0"
  py bench/image_trunks.py --data "$DATA" --out "$OUT/image_trunks"
fi

step "9. table and plot"
py bench/compare.py "$OUT"
step "done: $OUT/compare.md, $OUT/compare.png"
