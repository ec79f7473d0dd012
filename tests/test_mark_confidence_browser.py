"""Mark confidence end to end in a real browser (Playwright + Debian's Chromium), issue 22 item 6: a study file
with ``mark_confidence`` → prepared → a rater marks artifacts and gives each mark its confidence from the keyboard
(digits 1-5) → Submit (a mark without a confidence is refused with a message, nothing stored) → the marks export
holds the confidences → the report has the inferred-ROC section. Skipped like tests/test_browser.py when Playwright
or Chromium is missing."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_app, running_server
from browser_client import Field, Markup, ScriptCss, any_study, sel, tool
from test_browser import browser  # noqa: F401 - the module-scoped Chromium fixture
from test_reading_screen import DESKTOP, wait_for_images

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent


def _study(folder: Path) -> Path:
    """Single images, one model, two prompts each with a real image: a rater reads 2 generated + 2 real images."""
    from p2p_app.study import write_study

    folder.mkdir(parents=True)
    for name in ("real1.png", "real2.png"):
        shutil.copy(ROOT / "studies" / "colonoscopy_pilot" / "real" / "polyp_sessile.png", folder / name)
    settings = {"id": "conf", "version": 1, "title": "Confidence study", "instructions": "Rate and mark.",
                "modality": "colonoscopy", "design": "single", "models": ["colon-msdm-tiny"], "seeds": [5],
                "overlap_k": 2, "repeat_fraction": 0.0, "raters": ["ann", "ben"], "mark_artifacts": True,
                "mark_confidence": True}  # fmt: skip
    prompts = [{"prompt_id": "p1", "prompt": "a sessile polyp", "real_image": "real1.png"},
               {"prompt_id": "p2", "prompt": "active bleeding", "real_image": "real2.png"}]  # fmt: skip
    return write_study(folder, settings, prompts, [])


def _image_box(page) -> dict:
    page.locator(".p2p-panel .image-frame img:visible").first.scroll_into_view_if_needed()
    return page.evaluate("""() => { const i = [...document.querySelectorAll('.p2p-panel .image-frame img')]
        .find((i) => i.getClientRects().length); const r = i.getBoundingClientRect();
        return {x: r.left, y: r.top, w: r.width, h: r.height}; }""")


def _answer(page, scores: int = 3) -> None:
    for fs in page.locator(".p2p-panel:visible fieldset").all():
        fs.locator("input[type=radio]").nth(scores - 1).check()


def test_marks_with_keyboard_confidences_reach_the_export_and_the_report(tmp_path, demo_registry, browser):  # noqa: F811
    from p2p_app import reader
    from p2p_app import export as E
    from p2p_app.report import build_report
    from p2p_app.study import load_study, study_key

    app = make_app(tmp_path / "data", demo_registry)
    st = load_study(_study(tmp_path / "study"), [m.name for m in app.config.models])
    app.studies = {study_key(st): st}
    assert reader.prepare_study(app, st).frozen
    key = study_key(st)
    try:
        with running_server(app) as url:
            context = browser.new_context(**DESKTOP)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.set_default_timeout(30_000)
            _, token = reader.add_rater(app, st, "ann")
            page.goto(f"{url}/?token={token}")
            page.get_by_text("Signed in as").wait_for()
            wait_for_images(page)
            chooser = page.locator(f".{ScriptCss.MARK_CHOOSER}:visible")
            assert chooser.count() == 1 and chooser.locator(f"[{Markup.MARK_CONFIDENCE}]").count() == 5
            page.locator(f"{tool(Markup.MARK, 'toggle')}:visible").click()
            for item in range(4):
                box = _image_box(page)
                page.mouse.click(box["x"] + 0.3 * box["w"], box["y"] + 0.6 * box["h"])
                assert page.locator(f".{ScriptCss.MARK_UNRATED}:visible").count() == 1, (errors, box)
                if item == 0:  # Submit with a mark that has no confidence yet: refused, nothing stored
                    _answer(page)
                    page.locator(f"{any_study('submit')}:visible").click()
                    message = page.locator(f"{any_study('message')}:visible")
                    message.get_by_text("choose a confidence for every mark").wait_for()
                    assert app.storage.count_ratings() == 0 and len(app.storage.marks_frame(key)) == 0
                page.keyboard.press(str(item + 2))  # confidences 2, 3, 4, 5 by keyboard
                assert page.locator(f".{ScriptCss.MARK_UNRATED}:visible").count() == 0
                assert page.locator(f".{ScriptCss.MARK}:visible").inner_text() == str(item + 2)
                field = json.loads(page.locator(f".{Field.MARKS} textarea").input_value())
                assert [p[2] for p in field["1"]] == [item + 2]
                if item == 1:  # a second mark, its confidence changed by keyboard twice: the last one holds
                    page.mouse.click(box["x"] + 0.7 * box["w"], box["y"] + 0.2 * box["h"])
                    page.keyboard.press("1")
                    page.keyboard.press("2")
                _answer(page)
                before = {i.get_attribute("src") for i in page.locator(".p2p-panel .image-frame img:visible").all()}
                page.locator(f"{any_study('submit')}:visible").click()
                if item < 3:
                    wait_for_images(page, before)
                else:
                    page.get_by_text("All items are done").wait_for()
            context.close()
        # the second rater answers through the service (the same path the page takes), marking generated images
        session = reader.add_rater(app, st, "ben")[0]
        while (shown := app.next_trial(st, session)) is not None:
            t = app.storage.trial(shown.trial_id)
            generated = app.storage.image(t.shown_order[0]).source == "generated"
            answers = {p.position: {"realism": 3, "alignment": 3} for p in shown.panels}
            app.submit_trial(st, session, shown.trial_id, answers, marks={1: [(0.5, 0.5, 4 if generated else 1)]})
        # export: the marks CSV holds the confidences
        marks = app.storage.marks_frame(key)
        mine = marks[marks["rater_id"] == marks["rater_id"].iloc[0]]
        out = tmp_path / "marks.csv"
        E.write_marks_csv(marks, out)
        exported = pd.read_csv(io.StringIO(out.read_text()))
        assert "confidence" in exported.columns
        assert sorted(exported["confidence"].tolist()) == sorted(marks["confidence"].astype(int).tolist())
        assert sorted(mine["confidence"].tolist()) in ([2, 2, 3, 4, 5], [1, 1, 4, 4])
        ann = marks.groupby("rater_id")["confidence"].apply(sorted).tolist()
        assert [2, 2, 3, 4, 5] in ann
        # the report: the inferred ROC section with the model's row
        page_html = build_report(app.storage.ratings_frame(key), n_boot=0, marks=marks)
        assert "Inferred ROC of artifact marks" in page_html and "<h3>inferred_roc</h3>" in page_html
    finally:
        app.storage.close()
