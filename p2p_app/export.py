"""Analysis-ready exports of the tidy ratings frame: long CSV, wide CSV (one row per image) and Parquet.

* No index column; columns in contract order (docs/CONTRACTS.md), documented in ``EXPORT_COLUMNS``
  (docs/exports.md shows ``columns_markdown``).
* CSV timestamps are ISO 8601 in UTC with microseconds, e.g. ``2026-03-02T08:00:00.000000Z``; booleans are
  ``true``/``false``; missing values are empty fields. Parquet keeps the native types (UTC timestamps, nullable
  integers, booleans).
* CSV is written by pyarrow's multi-threaded writer: a 1,000,000-row export takes about a second.
* ``write_export`` picks the file type from the file name: ``.csv``, ``.xlsx`` (an Excel workbook, through openpyxl;
  text cells are stored as text, never as formulas) or ``.parquet`` (the long table only); any other name is refused.
* CSV text cells that a spreadsheet would run as a formula — starting with ``=``, ``+``, ``-``, ``@``, a tab or a
  carriage return (a comment like ``=HYPERLINK(…)``) — are written with a leading ``'`` (OWASP's advice), so the
  spreadsheet shows them as text. Parquet keeps the text as stored.
"""

from __future__ import annotations

import os
import types
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from .tidy import (
    GUESS_COLUMNS,
    GUESS_DTYPES,
    MARK_COLUMNS,
    MARK_DTYPES,
    TIDY_COLUMNS,
    TIDY_DTYPES,
    check_ratings_frame,
    question_order,
    with_tidy_defaults,
    without_practice,
)

EXPORT_COLUMNS: Mapping[str, str] = types.MappingProxyType(
    {
        "study": 'study id; "live" for the live arena',
        "rater_id": "stable, pseudonymous rater id",
        "item_id": 'stable item key within the study ("live-<trial>" in the live arena)',
        "trial_id": "database id of the trial (one screen shown to one rater)",
        "image_id": "opaque image id (what the browser saw)",
        "model": 'model name, unblinded; "real" for real control images',
        "source": '"generated" or "real"',
        "prompt_id": 'prompt id from the prompt bank ("" when typed live)',
        "prompt": "prompt text",
        "modality": '"colonoscopy" or "radiology"',
        "seed": "generation seed; empty for real images",
        "position": '1-based panel position shown (1 = "Image A")',
        "n_panels": "panels on that screen",
        "order_index": "0-based index of the trial in the rater's sequence",
        "question": '"realism", "alignment" or a study-defined key',
        "value": "the score on the question's scale (2–11 levels, e.g. 1..5); empty when can't judge or for "
        "non-numeric questions",
        "choices": 'multi-select answers joined with "|"; empty otherwise',
        "cant_judge": 'true when the rater chose "can\'t judge / image failed to load"',
        "comment": "free-text comment for that image (empty if none)",
        "shown_at": "when the trial was shown (ISO 8601, UTC)",
        "answered_at": "when the answer was stored (ISO 8601, UTC)",
        "seconds": "answered_at - shown_at, in seconds",
        "is_repeat": "true when this trial repeats an earlier item (intra-rater consistency)",
        "catch": 'catch trial (known-answer item): "real" (a known real image), "broken" (a broken image made by '
        'the app), empty otherwise',
        "catch_kind": 'how a broken catch image was made ("noise", "flipped", "blank", "wrong_anatomy"); empty '
        "otherwise",
        "rater_group": 'the rater\'s group from the study file (e.g. "resident", "senior"); empty when none',
        "active_seconds": "seconds the page was visible and not idle (idle = no input for over 30 s) between shown "
        "and answered, measured by the page and capped at seconds; empty when unknown (older answers, API clients)",
        "practice": "true for a practice item (shown first to learn the scale; left out of every statistic)",
        "phase": 'naive → disclosed design: "naive" (phase 1, before the rater is told that some images are '
        'synthetic; question "unusual" holds the "anything unusual?" text in comment) or "disclosed" (phase 2, '
        'question "real_or_synthetic": 1–3 synthetic, 4–6 real, 1 and 6 the surest); empty in other designs',
    }
)
"""Long format (``write_long_csv``, ``write_parquet``): column → meaning, in file order."""

WIDE_ID_COLUMNS: tuple[str, ...] = ("image_id", "model", "source", "prompt_id", "prompt", "modality", "seed")
WIDE_SEPARATOR = "__"
WIDE_COLUMNS: Mapping[str, str] = types.MappingProxyType(
    {
        **{c: EXPORT_COLUMNS[c] for c in WIDE_ID_COLUMNS},
        f"<rater_id>{WIDE_SEPARATOR}<question>": (
            "that rater's first score for the image on that question; empty when not rated, can't judge, or only "
            "answered in a repeat (repeats are in the long export)"
        ),
    }
)
"""Wide format (``wide_frame``, ``write_wide_csv``): one row per image; column → meaning."""


MARK_EXPORT_COLUMNS: Mapping[str, str] = types.MappingProxyType(
    {
        "study": 'study id ("id@vN")',
        "rater_id": "stable, pseudonymous rater id",
        "trial_id": "database id of the trial the mark was made on (joins the long export's trial_id)",
        "item_id": "stable item key within the study",
        "image_id": "opaque image id of the marked image (joins the long export's image_id)",
        "model": 'model name, unblinded; "real" for real images',
        "source": '"generated" or "real"',
        "prompt_id": "prompt id from the prompt bank",
        "position": '1-based panel position of the image on that screen (1 = "Image A")',
        "x": "horizontal position of the mark as a share of the image width, 0 = left edge, 1 = right edge",
        "y": "vertical position of the mark as a share of the image height, 0 = top edge, 1 = bottom edge",
        "confidence": "how sure the rater is that the mark is an artifact, 1 (barely) to 5 (certain), in studies "
                      "with mark_confidence; empty otherwise",
        "practice": "true when marked on a practice item (left out of the heat maps)",
        "marked_at": "when the mark was stored with the answers (ISO 8601, UTC)",
        "replaced_at": "when a changed answer replaced this mark (ISO 8601, UTC); empty for the current marks",
    }
)
"""Marks (``write_marks_csv``, ``marks.csv`` of the export bundle): one row per marked point; column → meaning."""

GUESS_EXPORT_COLUMNS: Mapping[str, str] = types.MappingProxyType(
    {
        "study": 'study id ("id@vN")',
        "rater_id": "stable, pseudonymous rater id",
        "trial_id": "database id of the screen the guess was made on (joins the long export's trial_id)",
        "item_id": "stable item key within the study",
        "image_id": "opaque image id of the image guessed about (joins the long export's image_id)",
        "model": 'model name, unblinded; "real" for real images',
        "source": '"generated" or "real"',
        "truth": 'the image\'s arm: its model, or "real" for a real image',
        "position": '1-based panel position of the image on that screen (1 = "Image A")',
        "guess": 'the rater\'s answer to "Which model do you think made this image?": a model, "real", or '
                 '"dont_know"',
        "practice": "true when guessed on a practice item (left out of the blinding index)",
        "guessed_at": "when the guess was stored, after the screen's ratings (ISO 8601, UTC)",
    }
)
"""Model guesses (``write_export(..., "guesses")``; studies with ``blinding_index``): one row per image; column →
meaning."""

COLUMN_TABLES: Mapping[str, tuple[Mapping[str, str], Mapping[str, str]]] = types.MappingProxyType(
    {
        "long": (EXPORT_COLUMNS, TIDY_DTYPES),
        "wide": (WIDE_COLUMNS, {**TIDY_DTYPES, f"<rater_id>{WIDE_SEPARATOR}<question>": "float64"}),
        "marks": (MARK_EXPORT_COLUMNS, MARK_DTYPES),
        "guesses": (GUESS_EXPORT_COLUMNS, GUESS_DTYPES),
    }
)
"""Each export table's columns (column → meaning) and their types: the one description of the export columns;
docs/exports.md holds :func:`columns_markdown` of each (tests/test_docs.py checks that it is the same)."""


def columns_markdown(table: str) -> str:
    """The Markdown table of ``table``'s columns (``long``, ``wide`` or ``marks``: :data:`COLUMN_TABLES`) as
    docs/exports.md shows it: column, type (the pandas dtype of the frame; ``str`` is text), meaning."""
    meanings, dtypes = COLUMN_TABLES[table]
    rows = ["| column | type | meaning |", "|---|---|---|"]
    rows += [f"| `{c}` | {dtypes[c]} | {m.replace('|', chr(92) + '|')} |" for c, m in meanings.items()]
    return "\n".join(rows) + "\n"



def _iso_utc(col: pd.Series) -> pa.Array:
    """ISO 8601 strings (UTC, microseconds, ``Z`` suffix); nulls stay null."""
    ts = pd.to_datetime(col, utc=True)
    arr = pa.array(ts).cast(pa.timestamp("ns", tz="UTC"))
    naive = pc.cast(arr.cast(pa.timestamp("ns")), pa.timestamp("us"), safe=False)
    text = pc.replace_substring(pc.cast(naive, pa.string()), " ", "T")
    return pc.binary_join_element_wise(text, pa.scalar("Z"), "")


def _long_table(df: pd.DataFrame) -> pa.Table:
    check_ratings_frame(df)
    data = with_tidy_defaults(df).loc[:, list(TIDY_COLUMNS)]
    table = pa.Table.from_pandas(data, preserve_index=False)
    for name in ("shown_at", "answered_at"):
        table = table.set_column(table.schema.get_field_index(name), name, _iso_utc(data[name]))
    return table


FORMULA_START = r"^[=+\-@\t\r]"


def neutralise_formulas(table: pa.Table) -> pa.Table:
    """Text cells starting like a spreadsheet formula get a leading ``'``; other cells and columns unchanged."""
    for i, field in enumerate(table.schema):
        if not (pa.types.is_string(field.type) or pa.types.is_large_string(field.type)):
            continue
        col = table.column(i)
        risky = pc.fill_null(pc.match_substring_regex(col, FORMULA_START), False)
        if pc.any(risky).as_py():
            quoted = pc.binary_join_element_wise(pa.scalar("'", field.type), col, pa.scalar("", field.type))
            table = table.set_column(i, field, pc.if_else(risky, quoted, col))
    return table


def _write_csv(table: pa.Table, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pcsv.write_csv(neutralise_formulas(table), path)
    return path


def write_long_csv(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the tidy frame as CSV, one row per answer (``EXPORT_COLUMNS``). Returns the path."""
    return _write_csv(_long_table(df), path)


def write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the tidy frame as Parquet with native types (``EXPORT_COLUMNS``, no index). Returns the path."""
    check_ratings_frame(df)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with_tidy_defaults(df).loc[:, list(TIDY_COLUMNS)].to_parquet(path, index=False, engine="pyarrow")
    return path


def wide_frame(df: pd.DataFrame) -> pd.DataFrame:
    """One row per image: ``WIDE_ID_COLUMNS`` then one column per rater × numeric question named
    ``<rater_id>__<question>`` holding that rater's first score (``is_repeat`` False, not can't judge).

    Columns are ordered by rater id, then question (realism, alignment, others by name); rows by model (real first)
    then image id. Scores are nullable integers (``Int8``) when every score is a whole number in -128..127,
    else floats. Practice answers are left out (they are in the long export, flagged ``practice``).
    """
    check_ratings_frame(df)
    df = without_practice(df)
    value = pd.to_numeric(df["value"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    first = ~df["is_repeat"].fillna(False).to_numpy(dtype=bool)
    numeric_q = pd.unique(df["question"][~np.isnan(value)])
    questions = list(question_order(numeric_q))
    img_code, img_uni = pd.factorize(df["image_id"])
    ids = df.loc[:, list(WIDE_ID_COLUMNS)].iloc[np.unique(img_code[img_code >= 0], return_index=True)[1]]
    ids = ids.sort_values(["source", "model", "image_id"], key=lambda c: c.ne("real") if c.name == "source" else c)
    ids = ids.reset_index(drop=True)
    row_of_image = np.empty(len(img_uni), dtype=np.int64)
    row_of_image[pd.Index(img_uni).get_indexer(ids["image_id"])] = np.arange(len(ids))

    use = first & ~np.isnan(value) & ~df["cant_judge"].fillna(False).to_numpy(dtype=bool)
    q_idx = pd.Index(questions).get_indexer(df["question"])
    r_code, r_uni = pd.factorize(df["rater_id"], sort=True)
    col = r_code * max(len(questions), 1) + q_idx
    use &= (q_idx >= 0) & (r_code >= 0) & (img_code >= 0)
    rows_i, cols_i, vals = row_of_image[img_code[use]], col[use], value[use]
    # one score per cell: if a rater answered the same image twice outside repeats, keep the earliest answer
    order = np.argsort(pd.DatetimeIndex(df["answered_at"]).asi8[use], kind="stable")[::-1]
    rows_i, cols_i, vals = rows_i[order], cols_i[order], vals[order]
    present = np.unique(cols_i)
    dense_col = np.searchsorted(present, cols_i)
    integral = len(vals) > 0 and np.all(vals == np.round(vals)) and vals.min() >= -128 and vals.max() <= 127
    names = [f"{r_uni[c // len(questions)]}{WIDE_SEPARATOR}{questions[c % len(questions)]}" for c in present]
    shape = (len(ids), len(present))  # column-major, so each score column is one contiguous slice
    # with repeated cells the last write (= the earliest answer) wins
    if integral:
        data = np.zeros(shape, dtype=np.int8, order="F")
        missing = np.ones(shape, dtype=bool, order="F")
        data[rows_i, dense_col] = vals.astype(np.int8)
        missing[rows_i, dense_col] = False
        scores = {n: pd.arrays.IntegerArray(data[:, j], missing[:, j]) for j, n in enumerate(names)}
    else:
        data = np.full(shape, np.nan, order="F")
        data[rows_i, dense_col] = vals
        scores = {n: data[:, j] for j, n in enumerate(names)}
    return pd.concat([ids, pd.DataFrame(scores, index=ids.index)], axis=1)


def write_wide_csv(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``wide_frame(df)`` as CSV (one row per image; ``WIDE_COLUMNS``). Returns the path."""
    return _write_csv(pa.Table.from_pandas(wide_frame(df), preserve_index=False), path)


def _marks_table(marks: pd.DataFrame, kind: str = "marks") -> pa.Table:
    """The marks frame (or, ``kind="guesses"``, the guesses frame) as the export writes it: its columns in order,
    times as ISO 8601 UTC text."""
    columns, dtypes, times = ((MARK_COLUMNS, MARK_DTYPES, ("marked_at", "replaced_at")) if kind == "marks"
                              else (GUESS_COLUMNS, GUESS_DTYPES, ("guessed_at",)))
    missing = [c for c in columns if c not in marks.columns]
    if missing:
        raise ValueError(f"{kind} frame is missing columns: {', '.join(missing)}")
    data = marks.loc[:, list(columns)].astype(dict(dtypes))
    table = pa.Table.from_pandas(data, preserve_index=False)
    for name in times:
        table = table.set_column(table.schema.get_field_index(name), name, _iso_utc(data[name]))
    return table


def write_marks_csv(marks: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the marks frame (``Storage.marks_frame``) as CSV, one row per marked point (``MARK_EXPORT_COLUMNS``).
    Returns the path."""
    return _write_csv(_marks_table(marks), path)


FILE_TYPES: Mapping[str, str] = types.MappingProxyType({".csv": "csv", ".xlsx": "xlsx", ".parquet": "parquet"})
"""File name suffix → the file type ``write_export`` writes."""
EXPORT_TABLES = ("long", "wide", "marks", "guesses")
EXCEL_MAX_ROWS = 1_048_576
"""Rows of one Excel worksheet, the header included."""


def export_file_type(path: str | os.PathLike, table: str = "long") -> str:
    """The file type (``FILE_TYPES``) that ``path``'s suffix names for ``table`` (long, wide or marks). Raises
    ``ValueError`` for any other suffix, or a table the type cannot hold: a file is never written in a format
    other than the one its name says."""
    if table not in EXPORT_TABLES:
        raise ValueError(f"unknown export table {table!r}; choose one of {', '.join(EXPORT_TABLES)}")
    suffix = Path(path).suffix.lower()
    kind = FILE_TYPES.get(suffix)
    if kind is None:
        raise ValueError(f"cannot tell the file type of {Path(path).name!r}: name it .csv, .xlsx or .parquet")
    if kind == "parquet" and table != "long":
        raise ValueError(f"Parquet holds the long table only; write the {table} table to a .csv or .xlsx file")
    return kind


def write_export(frame: pd.DataFrame, path: str | os.PathLike, table: str = "long") -> Path:
    """Write ``table`` of ``frame`` (the ratings frame; for ``marks`` the marks frame) to ``path`` in the file type
    its suffix names (:func:`export_file_type`; checked before anything is written). Returns the path."""
    kind = export_file_type(path, table)
    if kind == "parquet":
        return write_parquet(frame, path)
    if kind == "xlsx":
        _excel()  # refuse before building the table when openpyxl is missing
    if table == "wide":
        data = pa.Table.from_pandas(wide_frame(frame), preserve_index=False)
    else:
        data = _long_table(frame) if table == "long" else _marks_table(frame, table)
    return _write_csv(data, path) if kind == "csv" else _write_xlsx(data, path, sheet=table)


def _excel():
    try:
        import openpyxl
    except ImportError:
        raise ValueError("writing .xlsx needs openpyxl (pip install openpyxl); or export to .csv") from None
    return openpyxl


def _write_xlsx(table: pa.Table, path: str | os.PathLike, sheet: str) -> Path:
    """One worksheet: the header, then a row per table row; numbers and booleans as such, missing values as empty
    cells, text as text (a comment like ``=HYPERLINK(…)`` is stored as a string cell, never as a formula)."""
    openpyxl = _excel()
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    if table.num_rows + 1 > EXCEL_MAX_ROWS:
        raise ValueError(f"{table.num_rows} rows do not fit one Excel worksheet ({EXCEL_MAX_ROWS - 1} at most); "
                         "export to .csv or .parquet")  # fmt: skip
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wb = openpyxl.Workbook(write_only=True)
    ws = wb.create_sheet(sheet)
    ws.append(table.column_names)

    def cell(v):
        if isinstance(v, float) and v != v:
            return None
        if isinstance(v, str):
            v = ILLEGAL_CHARACTERS_RE.sub("\ufffd", v)  # control characters a workbook cannot hold
            if v.startswith("="):
                c = WriteOnlyCell(ws, value=v)
                c.data_type = "s"
                return c
        return v

    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    for row in zip(*columns):
        ws.append([cell(v) for v in row])
    wb.save(path)
    return path


def write_metrics_table(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a table of ``p2p metrics`` (per image or per model, ``p2p_app.metrics_run``): Parquet when ``path``
    ends in ``.parquet``, else CSV with formula-like text neutralised. Returns the path."""
    path = Path(path)
    if path.suffix == ".parquet":
        path.parent.mkdir(parents=True, exist_ok=True)
        table.to_parquet(path, index=False, engine="pyarrow")
        return path
    return _write_csv(pa.Table.from_pandas(table, preserve_index=False), path)


def export_all(
    df: pd.DataFrame, directory: str | os.PathLike, stem: str = "ratings", marks: pd.DataFrame | None = None
) -> dict[str, Path]:
    """Write ``<stem>_long.csv``, ``<stem>_wide.csv`` and ``<stem>.parquet`` into ``directory``, and with
    ``marks`` (a study that asks raters to mark artifacts) ``<stem>_marks.csv``."""
    d = Path(directory)
    out = {
        "long_csv": write_long_csv(df, d / f"{stem}_long.csv"),
        "wide_csv": write_wide_csv(df, d / f"{stem}_wide.csv"),
        "parquet": write_parquet(df, d / f"{stem}.parquet"),
    }
    if marks is not None:
        out["marks_csv"] = write_marks_csv(marks, d / f"{stem}_marks.csv")
    return out


def read_long_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read a long export (``write_long_csv``) back into the tidy frame with the contract dtypes (e.g. a pilot
    study for ``p2p plan``). Columns added to the contract later may be missing (their defaults are filled); text
    cells that the export quoted against spreadsheet formulas get their leading ``'`` back off. Raises
    ``ValueError`` naming the missing columns for a file that is not a long export."""
    path = Path(path)
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    try:
        check_ratings_frame(raw)
    except ValueError as exc:
        raise ValueError(f"{path}: not a long export ({exc})") from None
    raw = with_tidy_defaults(raw)
    out = {}
    for col, dtype in TIDY_DTYPES.items():
        text = raw[col]
        if dtype == "str":
            out[col] = text.str.replace(r"^'(?=[=+\-@\t\r])", "", regex=True).astype("str")
        elif dtype == "bool":
            out[col] = text.str.lower().eq("true")
        elif dtype.startswith("datetime64"):
            out[col] = pd.to_datetime(text.replace("", None), utc=True, format="ISO8601").astype(dtype)
        else:
            num = pd.to_numeric(text.replace("", None), errors="raise")
            out[col] = num.astype(dtype)
    return pd.DataFrame(out).loc[:, list(TIDY_COLUMNS)]
