"""The page's declared parts (p2p_app/ui/page.py): every declared id is in the rendered page config exactly once,
the builders use the declared classes, the page gets the table as data, and nothing in it names a model, an image
or a trial."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from conftest import invited_study_app

from p2p_app.ui import build_admin_app, build_rater_app, create_server
from p2p_app.ui.page import ADMIN, ARENA, LANDING, Css, Field, page_data, page_head, study


def elem_ids(blocks) -> Counter:
    config = blocks.get_config_file()
    return Counter(c["props"]["elem_id"] for c in config["components"] if c.get("props", {}).get("elem_id"))


def classes_in(blocks) -> set[str]:
    return {cls for c in blocks.get_config_file()["components"] for cls in (c.get("props", {}).get("elem_classes") or [])}


def panel_ids(panels: list[dict]) -> list[str]:
    out = []
    for p in panels:
        out += [p["column"], p["image"], p["cant_judge"], p["comment"], *p["answers"].values()]
    return out


def declared_rater_ids(data: dict) -> list[str]:
    ids = data["ids"]
    out = [v for k, v in ids["landing"].items()]
    arena = ids["arena"]
    out += [v for k, v in arena.items() if k not in ("panels", "guesses")] + arena.get("guesses", [])
    for panels in arena["panels"].values():
        out += panel_ids(panels)
    for st in ids["studies"]:
        out += [v for k, v in st.items() if k not in ("panels", "guesses")]
        out += panel_ids(st["panels"]) + st.get("guesses", [])
    return out


def optional(app) -> set[str]:
    """Ids the page has only in some configurations."""
    out = set()
    if not app.config.demo_models:
        out.add(LANDING.demo_banner)
    if len(app.config.arena_judgements) < 2:
        out.add(ARENA.judgement)
    if not app.config.arena_blinding_index:
        out |= {ARENA.guess_box, ARENA.guess_submit}
    if not app.studies:
        out |= {LANDING.tabs, LANDING.arena_tab, LANDING.studies_tab, LANDING.study_tabs}
    for i, st in enumerate(app.studies.values()):
        if st.design != "forced_choice":
            out.add(study(i).pick)
        if not st.mark_artifacts:
            out.add(study(i).marks)
        if st.design != "naive_disclosed":
            out |= {study(i).call, study(i).interlude, study(i).interlude_ok}
        if not st.blinding_index:
            out |= {study(i).guess_box, study(i).guess_submit}
    return out


def check_rater_page(app) -> None:
    data = page_data(app)
    declared = declared_rater_ids(data)
    assert len(declared) == len(set(declared)), "two declared parts share an id"
    found = elem_ids(build_rater_app(app))
    duplicates = {k: n for k, n in found.items() if n > 1}
    assert not duplicates, f"ids on more than one component: {duplicates}"
    missing = [i for i in declared if i not in found and i not in optional(app)]
    assert not missing, f"declared but not in the page: {missing}"
    undeclared = set(found) - set(declared)
    assert not undeclared, f"ids in the page that the table does not declare: {undeclared}"


def test_every_declared_id_is_in_the_page_once(app):
    """The default page (the arena, and the bundled studies in their tabs), then the arena alone."""
    assert app.studies
    check_rater_page(app)
    app.studies = {}
    check_rater_page(app)


def test_every_declared_id_is_in_the_study_page_once(tmp_path, demo_registry):
    app, st, _ = invited_study_app(tmp_path, demo_registry)
    try:
        check_rater_page(app)
        data = page_data(app)
        assert [s["submit"] for s in data["ids"]["studies"]] == [study(0).submit]
        # the study's panels: as many as its items show, each with every question's input
        panels = data["ids"]["studies"][0]["panels"]
        assert len(panels) == max(item.n_panels for item in st.items())
        assert set(panels[0]["answers"]) == {q.key for q in st.questions if q.kind in ("scale", "multi")}
    finally:
        app.storage.close()


def test_every_declared_admin_id_is_in_the_admin_page_once(app):
    found = elem_ids(build_admin_app(app))
    declared = [*ADMIN.as_dict().values(), *(ADMIN.plot(i) for i in range(len(app_plots(found))))]
    assert all(n == 1 for n in found.values()), found
    assert not [i for i in ADMIN.as_dict().values() if i not in found]
    assert set(found) == set(declared)


def app_plots(found: Counter) -> list[str]:
    return [i for i in found if i.startswith(f"{ADMIN.prefix}-plot-")]


def test_builders_use_the_declared_classes(app):
    used = classes_in(build_rater_app(app))
    declared = set(vars(Css).values()) | set(vars(Field).values())
    p2p = {c for c in used if c.startswith("p2p-")}
    assert p2p <= declared, p2p - declared
    for needed in (Css.SCREEN, Css.MESSAGE, Css.NEXT_ITEM, Css.SUBMIT, Css.PANEL, Css.VIEWER, Css.TRIAL_TOP, Field.SHOWN,
                   Field.ACTIVE):
        assert needed in used


def test_the_page_gets_the_table_as_data(app):
    """window.p2pPage: set in the page's head and, failing that, first thing in the page's script."""
    from p2p_app.ui.common import page_js

    head = page_head(app)
    assert head.startswith("<script>window.p2pPage = ") and head.endswith(";</script>")
    data = json.loads(head[len("<script>window.p2pPage = "):-len(";</script>")])
    assert data == json.loads(json.dumps(page_data(app)))
    assert data["ids"]["arena"]["submit"] == ARENA.submit
    assert data["classes"]["next_item"] == Css.NEXT_ITEM and data["fields"]["shown"] == Field.SHOWN
    assert "window.p2pPage = window.p2pPage || {" in page_js(app)
    server = create_server(app)
    mounted = [r for r in server.routes if getattr(r, "path", None) == ""]
    blocks = getattr(mounted[0].app, "blocks", None) if mounted else None
    if blocks is not None:  # Gradio keeps the head on the mounted Blocks
        assert "window.p2pPage" in (blocks.head or "")


def test_the_table_names_no_model_image_or_trial(tmp_path, demo_registry):
    """Blinding: no model's name and no item's id is in the table (it is built from the configuration alone)."""
    app, st, _ = invited_study_app(tmp_path, demo_registry)
    try:
        before = json.dumps(page_data(app), sort_keys=True)
        text = before.lower()
        for model in app.config.models:
            assert model.name.lower() not in text
        for item in st.items():
            assert f"\"{item.key.lower()}\"" not in text and all(f"\"{s.key.lower()}\"" not in text for s in item.slots)
    finally:
        app.storage.close()


@pytest.mark.parametrize("screen", [ARENA, ADMIN, LANDING, study(0), study(3)])
def test_ids_are_per_role(screen):
    for role, elem_id in screen.as_dict().items():
        assert elem_id == f"{screen.prefix}-{role.replace('_', '-')}"
    panel = screen.panel(1, "scores") if screen is ARENA else screen.panel(1)
    assert panel.image.startswith(f"{screen.prefix}-panel-") and panel.image.endswith("1-image")
