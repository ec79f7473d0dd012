"""The composition root: how the app is built (:func:`create`) and started (:func:`serve`).

Every way in goes through here: ``p2p serve``, ``app.py`` (Spaces), every other CLI command and the tests.
:func:`create` builds the config, the studies, the storage and the model registry and hands them to the
service (:class:`~p2p_app.service.P2PApp`); :func:`create_desk` puts the researcher's desk on it. Nothing heavy
happens (no model is built or loaded, torch is not imported). :func:`serve` binds its port first (a taken port
is reported before anything slow happens), answers at once, and then, in one background thread, loads the models
and prepares every study that is not ready yet (generate its images, import its real images, freeze it) under the
policy :func:`should_prepare` states. How far preparation has got is kept in
:class:`~p2p_app.readiness.Readiness` on the app; the study tab and the log show it
("being prepared: 37 / 114 images").
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable

from generators import Registry

from . import reader
from .config import load_config
from .desk import ResearchDesk
from .model_server import ModelService
from .service import P2PApp, StudyProgress, edited_study_note
from .storage import Storage
from .study import StudyDefinition, load_studies

log = logging.getLogger(__name__)


def create(
    config_path: str | Path | None = None,
    *,
    data_dir: str | Path | None = None,
    database_url: str | None = None,
    read_only: bool = False,
    registry: Registry | None = None,
    load_models: bool = False,
    **overrides: Any,
) -> P2PApp:
    """Build the app from a config file (default: the built-in demo with tiny models) and setting overrides.

    Studies are read and checked first (a bad study file stops here, before any database is touched). Models are
    made and loaded on first use (or now, with ``load_models``). ``read_only`` refuses a data folder with no
    database instead of creating one (:class:`~p2p_app.storage.MissingDatabase`). Tests pass the session's
    shared ``registry``.
    """
    config = load_config(
        config_path, data_dir=str(data_dir) if data_dir is not None else None, database_url=database_url, **overrides
    )
    studies = load_studies(config)
    storage = Storage(config.resolved_database_url, config.image_dir, must_exist=read_only, data_dir=config.data_dir)
    if registry is None:
        registry = Registry(config.models, cache_dir=config.model_cache_dir, token=config.model_token,
                            timeout=config.model_timeout)
    app = P2PApp(config=config, storage=storage, registry=registry, studies=studies)
    if load_models:
        registry.load_all()
    return app


def create_desk(config_path: str | Path | None = None, **kwargs: Any) -> ResearchDesk:
    """The researcher's desk (:class:`~p2p_app.desk.ResearchDesk`) over the app :func:`create` builds with the same
    arguments: what every researcher command of the CLI works through."""
    return ResearchDesk(create(config_path, **kwargs))


def create_model_service(
    config_path: str | Path | None = None,
    *,
    batching: str = "auto",
    registry: Registry | None = None,
    **overrides: Any,
) -> ModelService:
    """The generation service of ``p2p serve-models``: the config's models (no database, no studies) behind
    :class:`~p2p_app.model_server.ModelService`; nothing is loaded yet."""
    config = load_config(config_path, **overrides)
    if registry is None:
        registry = Registry(config.models, cache_dir=config.model_cache_dir)
    if not len(registry):
        raise ValueError(f"{config.source}: the config has no [[models]] to serve")
    return ModelService(registry, token=config.model_token, batching=batching)


def serve_models(
    service: ModelService, host: str = "127.0.0.1", port: int = 8000, echo: Callable[[str], None] = print
) -> None:
    """Listen on ``host:port`` with the generation API; the models load (and are checked for batching) in the
    background once the port answers (a request before that waits for its model)."""
    import uvicorn

    sock = bind(host, port)
    server = uvicorn.Server(uvicorn.Config(service.asgi(), log_level="warning"))

    def after_start() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        if server.started:
            n = len(service.registry)
            echo(f"Generation service on http://{host}:{port}/v1  ({n} model{'s' if n != 1 else ''}"
                 f"{', token required' if service.token else ''}); loading models…")
            from generators.registry import quiet_library_progress

            quiet_library_progress()
            service.load_all()
            batched = [n for n, q in service.queues().items() if q.batches]
            echo(f"Models ready{': ' + service.load_error if service.load_error else ''}. "
                 f"Batched: {', '.join(batched) or 'none'} (batching={service.batching}).")

    threading.Thread(target=after_start, name="p2p-models-startup", daemon=True).start()
    try:
        server.run(sockets=[sock])
    finally:
        service.close()


def should_prepare(app: P2PApp, study: StudyDefinition, prepare: bool | None) -> bool:
    """The start-up policy: prepare when asked to (``--prepare-studies``), never when told not to, and by
    default only studies whose models are all built-in tiny models (real checkpoints are generated on a GPU
    with ``p2p study generate``, not by a serving process)."""
    if prepare is not None:
        return prepare
    return all(app.registry.spec(m).is_tiny for m in study.models)


def unready_studies(app: P2PApp) -> list[tuple[str, StudyDefinition]]:
    out = []
    for key, st in app.studies.items():
        row = app.storage.study(st.id, st.version)
        if row is None or row.frozen_at is None:
            out.append((key, st))
    return out


def plan_preparation(
    app: P2PApp, prepare: bool | None = None, echo: Callable[[str], None] = log.info
) -> list[tuple[str, StudyDefinition]]:
    """The unready studies start-up will prepare (marked "waiting" at once, so a page opened in the first
    second already says so); the others are marked "not generated" and the log says how to generate them."""
    todo = []
    for key, st in unready_studies(app):
        if should_prepare(app, st, prepare):
            todo.append((key, st))
            app.readiness.set(key, StudyProgress("waiting"))
        else:
            app.readiness.set(key, StudyProgress("not generated"))
            echo(f"Study {key} is not generated yet: run `p2p study generate {st.id}`.")
    for key, st in app.studies.items():
        if app.edited_after_freezing(st):
            echo(f"WARNING: {edited_study_note(key, st.id)}")
    return todo


def prepare_in_background(
    app: P2PApp, todo: list[tuple[str, StudyDefinition]], echo: Callable[[str], None] = log.info
) -> None:
    """Load the models, then prepare each study of ``todo`` (from :func:`plan_preparation`); progress goes to
    ``app.readiness`` and to ``echo``. Never raises: a failure is logged and shown where the study would be."""
    if app.presenter or not len(app.registry):
        return
    echo("Loading models (tiny demo models are built on first run)…")
    try:
        from generators.registry import quiet_library_progress

        quiet_library_progress()
        app.registry.load_all()
    except Exception as exc:  # noqa: BLE001 - reported, the server keeps serving what it can
        app.readiness.models_error = str(exc)
        echo(f"Model loading failed: {exc}")
    for key, st in todo:
        total = sum(not s.is_real for s in st.image_slots())
        done = 0
        last_echo = 0.0
        app.readiness.set(key, StudyProgress("preparing", 0, total))
        echo(f"Preparing study {key}: {total} images…")

        def on_done(_job, _status, key=key, total=total) -> None:
            nonlocal done, last_echo
            done += 1
            app.readiness.set(key, StudyProgress("preparing", done, total))
            if time.monotonic() - last_echo > 5 or done == total:
                last_echo = time.monotonic()
                echo(f"  {key}: {done} / {total} images")

        try:
            report = reader.prepare_study(app, st, on_done=on_done, release_models=False)
        except Exception as exc:  # noqa: BLE001
            log.exception("preparing %s failed", key)
            app.readiness.set(key, StudyProgress("failed", done, total, str(exc)))
            echo(f"Study {key} could not be prepared: {exc}")
            continue
        if report.frozen:
            app.readiness.set(key, StudyProgress("ready", total, total))
            echo(f"Study {key} is ready: made {report.made}, reused {report.reused} from the generation cache, "
                 f"real imported {report.real_imported}, frozen.")
        else:
            message = f"{len(report.failures)} image(s) failed"
            app.readiness.set(key, StudyProgress("failed", done, total, message))
            echo(f"Study {key} is not frozen: {message}; run `p2p study generate {st.id}` to retry.")


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything slow happens; a taken port is a clear error at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (is another server using the port? "
                      "choose one with --port)") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def lock_data_dir(database_url: str):
    """Hold the SQLite database of ``database_url`` for this serving process: an exclusive ``flock`` on
    ``<database>.serve.lock`` (which holds this process's id), kept for the process's lifetime. A second ``p2p
    serve`` on the same database is refused with an ``OSError`` naming the first one's id. The operating system
    releases the lock when its process ends, however it ends (a ``kill -9`` too), so a stale lock file never blocks.
    Returns the open lock file (close it to release), or None where there is nothing to lock (PostgreSQL, an
    in-memory database) or no ``flock`` (Windows)."""
    from sqlalchemy.engine import make_url

    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    db = Path(url.database)
    lock_path = db.with_name(db.name + ".serve.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(lock_path, "a+", encoding="utf-8")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.seek(0)
        pid = fh.read().strip() or "?"
        fh.close()
        raise OSError(f"another p2p serve (process {pid}) is already serving the database {db}; stop it first, or "
                      "give this server its own --data-dir (two servers on one SQLite file would both write to "
                      "it)") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh


def serve(
    app: P2PApp,
    host: str = "127.0.0.1",
    port: int = 7860,
    prepare: bool | None = None,
    echo: Callable[[str], None] = print,
) -> None:
    """Listen on ``host:port`` and serve the rater app at / and the admin app at /admin; the models load and
    unready studies are prepared in the background once the server answers."""
    import uvicorn

    from .ui import create_server

    lock = lock_data_dir(app.config.resolved_database_url)  # before anything: a second server is refused at once
    try:
        sock = bind(host, port)
        if app.presenter:
            from .pack import install_pack

            echo(f"Presenter mode: serving the study pack in {app.config.pack} (no model is loaded).")
            install_pack(app, app.config.pack)
        todo = plan_preparation(app, prepare, echo)
        server = uvicorn.Server(uvicorn.Config(create_server(app), log_level="warning"))

        def after_start() -> None:
            while not server.started and not server.should_exit:
                time.sleep(0.05)
            if server.started:
                echo(f"Serving on http://{host}:{port}/  (admin: http://{host}:{port}/admin)")
                prepare_in_background(app, todo, echo)

        threading.Thread(target=after_start, name="p2p-startup", daemon=True).start()
        server.run(sockets=[sock])
    finally:
        if lock is not None:
            lock.close()
