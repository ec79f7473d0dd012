"""Confidence on artifact marks and the inferred ROC (issue 22, items 5 and 6): the study option, the form checks
(bad confidences refused, nothing stored), storage and the marks export, the HrAuc analysis against an independent
computation (sklearn per rater) and against the MRMC code given the same table directly, and RJafroc's layout read
back."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from conftest import make_app
from p2p_app import analysis as A
from p2p_app import designs, hrauc, mrmc, reader
from p2p_app import rtools as T
from p2p_app.report import build_report
from p2p_app.service import UserError
from p2p_app.simulate import simulate_marks, simulate_ratings
from p2p_app.study import StudyError, load_study, study_key
from test_reading_data import form, n_marks, reading_study
from test_rtools import read_rjafroc, same_results

# ------------------------------------------------------------------------------------------------- the study option


def test_mark_confidence_enters_the_design_hash_and_needs_mark_artifacts(tmp_path):
    plain = load_study(reading_study(tmp_path / "a"))
    conf = load_study(reading_study(tmp_path / "b", mark_confidence=True))
    assert conf.mark_confidence and not plain.mark_confidence
    assert conf.design_dict()["mark_confidence"] is True and "mark_confidence" not in plain.design_dict()
    assert conf.design_hash() != plain.design_hash()
    with pytest.raises(StudyError, match="mark_confidence = true needs mark_artifacts = true"):
        load_study(reading_study(tmp_path / "c", mark_artifacts=False, mark_confidence=True))
    with pytest.raises(StudyError, match="mark_confidence must be true or false"):
        load_study(reading_study(tmp_path / "d", mark_confidence="yes"))


# ------------------------------------------------------------------------------------------------- forms and storage


@pytest.fixture()
def conf_app(tmp_path, demo_registry):
    app = make_app(tmp_path / "data", demo_registry)
    st = load_study(reading_study(tmp_path / "reading", mark_confidence=True),
                    known_models=[m.name for m in app.config.models])  # fmt: skip
    app.studies = {study_key(st): st}
    assert reader.prepare_study(app, st).frozen
    yield app, st
    app.storage.close()


BAD_CONFIDENCES = [
    ({1: [(0.5, 0.5)]}, "choose a confidence for every mark"),
    ({1: [(0.5, 0.5, 0)]}, "whole number from 1 to 5, not 0"),
    ({1: [(0.5, 0.5, 6)]}, "whole number from 1 to 5, not 6"),
    ({1: [(0.5, 0.5, 2.5)]}, "whole number from 1 to 5, not 2.5"),
    ({1: [(0.5, 0.5, "3")]}, "whole number from 1 to 5, not '3'"),
    ({1: [(0.5, 0.5, float("nan"))]}, "whole number from 1 to 5, not nan"),
    ({1: [(0.5, 0.5, True)]}, "whole number from 1 to 5, not True"),
    ({1: [(0.2, 0.2, 4), (0.5, 0.5, None)]}, "whole number from 1 to 5, not None"),
]


def test_bad_mark_confidences_are_refused_with_nothing_stored(conf_app):
    app, st = conf_app
    session = reader.add_rater(app, st, "ann")[0]
    shown = app.next_trial(st, session)
    for marks, message in BAD_CONFIDENCES:
        with pytest.raises(UserError, match=message):
            app.submit_trial(st, session, shown.trial_id, form(shown), marks=marks)
        assert app.storage.count_ratings() == 0 and n_marks(app, st) == 0
        assert app.storage.trial(shown.trial_id).submitted_at is None
    marks = {1: [(0.25, 0.75, 4), (0.5, 0.5, 1.0)]}  # 1.0 is the whole number 1 (JSON may send it so)
    assert app.submit_trial(st, session, shown.trial_id, form(shown), marks=marks).status == "stored"
    stored = app.storage.marks_frame(study_key(st))
    assert stored[["x", "y", "confidence"]].values.tolist() == [[0.25, 0.75, 4], [0.5, 0.5, 1]]
    assert str(stored["confidence"].dtype) == "Int64"
    assert app.storage.trial_marks(shown.trial_id, session.rater_pk) == {1: [(0.25, 0.75, 4), (0.5, 0.5, 1)]}


def test_a_changed_confidence_replaces_the_marks_and_keeps_history(conf_app):
    app, st = conf_app
    session = reader.add_rater(app, st, "ann")[0]
    shown = app.next_trial(st, session)
    app.submit_trial(st, session, shown.trial_id, form(shown), marks={1: [(0.5, 0.5, 2)]})
    res = app.submit_trial(st, session, shown.trial_id, form(shown), marks={1: [(0.5, 0.5, 5)]})
    assert res.status == "changed"
    assert app.storage.marks_frame(study_key(st))["confidence"].tolist() == [5]
    assert sorted(app.storage.marks_frame(study_key(st), history=True)["confidence"].tolist()) == [2, 5]


def test_a_confidence_is_refused_in_a_study_that_does_not_ask_for_it(tmp_path, demo_registry):
    app = make_app(tmp_path / "data", demo_registry)
    try:
        st = load_study(reading_study(tmp_path / "s"), known_models=[m.name for m in app.config.models])
        app.studies = {study_key(st): st}
        reader.prepare_study(app, st)
        session = reader.add_rater(app, st, "ann")[0]
        shown = app.next_trial(st, session)
        with pytest.raises(UserError, match="does not ask for a mark's confidence"):
            app.submit_trial(st, session, shown.trial_id, form(shown), marks={1: [(0.5, 0.5, 3)]})
        assert app.storage.count_ratings() == 0 and n_marks(app, st) == 0
        assert app.submit_trial(st, session, shown.trial_id, form(shown), marks={1: [(0.5, 0.5)]}).status == "stored"
        assert app.storage.marks_frame(study_key(st))["confidence"].isna().all()
    finally:
        app.storage.close()


# ------------------------------------------------------------------------------------------------- the inferred ROC

SPOTS = {"model-a": (0.25, 0.85), "model-b": (0.75, 0.15)}


@pytest.fixture(scope="module")
def marked():
    df = simulate_ratings(n_raters=6, n_prompts=10, seed=3, catch_rate=0.1)
    return df, simulate_marks(df, SPOTS, marks_per_image=1.0, background=0.4, seed=3, confidence=True)


def independent_hr(df: pd.DataFrame, marks: pd.DataFrame) -> pd.DataFrame:
    """Per rater and image (first showing, no practice or catch trial): the highest confidence of its marks, 0
    without — written out with plain loops, not with p2p_app.hrauc."""
    keep = ~df["practice"].to_numpy(dtype=bool) & ~np.asarray(designs.catch_trial_mask(df), dtype=bool)
    keep &= ~df["is_repeat"].to_numpy(dtype=bool)
    shown = df[keep].sort_values("answered_at").drop_duplicates(["rater_id", "image_id"])
    best: dict[tuple[int, str], int] = {}
    for t, i, c in marks[["trial_id", "image_id", "confidence"]].itertuples(index=False):
        best[(t, i)] = max(best.get((t, i), 0), int(c))
    rows = [(r, i, m, s, p, best.get((t, i), 0)) for r, t, i, m, s, p in
            shown[["rater_id", "trial_id", "image_id", "model", "source", "prompt_id"]].itertuples(index=False)]
    return pd.DataFrame(rows, columns=["rater_id", "image_id", "model", "source", "prompt_id", "hr"])


def test_hrauc_equals_sklearn_per_rater_averaged(marked):
    df, marks = marked
    table = A.inferred_roc(df, marks).set_index("comparison")
    hr = independent_hr(df, marks)
    for model in sorted(SPOTS) + ["model-c"]:
        aucs = []
        for _, g in hr.groupby("rater_id"):
            part = g[(g["source"] == "real") | (g["model"] == model)]
            aucs.append(roc_auc_score((part["source"] != "real").astype(int), part["hr"]))
        assert table.loc[model, "estimate"] == pytest.approx(np.mean(aucs), abs=1e-12)
        assert table.loc[model, "n_readers"] == hr["rater_id"].nunique()
    # the simulated truth: hot-spot models' marks are many and confident, model-c gets the background only
    assert table.loc["model-a", "estimate"] > 0.7 and table.loc["model-b", "estimate"] > 0.7
    assert abs(table.loc["model-c", "estimate"] - 0.5) < 0.1


def test_the_mrmc_on_inferred_scores_is_mrmc_on_the_same_table_given_directly(marked):
    df, marks = marked
    table = A.inferred_roc(df, marks).set_index("comparison")
    hr = independent_hr(df, marks)
    real = hr[hr["source"] == "real"]
    parts = []
    for model in sorted(hr.loc[hr["source"] != "real", "model"].unique()):
        gen = hr[hr["model"] == model]
        for part, truth in ((real, 1), (gen, 0)):
            parts.append(pd.DataFrame({"reader": part["rater_id"], "treatment": model, "case": part["image_id"],
                                       "truth": truth, "rating": -part["hr"], "cluster": part["prompt_id"]}))
    direct = mrmc.or_analysis(pd.concat(parts, ignore_index=True), "jackknife")
    for _, t in direct.treatment_table.iterrows():
        row = table.loc[t["treatment"]]
        assert row["estimate"] == pytest.approx(t["auc"], abs=1e-12)
        assert row["se"] == pytest.approx(t["se"], rel=1e-9) and row["df"] == pytest.approx(t["df"], rel=1e-9)
    f_row = table.loc["all models equal"]
    assert f_row["statistic"] == pytest.approx(direct.f, rel=1e-9)
    assert f_row["p_value"] == pytest.approx(direct.p_value, rel=1e-9)


def test_marks_without_confidences_have_no_inferred_roc(marked):
    df, marks = marked
    plain = marks.assign(confidence=pd.array([pd.NA] * len(marks), dtype="Int64"))
    assert A.analyze(df, n_boot=0, marks=plain).inferred_roc is None
    with pytest.raises(ValueError, match="no artifact mark has a confidence"):
        hrauc.hr_ratings(df, plain)
    assert "Inferred ROC of artifact marks" not in build_report(df, n_boot=0, marks=plain)


def test_the_report_shows_the_inferred_roc(marked):
    df, marks = marked
    a = A.analyze(df, n_boot=0, marks=marks)
    pd.testing.assert_frame_equal(a.inferred_roc, A.inferred_roc(df, marks))
    page = build_report(df, n_boot=0, marks=marks)
    assert "Inferred ROC of artifact marks" in page and "<h3>inferred_roc</h3>" in page


# ------------------------------------------------------------------------------------------------- RJafroc HrAuc


def test_rjafroc_hrauc_file_reads_back_to_the_same_numbers(marked, tmp_path):
    df, marks = marked
    written = T.export_r(df, tmp_path, ("rjafroc",), marks=marks)
    assert tmp_path / "rjafroc_hrauc.xlsx" in written and tmp_path / "rjafroc_hrauc_cases.csv" in written
    back = read_rjafroc(tmp_path, "rjafroc_hrauc.xlsx")
    cases = pd.read_csv(tmp_path / "rjafroc_hrauc_cases.csv")
    back["case"] = back["case"].map(dict(zip(cases["case_id"], cases["case"].astype(str))))
    frame = T.hrauc_frame(df, marks)
    same_results(mrmc.or_analysis(back, "jackknife"), mrmc.or_analysis(frame, "jackknife"))
    # diseased (LL) = generated images, each with its highest confidence (0 = unmarked) as the rating
    hr = independent_hr(df, marks).set_index(["rater_id", "image_id"])["hr"]
    assert (back["truth"] == (back["case"].map(dict(zip(cases["case"].astype(str), cases["truth"]))))).all()
    gen = set(df.loc[df["source"] != "real", "image_id"])
    assert set(back.loc[back["truth"] == 1, "case"]) <= gen and not set(back.loc[back["truth"] == 0, "case"]) & gen
    assert back.apply(lambda r: hr[(r["reader"], r["case"])] == r["rating"], axis=1).all()
    # the same AUCs as the report's inferred ROC (the truth and the sign turned round together)
    table = A.inferred_roc(df, marks).set_index("comparison")
    res = mrmc.or_analysis(back, "jackknife")
    for _, t in res.treatment_table.iterrows():
        assert table.loc[t["treatment"], "estimate"] == pytest.approx(t["auc"], abs=1e-12)


def test_no_hrauc_file_without_confidences(marked, tmp_path):
    df, marks = marked
    plain = marks.assign(confidence=pd.array([pd.NA] * len(marks), dtype="Int64"))
    written = T.export_r(df, tmp_path, ("rjafroc",), marks=plain)
    assert not (tmp_path / "rjafroc_hrauc.xlsx").exists() and all("hrauc" not in p.name for p in written)
    T.export_r(df, tmp_path / "m", ("mrmcaov",), marks=marks)  # the HrAuc file goes with RJafroc's only
    assert not (tmp_path / "m" / "rjafroc_hrauc.xlsx").exists()
