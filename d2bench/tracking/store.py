"""The one door to a local SQLite MLflow store: created or upgraded once, under a lock.

MLflow creates and migrates a SQLite store from whichever client opens it first, with no lock
between processes. Two processes opening a *new* store at once (a driver and ``d2bench status``
in another terminal, two drivers, a driver and its own workers) both run the schema migration,
and one of them fails (alembic: "Online migration expected to match one row"), sometimes
leaving the store broken for good (``table _alembic_tmp_... already exists``). So every d2bench
process goes through :func:`open_store` before any MLflow client touches a SQLite store:

- an advisory lock (``<db>.lock`` beside the database) serialises creation and upgrade;
- a new store is built complete under a temporary name and renamed into place, so the real path
  holds either nothing or a whole store, even if the creator is killed mid-way;
- a store from an older MLflow is upgraded in place, once, by the first process that sees it;
- a file that is not a readable, writable SQLite database fails with one line naming it.

A tracking server (``http://...``) needs none of this: the server owns its database.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_SQLITE_PREFIX = "sqlite:///"
_SQLITE_MAGIC = b"SQLite format 3\x00"
_ready: set[str] = set()
_ready_lock = threading.Lock()


class StoreError(RuntimeError):
    """A tracking store that cannot be used; the message names it and says what to do."""


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None (a server or another database)."""
    if not uri.startswith(_SQLITE_PREFIX):
        return None
    return Path(uri[len(_SQLITE_PREFIX) :])


def store_exists(uri: str) -> bool:
    """Whether there is anything to read: a server always, a SQLite store once its file exists."""
    path = sqlite_path(uri)
    return path is None or path.is_file()


def open_store(uri: str) -> None:
    """Make ``uri`` safe to open with MLflow from this process: create, check or upgrade it.

    Cheap after the first call per process (the outcome is remembered per URI).
    """
    path = sqlite_path(uri)
    if path is None or uri in _ready:
        return
    with _ready_lock:
        if uri in _ready:
            return
        _prepare(path)
        _ready.add(uri)


def _prepare(path: Path) -> None:
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StoreError(
            f"MLflow store {path}: cannot create its folder ({error.strerror}); "
            "choose a writable place with --tracking-uri or MLFLOW_TRACKING_URI"
        ) from None
    with _store_lock(path):
        if not path.exists() or path.stat().st_size == 0:
            _create(path)
        else:
            _check_file(path)
            _upgrade_if_needed(path)


@contextmanager
def _store_lock(path: Path) -> Iterator[None]:
    lock_path = path.with_name(path.name + ".lock")
    try:
        handle = open(lock_path, "a")  # noqa: SIM115 (held for the block below)
    except OSError as error:
        raise StoreError(
            f"MLflow store {path}: cannot write beside it ({error.strerror}); "
            "d2bench needs a writable folder for the store (copy it somewhere writable)"
        ) from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _create(path: Path) -> None:
    """Build the whole store under a temporary name, then rename it into place (atomic)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    temporary = path.with_name(f".{path.name}.creating-{os.getpid()}")
    temporary.unlink(missing_ok=True)
    artifacts = (path.parent / "artifacts").resolve().as_uri()
    uri = _SQLITE_PREFIX + str(temporary)
    try:
        store = SqlAlchemyStore(uri, artifacts)  # tables, migrations, the default experiment
        store.engine.dispose()
        SqlAlchemyStore._engine_map.pop(uri, None)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _check_file(path: Path) -> None:
    """One clear line for a file that is not a usable SQLite database (instead of MLflow's
    chained tracebacks that never name the file)."""
    if not os.access(path, os.R_OK | os.W_OK):
        raise StoreError(
            f"MLflow store {path} is not readable and writable by this user; fix its "
            "permissions, or copy it to a writable place and point --tracking-uri there"
        )
    with open(path, "rb") as handle:
        header = handle.read(100)
    if not header.startswith(_SQLITE_MAGIC):
        raise StoreError(
            f"MLflow store {path} is not an SQLite database; move it away (a new store is "
            "created in its place) or point --tracking-uri at the right file"
        )
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    size = path.stat().st_size
    if len(header) < 100 or (page_size and size % page_size):
        raise StoreError(
            f"MLflow store {path} is truncated ({size} bytes); restore it from a backup or "
            "move it away (the cells' results stay in their runs/cells/<key>/result.json)"
        )


def _schema_revision(path: Path) -> str | None:
    """The store's alembic revision, None when it has none.

    Read through a read-write connection: a process killed mid-write (a Ray worker, a preempted
    job) leaves a hot rollback journal, which the next connection must roll back before it can
    read, and a read-only one cannot ("attempt to write a readonly database" on every retry).
    """
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as connection:
            row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.DatabaseError as error:
        if "no such table" in str(error):
            return None
        raise StoreError(
            f"MLflow store {path} cannot be read ({error}); restore it from a backup or move "
            "it away (the cells' results stay in their runs/cells/<key>/result.json)"
        ) from None
    return row[0] if row else None


def _upgrade_if_needed(path: Path) -> None:
    from mlflow.store.db.utils import _get_latest_schema_revision, _upgrade_db
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    current = _schema_revision(path)
    if current == _get_latest_schema_revision():
        return
    if current is None:
        raise StoreError(
            f"{path} is an SQLite database but not an MLflow store (no schema version); "
            "point --tracking-uri at an MLflow store or at a new file"
        )
    engine = create_engine(_SQLITE_PREFIX + str(path), poolclass=NullPool)
    try:
        _upgrade_db(engine)
    except Exception as error:
        raise StoreError(
            f"MLflow store {path}: upgrading its schema from {current} failed ({error}); "
            f"restore a backup, or run `mlflow db upgrade sqlite:///{path}` to see why"
        ) from None
    finally:
        engine.dispose()
