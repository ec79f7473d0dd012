"""Benchmark: coverage of the naive → disclosed analysis' 95 % intervals against the simulator's truth.

Run:  python benchmarks/bench_disclosure.py [--studies 400] [--raters 4,8,20] [--seed 0]

Each study is :func:`p2p_app.simulate_disclosure.simulate_naive_disclosed` (two models, 20 images each and 20 real
images, raters differing by N(0, 0.6) on the logit scale in both phases); its table is
:func:`p2p_app.analysis.disclosure.disclosure_table`; the truth is :func:`disclosure_truth` (means over raters,
Gauss–Hermite). Printed per rater count: how often each kind of interval covers the truth — noticed (phase 1,
generated rows and the real images' false alarms), detected (phase 2: sensitivity per model, specificity,
accuracy) and the difference detected − noticed (paired, same raters) — and the mean width. Goal: 93–97 %.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from p2p_app.analysis.disclosure import disclosure_table
from p2p_app.simulate_disclosure import disclosure_truth, simulate_naive_disclosed


def coverage(n_studies: int, n_raters: int, seed: int) -> dict[str, tuple[float, float, int]]:
    """Kind → (coverage, mean width, intervals)."""
    truth = disclosure_truth()
    hits: dict[str, list[tuple[bool, float]]] = {"noticed": [], "detected": [], "difference": []}
    for s in range(n_studies):
        table = disclosure_table(simulate_naive_disclosed(n_raters=n_raters, seed=seed * 100_003 + s))
        for row in table.itertuples():
            noticed, detected = truth[row.model]
            for kind, true, lo, hi in (("noticed", noticed, row.noticed_low, row.noticed_high),
                                       ("detected", detected, row.detected_low, row.detected_high),
                                       ("difference", detected - noticed, row.difference_low, row.difference_high)):
                if np.isfinite(true) and np.isfinite(lo):
                    hits[kind].append((lo <= true <= hi, hi - lo))
    return {k: (float(np.mean([h for h, _ in v])), float(np.mean([w for _, w in v])), len(v)) for k, v in hits.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=400)
    parser.add_argument("--raters", default="4,8,20")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{'raters':>6} {'kind':>10} {'coverage':>8} {'width':>6} {'intervals':>9}")
    for n_raters in (int(x) for x in args.raters.split(",")):
        start = time.perf_counter()
        for kind, (cov, width, n) in coverage(args.studies, n_raters, args.seed).items():
            print(f"{n_raters:>6} {kind:>10} {cov:>8.3f} {width:>6.3f} {n:>9}")
        print(f"{'':>6} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
