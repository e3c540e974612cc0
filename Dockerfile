# nrr-worker: one image for every role (migrate, worker, beat, webhook server).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app

# Dependencies first (cached while only the code changes).
COPY pyproject.toml README.md LICENSE ./
COPY nrr ./nrr
COPY models ./models
COPY integrations ./integrations
COPY worker ./worker
RUN pip install ".[postgres]" \
    && useradd --create-home --uid 10001 nrr \
    && mkdir -p /data && chown nrr:nrr /data

USER nrr
WORKDIR /data

# The webhook server (`nrr serve --host 0.0.0.0`) listens here.
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --retries=3 CMD ["nrr", "status", "--format", "json"]

CMD ["nrr", "--help"]
