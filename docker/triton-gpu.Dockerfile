# NVIDIA Triton for the gpu target of the model repository (onnxruntime backend on KIND_GPU,
# optionally TensorRT FP16). The repository is mounted at /models, never baked in, so the facade
# and Triton always read the same export.
#   docker build -f docker/triton-gpu.Dockerfile -t fbmr-triton-gpu .
#   docker run --gpus 1 --shm-size 1g -v $PWD/model_repository:/models:ro \
#     -v fbmr-trt-cache:/tmp/fbmr-trt-cache -p 8000-8002:8000-8002 fbmr-triton-gpu
# Triton's security fixes come only with new releases: 25.07 fixed the August 2025 chain
# (CVE-2025-23310/-23311 HTTP chunked overflow, CVE-2025-23319/-23320/-23334 through the python
# backend's shared memory), later releases CVE-2025-33201 and, after NVIDIA's bulletin 5828 of
# May 2026, the authentication bypasses CVE-2026-24206/-24207. 26.05 is the first monthly release
# after that bulletin; check NVIDIA's product security page and build with the newest release
# (--build-arg BASE=...). The generated configs use only fields stable since 24.10 (Triton 2.51,
# the nvidia-pytriton tritonserver of development and of the cpu image).
ARG BASE=nvcr.io/nvidia/tritonserver:26.05-py3
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
