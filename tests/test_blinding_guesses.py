"""The model question of a study with ``blinding_index`` (issue 22 item 1), through the service: stored only after
the screen's ratings, never changed, every bad answer refused with nothing written; the question's options are the
same on every screen; the guesses reach the export and the report."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from conftest import make_app
from test_reader_study import small_study

from p2p_app import reader
from p2p_app.analysis.blinding_index import DONT_KNOW
from p2p_app.service import AccessDenied, UserError
from p2p_app.storage.guesses import NOT_RATED_YET
from p2p_app.study import load_study, study_key

MODELS = ["colon-msdm-tiny", "colon-flux-tiny"]


OPEN = {"raters": [], "open": True, "n_raters": 4, "blinding_index": True}


@pytest.fixture(scope="module")
def guess_app(tmp_path_factory, demo_registry):
    """One prepared open study with the question (preparing is slow): each test signs in new raters."""
    root = tmp_path_factory.mktemp("guesses")
    app = make_app(root / "data", demo_registry)
    st = load_study(small_study(root / "mini", **OPEN), known_models=[m.name for m in app.config.models])
    app.studies = {study_key(st): st}
    reader.prepare_study(app, st)
    yield app, st
    app.storage.close()


def signed_in(app, st, name):
    return app.study_sign_in(st, name=f"{name} {uuid.uuid4().hex[:6]}")


def rate(app, st, session, shown):
    answers = {p.position: {"realism": 3, "alignment": 3} for p in shown.panels}
    assert app.submit_trial(st, session, shown.trial_id, answers).status == "stored"


def test_the_options_are_the_study_models_then_real():
    from p2p_app.ui.guesses import DONT_KNOW_LABEL, REAL_LABEL, guess_choices

    class St:
        def guess_options(self):
            return ("m1", "m2", "real")

    assert guess_choices(St()) == [(DONT_KNOW_LABEL, DONT_KNOW), ("m1", "m1"), ("m2", "m2"), (REAL_LABEL, "real")]


def test_guesses_only_after_the_ratings_and_never_changed(guess_app):
    app, st = guess_app
    assert st.guess_options() == (*MODELS, "real")  # the study has a real image and a control
    ann = signed_in(app, st, "ann")
    shown = app.next_trial(st, ann)
    with pytest.raises(AccessDenied, match="after this screen's ratings"):
        app.submit_guesses(st, ann, shown.trial_id, {1: MODELS[0]})
    assert NOT_RATED_YET
    rate(app, st, ann, shown)
    first = {1: MODELS[0]}
    assert app.submit_guesses(st, ann, shown.trial_id, first).status == "stored"
    again = app.submit_guesses(st, ann, shown.trial_id, {1: MODELS[1]})
    assert again.status == "duplicate" and "never changed" in again.message
    assert app.storage.trial_guesses(shown.trial_id, ann.rater_pk) == first
    frame = app.storage.guesses_frame(study_key(st)).set_index("trial_id").loc[shown.trial_id]
    assert frame["guess"] == MODELS[0] and frame["position"] == 1
    truth = app.storage.trial_models(shown.trial_id, ann.rater_pk)[0]
    assert frame["truth"] == ("real" if truth.source == "real" else truth.model)


@pytest.mark.parametrize("guesses, message", [
    ({1: "colon-kandinsky-tiny"}, "pick one of the listed"),  # a model the study does not list
    ({1: "Don't know"}, "pick one of the listed"),  # the label, not the value
    ({1: None}, "pick one of the listed"),
    ({}, "Answer the model question for Image A"),
    ({2: MODELS[0]}, "not on this screen"),
    ({True: MODELS[0]}, "not on this screen"),
    ("colon-msdm-tiny", "must map"),
])
def test_bad_guesses_are_refused_with_nothing_written(guess_app, guesses, message):
    app, st = guess_app
    ann = signed_in(app, st, "ann")
    shown = app.next_trial(st, ann)
    rate(app, st, ann, shown)
    with pytest.raises(UserError, match=message):
        app.submit_guesses(st, ann, shown.trial_id, guesses)
    assert app.storage.trial_guesses(shown.trial_id, ann.rater_pk) == {}
    assert app.submit_guesses(st, ann, shown.trial_id, {1: DONT_KNOW}).status == "stored"  # still askable


def test_another_raters_trial_and_a_study_without_the_question(guess_app):
    app, st = guess_app
    ann, ben = signed_in(app, st, "ann"), signed_in(app, st, "ben")
    shown = app.next_trial(st, ann)
    rate(app, st, ann, shown)
    with pytest.raises(AccessDenied):
        app.submit_guesses(st, ben, shown.trial_id, {1: DONT_KNOW})
    assert app.storage.trial_guesses(shown.trial_id, ann.rater_pk) == {}
    plain = dataclasses.replace(st, blinding_index=False)  # the same study's screens without the question
    with pytest.raises(UserError, match="does not ask which model"):
        app.submit_guesses(plain, ann, shown.trial_id, {1: DONT_KNOW})
    assert app.storage.trial_guesses(shown.trial_id, ann.rater_pk) == {}


def test_the_option_enters_the_design_hash(tmp_path):
    with_q = load_study(small_study(tmp_path / "a", blinding_index=True), known_models=MODELS)
    without = load_study(small_study(tmp_path / "b"), known_models=MODELS)
    assert with_q.design_hash() != without.design_hash()
    assert "blinding_index" not in without.design_dict()  # a study without it keeps its hash


def test_real_is_an_option_only_where_screens_show_real_images(tmp_path):
    with_real = load_study(small_study(tmp_path / "a", blinding_index=True), known_models=MODELS)
    ranking = load_study(small_study(tmp_path / "b", blinding_index=True, design="ranking"), known_models=MODELS)
    assert with_real.guess_options() == (*MODELS, "real") and ranking.guess_options() == tuple(MODELS)


def test_a_model_named_dont_know_is_refused(tmp_path):
    with pytest.raises(Exception, match="dont_know"):
        load_study(small_study(tmp_path / "a", models=["dont_know", MODELS[0]]), known_models=None)


def test_the_question_has_its_declared_ids_once(guess_app):
    """tests/test_page.py's check on a page whose study asks the model question: every declared id (the box, one
    question per panel, its button) is in the page once, and nothing undeclared."""
    from test_page import check_rater_page

    check_rater_page(guess_app[0])
