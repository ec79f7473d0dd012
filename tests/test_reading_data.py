"""Issue 13, the data side of the reading screen: active time, practice items and artifact marks — stored through
the service, refused when bad (nothing written), exported, analysed and reported."""

from __future__ import annotations

import math
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import update

from conftest import make_app
from p2p_app import analysis as A
from p2p_app import designs
from p2p_app import assignment, reader
from p2p_app import export as E
from p2p_app.report import build_report
from p2p_app.service import MAX_MARKS_PER_PANEL, UserError
from p2p_app.simulate import simulate_forced_choice, simulate_marks, simulate_ratings, with_practice
from p2p_app.storage import Trial
from p2p_app.study import StudyError, load_study, study_key, write_study
from p2p_app.tidy import MARK_COLUMNS, TIDY_COLUMNS

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT / "studies" / "colonoscopy_pilot" / "controls"

# The design hashes of the shipped studies before practice items and artifact marks existed (commit 82a6bf5):
# a study that uses neither keeps its hash, so a study frozen before them still opens.
SHIPPED_HASHES = {
    "colonoscopy_pilot": "b982cc5292aa685dd285c524e47a2cb08b32a52275506ad306e44f50ac0041ca",
    "radiology_pilot": "c5dd78024b9d9522f72fe9012600b6bc98b6d9233dd6b3a4678d4440318a31a8",
    "colonoscopy_forced_choice": "5dbae650641bfa44459709052c2ccd0fe0201e204a5303293a23689227952f27",
    "colonoscopy_ranking": "4d42ceef3b4b06de09ad632167c7ca3f76f2ea391b0c8e995598412d3991f5c6",
}


def reading_study(folder: Path, practice=("yes", "yes", "", "no", ""), **overrides) -> Path:
    """Five prompts (the first two practice) × 1 model × 1 seed, single design, two listed raters who each see
    every item, raters may mark artifacts and change answers."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = {
        "id": "reading", "version": 1, "title": "Reading study", "instructions": "Rate each image.",
        "modality": "colonoscopy", "design": "single", "models": ["colon-msdm-tiny"], "seeds": [3],
        "overlap_k": 2, "raters": ["ann", "ben"], "allow_answer_changes": True, "mark_artifacts": True,
    }  # fmt: skip
    settings.update(overrides)
    texts = ["practice: a polyp", "practice: the cecum", "a 5 mm sessile polyp", "ulcerative colitis", "a z-line"]
    prompts = [{"prompt_id": f"p{i}", "prompt": t, "practice": flag}
               for i, (t, flag) in enumerate(zip(texts, practice))]  # fmt: skip
    return write_study(folder, settings, prompts)


@pytest.fixture()
def reading_app(tmp_path, demo_registry):
    app = make_app(tmp_path / "data", demo_registry)
    st = load_study(reading_study(tmp_path / "reading"), known_models=[m.name for m in app.config.models])
    app.studies = {study_key(st): st}
    assert reader.prepare_study(app, st).frozen
    yield app, st
    app.storage.close()


def form(shown, value=3):
    return {p.position: {"realism": value, "alignment": value} for p in shown.panels}


def backdate(app, trial_id: int, seconds: float) -> None:
    """Make the trial look shown ``seconds`` ago (the wall time its submit will get)."""
    with app.storage.engine.begin() as con:
        con.execute(update(Trial).where(Trial.id == trial_id)
                    .values(shown_at=datetime.now(timezone.utc) - timedelta(seconds=seconds)))  # fmt: skip


def n_marks(app, study) -> int:
    return len(app.storage.marks_frame(study_key(study), history=True))


# ------------------------------------------------------------------------------------------------- study files


def test_shipped_studies_keep_their_design_hash():
    for name, expected in SHIPPED_HASHES.items():
        st = load_study(ROOT / "studies" / name)
        assert not st.practice_items() and not st.mark_artifacts
        assert st.design_hash() == expected, name


def test_the_shipped_artifact_example_loads_with_the_demo_models(app):
    st = load_study(ROOT / "studies" / "colonoscopy_artifacts", known_models=[m.name for m in app.config.models])
    assert st.mark_artifacts and len(st.practice_items()) == 2 and len(st.items()) == 6
    seq = assignment.rater_sequence(st, 0)
    assert [a.practice for a in seq[:3]] == [True, True, False] and not any(a.practice for a in seq[2:])


def test_practice_and_marks_are_part_of_the_design(tmp_path):
    st = load_study(reading_study(tmp_path / "a"))
    assert [i.prompt_id for i in st.practice_items()] == ["p0", "p1"]
    assert [i.prompt_id for i in st.items()] == ["p2", "p3", "p4"]  # practice items are not design items
    assert {s.prompt_id for s in st.image_slots()} == {"p0", "p1", "p2", "p3", "p4"}  # but they are generated
    assert st.mark_artifacts
    plain = load_study(reading_study(tmp_path / "b", practice=("", "", "", "", ""), mark_artifacts=False))
    hashes = {st.design_hash(), plain.design_hash(),
              load_study(reading_study(tmp_path / "c", mark_artifacts=False)).design_hash(),
              load_study(reading_study(tmp_path / "d", practice=("yes", "", "", "", ""))).design_hash()}
    assert len(hashes) == 4  # which prompts are practice, and marking, change the hash
    assert "practice" not in plain.design_dict() and "mark_artifacts" not in plain.design_dict()


@pytest.mark.parametrize(
    ("practice", "message"),
    [
        (("maybe", "", "", "", ""), r"prompts\.csv, line 2: practice must be yes or no \(or empty\), not 'maybe'"),
        (("yes",) * 5, r"prompts\.csv, line 6: every prompt is a practice prompt"),
    ],
)
def test_bad_practice_columns_are_refused_with_file_and_line(tmp_path, practice, message):
    with pytest.raises(StudyError, match=message):
        load_study(reading_study(tmp_path / "s", practice=practice))


def test_mark_artifacts_must_be_a_boolean(tmp_path):
    with pytest.raises(StudyError, match=r"study\.toml, line \d+: mark_artifacts must be true or false"):
        load_study(reading_study(tmp_path / "s", mark_artifacts="yes"))


def test_practice_items_come_first_for_every_rater_in_a_seeded_order(tmp_path):
    st = load_study(reading_study(tmp_path / "s", raters=[f"r{i}" for i in range(6)], overlap_k=1,
                                  practice=("yes", "yes", "", "", "")))  # fmt: skip
    orders = set()
    for slot in range(st.n_raters):
        seq = assignment.rater_sequence(st, slot)
        assert [a.practice for a in seq] == [True, True] + [False] * (len(seq) - 2)
        assert [a.order_index for a in seq] == list(range(len(seq)))
        orders.add(tuple(a.item_key for a in seq[:2]))
        assert seq == assignment.rater_sequence(st, slot)  # deterministic
    assert orders == {("p0/colon-msdm-tiny/s3", "p1/colon-msdm-tiny/s3"), ("p1/colon-msdm-tiny/s3",
                                                                           "p0/colon-msdm-tiny/s3")}


# ------------------------------------------------------------------------------------------------- service


def test_practice_items_are_shown_first_flagged_and_counted_apart(reading_app):
    app, st = reading_app
    session = reader.add_rater(app, st, "ann")[0]
    seen = []
    while (shown := app.next_trial(st, session)) is not None:
        seen.append((shown.practice, shown.practice_done, shown.practice_total, shown.done, shown.total,
                     shown.practice_number, shown.mark_artifacts))  # fmt: skip
        assert app.submit_trial(st, session, shown.trial_id, form(shown)).status == "stored"
    assert seen == [
        (True, 0, 2, 0, 3, 1, True), (True, 1, 2, 0, 3, 2, True),
        (False, 2, 2, 0, 3, 0, True), (False, 2, 2, 1, 3, 0, True), (False, 2, 2, 2, 3, 0, True),
    ]  # fmt: skip
    df = app.storage.ratings_frame(study_key(st))
    assert df.groupby("trial_id")["practice"].first().tolist() == [True, True, False, False, False]
    assert set(df.loc[df["practice"], "prompt_id"]) == {"p0", "p1"}
    progress = reader.progress_frame(app, st)
    ann = progress[progress["name"] == "ann"].iloc[0]
    assert (ann["done"], ann["total"], ann["practice_done"], ann["practice_total"]) == (3, 3, 2, 2)
    assert reader.verify_study(app, st).ok
    previous = app.previous_trial(st, session, None)
    assert (previous.done, previous.total, previous.practice_done, previous.practice_total) == (3, 3, 2, 2)


def test_active_seconds_are_stored_clamped_and_drive_the_timing(reading_app):
    app, st = reading_app
    session = reader.add_rater(app, st, "ann")[0]
    shown = app.next_trial(st, session)
    backdate(app, shown.trial_id, 300)
    assert app.submit_trial(st, session, shown.trial_id, form(shown), active_seconds=12.5).status == "stored"
    shown = app.next_trial(st, session)
    backdate(app, shown.trial_id, 300)
    app.submit_trial(st, session, shown.trial_id, form(shown), active_seconds=1e6)  # more than the wall time
    shown = app.next_trial(st, session)
    backdate(app, shown.trial_id, 300)
    app.submit_trial(st, session, shown.trial_id, form(shown), active_seconds=12.5)
    shown = app.next_trial(st, session)
    app.submit_trial(st, session, shown.trial_id, form(shown))  # an old client: unknown
    df = app.storage.ratings_frame(study_key(st))
    per_trial = df.groupby("order_index")[["seconds", "active_seconds"]].first()
    assert per_trial.loc[0, "active_seconds"] == 12.5 and per_trial.loc[0, "seconds"] >= 300
    assert per_trial.loc[1, "active_seconds"] == per_trial.loc[1, "seconds"] >= 300  # clamped to the wall time
    assert per_trial.loc[2, "active_seconds"] == 12.5
    assert math.isnan(per_trial.loc[3, "active_seconds"]) and per_trial.loc[3, "seconds"] < 60
    # practice is out (orders 0 and 1); of the real items, 12.5 s active (wall 300 s) and an unknown one (wall)
    timing = A.rating_times(df)
    row = timing[timing["by"] == "all"].iloc[0]
    real = per_trial.loc[[2, 3]]
    assert row["n_trials"] == 2 and row["n_active"] == 1 and row["median_active_seconds"] == 12.5
    assert row["median_seconds"] == pytest.approx((12.5 + real.loc[3, "seconds"]) / 2)
    assert row["median_wall_seconds"] == pytest.approx(real["seconds"].median())


def test_too_fast_uses_active_time_where_known():
    df = simulate_ratings(n_raters=4, n_prompts=6, seed=2)
    df["seconds"] = 300.0  # slow on the wall clock ...
    fast = df["rater_id"] == "r001"
    df["active_seconds"] = np.where(fast, 0.5, np.nan)  # ... but r001 was active for half a second per screen
    raters = A.rater_summary(df).set_index("rater_id")
    assert raters.loc["r001", "too_fast"] and not raters.drop("r001")["too_fast"].any()
    assert raters.loc["r001", "median_seconds"] == 0.5 and raters.loc["r001", "median_wall_seconds"] == 300
    html = build_report(df, n_boot=20)
    assert "Median seconds per screen, active and wall time" in html and "median_active_seconds" in html


def test_bad_active_seconds_are_refused_with_nothing_stored(reading_app):
    app, st = reading_app
    session = reader.add_rater(app, st, "ann")[0]
    shown = app.next_trial(st, session)
    for bad in (float("nan"), float("inf"), -float("inf"), -1.0, "12.5", True, [3.0]):
        with pytest.raises(UserError, match="active time"):
            app.submit_trial(st, session, shown.trial_id, form(shown), active_seconds=bad)
        assert app.storage.count_ratings() == 0 and app.storage.trial(shown.trial_id).submitted_at is None
    assert app.submit_trial(st, session, shown.trial_id, form(shown), active_seconds=3).status == "stored"


def test_live_submit_takes_active_seconds(app):
    session = app.sign_in("Dr Live")
    shown = app.live_generate(session, "colonoscopy", "a small polyp")
    with pytest.raises(UserError, match="active time"):
        app.submit(session, shown.trial_id, form(shown), shown=shown.trial_id, active_seconds=-3)
    assert app.storage.count_ratings() == 0
    assert app.submit(session, shown.trial_id, form(shown), shown=shown.trial_id, active_seconds=0.0).status == "stored"
    assert (app.storage.ratings_frame("live")["active_seconds"] == 0.0).all()


def test_marks_are_stored_with_the_answers_mapped_to_image_ids(reading_app, tmp_path):
    app, st = reading_app
    session = reader.add_rater(app, st, "ann")[0]
    shown = app.next_trial(st, session)
    marks = {1: [(0.25, 0.75), (1.0, 0.0)]}
    assert app.submit_trial(st, session, shown.trial_id, form(shown), marks=marks).status == "stored"
    # a replayed submit of the same trial (a second tab) stores no marks
    assert app.submit_trial(st, session, shown.trial_id, form(shown), shown=shown.trial_id,
                            marks={1: [(0.5, 0.5)]}).status == "duplicate"  # fmt: skip
    m = app.storage.marks_frame(study_key(st))
    assert list(m.columns) == list(MARK_COLUMNS)
    assert m[["x", "y"]].values.tolist() == [[0.25, 0.75], [1.0, 0.0]]
    assert set(m["image_id"]) == {shown.panels[0].image_id} and (m["model"] == "colon-msdm-tiny").all()
    assert m["practice"].all() and m["replaced_at"].isna().all()
    assert app.storage.trial_marks(shown.trial_id, session.rater_pk) == {1: [(0.25, 0.75), (1.0, 0.0)]}
    # "Previous item" and a changed answer: the new marks replace the old ones, which stay as history
    again = app.previous_trial(st, session, None)
    assert again.marks == {1: [(0.25, 0.75), (1.0, 0.0)]}
    assert app.submit_trial(st, session, again.trial_id, form(again), shown=again.trial_id, reopened=True,
                            marks={1: [(0.5, 0.5)]}).status == "changed"  # fmt: skip
    assert app.storage.marks_frame(study_key(st))[["x", "y"]].values.tolist() == [[0.5, 0.5]]
    history = app.storage.marks_frame(study_key(st), history=True)
    assert len(history) == 3 and history["replaced_at"].notna().sum() == 2
    from click.testing import CliRunner

    from p2p_app.cli import main

    out = tmp_path / "marks.csv"
    res = CliRunner().invoke(main, ["export", str(out), "--study", st.id, "--format", "marks",
                                    "--data-dir", str(tmp_path / "data")])  # fmt: skip
    assert res.exit_code == 0, res.output
    exported = pd.read_csv(out)
    assert list(exported.columns) == list(MARK_COLUMNS) and exported[["x", "y"]].values.tolist() == [[0.5, 0.5]]


BAD_MARKS = [
    ({2: [(0.5, 0.5)]}, "position 2, which is not on this screen"),
    ({"1": [(0.5, 0.5)]}, "position '1', which is not on this screen"),
    ({1: [(1.2, 0.5)]}, "two numbers x, y between 0 and 1"),
    ({1: [(-0.01, 0.5)]}, "two numbers x, y between 0 and 1"),
    ({1: [(float("nan"), 0.5)]}, "two numbers x, y between 0 and 1"),
    ({1: [("0.5", 0.5)]}, "two numbers x, y between 0 and 1"),
    ({1: [(True, 0.5)]}, "two numbers x, y between 0 and 1"),
    ({1: [(0.5,)]}, "two numbers x, y between 0 and 1"),
    ({1: "0.5,0.5"}, "must be a list of"),
    ({1: [(0.1, 0.1)] * (MAX_MARKS_PER_PANEL + 1)}, "at most 20 marks per image"),
    ([(0.5, 0.5)], "must map an image position"),
]


def test_bad_marks_are_refused_with_nothing_stored(reading_app):
    app, st = reading_app
    session = reader.add_rater(app, st, "ann")[0]
    shown = app.next_trial(st, session)
    for marks, message in BAD_MARKS:
        with pytest.raises(UserError, match=message):
            app.submit_trial(st, session, shown.trial_id, form(shown), marks=marks)
        assert app.storage.count_ratings() == 0 and n_marks(app, st) == 0
        assert app.storage.trial(shown.trial_id).submitted_at is None
    # the limit itself is allowed
    ok = {1: [(0.1, 0.1)] * MAX_MARKS_PER_PANEL}
    assert app.submit_trial(st, session, shown.trial_id, form(shown), marks=ok).status == "stored"
    assert n_marks(app, st) == MAX_MARKS_PER_PANEL


def test_marks_are_refused_in_a_study_that_does_not_ask_for_them(tmp_path, demo_registry):
    app = make_app(tmp_path / "data", demo_registry)
    try:
        st = load_study(reading_study(tmp_path / "s", mark_artifacts=False),
                        known_models=[m.name for m in app.config.models])  # fmt: skip
        app.studies = {study_key(st): st}
        reader.prepare_study(app, st)
        session = reader.add_rater(app, st, "ann")[0]
        shown = app.next_trial(st, session)
        assert not shown.mark_artifacts
        with pytest.raises(UserError, match="does not ask for marked points"):
            app.submit_trial(st, session, shown.trial_id, form(shown), marks={1: [(0.5, 0.5)]})
        assert app.storage.count_ratings() == 0 and n_marks(app, st) == 0
        assert app.submit_trial(st, session, shown.trial_id, form(shown), marks={1: []}).status == "stored"
    finally:
        app.storage.close()


# ------------------------------------------------------------------------------------------------- analysis


def test_practice_answers_change_no_number_in_the_report():
    df = simulate_ratings(n_raters=6, n_prompts=8, seed=5, catch_rate=0.1)
    marks = simulate_marks(df, {"model-a": (0.25, 0.85)}, seed=5)
    noisy = with_practice(df, n_items=2, value=1.0, seconds=0.05)  # extreme: every score 1, in 0.05 s
    noisy_marks = pd.concat([marks, simulate_marks(noisy[noisy["practice"]], {"model-b": (0.05, 0.05)},
                                                   marks_per_image=15, seed=6)], ignore_index=True)  # fmt: skip
    assert noisy["practice"].sum() > 0 and noisy_marks["practice"].sum() > 0
    assert noisy.loc[noisy["practice"], "value"].dropna().eq(1.0).all()
    a, b = A.analyze(df, n_boot=30, marks=marks), A.analyze(noisy, n_boot=30, marks=noisy_marks)
    for name, table in a.tables().items():
        pd.testing.assert_frame_equal(table, b.tables()[name], obj=name)
    assert all(np.array_equal(a.mark_grids[m], b.mark_grids[m]) for m in a.mark_grids)
    alone, alone_noisy = A.mark_heatmaps(df, marks), A.mark_heatmaps(noisy, noisy_marks)  # called on its own
    pd.testing.assert_frame_equal(alone[0], alone_noisy[0])
    assert build_report(df, n_boot=30, marks=marks) == build_report(noisy, n_boot=30, marks=noisy_marks)
    # the statistics called on their own drop practice answers too
    pd.testing.assert_frame_equal(A.rater_summary(df), A.rater_summary(noisy))
    pd.testing.assert_frame_equal(A.rating_times(df), A.rating_times(noisy))


def test_practice_screens_of_a_forced_choice_study_enter_no_design_table():
    df = simulate_forced_choice(n_raters=6, n_items=12, seed=4)
    picks = with_practice(df, n_items=2, value=None, seconds=0.01)  # valid picks on every practice screen
    a, b = A.analyze(df, n_boot=20), A.analyze(picks, n_boot=20)
    assert a.forced_choice is not None and len(picks[picks["practice"]]) > 0
    assert len(designs.forced_choice_screens(picks)) > len(designs.forced_choice_screens(df))  # they are screens
    for name, table in a.tables().items():
        pd.testing.assert_frame_equal(table, b.tables()[name], obj=name)


def test_the_heat_map_recovers_each_models_hot_spot():
    df = simulate_ratings(n_raters=8, n_prompts=10, seed=7)
    spots = {"model-a": (0.25, 0.85), "model-b": (0.75, 0.15), "model-c": (0.55, 0.45)}
    marks = simulate_marks(df, spots, marks_per_image=2.0, background=0.5, seed=7)
    table, grids = A.mark_heatmaps(df, marks)
    t = table.set_index("model")
    for model, (x, y) in spots.items():
        assert (t.loc[model, "peak_x"], t.loc[model, "peak_y"]) == pytest.approx((x, y)), model
        grid = grids[model]
        assert grid.shape == (A.MARK_GRID, A.MARK_GRID)
        assert grid.sum() == pytest.approx(t.loc[model, "n_marks"] / t.loc[model, "n_images"])
    shown = df.drop_duplicates(["trial_id", "image_id"])
    assert t.loc["real", "n_images"] == (shown["model"] == "real").sum()
    assert t.loc["real", "marks_per_image"] < 1.0  # only the background
    html = build_report(df, n_boot=20, marks=marks)
    assert 'id="fig-marks"' in html and "Artifact marks" in html
    assert 'id="fig-marks"' not in build_report(df, n_boot=20)


def test_marks_export_is_documented_and_round_trips(tmp_path):
    df = simulate_ratings(n_raters=4, n_prompts=4, seed=1)
    marks = simulate_marks(df, {"model-a": (0.5, 0.5)}, seed=1)
    assert tuple(E.MARK_EXPORT_COLUMNS) == MARK_COLUMNS
    paths = E.export_all(df, tmp_path, marks=marks)
    back = pd.read_csv(paths["marks_csv"])
    assert list(back.columns) == list(MARK_COLUMNS) and len(back) == len(marks)
    assert np.allclose(back["x"], marks["x"]) and back["replaced_at"].isna().all()
    assert back["marked_at"].str.endswith("Z").all()
    assert "marks_csv" not in E.export_all(df, tmp_path / "plain")
    long = E.read_long_csv(paths["long_csv"])
    assert list(long.columns) == list(TIDY_COLUMNS) and long["active_seconds"].isna().all()


def test_the_wide_export_leaves_practice_out():
    df = with_practice(simulate_ratings(n_raters=3, n_prompts=3, seed=1), n_items=1)
    wide = E.wide_frame(df)
    assert not wide["image_id"].str.startswith("practice-").any()
    assert len(wide) == df.loc[~df["practice"], "image_id"].nunique()
