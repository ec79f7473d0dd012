"""Exports for the R tools (issue 22, item 5): each file is read back here by its own parser (csv, openpyxl, the
iMRMC text layout), run through the project's own Obuchowski–Rockette analysis, and must give identical numbers —
on the published Van Dyke (1993) data and on a simulated real-vs-generated study (cases nested in treatment)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from openpyxl import load_workbook

from p2p_app import analysis as A
from p2p_app import mrmc
from p2p_app import rtools as T
from p2p_app import simulate as S

from test_cli import cli  # noqa: F401  (the CLI fixture)

VANDYKE = Path(__file__).parent / "data" / "vandyke1993.csv"


def read_mrmcaov(folder: Path) -> pd.DataFrame:
    with open(folder / "mrmcaov.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return pd.DataFrame({"reader": [r["reader"] for r in rows], "treatment": [r["test"] for r in rows],
                         "case": [r["case"] for r in rows], "truth": [int(r["truth"]) for r in rows],
                         "rating": [float(r["response"]) for r in rows]})  # fmt: skip


def read_rjafroc(folder: Path, name: str = "rjafroc.xlsx") -> pd.DataFrame:
    wb = load_workbook(folder / name, read_only=True)
    assert wb.sheetnames == ["Truth", "NL", "LL"]
    truth_rows = list(wb["Truth"].iter_rows(values_only=True))
    assert truth_rows[0] == ("CaseID", "LesionID", "Weight", "ReaderID", "ModalityID", "Paradigm")
    assert [r[5] for r in truth_rows[1:3]] == ["ROC", "FCTRL"]
    truth = {r[0]: r[1] for r in truth_rows[1:]}
    listed = {r[0]: (set(r[3].split(", ")), set(r[4].split(", "))) for r in truth_rows[1:]}
    out = []
    nl = list(wb["NL"].iter_rows(values_only=True))
    ll = list(wb["LL"].iter_rows(values_only=True))
    assert nl[0] == ("ReaderID", "ModalityID", "CaseID", "NL_Rating")
    assert ll[0] == ("ReaderID", "ModalityID", "CaseID", "LesionID", "LL_Rating")
    for reader, treatment, case, rating in nl[1:]:
        assert truth[case] == 0 and reader in listed[case][0] and treatment in listed[case][1]
        out.append((reader, treatment, case, 0, rating))
    for reader, treatment, case, lesion, rating in ll[1:]:
        assert truth[case] == 1 and lesion == 1 and reader in listed[case][0] and treatment in listed[case][1]
        out.append((reader, treatment, case, 1, rating))
    return pd.DataFrame(out, columns=["reader", "treatment", "case", "truth", "rating"])


def read_imrmc(folder: Path) -> pd.DataFrame:
    lines = (folder / "imrmc.imrmc").read_text().splitlines()
    head = {k: int(v) for k, v in (ln.split(":") for ln in lines[: lines.index("BEGIN DATA:")] if ln[:3] in
                                    ("NR:", "N0:", "N1:", "NM:"))}  # fmt: skip
    data = [ln.split(",") for ln in lines[lines.index("BEGIN DATA:") + 1 :] if ln]
    truth = {int(c): int(t) for r, c, m, t in data if r == "-1"}
    assert all(m == "0" for r, c, m, t in data if r == "-1")
    rows = [(r, m, int(c), truth[int(c)], float(v)) for r, c, m, v in data if r != "-1"]
    out = pd.DataFrame(rows, columns=["reader", "treatment", "case", "truth", "rating"])
    assert head == {"NR": out["reader"].nunique(), "NM": out["treatment"].nunique(),
                    "N0": sum(t == 0 for t in truth.values()), "N1": sum(t == 1 for t in truth.values())}
    return out


READERS = {"mrmcaov": read_mrmcaov, "rjafroc": read_rjafroc, "imrmc": read_imrmc}


def same_results(a: mrmc.MRMCResult, b: mrmc.MRMCResult) -> None:
    """Identical OR results, whatever order the labels came in (labels compared as text)."""
    ta, tb = [str(t) for t in a.treatments], [str(t) for t in b.treatments]
    ra, rb = [str(r) for r in a.readers], [str(r) for r in b.readers]
    assert sorted(ta) == sorted(tb) and sorted(ra) == sorted(rb)
    it, ir = [tb.index(t) for t in ta], [rb.index(r) for r in ra]
    np.testing.assert_allclose(b.auc[np.ix_(it, ir)], a.auc, rtol=0, atol=1e-12)
    for name in ("var_error", "cov1", "cov2", "cov3", "ms_t", "ms_tr", "f", "ddf", "p_value"):
        assert getattr(b, name) == pytest.approx(getattr(a, name), rel=1e-12, abs=1e-15, nan_ok=True), name
    tta = a.treatment_table.assign(treatment=ta).set_index("treatment").sort_index()
    ttb = b.treatment_table.assign(treatment=tb).set_index("treatment").sort_index()
    pd.testing.assert_frame_equal(tta, ttb, rtol=1e-12, atol=1e-15)
    if len(ta) == 2:
        da, db = a.difference_table.iloc[0], b.difference_table.iloc[0]
        same = str(b.difference_table["treatment_a"].iloc[0]) == str(a.difference_table["treatment_a"].iloc[0])
        sign = 1.0 if same else -1.0
        assert sign * db["estimate"] == pytest.approx(da["estimate"], abs=1e-14)
        assert db["se"] == pytest.approx(da["se"], rel=1e-12) and db["p_value"] == pytest.approx(da["p_value"])


@pytest.mark.parametrize("tool", T.TOOLS)
def test_vandyke_round_trips_through_every_export(tool, tmp_path):
    vd = pd.read_csv(VANDYKE)
    written = getattr(T, f"write_{tool}")(vd, tmp_path)
    assert all(p.exists() for p in written)
    back = READERS[tool](tmp_path)
    assert len(back) == len(vd)
    same_results(mrmc.or_analysis(vd), mrmc.or_analysis(back))
    assert not T.nested_cases(vd)
    if tool == "mrmcaov":
        assert "# design: fully crossed" in (tmp_path / "mrmcaov.R").read_text()
    if tool == "rjafroc":
        assert not (tmp_path / "rjafroc_README.txt").exists()


@pytest.fixture(scope="module")
def study() -> pd.DataFrame:
    return S.simulate_ratings(n_raters=6, n_prompts=10, seed=2, catch_rate=0.1)


def test_the_exported_study_is_the_reports_reader_study(study, tmp_path):
    frame = T.mrmc_frame(study)
    res = mrmc.or_analysis(frame)
    table = A.reader_study(study)
    per_model = table[table["comparison"].isin(res.treatments)].set_index("comparison")
    # The same AUCs; the report's intervals delete whole prompts (seeds share a prompt's difficulty) and are formed
    # on the logit scale, while the R tools' case jackknife deletes single images (mrmcaov.R says so).
    for _, row in res.treatment_table.iterrows():
        got = per_model.loc[row["treatment"]]
        assert got["estimate"] == pytest.approx(row["auc"], abs=1e-12)
        assert got["ci_low"] <= row["auc"] <= got["ci_high"]
    assert "deletes one image at a time" in T.export_r(study, tmp_path / "r", tools=("mrmcaov",))[1].read_text()
    assert per_model["n_readers"].iloc[0] == frame["reader"].nunique()
    assert T.nested_cases(frame)  # each model's generated images are read only under that model


def test_every_export_of_a_nested_study_gives_identical_numbers(study, tmp_path):
    written = T.export_r(study, tmp_path / "out")
    names = {p.name for p in written}
    assert {"mrmcaov.csv", "mrmcaov.R", "rjafroc.xlsx", "rjafroc_cases.csv", "rjafroc_README.txt",
            "imrmc.imrmc"} == names  # fmt: skip
    expected = mrmc.or_analysis(T.mrmc_frame(study))
    for tool, read in READERS.items():
        same_results(expected, mrmc.or_analysis(read(tmp_path / "out")))
    assert "# design: cases nested within test" in (tmp_path / "out" / "mrmcaov.R").read_text()
    assert "nested within modality" in (tmp_path / "out" / "imrmc.imrmc").read_text()
    cases = pd.read_csv(tmp_path / "out" / "rjafroc_cases.csv")
    assert set(cases["case"]) == set(T.mrmc_frame(study)["case"]) and cases["case_id"].is_unique


def test_bad_exports_are_refused_and_write_nothing(study, tmp_path):
    no_real = study[study["source"] != "real"]
    with pytest.raises(ValueError, match="no real control images"):
        T.export_r(no_real, tmp_path / "a")
    with pytest.raises(ValueError, match="unknown tool"):
        T.export_r(study, tmp_path / "b", tools=("sas",))
    bad = study.copy()
    bad.loc[bad["rater_id"] == bad["rater_id"].iloc[0], "rater_id"] = "smith, j"
    with pytest.raises(ValueError, match="no commas"):
        T.export_r(bad, tmp_path / "c", tools=("imrmc",))
    assert not any((tmp_path / d).exists() for d in "abc")
    T.export_r(bad, tmp_path / "d", tools=("mrmcaov",))  # a CSV quotes the comma: fine there
    assert read_mrmcaov(tmp_path / "d")["reader"].eq("smith, j").any()


def test_export_r_command_is_a_clean_error_without_a_reader_study(cli, tmp_path, demo_registry):
    from conftest import make_app
    from test_reader_study import small_study

    make_app(cli.data, demo_registry).storage.close()  # a database with no answers yet
    study_dir = small_study(tmp_path / "mini")
    out = tmp_path / "r"
    r = cli("export-r", str(study_dir), str(out), "--tool", "imrmc", ok=False)
    assert r.exit_code != 0 and "no realism scores to export" in r.output and "Traceback" not in r.output
    assert not out.exists()
    r = cli("report", "live", "--out", str(tmp_path / "x.html"), "--pool-live", "1", ok=False)
    assert r.exit_code != 0 and "already 'live'" in r.output


def test_export_r_command_writes_what_the_functions_write(cli, tmp_path, demo_registry, study, monkeypatch):
    from conftest import make_app
    from test_reader_study import small_study

    from p2p_app.storage import Storage

    make_app(cli.data, demo_registry).storage.close()
    # the study's answers come from the simulated frame
    monkeypatch.setattr(Storage, "ratings_frame", lambda self, study_key=None, rater_groups=None: study)
    study_dir = small_study(tmp_path / "mini")
    out = tmp_path / "r"
    r = cli("export-r", str(study_dir), str(out), "--tool", "mrmcaov", "--tool", "imrmc")
    assert sorted(p.name for p in out.iterdir()) == ["imrmc.imrmc", "mrmcaov.R", "mrmcaov.csv"]
    assert r.output.count("Wrote ") == 3
    same_results(mrmc.or_analysis(T.mrmc_frame(study)), mrmc.or_analysis(read_imrmc(out)))
