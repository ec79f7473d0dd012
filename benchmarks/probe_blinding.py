"""Attack the blinding the way a rater's browser could: over raw HTTP against a real server with the demo config.

Starts the server (rater app at /) on 127.0.0.1 with the demo config's tiny models in a temporary data folder,
freezes the radiology pilot study (side by side, real images and controls), then

* runs N live trials (default 12): sign in, generate, fetch every panel's image, rate, submit, read the reveal;
* goes through the whole frozen study as one rater, fetching every panel.

For every panel it records what the browser received (Last-Modified, ETag, byte length, pixel size) and tries
two attacks, printing how often each names the model (chance: 1 / number of panels):

(a) header order: sort a trial's panels by (Last-Modified, ETag) and read them as the models in config order
    (images are generated in config order); in the study, the newest panel is guessed to be the real image,
    and every pair of panels is ordered by its headers. Ties (no header, or equal ones) are broken by a coin
    with a fixed seed, which is what an attacker is left with.
(b) byte size: name each panel's model by the nearest mean byte size of each model in the *other* live trials
    (learned from their reveals: leave-one-out); in the study, guess the real image as the panel whose size is
    farthest from the generated images' mean.

    python benchmarks/probe_blinding.py [--trials 12] [--model-dir DIR]
    python benchmarks/probe_blinding.py --repeats [--model-dir DIR]   # (c) repeats and catch screens (issue 23)

``--model-dir`` reuses tiny models built before (the first build takes about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import re
import sys
import tempfile
import threading
import time
from collections import defaultdict
from email.utils import parsedate_to_datetime
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the raw-HTTP browser client the tests use

PROMPTS = [
    "colonoscopy image with a single sessile polyp of 5-10 mm, no instruments",
    "pedunculated polyp larger than 20 mm in the sigmoid colon",
    "ulcerative colitis, Mayo endoscopic score 2, friable mucosa with erosions",
    "cecum with appendiceal orifice and ileocecal valve, normal mucosa",
    "active bleeding from a small ulcer, biopsy forceps visible",
    "flat lesion in the ascending colon with a central depression",
]


def start_server(app):
    import socket

    import uvicorn

    from p2p_app.ui import create_server

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_server(app), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        if not thread.is_alive():
            raise SystemExit("the server did not start")
        time.sleep(0.05)
    return srv, thread, f"http://127.0.0.1:{port}"


def fetch(http, url: str) -> dict:
    from PIL import Image

    r = http.get(url)
    r.raise_for_status()
    with Image.open(BytesIO(r.content)) as im:
        pixels = im.size
    lm = r.headers.get("last-modified")
    return {
        "last_modified": parsedate_to_datetime(lm).timestamp() if lm else None,
        "etag": r.headers.get("etag"),
        "bytes": len(r.content),
        "pixels": pixels,
        "sha256": hashlib.sha256(r.content).hexdigest(),
        "headers": tuple(sorted(k.lower() for k in r.headers if k.lower() != "date")),
    }


def header_key(panel: dict) -> tuple:
    return (panel["last_modified"] or 0.0, panel["etag"] or "")


def order_by_headers(panels: list[dict], coin: random.Random) -> list[int]:
    """Panel indices oldest → newest by headers; equal keys in a coin-flipped order."""
    idx = list(range(len(panels)))
    coin.shuffle(idx)  # ties: the attacker has nothing better than chance
    return sorted(idx, key=lambda i: header_key(panels[i]))


def live_trials(app, url: str, n: int) -> list[dict]:
    from browser_client import ARENA, BrowserSession

    page = BrowserSession(url)
    ids = {role: page.by_id(getattr(ARENA, role)) for role in ("signin", "name", "prompt", "modality", "generate",
                                                                "submit")}
    realism = page.answers(ARENA, "realism", "scores")
    alignment = page.answers(ARENA, "alignment", "scores")
    images = page.images(ARENA, "scores")
    page.set(ids["name"], "Probe")
    page.trigger(ids["signin"])
    page.set(ids["modality"], "colonoscopy")
    trials = []
    for t in range(n):
        page.set(ids["prompt"], f"{PROMPTS[t % len(PROMPTS)]} (trial {t + 1})")
        page.trigger(ids["generate"])
        panels = [fetch(page.http, page.values[c]["url"]) for c in images]
        for c in realism + alignment:
            page.set(c, 3)
        out = page.trigger(ids["submit"])
        text = " ".join(str(v) for v in out.values())
        reveal = dict(re.findall(r"\*\*(Image [A-Z])\*\* was made by `([^`]+)`", text))
        truth = [reveal[f"Image {'ABC'[i]}"] for i in range(len(panels))]
        trials.append({"panels": panels, "models": truth})
    page.close()
    return trials


def study_screens(app, st, url: str) -> list[dict]:
    from browser_client import BrowserSession, study

    from p2p_app import reader
    from p2p_app.study import study_key
    from p2p_app.ui.page import study_index

    page = BrowserSession(url)
    ids = study(study_index(app, study_key(st)))
    start = page.by_id(ids.signin)
    submit = page.by_id(ids.submit)
    images = page.images(ids)
    scales = page.of_type("radio", page.under(ids))
    name = page.by_id(ids.name)
    page.set(name, "Probe reader")
    page.trigger(start)
    rater = app.storage.raters(study_key(st))[0]
    row = app.storage.study(st.id, st.version)
    screens = []
    while not any("All items are done" in str(v) for v in page.values.values()):
        shown = [page.values[c] for c in images if page.values.get(c)]
        panels = [fetch(page.http, v["url"]) for v in shown]
        (trial,) = [t for t in app.storage.trials_for(rater.pk, row.pk) if t.submitted_at is None]
        models = [app.storage.image(i).model for i in trial.shown_order]  # ground truth, for scoring only
        screens.append({"panels": panels, "models": models})
        for c in scales:
            page.set(c, 3)
        page.trigger(submit)
    page.close()
    return screens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--model-dir", default="")
    parser.add_argument("--seed", type=int, default=0, help="the attacker's coin for ties")
    parser.add_argument("--repeats", action="store_true",
                        help="only (c): find repeat and catch screens by comparing image URLs and byte hashes")
    args = parser.parse_args()
    if args.repeats:
        repeats_probe(args.model_dir)
        return

    coin = random.Random(args.seed)
    app, st, trials, screens = probe(args.trials, args.model_dir)
    config_order = [m.name for m in app.config.models_for("colonoscopy")]
    print_served([p for t in trials + screens for p in t["panels"]])
    live_attacks(trials, config_order, coin)
    study_attacks(screens, st, coin)


def probe(n_trials: int, model_dir: str) -> tuple:
    """Set up the demo app with the radiology pilot frozen, serve it, and collect what a browser receives: the
    live trials and the study's screens. Returns (app, study, trials, screens); the app is closed."""
    from p2p_app import reader
    from p2p_app.study import study_key
    from p2p_app.startup import create

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        app = create(data_dir=tmp, arena_limits="off", **({"model_dir": model_dir} if model_dir else {}))
        st = next(s for s in app.studies.values() if s.id == "radiology_pilot")
        app.studies = {study_key(st): st}
        report = reader.prepare_study(app, st)
        assert report.frozen, report.failures
        print(f"setup: models loaded and {st.id} frozen in {time.perf_counter() - t0:.0f} s")
        srv, thread, url = start_server(app)
        try:
            trials = live_trials(app, url, n_trials)
            screens = study_screens(app, st, url)
        finally:
            srv.should_exit = True
            thread.join(timeout=10)
            app.close()
    return app, st, trials, screens


def print_served(everything: list[dict]) -> None:
    """What every served image looked like to the browser: byte lengths, pixel sizes, headers."""
    print(f"\nserved: {len(everything)} images; distinct byte lengths {sorted({p['bytes'] for p in everything})}; "
          f"pixel sizes {sorted({p['pixels'] for p in everything})}; distinct header-name sets "
          f"{len({p['headers'] for p in everything})}; Last-Modified present on {sum(p['last_modified'] is not None for p in everything)}, "
          f"ETag on {sum(p['etag'] is not None for p in everything)}")


def live_attacks(trials: list[dict], config_order: list[str], coin: random.Random) -> None:
    """The live arena: (a) header order and (b) byte size, each scored against the reveals."""
    # ---- live: (a) header order
    n_panels = sum(len(t["panels"]) for t in trials)
    hits = 0
    for t in trials:
        order = order_by_headers(t["panels"], coin)  # oldest first = first model in config order
        hits += sum(t["models"][i] == config_order[rank] for rank, i in enumerate(order))
    print(f"\nlive arena, {len(trials)} trials, {n_panels} panels (chance {1 / 3:.0%}):")
    print(f"  (a) header order names the model: {hits}/{n_panels} = {hits / n_panels:.0%}")
    # ---- live: (b) byte size, leave-one-out nearest mean
    hits = 0
    for k, t in enumerate(trials):
        sizes = defaultdict(list)
        for j, other in enumerate(trials):
            if j != k:
                for p, m in zip(other["panels"], other["models"]):
                    sizes[m].append(p["bytes"])
        means = {m: sum(v) / len(v) for m, v in sizes.items()}
        for p, m in zip(t["panels"], t["models"]):
            dist = {name: abs(p["bytes"] - mean) for name, mean in means.items()}
            best = min(dist.values())
            guess = coin.choice(sorted(name for name, d in dist.items() if d == best))
            hits += guess == m
    print(f"  (b) byte size names the model:    {hits}/{n_panels} = {hits / n_panels:.0%}")


def study_attacks(screens: list[dict], st, coin: random.Random) -> None:
    """The frozen study: (a) is the newest panel the real image, are pairs in generation order; (b) is the
    odd-sized panel the real image."""
    study_order = list(st.models) + ["real"]  # generated in config order, real images imported last
    real_screens = [s for s in screens if "real" in s["models"]]
    newest_real = 0
    pairs = pair_hits = 0
    size_real = 0
    for s in screens:
        order = order_by_headers(s["panels"], coin)
        for a in range(len(order)):
            for b in range(a + 1, len(order)):
                i, j = order[a], order[b]  # the attacker reads i as made before j
                pairs += 1
                pair_hits += study_order.index(s["models"][i]) < study_order.index(s["models"][j])
        if "real" in s["models"]:
            newest_real += s["models"][order[-1]] == "real"
            sizes = [p["bytes"] for p in s["panels"]]
            mean = sum(sizes) / len(sizes)
            far = max(abs(x - mean) for x in sizes)
            guess = coin.choice([i for i, x in enumerate(sizes) if abs(x - mean) == far])
            size_real += s["models"][guess] == "real"
    n = len(real_screens)
    k = len(st.models)
    print(f"\nfrozen study {st.id}: {len(screens)} screens, panels per screen {sorted({len(s['panels']) for s in screens})}, "
          f"{n} with a real image (chance {1 / k:.0%} per screen, 50% per pair):")
    print(f"  (a) header order: the newest panel is the real image on {newest_real}/{n}; "
          f"pairs in generation order {pair_hits}/{pairs} = {pair_hits / pairs:.0%}")
    print(f"  (b) byte size: the odd-sized panel is the real image on {size_real}/{n}")


def repeats_probe(model_dir: str) -> None:
    """(c) Planned repeats and catch screens, as a script sees them: a side-by-side study with repeats and catch
    screens walked by three raters; a screen is flagged when one of its image URLs, or the sha256 of one of its
    downloaded images, was on an earlier screen (the same rater's, or any rater's). Prints the rate on repeat/catch
    screens and on the others: equal rates (here both 0) mean the script does no better than chance. The same
    measurement is part 4 of benchmarks/bench_availability.py, which also runs it on another checkout (``--root``)."""
    import subprocess

    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_availability.py"), "--only", "study"]
    subprocess.run(cmd + (["--model-dir", model_dir] if model_dir else []), check=True)


if __name__ == "__main__":
    main()
