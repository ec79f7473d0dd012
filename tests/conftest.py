"""Shared fixtures: the demo config's tiny models are built and loaded once per test session; each test
gets its own SQLite database and image folder through the same constructors a user's app goes through."""

from __future__ import annotations

import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """Where the demo's tiny models are built once per test session (P2P_MODEL_DIR for CLI runs)."""
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def demo_registry(model_dir):
    """The demo config's six tiny models (three families × two modalities), loaded once."""
    from generators import Registry
    from p2p_app.config import load_config

    config = load_config(data_dir=str(model_dir), model_dir=str(model_dir))
    registry = Registry(config.models, cache_dir=config.model_cache_dir)
    registry.load_all()
    yield registry
    registry.close()


def make_app(data_dir: Path, registry, **overrides):
    """The app through the factory users run (``startup.create``), on a fresh SQLite database in ``data_dir``,
    sharing the session's loaded tiny models; ``overrides`` are settings."""
    from p2p_app.startup import create

    return create(data_dir=data_dir, registry=registry, **overrides)


@pytest.fixture()
def app(tmp_path, demo_registry):
    a = make_app(tmp_path / "data", demo_registry)
    yield a
    a.storage.close()


def invited_study_app(tmp_path: Path, registry, **overrides):
    """An app whose only study is the small test study (tests/test_reader_study.py; ``overrides`` go to its
    ``small_study``), prepared and frozen, with one invited rater "ann". Returns (app, study, ann's token)."""
    from test_reader_study import small_study

    from p2p_app import reader
    from p2p_app.study import load_study, study_key

    app = make_app(tmp_path / "data", registry)
    st = load_study(small_study(tmp_path / "mini", **overrides), known_models=[m.name for m in app.config.models])
    app.studies = {study_key(st): st}
    assert reader.prepare_study(app, st).frozen
    _, token = reader.add_rater(app, st, "ann")
    return app, st, token


@contextmanager
def running_study(tmp_path: Path, registry, **overrides):
    """:func:`invited_study_app` served on 127.0.0.1: yields (app, study, ann's token, the server's URL)."""
    app, st, token = invited_study_app(tmp_path, registry, **overrides)
    try:
        with running_server(app) as url:
            yield app, st, token, url
    finally:
        app.storage.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(asgi):
    """Any ASGI app on 127.0.0.1 (uvicorn in a thread); yields its base URL."""
    import uvicorn

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@contextmanager
def running_server(app):
    """The real server (rater app at /, admin at /admin) for ``app`` on 127.0.0.1; yields its base URL."""
    from p2p_app.ui import create_server

    with serving(create_server(app)) as url:
        yield url


# ---------------------------------------------------------------------------------------- PostgreSQL
# The storage and concurrency tests also run on PostgreSQL, through the same SQLAlchemy code: against the server
# named by P2P_TEST_DATABASE_URL (postgresql+psycopg://user:pw@host:port/db; each test gets its own database on
# it), or else a throwaway cluster started here in a temp dir when Debian's pg_ctl/initdb are on the machine.
# Without either the PostgreSQL variants are skipped, saying why.


@contextmanager
def pg_cluster_or_skip():
    """A throwaway PostgreSQL cluster (``deploy_harness.pg_cluster``) for the block, or a skip saying why not."""
    from deploy_harness import Unavailable, pg_cluster

    try:
        cluster = pg_cluster()
        server = cluster.__enter__()
    except Unavailable as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        cluster.__exit__(None, None, None)


@pytest.fixture(scope="session")
def pg_server():
    """Base URL of a PostgreSQL server (no database part), or a skip with the reason."""
    given = os.environ.get("P2P_TEST_DATABASE_URL")
    if given:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            pytest.skip("psycopg (v3) is not installed: pip install -e '.[test]'")
        yield given.rsplit("/", 1)[0] + "/"
        return
    with pg_cluster_or_skip() as server:
        yield server.url


@pytest.fixture()
def pg_url(pg_server):
    """A fresh, empty PostgreSQL database for one test; dropped afterwards."""
    import secrets

    import psycopg

    name = f"p2p_test_{secrets.token_hex(4)}"
    admin_url = pg_server.replace("postgresql+psycopg://", "postgresql://") + "postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield pg_server + name
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """The database URL a storage test runs against: a SQLite file, then PostgreSQL (skipped when absent)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db.sqlite'}"
    return request.getfixturevalue("pg_url")


def exported_long(study_id: str, data_dir: Path, out: Path):
    """``p2p export OUT --study STUDY`` read back (empty cells as "")."""
    import pandas as pd
    from click.testing import CliRunner

    from p2p_app.cli import main

    res = CliRunner().invoke(main, ["export", str(out), "--study", study_id, "--data-dir", str(data_dir)])
    assert res.exit_code == 0, res.output
    return pd.read_csv(out, keep_default_na=False)
