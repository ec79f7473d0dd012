"""The naive → disclosed reading design (``design = "naive_disclosed"``): detection of synthetic images before and
after the reader is told that some images are synthetic, per model, with raters random.

Phase 1 ("naive", column ``phase``): the reader answers the study's questions and "Anything unusual about this
image?" (question ``unusual``, the text in ``comment``) without any mention of synthesis. An image counts as
**noticed** when its text matches the study's keyword rule (``notice_words``: whole words, case-insensitive, ``*``
any ending; :func:`p2p_app.study.notice_pattern`) — a rule, not a reading: the texts are exported
(:func:`unusual_texts`) for manual coding, and the report states the rule. Phase 2 ("disclosed"): after the
disclosure the reader calls each image on a 6-point scale (question ``real_or_synthetic``, 1–3 synthetic, 4–6
real). **Detected** is a correct call: a generated image called synthetic (sensitivity), a real image called real
(specificity); "all images" is the accuracy.

Each share is a proportion over screens with raters as the random sample: the rater-clustered Korn–Graubard
interval of :func:`p2p_app.designs.rater_clustered_proportion` (the one used for forced choice). The
**difference** detected − noticed on the same raters is a difference of two ratio estimators on one sample of
raters: its variance is the cluster-robust (CR1) variance of the summed linearised residuals per rater,
``R/(R − 1) · Σ_r ((k2_r − p̂2 n2_r)/N2 − (k1_r − p̂1 n1_r)/N1)²``, with Student's t on R − 1 df (the paired
version of :func:`p2p_app.designs.clustered_difference`), clipped to [−1, 1]. Items are treated as fixed (every
rater reads the same images in both phases; the interval generalises over raters). Checked against the simulator
(:func:`p2p_app.simulate_disclosure.simulate_naive_disclosed`, tests/test_naive_disclosed.py,
benchmarks/bench_disclosure.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ..designs import rater_clustered_proportion
from ..study import DEFAULT_NOTICE_WORDS, SOURCE_CALL_KEY, SOURCE_CALL_REAL_FROM, UNUSUAL_KEY, notice_pattern
from ..tidy import REAL_MODEL, without_practice

ALL_GENERATED = "all generated"
ALL_IMAGES = "all images"
DISCLOSURE_COLUMNS = (
    "model", "n_raters", "naive_images", "noticed", "noticed_low", "noticed_high",
    "disclosed_images", "detected", "detected_low", "detected_high", "difference", "difference_low",
    "difference_high",
)
"""One row per model, then "all generated" (detected = sensitivity), "real" (noticed = real images flagged,
detected = specificity) and "all images" (detected = accuracy)."""


def has_disclosure(df: pd.DataFrame) -> bool:
    """True when ``df`` holds answers of the naive → disclosed design."""
    return "phase" in df.columns and bool(df["phase"].isin(["naive", "disclosed"]).any())


def naive_rows(df: pd.DataFrame, words: Sequence[str] = DEFAULT_NOTICE_WORDS) -> pd.DataFrame:
    """Phase 1's "anything unusual?" rows (first showings, not practice, not can't judge) with ``noticed``."""
    d = without_practice(df)
    d = d[(d["phase"] == "naive") & (d["question"] == UNUSUAL_KEY) & ~d["is_repeat"].fillna(False).astype(bool)
          & ~d["cant_judge"].fillna(False).astype(bool)]
    pattern = notice_pattern(words)
    return d.assign(noticed=d["comment"].fillna("").map(lambda t: bool(pattern.search(t))))


def disclosed_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Phase 2's calls (not can't judge) with ``called_real`` and ``correct``."""
    d = without_practice(df)
    d = d[(d["phase"] == "disclosed") & (d["question"] == SOURCE_CALL_KEY) & d["value"].notna()
          & ~d["cant_judge"].fillna(False).astype(bool)]
    called_real = d["value"] >= SOURCE_CALL_REAL_FROM
    return d.assign(called_real=called_real, correct=called_real == (d["model"] == REAL_MODEL))


def _counts(rows: pd.DataFrame, success: str, raters: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    per = rows.groupby("rater_id")[success].agg(["sum", "size"]).reindex(raters, fill_value=0)
    return per["sum"].to_numpy(dtype=float), per["size"].to_numpy(dtype=float)


def paired_difference(before: tuple[np.ndarray, np.ndarray], after: tuple[np.ndarray, np.ndarray],
                      ci_level: float) -> tuple[float, float, float]:  # fmt: skip
    """``after − before`` of two rater-clustered proportions on the same raters (arrays aligned by rater): the
    estimate and its interval (module docstring). NaN interval with fewer than two raters."""
    (k1, n1), (k2, n2) = before, after
    big1, big2 = n1.sum(), n2.sum()
    if big1 == 0 or big2 == 0:
        return np.nan, np.nan, np.nan
    p1, p2 = k1.sum() / big1, k2.sum() / big2
    d = p2 - p1
    present = (n1 + n2) > 0
    r = int(present.sum())
    if r < 2:
        return d, np.nan, np.nan
    e = ((k2 - p2 * n2) / big2 - (k1 - p1 * n1) / big1)[present]
    v = r / (r - 1) * float((e**2).sum())
    half = float(stats.t.ppf(0.5 + ci_level / 2, r - 1)) * np.sqrt(v)
    return d, max(d - half, -1.0), min(d + half, 1.0)


def _share(k: np.ndarray, n: np.ndarray, ci_level: float) -> tuple[float, float, float]:
    if n.sum() == 0:
        return np.nan, np.nan, np.nan
    r = rater_clustered_proportion(k, n, np.nan, ci_level)
    return float(r["estimate"]), float(r["ci_low"]), float(r["ci_high"])


def disclosure_table(df: pd.DataFrame, words: Sequence[str] = DEFAULT_NOTICE_WORDS,
                     ci_level: float = 0.95) -> pd.DataFrame:  # fmt: skip
    """Detection before (noticed) and after disclosure (detected) per model (see :data:`DISCLOSURE_COLUMNS`)."""
    naive, called = naive_rows(df, words), disclosed_rows(df)
    raters = sorted(set(naive["rater_id"]) | set(called["rater_id"]))
    models = sorted((set(naive["model"]) | set(called["model"])) - {REAL_MODEL})
    groups = [(m, naive["model"] == m, called["model"] == m) for m in models]
    groups += [(ALL_GENERATED, naive["model"] != REAL_MODEL, called["model"] != REAL_MODEL),
               (REAL_MODEL, naive["model"] == REAL_MODEL, called["model"] == REAL_MODEL),
               (ALL_IMAGES, naive["model"].notna(), called["model"].notna())]
    rows = []
    for name, in_naive, in_called in groups:
        before = _counts(naive[in_naive], "noticed", raters)
        after = _counts(called[in_called], "correct", raters)
        if name in (REAL_MODEL, ALL_IMAGES):
            diff = (np.nan, np.nan, np.nan)  # "noticed" on real images is a false alarm, not a detection
        else:
            diff = paired_difference(before, after, ci_level)
        noticed = _share(*before, ci_level) if name != ALL_IMAGES else (np.nan, np.nan, np.nan)
        rows.append((name, int(((before[1] + after[1]) > 0).sum()), int(before[1].sum()), *noticed,
                     int(after[1].sum()), *_share(*after, ci_level), *diff))
    return pd.DataFrame(rows, columns=list(DISCLOSURE_COLUMNS))


def unusual_texts(df: pd.DataFrame, words: Sequence[str] = DEFAULT_NOTICE_WORDS) -> pd.DataFrame:
    """Every non-empty "anything unusual?" text of phase 1 for manual coding: rater, image, model, source, the text
    and what the keyword rule made of it (``noticed``)."""
    d = naive_rows(df, words)
    d = d[d["comment"].fillna("").str.strip() != ""]
    return d.loc[:, ["rater_id", "item_id", "image_id", "model", "source", "comment", "noticed"]].rename(
        columns={"comment": "text"}).reset_index(drop=True)


def rule_text(words: Sequence[str]) -> str:
    """The keyword rule in words, as the report states it."""
    shown = ", ".join(f"“{w}”" for w in words)
    return (f"an image counts as noticed when its “anything unusual?” text contains one of {shown} as a whole word "
            f"(case-insensitive; * = any ending): regex {notice_pattern(words).pattern!s}")


__all__ = ["ALL_GENERATED", "ALL_IMAGES", "DISCLOSURE_COLUMNS", "disclosed_rows", "disclosure_table",
           "has_disclosure", "naive_rows", "paired_difference", "rule_text", "unusual_texts"]
