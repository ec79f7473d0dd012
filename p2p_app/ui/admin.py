"""Admin area (mounted at /admin as its own app): progress, exports, statistics, the HTML report.

Every handler checks the server-side admin flag; the password is compared on the server only.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr
import pandas as pd

from .. import export as exporter
from .. import reader
from ..analysis import analyze
from ..report import build_report, figures
from ..service import P2PApp
from ..storage import LIVE_STUDY, AccessDenied
from .common import guarded

FIGURE_SLOTS = 6


def _choices(app: P2PApp) -> list[tuple[str, str]]:
    return [("Live arena", LIVE_STUDY)] + [(f"{s.title} ({k})", k) for k, s in app.studies.items()]


def build_admin(app: P2PApp) -> None:
    is_admin = gr.State(False)
    out_dir = Path(tempfile.mkdtemp(prefix="p2p-admin-"))

    with gr.Column() as login_box:
        password = gr.Textbox(label="Admin password", type="password")
        login_btn = gr.Button("Sign in", variant="primary")
    message = gr.Markdown(visible=False)
    with gr.Column(visible=False) as main_box:
        with gr.Row():
            which = gr.Dropdown(choices=_choices(app), value=LIVE_STUDY, label="Study")
            refresh_btn = gr.Button("Refresh")
        summary = gr.Markdown()
        with gr.Tab("Progress"):
            raters_table = gr.Dataframe(label="Raters", interactive=False)
            per_hour = gr.Dataframe(label="Answers per hour", interactive=False)
            short_table = gr.Dataframe(label="Items still short of k raters", interactive=False)
        with gr.Tab("Statistics"):
            stats_table = gr.Dataframe(label="Per model × question (95% clustered bootstrap CI)", interactive=False)
            plots = [gr.Plot(visible=False) for _ in range(FIGURE_SLOTS)]
        with gr.Tab("Downloads"):
            with gr.Row():
                long_btn = gr.Button("Long CSV")
                wide_btn = gr.Button("Wide CSV")
                parquet_btn = gr.Button("Parquet")
                report_btn = gr.Button("HTML report")
            download = gr.File(label="Download", interactive=False)

    guard = guarded(message)

    def require(flag: bool) -> None:
        if not flag:
            raise AccessDenied("Sign in as admin first.")

    @guard
    def on_login(pw: str) -> dict:
        if not app.check_admin(pw):
            return {message: gr.Markdown("⛔ Wrong password (or no admin password is configured).", visible=True)}
        return {is_admin: True, login_box: gr.Column(visible=False), main_box: gr.Column(visible=True),
                message: gr.Markdown(visible=False)}

    def frame_for(key: str) -> pd.DataFrame:
        if key != LIVE_STUDY and key not in app.studies:
            raise AccessDenied("Unknown study.")
        return app.storage.ratings_frame(key)

    @guard
    def on_refresh(flag: bool, key: str) -> dict:
        require(flag)
        df = frame_for(key)
        if key == LIVE_STUDY:
            prog = (df.groupby(["rater_id", "rater_name"])["trial_id"].nunique().rename("trials").reset_index()
                    if not df.empty else pd.DataFrame(columns=["rater_id", "rater_name", "trials"]))
            short = pd.DataFrame(columns=["item_id", "raters", "k", "short_of_k"])
        else:
            st = app.studies[key]
            prog = reader.progress_frame(app, st)
            cov = reader.coverage_frame(app, st)
            short = cov[cov["short_of_k"]]
        hours = (df.assign(hour=df["answered_at"].dt.floor("h")).groupby("hour").size().rename("answers").reset_index()
                 if not df.empty else pd.DataFrame(columns=["hour", "answers"]))
        result = analyze(df, n_boot=200, seed=0)
        figs = list(figures(result, df, progress=None if key == LIVE_STUDY else prog).values())[:FIGURE_SLOTS]
        updates = {
            summary: gr.Markdown(f"**{len(df)}** answers from **{df['rater_id'].nunique() if not df.empty else 0}** raters."),
            raters_table: prog,
            per_hour: hours.astype({"hour": str}) if not hours.empty else hours,
            short_table: short,
            stats_table: result.scores,
            message: gr.Markdown(visible=False),
        }
        for i, plot in enumerate(plots):
            updates[plot] = gr.Plot(value=figs[i], visible=True) if i < len(figs) else gr.Plot(visible=False)
        return updates

    def download_handler(kind: str):
        @guard
        def handler(flag: bool, key: str) -> dict:
            require(flag)
            df = frame_for(key)
            stem = key.replace("@", "_")
            if kind == "long":
                path = out_dir / f"{stem}_ratings_long.csv"
                exporter.write_long_csv(df, path)
            elif kind == "wide":
                path = out_dir / f"{stem}_ratings_wide.csv"
                exporter.write_wide_csv(df, path)
            elif kind == "parquet":
                path = out_dir / f"{stem}_ratings.parquet"
                exporter.write_parquet(df, path)
            else:
                path = out_dir / f"{stem}_report.html"
                title = app.studies[key].title if key in app.studies else f"{app.config.title}: live arena"
                progress = reader.progress_frame(app, app.studies[key]) if key in app.studies else None
                path.write_text(build_report(df, title, progress=progress, n_boot=500), encoding="utf-8")
            return {download: str(path), message: gr.Markdown(visible=False)}

        return handler

    login_btn.click(on_login, password, [is_admin, login_box, main_box, message], api_visibility="private")
    password.submit(on_login, password, [is_admin, login_box, main_box, message], api_visibility="private")
    refresh_outputs = [summary, raters_table, per_hour, short_table, stats_table, message, *plots]
    refresh_btn.click(on_refresh, [is_admin, which], refresh_outputs, api_visibility="private")
    which.change(on_refresh, [is_admin, which], refresh_outputs, api_visibility="private")
    for btn, kind in ((long_btn, "long"), (wide_btn, "wide"), (parquet_btn, "parquet"), (report_btn, "report")):
        btn.click(download_handler(kind), [is_admin, which], [download, message], api_visibility="private")
