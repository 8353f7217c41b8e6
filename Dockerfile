# OneFamily image: the API and the workers (docker-compose.yml picks the command).
# Debian 12 (bookworm), as on the machines the tests run on, so the package names below are the
# ones tests/test_compose.py checks with apt. Pin a digest too if your change process wants one.
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ONEFAMILY_DATA_DIR=/var/lib/onefamily

# WeasyPrint's system libraries (its "Debian ≥ 11, wheels" list plus what it dlopens:
# weasyprint/text/ffi.py loads gobject (from libglib2.0-0, a dependency of Pango), pango,
# harfbuzz, harfbuzz-subset, fontconfig, pangoft2; no cairo since WeasyPrint 53) and the font
# the document templates name ("DejaVu Sans"). Without them every PDF fails in the container.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libpango-1.0-0 \
      libpangoft2-1.0-0 \
      libharfbuzz0b \
      libharfbuzz-subset0 \
      libfontconfig1 \
      fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/*

# A fixed uid/gid (not 1000, which hosts often give a person) so volumes and audits name it.
# The data dir is the user's alone (DESIGN §9: 0700); the code stays root-owned, read-only to it.
RUN groupadd --system --gid 10001 onefamily \
 && useradd --system --uid 10001 --gid onefamily --home-dir /home/onefamily --create-home \
      --shell /usr/sbin/nologin onefamily \
 && install -d -o onefamily -g onefamily -m 0700 /var/lib/onefamily

WORKDIR /app

# The runtime dependencies of pyproject.toml first (no test/dev extras), in their own layer so a
# code change does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# Then the project itself, editable: alembic/ and templates/ are found next to the code
# (models/db.py, activities/rendering.py), which a plain `pip install .` into site-packages breaks.
COPY . .
RUN pip install --no-deps -e . \
 && python -c "import weasyprint, api.main, worker"  # fails the build if a library is missing

USER onefamily:onefamily

EXPOSE 8000
# The API's readiness (database and Temporal); the workers override it in docker-compose.yml.
# Python's urllib, since the slim image has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]

CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000", "--workers", "2", "--no-access-log", "--proxy-headers"]
