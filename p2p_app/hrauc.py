"""The inferred ROC of artifact marks (issue 22): a study with ``mark_confidence`` asks, for every point a rater
marks as looking wrong, how sure they are that it is an artifact (1-5). The highest confidence among a rater's marks
on an image is that image's "synthetic" score (0 for an image the rater did not mark): RJafroc's highest-rating
figure of merit ``HrAuc`` (Chakraborty DP, *Observer Performance Methods for Diagnostic Imaging*, CRC Press 2017,
ch. 13: the highest-rated mark of a case is its inferred ROC rating; an unmarked case gets the lowest rating).

Free marks have no truth locations (no one drew the artifacts of a generated image), so a mark cannot be scored as
a lesion localisation (no FROC figure of merit); only the per-image inferred ROC is. Truth: generated images are
the "diseased" cases (they are what an artifact points to), the real control images the non-diseased ones. The
analysis is the report's reader study (:func:`p2p_app.analysis.compare.reader_study`: Obuchowski–Rockette with
jackknife covariances, treatment = model, the real images shared by every model) on these scores, and the R tools
get the same data in RJafroc's layout (:func:`p2p_app.rtools.write_rjafroc_hrauc`).
"""

from __future__ import annotations

import pandas as pd

from .designs import catch_trial_mask
from .tidy import without_practice

HR_QUESTION = "artifact_hr"
"""The ``question`` label of the inferred scores in the tidy frame :func:`hr_ratings` returns."""
NO_MARK = 0
"""The inferred score of an image its rater did not mark (below every confidence, 1-5)."""


def has_confidences(marks: pd.DataFrame | None) -> bool:
    """True when ``marks`` (the marks frame) holds at least one mark with a confidence."""
    return marks is not None and "confidence" in marks.columns and bool(marks["confidence"].notna().any())


def hr_ratings(df: pd.DataFrame, marks: pd.DataFrame) -> pd.DataFrame:
    """The tidy frame ``df`` reduced to one row per image shown on a trial (practice items and catch trials left
    out), with ``question`` = :data:`HR_QUESTION` and ``value`` = the highest confidence among the trial's current
    marks on that image (``marks``: the marks frame), :data:`NO_MARK` when it has none; answers, choices and "can't
    judge" are cleared (the inferred score exists for every image shown). Raises ``ValueError`` when no mark has a
    confidence (a study without ``mark_confidence``)."""
    if not has_confidences(marks):
        raise ValueError("no artifact mark has a confidence (the study does not ask for mark_confidence)")
    df = without_practice(df)
    in_catch = catch_trial_mask(df)
    if in_catch is not None:
        df = df[~in_catch]
    shown = df.drop_duplicates(["trial_id", "image_id"]).copy()
    current = marks[marks["confidence"].notna()]
    if "replaced_at" in current.columns:
        current = current[current["replaced_at"].isna()]
    hr = current.groupby(["trial_id", "image_id"])["confidence"].max().astype(float).rename("hr")
    shown = shown.join(hr, on=["trial_id", "image_id"])
    shown["question"] = HR_QUESTION
    shown["value"] = shown["hr"].fillna(float(NO_MARK)).to_numpy(dtype=float)
    shown["choices"] = ""
    shown["comment"] = ""
    shown["cant_judge"] = False
    return shown.drop(columns="hr").reset_index(drop=True)


def reader_frame(hr: pd.DataFrame) -> pd.DataFrame:
    """:func:`hr_ratings` as the report's reader study reads a score (higher = more real): ``value`` negated, so the
    AUC it reports is P(a generated image's highest confidence > a real image's) + ½ P(equal)."""
    return hr.assign(value=-hr["value"].to_numpy(dtype=float))
