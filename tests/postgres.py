"""A throwaway PostgreSQL server for the tests: Debian's `postgresql` binaries (installed by
`make test`, scripts/postgres-deps.sh), one server per test session on 127.0.0.1 and a free
port, in a temp dir, trust authentication on loopback only, stopped and removed at the end.

Fixtures (imported by tests/conftest.py):
- `postgres_server` (session): the running `PostgresServer`; skips (with the reason) only when
  PostgreSQL is not installed or does not start. `server.create_database()` gives a fresh empty
  database's SQLAlchemy URL (e.g. for a module-scoped fixture), `create_database(migrated=True)`
  one with the read model's schema, `server.admin_url()` the superuser's, `server.tool("pg_dump")`
  a binary of the same version.
- `postgres_url`: a fresh, empty database for this test (`postgresql+psycopg://...`).
- `db_url`: parametrized "sqlite" / "postgresql": a fresh, migrated, empty read model.

The databases belong to an unprivileged role (`onefamily`, no superuser), as in production.
Set ONEFAMILY_REQUIRE_POSTGRES=1 to fail instead of skip when PostgreSQL is missing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

USER = "onefamily"  # owns the test databases; not a superuser
ADMIN = "postgres"  # the bootstrap superuser initdb creates
DEBIAN = Path("/usr/lib/postgresql")
MIGRATED_TEMPLATE = "onefamily_migrated"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL is not installed here, or it would not start (the message says why)."""


def bin_dir() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin with initdb and pg_ctl (or them on PATH)."""
    found = [p for p in DEBIAN.glob("*/bin") if (p / "initdb").exists() and (p / "pg_ctl").exists()]
    versions = sorted(found,
                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if versions:
        return versions[-1]
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(os.path.realpath(initdb)).parent
    raise PostgresUnavailable(
        "PostgreSQL is not installed (no initdb/pg_ctl in /usr/lib/postgresql/<version>/bin): "
        "`make test` installs Debian's `postgresql` as root (scripts/postgres-deps.sh)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """initdb + pg_ctl start in a temp dir; as root the server runs as the `postgres` system
    user (initdb refuses root). Fast and unsafe on purpose: fsync off (a test server)."""

    def __init__(self) -> None:
        self.bin = bin_dir()
        self.host = "127.0.0.1"
        self.port = 0
        self.base = Path(tempfile.mkdtemp(prefix="onefamily-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self._run_as: list[str] = []
        self._lock = threading.Lock()
        self._migrated = False
        self.started = False
        self.start_seconds = 0.0

    @property
    def version(self) -> str:
        return self.bin.parent.name

    def tool(self, name: str) -> str:
        """A client binary of the server's version (pg_dump, pg_restore, psql...)."""
        return str(self.bin / name)

    def _run(self, *args: str, timeout: float = 60) -> None:
        out = self.base / "cmd.log"
        with open(out, "ab") as sink:
            done = subprocess.run([*self._run_as, *args], cwd=self.base, stdout=sink,
                                  stderr=subprocess.STDOUT, timeout=timeout, check=False)
        if done.returncode:
            tail = out.read_text(errors="replace")[-1500:]
            if self.log.exists():
                tail += "\n" + self.log.read_text(errors="replace")[-1500:]
            raise PostgresUnavailable(f"{Path(args[0]).name} failed ({done.returncode}): {tail.strip()}")

    def start(self) -> PostgresServer:
        if os.getuid() == 0:
            import pwd

            try:
                account = pwd.getpwnam(ADMIN)
            except KeyError as error:
                raise PostgresUnavailable("running as root and there is no `postgres` user to run "
                                          "the server (Debian's package creates it)") from error
            os.chown(self.base, account.pw_uid, account.pw_gid)
            self._run_as = ["runuser", "-u", ADMIN, "--"]
        os.chmod(self.base, 0o700)
        self._run(self.tool("initdb"), "-D", str(self.data), "-U", ADMIN, "-A", "trust", "-E", "UTF8",
                  "--locale=C", "--no-sync", "--no-instructions")
        settings = {  # loopback only; a test server: durability off, room for several processes
            "listen_addresses": self.host, "unix_socket_directories": str(self.base),
            "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
            "max_connections": "300", "shared_buffers": "32MB",
            "timezone": "Europe/Copenhagen",  # as a Danish server would be: not UTC, on purpose
        }
        options = " ".join(f"-c {k}={v}" for k, v in settings.items())
        for attempt in range(3):  # a free port can be taken between the probe and the bind
            self.port = _free_port()
            try:
                self._run(self.tool("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                          "-t", "60", "-o", f"{options} -p {self.port}", "start", timeout=90)
                break
            except PostgresUnavailable:
                if attempt == 2:
                    raise
        self.started = True
        self._admin(f'CREATE ROLE "{USER}" LOGIN')
        return self

    def stop(self) -> None:
        if self.started:
            try:
                self._run(self.tool("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
            except (PostgresUnavailable, subprocess.TimeoutExpired):
                pass
            self.started = False
        shutil.rmtree(self.base, ignore_errors=True)

    # A database outage for the fault tests (issue 12): the server goes away and comes back on
    # the same port with the same data and settings (from postmaster.opts). Use a server of
    # your own (`start_server()`), not the session's `postgres_server` that other tests share.

    def halt(self) -> None:
        """Stop the server (fast shutdown: open connections are cut), keeping its data."""
        opts = (self.data / "postmaster.opts").read_text().strip()
        self._restart_options = opts
        self._run(self.tool("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """Start a halted server again, same port and settings."""
        import shlex

        argv = shlex.split(self._restart_options)[1:]  # without the postgres binary
        if "-D" in argv:
            i = argv.index("-D")
            del argv[i:i + 2]
        self._run(self.tool("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  "-o", shlex.join(argv), "start", timeout=90)

    def url(self, database: str, user: str = USER) -> str:
        return f"postgresql+psycopg://{user}@{self.host}:{self.port}/{database}"

    def admin_url(self, database: str = "postgres") -> str:
        return self.url(database, ADMIN)

    def _admin(self, *statements: str) -> None:
        import psycopg

        with psycopg.connect(host=self.host, port=self.port, user=ADMIN, dbname="postgres",
                             autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)

    def create_database(self, name: str | None = None, migrated: bool = False) -> str:
        """A fresh database owned by `onefamily`; its URL. `migrated`: with the read model's
        schema (alembic heads), copied from a template migrated once per session."""
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        if not migrated:
            self._admin(f'CREATE DATABASE "{name}" OWNER "{USER}"')
            return self.url(name)
        with self._lock:
            if not self._migrated:
                from models.db import get_engine, migrate

                self._admin(f'CREATE DATABASE "{MIGRATED_TEMPLATE}" OWNER "{USER}"')
                template = self.url(MIGRATED_TEMPLATE)
                migrate(template)
                get_engine(template).dispose()  # a template must have no connections
                self._migrated = True
            self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{MIGRATED_TEMPLATE}" OWNER "{USER}"')
        return self.url(name)


def start_server() -> PostgresServer:
    server = PostgresServer()
    try:
        return server.start()
    except BaseException:
        server.stop()
        raise


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server per test session (started on first use)."""
    started = time.monotonic()
    try:
        server = start_server()
    except (PostgresUnavailable, OSError, subprocess.TimeoutExpired) as error:
        if os.environ.get("ONEFAMILY_REQUIRE_POSTGRES"):
            pytest.fail(f"PostgreSQL is required here: {error}")
        pytest.skip(f"PostgreSQL unavailable: {error}")
    server.start_seconds = time.monotonic() - started
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty PostgreSQL database for this test: its SQLAlchemy URL."""
    return postgres_server.create_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh read model with the schema (migrated, no rows), on SQLite and on PostgreSQL."""
    if request.param == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        return server.create_database(migrated=True)
    from models.db import migrate

    url = f"sqlite:///{(tmp_path / 'read-model' / 'onefamily.db').resolve()}"
    migrate(url)
    return url
