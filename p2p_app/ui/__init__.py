"""Thin Gradio UI over :class:`p2p_app.service.P2PApp`.

Two separate Blocks apps are mounted on one FastAPI server: the rater app at ``/`` and the admin app at
``/admin``. Because they are separate apps, nothing of the admin side (its events, its outputs) appears in
the rater app's ``/config`` or API listing.
"""

from __future__ import annotations

import gradio as gr

from ..service import P2PApp
from . import guard
from .admin import AdminGate, build_admin, login_message
from .arena import build_arena
from .common import address_of, page_css, page_js
from .page import LANDING, Css, page_head
from .files import install as install_blind_file_headers
from .study import build_study

ARENA_TAB, STUDIES_TAB = "arena", "studies"


def build_rater_app(app: P2PApp) -> gr.Blocks:
    cfg = app.config
    # A naive → disclosed study must not mention image generation before its disclosure: the page that serves one
    # has no live arena and no demo-models banner (docs/studies.md: serve it with a neutral title, on its own).
    naive = any(st.design == "naive_disclosed" for st in app.studies.values())
    with gr.Blocks(title=cfg.title, analytics_enabled=False) as demo:
        gr.Markdown(f"# {cfg.title}", elem_id=LANDING.title)
        if cfg.demo_models and not naive:
            gr.Markdown(
                "**Demo models:** the models here are tiny random-weight stand-ins, so every image is noise. "
                "The app works the same with real checkpoints.",
                elem_classes=[Css.DEMO_BANNER], elem_id=LANDING.demo_banner,
            )
        if naive:
            build_study(app, demo)
        elif app.studies:
            _arena_and_studies(app, demo)
        else:
            build_arena(app)
    demo.queue(default_concurrency_limit=None)
    return demo


def _arena_and_studies(app: P2PApp, demo: gr.Blocks) -> None:
    """Landing: the first tab is one every visitor can use (the live arena); a link that names a study (?token=
    invite, ?study=<key>) opens that study's tab instead (build_study picks the study)."""
    with gr.Tabs(selected=ARENA_TAB, elem_id=LANDING.tabs) as top_tabs:
        with gr.Tab("Live arena", id=ARENA_TAB, elem_id=LANDING.arena_tab):
            build_arena(app)
        with gr.Tab("Reader study", id=STUDIES_TAB, elem_id=LANDING.studies_tab):
            build_study(app, demo)

    def on_landing(request: gr.Request) -> dict:
        query = request.query_params if request else {}
        named = app.linked_study(token=query.get("token") or "", study=query.get("study") or "",
                                 address=address_of(app, request))
        return {top_tabs: gr.Tabs(selected=STUDIES_TAB if named else ARENA_TAB)}

    demo.load(on_landing, None, top_tabs, api_visibility="private", queue=False)


def build_admin_app(app: P2PApp) -> gr.Blocks:
    # delete_cache: exports nobody downloaded leave Gradio's cache after 15 minutes (downloaded ones at once)
    with gr.Blocks(title=f"{app.config.title} — admin", analytics_enabled=False, delete_cache=(300, 900)) as demo:
        gr.Markdown(f"# {app.config.title} — admin")
        build_admin(app, demo)
    demo.queue(default_concurrency_limit=None)
    return demo


def create_server(app: P2PApp):
    """A FastAPI app with the rater UI at / and the admin UI at /admin (monitoring page off)."""
    from fastapi import FastAPI
    from fastapi.responses import RedirectResponse

    server = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    # the rater pages' images (opaque per-presentation URLs, served from the stored files) and file responses
    # without Last-Modified/ETag/ranges (p2p_app/ui/files.py)
    install_blind_file_headers(server, app.presentation)

    @server.get("/admin", include_in_schema=False)
    def admin_without_slash() -> RedirectResponse:  # the mounted app answers only below /admin/
        return RedirectResponse("admin/", status_code=307)  # relative: works behind a path prefix too

    common = dict(enable_monitoring=False, ssr_mode=False, footer_links=[], css=page_css())
    gr.mount_gradio_app(server, build_admin_app(app), path="/admin", auth=AdminGate(app).check,
                        auth_message=login_message(app), **common)
    # the page's declared parts (p2p_app/ui/page.py) as data for its scripts: window.p2pPage
    gr.mount_gradio_app(server, build_rater_app(app), path="", js=page_js(app), head=page_head(app), **common)
    cfg = app.config
    guard.install(server, guard.LoginThrottle(trusted=cfg.admin_trusted_networks, behind_proxy=cfg.trusts_forwarded_for))
    return server


def serve(app: P2PApp, host: str = "127.0.0.1", port: int = 7860) -> None:
    import uvicorn

    uvicorn.run(create_server(app), host=host, port=port, log_level="warning")
