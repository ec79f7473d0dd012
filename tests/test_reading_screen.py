"""The reading screen in a real browser (Playwright + Debian's Chromium), at 1,400×900 and on a phone (390×844,
touch): the next item in view after Submit / Generate with the focus on its first scale, image sizes, zoom and pan
in sync across the panels of a trial, window/level on greyscale images, one-row scales and no keyboard hints on
touch. Every assertion is a number read from the rendered page (bounding boxes, computed styles, focus).

One server with three studies (3 colour panels, 3 greyscale panels, one image per screen) serves the whole module;
each test signs in a new rater of an open study through an invite link. Skipped like tests/test_browser.py when
Playwright or Chromium is missing. Measured figures are printed (``pytest -s``).
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import make_app, running_server
from browser_client import ARENA, LANDING, Css, Markup, any_study, input_of, panel_of, sel, tab_button, tool
from test_browser import browser  # noqa: F401 - the module-scoped Chromium fixture

playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
PlaywrightTimeout = playwright_api.TimeoutError

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
COLON_MODELS = ["colon-msdm-tiny", "colon-flux-tiny", "colon-kandinsky-tiny"]
DESKTOP = {"viewport": {"width": 1400, "height": 900}}
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
DEVICES = {"desktop": DESKTOP, "phone": PHONE}
CANT_JUDGE = "Can't judge / image failed to load"

# What the page shows, read in one go: the item's first lines, every visible panel image, the focus, the viewer.
MEASURE = """() => {
  const shown = (el) => !!el && el.getClientRects().length > 0;
  const box = (el) => { const r = el.getBoundingClientRect(); return {top: r.top, bottom: r.bottom, left: r.left,
                                                                     right: r.right, width: r.width}; };
  const viewer = [...document.querySelectorAll('.p2p-viewer')].find(shown);
  const imgs = viewer ? [...viewer.querySelectorAll('.p2p-panel .image-frame img')].filter(shown) : [];
  const prompt = [...document.querySelectorAll('strong')].find((s) => shown(s) && s.textContent === 'Prompt:');
  const progress = [...document.querySelectorAll('progress')].find(shown);
  const firstRadio = viewer && [...viewer.querySelectorAll('.p2p-panel input[type=radio]')].find(shown);
  const wl = viewer && viewer.querySelector('.p2p-wl');
  return {
    scrollY: window.scrollY, height: window.innerHeight, width: window.innerWidth,
    prompt: prompt ? box(prompt) : null, progress: progress ? box(progress) : null,
    images: imgs.map((img) => ({...box(img), natural: img.naturalWidth, src: img.getAttribute('src'),
                                transform: img.style.transform, filter: img.style.filter})),
    focusOnFirstScale: !!firstRadio && document.activeElement === firstRadio,
    focusedValue: document.activeElement && document.activeElement.value,
    windowLevelShown: !!wl && shown(wl),
    zoomLevel: viewer ? viewer.querySelector('.p2p-zoom-level').textContent : null,
  };
}"""


GREY = "greyscale"  # a prompt that says so gets a greyscale image (see _GreyWhenAsked)


class _GreyGenerator:
    """A demo generator that draws greyscale, as radiographs are, when the prompt asks for it (the tiny models draw
    colour noise; the loaded colonoscopy models serve both kinds, so no more models are loaded for this file)."""

    def __init__(self, generator):
        self._generator = generator

    def __getattr__(self, name):
        return getattr(self._generator, name)

    def generate(self, prompt, seed, **params):
        result = self._generator.generate(prompt, seed, **params)
        return replace(result, image=result.image.convert("L").convert("RGB")) if GREY in prompt else result


class _GreyWhenAsked:
    """The session's demo registry, its generators wrapped in :class:`_GreyGenerator`."""

    def __init__(self, registry):
        self._registry = registry

    def __getattr__(self, name):
        return getattr(self._registry, name)

    def __len__(self):  # dunder methods bypass __getattr__
        return len(self._registry)

    def get(self, name):
        return _GreyGenerator(self._registry.get(name))


def _study(folder: Path, study_id: str, design: str, models: list[str], grey: bool = False) -> Path:
    """An open study of 3 prompts × 1 seed (the first with a real image) and one control; ``grey``: every image
    greyscale (radiology's real images, greyscale prompts)."""
    from p2p_app.study import write_study

    real, control = (("radiology_pilot/real/chest_consolidation.png", "radiology_pilot/controls/chest_normal.png")
                     if grey else ("colonoscopy_pilot/real/polyp_sessile.png", "colonoscopy_pilot/controls/bleeding.png"))
    (folder / "controls").mkdir(parents=True)
    shutil.copy(ROOT / "studies" / real, folder / "real.png")
    shutil.copy(ROOT / "studies" / control, folder / "controls" / "c1.png")
    kind = GREY if grey else "colour"
    settings = {"id": study_id, "version": 1, "title": study_id.capitalize() + " study", "instructions": "Rate.",
                "modality": "colonoscopy", "design": design, "models": models, "seeds": [3], "overlap_k": 2,
                "repeat_fraction": 0.0, "open": True, "n_raters": 2}
    prompts = [{"prompt_id": "p1", "prompt": f"{kind} finding one", "real_image": "real.png"},
               {"prompt_id": "p2", "prompt": f"{kind} finding two", "real_image": ""},
               {"prompt_id": "p3", "prompt": f"{kind} finding three", "real_image": ""}]
    return write_study(folder, settings, prompts, [{"control_id": "c1", "file": "c1.png", "caption": "a control"}])


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_registry):
    """(app, studies by id, base URL): a colour side-by-side study, a greyscale one and a one-image study."""
    from p2p_app import reader
    from p2p_app.study import load_study, study_key

    root = tmp_path_factory.mktemp("reading")
    app = make_app(root / "data", _GreyWhenAsked(demo_registry))
    known = [m.name for m in app.config.models]
    studies = {
        "colour": load_study(_study(root / "colour", "colour", "side_by_side", COLON_MODELS), known),
        "grey": load_study(_study(root / "grey", "grey", "side_by_side", COLON_MODELS, grey=True), known),
        "single": load_study(_study(root / "single", "single", "single", COLON_MODELS[:1]), known),
    }
    app.studies = {study_key(st): st for st in studies.values()}
    for st in studies.values():
        assert reader.prepare_study(app, st, release_models=False).frozen  # as `p2p serve` does: models stay loaded
    with running_server(app) as url:
        yield app, studies, url
    app.storage.close()


@pytest.fixture()
def open_page(server, browser):  # noqa: F811 - the fixture imported above
    """open_page(study_id, device) -> a page signed in as a new rater of that study, its first item loaded."""
    from p2p_app import reader

    app, studies, url = server
    contexts = []

    def _open(study_id: str | None, device: str):
        context = browser.new_context(**DEVICES[device])
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(30_000)
        if study_id is None:
            page.goto(url)
            return page
        _, token = reader.add_rater(app, studies[study_id], f"reader {len(contexts)} {device}")
        page.goto(f"{url}/?token={token}")
        page.get_by_text("Signed in as").wait_for()
        wait_for_images(page)
        return page

    yield _open
    for context in contexts:
        context.close()


def wait_for_images(page, old: set[str] | None = None) -> dict:
    """Wait until every visible panel image has loaded (and, with ``old``, shows other sources); the measures."""
    page.wait_for_function(
        """(old) => { const imgs = [...document.querySelectorAll('.p2p-panel .image-frame img')]
                        .filter((i) => i.getClientRects().length);
                      return imgs.length && imgs.every((i) => i.complete && i.naturalWidth)
                             && imgs.every((i) => !old.includes(i.getAttribute('src'))); }""",
        arg=sorted(old or ()),
    )
    return measure(page)


def measure(page) -> dict:
    return page.evaluate(MEASURE)


def panels(page):
    return page.locator(f".{Css.PANEL}:visible")


def submit_cant_judge(page) -> dict:
    """Answer the item on screen with "can't judge" on every panel, press Submit; the next item's measures once
    its images are loaded and the page has settled."""
    before = measure(page)
    for i in range(panels(page).count()):
        page.locator(f"{sel(panel_of(panels(page).nth(i)).cant_judge)} input").check()
    page.locator(f"{any_study('submit')}:visible").click()
    wait_for_images(page, {img["src"] for img in before["images"]})
    return settled(page)


def settled(page) -> dict:
    """The measures once the page has moved to the new item (or after 5 s: the caller's assertions say what is
    wrong) and a moment more, in which a late layout shift would show."""
    with contextlib.suppress(PlaywrightTimeout):
        page.wait_for_function("() => document.activeElement && document.activeElement.type === 'radio'",
                               timeout=5_000)
    page.wait_for_timeout(300)
    return measure(page)


def transform_of(image: dict) -> tuple[float, float, float]:
    """(x %, y %, scale) of a panel image's transform; (0, 0, 1) when none."""
    if not image["transform"]:
        return 0.0, 0.0, 1.0
    m = re.fullmatch(r"translate\((-?[\d.]+)%, (-?[\d.]+)%\) scale\(([\d.]+)\)", image["transform"])
    assert m, image["transform"]
    return float(m[1]), float(m[2]), float(m[3])


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_next_item_is_in_view_with_the_focus_on_its_first_scale(open_page, device):
    page = open_page("colour", device)
    first = measure(page)
    assert not first["focusOnFirstScale"]  # nothing moves on sign-in (the resume code stays in sight)
    after = submit_cant_judge(page)
    print(f"\n{device}: after submit scrollY={after['scrollY']:.0f} progress top={after['progress']['top']:.1f} "
          f"prompt top={after['prompt']['top']:.1f} first image top={after['images'][0]['top']:.1f} "
          f"bottom={after['images'][0]['bottom']:.1f} (window {after['height']})")
    assert after["scrollY"] > 0
    assert 0 <= after["progress"]["top"] <= 40, after["progress"]
    assert 0 <= after["prompt"]["top"] < after["images"][0]["top"], (after["prompt"], after["images"][0])
    # the first image whole in the window; on the desktop every panel
    in_view = after["images"] if device == "desktop" else after["images"][:1]
    assert all(0 <= img["top"] and img["bottom"] <= after["height"] for img in in_view), in_view
    assert after["focusOnFirstScale"] and after["focusedValue"] == "1"

    # a refused submit (nothing rated) leaves the page where the reader scrolled to
    page.evaluate("window.scrollBy(0, 300)")
    page.wait_for_function("(y) => window.scrollY > y", arg=after["scrollY"])
    page.keyboard.press("Control+Enter")
    page.get_by_text("Rate every image").first.wait_for()
    page.wait_for_timeout(1600)  # longer than showTrial waits for a new item
    refused = measure(page)
    assert refused["images"][0]["src"] == after["images"][0]["src"]
    assert refused["progress"]["top"] < -200, refused["progress"]


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_arena_trial_is_in_view_after_generate(open_page, device):
    page = open_page(None, device)
    page.locator(tab_button(LANDING.arena_tab)).click()
    page.locator(input_of(ARENA.name)).fill("Dr Arena")
    page.locator(sel(ARENA.signin)).click()
    page.locator(sel(ARENA.who)).get_by_text("Signed in as").wait_for()
    page.locator(input_of(ARENA.prompt)).fill("colonoscopy image with a single sessile polyp")
    page.locator(sel(ARENA.generate)).click()
    wait_for_images(page)
    after = settled(page)
    print(f"\narena {device}: after Generate scrollY={after['scrollY']:.0f} prompt top={after['prompt']['top']:.1f} "
          f"image tops={[round(i['top']) for i in after['images']]} widths={[round(i['width']) for i in after['images']]}")
    assert 0 <= after["prompt"]["top"] <= 60, after["prompt"]
    in_view = after["images"] if device == "desktop" else after["images"][:1]
    assert all(0 <= img["top"] and img["bottom"] <= after["height"] for img in in_view), in_view
    assert after["focusOnFirstScale"]


@pytest.fixture(scope="module")
def first_items(server, browser):  # noqa: F811 - the fixture imported above
    """Read-only pages on the colour study's first item, one on the desktop and one on the phone (shared by the
    layout tests; a test that changes one puts it back)."""
    from p2p_app import reader

    app, studies, url = server
    contexts, pages = [], {}
    for device in ("desktop", "phone"):
        context = browser.new_context(**DEVICES[device])
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(30_000)
        _, token = reader.add_rater(app, studies["colour"], f"layout reader {device}")
        page.goto(f"{url}/?token={token}")
        page.get_by_text("Signed in as").wait_for()
        wait_for_images(page)
        pages[device] = page
    yield pages
    for context in contexts:
        context.close()


def test_images_are_as_large_as_the_layout_allows(first_items, open_page):
    desktop = measure(first_items["desktop"])
    widths = [img["width"] for img in desktop["images"]]
    print(f"\n1400 px, 3 panels: image widths {[round(w, 1) for w in widths]} (source {desktop['images'][0]['natural']})")
    assert len(widths) == 3 and min(widths) >= 440 and max(widths) - min(widths) <= 1, widths
    assert all(img["width"] <= img["natural"] for img in desktop["images"])  # never upscaled past the source
    assert desktop["images"][-1]["right"] <= desktop["width"]
    # the scales below the images, not beside them
    scale_top = panels(first_items["desktop"]).first.locator("fieldset").first.bounding_box()["y"]
    assert scale_top > desktop["images"][0]["bottom"] - 1

    single = measure(open_page("single", "desktop"))
    (one,) = single["images"]
    print(f"1400 px, 1 panel: image width {one['width']:.1f} (source {one['natural']})")
    assert one["width"] == one["natural"] == 512  # full presentation size, not blown up to the page width

    phone = measure(first_items["phone"])
    print(f"390 px: image widths {[round(i['width'], 1) for i in phone['images']]}")
    assert all(img["width"] >= 0.9 * phone["width"] and 0 <= img["left"] and img["right"] <= phone["width"]
               for img in phone["images"]), phone["images"]


def test_zoom_and_pan_move_every_panel_together(open_page, server):
    app = server[0]
    page = open_page("colour", "desktop")
    start = measure(page)
    assert [img["transform"] for img in start["images"]] == ["", "", ""]
    srcs = [img["src"] for img in start["images"]]

    # wheel over panel B, a quarter in from its top-left corner: every panel gets the same transform, and the image
    # point under the pointer stays under it
    frame = panels(page).nth(1).locator(".image-frame").bounding_box()
    page.mouse.move(frame["x"] + frame["width"] / 4, frame["y"] + frame["height"] / 4)
    page.mouse.wheel(0, -300)
    page.wait_for_function("() => document.querySelector('.p2p-panel .image-frame img').style.transform")
    zoomed = measure(page)
    transforms = {img["transform"] for img in zoomed["images"]}
    print(f"\nafter one wheel step on panel B: {transforms}")
    assert len(transforms) == 1 and transforms != {""}
    x, y, s = transform_of(zoomed["images"][0])
    assert s > 1.5
    assert (25 - x) / s == pytest.approx(25, abs=0.5) and (25 - y) / s == pytest.approx(25, abs=0.5)
    for img in zoomed["images"]:  # what is drawn moved; the element and its source did not
        assert img["src"] in srcs and img["natural"] == 512

    # drag on panel C pans all three by the same fraction of a panel
    frame = panels(page).nth(2).locator(".image-frame").bounding_box()
    cx, cy = frame["x"] + frame["width"] / 2, frame["y"] + frame["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 40, cy + 20, steps=4)
    page.mouse.up()
    panned = measure(page)
    assert len({img["transform"] for img in panned["images"]}) == 1
    x2, y2, s2 = transform_of(panned["images"][0])
    assert s2 == s and x2 - x == pytest.approx(100 * 40 / frame["width"], abs=0.5)
    assert y2 - y == pytest.approx(100 * 20 / frame["width"], abs=0.5)

    # the toolbar's + goes to 1:1 and beyond (the maximum is 8x); keys on a focused image: 0 resets, + zooms
    for _ in range(12):
        page.locator(f"{tool(Markup.ZOOM, 'in')}:visible").click()
    top = measure(page)
    assert transform_of(top["images"][0])[2] == 8 and top["zoomLevel"] == "800%"
    assert len({img["transform"] for img in top["images"]}) == 1
    panels(page).first.locator(".image-container button").first.focus()
    page.keyboard.press("0")
    assert [img["transform"] for img in measure(page)["images"]] == ["", "", ""]
    page.keyboard.press("+")
    assert {transform_of(img)[2] for img in measure(page)["images"]} == {1.25}
    assert not measure(page)["windowLevelShown"]  # colour images: no window/level

    # a new item starts unzoomed; what is stored is only what was rated
    after = submit_cant_judge(page)
    assert [img["transform"] for img in after["images"]] == ["", "", ""] and after["zoomLevel"] == "100%"
    df = app.storage.ratings_frame()
    assert df["cant_judge"].all() and df["value"].isna().all()


def test_window_level_on_greyscale_images(open_page):
    from PIL import Image

    page = open_page("grey", "desktop")
    start = measure(page)
    for img in start["images"]:  # the screen really is greyscale (checked here, not by the page's own code)
        pixels = Image.open(io.BytesIO(page.request.get(img["src"]).body())).convert("RGB")
        assert all(r == g == b for r, g, b in pixels.getdata()), img["src"]
    assert start["windowLevelShown"] and len(start["images"]) == 3

    brightness = page.locator("input[data-p2p-wl=brightness]:visible")
    brightness.focus()
    for _ in range(10):  # step 0.05: 1 -> 1.5
        page.keyboard.press("ArrowRight")
    contrast = page.locator("input[data-p2p-wl=contrast]:visible")
    contrast.focus()
    for _ in range(20):  # 1 -> 2
        page.keyboard.press("ArrowRight")
    filters = {img["filter"] for img in measure(page)["images"]}
    print(f"\nwindow/level on 3 greyscale panels: {filters}")
    assert filters == {"brightness(1.5) contrast(2)"}

    page.locator(f"{tool(Markup.WINDOW_LEVEL, 'reset')}:visible").click()
    assert {img["filter"] for img in measure(page)["images"]} == {""}
    contrast.focus()
    page.keyboard.press("ArrowLeft")
    assert {img["filter"] for img in measure(page)["images"]} == {"brightness(1) contrast(0.95)"}

    after = submit_cant_judge(page)  # a new item: back to the original window
    assert {img["filter"] for img in after["images"]} == {""} and after["windowLevelShown"]
    assert brightness.input_value() == "1" and contrast.input_value() == "1"


def test_phone_scales_in_one_row_and_no_keyboard_hints(first_items):
    phone = first_items["phone"]
    fieldsets = panels(phone).locator("fieldset")
    assert fieldsets.count() == 6
    for i in range(fieldsets.count()):
        boxes = fieldsets.nth(i).locator("label").evaluate_all(
            "labels => labels.map((l) => [Math.round(l.getBoundingClientRect().top), l.getBoundingClientRect().right])")
        assert len(boxes) == 5 and len({top for top, _ in boxes}) == 1, boxes  # one row ...
        assert max(right for _, right in boxes) <= 390, boxes  # ... inside the screen
    text = phone.locator("body").inner_text()
    assert "Ctrl+Enter" not in text and "Wheel" not in text
    phone.locator(f"{any_study('submit')}:visible").wait_for()
    assert "Ctrl+Enter" not in phone.locator(f"{any_study('submit')}:visible").inner_text()
    # zoom from the toolbar on a touch screen, in sync
    phone.locator(f"{tool(Markup.ZOOM, 'in')}:visible").click()
    assert {transform_of(img)[2] for img in measure(phone)["images"]} == {1.25}
    phone.locator(f"{tool(Markup.ZOOM, 'reset')}:visible").click()
    assert {img["transform"] for img in measure(phone)["images"]} == {""}

    desktop = first_items["desktop"]  # the same page with a mouse keeps its hints and its wrapping labels
    assert "Ctrl+Enter" in desktop.locator(f"{any_study('submit')}:visible").inner_text()
    tops = panels(desktop).locator("fieldset").first.locator("label").evaluate_all(
        "labels => labels.map((l) => Math.round(l.getBoundingClientRect().top))")
    assert len(set(tops)) > 1
