"""Several app servers, one database (docs/deploy.md): the nginx deployment of deploy/nginx.conf end to end (a
small benchmarks/bench_multiserver.py run, with a PostgreSQL restart, a non-sticky proxy and a kill -9), and the
faults it must survive one by one: a database of a newer schema, concurrent start-ups and sign-ins on one database,
a session that is not on this server, a database that is unreachable for a moment."""

from __future__ import annotations

import logging
import sqlite3
import threading

import httpx
import pytest

from conftest import running_server
from deploy_harness import Unavailable, nginx_binary, pg_binaries


def test_an_app_server_refuses_a_database_of_a_newer_schema_and_changes_nothing(tmp_path):
    from click.testing import CliRunner

    from p2p_app import migrations
    from p2p_app.cli import main
    from p2p_app.storage import Storage

    db = tmp_path / "p2p.sqlite"
    Storage(f"sqlite:///{db}", tmp_path / "images").close()
    with sqlite3.connect(db) as con:  # what a newer release leaves behind after its upgrade
        con.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    before = db.read_bytes()
    with pytest.raises(migrations.NewerSchema) as info:
        Storage(f"sqlite:///{db}", tmp_path / "images")
    assert "9999_from_the_future" in str(info.value) and migrations.head_revision() in str(info.value)
    assert "Nothing was changed" in str(info.value)
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [("9999_from_the_future",)]
    result = CliRunner().invoke(main, ["serve", "--data-dir", str(tmp_path), "--database-url", f"sqlite:///{db}",
                                       "--port", "1"])  # fmt: skip
    assert result.exit_code == 1 and "does not know" in result.output and "Traceback" not in result.output
    assert db.read_bytes() == before


def test_app_servers_starting_together_on_a_new_postgresql_database_migrate_it_once(pg_url, tmp_path):
    from p2p_app import migrations
    from p2p_app.storage import Storage

    barrier = threading.Barrier(4)
    opened, failed = [], []

    def start() -> None:
        barrier.wait()
        try:
            opened.append(Storage(pg_url, tmp_path / "images"))
        except Exception as exc:  # noqa: BLE001 - reported below
            failed.append(repr(exc)[:300])

    threads = [threading.Thread(target=start, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "the concurrent upgrades hang (the schema is locked)"
    assert failed == [] and len(opened) == 4
    assert migrations.current_revision(opened[0].engine) == migrations.head_revision()
    for s in opened:
        s.close()


def test_concurrent_joiners_of_an_open_study_get_distinct_join_indices(db_url, tmp_path):
    """Two app servers (two Storage objects) signing raters in at once: the join index, hence the slot, is
    counted in the insert's transaction, so it is never taken twice (before, eight joiners shared ~3 indices)."""
    from p2p_app.storage import Storage

    stores = [Storage(db_url, tmp_path / "images") for _ in range(2)]
    barrier = threading.Barrier(8)
    slots = []

    def join(i: int) -> None:
        barrier.wait()
        slots.append(stores[i % 2].add_rater(f"r{i}", "open@v1", with_token=True, join_slot=lambda n: n).slot)

    threads = [threading.Thread(target=join, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(slots) == list(range(8))
    for s in stores:
        s.close()


def test_an_event_stream_for_a_session_this_server_never_saw_gets_a_clear_message(app, caplog):
    from p2p_app.ui.guard import SESSION_ELSEWHERE

    with running_server(app) as url, caplog.at_level(logging.WARNING, logger="p2p_app.ui.guard"):
        r = httpx.get(f"{url}/gradio_api/queue/data", params={"session_hash": "joined-elsewhere"}, timeout=30)
        assert r.status_code == 200 and '"unexpected_error"' in r.text and SESSION_ELSEWHERE in r.text
        assert "session_not_found" not in r.text  # Gradio's page would say "Connection lost... reconnecting"
        assert any("not sticky" in rec.getMessage() for rec in caplog.records)


def test_a_submit_without_a_session_on_this_server_says_sign_in_again_and_logs_why(tmp_path, demo_registry, caplog):
    from conftest import invited_study_app

    from p2p_app.service import NOT_SIGNED_IN, SESSION_NOT_HERE, UserError

    app, st, token = invited_study_app(tmp_path, demo_registry)
    try:
        session = app.study_sign_in(st, token=token)
        shown = app.next_trial(st, session)
        with caplog.at_level(logging.WARNING, logger="p2p_app.service"), pytest.raises(UserError) as info:
            app.submit_trial(st, None, None, {}, shown=str(shown.trial_id))  # the page shows a trial; no state here
        assert str(info.value) == SESSION_NOT_HERE
        assert any("not sticky" in rec.getMessage() for rec in caplog.records)
        with pytest.raises(UserError) as info:  # no trial on the page: plain "sign in"
            app.submit_trial(st, None, None, {}, shown="")
        assert str(info.value) == NOT_SIGNED_IN
        with pytest.raises(UserError) as info:
            app.submit(None, None, {}, shown=str(shown.trial_id))  # the live arena likewise
        assert str(info.value) == SESSION_NOT_HERE
        assert app.storage.trial(shown.trial_id).submitted_at is None  # nothing written
    finally:
        app.storage.close()


def test_a_postgresql_restart_gives_a_clear_try_again_and_the_next_request_works(tmp_path):
    import gradio as gr

    from conftest import pg_cluster_or_skip
    from p2p_app.service import DATABASE_UNREACHABLE, database_unreachable
    from p2p_app.storage import Storage
    from p2p_app.ui.common import guarded

    with pg_cluster_or_skip() as pg:
        storage = Storage(pg.create_database("restart"), tmp_path / "images")
        storage.add_rater("before", "live")
        assert len(storage.raters()) == 1  # the pool now holds a connection
        pg.stop("fast")
        with pytest.raises(Exception) as info:
            storage.raters()
        assert database_unreachable(info.value)
        box = gr.Markdown()
        with pytest.warns(UserWarning, match="cannot be reached"):  # gr.Warning: the pop-up
            out = guarded(box)(storage.raters)()  # what a screen's handler returns: a message, no trace
        assert DATABASE_UNREACHABLE in out[box].value
        pg.start()
        assert [r.name for r in storage.raters()] == ["before"]  # the first request after the restart works
        storage.close()


@pytest.mark.skipif(nginx_binary() is None, reason="no nginx: apt-get install nginx (the multi-server test needs it)")
@pytest.mark.skipif(pg_binaries() is None, reason="no PostgreSQL: apt-get install postgresql (pg_ctl, initdb)")
def test_two_app_servers_behind_nginx_survive_a_database_restart_and_a_kill(model_dir, tmp_path):
    """benchmarks/bench_multiserver.py, small: 2 `p2p serve` processes behind deploy/nginx.conf on one
    PostgreSQL, 8 raters per phase. Sticky: nothing lost or duplicated, no "session not found"; PostgreSQL
    restarted mid-load: raters told to try again, nothing lost; the proxy without its hash line: every rater
    told clearly, the log says "not sticky"; kill -9 of one server: its raters reload, resume at their first
    unanswered item and finish, the other server's raters notice nothing."""
    import sys

    from deploy_harness import ROOT

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_multiserver import run

    try:
        figs = run(servers=2, n_raters=8, prompts=4, slots=4, work=tmp_path / "work",
                   phases=("multi", "pg", "nonsticky", "kill"), models=model_dir)  # fmt: skip
    except Unavailable as exc:
        pytest.skip(str(exc))
    failed = [name for name, ok in figs["checks"].items() if not ok]
    assert failed == [], (failed, figs)
    assert figs["kill"]["raters_on_killed_server"] > 0 and figs["pg"]["retries"] > 0
