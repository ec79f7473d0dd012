"""Overhead of the generator wrapper over a raw diffusers pipeline call (CPU, tiny models).

For each family, one tiny pipeline is loaded through the registry; then ``generator.generate(prompt, seed)``
and the raw ``pipeline(prompt=..., generator=..., **same settings)`` on the very same pipeline object are
timed alternately (after warm-up) and the ratio of medians is printed. Goal: <= 1.05.

    python benchmarks/bench_generator.py [--runs 30] [--families sd flux] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT = "a sessile polyp in the sigmoid colon, white light colonoscopy"


def bench_family(registry, family: str, runs: int, warmup: int) -> tuple[float, float]:
    import torch

    gen = registry.get(family)
    gen.load()
    pipe = gen._pipe  # the very pipeline object the wrapper calls
    kwargs = {k: v for k, v in gen.effective_params().items() if k not in ("lora_scale", "greyscale")}

    def raw(seed: int) -> None:
        pipe(prompt=PROMPT, generator=torch.Generator("cpu").manual_seed(seed), output_type="pil", **kwargs)

    def wrapped(seed: int) -> None:
        gen.generate(PROMPT, seed)

    for i in range(warmup):
        raw(i)
        wrapped(i)
    t_raw, t_wrapped = [], []
    for i in range(runs):
        order = (raw, wrapped) if i % 2 == 0 else (wrapped, raw)
        for fn in order:
            t0 = time.perf_counter()
            fn(i)
            (t_raw if fn is raw else t_wrapped).append(time.perf_counter() - t0)
    return statistics.median(t_raw), statistics.median(t_wrapped)


def main(argv: list[str] | None = None) -> int:
    from generators import FAMILIES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--cache-dir", default=None, help="where tiny models are built (default: a temp dir)")
    args = parser.parse_args(argv)

    import torch

    from generators import Registry

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir or tmp
        entries = [
            {"name": f, "family": f, "source": f"tiny:{f}", "modality": "colonoscopy"} for f in args.families
        ]
        with Registry.from_dicts(entries, cache, devices=["cpu"]) as registry:
            header = f"{'family':<12} {'raw ms':>8} {'wrapper ms':>11} {'ratio':>7}"
            print(f"{header}   ({args.runs} runs each, interleaved, median)")
            worst = 0.0
            for family in args.families:
                raw, wrapped = bench_family(registry, family, args.runs, args.warmup)
                ratio = wrapped / raw
                worst = max(worst, ratio)
                print(f"{family:<12} {raw * 1e3:8.2f} {wrapped * 1e3:11.2f} {ratio:7.3f}")
    print(f"worst ratio {worst:.3f} (goal <= 1.05)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
