# The Discord bot: Python slim + ffmpeg, running as a non-root user, everything it writes under /data.
#   docker build -t ser-bot .
#   docker run --rm --env-file .env -v ser-data:/data -p 8080:8080 ser-bot
# or, with PostgreSQL: docker compose up -d (compose.yaml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NUMBA_CACHE_DIR=/tmp/numba-cache

RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY ser_engine ./ser_engine
COPY bot ./bot
COPY models ./models
RUN pip install . \
 && useradd --create-home --uid 10001 ser \
 && mkdir -p /data \
 && chown ser:ser /data

# Everything the bot writes (SQLite database, model registry, feature cache) lives under DATA_DIR;
# the application folder stays read-only for the bot's user. Health and metrics on SER_HTTP_PORT.
ENV DATA_DIR=/data \
    SER_MODEL_PATH=/app/models/ravdess-8class.joblib \
    SER_HTTP_HOST=0.0.0.0 \
    SER_HTTP_PORT=8080
VOLUME ["/data"]
EXPOSE 8080
USER ser

# /healthz: 200 while connected to Discord with live analysis workers, else 503 (bot/health.py).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SER_HTTP_PORT', '8080'), timeout=4).status == 200 else 1)"]

# Settings come from the environment (docker run --env-file .env); see .env.example.
# `docker run ... ser-bot ser-bot --check` validates them without connecting to Discord.
CMD ["ser-bot"]
