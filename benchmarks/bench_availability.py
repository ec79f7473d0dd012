"""Availability, storage and honest-rater figures of issue 23, measured like an attacker over HTTP on 127.0.0.1.

Starts the real server (rater app at /, admin at /admin) with the demo config's tiny models in a temporary data
folder and a private Gradio cache folder (``GRADIO_TEMP_DIR``), with ``behind_proxy = true`` so that each client
names its address in ``X-Forwarded-For``, and prints:

1. **Arena flood**: one anonymous client signs in and presses Generate as fast as the server answers for
   ``--seconds`` (a new sign-in whenever a session is refused): bytes written per minute (data folder + Gradio's
   cache), screens made and refused, and what a full day of it can write at most (goal: no more than the disk
   budget).
2. **Storage per 1,000 images shown**: (stored presentation files + every copy in Gradio's cache) ÷ the
   presentation files, over the flood's images and over a study walked by three raters (goal ≤ 1.1).
3. **Admin sign-in during a wrong-password flood** from another address (``--attackers`` threads): the owner's
   time to a successful sign-in, against the same sign-in with no flood (goal: no extra wait).
4. **Repeats and catch screens**: a side-by-side study with planned repeats and catch screens, walked by three
   raters; a script flags a screen when one of its image URLs, or the sha256 of one of its downloaded images,
   was seen on an earlier screen (of the same rater, and of any rater). Detection rate on repeat/catch screens
   and false-positive rate on the others (goal: chance, i.e. the same rate on both).

    python benchmarks/bench_availability.py [--seconds 60] [--model-dir DIR] [--root PATH]

``--root`` imports ``p2p_app`` from another checkout (e.g. ``--root /work/main`` for the figures before issue 23);
the client side (tests/browser_client.py) is this checkout's. ``--model-dir`` reuses tiny models built before.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from probe_blinding import start_server  # the same in-thread server (p2p_app comes from --root at call time)

HERE = Path(__file__).resolve().parent.parent


def folder_bytes(*folders: Path) -> int:
    total = 0
    for folder in folders:
        for p in folder.rglob("*"):
            if p.is_file():
                total += p.stat().st_size
    return total


def png_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.png") if p.is_file())


def client(url: str, address: str, query: str = ""):
    from browser_client import BrowserSession

    page = BrowserSession(url, query=query)
    page.http.headers["X-Forwarded-For"] = address
    return page


def arena_flood(make, seconds: float, cache: Path) -> None:
    from test_e2e import PROMPT, arena

    app = make("flood")
    server, thread, url = start_server(app)
    before = folder_bytes(app.config.data_dir, cache)
    cache_before = png_bytes(cache)
    made = refused = 0
    start_t = time.monotonic()
    page, ids = None, None
    while time.monotonic() - start_t < seconds:
        if page is None:
            page = client(url, "198.51.100.66")
            ids = arena(page)
            page.set(ids["name"], "flooder")
            page.trigger(ids["signin"])
            page.set(ids["modality"], "colonoscopy")
            page.set(ids["prompt"], PROMPT)
        out = page.trigger(ids["generate"])
        ok = all(isinstance(out.get(c), dict) and (out[c].get("value") or out[c]).get("url") for c in ids["images"])
        if ok:
            made += 1
        else:
            refused += 1
            page.close()
            page = None
            if refused > 20 * max(1, made):  # refused every time now: the rest of the hour is refused alike
                break
    elapsed = time.monotonic() - start_t
    written = folder_bytes(app.config.data_dir, cache) - before
    images = png_bytes(app.config.image_dir)
    copies = png_bytes(cache) - cache_before
    per_min = written / elapsed * 60
    print(f"1. arena flood, one anonymous address, {elapsed:.0f} s: {made} screens made, {refused} refused; "
          f"{written / 1e6:.1f} MB written = {per_min / 1e6:.1f} MB/min")
    cfg = app.config
    limit = getattr(cfg, "arena_per_address_per_hour", 0) if getattr(cfg, "arena_limited", False) else 0
    per_screen = written / made if made else 0
    if limit:
        day = min(limit * 24 * per_screen, cfg.arena_disk_budget_mb * (1 << 20))
        print(f"   at the default limits ({limit} Generates per address per hour, budget {cfg.arena_disk_budget_mb} MB):"
              f" a full day of this flood writes at most {day / 1e9:.2f} GB "
              f"({limit * 24 * per_screen / 1e9:.2f} GB by the address limit; the budget caps all addresses together)")
    else:
        print(f"   no limit: a full day at this rate writes {per_min * 1440 / 1e9:.0f} GB")
    print(f"2. storage per 1,000 images shown (arena): {(images + copies) / max(images, 1):.2f}x the presentation files "
          f"({images / 1e6:.1f} MB files, {copies / 1e6:.1f} MB copies in Gradio's cache)")
    server.should_exit = True
    thread.join(timeout=10)
    app.storage.close()


def admin_flood(make, attackers: int) -> None:
    import httpx

    app = make("admin", admin_password="owner-secret")
    server, thread, url = start_server(app)

    def owner_sign_in(address: str) -> tuple[float, int]:
        t0 = time.monotonic()
        tries = 0
        with httpx.Client(base_url=url, headers={"X-Forwarded-For": address}, timeout=120) as http:
            while time.monotonic() - t0 < 90:
                tries += 1
                r = http.post("/admin/login", data={"username": "admin", "password": "owner-secret"})
                if r.status_code == 200:
                    return time.monotonic() - t0, tries
                time.sleep(0.2)
        return float("inf"), tries

    quiet = sorted(owner_sign_in("203.0.113.10")[0] for _ in range(3))[1]
    stop = threading.Event()
    counts = {"wrong": 0, "throttled": 0}

    def attack(i: int) -> None:
        with httpx.Client(base_url=url, headers={"X-Forwarded-For": "198.51.100.66"}, timeout=120) as http:
            while not stop.is_set():
                r = http.post("/admin/login", data={"username": "admin", "password": f"guess-{i}"})
                counts["throttled" if r.status_code == 429 else "wrong"] += 1

    threads = [threading.Thread(target=attack, args=(i,), daemon=True) for i in range(attackers)]
    for t in threads:
        t.start()
    time.sleep(3.0)
    during, tries = owner_sign_in("203.0.113.200")
    stop.set()
    for t in threads:
        t.join(timeout=30)
    shown = f"{during:.3f} s" if during != float("inf") else "not in 90 s"
    print(f"3. admin sign-in from another address during a flood of {attackers} parallel wrong-password clients: "
          f"{shown} ({tries} tries) vs {quiet:.3f} s with no flood; the flood sent {counts['wrong']} wrong passwords "
          f"that were checked and got {counts['throttled']} refusals (429)")
    server.should_exit = True
    thread.join(timeout=10)
    app.storage.close()


def study_detection(make, tmp: Path, cache: Path) -> None:
    from browser_client import BrowserSession, study
    from test_design_screens import design_study

    from p2p_app import reader
    from p2p_app.study import load_study, study_key

    app = make("study")
    st = load_study(design_study(tmp / "study", "side_by_side", repeat_fraction=0.5),
                    known_models=[m.name for m in app.config.models])  # fmt: skip
    app.studies = {study_key(st): st}
    reader.prepare_study(app, st)
    stored = png_bytes(app.config.image_dir)
    tokens = [reader.add_rater(app, st, name)[1] for name in ("ann", "ben", "cat")]
    server, thread, url = start_server(app)
    cache_before = png_bytes(cache)
    screens = []  # (rater, urls, hashes)
    shown_images = 0
    for rater, token in enumerate(tokens):
        page = BrowserSession(url, query=f"token={token}")
        ids = study(0)  # the app's one study
        start_btn = page.by_id(ids.signin)
        submit = page.by_id(ids.submit)
        images = page.images(ids)
        radios = page.of_type("radio", page.under(ids))  # the pick (forced choice) and every scale
        page.trigger(start_btn)
        last = None
        for _ in range(300):
            urls = [page.values[c]["url"] for c in images if page.values.get(c)]
            if not urls or urls == last:
                break
            last = urls
            hashes = [hashlib.sha256(page.http.get(u).content).hexdigest() for u in urls]
            shown_images += len(urls)
            screens.append((rater, urls, hashes))
            for c in radios:
                choices = page.components[c]["props"].get("choices") or []
                page.set(c, choices[0][1] if choices else None)
            page.trigger(submit)
        page.close()
    copies = png_bytes(cache) - cache_before
    server.should_exit = True
    thread.join(timeout=10)
    row = app.storage.study(st.id, st.version)
    truth = []
    for rater in app.storage.raters(study_key(st)):
        trials = sorted(app.storage.trials_for(rater.pk, row.pk), key=lambda t: t.order_index)
        truth += [t.is_repeat or t.item_key.startswith("catch:") for t in trials if t.submitted_at is not None]
    truth = truth[:len(screens)]

    def rates(flags: list[bool]) -> str:
        special = [f for f, t in zip(flags, truth) if t]
        normal = [f for f, t in zip(flags, truth) if not t]
        return (f"{sum(special)}/{len(special)} repeat/catch screens flagged, "
                f"{sum(normal)}/{len(normal)} other screens flagged")

    for what, index in (("URL", 1), ("byte sha256", 2)):
        own, pooled = [], []
        seen_by: dict[int, set] = {}
        seen_all: set = set()
        for screen in screens:
            rater, values = screen[0], set(screen[index])
            own.append(bool(values & seen_by.setdefault(rater, set())))
            pooled.append(bool(values & seen_all))
            seen_by[rater] |= values
            seen_all |= values
        print(f"4. {what} comparison, {len(screens)} screens of 3 raters: same rater: {rates(own)}; "
              f"any rater: {rates(pooled)}")
    print(f"2. storage per 1,000 images shown (study, {shown_images} shown): "
          f"{(stored + copies) / max(stored, 1):.2f}x the presentation files "
          f"({stored / 1e6:.1f} MB files, {copies / 1e6:.1f} MB copies in Gradio's cache)")
    app.storage.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--attackers", type=int, default=9)
    parser.add_argument("--model-dir", default="")
    parser.add_argument("--root", default=str(HERE), help="checkout whose p2p_app is measured")
    parser.add_argument("--only", default="", help="comma-separated parts: flood, admin, study")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="p2p-availability-"))
    cache = tmp / "gradio-cache"
    cache.mkdir()
    os.environ["GRADIO_TEMP_DIR"] = str(cache)  # before Gradio is imported: its cache copies land here
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    sys.path[:0] = [str(Path(args.root).resolve()), str(HERE / "tests")]

    from generators import Registry
    from p2p_app.config import load_config
    from p2p_app.startup import create

    model_dir = Path(args.model_dir) if args.model_dir else tmp / "models"
    config = load_config(data_dir=str(model_dir), model_dir=str(model_dir))
    registry = Registry(config.models, cache_dir=config.model_cache_dir)
    registry.load_all()
    print(f"measuring p2p_app from {Path(args.root).resolve()}")

    def make(name: str, **overrides):
        return create(data_dir=tmp / name, registry=registry, behind_proxy=True, **overrides)

    parts = set(filter(None, args.only.split(","))) or {"flood", "admin", "study"}
    if "flood" in parts:
        arena_flood(make, args.seconds, cache)
    if "admin" in parts:
        admin_flood(make, args.attackers)
    if "study" in parts:
        study_detection(make, tmp, cache)
    registry.close()


if __name__ == "__main__":
    main()
