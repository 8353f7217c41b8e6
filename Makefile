# `make run` / `make test` bootstrap everything they need: a .venv made with python3 from
# PATH, and the project installed into it (again only when pyproject.toml changes).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench bench-capacity bench-dashboard install sysdeps oidcdeps pgdeps rebuild-read-model backup \
	clean distclean

run: install
	$(PY) -m launcher

test: install sysdeps oidcdeps pgdeps
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

# Chromium (browser tests) and Pango (PDF documents) from Debian, only when missing.
sysdeps:
	@bash scripts/system-deps.sh

# The real OpenID provider of the OIDC tests (npm `oidc-provider`, tests/oidc), only when missing.
oidcdeps:
	@bash scripts/oidc-deps.sh

# PostgreSQL (Debian's `postgresql`) for the tests' throwaway servers (tests/postgres.py), only when missing.
pgdeps:
	@bash scripts/postgres-deps.sh

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) -m bench.lifecycle

# Case-worker memory per cached case at 10,000 cached cases vs a bare workflow (some minutes).
bench-capacity: install
	$(PY) -m bench.capacity $(ARGS)

bench-dashboard: install
	$(PY) -m bench.dashboard

# The read model's cases again from the workflows (Query / result of every case), while the
# system runs; safe to repeat. After a restore: `make rebuild-read-model ARGS=--replace` (docs/backup.md).
rebuild-read-model: install
	$(PY) -m rebuild $(ARGS)

# A timestamped, owner-only folder under backups/: online copies of both SQLite databases and
# the payload key, or pg_dump of the read model (docs/backup.md). `ARGS=--restore <folder>` restores.
backup: install
	$(PY) -m backup $(ARGS)

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

# -q keeps pip quiet but still shows warnings and errors; the stamp is touched only on success.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

# Caches and build leftovers; keeps .venv and the data in .data.
clean:
	rm -rf build test-artifacts .pytest_cache .ruff_cache *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# Everything, including the virtualenv and local data (Temporal history, database).
distclean: clean
	rm -rf $(VENV) .data
