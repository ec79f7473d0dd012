"""Database migrations (Alembic): every database is brought to the current schema when it is opened.

Revision ``0001`` is the schema of release 53ee3b6, the last one made without migrations; a database made by
that release has tables but no ``alembic_version`` and is stamped ``0001`` before upgrading. A new database runs
every revision from the start, so there is one way to a schema. To change the schema: edit the models in
``p2p_app/storage/schema.py``, then write a revision in ``versions/`` (``alembic revision --autogenerate`` against a
database at head, with this folder as ``script_location``) and check it with ``tests/test_migrations.py``.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection, Engine

HERE = Path(__file__).resolve().parent
PRE_MIGRATION_RELEASE = "0001"  # the schema of release 53ee3b6, made before migrations existed
UPGRADE_LOCK = 0x7032_7000  # PostgreSQL advisory lock key: one app server at a time checks and upgrades the schema


class NewerSchema(RuntimeError):
    """The database was made or upgraded by a newer release of the app: this code does not know its schema."""

    def __init__(self, revision: str, head: str):
        self.revision, self.head = revision, head
        super().__init__(
            f"The database's schema is revision {revision!r}, which this version of the app does not know (its newest "
            f"is {head!r}): a newer release of the app has upgraded this database. Nothing was changed. Install the "
            "release the other app servers run (pip install -U ...) before starting this one; an older release must "
            "not write to a newer schema."
        )


def alembic_config(connection: Connection | None = None, data_dir: Path | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    if connection is not None:
        cfg.attributes["connection"] = connection
    if data_dir is not None:  # revision 0004 makes image paths under it relative
        cfg.attributes["data_dir"] = str(data_dir)
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def upgrade(engine: Engine, data_dir: Path | None = None) -> None:
    """Bring the database behind ``engine`` to the newest schema, in one transaction (on SQLite it begins
    IMMEDIATE, on PostgreSQL it takes an advisory lock, so two app servers opening one new database do not both
    migrate it). ``data_dir``: the data folder the database's image paths are relative to (revision 0004). A
    database whose revision this code does not know (made by a newer release) is :class:`NewerSchema`, and
    nothing is changed."""
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        if sqlite:  # SQLite rebuilds a table to alter it; foreign keys must be off, and only outside a transaction
            connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")
        try:
            with connection.begin():
                if engine.dialect.name == "postgresql":
                    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({UPGRADE_LOCK})")
                tables = set(inspect(connection).get_table_names())
                cfg = alembic_config(connection, data_dir)
                _refuse_unknown_revision(connection, cfg)
                if "alembic_version" not in tables and "raters" in tables:
                    command.stamp(cfg, PRE_MIGRATION_RELEASE)
                command.upgrade(cfg, "head")
                if sqlite and connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall():
                    raise RuntimeError("the schema upgrade broke a foreign key; nothing was changed")
        finally:
            if sqlite:
                connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=ON")


def _refuse_unknown_revision(connection: Connection, cfg: Config) -> None:
    from alembic.runtime.migration import MigrationContext

    scripts = ScriptDirectory.from_config(cfg)
    for revision in MigrationContext.configure(connection).get_current_heads():
        try:
            known = scripts.get_revision(revision) is not None
        except Exception:  # noqa: BLE001 - alembic raises for a revision id it has no script for
            known = False
        if not known:
            raise NewerSchema(revision, scripts.get_current_head())


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
