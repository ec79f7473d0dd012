"""How the app is built and started: the lazy registry, read-only commands that need neither torch nor a new
database, `p2p serve` / `app.py` listening before the models load, and presenter mode (a study pack served
with torch, diffusers and transformers made impossible to import)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from conftest import free_port, invited_study_app

from p2p_app.cli import main

ROOT = Path(__file__).resolve().parent.parent
READ_ONLY = (
    ("export", "{tmp}/out.csv"),
    ("report", "mini", "--out", "{tmp}/r.html"),
    ("raters", "list"),
    ("study", "status", "mini"),
    ("study", "verify", "mini"),
    ("study", "pack", "mini", "{tmp}/pack"),
)


def no_torch_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment whose Python cannot import the generation stack at all (tests/no_generation_stack), so
    anything that needs it fails loudly; P2P_* variables of the test run are dropped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2P_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "no_generation_stack"), str(ROOT), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def run_py(code: str, env: dict[str, str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def test_the_blocker_really_blocks(tmp_path):
    for name in ("torch", "diffusers", "transformers"):
        r = run_py(f"import {name}", no_torch_env(tmp_path), tmp_path)
        assert r.returncode != 0 and "is blocked" in r.stderr, r.stderr


def test_creating_the_app_builds_and_imports_nothing(tmp_path):
    """The factory makes storage, studies and a registry without building or loading any model."""
    r = run_py(
        f"""
        import sys
        from p2p_app.startup import create
        app = create(data_dir={str(tmp_path / 'data')!r})
        assert len(app.registry) == 6 and len(app.studies) == 3  # studies/demo.toml serves three
        assert not any(app.registry.is_made(n) for n in app.registry.names())
        print('ok')
        """,
        no_torch_env(tmp_path),
        tmp_path,
    )
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr
    assert not (tmp_path / "data" / "models").exists()  # no tiny model built


def test_a_model_is_made_on_first_use(tmp_path, model_dir):
    from generators import Registry
    from p2p_app.config import load_config

    registry = Registry(load_config().models, cache_dir=tmp_path / "fresh-models")
    assert not (tmp_path / "fresh-models").exists()
    assert not registry.is_made("colon-msdm-tiny")
    gen = registry.get("colon-msdm-tiny")
    assert registry.is_made("colon-msdm-tiny") and registry.get("colon-msdm-tiny") is gen
    assert not registry.is_made("rad-msdm-tiny")
    assert (tmp_path / "fresh-models" / "tiny").is_dir()
    registry.close()


def test_read_only_commands_refuse_a_folder_with_no_database(tmp_path):
    data = tmp_path / "nothing-here"
    runner = CliRunner()
    for args in READ_ONLY:
        args = [a.format(tmp=tmp_path) for a in args]
        r = runner.invoke(main, [*args, "--data-dir", str(data)])
        assert r.exit_code == 1, (args, r.output)
        assert f"no database in {data}" in r.output and "--data-dir" in r.output, (args, r.output)
        assert "Traceback" not in r.output
    assert not data.exists()  # nothing was created
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "pack").exists()


def test_read_only_commands_never_import_the_generation_stack(tmp_path, demo_registry):
    app, st, _token = invited_study_app(tmp_path, demo_registry)
    data = app.config.data_dir
    app.close = lambda: None  # the shared registry stays open for the other tests
    app.storage.close()
    config = tmp_path / "mini.toml"
    demo = (ROOT / "studies" / "demo.toml").read_text()
    studies_line = next(line for line in demo.splitlines() if line.startswith("studies = "))
    config.write_text(demo.replace(studies_line, f"studies = [{json.dumps(str(st.source_path))}]"))
    options = ["--config", str(config), "--data-dir", str(data)]
    commands = [[*(a.format(tmp=tmp_path) for a in args), *options] for args in READ_ONLY] + [["settings"]]
    r = run_py(
        f"""
        import json, sys
        from click.testing import CliRunner
        from p2p_app.cli import main
        out = []
        for args in {commands!r}:
            res = CliRunner().invoke(main, args)
            out.append([args, res.exit_code, res.output[-300:] + repr(res.exception)])
        print(json.dumps(out))
        """,
        no_torch_env(tmp_path),
        tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    for args, code, output in json.loads(r.stdout.strip().splitlines()[-1]):
        assert code == 0, (args, output)
    assert (tmp_path / "pack" / "pack.json").is_file() and (tmp_path / "r.html").is_file()


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the server exited ({proc.returncode}) before {what}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return None


@pytest.mark.e2e
def test_serve_answers_before_the_models_load_and_shows_preparation(tmp_path):
    """On a fresh data dir (no tiny model built yet) the page answers first; preparation follows, in the log."""
    port = free_port()
    log_path = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2P_")}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "p2p_app.cli", "serve", "--port", str(port), "--data-dir", str(tmp_path / "d")],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
        )
    try:
        page = _wait_for(lambda: (r := _get(f"http://127.0.0.1:{port}/")) is not None and r.status_code == 200,
                         60, "the page to answer", proc)
        assert page
        assert "is ready" not in log_path.read_text()  # answered before any study was prepared
        _wait_for(lambda: "Serving on" in log_path.read_text(), 30, "the 'Serving on' line", proc)
        _wait_for(lambda: "colonoscopy_pilot@v1: " in log_path.read_text() and " / 72 images" in log_path.read_text(),
                  180, "preparation progress in the log", proc)
        text = log_path.read_text()
        assert text.index("Serving on") < text.index("Loading models") < text.index("Preparing study")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_taken_port_is_refused_at_once(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        t0 = time.monotonic()
        r = CliRunner().invoke(main, ["serve", "--port", str(port), "--data-dir", str(tmp_path / "d")])
        assert r.exit_code == 1 and f"cannot listen on 127.0.0.1:{port}" in r.output, r.output
        assert "Loading models" not in r.output and "Serving on" not in r.output
        assert time.monotonic() - t0 < 30


def _pack(tmp_path: Path, registry) -> tuple[Path, object]:
    app, st, _token = invited_study_app(tmp_path, registry)
    from p2p_app.pack import pack_study

    report = pack_study(app, st, tmp_path / "pack")
    assert report.n_images == len(st.image_slots())
    app.storage.close()
    return tmp_path / "pack", st


@pytest.mark.e2e
def test_app_py_serves_a_packed_study_with_no_torch(tmp_path, demo_registry):
    """`python app.py` (the Spaces entry point) on a fresh folder, with P2P_CONFIG naming a pack's config and the
    generation stack impossible to import: it listens where GRADIO_SERVER_* say and serves a ready study."""
    pack, st = _pack(tmp_path, demo_registry)
    site = tmp_path / "site"
    site.mkdir()
    port = free_port()
    env = no_torch_env(tmp_path, P2P_CONFIG=str(pack / "config.toml"), GRADIO_SERVER_PORT=str(port),
                       GRADIO_SERVER_NAME="127.0.0.1", P2P_DATA_DIR=str(site / "data"))
    log_path = tmp_path / "app.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=site, env=env, stdout=log,
                                stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: (r := _get(f"http://127.0.0.1:{port}/config")) is not None and r.status_code == 200,
                  60, "the presenter app to answer", proc)
        config = httpx.get(f"http://127.0.0.1:{port}/config", timeout=10).json()
        assert "Mini study" in json.dumps(config)
        from browser_client import BrowserSession, study

        added = CliRunner().invoke(main, ["raters", "add", "ann", "--study", "mini", "--config",
                                          str(pack / "config.toml"), "--data-dir", str(site / "data")])
        assert added.exit_code == 0, added.output
        token = added.output.split("token=", 1)[1].split()[0]
        browser = BrowserSession(f"http://127.0.0.1:{port}", query=f"token={token}")
        out = json.dumps(browser.trigger(browser.by_id(study(0).signin)))
        assert "not ready" not in out and "being prepared" not in out
        assert "Signed in as" in out and "Prompt:" in out
        browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "Presenter mode" in log_path.read_text()


def test_presenter_mode_rates_and_runs_the_arena_without_torch(tmp_path, demo_registry):
    pack, st = _pack(tmp_path, demo_registry)
    r = run_py(
        f"""
        import sys
        from p2p_app import reader
        from p2p_app.pack import install_pack
        from p2p_app.startup import create
        app = create({str(pack / 'config.toml')!r}, data_dir={str(tmp_path / 'site')!r})
        assert app.presenter
        key = install_pack(app, app.config.pack)
        st = app.studies[key]
        _, token = reader.add_rater(app, st, "ann")
        rater = app.study_sign_in(st, token=token)
        shown = app.next_trial(st, rater)
        answers = {{p.position: {{"realism": 4, "alignment": 3}} for p in shown.panels}}
        app.submit_trial(st, rater, shown.trial_id, answers)
        assert app.next_trial(st, rater).trial_id != shown.trial_id
        examples = app.arena_examples("colonoscopy")
        assert len(examples) == 3, examples
        me = app.sign_in("visitor")
        live = app.live_generate(me, "colonoscopy", examples[0])
        assert len(live.panels) == 2
        try:
            app.live_generate(me, "colonoscopy", "a prompt nobody pre-generated")
        except Exception as exc:
            assert "pick one of the listed prompts" in str(exc)
        else:
            raise AssertionError("an unknown prompt was accepted in presenter mode")
        result = app.submit(me, live.trial_id, {{p.position: {{"realism": 2, "alignment": 2}} for p in live.panels}})
        assert result.status == "stored" and len(result.reveal) == 2
        assert install_pack(app, app.config.pack) == key  # a second start only checks
        print("ok", app.storage.count_ratings())
        """,
        no_torch_env(tmp_path),
        tmp_path,
    )
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stderr[-3000:]


def test_a_changed_pack_is_refused_whole(tmp_path, demo_registry):
    from p2p_app.pack import PackError, install_pack, read_manifest
    from p2p_app.startup import create

    pack, st = _pack(tmp_path, demo_registry)
    victim = pack / "images" / f"{read_manifest(pack)['images'][-1]['id']}.png"
    data = bytearray(victim.read_bytes())
    data[-20] ^= 0xFF
    victim.write_bytes(bytes(data))
    app = create(pack / "config.toml", data_dir=tmp_path / "site", registry=demo_registry)
    with pytest.raises(PackError, match="changed since the pack was made"):
        install_pack(app, app.config.pack)
    assert app.storage.count_images() == 0 and app.storage.study(st.id, st.version) is None
    app.storage.close()


def test_packing_refuses_an_unfrozen_study_and_a_used_folder(tmp_path, demo_registry):
    from conftest import make_app

    from p2p_app import reader
    from p2p_app.pack import PackError, pack_study
    from p2p_app.study import load_study
    from test_reader_study import small_study

    app = make_app(tmp_path / "data", demo_registry)
    st = load_study(small_study(tmp_path / "mini"), known_models=[m.name for m in app.config.models])
    with pytest.raises(PackError, match="not generated and frozen yet"):
        pack_study(app, st, tmp_path / "p")
    reader.prepare_study(app, st)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    with pytest.raises(PackError, match="must be new or empty"):
        pack_study(app, st, tmp_path / "used")
    assert not (tmp_path / "p").exists()
    app.storage.close()


def test_spaces_storage_defaults_and_warning(tmp_path, monkeypatch):
    from p2p_app import config as config_module
    from p2p_app.config import load_config

    monkeypatch.delenv("P2P_DATA_DIR", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert not load_config(data_dir=str(tmp_path)).ephemeral_storage  # not on a Space
    monkeypatch.setenv("SPACE_ID", "someone/p2p")
    assert load_config(data_dir=str(tmp_path)).ephemeral_storage  # a Space, data on its own disk
    persistent = tmp_path / "data-disk"
    persistent.mkdir()
    monkeypatch.setattr(config_module, "SPACES_PERSISTENT_DIR", persistent)
    cfg = load_config()
    assert cfg.data_dir == persistent / "p2p_data" and not cfg.ephemeral_storage
    assert not load_config(database_url="postgresql+psycopg://u@h/db").ephemeral_storage


def test_the_admin_page_warns_when_the_database_is_on_ephemeral_disk(tmp_path, monkeypatch, demo_registry):
    from conftest import make_app

    from p2p_app.ui import build_admin_app
    from p2p_app.ui.admin import EPHEMERAL_WARNING

    def admin_text(app) -> str:
        return json.dumps(build_admin_app(app).get_config_file())

    monkeypatch.delenv("SPACE_ID", raising=False)
    app = make_app(tmp_path / "local", demo_registry)
    assert "ephemeral disk" not in admin_text(app)
    app.storage.close()
    monkeypatch.setenv("SPACE_ID", "someone/p2p")  # a Space without persistent storage
    app = make_app(tmp_path / "space", demo_registry)
    assert app.config.ephemeral_storage and "ephemeral disk" in admin_text(app)
    assert EPHEMERAL_WARNING.split("**")[1] in admin_text(app)
    app.storage.close()


def test_a_second_serve_on_one_sqlite_database_is_refused_and_a_killed_one_leaves_no_lock(tmp_path):
    """The first server holds an OS lock on the database (flock, with its process id in the lock file); a second
    `p2p serve` on the same data dir is refused at once, naming it. A server killed with SIGKILL frees the lock."""
    import signal

    from p2p_app.startup import lock_data_dir

    data = tmp_path / "d"
    url = f"sqlite:///{(data / 'p2p.sqlite').resolve()}"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from p2p_app.startup import lock_data_dir
        lock = lock_data_dir({url!r})
        print("locked", flush=True)
        time.sleep(600)
        """)], env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
        stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = CliRunner().invoke(main, ["serve", "--port", str(free_port()), "--data-dir", str(data)])
        assert r.exit_code == 1 and f"another p2p serve (process {holder.pid})" in r.output, r.output
        assert "Serving on" not in r.output and "Traceback" not in r.output
        with pytest.raises(OSError, match="already serving"):
            lock_data_dir(url)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    lock = lock_data_dir(url)  # the stale lock file is still there, its lock died with its process
    assert lock is not None and lock.name.endswith("p2p.sqlite.serve.lock")
    lock.close()
    assert lock_data_dir("postgresql+psycopg://u:p@h/db") is None  # a database server needs no file lock


def test_a_study_edited_after_freezing_is_named_in_the_log_and_on_the_admin_page(tmp_path, demo_registry):
    from test_reader_study import small_study

    from p2p_app.startup import plan_preparation
    from p2p_app.study import load_study, study_key
    from p2p_app.ui import build_admin_app

    app, st, _ = invited_study_app(tmp_path, demo_registry)
    lines: list[str] = []
    plan_preparation(app, echo=lines.append)
    assert not any("edited" in line for line in lines)
    assert "was edited after it was frozen" not in json.dumps(build_admin_app(app).get_config_file())
    edited = load_study(small_study(tmp_path / "mini", seeds=[4]), known_models=[m.name for m in app.config.models])
    app.studies = {study_key(edited): edited}
    plan_preparation(app, echo=lines.append)
    (warning,) = [line for line in lines if "edited" in line]
    assert warning.startswith("WARNING: Study mini@v1 was edited after it was frozen") and "raters cannot" in warning
    assert "mini@v1 was edited after it was frozen" in json.dumps(build_admin_app(app).get_config_file())
    app.storage.close()


def test_the_admin_login_says_when_no_admin_password_is_set(tmp_path, demo_registry):
    from dataclasses import replace

    from conftest import make_app, running_server

    app = make_app(tmp_path / "d", demo_registry)
    for password, said in (("", True), ("s3cret-admin", False)):
        app.config = replace(app.config, admin_password=password)
        with running_server(app) as url:
            r = httpx.get(f"{url}/admin/config")  # what the login form shows above its fields
        assert r.status_code == 401
        assert ("P2P_ADMIN_PASSWORD is not set" in r.text or "No admin password is set" in r.text) is said
    app.storage.close()
