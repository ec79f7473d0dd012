"""Exports are analysis-ready: contract columns, ISO timestamps, no index column, lossless round trips."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from p2p_app import analysis as A
from p2p_app.export import (
    EXPORT_COLUMNS,
    WIDE_COLUMNS,
    WIDE_ID_COLUMNS,
    export_all,
    wide_frame,
    write_long_csv,
    write_parquet,
    write_wide_csv,
)
from p2p_app.simulate import simulate_ratings

ISO_UTC = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$"


@pytest.fixture(scope="module")
def study() -> pd.DataFrame:
    return simulate_ratings(n_raters=6, n_prompts=8, seeds_per_prompt=2, overlap_k=3, repeat_fraction=0.2,
                            cant_judge_rate=0.05, comment_rate=0.2, seed=2)  # fmt: skip


def test_export_columns_document_the_contract():
    assert tuple(EXPORT_COLUMNS) == A.TIDY_COLUMNS
    assert all(isinstance(v, str) and v for v in EXPORT_COLUMNS.values())
    assert tuple(WIDE_COLUMNS)[: len(WIDE_ID_COLUMNS)] == WIDE_ID_COLUMNS


def test_long_csv_round_trip(study, tmp_path):
    path = write_long_csv(study, tmp_path / "long.csv")
    back = pd.read_csv(path, keep_default_na=False, na_values=[""])
    assert tuple(back.columns) == A.TIDY_COLUMNS  # no index column
    assert len(back) == len(study)
    for col in ("shown_at", "answered_at"):
        assert back[col].str.match(ISO_UTC).all()
        parsed = pd.to_datetime(back[col], utc=True)
        expected = study[col].dt.floor("us")
        assert (parsed.to_numpy() == expected.to_numpy()).all()
    np.testing.assert_array_equal(back["value"].to_numpy(), study["value"].to_numpy())
    assert back["cant_judge"].dtype == bool and (back["cant_judge"] == study["cant_judge"]).all()
    assert (back["is_repeat"] == study["is_repeat"]).all()
    assert back["seed"].isna().equals(study["seed"].isna())
    assert (back["seed"].dropna().astype("int64").to_numpy() == study["seed"].dropna().to_numpy()).all()
    assert (back["comment"].fillna("") == study["comment"]).all()
    assert (back["prompt"] == study["prompt"]).all()


def test_parquet_round_trip_is_exact(study, tmp_path):
    back = pd.read_parquet(write_parquet(study, tmp_path / "r.parquet"))
    pd.testing.assert_frame_equal(back, study)


def test_wide_frame_one_row_per_image_with_first_answers(study):
    wide = wide_frame(study)
    assert len(wide) == study["image_id"].nunique() and wide["image_id"].is_unique
    assert tuple(wide.columns[: len(WIDE_ID_COLUMNS)]) == WIDE_ID_COLUMNS
    score_cols = list(wide.columns[len(WIDE_ID_COLUMNS):])
    first = study[~study["is_repeat"]]
    expected_cols = {f"{r}__{q}" for r, q in first[["rater_id", "question"]].drop_duplicates().itertuples(index=False)}
    assert set(score_cols) == expected_cols
    def rater_then_question(col: str):
        rater, question = col.split("__")
        return rater, ["realism", "alignment"].index(question)

    assert score_cols == sorted(score_cols, key=rater_then_question)
    assert wide["source"].iloc[0] == "real"  # real controls first
    long = wide.melt(id_vars=list(WIDE_ID_COLUMNS), var_name="col", value_name="score").dropna(subset=["score"])
    ok = first[~first["cant_judge"]]
    assert len(long) == len(ok)
    lookup = ok.set_index(["image_id", "rater_id", "question"])["value"]
    for row in long.sample(50, random_state=0).itertuples():
        rater, q = row.col.split("__")
        assert lookup[(row.image_id, rater, q)] == row.score
    assert str(wide[score_cols[0]].dtype) == "Int8"


def test_wide_csv(study, tmp_path):
    back = pd.read_csv(write_wide_csv(study, tmp_path / "wide.csv"))
    wide = wide_frame(study)
    assert list(back.columns) == list(wide.columns)
    assert len(back) == len(wide)
    col = wide.columns[-1]
    np.testing.assert_array_equal(back[col].to_numpy(dtype=float), wide[col].to_numpy(dtype=float, na_value=np.nan))


def test_exports_of_an_empty_frame(tmp_path):
    paths = export_all(A.empty_ratings_frame(), tmp_path)
    assert pd.read_csv(paths["long_csv"]).columns.tolist() == list(A.TIDY_COLUMNS)
    assert pd.read_csv(paths["wide_csv"]).columns.tolist() == list(WIDE_ID_COLUMNS)
    assert len(pd.read_parquet(paths["parquet"])) == 0


def test_export_rejects_a_frame_without_contract_columns(tmp_path):
    with pytest.raises(ValueError, match="ratings frame is missing columns: seconds"):
        write_long_csv(A.empty_ratings_frame().drop(columns="seconds"), tmp_path / "x.csv")


def test_csv_cells_that_look_like_formulas_are_neutralised(study, tmp_path):
    df = study.copy()
    evil = ["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx", "fine = ok", ""]
    df["comment"] = [evil[i % len(evil)] for i in range(len(df))]
    back = pd.read_csv(write_long_csv(df, tmp_path / "long.csv"), keep_default_na=False, dtype=str)
    for got, want in zip(back["comment"], df["comment"]):
        if want[:1] in ("=", "+", "-", "@", "\t", "\r"):
            assert got == "'" + want or got == ("'" + want).strip()
        else:
            assert got == want
    assert pd.read_parquet(write_parquet(df, tmp_path / "x.parquet"))["comment"].tolist() == df["comment"].tolist()


def test_xlsx_is_a_real_workbook_with_text_kept_as_text(study, tmp_path):
    """An .xlsx export is an Excel workbook (not CSV under that name) holding the same rows; a comment that looks
    like a formula stays a text cell."""
    openpyxl = pytest.importorskip("openpyxl")
    from p2p_app.export import write_export

    df = study.copy()
    df.loc[df.index[0], "comment"] = "=HYPERLINK(\"http://x\")"
    path = write_export(df, tmp_path / "long.xlsx", "long")
    ws = openpyxl.load_workbook(path).active
    header = [c.value for c in ws[1]]
    assert tuple(header) == A.TIDY_COLUMNS and ws.max_row == len(df) + 1
    comment = ws.cell(row=2, column=header.index("comment") + 1)
    assert comment.data_type == "s" and comment.value == "=HYPERLINK(\"http://x\")"
    back = pd.read_excel(path)
    assert back["value"].sum() == pytest.approx(df["value"].sum()) and back["cant_judge"].sum() == df["cant_judge"].sum()
    wide = pd.read_excel(write_export(df, tmp_path / "wide.xlsx", "wide"))
    assert list(wide.columns) == list(wide_frame(df).columns) and len(wide) == len(wide_frame(df))


@pytest.mark.parametrize(("name", "table", "message"), [
    ("out.xls", "long", "name it .csv, .xlsx or .parquet"),
    ("out", "long", "name it .csv, .xlsx or .parquet"),
    ("out.parquet", "wide", "Parquet holds the long table only"),
])  # fmt: skip
def test_an_export_name_that_says_another_format_is_refused(study, tmp_path, name, table, message):
    from p2p_app.export import write_export

    with pytest.raises(ValueError, match=message):
        write_export(study, tmp_path / name, table)
    assert not (tmp_path / name).exists()
