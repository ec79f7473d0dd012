"""The preparation every table of :mod:`p2p_app.analysis` starts from: the tidy frame's numeric answers as integer
codes (so every table is ``bincount`` / ``groupby`` on integers), the defaults and the output schemas."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..designs import catch_trial_mask
from ..tidy import (
    GENERATED_SOURCE,
    REAL_MODEL,
    REAL_SOURCE,
    check_ratings_frame,
    is_design_question,
    question_order,
    without_practice,
)

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
class Prepared:
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


def prepare(df: pd.DataFrame, models: Sequence[str] = ()) -> Prepared:
    """The numeric answers of ``df`` (practice answers and catch trials left out) as integer codes; ``models``:
    models expected in the study, listed even without answers."""
    check_ratings_frame(df)
    df = without_practice(df)  # practice answers never enter a statistic
    in_catch = catch_trial_mask(df)
    if in_catch is not None:  # catch trials (known-answer items) never enter a statistic of the study itself
        df = df[~in_catch]
    value = pd.to_numeric(df["value"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    q_new, questions = _numeric_questions(df, value)
    keep = q_new >= 0
    m_new, order, sources = _model_codes(df, models)
    r_code, r_uni = _codes(df["rater_id"], sort=True)
    i_code, i_uni = _codes(df["item_id"])
    g_code, g_uni = _codes(df["image_id"])
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
            "model": m_new[keep],
            "question": q_new[keep],
            "pkey": _prompt_keys(df)[keep],
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
    return Prepared(
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


def _numeric_questions(df: pd.DataFrame, value: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Question code of each row (-1 for a question that is not numeric) and the numeric questions in display
    order: those with a value, or answered only "can't judge" without multi-select choices; never a design
    question (picks and ranks)."""
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
    return (q_map[q_code] if len(q_code) else q_code), questions


def _model_codes(df: pd.DataFrame, models: Sequence[str]) -> tuple[np.ndarray, list[str], dict[str, str]]:
    """Model code of each row, the model labels in display order (real controls first, then generated models, each
    by name; ``models`` without answers included) and each model's source."""
    m_code, m_uni = _codes(df["model"])
    _, first = np.unique(m_code, return_index=True)
    src = df["source"].fillna("").to_numpy(dtype=object)[first] if len(first) else np.array([], dtype=object)
    sources = {str(m): str(s) for m, s in zip(m_uni, src, strict=True)}
    for m in models:
        sources.setdefault(str(m), REAL_SOURCE if m == REAL_MODEL else GENERATED_SOURCE)
    order = sorted(m for m, s in sources.items() if s == REAL_SOURCE)
    order += sorted(m for m, s in sources.items() if s != REAL_SOURCE)
    m_map = np.array([order.index(str(m)) for m in m_uni], dtype=np.int64)
    return (m_map[m_code] if len(m_code) else m_code), order, sources


def _prompt_keys(df: pd.DataFrame) -> np.ndarray:
    """Prompt code of each row: by ``prompt_id``, or by the prompt text where ``prompt_id`` is empty."""
    pid_code, pid_uni = _codes(df["prompt_id"])
    txt_code, _ = _codes(df["prompt"])
    empty_pid = np.array([str(p) == "" for p in pid_uni], dtype=bool)
    return np.where(empty_pid[pid_code], len(pid_uni) + txt_code, pid_code) if len(pid_code) else pid_code


def _first_answers(prep: Prepared) -> pd.DataFrame:
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


def dense(codes: np.ndarray) -> np.ndarray:
    """Renumber integer codes 0..k-1 (only the codes present), in order of first appearance (a hash table:
    faster than sorting)."""
    return pd.factorize(np.asarray(codes))[0].astype(np.int64)


def stream_rng(seed: int, stream: str) -> np.random.Generator:
    """Independent, reproducible stream per statistic family, so one table's draws don't depend on another's."""
    return np.random.default_rng([int(seed), sum(ord(ch) * 31**i for i, ch in enumerate(stream)) % 2**32])
