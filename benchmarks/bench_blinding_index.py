"""Coverage of Bang's blinding index intervals when raters differ (the clustering real studies have).

Raters differ in how well they recognise model A (skill ~ Beta(2, 2) per rater, so guesses cluster by rater). An A
image is recognised with the rater's skill, else 80 % a uniform guess among A, B, C and 20 % "don't know"; B and C
images the same without recognition. True Bang for A = E[s] + (1 − E[s]) 0.8 (1/3 − 2/3) = 0.5 − 0.4/3. Printed:
how often the rater-resampled interval (``boot_ci_low/high``) and the published Wald interval (``ci_low/high``)
cover it.

    python benchmarks/bench_blinding_index.py [--sims 150] [--raters 20,8] [--per-arm 12] [--seed 7]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from p2p_app.analysis.blinding_index import DONT_KNOW, blinding_index  # noqa: E402

ARMS = np.array(["A", "B", "C"])
TRUE_BANG_A = 0.5 - 0.4 / 3


def simulated_guesses(rng: np.random.Generator, n_raters: int, per_arm: int) -> pd.DataFrame:
    """One study's guesses: ``per_arm`` images of each arm per rater, rater-specific recognition of A."""
    skill = rng.beta(2, 2, size=n_raters)
    rater = np.repeat(np.arange(n_raters), len(ARMS) * per_arm)
    truth = np.tile(np.repeat(ARMS, per_arm), n_raters)
    guess = np.where(rng.random(rater.size) < 0.8, ARMS[rng.integers(len(ARMS), size=rater.size)], DONT_KNOW)
    guess = np.where((truth == "A") & (rng.random(rater.size) < skill[rater]), "A", guess)
    return pd.DataFrame({"rater_id": rater.astype(str), "truth": truth, "guess": guess})


def coverage(sims: int, n_raters: int, per_arm: int = 12, seed: int = 7) -> tuple[float, float]:
    """(rater-resampled, Wald) coverage of Bang's index for A over ``sims`` simulated studies."""
    rng = np.random.default_rng(seed)
    boot = wald = 0
    for s in range(sims):
        res = blinding_index(simulated_guesses(rng, n_raters, per_arm), list(ARMS), n_boot=200, seed=s)
        a = res.bang.set_index("arm").loc["A"]
        boot += a["boot_ci_low"] <= TRUE_BANG_A <= a["boot_ci_high"]
        wald += a["ci_low"] <= TRUE_BANG_A <= a["ci_high"]
    return boot / sims, wald / sims


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=150)
    parser.add_argument("--raters", default="20,8")
    parser.add_argument("--per-arm", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    for n in (int(x) for x in args.raters.split(",")):
        t0 = time.perf_counter()
        boot, wald = coverage(args.sims, n, args.per_arm, args.seed)
        print(f"{n:3d} raters, {args.sims} studies: rater-resampled {boot:.1%}, Wald {wald:.1%} "
              f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
