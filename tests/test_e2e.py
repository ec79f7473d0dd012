"""End to end: the real server on 127.0.0.1, driven over HTTP the way the browser page does.

sign in → generate → rate → submit → reveal, then the rows in SQLite and the exported CSV; what the rater's
browser can see (config, API info, file URLs, monitoring) reveals no model; forged requests change nothing.
"""

from __future__ import annotations

import socket
import sqlite3
import threading
import time

import httpx
import pandas as pd
import pytest
from click.testing import CliRunner

from browser_client import BrowserSession
from conftest import make_app

pytestmark = pytest.mark.e2e

PROMPT = "colonoscopy image with a single sessile polyp of 5-10 mm, no instruments"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(tmp_path, demo_registry):
    import uvicorn

    from p2p_app.ui import create_server

    app = make_app(tmp_path / "data", demo_registry, admin_password="s3cret-admin")
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_server(app), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    assert srv.started
    yield app, f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)
    app.storage.close()


def arena(page: BrowserSession) -> dict:
    """Component ids of the live arena (the first tab group holds the studies)."""
    ids = {
        "name": page.find(label="Your name", type="textbox")[-1],
        "signin": page.find(label="Sign in", type="button")[-1],
        "prompt": page.one(label="Prompt", type="textbox"),
        "modality": page.one(label="Modality", type="radio"),
        "generate": page.one(label="Generate", type="button"),
        "submit": page.one(label="Submit ratings (Ctrl+Enter)", type="button"),
    }
    realism = [c for c in page.find(type="radio") if page.components[c]["props"]["label"] == "How real does this image look?"]
    alignment = [c for c in page.find(type="radio") if page.components[c]["props"]["label"] == "How well does the image match the prompt?"]
    images = [c for c in page.find(type="image") if page.components[c]["props"]["label"].startswith("Image ")]
    # The arena is built after the study tabs: its panels are the last three of each kind.
    ids["realism"], ids["alignment"], ids["images"] = realism[-3:], alignment[-3:], images[-3:]
    return ids


def test_rater_flow_end_to_end(server, tmp_path):
    app, url = server
    page = BrowserSession(url)
    ids = arena(page)

    page.set(ids["name"], "Dr End-to-End")
    page.trigger(ids["signin"])
    page.set(ids["modality"], "colonoscopy")
    page.set(ids["prompt"], PROMPT)
    out = page.trigger(ids["generate"])
    shown = [page.values[c] for c in ids["images"]]
    assert all(v and v.get("url") for v in shown), out
    urls = [v["url"] for v in shown]
    for v in shown:
        for m in app.config.models:
            assert m.name not in v["url"] and m.name not in (v.get("orig_name") or "")
            assert m.family not in v["url"]
    # the served images are identical in size and format, and carry no model name
    sizes = set()
    for u in urls:
        r = page.http.get(u)
        r.raise_for_status()
        from io import BytesIO

        from PIL import Image

        with Image.open(BytesIO(r.content)) as im:
            sizes.add((im.size, im.format))
        assert b"tEXt" not in r.content and b"msdm" not in r.content
        assert "msdm" not in r.headers.get("content-disposition", "")
    assert sizes == {((512, 512), "PNG")}

    # submit with a missing rating is refused with a message, nothing stored
    page.set(ids["realism"][0], 4)
    out = page.trigger(ids["submit"])
    assert app.storage.count_ratings() == 0
    assert any("Rate every image" in str(v) for v in out.values())

    for c in ids["realism"] + ids["alignment"]:
        page.set(c, 3)
    out = page.trigger(ids["submit"])
    text = " ".join(str(v) for v in out.values())
    assert "Ratings saved" in text and "was made by" in text
    # a second submit of the same trial is a no-op
    page.trigger(ids["submit"])

    with sqlite3.connect(tmp_path / "data" / "p2p.sqlite") as con:
        rows = con.execute("SELECT question, value, position FROM ratings").fetchall()
        assert len(rows) == 6 and {r[1] for r in rows} == {3}
        assert sorted({r[2] for r in rows}) == [1, 2, 3]

    from p2p_app.cli import main

    out_csv = tmp_path / "ratings.csv"
    res = CliRunner().invoke(main, ["export", str(out_csv), "--data-dir", str(tmp_path / "data")])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out_csv)
    assert len(df) == 6
    for col in ("rater_id", "prompt", "modality", "model", "seed", "position", "question", "value", "comment",
                "shown_at", "answered_at", "seconds"):
        assert col in df.columns
    assert set(df["model"]) == {m.name for m in app.config.models_for("colonoscopy")}
    page.close()


def test_what_the_browser_can_see_names_no_model(server):
    app, url = server
    with httpx.Client() as http:
        config = http.get(f"{url}/config").text
        page = http.get(f"{url}/").text
        info = http.get(f"{url}/gradio_api/info", params={"all_endpoints": "1"}).text
        for model in app.config.models:
            for text in (config, page, info):
                assert model.name not in text
        assert http.get(f"{url}/monitoring/summary").status_code in (401, 403, 404)
        # the admin app's events are not part of the rater app
        assert "Admin password" not in config


def test_forged_requests_change_nothing(server):
    app, url = server
    alice = BrowserSession(url)
    ids = arena(alice)
    alice.set(ids["name"], "Alice")
    alice.trigger(ids["signin"])
    alice.set(ids["prompt"], PROMPT)
    alice.trigger(ids["generate"])

    # Mallory never signed in: her submit (a raw queue/join on the private event) is refused.
    mallory = BrowserSession(url)
    mids = arena(mallory)
    for c in mids["realism"] + mids["alignment"]:
        mallory.set(c, 5)
    out = mallory.trigger(mids["submit"])
    assert any("Sign in" in str(v) or "nothing to submit" in str(v) for v in out.values())
    assert app.storage.count_ratings() == 0


def test_admin_needs_the_password(server):
    app, url = server
    admin = BrowserSession(f"{url}/admin")
    pw = admin.one(label="Admin password", type="textbox")
    refresh = admin.one(label="Refresh", type="button")
    long_btn = admin.one(label="Long CSV", type="button")
    # without signing in, the export handler refuses
    out = admin.trigger(long_btn)
    assert any("Sign in as admin" in str(v) for v in out.values())
    admin.set(pw, "wrong")
    admin.trigger(admin.one(label="Sign in", type="button"))
    out = admin.trigger(refresh)
    assert any("Sign in as admin" in str(v) for v in out.values())
    admin.set(pw, "s3cret-admin")
    admin.trigger(admin.one(label="Sign in", type="button"))
    out = admin.trigger(long_btn)
    assert any(isinstance(v, dict) and str(v.get("url", "")).endswith(".csv") for v in out.values()), out
