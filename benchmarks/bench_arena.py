"""Live-arena figures from one run (CPU, the demo's tiny models):

1. generator wrapper time ÷ the raw diffusers pipeline call on the same tiny MSDM model (goal ≤ 1.05);
2. rating-submit round trip ÷ a no-op Gradio event on the same server, both driven the way the browser
   does (queue/join + queue/data over one HTTP session), interleaved;
3. generation cache: a repeat request's time ÷ the first request's time.

    python benchmarks/bench_arena.py [--trials 30]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

PROMPT = "colonoscopy image with a single sessile polyp of 5-10 mm, no instruments"


def start_server(app):
    import gradio as gr
    import uvicorn
    from fastapi import FastAPI

    from p2p_app.ui import build_rater_app

    demo = build_rater_app(app)  # its hidden no-op button (ARENA.noop) is the baseline, on the same server and queue
    server = FastAPI()
    gr.mount_gradio_app(server, demo, path="", enable_monitoring=False, ssr_mode=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(server, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=srv.run, daemon=True).start()
    while not srv.started:
        time.sleep(0.05)
    return srv, f"http://127.0.0.1:{port}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=30)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from bench_generator import bench_family
    from browser_client import ARENA, BrowserSession
    from generators import Registry
    from generators.registry import ModelSpec
    from p2p_app.startup import create

    data = Path(tempfile.mkdtemp(prefix="p2p-bench-"))
    app = create(data_dir=data, arena_limits="off")  # one client generates many times on purpose

    # 1. wrapper ÷ raw on the same tiny model
    with Registry([ModelSpec.from_dict({"name": "msdm", "family": "msdm", "source": "tiny:msdm", "modality": "colonoscopy"})],
                  cache_dir=app.config.model_cache_dir) as reg:
        raw, wrapped = bench_family(reg, "msdm", runs=30, warmup=3)
    print(f"generator wrapper: raw pipeline {raw * 1000:.1f} ms, wrapper {wrapped * 1000:.1f} ms, "
          f"ratio {wrapped / raw:.3f} (goal <= 1.05)")

    # 2. submit round trip ÷ no-op event
    srv, url = start_server(app)
    page = BrowserSession(url)
    signin = page.by_id(ARENA.signin)
    page.set(page.by_id(ARENA.name), "Benchmark rater")
    page.trigger(signin)
    prompt = page.by_id(ARENA.prompt)
    generate = page.by_id(ARENA.generate)
    submit = page.by_id(ARENA.submit)
    noop = page.by_id(ARENA.noop)
    radios = page.answers(ARENA, "realism", "scores") + page.answers(ARENA, "alignment", "scores")
    t_submit, t_noop = [], []
    for i in range(args.trials + 3):
        page.set(prompt, f"{PROMPT} ({i})")
        page.trigger(generate)
        for c in radios:
            page.set(c, 1 + i % 5)
        pair = [("submit", submit), ("noop", noop)]
        if i % 2:
            pair.reverse()
        for label, comp in pair:
            t0 = time.perf_counter()
            out = page.trigger(comp)
            dt = time.perf_counter() - t0
            if label == "submit":
                assert any("Ratings saved" in str(v) for v in out.values()), out
            if i >= 3:  # warm-up
                (t_submit if label == "submit" else t_noop).append(dt)
    ms, mn = statistics.median(t_submit), statistics.median(t_noop)
    print(f"submit round trip: {ms * 1000:.1f} ms median, no-op event {mn * 1000:.1f} ms median, "
          f"ratio {ms / mn:.2f} ({len(t_submit)} trials, {app.storage.count_ratings()} ratings stored)")
    page.close()
    srv.should_exit = True

    # 3. generation cache
    gen = app.registry.get("colon-flux-tiny")
    firsts, repeats = [], []
    for seed in range(10):
        t0 = time.perf_counter()
        a = app.generate_image(gen, PROMPT, 10_000 + seed)
        firsts.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        b = app.generate_image(gen, PROMPT, 10_000 + seed)
        repeats.append(time.perf_counter() - t0)
        assert b.cached and b.image.id == a.image.id
    f, r = statistics.median(firsts), statistics.median(repeats)
    print(f"generation cache: first request {f * 1000:.1f} ms, repeat {r * 1000:.2f} ms, ratio {r / f:.4f}")
    app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
