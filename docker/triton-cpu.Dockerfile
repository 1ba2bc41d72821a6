# Triton without a GPU: the tritonserver of the nvidia-pytriton wheel (python backend only) serving
# the cpu target of the model repository, whose python-backend models run onnxruntime. For machines
# without a GPU and for testing; `fbmr triton start` runs the same server outside a container.
#   bash scripts/wheelhouse.sh && docker build -f docker/triton-cpu.Dockerfile -t fbmr-triton-cpu .
#   docker run -v $PWD/model_repository:/models:ro -p 8001:8001 fbmr-triton-cpu
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
COPY build/wheelhouse/ /wheelhouse/
# numpy and onnxruntime (what the python-backend models import) at their locked versions; the
# wheel's tritonserver without pytriton's own Python dependencies, which it does not need.
RUN python3 -m venv /opt/triton \
 && pip=/opt/triton/bin/pip \
 && $pip install --no-cache-dir --no-index --find-links /wheelhouse \
      --constraint /wheelhouse/all.txt numpy onnxruntime \
 && $pip install --no-cache-dir --no-index --find-links /wheelhouse --no-deps \
      --constraint /wheelhouse/all.txt nvidia-pytriton \
 && $pip uninstall --yes --quiet pip setuptools \
 && site=$(/opt/triton/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') \
 && python=$(/opt/triton/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])') \
 && dist=$site/pytriton/tritonserver \
 && mkdir -p /opt/triton/backends/python \
 && cp $dist/backends/python/*.so $dist/backends/python/*.py $dist/python_backend_stubs/$python/triton_python_backend_stub \
      /opt/triton/backends/python/ \
 && rm -rf $dist/python_backend_stubs $dist/backends \
 && ln -s $dist/bin/tritonserver /opt/triton/bin/tritonserver \
 && ln -s $site /opt/triton/site-packages \
 && ln -s $site/nvidia_pytriton.libs /opt/triton/libs

FROM ${BASE}
RUN useradd --system --uid 10001 --create-home --shell /usr/sbin/nologin triton
COPY --from=build /opt/triton /opt/triton
COPY docker/check_repository.py docker/triton-entrypoint.sh /opt/fbmr/
# The python backend's stub embeds this image's Python: it needs libpython (on the default search
# path in both bases), the wheel's bundled libraries, and the virtual environment's packages (the
# embedded interpreter finds its environment from the first python3 on PATH).
ENV FBMR_TARGET=cpu \
    PATH=/opt/triton/bin:$PATH \
    TRITONSERVER=/opt/triton/bin/tritonserver \
    TRITON_BACKEND_DIRECTORY=/opt/triton/backends \
    LD_LIBRARY_PATH=/opt/triton/libs \
    PYTHONPATH=/opt/triton/site-packages
USER triton
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=5s --timeout=3s --start-period=120s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v2/health/ready' % os.environ.get('TRITON_HTTP_PORT', '8000'), timeout=2)"]
ENTRYPOINT ["/opt/fbmr/triton-entrypoint.sh"]
