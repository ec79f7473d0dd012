"""Benchmark: coverage of the 95% intervals of p2p_app.analysis over seeded simulated studies.

Run:  python benchmarks/bench_coverage.py [--studies 1000] [--seed 0]

For each design, ``--studies`` studies are simulated directly with numpy (lean, vectorised): an item is one screen
with a real control image and a generated image; rater r scores image j as
``clip(round(quality + bias_r + effect_j + noise), 1, 5)`` with bias ~ N(0, 0.4), effect ~ N(0, 0.5) per image and
noise ~ N(0, 0.7). Printed per design: how often the CI covers the truth for

* the mean score of the generated model (``crossed_mean_ci``; truth: the population mean, exact from the normal
  distribution),
* the reader-study AUC real vs generated (Obuchowski–Rockette CI, ``p2p_app.mrmc``; truth: the expected AUC of one
  random reader, exact by Gauss–Hermite integration over the reader's bias),
* Krippendorff's α (ordinal) of the generated images (two-way jackknife with raters and images random, as in
  ``agreement``; truth: α of a 2,000-rater × 4,000-image study from the same model, by Monte Carlo),

and the old two-way ("pigeonhole") bootstrap of the mean for comparison, with run time. Goal: 93–97 % each.

Issue 18 adds two families, each printed with the old method as a baseline column (``--part fc,reader``):

* **Forced choice** with heterogeneous raters: rater r's accuracy is ``expit(μ + N(0, FC_RATER_SD))`` with μ set so
  that the population accuracy (the mean over raters, the truth) is ``FC_ACCURACY`` exactly; 40 and 160 screens per
  rater, 4, 8 and 20 raters. Old: the exact (Clopper–Pearson) interval over all screens; new: the report's
  rater-clustered interval (:func:`p2p_app.designs.rater_clustered_proportion`), and the rejection rate of its test
  when the truth is chance (the false-positive rate ``p2p plan --effect 0`` reports as "power").
* **Reader study** with 1 and 3 seeds per prompt: each prompt has one real image and ``seeds`` generated images
  that share the prompt's difficulty (N(0, RS_PROMPT_SD) on the generated images' latent score). Old: the OR
  interval with the jackknife over single images, on the AUC scale; new: the analysis' interval (jackknife over
  whole prompts, ``cluster`` column, and :func:`p2p_app.analysis.auc_interval` on the logit scale).

Measured (seed 0; 4,000 forced-choice studies per design, Monte-Carlo SE 0.35 pp; 1,000 reader studies, 0.7 pp):
forced choice old 74.6–75.2 % (40 screens) and 47.8–48.7 % (160), new 95.4–95.9 %; rejection at chance old
25.9–53.4 %, new 3.8–4.8 %. Reader study, 5 readers × 30 prompts: 1 seed per prompt old 93.9 %, new 93.5 %;
3 seeds per prompt old 89.5 %, new 93.9 %. The rating designs' AUC (now on the logit scale) and α (now bounded to
[−1, 1] around α̂) covered as before: AUC 93.4–95.7 %, α 94.5–97.9 %. The whole run: 82 s of CPU.

Issue 20: the fixed-k designs now assign raters with the app's own rule (``p2p_app.assignment.coverage`` through
``p2p_app.simulate.app_coverage``: balanced loads) instead of k random raters per item. 1,000 studies per design,
coverage of the mean / AUC / α, before → after: crossed, 3 raters (the same design; only the random stream moved)
seed 0 94.0/94.7/97.2 → 91.1/94.3/98.3 %, seeds 1 and 2 after 94.6/95.5/97.9 and 93.8/93.4/97.5 %; 12 raters,
3 per item, seed 0 93.7/95.7/97.9 → 96.0/94.9/97.7 %, seed 1 94.4/95.6/98.0 → 93.6/94.5/98.4 %.

Reader-study AUC, checked for bias (issue 11): with 3 and 8 readers the OR estimate is unbiased (mean 0.7218 and
0.7203 over 2,000 and 1,000 studies, truth 0.7215) and its SE matches the spread of the estimates (RMS SE 0.0386 vs
SD 0.0380 with 3 readers; 0.0323 vs 0.0325 with 8), so the truth and the variance are right. Coverage over 5,000
studies with 3 readers (seeds 0, 1 and a third stream) is 93.6 %, with 8 readers over 4,000 studies 94.2 %: single
runs of 1,000 (Monte-Carlo SE 0.7 pp) scatter 92.7–95.7 %; the remaining ~1 pp with 3 readers comes from the t
reference (Hillis's single-treatment df treats the case covariance as known).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import krippendorff
import numpy as np
import pandas as pd
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from p2p_app import analysis as A  # noqa: E402
from p2p_app.mrmc import or_analysis  # noqa: E402
from p2p_app.simulate import app_coverage  # noqa: E402

Q_GEN, Q_REAL, SD_RATER, SD_IMAGE, SD_NOISE = 3.0, 3.8, 0.4, 0.5, 0.7
LEVELS = np.arange(1, 6)
DESIGNS = {
    # name: (raters, items, raters per item: int = k of n, or (lo, hi) drawn per item)
    "crossed, 3 raters": (3, 40, 3),
    "crossed, 8 raters": (8, 40, 8),
    "12 raters, 3 per item": (12, 60, 3),
    "unbalanced, 10 raters, 2-6 per item": (10, 60, (2, 6)),
}


def level_probs(mu: np.ndarray, sd: float) -> np.ndarray:
    """P(clip(round(N(mu, sd)), 1, 5) = k), k = 1..5 (last axis)."""
    cuts = np.array([-np.inf, 1.5, 2.5, 3.5, 4.5, np.inf])
    c = stats.norm.cdf((cuts - np.asarray(mu)[..., None]) / sd)
    return np.diff(c, axis=-1)


def true_mean(q: float) -> float:
    return float(level_probs(np.array(q), np.sqrt(SD_RATER**2 + SD_IMAGE**2 + SD_NOISE**2)) @ LEVELS)


def true_reader_auc() -> float:
    """E over a random reader's bias of P(real > generated) + ½ P(tie) for that reader."""
    x, w = np.polynomial.hermite_e.hermegauss(80)
    bias = SD_RATER * x
    sd = np.sqrt(SD_IMAGE**2 + SD_NOISE**2)
    pos, neg = level_probs(Q_REAL + bias, sd), level_probs(Q_GEN + bias, sd)
    below = np.cumsum(neg, axis=1) - neg
    auc = (pos * (below + 0.5 * neg)).sum(1)
    return float(auc @ w / w.sum())


def true_alpha(rng: np.random.Generator) -> float:
    n_r, n_i = 2000, 4000
    latent = Q_GEN + rng.normal(0, SD_RATER, (n_r, 1)) + rng.normal(0, SD_IMAGE, (1, n_i))
    y = np.clip(np.rint(latent + rng.normal(0, SD_NOISE, (n_r, n_i))), 1, 5).astype(int)
    counts = np.stack([(y == k).sum(0) for k in LEVELS], axis=1)
    return float(krippendorff.alpha(value_counts=counts, value_domain=list(LEVELS), level_of_measurement="ordinal"))


def simulate(rng: np.random.Generator, n_r: int, n_i: int, k) -> tuple[np.ndarray, ...]:
    """Answers (rater, item, is_real, value): every rater of an item scores its real and its generated image; a design
    with a fixed k assigns raters as the app does."""
    if isinstance(k, tuple):  # unbalanced on purpose (not a design the app makes): k drawn per item
        sizes = rng.integers(k[0], k[1] + 1, n_i)
        keys = rng.random((n_i, n_r))
        ranks = np.argsort(np.argsort(keys, axis=1), axis=1)
        item, rater = np.nonzero(ranks < sizes[:, None])
    else:  # the app's assignment (p2p_app.assignment.coverage): k raters per item, loads differing by at most one
        item, rater = np.repeat(np.arange(n_i), k), app_coverage(n_i, n_r, k, f"bench#{rng.integers(2**62)}").ravel()
    bias = rng.normal(0, SD_RATER, n_r)
    effect = rng.normal(0, SD_IMAGE, (n_i, 2))
    item2, rater2 = np.r_[item, item], np.r_[rater, rater]
    real = np.r_[np.zeros(len(item), bool), np.ones(len(item), bool)]
    latent = np.where(real, Q_REAL, Q_GEN) + bias[rater2] + effect[item2, real.astype(int)]
    value = np.clip(np.rint(latent + rng.normal(0, SD_NOISE, len(latent))), 1, 5)
    return rater2, item2, real, value


def pigeonhole_ci(y, rater, item, rng, n_boot=300):
    """The old method: raters and items resampled together, percentile interval."""
    r, i = A._dense(rater), A._dense(item)
    n_r, n_i = r.max() + 1, i.max() + 1
    wr = rng.multinomial(n_r, np.full(n_r, 1 / n_r), n_boot)[:, r]
    wi = rng.multinomial(n_i, np.full(n_i, 1 / n_i), n_boot)[:, i]
    w = wr * wi
    with np.errstate(invalid="ignore", divide="ignore"):
        m = (w * y).sum(1) / w.sum(1)
    return np.nanpercentile(m, [2.5, 97.5])


def run_design(name, design, studies, seed, truth):
    n_r, n_i, k = design
    rng = np.random.default_rng([seed, len(name)])
    hits = {"mean": 0, "mean (old bootstrap)": 0, "AUC (OR)": 0, "alpha": 0}
    widths = {key: [] for key in hits}
    valid = {key: 0 for key in hits}
    t0 = time.perf_counter()
    for _ in range(studies):
        rater, item, real, value = simulate(rng, n_r, n_i, k)
        g = ~real
        cm = A.crossed_mean_ci(value[g], rater[g], item[g], 0.95)
        old = pigeonhole_ci(value[g], rater[g], item[g], rng)
        for key, (lo, hi), t in (("mean", (cm.ci_low, cm.ci_high), truth["mean"]),
                                 ("mean (old bootstrap)", old, truth["mean"])):  # fmt: skip
            if np.isfinite(lo):
                valid[key] += 1
                hits[key] += lo <= t <= hi
                widths[key].append(hi - lo)
        frame = pd.DataFrame({"reader": rater, "treatment": "gen", "case": item * 2 + real, "truth": real.astype(int),
                              "rating": value})  # fmt: skip
        try:
            tt = or_analysis(frame).treatment_table.iloc[0]
            lo, hi, _ = A.auc_interval(tt["auc"], tt["se"], tt["df"], 0.95)  # the analysis' interval (logit scale)
            valid["AUC (OR)"] += 1
            hits["AUC (OR)"] += lo <= truth["auc"] <= hi
            widths["AUC (OR)"].append(hi - lo)
        except ValueError:
            pass
        levels, lev = np.unique(value[g], return_inverse=True)
        unit, rr = item[g], rater[g]
        order = np.lexsort((rr, unit))
        rank = np.empty(len(unit), dtype=np.int64)
        rank[order] = np.arange(len(order)) - np.searchsorted(unit[order], unit[order], side="left")
        arrays = {"unit": unit, "lev": lev, "rater": rr, "rank": rank}
        rows = A._agreement_scope(arrays, "realism", "gen", levels, 300, rng, 0.95, "ordinal")
        a_row = rows[0]
        if np.isfinite(a_row.get("ci_low", np.nan)):
            valid["alpha"] += 1
            hits["alpha"] += a_row["ci_low"] <= truth["alpha"] <= a_row["ci_high"]
            widths["alpha"].append(a_row["ci_high"] - a_row["ci_low"])
    seconds = time.perf_counter() - t0
    return {key: (hits[key] / max(valid[key], 1), valid[key], float(np.mean(widths[key] or [np.nan])))
            for key in hits}, seconds  # fmt: skip


FC_ACCURACY, FC_CHANCE, FC_RATER_SD = 0.62, 0.5, 0.5
FC_DESIGNS = {f"{r} raters x {m} screens": (r, m) for m in (40, 160) for r in (4, 8, 20)}
RS_PROMPT_SD, RS_IMAGE_SD, RS_READERS, RS_PROMPTS = 0.6, 0.3, 5, 30
RS_DESIGNS = {"1 seed per prompt": 1, "3 seeds per prompt": 3}


def run_forced_choice(studies: int, seed: int) -> None:
    """Coverage of the forced-choice accuracy interval, old (exact binomial over screens) vs new (rater-clustered),
    and the new test's rejection rate at chance. All studies of a design are drawn and analysed at once."""
    from p2p_app.designs import clopper_pearson, rater_clustered_proportion
    from p2p_app.plan import logit_centre

    print(f"\nForced choice: population accuracy {FC_ACCURACY}, rater logit SD {FC_RATER_SD}, {studies} studies per "
          f"design; coverage old (exact binomial) / new (rater-clustered); rejection at chance {FC_CHANCE}, old "
          f"(exact CI excludes chance) / new (test)")  # fmt: skip
    print(f"  {'design':24s} {'old':>7s} {'new':>7s} {'width old':>9s} {'width new':>9s} {'rej0 old':>9s} "
          f"{'rej0 new':>9s}")
    for name, (n_r, m) in FC_DESIGNS.items():
        rng = np.random.default_rng([seed, n_r, m])
        t0 = time.perf_counter()
        out = {}
        for truth in (FC_ACCURACY, FC_CHANCE):
            mu = logit_centre(truth, FC_RATER_SD)
            p_r = 1 / (1 + np.exp(-(mu + rng.normal(0.0, FC_RATER_SD, (studies, n_r)))))
            k = rng.binomial(m, p_r)
            n = np.full(k.shape, m)
            new = rater_clustered_proportion(k, n, FC_CHANCE, 0.95)
            lo, hi = clopper_pearson(k.sum(1), n.sum(1), 0.95)
            out[truth] = (np.mean((lo <= truth) & (truth <= hi)),
                          np.mean((new["ci_low"] <= truth) & (truth <= new["ci_high"])),
                          np.mean(hi - lo), np.mean(new["ci_high"] - new["ci_low"]), np.mean(new["p_value"] < 0.05),
                          np.mean((lo > FC_CHANCE) | (hi < FC_CHANCE)))  # fmt: skip
        c_old, c_new, w_old, w_new, _, _ = out[FC_ACCURACY]
        reject, reject_old = out[FC_CHANCE][4], out[FC_CHANCE][5]
        print(f"  {name:24s} {100 * c_old:6.1f}% {100 * c_new:6.1f}% {w_old:9.3f} {w_new:9.3f} {100 * reject_old:8.1f}%"
              f" {100 * reject:8.1f}%"
              f"  ({time.perf_counter() - t0:.1f} s)")  # fmt: skip


def true_reader_auc_prompts() -> float:
    """Expected AUC of one random reader when the generated images carry a prompt effect (real images do not)."""
    x, w = np.polynomial.hermite_e.hermegauss(80)
    bias = SD_RATER * x
    pos = level_probs(Q_REAL + bias, np.sqrt(SD_IMAGE**2 + SD_NOISE**2))
    neg = level_probs(Q_GEN + bias, np.sqrt(RS_PROMPT_SD**2 + RS_IMAGE_SD**2 + SD_NOISE**2))
    below = np.cumsum(neg, axis=1) - neg
    return float((pos * (below + 0.5 * neg)).sum(1) @ w / w.sum())


def run_reader_study(studies: int, seed: int) -> None:
    """Coverage of the reader-averaged AUC interval with several seeds per prompt: old (single-image jackknife,
    AUC scale) vs new (prompt jackknife, logit scale), both through p2p_app.mrmc.or_analysis."""
    from p2p_app.analysis import auc_interval

    truth = true_reader_auc_prompts()
    print(f"\nReader study: {RS_READERS} readers, {RS_PROMPTS} prompts (one real image each), prompt SD "
          f"{RS_PROMPT_SD} on the generated images; truth {truth:.4f}; {studies} studies per design")  # fmt: skip
    print(f"  {'design':24s} {'old':>7s} {'new':>7s} {'width old':>9s} {'width new':>9s}")
    for name, seeds in RS_DESIGNS.items():
        rng = np.random.default_rng([seed, seeds, 18])
        t0 = time.perf_counter()
        hits, widths = np.zeros(2), np.zeros(2)
        valid = 0
        n_p, n_r = RS_PROMPTS, RS_READERS
        prompt = np.r_[np.arange(n_p), np.repeat(np.arange(n_p), seeds)]
        real = np.r_[np.ones(n_p, bool), np.zeros(n_p * seeds, bool)]
        case = np.arange(len(prompt))
        for _ in range(studies):
            bias = rng.normal(0, SD_RATER, n_r)
            effect = np.where(real, rng.normal(0, SD_IMAGE, len(case)),
                              rng.normal(0, RS_PROMPT_SD, n_p)[prompt] + rng.normal(0, RS_IMAGE_SD, len(case)))
            latent = np.where(real, Q_REAL, Q_GEN)[None, :] + bias[:, None] + effect[None, :]
            value = np.clip(np.rint(latent + rng.normal(0, SD_NOISE, latent.shape)), 1, 5)
            frame = pd.DataFrame({"reader": np.repeat(np.arange(n_r), len(case)), "treatment": 0,
                                  "case": np.tile(case, n_r), "truth": np.tile(real.astype(int), n_r),
                                  "rating": value.ravel(), "cluster": np.tile(prompt, n_r)})  # fmt: skip
            try:
                old = or_analysis(frame.drop(columns="cluster")).treatment_table.iloc[0]
                new = or_analysis(frame).treatment_table.iloc[0]
            except ValueError:
                continue
            valid += 1
            lo, hi, _ = auc_interval(new["auc"], new["se"], new["df"], 0.95)
            for j, (a, b) in enumerate(((old["ci_low"], old["ci_high"]), (lo, hi))):
                hits[j] += a <= truth <= b
                widths[j] += b - a
        cov, w = hits / max(valid, 1), widths / max(valid, 1)
        print(f"  {name:24s} {100 * cov[0]:6.1f}% {100 * cov[1]:6.1f}% {w[0]:9.3f} {w[1]:9.3f}  [{valid}]"
              f"  ({time.perf_counter() - t0:.1f} s)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--fc-studies", type=int, default=4000, help="studies per forced-choice design (cheap)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="run only the designs whose name contains this text")
    parser.add_argument("--part", default="rating,fc,reader", help="which families: rating, fc, reader")
    args = parser.parse_args()
    parts = set(args.part.split(","))
    if "fc" in parts:
        run_forced_choice(args.fc_studies, args.seed)
    if "reader" in parts:
        run_reader_study(args.studies, args.seed)
    if "rating" not in parts:
        return
    t0 = time.perf_counter()
    truth = {"mean": true_mean(Q_GEN), "auc": true_reader_auc(), "alpha": true_alpha(np.random.default_rng(12345))}
    print(f"truth: mean {truth['mean']:.4f}, reader AUC {truth['auc']:.4f}, alpha {truth['alpha']:.4f} "
          f"({time.perf_counter() - t0:.1f} s)")  # fmt: skip
    print(f"{args.studies} studies per design; coverage of 95% intervals (goal 93-97%), [valid studies], mean width")
    for name, design in DESIGNS.items():
        if args.only not in name:
            continue
        res, seconds = run_design(name, design, args.studies, args.seed, truth)
        print(f"\n{name}  ({seconds:.1f} s)")
        for key, (cov, n, width) in res.items():
            print(f"  {key:22s} {100 * cov:5.1f}%  [{n}]  width {width:.3f}")
    print(f"\ntotal {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
