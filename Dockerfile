# The image of the worker (and of the dashboard service): the project on Python 3.11.
# PyTorch comes from its own index, CPU build by default; for NVIDIA GPUs build with e.g.
#   docker compose build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SEARCH_CACHE_DIR=/cache

WORKDIR /app
# torch first and alone: the largest layer, rebuilt only when TORCH_INDEX changes.
RUN pip install --index-url "${TORCH_INDEX}" torch
COPY pyproject.toml README.md* ./
COPY search ./search
COPY studies ./studies
COPY models ./models
RUN pip install .

# Not root: the worker only needs its data cache and the database.
RUN useradd --create-home --uid 1000 search && mkdir -p /cache /data && chown search /cache
USER search

ENTRYPOINT ["python", "-m"]
CMD ["search.run", "--help"]
