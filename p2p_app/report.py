"""One self-contained HTML report: the analysis tables and plotly figures built from them.

``figures`` only draws aggregated tables (never one point per answer), so a 1,000,000-row study gives a report of
the same size as a small one. ``build_report`` embeds plotly.js once, inline (no CDN, works offline), and escapes
every table and label.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .analysis import (
    DEFAULT_N_BOOT,
    DEFAULT_SEED,
    NOT_COMPUTABLE,
    Analysis,
    analyze,
    score_level_columns,
)
from . import contextual_bt
from .analysis.disclosure import disclosure_table, has_disclosure, rule_text, unusual_texts
from .study import DEFAULT_NOTICE_WORDS
from .tidy import without_practice

ALPHA_RELIABLE = 0.8
ALPHA_TENTATIVE = 0.667
FIGURE_HEIGHT = 420
PROGRESS_COUNT_COLUMNS = ("done", "total", "answered", "assigned")
"""Columns of a ``progress`` table drawn per rater when present (else its other numeric columns)."""

SECTIONS: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    # (title, explanation, figure names, table names)
    ("Overview", "What the data holds.", (), ("overview",)),
    (
        "Scores per model",
        "Mean score with a 95% CI treating raters and images as crossed random effects (variance components, "
        "t interval, kept inside the scale), and the distribution of scores. Real control images are their own row. "
        "A note says when an interval is blank or not informative (one rater, 2 raters, a single answer or image).",
        ("means", "score_distributions"),
        ("scores",),
    ),
    (
        "Real vs generated",
        "AUC of telling real from generated images by the realism score (real = positive class; 0.5 = "
        "indistinguishable): pooled over raters (auc, no interval) and as a reader study (auc_readers: mean of each "
        "rater's AUC, with its CI auc_readers_ci_low/high and model comparisons by the Obuchowski-Rockette method "
        "with readers and images random, Hillis df; the jackknife deletes a prompt's images together, and the CI is "
        "formed on the logit scale so it stays in [0, 1]). "
        "Pass rate: share of answers scoring 4 or 5 ('passes as real').",
        ("roc",),
        ("real_vs_generated", "reader_study", "roc"),
    ),
    (
        "Inter-rater agreement",
        f"Inter-rater agreement on scores (not image similarity): Krippendorff's alpha (ordinal; CI from a rater x "
        f"image jackknife, raters and images both random, three or more raters, kept inside [-1, 1] and around the "
        f"estimate) and Fleiss' kappa (CI by resampling images), on each rater's first answer per image. Common reading: alpha >= "
        f"{ALPHA_RELIABLE} reliable, >= {ALPHA_TENTATIVE} tentative. Intra-rater: the same rater on repeated images.",
        ("agreement",),
        ("agreement", "intra_rater"),
    ),
    (
        "Model comparisons",
        "Paired Wilcoxon signed-rank tests on scores averaged per (prompt, seed); Holm-corrected per question. "
        "CI of the paired mean difference with raters and items as crossed random effects.",
        (),
        ("pairwise",),
    ),
    (
        "Position bias",
        "Mean score by the panel position shown (centered: minus the model's mean), with a Kruskal-Wallis test.",
        ("position",),
        ("position_test", "position"),
    ),
    (
        "Raters and progress",
        "Per-rater answers, time and quality flags (too fast, straight-lining, outlier against the consensus). "
        "Time per screen is the active time (page visible, not idle for over 30 s) where the page measured it, "
        "else the wall time (shown to answered); the timing table shows both side by side. Practice items are "
        "left out of everything in this report.",
        ("progress", "rater_progress", "raters", "timing"),
        ("answers_over_time", "progress", "raters", "timing"),
    ),
)


DESIGN_SECTIONS: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    # shown only when the analysis has the tables (the frame holds such answers)
    (
        "Which one is real? (forced choice)",
        "Share of screens on which the rater picked the real image, against chance 1/(panels); 95% CI and test with "
        "raters random (each rater answers many screens: cluster-robust variance over raters, Korn-Graubard beta "
        "interval with t on raters - 1 df, and the test dual to it). Per model: share of the screens showing it on "
        "which it was picked as real, same interval. Rater groups compared by the difference of proportions "
        "(rater-clustered CI), Fisher's exact test on screens and a Mann-Whitney test on per-rater accuracies. "
        "Agreement: "
        "Fleiss' kappa on which model each rater picked per item.",
        ("forced_choice", "forced_choice_models"),
        ("forced_choice", "forced_choice_models", "forced_choice_groups", "forced_choice_agreement"),
    ),
    (
        "Rankings",
        "Bradley-Terry strengths (log scale, mean 0) from every pair implied by the full rankings (choix), 95% CI by "
        "resampling raters; pl_strength: the Plackett-Luce fit. Models whose intervals overlap share a rank band. "
        "A model that wins (or loses) every comparison has a strength set by the regulariser, and a note says so. "
        "Win rate: share of the screens showing both on which the row model was ranked above the column model. "
        "ranking_contextual: the contextual Bradley-Terry fit next to the plain one (plain_strength; shift = "
        "contextual - plain), adjusting for the screen slot, the modality and the rater group, with sandwich 95% CIs "
        "clustered by rater and Davidson ties where tied ranks exist; ranking_covariates: the adjustments "
        "themselves. ranking_robustness: the fewest answers (ranking screens, listed as rater/trial for audit) whose "
        "removal changes the top model, found by influence and confirmed by exact refits; label from the largest "
        "CI half-width (log scale): <= 0.25 established, <= 0.5 usable, else preliminary. ranking_pooled: this "
        "study's and the live arena's rankings fitted together, each source's pairs weighted as named.",
        ("ranking", "ranking_wins"),
        ("ranking", "ranking_contextual", "ranking_covariates", "ranking_robustness", "ranking_pooled", "ranking_wins"),
    ),
    (
        "Catch trials",
        "Known-answer screens (a known real image, or broken images made by the app) mixed into each rater's "
        "sequence; they are left out of every other statistic. A rater is flagged when their pass rate is below the "
        "threshold; catch_kinds: the pass rate per kind (known real image, or how the broken one was made) with its "
        "exact 95% CI, so a kind every rater misses is told apart from careless raters. With exclusion, the "
        "sensitivity table shows the main estimates with and without flagged raters.",
        ("catch",),
        ("catch", "catch_kinds", "sensitivity"),
    ),
)


READING_SECTIONS: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    # issue 13: shown only when the analysis has the tables (a study whose raters mark artifacts)
    (
        "Artifact marks",
        "Where raters clicked on an image because it looks wrong: for each model, the marked points counted on a "
        "fixed 10 x 10 grid over the image (top of the image at the top) and divided by the number of that "
        "model's images rated, so a cell reads 'marks per rated image'. Practice items and catch trials are left "
        "out.",
        ("marks",),
        ("marks",),
    ),
    # issue 22: a study whose marks carry a confidence (mark_confidence)
    (
        "Inferred ROC of artifact marks",
        "Each rater's highest mark confidence on an image (1-5; 0 when the rater did not mark it) is that image's "
        "score for 'this image has artifacts' (RJafroc's HrAuc). The reader study above is run on it: per model, "
        "the reader-averaged AUC is the chance that one of the model's images scores higher than a real image (ties "
        "count half), 0.5 = the marks do not tell them apart, with its Obuchowski–Rockette interval; then the "
        "differences between models and the F test. Free marks have no true locations, so marks are not scored as "
        "hits (no FROC).",
        (),
        ("inferred_roc",),
    ),
)


def _is_nc(note) -> bool:
    return isinstance(note, str) and note.startswith(NOT_COMPUTABLE)


def _ok(table: pd.DataFrame) -> pd.DataFrame:
    """Rows that are computable (no "not computable" note)."""
    if "note" not in table.columns:
        return table
    return table[~table["note"].map(_is_nc)]


def series_colour(i: int) -> str:
    """The ``i``-th colour of plotly's default sequence: set on every trace of a series drawn in several panels
    (plotly would otherwise colour each trace by its own index, so a series changes colour from panel to panel
    and the legend matches the first panel only)."""
    from plotly.colors import qualitative

    return qualitative.Plotly[i % len(qualitative.Plotly)]


def _score_distributions(a: Analysis) -> go.Figure | None:
    s = _ok(a.scores)
    if s.empty:
        return None
    questions = list(dict.fromkeys(s["question"]))
    fig = make_subplots(rows=1, cols=len(questions), subplot_titles=questions, shared_yaxes=True)
    for i, model in enumerate(dict.fromkeys(s["model"])):
        colour = series_colour(i)  # one colour per model in every panel, as its legend entry shows
        for j, q in enumerate(questions):
            row = s[(s["model"] == model) & (s["question"] == q)]
            if row.empty:
                continue
            level_cols = score_level_columns(row)
            counts = row[level_cols].to_numpy(dtype=float)[0]
            share = counts / counts.sum() if counts.sum() else counts
            fig.add_trace(
                go.Bar(x=[int(c[2:]) for c in level_cols], y=share, name=model, legendgroup=model, showlegend=j == 0,
                       marker_color=colour, customdata=counts,
                       hovertemplate="score %{x}: %{y:.1%} (%{customdata:.0f})"),  # fmt: skip
                row=1,
                col=j + 1,
            )
    fig.update_layout(barmode="group", title="Score distribution (share of answers)", yaxis_tickformat=".0%")
    return fig


def _means(a: Analysis) -> go.Figure | None:
    s = _ok(a.scores)
    if s.empty:
        return None
    fig = go.Figure()
    for q in dict.fromkeys(s["question"]):
        sq = s[s["question"] == q]
        fig.add_trace(
            go.Scatter(
                x=sq["model"], y=sq["mean"], mode="markers", name=q, marker={"size": 10},
                error_y={"type": "data", "symmetric": False, "array": sq["ci_high"] - sq["mean"],
                         "arrayminus": sq["mean"] - sq["ci_low"]},
            )
        )  # fmt: skip
    fig.update_layout(title="Mean score with 95% CI", yaxis={"title": "score"}, scattermode="group")
    return fig


def _roc(a: Analysis) -> go.Figure | None:
    if a.roc.empty:
        return None
    auc = a.real_vs_generated.set_index("model")["auc"]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", line={"dash": "dot", "color": "grey"}))
    for model, r in a.roc.groupby("model", sort=False):
        label = f"{model} (AUC {auc.get(model, np.nan):.2f})"
        fig.add_trace(go.Scatter(x=r["fpr"], y=r["tpr"], mode="lines+markers", name=label,
                                 customdata=r["threshold"], hovertemplate="realism >= %{customdata}"))  # fmt: skip
    fig.update_layout(
        title="ROC: telling real from generated by realism score",
        xaxis={"title": "generated images passing (FPR)", "range": [0, 1]},
        yaxis={"title": "real images passing (TPR)", "range": [0, 1]},
    )
    return fig


def _agreement(a: Analysis) -> go.Figure | None:
    ag = _ok(a.agreement)
    ag = ag[ag["metric"].str.startswith("krippendorff")]
    if ag.empty:
        return None
    fig = go.Figure()
    for q in dict.fromkeys(ag["question"]):
        aq = ag[ag["question"] == q]
        fig.add_trace(
            go.Bar(x=aq["model"], y=aq["value"], name=q,
                   error_y={"type": "data", "symmetric": False, "array": aq["ci_high"] - aq["value"],
                            "arrayminus": aq["value"] - aq["ci_low"]})
        )  # fmt: skip
    for y, label in ((ALPHA_RELIABLE, "reliable"), (ALPHA_TENTATIVE, "tentative")):
        fig.add_hline(y=y, line_dash="dot", annotation_text=label)
    fig.update_layout(barmode="group", title="Inter-rater agreement: Krippendorff's alpha (ordinal) with 95% CI",
                      yaxis={"title": "alpha"})  # fmt: skip
    return fig


def _position(a: Analysis) -> go.Figure | None:
    if a.position.empty:
        return None
    fig = go.Figure()
    for q, p in a.position.groupby("question", sort=False):
        fig.add_trace(
            go.Scatter(x=p["position"], y=p["mean_centered"], mode="lines+markers", name=q, customdata=p["n"],
                       hovertemplate="position %{x}: %{y:+.3f} (n=%{customdata})")
        )  # fmt: skip
    fig.add_hline(y=0, line_dash="dot")
    fig.update_layout(title="Score by position shown (minus the model's mean)",
                      xaxis={"title": "position", "dtick": 1}, yaxis={"title": "score − model mean"})  # fmt: skip
    return fig


def _forced_choice(a: Analysis) -> go.Figure | None:
    t = None if a.forced_choice is None else _ok(a.forced_choice)
    if t is None or t.empty:
        return None
    label = t["rater_group"].astype(str) + np.where(t["n_panels"].nunique() > 1, " (" + t["n_panels"].astype(str)
                                                                                    + " panels)", "")  # fmt: skip
    fig = go.Figure(
        go.Bar(x=label, y=t["accuracy"], name="accuracy",
               error_y={"type": "data", "symmetric": False, "array": t["ci_high"] - t["accuracy"],
                        "arrayminus": t["accuracy"] - t["ci_low"]})
    )  # fmt: skip
    for chance in sorted(set(t["chance"])):
        fig.add_hline(y=chance, line_dash="dot", annotation_text=f"chance {chance:.0%}")
    fig.update_layout(title="Which one is real? Accuracy with exact 95% CI", yaxis={"title": "accuracy",
                      "range": [0, 1], "tickformat": ".0%"})  # fmt: skip
    return fig


def _forced_choice_models(a: Analysis) -> go.Figure | None:
    t = None if a.forced_choice_models is None else _ok(a.forced_choice_models)
    if t is None or t.empty:
        return None
    fig = go.Figure(
        go.Bar(x=t["model"], y=t["chosen_rate"], name="picked as real",
               error_y={"type": "data", "symmetric": False, "array": t["ci_high"] - t["chosen_rate"],
                        "arrayminus": t["chosen_rate"] - t["ci_low"]})
    )  # fmt: skip
    fig.update_layout(title="Share of screens on which each model was picked as real (exact 95% CI)",
                      yaxis={"title": "picked as real", "tickformat": ".0%"})  # fmt: skip
    return fig


def _ranking(a: Analysis) -> go.Figure | None:
    t = None if a.ranking is None else _ok(a.ranking)
    if t is None or t.empty:
        return None
    fig = go.Figure()
    for q, tq in t.groupby("question", sort=False):
        fig.add_trace(
            go.Scatter(x=tq["model"] + " (rank " + tq["rank_band"].astype(str) + ")", y=tq["strength"],
                       mode="markers", name=q, marker={"size": 10},
                       error_y={"type": "data", "symmetric": False, "array": tq["ci_high"] - tq["strength"],
                                "arrayminus": tq["strength"] - tq["ci_low"]})
        )  # fmt: skip
    fig.update_layout(title="Ranking: Bradley-Terry strength with 95% CI (bootstrap over raters)",
                      yaxis={"title": "log-strength"})  # fmt: skip
    return fig


def _ranking_wins(a: Analysis) -> go.Figure | None:
    w = a.ranking_wins
    if w is None or w.empty:
        return None
    question = str(w["question"].iloc[0])
    w = w[w["question"] == question]
    order = list(_ok(a.ranking).query("question == @question")["model"]) if a.ranking is not None else []
    order = order or sorted(set(w["model_a"]))
    m = w.pivot(index="model_a", columns="model_b", values="win_rate").reindex(index=order, columns=order)
    fig = go.Figure(
        go.Heatmap(z=m.to_numpy(dtype=float), x=order, y=order, zmin=0, zmax=1, colorscale="RdBu",
                   text=np.vectorize(lambda v: "" if np.isnan(v) else f"{v:.0%}")(m.to_numpy(dtype=float)),
                   texttemplate="%{text}", hovertemplate="%{y} above %{x}: %{z:.1%}<extra></extra>")
    )  # fmt: skip
    fig.update_layout(title=f"Win rate of the row model over the column model ({question})",
                      xaxis={"title": "column model"},
                      yaxis={"title": "row model", "autorange": "reversed"})  # fmt: skip
    return fig


def _catch(a: Analysis) -> go.Figure | None:
    t = None if a.catch is None else _ok(a.catch)
    if t is None or t.empty:
        return None
    fig = go.Figure(
        go.Bar(x=t["rater_id"], y=t["pass_rate"], marker_color=np.where(t["flagged"], "crimson", "steelblue"),
               customdata=t["n_catch"], hovertemplate="%{x}: %{y:.0%} of %{customdata} catch checks passed")
    )  # fmt: skip
    fig.update_layout(title="Catch-trial pass rate per rater (red: flagged)",
                      yaxis={"title": "pass rate", "range": [0, 1.05], "tickformat": ".0%"})  # fmt: skip
    return fig


def _marks(a: Analysis) -> go.Figure | None:
    grids = {m: g for m, g in (a.mark_grids or {}).items()}
    if not grids or a.marks is None or not int(a.marks["n_marks"].sum()):
        return None
    models = list(grids)
    cols = min(3, len(models))
    rows = -(-len(models) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=models, horizontal_spacing=0.06,
                        vertical_spacing=0.12)  # fmt: skip
    top = max(float(g.max()) for g in grids.values()) or 1.0
    for i, model in enumerate(models):
        g = grids[model]
        centres = (np.arange(g.shape[0]) + 0.5) / g.shape[0]
        fig.add_trace(
            go.Heatmap(z=g, x=centres, y=centres, zmin=0, zmax=top, coloraxis="coloraxis",
                       hovertemplate=f"{model}<br>x %{{x:.2f}}, y %{{y:.2f}}: %{{z:.3f}} marks per image"
                                     "<extra></extra>"),
            row=i // cols + 1, col=i % cols + 1,
        )  # fmt: skip
        fig.update_yaxes(autorange="reversed", scaleanchor=f"x{i + 1 if i else ''}", range=[1, 0],
                         row=i // cols + 1, col=i % cols + 1)  # fmt: skip
        fig.update_xaxes(range=[0, 1], row=i // cols + 1, col=i % cols + 1)
    fig.update_layout(title="Artifact marks per rated image (y down, as on screen)",
                      coloraxis={"colorscale": "Reds", "colorbar": {"title": "marks / image"}})  # fmt: skip
    return fig


def _timing(a: Analysis) -> go.Figure | None:
    t = a.timing
    if t is None or t.empty or "median_wall_seconds" not in t.columns:
        return None
    t = t[t["by"] == "rater"]
    if t.empty:
        return None
    fig = go.Figure([
        go.Bar(x=t["key"], y=t["median_active_seconds"], name="active (visible, not idle)"),
        go.Bar(x=t["key"], y=t["median_wall_seconds"], name="wall (shown to answered)"),
    ])  # fmt: skip
    fig.update_layout(barmode="group", title="Median seconds per screen, active and wall time",
                      yaxis={"title": "seconds"})  # fmt: skip
    return fig


def answers_over_time(df: pd.DataFrame) -> pd.DataFrame:
    """Answers per hour (studies spanning up to 3 days) or per day: ``period`` (UTC), ``answers``, ``cumulative``."""
    t = pd.to_datetime(df["answered_at"], utc=True).dropna() if len(df) else pd.Series(dtype="datetime64[ns, UTC]")
    if t.empty:
        return pd.DataFrame(columns=["period", "answers", "cumulative"])
    freq = "h" if (t.max() - t.min()) <= pd.Timedelta(days=3) else "D"
    per = t.dt.floor(freq).value_counts().sort_index()
    return pd.DataFrame({"period": per.index, "answers": per.to_numpy(), "cumulative": per.cumsum().to_numpy()})


def _progress(over_time: pd.DataFrame) -> go.Figure | None:
    if over_time.empty:
        return None
    fig = go.Figure(
        go.Scatter(x=over_time["period"], y=over_time["cumulative"], mode="lines+markers", name="answers", line_shape="hv")
    )
    fig.update_layout(title="Answers over time (cumulative)", yaxis={"title": "answers"})
    return fig


def _rater_progress(progress: pd.DataFrame | None) -> go.Figure | None:
    if progress is None or "rater_id" not in progress.columns or progress.empty:
        return None
    columns = [c for c in PROGRESS_COUNT_COLUMNS if c in progress.columns] or [
        c for c in progress.columns if c not in ("rater_id", "slot") and pd.api.types.is_numeric_dtype(progress[c])
    ]
    if not columns:
        return None
    fig = go.Figure([go.Bar(x=progress["rater_id"].astype(str), y=progress[c], name=c) for c in columns])
    fig.update_layout(barmode="group", title="Progress per rater")
    return fig


def _raters(a: Analysis) -> go.Figure | None:
    r = a.raters[a.raters["n_answers"].notna()]
    if r.empty:
        return None
    flags = [c for c in ("too_fast", "straight_lining", "outlier", "catch_failed") if c in r.columns]
    flagged = r[flags].fillna(False).astype(bool).any(axis=1)
    fig = go.Figure(
        go.Bar(x=r["rater_id"], y=r["n_answers"], marker_color=np.where(flagged, "crimson", "steelblue"),
               customdata=r["median_seconds"], hovertemplate="%{x}: %{y} answers, median %{customdata:.1f} s/trial")
    )  # fmt: skip
    fig.update_layout(title="Answers per rater (red: flagged too fast, straight-lining or outlier)",
                      yaxis={"title": "answers"})  # fmt: skip
    return fig


FIGURE_NAMES = ("score_distributions", "means", "roc", "agreement", "position", "progress", "raters", "rater_progress",
                "forced_choice", "forced_choice_models", "ranking", "ranking_wins", "catch", "timing", "marks")
"""Every figure :func:`figures` can draw, in its order (the admin page has a slot for each)."""


def figures(analysis: Analysis, df: pd.DataFrame, progress: pd.DataFrame | None = None) -> dict[str, go.Figure]:
    """Figures for the report, keyed by name; a figure whose data is not computable is left out.

    Names: ``score_distributions``, ``means``, ``roc``, ``agreement``, ``position``, ``progress`` (answers over
    time, from ``df``), ``raters`` (answers per rater, flagged raters in red) and, when a ``progress`` table with a
    ``rater_id`` column is given, ``rater_progress`` (its ``done``/``total``/``answered``/``assigned`` columns, or
    else its other numeric columns, per rater). Study designs, when the analysis has them: ``forced_choice``,
    ``forced_choice_models``, ``ranking``, ``ranking_wins`` (win-rate heatmap) and ``catch`` (pass rate per
    rater). ``timing``: median active and wall seconds per rater side by side; ``marks``: per-model heat maps of
    artifact marks (when the analysis has marks).
    """
    built = {
        "score_distributions": _score_distributions(analysis),
        "means": _means(analysis),
        "roc": _roc(analysis),
        "agreement": _agreement(analysis),
        "position": _position(analysis),
        "progress": _progress(answers_over_time(df)),
        "raters": _raters(analysis),
        "rater_progress": _rater_progress(progress),
        "forced_choice": _forced_choice(analysis),
        "forced_choice_models": _forced_choice_models(analysis),
        "ranking": _ranking(analysis),
        "ranking_wins": _ranking_wins(analysis),
        "catch": _catch(analysis),
        "timing": _timing(analysis),
        "marks": _marks(analysis),
    }
    for fig in built.values():
        if fig is not None:
            fig.update_layout(
                height=FIGURE_HEIGHT, template="plotly_white", margin={"t": 60, "l": 60, "r": 20, "b": 50}
            )
    return {k: v for k, v in built.items() if v is not None}


REPORT_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#222;
padding:0 1rem}
h1{margin-bottom:.2rem} .meta{color:#666;margin-top:0}
section{margin:2rem 0;border-top:1px solid #ddd;padding-top:1rem}
table.dataframe{border-collapse:collapse;font-size:.85rem;margin:.5rem 0 1rem}
table.dataframe th,table.dataframe td{border:1px solid #ddd;padding:.2rem .45rem;text-align:right}
table.dataframe th{background:#f4f4f4} .scroll{max-height:28rem;overflow:auto}
.notes li{color:#8a4b00} .nc{color:#8a4b00;font-style:italic}
"""


def _cell_text(x) -> str:
    """One table cell for people: blank for missing, whole numbers without decimals, p-values and other numbers
    rounded (3 significant digits below 1, 3 decimals above)."""
    if x is None or x is pd.NA or x is pd.NaT:
        return ""
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else ""
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        if not np.isfinite(x):
            return "" if np.isnan(x) else ("∞" if x > 0 else "−∞")
        if float(x).is_integer() and abs(x) < 1e15:
            return str(int(x))
        return f"{x:.3g}" if abs(x) < 0.001 else f"{x:.3f}"
    if isinstance(x, pd.Timestamp):
        return x.isoformat()
    return str(x)


def format_table(table: pd.DataFrame) -> pd.DataFrame:
    """The table as strings for a reader: rounded numbers, blanks (not ``NaN``/``<NA>``) for missing values."""
    return pd.DataFrame({c: [_cell_text(x) for x in table[c].tolist()] for c in table.columns}, index=table.index)


def _table_html(name: str, table: pd.DataFrame) -> str:
    if table is None or table.empty:
        return f'<p class="nc">{html.escape(name)}: no rows.</p>'
    body = format_table(table).to_html(index=False, escape=True, border=0)
    return f"<h3>{html.escape(name)}</h3><div class=\"scroll\">{body}</div>"


def render_html(
    analysis: Analysis,
    figs: Mapping[str, go.Figure],
    title: str,
    extra_tables: Mapping[str, pd.DataFrame] | None = None,
) -> str:
    """The report page for an analysis, its figures and any extra tables (e.g. ``progress``, ``answers_over_time``);
    plotly.js is inlined once, before the first figure."""
    tables = {**analysis.tables(), **(extra_tables or {})}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{REPORT_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">Bootstrap replicates: {analysis.n_boot}; seed: {analysis.seed}; '
        f"CI level: {analysis.ci_level:.0%}. Tables and figures: p2p_app.analysis.</p>",
    ]
    if analysis.notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in analysis.notes) + "</ul>")
    js_done = False
    present = [s for s in (*DESIGN_SECTIONS, *READING_SECTIONS) if any(n in tables for n in s[3])]
    for heading, text, fig_names, table_names in (*SECTIONS[:-1], *present, SECTIONS[-1]):
        parts.append(f"<section><h2>{html.escape(heading)}</h2><p>{html.escape(text)}</p>")
        for name in fig_names:
            fig = figs.get(name)
            if fig is None:
                continue
            parts.append(
                fig.to_html(full_html=False, include_plotlyjs=not js_done, div_id=f"fig-{name}",
                            config={"displaylogo": False, "responsive": True})
            )  # fmt: skip
            js_done = True
        shown = [n for n in fig_names if n in figs]
        missing = [n for n in fig_names if n not in figs and n != "rater_progress"]
        if missing and not shown:
            parts.append('<p class="nc">No figure: not computable (see the notes in the table below).</p>')
        for name in table_names:
            if name in tables:
                parts.append(_table_html(name, tables[name]))
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


DISCLOSURE_NOTE = (
    "Phase 1 (naive): raters read every image with no mention of synthesis, answering the study's questions and "
    "'Anything unusual about this image?'. Phase 2 (disclosed): told that some images were made by a computer "
    "model, they called each image again on a 6-point scale (1-3 synthetic, 4-6 real). noticed: share of images "
    "whose phase-1 text matches the keyword rule below (for real images: real images flagged, a false alarm); "
    "detected: share called correctly after disclosure (generated: sensitivity; real: specificity; all images: "
    "accuracy); difference: detected - noticed on the same raters. 95% CIs with raters random: the rater-clustered "
    "Korn-Graubard interval of the forced-choice analysis, and for the difference the cluster-robust variance of "
    "the paired difference with t on raters - 1 df; images are treated as fixed. The keyword rule is a screen, not a "
    "reading: every phase-1 text is listed below (and in the long export, question 'unusual') for manual coding."
)


def disclosure_section(df: pd.DataFrame, words: Sequence[str], ci_level: float = 0.95) -> str:
    """The report section of the naive → disclosed design: the table per model, the rule, the texts."""
    table = disclosure_table(df, words, ci_level)
    texts = unusual_texts(df, words)
    return "\n".join([
        '<section><h2>Detection before and after disclosure (naive → disclosed)</h2>',
        f"<p>{html.escape(DISCLOSURE_NOTE)}</p>",
        f"<p><b>Keyword rule:</b> {html.escape(rule_text(words))}.</p>",
        _table_html("disclosure", table),
        _table_html("unusual_texts", texts),
        "</section>",
    ])


def build_report(
    df: pd.DataFrame,
    title: str = "Prompt to Polyp: evaluation report",
    progress: pd.DataFrame | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
    analysis: Analysis | None = None,
    models: tuple[str, ...] | list[str] = (),
    exclude_flagged_raters: bool = False,
    marks: pd.DataFrame | None = None,
    pool: Mapping[str, tuple[pd.DataFrame, float]] | None = None,
    metrics=None,
    notice_words: Sequence[str] | None = None,
    blinding=None,
) -> str:
    """Analyse ``df`` (or use ``analysis`` if given) and return one self-contained HTML page with every figure and the
    table behind it. ``progress``: optional per-rater progress table (e.g. ``rater_id`` plus numeric columns such as
    answered / assigned), shown as a table and a bar chart. ``models``: the study's models, so that a model without
    ratings is listed as not computable rather than left out. ``exclude_flagged_raters``: see
    :func:`p2p_app.analysis.analyze` (ignored when ``analysis`` is given). ``marks``: the study's marked points
    (``Storage.marks_frame``), drawn as per-model heat maps. ``pool``: source name → (tidy frame, weight) whose
    rankings are fitted together (``ranking_pooled``, :func:`p2p_app.contextual_bt.pooled_table`), e.g.
    ``{"study": (df, 1.0), "arena": (live, 0.5)}``. ``metrics``: the tables of ``p2p metrics``
    (:class:`p2p_app.metrics_run.LoadedMetrics`), shown as "Do the metrics agree with the clinicians?".
    ``blinding``: the study's blinding index (:class:`p2p_app.analysis.blinding_index.BlindingIndex`), shown as
    "Blinding index". Practice answers are left out of everything."""
    df = without_practice(df)
    analysis = analysis if analysis is not None else analyze(df, n_boot=n_boot, seed=seed, models=models,
                                                             exclude_flagged_raters=exclude_flagged_raters,
                                                             marks=marks)
    extra = {"answers_over_time": answers_over_time(df)}
    if analysis.ranking is not None:  # the contextual fit and the robustness line next to the plain ranking
        kept = df[~df["rater_id"].astype(str).isin(analysis.excluded_raters).to_numpy()]
        extra.update(contextual_bt.report_tables(kept, analysis.ranking, analysis.ci_level))
    if pool:  # other sources' rankings (the live arena) fitted together with this one, each with its weight
        extra["ranking_pooled"] = contextual_bt.pooled_table(pool, analysis.ci_level)
    if progress is not None:
        extra["progress"] = progress
    page = render_html(analysis, figures(analysis, df, progress), title, extra)
    if has_disclosure(df):  # the naive → disclosed design; notice_words: the study's keyword rule
        page = page.replace("</body></html>", disclosure_section(df, notice_words or DEFAULT_NOTICE_WORDS,
                                                                 analysis.ci_level) + "\n</body></html>")
    if blinding is not None:
        page = page.replace("</body></html>", blinding_section(blinding) + "\n</body></html>")
    if metrics is None:
        return page
    from .metrics_report import PLOTLY_MARK, section_html
    from .metrics_run import summarize

    section = section_html(metrics, summarize(metrics, df, n_boot=n_boot, seed=seed),
                           include_plotlyjs=PLOTLY_MARK not in page, table_html=_table_html)
    return page.replace("</body></html>", section + "\n</body></html>")


BLINDING_TEXT = (
    "After each screen's ratings were stored, raters were asked which model made each image (the study's models, "
    "'a real image' where the study shows real images, or don't know). James' index (James et al. 1996) over all "
    "guesses: 0 = every guess right, 0.5 = guesses unrelated to the truth, 1 = every answer don't know; below 0.5 "
    "with its upper limit below 0.5 means raters recognised models. Bang's index (Bang et al. 2004) per arm: "
    "(correct - incorrect) / images, 1 = every image of that model recognised; with K options, random guessing "
    "gives bang_chance = (1 - share don't know)(2/K - 1), not 0. ci_low/high: the published (Wald) intervals, which "
    "treat guesses as independent; boot_ci_low/high: raters resampled with replacement, estimate +/- t(raters - 1) "
    "x bootstrap SE (read these: a rater makes many guesses). Raters: correct guesses among answered ones against chance 1/K (exact one-sided binomial, "
    "Holm across raters); flagged when the adjusted p is below 0.05. Practice items and catch screens are left out."
)


def blinding_section(bi) -> str:
    """The "Blinding index" section of a study with ``blinding_index``: James overall, Bang per arm, raters."""
    tables = "".join(_table_html(name, table) for name, table in bi.tables().items())
    return f"<section><h2>Blinding index</h2><p>{html.escape(BLINDING_TEXT)}</p>{tables}</section>"

