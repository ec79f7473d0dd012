"""Storage: the only module that opens database connections. Every write goes through it.

SQLAlchemy 2.0 typed models on SQLite by default (any SQLAlchemy URL works). On SQLite the connection is
set to WAL mode with a busy timeout and foreign keys on. Each public write is one transaction: a trial's
ratings are stored all together or not at all, and an image row is written only after its file is safely
on disk.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import secrets
import sqlite3
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import pandas as pd
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    false,
    func,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from . import migrations
from .blinding import presentation_png_size, stamp_constant_mtime
from .text import name_key
from .tidy import MARK_COLUMNS, MARK_DTYPES, TIDY_COLUMNS, TIDY_DEFAULTS, TIDY_DTYPES

LIVE_STUDY = "live"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _aware(ts: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive: they were stored as UTC."""
    if ts is not None and ts.tzinfo is None:
        return ts.replace(tzinfo=timezone.utc)
    return ts


class Base(DeclarativeBase):
    pass


class Rater(Base):
    """A rater. ``name`` is for display only: two people may type the same name and stay two raters.
    ``token`` holds the sha256 (hex) of the personal invite / resume token, never the token itself."""

    __tablename__ = "raters"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    study_key: Mapped[str] = mapped_column(String(200), default=LIVE_STUDY)
    token: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    slot: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Image(Base):
    __tablename__ = "images"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # opaque, random
    model: Mapped[str] = mapped_column(String(200))  # "real" for real images
    source: Mapped[str] = mapped_column(String(16))  # "generated" | "real"
    prompt: Mapped[str] = mapped_column(Text)
    prompt_id: Mapped[str] = mapped_column(String(200), default="")
    modality: Mapped[str] = mapped_column(String(32))
    seed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    cache_key: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    sha256: Mapped[str] = mapped_column(String(64))
    file_path: Mapped[str] = mapped_column(Text)
    original_path: Mapped[str] = mapped_column(Text, default="")
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    gen_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Study(Base):
    __tablename__ = "studies"
    __table_args__ = (UniqueConstraint("study_id", "version", name="uq_study_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(Text, default="")
    design_hash: Mapped[str] = mapped_column(String(64))
    images_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    frozen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    @property
    def key(self) -> str:
        return f"{self.study_id}@v{self.version}"


class StudySlot(Base):
    """Which stored image fills a study's image slot (e.g. "p003/colon-msdm-tiny/s1")."""

    __tablename__ = "study_slots"

    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"), primary_key=True)
    slot_key: Mapped[str] = mapped_column(String(400), primary_key=True)
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id"))


class Trial(Base):
    """One screen shown to one rater: the images in the order shown (stored before showing)."""

    __tablename__ = "trials"
    __table_args__ = (UniqueConstraint("rater_pk", "study_pk", "order_index", name="uq_trial_sequence"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    rater_pk: Mapped[int] = mapped_column(ForeignKey("raters.id"))
    study_pk: Mapped[int | None] = mapped_column(ForeignKey("studies.id"), nullable=True)
    item_key: Mapped[str] = mapped_column(String(400), default="")
    order_index: Mapped[int] = mapped_column(Integer, default=0)
    is_repeat: Mapped[bool] = mapped_column(Boolean, default=False)
    prompt: Mapped[str] = mapped_column(Text)
    prompt_id: Mapped[str] = mapped_column(String(200), default="")
    modality: Mapped[str] = mapped_column(String(32))
    shown_order: Mapped[list] = mapped_column(JSON)  # list of image ids, position 1 first
    shown_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    practice: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # never analysed


class Rating(Base):
    __tablename__ = "ratings"
    __table_args__ = (
        UniqueConstraint("rater_pk", "image_id", "question", "attempt", name="uq_rater_image_question"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id"))
    rater_pk: Mapped[int] = mapped_column(ForeignKey("raters.id"))
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id"))
    question: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer, default=0)  # 1 for a planned repeat
    value: Mapped[int | None] = mapped_column(Integer, nullable=True)
    choices: Mapped[str] = mapped_column(Text, default="")
    cant_judge: Mapped[bool] = mapped_column(Boolean, default=False)
    comment: Mapped[str] = mapped_column(Text, default="")
    position: Mapped[int] = mapped_column(Integer)
    answered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    seconds: Mapped[float] = mapped_column(Float)
    # time the page was visible and not idle (measured by the page, clamped to ``seconds``); None = unknown
    active_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)


class Mark(Base):
    """A point a rater marked on an image as looking wrong (studies with ``mark_artifacts``): image-normalised
    coordinates, x to the right, y down, both in [0, 1]. A changed answer replaces a trial's marks: the old ones
    keep their rows with ``replaced_at`` set (history), the current ones have it empty."""

    __tablename__ = "marks"

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id"), index=True)
    rater_pk: Mapped[int] = mapped_column(ForeignKey("raters.id"))
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id"))
    position: Mapped[int] = mapped_column(Integer)
    x: Mapped[float] = mapped_column(Float)
    y: Mapped[float] = mapped_column(Float)
    marked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    replaced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class RatingHistory(Base):
    """Earlier versions of a changed answer: answers are never silently overwritten."""

    __tablename__ = "rating_history"

    id: Mapped[int] = mapped_column(primary_key=True)
    rating_id: Mapped[int] = mapped_column(ForeignKey("ratings.id"))
    value: Mapped[int | None] = mapped_column(Integer, nullable=True)
    choices: Mapped[str] = mapped_column(Text, default="")
    cant_judge: Mapped[bool] = mapped_column(Boolean, default=False)
    comment: Mapped[str] = mapped_column(Text, default="")
    answered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    replaced_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# --------------------------------------------------------------------------------------------------
# Plain values handed to the rest of the app (no ORM objects leave this module).


@dataclass(frozen=True)
class RaterInfo:
    pk: int
    public_id: str
    name: str
    study_key: str
    slot: int | None
    token: str | None  # the clear token only in what add_rater(with_token=True) returns; else its sha256 or None

    @property
    def invited(self) -> bool:
        return bool(self.token)


@dataclass(frozen=True)
class ImageInfo:
    id: str
    model: str
    source: str
    prompt: str
    prompt_id: str
    modality: str
    seed: int | None
    file_path: str
    sha256: str
    width: int
    height: int


@dataclass(frozen=True)
class TrialInfo:
    id: int
    rater_pk: int
    study_pk: int | None
    item_key: str
    order_index: int
    is_repeat: bool
    prompt: str
    prompt_id: str
    modality: str
    shown_order: tuple[str, ...]
    shown_at: datetime
    submitted_at: datetime | None
    practice: bool = False


@dataclass(frozen=True)
class Answer:
    """One answer to one question about one image of a trial."""

    image_id: str
    question: str
    value: int | None = None
    choices: tuple[str, ...] = ()
    cant_judge: bool = False
    comment: str = ""


@dataclass(frozen=True)
class MarkPoint:
    """One marked point on one image of a trial (image-normalised, x right, y down, in [0, 1])."""

    image_id: str
    x: float
    y: float


@dataclass(frozen=True)
class StudyRecord:
    """A study as stored: its design hash, and once frozen the hash over its images and when it was frozen."""

    pk: int
    study_id: str
    version: int
    title: str
    design_hash: str
    images_hash: str | None
    frozen_at: datetime | None

    @property
    def key(self) -> str:
        return f"{self.study_id}@v{self.version}"

    @property
    def frozen(self) -> bool:
        return self.frozen_at is not None


@dataclass(frozen=True)
class HistoryEntry:
    """An earlier version of a changed answer (answers are never silently overwritten)."""

    image_id: str
    question: str
    value: int | None
    choices: str
    cant_judge: bool
    comment: str
    answered_at: datetime | None
    replaced_at: datetime | None


@dataclass(frozen=True)
class PanelModel:
    """Which model made the image at one position of a trial (what a reveal shows)."""

    position: int
    model: str
    source: str


@dataclass(frozen=True)
class RecordResult:
    status: str  # "stored" | "duplicate" | "changed"
    n_rows: int


class AccessDenied(PermissionError):
    """The caller may not act on this trial (it belongs to another rater, or does not exist)."""


class MissingDatabase(FileNotFoundError):
    """A read-only command was pointed at a folder with no database: nothing was created."""

    def __init__(self, path: str):
        self.path = path
        folder = Path(path).parent
        super().__init__(
            f"no database in {folder} (looked for {Path(path).name}): nothing has been stored there yet. "
            "Give the folder your app uses with --data-dir (or P2P_DATA_DIR), or the database with --database-url."
        )


class StorageError(ValueError):
    """A write was refused; nothing was written."""


def _rater_info(r: Rater) -> RaterInfo:
    return RaterInfo(r.id, r.public_id, r.name, r.study_key, r.slot, r.token)


def _image_info(i: Image, root: Path) -> ImageInfo:
    """The row as a record; its stored path (relative to the data folder since revision 0004) made absolute."""
    return ImageInfo(
        i.id, i.model, i.source, i.prompt, i.prompt_id, i.modality, i.seed, str(root / i.file_path), i.sha256,
        i.width, i.height,
    )


def _trial_info(t: Trial) -> TrialInfo:
    return TrialInfo(
        t.id,
        t.rater_pk,
        t.study_pk,
        t.item_key,
        t.order_index,
        t.is_repeat,
        t.prompt,
        t.prompt_id,
        t.modality,
        tuple(t.shown_order),
        _aware(t.shown_at),
        _aware(t.submitted_at),
        bool(t.practice),
    )


BUSY_TIMEOUT_MS = 10_000
WRITE_RETRIES = 5  # a write that still meets "database is locked" after busy_timeout is run again this often


def token_hash(token: str) -> str:
    """What is stored for a personal token: its sha256 (hex). Tokens carry 192 random bits, so no salt is needed."""
    return hashlib.sha256(token.encode()).hexdigest()


def _transient(exc: OperationalError) -> bool:
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


def _retried(fn):
    """Run a write again when it met a lock conflict (SQLite from another process, PostgreSQL serialisation).
    Every write here is one transaction, and a conflict rolls it back, so running it again is safe; the
    writes that could land twice (a trial's ratings) are idempotent anyway."""

    @functools.wraps(fn)
    def inner(self, *args, **kwargs):
        for attempt in range(WRITE_RETRIES):
            try:
                return fn(self, *args, **kwargs)
            except OperationalError as exc:
                if not _transient(exc) or attempt == WRITE_RETRIES - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))

    return inner


def _switch_to_wal(cur: Any) -> None:
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


def _begin(conn: Any) -> None:
    # Writes take SQLite's write lock up front (BEGIN IMMEDIATE); reads (engine option p2p_read) take none.
    conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("p2p_read") else "BEGIN IMMEDIATE")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE (below) instead of the driver's lazy BEGIN,
    # so a read-then-write transaction takes the write lock up front and waits on busy_timeout instead
    # of failing with "database is locked" when another writer got there first.
    dbapi_connection.isolation_level = None
    cur = dbapi_connection.cursor()
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    _switch_to_wal(cur)
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


class Storage:
    """Owns the engine and the image folder; exposes intent-named reads and writes."""

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
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _begin)
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

    # ------------------------------------------------------------------ raters
    def sign_in_rater(self, name: str, study_key: str = LIVE_STUDY, slot: int | None = None) -> RaterInfo:
        """A NEW rater called ``name`` with a personal resume token (returned in clear, once).

        A name is never an identity: two sign-ins with one name are two raters. To come back as the same
        rater, a person presents the token (:meth:`rater_by_token`)."""
        return self.add_rater(name, study_key, slot=slot, with_token=True)

    @_retried
    def add_rater(
        self, name: str, study_key: str = LIVE_STUDY, slot: int | None = None, with_token: bool = False,
        unique_slot: bool = False, join_slot: Callable[[int], int] | None = None,
    ) -> RaterInfo:
        """Create a rater; with ``with_token`` the returned info carries the clear token (only its sha256 is
        stored). ``unique_slot`` refuses a ``slot`` another rater of the study already holds (a study that lists
        its raters: one person per listed name), checked in the same transaction as the insert. ``join_slot``
        (instead of ``slot``): the slot is ``join_slot(number of raters of the study so far)`` (an open study's
        join order), counted in the same transaction as the insert. Both are serialised per study (SQLite: one
        writer; PostgreSQL: an advisory lock), so concurrent sign-ins, in one app server or several, never take
        one join index or one listed place twice."""
        clean = " ".join(name.split())
        if not clean:
            raise StorageError("The rater name is empty.")
        token = secrets.token_urlsafe(24) if with_token else None
        with self._tx() as s:
            if (unique_slot or join_slot is not None) and self.engine.dialect.name == "postgresql":
                s.execute(select(func.pg_advisory_xact_lock(28722, func.hashtext(study_key))))
            if join_slot is not None:
                joined = s.scalar(select(func.count()).select_from(Rater).where(Rater.study_key == study_key))
                slot = join_slot(int(joined or 0))
            if unique_slot:
                holder = s.scalars(select(Rater).where(Rater.slot == slot, Rater.study_key == study_key)).first()
                if holder is not None:
                    raise StorageError(
                        f"{holder.name!r} already holds this rater place of {study_key} (invited once; "
                        "`p2p raters reissue` makes a new link)."
                    )
            r = Rater(
                public_id="r" + secrets.token_hex(4),
                name=clean,
                study_key=study_key,
                slot=slot,
                token=token_hash(token) if token else None,
            )
            s.add(r)
            s.flush()
            info = _rater_info(r)
        return RaterInfo(info.pk, info.public_id, info.name, info.study_key, info.slot, token)

    def rater_by_token(self, token: str) -> RaterInfo | None:
        if not token or not isinstance(token, str) or len(token) > 200:
            return None
        with self._read() as s:
            r = s.scalars(select(Rater).where(Rater.token == token_hash(token.strip()))).first()
            return _rater_info(r) if r else None

    @_retried
    def reissue_token(self, rater_pk: int) -> str:
        """A new personal token for the rater (returned in clear, once); the old one stops working."""
        token = secrets.token_urlsafe(24)
        with self._tx() as s:
            r = s.get(Rater, rater_pk)
            if r is None:
                raise StorageError(f"no rater #{rater_pk}")
            r.token = token_hash(token)
        return token

    def rater(self, rater_pk: int) -> RaterInfo | None:
        with self._read() as s:
            r = s.get(Rater, rater_pk)
            return _rater_info(r) if r else None

    def raters(self, study_key: str | None = None) -> list[RaterInfo]:
        with self._read() as s:
            q = select(Rater).order_by(Rater.id)
            if study_key is not None:
                q = q.where(Rater.study_key == study_key)
            return [_rater_info(r) for r in s.scalars(q)]

    @_retried
    def set_rater_slot(self, rater_pk: int, slot: int) -> RaterInfo:
        with self._tx() as s:
            r = s.get(Rater, rater_pk)
            if r is None:
                raise StorageError(f"no rater #{rater_pk}")
            if r.slot is None:
                r.slot = slot
            return _rater_info(r)

    # ------------------------------------------------------------------ images
    def image_by_cache_key(self, cache_key: str) -> ImageInfo | None:
        with self._read() as s:
            i = s.scalars(select(Image).where(Image.cache_key == cache_key)).first()
            if i is None or not (self.data_dir / i.file_path).is_file():
                return None
            return _image_info(i, self.data_dir)

    def image(self, image_id: str) -> ImageInfo | None:
        with self._read() as s:
            i = s.get(Image, image_id)
            return _image_info(i, self.data_dir) if i else None

    def stored_path(self, path: Path) -> str:
        """What the database keeps for an image file: its path relative to the data folder (absolute only for a
        file outside it)."""
        resolved = path.resolve()
        return resolved.relative_to(self.data_dir).as_posix() if resolved.is_relative_to(self.data_dir) else str(resolved)

    @_retried
    def add_image(
        self,
        *,
        image_id: str,
        png: bytes,
        sha256: str,
        size: int,
        model: str,
        source: str,
        prompt: str,
        modality: str,
        prompt_id: str = "",
        seed: int | None = None,
        params: dict | None = None,
        cache_key: str | None = None,
        original_path: str = "",
        gen_seconds: float | None = None,
    ) -> ImageInfo:
        """Write the presentation file (atomically) and then its row; on any failure neither remains.

        A ``cache_key`` already present returns the existing image instead (concurrent identical requests).
        """
        if source not in ("generated", "real"):
            raise StorageError(f"image source must be 'generated' or 'real', got {source!r}")
        if len(png) != presentation_png_size(size):  # one byte size per presentation size, whatever the model
            raise StorageError(
                f"image {image_id}: {len(png)} bytes is not the presentation size of a {size} px PNG "
                f"({presentation_png_size(size)} bytes); write it with blinding.presentation_png"
            )
        path = self.image_dir / f"{image_id}.png"
        fd, tmp = tempfile.mkstemp(dir=self.image_dir, suffix=".part")
        with os.fdopen(fd, "wb") as fh:
            fh.write(png)
        stamp_constant_mtime(tmp)  # one mtime for every presentation file: no generation order in headers
        os.replace(tmp, path)
        try:
            with self._tx() as s:
                row = Image(
                    id=image_id,
                    model=model,
                    source=source,
                    prompt=prompt,
                    prompt_id=prompt_id,
                    modality=modality,
                    seed=seed,
                    params=params or {},
                    cache_key=cache_key,
                    sha256=sha256,
                    file_path=self.stored_path(path),
                    original_path=original_path,
                    width=size,
                    height=size,
                    gen_seconds=gen_seconds,
                )
                s.add(row)
                s.flush()
                return _image_info(row, self.data_dir)
        except IntegrityError:
            path.unlink(missing_ok=True)
            if cache_key is not None:
                existing = self.image_by_cache_key(cache_key)
                if existing is not None:
                    return existing
            raise StorageError(f"image {image_id} could not be stored") from None
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    def generated_images(self, prompt: str, modality: str) -> list[ImageInfo]:
        """Every generated image of exactly this prompt and modality (what a presenter's arena can show)."""
        with self._tx() as s:
            rows = s.scalars(
                select(Image).where(Image.prompt == prompt, Image.modality == modality, Image.source == "generated")
            )
            return [_image_info(i, self.data_dir) for i in rows]

    def generated_prompts(self, modality: str) -> list[str]:
        """The distinct prompts that have generated images of ``modality``, in first-stored order."""
        with self._tx() as s:
            rows = s.execute(
                select(Image.prompt, func.min(Image.created_at))
                .where(Image.modality == modality, Image.source == "generated")
                .group_by(Image.prompt)
                .order_by(func.min(Image.created_at), Image.prompt)
            )
            return [prompt for prompt, _ in rows]

    def count_images(self) -> int:
        with self._read() as s:
            return s.scalar(select(func.count()).select_from(Image)) or 0

    @staticmethod
    def _arena_images():
        """Live-arena images: generated for a typed prompt (no prompt id: batch and study images always have one)
        and in no study's image slots."""
        return select(Image).where(Image.source == "generated", Image.prompt_id == "",
                                   Image.id.not_in(select(StudySlot.image_id)))  # fmt: skip

    def count_arena_images(self) -> int:
        """How many live-arena images are stored (what the arena's disk budget counts)."""
        with self._read() as s:
            return s.scalar(select(func.count()).select_from(self._arena_images().subquery())) or 0

    @_retried
    def delete_unrated_arena_images(self, older_than: datetime, limit: int) -> int:
        """Delete up to ``limit`` of the oldest live-arena images made before ``older_than`` that no stored answer,
        mark, study slot or live trial still on screen uses, with the unsubmitted live trials from before
        ``older_than`` that showed them (abandoned screens: they could never be submitted without their images).
        A submitted trial's images and every study image stay. Rows go in one transaction; files after it.
        Returns how many images were deleted."""
        if limit <= 0:
            return 0
        with self._tx() as s:
            candidates = list(s.scalars(
                self._arena_images().with_only_columns(Image.id)
                .where(Image.created_at < older_than, Image.id.not_in(select(Rating.image_id)),
                       Image.id.not_in(select(Mark.image_id)))
                .order_by(Image.created_at).limit(limit * 4)
            ))  # fmt: skip
            if not candidates:
                return 0
            wanted = set(candidates)
            kept: set[str] = set()  # images a live trial still needs: a submitted one, or one still on screen
            stale: list[Trial] = []
            for t in s.scalars(select(Trial).where(Trial.study_pk.is_(None))):
                ids = wanted.intersection(t.shown_order or ())
                if not ids:
                    continue
                if t.submitted_at is None and _aware(t.shown_at) < older_than:
                    stale.append(t)
                else:
                    kept |= ids
            doomed = [i for i in candidates if i not in kept][:limit]
            doomed_set = set(doomed)
            for t in stale:  # a stale trial goes only if every image of it that is an arena image goes
                if doomed_set.issuperset(wanted.intersection(t.shown_order)):
                    s.delete(t)
                else:
                    doomed_set -= set(t.shown_order)
            rows = list(s.scalars(select(Image).where(Image.id.in_(doomed_set))))
            paths = [self.data_dir / r.file_path for r in rows]
            for r in rows:
                s.delete(r)
        for path in paths:
            path.unlink(missing_ok=True)
        return len(paths)

    # ------------------------------------------------------------------ studies
    def study(self, study_id: str, version: int) -> StudyRecord | None:
        with self._read() as s:
            st = s.scalars(select(Study).where(Study.study_id == study_id, Study.version == version)).first()
            return self._study_record(st) if st else None

    def study_keys(self) -> list[str]:
        """``id@vN`` of every study in the database, in creation order."""
        with self._read() as s:
            return [f"{sid}@v{ver}" for sid, ver in s.execute(select(Study.study_id, Study.version).order_by(Study.id))]

    def study_versions(self, study_id: str) -> list[StudyRecord]:
        with self._read() as s:
            return [
                self._study_record(st)
                for st in s.scalars(select(Study).where(Study.study_id == study_id).order_by(Study.version))
            ]

    @staticmethod
    def _study_record(st: Study) -> StudyRecord:
        return StudyRecord(
            st.id, st.study_id, st.version, st.title, st.design_hash, st.images_hash, _aware(st.frozen_at)
        )

    @_retried
    def register_study(self, study_id: str, version: int, title: str, design_hash: str) -> StudyRecord:
        """Create the study row, or return it if its design is unchanged.

        A frozen study whose design changed is refused: bump ``version`` in the study file instead.
        An unfrozen study may still be edited (its design hash is updated).
        """
        with self._tx() as s:
            st = s.scalars(select(Study).where(Study.study_id == study_id, Study.version == version)).first()
            if st is None:
                st = Study(study_id=study_id, version=version, title=title, design_hash=design_hash)
                s.add(st)
                s.flush()
            elif st.design_hash != design_hash:
                if st.frozen_at is not None:
                    raise StorageError(
                        f"study {study_id!r} version {version} is frozen and its design changed "
                        f"(stored hash {st.design_hash[:12]}…, file now {design_hash[:12]}…). "
                        "Create a new version (raise `version` in the study file) instead of editing it."
                    )
                st.design_hash = design_hash
                st.title = title
            return self._study_record(st)

    @_retried
    def set_study_slot(self, study_pk: int, slot_key: str, image_id: str, *, first_wins: bool = False) -> str:
        """Put ``image_id`` in a slot of a study that is not frozen; returns the image the slot holds.

        ``first_wins`` (an image the caller has just made for this slot: a real or catch image): a slot that
        already holds an image keeps it, also in a study frozen meanwhile (two servers preparing one folder), and
        the new image, which nothing else uses, is deleted (row and file) instead of being left an orphan."""
        with self._tx() as s:
            st = s.get(Study, study_pk)
            if st is None:
                raise StorageError(f"no study #{study_pk}")
            existing = s.get(StudySlot, (study_pk, slot_key))
            if first_wins and existing is not None and existing.image_id != image_id:
                loser = s.get(Image, image_id)
                used = s.scalar(select(func.count()).select_from(StudySlot).where(StudySlot.image_id == image_id))
                path = self.data_dir / loser.file_path if loser is not None and not used else None
                if path is not None:
                    s.delete(loser)
                winner = existing.image_id
            else:
                if st.frozen_at is not None:
                    raise StorageError(f"study {st.key} is frozen: its images cannot change")
                if existing is None:
                    s.add(StudySlot(study_pk=study_pk, slot_key=slot_key, image_id=image_id))
                else:
                    existing.image_id = image_id
                return image_id
        if path is not None:
            path.unlink(missing_ok=True)
        return winner

    def study_slots(self, study_pk: int) -> dict[str, ImageInfo]:
        with self._read() as s:
            rows = s.execute(
                select(StudySlot.slot_key, Image).join(Image, Image.id == StudySlot.image_id).where(
                    StudySlot.study_pk == study_pk
                )
            ).all()
            return {key: _image_info(img, self.data_dir) for key, img in rows}

    @_retried
    def freeze_study(self, study_pk: int, images_hash: str) -> StudyRecord:
        with self._tx() as s:
            st = s.get(Study, study_pk)
            if st is None:
                raise StorageError(f"no study #{study_pk}")
            if st.frozen_at is not None:
                if st.images_hash != images_hash:
                    raise StorageError(f"study {st.key} is frozen with different images")
                return self._study_record(st)
            st.images_hash = images_hash
            st.frozen_at = utcnow()
            return self._study_record(st)

    # ------------------------------------------------------------------ trials
    @_retried
    def create_trial(
        self,
        *,
        rater_pk: int,
        prompt: str,
        modality: str,
        shown_order: Sequence[str],
        study_pk: int | None = None,
        item_key: str = "",
        order_index: int | None = None,
        is_repeat: bool = False,
        prompt_id: str = "",
        practice: bool = False,
    ) -> TrialInfo:
        """Store a trial with the exact order its images will be shown in, before they are shown.

        For a study trial that already exists at this ``order_index`` the stored one is returned (resume).
        """
        if not shown_order:
            raise StorageError("a trial needs at least one image")
        with self._tx() as s:
            if study_pk is not None and order_index is not None:
                existing = s.scalars(
                    select(Trial).where(
                        Trial.rater_pk == rater_pk, Trial.study_pk == study_pk, Trial.order_index == order_index
                    )
                ).first()
                if existing is not None:
                    return _trial_info(existing)
            if order_index is None:
                order_index = s.scalar(
                    select(func.count()).select_from(Trial).where(Trial.rater_pk == rater_pk, Trial.study_pk.is_(None))
                ) or 0
            missing = set(shown_order) - set(s.scalars(select(Image.id).where(Image.id.in_(list(shown_order)))))
            if missing:
                raise StorageError(f"unknown image ids in trial: {sorted(missing)}")
            t = Trial(
                rater_pk=rater_pk,
                study_pk=study_pk,
                item_key=item_key,
                order_index=order_index,
                is_repeat=is_repeat,
                prompt=prompt,
                prompt_id=prompt_id,
                modality=modality,
                shown_order=list(shown_order),
                practice=practice,
            )
            s.add(t)
            s.flush()
            if not item_key:
                t.item_key = f"live-{t.id}"
            return _trial_info(t)

    def trial(self, trial_id: int) -> TrialInfo | None:
        with self._read() as s:
            t = s.get(Trial, trial_id)
            return _trial_info(t) if t else None

    def trials_for(self, rater_pk: int, study_pk: int | None) -> list[TrialInfo]:
        with self._read() as s:
            q = select(Trial).where(Trial.rater_pk == rater_pk).order_by(Trial.order_index)
            q = q.where(Trial.study_pk.is_(None)) if study_pk is None else q.where(Trial.study_pk == study_pk)
            return [_trial_info(t) for t in s.scalars(q)]

    @_retried
    def record_ratings(
        self,
        trial_id: int,
        rater_pk: int,
        answers: Sequence[Answer],
        allow_changes: bool = False,
        active_seconds: float | None = None,
        marks: Sequence[MarkPoint] = (),
    ) -> RecordResult:
        """Store all of a trial's answers (and its marked points) in one transaction, or none.

        The trial must belong to ``rater_pk`` and every answer and mark must name an image of that trial.
        A second submission of a submitted trial is a no-op (``status="duplicate"``, no mark stored) unless
        ``allow_changes``; then changed answers are updated and their old versions kept in history, and marks
        that differ replace the trial's current marks (the old rows stay, with ``replaced_at``).
        ``active_seconds``: time the page was visible and not idle (None = unknown); stored clamped to the wall
        seconds (answered − shown) computed here; a change keeps the first submit's times.
        """
        if not answers:
            raise StorageError("no answers to store")
        if active_seconds is not None and (
            isinstance(active_seconds, bool) or not isinstance(active_seconds, (int, float))
            or not math.isfinite(active_seconds) or active_seconds < 0
        ):
            raise StorageError(f"active seconds must be a finite number >= 0, not {active_seconds!r}")
        for m in marks:
            if not (0.0 <= m.x <= 1.0 and 0.0 <= m.y <= 1.0):
                raise StorageError(f"a marked point must lie in [0, 1] x [0, 1], not ({m.x!r}, {m.y!r})")
        now = utcnow()
        try:
            with self._tx() as s:
                t = s.get(Trial, trial_id, with_for_update=True)
                if t is None or t.rater_pk != rater_pk:
                    raise AccessDenied("This trial is not yours.")
                positions = {image_id: i + 1 for i, image_id in enumerate(t.shown_order)}
                for a in (*answers, *marks):
                    if a.image_id not in positions:
                        raise AccessDenied("An answer names an image that is not part of this trial.")
                if t.submitted_at is not None:
                    if not allow_changes:
                        return RecordResult("duplicate", 0)
                    result = self._change_answers(s, t, answers, now)
                    if self._replace_marks(s, t, rater_pk, marks, positions, now) and result.status == "duplicate":
                        result = RecordResult("changed", 0)
                    return result
                # The n-th showing of one image to one rater (a planned repeat, or a real image that
                # appears beside several seeds) is attempt n-1: the unique key stays one answer per
                # rater × image × question × showing, and a concurrent double submit still collides.
                prior = {
                    (image_id, question): n
                    for image_id, question, n in s.execute(
                        select(Rating.image_id, Rating.question, func.count())
                        .where(Rating.rater_pk == rater_pk, Rating.image_id.in_(list(positions)))
                        .group_by(Rating.image_id, Rating.question)
                    )
                }
                shown_at = _aware(t.shown_at)
                seconds = max(0.0, (now - shown_at).total_seconds())
                active = None if active_seconds is None else min(float(active_seconds), seconds)
                for a in answers:
                    s.add(
                        Rating(
                            trial_id=t.id,
                            rater_pk=rater_pk,
                            image_id=a.image_id,
                            question=a.question,
                            attempt=prior.get((a.image_id, a.question), 0),
                            value=a.value,
                            choices="|".join(a.choices),
                            cant_judge=a.cant_judge,
                            comment=a.comment,
                            position=positions[a.image_id],
                            answered_at=now,
                            seconds=seconds,
                            active_seconds=active,
                        )
                    )
                self._replace_marks(s, t, rater_pk, marks, positions, now)
                t.submitted_at = now
                s.flush()
                return RecordResult("stored", len(answers))
        except IntegrityError as exc:
            again = self.trial(trial_id)
            if again is not None and again.submitted_at is not None and not allow_changes:
                return RecordResult("duplicate", 0)  # a concurrent submit of the same trial won
            raise StorageError(f"these answers could not be stored; nothing was written ({exc.orig})") from None

    @staticmethod
    def _replace_marks(
        s: Session, t: Trial, rater_pk: int, marks: Sequence[MarkPoint], positions: Mapping[str, int], now: datetime
    ) -> bool:
        """Make ``marks`` the trial's current marks; the current ones, when different, are kept as history
        (``replaced_at``). True when anything changed."""
        current = list(s.scalars(select(Mark).where(Mark.trial_id == t.id, Mark.replaced_at.is_(None))
                                 .order_by(Mark.id)))
        if [(m.image_id, m.x, m.y) for m in current] == [(m.image_id, float(m.x), float(m.y)) for m in marks]:
            return False
        for m in current:
            m.replaced_at = now
        for m in marks:
            s.add(Mark(trial_id=t.id, rater_pk=rater_pk, image_id=m.image_id, position=positions[m.image_id],
                       x=float(m.x), y=float(m.y), marked_at=now))
        return True

    def trial_marks(self, trial_id: int, rater_pk: int) -> dict[int, list[tuple[float, float]]]:
        """A trial's current marks as the page sends them: position → [(x, y), …] (only the trial's rater)."""
        with self._read() as s:
            t = s.get(Trial, trial_id)
            if t is None or t.rater_pk != rater_pk:
                raise AccessDenied("This trial is not yours.")
            out: dict[int, list[tuple[float, float]]] = {}
            for m in s.scalars(select(Mark).where(Mark.trial_id == trial_id, Mark.replaced_at.is_(None))
                               .order_by(Mark.id)):
                out.setdefault(m.position, []).append((m.x, m.y))
            return out

    @staticmethod
    def _change_answers(s: Session, t: Trial, answers: Sequence[Answer], now: datetime) -> RecordResult:
        existing = {(r.image_id, r.question): r for r in s.scalars(select(Rating).where(Rating.trial_id == t.id))}
        changed = 0
        for a in answers:
            r = existing.get((a.image_id, a.question))
            new = (a.value, "|".join(a.choices), a.cant_judge, a.comment)
            if r is None:
                raise StorageError(f"question {a.question!r} was not part of the original answers")
            if (r.value, r.choices, r.cant_judge, r.comment) == new:
                continue
            s.add(
                RatingHistory(
                    rating_id=r.id,
                    value=r.value,
                    choices=r.choices,
                    cant_judge=r.cant_judge,
                    comment=r.comment,
                    answered_at=_aware(r.answered_at),
                    replaced_at=now,
                )
            )
            r.value, r.choices, r.cant_judge, r.comment = new
            r.answered_at = now
            changed += 1
        return RecordResult("changed" if changed else "duplicate", changed)

    def rating_history(self, trial_id: int) -> list[HistoryEntry]:
        with self._read() as s:
            rows = s.execute(
                select(Rating.image_id, Rating.question, RatingHistory)
                .join(RatingHistory, RatingHistory.rating_id == Rating.id)
                .where(Rating.trial_id == trial_id)
                .order_by(RatingHistory.id)
            ).all()
            return [
                HistoryEntry(image_id, q, h.value, h.choices, h.cant_judge, h.comment, _aware(h.answered_at),
                             _aware(h.replaced_at))
                for image_id, q, h in rows
            ]

    def trial_answers(self, trial_id: int, rater_pk: int) -> dict[int, dict[str, Any]]:
        """The stored answers of one of this rater's trials, as a form: position → {question: value, …}."""
        with self._read() as s:
            t = s.get(Trial, trial_id)
            if t is None or t.rater_pk != rater_pk:
                raise AccessDenied("This trial is not yours.")
            positions = {image_id: i + 1 for i, image_id in enumerate(t.shown_order)}
            form: dict[int, dict[str, Any]] = {}
            for r in s.scalars(select(Rating).where(Rating.trial_id == trial_id)):
                entry = form.setdefault(positions[r.image_id], {})
                entry[r.question] = [c for c in r.choices.split("|") if c] if r.choices else r.value
                entry["cant_judge"] = entry.get("cant_judge", False) or r.cant_judge
                entry["comment"] = r.comment
            return form

    def trial_models(self, trial_id: int, rater_pk: int) -> list[PanelModel]:
        """(position, model, source) for each panel — only for the trial's own rater, only once submitted."""
        with self._read() as s:
            t = s.get(Trial, trial_id)
            if t is None or t.rater_pk != rater_pk:
                raise AccessDenied("This trial is not yours.")
            if t.submitted_at is None:
                raise AccessDenied("Models are revealed only after this trial's ratings are stored.")
            images = {i.id: i for i in s.scalars(select(Image).where(Image.id.in_(list(t.shown_order))))}
            return [PanelModel(p + 1, images[i].model, images[i].source) for p, i in enumerate(t.shown_order)]

    # ------------------------------------------------------------------ read-outs
    def count_ratings(self) -> int:
        with self._read() as s:
            return s.scalar(select(func.count()).select_from(Rating)) or 0

    def ratings_frame(
        self, study_key: str | None = None, rater_groups: Mapping[str, Mapping[str, str]] | None = None
    ) -> pd.DataFrame:
        """The tidy ratings frame (docs/CONTRACTS.md), one row per answer, plus ``rater_name``.

        ``rater_groups``: study key -> {name_key(rater name): group} (``study.rater_group_map``), which fills
        ``rater_group``; the study file is where groups live, the database does not hold them."""
        groups_of = rater_groups or {}
        q = (
            select(
                Study.study_id,
                Study.version,
                Rater.public_id,
                Rater.name,
                Trial.item_key,
                Trial.id,
                Rating.image_id,
                Image.model,
                Image.source,
                Image.prompt_id,
                Trial.prompt_id,
                Trial.prompt,
                Image.prompt,
                Image.modality,
                Image.seed,
                Rating.position,
                Trial.shown_order,
                Trial.order_index,
                Rating.question,
                Rating.value,
                Rating.choices,
                Rating.cant_judge,
                Rating.comment,
                Trial.shown_at,
                Rating.answered_at,
                Rating.seconds,
                Trial.is_repeat,
                Image.params,
                Rating.active_seconds,
                Trial.practice,
            )
            .join(Trial, Trial.id == Rating.trial_id)
            .join(Rater, Rater.id == Rating.rater_pk)
            .join(Image, Image.id == Rating.image_id)
            .outerjoin(Study, Study.id == Trial.study_pk)
            .order_by(Rating.id)
        )
        q = _of_study(q, study_key)
        with self._read() as s:
            rows = s.execute(q).all()
        records = []
        for r in rows:
            (sid, ver, pub, name, item, tid, iid, model, source, pid, tpid, tprompt, iprompt, modality, seed, pos, order,
             oidx, question, value, choices, cj, comment, shown, answered, secs, rep, params, active, practice) = r
            params = params or {}
            study = f"{sid}@v{ver}" if sid is not None else LIVE_STUDY
            records.append(
                {
                    "study": study,
                    "rater_id": pub,
                    "item_id": item,
                    "trial_id": tid,
                    "image_id": iid,
                    "model": model,
                    "source": source,
                    # the trial's prompt, not the image's: a real control is judged against the trial's prompt (its
                    # caption in a study), and an image reused from the generation cache may have been made for
                    # another prompt id (another study, a practice item) with the same text
                    "prompt_id": tpid or pid or "",
                    "prompt": tprompt or iprompt,
                    "modality": modality,
                    "seed": seed,
                    "position": pos,
                    "n_panels": len(order),
                    "order_index": oidx,
                    "question": question,
                    "value": float(value) if value is not None and not cj else float("nan"),
                    "choices": choices or "",
                    "cant_judge": bool(cj),
                    "comment": comment or "",
                    "shown_at": _aware(shown),
                    "answered_at": _aware(answered),
                    "seconds": float(secs),
                    "is_repeat": bool(rep),
                    # catch images carry their kind in params (reader.make_catch_images); rater_group is filled
                    # from the study file by :func:`with_rater_groups` (export), the database does not hold it
                    "catch": str(params.get("catch", "")) if isinstance(params, dict) else "",
                    "catch_kind": str(params.get("catch_kind", "")) if isinstance(params, dict) else "",
                    "rater_group": groups_of.get(study, {}).get(name_key(name), ""),
                    "active_seconds": float(active) if active is not None else float("nan"),
                    "practice": bool(practice),
                    "rater_name": name,
                }
            )
        return tidy_frame(records)


    def marks_frame(self, study_key: str | None = None, history: bool = False) -> pd.DataFrame:
        """Marked points (``p2p_app.tidy.MARK_COLUMNS``), one row per point, unblinded (model, source); only the
        current marks unless ``history`` (then replaced ones too, with ``replaced_at``). ``study_key`` as in
        :meth:`ratings_frame`."""
        prompt_id = func.coalesce(func.nullif(Trial.prompt_id, ""), Image.prompt_id)  # the trial's, as ratings_frame
        q = (
            select(Study.study_id, Study.version, Rater.public_id, Trial.id, Trial.item_key, Mark.image_id,
                   Image.model, Image.source, prompt_id, Mark.position, Mark.x, Mark.y, Trial.practice,
                   Mark.marked_at, Mark.replaced_at)
            .join(Trial, Trial.id == Mark.trial_id)
            .join(Rater, Rater.id == Mark.rater_pk)
            .join(Image, Image.id == Mark.image_id)
            .outerjoin(Study, Study.id == Trial.study_pk)
            .order_by(Mark.id)
        )
        if not history:
            q = q.where(Mark.replaced_at.is_(None))
        q = _of_study(q, study_key)
        with self._read() as s:
            rows = s.execute(q).all()
        records = [
            {"study": f"{sid}@v{ver}" if sid is not None else LIVE_STUDY, "rater_id": pub, "trial_id": tid,
             "item_id": item, "image_id": iid, "model": model, "source": source, "prompt_id": pid or "",
             "position": pos, "x": float(x), "y": float(y), "practice": bool(practice),
             "marked_at": _aware(marked), "replaced_at": _aware(replaced)}
            for sid, ver, pub, tid, item, iid, model, source, pid, pos, x, y, practice, marked, replaced in rows
        ]
        return marks_frame(records)


def _of_study(q, study_key: str | None):
    """``q`` (joined to Trial and, outer, to Study) narrowed to ``study_key``: ``"live"`` the live arena, ``"id@vN"``
    one version, a bare id every version of that study, None everything."""
    if study_key == LIVE_STUDY:
        return q.where(Trial.study_pk.is_(None))
    if study_key is None:
        return q
    study_id, _, version = study_key.partition("@v")
    q = q.where(Study.study_id == study_id)
    if version:
        q = q.where(Study.version == int(version)) if version.isdigit() else q.where(false())
    return q


def marks_frame(records: list[dict]) -> pd.DataFrame:
    """Records → the marks frame with :data:`p2p_app.tidy.MARK_DTYPES` (an empty frame keeps its columns)."""
    return pd.DataFrame.from_records(records, columns=list(MARK_COLUMNS)).astype(dict(MARK_DTYPES))


def tidy_frame(records: list[dict]) -> pd.DataFrame:
    """Records → the tidy frame with the documented dtypes (an empty frame keeps its columns), plus rater_name."""
    df = pd.DataFrame.from_records(records, columns=[*TIDY_COLUMNS, "rater_name"])
    df = df.reindex(columns=[*TIDY_COLUMNS, "rater_name"])  # a record without a later column: its default below
    df = df.fillna(dict(TIDY_DEFAULTS)) if len(df) else df  # issue 14 columns not stored yet: their defaults
    df = df.astype({**TIDY_DTYPES, "rater_name": "str"})
    return df
