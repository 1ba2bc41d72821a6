# NVIDIA Triton with the gpu target of the model repository (onnxruntime backend, KIND_GPU).
#   fbmr export RUN --repo model_repository --target gpu [--tensorrt-fp16]
#   docker build -f docker/triton.Dockerfile -t fbmr-triton .
# 24.10 is Triton 2.51, the version of the local tritonserver used in development and tests.
FROM nvcr.io/nvidia/tritonserver:24.10-py3
COPY model_repository/ /models/
EXPOSE 8000 8001 8002
CMD ["tritonserver", "--model-repository=/models", "--exit-on-error=true", \
     "--strict-readiness=true", "--allow-metrics=true"]
