#!/bin/sh
# Entrypoint of both Triton images: check that the mounted repository was exported for this
# image's target (FBMR_TARGET), then run tritonserver in the foreground on it. Addresses and ports
# come from TRITON_ADDRESS (0.0.0.0) and TRITON_HTTP_PORT, TRITON_GRPC_PORT, TRITON_METRICS_PORT
# (8000-8002); arguments are passed on to tritonserver. Model control is explicit: Triton starts
# with no model loaded, and the facade's rollout (fbmr.serving.triton.rollout) loads the version to serve
# through the repository API, checks each new export beside the version in use before switching,
# and refuses one that fails, which keeps the old version serving. Ready means "takes requests";
# which version serves is the facade's /readyz to say.
set -eu
repo="${TRITON_MODEL_REPOSITORY:-/models}"
python3 "$(dirname "$0")/check_repository.py" "$repo" "$FBMR_TARGET"
address="${TRITON_ADDRESS:-0.0.0.0}"
# The control plane (loading models, which can run model code; shared memory; trace and log
# settings) answers only callers sending the admin key, the facade's FBMR_TRITON_ADMIN_KEY
# (fbmr.serving.triton.admin). Without a key, Triton serves only its own host, unless told.
restricted="model-repository,shared-memory,trace,logging"
if [ -n "${FBMR_TRITON_ADMIN_KEY:-}" ]; then
  rule="$restricted:fbmr-triton-admin-key=$FBMR_TRITON_ADMIN_KEY"
  set -- "--grpc-restricted-protocol=$rule" "--http-restricted-api=$rule" "$@"
elif [ "$address" != "127.0.0.1" ] && [ "${FBMR_INSECURE:-0}" != "1" ]; then
  echo "refusing to serve $address with an open control plane: set FBMR_TRITON_ADMIN_KEY" \
       "(the facade's too), or FBMR_INSECURE=1" >&2
  exit 2
fi
if [ -n "${TRITON_BACKEND_DIRECTORY:-}" ]; then
  set -- "--backend-directory=$TRITON_BACKEND_DIRECTORY" "$@"
fi
exec "${TRITONSERVER:-tritonserver}" \
  --model-repository="$repo" \
  --http-address="$address" --http-port="${TRITON_HTTP_PORT:-8000}" \
  --grpc-address="$address" --grpc-port="${TRITON_GRPC_PORT:-8001}" \
  --metrics-address="$address" --metrics-port="${TRITON_METRICS_PORT:-8002}" \
  --allow-metrics=true --strict-readiness=false --log-verbose=0 \
  --model-control-mode=explicit \
  "$@"
