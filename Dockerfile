# syntax=docker/dockerfile:1
# kommunrouter images (docs/deployment.md explains every option).
#
#   docker build -t kommunrouter .                                   the service (last stage, "serve"): CPU
#   docker build -t kommunrouter:gpu --build-arg VARIANT=gpu .       the service on onnxruntime-gpu + a CUDA runtime
#   docker build -t kommunrouter-train --target train .              the training pipeline, CPU PyTorch
#   docker build -t kommunrouter-train:cuda --target train \
#       --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu130 .   the same with CUDA PyTorch
#
# The serving image holds no torch: onnxruntime or OpenVINO (whichever is faster here and reproduces the artifact's
# parity sample, chosen at start-up) + tokenizers run the exported models/default, which is baked in.

# cpu or gpu: which runtime base the service is built on.
ARG VARIANT=cpu
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# onnxruntime-gpu from PyPI is built against CUDA 13 and cuDNN 9: the runtime base must carry both.
ARG CUDA_IMAGE=nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04

# --- runtime bases: the build stage and the serving stage start from the same one, so the virtual environment
# built in the first runs on the interpreter of the second.
FROM ${PYTHON_IMAGE} AS base-cpu

FROM ${CUDA_IMAGE} AS base-gpu
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s /usr/bin/python3 /usr/local/bin/python
ENV KOMMUNROUTER_EXECUTION_PROVIDER=cuda

FROM base-${VARIANT} AS base
# A numeric user id in the images: Kubernetes can check runAsNonRoot only against a number.
RUN groupadd --system --gid 10001 kommunrouter \
    && useradd --system --uid 10001 --gid kommunrouter --home-dir /app --no-create-home kommunrouter
# OMP_WAIT_POLICY: spinning threads waste the CPU share of a container (PyTorch and onnxruntime alike).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OMP_WAIT_POLICY=PASSIVE \
    VIRTUAL_ENV=/opt/venv
ENV PATH=${VIRTUAL_ENV}/bin:${PATH}

# --- build: the service's dependencies (pyproject's base list: no torch) in a virtual environment -------------
FROM base AS build
WORKDIR /app
RUN python -m venv "$VIRTUAL_ENV"
# The dependencies get a layer of their own: a code change does not reinstall them.
COPY pyproject.toml README.md ./
COPY deploy/pyproject_requirements.py deploy/
RUN --mount=type=cache,target=/root/.cache/pip \
    python deploy/pyproject_requirements.py base > requirements.txt \
    && pip install -r requirements.txt \
    && rm requirements.txt
# onnxruntime and onnxruntime-gpu install the same module: the GPU variant swaps one for the other.
ARG VARIANT
RUN --mount=type=cache,target=/root/.cache/pip \
    if [ "$VARIANT" = gpu ]; then \
        python deploy/pyproject_requirements.py gpu > requirements.txt \
        && pip uninstall -y onnxruntime \
        && pip install --no-deps -r requirements.txt \
        && rm requirements.txt; \
    fi
COPY alembic.ini ./
COPY migrations/ migrations/
COPY app/ app/
# The data format (training/data.py) is what `kommunrouter feedback export` writes; training/ imports torch
# only inside the commands that train, so copying the code adds no dependency.
COPY training/ training/
# Editable, so the package stays beside migrations/ (the audit database finds its Alembic scripts there).
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps -e .

# --- train: the training pipeline (`docker compose --profile train run --rm train`) ----------------------------
FROM base AS train
WORKDIR /app
RUN python -m venv "$VIRTUAL_ENV"
COPY pyproject.toml README.md ./
COPY deploy/pyproject_requirements.py deploy/
# PyTorch from its own index: CPU wheels by default (PyPI's Linux wheels pull in gigabytes of CUDA libraries);
# a CUDA index (https://download.pytorch.org/whl/cu130, ...) gives the GPU build. The rest comes from PyPI.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN --mount=type=cache,target=/root/.cache/pip \
    python deploy/pyproject_requirements.py train --only torch > requirements.txt \
    && pip install --index-url "$TORCH_INDEX" -r requirements.txt \
    && python deploy/pyproject_requirements.py base > requirements.txt \
    && python deploy/pyproject_requirements.py train >> requirements.txt \
    && pip install -r requirements.txt \
    && rm requirements.txt
COPY app/ app/
COPY training/ training/
COPY configs/ configs/
COPY data/ data/
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps -e .
RUN install -d -o 10001 -g 10001 /app/runs /app/models
# HOME for the caches of whichever user id compose runs it as; the base encoder build is kept in the runs volume.
ENV HOME=/tmp \
    KOMMUNROUTER_CACHE_DIR=/app/runs/.cache
USER 10001:10001
CMD ["/bin/sh", "-c", "kommunrouter train --config configs/default.toml && kommunrouter export --run runs/default --out models/default"]

# --- serve: the HTTP service, the default target ------------------------------------------------------------
FROM base AS serve
LABEL org.opencontainers.image.title="kommunrouter" \
      org.opencontainers.image.description="Routes citizen reports of a Swedish municipality (REST, ONNX model)" \
      org.opencontainers.image.licenses="MIT"
WORKDIR /app
RUN install -d -o 10001 -g 10001 /app/var
COPY --from=build /opt/venv /opt/venv
COPY models/default/ models/default/
COPY --from=build /app /app
# The SQLite default is for a single container; compose and Kubernetes set a PostgreSQL URL.
ENV KOMMUNROUTER_MODEL_DIR=/app/models/default \
    KOMMUNROUTER_DATABASE_URL=sqlite:////app/var/kommunrouter.db
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["/bin/sh", "-c", "kommunrouter migrate && exec kommunrouter serve --host 0.0.0.0 --port 8000"]
