#!/usr/bin/env bash
# Builds the facade and CPU Triton images and checks them end to end: the demo's model repository
# and index mounted, both containers started on 127.0.0.1 ports (host networking), /readyz, a
# prediction and a similar-listing query through them, then everything stopped. Fails loudly on
# any step. Not part of scripts/test.sh: it needs root, Docker and a few minutes.
#
# Where no container registry can be reached, the images are built on a local Debian bookworm
# base (debootstrap + docker import, cached as $LOCAL_BASE after the first run) instead of
# python:3.11-slim; the Python packages come from the wheelhouse made from uv.lock
# (scripts/wheelhouse.sh), and the builds run without network. BASE=python:3.11-slim uses the real
# base. The demo's data, model and index are made once under $WORK (runs/test-images) and reused
# while the code they come from (core/, training/, export/) is unchanged.
#   bash scripts/test-images.sh
# Ports: TRITON_HTTP_PORT, TRITON_GRPC_PORT, TRITON_METRICS_PORT (18100-18102), FACADE_PORT
# (18180). KEEP_DOCKERD=1 leaves a dockerd this script started running.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK="${WORK:-runs/test-images}"
LOCAL_BASE="${LOCAL_BASE:-fbmr-local-base:bookworm}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
TRITON_HTTP_PORT="${TRITON_HTTP_PORT:-18100}"
TRITON_GRPC_PORT="${TRITON_GRPC_PORT:-18101}"
TRITON_METRICS_PORT="${TRITON_METRICS_PORT:-18102}"
FACADE_PORT="${FACADE_PORT:-18180}"
FACADE="http://127.0.0.1:$FACADE_PORT"
TRITON_NAME=fbmr-test-triton
FACADE_NAME=fbmr-test-facade
export DOCKER_BUILDKIT=0  # the classic builder: in every docker.io, no buildx plugin needed
started=$SECONDS
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"

step() { echo "== [$((SECONDS - started))s] $*"; }
fail() { echo "FAILED: $*" >&2; exit 1; }

dockerd_pid=""
cleanup() {
  docker rm -f "$FACADE_NAME" "$TRITON_NAME" >/dev/null 2>&1 || true
  if [ -n "$dockerd_pid" ] && [ -z "${KEEP_DOCKERD:-}" ]; then
    kill "$dockerd_pid" 2>/dev/null && wait "$dockerd_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

step "1. Docker and debootstrap"
[ "$(id -u)" = 0 ] || fail "run as root (it installs packages and starts dockerd)"
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  # No bridge network and no iptables rules: every container here uses the host's network.
  dockerd --bridge=none --iptables=false --ip6tables=false >"$WORK/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { tail -20 "$WORK/dockerd.log"; fail "dockerd did not start"; }
fi

BASE="${BASE:-}"
if [ -z "$BASE" ]; then
  BASE="$LOCAL_BASE"
  if docker image inspect "$BASE" >/dev/null 2>&1; then
    step "2. local base image $BASE (cached)"
  else
    step "2. local base image $BASE: Debian bookworm minbase with python3 (debootstrap)"
    rootfs="$WORK/rootfs"
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,libpython3.11 \
      bookworm "$rootfs" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1 \
      || { tail -20 "$WORK/debootstrap.log"; fail "debootstrap"; }
    chroot "$rootfs" apt-get clean
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
    tar -C "$rootfs" -c . | docker import -c "ENV LANG=C.UTF-8" - "$BASE" >/dev/null
    rm -rf "$rootfs"
  fi
fi

stamp="$(git rev-parse HEAD:core HEAD:training HEAD:export 2>/dev/null | tr -d '\n')-$(sha256sum uv.lock | cut -c1-16)"
DEMO="$WORK/demo"
if [ -f "$DEMO/index/CURRENT" ] && [ "$(cat "$WORK/demo.stamp" 2>/dev/null)" = "$stamp" ]; then
  step "3. demo model repository and index in $DEMO (reused: the code is unchanged)"
else
  step "3. demo model repository and index: scripts/demo.sh into $DEMO (a few minutes)"
  rm -f "$WORK/demo.stamp"
  DEMO_DIR="$DEMO" TRITON_HTTP_PORT="$TRITON_HTTP_PORT" TRITON_GRPC_PORT="$TRITON_GRPC_PORT" \
    TRITON_METRICS_PORT="$TRITON_METRICS_PORT" FACADE_PORT="$FACADE_PORT" \
    bash scripts/demo.sh >"$WORK/demo.log" 2>&1 || { tail -30 "$WORK/demo.log"; fail "demo"; }
  echo "$stamp" >"$WORK/demo.stamp"
fi

step "4. wheelhouse from uv.lock"
bash scripts/wheelhouse.sh build/wheelhouse

build() {  # build IMAGE DOCKERFILE: offline, on $BASE
  docker build --network none --build-arg "BASE=$BASE" -f "$2" -t "$1" . >"$WORK/build-${1%%:*}.log" 2>&1 \
    || { tail -30 "$WORK/build-${1%%:*}.log"; fail "docker build $2"; }
  echo "   $1: $(docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1 / 1e6}')"
}
step "5. images on $BASE"
build fbmr-facade:test docker/facade.Dockerfile
build fbmr-triton-cpu:test docker/triton-cpu.Dockerfile

wait_healthy() {  # wait_healthy CONTAINER SECONDS: the image's own HEALTHCHECK must pass
  for _ in $(seq "$2"); do
    case "$(docker inspect -f '{{.State.Status}} {{.State.Health.Status}}' "$1")" in
      "running healthy") return 0 ;;
      running*) sleep 1 ;;
      *) docker logs --tail 30 "$1"; fail "$1 stopped" ;;
    esac
  done
  docker logs --tail 30 "$1"
  fail "$1 not healthy after $2 s"
}

step "6. a repository exported for another target is refused"
wrong="$WORK/wrong-target/product_classifier/1"
mkdir -p "$wrong" && echo '{"target": "gpu"}' >"$wrong/fbmr.json"
if out="$(docker run --rm --network host -v "$WORK/wrong-target:/models:ro" fbmr-triton-cpu:test 2>&1)"; then
  fail "the CPU Triton image started on a gpu-target repository"
fi
grep -q "exported for the gpu target" <<<"$out" || fail "unexpected refusal: $out"
echo "   $out"

step "7. Triton (CPU image) and the facade, on 127.0.0.1"
docker rm -f "$FACADE_NAME" "$TRITON_NAME" >/dev/null 2>&1 || true
docker run -d --name "$TRITON_NAME" --network host --shm-size 256m \
  -e TRITON_ADDRESS=127.0.0.1 -e TRITON_HTTP_PORT="$TRITON_HTTP_PORT" \
  -e TRITON_GRPC_PORT="$TRITON_GRPC_PORT" -e TRITON_METRICS_PORT="$TRITON_METRICS_PORT" \
  -v "$DEMO/model_repository:/models:ro" fbmr-triton-cpu:test >/dev/null
wait_healthy "$TRITON_NAME" 180
docker run -d --name "$FACADE_NAME" --network host \
  -e FBMR_HOST=127.0.0.1 -e FBMR_PORT="$FACADE_PORT" -e FBMR_WORKERS=1 \
  -e FBMR_TRITON_URL="127.0.0.1:$TRITON_GRPC_PORT" \
  -v "$DEMO/model_repository:/models:ro" -v "$DEMO/index:/index:ro" fbmr-facade:test >/dev/null
wait_healthy "$FACADE_NAME" 60
for name in "$TRITON_NAME" "$FACADE_NAME"; do
  uid="$(docker exec "$name" id -u)"
  [ "$uid" != 0 ] || fail "$name runs as root"
done
docker run --rm --network none fbmr-facade:test python3 -c "import torch" >/dev/null 2>&1 \
  && fail "the facade image has torch"
echo "   both healthy, non-root; the facade image has no torch"

step "8. requests through the containers"
curl -fsS "$FACADE/readyz" || fail "/readyz"
echo
read -r photo text < <(.venv/bin/python - "$DEMO/prepared" <<'PY'
import sys
import pyarrow.parquet as pq
root = sys.argv[1]
products = {p["product_id"]: p for p in pq.read_table(f"{root}/products.parquet").to_pylist()
            if p["split"] == "test"}
image = next(i for i in pq.read_table(f"{root}/images.parquet").to_pylist()
             if i["product_id"] in products)
product = products[image["product_id"]]
print(f"{root}/{image['file']}", product["product_name"])
PY
)
echo "   query: photo $photo, text '$text' (a test-split listing)"
prediction="$(curl -fsS -F "photo=@$photo" --form-string "text=$text" "$FACADE/v1/predict/combined")" \
  || fail "POST /v1/predict/combined"
echo "   POST /v1/predict/combined -> $prediction"
similar="$(curl -fsS -F "photo=@$photo" --form-string "text=$text" -F k=3 "$FACADE/v1/similar")" \
  || fail "POST /v1/similar"
echo "   POST /v1/similar k=3 -> $similar"
.venv/bin/python - "$prediction" "$similar" <<'PY' || fail "unexpected answers"
import json, sys
prediction, similar = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert prediction["pred"] == prediction["classes"][0], prediction
assert abs(sum(prediction["probabilities"]) - 1) < 1e-3, prediction
assert len(similar["listings"]) == 3, similar
assert all(item["category"] in prediction["classes"] for item in similar["listings"]), similar
PY
triton_metrics="$(curl -fsS "http://127.0.0.1:$TRITON_METRICS_PORT/metrics")" || fail "Triton's metrics"
grep -q '^nv_inference_request_success{model="product_classifier"' <<<"$triton_metrics" \
  || fail "Triton's metrics do not count the requests"
facade_metrics="$(curl -fsS "$FACADE/metrics")" || fail "the facade's metrics"
grep -q "^# HELP" <<<"$facade_metrics" || fail "the facade's metrics are not Prometheus'"
echo "   metrics: Triton's and the facade's answered"

step "9. stopping the containers"
docker stop -t 30 "$FACADE_NAME" "$TRITON_NAME" >/dev/null
docker rm "$FACADE_NAME" "$TRITON_NAME" >/dev/null
docker image ls --format '   {{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "fbmr-(facade|triton-cpu):test"
step "passed in $((SECONDS - started))s"
