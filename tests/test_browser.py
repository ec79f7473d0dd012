"""In a real browser (Playwright driving Debian's Chromium): what a rater sees and does in the live arena.

The HTTP-level tests (test_e2e.py) speak Gradio's protocol directly; this one runs the page's own JavaScript, so
it catches what only a browser shows: updates the front end rejects, panels that never appear, model names in
the rendered DOM, and the keyboard flow (digits answer a focused scale, Ctrl+Enter submits).

Skipped, saying why, when Playwright or a Chromium binary is missing (set ``P2P_CHROMIUM`` to use another path).
``.ci/run`` installs Debian's ``chromium`` so CI runs it.
"""

from __future__ import annotations

import os
import shutil

import pytest
from browser_client import ADMIN, ARENA, LANDING, Css, input_of, sel, study, tab_button
from conftest import invited_study_app, make_app, running_server

pytestmark = pytest.mark.e2e

PROMPT = "colonoscopy image with a single sessile polyp of 5-10 mm, no instruments"
# Chromium's own background traffic is refused on this closed network; these flags keep it quiet.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    return os.environ.get("P2P_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium binary (install Debian's 'chromium' or set P2P_CHROMIUM)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture()
def arena_page(tmp_path, demo_registry, browser):
    app = make_app(tmp_path / "data", demo_registry)
    with running_server(app) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        page.goto(url)
        page.locator(tab_button(LANDING.arena_tab)).click()
        yield app, page
        page.close()
    app.storage.close()


def model_names(app) -> list[str]:
    names = {m.name for m in app.config.models}
    return sorted(names | {m.family for m in app.config.models})


def visible_panels(page):
    return page.locator(f".{Css.PANEL}:visible")


def test_rater_answers_a_trial_from_the_keyboard(arena_page):
    app, page = arena_page
    page.locator(input_of(ARENA.name)).fill("Dr Browser")
    page.locator(sel(ARENA.signin)).click()
    page.locator(sel(ARENA.who)).get_by_text("Signed in as").wait_for()

    page.locator(input_of(ARENA.prompt)).fill(PROMPT)
    page.locator(sel(ARENA.generate)).click()
    panels = visible_panels(page)
    panels.nth(2).locator("img").wait_for()
    assert panels.count() == 3
    # the page's declared parts reached the page as data (p2p_app/ui/page.py: window.p2pPage)
    assert page.evaluate("() => window.p2pPage.ids.arena.submit") == ARENA.submit
    assert page.evaluate("() => window.p2pPage.classes.panel") == Css.PANEL

    # Blinding in the rendered page: no model or family name anywhere, images served under opaque names,
    # all shown at one size.
    text, markup = page.locator("body").inner_text().lower(), page.content().lower()
    for name in model_names(app):
        assert name.lower() not in text, f"{name!r} is visible before rating"
        assert name.lower() not in markup, f"{name!r} is in the page's HTML before rating"
    sources = [panels.nth(i).locator("img").get_attribute("src") for i in range(3)]
    for src in sources:
        assert not any(n.lower() in src.lower() for n in model_names(app)), src
    sizes = {tuple(panels.nth(i).locator("img").evaluate("img => [img.naturalWidth, img.naturalHeight]")) for i in range(3)}
    assert len(sizes) == 1 and sizes != {(0, 0)}, sizes

    # Submitting with nothing rated is refused with a message; nothing is stored.
    page.keyboard.press("Control+Enter")
    # said twice: in the page's message box and in a pop-up that shows wherever the rater has scrolled to
    page.locator(".toast-body").get_by_text("Rate every image before submitting").wait_for()
    page.get_by_text("Rate every image before submitting").first.wait_for()
    assert ratings(app) == []

    # Keyboard: focus the first scale, then one digit per scale; each digit moves on to the next scale.
    digits = ["4", "2", "5", "1", "3", "3"]
    panels.nth(0).get_by_role("radio").first.focus()
    for d in digits:
        page.keyboard.press(d)
    page.keyboard.press("Control+Enter")
    page.get_by_text("was made by").first.wait_for()

    stored = ratings(app)
    by_position = sorted(stored)
    expected = []
    for pos in range(3):
        expected += [(pos + 1, "alignment", int(digits[2 * pos + 1])), (pos + 1, "realism", int(digits[2 * pos]))]
    assert by_position == sorted(expected)
    # After the reveal, the page names the models.
    text = page.locator("body").inner_text()
    assert sum(name in text for name in (m.name for m in app.config.models_for("colonoscopy"))) == 3


def ratings(app) -> list[tuple[int, str, int]]:
    """(position shown, question, value) of every stored rating."""
    df = app.storage.ratings_frame()
    return [(int(r.position), str(r.question), int(r.value)) for r in df.itertuples()]


def test_invited_rater_resumes_a_study_after_a_page_refresh(tmp_path, demo_registry, browser):
    from p2p_app import reader

    app, st, token = invited_study_app(tmp_path, demo_registry)
    with running_server(app) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        page.goto(f"{url}/?token={token}")  # the invite link signs the rater in on load
        page.get_by_text("Signed in as ann").wait_for()
        total = reader.progress_frame(app, st)["total"].iloc[0]
        page.get_by_text(f"0 of {total} items done").wait_for()

        # Item 1 from the keyboard: realism 4, alignment 2, Ctrl+Enter.
        visible_panels(page).first.get_by_role("radio").first.focus()
        page.keyboard.press("4")
        page.keyboard.press("2")
        page.keyboard.press("Control+Enter")
        page.get_by_text(f"1 of {total} items done").wait_for()

        # Item 2: "can't judge" alone is a complete answer, stored as such and never as a score.
        page.locator(f"{sel(study(0).panel(0).cant_judge)} input").check()
        page.locator(sel(study(0).submit)).click()
        page.get_by_text(f"2 of {total} items done").wait_for()

        # A refresh loses nothing: the token link brings the rater back to the first unanswered item.
        page.reload()
        page.get_by_text("Signed in as ann").wait_for()
        page.get_by_text(f"2 of {total} items done").wait_for()
        page.close()

    df = app.storage.ratings_frame()
    first, second = (df[df["trial_id"] == t] for t in sorted(df["trial_id"].unique()))
    assert sorted(zip(first["question"], first["value"].astype(int))) == [("alignment", 2), ("realism", 4)]
    assert second["cant_judge"].all() and second["value"].isna().all()
    app.storage.close()


def test_admin_dashboard_shows_a_study(tmp_path, demo_registry, browser):
    from dataclasses import replace

    from test_reader_study import answer_all

    from p2p_app import reader
    from p2p_app.analysis import analyze
    from p2p_app.report import figures
    from p2p_app.study import rater_group_map

    app, st, token = invited_study_app(tmp_path, demo_registry)
    app.config = replace(app.config, admin_password="s3cret-admin")
    for t in [token] + [reader.add_rater(app, st, name)[1] for name in ("ben", "cat")]:
        answer_all(app, st, app.study_sign_in(st, token=t))
    errors: list[str] = []
    with running_server(app) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{url}/admin")  # as typed: no trailing slash; Gradio's login form for the admin app
        import re

        page.get_by_label(re.compile("username", re.I)).fill("admin")
        page.get_by_label(re.compile("password", re.I)).fill("s3cret-admin")
        page.get_by_role("button", name=re.compile("log ?in", re.I)).click()
        page.get_by_text("0 answers from 0 raters").wait_for()  # the chosen view (live arena) loads with the page
        page.locator(f"{sel(ADMIN.study)} input").click()
        page.get_by_role("option", name="Mini study (mini@v1)").click()
        page.get_by_text("answers from 3 raters").wait_for()
        page.locator(tab_button(ADMIN.statistics_tab)).click()
        page.locator(".js-plotly-plot").nth(4).wait_for()  # the report's figures, drawn by plotly
        df = app.storage.ratings_frame("mini@v1", rater_group_map([st]))
        n_figures = len(figures(analyze(df, n_boot=20, seed=0), df, progress=reader.progress_frame(app, st)))
        assert n_figures > 6  # more than the six slots the page had
        page.locator(".js-plotly-plot").nth(n_figures - 1).wait_for()  # every one of them is drawn
        assert page.locator(".js-plotly-plot").count() == n_figures
        page.locator(tab_button(ADMIN.downloads_tab)).click()
        page.locator(sel(ADMIN.long_csv)).click()
        with page.expect_download() as download:
            page.locator("a[download]").first.click()
        assert download.value.suggested_filename.endswith(".csv")
        lines = open(download.value.path(), encoding="utf-8").read().splitlines()
        assert len(lines) == 1 + len(app.storage.ratings_frame())
        page.close()
    assert errors == []
    app.storage.close()


def test_generate_shows_progress_makes_one_trial_per_press_and_never_swaps_images(arena_page):
    """Three fast presses on Generate while the images are made: Generate is disabled and a visible progress
    block says so, exactly one trial is made, and the images first painted stay on screen (no second trial
    replaces them under the rater's scores)."""
    import time

    app, page = arena_page
    made = app.generate_image

    def slow(*args, **kwargs):  # a slow model: time to see the progress and press again
        time.sleep(0.7)
        return made(*args, **kwargs)

    app.generate_image = slow
    page.locator(input_of(ARENA.name)).fill("Dr Impatient")
    page.locator(sel(ARENA.signin)).click()
    page.locator(sel(ARENA.who)).get_by_text("Signed in as").wait_for()
    page.locator(input_of(ARENA.prompt)).fill(PROMPT)
    button = page.locator(sel(ARENA.generate))
    box = button.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    for _ in range(3):
        page.mouse.click(x, y)
        page.wait_for_timeout(60)
    status = page.locator(sel(ARENA.generating))
    status.get_by_text("Making the images").wait_for()
    assert status.bounding_box()["height"] >= 20  # a block the rater can see, not a zero-height line
    assert page.locator(sel(ARENA.generate)).is_disabled()
    page.mouse.click(x, y)  # a press while disabled does nothing either
    panels = visible_panels(page)
    panels.nth(2).locator("img").wait_for()
    first = [panels.nth(i).locator("img").get_attribute("src") for i in range(3)]
    page.wait_for_timeout(3_500)  # longer than two more trials would take
    assert [panels.nth(i).locator("img").get_attribute("src") for i in range(3)] == first
    (rater,) = app.storage.raters()
    assert len(app.storage.trials_for(rater.pk, None)) == 1  # one trial for all those presses
    assert not page.locator(sel(ARENA.generate)).is_disabled()  # ready for the next prompt


def test_a_study_edited_after_freezing_tells_its_rater_once(tmp_path, demo_registry, browser):
    """An invited rater opens their link to a study whose file was edited after freezing: one clear message, no
    pop-up, no sign-in form and no "open your invite link" text above it."""
    from test_reader_study import small_study

    from p2p_app.service import EDITED_FOR_RATERS
    from p2p_app.study import load_study, study_key

    app, st, token = invited_study_app(tmp_path, demo_registry)
    edited = load_study(small_study(tmp_path / "mini", seeds=[4]), known_models=[m.name for m in app.config.models])
    app.studies = {study_key(edited): edited}
    with running_server(app) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        page.goto(f"{url}/?token={token}")
        page.get_by_text(EDITED_FOR_RATERS).wait_for()
        page.wait_for_timeout(2_000)  # time for any other message to arrive
        text = page.locator("body").inner_text()
        assert text.count("study file was changed") == 1, text
        assert "invite link" not in text and "Signed in as" not in text
        assert page.locator(".toast-body").count() == 0
        assert not page.locator(sel(study(0).signin)).is_visible()
        page.close()
    app.storage.close()
