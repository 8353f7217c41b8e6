"""`make backup` (`python -m backup`): one timestamped, owner-only folder (0700, files 0600)
with what a restore needs (docs/backup.md):

1. the embedded Temporal dev server's database (`<data dir>/temporal.db`), an online copy by
   SQLite's backup API, taken FIRST (without that file, a cluster at TEMPORAL_ADDRESS is backed
   up where it runs: pg_dump of `temporal` and `temporal_visibility`);
2. the read model, taken after it: SQLite's online backup API (`onefamily.db`), or
   `pg_dump -Fc` of DATABASE_URL (`read-model.dump`);
3. the payload key `<data dir>/encryption.key`: WITHOUT IT NOTHING IS READABLE, neither the
   Temporal history nor the read model's sealed columns. With ONEFAMILY_ENCRYPTION_KEY the key
   lives in your secret store and is not copied here: back it up there.

Safe while the system runs: each copy is one consistent snapshot of its database.
`manifest.json` lists the files with sizes and SHA-256.

`python -m backup --restore <folder>` puts a backup into ONEFAMILY_DATA_DIR (and DATABASE_URL),
which must hold no databases yet; the system must be stopped. Then start it and run
`make rebuild-read-model ARGS=--replace` before anyone works in it (docs/backup.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

from settings import Settings, get_settings

KEY_FILE = "encryption.key"
TEMPORAL_DB = "temporal.db"
READ_MODEL_DB = "onefamily.db"
READ_MODEL_DUMP = "read-model.dump"
MANIFEST = "manifest.json"


class BackupError(RuntimeError):
    """A backup or restore that cannot be done as asked (the message says why)."""


# ---------------------------------------------------------------- SQLite


def sqlite_backup(source: Path, target: Path) -> None:
    """An online copy of a live SQLite database (WAL or not) by the backup API: one read
    transaction, so a consistent snapshot while others write. The copy is one self-contained
    file (rollback journal, no -wal)."""
    if not source.exists():
        raise BackupError(f"{source} does not exist")
    with closing(sqlite3.connect(source, timeout=30)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")
        (ok,), = dst.execute("PRAGMA integrity_check").fetchall()
    if ok != "ok":
        raise BackupError(f"the copy of {source} fails SQLite's integrity check: {ok}")
    os.chmod(target, 0o600)


def sqlite_path(url: str) -> Path | None:
    return Path(url.split("///", 1)[1]) if url.startswith("sqlite:///") else None


# ---------------------------------------------------------------- PostgreSQL


def pg_tool(name: str) -> str:
    """pg_dump / pg_restore: the newest Debian version (/usr/lib/postgresql/<v>/bin), else PATH."""
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if found:
        return str(found[-1])
    on_path = shutil.which(name)
    if on_path is None:
        raise BackupError(f"{name} not found: install PostgreSQL's client tools (Debian: postgresql-client)")
    return on_path


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """A libpq connection URI for the tools, the password passed in PGPASSWORD (never argv)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    plain = parsed.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _tool(args: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise BackupError(f"{Path(args[0]).name} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")


def pg_dump(url: str, target: Path) -> None:
    """`pg_dump -Fc` (custom format: compressed, restored selectively by pg_restore); a
    consistent snapshot while the database is in use."""
    uri, env = _libpq(url)
    _tool([pg_tool("pg_dump"), "--format=custom", "--no-owner", "--file", str(target), uri], env)
    os.chmod(target, 0o600)


def pg_restore(dump: Path, url: str) -> None:
    """Into an empty database: every table, index, trigger and row, owned by the connecting
    role; stops at the first error."""
    uri, env = _libpq(url)
    _tool([pg_tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error",
           "--single-transaction", "--dbname", uri, str(dump)], env)


# ---------------------------------------------------------------- backup, restore


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def backup(settings: Settings, root: Path, now: datetime | None = None) -> Path:
    """Write one backup folder under `root`; its path. Temporal first, then the read model."""
    os.umask(0o077)
    now = now or datetime.now(UTC)
    if not root.exists():
        root.mkdir(parents=True, mode=0o700)
        (root / ".gitignore").write_text("*\n")  # never committed by accident: it holds the key
    folder = root / f"onefamily-{now.strftime('%Y%m%dT%H%M%S.%fZ')}"
    folder.mkdir(mode=0o700)
    notes: list[str] = []

    temporal = settings.data_dir / TEMPORAL_DB  # the embedded dev server's, when there is one
    if temporal.exists():
        sqlite_backup(temporal, folder / TEMPORAL_DB)
    elif settings.temporal_address:
        notes.append(f"Temporal at {settings.temporal_address} is not in this folder: back up its "
                     "databases where it runs (pg_dump of temporal and temporal_visibility), before "
                     "the read model.")
    else:
        shutil.rmtree(folder)
        raise BackupError(f"no {temporal}: is ONEFAMILY_DATA_DIR the data dir of `make run`?")

    path = sqlite_path(settings.db_url)
    if path is not None:
        sqlite_backup(path, folder / READ_MODEL_DB)
    else:
        pg_dump(settings.db_url, folder / READ_MODEL_DUMP)

    key = settings.data_dir / KEY_FILE
    if key.exists():
        shutil.copyfile(key, folder / KEY_FILE)
        os.chmod(folder / KEY_FILE, 0o600)
    if os.environ.get("ONEFAMILY_ENCRYPTION_KEY"):
        notes.append("The current payload key is ONEFAMILY_ENCRYPTION_KEY (and any "
                      "ONEFAMILY_ENCRYPTION_PREVIOUS_KEYS): not in this folder. Without it nothing "
                      "here is readable: keep it in your secret store.")
    elif not key.exists():
        notes.append(f"No payload key at {key}: this backup is UNREADABLE without the key.")

    files = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)}
             for p in sorted(folder.iterdir()) if p.is_file()}
    manifest = {"created_at": now.isoformat(), "data_dir": str(settings.data_dir.resolve()),
                "read_model": "sqlite" if path is not None else "postgresql",
                "temporal": "embedded" if temporal.exists() else settings.temporal_address,
                "files": files, "notes": notes}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return folder


def restore(folder: Path, settings: Settings) -> list[str]:
    """Put a backup folder back: into a data dir that has no databases (the system stopped),
    and, for a PostgreSQL read model, into DATABASE_URL (an empty database). What was done."""
    manifest = json.loads((folder / MANIFEST).read_text())
    for name, meta in manifest["files"].items():
        if _sha256(folder / name) != meta["sha256"]:
            raise BackupError(f"{folder / name} does not match its manifest: damaged")
    data = settings.data_dir
    taken = [data / n for n in (TEMPORAL_DB, READ_MODEL_DB, KEY_FILE) if (data / n).exists()]
    if taken:
        raise BackupError(f"{data} is not empty ({', '.join(p.name for p in taken)}): restore into a "
                          "fresh data dir, or move these away first (the system stopped)")
    os.umask(0o077)
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    done = []
    if (folder / KEY_FILE).exists():  # the key first: nothing else is readable without it
        shutil.copyfile(folder / KEY_FILE, data / KEY_FILE)
        done.append(f"payload key -> {data / KEY_FILE}")
    if (folder / TEMPORAL_DB).exists():
        shutil.copyfile(folder / TEMPORAL_DB, data / TEMPORAL_DB)
        done.append(f"Temporal -> {data / TEMPORAL_DB}")
    path = sqlite_path(settings.db_url)
    if (folder / READ_MODEL_DB).exists():
        if path is None:
            raise BackupError("the backup's read model is SQLite, DATABASE_URL is not: unset it")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copyfile(folder / READ_MODEL_DB, path)
        done.append(f"read model -> {path}")
    elif (folder / READ_MODEL_DUMP).exists():
        if path is not None:
            raise BackupError("the backup's read model is a PostgreSQL dump: set DATABASE_URL to an "
                              "empty database")
        pg_restore(folder / READ_MODEL_DUMP, settings.db_url)
        done.append("read model -> DATABASE_URL (pg_restore)")
    for p in data.iterdir():
        os.chmod(p, 0o600 if p.is_file() else 0o700)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--to", type=Path, default=Path(os.environ.get("ONEFAMILY_BACKUP_DIR", "backups")),
                        help="where the timestamped folders go (default: $ONEFAMILY_BACKUP_DIR or ./backups)")
    parser.add_argument("--restore", type=Path, metavar="FOLDER",
                        help="restore this backup folder into ONEFAMILY_DATA_DIR / DATABASE_URL")
    args = parser.parse_args(argv)
    settings = get_settings()
    try:
        if args.restore:
            for line in restore(args.restore, settings):
                print(f"restored {line}")
            print("Next: start the system, then `make rebuild-read-model ARGS=--replace` before anyone "
                  "works in it (docs/backup.md).")
            return 0
        folder = backup(settings, args.to)
    except BackupError as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    manifest = json.loads((folder / MANIFEST).read_text())
    print(f"backup written to {folder}")
    for name, meta in manifest["files"].items():
        print(f"  {name:18} {meta['bytes']:>12} bytes")
    for note in manifest["notes"]:
        print(f"  NOTE: {note}")
    if (folder / KEY_FILE).exists():
        print("  The folder holds the payload key: whoever has it can read everything. Keep it "
              "off this machine, encrypted, and the key apart from the data where you can.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
