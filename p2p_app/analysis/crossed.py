"""Crossed random effects: intervals for means with raters and images random (the package docstring gives the
method), and the score table per model × question built on them."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats
from scipy.optimize import nnls

from ..tidy import REALISM, not_computable, result_table
from .preparation import (
    DEFAULT_CI_LEVEL,
    DEFAULT_N_BOOT,
    DEFAULT_SEED,
    MAX_SCORE_COLUMNS,
    SCALE_LEVELS,
    SCORE_COLUMNS,
    Prepared,
    dense,
    prepare,
)

# --------------------------------------------------------------------------------------------------------------------
# Crossed random effects: intervals for means (see the package docstring)
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
    r = dense(np.asarray(rater))
    i = dense(np.asarray(image))
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


def bounded_interval(estimate: float, lo: float, hi: float, low: float, high: float) -> dict:
    """``{"ci_low", "ci_high"}`` of an interval made to respect the parameter's range [``low``, ``high``] and to
    contain its reported estimate: clipped to the range (an estimate outside it, as a small-sample α below −1, keeps
    its place), then widened to the estimate where a bias-corrected centre left it outside."""
    lo, hi = max(lo, min(low, estimate)), min(hi, max(high, estimate))
    return {"ci_low": min(lo, estimate), "ci_high": max(hi, estimate)}


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
    return score_table(prepare(df, models), ci_level)


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


def _score_levels(prep: Prepared) -> tuple[int, ...]:
    """``SCALE_LEVELS`` plus every other whole-number value of a question with at most ``MAX_SCORE_COLUMNS``
    distinct values."""
    s = prep.scored
    levels = set(SCALE_LEVELS)
    for qi in range(len(prep.questions)):
        v = np.unique(s["value"].to_numpy()[s["question"].to_numpy() == qi])
        if len(v) <= MAX_SCORE_COLUMNS:
            levels |= {int(x) for x in v if x == np.round(x)}
    return tuple(sorted(levels)) if len(levels) <= MAX_SCORE_COLUMNS else SCALE_LEVELS


def score_table(prep: Prepared, ci_level: float) -> pd.DataFrame:
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
