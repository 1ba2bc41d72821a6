# The facade: fbmr-core + fbmr-serving at the versions locked in uv.lock (no torch), served by
# uvicorn as a non-root user. Installs from the wheelhouse of scripts/wheelhouse.sh, offline:
#   bash scripts/wheelhouse.sh && docker build -f docker/facade.Dockerfile -t fbmr-facade .
# Two stages: the first builds the virtual environment (pip, wheels), the second copies only it.
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
COPY build/wheelhouse/ /wheelhouse/
RUN python3 -m venv /opt/fbmr \
 && /opt/fbmr/bin/pip install --no-cache-dir --no-index --find-links /wheelhouse \
      --constraint /wheelhouse/facade.txt "fbmr-core[cli]" fbmr-serving \
 && /opt/fbmr/bin/pip check \
 && /opt/fbmr/bin/pip uninstall --yes --quiet pip setuptools \
 && find /opt/fbmr -name __pycache__ -prune -exec rm -rf {} + \
 && /opt/fbmr/bin/python -m compileall -q -j 0 /opt/fbmr/lib

FROM ${BASE}
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin fbmr
COPY --from=build /opt/fbmr /opt/fbmr
# FBMR_HOST, FBMR_PORT and FBMR_WORKERS are this image's (the command line below); every other
# FBMR_* variable is a facade setting (README.md lists them).
ENV PATH=/opt/fbmr/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    FBMR_HOST=0.0.0.0 \
    FBMR_PORT=8080 \
    FBMR_WORKERS=2 \
    FBMR_TRITON_URL=triton:8001 \
    FBMR_MODEL_REPOSITORY=/models \
    FBMR_INDEX_DIR=/index
USER fbmr
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['FBMR_PORT'], timeout=2)"]
CMD ["sh", "-c", "exec fbmr serve --host \"$FBMR_HOST\" --port \"$FBMR_PORT\" --workers \"$FBMR_WORKERS\""]
