"""Many raters at once against a real server, driven the way the browser does.

The server runs in its own process (``p2p_app.ui.serve`` on 127.0.0.1, the demo's tiny CPU models, one SQLite
file or ``--database-url``). Each simulated rater is one HTTP session speaking Gradio's browser protocol
(queue/join + queue/data SSE, tests/browser_client.py): it signs in, then answers items (study mode) or
generates and rates trials (arena mode), and between submits presses the app's hidden no-op button (a private
event that does nothing). Printed: rows expected (from acknowledged submits) and stored, errors, and the submit
round trip ÷ the no-op round trip at p50 and p95 under the same load.

    python benchmarks/bench_load.py --mode study --raters 50 --items 8
    python benchmarks/bench_load.py --mode arena --raters 50 --rounds 2

Goal (issue 10): 0 errors and p95 ratio <= 1.3 at 50 raters on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from deploy_harness import wait_until_serving  # noqa: E402

PROMPT = "colonoscopy image with a single sessile polyp of 5-10 mm, no instruments"
REALISM, ALIGNMENT = "realism", "alignment"  # the question keys: their inputs' ids (p2p_app/ui/page.py)
CODE = re.compile(r"resume code: `([A-Za-z0-9_\-]+)`")

SERVER = """
import sys
sys.path[:0] = [{root!r}]
from p2p_app.startup import create
from p2p_app.ui import serve
app = create({config!r}, data_dir={data!r}, database_url={db!r}, model_dir={models!r},
             arena_limits='off')  # a load test, not a flood: every rater is on 127.0.0.1
serve(app, port={port})
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Site:
    """A data folder with a prepared, frozen open study and a config that serves it."""

    root: Path
    config: Path
    data: Path
    models: Path
    database_url: str | None

    def start(self) -> tuple[subprocess.Popen, str]:
        port = free_port()
        code = SERVER.format(root=str(ROOT), config=str(self.config), data=str(self.data), db=self.database_url,
                             models=str(self.models), port=port)  # fmt: skip
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
               "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}  # fmt: skip
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL,
                                stderr=open(self.root / "server.log", "ab"))  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(proc, url, self.root / "server.log")
        return proc, url


def make_site(root: Path, n_prompts: int, database_url: str | None = None, models: Path | None = None,
              slots: int = 2) -> Site:  # fmt: skip
    """Write an open study (n_prompts × 2 tiny models, overlap 2 of ``slots`` rater slots: with 2 slots every
    rater gets every item, however many join), generate its images and freeze it."""
    from p2p_app import reader
    from p2p_app.startup import create
    from p2p_app.study import write_study

    root.mkdir(parents=True, exist_ok=True)
    models = models or root / "models"
    folder = root / "study"
    settings = {
        "id": "load", "version": 1, "title": "Load study", "instructions": "Rate each image.",
        "modality": "colonoscopy", "design": "single", "models": ["colon-msdm-tiny", "colon-flux-tiny"],
        "seeds": [1], "overlap_k": 2, "repeat_fraction": 0.0, "open": True, "n_raters": slots,
    }  # fmt: skip
    prompts = [{"prompt_id": f"p{i}", "prompt": f"{PROMPT}, case {i}", "real_image": ""} for i in range(n_prompts)]
    study_toml = write_study(folder, settings, prompts)
    demo = (ROOT / "studies" / "demo.toml").read_text(encoding="utf-8")
    config = root / "config.toml"
    config.write_text(re.sub(r"(?m)^studies = .*$", lambda _m: f"studies = [{json.dumps(str(study_toml))}]", demo),
                      encoding="utf-8")  # fmt: skip
    data = root / "data"
    app = create(config, data_dir=data, database_url=database_url, model_dir=str(models))
    try:
        for st in app.studies.values():
            reader.prepare_study(app, st)
    finally:
        app.close()
    return Site(root, config, data, models, database_url)


@dataclass
class Rater:
    index: int
    submit_ms: list[float] = field(default_factory=list)
    noop_ms: list[float] = field(default_factory=list)
    acked: list[tuple[int, int]] = field(default_factory=list)  # (trial id, rating rows) of acknowledged submits
    errors: list[str] = field(default_factory=list)
    code: str = ""


def _submit(page, submit_fn: int, shown_field: int, r, n_rows: int) -> None:
    """Press Submit with the page's current values; an acknowledged submit is expected to store ``n_rows`` rows."""
    trial_id = int(page.values[shown_field])
    dep = page.dependency(submit_fn)
    ms, out = _timed(page, submit_fn, [page.values.get(i) for i in dep["inputs"]])
    problem = _problem(out)
    if problem:
        r.errors.append(problem)
    else:
        r.submit_ms.append(ms)
        r.acked.append((trial_id, n_rows))


def _timed(page, fn_index: int, data: list) -> tuple[float, dict]:
    t0 = time.perf_counter()
    out = page.call(fn_index, data)
    return (time.perf_counter() - t0) * 1000, out


def _problem(out: dict) -> str | None:
    text = " ".join(str(v) for v in out.values())
    for mark in ("⚠️", "⛔"):
        if mark in text:
            return text[text.index(mark): text.index(mark) + 160]
    return None


def study_rater(url: str, r: Rater, items: int, stop: threading.Event, token: str = "") -> None:
    from browser_client import ARENA, BrowserSession, study

    page = BrowserSession(url, query=f"token={token}" if token else "")
    try:
        ids = study(0)  # the site's one study
        start = page.by_id(ids.signin)
        submit = page.by_id(ids.submit)
        name = page.by_id(ids.name)
        noop_fn = page.event_for(page.by_id(ARENA.noop))
        submit_fn = page.event_for(submit)
        shown_field = page.by_id(ids.shown)  # the study's hidden trial field
        images = page.images(ids)
        scales = page.answers(ids, REALISM) + page.answers(ids, ALIGNMENT)
        page.set(name, f"load rater {r.index}")
        out = page.trigger(start)
        m = CODE.search(" ".join(str(v) for v in out.values()))
        r.code = m.group(1) if m else token
        for _ in range(items):
            if stop.is_set() or any("All items are done" in str(v) for v in page.values.values()):
                break
            ms, _ = _timed(page, noop_fn, [])
            r.noop_ms.append(ms)
            for c in scales:
                page.set(c, 3)
            n_panels = sum(1 for c in images if page.values.get(c))
            _submit(page, submit_fn, shown_field, r, n_rows=n_panels * 2)
    except Exception as exc:  # noqa: BLE001 - counted as an error of this rater
        r.errors.append(f"{type(exc).__name__}: {exc}"[:200])
    finally:
        page.close()


def arena_rater(url: str, r: Rater, rounds: int, stop: threading.Event) -> None:
    from browser_client import ARENA, BrowserSession

    page = BrowserSession(url)
    try:
        signin = page.by_id(ARENA.signin)
        name = page.by_id(ARENA.name)
        prompt = page.by_id(ARENA.prompt)
        generate = page.by_id(ARENA.generate)
        submit = page.by_id(ARENA.submit)
        noop_fn = page.event_for(page.by_id(ARENA.noop))
        shown_field = page.by_id(ARENA.shown)
        scales = page.answers(ARENA, REALISM, "scores") + page.answers(ARENA, ALIGNMENT, "scores")
        submit_fn = page.event_for(submit)
        page.set(name, f"arena rater {r.index}")
        page.trigger(signin)
        for i in range(rounds):
            if stop.is_set():
                break
            page.set(prompt, f"{PROMPT}, rater {r.index} round {i}")
            out = page.trigger(generate)
            if _problem(out):
                r.errors.append(_problem(out))
                continue
            ms, _ = _timed(page, noop_fn, [])
            r.noop_ms.append(ms)
            for c in scales:
                page.set(c, 4)
            _submit(page, submit_fn, shown_field, r, n_rows=6)
    except Exception as exc:  # noqa: BLE001
        r.errors.append(f"{type(exc).__name__}: {exc}"[:200])
    finally:
        page.close()


def run_raters(target, url: str, n: int, *args, tokens: list[str] | None = None) -> tuple[list[Rater], float]:
    stop = threading.Event()
    raters = [Rater(i) for i in range(n)]
    extra = [(tokens[i],) if tokens else () for i in range(n)]
    threads = [threading.Thread(target=target, args=(url, r, *args, stop, *extra[r.index]), daemon=True) for r in raters]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return raters, time.perf_counter() - t0


def stored(site: Site, mode: str) -> tuple[set[int], int]:
    """(ids of trials with stored ratings, rating rows) in the database, for the study or the arena."""
    from p2p_app.storage import Storage

    s = Storage(site.database_url or f"sqlite:///{site.data / 'p2p.sqlite'}", site.data / "images")
    try:
        df = s.ratings_frame()
        df = df[(df["study"] == "live") == (mode == "arena")]
        return set(int(t) for t in df["trial_id"].unique()), len(df)
    finally:
        s.close()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def report(mode: str, raters: list[Rater], site: Site, seconds: float) -> dict:
    acked = [a for r in raters for a in r.acked]
    trials, rows = stored(site, mode)
    errors = [e for r in raters for e in r.errors]
    sub = [x for r in raters for x in r.submit_ms]
    noop = [x for r in raters for x in r.noop_ms]
    missing = {t for t, _ in acked} - trials
    fig = {
        "mode": mode, "raters": len(raters), "seconds": round(seconds, 1),
        "submits_acknowledged": len(acked), "rows_expected": sum(n for _, n in acked), "rows_stored": rows,
        "acknowledged_but_missing": len(missing), "errors": len(errors),
        "submit_p50_ms": round(pct(sub, 0.5), 1), "submit_p95_ms": round(pct(sub, 0.95), 1),
        "noop_p50_ms": round(pct(noop, 0.5), 1), "noop_p95_ms": round(pct(noop, 0.95), 1),
    }  # fmt: skip
    fig["ratio_p50"] = round(fig["submit_p50_ms"] / fig["noop_p50_ms"], 2) if noop else float("nan")
    fig["ratio_p95"] = round(fig["submit_p95_ms"] / fig["noop_p95_ms"], 2) if noop else float("nan")
    print(textwrap.dedent(f"""\
        {mode}: {len(raters)} raters, {seconds:.1f} s
          rows expected {fig['rows_expected']} / stored {rows}  (submits acknowledged {len(acked)}, \
acknowledged but not stored {len(missing)})
          errors {len(errors)}
          submit  p50 {fig['submit_p50_ms']} ms  p95 {fig['submit_p95_ms']} ms
          no-op   p50 {fig['noop_p50_ms']} ms  p95 {fig['noop_p95_ms']} ms
          submit ÷ no-op: p50 {fig['ratio_p50']}×  p95 {fig['ratio_p95']}×"""))
    for e in sorted(set(errors))[:5]:
        print("   error:", e)
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["study", "arena", "both"], default="both")
    parser.add_argument("--raters", type=int, default=50)
    parser.add_argument("--items", type=int, default=6, help="study items each rater answers")
    parser.add_argument("--prompts", type=int, default=12, help="prompts in the generated open study")
    parser.add_argument("--rounds", type=int, default=2, help="arena trials each rater generates and rates")
    parser.add_argument("--database-url", default=None, help="default: a SQLite file in the work folder")
    parser.add_argument("--work", default=None, help="work folder (default: a temp folder, removed after)")
    args = parser.parse_args(argv)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="p2p-load-"))
    try:
        t0 = time.perf_counter()
        site = make_site(work, args.prompts, args.database_url)
        print(f"prepared the study in {time.perf_counter() - t0:.0f} s; cores: {os.cpu_count()} "
              "(shared with whatever else runs on this machine)")  # fmt: skip
        proc, url = site.start()
        failed = False
        try:
            if args.mode in ("study", "both"):
                raters, secs = run_raters(study_rater, url, args.raters, args.items)
                fig = report("study", raters, site, secs)
                failed |= fig["errors"] > 0 or fig["acknowledged_but_missing"] > 0
            if args.mode in ("arena", "both"):
                raters, secs = run_raters(arena_rater, url, args.raters, args.rounds)
                fig = report("arena", raters, site, secs)
                failed |= fig["errors"] > 0 or fig["acknowledged_but_missing"] > 0
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        return 1 if failed else 0
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
