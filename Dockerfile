# One image for every process of the service: web (gunicorn), worker
# (qcluster), migrate and one-off runjob, all through bin/entrypoint:
#   docker run IMAGE web | worker | migrate | runjob NAME [--param k=v ...] | manage CMD
# BASE_IMAGE is Debian's python:3.11-slim; any Debian bookworm with python3.11,
# python3-venv and /usr/local/bin/python (or PYTHON_BIN) works (README, Deploying).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG PYTHON_BIN=python
# Optional, for a build behind a private package index or TLS-inspecting proxy.
ARG PIP_INDEX_URL
ARG PIP_CERT
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    PYTHON=/opt/venv/bin/python \
    STATIC_ROOT=/app/static \
    MEDIA_ROOT=/app/media \
    PORT=8000

# weasyprint (invoice PDFs) needs Pango and HarfBuzz, and fonts to draw with.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz0b libharfbuzz-subset0 fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/*

RUN ${PYTHON_BIN} -m venv /opt/venv
WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
# Static files are collected into the image; whitenoise serves them.
RUN DEBUG=false SECRET_KEY=collectstatic-only ENV_FILE= bin/entrypoint collectstatic \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin app \
 && mkdir -p /app/media \
 && chown -R app /app/media

USER app
EXPOSE 8000
ENTRYPOINT ["bin/entrypoint"]
CMD ["web"]
