# nrr-worker: one image for every role (migrate, worker, beat, webhook server).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app

# Dependencies first (cached while only the code changes), at the versions of
# constraints.txt (pinned, generated from the tested environment): rebuilding the image
# later installs the same versions.
COPY constraints.txt pyproject.toml README.md LICENSE ./
COPY nrr ./nrr
COPY models ./models
COPY integrations ./integrations
COPY worker ./worker
RUN pip install --constraint constraints.txt ".[postgres]" \
    && useradd --create-home --uid 10001 nrr \
    && mkdir -p /data /beat && chown nrr:nrr /data /beat

USER nrr
WORKDIR /data

# The webhook server (`nrr serve --host 0.0.0.0`) listens here.
EXPOSE 8000

# Exit 1 on an unreachable broker or database, a stale sync or a failed last sync.
HEALTHCHECK --interval=30s --timeout=5s --retries=3 CMD ["nrr", "status", "--format", "json"]

CMD ["nrr", "--help"]
