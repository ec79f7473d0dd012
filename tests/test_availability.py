"""Issue 23, driven like an attacker over HTTP on 127.0.0.1 (every flood bounded in count): no one can fill the disk
through the live arena, lock the owner out of /admin, script past repeats and catch screens by comparing URLs or
bytes, or get a damaged image served; resume codes and malformed requests are answered clearly.

Addresses: the server runs with ``behind_proxy = true``, so each client names its address in ``X-Forwarded-For``
(the last hop), the way a Space's proxy does; that lets one test play several addresses from 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from browser_client import ARENA, BrowserSession, study
from conftest import make_app, running_server
from test_e2e import PROMPT, arena

from p2p_app import reader
from p2p_app.blinding import presentation_png_size
from p2p_app.budget import BUDGET_FULL, DISK_LOW, MB
from p2p_app.storage import LIVE_STUDY
from p2p_app.study import load_study, study_key

pytestmark = pytest.mark.e2e


def client(url: str, address: str, query: str = "") -> BrowserSession:
    page = BrowserSession(url, query=query)
    page.http.headers["X-Forwarded-For"] = address
    return page


def message_of(page: BrowserSession, out: dict) -> str:
    return " ".join(v.get("value") or "" for v in out.values() if isinstance(v, dict) and isinstance(v.get("value"), str))


def sign_in(page: BrowserSession, name: str) -> dict:
    ids = arena(page)
    page.set(ids["name"], name)
    page.trigger(ids["signin"])
    page.set(ids["modality"], "colonoscopy")
    page.set(ids["prompt"], PROMPT)
    return ids


def generate(page: BrowserSession, ids: dict) -> tuple[bool, str]:
    out = page.trigger(ids["generate"])
    shown = [out.get(c) for c in ids["images"]]
    made = all(isinstance(v, dict) and (v.get("value") or v).get("url") for v in shown)
    return made, message_of(page, out)


def rate_and_submit(page: BrowserSession, ids: dict) -> None:
    for c in ids["realism"] + ids["alignment"]:
        page.set(c, 3)
    page.trigger(ids["submit"])


# ------------------------------------------------------------------------------------------ the arena's limits


def test_a_generate_flood_is_held_per_session_and_per_address_not_for_others(tmp_path, demo_registry):
    app = make_app(tmp_path / "data", demo_registry, behind_proxy=True, arena_per_session_per_hour=2,
                   arena_per_address_per_hour=3)  # fmt: skip
    with running_server(app) as url:
        flood = client(url, "198.51.100.66")
        ids = sign_in(flood, "flooder")
        results = [generate(flood, ids) for _ in range(4)]  # bounded: 4 presses
        assert [made for made, _ in results] == [True, True, False, False]
        assert "the most one session may" in results[2][1] and "try again in" in results[2][1]
        again = client(url, "198.51.100.66")  # a fresh sign-in from the same address: the address limit holds
        ids2 = sign_in(again, "flooder again")
        made, _ = generate(again, ids2)
        assert made
        made, text = generate(again, ids2)
        assert not made and "from your network" in text
        other = client(url, "203.0.113.5")  # someone else is not held up by the flood
        assert generate(other, sign_in(other, "Dr Elsewhere"))[0]
        texts = []
        for i in range(5):  # new raters (database rows) from one address: twice its Generates an hour, 6 here
            page = client(url, "198.51.100.66")
            ids3 = arena(page)
            page.set(ids3["name"], f"flooder {i}")
            texts.append(message_of(page, page.trigger(ids3["signin"])))
        assert ["new sign-ins" in t for t in texts] == [False] * 4 + [True]
    assert app.storage.count_arena_images() == 4 * 3  # refused Generates wrote nothing
    app.storage.close()


def test_the_disk_budget_cleans_unrated_images_keeps_rated_ones_and_never_blocks_a_study(tmp_path, demo_registry):
    from test_reader_study import small_study

    size = presentation_png_size(512)
    budget_mb = -(-(4 * size) // MB)  # room for one screen of three images, not two
    app = make_app(tmp_path / "data", demo_registry, behind_proxy=True, arena_disk_budget_mb=budget_mb)
    st = load_study(small_study(tmp_path / "mini"), known_models=[m.name for m in app.config.models])
    app.studies = {study_key(st): st}
    reader.prepare_study(app, st)
    study_images = app.storage.count_images()
    clock = [app.arena_budget.now()]
    app.arena_budget.now = lambda: clock[0]
    with running_server(app) as url:
        page = client(url, "198.51.100.7")
        ids = sign_in(page, "visitor")
        assert generate(page, ids)[0]
        first = [Path(app.storage.image(i).file_path) for i in app.storage.trials_for(
            app.storage.raters(LIVE_STUDY)[0].pk, None)[0].shown_order]
        made, text = generate(page, ids)  # a second screen would pass the budget; nothing is old enough to clean
        assert not made and BUDGET_FULL in text
        clock[0] += timedelta(minutes=20)  # the unrated first screen is abandoned now: cleaned to make room
        assert generate(page, ids)[0]
        assert not any(p.exists() for p in first)
        rate_and_submit(page, ids)  # the second screen is rated: it stays
        clock[0] += timedelta(hours=1)
        made, text = generate(page, ids)
        assert not made and BUDGET_FULL in text
        assert app.storage.count_arena_images() == 3 and app.storage.count_images() == study_images + 3

        app.arena_budget.free_bytes = lambda _p: 10 * MB  # the disk is nearly full: the arena stops first ...
        late = client(url, "203.0.113.8")
        made, text = generate(late, sign_in(late, "late visitor"))
        assert not made and DISK_LOW in text
    # ... and a study rater still submits (a few hundred bytes)
    session = app.study_sign_in(st, name="", token=reader.add_rater(app, st, "ann")[1])
    shown = app.next_trial(st, session)
    answers = {p.position: {q.key: q.levels[0][0] for q in st.questions if q.kind == "scale"} for p in shown.panels}
    assert app.submit_trial(st, session, shown.trial_id, answers).status == "stored"
    assert app.storage.count_images() == study_images + 3  # no study image was ever deleted
    app.storage.close()


# ------------------------------------------------------------------------------------------ admin sign-in


def test_a_wrong_password_flood_never_keeps_the_owner_out(tmp_path, demo_registry):
    app = make_app(tmp_path / "data", demo_registry, admin_password="owner-secret", behind_proxy=True,
                   admin_trusted_networks=["192.0.2.0/24"])  # fmt: skip
    with running_server(app) as url:
        signed_in = httpx.Client(base_url=url, headers={"X-Forwarded-For": "203.0.113.1"}, timeout=30)
        assert signed_in.post("/admin/login", data={"username": "admin", "password": "owner-secret"}).status_code == 200
        attacker = httpx.Client(base_url=url, headers={"X-Forwarded-For": "198.51.100.66"}, timeout=30)
        answers = [attacker.post("/admin/login", data={"username": "admin", "password": f"guess{i}"})
                   for i in range(40)]  # fmt: skip
        codes = [r.status_code for r in answers]
        assert codes[:5] == [400] * 5 and 429 in codes  # five free tries, then the attacker must wait
        assert all(int(r.headers["retry-after"]) >= 1 for r in answers if r.status_code == 429)
        assert "try again in" in answers[-1].json()["error"]
        # the right password from the attacker's address waits too (it is that address's turn that is held) ...
        assert attacker.post("/admin/login", data={"username": "admin", "password": "owner-secret"}).status_code == 429
        # ... but never the owner's: another address signs in at its first try, a signed-in admin is unaffected
        owner = httpx.Client(base_url=url, headers={"X-Forwarded-For": "203.0.113.200"}, timeout=30)
        assert owner.post("/admin/login", data={"username": "admin", "password": "owner-secret"}).status_code == 200
        assert signed_in.get("/admin/config").status_code == 200
        neighbour = httpx.Client(base_url=url, headers={"X-Forwarded-For": "198.51.100.67"}, timeout=30)
        assert neighbour.post("/admin/login", data={"username": "admin", "password": "owner-secret"}).status_code == 200
        trusted = httpx.Client(base_url=url, headers={"X-Forwarded-For": "192.0.2.9"}, timeout=30)
        assert all(trusted.post("/admin/login", data={"username": "admin", "password": "typo"}).status_code == 400
                   for _ in range(12))  # the owner's known network is never slowed down
        assert trusted.post("/admin/login", data={"username": "admin", "password": "owner-secret"}).status_code == 200
        # an outsider learns nothing about server paths from the admin file route
        real = next(Path(app.config.image_dir).glob("*.png"), None) or Path(__file__)
        probes = [attacker.get(f"/admin/gradio_api/file={p}") for p in (real, "/nonexistent/x.csv", "/etc/passwd")]
        assert len({(r.status_code, r.content) for r in probes}) == 1 and probes[0].status_code == 401
    app.storage.close()


# ------------------------------------------------------------------------------------------ repeats and catch screens


def walk_study(url: str, token: str) -> list[tuple[list[str], list[str]]]:
    """Every screen of a rater's sequence as a script sees it: (image URLs, sha256 of the served bytes)."""
    page = BrowserSession(url, query=f"token={token}")
    start = page.by_id(study(0).signin)
    submit = page.by_id(study(0).submit)
    images = page.images(study(0))
    radios = page.of_type("radio", page.under(study(0)))  # the pick (forced choice) and every scale
    page.trigger(start)
    screens = []
    for _ in range(200):
        shown = [page.values[c] for c in images if page.values.get(c)]
        if not shown:
            break
        urls = [v["url"] for v in shown]
        if screens and urls == screens[-1][0]:  # the last submit showed no new screen: the sequence is done
            break
        screens.append((urls, [hashlib.sha256(page.http.get(u).content).hexdigest() for u in urls]))
        for c in radios:
            choices = page.components[c]["props"].get("choices") or []
            page.set(c, choices[0][1] if choices else None)
        page.trigger(submit)
    page.close()
    return screens


def test_repeats_and_catch_screens_have_urls_and_bytes_of_their_own(tmp_path, demo_registry):
    from test_design_screens import design_study

    app = make_app(tmp_path / "data", demo_registry)
    st = load_study(design_study(tmp_path / "s", "side_by_side", repeat_fraction=0.5),
                    known_models=[m.name for m in app.config.models])  # fmt: skip
    app.studies = {study_key(st): st}
    reader.prepare_study(app, st)
    _, token = reader.add_rater(app, st, "ann")
    with running_server(app) as url:
        screens = walk_study(url, token)
    row = app.storage.study(st.id, st.version)
    rater = app.storage.raters(study_key(st))[0]
    trials = sorted(app.storage.trials_for(rater.pk, row.pk), key=lambda t: t.order_index)
    assert len(trials) == len(screens) >= 4
    special = [t.is_repeat or t.item_key.startswith("catch:") for t in trials]
    assert any(t.is_repeat for t in trials) and any(t.item_key.startswith("catch:") for t in trials)
    # the same pictures do come back (a repeat, a catch screen's plain copies) ...
    seen_images = [set(t.shown_order) for t in trials]
    assert any(seen_images[i] & set().union(*seen_images[:i]) for i in range(1, len(trials))) or any(special)
    # ... but a script comparing URLs or byte hashes with earlier screens flags nothing
    flagged = []
    urls_seen: set[str] = set()
    hashes_seen: set[str] = set()
    for urls, hashes in screens:
        flagged.append(bool(urls_seen & set(urls)) or bool(hashes_seen & set(hashes)))
        urls_seen |= set(urls)
        hashes_seen |= set(hashes)
    assert not any(flagged), (flagged, special)
    assert all(json.dumps(u).count("/gradio_api/file=p2p/") == 1 for urls, _ in screens for u in urls)
    app.storage.close()


# ------------------------------------------------------------------------------------------ damaged images


def test_a_damaged_study_image_is_never_served_and_is_listed(tmp_path, demo_registry, caplog):
    from test_reader_study import small_study

    from p2p_app.ui.admin import damaged_note

    app = make_app(tmp_path / "data", demo_registry)
    st = load_study(small_study(tmp_path / "mini"), known_models=[m.name for m in app.config.models])
    app.studies = {study_key(st): st}
    reader.prepare_study(app, st)
    _, token = reader.add_rater(app, st, "ann")
    with running_server(app) as url:
        page = BrowserSession(url, query=f"token={token}")
        start = page.by_id(study(0).signin)
        images = page.images(study(0))
        page.trigger(start)
        url_before = next(page.values[c]["url"] for c in images if page.values.get(c))
        assert page.http.get(url_before).status_code == 200
        session = app.study_sign_in(st, token=token)
        trial = app.next_trial(st, session)
        damaged = Path(app.storage.image(trial.panels[0].image_id).file_path)
        damaged.write_bytes(damaged.read_bytes()[:393_635])  # truncated, as a full disk or a bad copy leaves it
        assert page.http.get(url_before).status_code == 404  # the URL the page holds: refused, never the broken bytes
        out = page.trigger(start)  # the screen is shown again: refused with a clear message, nothing served
        assert "damaged on the server" in message_of(page, out)
    assert [b.image_id for b in app.broken_images()] == [trial.panels[0].image_id]
    assert trial.panels[0].image_id in damaged_note(app) and "is not served" in caplog.text
    app.storage.close()


# ------------------------------------------------------------------------------------------ codes and requests


def test_resume_code_guesses_are_throttled_per_address(tmp_path, demo_registry):
    app = make_app(tmp_path / "data", demo_registry, behind_proxy=True)
    with running_server(app) as url:
        guesser = client(url, "198.51.100.66")
        ids = arena(guesser)
        resume = guesser.by_id(ARENA.resume)
        texts = []
        for i in range(8):  # bounded
            guesser.set(resume, f"guess-{i:04d}")
            texts.append(message_of(guesser, guesser.trigger(ids["signin"])))
        assert all("not right" in t for t in texts[:5]) and "Too many wrong codes" in texts[5]
        honest = client(url, "203.0.113.5")
        ids2 = arena(honest)
        honest.set(ids2["name"], "Dr Honest")
        out = honest.trigger(ids2["signin"])
        assert "Too many" not in message_of(honest, out)
    app.storage.close()


def test_malformed_api_requests_get_400_not_500(tmp_path, demo_registry):
    app = make_app(tmp_path / "data", demo_registry)
    with running_server(app) as url:
        http = httpx.Client(base_url=url, timeout=30)
        deep = "[" * 5000 + "]" * 5000
        bodies = {
            "/gradio_api/queue/join": '{"data": ' + deep + ', "fn_index": 0, "session_hash": "x"}',
            "/gradio_api/call/v2/false": "{}",
            "/gradio_api/call/nothing_here": '{"data": []}',
            "/gradio_api/run/nothing_here": '{"data": []}',
        }
        for path, body in bodies.items():
            r = http.post(path, content=body, headers={"content-type": "application/json"})
            assert r.status_code == 400 and "error" in r.json(), (path, r.status_code, r.text[:200])
        shallow = {"data": [[[[1]]]], "fn_index": 10_000, "session_hash": "x"}
        assert http.post("/gradio_api/queue/join", json=shallow).status_code == 400
    app.storage.close()


def test_the_rater_app_has_no_session_snapshots(tmp_path, demo_registry):
    """The deep-link snapshot of a tab's session held its components' values, the resume code shown once included."""
    app = make_app(tmp_path / "data", demo_registry)
    with running_server(app) as url:
        page = BrowserSession(url)
        ids = arena(page)
        page.set(ids["name"], "Dr Snapshot")
        out = page.trigger(ids["signin"])
        code = app.storage.raters(LIVE_STUDY)[0]
        assert "resume code" in json.dumps(out)  # shown once on the page ...
        for params in ({"session_hash": page.session_hash}, {"session_hash": "nope"}):
            r = page.http.get(f"{url}/gradio_api/deep_link", params=params)  # ... never in a snapshot
            assert r.status_code == 404 and "resume" not in r.text and code.name not in r.text
    app.storage.close()


def test_a_read_only_data_folder_stops_the_start_with_a_clear_message(tmp_path, monkeypatch):
    import errno
    import tempfile

    from click.testing import CliRunner

    from p2p_app.cli import main

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    result = CliRunner().invoke(main, ["serve", "--data-dir", str(data), "--port", "1"])
    assert result.exit_code != 0 and "cannot be written (Read-only file system)" in result.output, result.output
    assert str(data) in result.output and "P2P_DATA_DIR" in result.output
    assert tempfile.mkstemp is read_only and not (data / "p2p.sqlite").exists()  # nothing was created


def test_a_slot_filled_by_another_server_keeps_its_image_and_leaves_no_orphan(tmp_path, demo_registry):
    from test_reader_study import small_study

    first = make_app(tmp_path / "data", demo_registry)
    second = make_app(tmp_path / "data", demo_registry)  # a second server on the same folder
    st = load_study(small_study(tmp_path / "mini"), known_models=[m.name for m in first.config.models])
    row = first.storage.register_study(st.id, st.version, st.title, st.design_hash())
    slot = next(s for s in st.image_slots() if s.is_real)
    mine = first.add_real_image(slot.real_path, slot.prompt, st.modality, prompt_id=slot.prompt_id)
    theirs = second.add_real_image(slot.real_path, slot.prompt, st.modality, prompt_id=slot.prompt_id)
    assert first.storage.set_study_slot(row.pk, slot.key, mine.id, first_wins=True) == mine.id
    assert second.storage.set_study_slot(row.pk, slot.key, theirs.id, first_wins=True) == mine.id
    assert second.storage.image(theirs.id) is None and not Path(theirs.file_path).exists()
    files = {p.name for p in first.config.image_dir.glob("*.png")}
    assert files == {f"{mine.id}.png"}  # no orphan image
    first.storage.close()
    second.storage.close()


def test_marks_of_one_image_sent_twice_are_refused_not_merged():
    from p2p_app.service import UserError
    from p2p_app.ui.common import page_measures

    points = [[0.1 + i / 100, 0.5] for i in range(20)]
    assert page_measures("", json.dumps({"1": points}))[1] == {1: points}
    for key in ("01", "1"):  # 40 marks sent for image 1 under two keys: once 20 were silently dropped
        text = '{"1": %s, "%s": %s}' % (json.dumps(points), key, json.dumps(points))
        with pytest.raises(UserError, match="twice.*nothing was saved"):
            page_measures("", text)
