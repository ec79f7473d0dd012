"""Generation as a service (``p2p serve-models``) vs in-process, on the demo's tiny models (CPU):

1. arena: N concurrent live-arena trials (``P2PApp.live_generate``: one image per model of the modality,
   modalities alternating, so each trial is one model set), once with the models in the app process and once
   with an app whose model entries name the service (same machine, HTTP on 127.0.0.1): wall time of all
   trials and the ratio service ÷ in-process;
2. batching: N concurrent requests for one model through the service with batching off, forced on, and
   ``auto`` (batched only where batched pixels equal one-at-a-time pixels): throughput, pipeline calls, and
   how many 8-bit values of the forced-batch images differ from the one-at-a-time images.

    python benchmarks/bench_generation_service.py [--trials 8] [--requests 8] [--model colon-msdm-tiny]
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

PROMPTS = (
    "colonoscopy image with a single sessile polyp of 5-10 mm, no instruments",
    "pedunculated adenomatous polyp on a long stalk in the descending colon",
    "flat serrated lesion in the ascending colon seen with narrow band imaging",
    "small hyperplastic polyp in the rectum, white light endoscopy",
    "chest x-ray, posteroanterior view, showing right lower lobe consolidation",
    "frontal chest radiograph with a small left pleural effusion",
    "pneumothorax on the right with a visible pleural line",
    "cardiomegaly with pulmonary edema and Kerley B lines",
)


def serve(asgi):
    import uvicorn

    from conftest import free_port

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=srv.run, daemon=True).start()
    while not srv.started:
        time.sleep(0.02)
    return srv, f"http://127.0.0.1:{port}"


def arena_round(app, trials: int) -> float:
    """Wall seconds for ``trials`` concurrent live trials (distinct raters, prompts, modalities alternating)."""
    raters = [app.sign_in(f"Rater {i}") for i in range(trials)]

    def trial(i: int) -> int:
        modality = ("colonoscopy", "radiology")[i % 2]
        shown = app.live_generate(raters[i], modality, f"{PROMPTS[i % len(PROMPTS)]} {time.monotonic_ns()}")
        return len(shown.panels)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(trials) as pool:
        panels = list(pool.map(trial, range(trials)))
    assert all(p == 3 for p in panels)
    return time.perf_counter() - t0


def remote_config(folder: Path, registry, url: str) -> Path:
    lines = ["studies = []"]
    for name in registry.names():
        spec = registry.spec(name)
        lines += ["", "[[models]]", f'name = "{name}"', f'family = "{spec.family}"', f'modality = "{spec.modality}"',
                  f'source = "{url}"']
    path = folder / "remote.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def burst(url: str, model: str, n: int, seed0: int):
    import httpx
    import numpy as np
    from PIL import Image

    def one(i: int):
        r = httpx.post(f"{url}/v1/images/generations", timeout=600,
                       json={"model": model, "prompt": PROMPTS[i % len(PROMPTS)], "seed": seed0 + i})
        r.raise_for_status()
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["data"][0]["b64_json"]))).convert("RGB"))

    t0 = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        images = list(pool.map(one, range(n)))
    return time.perf_counter() - t0, images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--model", default="colon-msdm-tiny")
    parser.add_argument("--rounds", type=int, default=2, help="repeat each measurement; the best round counts")
    args = parser.parse_args(argv)

    import numpy as np

    from generators import Registry
    from generators.registry import quiet_library_progress
    from p2p_app.config import load_config
    from p2p_app.model_server import ModelService
    from p2p_app.startup import create

    quiet_library_progress()
    tmp = Path(tempfile.mkdtemp(prefix="p2p-bench-svc-"))
    config = load_config(data_dir=str(tmp), model_dir=str(tmp / "models"))
    registry = Registry(config.models, cache_dir=config.model_cache_dir)
    t0 = time.perf_counter()
    registry.load_all()
    print(f"loaded {len(registry)} tiny models in {time.perf_counter() - t0:.1f} s")

    # 1. arena trials: in-process vs through the service
    local_app = create(data_dir=tmp / "local", registry=registry)
    service = ModelService(registry, batching="auto")
    service.load_all()
    batched = [n for n, q in service.queues().items() if q.batches]
    srv, url = serve(service.asgi())
    remote_app = create(remote_config(tmp, registry, url), data_dir=tmp / "remote")
    remote_app.registry.load_all()
    arena_round(local_app, 2)  # warm both paths
    arena_round(remote_app, 2)
    local = min(arena_round(local_app, args.trials) for _ in range(args.rounds))
    remote = min(arena_round(remote_app, args.trials) for _ in range(args.rounds))
    print(f"\n{args.trials} concurrent arena trials ({args.trials * 3} images), best of {args.rounds}:")
    print(f"  in-process        {local:7.2f} s")
    print(f"  through service   {remote:7.2f} s   (batching=auto; batched models: {', '.join(batched) or 'none'})")
    print(f"  ratio service / in-process = {remote / local:.2f}")
    srv.should_exit = True
    service.close()

    # 2. batching gain for N concurrent requests of one model
    gen = registry.get(args.model)
    singles = [np.asarray(gen.generate(PROMPTS[i % len(PROMPTS)], 1000 + i).image) for i in range(args.requests)]
    rows = []
    for mode in ("off", "on", "auto"):
        svc = ModelService(registry, batching=mode, window_s=0.05)
        if mode == "auto":
            svc.queue(args.model).probe()
        srv, url = serve(svc.asgi())
        burst(url, args.model, 2, 0)  # warm
        best, images, calls = None, None, None
        for _ in range(args.rounds):
            before = svc.queue(args.model).stats.calls
            seconds, imgs = burst(url, args.model, args.requests, 1000)
            if best is None or seconds < best:
                best, images, calls = seconds, imgs, svc.queue(args.model).stats.calls - before
        diff = [int((a != b).sum()) for a, b in zip(images, singles)]
        worst = max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(images, singles))
        rows.append((mode, best, calls, sum(diff), worst, images[0].size))
        srv.should_exit = True
        svc.close()
    print(f"\n{args.requests} concurrent requests for {args.model}, best of {args.rounds}:")
    print("  batching  seconds  images/s  pipeline calls  values differing from one-at-a-time (max |diff|)")
    for mode, seconds, calls, ndiff, worst, size in rows:
        print(f"  {mode:8s} {seconds:8.2f} {args.requests / seconds:9.2f} {calls:15d}   {ndiff} of {size * args.requests}"
              f" ({worst})")
    off, on = rows[0][1], rows[1][1]
    print(f"  batching gain (forced on vs off) = {off / on:.2f}x throughput")
    local_app.storage.close()
    remote_app.close()
    registry.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
