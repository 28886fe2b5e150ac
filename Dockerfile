# Production image: nginx (the front, on PORT), gunicorn (web, on 127.0.0.1:APP_PORT)
# and a Celery worker under supervisord.
#   docker build -t csv-importer .
#   docker run -p 5001:5001 -e REDIS_URL=redis://host:6379/0 -v csv-data:/data csv-importer
# docker-compose.yml runs web and workers as separate services of this image.

# --- build stage: the pinned dependencies in a virtualenv ---------------------
FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Only the requirements file, so this layer stays cached until it changes.
# supervisor is the process manager of the image, not a dependency of the app.
COPY requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt supervisor==4.3.0

# --- runtime stage: no compilers, no pip cache, no test dependencies ----------
FROM python:3.11-slim

# SUPERVISOR_RUN_DIR and XDG_RUNTIME_DIR: writable places for supervisord's and
# gunicorn's control sockets (gunicorn's default, ~/.gunicorn, is in the app user's
# home, /nonexistent).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    DATA_DIR=/data \
    HOST=0.0.0.0 \
    PORT=5001 \
    APP_PORT=5002 \
    SUPERVISOR_RUN_DIR=/tmp \
    XDG_RUNTIME_DIR=/tmp

# nginx is the front (deploy/nginx.conf.template): Debian's package, at the
# security-updated version of the base image's release; an exact pin would
# break the build each time that version is superseded.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends nginx \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin app \
    && mkdir /data \
    && chown app:app /data

COPY --from=build /opt/venv /opt/venv

WORKDIR /app
# The code stays owned by root: the app user can read it, not change it.
COPY . .

USER 10001:10001
VOLUME ["/data"]
EXPOSE 5001

# /healthz answers 503 (urlopen raises, exit 1) when the database or broker is down.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '5001'), timeout=4)"]

CMD ["supervisord", "-c", "/app/supervisord.conf"]
