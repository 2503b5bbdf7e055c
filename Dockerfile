# syntax=docker/dockerfile:1
# Build stage: install the gateway and its dependencies into a virtual environment.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN python -m venv /venv && /venv/bin/pip install .

# Runtime stage: the venv, the model, the default policy and the migrations; no compiler, no source tree.
FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin gateway \
 && mkdir -p /data && chown gateway /data
COPY --from=build /venv /venv
WORKDIR /app
COPY model.conf alembic.ini ./
COPY policies ./policies
COPY migrations ./migrations
ENV PATH=/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8080 \
    GATEWAY_DATABASE_URL=sqlite+aiosqlite:////data/gateway.db
USER gateway
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GATEWAY_PORT', '8080'), timeout=2)"]
CMD ["sh", "-c", "gateway migrate && gateway serve"]
