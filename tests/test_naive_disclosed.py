"""Issue 22 item 2: the naive → disclosed reading design, from the study file to the report (study file → prepare →
raters → export → report), its analysis against the simulator, and the rule that nothing in phase 1 mentions
synthesis."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from conftest import make_app
from p2p_app import assignment, reader
from p2p_app.analysis.disclosure import disclosure_table, paired_difference, rule_text, unusual_texts
from p2p_app.service import UserError
from p2p_app.simulate_disclosure import disclosure_truth, simulate_naive_disclosed
from p2p_app.study import (
    DISCLOSURE_TEXT, SOURCE_CALL_KEY, UNUSUAL_KEY, StudyError, item_phase, load_study, priming_word, study_key,
    write_study,
)

ROOT = Path(__file__).resolve().parent.parent
CONTROLS = ROOT / "studies" / "colonoscopy_pilot" / "controls"
QUESTIONS = [{"key": "quality", "kind": "scale", "label": "Image quality",
              "levels": ["Poor", "Fair", "Adequate", "Good", "Excellent"]}]


def naive_study(folder: Path, questions=QUESTIONS, **overrides) -> Path:
    """2 prompts with a real image × 2 models × 1 seed (6 images), 3 listed raters who read every image."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(CONTROLS / "bleeding.png", folder / "r1.png")
    shutil.copy(CONTROLS / "snare_polyp.png", folder / "r2.png")
    settings = {"id": "mini_naive", "version": 1, "title": "Image reading", "instructions": "Read each image.",
                "modality": "colonoscopy", "design": "naive_disclosed", "models": ["colon-msdm-tiny", "colon-flux-tiny"],
                "seeds": [3], "overlap_k": 3, "raters": ["ann", "ben", "cat"]}  # fmt: skip
    settings.update(overrides)
    settings = {k: v for k, v in settings.items() if v is not None}
    prompts = [{"prompt_id": "p1", "prompt": "a 5 mm sessile polyp in the sigmoid colon", "real_image": "r1.png"},
               {"prompt_id": "p2", "prompt": "a polyp in a snare", "real_image": "r2.png"}]
    return write_study(folder, settings, prompts, questions=questions or ())


@pytest.fixture()
def naive_app(tmp_path, demo_registry):
    app = make_app(tmp_path / "data", demo_registry)
    yield app
    app.storage.close()


def prepared(app, path):
    st = load_study(path, known_models=[m.name for m in app.config.models])
    app.studies = {study_key(st): st}
    assert reader.prepare_study(app, st).frozen
    return st


# ------------------------------------------------------------------------------------------------ study file


@pytest.mark.parametrize("overrides, questions, expected", [
    ({"title": "Real or synthetic?"}, QUESTIONS, "the title mentions 'Real'"),
    ({"instructions": "Some images were generated."}, QUESTIONS, "instructions mentions 'generated'"),
    ({}, None, "default questions ask about realism"),
    ({}, [{"key": "look", "kind": "scale", "label": "Does it look artificial?", "levels": ["No", "Yes"]}],
     "question 'look' mentions 'artificial'"),
    ({}, [{"key": "unusual", "kind": "text", "label": "Notes"}], "reserved"),
    ({"allow_answer_changes": True}, QUESTIONS, "cannot use allow_answer_changes"),
    ({"mark_artifacts": True}, QUESTIONS, "cannot use mark_artifacts"),
    ({"catch_rate": 0.1, "catch_kinds": ["noise"]}, QUESTIONS, "no catch screens"),
    ({"disclosed_order": "reversed"}, QUESTIONS, "disclosed_order must be one of fresh, same"),
    ({"notice_words": []}, QUESTIONS, "notice_words must be a non-empty list"),
    ({"notice_words": ["*"]}, QUESTIONS, "notice_words must be a non-empty list"),
    ({"design": "single", "disclosed_order": "same"}, QUESTIONS, "belongs to design = \"naive_disclosed\" only"),
])
def test_bad_naive_disclosed_study_files_are_refused_with_clear_errors(tmp_path, overrides, questions, expected):
    with pytest.raises(StudyError, match=None) as err:
        load_study(naive_study(tmp_path / "s", questions=questions, **overrides))
    assert expected in str(err.value) and "study.toml" in str(err.value)


def test_a_priming_prompt_is_refused_at_its_line(tmp_path):
    path = naive_study(tmp_path / "s")
    csv = path.parent / "prompts.csv"
    csv.write_text(csv.read_text().replace("a polyp in a snare", "a realistic polyp in a snare"))
    with pytest.raises(StudyError, match="prompt 'p2' mentions 'realistic'") as err:
        load_study(path)
    assert err.value.line == 3


def test_priming_words_and_phases():
    for text in ("Synthetic", "AI made", "generated", "a model", "looks real", "computer", "rendered"):
        assert priming_word(text), text
    for text in ("Image quality", "Anything unusual about this image? (optional)", "Description", "maintain"):
        assert priming_word(text) is None, text
    assert priming_word(DISCLOSURE_TEXT)  # the disclosure itself is what phase 1 must not say
    assert [item_phase(k) for k in ("naive:p1/real", "disclosed:p1/real", "p1/real", "catch:noise:0")] == [
        "naive", "disclosed", "", ""]


@pytest.mark.parametrize("order", ["fresh", "same"])
def test_phase_two_follows_all_of_phase_one_with_the_same_images(tmp_path, order):
    st = load_study(naive_study(tmp_path / "s", disclosed_order=order, repeat_fraction=0.2))
    fresh_differs = False
    for slot in range(st.n_raters):
        seq = assignment.rater_sequence(st, slot)
        phases = [item_phase(a.item_key) for a in seq]
        first_disclosed = phases.index("disclosed")
        assert set(phases[:first_disclosed]) == {"naive"} and set(phases[first_disclosed:]) == {"disclosed"}
        firsts = [a.item_key.split(":", 1)[1] for a in seq[:first_disclosed] if not a.is_repeat]
        again = [a.item_key.split(":", 1)[1] for a in seq[first_disclosed:]]
        assert sorted(again) == sorted(firsts) and len(again) == 6  # every image once more, no repeats
        assert not any(a.is_repeat for a in seq[first_disclosed:])
        if order == "same":
            assert again == firsts
        fresh_differs |= again != firsts
        assert seq == assignment.rater_sequence(st, slot)  # deterministic: resumable
    assert fresh_differs == (order == "fresh")
    other = load_study(naive_study(tmp_path / "o", disclosed_order="same" if order == "fresh" else "fresh"))
    assert other.design_hash() != st.design_hash()
    words = load_study(naive_study(tmp_path / "w", disclosed_order=order, repeat_fraction=0.2,
                                   notice_words=["odd*"]))  # fmt: skip
    assert words.design_hash() == st.design_hash()  # the keyword rule is analysis: editable after freezing


# ------------------------------------------------------------------------------------------------- service


def phase_one_form(shown, text="looks artificial"):
    return {p.position: {"quality": 3, "comment": text} for p in shown.panels}


def test_service_phases_storage_and_resume(naive_app, tmp_path):
    app = naive_app
    st = prepared(app, naive_study(tmp_path / "s"))
    session, token = reader.add_rater(app, st, "ann")
    seen = []
    while (shown := app.next_trial(st, session)).phase == "naive":
        assert [q.key for q in shown.questions] == ["quality", UNUSUAL_KEY] and not shown.disclose
        with pytest.raises(UserError):  # phase-1 questions are required as usual; the call is not asked
            app.submit_trial(st, session, shown.trial_id, {1: {SOURCE_CALL_KEY: 2}})
        text = "looks artificial" if len(seen) % 2 else ""
        assert app.submit_trial(st, session, shown.trial_id, phase_one_form(shown, text)).status == "stored"
        seen.append(shown.panels[0].image_id)
    assert len(seen) == 6 and shown.phase == "disclosed" and shown.disclose
    assert [q.key for q in shown.questions] == [SOURCE_CALL_KEY]
    before = app.storage.count_ratings()
    for bad in ({1: {SOURCE_CALL_KEY: 7}}, {1: {}}, {1: {"quality": 3}}):
        with pytest.raises(UserError):
            app.submit_trial(st, session, shown.trial_id, bad)
    assert app.storage.count_ratings() == before
    assert app.submit_trial(st, session, shown.trial_id, {1: {SOURCE_CALL_KEY: 2}}).status == "stored"
    second = [shown.panels[0].image_id]
    session = app.study_sign_in(st, token=token)  # signing in again resumes at phase 2's next item
    shown = app.next_trial(st, session)
    assert shown.phase == "disclosed" and not shown.disclose
    while shown is not None:
        second.append(shown.panels[0].image_id)
        app.submit_trial(st, session, shown.trial_id, {1: {SOURCE_CALL_KEY: 5}})
        shown = app.next_trial(st, session)
    assert sorted(second) == sorted(seen)  # the same images again
    df = app.storage.ratings_frame(study_key(st))
    assert set(df["phase"]) == {"naive", "disclosed"}
    assert set(df.loc[df["phase"] == "naive", "question"]) == {"quality", UNUSUAL_KEY}
    assert set(df.loc[df["phase"] == "disclosed", "question"]) == {SOURCE_CALL_KEY}
    unusual = df[df["question"] == UNUSUAL_KEY]
    assert len(unusual) == 6 and (unusual["comment"] == "looks artificial").sum() == 3
    assert len(unusual_texts(df)) == 3


def test_phase_two_is_not_reachable_before_phase_one_is_done(naive_app, tmp_path):
    """The only way to a trial is next_trial, which gives the first unanswered one: phase 2's trials do not exist
    until every phase-1 screen is answered; a made-up trial id is refused."""
    app = naive_app
    st = prepared(app, naive_study(tmp_path / "s"))
    session = reader.add_rater(app, st, "ben")[0]
    for _ in range(3):
        shown = app.next_trial(st, session)
        assert shown.phase == "naive"
        app.submit_trial(st, session, shown.trial_id, phase_one_form(shown))
    trials = app.storage.trials_for(session.rater_pk, app.study_record(st).pk)
    assert all(item_phase(t.item_key) == "naive" for t in trials)
    with pytest.raises(Exception):
        app.submit_trial(st, session, max(t.id for t in trials) + 1, {1: {SOURCE_CALL_KEY: 2}})


# ------------------------------------------------------------------------------------------------ analysis


def test_paired_difference_matches_the_t_interval_of_per_rater_differences():
    """With the same screens per rater in both phases, the CR1 variance of the difference of the two ratios is the
    variance of the per-rater differences over R: the classical paired t interval (an independent computation)."""
    k1, k2 = np.array([3.0, 5, 2, 8, 4]), np.array([9.0, 12, 7, 15, 10])
    n1, n2 = np.full(5, 20.0), np.full(5, 20.0)
    d, lo, hi = paired_difference((k1, n1), (k2, n2), 0.95)
    per = k2 / 20 - k1 / 20
    half = stats.t.ppf(0.975, 4) * per.std(ddof=1) / np.sqrt(5)
    assert d == pytest.approx(per.mean()) and (lo, hi) == pytest.approx((per.mean() - half, per.mean() + half))
    assert np.isnan(paired_difference((k1[:1], n1[:1]), (k2[:1], n2[:1]), 0.95)[1])  # one rater: no interval


def test_disclosure_table_against_hand_counts():
    df = simulate_naive_disclosed(n_raters=4, images_per_model=5, n_real=5, seed=3)
    table = disclosure_table(df).set_index("model")
    naive = df[(df["phase"] == "naive") & (df["question"] == UNUSUAL_KEY)]
    flagged = naive["comment"].str.contains(r"\b(?:artificial|synthetic|generated|fake|AI)\b", case=False)
    gen = naive["model"] != "real"
    assert table.loc["all generated", "noticed"] == pytest.approx(flagged[gen].mean())
    calls = df[df["phase"] == "disclosed"]
    assert table.loc["real", "detected"] == pytest.approx((calls.loc[calls["model"] == "real", "value"] >= 4).mean())
    assert table.loc["model_a", "detected"] == pytest.approx((calls.loc[calls["model"] == "model_a", "value"] <= 3).mean())
    assert table.loc["all images", "disclosed_images"] == len(calls) and np.isnan(table.loc["real", "difference"])
    assert "synthe\\w*" in rule_text(("synthe*",))


def test_intervals_cover_the_simulators_truth():
    """Seeded studies with raters who differ: the pooled coverage of every interval of the table near 95 % (the
    larger run: benchmarks/bench_disclosure.py)."""
    truth = disclosure_truth(images_per_model=10, n_real=10)
    hits = []
    for seed in range(40):
        table = disclosure_table(simulate_naive_disclosed(n_raters=6, images_per_model=10, n_real=10, seed=seed))
        for row in table.itertuples():
            noticed, detected = truth[row.model]
            for true, lo, hi in ((noticed, row.noticed_low, row.noticed_high),
                                 (detected, row.detected_low, row.detected_high),
                                 (detected - noticed, row.difference_low, row.difference_high)):
                if np.isfinite(true) and np.isfinite(lo):
                    hits.append(lo <= true <= hi)
    assert len(hits) == 40 * 12
    assert 0.90 <= np.mean(hits) <= 0.99, np.mean(hits)


def test_simulator_refuses_bad_probabilities():
    with pytest.raises(ValueError, match="probabilities"):
        simulate_naive_disclosed(models={"m": (0.0, 0.5)})
    assert set(simulate_naive_disclosed(n_raters=2, images_per_model=2, n_real=1)["phase"]) == {"naive", "disclosed"}


# ------------------------------------------------------------------------------ over the browser protocol, then report


def _texts(value) -> list[str]:
    """Every string inside a component's props or an update (labels, values, choices, info)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for k, v in value.items() if k not in ("elem_id", "elem_classes", "key", "__type__") for t in _texts(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _texts(v)]
    return []


def _subtree(layout: dict, component_id: int) -> set[int]:
    """The ids of ``component_id`` and everything inside it in the config's layout."""
    def walk(node, inside):
        inside = inside or node["id"] == component_id
        found = {node["id"]} if inside else set()
        for child in node.get("children", []):
            found |= walk(child, inside)
        return found
    return walk(layout, False)


def _primes(texts) -> list[str]:
    return [t for t in texts if priming_word(t)]


@pytest.mark.e2e
def test_naive_disclosed_over_the_browser_protocol_to_export_and_report(naive_app, tmp_path):
    from browser_client import BrowserSession, study
    from conftest import exported_long, running_server

    from p2p_app.desk import ResearchDesk
    from p2p_app.ui.page import page_data

    app = naive_app
    st = prepared(app, naive_study(tmp_path / "s", raters=["ann", "ben"], overlap_k=2))
    tokens = {name: reader.add_rater(app, st, name)[1] for name in st.raters}
    ids = study(0)
    assert not _primes(_texts(page_data(app)["ids"]["studies"][0]))  # the page's declared parts: neutral names
    with running_server(app) as url:
        for n_rater, (name, token) in enumerate(tokens.items()):
            page = BrowserSession(url, query=f"token={token}")
            shown_text = _texts([c.get("props", {}) for c in page.components.values()])
            assert "Image quality" in shown_text and not _primes(shown_text)  # the whole page's config: no mention
            assert not any("arena" in str(c.get("props", {}).get("elem_id", "")) for c in page.components.values())
            out = page.trigger(page.by_id(ids.signin))
            quality = page.answers(ids, "quality")[0]
            comment = page.answers(ids, "comment")[0]
            call = page.by_id(ids.call)
            for step in range(6):  # phase 1: every update the page gets is free of any mention of synthesis
                assert not _primes(_texts(list(out.values()))), _primes(_texts(list(out.values())))
                assert page.visible[page.by_id(ids.screen)] and not page.visible[call]
                assert page.values[comment] == "" and page.values[quality] is None  # a new screen starts empty
                page.set(quality, 1 + step % 5)
                page.set(comment, "looks artificial" if step % 3 == 0 else "")
                out = page.trigger(page.by_id(ids.submit))
            assert app.storage.count_ratings() > 0
            interlude = page.by_id(ids.interlude)
            assert page.visible[interlude] and not page.visible[page.by_id(ids.screen)]
            assert any("made by a computer model" in t for t in _texts(list(out.values())))
            page.trigger(page.by_id(ids.interlude_ok))
            assert page.visible[page.by_id(ids.screen)] and not page.visible[interlude] and page.visible[call]
            before = app.storage.count_ratings()
            page.set(call, None)
            out = page.trigger(page.by_id(ids.submit))  # no call: refused, nothing stored
            assert app.storage.count_ratings() == before
            for step in range(6):
                page.set(call, 2 if step % 2 else 5)
                page.trigger(page.by_id(ids.submit))
            assert any("All items are done" in str(v) for v in page.values.values())
            page.close()
    df = exported_long(st.id, tmp_path / "data", tmp_path / "ratings.csv")
    assert set(df["phase"]) == {"naive", "disclosed"}
    unusual = df[df["question"] == UNUSUAL_KEY]
    assert len(unusual) == 12 and (unusual["comment"] == "looks artificial").sum() == 4
    assert sorted(df.loc[df["question"] == SOURCE_CALL_KEY, "value"].astype(float).unique()) == [2.0, 5.0]
    page_html, answers = ResearchDesk(app).report(st.id, n_boot=20)  # the researcher's report (CLI, admin screen)
    assert answers == len(df)
    assert "Detection before and after disclosure" in page_html and "Keyword rule" in page_html
    assert "looks artificial" in page_html and "synthe\\w*" in page_html


def test_shipped_example_loads_with_the_demo_models(app):
    st = load_study(ROOT / "studies" / "colonoscopy_naive_disclosed", known_models=[m.name for m in app.config.models])
    assert st.design == "naive_disclosed" and st.disclosed_order == "fresh" and "synthe*" in st.notice_words
    assert len(st.disclosed_items()) == len(st.items()) == 9
