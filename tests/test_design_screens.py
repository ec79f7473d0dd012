"""Issue 14 part B: the forced-choice and ranking designs and catch trials, from the study file to the tidy frame
(study file → prepare/freeze → answers through the service → ratings frame → analysis tables)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import make_app
from p2p_app import assignment, reader
from p2p_app import designs
from p2p_app.service import UserError
from p2p_app.study import StudyError, load_study, rater_group_map, study_key, write_study

ROOT = Path(__file__).resolve().parent.parent
CONTROLS = ROOT / "studies" / "colonoscopy_pilot" / "controls"


def design_study(folder: Path, design: str, **overrides) -> Path:
    """2 prompts (both with a real image) × 2 models × 1 seed, 3 listed raters, 2 groups, catch trials."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(CONTROLS / "bleeding.png", folder / "r1.png")
    shutil.copy(CONTROLS / "snare_polyp.png", folder / "r2.png")
    settings = {
        "id": f"mini_{design}",
        "version": 1,
        "title": "Mini",
        "instructions": "Judge each screen.",
        "modality": "colonoscopy",
        "design": design,
        "models": ["colon-msdm-tiny", "colon-flux-tiny"],
        "seeds": [3, 4],
        "overlap_k": 2,
        "raters": ["ann", "ben", "cat"],
        "catch_rate": 0.3,
        "catch_kinds": ["real", "noise", "flipped", "blank"],
    }
    settings.update(overrides)
    settings = {k: v for k, v in settings.items() if v is not None}  # None: leave the key out
    prompts = [
        {"prompt_id": "p1", "prompt": "a 5 mm sessile polyp in the sigmoid colon", "real_image": "r1.png"},
        {"prompt_id": "p2", "prompt": "a polyp in a snare", "real_image": "r2.png"},
    ]
    path = write_study(folder, settings, prompts)
    if "rater_groups" not in overrides:
        with path.open("a", encoding="utf-8") as fh:
            fh.write('\n[rater_groups]\nresident = ["ann"]\nsenior = ["ben", "cat"]\n')
    return path


@pytest.fixture()
def design_app(tmp_path, demo_registry):
    app = make_app(tmp_path / "data", demo_registry)
    yield app
    app.storage.close()


def load(path, app=None):
    known = [m.name for m in app.config.models] if app else None
    return load_study(path, known_models=known)


# ------------------------------------------------------------------------------------------- study files


def test_designs_build_screens_with_a_constant_panel_count(tmp_path):
    fc = load(design_study(tmp_path / "fc", "forced_choice"))
    assert [i.n_panels for i in fc.items()] == [3] * 4  # the real image + one per model
    assert all(sum(s.is_real for s in i.slots) == 1 for i in fc.items())
    rk = load(design_study(tmp_path / "rk", "ranking"))
    assert [i.n_panels for i in rk.items()] == [2] * 4
    assert not any(s.is_real for i in rk.items() for s in i.slots)
    for st in (fc, rk):
        catches = st.catch_items()
        assert {i.key.split(":")[1] for i in catches} == {"real", "noise", "flipped", "blank"}
        design_n = {i.n_panels for i in st.items()}
        assert {i.n_panels for i in catches} == design_n  # blinding: a catch screen looks like any other
        for item in catches:
            kinds = [s.catch for s in item.slots]
            if item.key.startswith("catch:real"):
                assert kinds.count("real") == 1 and kinds.count("broken") == item.n_panels - 1
            else:
                assert kinds.count("broken") == 1
    assert fc.rater_group("Ann") == "resident" and fc.rater_group("cat") == "senior"
    assert rater_group_map([fc])[study_key(fc)] == {"ann": "resident", "ben": "senior", "cat": "senior"}


@pytest.mark.parametrize(
    ("overrides", "appended", "where"),
    [
        ({"catch_rate": 0.5}, "", "catch_rate must be in"),
        ({"catch_kinds": ["real", "smudge"]}, "", "unknown catch kind 'smudge'"),
        ({"catch_rate": 0.0}, "", "catch_kinds without catch_rate"),
        ({"models": ["colon-msdm-tiny"], "design": "ranking"}, "", "at least two models"),
        ({"rater_groups": 1}, '[rater_groups]\nresident = ["zed"]\n', "'zed' is not one of the study's raters"),
        ({"rater_groups": 1}, '[rater_groups]\na = ["ann"]\nb = ["ann"]\n', "already in group 'a'"),
    ],
)
def test_bad_design_settings_are_refused_with_file_and_line(tmp_path, overrides, appended, where):
    over = {k: v for k, v in overrides.items() if k != "rater_groups"}
    path = design_study(tmp_path / "s", over.pop("design", "forced_choice"), **over,
                        **({"rater_groups": 1} if "rater_groups" in overrides else {}))
    if "rater_groups" in overrides:  # the helper wrote `rater_groups = 1`: replace it by the table under test
        text = path.read_text().replace("rater_groups = 1\n", "")
        path.write_text(text + "\n" + appended)
    with pytest.raises(StudyError) as err:
        load(path)
    assert where in str(err.value)
    assert err.value.line is not None, str(err.value)


def test_forced_choice_needs_a_real_image_on_every_prompt(tmp_path):
    path = design_study(tmp_path / "s", "forced_choice")
    csv = path.parent / "prompts.csv"
    csv.write_text(csv.read_text().replace("r2.png", ""))
    with pytest.raises(StudyError, match="needs a real_image for every prompt") as err:
        load(path)
    assert err.value.line == 3 and err.value.path == csv


def test_design_hash_covers_design_catch_and_groups(tmp_path):
    base = load(design_study(tmp_path / "a", "forced_choice")).design_hash()
    changed = [
        load(design_study(tmp_path / "b", "ranking", id="mini_forced_choice")),
        load(design_study(tmp_path / "c", "forced_choice", catch_rate=0.2)),
        load(design_study(tmp_path / "d", "forced_choice", catch_kinds=["real", "noise"])),
    ]
    assert all(s.design_hash() != base for s in changed)
    path = design_study(tmp_path / "e", "forced_choice")
    path.write_text(path.read_text().replace('senior = ["ben", "cat"]', 'senior = ["ben"]'))
    assert load(path).design_hash() != base
    assert load(design_study(tmp_path / "f", "forced_choice")).design_dict()["format"] == 4


# -------------------------------------------------------------------------------------------- assignment


@pytest.mark.parametrize("design", ["forced_choice", "ranking", "single"])
def test_catch_screens_at_the_rate_never_adjacent_and_deterministic(tmp_path, design):
    st = load(design_study(tmp_path / "s", design, seeds=[1, 2, 3, 4, 5], repeat_fraction=0.2))
    for slot in range(st.n_raters):
        seq = assignment.rater_sequence(st, slot)
        assert seq == assignment.rater_sequence(st, slot)
        flags = [a.is_catch for a in seq]
        n_design = flags.count(False)
        assert flags.count(True) == -(-3 * n_design // 10) > 0  # ceil(0.3 x design screens)
        assert not flags[0]
        assert not any(a and b for a, b in zip(flags, flags[1:])), flags
        keys = [a.item_key for a in seq if a.is_catch]
        assert len(set(keys)) == len(keys)  # a rater never sees the same catch screen twice
        assert set(keys) <= set(st.item_map())


def test_no_catch_screens_without_catch_rate(tmp_path):
    st = load(design_study(tmp_path / "s", "ranking", catch_rate=0.0, catch_kinds=None))
    assert st.catch_items() == ()
    assert not any(a.is_catch for s in range(3) for a in assignment.rater_sequence(st, s))


# ------------------------------------------------------------------------------ prepare → answer → frame


def prepared(app, path):
    st = load(path, app)
    app.studies = {study_key(st): st}
    report = reader.prepare_study(app, st)
    assert report.frozen and reader.verify_study(app, st).ok
    return st


def form_for(st, shown, good=True):
    """A complete, valid form: forced choice picks panel 1 (or the real-looking catch), ranking ranks in order."""
    n = len(shown.panels)
    if st.design == "forced_choice":
        form = {p.position: {"realism": 3, "alignment": 3} for p in shown.panels}
        form[0] = {"chosen_real": shown.panels[0].label if good else "Image Z"}
        return form
    return {p.position: {"rank_realism": p.position, "rank_alignment": n + 1 - p.position} for p in shown.panels}


def test_forced_choice_end_to_end_with_catch_and_groups(design_app, tmp_path):
    app = design_app
    st = prepared(app, design_study(tmp_path / "s", "forced_choice"))
    catch_images = [app.storage.study_slots(app.study_record(st).pk)[s.key] for s in st.catch_slots()]
    assert len({i.id for i in catch_images}) == len(catch_images) > 0
    for name in st.raters:
        session = reader.add_rater(app, st, name)[0]
        shown = app.next_trial(st, session)
        before = app.storage.count_ratings()
        for bad in ({**form_for(st, shown), 0: {}}, form_for(st, shown, good=False),
                    {**form_for(st, shown), 0: {"chosen_real": ["Image A", "Image B"]}}):
            with pytest.raises(UserError):
                app.submit_trial(st, session, shown.trial_id, bad)
        assert app.storage.count_ratings() == before  # a refused answer writes nothing
        while shown is not None:
            assert app.submit_trial(st, session, shown.trial_id, form_for(st, shown)).status == "stored"
            shown = app.next_trial(st, session)
    df = app.storage.ratings_frame(study_key(st), rater_group_map([st]))
    picks = df[df["question"] == "chosen_real"]
    assert (picks.groupby("trial_id")["value"].sum() == 1).all()  # exactly one pick per screen
    assert set(df["catch"]) == {"", "real", "broken"}
    assert set(df.loc[df["catch"] == "broken", "catch_kind"]) == {"noise", "flipped", "blank"}
    assert set(df.loc[df["catch"] != "broken", "catch_kind"]) == {""}
    assert dict(df.groupby("rater_name")["rater_group"].first()) == {"ann": "resident", "ben": "senior",
                                                                     "cat": "senior"}
    assert (df["n_panels"] == 3).all()
    screens = designs.forced_choice_screens(df)
    assert len(screens) > 0
    assert not designs.catch_table(df).empty


def test_ranking_end_to_end_refuses_incomplete_rankings(design_app, tmp_path):
    app = design_app
    st = prepared(app, design_study(tmp_path / "s", "ranking"))
    session = reader.add_rater(app, st, "ann")[0]
    shown = app.next_trial(st, session)
    good = form_for(st, shown)
    duplicate = {p: {**a, "rank_realism": 1} for p, a in good.items()}
    missing = {1: good[1]}
    out_of_range = {p: {**a, "rank_alignment": a["rank_alignment"] + 5} for p, a in good.items()}
    for bad in (duplicate, missing, out_of_range):
        with pytest.raises(UserError):
            app.submit_trial(st, session, shown.trial_id, bad)
    assert app.storage.count_ratings() == 0
    for name in st.raters:
        session = reader.add_rater(app, st, name)[0] if name != "ann" else session
        while (shown := app.next_trial(st, session)) is not None:
            assert app.submit_trial(st, session, shown.trial_id, form_for(st, shown)).status == "stored"
    df = app.storage.ratings_frame(study_key(st))
    assert set(df["question"]) == {"rank_realism", "rank_alignment"}
    ranks = df.groupby(["trial_id", "question"])["value"].apply(lambda v: sorted(v.astype(int)))
    assert all(r == [1, 2] for r in ranks)
    assert "broken" in set(df["catch"])


# --------------------------------------------------------------------- over the browser protocol, then report


@pytest.mark.e2e
@pytest.mark.parametrize("design", ["forced_choice", "ranking"])
def test_design_over_the_browser_protocol_to_export_and_report(design_app, tmp_path, design):
    from browser_client import BrowserSession, study
    from conftest import exported_long, running_server

    from p2p_app.report import build_report

    app = design_app
    st = prepared(app, design_study(tmp_path / "s", design, seeds=[3], raters=["ann", "ben"], catch_rate=0.3,
                                    catch_kinds=["noise", "real", "wrong_anatomy"], rater_groups=None))
    tokens = {name: reader.add_rater(app, st, name)[1] for name in st.raters}
    n = st.items()[0].n_panels
    with running_server(app) as url:
        for name, token in tokens.items():
            page = BrowserSession(url, query=f"token={token}")
            # the page script ("js") is the same code on every screen, whatever it shows; the rest is checked
            config = str({k: v for k, v in page.config.items() if k != "js"})
            for word in ("catch", "broken", "flipped", "anatomy", "colon-msdm", "chosen_real"):
                assert word not in config  # blinding: nothing in the page says which panel is what
            ids = study(0)  # the app's only study
            submit = page.by_id(ids.submit)
            start = page.by_id(ids.signin)
            page.trigger(start)
            before = app.storage.count_ratings()
            if design == "forced_choice":
                pick = page.by_id(ids.pick)
                scales = page.answers(ids, "realism")[:n] + page.answers(ids, "alignment")[:n]
                page.set(pick, None)
                for c in scales:
                    page.set(c, 3)
                out = page.trigger(submit)  # no pick: refused, nothing stored
                assert any("Pick the one image" in str(v) for v in out.values())
                assert app.storage.count_ratings() == before
            else:
                ranks = [page.answers(ids, key)[:n] for key in ("rank_realism", "rank_alignment")]
                for c in ranks[0] + ranks[1]:
                    page.set(c, 1)
                out = page.trigger(submit)  # a rank given twice: refused, nothing stored
                assert any("must be used once" in str(v) for v in out.values())
                assert app.storage.count_ratings() == before
            total = len(assignment.rater_sequence(st, st.raters.index(name)))
            for step in range(total + 1):
                if any("All items are done" in str(v) for v in page.values.values()):
                    break
                if design == "forced_choice":
                    page.set(pick, f"Image {'ABC'[step % n]}")
                    for c in scales:
                        page.set(c, 1 + step % 5)
                else:
                    for column in ranks:
                        for p, c in enumerate(column):
                            page.set(c, 1 + (p + step) % n)
                page.trigger(submit)
            assert any("All items are done" in str(v) for v in page.values.values())
            page.close()
    df = exported_long(st.id, tmp_path / "data", tmp_path / "ratings.csv")
    assert "" in set(df["catch"]) and set(df["catch"]) - {""} and set(df["catch"]) <= {"", "real", "broken"}
    question = "chosen_real" if design == "forced_choice" else "rank_realism"
    assert question in set(df["question"])
    page_html = build_report(app.storage.ratings_frame(study_key(st)), st.title, n_boot=20)
    heading = "Which one is real? (forced choice)" if design == "forced_choice" else "Rankings"
    assert heading in page_html and "Catch trials" in page_html


@pytest.mark.parametrize("name", ["colonoscopy_forced_choice", "colonoscopy_ranking"])
def test_shipped_design_examples_load_with_the_demo_models(app, name):
    st = load_study(ROOT / "studies" / name, known_models=[m.name for m in app.config.models])
    assert st.design == name.split("_", 1)[1] and st.catch_items() and st.rater_groups
    assert any(a.is_catch for s in range(st.n_raters) for a in assignment.rater_sequence(st, s))


def test_reused_cached_images_export_this_studys_prompt_id(design_app, tmp_path):
    """Study B has a prompt with the same text as study A's: its images come from A's generation cache, yet B's
    export must name B's prompt id, not A's."""
    app = design_app
    prepared(app, design_study(tmp_path / "a", "ranking", catch_rate=0.0, catch_kinds=None, rater_groups=None))
    path = design_study(tmp_path / "b", "ranking", id="other", catch_rate=0.0, catch_kinds=None, rater_groups=None)
    csv = path.parent / "prompts.csv"
    csv.write_text(csv.read_text().replace("p1,", "b_first,").replace("p2,", "b_second,"))
    st = load(path, app)
    app.studies = {study_key(st): st}
    report = reader.prepare_study(app, st)
    assert report.frozen and report.made == 0 and report.reused > 0  # every image reused from study A
    session = reader.add_rater(app, st, "ann")[0]
    shown = app.next_trial(st, session)
    assert app.submit_trial(st, session, shown.trial_id, form_for(st, shown)).status == "stored"
    df = app.storage.ratings_frame(study_key(st))
    assert set(df["prompt_id"]) <= {"b_first", "b_second"} and len(df) > 0


def test_ranking_a_cant_judge_image_needs_no_rank(design_app, tmp_path):
    """Ranking offers "can't judge": that image needs no rank, the others are ranked 1..m among themselves."""
    app = design_app
    st = prepared(app, design_study(tmp_path / "s", "ranking", catch_rate=0.0, catch_kinds=None))
    session = reader.add_rater(app, st, "ann")[0]
    shown = app.next_trial(st, session)
    assert len(shown.panels) == 2
    cant = {"cant_judge": True, "rank_realism": None, "rank_alignment": None}
    with pytest.raises(UserError, match="from 1 to 1"):  # the one judged image is ranked among itself
        app.submit_trial(st, session, shown.trial_id, {1: {"rank_realism": 2, "rank_alignment": 1}, 2: cant})
    assert app.storage.count_ratings() == 0
    form = {1: {"rank_realism": 1, "rank_alignment": 1}, 2: {**cant, "rank_realism": 2}}  # a left-over rank: ignored
    assert app.submit_trial(st, session, shown.trial_id, form).status == "stored"
    df = app.storage.ratings_frame(study_key(st)).set_index(["position", "question"])
    assert df.loc[(1, "rank_realism"), "value"] == 1 and not df.loc[(1, "rank_realism"), "cant_judge"]
    assert df.loc[(2, "rank_realism"), "cant_judge"] and df.loc[(2, "rank_alignment"), "cant_judge"]
    assert df.loc[(2, "rank_realism"), "value"] != df.loc[(2, "rank_realism"), "value"]  # NaN: no rank


def test_forced_choice_pick_sits_above_the_ratings(design_app, tmp_path):
    """The instructions say to pick the real image first: the pick comes before every image's ratings on the page."""
    from p2p_app.ui import build_rater_app

    app = design_app
    st = prepared(app, design_study(tmp_path / "s", "forced_choice"))
    from p2p_app.ui.page import study

    ids = study(0)  # the app's only study
    config = build_rater_app(app).get_config_file()
    elem_ids = {c["id"]: (c.get("props") or {}).get("elem_id") for c in config["components"]}

    def walk(node):
        yield node["id"]
        for child in node.get("children", []):
            yield from walk(child)

    def find(node, elem_id):
        if elem_ids.get(node["id"]) == elem_id:
            return node
        return next((n for c in node.get("children", []) if (n := find(c, elem_id)) is not None), None)

    order = [elem_ids.get(i) for i in walk(find(config["layout"], ids.tab))]  # the study's tab only
    pick = order.index(ids.pick)
    answers = {ids.panel(p).answer(q.key) for p in range(st.items()[0].n_panels) for q in st.questions}
    first_rating = min(i for i, elem_id in enumerate(order) if elem_id in answers)
    assert pick < first_rating
