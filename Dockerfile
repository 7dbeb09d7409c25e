# vistrain serve in a container: the ONNX-only serving install (no PyTorch), a non-root user and a
# health check on /healthz.  The model is a run folder exported with `vistrain export RUN`
# (RUN/export/model.onnx), mounted read-only at /model.  See docs/serving.md.
#
#   docker build -t vistrain-serve .
#   docker run --rm -p 8000:8000 -v "$PWD/runs/demo:/model:ro" -e VISTRAIN_TOKEN="$TOKEN" vistrain-serve
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the package needs to install: the tests, data and runs stay out (.dockerignore too).
WORKDIR /src
COPY pyproject.toml README.md ./
COPY vistrain ./vistrain
RUN pip install ".[serve]" && rm -rf /src

# Never root: a flaw in an image decoder then cannot write to the image or the mounted model.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin vistrain
USER vistrain
WORKDIR /home/vistrain

EXPOSE 8000
# python's urllib rather than curl: the slim image has no curl, and the check needs no token
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]

# --engine onnxruntime: the image has no PyTorch, so a missing or stale export is a one-line error
CMD ["vistrain", "serve", "/model", "--host", "0.0.0.0", "--port", "8000", "--engine", "onnxruntime"]
