"""The arena's model question (``arena_blinding_index``, issue 22 item 1): after a trial's ratings are stored and
before the reveal; the reveal waits for it (so a guess can never follow the reveal); bad answers are refused with
nothing written; the arena's page has the question's declared ids."""

from __future__ import annotations

import pytest
from conftest import make_app

from p2p_app.analysis.blinding_index import DONT_KNOW
from p2p_app.service import ASK_MODELS_FIRST, AccessDenied, UserError

PROMPT = "colonoscopy image with a single sessile polyp"


@pytest.fixture()
def arena(tmp_path, demo_registry):
    app = make_app(tmp_path / "data", demo_registry, arena_blinding_index=True)
    yield app
    app.storage.close()


def scores(trial, value=3):
    return {p.position: {"realism": value, "alignment": value} for p in trial.panels}


def test_the_reveal_waits_for_the_model_question(arena):
    app = arena
    rater = app.sign_in("Dr Guess")
    trial = app.live_generate(rater, "colonoscopy", PROMPT)
    options = app.arena_guess_options("colonoscopy")
    assert options == tuple(m.name for m in app.config.models_for("colonoscopy"))
    with pytest.raises(AccessDenied, match="after this screen's ratings"):
        app.submit_arena_guesses(rater, trial.trial_id, {p.position: DONT_KNOW for p in trial.panels})
    result = app.submit(rater, trial.trial_id, scores(trial))
    assert result.status == "stored" and result.reveal == () and ASK_MODELS_FIRST in result.message
    with pytest.raises(AccessDenied, match="Answer below first"):
        app.reveal(rater, trial.trial_id)
    guesses = {p.position: options[i % len(options)] for i, p in enumerate(trial.panels)}
    done = app.submit_arena_guesses(rater, trial.trial_id, guesses)
    assert done.status == "stored" and len(done.reveal) == len(trial.panels)
    assert app.reveal(rater, trial.trial_id) == done.reveal
    again = app.submit_arena_guesses(rater, trial.trial_id, {p.position: DONT_KNOW for p in trial.panels})
    assert again.status == "duplicate"  # after the reveal nothing changes
    assert app.storage.trial_guesses(trial.trial_id, rater.rater_pk) == guesses
    frame = app.storage.guesses_frame("live")
    assert len(frame) == len(trial.panels) and set(frame["truth"]) <= set(options)


@pytest.mark.parametrize("bad, message", [
    ("radiology", "pick one of the listed"),  # another modality's model
    ("real", "pick one of the listed"),  # the arena shows no real images
    (None, "Answer the model question"),
])
def test_bad_guesses_are_refused_with_nothing_written(arena, bad, message):
    app = arena
    rater = app.sign_in("Dr Bad")
    trial = app.live_generate(rater, "colonoscopy", PROMPT)
    app.submit(rater, trial.trial_id, scores(trial))
    value = app.arena_guess_options("radiology")[0] if bad == "radiology" else bad
    guesses = {p.position: value for p in trial.panels} if value is not None else {}
    with pytest.raises(UserError, match=message):
        app.submit_arena_guesses(rater, trial.trial_id, guesses)
    assert app.storage.trial_guesses(trial.trial_id, rater.rater_pk) == {}
    other = app.sign_in("Dr Other")
    with pytest.raises(AccessDenied):
        app.submit_arena_guesses(other, trial.trial_id, {p.position: DONT_KNOW for p in trial.panels})


def test_an_arena_without_the_question(app):
    rater = app.sign_in("Dr Plain")
    trial = app.live_generate(rater, "colonoscopy", PROMPT)
    assert app.submit(rater, trial.trial_id, scores(trial)).reveal  # revealed at once, as before
    with pytest.raises(UserError, match="does not ask"):
        app.submit_arena_guesses(rater, trial.trial_id, {p.position: DONT_KNOW for p in trial.panels})


def test_the_arena_page_has_the_question_ids_once(arena):
    from test_page import check_rater_page

    check_rater_page(arena)


def test_the_arena_report_has_the_blinding_index(arena):
    from p2p_app.desk import ResearchDesk

    app = arena
    options = app.arena_guess_options("colonoscopy")
    for name in ("Dr One", "Dr Two"):
        rater = app.sign_in(name)
        trial = app.live_generate(rater, "colonoscopy", PROMPT)
        app.submit(rater, trial.trial_id, scores(trial))
        app.submit_arena_guesses(rater, trial.trial_id, {p.position: options[0] for p in trial.panels})
    desk = ResearchDesk(app)
    bi = desk.arena_blinding(n_boot=50)
    assert bi.james["modality"].tolist() == ["colonoscopy"] and bi.james.loc[0, "n_guesses"] == 2 * len(options)
    assert set(bi.bang["arm"]) == set(options)
    page, _ = desk.report("live", n_boot=50)
    assert "<h2>Blinding index</h2>" in page


def test_through_the_arena_page_guess_then_reveal(tmp_path, demo_registry):
    """Sign in → Generate → rate → Submit: the question, no model named; the answers → the reveal
    (tests/browser_client.py, parts found by their declared ids)."""
    from browser_client import ARENA, BrowserSession
    from conftest import running_server

    app = make_app(tmp_path / "data", demo_registry, arena_blinding_index=True)
    with running_server(app) as url:
        page = BrowserSession(url)
        page.set(page.by_id(ARENA.name), "Dr Page")
        page.trigger(page.by_id(ARENA.signin))
        page.set(page.by_id(ARENA.prompt), PROMPT)
        page.trigger(page.by_id(ARENA.generate))
        for c in page.answers(ARENA, "realism", "scores") + page.answers(ARENA, "alignment", "scores"):
            page.set(c, 3)
        page.trigger(page.by_id(ARENA.submit))
        box, reveal = page.by_id(ARENA.guess_box), page.by_id(ARENA.reveal)
        models = app.arena_guess_options("colonoscopy")
        assert page.visible[box] is True
        assert not any(m in page.text_of(reveal) for m in models), "a model is named before the guesses"
        n = len(models)
        for i in range(n):
            page.set(page.by_id(ARENA.guess(i)), DONT_KNOW)
        page.trigger(page.by_id(ARENA.guess_submit))
        assert page.visible[box] is False and "was made by" in page.text_of(reveal)
        assert app.storage.guesses_frame("live")["guess"].tolist() == [DONT_KNOW] * n
        page.close()
    app.storage.close()
