# NVIDIA Triton for the gpu target of the model repository (onnxruntime backend on KIND_GPU,
# optionally TensorRT FP16). The repository is mounted at /models, never baked in, so the facade
# and Triton always read the same export.
#   docker build -f docker/triton-gpu.Dockerfile -t fbmr-triton-gpu .
#   docker run --gpus 1 --shm-size 1g -v $PWD/model_repository:/models:ro \
#     -v fbmr-trt-cache:/tmp/fbmr-trt-cache -p 8000-8002:8000-8002 fbmr-triton-gpu
# 24.10 is Triton 2.51, the version of the nvidia-pytriton tritonserver used in development.
ARG BASE=nvcr.io/nvidia/tritonserver:24.10-py3
FROM ${BASE}
COPY docker/check_repository.py docker/triton-entrypoint.sh /opt/fbmr/
# TensorRT engines are cached where `fbmr export --tensorrt-fp16` points onnxruntime
# (ServingSettings.tensorrt_cache); mount a volume there so engines survive a restart. The
# directory belongs to the image's non-root user, and a new named volume inherits that.
USER root
RUN mkdir -p /tmp/fbmr-trt-cache && chown triton-server:triton-server /tmp/fbmr-trt-cache
ENV FBMR_TARGET=gpu
USER triton-server
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=5s --timeout=3s --start-period=300s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v2/health/ready' % os.environ.get('TRITON_HTTP_PORT', '8000'), timeout=2)"]
# NVIDIA's entrypoint (driver checks, banner) runs first, as in the base image.
ENTRYPOINT ["/opt/nvidia/nvidia_entrypoint.sh", "/opt/fbmr/triton-entrypoint.sh"]
