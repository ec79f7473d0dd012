"""The engine and its sessions: opening (and migrating) the database, SQLite's connection settings, one write
transaction at a time, and running a write again after a lock conflict."""

from __future__ import annotations

import functools
import os
import sqlite3
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from .. import migrations
from .records import MissingDatabase, StorageError

BUSY_TIMEOUT_MS = 10_000
WRITE_RETRIES = 5  # a write that still meets "database is locked" after busy_timeout is run again this often


def transient(exc: OperationalError) -> bool:
    """A lock or serialisation conflict: the transaction was rolled back and may simply be run again."""
    text = str(exc.orig).lower()
    return any(w in text for w in ("locked", "busy", "deadlock", "could not serialize"))


def unreachable(exc: BaseException) -> bool:
    """The database server could not be reached or dropped the connection (it restarted, the network failed):
    whatever this call was writing was rolled back or never sent; trying again once the server is back is safe."""
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, OperationalError):
        text = str(exc.orig).lower()
        return any(w in text for w in ("connection", "server closed", "terminating", "shutting down",
                                       "starting up", "could not connect", "timeout expired"))
    return False


def retried(fn):
    """Run a write again when it met a lock conflict (SQLite from another process, PostgreSQL serialisation).
    Every write here is one transaction, and a conflict rolls it back, so running it again is safe; the
    writes that could land twice (a trial's ratings) are idempotent anyway."""

    @functools.wraps(fn)
    def inner(self, *args, **kwargs):
        for attempt in range(WRITE_RETRIES):
            try:
                return fn(self, *args, **kwargs)
            except OperationalError as exc:
                if not transient(exc) or attempt == WRITE_RETRIES - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))

    return inner


def switch_to_wal(cur: Any) -> None:
    """``PRAGMA journal_mode=WAL``, retried: on a new database the switch needs an exclusive lock and, unlike
    other statements, fails at once instead of waiting on busy_timeout when another process holds a lock (two
    ``p2p generate`` processes starting on one new database did). Once the file is in WAL mode it is a no-op."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def begin_transaction(conn: Any) -> None:
    # Writes take SQLite's write lock up front (BEGIN IMMEDIATE); reads (engine option p2p_read) take none.
    conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("p2p_read") else "BEGIN IMMEDIATE")


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE (below) instead of the driver's lazy BEGIN,
    # so a read-then-write transaction takes the write lock up front and waits on busy_timeout instead
    # of failing with "database is locked" when another writer got there first.
    dbapi_connection.isolation_level = None
    cur = dbapi_connection.cursor()
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    switch_to_wal(cur)
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


READ_ONLY_DATA = (
    "The data folder {folder} cannot be written ({reason}): the server could not store a rating, a rater or an "
    "image there. Make it writable, or point --data-dir / P2P_DATA_DIR (and --database-url) at a writable folder."
)


def check_writable(*folders: Path | None) -> None:
    """Write and remove a probe file in each folder; a StorageError naming the folder when that fails (a
    read-only mount, a full disk, wrong permissions), before any rater meets it."""
    for folder in folders:
        if folder is None:
            continue
        try:
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".p2p-write-check-")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise StorageError(READ_ONLY_DATA.format(folder=folder, reason=exc.strerror or exc)) from None


class Database:
    """Owns the engine, its sessions and the image folder; the topic stores (raters, images, studies, trials,
    frames) add the intent-named reads and writes on top."""

    def __init__(self, url: str, image_dir: str | Path, *, must_exist: bool = False, data_dir: str | Path | None = None):
        """Open (or create) the database at ``url``; with ``must_exist`` a SQLite file that is not there is a
        :class:`MissingDatabase` error and nothing is created (what read-only commands use).

        Image paths are stored relative to ``data_dir`` (default: the image folder's parent, which is the data
        folder of the app), so a moved or restored data folder still finds its images."""
        self.url = url
        self.image_dir = Path(image_dir)
        self.data_dir = (Path(data_dir) if data_dir is not None else self.image_dir.parent).resolve()
        db_path = url.split("///", 1)[-1] if url.startswith("sqlite") else ""
        if must_exist and db_path and db_path != ":memory:" and not Path(db_path).is_file():
            raise MissingDatabase(db_path)
        try:
            if not must_exist:
                self.image_dir.mkdir(parents=True, exist_ok=True)
            if url.startswith("sqlite") and db_path and db_path != ":memory:":
                Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(READ_ONLY_DATA.format(folder=self.image_dir.parent, reason=exc.strerror or exc)) from None
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000}
            if "///" in url and db_path and db_path != ":memory:" and not db_path.startswith("file:"):
                # one connection per concurrent request thread (Gradio runs up to 40 handlers at once)
                kwargs.update(pool_size=10, max_overflow=50)
        if not must_exist:  # a read-only data folder is refused here, not at every rater's sign-in
            sqlite_dir = Path(db_path).parent if url.startswith("sqlite") and db_path and db_path != ":memory:" \
                and not db_path.startswith("file:") else None
            check_writable(self.image_dir, sqlite_dir)
            if sqlite_dir is not None and Path(db_path).exists() and not os.access(db_path, os.W_OK):
                raise StorageError(READ_ONLY_DATA.format(folder=sqlite_dir, reason=f"{Path(db_path).name} is read-only"))
        self.is_sqlite = url.startswith("sqlite")
        if not self.is_sqlite:
            # a database server that restarted left dead connections in the pool: test each one as it is taken
            # out (a cheap round trip) so the first request after the restart does not fail on a stale one
            kwargs["pool_pre_ping"] = True  # (pool: SQLAlchemy's default, at most 15 connections per process)
        self.engine: Engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", sqlite_pragmas)
            event.listen(self.engine, "begin", begin_transaction)
        migrations.upgrade(self.engine, data_dir=self.data_dir)  # a new database gets every revision; an old one is upgraded
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(self.engine.execution_options(p2p_read=True), expire_on_commit=False)
        # SQLite has one writer at a time: writers of this process queue here, in order, instead of polling
        # the file lock (busy_timeout still covers writers in other processes, e.g. the CLI).
        self._write_lock = threading.Lock() if self.is_sqlite else None

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        """One write transaction: committed on success, rolled back on any error."""
        if self._write_lock is None:
            with self._sessions() as session, session.begin():
                yield session
            return
        with self._write_lock, self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def _read(self) -> Iterator[Session]:
        """One read-only transaction (on SQLite it takes no write lock and does not wait for writers)."""
        with self._read_sessions() as session, session.begin():
            yield session

    def close(self) -> None:
        self.engine.dispose()

