# syntax=docker/dockerfile:1
# Build stage: install the gateway (with its model, system roles and migrations as package data) into a venv.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# gateway/data and gateway/migrations link to these top-level files; the wheel holds copies of them.
COPY pyproject.toml README.md model.conf alembic.ini ./
COPY policies ./policies
COPY migrations ./migrations
COPY gateway ./gateway
# With the otel extra, so [tracing] and [audit] otlp_logs_endpoint work from the image without a rebuild.
RUN python -m venv /venv && /venv/bin/pip install '.[otel]'

# Runtime stage: the venv only; no compiler, no source tree.
FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin gateway \
 && mkdir -p /app /data && chown gateway /app /data
COPY --from=build /venv /venv
WORKDIR /app
ENV PATH=/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8080 \
    GATEWAY_DATABASE_URL=sqlite+aiosqlite:////data/gateway.db
USER gateway
# A named volume starts with this folder's owner (the gateway user); see the README.
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GATEWAY_PORT', '8080'), timeout=2)"]
# `exec`: the gateway replaces the shell and is PID 1, so `docker stop` (SIGTERM) reaches it and it drains.
# Replicas starting together migrate one at a time (PostgreSQL advisory lock).
CMD ["sh", "-c", "gateway migrate && exec gateway serve"]
