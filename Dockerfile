# dsr: one image for every process of a deployment.
#
#   docker build -t dsr .
#   docker run --rm --env-file dsr.env dsr db upgrade          # once per release
#   docker run -d --env-file dsr.env -p 8000:8000 \
#              -v dsr-artifacts:/var/lib/dsr/artifacts dsr     # web (gunicorn)
#   docker run -d --env-file dsr.env \
#              -v dsr-artifacts:/var/lib/dsr/artifacts dsr worker
#   docker run -d --env-file dsr.env dsr sweeper               # one per deployment
#
# dsr.env holds DSR_DATABASE_URL, DSR_REDIS_URL, DSR_SECRET_KEY and DSR_BASE_URL (see README.md and
# docs/operations.md). The image runs with DSR_ENV=production: without those four it refuses to start.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------------
# Builder: a virtual environment with dsr and its dependencies, installed from a wheel (not editable).
# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Dependencies first, read from pyproject.toml: this layer is rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

# Then the project itself. README.md is needed because pyproject.toml names it as the readme.
COPY README.md ./
COPY dsr/ dsr/
COPY workers/ workers/
RUN pip install --no-deps . \
 && pip check \
 && cd / \
 && python -c "from dsr.config import DEFAULT_DATAMAP; assert DEFAULT_DATAMAP.is_file(), DEFAULT_DATAMAP" \
 && python -c "import dsr.cli, dsr.web.app, workers.jobs"

# ---------------------------------------------------------------------------------------------------
# Runtime: system libraries, the venv, the top-level migrations/ and templates/ folders, a non-root user.
# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="dsr" \
      org.opencontainers.image.description="GDPR data-subject-rights request handler" \
      org.opencontainers.image.licenses="AGPL-3.0-or-later"

# Pango, PangoFT2 and HarfBuzz-subset for WeasyPrint (PDF reports), a font, time zone data for the
# deadline rules (Europe/Berlin), and tini as PID 1 (forwards SIGTERM, reaps children).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        libpango-1.0-0 \
        libpangoft2-1.0-0 \
        libharfbuzz-subset0 \
        fonts-dejavu-core \
        tzdata \
        tini \
 && rm -rf /var/lib/apt/lists/*

# A fixed uid/gid, so volumes and Kubernetes securityContext can name it. The home folder is
# writable: gunicorn puts its control socket there and fontconfig its cache.
RUN groupadd --gid 10001 dsr \
 && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/dsr --shell /usr/sbin/nologin dsr \
 && mkdir -p /var/lib/dsr/artifacts \
 && chown -R 10001:10001 /var/lib/dsr

COPY --from=builder /opt/venv /opt/venv

# dsr finds migrations/ and templates/ next to the package or in the working directory
# (dsr.config.project_folder). The package is installed non-editable, so they live in /app.
WORKDIR /app
COPY migrations/ /app/migrations/
COPY templates/ /app/templates/

ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DSR_ENV=production \
    DSR_INSTANCE_DIR=/var/lib/dsr \
    DSR_STORAGE_DIR=/var/lib/dsr/artifacts \
    PORT=8000

# Build-time check that WeasyPrint finds its system libraries and a font.
RUN python -c "import weasyprint; weasyprint.HTML(string='<p>dsr</p>').write_pdf()" \
 && rm -rf /root/.cache

# Exports live here. Web and workers must share it (a named volume, NFS, ...). Everything above
# this line that touches the folder is kept; Docker copies its ownership into a new named volume.
VOLUME ["/var/lib/dsr/artifacts"]

USER 10001:10001
EXPOSE 8000

# Only a web process answers HTTP. A worker or sweeper container passes the check, so that Docker
# does not call it unhealthy; watch those with `rq info` and the outbox (docs/operations.md).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; args = set(open('/proc/1/cmdline', 'rb').read().split(b'\\0')); (b'web' in args or b'demo' in args) and u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)"]

ENTRYPOINT ["/usr/bin/tini", "--", "dsr"]
# `dsr web` reads its port from PORT (click envvar), so the server and the health check agree.
CMD ["web", "--host", "0.0.0.0"]
