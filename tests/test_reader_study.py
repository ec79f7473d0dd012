"""Frozen reader studies through the app: prepare + freeze + verify, assignment balance with simulated raters,
resume after a restart, the unique constraint, answer history, and refusal of edits to a frozen design."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import make_app
from p2p_app import reader
from p2p_app.service import UserError
from p2p_app.storage import AccessDenied
from p2p_app.study import load_study, write_study, study_key

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT / "studies" / "colonoscopy_pilot" / "controls"


def small_study(folder: Path, **overrides) -> Path:
    """3 prompts (one with a real image) × 2 models × 1 seed + 1 control, single design, 3 listed raters."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(REAL / "bleeding.png", folder / "real.png")
    settings = {
        "id": "mini",
        "version": 1,
        "title": "Mini study",
        "instructions": "Rate each image.",
        "modality": "colonoscopy",
        "design": "single",
        "models": ["colon-msdm-tiny", "colon-flux-tiny"],
        "seeds": [3],
        "overlap_k": 2,
        "repeat_fraction": 0.25,
        "raters": ["ann", "ben", "cat"],
    }
    settings.update(overrides)
    prompts = [
        {"prompt_id": "p1", "prompt": "a 5 mm sessile polyp in the sigmoid colon", "real_image": "real.png"},
        {"prompt_id": "p2", "prompt": "ulcerative colitis with erosions", "real_image": ""},
        {"prompt_id": "p3", "prompt": "cecum with appendiceal orifice", "real_image": ""},
    ]
    (folder / "controls").mkdir(exist_ok=True)
    shutil.copy(REAL / "snare_polyp.png", folder / "controls" / "c1.png")
    controls = [{"control_id": "c1", "file": "c1.png", "caption": "a polyp in a snare"}]
    return write_study(folder, settings, prompts, controls)


def served_study(tmp_path, demo_registry, **overrides):
    """A demo app serving one small study (``overrides`` go to :func:`small_study`)."""
    app = make_app(tmp_path / "data", demo_registry)
    st = load_study(small_study(tmp_path / "mini", **overrides), known_models=[m.name for m in app.config.models])
    app.studies = {study_key(st): st}
    return app, st


@pytest.fixture()
def study_app(tmp_path, demo_registry):
    app, st = served_study(tmp_path, demo_registry)
    yield app, st
    app.storage.close()


def invite(app, st, name):
    """A listed rater, invited the way `p2p raters add` does (their link is the only way in)."""
    return reader.add_rater(app, st, name)[0]


def first_trial(app, st, name):
    """Prepare the study, invite rater ``name`` and show them their first item: (their session, the trial)."""
    reader.prepare_study(app, st)
    s = invite(app, st, name)
    return s, app.next_trial(st, s)


def answer_all(app, st, session, value=3):
    """Answer the rater's whole sequence; returns the number of trials answered."""
    n = 0
    while (shown := app.next_trial(st, session)) is not None:
        answers = {p.position: {"realism": value, "alignment": value} for p in shown.panels}
        assert app.submit_trial(st, session, shown.trial_id, answers).status == "stored"
        n += 1
    return n


def test_prepare_freezes_and_verify_detects_tampering(study_app):
    app, st = study_app
    report = reader.prepare_study(app, st)
    assert report.frozen and report.made == 6 and report.real_imported == 2 and not report.failures
    assert reader.verify_study(app, st).ok
    again = reader.prepare_study(app, st)  # idempotent: nothing regenerated
    assert again.made == 0 and again.frozen
    some = next(iter(app.storage.study_slots(app.storage.study(st.id, st.version).pk).values()))
    Path(some.file_path).write_bytes(Path(some.file_path).read_bytes() + b"x")
    bad = reader.verify_study(app, st)
    assert not bad.ok and any("changed" in p for p in bad.problems)


def test_editing_a_frozen_design_is_refused_unless_new_version(study_app, tmp_path):
    app, st = study_app
    reader.prepare_study(app, st)
    edited = load_study(small_study(tmp_path / "mini", seeds=[4]), known_models=[m.name for m in app.config.models])
    with pytest.raises(UserError, match="frozen.*new version"):
        reader.prepare_study(app, edited)
    assert not reader.verify_study(app, edited).ok
    v2 = load_study(small_study(tmp_path / "mini", seeds=[4], version=2), known_models=[m.name for m in app.config.models])
    assert reader.prepare_study(app, v2).frozen


def test_not_ready_study_is_refused(study_app):
    app, st = study_app
    session = invite(app, st, "ann")
    with pytest.raises(UserError, match="not ready"):
        app.next_trial(st, session)


def test_every_item_reaches_k_raters_and_repeats_are_marked(study_app):
    app, st = study_app
    reader.prepare_study(app, st)
    sessions = [invite(app, st, n) for n in st.raters]
    for s in sessions:
        assert answer_all(app, st, s) > 0
    cov = reader.coverage_frame(app, st)
    assert (cov["raters"] == st.overlap_k).all(), cov
    df = app.storage.ratings_frame(study_key(st))
    assert df["is_repeat"].any()
    # repeats are never adjacent to their first showing
    for (rater, item), g in df.groupby(["rater_id", "item_id"]):
        idx = sorted(g["order_index"].unique())
        if len(idx) > 1:
            assert idx[1] - idx[0] >= 2
    # position shown and n_panels are stored; real images are marked as real
    assert set(df.loc[df.model == "real", "source"]) == {"real"}
    assert df.loc[df.item_id.str.startswith("control:"), "prompt"].eq("a polyp in a snare").all()


def test_resume_after_restart(study_app, demo_registry, tmp_path):
    app, st = study_app
    reader.prepare_study(app, st)
    session, token = reader.add_rater(app, st, "ben")
    first = app.next_trial(st, session)
    app.submit_trial(st, session, first.trial_id, {p.position: {"realism": 2, "alignment": 2} for p in first.panels})
    second = app.next_trial(st, session)
    assert second.done == 1
    app.storage.close()

    restarted = make_app(tmp_path / "data", demo_registry)  # same database, new process state
    restarted.studies = {study_key(st): st}
    again = restarted.study_sign_in(st, token=token)
    resumed = restarted.next_trial(st, again)
    assert resumed.trial_id == second.trial_id and resumed.order_index == second.order_index
    assert [p.image_id for p in resumed.panels] == [p.image_id for p in second.panels]
    restarted.storage.close()


def test_unique_answers_and_history(tmp_path, demo_registry):
    app, st = served_study(tmp_path, demo_registry, allow_answer_changes=True)
    s, shown = first_trial(app, st, "cat")
    ans = {p.position: {"realism": 2, "alignment": 2} for p in shown.panels}
    assert app.submit_trial(st, s, shown.trial_id, ans).status == "stored"
    ans[1]["realism"] = 5
    assert app.submit_trial(st, s, shown.trial_id, ans).status == "changed"
    history = app.storage.rating_history(shown.trial_id)
    assert [h.value for h in history] == [2]
    df = app.storage.ratings_frame()
    assert len(df) == 2 * len(shown.panels)


def test_cant_judge_is_recorded_not_scored(study_app):
    app, st = study_app
    s, shown = first_trial(app, st, "ann")
    app.submit_trial(st, s, shown.trial_id, {1: {"cant_judge": True}})
    df = app.storage.ratings_frame()
    assert df["cant_judge"].all() and df["value"].isna().all()


def test_sign_in_rules(study_app):
    app, st = study_app
    reader.prepare_study(app, st)
    with pytest.raises(UserError, match="not a rater"):
        reader.add_rater(app, st, "mallory")
    with pytest.raises(UserError, match="invitation only"):
        app.study_sign_in(st, name="ben")  # a listed name not yet invited cannot be claimed by typing it
    session, token = reader.add_rater(app, st, "ann")
    assert app.study_sign_in(st, token=token).rater_pk == session.rater_pk
    assert app.study_sign_in(st, token=f"  {token} ").rater_pk == session.rater_pk
    with pytest.raises(UserError, match="invitation only"):
        app.study_sign_in(st, name="ann")  # typing her name is not her
    with pytest.raises(UserError, match="not valid"):
        app.study_sign_in(st, token="forged-token")
    with pytest.raises(UserError, match="already holds this rater place"):
        reader.add_rater(app, st, "ANN")  # a listed name is invited once
    assert reader.add_rater(app, st, "ben")[0].name == "ben"  # still possible after the refused claim


def test_open_study_makes_a_new_rater_per_sign_in(tmp_path, demo_registry):
    """Typing an existing rater's name in an open study makes a new rater: it never shows her answers."""
    app, st = served_study(tmp_path, demo_registry, raters=[], open=True, n_raters=3, allow_answer_changes=True)
    reader.prepare_study(app, st)
    alice = app.study_sign_in(st, name="Alice")
    assert alice.new_code  # her resume code, to show once
    first = app.next_trial(st, alice)
    app.submit_trial(st, alice, first.trial_id, {p.position: {"realism": 2, "alignment": 2} for p in first.panels})
    for typed in ("Alice", "alice", "ＡＬＩＣＥ"):
        other = app.study_sign_in(st, name=typed)
        assert other.rater_pk != alice.rater_pk and other.public_id != alice.public_id
        with pytest.raises(UserError, match="no earlier"):
            app.previous_trial(st, other, None)  # nothing of Alice's to see or change
    back = app.study_sign_in(st, token=alice.new_code)
    assert back.rater_pk == alice.rater_pk and not back.new_code
    assert app.previous_trial(st, back, None).trial_id == first.trial_id


def test_replayed_or_stale_submit_is_refused(tmp_path, demo_registry):
    """The page names the trial it shows: a replay after moving on never lands on the next item."""
    from p2p_app.service import StalePage

    app, st = served_study(tmp_path, demo_registry, allow_answer_changes=True)
    s, first = first_trial(app, st, "ann")
    body = {p.position: {"realism": 2, "alignment": 2} for p in first.panels}
    assert app.submit_trial(st, s, first.trial_id, body, shown=str(first.trial_id)).status == "stored"
    second = app.next_trial(st, s)
    with pytest.raises(StalePage):  # the session now shows item 2, the replayed body names item 1
        app.submit_trial(st, s, second.trial_id, body, shown=str(first.trial_id))
    with pytest.raises(StalePage):
        app.submit_trial(st, s, second.trial_id, body, shown="")
    assert app.storage.trial(second.trial_id).submitted_at is None and app.next_trial(st, s).done == 1
    # a second tab showing the answered item: told so, nothing changed (changes only after "Previous item")
    again = app.submit_trial(st, s, first.trial_id, {1: {"realism": 5, "alignment": 5}}, shown=str(first.trial_id))
    assert again.status == "duplicate" and "already answered" in again.message
    assert app.storage.rating_history(first.trial_id) == []
    changed = app.submit_trial(st, s, first.trial_id, {1: {"realism": 5, "alignment": 2}},
                                  shown=str(first.trial_id), reopened=True)  # fmt: skip
    assert changed.status == "changed"


def test_other_raters_trials_are_refused(study_app):
    app, st = study_app
    reader.prepare_study(app, st)
    ann = invite(app, st, "ann")
    ben = invite(app, st, "ben")
    shown = app.next_trial(st, ann)
    with pytest.raises(AccessDenied):
        app.submit_trial(st, ben, shown.trial_id, {1: {"realism": 1, "alignment": 1}})
    assert app.storage.count_ratings() == 0


def test_shipped_studies_load_with_the_demo_models(app):
    assert {"colonoscopy_pilot@v1", "radiology_pilot@v1"} <= set(app.studies)


def test_going_back_to_change_an_answer(tmp_path, demo_registry):
    app, st = served_study(tmp_path, demo_registry, allow_answer_changes=True)
    s, first = first_trial(app, st, "ann")
    app.submit_trial(st, s, first.trial_id, {1: {"realism": 2, "alignment": 3, "comment": "hm"}})
    second = app.next_trial(st, s)
    back = app.previous_trial(st, s, second.order_index)
    assert back.trial_id == first.trial_id
    assert back.answers == {1: {"realism": 2, "alignment": 3, "cant_judge": False, "comment": "hm"}}
    assert app.submit_trial(st, s, back.trial_id, {1: {"realism": 4, "alignment": 3, "comment": "hm"}}).status == "changed"
    assert [h.value for h in app.storage.rating_history(first.trial_id)] == [2]
    assert app.next_trial(st, s).trial_id == second.trial_id  # back to the first unanswered item
    with pytest.raises(UserError, match="no earlier"):
        app.previous_trial(st, s, first.order_index)


def test_going_back_is_refused_when_the_study_forbids_changes(study_app):
    app, st = study_app
    s, first = first_trial(app, st, "ann")
    app.submit_trial(st, s, first.trial_id, {1: {"realism": 2, "alignment": 3}})
    with pytest.raises(UserError, match="does not allow"):
        app.previous_trial(st, s, None)
    again = app.submit_trial(st, s, first.trial_id, {1: {"realism": 5, "alignment": 5}})
    assert again.status == "duplicate" and app.storage.rating_history(first.trial_id) == []


def test_the_desk_serves_the_cli_and_the_admin_screen_alike(study_app, tmp_path):
    """The researcher's desk: prepare, invite, progress, export by suffix, the admin downloads and overview, the
    report; unknown studies are refused with a message to show."""
    from p2p_app.desk import ResearchDesk

    app, st = study_app
    desk = ResearchDesk(app)
    assert desk.study("mini") is st and desk.study(study_key(st)) is st
    with pytest.raises(UserError, match="unknown study 'nope'"):
        desk.study("nope")
    assert desk.prepare(st).frozen and desk.verify(st).ok
    session, token = desk.invite(st, "ann")
    assert token and answer_all(app, st, session) > 0
    rater, new_token = desk.reissue(st, "ann")
    assert rater.pk == session.rater_pk and new_token != token
    assert desk.progress(st).set_index("name").loc["ann", "done"] > 0
    assert [r.name for r in desk.raters(st)] == ["ann"]
    out = tmp_path / "out"
    out.mkdir()
    assert "answers (wide, csv)" in desk.export(out / "w.csv", "mini", "wide")
    with pytest.raises(UserError, match="unknown study"):
        desk.export(out / "x.csv", "nope")
    with pytest.raises(UserError, match="needs --study"):
        desk.export(out / "m.csv", None, "metrics")
    for kind in ("long", "wide", "parquet", "marks", "report"):
        assert desk.download(kind, study_key(st), out).stat().st_size > 0
    with pytest.raises(AccessDenied):
        desk.download("long", "nope@v1", out)
    page, n = desk.report("mini", n_boot=20)
    assert n > 0 and "Mini study" in page
    view = desk.overview(study_key(st))
    assert view.answers == n and view.raters == 1 and view.figures and view.metrics is None


def test_create_desk_builds_the_desk_on_the_apps_factory(tmp_path, demo_registry):
    from p2p_app.startup import create_desk

    desk = create_desk(data_dir=tmp_path / "data", registry=demo_registry)
    try:
        assert desk.storage is desk.app.storage and desk.config.data_dir == tmp_path / "data"
        assert desk.ratings(None).empty
    finally:
        desk.storage.close()
