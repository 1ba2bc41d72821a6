# The facade: fbmr-core + fbmr-serving only (no torch), served by uvicorn.
#   docker build -f docker/facade.Dockerfile -t fbmr-facade .
FROM python:3.11-slim
WORKDIR /app
COPY core/ core/
COPY serving/ serving/
RUN pip install --no-cache-dir ./core ./serving
ENV FBMR_TRITON_URL=triton:8001 \
    FBMR_MODEL_REPOSITORY=/models \
    FBMR_INDEX_DIR=/index
EXPOSE 8080
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz')"
CMD ["fbmr", "serve", "--host", "0.0.0.0", "--port", "8080", "--workers", "2"]
