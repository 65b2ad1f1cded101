# The Discord bot: Python slim + ffmpeg, running as a non-root user.
#   docker build -t ser-bot .
#   docker run --rm --env-file .env -v ser-data:/app/data ser-bot
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    MPLCONFIGDIR=/tmp/matplotlib

RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY ser_engine ./ser_engine
COPY bot ./bot
COPY models ./models
RUN pip install .

RUN useradd --create-home --uid 10001 ser \
 && mkdir -p /app/data \
 && chown -R ser:ser /app/data
USER ser

# Settings come from the environment (docker run --env-file .env); see .env.example.
CMD ["ser-bot"]
