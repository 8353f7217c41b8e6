"""Engine and migrations for the read model, and owner-only files at rest (DESIGN §9)."""

from __future__ import annotations

import os
import stat
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import create_engine

if TYPE_CHECKING:
    from settings import Settings

ALEMBIC_DIR = Path(__file__).resolve().parent.parent / "alembic"
PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


def _owned(st: os.stat_result) -> bool:
    return st.st_uid == os.getuid()


def private_data_dir(directory: Path, create: bool = False) -> None:
    """Files at rest are the owner's only (DESIGN §9: children's health data): umask 077 for
    this process and what it starts, the data dir 0700 and what is directly in it without
    group/other bits (files 0600). Run at the start of the launcher, the workers and the API,
    so a data dir made by an older version is put right too. A directory that is not ours or
    is shared like /tmp (sticky bit) is left alone."""
    os.umask(0o077)
    if create:
        directory.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    try:
        st = directory.stat()
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode) or not _owned(st) or st.st_mode & stat.S_ISVTX:
        return
    if stat.S_IMODE(st.st_mode) != PRIVATE_DIR:
        os.chmod(directory, PRIVATE_DIR)
    with os.scandir(directory) as entries:
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode) or not _owned(st) or not st.st_mode & 0o077:
                    continue
                os.chmod(entry.path, stat.S_IMODE(st.st_mode) & 0o700)
            except OSError:  # vanished meanwhile (a -journal), or not ours to change
                continue


def _private_sqlite(path: str) -> None:
    """The SQLite file and its -wal/-shm/-journal companions: 0600."""
    for suffix in SQLITE_SUFFIXES:
        try:
            os.chmod(path + suffix, PRIVATE_FILE)
        except OSError:  # not there (yet), or not ours
            pass


def _sqlite_path(url: str) -> str | None:
    if not url.startswith("sqlite"):
        return None
    path = url.split("///", 1)[-1]
    return path if path and path != ":memory:" else None


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = _sqlite_path(url)
        if path:
            parent = Path(path).parent
            if not parent.exists():  # a new data dir: owner only from the start
                parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
                os.chmod(parent, PRIVATE_DIR)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=20, max_overflow=20,
        )

        @event.listens_for(engine, "connect")
        def _pragmas(conn, _record) -> None:  # WAL: readers never block the projection writer
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10)


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(ALEMBIC_DIR))
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


def migrate(url: str) -> None:
    """Bring the read model's schema to the newest migration (idempotent)."""
    from alembic import command

    get_engine(url)  # creates the SQLite directory
    command.upgrade(alembic_config(url), "heads")
    path = _sqlite_path(url)
    if path:
        _private_sqlite(path)


def init_read_model(settings: Settings) -> None:
    """Bind the read model's sealed columns and keyed hashes (models/sealed.py) to the keys
    of `settings` (the payload codec's key material). Called where an engine is built for
    these settings: the API's lifespan, the workers, the tests' `settings` fixture."""
    from models import sealed

    sealed.init_keys(settings)
