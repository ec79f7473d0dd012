"""The researcher's desk: every researcher operation in one place, used by the CLI and the admin screen alike.

:class:`ResearchDesk` sits beside the rater-facing service (:class:`~p2p_app.service.P2PApp`) and is built on the
same app (``startup.create_desk``, or ``ResearchDesk(app)``): find a study, prepare / verify it, invite raters and
follow their progress (:mod:`p2p_app.reader`), read the ratings, export them (the format by the file's suffix),
build the HTML report, and compute what the admin screen shows. Nothing here imports Gradio or click; errors the
researcher can fix are :class:`~p2p_app.service.UserError` with the message to show. Heavy modules (the analysis,
the report's figures, the metrics) are imported by the operations that need them, so ``p2p export`` starts fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import pandas as pd

from . import reader
from .batch import Job
from .config import AppConfig
from .service import P2PApp, RaterSession, UserError
from .storage import LIVE_STUDY, AccessDenied, RaterInfo, Storage
from .study import StudyDefinition, load_study, rater_group_map, study_key

EXPORT_TABLES = ("long", "wide", "parquet", "marks", "guesses", "metrics", "metrics-models")
DOWNLOADS = {"long": "ratings_long.csv", "wide": "ratings_wide.csv", "parquet": "ratings.parquet",
             "marks": "marks.csv", "report": "report.html"}  # admin download kind → file name after the study


@dataclass(frozen=True)
class MetricsView:
    """The tables of ``p2p metrics`` for one study, with their agreement with the clinicians' scores."""

    encoders: tuple[str, ...]
    table: pd.DataFrame  # per model × encoder (metrics_report.metric_table)
    agreement: pd.DataFrame
    copies: pd.DataFrame  # likely near-copies of training images


@dataclass(frozen=True)
class Overview:
    """What the admin screen shows for one study (or the live arena)."""

    answers: int
    raters: int
    progress: pd.DataFrame
    per_hour: pd.DataFrame
    short: pd.DataFrame  # items still short of k raters
    scores: pd.DataFrame
    figures: list
    metrics: MetricsView | None


@dataclass
class ResearchDesk:
    app: P2PApp

    @property
    def config(self) -> AppConfig:
        return self.app.config

    @property
    def storage(self) -> Storage:
        return self.app.storage

    @property
    def studies(self) -> Mapping[str, StudyDefinition]:
        return self.app.studies

    # ------------------------------------------------------------------ studies
    def study(self, name: str) -> StudyDefinition:
        """A study by key (``id@vN``), id (its latest version), or path to its TOML file or the folder holding
        ``study.toml``."""
        if name in self.studies:
            return self.studies[name]
        matches = [s for s in self.studies.values() if s.id == name]
        if matches:
            return max(matches, key=lambda s: s.version)
        if Path(name).is_file() or (Path(name) / "study.toml").is_file():
            return load_study(name, known_models=[m.name for m in self.config.models])
        known = ", ".join(sorted({s.id for s in self.studies.values()})) or "none"
        raise UserError(f"unknown study {name!r}; the config has: {known} (or give the path of a study folder or "
                        "study.toml)")

    def prepare(self, study: StudyDefinition, on_done: Callable[[Job, str], None] | None = None,
                release_models: bool = True) -> reader.PrepareReport:
        """Generate, import and freeze ``study`` (:func:`p2p_app.reader.prepare_study`)."""
        return reader.prepare_study(self.app, study, on_done=on_done, release_models=release_models)

    def verify(self, study: StudyDefinition) -> reader.VerifyReport:
        return reader.verify_study(self.app, study)

    # ------------------------------------------------------------------ raters
    def invite(self, study: StudyDefinition, name: str) -> tuple[RaterSession, str]:
        """A new rater and their clear invite token (:func:`p2p_app.reader.add_rater`)."""
        return reader.add_rater(self.app, study, name)

    def reissue(self, study: StudyDefinition, name: str) -> tuple[RaterInfo, str]:
        """A new invite token for rater ``name`` of ``study`` (the old link stops working)."""
        rater = reader.find_rater(self.app, study, name)
        return rater, self.storage.reissue_token(rater.pk)

    def raters(self, study: StudyDefinition | None = None) -> list[RaterInfo]:
        return self.storage.raters(study_key(study) if study is not None else None)

    def progress(self, study: StudyDefinition) -> pd.DataFrame:
        return reader.progress_frame(self.app, study)

    def coverage(self, study: StudyDefinition) -> pd.DataFrame:
        return reader.coverage_frame(self.app, study)

    # ------------------------------------------------------------------ ratings and exports
    def ratings(self, key: str | None) -> pd.DataFrame:
        """The tidy ratings of ``key`` (a study key or id, ``live``, or None for everything), rater groups filled."""
        return self.storage.ratings_frame(key, rater_group_map(self.studies.values()))

    def study_ratings(self, name: str) -> tuple[StudyDefinition | None, pd.DataFrame]:
        """Study ``name`` (:meth:`study`; None for ``live``, the arena) and its ratings, its rater groups filled."""
        if name == LIVE_STUDY:
            return None, self.storage.ratings_frame(LIVE_STUDY)
        st = self.study(name)
        return st, self.storage.ratings_frame(study_key(st), rater_group_map([st]))

    def check_served(self, key: str) -> str:
        """``key`` if it is a study the app serves or the live arena (what the admin screen may open)."""
        if key != LIVE_STUDY and key not in self.studies:
            raise AccessDenied("Unknown study.")
        return key

    def stored_key(self, study: str) -> str:
        """``study`` as given to ``p2p export --study``, checked against the studies configured or stored."""
        keys = {LIVE_STUDY, *self.studies, *self.storage.study_keys()}
        if study not in keys | {key.rsplit("@v", 1)[0] for key in keys}:
            raise UserError(f"unknown study {study!r}; known: {', '.join(sorted(keys))}")
        if "@v" in study or study == LIVE_STUDY:
            return study
        return max((k for k in keys if k.rsplit("@v", 1)[0] == study), key=lambda k: int(k.rsplit("@v", 1)[1]))

    def export(self, out: str | Path, study: str | None = None, fmt: str | None = None) -> str:
        """Write ``study``'s ratings (None: everything) to ``out`` as table ``fmt`` (default long); the file type
        comes from ``out``'s suffix (.csv, .xlsx, .parquet). Returns the line to print."""
        from . import export as exporter

        table = fmt if fmt in ("wide", "marks", "guesses") else "long"
        kind = exporter.export_file_type(out, table)  # a name that says another format is refused before any work
        if fmt == "parquet" and kind != "parquet":
            raise UserError(f"--format parquet writes Parquet: name OUT .parquet, not {Path(out).name!r}")
        key = self.stored_key(study) if study is not None else None  # a typo would otherwise write an empty file
        if fmt in ("metrics", "metrics-models"):
            return self.export_metrics(out, key, fmt, kind)
        if table == "marks":
            marks = self.storage.marks_frame(study)
            exporter.write_export(marks, out, "marks")
            return f"Wrote {len(marks)} marks ({kind}) to {out}"
        if table == "guesses":  # the model question of a study with blinding_index
            guesses = self.storage.guesses_frame(key)
            exporter.write_export(guesses, out, "guesses")
            return f"Wrote {len(guesses)} model guesses ({kind}) to {out}"
        df = self.ratings(study)
        exporter.write_export(df, out, table)
        return f"Wrote {len(df)} answers ({table}, {kind}) to {out}"

    def export_metrics(self, out: str | Path, key: str | None, fmt: str, kind: str) -> str:
        from . import export as exporter
        from .metrics_run import load_metrics

        if key is None:
            raise UserError("--format metrics needs --study (the study `p2p metrics` was run on)")
        if kind not in ("csv", "parquet"):
            raise UserError(f"metrics tables are written as .csv or .parquet, not {Path(out).name!r}")
        loaded = load_metrics(self.config.data_dir, key)
        if loaded is None:
            raise UserError(f"no metrics for {key} yet: run `p2p metrics {key} --encoder NAME` first")
        table = loaded.per_image if fmt == "metrics" else loaded.per_model
        exporter.write_metrics_table(table, out)
        return f"Wrote {len(table)} rows ({fmt}, encoders: {', '.join(loaded.encoders)}) to {out}"

    def download(self, kind: str, key: str, out_dir: Path) -> Path:
        """One admin download (``DOWNLOADS``: long, wide, parquet, marks, report) of ``key`` into ``out_dir``."""
        from . import export as exporter

        path = out_dir / f"{self.check_served(key).replace('@', '_')}_{DOWNLOADS[kind]}"
        writers = {"long": exporter.write_long_csv, "wide": exporter.write_wide_csv, "parquet": exporter.write_parquet}
        if kind in writers:
            writers[kind](self.ratings(key), path)
        elif kind == "marks":
            exporter.write_marks_csv(self.storage.marks_frame(key), path)
        else:  # the report reads the ratings again, with the study's own rater groups
            path.write_text(self.report(key, n_boot=500)[0], encoding="utf-8")
        return path

    # ------------------------------------------------------------------ report and analysis
    def report(self, name: str, n_boot: int = 1000, pool_live: float | None = None) -> tuple[str, int]:
        """The self-contained HTML report of study ``name`` (``live``: the arena) and how many answers it holds.
        ``pool_live``: also fit the study's rankings with the arena's, the arena's pairs weighted by this."""
        from .metrics_run import load_metrics
        from .report import build_report

        st, df = self.study_ratings(name)
        if st is None:
            key, title, progress, models = LIVE_STUDY, f"{self.config.title}: live arena", None, ()
        else:  # every model of the study is listed, rated or not
            key, title, progress, models = study_key(st), st.title, self.progress(st), tuple(st.models)
        pool = None
        if pool_live is not None:
            if name == LIVE_STUDY:
                raise UserError("--pool-live pools a study with the live arena; NAME is already 'live'")
            if not pool_live > 0:
                raise UserError(f"--pool-live must be a positive weight, got {pool_live}")
            pool = {"study": (df, 1.0), "arena": (self.storage.ratings_frame(LIVE_STUDY), pool_live)}
        marks = self.storage.marks_frame(key)
        page = build_report(df, title, progress=progress, n_boot=n_boot, models=models,
                            marks=marks if len(marks) else None, pool=pool,
                            metrics=load_metrics(self.config.data_dir, key),  # from `p2p metrics`
                            notice_words=getattr(st, "notice_words", None),  # naive → disclosed: the keyword rule
                            blinding=self.blinding(st, df, n_boot) if st is not None else self.arena_blinding(n_boot))
        return page, len(df)

    def blinding(self, st: StudyDefinition, ratings: pd.DataFrame, n_boot: int = 1000):
        """The blinding index of ``st``'s model guesses (None: the study does not ask, or nothing is guessed yet),
        practice items and catch screens left out (``ratings``: the study's tidy frame, which marks catch trials)."""
        from .analysis.blinding_index import blinding_index

        if not st.blinding_index:
            return None
        guesses = self.storage.guesses_frame(study_key(st))
        catch = set(ratings.loc[ratings["catch"].astype(str) != "", "trial_id"]) if len(ratings) else set()
        guesses = guesses[~guesses["practice"] & ~guesses["trial_id"].isin(catch)]
        if guesses.empty:
            return None
        return blinding_index(guesses, st.guess_options(), n_boot=n_boot)

    def arena_blinding(self, n_boot: int = 1000):
        """The live arena's blinding index (``arena_blinding_index``): one per modality (its models are the
        options), the tables stacked with a ``modality`` column; None when nothing is guessed."""
        from .analysis.blinding_index import BlindingIndex, blinding_index

        guesses = self.storage.guesses_frame(LIVE_STUDY)
        parts = []
        for modality in self.config.modalities():
            options = tuple(m.name for m in self.config.models_for(modality))
            mine = guesses[guesses["truth"].isin(options)]
            if len(options) >= 2 and len(mine):
                bi = blinding_index(mine, options, n_boot=n_boot)
                parts.append({k: t.assign(modality=modality)[["modality", *t.columns]] for k, t in bi.tables().items()})
        if not parts:
            return None
        stacked = {k: pd.concat([p[k] for p in parts], ignore_index=True) for k in parts[0]}
        return BlindingIndex(stacked["blinding_james"], stacked["blinding_bang"], stacked["blinding_raters"])

    def overview(self, key: str) -> Overview:
        """The admin screen's tables and figures for ``key`` (a served study or ``live``)."""
        from .analysis import analyze
        from .report import figures

        df = self.ratings(self.check_served(key))
        if key == LIVE_STUDY:
            prog = (df.groupby(["rater_id", "rater_name"])["trial_id"].nunique().rename("trials").reset_index()
                    if not df.empty else pd.DataFrame(columns=["rater_id", "rater_name", "trials"]))
            short = pd.DataFrame(columns=["item_id", "raters", "k", "short_of_k"])
        else:
            st = self.studies[key]
            prog = self.progress(st)
            cov = self.coverage(st)
            short = cov[cov["short_of_k"]]
        hours = (df.assign(hour=df["answered_at"].dt.floor("h")).groupby("hour").size().rename("answers").reset_index()
                 if not df.empty else pd.DataFrame(columns=["hour", "answers"]))
        marks = self.storage.marks_frame(key)
        result = analyze(df, n_boot=200, seed=0, marks=marks if len(marks) else None)
        figs = list(figures(result, df, progress=None if key == LIVE_STUDY else prog).values())
        return Overview(
            answers=len(df), raters=df["rater_id"].nunique() if not df.empty else 0, progress=prog,
            per_hour=hours.astype({"hour": str}) if not hours.empty else hours, short=short, scores=result.scores,
            figures=figs, metrics=self.metrics(key, df),
        )

    def metrics(self, key: str, ratings: pd.DataFrame) -> MetricsView | None:
        """The ``p2p metrics`` tables of ``key`` with their agreement with ``ratings``; None when there are none."""
        from .metrics_report import metric_table
        from .metrics_run import load_metrics, summarize

        loaded = load_metrics(self.config.data_dir, key)
        if loaded is None:
            return None
        agreement = summarize(loaded, ratings, n_boot=200, seed=0)
        copies = agreement.copies.drop(columns=["path"], errors="ignore")
        return MetricsView(tuple(loaded.encoders), metric_table(loaded), agreement.table, copies)

