"""Blinding at the level of the served page: the real server on 127.0.0.1, driven over raw HTTP like a browser
(or an attacker) does. Within a trial every image response has the same bytes length, pixel size and header
set; no header orders the images; HEAD, Range, conditional requests, forged ids and another trial's file
reveal nothing a rater's own GET does not; the stored shown order is the order on the page; every screen of
a side-by-side study has the same panel count; no model name reaches the browser before the reveal; a reveal
needs a score; and the live shuffle is uniform per model over 1,000 trials through the trial-creation path.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
from collections import Counter
from pathlib import Path

import httpx
import pytest
from browser_client import ARENA, BrowserSession, study
from conftest import make_app, running_server, running_study
from PIL import Image
from scipy.stats import chisquare
from test_e2e import PROMPT, arena

from p2p_app import reader
from p2p_app.blinding import PRESENTATION_MTIME, presentation_png_size
from p2p_app.storage import LIVE_STUDY
from p2p_app.study import study_key

pytestmark = pytest.mark.e2e

# Headers whose value may differ between two images of one trial: none reveal a model (the date of the
# response, and the download name that repeats the file's random id).
PER_RESPONSE = {"date", "content-disposition"}
ID_RE = re.compile(r"[0-9a-f]{32}\.png")


@pytest.fixture()
def server(tmp_path, demo_registry):
    app = make_app(tmp_path / "data", demo_registry)
    with running_server(app) as url:
        yield app, url
    app.storage.close()


def sign_in_and_generate(page: BrowserSession, name: str, prompt: str = PROMPT) -> tuple[dict, dict, list[dict]]:
    ids = arena(page)
    page.set(ids["name"], name)
    page.trigger(ids["signin"])
    page.set(ids["modality"], "colonoscopy")
    page.set(ids["prompt"], prompt)
    out = page.trigger(ids["generate"])
    shown = [page.values[c] for c in ids["images"]]
    assert all(v and v.get("url") for v in shown), out
    return ids, out, shown


def pixels(png: bytes) -> bytes:
    with Image.open(io.BytesIO(png)) as im:
        return im.convert("RGB").tobytes()


def gradio_cache() -> Path:
    from p2p_app.ui.guard import gradio_cache_dir

    return gradio_cache_dir()


def headers_of(r: httpx.Response) -> dict[str, str]:
    return {k.lower(): v for k, v in r.headers.items()}


def check_one_trial_is_indistinguishable(http: httpx.Client, shown: list[dict], size: int) -> list[bytes]:
    """Every panel of a trial: the same status, byte length, pixel size, header names and header values."""
    bodies, header_sets = [], []
    for v in shown:
        r = http.get(v["url"])
        assert r.status_code == 200
        h = headers_of(r)
        assert "last-modified" not in h and "etag" not in h and "accept-ranges" not in h, h
        assert h.get("cache-control") == "no-store"
        assert len(r.content) == presentation_png_size(size) == int(h["content-length"])
        with Image.open(io.BytesIO(r.content)) as im:
            assert (im.format, im.mode, im.size) == ("PNG", "RGB", (size, size))
        disposition = h.get("content-disposition", "")
        assert disposition.replace(Path(v["url"]).name, "ID.png") in ("", 'inline; filename="ID.png"'), disposition
        header_sets.append({k: (ID_RE.sub("ID.png", val) if k == "content-disposition" else val)
                            for k, val in h.items() if k != "date"})
        bodies.append(r.content)
        # HEAD: the same headers, no body; Range and conditional requests: the same full 200 as a plain GET
        head = http.head(v["url"])
        assert head.status_code == 200 and head.content == b""
        assert {k: x for k, x in headers_of(head).items() if k not in PER_RESPONSE} == {
            k: x for k, x in h.items() if k not in PER_RESPONSE
        }
        for extra in ({"Range": "bytes=0-99"}, {"Range": "bytes=-1"}, {"If-None-Match": "*"},
                      {"If-Modified-Since": "Sat, 01 Jan 2000 00:00:00 GMT"}, {"If-Range": "x", "Range": "bytes=5-"}):
            again = http.get(v["url"], headers=extra)
            assert again.status_code == 200 and again.content == r.content, extra
    assert all(hs == header_sets[0] for hs in header_sets), header_sets
    return bodies


def test_live_trial_images_are_indistinguishable_over_http(server):
    app, url = server
    page = BrowserSession(url)
    ids, out, shown = sign_in_and_generate(page, "Dr Probe")
    bodies = check_one_trial_is_indistinguishable(page.http, shown, app.config.presentation_size)

    # the page shows the stored order: panel i is the image stored at position i (by its pixels: the served bytes
    # are the stored PNG with its data chunks re-split per presentation, so they differ from the stored file's)
    rater = next(r for r in app.storage.raters(LIVE_STUDY) if r.name == "Dr Probe")
    (trial,) = app.storage.trials_for(rater.pk, None)
    stored = [app.storage.image(i) for i in trial.shown_order]
    assert [pixels(b) for b in bodies] == [pixels(Path(im.file_path).read_bytes()) for im in stored]
    assert all(hashlib.sha256(b).hexdigest() != im.sha256 for b, im in zip(bodies, stored))
    assert [page.components[c]["props"]["label"] for c in ids["images"]] == ["Image A", "Image B", "Image C"]
    # the URL names an opaque per-presentation token: not the image id, not a content hash, not Gradio's cache
    for v, im in zip(shown, stored):
        assert v["url"].startswith(f"{url}/gradio_api/file=p2p/") and im.id not in json.dumps(v)
        assert im.sha256 not in json.dumps(v) and "/tmp/" not in json.dumps(v)

    # the stored file carries no time that orders the images, and Gradio's cache holds no copy of any image
    for im in stored:
        assert os.stat(im.file_path).st_mtime == PRESENTATION_MTIME
    assert not [p for p in gradio_cache().rglob("*.png") if p.stat().st_size == presentation_png_size(512)
                and pixels(p.read_bytes()) in [pixels(b) for b in bodies]]  # fmt: skip

    # no model name in the event output, the file URLs and names, or any header of a file response
    text = json.dumps(out)
    for m in app.config.models:
        assert m.name not in text and m.family not in json.dumps(shown)
    page.close()


def test_forged_ids_other_trials_and_data_paths_reveal_nothing(server):
    app, url = server
    alice = BrowserSession(url)
    _, _, mine = sign_in_and_generate(alice, "Alice")
    bob = BrowserSession(url)
    _, _, theirs = sign_in_and_generate(bob, "Bob", PROMPT + " in the rectum")

    # Another trial's file (a URL only Bob's page was given) is served like Alice's own: same length, same headers.
    check_one_trial_is_indistinguishable(alice.http, [mine[0], theirs[0]], app.config.presentation_size)

    # A forged token, a forged id, a real image's file in the data folder, and a path that exists nowhere: the same
    # answer (the rater app serves no file path at all, only presentation tokens).
    real_file = next(Path(app.config.image_dir).glob("*.png"))
    probes = {
        "forged token": f"p2p/{'A' * 22}.png",
        "a token with its letters changed": "p2p/" + Path(mine[0]["url"]).name.swapcase(),
        "forged id in the cache folder": f"{gradio_cache()}/{'0' * 32}.png",
        "forged id in the data folder": f"{real_file.parent}/{'0' * 32}.png",
        "a real image's stored file": str(real_file),
        "nowhere": f"/nonexistent/{'1' * 32}.png",
    }
    answers = {}
    for what, path in probes.items():
        for method in ("GET", "HEAD"):
            r = alice.http.request(method, f"{url}/gradio_api/file={path}")
            assert r.status_code >= 400, (what, method, r.status_code)
            body = r.content.replace(path.encode(), b"PATH")
            answers[(what, method)] = (r.status_code, body if method == "GET" else b"")
    for method in ("GET", "HEAD"):
        seen = {answers[(what, method)] for what in probes}
        assert len(seen) == 1, {what: answers[(what, method)] for what in probes}
    alice.close()
    bob.close()


def test_cant_judge_everywhere_is_stored_and_reveals_nothing_over_http(server):
    app, url = server
    page = BrowserSession(url)
    ids, _, _ = sign_in_and_generate(page, "Dr Unsure")
    cant = page.answers(ARENA, "cant_judge", "scores")  # the arena's panels
    for c in cant:
        page.set(c, True)
    out = page.trigger(ids["submit"])
    text = json.dumps(out)
    assert "not revealed" in text and "was made by" not in text
    for m in app.config.models:
        assert m.name not in text
    assert app.storage.count_ratings() == 6  # stored: 3 images x 2 questions, all "can't judge"
    df = app.storage.ratings_frame()
    assert df["cant_judge"].all()
    page.close()


# ------------------------------------------------------------------------------ live shuffle through the service


class _OneSeed(random.Random):
    """A seeded random source whose generation seed is constant, so every trial after the first is a cache hit."""

    def randrange(self, *args, **kwargs):  # noqa: ARG002 - the seed of the live generation
        return 4242


def test_live_positions_are_uniform_per_model_over_1000_trials(tmp_path, demo_registry):
    """``live_generate`` → ``shuffled`` → ``create_trial``, 1,000 times: every model at every position equally often
    (chi-square, fixed seed). Replacing the shuffle with anything that keeps config order fails this."""
    app = make_app(tmp_path / "data", demo_registry)
    app._rng = _OneSeed(20261129)
    rater = app.sign_in("Dr Many")
    counts: dict[str, Counter] = {}
    for _ in range(1000):
        shown = app.live_generate(rater, "radiology", "chest X-ray, PA view, right lower lobe consolidation")
        stored = app.storage.trial(shown.trial_id).shown_order
        assert [p.image_id for p in shown.panels] == list(stored)  # shown order = stored order
        for p in shown.panels:
            counts.setdefault(app.storage.image(p.image_id).model, Counter())[p.position] += 1
    assert app.storage.count_images() == 3  # one generation per model, then cache hits
    assert set(counts) == {m.name for m in app.config.models_for("radiology")}
    for model, c in counts.items():
        observed = [c[p] for p in (1, 2, 3)]
        assert chisquare(observed).pvalue > 0.001, (model, observed)
    app.storage.close()


# ------------------------------------------------------------------------------ a frozen side-by-side study


@pytest.fixture()
def side_by_side_server(tmp_path, demo_registry):
    """The small test study as side by side (3 prompts, one with a real image, + 1 control; 2 models), frozen."""
    with running_study(tmp_path, demo_registry, design="side_by_side", repeat_fraction=0.25) as served:
        yield served


def test_study_screens_all_have_the_same_panels_and_the_stored_order(side_by_side_server):
    app, st, token, url = side_by_side_server
    page = BrowserSession(url, query=f"token={token}")
    start = page.by_id(study(0).signin)
    submit = page.by_id(study(0).submit)
    images = page.images(study(0))
    columns = [page.by_id(p.column) for p in page.panels(study(0))]
    realism = page.answers(study(0), "realism")
    alignment = page.answers(study(0), "alignment")
    assert len(images) == len(st.models)  # the widest screen is one panel per model
    readable = [page.http.get(f"{url}{path}").text for path in ("/config", "/", "/gradio_api/info?all_endpoints=1")]
    for m in app.config.models:
        assert not any(m.name in text for text in readable)
    out = page.trigger(start)
    rater = app.storage.raters(study_key(st))[0]
    row = app.storage.study(st.id, st.version)
    total = len(reader.assignment.rater_sequence(st, rater.slot))
    screens, with_real = 0, 0
    for _ in range(total):
        text = json.dumps(out)
        for m in app.config.models:
            assert m.name not in text  # nothing in an event output names a model
        shown = [page.values[c] for c in images]
        assert all(v and v.get("url") for v in shown), "a screen with fewer panels"
        visible_panels = [c for c in columns if page.visible.get(c) not in (False,)]
        assert len(visible_panels) >= len(images)
        bodies = check_one_trial_is_indistinguishable(page.http, shown, app.config.presentation_size)
        (trial,) = [t for t in app.storage.trials_for(rater.pk, row.pk) if t.submitted_at is None]
        stored = [app.storage.image(i) for i in trial.shown_order]
        assert [pixels(b) for b in bodies] == [pixels(Path(im.file_path).read_bytes()) for im in stored]
        with_real += any(im.source == "real" for im in stored)
        screens += 1
        for c in realism + alignment:
            page.set(c, 3)
        out = page.trigger(submit)
    assert any("All items are done" in str(v) for v in page.values.values())
    assert screens == total and 0 < with_real < screens  # screens with and without a real image look alike
    page.close()
