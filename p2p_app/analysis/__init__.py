"""Statistics on the tidy ratings frame (see docs/CONTRACTS.md).

Every public function takes the tidy frame (one row per answer) and returns a tidy ``DataFrame``; ``analyze`` runs
them all and returns an immutable :class:`Analysis`.

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
    α, deterministic (see ``_alpha_jackknife``). Needs three or more raters.
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
import functools
import itertools
import re
import warnings
from collections.abc import Mapping, Sequence

import krippendorff
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats
from scipy.optimize import nnls
from sklearn.metrics import roc_auc_score, roc_curve
from statsmodels.stats.inter_rater import cohens_kappa, fleiss_kappa
from statsmodels.stats.multitest import multipletests

# --------------------------------------------------------------------------------------------------------------------
# The tidy frame
# --------------------------------------------------------------------------------------------------------------------

from .mrmc import or_analysis  # noqa: E402
from .tidy import (  # noqa: E402  (re-exported: the contract lives there)
    ALL,
    ALIGNMENT,
    NOT_COMPUTABLE,
    not_computable,
    result_table,
    GENERATED_SOURCE,
    REAL_MODEL,
    REAL_SOURCE,
    REALISM,
    TIDY_COLUMNS,
    TIDY_DEFAULTS,
    TIDY_DTYPES,
    check_ratings_frame,
    empty_ratings_frame,
    question_order,
    without_practice,
)
from .tidy import CHOSEN_REAL, RANK_PREFIX, is_design_question  # noqa: E402
from .designs import (  # noqa: E402
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

"""Value of the ``model``/``rater_id`` column on rows that pool every model or rater."""

SCALE_LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5)
"""Score levels that always get an ``n_<level>`` column in the score table; any other whole-number level that
occurs (studies allow 2–11-level scales, e.g. 0–10) gets its own column too."""
PASS_THRESHOLD = 4.0
"""A realism score at or above this counts as "passes as real"."""

DEFAULT_N_BOOT = 1000
DEFAULT_SEED = 0
DEFAULT_CI_LEVEL = 0.95
MAX_SCORE_COLUMNS = 21
"""At most this many ``n_<level>`` columns; a question with more distinct values is treated as continuous."""
MIN_REPEAT_PAIRS = 5
"""Fewest (first answer, repeat) pairs for an intra-rater statistic."""
MIN_PAIRS = 5
"""Fewest matched (prompt, seed) pairs for a pairwise model comparison."""

_ALPHA_BLOCK = 1 << 22
"""Largest number of array elements per block of the α jackknife (pattern-value combinations × V × V)."""


@dataclasses.dataclass(frozen=True)
class RaterThresholds:
    """Thresholds for the per-rater quality flags (all inclusive)."""

    too_fast_seconds: float = 1.5
    """``too_fast`` when the rater's median seconds per image (trial seconds / panels; a trial's seconds are its
    active time where the page measured it, else its wall time) is below this."""
    straight_lining_share: float = 0.8
    """``straight_lining`` when one score makes up at least this share of the rater's scored answers."""
    min_answers: int = 10
    """Fewest scored answers before ``straight_lining``/``outlier`` can be raised."""
    min_consensus_corr: float = 0.2
    """``outlier`` when the correlation with the consensus (other raters' mean) is below this…"""
    max_consensus_bias: float = 1.0
    """…or when the mean difference from the consensus is at least this many scale points."""
    min_catch_pass_rate: float = 0.75
    """``catch_failed`` when the rater passes fewer than this share of their catch-trial checks…"""
    min_catch_answers: int = 3
    """…and has at least this many checks (:mod:`p2p_app.designs`)."""






# --------------------------------------------------------------------------------------------------------------------
# Output schemas
# --------------------------------------------------------------------------------------------------------------------

OVERVIEW_COLUMNS = ("quantity", "value")
SCORE_COLUMNS = (
    "model", "source", "question", "n", "n_cant_judge", "n_raters", "n_items", "n_images",
    "mean", "median", "sd", "se", "df", "ci_low", "ci_high", *(f"n_{k}" for k in SCALE_LEVELS), "note",
)  # fmt: skip
"""Score table columns when every answer is on a 1–5 scale; other levels add ``n_<level>`` columns in order
(see :func:`score_level_columns`)."""
REAL_VS_GENERATED_COLUMNS = (
    "model", "n_real", "n_generated", "auc", "auc_readers", "auc_readers_ci_low", "auc_readers_ci_high",
    "pass_rate", "pass_ci_low", "pass_ci_high", "real_pass_rate", "note",
)  # fmt: skip
READER_STUDY_COLUMNS = (
    "comparison", "estimate", "se", "df", "ci_low", "ci_high", "statistic", "ndf", "ddf", "p_value",
    "n_readers", "n_cases", "n_prompts", "note",
)  # fmt: skip
ROC_COLUMNS = ("model", "fpr", "tpr", "threshold")
AGREEMENT_COLUMNS = (
    "question", "model", "metric", "value", "ci_low", "ci_high",
    "n_units", "n_raters", "n_answers", "raters_per_unit", "n_units_dropped", "note",
)  # fmt: skip
INTRA_COLUMNS = (
    "question", "rater_id", "n_pairs", "exact_agreement", "kappa_quadratic", "alpha_ordinal", "note",
)  # fmt: skip
POSITION_COLUMNS = ("question", "position", "n", "mean", "sd", "mean_centered")
POSITION_TEST_COLUMNS = ("question", "test", "statistic", "p_value", "n_positions", "n", "note")
TIMING_COLUMNS = (
    "by", "key", "n_trials", "median_seconds", "q25_seconds", "q75_seconds", "n_active", "median_active_seconds",
    "median_wall_seconds",
)  # fmt: skip
RATER_COLUMNS = (
    "rater_id", "n_answers", "n_trials", "n_scored", "n_cant_judge", "median_seconds", "median_seconds_per_image",
    "median_wall_seconds",
    "mean", "modal_score", "modal_share", "consensus_corr", "consensus_bias", "n_consensus",
    "too_fast", "straight_lining", "outlier", "n_catch", "catch_pass_rate", "catch_failed", "note",
)  # fmt: skip
PAIRWISE_COLUMNS = (
    "question", "model_a", "model_b", "n_pairs", "mean_a", "mean_b", "mean_diff", "median_diff",
    "statistic", "p_value", "p_holm", "n_paired_answers", "paired_mean_diff", "diff_ci_low", "diff_ci_high", "note",
)  # fmt: skip






# --------------------------------------------------------------------------------------------------------------------
# Preparation: integer codes once, so every table below is bincount / groupby on integers
# --------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Prepared:
    """Rows of numeric questions as integer codes, plus the labels the codes stand for."""

    rows: pd.DataFrame
    """Columns: ``rater, item, image, model, question, pkey`` (int codes), ``seed`` (int64, -1 = missing),
    ``trial, position, n_panels`` (int64), ``value, seconds, wall, active`` (float64: ``seconds`` is the time used,
    active where known else wall), ``cant, repeat`` (bool), ``t`` (answer time as int64)."""
    scored: pd.DataFrame
    """First answers (not repeats) with a value and not can't-judge."""
    raters: np.ndarray
    """Rater label per rater code (codes follow sorted labels)."""
    models: tuple[str, ...]
    """Model label per model code, in display order: real controls first, then generated models by name."""
    sources: tuple[str, ...]
    questions: tuple[str, ...]
    """Numeric question label per question code, display order (realism, alignment, then by name)."""
    n_answers: int
    n_items: int
    n_images: int

    @property
    def is_real(self) -> np.ndarray:
        return np.array([s == REAL_SOURCE for s in self.sources], dtype=bool)

    @property
    def generated(self) -> list[int]:
        return [i for i, s in enumerate(self.sources) if s != REAL_SOURCE]

    def q(self, question: str) -> int | None:
        return self.questions.index(question) if question in self.questions else None

    @functools.cached_property
    def first(self) -> pd.DataFrame:
        """:func:`_first_answers`, computed once per preparation (the reader study, agreement and the rater table
        all use it)."""
        return _first_answers(self)




def _codes(col: pd.Series, sort: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes (missing → the label ``""``) and the labels they stand for."""
    codes, uniques = pd.factorize(col.fillna(""), sort=sort)
    return codes.astype(np.int64), np.asarray(uniques, dtype=object)


def _prepare(df: pd.DataFrame, models: Sequence[str] = ()) -> _Prepared:
    check_ratings_frame(df)
    df = without_practice(df)  # practice answers never enter a statistic
    in_catch = catch_trial_mask(df)
    if in_catch is not None:  # catch trials (known-answer items) never enter a statistic of the study itself
        df = df[~in_catch]
    value = pd.to_numeric(df["value"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    q_code, q_uni = _codes(df["question"])
    has_value = np.zeros(len(q_uni), dtype=bool)
    has_value[np.unique(q_code[~np.isnan(value)])] = True
    has_value &= np.array([not is_design_question(str(q)) for q in q_uni], dtype=bool)  # picks and ranks: designs
    # a question answered only "can't judge" is still a scored question (not multi-select / free text); only the
    # rows of questions without any value need looking at (usually none)
    if not has_value.all():
        rest = ~has_value[q_code]
        cant = df["cant_judge"].to_numpy()[rest]
        cant = np.asarray(pd.Series(cant).fillna(False), dtype=bool)
        chosen = pd.Series(df["choices"].to_numpy()[rest]).fillna("").astype(str).to_numpy() != ""
        n_q = len(q_uni)
        has_choice = np.bincount(q_code[rest][chosen], minlength=n_q) > 0
        only_cant = np.bincount(q_code[rest][cant], minlength=n_q) > 0
        has_value |= only_cant & ~has_choice
    questions = question_order(str(q) for q in q_uni[has_value])
    q_map = np.array(
        [questions.index(str(q)) if has else -1 for q, has in zip(q_uni, has_value, strict=True)], dtype=np.int64
    )
    q_new = q_map[q_code] if len(q_code) else q_code
    keep = q_new >= 0

    m_code, m_uni = _codes(df["model"])
    _, first = np.unique(m_code, return_index=True)
    src = df["source"].fillna("").to_numpy(dtype=object)[first] if len(first) else np.array([], dtype=object)
    sources = {str(m): str(s) for m, s in zip(m_uni, src, strict=True)}
    for m in models:
        sources.setdefault(str(m), REAL_SOURCE if m == REAL_MODEL else GENERATED_SOURCE)
    order = sorted(m for m, s in sources.items() if s == REAL_SOURCE)
    order += sorted(m for m, s in sources.items() if s != REAL_SOURCE)
    m_map = np.array([order.index(str(m)) for m in m_uni], dtype=np.int64)

    r_code, r_uni = _codes(df["rater_id"], sort=True)
    i_code, i_uni = _codes(df["item_id"])
    g_code, g_uni = _codes(df["image_id"])
    pid_code, pid_uni = _codes(df["prompt_id"])
    txt_code, _ = _codes(df["prompt"])
    empty_pid = np.array([str(p) == "" for p in pid_uni], dtype=bool)
    pkey = np.where(empty_pid[pid_code], len(pid_uni) + txt_code, pid_code) if len(pid_code) else pid_code
    answered = df["answered_at"]
    if not isinstance(answered.dtype, pd.DatetimeTZDtype) and not pd.api.types.is_datetime64_dtype(answered.dtype):
        answered = pd.to_datetime(answered, utc=True, errors="coerce")

    wall = pd.to_numeric(df["seconds"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    active = (pd.to_numeric(df["active_seconds"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
              if "active_seconds" in df.columns else np.full(len(df), np.nan))

    def as_int(col: str, missing: int = -1) -> np.ndarray:
        x = pd.to_numeric(df[col], errors="coerce").astype("Float64").to_numpy(dtype=float, na_value=np.nan)
        return np.where(np.isnan(x), missing, x).astype(np.int64)

    rows = pd.DataFrame(
        {
            "rater": r_code[keep],
            "item": i_code[keep],
            "image": g_code[keep],
            "model": (m_map[m_code] if len(m_code) else m_code)[keep],
            "question": q_new[keep],
            "pkey": pkey[keep],
            "seed": as_int("seed")[keep],
            "trial": as_int("trial_id")[keep],
            "position": as_int("position")[keep],
            "n_panels": as_int("n_panels", 1)[keep],
            "value": value[keep],
            "seconds": np.where(np.isnan(active), wall, active)[keep],
            "wall": wall[keep],
            "active": active[keep],
            "cant": df["cant_judge"].fillna(False).to_numpy(dtype=bool)[keep],
            "repeat": df["is_repeat"].fillna(False).to_numpy(dtype=bool)[keep],
            "t": pd.DatetimeIndex(answered).asi8[keep],
        }
    )
    ok = (~np.isnan(rows["value"].to_numpy())) & ~rows["cant"].to_numpy() & ~rows["repeat"].to_numpy()
    return _Prepared(
        rows=rows,
        scored=rows[ok],
        raters=r_uni,
        models=tuple(order),
        sources=tuple(sources[m] for m in order),
        questions=questions,
        n_answers=len(df),
        n_items=len(i_uni),
        n_images=len(g_uni),
    )


def _dense(codes: np.ndarray) -> np.ndarray:
    """Renumber integer codes 0..k-1 (only the codes present), in order of first appearance (a hash table:
    faster than sorting)."""
    return pd.factorize(np.asarray(codes))[0].astype(np.int64)


def _percentile_ci(reps: np.ndarray, ci_level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over axis 0, ignoring NaN replicates (a replicate that drew no data for a group)."""
    tail = 100 * (1 - ci_level) / 2
    reps = np.asarray(reps, dtype=float)
    if reps.ndim == 1:
        reps = reps[:, None]
    lo = np.full(reps.shape[1], np.nan)
    hi = np.full(reps.shape[1], np.nan)
    ok = np.isfinite(reps).any(axis=0)
    if ok.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lo[ok], hi[ok] = np.nanpercentile(reps[:, ok], [tail, 100 - tail], axis=0)
    return lo, hi


def _ci(reps: np.ndarray, ci_level: float) -> tuple[float, float]:
    lo, hi = _percentile_ci(reps, ci_level)
    return float(lo[0]), float(hi[0])


# --------------------------------------------------------------------------------------------------------------------
# Crossed random effects: intervals for means (see the module docstring)
# --------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CrossedMean:
    """Mean of answers with raters and images as crossed random effects."""

    mean: float
    se: float
    df: float
    ci_low: float
    ci_high: float
    var_rater: float
    var_image: float
    var_residual: float


def crossed_mean_ci(y: np.ndarray, rater: np.ndarray, image: np.ndarray, ci_level: float) -> CrossedMean:
    """Mean of ``y`` with a t interval whose variance treats raters and images as crossed random effects
    (``y = μ + a_rater + b_image + e``; method-of-moments components, Satterthwaite df; module docstring).
    ``rater``/``image``: integer codes of each answer. With one rater the rater component cannot be estimated and
    the interval is NaN; with no variation at all the interval is the mean itself."""
    y = np.asarray(y, dtype=float)
    n = len(y)
    nan = float("nan")
    if n == 0:
        return CrossedMean(nan, nan, nan, nan, nan, nan, nan, nan)
    mean = float(y.mean())
    r = _dense(np.asarray(rater))
    i = _dense(np.asarray(image))
    n_r, n_i = np.bincount(r).astype(float), np.bincount(i).astype(float)
    big_r, big_i = len(n_r), len(n_i)
    if big_r < 2 or n < 3:
        return CrossedMean(mean, nan, nan, nan, nan, nan, nan, nan)
    yc = y - mean  # centred: sums of squares without cancellation
    s_r, s_i = np.bincount(r, weights=yc), np.bincount(i, weights=yc)
    total = float(yc @ yc)
    u_rater = total - float((s_r**2 / n_r).sum())  # within-rater sum of squares
    u_image = total - float((s_i**2 / n_i).sum())  # within-image sum of squares
    k_r, k_i = float((n_r**2).sum()) / n, float((n_i**2).sum()) / n
    a = np.array([[0.0, n - big_r, n - big_r], [n - big_i, 0.0, n - big_i], [n - k_r, n - k_i, n - 1.0]])
    comps, _ = nnls(a, np.array([u_rater, u_image, total]))
    v_r, v_i, v_e = (float(c) for c in comps)
    var = v_r * k_r / n + v_i * k_i / n + v_e / n
    se = float(np.sqrt(var))
    if var <= 0:
        return CrossedMean(mean, 0.0, nan, mean, mean, v_r, v_i, v_e)
    # Satterthwaite df: write the variance as a combination of (effective) mean squares, as in the balanced two-way
    # ANOVA, where it is exact: MS_r = σ²_e + (N/R) σ²_r, MS_i = σ²_e + (N/I) σ²_i, MS_e = σ²_e, with R − 1, I − 1 and
    # N − R − I + 1 degrees of freedom (fully crossed: Var = (MS_r + MS_i − MS_e) / N).
    per_r, per_i = n / big_r, n / big_i
    ms = np.array([v_e + per_r * v_r, v_e + per_i * v_i, v_e])
    coef = np.array([k_r / n / per_r, k_i / n / per_i, 1 / n - k_r / n / per_r - k_i / n / per_i])
    dfs = np.array([big_r - 1, big_i - 1, max(n - big_r - big_i + 1, 1)], dtype=float)
    live = dfs > 0
    df = float(var**2 / ((coef[live] * ms[live]) ** 2 / dfs[live]).sum())
    q = float(stats.t.ppf(1 - (1 - ci_level) / 2, df))
    return CrossedMean(mean, se, df, mean - q * se, mean + q * se, v_r, v_i, v_e)


# --------------------------------------------------------------------------------------------------------------------
# Scores per model × question
# --------------------------------------------------------------------------------------------------------------------


def score_summary(
    df: pd.DataFrame,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
    ci_level: float = DEFAULT_CI_LEVEL,
    models: Sequence[str] = (),
) -> pd.DataFrame:
    """Per model × numeric question: ``n`` scored answers, ``n_cant_judge``, raters/items/images, mean, median, sd,
    the standard error, degrees of freedom and CI of the mean with raters and images as crossed random effects
    (:func:`crossed_mean_ci`), and the count per score level (``n_1`` … ``n_5``, plus ``n_<level>`` for any other
    whole-number level used, see :func:`score_level_columns`). Real controls (``source == "real"``) get their own
    rows. ``models`` lists models expected in the study; one without answers gets a "not computable" row.
    ``n_boot`` and ``seed`` are accepted for compatibility (no resampling here). Columns: ``SCORE_COLUMNS`` (+ extra
    levels)."""
    return _score_table(_prepare(df, models), ci_level)


def mean_ci_note(n: int, n_raters: int, n_images: int) -> str:
    """The plain note on a crossed-random-effects interval (:func:`crossed_mean_ci`) that is blank or not
    informative; ``""`` when it is neither."""
    if n < 2:
        return "a single answer: no interval"
    if n_raters < 2:
        return "one rater: no interval (the spread between raters needs two or more)"
    if n < 3:
        return "two answers: no interval"
    notes = []
    if n_raters == 2:
        notes.append("2 raters: interval not informative (t on about 1 df)")
    if n_images < 2:
        notes.append("one image: interval says nothing about other images (image-to-image spread unknown)")
    return "; ".join(notes)


def score_level_columns(table: pd.DataFrame) -> list[str]:
    """The ``n_<level>`` count columns of a score table, in level order."""
    return [c for c in table.columns if re.fullmatch(r"n_-?\d+", c)]


def _score_levels(prep: _Prepared) -> tuple[int, ...]:
    """``SCALE_LEVELS`` plus every other whole-number value of a question with at most ``MAX_SCORE_COLUMNS``
    distinct values."""
    s = prep.scored
    levels = set(SCALE_LEVELS)
    for qi in range(len(prep.questions)):
        v = np.unique(s["value"].to_numpy()[s["question"].to_numpy() == qi])
        if len(v) <= MAX_SCORE_COLUMNS:
            levels |= {int(x) for x in v if x == np.round(x)}
    return tuple(sorted(levels)) if len(levels) <= MAX_SCORE_COLUMNS else SCALE_LEVELS


def _score_table(prep: _Prepared, ci_level: float) -> pd.DataFrame:
    levels = _score_levels(prep)
    columns = [c for c in SCORE_COLUMNS if not re.fullmatch(r"n_-?\d+", c)]
    columns = columns[:-1] + [f"n_{k}" for k in levels] + ["note"]
    if prep.rows.empty and not prep.models:
        return result_table([{"note": not_computable("no ratings")}], columns)
    s = prep.scored
    r = prep.rows
    n_q = max(len(prep.questions), 1)
    n_groups = len(prep.models) * n_q
    cant_rows = r["cant"].to_numpy() & ~r["repeat"].to_numpy()  # numpy masks: no copy of the 1,000,000-row frame
    cant = np.bincount((r["model"].to_numpy() * n_q + r["question"].to_numpy())[cant_rows], minlength=n_groups)
    lv = s["value"].to_numpy()
    lv_arr = np.asarray(levels, dtype=float)
    in_scale = np.isin(lv, lv_arr)
    group = s["model"].to_numpy() * n_q + s["question"].to_numpy()
    cell = group * len(levels) + np.searchsorted(lv_arr, lv)
    dist = np.bincount(cell[in_scale], minlength=len(prep.models) * n_q * len(levels))
    dist = dist.reshape(len(prep.models), n_q, len(levels))
    order = np.argsort(group, kind="stable")  # rows of each (model, question) as one slice, not a frame per group
    bounds = np.searchsorted(group[order], np.arange(len(prep.models) * n_q + 1))
    val, rat, img = s["value"].to_numpy()[order], s["rater"].to_numpy()[order], s["image"].to_numpy()[order]
    itm = s["item"].to_numpy()[order]
    questions = prep.questions or (REALISM,)
    rows = []
    for mi, model in enumerate(prep.models):
        for qi, question in enumerate(questions):
            row = {"model": model, "source": prep.sources[mi], "question": question,
                   "n_cant_judge": int(cant[mi * n_q + qi])}  # fmt: skip
            g = slice(bounds[mi * n_q + qi], bounds[mi * n_q + qi + 1])
            if g.stop == g.start:
                reason = "all answers were can't judge" if row["n_cant_judge"] else "no ratings for this model"
                rows.append({**row, "n": 0, "note": not_computable(reason)})
                continue
            x = val[g]
            row.update(n=len(x), n_raters=len(pd.unique(rat[g])), n_items=len(pd.unique(itm[g])),
                       n_images=len(pd.unique(img[g])), mean=float(x.mean()), median=float(np.median(x)),
                       sd=float(x.std(ddof=1)) if len(x) > 1 else np.nan)  # fmt: skip
            row.update({f"n_{k}": int(dist[mi, qi, j]) for j, k in enumerate(levels)})
            cm = crossed_mean_ci(x, rat[g], img[g], ci_level)
            row.update(se=cm.se, df=cm.df, note=mean_ci_note(row["n"], row["n_raters"], row["n_images"]))
            if np.isfinite(cm.ci_low):
                # the scale's range: 1–5, or wider where the question's answers go beyond it (a 0–10 scale)
                lo, hi = min(SCALE_LEVELS[0], float(np.min(x))), max(SCALE_LEVELS[-1], float(np.max(x)))
                lo, hi = (int(v) if v == int(v) else v for v in (lo, hi))
                row.update(bounded_interval(row["mean"], cm.ci_low, cm.ci_high, lo, hi))
                if cm.ci_low < lo or cm.ci_high > hi:
                    row["note"] = "; ".join(n for n in (row["note"], f"interval clipped to the scale {lo}–{hi}") if n)
            rows.append(row)
    out = result_table(rows, columns)
    for c in ("n", "n_cant_judge", "n_raters", "n_items", "n_images", *(f"n_{k}" for k in levels)):
        out[c] = out[c].fillna(0).astype("int64")
    return out


# --------------------------------------------------------------------------------------------------------------------
# Real vs generated
# --------------------------------------------------------------------------------------------------------------------


def real_vs_generated(
    df: pd.DataFrame,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
    ci_level: float = DEFAULT_CI_LEVEL,
    models: Sequence[str] = (),
    question: str = REALISM,
) -> pd.DataFrame:
    """Per generated model: how well the realism score tells its images from the real controls.

    ``auc``: ROC AUC with real as the positive class and the realism score as the score, pooling every rater's first
    answers (sklearn ``roc_auc_score``) = P(real scores higher) + ½ P(tie). 0.5: the model's images are
    indistinguishable from real ones; 1.0: every real image scored higher. ``auc_readers``: the mean over raters of
    each rater's own AUC — the reader-study AUC — with ``auc_readers_ci_low``/``auc_readers_ci_high`` from the
    Obuchowski–Rockette analysis (readers and images random, images of one prompt deleted together;
    :func:`reader_study`; on the logit scale, :func:`auc_interval`). The pooled ``auc`` has no interval (it treats
    answers as independent). ``pass_rate``: share of the model's answers scoring
    ≥ ``PASS_THRESHOLD`` ("passes as real"), CI with raters and images as crossed random effects
    (:func:`crossed_mean_ci`); ``real_pass_rate``: the same share for the real images. ``n_boot``/``seed``: accepted
    for compatibility. Columns: ``REAL_VS_GENERATED_COLUMNS``.
    """
    prep = _prepare(df, models)
    return _real_table(prep, _reader_study_result(prep, question, ci_level), ci_level, question)


def reader_study(
    df: pd.DataFrame, question: str = REALISM, ci_level: float = DEFAULT_CI_LEVEL, models: Sequence[str] = ()
) -> pd.DataFrame:
    """"Can this model's images be told from real ones?" as a multi-reader multi-case study: treatments = generated
    models, readers = raters, cases = images (real controls positive, the model's images negative), rating = the
    ``question`` score of each rater's first answer per image. Obuchowski–Rockette with jackknife covariances and
    Hillis ddf (:func:`p2p_app.mrmc.or_analysis`; tests reproduce the published Van Dyke 1993 results).

    Cases that share a prompt (a prompt's real image and every seed's generated images) share its difficulty: the
    jackknife deletes whole prompts (``n_prompts``; :func:`p2p_app.mrmc._cov_cluster_jackknife`) — deleting single
    images covered 90.8 % with 3 seeds per prompt. Rows: one per model (``comparison`` = model: reader-averaged
    AUC, SE, df, CI on the logit scale, :func:`auc_interval`), one per pair of models
    (``"a − b"``: difference of AUCs, SE, ddf, CI clipped to [−1, 1], t statistic, p), and, with two or more models,
    the global F test
    that all models' AUCs are equal (``comparison == "all models equal"``: ``statistic`` F, ``ndf``, ``ddf``, p).
    Raters must have rated at least two real images and two images of every model (others are left out:
    ``n_readers`` counts those used). Columns: ``READER_STUDY_COLUMNS``."""
    prep = _prepare(df, models)
    return _reader_study_table(prep, _reader_study_result(prep, question, ci_level))


def _first_answers(prep: _Prepared) -> pd.DataFrame:
    """Scored first answers, one per (rater, image, question): the earliest by answer time."""
    s = prep.scored
    if s.empty:
        return s
    n_img, n_q = int(s["image"].max()) + 1, max(len(prep.questions), 1)
    key = (s["rater"].to_numpy() * n_img + s["image"].to_numpy()) * n_q + s["question"].to_numpy()
    if len(pd.unique(key)) == len(key):  # the usual case: nothing answered twice
        return s
    order = np.lexsort((s["t"].to_numpy(), s["question"].to_numpy(), s["image"].to_numpy(), s["rater"].to_numpy()))
    s = s.iloc[order]
    return s[~s.duplicated(["rater", "image", "question"])].sort_index()


def _reader_study_result(prep: _Prepared, question: str, ci_level: float):
    """``(result or None, reason, models used, n_cases)`` of the OR analysis on ``question``."""
    qi = prep.q(question)
    if qi is None or prep.rows.empty:
        return None, "no ratings", [], 0
    if not prep.is_real.any():
        return None, "no real control images", [], 0
    s = prep.first
    sel = s["question"].to_numpy() == qi  # numpy columns, not frame copies: this is 1,000,000 rows at scale
    rater, image, model, value, pkey = (s[c].to_numpy()[sel] for c in ("rater", "image", "model", "value", "pkey"))
    is_real = prep.is_real[model]
    gen_models = [mi for mi in prep.generated if np.any(model == mi)]
    if not gen_models:
        return None, f"no {question} scores for generated images", [], 0
    if not is_real.any():
        return None, "no real control images", [], 0
    n_r = len(prep.raters)
    ok = np.bincount(rater[is_real], minlength=n_r) >= 2
    for mi in gen_models:
        ok &= np.bincount(rater[model == mi], minlength=n_r) >= 2
    if ok.sum() < 2:
        return None, "fewer than two raters scored at least two real images and two images of every model", [], 0
    real = np.flatnonzero(is_real & ok[rater])
    parts = []  # per model: the real images (truth 1), then the model's images (truth 0)
    for mi in gen_models:
        g = np.flatnonzero((model == mi) & ok[rater])
        parts.append((mi, real, 1))
        parts.append((mi, g, 0))
    frame = pd.DataFrame({
        "reader": np.concatenate([rater[idx] for _, idx, _ in parts]),
        "treatment": np.concatenate([np.full(len(idx), mi) for mi, idx, _ in parts]),
        "case": np.concatenate([image[idx] for _, idx, _ in parts]),
        "truth": np.concatenate([np.full(len(idx), t) for _, idx, t in parts]),
        "rating": np.concatenate([value[idx] for _, idx, _ in parts]),
        # images of one prompt (its real image, every seed of every model) share the prompt's difficulty: the
        # jackknife deletes them together (p2p_app.mrmc._cov_cluster_jackknife)
        "cluster": np.concatenate([pkey[idx] for _, idx, _ in parts]),
    })  # fmt: skip
    try:
        res = or_analysis(frame, "jackknife", ci_level)
    except ValueError:  # a prompt holds all of a reader's real (or generated) images: delete single images instead
        res = or_analysis(frame.drop(columns="cluster"), "jackknife", ci_level)
    return res, "", gen_models, int(frame["case"].nunique())


def _reader_study_table(prep: _Prepared, result) -> pd.DataFrame:
    res, reason, used, n_cases = result
    if res is None:
        return result_table([{"comparison": "", "note": not_computable(reason)}], READER_STUDY_COLUMNS)
    base = {"n_readers": len(res.readers), "n_cases": n_cases, "n_prompts": res.n_clusters}
    few = "; ".join(x for x in (
        "2 readers: interval not informative (t on few df)" if len(res.readers) == 2 else "",
        "" if res.n_clusters else "jackknife over single images (too few prompts to delete whole prompts)",
    ) if x)  # fmt: skip
    rows = []
    for _, t in res.treatment_table.iterrows():
        lo, hi, note = auc_interval(t["auc"], t["se"], t["df"], res.ci_level)
        rows.append({"comparison": prep.models[int(t["treatment"])], "estimate": t["auc"], "se": t["se"],
                     "df": t["df"], "ci_low": lo, "ci_high": hi, **base,
                     "note": "; ".join(x for x in (few, note) if x)})  # fmt: skip
    for _, d in res.difference_table.iterrows():
        name = f"{prep.models[int(d['treatment_a'])]} − {prep.models[int(d['treatment_b'])]}"
        rows.append({"comparison": name, "estimate": d["estimate"], "se": d["se"], "df": d["df"],
                     "ci_low": max(d["ci_low"], -1.0), "ci_high": min(d["ci_high"], 1.0), "statistic": d["t"],
                     "ddf": d["df"], "p_value": d["p_value"], **base, "note": few})  # fmt: skip
    if len(used) >= 2:
        rows.append({"comparison": "all models equal", "statistic": res.f, "ndf": res.ndf, "ddf": res.ddf,
                     "p_value": res.p_value, **base})  # fmt: skip
    out = result_table(rows, READER_STUDY_COLUMNS)
    out["ndf"] = out["ndf"].astype("Int64")
    out["n_prompts"] = out["n_prompts"].astype("Int64")
    return out


def auc_interval(auc: float, se: float, df: float, ci_level: float) -> tuple[float, float, str]:
    """A reader-averaged AUC's interval inside [0, 1]: the Obuchowski–Rockette t interval on the logit scale
    (delta method: ``logit(θ) ± t·SE/(θ(1 − θ))``, back-transformed), so it never leaves [0, 1] and always contains
    θ; near 0.5 it equals the plain interval to first order. At θ = 0 or 1 (every reader separated the images
    perfectly, or inverted them) or SE = 0 the interval is the point and a note says it is not informative.
    Returns ``(low, high, note)``."""
    if not np.isfinite(se) or not np.isfinite(auc):
        return np.nan, np.nan, "no interval (standard error not computable)"
    if se == 0 or auc <= 0 or auc >= 1:
        why = "AUC 1: every reader ranked every real image above every generated one" if auc >= 1 else (
            "AUC 0: every reader ranked every generated image above every real one" if auc <= 0 else "SE 0")
        return float(auc), float(auc), f"{why}; interval not informative"
    q = float(stats.t.ppf(1 - (1 - ci_level) / 2, df))
    centre, half = np.log(auc / (1 - auc)), q * se / (auc * (1 - auc))
    return float(1 / (1 + np.exp(-(centre - half)))), float(1 / (1 + np.exp(-(centre + half)))), ""


def roc_points(df: pd.DataFrame, question: str = REALISM, models: Sequence[str] = ()) -> pd.DataFrame:
    """ROC curve per generated model (sklearn ``roc_curve``, real = positive, all thresholds kept). At threshold t,
    ``fpr`` is the share of the model's answers scoring ≥ t (passing as real at t) and ``tpr`` the share of real
    answers scoring ≥ t. The first point per model has threshold ``inf``. Columns: ``ROC_COLUMNS``."""
    return _roc_table(_prepare(df, models), question)


def _realism_scores(prep: _Prepared, question: str) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    qi = prep.q(question)
    if qi is None:
        return np.zeros(0), {}
    sel = prep.scored["question"].to_numpy() == qi
    m, v = prep.scored["model"].to_numpy()[sel], prep.scored["value"].to_numpy()[sel]
    real = v[prep.is_real[m]] if len(m) else np.zeros(0)
    return real, {mi: v[m == mi] for mi in prep.generated}


def _auc_from_level_totals(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUC = P(pos > neg) + ½ P(tie) from (weighted) counts per ordered level (last axis)."""
    below = np.cumsum(neg, axis=-1) - neg
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (below + 0.5 * neg)).sum(-1) / (pos.sum(-1) * neg.sum(-1))


def _real_table(prep: _Prepared, result, ci_level: float, question: str) -> pd.DataFrame:
    if not prep.generated:
        reason = "no ratings" if prep.rows.empty else "no generated images"
        return result_table([{"note": not_computable(reason)}], REAL_VS_GENERATED_COLUMNS)
    real, gen = _realism_scores(prep, question)
    qi = prep.q(question)
    real_pass = float(np.mean(real >= PASS_THRESHOLD)) if len(real) else np.nan
    res, reason, used, _ = result
    by_model = {}
    if res is not None:
        for _, t in res.treatment_table.iterrows():
            by_model[int(t["treatment"])] = t
    sel = prep.scored["question"].to_numpy() == (qi if qi is not None else -1)
    s_model, s_value, s_rater, s_image = (prep.scored[c].to_numpy()[sel] for c in ("model", "value", "rater", "image"))
    rows = []
    for mi in prep.generated:
        x = gen.get(mi, np.zeros(0))
        row = {"model": prep.models[mi], "n_real": len(real), "n_generated": len(x), "real_pass_rate": real_pass}
        if len(x) == 0:
            rows.append({**row, "note": not_computable(f"no {question} scores for this model")})
            continue
        row["pass_rate"] = float(np.mean(x >= PASS_THRESHOLD))
        g = s_model == mi
        cm = crossed_mean_ci((s_value[g] >= PASS_THRESHOLD).astype(float), s_rater[g], s_image[g], ci_level)
        if np.isfinite(cm.ci_low):  # a proportion: inside [0, 1]
            b = bounded_interval(row["pass_rate"], cm.ci_low, cm.ci_high, 0.0, 1.0)
            row["pass_ci_low"], row["pass_ci_high"] = b["ci_low"], b["ci_high"]
        pass_note = mean_ci_note(int(g.sum()), len(pd.unique(s_rater[g])), len(pd.unique(s_image[g])))
        if pass_note:
            row["note"] = f"pass rate: {pass_note}"
        if len(real) == 0:
            rows.append({**row, "note": not_computable("no real control images")})
            continue
        row["auc"] = float(roc_auc_score(np.r_[np.ones(len(real)), np.zeros(len(x))], np.r_[real, x]))
        if mi in by_model:
            t = by_model[mi]
            lo, hi, note = auc_interval(t["auc"], t["se"], t["df"], ci_level)
            row.update(auc_readers=t["auc"], auc_readers_ci_low=lo, auc_readers_ci_high=hi)
            if len(res.readers) == 2:
                note = "; ".join(n for n in ("2 readers: interval not informative", note) if n)
            if note:
                row["note"] = "; ".join(n for n in (row.get("note", ""), f"auc_readers: {note}") if n)
        else:
            row["note"] = "; ".join(n for n in (row.get("note", ""), f"auc_readers not computable: {reason}") if n)
        rows.append(row)
    out = result_table(rows, REAL_VS_GENERATED_COLUMNS)
    out[["n_real", "n_generated"]] = out[["n_real", "n_generated"]].fillna(0).astype("int64")
    return out


def _roc_table(prep: _Prepared, question: str) -> pd.DataFrame:
    real, gen = _realism_scores(prep, question)
    parts = []
    for mi, x in gen.items():
        if len(real) == 0 or len(x) == 0:
            continue
        fpr, tpr, thr = roc_curve(np.r_[np.ones(len(real)), np.zeros(len(x))], np.r_[real, x], drop_intermediate=False)
        parts.append(pd.DataFrame({"model": prep.models[mi], "fpr": fpr, "tpr": tpr, "threshold": thr}))
    return pd.concat(parts, ignore_index=True) if parts else result_table([], ROC_COLUMNS)


# --------------------------------------------------------------------------------------------------------------------
# Agreement
# --------------------------------------------------------------------------------------------------------------------


def _alpha_from_patterns(patterns: np.ndarray, weights: np.ndarray, levels: np.ndarray, level: str) -> np.ndarray:
    """Krippendorff's α for weighted sums of unit value-count patterns (the formulas of ``krippendorff.alpha``).

    ``patterns``: P × V value counts of distinct pairable units; ``weights``: B × P multiplicities. Returns (B,).
    """
    coinc = _coincidences(patterns)
    n_pat, v = coinc.shape[:2]
    return _alpha_from_coincidences((weights @ coinc.reshape(n_pat, v * v)).reshape(-1, v, v), levels, level)


def _coincidences(patterns: np.ndarray) -> np.ndarray:
    """Krippendorff's coincidence matrix of each unit value-count pattern (P × V × V); an unpairable pattern (fewer
    than two values) contributes zeros."""
    p = np.asarray(patterns, dtype=float)
    m = p.sum(1)
    eye = np.eye(p.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        coinc = (p[:, :, None] * p[:, None, :] - p[:, :, None] * eye) / (m - 1)[:, None, None]
    coinc[m < 2] = 0.0
    return coinc


def _alpha_from_coincidences(o: np.ndarray, levels: np.ndarray, level: str) -> np.ndarray:
    """Krippendorff's α from B × V × V coincidence matrices (the formulas of ``krippendorff.alpha``). Returns (B,)."""
    v = o.shape[1]
    eye = np.eye(v)
    n_v = o.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        e = (n_v[:, :, None] * n_v[:, None, :] - n_v[:, :, None] * eye) / (n_v.sum(1) - 1)[:, None, None]
    i1, i2 = np.meshgrid(np.arange(v), np.arange(v), indexing="ij")
    if level == "nominal":
        d = np.broadcast_to((i1 != i2).astype(float), o.shape)
    elif level == "interval":
        lv = np.asarray(levels, dtype=float)
        d = np.broadcast_to((lv[:, None] - lv[None, :]) ** 2, o.shape)
    elif level == "ordinal":
        lo, hi = np.minimum(i1, i2), np.maximum(i1, i2)
        cs = np.concatenate([np.zeros((len(n_v), 1)), np.cumsum(n_v, axis=1)], axis=1)
        d = (cs[:, hi + 1] - cs[:, lo] - (n_v[:, lo] + n_v[:, hi]) / 2) ** 2
    else:
        raise ValueError(f"level_of_measurement must be 'nominal', 'ordinal' or 'interval', got {level!r}")
    do, de = (o * d).sum((1, 2)), (e * d).sum((1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(de > 0, 1 - do / de, np.nan)


def _fleiss_from_patterns(patterns: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Fleiss' κ for weighted sums of unit category-count patterns, all with the same number of raters m
    (the formula of ``statsmodels.stats.inter_rater.fleiss_kappa``). Returns (B,)."""
    p = patterns.astype(float)
    m = p.sum(1)[0]
    p_rat = ((p * p).sum(1) - m) / (m * (m - 1))
    total = weights.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        p_mean = (weights @ p_rat) / total
        pe = (((weights @ p) / (total * m)[:, None]) ** 2).sum(1)
        return np.where(pe < 1, (p_mean - pe) / (1 - pe), np.nan)


def _resample_patterns(rng: np.random.Generator, table: np.ndarray, n_boot: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of ``table`` and, per replicate, how often each is drawn when resampling rows with replacement
    (a multinomial draw over the distinct rows: rows with the same pattern are interchangeable)."""
    table = np.asarray(table, dtype=np.int64)
    base = int(table.max()) + 1 if table.size else 1
    if base ** table.shape[1] < 2**62:  # encode each row as one integer: a 1-D unique is much faster
        key = table @ (base ** np.arange(table.shape[1], dtype=np.int64))
        _, first, counts = np.unique(key, return_index=True, return_counts=True)
        pats = table[first]
    else:
        pats, counts = np.unique(table, axis=0, return_counts=True)
    weights = rng.multinomial(int(counts.sum()), counts / counts.sum(), size=n_boot).astype(float)
    return pats, weights


def _pattern_ids(table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct rows of an integer count ``table``, the distinct-row index of every row, and how often each occurs."""
    table = np.asarray(table, dtype=np.int64)
    base = int(table.max()) + 1 if table.size else 1
    if base ** table.shape[1] < 2**62:  # encode each row as one integer: a 1-D unique is much faster
        key = table @ (base ** np.arange(table.shape[1], dtype=np.int64))
        _, first, inverse, counts = np.unique(key, return_index=True, return_inverse=True, return_counts=True)
        return table[first], inverse.reshape(-1), counts
    pats, inverse, counts = np.unique(table, axis=0, return_inverse=True, return_counts=True)
    return pats, inverse.reshape(-1), counts


def _alpha_jackknife(
    table: np.ndarray,
    unit: np.ndarray,
    col: np.ndarray,
    rater: np.ndarray,
    levels: np.ndarray,
    level: str,
    ci_level: float,
) -> dict:
    """Interval of Krippendorff's α with raters **and** units as crossed random samples (two-way jackknife).

    ``table``: units × values counts of the pairable units (what α is computed on); ``unit``/``col``/``rater``: the
    dense unit index, value column and dense rater index of each answer on those units.

    Variance: three jackknives — delete one rater (V_r), delete one unit (V_u), delete one answer (V_a) — combined as
    ``V = V_r + V_u − V_a``. Write α̂ − α to first order as a sum over answers of rater, unit and residual parts with
    variances A, B, E. The target is ``A Σn_r²/N² + B Σm_u²/N² + E/N`` (n_r answers per rater, m_u per unit, N in
    all). Deleting raters estimates ``A Σn_r²/N² + (B + E)/N``, deleting units ``B Σm_u²/N² + (A + E)/N``, deleting
    answers ``(A + B + E)/N``: the sum of the first two counts the residual twice, and subtracting the third removes
    it. This is the crossed-random-effects correction of one-factor resampling variances of Owen 2007 ("The
    pigeonhole bootstrap", Ann Appl Stat 1:386, §3–4: resampling one factor misses the other's variance, resampling
    both counts the residual too often; also McCullagh 2000, "Resampling and exchangeable arrays", Bernoulli
    6:285), done with jackknives (Efron & Stein 1981, Ann Stat 9:586). ``V`` is truncated below at ``max(V_r,
    V_u)`` (each is at most the target to first order): the difference of three noisy estimates is often too small,
    and without the bound coverage fell to 88–92 % in every simulated design. The price: with sparse overlap (3
    raters per image) V_r alone exceeds the true variance — deleting a rater reweights the remaining pairs of its
    units — and the interval is a little conservative there (~98 %).

    Centre: α is biased low in crossed designs — its expected disagreement sees only the sampled raters' biases,
    so with R raters it misses about a 1/R share of the rater variance (simulated: mean α 0.20 with 3 raters, 0.22
    with 8, population 0.247). The interval is centred on the two-way jackknife bias-corrected estimate
    ``α̂ − (R − 1)(ᾱ_(rater) − α̂) − (I − 1)(ᾱ_(unit) − α̂)`` (Quenouille's correction per factor) and is
    ``centre ± z·√V``, the normal jackknife interval (Efron & Tibshirani 1993, "An Introduction to the Bootstrap",
    §11.5); the reported ``value`` stays the library's α̂. The interval is then kept inside α's range [−1, 1] and
    widened to contain α̂ where the centre left it outside (:func:`bounded_interval`; with few raters a printed
    α of −0.537 sat outside its own interval, and intervals ran from −2.4 to +1.8). A t
    quantile with Satterthwaite df was tried and over-covered (98–99 %): the jackknife variance is already
    conservative for α (Efron–Stein), most with few raters. Coverage per design: ``benchmarks/bench_coverage.py``
    (README). The earlier interval (bootstrap of units only) treated raters as fixed and covered 84–91 %.

    Jackknife rather than bootstrap: deterministic and cheap in closed form from coincidence matrices (deleting a
    unit removes its pattern's coincidences; deleting an answer turns its unit's pattern p into p − e_value; deleting
    a rater does that on each of the rater's units), so it costs one α evaluation per rater, per distinct pattern and
    per distinct (pattern, value), not one per replicate. Replicates where α is undefined (no variation left) are
    left out. Fewer than three raters (deleting one of two leaves nothing pairable) → NaN interval.
    """
    nan = {"ci_low": np.nan, "ci_high": np.nan}
    n_r, n_u = (int(rater.max()) + 1 if len(rater) else 0), len(table)
    if n_r < 3 or n_u < 2:
        return nan
    alpha, a_rater, a_unit, a_answer = _alpha_delete_one(table, unit, col, rater, levels, level)

    def jack_var(reps: np.ndarray) -> tuple[float, float, int]:
        reps = reps[np.isfinite(reps)]
        k = len(reps)
        if k < 2:
            return np.nan, np.nan, k
        return (k - 1) / k * float(((reps - reps.mean()) ** 2).sum()), float(reps.mean()), k

    v_r, mean_r, k_r = jack_var(a_rater)
    v_u, mean_u, k_u = jack_var(a_unit)
    v_a, _, _ = jack_var(a_answer)
    if not np.isfinite(v_r + v_u + v_a):
        return nan
    var = max(v_r + v_u - v_a, v_r, v_u)
    # two-way jackknife bias correction (Quenouille): each factor's O(1/n) bias removed in turn
    centre = alpha - (k_r - 1) * (mean_r - alpha) - (k_u - 1) * (mean_u - alpha)
    q = float(stats.norm.ppf(1 - (1 - ci_level) / 2)) * float(np.sqrt(var))
    return bounded_interval(alpha, centre - q, centre + q, -1.0, 1.0)


def bounded_interval(estimate: float, lo: float, hi: float, low: float, high: float) -> dict:
    """``{"ci_low", "ci_high"}`` of an interval made to respect the parameter's range [``low``, ``high``] and to
    contain its reported estimate: clipped to the range (an estimate outside it, as a small-sample α below −1, keeps
    its place), then widened to the estimate where a bias-corrected centre left it outside."""
    lo, hi = max(lo, min(low, estimate)), min(hi, max(high, estimate))
    return {"ci_low": min(lo, estimate), "ci_high": max(hi, estimate)}


def _alpha_delete_one(
    table: np.ndarray, unit: np.ndarray, col: np.ndarray, rater: np.ndarray, levels: np.ndarray, level: str
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """α of ``table`` and its delete-one replicates: without each rater (R,), each unit (U,) and each answer (N,)
    (arguments as in :func:`_alpha_jackknife`), in closed form from coincidence matrices; the tests check them
    against ``krippendorff.alpha`` on the reduced data."""
    n_r = int(rater.max()) + 1 if len(rater) else 0
    pats, pid, counts = _pattern_ids(table)
    n_pat, v = pats.shape
    # blocks of patterns, so that the (pattern, value) × V × V arrays stay small whatever the number of levels
    step = max(1, _ALPHA_BLOCK // (v * v * v))
    blocks = [slice(lo, min(lo + step, n_pat)) for lo in range(0, n_pat, step)]
    total = np.zeros(v * v)
    for b in blocks:
        total += counts[b].astype(float) @ _coincidences(pats[b]).reshape(-1, v * v)
    alpha = float(_alpha_from_coincidences(total.reshape(1, v, v), levels, level)[0])
    pc = pid[unit] * v + col  # (pattern, value) of each answer
    per_rater = sp.csr_matrix((np.ones(len(pc)), (rater, pc)), shape=(n_r, n_pat * v))  # answers per rater × (p, c)
    rater_change = np.zeros((n_r, v * v))
    a_pattern = np.empty(n_pat)
    a_pc = np.empty(n_pat * v)
    eye = np.eye(v, dtype=np.int64)
    for b in blocks:
        coinc = _coincidences(pats[b]).reshape(-1, v * v)
        a_pattern[b] = _alpha_from_coincidences((total - coinc).reshape(-1, v, v), levels, level)
        reduced = (pats[b][:, None, :] - eye[None, :, :]).reshape(-1, v)  # pattern p less one answer of value c
        # change of the coincidences when one answer of value c leaves a unit with pattern p (zero where p_c = 0)
        delta = np.where((pats[b] > 0).reshape(-1, 1), _coincidences(np.maximum(reduced, 0)).reshape(-1, v * v)
                         - np.repeat(coinc, v, axis=0), 0.0)  # fmt: skip
        cols = slice(b.start * v, b.stop * v)
        rater_change += per_rater[:, cols] @ delta
        a_pc[cols] = _alpha_from_coincidences((total + delta).reshape(-1, v, v), levels, level)
    a_rater = _alpha_from_coincidences((total + rater_change).reshape(-1, v, v), levels, level)
    return alpha, a_rater, a_pattern[pid], a_pc[pc]


def fleiss_table(units: np.ndarray, categories: np.ndarray, n_units: int, n_categories: int) -> np.ndarray:
    """Units × categories count table, the output of statsmodels ``aggregate_raters`` (which loops over units in
    Python; this is one ``bincount``): ``units``/``categories`` are the 0-based codes of each answer."""
    flat = np.bincount(units * n_categories + categories, minlength=n_units * n_categories)
    return flat.reshape(n_units, n_categories)


def _agreement_scope(
    rows: Mapping[str, np.ndarray],
    question: str,
    model: str,
    levels: np.ndarray,
    n_boot: int,
    rng: np.random.Generator,
    ci_level: float,
    level: str,
) -> list[dict]:
    """α and κ for the answers in ``rows`` (numpy arrays unit, lev, rater, rank — rank = order of the answer within
    its unit by answer time — all for one question and scope)."""
    alpha_name = f"krippendorff_alpha_{level}"
    unit, lev = rows["unit"], rows["lev"]
    n_raters = int(np.unique(rows["rater"]).size)
    base = {"question": question, "model": model, "n_raters": n_raters, "n_answers": len(unit)}
    n_raters = base["n_raters"]

    def nc(reason: str, **extra) -> list[dict]:
        return [{**base, **extra, "metric": m, "note": not_computable(reason)} for m in (alpha_name, "fleiss_kappa")]

    if len(unit) == 0:
        return nc("no ratings")
    if base["n_raters"] < 2:
        return nc("only one rater")
    units, unit_d = np.unique(unit, return_inverse=True)
    n_l = len(levels)
    vc = fleiss_table(unit_d, lev, len(units), n_l)
    per_unit = vc.sum(1)
    pairable = per_unit >= 2
    if not pairable.any():
        return nc("no image rated by two or more raters", n_units=len(units))
    if np.unique(lev).size < 2:
        return nc("every answer has the same score (no variation)", n_units=int(pairable.sum()))
    out = []
    # Krippendorff's α: library point estimate on the unit × level counts; CI from the rater × image jackknife.
    a_row = {**base, "metric": alpha_name, "n_units": int(pairable.sum()), "n_units_dropped": int((~pairable).sum())}
    vc_p = vc[pairable]
    used = vc_p.sum(0) > 0
    if used.sum() < 2:
        out.append({**a_row, "note": not_computable("pairable answers all have the same score (no variation)")})
    else:
        # the formulas of krippendorff.alpha on the distinct unit patterns (the library builds a unit × V × V array:
        # 0.3 s at 1,000,000 rows); the tests check both give the same α
        pats, _, counts = _pattern_ids(vc_p[:, used])
        a_row["value"] = float(_alpha_from_patterns(pats, counts[None, :].astype(float), levels[used], level)[0])
        on_pairable = pairable[unit_d]
        col = (np.cumsum(used) - 1)[lev[on_pairable]]
        jk = _alpha_jackknife(vc_p[:, used], _dense(unit_d[on_pairable]), col, _dense(rows["rater"][on_pairable]),
                              levels[used], level, ci_level)  # fmt: skip
        a_row.update(jk)
        if not np.isfinite(jk["ci_low"]):
            if n_raters < 3:
                a_row["note"] = f"{n_raters} raters: no interval (the rater × image jackknife needs three or more)"
            elif a_row["n_units"] < 2:
                a_row["note"] = "a single image: no interval (the rater × image jackknife needs two or more)"
            else:
                a_row["note"] = "no interval (no variation left when one rater or image is deleted)"
        out.append(a_row)
    # Fleiss' κ needs the same number m of raters per unit: m = the most common count among pairable units (ties:
    # the larger); a unit with more answers keeps its first m by answer time, a unit with fewer is dropped.
    counts_m = np.bincount(per_unit[pairable])
    m = int(np.flatnonzero(counts_m == counts_m.max()).max())
    keep_unit = per_unit >= m
    f_row = {**base, "metric": "fleiss_kappa", "raters_per_unit": m, "n_units": int(keep_unit.sum()),
             "n_units_dropped": int(len(units) - keep_unit.sum())}  # fmt: skip
    sel = (rows["rank"] < m) & keep_unit[unit_d]
    table = fleiss_table(_dense(unit_d[sel]), lev[sel], int(keep_unit.sum()), n_l)
    table = table[:, table.sum(0) > 0]
    if table.shape[1] < 2:
        out.append({**f_row, "note": not_computable("every kept answer has the same score (no variation)")})
        return out
    f_row["value"] = float(fleiss_kappa(table, method="fleiss"))
    if n_boot > 0 and len(table) >= 2:
        pats, w = _resample_patterns(rng, table, n_boot)
        lo, hi = _ci(_fleiss_from_patterns(pats, w), ci_level)
        f_row.update(bounded_interval(f_row["value"], lo, hi, -1.0, 1.0) if np.isfinite(lo) else {})
    if not np.isfinite(f_row.get("ci_low", np.nan)):
        f_row["note"] = ("a single image: no interval (resampling images needs two or more)" if len(table) < 2 else
                         "no interval (no bootstrap replicates)" if n_boot == 0 else "no interval")  # fmt: skip
    out.append(f_row)
    return out


def agreement(
    df: pd.DataFrame,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
    ci_level: float = DEFAULT_CI_LEVEL,
    level_of_measurement: str = "ordinal",
) -> pd.DataFrame:
    """Inter-rater agreement per numeric question, over all images (``model == "all"``) and per model.

    Units are images (``image_id``); each rater's first answer per image counts (by answer time, also when the image
    came back on another screen, not only on planned repeats); can't-judge answers are missing values.

    * ``krippendorff_alpha_<level>``: Krippendorff's α (ordinal by default) on the unit × score count table — the
      formulas of ``krippendorff.alpha``, evaluated on distinct unit patterns (tests: equal to the library);
      CI with raters and images both random (two-way jackknife, ``_alpha_jackknife``; three or more raters, else
      NaN; ``n_boot`` and ``seed`` do not affect it). Units with a single answer carry no pairable information;
      ``n_units_dropped`` counts them.
    * ``fleiss_kappa``: statsmodels ``fleiss_kappa`` on the units × score-category count table (what
      ``aggregate_raters`` returns). Fleiss' κ needs an equal number of raters per unit: ``raters_per_unit`` (m) is
      the most common number of answers per unit (ties → the larger); a unit with more than m answers keeps its first
      m by answer time, a unit with fewer is dropped (``n_units_dropped``). CI by resampling units.

    Columns: ``AGREEMENT_COLUMNS``. Common reading: α ≥ 0.8 reliable, ≥ 0.667 tentative.
    """
    return _agreement_table(_prepare(df), n_boot, _rng(seed, "agreement"), ci_level, level_of_measurement)


def _agreement_table(prep: _Prepared, n_boot: int, rng, ci_level: float, level: str) -> pd.DataFrame:
    if prep.rows.empty:
        return result_table([{"metric": "", "note": not_computable("no ratings")}], AGREEMENT_COLUMNS)
    s = prep.first  # one answer per rater per image: a second screen is not a second rater
    cols = {c: s[c].to_numpy() for c in ("question", "image", "value", "rater", "model", "t")}  # no frame copies
    rows = []
    for qi, question in enumerate(prep.questions):
        sel = cols["question"] == qi
        unit = cols["image"][sel]
        levels, lev = np.unique(cols["value"][sel], return_inverse=True)
        rater, model = cols["rater"][sel], cols["model"][sel]
        order = np.lexsort((rater, cols["t"][sel], unit))
        rank = np.empty(len(unit), dtype=np.int64)
        u_sorted = unit[order]
        rank[order] = np.arange(len(order)) - np.searchsorted(u_sorted, u_sorted, side="left")
        arrays = {"unit": unit, "lev": lev, "rater": rater, "rank": rank}
        rows += _agreement_scope(arrays, question, ALL, levels, n_boot, rng, ci_level, level)
        for mi, name in enumerate(prep.models):
            sel = model == mi
            scoped = {k: v[sel] for k, v in arrays.items()}
            rows += _agreement_scope(scoped, question, name, levels, n_boot, rng, ci_level, level)
    out = result_table(rows, AGREEMENT_COLUMNS)
    for c in ("n_units", "n_raters", "n_answers", "raters_per_unit", "n_units_dropped"):
        out[c] = out[c].astype("Int64")
    return out


def intra_rater(df: pd.DataFrame, min_pairs: int = MIN_REPEAT_PAIRS) -> pd.DataFrame:
    """Intra-rater consistency on repeated items, per question: pooled over raters (``rater_id == "all"``) and per
    rater. Each repeat answer (``is_repeat``) is paired with the same rater's first answer on the same image and
    question; pairs where either answer is can't-judge are dropped. Statistics: share of identical scores,
    quadratic-weighted Cohen's κ (statsmodels ``cohens_kappa(table, wt="quadratic")`` on the first × repeat table
    over the question's score levels — identical to sklearn ``cohen_kappa_score(weights="quadratic",
    labels=levels)``, checked in the tests, and ~30× faster per rater) and Krippendorff's α (ordinal, the two
    occasions as two coders). Fewer than ``min_pairs`` pairs → "not computable". Columns: ``INTRA_COLUMNS``.
    """
    return _intra_table(_prepare(df), min_pairs)


def _intra_stats(first: np.ndarray, again: np.ndarray, n_levels: int, min_pairs: int) -> dict:
    """``first``/``again``: level codes (0..n_levels-1) of the paired answers."""
    row = {"n_pairs": len(first)}
    if len(first) < min_pairs:
        return {**row, "note": not_computable(f"{len(first)} repeat pairs (need {min_pairs})")}
    row["exact_agreement"] = float(np.mean(first == again))
    if np.unique(np.r_[first, again]).size < 2:
        return {**row, "note": not_computable("every repeated answer has the same score (no variation)")}
    table = fleiss_table(first, again, n_levels, n_levels)
    with np.errstate(invalid="ignore", divide="ignore"):
        kappa = float(cohens_kappa(table, wt="quadratic", return_results=False))
    row["kappa_quadratic"] = kappa if np.isfinite(kappa) else np.nan
    two_coders = np.vstack([first, again]).astype(float)
    row["alpha_ordinal"] = float(krippendorff.alpha(two_coders, level_of_measurement="ordinal"))
    if not np.isfinite(kappa):
        row["note"] = not_computable("κ undefined: one occasion used a single score")
    return row


def _repeat_pairs(prep: _Prepared) -> pd.DataFrame:
    """One row per valid (first answer, repeat) pair: rater, question, value_first, value_repeat."""
    r = prep.rows
    rater, image, q = r["rater"].to_numpy(), r["image"].to_numpy(), r["question"].to_numpy()
    key = (rater * (int(image.max()) + 1 if len(image) else 1) + image) * max(len(prep.questions), 1) + q
    rep = r["repeat"].to_numpy()
    valid = ~np.isnan(r["value"].to_numpy()) & ~r["cant"].to_numpy()
    first_idx = np.flatnonzero(~rep)
    first_idx = first_idx[np.lexsort((r["t"].to_numpy()[first_idx], key[first_idx]))]
    k_sorted = key[first_idx]
    is_first = np.r_[True, k_sorted[1:] != k_sorted[:-1]] if len(k_sorted) else np.zeros(0, bool)
    first_idx, k_sorted = first_idx[is_first], k_sorted[is_first]
    again = np.flatnonzero(rep & valid)
    pos = np.searchsorted(k_sorted, key[again])
    found = np.zeros(len(again), dtype=bool)
    if len(k_sorted):
        found = (pos < len(k_sorted)) & (k_sorted[np.minimum(pos, len(k_sorted) - 1)] == key[again])
    again, match = again[found], first_idx[pos[found]]
    ok = valid[match]
    again, match = again[ok], match[ok]
    v = r["value"].to_numpy()
    return pd.DataFrame(
        {"rater": rater[again], "question": q[again], "value_first": v[match], "value_repeat": v[again]}
    )


def _intra_table(prep: _Prepared, min_pairs: int) -> pd.DataFrame:
    if prep.rows.empty:
        return result_table([{"note": not_computable("no ratings")}], INTRA_COLUMNS)
    pairs = _repeat_pairs(prep)
    rows = []
    for qi, question in enumerate(prep.questions):
        pq = pairs[pairs["question"].to_numpy() == qi]
        if pq.empty:
            rows.append({"question": question, "rater_id": ALL, "n_pairs": 0, "note": not_computable("no repeated items")})
            continue
        levels = np.unique(prep.scored.loc[prep.scored["question"] == qi, "value"].to_numpy())
        levels = np.unique(np.r_[levels, pq["value_first"].to_numpy(), pq["value_repeat"].to_numpy()])
        f = np.searchsorted(levels, pq["value_first"].to_numpy())
        a = np.searchsorted(levels, pq["value_repeat"].to_numpy())
        rows.append({"question": question, "rater_id": ALL, **_intra_stats(f, a, len(levels), min_pairs)})
        rater = pq["rater"].to_numpy()
        order = np.argsort(rater, kind="stable")
        bounds = np.flatnonzero(np.r_[True, rater[order][1:] != rater[order][:-1], True])
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            idx = order[lo:hi]
            rows.append({"question": question, "rater_id": str(prep.raters[rater[idx[0]]]),
                         **_intra_stats(f[idx], a[idx], len(levels), min_pairs)})  # fmt: skip
    out = result_table(rows, INTRA_COLUMNS)
    out["n_pairs"] = out["n_pairs"].fillna(0).astype("int64")
    return out


# --------------------------------------------------------------------------------------------------------------------
# Position bias, timing, raters
# --------------------------------------------------------------------------------------------------------------------


def position_bias(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean score by panel position shown, per numeric question, and a Kruskal–Wallis test (scipy ``kruskal``) of
    "the scores have the same distribution at every position". ``mean_centered`` is the mean of (score − that
    model's mean on the question), which removes any imbalance of models across positions. Only screens with more
    than one panel count. Returns ``(by_position, tests)`` with ``POSITION_COLUMNS`` / ``POSITION_TEST_COLUMNS``."""
    return _position_tables(_prepare(df))


def _position_tables(prep: _Prepared) -> tuple[pd.DataFrame, pd.DataFrame]:
    if prep.rows.empty:
        tests = result_table([{"test": "kruskal", "note": not_computable("no ratings")}], POSITION_TEST_COLUMNS)
        return result_table([], POSITION_COLUMNS), tests
    s = prep.scored[prep.scored["n_panels"].to_numpy() > 1]
    if s.empty:
        reason = "every screen shows one panel" if not prep.scored.empty else "no scored answers"
        tests = [{"question": q, "test": "kruskal", "note": not_computable(reason)} for q in prep.questions]
        return result_table([], POSITION_COLUMNS), result_table(tests, POSITION_TEST_COLUMNS)
    s = s.assign(centered=s["value"] - s.groupby(["model", "question"])["value"].transform("mean"))
    by = (
        s.groupby(["question", "position"])
        .agg(n=("value", "size"), mean=("value", "mean"), sd=("value", "std"), mean_centered=("centered", "mean"))
        .reset_index()
    )
    by["question"] = [prep.questions[q] for q in by["question"]]
    tests = []
    for qi, question in enumerate(prep.questions):
        sq = s[s["question"].to_numpy() == qi]
        groups = [g.to_numpy() for _, g in sq.groupby("position")["value"]]
        row = {"question": question, "test": "kruskal", "n_positions": len(groups), "n": len(sq)}
        if len(groups) < 2:
            tests.append({**row, "note": not_computable("answers at fewer than two positions")})
        elif np.unique(sq["value"].to_numpy()).size < 2:
            tests.append({**row, "note": not_computable("every answer has the same score (no variation)")})
        else:
            res = stats.kruskal(*groups)
            tests.append({**row, "statistic": float(res.statistic), "p_value": float(res.pvalue)})
    return by.loc[:, list(POSITION_COLUMNS)], result_table(tests, POSITION_TEST_COLUMNS)


def _trial_times(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: rater, seconds (the time used: active where known, else wall), wall, active, panels."""
    t = rows.loc[~np.isnan(rows["seconds"].to_numpy()), ["trial", "rater", "seconds", "wall", "active", "n_panels"]]
    return t.groupby("trial", sort=False).agg(
        rater=("rater", "first"), seconds=("seconds", "max"), wall=("wall", "max"), active=("active", "max"),
        n_panels=("n_panels", "max"),
    )


def rating_times(df: pd.DataFrame) -> pd.DataFrame:
    """Seconds per trial (one screen; times are stored per trial): overall (``by == "all"``), per model (the
    trials that showed that model — identical across models when every screen shows every model) and per rater.
    ``median_seconds`` / ``q25_seconds`` / ``q75_seconds`` are of the time used: the active time (page visible and
    not idle) where the page measured it, else the wall time; ``n_active`` trials had an active time,
    ``median_active_seconds`` is their median (NaN when none) and ``median_wall_seconds`` the wall time's, side by
    side. Columns: ``TIMING_COLUMNS``."""
    return _timing_table(_prepare(df))


def _timing_table(prep: _Prepared) -> pd.DataFrame:
    r = prep.rows
    if r.empty or np.isnan(r["seconds"].to_numpy()).all():
        return result_table([], TIMING_COLUMNS)
    trials = _trial_times(r)
    timed = r.loc[~np.isnan(r["seconds"].to_numpy()), ["trial", "model", "seconds", "wall", "active"]]
    per_model = timed.drop_duplicates(["trial", "model"])[["model", "seconds", "wall", "active"]]

    def summarise(frame: pd.DataFrame, key: str | None, by: str, labels) -> pd.DataFrame:
        grouped = frame.groupby(key) if key else frame.assign(_k=0).groupby("_k")
        g = grouped["seconds"]
        q = g.quantile([0.25, 0.5, 0.75]).unstack()
        out = pd.DataFrame(
            {"n_trials": g.size(), "median_seconds": q[0.5], "q25_seconds": q[0.25], "q75_seconds": q[0.75],
             "n_active": grouped["active"].count(), "median_active_seconds": grouped["active"].median(),
             "median_wall_seconds": grouped["wall"].median()}
        )
        return out.assign(by=by, key=[labels(k) for k in out.index]).reset_index(drop=True)

    out = pd.concat(
        [
            summarise(trials, None, "all", lambda k: ALL),
            summarise(per_model, "model", "model", lambda k: prep.models[k]),
            summarise(trials, "rater", "rater", lambda k: str(prep.raters[k])),
        ],
        ignore_index=True,
    )
    return out.loc[:, list(TIMING_COLUMNS)]


def rater_summary(df: pd.DataFrame, thresholds: RaterThresholds = RaterThresholds()) -> pd.DataFrame:
    """One row per rater: answers, trials, scored and can't-judge answers, median seconds per trial and per image
    (trial seconds / panels), mean score, most-used score and its share, and agreement with the consensus: for each
    scored answer the consensus is the mean of the *other* raters' first answers on the same image and question;
    ``consensus_corr`` is the Pearson correlation computed within each question and averaged weighted by answers,
    ``consensus_bias`` the mean (answer − consensus). Flags ``too_fast``, ``straight_lining``, ``outlier``: see
    :class:`RaterThresholds`; ``catch_failed`` (with ``n_catch`` checks and ``catch_pass_rate``) from the catch
    trials (:func:`p2p_app.designs.catch_table`). Columns: ``RATER_COLUMNS``."""
    return _rater_table(_prepare(df), thresholds, _catch(df, thresholds))


def _catch(df: pd.DataFrame, th: RaterThresholds) -> pd.DataFrame | None:
    """The per-rater catch table, or ``None`` when the frame has no catch rows."""
    if catch_trial_mask(df) is None:
        return None
    return catch_table(df, th.min_catch_pass_rate, th.min_catch_answers)


def _with_catch(out: pd.DataFrame, catch: pd.DataFrame | None) -> pd.DataFrame:
    """The rater table with the catch columns (zero checks, no flag without catch trials); a rater seen only on
    catch trials gets a row of their own."""
    if catch is None or "n_catch" not in catch.columns or catch["n_catch"].isna().all():
        out["n_catch"] = np.zeros(len(out), dtype=np.int64)
        out["catch_pass_rate"] = np.nan
        out["catch_failed"] = np.zeros(len(out), dtype=bool)
        return out
    c = catch.set_index("rater_id")
    extra = [r for r in c.index if r not in set(out["rater_id"])]
    if extra:
        add = pd.DataFrame({"rater_id": extra, "n_answers": 0, "n_trials": 0, "n_scored": 0, "n_cant_judge": 0,
                            "n_consensus": 0, "too_fast": False, "straight_lining": False, "outlier": False,
                            "note": not_computable("only catch trials")})  # fmt: skip
        out = pd.concat([out, add], ignore_index=True) if len(out) else add
    ids = out["rater_id"].astype(str)
    out["n_catch"] = ids.map(c["n_catch"]).fillna(0).astype("int64").to_numpy()
    out["catch_pass_rate"] = ids.map(c["pass_rate"]).astype(float).to_numpy()
    out["catch_failed"] = ids.map(c["flagged"]).fillna(False).astype(bool).to_numpy()
    for col in ("n_answers", "n_trials", "n_scored", "n_cant_judge", "n_consensus"):
        out[col] = out[col].fillna(0).astype("int64")
    for col in ("too_fast", "straight_lining", "outlier"):
        out[col] = out[col].fillna(False).astype(bool)
    return out.reindex(columns=list(RATER_COLUMNS)).sort_values("rater_id").reset_index(drop=True)


def _rater_table(prep: _Prepared, th: RaterThresholds, catch: pd.DataFrame | None = None) -> pd.DataFrame:
    r = prep.rows
    if r.empty:
        if catch is not None and not catch["n_catch"].isna().all():
            return _with_catch(pd.DataFrame(columns=list(RATER_COLUMNS)), catch)
        return result_table([{"note": not_computable("no ratings")}], RATER_COLUMNS)
    out = r.groupby("rater").agg(
        n_answers=("value", "size"), n_trials=("trial", "nunique"), n_cant_judge=("cant", "sum")
    )
    trials = _trial_times(r)
    trials["per_image"] = trials["seconds"] / trials["n_panels"].clip(lower=1)
    out = out.join(
        trials.groupby("rater").agg(
            median_seconds=("seconds", "median"), median_seconds_per_image=("per_image", "median"),
            median_wall_seconds=("wall", "median"),
        )
    )
    s = prep.scored
    out = out.join(s.groupby("rater")["value"].agg(n_scored="size", mean="mean"))
    counts = s.groupby(["rater", "value"]).size().rename("k").reset_index()
    counts = counts.sort_values(["rater", "k", "value"], ascending=[True, False, True])  # ties: the lower score
    modal = counts.drop_duplicates("rater").set_index("rater")
    out["modal_score"] = modal["value"]
    out["modal_share"] = modal["k"] / out["n_scored"]
    # consensus: mean of the other raters' first answers on the same image × question
    s = prep.first
    grp = s.groupby(["image", "question"])["value"]
    tot, cnt = grp.transform("sum").to_numpy(), grp.transform("size").to_numpy()
    shared = cnt > 1
    x = s["value"].to_numpy()[shared]
    y = (tot[shared] - x) / (cnt[shared] - 1)
    c = pd.DataFrame({"rater": s["rater"].to_numpy()[shared], "question": s["question"].to_numpy()[shared],
                      "x": x, "y": y, "xx": x * x, "yy": y * y, "xy": x * y})  # fmt: skip
    sums = c.groupby(["rater", "question"]).agg(
        n=("x", "size"), x=("x", "sum"), y=("y", "sum"), xx=("xx", "sum"), yy=("yy", "sum"), xy=("xy", "sum")
    )
    n = sums["n"]
    vx, vy = sums["xx"] - sums["x"] ** 2 / n, sums["yy"] - sums["y"] ** 2 / n
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = ((sums["xy"] - sums["x"] * sums["y"] / n) / np.sqrt(vx * vy)).where((vx > 1e-9) & (vy > 1e-9))
    w = n.where(corr.notna(), 0)
    per = pd.DataFrame({"wc": (corr * n).fillna(0), "w": w, "n": n, "bias": sums["x"] - sums["y"]})
    per = per.groupby("rater").sum()
    out["consensus_corr"] = (per["wc"] / per["w"]).where(per["w"] > 0)
    out["consensus_bias"] = per["bias"] / per["n"]
    out["n_consensus"] = per["n"]
    for col in ("n_scored", "n_consensus", "n_cant_judge"):
        out[col] = out[col].fillna(0).astype("int64")
    enough_c = out["n_consensus"] >= th.min_answers
    out["too_fast"] = (out["median_seconds_per_image"] < th.too_fast_seconds).fillna(False).astype(bool)
    straight = (out["n_scored"] >= th.min_answers) & (out["modal_share"] >= th.straight_lining_share)
    out["straight_lining"] = straight.fillna(False).astype(bool)
    off = (out["consensus_corr"] < th.min_consensus_corr) | (out["consensus_bias"].abs() >= th.max_consensus_bias)
    out["outlier"] = (enough_c & off).fillna(False).astype(bool)
    out["note"] = np.where(
        out["n_consensus"] == 0,
        not_computable("no image shared with another rater (consensus)"),
        np.where(~enough_c, f"consensus flag needs {th.min_answers} shared answers", ""),
    )
    out = out.reset_index()
    out["rater_id"] = [str(prep.raters[k]) for k in out["rater"]]
    out = _with_catch(out, catch)
    return out.loc[:, list(RATER_COLUMNS)].sort_values("rater_id").reset_index(drop=True)


# --------------------------------------------------------------------------------------------------------------------
# Pairwise model comparison
# --------------------------------------------------------------------------------------------------------------------


def pairwise_tests(df: pd.DataFrame, min_pairs: int = MIN_PAIRS, ci_level: float = DEFAULT_CI_LEVEL) -> pd.DataFrame:
    """Paired comparison of every two generated models on the same prompts, per numeric question.

    Scores are averaged per (model, prompt, seed) — prompt = ``prompt_id``, or the prompt text when ``prompt_id`` is
    empty; the pairs are the (prompt, seed) cells both models have. Test: Wilcoxon signed-rank (scipy, two-sided,
    zero differences dropped; all differences zero → p = 1). ``mean_diff`` = mean of (a − b). ``p_holm``: Holm
    correction across the model pairs of one question (statsmodels ``multipletests``).

    Interval for the difference: ``paired_mean_diff`` is the mean over the ``n_paired_answers`` (rater, item) cells
    where one rater scored both models' images on the same screen (equal to ``mean_diff`` when every screen has the
    same number of raters); ``diff_ci_low``/``diff_ci_high`` treat raters and items as crossed random effects
    (:func:`crossed_mean_ci` on the paired differences). Columns: ``PAIRWISE_COLUMNS``.
    """
    return _pairwise_table(_prepare(df), min_pairs, ci_level)


def _model_means(
    keys: tuple[np.ndarray, ...], model: np.ndarray, value: np.ndarray, n_models: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``value`` per (key, model) as a dense (distinct keys × models) array, NaN where a key has no answer of
    that model (a numpy ``groupby(keys + [model]).mean().unstack(model)``), and the first row of each key."""
    code = np.zeros(len(model), dtype=np.int64)
    for k in keys:  # combine the key columns into one code, factorising as we go (no overflow)
        kc = pd.factorize(k)[0].astype(np.int64)
        code = pd.factorize(code * (int(kc.max()) + 1 if len(kc) else 1) + kc)[0].astype(np.int64)
    n_keys = int(code.max()) + 1 if len(code) else 0
    cell = code * n_models + model
    total = np.bincount(cell, weights=value, minlength=n_keys * n_models)
    count = np.bincount(cell, minlength=n_keys * n_models)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (total / count).reshape(n_keys, n_models)
    # factorize numbers keys by first appearance: a row is a key's first where its code exceeds all before it
    first = np.flatnonzero(code > np.maximum.accumulate(np.r_[-1, code[:-1]])) if n_keys else code[:0]
    return means, first


def _pairwise_table(prep: _Prepared, min_pairs: int, ci_level: float = DEFAULT_CI_LEVEL) -> pd.DataFrame:
    gen = prep.generated
    if len(gen) < 2:
        reason = "no ratings" if prep.rows.empty else "fewer than two generated models"
        return result_table([{"note": not_computable(reason)}], PAIRWISE_COLUMNS)
    gen_rows = ~prep.is_real[prep.scored["model"].to_numpy()] if len(prep.scored) else slice(None)
    cols = {c: prep.scored[c].to_numpy()[gen_rows] for c in ("question", "pkey", "seed", "rater", "item", "model",
                                                              "value")}  # fmt: skip
    n_m = len(prep.models)
    rows = []
    for qi, question in enumerate(prep.questions):
        sel = cols["question"] == qi
        model, value = cols["model"][sel], cols["value"][sel]
        wide, _ = _model_means((cols["pkey"][sel], cols["seed"][sel]), model, value, n_m)  # (prompt, seed) × model
        wide_a, first = _model_means((cols["rater"][sel], cols["item"][sel]), model, value, n_m)  # (rater, item)
        rater_a, item_a = cols["rater"][sel][first], cols["item"][sel][first]
        has = ~np.isnan(wide).all(axis=0)
        q_rows = []
        for a, b in itertools.combinations(gen, 2):
            row = {"question": question, "model_a": prep.models[a], "model_b": prep.models[b]}
            if not (has[a] and has[b]):
                q_rows.append({**row, "n_pairs": 0, "note": not_computable("a model has no ratings on this question")})
                continue
            both = ~np.isnan(wide[:, a]) & ~np.isnan(wide[:, b])
            x, y = wide[both, a], wide[both, b]
            row["n_pairs"] = len(x)
            if len(x) < min_pairs:
                q_rows.append({**row, "note": not_computable(f"{len(x)} shared prompt/seed pairs (need {min_pairs})")})
                continue
            d = x - y
            row.update(mean_a=x.mean(), mean_b=y.mean(), mean_diff=d.mean(), median_diff=float(np.median(d)))
            if np.all(d == 0):
                row.update(statistic=0.0, p_value=1.0)
            else:
                res = stats.wilcoxon(x, y)
                row.update(statistic=float(res.statistic), p_value=float(res.pvalue))
            paired = ~np.isnan(wide_a[:, a]) & ~np.isnan(wide_a[:, b])
            d_a = wide_a[paired, a] - wide_a[paired, b]
            cm = crossed_mean_ci(d_a, rater_a[paired], item_a[paired], ci_level)
            row.update(n_paired_answers=int(paired.sum()), paired_mean_diff=cm.mean, diff_ci_low=cm.ci_low,
                       diff_ci_high=cm.ci_high)  # fmt: skip
            q_rows.append(row)
        p = np.array([r.get("p_value", np.nan) for r in q_rows], dtype=float)
        ok = np.flatnonzero(np.isfinite(p))
        if len(ok):
            for i, adj in zip(ok, multipletests(p[ok], method="holm")[1], strict=True):
                q_rows[i]["p_holm"] = float(adj)
        rows += q_rows
    if not rows:
        return result_table([{"note": not_computable("no numeric questions")}], PAIRWISE_COLUMNS)
    out = result_table(rows, PAIRWISE_COLUMNS)
    out["n_pairs"] = out["n_pairs"].fillna(0).astype("int64")
    out["n_paired_answers"] = out["n_paired_answers"].fillna(0).astype("int64")
    return out


# --------------------------------------------------------------------------------------------------------------------
# Overview and the whole analysis
# --------------------------------------------------------------------------------------------------------------------


def overview(df: pd.DataFrame) -> pd.DataFrame:
    """Counts that frame every other table (answers, scored, can't judge, repeats, raters, items, images, models,
    questions, first and last answer). Columns: ``quantity``, ``value`` (strings)."""
    return _overview(df, _prepare(df))


def _overview(df: pd.DataFrame, prep: _Prepared) -> pd.DataFrame:
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


def _rng(seed: int, stream: str) -> np.random.Generator:
    """Independent, reproducible stream per statistic family, so one table's draws don't depend on another's."""
    return np.random.default_rng([int(seed), sum(ord(ch) * 31**i for i, ch in enumerate(stream)) % 2**32])


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

    def tables(self) -> dict[str, pd.DataFrame]:
        """Table name → table, in reading order."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {name: v for name, v in values.items() if isinstance(v, pd.DataFrame)}


def realism_pilot(df: pd.DataFrame) -> dict:
    """What a pilot's realism scores of generated images say for planning (:mod:`p2p_app.plan`): ``models``, the
    largest paired difference between two models (``effect``, None without pairs), and the crossed-design variance
    components as standard deviations (``noise`` residual, ``rater_sd``, ``image_sd``; :func:`crossed_mean_ci` on
    the scores centred per model). Raises ``ValueError`` when there is too little to estimate them."""
    prep = _prepare(df)
    qi = prep.q(REALISM)
    if qi is None:
        raise ValueError("the pilot has no realism scores")
    s = prep.scored[(prep.scored["question"] == qi) & ~prep.is_real[prep.scored["model"].to_numpy()]]
    if len(s) < 10 or s["rater"].nunique() < 2:
        raise ValueError("the pilot needs at least 10 realism scores of generated images by two or more raters")
    centred = s["value"].to_numpy() - s.groupby("model")["value"].transform("mean").to_numpy()
    cm = crossed_mean_ci(centred, s["rater"].to_numpy(), s["image"].to_numpy(), 0.95)
    pw = _pairwise_table(prep, 2)
    pw = pw[(pw["question"] == REALISM) & pw["paired_mean_diff"].notna()]
    effect = float(pw["paired_mean_diff"].abs().max()) if len(pw) else None
    return {"models": max(len(prep.generated), 2), "effect": effect, "noise": float(np.sqrt(cm.var_residual)),
            "rater_sd": float(np.sqrt(cm.var_rater)), "image_sd": float(np.sqrt(cm.var_image))}


def forced_choice_agreement(screens: pd.DataFrame, n_boot: int, rng: np.random.Generator, ci_level: float):
    """Fleiss' κ and Krippendorff's α (nominal) on which model each rater picked per item (units = items).
    Columns: :data:`AGREEMENT_COLUMNS` (the score agreement's code, not a copy)."""
    if screens.empty:
        return result_table([{"question": CHOSEN_REAL, "model": ALL, "metric": "fleiss_kappa",
                        "note": not_computable("no forced-choice screens")}], AGREEMENT_COLUMNS)  # fmt: skip
    unit = pd.factorize(screens["item_id"])[0].astype(np.int64)
    lev, levels = pd.factorize(screens["chosen_model"], sort=True)
    rater = pd.factorize(screens["rater_id"])[0].astype(np.int64)
    order = np.lexsort((np.arange(len(unit)), unit))  # screens are in answer-time order already
    rank = np.empty(len(unit), dtype=np.int64)
    rank[order] = np.arange(len(order)) - np.searchsorted(unit[order], unit[order], side="left")
    arrays = {"unit": unit, "lev": lev.astype(np.int64), "rater": rater, "rank": rank}
    rows = _agreement_scope(arrays, CHOSEN_REAL, ALL, np.arange(len(levels), dtype=float), n_boot, rng, ci_level,
                            "nominal")  # fmt: skip
    out = result_table(rows, AGREEMENT_COLUMNS)
    for c in ("n_units", "n_raters", "n_answers", "raters_per_unit", "n_units_dropped"):
        out[c] = out[c].astype("Int64")
    return out


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
    prep = _prepare(df, models)
    position, position_test = _position_tables(prep)
    catch = _catch(df, thresholds)
    raters = _rater_table(prep, thresholds, catch)
    designs = _design_tables(df, n_boot, seed, ci_level)
    designs["catch"] = catch
    designs["catch_kinds"] = catch_kind_table(df, ci_level)
    auc_result = _reader_study_result(prep, REALISM, ci_level)  # after the rater table: lower peak memory
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
        scores=_score_table(prep, ci_level),
        real_vs_generated=_real_table(prep, auc_result, ci_level, REALISM),
        reader_study=_reader_study_table(prep, auc_result),
        roc=_roc_table(prep, REALISM),
        agreement=_agreement_table(prep, n_boot, _rng(seed, "agreement"), ci_level, "ordinal"),
        intra_rater=_intra_table(prep, MIN_REPEAT_PAIRS),
        position=position,
        position_test=position_test,
        timing=_timing_table(prep),
        raters=raters,
        pairwise=_pairwise_table(prep, MIN_PAIRS, ci_level),
        notes=tuple(notes),
        n_boot=n_boot,
        seed=seed,
        ci_level=ci_level,
        **designs,
        **(dict(zip(("marks", "mark_grids"), mark_heatmaps(df, marks))) if marks is not None else {}),
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
        out["forced_choice_agreement"] = forced_choice_agreement(screens, n_boot, _rng(seed, "forced_choice"),
                                                                 ci_level)  # fmt: skip
    if any(q.startswith(RANK_PREFIX) for q in questions):
        out["ranking"], out["ranking_wins"] = ranking_tables(df, n_boot, _rng(seed, "ranking"), ci_level)
    return out
