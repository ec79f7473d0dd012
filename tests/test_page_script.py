"""The page's scripts in a real browser (Playwright + Debian's Chromium): one page-wide watcher
(assets/00-core.js) that every behaviour registers with, and digit keys on a ranking screen's rank dropdowns
(assets/keyboard.js). Skipped like tests/test_browser.py when Playwright or Chromium is missing."""

from __future__ import annotations

import pytest
from conftest import make_app, running_server
from browser_client import any_study
from test_browser import browser  # noqa: F401 - the module-scoped Chromium fixture
from test_design_screens import design_study

pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_registry):
    """(app, ranking study, base URL): a ranking study of 2 panels a screen, no catch trials."""
    from p2p_app import reader
    from p2p_app.study import load_study, study_key

    root = tmp_path_factory.mktemp("pagescript")
    app = make_app(root / "data", demo_registry)
    known = [m.name for m in app.config.models]
    st = load_study(design_study(root / "rk", "ranking", catch_rate=0.0, catch_kinds=None, rater_groups=None,
                                 raters=None, open=True, n_raters=3), known)
    app.studies = {study_key(st): st}
    assert reader.prepare_study(app, st, release_models=False).frozen
    with running_server(app) as url:
        yield app, st, url
    app.storage.close()


CANT_JUDGE = "Can't judge / image failed to load"
# Before the page's own code: every MutationObserver made and every node each one observes, counted.
COUNT_OBSERVERS = """(() => {
  const Native = window.MutationObserver;
  window.__observed = [];
  window.MutationObserver = class extends Native {
    observe(target, options) {
      window.__observed.push({body: target === document.body, subtree: !!(options && options.subtree),
                              stack: new Error().stack || ''});
      return super.observe(target, options);
    }
  };
})();"""


@pytest.fixture()
def open_page(server, browser):  # noqa: F811 - the fixture imported above
    """open_page(name) -> a page signed in as a new rater of the ranking study, its first item loaded."""
    from p2p_app import reader

    app, st, url = server
    contexts = []

    def _open(name: str):
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        context.add_init_script(COUNT_OBSERVERS)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.p2p_errors = []  # what a behaviour threw (00-core.js logs it as "p2p <name>: ...")
        page.on("console", lambda msg: msg.type == "error" and msg.text.startswith("p2p ") and
                page.p2p_errors.append(msg.text))
        _, token = reader.add_rater(app, st, name)
        page.goto(f"{url}/?token={token}")
        page.get_by_text("Signed in as").wait_for()
        page.locator(".p2p-panel:visible img").first.wait_for()
        return page

    yield _open
    for context in contexts:
        context.close()


def stored(app, name) -> dict[tuple[int, str], tuple[float | None, bool]]:
    """(position, question) -> (value or None, can't judge) of every rating of the rater called ``name``."""
    df = app.storage.ratings_frame()
    df = df[df["rater_name"] == name]
    return {(int(r.position), str(r.question)): (None if r.value != r.value else float(r.value), bool(r.cant_judge))
            for r in df.itertuples()}


def rank_boxes(page):
    return page.locator(".p2p-panel:visible").get_by_role("combobox")


def test_digits_pick_ranks_on_a_ranking_screen(server, open_page):
    """Tab to a rank dropdown, press a digit: that rank is chosen and the focus moves to the next rank dropdown;
    Ctrl+Enter submits, and the ranks stored are the digits pressed."""
    app, st, _ = server
    page = open_page("Dr Digits")
    boxes = rank_boxes(page)
    assert boxes.count() == 4  # 2 panels x (realism, alignment)
    boxes.nth(0).focus()
    digits = ["2", "1", "1", "2"]  # panel A: realism 2, alignment 1; panel B: realism 1, alignment 2
    for i, d in enumerate(digits):
        page.wait_for_function("(i) => document.activeElement === "
                               "[...document.querySelectorAll('.p2p-panel input[role=combobox]')]"
                               ".filter((b) => b.getClientRects().length)[i]", arg=i)
        page.keyboard.press(d)
        page.wait_for_function("([i, d]) => [...document.querySelectorAll('.p2p-panel input[role=combobox]')]"
                               ".filter((b) => b.getClientRects().length)[i].value === d", arg=[i, d])
    page.keyboard.press("9")  # no rank 9 of 2: nothing typed, nothing picked
    assert [boxes.nth(i).input_value() for i in range(4)] == digits
    page.keyboard.press("Control+Enter")
    deadline = 100
    while not stored(app, "Dr Digits") and deadline:
        page.wait_for_timeout(100)
        deadline -= 1
    got = stored(app, "Dr Digits")
    questions = sorted({q for _, q in got})
    realism = [q for q in questions if "realism" in q][0]
    alignment = [q for q in questions if "alignment" in q][0]
    assert got[(1, realism)] == (2.0, False) and got[(1, alignment)] == (1.0, False)
    assert got[(2, realism)] == (1.0, False) and got[(2, alignment)] == (2.0, False)
    assert page.p2p_errors == []


def test_cant_judge_panel_needs_no_rank(server, open_page):
    """README: a panel marked "can't judge" needs no rank; the others are ranked 1..m among themselves."""
    app, st, _ = server
    page = open_page("Dr Cant")
    page.locator(".p2p-panel:visible").nth(1).get_by_label(CANT_JUDGE).check()
    boxes = rank_boxes(page)
    boxes.nth(0).focus()
    page.keyboard.press("1")
    page.wait_for_function("() => document.activeElement === "
                           "[...document.querySelectorAll('.p2p-panel input[role=combobox]')]"
                           ".filter((b) => b.getClientRects().length)[1]")
    page.keyboard.press("1")
    page.wait_for_timeout(200)
    assert [boxes.nth(0).input_value(), boxes.nth(1).input_value()] == ["1", "1"]
    page.locator(f"{any_study('submit')}:visible").click()
    deadline = 100
    while not stored(app, "Dr Cant") and deadline:
        page.wait_for_timeout(100)
        deadline -= 1
    got = stored(app, "Dr Cant")
    assert got, page.locator("body").inner_text()[:2000]
    assert {v for (p, _), v in got.items() if p == 1} == {(1.0, False)}
    assert {v for (p, _), v in got.items() if p == 2} == {(None, True)}


def test_one_page_wide_watcher(open_page):
    """The page scripts watch the page with one MutationObserver on document.body (assets/00-core.js); every
    behaviour registers with it."""
    page = open_page("Dr Watch")
    observed = page.evaluate("() => window.__observed")
    on_body = [o for o in observed if o["body"]]  # Gradio's own code observes no whole page
    assert len(on_body) == 1 and on_body[0]["subtree"], [o["stack"][:300] for o in on_body]
    assert page.evaluate("() => window.p2p.registered()") == [
        "activity", "keyboard", "marks", "notices", "prompt", "reading", "zoom"]
    assert page.p2p_errors == []
