"""The tidy ratings frame (docs/CONTRACTS.md): its columns, dtypes, names and checks — the one data contract that
storage, simulate, export, analysis and report all use. Cheap to import (no scipy, sklearn or statsmodels), so
the commands that only move data never pay for the statistics."""

from __future__ import annotations

import types
from typing import Mapping

TIDY_DTYPES: Mapping[str, str] = types.MappingProxyType(
    {
        "study": "str",
        "rater_id": "str",
        "item_id": "str",
        "trial_id": "int64",
        "image_id": "str",
        "model": "str",
        "source": "str",
        "prompt_id": "str",
        "prompt": "str",
        "modality": "str",
        "seed": "Int64",
        "position": "int64",
        "n_panels": "int64",
        "order_index": "int64",
        "question": "str",
        "value": "float64",
        "choices": "str",
        "cant_judge": "bool",
        "comment": "str",
        "shown_at": "datetime64[ns, UTC]",
        "answered_at": "datetime64[ns, UTC]",
        "seconds": "float64",
        "is_repeat": "bool",
        # added by issue 14 (study designs): at the end, each with a default (TIDY_DEFAULTS)
        "catch": "str",
        "catch_kind": "str",
        "rater_group": "str",
        # added by issue 13 (reading screen): at the end, each with a default (TIDY_DEFAULTS)
        "active_seconds": "float64",
        "practice": "bool",
        # added by issue 22 (naive → disclosed design): at the end, with a default (TIDY_DEFAULTS)
        "phase": "str",
    }
)
"""Columns of the tidy ratings frame, in contract order, with their dtypes."""

TIDY_COLUMNS: tuple[str, ...] = tuple(TIDY_DTYPES)

REALISM = "realism"
ALIGNMENT = "alignment"
REAL_MODEL = "real"
"""``model`` of a real image (controls and a prompt's real image)."""
REAL_SOURCE = "real"
GENERATED_SOURCE = "generated"

CATCH_REAL = "real"
"""``catch`` of a known real image (a known-answer item: it should pass as real)."""
CATCH_BROKEN = "broken"
"""``catch`` of a deliberately broken image made by the app (noise, flipped, blank, wrong anatomy)."""
CATCH_VALUES: tuple[str, ...] = ("", CATCH_REAL, CATCH_BROKEN)
CHOSEN_REAL = "chosen_real"
"""Question of the forced-choice design: value 1 on the panel the rater picked as the real one, 0 on the others."""
RANK_PREFIX = "rank_"
"""Questions ``rank_<q>`` of the ranking design: value = rank of the panel on that screen (1 = best)."""

TIDY_DEFAULTS: Mapping[str, object] = types.MappingProxyType(
    {"catch": "", "catch_kind": "", "rater_group": "", "active_seconds": float("nan"), "practice": False,
     "phase": ""}
)
"""Default of every column added after the first release of the contract: a frame without such a column (an older
export, a hand-built frame) gets it filled with this value by :func:`with_tidy_defaults`."""


# The first columns of every per-image frame beside the ratings (marks, guesses): which study, rater, trial and image.
_PER_IMAGE_DTYPES: dict[str, str] = {
    "study": "str",
    "rater_id": "str",
    "trial_id": "int64",
    "item_id": "str",
    "image_id": "str",
    "model": "str",
    "source": "str",
}

MARK_DTYPES: Mapping[str, str] = types.MappingProxyType(
    {
        **_PER_IMAGE_DTYPES,
        "prompt_id": "str",
        "position": "int64",
        "x": "float64",
        "y": "float64",
        "confidence": "Int64",
        "practice": "bool",
        "marked_at": "datetime64[ns, UTC]",
        "replaced_at": "datetime64[ns, UTC]",
    }
)
"""Columns of the marks frame (``Storage.marks_frame``, ``simulate.simulate_marks``, ``export.write_marks_csv``):
one row per point a rater marked as looking wrong; ``x``, ``y`` image-normalised in [0, 1] (x right, y down);
``confidence`` 1-5 in studies with ``mark_confidence``, else missing."""

MARK_CONFIDENCES: tuple[int, ...] = (1, 2, 3, 4, 5)
"""A mark's confidence that it is an artifact (``mark_confidence``): 1 = barely suspect … 5 = certain."""

MARK_COLUMNS: tuple[str, ...] = tuple(MARK_DTYPES)

GUESS_DTYPES: Mapping[str, str] = types.MappingProxyType(
    {
        **_PER_IMAGE_DTYPES,
        "truth": "str",
        "position": "int64",
        "guess": "str",
        "practice": "bool",
        "guessed_at": "datetime64[ns, UTC]",
    }
)
"""Columns of the guesses frame (``Storage.guesses_frame``, ``export`` format ``guesses``): one row per image a rater
answered "Which model do you think made this image?" for (studies with ``blinding_index``); ``truth`` is the
image's arm (its model, or ``real``), ``guess`` the option picked (``dont_know`` for "Don't know")."""

GUESS_COLUMNS: tuple[str, ...] = tuple(GUESS_DTYPES)


def without_practice(df):
    """``df`` (a tidy ratings frame or a marks frame) without its practice rows — the one place statistics drop
    them (``p2p_app.analysis``, ``p2p_app.report``); ``df`` itself when it has none (no copy)."""
    if "practice" not in df.columns or not len(df):
        return df
    practice = df["practice"].fillna(False).to_numpy(dtype=bool)
    return df[~practice] if practice.any() else df


def is_design_question(question: str) -> bool:
    """True for the questions of the forced-choice and ranking designs (not scores: kept out of the score tables)."""
    return question == CHOSEN_REAL or question.startswith(RANK_PREFIX)


def with_tidy_defaults(df):
    """``df`` with every missing column of :data:`TIDY_DEFAULTS` added (its default, contract dtype); ``df`` itself
    when none is missing (no copy)."""
    missing = [c for c in TIDY_DEFAULTS if c not in df.columns]
    if not missing:
        return df
    df = df.copy(deep=False)
    for c in missing:
        df[c] = TIDY_DEFAULTS[c]
        df[c] = df[c].astype(TIDY_DTYPES[c])
    return df


def empty_ratings_frame():
    """A tidy frame with no rows and the contract's columns and dtypes."""
    import pandas as pd

    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in TIDY_DTYPES.items()})


def check_ratings_frame(df) -> None:
    """Raise ``ValueError`` unless ``df`` has every contract column (extra columns are allowed); a column with a
    default (``TIDY_DEFAULTS``: added later to the contract) may be missing — readers fill it with
    :func:`with_tidy_defaults`."""
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"ratings must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in TIDY_COLUMNS if c not in df.columns and c not in TIDY_DEFAULTS]
    if missing:
        raise ValueError(f"ratings frame is missing columns: {', '.join(missing)}")


def question_order(questions) -> tuple[str, ...]:
    """Display order of question keys: realism, alignment, then the others by name."""
    qs = set(questions)
    head = [q for q in (REALISM, ALIGNMENT) if q in qs]
    return tuple(head + sorted(qs - set(head)))


# Result tables (analysis, designs): every table is a frame with fixed columns and a ``note`` that says why a row
# could not be computed, never a NaN without explanation.
ALL = "all"
"""The ``model`` (or group) of a row about everything at once."""
NOT_COMPUTABLE = "not computable: "


def not_computable(reason: str) -> str:
    return NOT_COMPUTABLE + reason


def result_table(rows, columns):
    """Rows (dicts) to a frame with exactly ``columns``; missing numbers are NaN, a missing note is ``""``."""
    import pandas as pd

    if "note" in columns:
        rows = [{**r, "note": r.get("note") or ""} for r in rows]
    return pd.DataFrame(list(rows), columns=list(columns))
