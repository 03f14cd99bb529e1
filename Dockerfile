# syntax=docker/dockerfile:1
# gemini-meter: the metering proxy, as a small non-root image.
#   docker build -t gemini-meter .
#   docker run -e GEMINI_API_KEY=... -p 8080:8080 -v gemini-meter-data:/data gemini-meter
# Configuration is the environment (GEMINI_API_KEY, GEMINI_METER_*; see the README). On start the
# entrypoint applies the database migrations, then serves on 0.0.0.0:$GEMINI_METER_PORT.
# /data holds what must outlive the container: the SQLite ledger (when no PostgreSQL URL is
# given) and the ledger spool kept while the database is unreachable.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
# Alembic's scripts: the wheel ships them inside the package, as proxy/migrations.
COPY migrations ./migrations
# Wheels for the package and every dependency; the runtime stage installs them offline.
RUN pip wheel --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GEMINI_METER_HOST=0.0.0.0 \
    GEMINI_METER_PORT=8080 \
    GEMINI_METER_DATABASE_URL=sqlite+aiosqlite:////data/gemini-meter.db \
    GEMINI_METER_SPOOL_DIR=/data/spool
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels gemini-meter \
    && groupadd --system --gid 10001 gemini \
    && useradd --system --uid 10001 --gid gemini --create-home --home-dir /home/gemini gemini \
    && mkdir /data && chown gemini:gemini /data
COPY --chmod=0755 deploy/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
WORKDIR /home/gemini
USER 10001:10001
EXPOSE 8080
# The slim image has no curl: ask /healthz with the interpreter that is there anyway.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GEMINI_METER_PORT', '8080'), timeout=2)"]
ENTRYPOINT ["docker-entrypoint.sh"]
