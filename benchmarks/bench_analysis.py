"""Benchmark: simulate ~1,000,000 ratings, then time ``analyze`` and the three exports; report peak memory.

Run:  .venv/bin/python benchmarks/bench_analysis.py [--rows 1000000] [--n-boot 1000] [--report]

Goal (2 CPU cores): analysis + exports ≤ 10 s and peak RSS ≤ 2 GB.

Memory: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is the process's peak resident set size so far (KiB on Linux).
It is read before and after every stage; it can only grow, so the figure after a stage is the peak up to and
including that stage, and the last one is the peak of the whole run — simulation included, a conservative bound for
"analysis + export" (tracemalloc would be exact per stage but slows numpy-heavy code several-fold). The current RSS
(``/proc/self/statm``) is printed too, to show what each stage keeps.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from p2p_app.analysis import analyze  # noqa: E402
from p2p_app.export import write_long_csv, write_parquet, write_wide_csv  # noqa: E402
from p2p_app.report import build_report  # noqa: E402
from p2p_app.simulate import simulate_ratings  # noqa: E402

GOAL_SECONDS = 10.0
GOAL_PEAK_MB = 2048.0
MODELS = {"model-a": (3.6, 3.9), "model-b": (3.2, 3.6), "model-c": (2.8, 3.1), "model-d": (2.3, 2.7)}
SEEDS_PER_PROMPT, OVERLAP_K, REPEAT_FRACTION, N_RATERS = 4, 5, 0.1, 200
ROWS_PER_PROMPT = SEEDS_PER_PROMPT * OVERLAP_K * (1 + REPEAT_FRACTION) * (len(MODELS) + 1) * 2


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def current_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def stage(name: str, fn, timings: dict):
    gc.collect()
    before = peak_mb()
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    timings[name] = seconds
    print(f"{name:<22}{seconds:8.2f} s   peak RSS {before:7.0f} -> {peak_mb():7.0f} MB   "
          f"current {current_mb():7.0f} MB")  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="approximate number of ratings (rows)")
    ap.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--report", action="store_true", help="also time the HTML report (not part of the goal)")
    args = ap.parse_args(argv)

    n_prompts = max(1, round(args.rows / ROWS_PER_PROMPT))
    print(f"cores available: {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()}")
    print(f"peak RSS after imports: {peak_mb():.0f} MB")
    timings: dict[str, float] = {}
    df = stage("simulate", lambda: simulate_ratings(
        n_raters=N_RATERS, n_prompts=n_prompts, models=MODELS, seeds_per_prompt=SEEDS_PER_PROMPT,
        overlap_k=OVERLAP_K, repeat_fraction=REPEAT_FRACTION, careless_raters=3, seed=args.seed), timings)  # fmt: skip
    in_memory = df.memory_usage(deep=True).sum() / 2**20
    print(f"  {len(df):,} rows, {df['rater_id'].nunique()} raters, {df['item_id'].nunique():,} items, "
          f"{df['image_id'].nunique():,} images, {in_memory:.0f} MB in memory")  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        analysis = stage(
            f"analyze (n_boot={args.n_boot})", lambda: analyze(df, n_boot=args.n_boot, seed=args.seed), timings
        )
        stage("export long CSV", lambda: write_long_csv(df, d / "long.csv"), timings)
        stage("export wide CSV", lambda: write_wide_csv(df, d / "wide.csv"), timings)
        stage("export Parquet", lambda: write_parquet(df, d / "ratings.parquet"), timings)
        sizes = {p.name: p.stat().st_size / 2**20 for p in d.iterdir()}
        if args.report:
            page = stage("report (extra)", lambda: build_report(df, analysis=analysis), timings)
            print(f"  report: {len(page) / 2**20:.1f} MB of HTML")
    print("  files: " + ", ".join(f"{k} {v:.0f} MB" for k, v in sizes.items()))

    counted = sum(v for k, v in timings.items() if k != "simulate" and not k.startswith("report"))
    peak = peak_mb()
    print("-" * 78)
    print(f"analysis + exports: {counted:.2f} s  (goal <= {GOAL_SECONDS:.0f} s)   "
          f"{'OK' if counted <= GOAL_SECONDS else 'OVER'}")  # fmt: skip
    print(f"peak RSS of the whole run: {peak:.0f} MB  (goal <= {GOAL_PEAK_MB:.0f} MB)   "
          f"{'OK' if peak <= GOAL_PEAK_MB else 'OVER'}")  # fmt: skip
    print(f"total incl. simulation: {sum(timings.values()):.2f} s")
    print(analysis.scores[["model", "question", "n", "mean", "ci_low", "ci_high"]].to_string(index=False))
    return 0 if counted <= GOAL_SECONDS and peak <= GOAL_PEAK_MB else 1


if __name__ == "__main__":
    raise SystemExit(main())
