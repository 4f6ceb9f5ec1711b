# syntax=docker/dockerfile:1
# The CPU image: migrations, the API, Flower, the index writer and the CPU workers.
#   docker build -t embedq:cpu .
# Dockerfile.gpu builds the embed worker's image; docker-compose.yml builds both.
FROM python:3.11-slim

# Keep TORCH_VERSION equal to the Makefile's, so the image runs what the tests ran.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    EMBEDQ_DATA_DIR=/data

# torch first, from the CPU index: installed by the project's requirements from PyPI it would
# be the CUDA build with several GB of nvidia-* wheels that this image cannot use.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

WORKDIR /app
# README.m[d]: the readme is copied when there is one, and the build does not fail without it.
COPY pyproject.toml README.m[d] ./
COPY api ./api
COPY tasks ./tasks
COPY workers ./workers
COPY storage ./storage
# The installed torch satisfies the project's range, so pip keeps the CPU build.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install . && rm -rf build ./*.egg-info
COPY --chmod=0755 scripts/prestart.sh ./scripts/prestart.sh

# The same fixed UID as in Dockerfile.gpu: both images write to the shared /data volume.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/embedq embedq \
    && mkdir -p /data && chown embedq:embedq /data
USER embedq
# A new named volume mounted here starts with this directory's owner, so embedq can write.
VOLUME /data

ENTRYPOINT ["embedq"]
CMD ["--help"]
