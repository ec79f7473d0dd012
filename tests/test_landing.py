"""In a real browser (Playwright + Debian's Chromium), at 1,400×900 and 390×844: the prompt box's live token counter
and refusal, the landing tab and what a visitor without an invite is told, instructions open on a rater's first
visit, stale warnings cleared by a success, the reveal in view after Submit, and two tabs of one rater.

One server per module (the tests use separate raters); skipped, saying why, without Playwright or Chromium."""

from __future__ import annotations

import re

import pytest
from browser_client import ARENA, LANDING, Css, input_of, sel, tab_button
from browser_client import study as study_ids
from conftest import make_app, running_server
from test_browser import browser  # noqa: F401 - the shared Chromium fixture
from test_prompt_budget import RADIOLOGY_39
from test_reader_study import small_study

from p2p_app import reader
from p2p_app.service import ALREADY_ANSWERED, INVITE_ONLY
from p2p_app.study import load_study, study_key
from p2p_app.ui.page import ScriptCss

pytestmark = pytest.mark.e2e

VIEWPORTS = {"desktop": {"width": 1400, "height": 900}, "phone": {"width": 390, "height": 844}}
SHORT = "colonoscopy image with a single sessile polyp"
RATERS = ["ann", "ben", "cat", "dan", "eve", "fay"]


@pytest.fixture(scope="module")
def arena(tmp_path_factory, demo_registry):
    """The demo app (its studies and the live arena) served once for the module: (app, url)."""
    app = make_app(tmp_path_factory.mktemp("landing-arena") / "data", demo_registry)
    with running_server(app) as url:
        yield app, url
    app.storage.close()


@pytest.fixture(scope="module")
def study(tmp_path_factory, demo_registry):
    """An app whose only study is the small invite-only test study, prepared: (app, study, url)."""
    folder = tmp_path_factory.mktemp("landing-study")
    app = make_app(folder / "data", demo_registry)
    st = load_study(small_study(folder / "mini", raters=RATERS), known_models=[m.name for m in app.config.models])
    app.studies = {study_key(st): st}
    reader.prepare_study(app, st)
    with running_server(app) as url:
        yield app, st, url
    app.storage.close()


@pytest.fixture(params=list(VIEWPORTS))
def new_page(request, browser):  # noqa: F811
    pages = []

    def make(url: str):
        page = browser.new_page(viewport=VIEWPORTS[request.param])
        page.set_default_timeout(30_000)
        pages.append(page)
        page.goto(url)
        return page

    make.viewport = VIEWPORTS[request.param]
    make.name = request.param
    yield make
    for page in pages:
        page.close()


def selected(page, tab_id: str) -> bool:
    return page.locator(f"{tab_button(tab_id)}[aria-selected=true]").count() == 1


def first_tab(page, tab_id: str) -> None:
    """Wait until the page's outer selected tab is ``tab_id`` (the landing choice runs on page load)."""
    page.locator(f"{tab_button(tab_id)}[aria-selected=true]").wait_for()
    other = LANDING.studies_tab if tab_id == LANDING.arena_tab else LANDING.arena_tab
    assert not selected(page, other)


def sign_in_arena(page, name: str) -> None:
    page.locator(input_of(ARENA.name)).fill(name)
    page.locator(sel(ARENA.signin)).click()
    page.locator(sel(ARENA.who)).get_by_text("Signed in as").wait_for()


def counter(page):
    return page.locator(sel(ARENA.budget))


def in_viewport(page, locator) -> tuple[float, float, int]:
    """(top, bottom) of ``locator`` relative to the viewport, and the viewport's height."""
    box = locator.bounding_box()
    return box["y"], box["y"] + box["height"], page.viewport_size["height"]


# ------------------------------------------------------------------------------------------ the prompt box


def test_token_counter_while_typing_and_generate_refused_over_the_limit(arena, new_page):
    app, url = arena
    page = new_page(url)
    page.locator(sel(ARENA.signin)).wait_for()
    first_tab(page, LANDING.arena_tab)  # the landing tab is the one anyone can use
    sign_in_arena(page, f"Dr Counter {new_page.name}")
    page.locator(sel(ARENA.modality)).get_by_label("Radiology").check()
    box = page.locator(input_of(ARENA.prompt))
    box.press_sequentially(SHORT, delay=5)  # typed key by key, as a person does
    budget = app.prompt_budget("radiology", SHORT)
    expected = f"{budget.used} / {budget.limit} tokens — {budget.encoder} ({budget.limit - budget.used} left)"
    page.wait_for_function(f"t => document.getElementById('{ARENA.budget}').innerText.trim() === t", arg=expected)
    assert re.fullmatch(r"\d+ / 75 tokens — (CLIP|BERT|T5) text encoder \(\d+ left\)", expected)

    box.fill(RADIOLOGY_39)  # 39 words: over the limit, flagged while typing, before any Generate
    over = app.prompt_budget("radiology", RADIOLOGY_39)
    counter(page).get_by_text(f"The prompt is too long for the {over.encoder}: {over.used} tokens").wait_for()
    assert f"Cut about {over.used - over.limit} tokens" in counter(page).inner_text()
    page.locator(f"{sel(ARENA.prompt)}.{ScriptCss.OVER}").wait_for()  # the box itself is marked (prompt.js)
    top, bottom, height = in_viewport(page, counter(page))
    assert bottom > 0 and top < height, "the counter's warning is off screen"

    images_before = app.storage.count_images()
    page.locator(sel(ARENA.generate)).click()
    message = page.locator(sel(ARENA.message))
    message.get_by_text("Cut about").wait_for()
    assert page.locator(f".{Css.PANEL}:visible").count() == 0
    assert app.storage.count_images() == images_before  # nothing was generated

    box.fill(SHORT)  # cut back: the warning goes
    page.wait_for_function(f"t => document.getElementById('{ARENA.budget}').innerText.trim() === t", arg=expected)
    page.wait_for_function(f"() => !document.querySelector('{sel(ARENA.prompt)}.{ScriptCss.OVER}')")


def test_stale_warning_closed_on_success_and_reveal_in_view(arena, new_page):
    app, url = arena
    page = new_page(url)
    sign_in_arena(page, f"Dr Notice {new_page.name}")
    page.locator(input_of(ARENA.prompt)).fill(SHORT)
    page.locator(sel(ARENA.generate)).click()
    panels = page.locator(f".{Css.PANEL}:visible")
    panels.nth(2).locator("img").wait_for(state="attached")  # lazy: below the fold on a phone
    submit = page.locator(sel(ARENA.submit))
    submit.click()
    toast = page.locator(".toast-body")
    toast.get_by_text("not rated yet").first.wait_for()  # the warning, as a pop-up
    page.locator(sel(ARENA.message)).get_by_text("not rated yet").wait_for()  # and in the message box

    for i in range(3):
        panel = ARENA.panel(i, "scores")
        page.locator(sel(panel.answer("realism"))).get_by_role("radio").nth(3).check()  # realism 4
        page.locator(sel(panel.answer("alignment"))).get_by_role("radio").nth(2).check()  # alignment 3
    submit.scroll_into_view_if_needed()
    submit.click()
    reveal = page.locator(sel(ARENA.reveal))
    reveal.get_by_text("Ratings saved").wait_for()
    # within 2 s (Gradio's own pop-up timeout is 10 s): the stale "not rated yet" is gone with the message box
    page.wait_for_function("() => document.querySelectorAll('.toast-body').length === 0", timeout=2_000)
    assert not page.locator(sel(ARENA.message)).is_visible()
    page.wait_for_timeout(300)  # let the scroll settle
    top, bottom, height = in_viewport(page, reveal)
    assert 0 <= top and bottom <= height + 1, f"reveal at {top:.0f}–{bottom:.0f} px, viewport {height} px"
    assert "was made by" in reveal.inner_text()


# ------------------------------------------------------------------------------------------ landing


def test_landing_tab_follows_the_link_and_a_visitor_is_told_what_to_do(study, new_page):
    app, st, url = study
    page = new_page(url)
    page.locator(sel(ARENA.signin)).wait_for()
    first_tab(page, LANDING.arena_tab)

    page = new_page(f"{url}/?study={st.id}")  # a study link: its tab, with what to do without an invite
    page.get_by_text(INVITE_ONLY).wait_for()
    first_tab(page, LANDING.studies_tab)
    assert selected(page, study_ids(0).tab)
    assert not any(page.locator(sel(ids.name)).is_visible() for ids in (ARENA, study_ids(0)))  # none that could only refuse
    top, _, height = in_viewport(page, page.get_by_text(INVITE_ONLY))
    assert top < height

    page = new_page(f"{url}/?token=half-a-link")  # a broken invite: the arena, as for anyone
    page.locator(sel(ARENA.signin)).wait_for()
    first_tab(page, LANDING.arena_tab)


def test_instructions_open_on_the_first_visit_then_closed(study, new_page):
    app, st, url = study
    _, token = reader.add_rater(app, st, "ben" if new_page.name == "desktop" else "cat")
    page = new_page(f"{url}/?token={token}")  # the invite link: the study's tab, signed in
    page.get_by_text("Signed in as").wait_for()
    first_tab(page, LANDING.studies_tab)
    instructions = page.get_by_text(st.instructions)
    instructions.wait_for()  # open: nothing answered yet
    assert instructions.is_visible()

    page.locator(f"{sel(study_ids(0).panel(0).cant_judge)} input").check()
    page.locator(sel(study_ids(0).submit)).click()
    page.get_by_text(re.compile(r"^1 of \d+ items done")).wait_for()
    page.reload()  # the next visit: collapsed
    page.get_by_text(re.compile(r"^1 of \d+ items done")).wait_for()
    assert not page.get_by_text(st.instructions).is_visible()


def test_two_tabs_of_one_rater_later_submit_told_and_shown_the_current_item(study, new_page):
    app, st, url = study
    rater, token = reader.add_rater(app, st, "dan" if new_page.name == "desktop" else "eve")
    first = new_page(f"{url}/?token={token}")
    second = new_page(f"{url}/?token={token}")
    for page in (first, second):
        page.get_by_text("Signed in as").wait_for()
        page.get_by_text(re.compile(r"^0 of \d+ items done")).wait_for()

    def answer(page, level: int) -> None:
        for p in range(page.locator(f".{Css.PANEL}:visible").count()):
            panel = study_ids(0).panel(p)
            page.locator(sel(panel.answer("realism"))).get_by_role("radio").nth(level - 1).check()
            page.locator(sel(panel.answer("alignment"))).get_by_role("radio").nth(level - 1).check()
        page.locator(sel(study_ids(0).submit)).click()

    answer(first, 4)
    first.get_by_text(re.compile(r"^1 of \d+ items done")).wait_for()
    current = app.next_trial(st, rater)
    answer(second, 2)  # the same item, already answered in the first tab
    second.locator(sel(study_ids(0).message)).get_by_text(ALREADY_ANSWERED).wait_for()
    second.locator(".toast-body").get_by_text("already answered").wait_for()
    second.get_by_text(re.compile(r"^1 of \d+ items done")).wait_for()  # moved to the current item
    assert current.prompt in second.locator(sel(study_ids(0).prompt)).inner_text()
    # the first tab's answers stand (level 4 on every scale); the second tab's (level 2) were not stored
    df = app.storage.ratings_frame()
    mine = df[df["rater_name"] == rater.name]
    assert mine["trial_id"].nunique() == 1 and set(mine["value"].dropna().astype(int)) == {4}
