"""Contextual Bradley–Terry (p2p_app.contextual_bt): coverage of the sandwich (rater-clustered) 95% interval of the
strengths with rater heterogeneity, next to the model-based interval that treats every pair as independent, and the
time of one fit.

Each scenario simulates ranking studies (3 panels of 4 models per screen, a planted first-slot bias of +0.3, each
rater's strengths perturbed by N(0, rater_sd²)) and counts how often each interval holds the estimand: the
population fit, found once on a very large simulated panel (with rater heterogeneity the marginal pair probabilities
are not exactly Bradley–Terry in the mean strengths; the sandwich interval targets the fit the estimator converges
to). Goal: 93–97% for the sandwich interval.

    python benchmarks/bench_contextual_bt.py [--sims 400]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from p2p_app import contextual_bt as C

STRENGTHS = [0.5, 0.0, -0.2, -0.3]
BIAS = [0.3, 0.0, 0.0]


def scenario(n_raters: int, screens: int, rater_sd: float, sims: int, seed: int) -> dict:
    big = C.simulate_rankings(np.random.default_rng(10_000 + seed), STRENGTHS, 20_000, screens, panels=3,
                              position_bias=BIAS, rater_sd=rater_sd)  # fmt: skip
    target = C.fit(C.comparisons(big), ridge=0.0)
    pos_target = target.params[target.terms.index("position 1 vs 0")]
    rng = np.random.default_rng(seed)
    hits = {"sandwich": 0, "model": 0, "position": 0}
    total = 0
    seconds = []
    for _ in range(sims):
        df = C.simulate_rankings(rng, STRENGTHS, n_raters, screens, panels=3, position_bias=BIAS, rater_sd=rater_sd)
        comps = C.comparisons(df)
        t0 = time.perf_counter()
        f = C.fit(comps, ridge=0.0)
        seconds.append(time.perf_counter() - t0)
        lo, hi = f.interval(0.95)
        mlo, mhi = f.interval(0.95, robust=False)
        hits["sandwich"] += int(((lo <= target.strength) & (target.strength <= hi)).sum())
        hits["model"] += int(((mlo <= target.strength) & (target.strength <= mhi)).sum())
        j = f.terms.index("position 1 vs 0")
        half = C.stats.t.ppf(0.975, f.df()) * np.sqrt(f.cov[j, j])
        hits["position"] += int(abs(f.params[j] - pos_target) <= half)
        total += len(STRENGTHS)
    return {"raters": n_raters, "screens": screens, "rater_sd": rater_sd, "sandwich": hits["sandwich"] / total,
            "model_based": hits["model"] / total, "position": hits["position"] / sims,
            "fit_ms": 1000 * float(np.median(seconds))}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=400)
    args = ap.parse_args()
    head = ("raters", "screens", "rater_sd", "sandwich", "model-based", "position", "fit ms")
    print(" ".join(f"{h:>11}" for h in head))
    for i, (n_raters, screens, sd) in enumerate([(10, 10, 0.0), (10, 10, 0.6), (20, 10, 0.6), (40, 10, 0.6),
                                                  (40, 20, 1.0), (80, 10, 0.6)]):  # fmt: skip
        r = scenario(n_raters, screens, sd, args.sims, seed=i)
        cells = (f"{r['raters']}", f"{r['screens']}", f"{r['rater_sd']:.1f}", f"{r['sandwich']:.3f}",
                 f"{r['model_based']:.3f}", f"{r['position']:.3f}", f"{r['fit_ms']:.1f}")
        print(" ".join(f"{c:>11}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
