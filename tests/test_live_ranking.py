"""Issue 14: ranking in the live arena (setting ``arena_judgement``): the rater orders every panel best to worst for
realism and for alignment; stored as full rankings like the ranking study design; nothing is revealed before a
complete ranking is stored; the report fits the same Bradley–Terry / Plackett–Luce code on live rankings."""

from __future__ import annotations

import pytest

from conftest import make_app
from p2p_app import analysis
from p2p_app.config import ConfigError, load_config
from p2p_app.report import build_report
from p2p_app.service import UserError
from p2p_app.storage import AccessDenied

PROMPT = "colonoscopy image with a single sessile polyp of 5-10 mm, no instruments"
RAD_PROMPT = "chest radiograph, small right pleural effusion"


@pytest.fixture()
def choice_app(tmp_path, demo_registry):
    app = make_app(tmp_path / "data", demo_registry, arena_judgement="choice")
    yield app
    app.storage.close()


def ranks(trial, realism_order=None):
    """A complete ranking form: realism ranks in ``realism_order`` (positions best first), alignment reversed."""
    n = len(trial.panels)
    order = realism_order or list(range(1, n + 1))
    place = {pos: i + 1 for i, pos in enumerate(order)}
    return {p: {"rank_realism": place[p], "rank_alignment": n + 1 - place[p]} for p in range(1, n + 1)}


def test_setting_is_checked_and_documented_values():
    assert load_config().arena_judgement == "scores" and load_config().arena_judgements == ("scores",)
    assert load_config(arena_judgement="choice").arena_judgements == ("scores", "ranking")
    assert load_config(arena_judgement="ranking").arena_judgements == ("ranking",)
    with pytest.raises(ConfigError, match="arena_judgement' must be one of scores, ranking, choice"):
        load_config(arena_judgement="stars")


def test_incomplete_rankings_are_refused_write_nothing_and_reveal_nothing(choice_app):
    app = choice_app
    rater = app.sign_in("Dr Rank")
    trial = app.live_generate(rater, "colonoscopy", PROMPT)
    good = ranks(trial)
    duplicate = {p: {**a, "rank_realism": 1} for p, a in good.items()}
    missing = {p: a for p, a in good.items() if p != 2}
    out_of_range = {p: {**a, "rank_alignment": 7} for p, a in good.items()}
    scores_in_ranking_mode = {p: {"realism": 3, "alignment": 3} for p in good}
    for bad, message in ((duplicate, "must be used once"), (missing, "has no rank yet"),
                         (out_of_range, "whole number from 1 to 3"), (scores_in_ranking_mode, "has no rank yet")):
        with pytest.raises(UserError, match=message):
            app.submit(rater, trial.trial_id, bad, judgement="ranking")
        assert app.storage.count_ratings() == 0
        with pytest.raises(AccessDenied):  # the reveal rule: nothing before a complete ranking is stored
            app.reveal(rater, trial.trial_id)
    with pytest.raises(UserError, match="judged by scores or ranking"):
        app.submit(rater, trial.trial_id, good, judgement="stars")
    result = app.submit(rater, trial.trial_id, good, judgement="ranking")
    assert result.status == "stored" and "Ranking saved" in result.message
    assert sorted(m for _, m in result.reveal) == sorted(m.name for m in app.config.models_for("colonoscopy"))
    assert app.reveal(rater, trial.trial_id) == result.reveal
    df = app.storage.ratings_frame()
    assert set(df["question"]) == {"rank_realism", "rank_alignment"} and len(df) == 6
    for _, g in df.groupby("question"):
        assert sorted(g["value"].astype(int)) == [1, 2, 3]  # a full ranking, like the ranking study design
    by_pos = df[df["question"] == "rank_realism"].set_index("position")["value"]
    assert by_pos.to_dict() == {1: 1.0, 2: 2.0, 3: 3.0}
    # scores still work in the same arena, per trial
    second = app.live_generate(rater, "colonoscopy", PROMPT + " again")
    full = {p: {"realism": 4, "alignment": 2} for p in range(1, 4)}
    assert app.submit(rater, second.trial_id, full, judgement="scores").status == "stored"


def test_each_arena_accepts_only_its_judgement(tmp_path, demo_registry):
    scores = make_app(tmp_path / "a", demo_registry)
    rater = scores.sign_in("Dr Scores")
    trial = scores.live_generate(rater, "colonoscopy", PROMPT)
    with pytest.raises(UserError, match="judged by scores, not 'ranking'"):
        scores.submit(rater, trial.trial_id, ranks(trial), judgement="ranking")
    assert scores.storage.count_ratings() == 0
    scores.storage.close()
    ranking = make_app(tmp_path / "b", demo_registry, arena_judgement="ranking")
    rater = ranking.sign_in("Dr Ranks")
    trial = ranking.live_generate(rater, "colonoscopy", PROMPT)
    with pytest.raises(UserError, match="judged by ranking, not 'scores'"):
        ranking.submit(rater, trial.trial_id, {p: {"realism": 3, "alignment": 3} for p in range(1, 4)})
    assert ranking.submit(rater, trial.trial_id, ranks(trial), judgement="ranking").status == "stored"
    ranking.storage.close()


def test_report_fits_live_rankings_per_modality_with_the_ranking_design_code(choice_app):
    app = choice_app
    best = {"colonoscopy": "colon-msdm-tiny", "radiology": "rad-flux-tiny"}
    first = app.sign_in("Dr Generate")
    made = {m: app.live_generate(first, m, p) for m, p in (("colonoscopy", PROMPT), ("radiology", RAD_PROMPT))}
    for r in range(3):
        rater = app.sign_in(f"Dr {r}")
        for k in range(4):
            for modality, shown in made.items():  # more trials of the same images (generation is not under test)
                ids = [p.image_id for p in shown.panels]
                ids = ids[k % 3:] + ids[:k % 3]
                trial = app.storage.create_trial(rater_pk=rater.rater_pk, prompt=shown.prompt, modality=modality,
                                                 shown_order=ids)  # fmt: skip
                models = {pos: app.storage.image(i).model for pos, i in enumerate(ids, start=1)}
                order = sorted(models, key=lambda p: (models[p] != best[modality], models[p]))
                if (r + k) % 2:  # the other two swap places now and then
                    order[1], order[2] = order[2], order[1]
                form = ranks(shown, order)
                assert app.submit(rater, trial.id, form, judgement="ranking").status == "stored"
    df = app.storage.ratings_frame()
    a = analysis.analyze(df, n_boot=50)
    table = a.ranking.set_index(["question", "model"])
    for modality, model in best.items():
        rows = table.loc[f"rank_realism · {modality}"]
        assert set(rows.index) == {m.name for m in app.config.models_for(modality)}  # never mixed across modalities
        assert rows["strength"].idxmax() == model and rows.loc[model, "rank_band"] == "1"
        assert (rows["ci_low"] <= rows["strength"]).all() and (rows["strength"] <= rows["ci_high"]).all()
        assert (rows["ci_high"] - rows["ci_low"]).max() > 0
        assert rows["strength"].sum() == pytest.approx(0, abs=1e-9)
    wins = a.ranking_wins.set_index(["question", "model_a", "model_b"])
    assert wins.loc[("rank_realism · colonoscopy", "colon-msdm-tiny", "colon-flux-tiny"), "win_rate"] == 1.0
    page = build_report(df, "Live arena", n_boot=20)
    assert "Rankings" in page and 'id="fig-ranking"' in page and 'id="fig-ranking_wins"' in page


@pytest.mark.e2e
def test_live_ranking_over_the_browser_protocol(tmp_path, demo_registry):
    from browser_client import ARENA, BrowserSession
    from conftest import running_server

    app = make_app(tmp_path / "data", demo_registry, arena_judgement="choice")
    with running_server(app) as url:
        page = BrowserSession(url)
        sign_in = page.by_id(ARENA.signin)
        page.set(page.by_id(ARENA.name), "Dr Browser")
        page.trigger(sign_in)
        mode = page.by_id(ARENA.judgement)
        page.set(page.by_id(ARENA.modality), "colonoscopy")
        page.set(page.by_id(ARENA.prompt), PROMPT)
        page.set(mode, "ranking")
        page.trigger(page.by_id(ARENA.generate))
        submit = page.by_id(ARENA.submit)
        realism = page.answers(ARENA, "rank_realism", "ranking")
        alignment = page.answers(ARENA, "rank_alignment", "ranking")
        assert len(realism) == len(alignment) == 3
        images = [c for c in page.images(ARENA, "scores") + page.images(ARENA, "ranking") if page.visible.get(c) is not False
                  and isinstance(page.values.get(c), dict) and page.values[c].get("url")]  # fmt: skip
        assert len(images) == 3  # only the ranking panels show the trial
        for c in realism + alignment:
            page.set(c, 1)
        out = page.trigger(submit)  # every image ranked 1: refused, nothing stored, nothing revealed
        text = " ".join(str(v) for v in out.values())
        assert "must be used once" in text and "was made by" not in text
        assert app.storage.count_ratings() == 0
        for i, c in enumerate(realism):
            page.set(c, i + 1)
        for i, c in enumerate(alignment):
            page.set(c, 3 - i)
        out = page.trigger(submit)
        text = " ".join(str(v) for v in out.values())
        assert "Ranking saved" in text and "was made by" in text
        df = app.storage.ratings_frame()
        assert set(df["question"]) == {"rank_realism", "rank_alignment"}
        assert df[df["question"] == "rank_realism"].set_index("position")["value"].to_dict() == {1: 1, 2: 2, 3: 3}
        # the next trial by scores, in the same page
        page.set(mode, "scores")
        page.set(page.by_id(ARENA.prompt), PROMPT + ", second")
        page.trigger(page.by_id(ARENA.generate))
        scales = page.answers(ARENA, "realism", "scores") + page.answers(ARENA, "alignment", "scores")
        assert len(scales) == 6
        for c in scales:
            page.set(c, 4)
        out = page.trigger(submit)
        assert "Ratings saved" in " ".join(str(v) for v in out.values())
        assert app.storage.count_ratings() == 12
        page.close()
    app.storage.close()
