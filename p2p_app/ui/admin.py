"""Admin area (mounted at /admin as its own app): progress, exports, statistics, the HTML report.

Sign-in is Gradio's own login for the mounted app (``auth=`` in create_server, :class:`AdminGate`): a correct
password sets a random HttpOnly access-token cookie that the server maps to the admin, and every route of the
admin app (config, queue, files, deep links) requires it. The Gradio session id plays no part, and no password
ever sits in a component. Every handler also checks ``request.username`` on the server. Wrong passwords are
throttled per address and network (p2p_app/ui/guard.py), never for everyone. Exports are written to a
private temp folder that is emptied as soon as Gradio has its copy; that copy is deleted once downloaded
(p2p_app/ui/guard.py) and Gradio's cache of the admin app is cleared of anything older than 15 minutes.
"""

from __future__ import annotations

import hmac
import logging
import tempfile
from pathlib import Path

import gradio as gr
import pandas as pd
from gradio import processing_utils

from ..desk import MetricsView, ResearchDesk
from ..report import FIGURE_NAMES
from ..service import P2PApp, edited_study_note
from ..storage import LIVE_STUDY, AccessDenied
from .common import guarded
from .page import ADMIN, Css

FIGURE_SLOTS = len(FIGURE_NAMES)  # every figure the report can draw
NO_PASSWORD_MESSAGE = ("No admin password is set on this server, so no one can sign in here. Set P2P_ADMIN_PASSWORD "
                       "(in the environment, or admin_password in the config file) and restart `p2p serve`.")
ADMIN_USER = "admin"
log = logging.getLogger(__name__)


class AdminGate:
    """Gradio's ``auth`` callable for the admin app: user ``admin`` and the configured password, compared in
    constant time and at once. Wrong passwords are throttled per address and per network before they get here
    (``ui.guard.LoginThrottle``, exponential backoff); there is no global lock or shared delay, so no one can keep
    the owner out from another address, and a signed-in admin (the cookie) never passes through here."""

    def __init__(self, app: P2PApp):
        self.app = app

    async def check(self, username: str, password: str) -> bool:
        """Pass this bound coroutine function as ``auth=`` (Gradio awaits it only if it is one: an object with an
        async ``__call__`` would be called without awaiting, and the coroutine object is truthy)."""
        return bool(hmac.compare_digest((username or "").encode(), ADMIN_USER.encode())
                    & self.app.check_admin(password))


def _choices(app: P2PApp) -> list[tuple[str, str]]:
    return [("Live arena", LIVE_STUDY)] + [(f"{s.title} ({k})", k) for k, s in app.studies.items()]


EPHEMERAL_WARNING = (
    "⚠️ **The database is on this Space's ephemeral disk: every rating is lost when the Space restarts.** "
    "Enable the Space's persistent storage (data then goes to `/data/p2p_data`) or set `P2P_DATABASE_URL`."
)


def login_message(app: P2PApp) -> str | None:
    """What the admin login page says above its form: why nobody can sign in when no password is set."""
    return None if app.config.admin_password else NO_PASSWORD_MESSAGE


def build_admin(app: P2PApp, demo: gr.Blocks | None = None) -> "AdminScreen":
    """The admin screens; with ``demo`` (the admin Blocks) the chosen study's tables and figures load with the
    page, without a press on Refresh."""
    return AdminScreen(app, demo)


class AdminScreen:
    """The admin screens inside the current Blocks context: ``__init__`` lays them out from small methods and wires
    the events; the handlers (``on_refresh``, ``download_handler(kind)``) are callables a test can call with plain
    values (and a request signed in as admin), each returning the component updates."""

    def __init__(self, app: P2PApp, demo: gr.Blocks | None = None):
        self.app = app
        self.desk = ResearchDesk(app)  # the researcher operations: analysis, exports, report
        self._banners()
        self.message = gr.Markdown(visible=False, elem_id=ADMIN.message)
        with gr.Column():
            with gr.Row():
                self.which = gr.Dropdown(choices=_choices(app), value=LIVE_STUDY, label="Study", elem_id=ADMIN.study)
                self.refresh_btn = gr.Button("Refresh", elem_id=ADMIN.refresh)
            self.summary = gr.Markdown(elem_id=ADMIN.summary)
            self._progress_tab()
            self._statistics_tab()
            self._metrics_tab()
            self._downloads_tab()
        self.on_refresh = _refresh_handler(app, self)
        self.download_handler = _download_handlers(app, self)
        self._wire(demo)

    # ---------------------------------------------------------------------------------------------- layout
    def _banners(self) -> None:
        app = self.app
        if app.config.ephemeral_storage:
            gr.Markdown(EPHEMERAL_WARNING, elem_classes=[Css.DEMO_BANNER])
        edited = [edited_study_note(k, st.id) for k, st in app.studies.items() if app.edited_after_freezing(st)]
        if edited:  # studies are read once at start-up: what this says holds until the next start
            gr.Markdown("\n\n".join(f"⚠️ {note}" for note in edited), elem_classes=[Css.DEMO_BANNER])

    def _progress_tab(self) -> None:
        with gr.Tab("Progress", elem_id=ADMIN.progress_tab):
            self.raters_table = gr.Dataframe(label="Raters", interactive=False, elem_id=ADMIN.raters)
            self.per_hour = gr.Dataframe(label="Answers per hour", interactive=False, elem_id=ADMIN.per_hour)
            self.short_table = gr.Dataframe(label="Items still short of k raters", interactive=False,
                                            elem_id=ADMIN.short)  # fmt: skip

    def _statistics_tab(self) -> None:
        with gr.Tab("Statistics", elem_id=ADMIN.statistics_tab):
            self.stats_table = gr.Dataframe(
                label="Per model × question (95% CI, raters and images as crossed random effects)", interactive=False,
                elem_id=ADMIN.stats,
            )
            self.plots = [gr.Plot(visible=False, elem_id=ADMIN.plot(i)) for i in range(FIGURE_SLOTS)]

    def _metrics_tab(self) -> None:
        with gr.Tab("Metrics", elem_id=ADMIN.metrics_tab):  # tables written by `p2p metrics` (admin only; never on a rater's screen)
            self.metrics_note = gr.Markdown(elem_id=ADMIN.metrics_note)
            self.metrics_table = gr.Dataframe(label="Per model × encoder (95% bootstrap intervals over images)",
                                              interactive=False, elem_id=ADMIN.metrics)  # fmt: skip
            self.agreement_table = gr.Dataframe(label="Do the metrics agree with the clinicians? (per image, "
                                                      "two-level bootstrap)", interactive=False,
                                                elem_id=ADMIN.agreement)  # fmt: skip
            self.copies_table = gr.Dataframe(label="Likely near-copies of training images", interactive=False,
                                             elem_id=ADMIN.copies)  # fmt: skip

    def _downloads_tab(self) -> None:
        with gr.Tab("Downloads", elem_id=ADMIN.downloads_tab):
            with gr.Row():
                self.long_btn = gr.Button("Long CSV", elem_id=ADMIN.long_csv)
                self.wide_btn = gr.Button("Wide CSV", elem_id=ADMIN.wide_csv)
                self.parquet_btn = gr.Button("Parquet", elem_id=ADMIN.parquet)
                # artifact marks, one row per point (studies with marking)
                self.marks_btn = gr.Button("Marks CSV", elem_id=ADMIN.marks_csv)
                self.report_btn = gr.Button("HTML report", elem_id=ADMIN.report)
            self.download = gr.File(label="Download", interactive=False, elem_id=ADMIN.download)

    # ---------------------------------------------------------------------------------------------- events
    def refresh_outputs(self) -> list:
        return [self.summary, self.raters_table, self.per_hour, self.short_table, self.stats_table, self.message,
                self.metrics_note, self.metrics_table, self.agreement_table, self.copies_table, *self.plots]

    def _wire(self, demo: gr.Blocks | None) -> None:
        refresh_outputs = self.refresh_outputs()
        self.refresh_btn.click(self.on_refresh, self.which, refresh_outputs, api_visibility="private")
        self.which.change(self.on_refresh, self.which, refresh_outputs, api_visibility="private")
        if demo is not None:
            demo.load(self.on_refresh, self.which, refresh_outputs, api_visibility="private")
        buttons = ((self.long_btn, "long"), (self.wide_btn, "wide"), (self.parquet_btn, "parquet"),
                   (self.marks_btn, "marks"), (self.report_btn, "report"))  # fmt: skip
        for btn, kind in buttons:
            btn.click(self.download_handler(kind), self.which, [self.download, self.message], api_visibility="private")


def _require(request: gr.Request | None) -> None:
    """Every admin handler's check: signed in as admin."""
    # Gradio sets username only from the admin app's own access-token cookie (see AdminGate)
    if request is None or getattr(request, "username", None) != ADMIN_USER:
        raise AccessDenied("Sign in as admin first.")


def _refresh_handler(app: P2PApp, w: AdminScreen):
    """The Refresh handler (analysis, progress, metrics) of the admin screen ``w``."""
    guard = guarded(w.message)
    desk, require = w.desk, _require
    message, summary, raters_table, per_hour = w.message, w.summary, w.raters_table, w.per_hour
    short_table = w.short_table
    stats_table, plots, metrics_note, metrics_table = w.stats_table, w.plots, w.metrics_note, w.metrics_table
    agreement_table, copies_table = w.agreement_table, w.copies_table

    @guard
    def on_refresh(key: str, request: gr.Request) -> dict:
        require(request)
        view = desk.overview(key)
        updates = {
            summary: gr.Markdown(f"**{view.answers}** answers from **{view.raters}** raters." + damaged_note(app)),
            raters_table: view.progress,
            per_hour: view.per_hour,
            short_table: view.short,
            stats_table: view.scores,
            message: gr.Markdown(visible=False),
        }
        updates.update(metrics_updates(key, view.metrics))
        figs = view.figures[:FIGURE_SLOTS]
        for i, plot in enumerate(plots):
            updates[plot] = gr.Plot(value=figs[i], visible=True) if i < len(figs) else gr.Plot(visible=False)
        return updates

    def metrics_updates(key: str, metrics: MetricsView | None) -> dict:
        if metrics is None:
            empty = pd.DataFrame()
            return {metrics_note: gr.Markdown(f"No metrics yet: run `p2p metrics {key} --encoder NAME`."),
                    metrics_table: empty, agreement_table: empty, copies_table: empty}
        return {metrics_note: gr.Markdown(f"Encoders: {', '.join(metrics.encoders)}. The HTML report shows the "
                                          "scatter and the near-copies side by side."),
                metrics_table: metrics.table, agreement_table: metrics.agreement, copies_table: metrics.copies}

    return on_refresh


def _download_handlers(app: P2PApp, w: AdminScreen):
    """``download_handler(kind)``: the handler of an export button (long, wide, parquet, marks, report) of ``w``."""
    guard = guarded(w.message)
    desk, require = w.desk, _require
    message, download = w.message, w.download

    def download_handler(kind: str):
        @guard
        def handler(key: str, request: gr.Request) -> dict:
            require(request)
            with tempfile.TemporaryDirectory(prefix="p2p-admin-") as tmp:  # gone when the handler returns
                path = desk.download(kind, key, Path(tmp))
                # the only copy left is in Gradio's cache, which the guard deletes once downloaded
                cached = processing_utils.save_bytes_to_cache(path.read_bytes(), path.name, download.GRADIO_CACHE)
            return {download: cached, message: gr.Markdown(visible=False)}

        return handler

    return download_handler


def damaged_note(app: P2PApp) -> str:
    """Images refused to raters because their file is missing or fails its sha256 (p2p_app/serving.py), as
    Markdown; "" when there are none."""
    broken = app.broken_images()
    if not broken:
        return ""
    lines = "\n".join(f"- `{b.image_id}` ({b.path}): {b.problem}" for b in broken[:50])
    more = f"\n- … and {len(broken) - 50} more (see the serve log)" if len(broken) > 50 else ""
    return (f"\n\n⚠️ **{len(broken)} image(s) are not shown to raters because their file is damaged or missing** "
            f"(run `p2p study verify`):\n{lines}{more}")
