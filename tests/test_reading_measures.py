"""What the reading screen measures and stores, in a real browser (Playwright + Debian's Chromium): the practice
block (shown first, said to be practice, stored flagged), artifact marks clicked on zoomed images (stored as
image-normalised points on the right image), and active time (time hidden or idle > 30 s left out, stored clamped to
the server's wall-clock time). Numbers are read back from the database, not from the page.

Skipped like tests/test_browser.py when Playwright or Chromium is missing.
"""

from __future__ import annotations

import json
import re
import uuid
import shutil
from pathlib import Path

import pytest
from conftest import make_app, running_server
from browser_client import Css, Field, Markup, ScriptCss, any_study, panel_of, sel, tool
from test_browser import browser  # noqa: F401 - the module-scoped Chromium fixture
from test_reading_screen import DESKTOP, panels, wait_for_images

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
MODELS = ["colon-msdm-tiny", "colon-flux-tiny", "colon-kandinsky-tiny"]
# Lets a test say the tab is hidden: Chromium's headless pages are always "visible".
VISIBILITY_SEAM = """
Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => window.__p2pVisibility || 'visible'});
window.__p2pHide = (hidden) => {
  window.__p2pVisibility = hidden ? 'hidden' : 'visible';
  document.dispatchEvent(new Event('visibilitychange'));
};
"""


def _study(folder: Path) -> Path:
    """An open side-by-side study with artifact marking: one practice prompt, two real ones."""
    from p2p_app.study import write_study

    folder.mkdir(parents=True)
    shutil.copy(ROOT / "studies" / "colonoscopy_pilot" / "real" / "polyp_sessile.png", folder / "real.png")
    settings = {"id": "marks", "version": 1, "title": "Marking study", "instructions": "Rate and mark.",
                "modality": "colonoscopy", "design": "side_by_side", "models": MODELS, "seeds": [5],
                "overlap_k": 1, "repeat_fraction": 0.0, "open": True, "n_raters": 2, "mark_artifacts": True}
    prompts = [{"prompt_id": "warmup", "prompt": "practice: a normal caecum", "real_image": "", "practice": "yes"},
               {"prompt_id": "p1", "prompt": "a sessile polyp", "real_image": "real.png", "practice": "no"},
               {"prompt_id": "p2", "prompt": "active bleeding", "real_image": "", "practice": "no"}]
    return write_study(folder, settings, prompts, [])


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_registry):
    from p2p_app import reader
    from p2p_app.study import load_study, study_key

    root = tmp_path_factory.mktemp("measures")
    app = make_app(root / "data", demo_registry, admin_password="s3cret-admin")
    st = load_study(_study(root / "study"), [m.name for m in app.config.models])
    app.studies = {study_key(st): st}
    assert reader.prepare_study(app, st).frozen
    with running_server(app) as url:
        yield app, st, url
    app.storage.close()


@pytest.fixture()
def signed_in(server, browser):  # noqa: F811 - the fixture imported above
    """A page signed in as a new rater (through an invite link), its first item loaded; (app, study, page, name)."""
    from p2p_app import reader

    app, st, url = server
    context = browser.new_context(**DESKTOP)
    context.add_init_script(VISIBILITY_SEAM)
    page = context.new_page()
    page.set_default_timeout(30_000)
    name = f"reader {uuid.uuid4().hex[:8]}"
    _, token = reader.add_rater(app, st, name)
    page.goto(f"{url}/?token={token}")
    page.get_by_text("Signed in as").wait_for()
    wait_for_images(page)
    yield app, st, page, name
    context.close()


def rows_of(app, name: str):
    df = app.storage.ratings_frame(None)
    return df[df["rater_name"] == name]


def submit(page) -> None:
    """Mark every panel "can't judge" and press Submit; wait for the next item."""
    before = {img.get_attribute("src") for img in page.locator(f".{Css.PANEL} .image-frame img:visible").all()}
    for i in range(panels(page).count()):
        page.locator(f"{sel(panel_of(panels(page).nth(i)).cant_judge)} input").check()
    page.locator(f"{any_study('submit')}:visible").click()
    wait_for_images(page, before)


def test_practice_item_comes_first_says_so_and_is_stored_flagged(signed_in):
    app, st, page, name = signed_in
    assert page.get_by_text("Practice item 1 of 1: not counted").is_visible()
    assert page.get_by_text("it is not counted in the results").is_visible()
    submit(page)
    progress = page.locator("progress:visible").locator("xpath=..").inner_text()
    assert re.fullmatch(r"0 of \d+ items done \(0%\)", progress.strip()), progress  # practice is not counted
    assert not page.get_by_text("Practice item").first.is_visible()
    rows = rows_of(app, name)
    assert set(rows["practice"]) == {True}
    assert set(rows["prompt_id"]) == {"warmup"}


def _image_boxes(page) -> list[dict]:
    return page.evaluate("""() => [...document.querySelectorAll('.p2p-panel .image-frame img')]
        .filter((i) => i.getClientRects().length)
        .map((i) => { const r = i.getBoundingClientRect(); return {x: r.left, y: r.top, w: r.width, h: r.height}; })""")


def _frame_boxes(page) -> list[dict]:
    return page.evaluate("""() => [...document.querySelectorAll('.p2p-panel .image-frame')]
        .filter((f) => f.getClientRects().length)
        .map((f) => { const r = f.getBoundingClientRect(); return {x: r.left, y: r.top, w: r.width, h: r.height}; })""")


def test_marks_clicked_on_zoomed_images_are_stored_as_image_points(signed_in):
    app, st, page, name = signed_in
    page.locator(f"{tool(Markup.MARK, 'toggle')}:visible").click()
    page.evaluate("(y) => window.scrollBy(0, y)", _image_boxes(page)[0]["y"] - 120)  # the whole images in view
    page.wait_for_timeout(100)
    a, b, c = _image_boxes(page)
    assert a["y"] >= 0 and a["y"] + a["h"] <= 900, a
    page.mouse.click(a["x"] + 0.25 * a["w"], a["y"] + 0.75 * a["h"])  # Image A, lower left
    page.mouse.click(c["x"] + 0.9 * c["w"], c["y"] + 0.1 * c["h"])  # Image C, upper right ...
    page.mouse.click(c["x"] + 0.9 * c["w"] + 3, c["y"] + 0.1 * c["h"] + 2)  # ... taken back (a click on the mark)
    page.locator(f"{tool(Markup.ZOOM, 'in')}:visible").click()
    page.locator(f"{tool(Markup.ZOOM, 'in')}:visible").click()  # 156 %, around the centre
    fb = _frame_boxes(page)[1]
    # zoomed s = 1.25² around the centre, the frame's point (0.25, 0.25) shows the image's (0.25 - (1 - s) / 2) / s
    page.mouse.click(fb["x"] + 0.25 * fb["w"], fb["y"] + 0.25 * fb["h"])
    # a drag pans, it does not mark
    page.mouse.move(fb["x"] + 0.3 * fb["w"], fb["y"] + 0.3 * fb["h"])
    page.mouse.down()
    page.mouse.move(fb["x"] + 0.4 * fb["w"], fb["y"] + 0.45 * fb["h"], steps=5)
    page.mouse.up()
    assert page.locator(f".{ScriptCss.MARK}:visible").count() == 2
    assert page.locator(f".{ScriptCss.MARK_COUNT}").inner_text() == "2 marks"
    field = json.loads(page.locator(f".{Field.MARKS} textarea").input_value())
    assert set(field) == {"1", "2"}
    submit(page)  # the practice item: marks are stored for it too (flagged practice)

    marks = app.storage.marks_frame(None)
    mine = marks[marks["trial_id"].isin(rows_of(app, name)["trial_id"].unique())].sort_values("position")
    assert list(mine["position"]) == [1, 2]
    assert mine.iloc[0][["x", "y"]].tolist() == pytest.approx([0.25, 0.75], abs=0.01)
    s = 1.25**2
    assert mine.iloc[1][["x", "y"]].tolist() == pytest.approx([(0.25 - (1 - s) / 2) / s] * 2, abs=0.01)  # 0.34
    assert set(mine["practice"]) == {True}
    # each point is on the image the rater saw at that place (the page only knows positions)
    shown = rows_of(app, name).drop_duplicates("position").set_index("position")["image_id"]
    assert list(mine["image_id"]) == [shown[1], shown[2]]
    # the coordinator downloads them from the admin area
    from browser_client import ADMIN, BrowserSession

    from p2p_app.study import study_key

    admin = BrowserSession(f"{page.url.split('/?')[0]}/admin", login=("admin", "s3cret-admin"))
    admin.set(admin.by_id(ADMIN.study), study_key(st))
    out = admin.trigger(admin.by_id(ADMIN.marks_csv))
    link = next(v for v in out.values() if isinstance(v, dict) and str(v.get("url", "")).endswith("_marks.csv"))
    csv = admin.http.get(link["url"]).text
    admin.close()
    assert csv.splitlines()[0].startswith("\"study\",") and len(csv.splitlines()) == 1 + len(marks)
    # the next item starts with no marks, zoom back at 100 %
    assert page.locator(f".{ScriptCss.MARK}:visible").count() == 0
    assert page.locator(f".{Field.MARKS} textarea").input_value() in ("", "{}")


def test_active_time_leaves_out_hidden_time_and_is_stored(signed_in):
    app, st, page, name = signed_in
    page.evaluate("window.__p2pHide(true)")
    page.wait_for_timeout(3000)  # hidden: not counted
    page.evaluate("window.__p2pHide(false)")
    for i in range(6):  # 1.5 s of looking and moving
        page.mouse.move(200 + 20 * i, 300)
        page.wait_for_timeout(250)
    submit(page)
    row = rows_of(app, name).iloc[0]
    print(f"\nstored: active {row['active_seconds']:.2f} s of wall {row['seconds']:.2f} s")
    assert row["seconds"] >= 4.0
    assert 1.0 <= row["active_seconds"] <= 3.0


def test_idle_time_beyond_30_seconds_is_not_counted(server, browser):  # noqa: F811
    """With the page's clock under the test's control: moves over 9 s, then 120 s idle, count as 9 + 30 s."""
    from p2p_app import reader

    app, st, url = server
    context = browser.new_context(**DESKTOP)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.clock.install()
    _, token = reader.add_rater(app, st, "idle reader")
    page.goto(f"{url}/?token={token}")
    page.clock.run_for(2000)
    page.get_by_text("Signed in as").wait_for()
    page.clock.run_for(1000)
    start = float(page.locator(f".{Field.ACTIVE} textarea").input_value() or 0)
    for i in range(10):  # a move each second: 9 s from the first to the last
        page.mouse.move(300 + i, 300)
        page.clock.run_for(1000)
    page.clock.run_for(120_000)  # then idle for two minutes
    active = float(page.locator(f".{Field.ACTIVE} textarea").input_value())
    print(f"\nactive after 10 s of work and 120 s idle: {active - start:.2f} s")
    assert active - start == pytest.approx(39.0, abs=0.75)
    context.close()
