"""Statistics on the tidy ratings frame (see docs/CONTRACTS.md).

Every public function takes the tidy frame (one row per answer) and returns a tidy ``DataFrame``; ``analyze`` runs
them all and returns an immutable :class:`Analysis`. Every public name is importable from ``p2p_app.analysis``
(``__all__`` lists them); the package's modules build their tables on one shared preparation:

* :mod:`~p2p_app.analysis.preparation`: the numeric answers as integer codes (``prepare`` → ``Prepared``), the
  defaults and the output schemas (``*_COLUMNS``);
* :mod:`~p2p_app.analysis.crossed`: intervals for means with raters and images as crossed random effects, and the
  score table per model × question;
* :mod:`~p2p_app.analysis.compare`: real vs generated (AUC, pass rates, the reader study, ROC) and the pairwise
  comparison of models;
* :mod:`~p2p_app.analysis.reliability`: inter-rater agreement (α, κ) and intra-rater consistency;
* :mod:`~p2p_app.analysis.raters`: position bias, time per trial, the per-rater table and its flags;
* this module: the overview, the whole analysis (:func:`analyze`), the sensitivity table and the mark heat maps.

Conventions, applied everywhere:

* Numeric questions are those with at least one non-NaN ``value``, or with "can't judge" answers and no
  multi-select choices; other questions (multi-select, free text) are ignored here.
* Practice answers (``practice`` True: items shown first so a rater learns the scale) are dropped before anything
  else (:func:`p2p_app.tidy.without_practice`, called by :func:`analyze` and by the preparation every table uses):
  they enter no statistic, count, figure or heat map.
* Time per trial is the **active** time (``active_seconds``: page visible and not idle) where the page measured it,
  else the wall time (``seconds``); the timing table shows both.
* Rows with ``cant_judge`` True never enter a score; they are counted in ``n_cant_judge``.
* Rows with ``is_repeat`` True are used **only** for intra-rater consistency. Every other statistic uses each rater's
  first answer, so a repeated image does not count twice.
* Whatever cannot be computed (no ratings, one rater, no real controls, too few pairs…) gives a row whose ``note``
  starts with ``"not computable: "`` and says why; numbers on such rows are NaN. A computable row has ``note == ""``.
* Intervals (``ci_level``, default 95 %):

  - Means and pass rates, per model and question, and paired differences between models: **crossed random
    effects** (generalizability theory). An answer is ``y = μ + a_rater + b_image + e`` with raters and images both
    random; σ²_rater, σ²_image and σ²_residual are estimated by the method of moments from the within-rater,
    within-image and total sums of squares, whose expectations hold for any pattern of who rated what (Henderson's
    Method 3; Gao & Owen 2017, "Efficient moment calculations for variance components in large unbalanced crossed
    random effects models", Electron J Stat 11:1235), truncated at zero (non-negative least squares). The variance
    of the mean of the answers under the actual design is ``σ²_r Σ n_r² / N² + σ²_i Σ m_i² / N² + σ²_e / N``
    (n_r answers per rater, m_i per image; fully crossed: σ²_r/R + σ²_i/I + σ²_e/N) and the interval is a t
    interval with Satterthwaite degrees of freedom (the variance written as a combination of effective mean squares
    with R − 1, I − 1 and N − R − I + 1 df; exact for the balanced two-way ANOVA).
    Why not the bootstrap: resampling raters and images together (the "pigeonhole" bootstrap) is biased for crossed
    designs — it counts the residual variance up to three times, too wide with sparse overlap — and with few raters
    its percentile interval is too narrow (McCullagh 2000, "Resampling and exchangeable arrays", Bernoulli 6:285;
    Owen 2007, "The pigeonhole bootstrap", Ann Appl Stat 1:386; Owen & Eckles 2012, Ann Appl Stat 6:895). A mixed
    model fit (REML, statsmodels MixedLM) would estimate the same components but costs minutes at 1,000,000 rows;
    the moment estimates are a few ``bincount`` calls. ``benchmarks/bench_coverage.py`` measures the coverage.
  - Real vs generated AUC: the Obuchowski–Rockette reader-study analysis (readers and cases random; Hillis ddf),
    see :mod:`p2p_app.mrmc`; the jackknife deletes a prompt's images together, and the interval is formed on the
    logit scale so it stays in [0, 1] (:func:`auc_interval`).
  - Krippendorff's α: raters and images as crossed random samples — a two-way jackknife (delete one rater, one
    image, one answer; variances combined as V_r + V_i − V_answer, Owen 2007) around the jackknife bias-corrected
    α, deterministic (see ``reliability._alpha_jackknife``). Needs three or more raters.
  - Fleiss' κ: percentile interval over ``n_boot`` bootstrap replicates of the units (images), drawn from
    ``numpy.random.default_rng`` seeded with ``seed``: identical inputs give identical outputs.

* Inter-rater agreement (α, κ, and the consensus in the rater table) uses each rater's **first answer per image and
  question** (by answer time), even when the same image reappears on another screen (e.g. a prompt's real image on
  each seed's side-by-side screen): a second answer by the same rater is not another rater.

Bootstrap scheme for κ (α's jackknife replicates use the same pattern formulas):

* Units (rated images) resampled with replacement. Units with the same count pattern
  are interchangeable, so a replicate is a multinomial draw over the distinct patterns; α and κ of a replicate are
  evaluated from pattern totals with the same formulas the libraries use (``krippendorff.alpha``,
  ``statsmodels.stats.inter_rater.fleiss_kappa``); κ's point estimate comes from the library itself, α's from the
  same pattern formulas (the library's unit × V × V array costs 0.3 s at 1,000,000 rows); the tests check that
  both paths agree with the libraries. (Calling the libraries once per replicate would cost minutes at 1,000,000
  rows.) The units × categories table for Fleiss' κ is what ``aggregate_raters`` returns, built with one
  ``bincount`` (``aggregate_raters`` loops over units in Python); the tests check the two tables are equal.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..designs import (
    catch_kind_table,
    catch_table,
    catch_trial_mask,
    flagged_raters,
    forced_choice_accuracy,
    forced_choice_groups,
    forced_choice_models,
    forced_choice_screens,
    ranking_tables,
)
from ..hrauc import has_confidences
from ..mrmc import or_analysis
from ..tidy import (  # re-exported: the contract lives there
    ALIGNMENT,
    ALL,
    CHOSEN_REAL,
    GENERATED_SOURCE,
    NOT_COMPUTABLE,
    RANK_PREFIX,
    REAL_MODEL,
    REAL_SOURCE,
    REALISM,
    TIDY_COLUMNS,
    TIDY_DEFAULTS,
    TIDY_DTYPES,
    check_ratings_frame,
    empty_ratings_frame,
    is_design_question,
    not_computable,
    question_order,
    result_table,
    without_practice,
)
from .compare import (
    auc_interval,
    inferred_roc,
    pairwise_table,
    pairwise_tests,
    real_table,
    real_vs_generated,
    reader_study,
    reader_study_result,
    reader_study_table,
    realism_pilot,
    roc_table,
)
from .crossed import (
    CrossedMean,
    bounded_interval,
    crossed_mean_ci,
    mean_ci_note,
    score_level_columns,
    score_summary,
    score_table,
)
from .preparation import (
    AGREEMENT_COLUMNS,
    DEFAULT_CI_LEVEL,
    DEFAULT_N_BOOT,
    DEFAULT_SEED,
    INTRA_COLUMNS,
    MAX_SCORE_COLUMNS,
    MIN_PAIRS,
    MIN_REPEAT_PAIRS,
    OVERVIEW_COLUMNS,
    PAIRWISE_COLUMNS,
    PASS_THRESHOLD,
    POSITION_COLUMNS,
    POSITION_TEST_COLUMNS,
    RATER_COLUMNS,
    READER_STUDY_COLUMNS,
    REAL_VS_GENERATED_COLUMNS,
    ROC_COLUMNS,
    SCALE_LEVELS,
    SCORE_COLUMNS,
    TIMING_COLUMNS,
    Prepared,
    prepare,
    stream_rng,
)
from .preparation import dense as _dense  # noqa: F401  (old name: benchmarks/bench_coverage.py)
from .raters import (
    RaterThresholds,
    position_bias,
    position_tables,
    rater_catch_table,
    rater_summary,
    rater_table,
    rating_times,
    timing_table,
)
from .reliability import (
    agreement,
    agreement_table,
    fleiss_table,
    forced_choice_agreement,
    intra_rater,
    intra_table,
)
from .reliability import agreement_scope as _agreement_scope  # noqa: F401  (old name: benchmarks/bench_coverage.py)

__all__ = [  # fmt: skip
    "AGREEMENT_COLUMNS", "ALIGNMENT", "ALL", "Analysis", "CHOSEN_REAL", "CrossedMean", "DEFAULT_CI_LEVEL",
    "DEFAULT_N_BOOT", "DEFAULT_SEED", "GENERATED_SOURCE", "INTRA_COLUMNS", "MARK_GRID", "MARK_SUMMARY_COLUMNS",
    "MAX_SCORE_COLUMNS", "MIN_PAIRS", "MIN_REPEAT_PAIRS", "NOT_COMPUTABLE", "OVERVIEW_COLUMNS", "PAIRWISE_COLUMNS",
    "PASS_THRESHOLD", "POSITION_COLUMNS", "POSITION_TEST_COLUMNS", "RANK_PREFIX", "RATER_COLUMNS",
    "READER_STUDY_COLUMNS", "REALISM", "REAL_MODEL", "REAL_SOURCE", "REAL_VS_GENERATED_COLUMNS", "ROC_COLUMNS",
    "RaterThresholds", "SCALE_LEVELS", "SCORE_COLUMNS", "SENSITIVITY_COLUMNS", "TIDY_COLUMNS", "TIDY_DEFAULTS",
    "TIDY_DTYPES", "TIMING_COLUMNS", "agreement", "analyze", "auc_interval", "bounded_interval", "catch_kind_table",
    "catch_table", "catch_trial_mask", "check_ratings_frame", "crossed_mean_ci", "empty_ratings_frame",
    "flagged_raters", "fleiss_table", "forced_choice_accuracy", "forced_choice_agreement", "forced_choice_groups",
    "forced_choice_models", "forced_choice_screens", "intra_rater", "is_design_question", "main_estimates",
    "mark_heatmaps", "mean_ci_note", "not_computable", "or_analysis", "overview", "pairwise_tests", "position_bias",
    "question_order", "ranking_tables", "rater_summary", "rating_times", "reader_study", "real_vs_generated",
    "realism_pilot", "result_table", "score_level_columns", "score_summary", "sensitivity_table",
    "without_practice",
]
"""The public face: every name importable from ``p2p_app.analysis`` before it became a package (the tidy-frame
contract and the study-design tables are re-exported from :mod:`p2p_app.tidy` and :mod:`p2p_app.designs`)."""

# --------------------------------------------------------------------------------------------------------------------
# Overview and the whole analysis
# --------------------------------------------------------------------------------------------------------------------


def overview(df: pd.DataFrame) -> pd.DataFrame:
    """Counts that frame every other table (answers, scored, can't judge, repeats, raters, items, images, models,
    questions, first and last answer). Columns: ``quantity``, ``value`` (strings)."""
    return _overview(df, prepare(df))


def _overview(df: pd.DataFrame, prep: Prepared) -> pd.DataFrame:
    r = prep.rows
    t = r["t"].to_numpy()
    t = t[t != np.iinfo(np.int64).min]
    unit = pd.DatetimeIndex(df["answered_at"]).unit if len(t) else "ns"

    def when(x) -> str:
        return pd.Timestamp(int(x), unit=unit, tz="UTC").isoformat()

    q = [
        ("answers (all questions)", prep.n_answers),
        ("answers to numeric questions", len(r)),
        ("scored first answers", len(prep.scored)),
        ("can't judge", int(r["cant"].sum())),
        ("repeat answers", int(r["repeat"].sum())),
        ("raters", len(prep.raters)),
        ("items", prep.n_items),
        ("images", prep.n_images),
        ("models (incl. real)", ", ".join(prep.models) or "none"),
        ("numeric questions", ", ".join(prep.questions) or "none"),
        ("first answer", when(t.min()) if len(t) else ""),
        ("last answer", when(t.max()) if len(t) else ""),
    ]
    return pd.DataFrame([(k, str(v)) for k, v in q], columns=list(OVERVIEW_COLUMNS))


@dataclasses.dataclass(frozen=True, eq=False)
class Analysis:
    """Every table of the analysis (built by :func:`analyze`; each function's docstring gives its columns)."""

    overview: pd.DataFrame
    scores: pd.DataFrame
    real_vs_generated: pd.DataFrame
    reader_study: pd.DataFrame
    roc: pd.DataFrame
    agreement: pd.DataFrame
    intra_rater: pd.DataFrame
    position: pd.DataFrame
    position_test: pd.DataFrame
    timing: pd.DataFrame
    raters: pd.DataFrame
    pairwise: pd.DataFrame
    notes: tuple[str, ...]
    n_boot: int
    seed: int
    ci_level: float
    # study designs (p2p_app.designs): None when the frame has no such answers
    forced_choice: pd.DataFrame | None = None
    forced_choice_models: pd.DataFrame | None = None
    forced_choice_groups: pd.DataFrame | None = None
    forced_choice_agreement: pd.DataFrame | None = None
    ranking: pd.DataFrame | None = None
    ranking_wins: pd.DataFrame | None = None
    catch: pd.DataFrame | None = None
    catch_kinds: pd.DataFrame | None = None
    """Pass rate per catch kind (known real, noise, flipped, blank, wrong anatomy) with exact intervals."""
    sensitivity: pd.DataFrame | None = None
    """With ``exclude_flagged_raters``: the main estimates with all raters and without the flagged ones."""
    excluded_raters: tuple[str, ...] = ()
    marks: pd.DataFrame | None = None
    """Artifact marks per model (:func:`mark_heatmaps`), when marks were given."""
    mark_grids: Mapping[str, np.ndarray] | None = None
    """Model → marks per image rated on the fixed grid (rows = y from the top, columns = x), when marks were given."""
    inferred_roc: pd.DataFrame | None = None
    """The marks' inferred ROC (:func:`inferred_roc`, HrAuc), when the marks carry confidences."""

    def tables(self) -> dict[str, pd.DataFrame]:
        """Table name → table, in reading order."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {name: v for name, v in values.items() if isinstance(v, pd.DataFrame)}


def analyze(
    df: pd.DataFrame,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
    ci_level: float = DEFAULT_CI_LEVEL,
    models: Sequence[str] = (),
    thresholds: RaterThresholds = RaterThresholds(),
    exclude_flagged_raters: bool = False,
    marks: pd.DataFrame | None = None,
) -> Analysis:
    """Run every statistic on the tidy frame ``df`` (its practice answers dropped first: they enter nothing).
    ``marks``: the study's marked points (``p2p_app.tidy.MARK_COLUMNS``) for the artifact heat maps.
    ``models``: models expected in the study (listed even without answers). Deterministic for a given ``seed``.

    Forced-choice, ranking and catch-trial tables (:mod:`p2p_app.designs`) are filled only when ``df`` has such
    answers. ``exclude_flagged_raters``: raters flagged by the catch trials (``catch_failed``) are left out of every
    statistic; the ``catch`` table still lists them, ``excluded_raters`` names them and ``sensitivity`` shows the
    main estimates both ways (all raters, and without the flagged ones)."""
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    if not 0 < ci_level < 1:
        raise ValueError(f"ci_level must be between 0 and 1 (exclusive), got {ci_level}")
    check_ratings_frame(df)
    df = without_practice(df)  # the choke point: practice answers never reach a statistic below
    if not exclude_flagged_raters:
        return _analyze(df, n_boot, seed, ci_level, models, thresholds, marks)
    full = _analyze(df, n_boot, seed, ci_level, models, thresholds, marks)
    flagged = flagged_raters(full.catch)
    if not flagged:
        note = "Excluding raters flagged by catch trials: none flagged, the results are those of all raters."
        return dataclasses.replace(full, notes=(*full.notes, note))
    kept_df = df[~df["rater_id"].astype(str).isin(flagged).to_numpy()]
    kept = _analyze(kept_df, n_boot, seed, ci_level, models, thresholds, marks)
    note = (f"Raters flagged by catch trials are excluded from every statistic above: {', '.join(flagged)} "
            f"(the sensitivity table shows the main estimates with and without them).")  # fmt: skip
    return dataclasses.replace(kept, catch=full.catch, catch_kinds=full.catch_kinds, raters=full.raters, excluded_raters=flagged,
                               sensitivity=sensitivity_table(full, kept), notes=(*kept.notes, note))  # fmt: skip


SENSITIVITY_COLUMNS = (
    "table", "key", "estimate_all", "ci_low_all", "ci_high_all", "estimate_kept", "ci_low_kept", "ci_high_kept",
    "change",
)  # fmt: skip


def main_estimates(a: Analysis) -> pd.DataFrame:
    """The headline estimates of an analysis, one row each: ``table``, ``key``, ``estimate``, ``ci_low``,
    ``ci_high`` (mean score per model and question, forced-choice accuracy and chosen-as-real rates, ranking
    strengths)."""
    parts = []

    def add(name: str, t: pd.DataFrame | None, key_cols: Sequence[str], est: str, lo: str, hi: str) -> None:
        if t is None or t.empty:
            return
        t = t[~t["note"].astype(str).str.startswith(NOT_COMPUTABLE)] if "note" in t.columns else t
        if t.empty:
            return
        key = t[list(key_cols)].astype(str).agg(" / ".join, axis=1)
        parts.append(pd.DataFrame({"table": name, "key": key.to_numpy(), "estimate": t[est].to_numpy(dtype=float),
                                   "ci_low": t[lo].to_numpy(dtype=float), "ci_high": t[hi].to_numpy(dtype=float)}))

    add("scores", a.scores, ("model", "question"), "mean", "ci_low", "ci_high")
    add("forced_choice", a.forced_choice, ("rater_group", "n_panels"), "accuracy", "ci_low", "ci_high")
    add("forced_choice_models", a.forced_choice_models, ("model",), "chosen_rate", "ci_low", "ci_high")
    add("ranking", a.ranking, ("question", "model"), "strength", "ci_low", "ci_high")
    if not parts:
        return pd.DataFrame(columns=["table", "key", "estimate", "ci_low", "ci_high"])
    return pd.concat(parts, ignore_index=True)


def sensitivity_table(full: Analysis, kept: Analysis) -> pd.DataFrame:
    """Headline estimates (:func:`main_estimates`) with all raters and without the excluded ones, side by side;
    ``change`` = kept − all. Columns: ``SENSITIVITY_COLUMNS``."""
    a, b = main_estimates(full), main_estimates(kept)
    m = a.merge(b, on=["table", "key"], how="outer", suffixes=("_all", "_kept"), sort=False)
    m["change"] = m["estimate_kept"] - m["estimate_all"]
    return m.loc[:, list(SENSITIVITY_COLUMNS)]


def _analyze(
    df: pd.DataFrame,
    n_boot: int,
    seed: int,
    ci_level: float,
    models: Sequence[str],
    thresholds: RaterThresholds,
    marks: pd.DataFrame | None = None,
) -> Analysis:
    prep = prepare(df, models)
    position, position_test = position_tables(prep)
    catch = rater_catch_table(df, thresholds)
    raters = rater_table(prep, thresholds, catch)
    designs = _design_tables(df, n_boot, seed, ci_level)
    designs["catch"] = catch
    designs["catch_kinds"] = catch_kind_table(df, ci_level)
    auc_result = reader_study_result(prep, REALISM, ci_level)  # after the rater table: lower peak memory
    notes = []
    used = [k for k, v in designs.items() if v is not None and k in ("forced_choice", "ranking", "catch")]
    if prep.rows.empty and not used:
        notes.append("No ratings yet: every statistic is not computable.")
    elif prep.rows.empty:
        notes.append(f"No score answers (this study has {', '.join(used)} answers): the score tables are not "
                     "computable.")  # fmt: skip
    else:
        if prep.scored["rater"].nunique() < 2:
            notes.append("Only one rater: agreement statistics are not computable.")
        if not prep.is_real.any():
            notes.append("No real control images: real-vs-generated AUC is not computable.")
    for flag in ("too_fast", "straight_lining", "outlier", "catch_failed"):
        ids = raters.loc[raters[flag].fillna(False).astype(bool).to_numpy(), "rater_id"].tolist()
        if ids:
            notes.append(f"Raters flagged {flag}: {', '.join(ids)}.")
    return Analysis(
        overview=_overview(df, prep),
        scores=score_table(prep, ci_level),
        real_vs_generated=real_table(prep, auc_result, ci_level, REALISM),
        reader_study=reader_study_table(prep, auc_result),
        roc=roc_table(prep, REALISM),
        agreement=agreement_table(prep, n_boot, stream_rng(seed, "agreement"), ci_level, "ordinal"),
        intra_rater=intra_table(prep, MIN_REPEAT_PAIRS),
        position=position,
        position_test=position_test,
        timing=timing_table(prep),
        raters=raters,
        pairwise=pairwise_table(prep, MIN_PAIRS, ci_level),
        notes=tuple(notes),
        n_boot=n_boot,
        seed=seed,
        ci_level=ci_level,
        **designs,
        **(dict(zip(("marks", "mark_grids"), mark_heatmaps(df, marks))) if marks is not None else {}),
        **({"inferred_roc": inferred_roc(df, marks, ci_level, models)} if has_confidences(marks) else {}),
    )


MARK_GRID = 10
"""Cells per side of the artifact heat maps' fixed grid over the image (each cell is 1/10 of its width)."""
MARK_SUMMARY_COLUMNS = (
    "model", "n_images", "n_marks", "marks_per_image", "peak_x", "peak_y", "peak_density", "note",
)  # fmt: skip


def mark_heatmaps(
    df: pd.DataFrame, marks: pd.DataFrame, bins: int = MARK_GRID
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Where raters marked images as looking wrong, per model: a 2-D histogram of the marked points on a fixed
    ``bins`` × ``bins`` grid over the image (x right, y down), divided by the number of images of that model rated
    (one image shown on one trial = one; a model with more images rated does not look worse for it), so a cell
    reads "marks per rated image". Practice answers and catch trials are left out (their marks too), and only
    marks on trials in ``df`` count (so excluded raters' marks go with them).

    Returns (summary table with ``MARK_SUMMARY_COLUMNS``: marks per image, the densest cell's centre and value;
    model → grid array, rows = y from the top)."""
    check_ratings_frame(df)
    df = without_practice(df)
    in_catch = catch_trial_mask(df)
    if in_catch is not None:
        df = df[~in_catch]
    shown = df.drop_duplicates(["trial_id", "image_id"])[["trial_id", "image_id", "model", "source"]]
    n_images = shown.groupby("model", sort=False).size()
    real = set(shown.loc[shown["source"] == REAL_SOURCE, "model"].astype(str))
    order = sorted(str(m) for m in n_images.index if str(m) in real) + sorted(
        str(m) for m in n_images.index if str(m) not in real
    )
    on = marks[["trial_id", "image_id", "x", "y"]].merge(shown[["trial_id", "image_id", "model"]],
                                                           on=["trial_id", "image_id"], how="inner")
    edges = np.linspace(0.0, 1.0, bins + 1)
    grids: dict[str, np.ndarray] = {}
    rows = []
    for model in order:
        pts = on[on["model"].astype(str) == model]
        n = int(n_images[model])
        counts, _, _ = np.histogram2d(pts["y"].to_numpy(dtype=float), pts["x"].to_numpy(dtype=float),
                                      bins=[edges, edges])
        grid = counts / n
        grids[model] = grid
        row = {"model": model, "n_images": n, "n_marks": len(pts), "marks_per_image": len(pts) / n}
        if len(pts):
            iy, ix = np.unravel_index(int(np.argmax(grid)), grid.shape)
            row.update(peak_x=(ix + 0.5) / bins, peak_y=(iy + 0.5) / bins, peak_density=float(grid[iy, ix]))
        else:
            row["note"] = "no marks on this model's images"
        rows.append(row)
    if not rows:
        rows = [{"model": ALL, "n_images": 0, "n_marks": 0, "note": not_computable("no images rated")}]
    table = result_table(rows, MARK_SUMMARY_COLUMNS)
    for c in ("n_images", "n_marks"):
        table[c] = table[c].astype("int64")
    return table, grids


def _design_tables(df: pd.DataFrame, n_boot: int, seed: int, ci_level: float) -> dict[str, pd.DataFrame | None]:
    """Forced-choice and ranking tables, each ``None`` when the frame has no such answers (checked on the distinct
    question labels: free for a rating-only study)."""
    questions = [str(q) for q in pd.unique(df["question"])] if len(df) else []
    out: dict[str, pd.DataFrame | None] = dict.fromkeys(
        ("forced_choice", "forced_choice_models", "forced_choice_groups", "forced_choice_agreement", "ranking",
         "ranking_wins"))  # fmt: skip
    if CHOSEN_REAL in questions:
        screens = forced_choice_screens(df)
        out["forced_choice"] = forced_choice_accuracy(screens, ci_level)
        out["forced_choice_models"] = forced_choice_models(screens, ci_level)
        out["forced_choice_groups"] = forced_choice_groups(screens, ci_level)
        out["forced_choice_agreement"] = forced_choice_agreement(screens, n_boot, stream_rng(seed, "forced_choice"),
                                                                 ci_level)  # fmt: skip
    if any(q.startswith(RANK_PREFIX) for q in questions):
        out["ranking"], out["ranking_wins"] = ranking_tables(df, n_boot, stream_rng(seed, "ranking"), ci_level)
    return out
