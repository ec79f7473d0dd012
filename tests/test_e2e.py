"""End to end: the real server on 127.0.0.1, driven over HTTP the way the browser page does.

sign in → generate → rate → submit → reveal, then the rows in SQLite and the exported CSV; what the rater's
browser can see (config, API info, file URLs, monitoring) reveals no model; forged requests change nothing.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pandas as pd
import pytest
from browser_client import ADMIN, ARENA, BrowserSession, study
from click.testing import CliRunner
from conftest import make_app, running_server, running_study

pytestmark = pytest.mark.e2e

PROMPT = "colonoscopy image with a single sessile polyp of 5-10 mm, no instruments"


@pytest.fixture()
def server(tmp_path, demo_registry):
    app = make_app(tmp_path / "data", demo_registry, admin_password="s3cret-admin")
    with running_server(app) as url:
        yield app, url
    app.storage.close()


def arena(page: BrowserSession) -> dict:
    """Component ids of the live arena (whichever tab it is in), by their declared element ids."""
    ids = {role: page.by_id(getattr(ARENA, role)) for role in ("prompt", "modality", "generate", "submit", "signin",
                                                                "name")}
    ids["realism"] = page.answers(ARENA, "realism", "scores")
    ids["alignment"] = page.answers(ARENA, "alignment", "scores")
    ids["images"] = page.images(ARENA, "scores")
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
        assert "Admin password" not in config and "Long CSV" not in config


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
    import glob
    import tempfile

    app, url = server
    leftovers = set(glob.glob(f"{tempfile.gettempdir()}/p2p-admin-*"))
    typed = httpx.get(f"{url}/admin", follow_redirects=True)  # the address as people type it
    assert typed.status_code == 200 and str(typed.url) == f"{url}/admin/"
    with httpx.Client() as http:  # signed out: the admin app's config, queue and deep links are closed
        assert http.get(f"{url}/admin/config").status_code == 401
        assert http.post(f"{url}/admin/gradio_api/queue/join", json={"fn_index": 0, "data": [],
                         "session_hash": "x"}).status_code == 401  # fmt: skip
        assert http.post(f"{url}/admin/login", data={"username": "admin", "password": "wrong"}).status_code == 400
    with pytest.raises(httpx.HTTPStatusError):
        BrowserSession(f"{url}/admin", login=("admin", "wrong"))
    admin = BrowserSession(f"{url}/admin", login=("admin", "s3cret-admin"))
    # no password ever sits in a component
    assert not [c for c in admin.components.values() if c.get("props", {}).get("type") == "password"]
    long_btn = admin.by_id(ADMIN.long_csv)
    out = admin.trigger(long_btn)
    link = next(v for v in out.values() if isinstance(v, dict) and str(v.get("url", "")).endswith(".csv"))
    assert set(glob.glob(f"{tempfile.gettempdir()}/p2p-admin-*")) <= leftovers  # no export left in /tmp/p2p-admin-*

    # another client presenting the admin's Gradio session id, without the cookie, gets nothing
    with httpx.Client() as http:
        body = {**admin.last_body, "session_hash": admin.session_hash}
        assert http.post(f"{url}/admin/gradio_api/queue/join", json=body).status_code == 401
        assert http.get(f"{url}/admin/gradio_api/deep_link", params={"session_hash": admin.session_hash}).status_code == 401
        # the export is not served through the public rater app
        rater_url = link["url"].replace("/admin/gradio_api/", "/gradio_api/")
        assert "/admin/" not in rater_url and http.get(rater_url).status_code in (403, 404)
    first = admin.http.get(link["url"])
    assert first.status_code == 200 and b"rater_id" in first.content
    assert admin.http.get(link["url"]).status_code in (403, 404)  # deleted after download
    assert not Path(link["path"]).exists()
    admin.close()


def test_limits_and_closed_routes(server):
    app, url = server
    with httpx.Client() as http:
        up = http.post(f"{url}/gradio_api/upload", files={"files": ("x.png", b"\x89PNG" + b"0" * 1000)})
        assert up.status_code == 403
        big = http.post(f"{url}/gradio_api/queue/join", content=b"{" + b" " * (2 << 20) + b"}",
                        headers={"content-type": "application/json"})  # fmt: skip
        assert big.status_code == 413
        chunked = http.post(f"{url}/gradio_api/queue/join", content=iter([b" " * (1 << 19)] * 4),
                            headers={"content-type": "application/json"})  # fmt: skip
        assert chunked.status_code == 413
        unknown = http.post(f"{url}/gradio_api/queue/join", json={"fn_index": 99999, "data": [], "session_hash": "x"})
        assert unknown.status_code == 400 and "Unknown event" in unknown.text
        assert http.post(f"{url}/gradio_api/queue/join", content=b"[1,2]").status_code == 400
        assert http.get(f"{url}/gradio_api/file=/etc/hostname").status_code in (403, 404)


def test_replayed_arena_submit_never_lands_on_the_new_trial(server):
    app, url = server
    page = BrowserSession(url)
    ids = arena(page)
    page.set(ids["name"], "<img src=x onerror=alert(1)> [x](javascript:alert(1))")
    out = page.trigger(ids["signin"])
    who = next(str(v) for v in out.values() if "Signed in as" in str(v))
    assert "<img" not in who and "](javascript" not in who and "&lt;img" in who
    assert "resume code" in who
    page.set(ids["prompt"], PROMPT)
    page.trigger(ids["generate"])
    for c in ids["realism"] + ids["alignment"]:
        page.set(c, 2)
    page.trigger(ids["submit"])
    replay = dict(page.last_body)
    assert app.storage.count_ratings() == 6
    page.trigger(ids["generate"])  # a new trial on screen
    page.call(replay["fn_index"], replay["data"])  # the old submit body again, same session
    assert app.storage.count_ratings() == 6
    trials = app.storage.trials_for(app.storage.raters("live")[0].pk, None)
    assert len(trials) == 2 and trials[1].submitted_at is None
    page.close()


@pytest.fixture()
def study_server(tmp_path, demo_registry):
    """A server whose only study is the small test study, prepared and frozen, with one invited rater."""
    with running_study(tmp_path, demo_registry) as served:
        yield served


def test_one_rater_through_a_whole_study(study_server, tmp_path):
    from p2p_app import reader

    app, st, token, url = study_server
    page = BrowserSession(url, query=f"token={token}")
    start = page.by_id(study(0).signin)
    submit = page.by_id(study(0).submit)
    realism = page.answers(study(0), "realism")
    alignment = page.answers(study(0), "alignment")
    out = page.trigger(start)
    assert any("Signed in as **ann**" in str(v) for v in out.values()), out
    total = len(reader.assignment.rater_sequence(st, 0))
    seen_progress = []
    for step in range(total + 1):
        html_values = [v for v in page.values.values() if isinstance(v, str) and "items done" in v]
        seen_progress.extend(html_values)
        if any("All items are done" in str(v) for v in page.values.values()):
            break
        page.set(realism[0], 1 + step % 5)
        page.set(alignment[0], 5 - step % 5)
        page.trigger(submit)
    assert any("All items are done" in str(v) for v in page.values.values())
    assert f"0 of {total} items done" in " ".join(seen_progress)

    out_csv = tmp_path / "study.csv"
    from p2p_app.cli import main

    res = CliRunner().invoke(main, ["export", str(out_csv), "--study", "mini", "--data-dir", str(tmp_path / "data")])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out_csv)
    assert df["trial_id"].nunique() == total
    assert df["is_repeat"].any() and set(df["source"]) == {"generated", "real"}
    assert set(df["rater_id"]) == {app.storage.raters("mini@v1")[0].public_id}
    page.close()

    # a replayed submit (same session, same body) after moving on stores nothing on the next item
    again = BrowserSession(url, query=f"token={token}")
    again.trigger(again.by_id(study(0).signin))
    assert any("All items are done" in str(v) for v in again.values.values())
    again.close()

    # a forged token gets nothing
    intruder = BrowserSession(url, query="token=forged")
    out = intruder.trigger(intruder.by_id(study(0).signin))
    assert any("not valid" in str(v) or "Type your name" in str(v) for v in out.values())
    intruder.close()


@pytest.mark.parametrize("path", ["", "/admin"])
def test_every_event_answers_without_a_server_error(server, path):
    """Smoke test: every event of a fresh, signed-out page (load events included) runs and answers with a
    message or an update — never a crash — and nothing is written."""
    app, url = server
    login = ("admin", "s3cret-admin") if path else None
    page = BrowserSession(url + path, query="token=not-a-token", login=login)
    for i, dep in enumerate(page.config["dependencies"]):
        if dep.get("backend_fn") is False:
            continue  # a script-only step (e.g. scrolling after Submit): the browser runs it, the server has none
        fn_index = dep.get("id", i)
        data = [page.values.get(c) for c in dep["inputs"]]
        page.call(fn_index, data)  # raises if the server reports an error
    assert app.storage.count_ratings() == 0 and app.storage.count_images() == 0
    page.close()


def test_a_replayed_study_submit_is_a_no_op(study_server):
    app, st, token, url = study_server
    page = BrowserSession(url, query=f"token={token}")
    page.trigger(page.by_id(study(0).signin))
    submit = page.by_id(study(0).submit)
    scales = page.answers(study(0), "realism") + page.answers(study(0), "alignment")
    for c in scales:
        page.set(c, 4)
    page.trigger(submit)
    replay = dict(page.last_body)
    rater = app.storage.raters("mini@v1")[0]
    before = app.storage.count_ratings()
    out = page.call(replay["fn_index"], replay["data"])  # item 1 on screen now; the body is item 0's
    assert app.storage.count_ratings() == before
    trials = app.storage.trials_for(rater.pk, app.storage.study("mini", 1).pk)
    assert [t.submitted_at is not None for t in trials] == [True, False]
    assert any("no longer shows" in str(v) for v in out.values())
    # a second tab of the same rater, showing the item the first tab just answered
    tab2 = BrowserSession(url, query=f"token={token}")
    tab2.trigger(tab2.by_id(study(0).signin))
    for c in scales:
        page.set(c, 3)
    page.trigger(submit)  # tab 1 answers item 1
    out = tab2.trigger(tab2.by_id(study(0).submit))
    assert any("already answered" in str(v) for v in out.values()), out
    assert len([t for t in app.storage.trials_for(rater.pk, trials[0].study_pk) if t.submitted_at]) == 2
    page.close()
    tab2.close()
