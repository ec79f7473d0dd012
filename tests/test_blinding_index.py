"""James' and Bang's blinding indices (p2p_app.analysis.blinding_index) against the published formulas.

The reference is a line-by-line transliteration of the R package ``BI`` 1.2.0 (Schwartz and Mercaldo, CRAN;
``R/BI.r``: James 1996 and Bang 2004), run on the four tables of that package's documented examples (Bang 2004
table 7, CRISP; Houweling 2014 table 2: investigators, research coordinators, patients), plus Bang's index worked
out by hand, James' index on tables whose value is known in closed form, the K-arm chance levels, and a
simulation that the rater-clustered bootstrap covers ~95 %.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from p2p_app.analysis.blinding_index import (
    DONT_KNOW, bang_chance, bang_index, blinding_index, counts_table, james_index, rater_table,
)

# R's matrix(c(...), nrow = 3, ncol = 2, byrow = TRUE): rows = guessed Treatment, Placebo, Don't know; columns = true
R_EXAMPLES = {
    "crisp_bang2004_table7": [[82, 27], [25, 29], [170, 83]],
    "houweling_investigators": [[48, 22], [4, 30], [330, 319]],
    "houweling_coordinators": [[94, 52], [11, 44], [289, 284]],
    "houweling_patients": [[143, 104], [14, 57], [188, 175]],
}


def r_bi(x):
    """BI::BI(x) with its default weights, transliterated loop for loop (R indices shifted by one)."""
    x = np.asarray(x, dtype=float)
    weights = np.array([[0, 0.5], [0.5, 0], [1, 1]])
    x1 = np.zeros((4, 3))  # addmargins(x)
    x1[:3, :2] = x
    x1[:3, 2] = x.sum(axis=1)
    x1[3, :2] = x.sum(axis=0)
    x1[3, 2] = x.sum()
    P = x1 / x1.max()
    nr, nc = P.shape
    Pdk = P[nr - 2, nc - 1]
    Pdo = Pde = term1_denom = 0.0
    for i in range(nr - 2):
        for j in range(nc - 1):
            Pdo += weights[i, j] * P[i, j] / (1 - Pdk)
            Pde += weights[i, j] * P[i, nc - 1] * (P[nr - 1, j] - P[nr - 2, j]) / (1 - Pdk) ** 2
            term1_denom += weights[i, j] * P[i, nc - 1] * (P[nr - 1, j] - P[nr - 2, j])
    Kd = (Pdo - Pde) / Pde
    term1_denom = 4 * term1_denom**2
    term1_num = 0.0
    for i in range(nr - 2):
        for j in range(nc - 1):
            extra = 0.0
            for r in range(nc - 1):
                extra += weights[r, j] * P[r, nc - 1] + weights[i, r] * (P[nr - 1, r] - P[nr - 2, r])
            term1_num += P[i, j] * (1 - Pdk) ** 2 * ((1 - Pdk) * weights[i, j] - (1 + Kd) * extra) ** 2
    v = (term1_num / term1_denom + Pdk * (1 - Pdk) - (1 - Pdk) * (1 + Kd) * (Pdk + (1 - Pdk) * (1 + Kd) / 4))
    v /= x1[nr - 1, nc - 1]
    james = ((1 + Pdk + (1 - Pdk) * Kd) / 2, math.sqrt(v))
    x2 = x1.T[:, [0, 1, 2, 3]]  # addmargins(t(x)): rows = true arm, columns = guessed T, P, DK, total
    x2 = np.zeros((3, 4))
    x2[:2, :3] = x.T
    x2[:2, 3] = x.T.sum(axis=1)
    bang = []
    for i in range(2):
        est = (2 * (x2[i, i] / (x2[i, 0] + x2[i, 1])) - 1) * ((x2[i, 0] + x2[i, 1]) / (x2[i, 0] + x2[i, 1] + x2[i, 2]))
        p1, p2, n = x2[i, 0] / x2[i, 3], x2[i, 1] / x2[i, 3], x2[i, 3]
        bang.append((est, math.sqrt((p1 * (1 - p1) + p2 * (1 - p2) + 2 * p1 * p2) / n)))
    return james, bang


@pytest.mark.parametrize("name", list(R_EXAMPLES))
def test_matches_the_r_package_on_its_documented_examples(name):
    x = np.array(R_EXAMPLES[name], dtype=float)
    (j_ref, j_se_ref), bang_ref = r_bi(x)
    j, j_se = james_index(x)
    assert j == pytest.approx(j_ref, abs=1e-12) and j_se == pytest.approx(j_se_ref, abs=1e-12)
    est, se = bang_index(x)
    for arm in range(2):
        assert est[arm] == pytest.approx(bang_ref[arm][0], abs=1e-12)
        assert se[arm] == pytest.approx(bang_ref[arm][1], abs=1e-12)


def test_crisp_bang_by_hand():
    """Bang 2004 table 7 (CRISP). Treatment: 82 correct, 25 wrong, 170 don't know (n = 277):
    BI = (82 - 25) / 277 = 0.20578; p_c = 82/277, p_i = 25/277,
    var = [p_c(1-p_c) + p_i(1-p_i) + 2 p_c p_i] / 277. Placebo: 29 correct, 27 wrong, 83 don't know: 2/139."""
    est, se = bang_index(np.array(R_EXAMPLES["crisp_bang2004_table7"], dtype=float))
    assert est[0] == pytest.approx(57 / 277) and est[1] == pytest.approx(2 / 139)
    pc, pi = 82 / 277, 25 / 277
    assert se[0] == pytest.approx(math.sqrt((pc * (1 - pc) + pi * (1 - pi) + 2 * pc * pi) / 277))


def test_james_closed_forms():
    # every guess right: observed disagreement 0, kappa -1, BI = 0; every answer don't know: 1 (James p. 1425)
    assert james_index(np.array([[10, 0], [0, 10], [0, 0]]))[0] == pytest.approx(0.0)
    assert james_index(np.array([[0, 0], [0, 0], [5, 7]])) == (1.0, 0.0)
    # guesses independent of the truth: P_do = P_de, kappa 0, BI = (1 + P_dk) / 2 — for 2 and for 3 arms
    assert james_index(np.array([[10, 10], [10, 10], [0, 0]]))[0] == pytest.approx(0.5)
    assert james_index(np.array([[6, 6], [6, 6], [8, 8]]))[0] == pytest.approx((1 + 16 / 40) / 2)
    three = np.vstack([np.full((3, 3), 4.0), np.zeros((1, 3))])
    assert james_index(three)[0] == pytest.approx(0.5)
    # every guess wrong (2 arms): observed disagreement 1/2, expected 1/4: kappa 1, BI = 1
    assert james_index(np.array([[0, 10], [10, 0], [0, 0]]))[0] == pytest.approx(1.0)


def test_bang_k_arms_chance_level():
    """3 arms, uniform guessing, no don't know: per arm 1/3 correct, 2/3 wrong: Bang = -1/3 = (2/K - 1)."""
    three = np.vstack([np.full((3, 3), 4.0), np.zeros((1, 3))])
    est, _ = bang_index(three)
    assert est == pytest.approx(np.full(3, -1 / 3))
    assert bang_chance(three) == pytest.approx(np.full(3, -1 / 3))
    with_dk = np.vstack([np.full((3, 3), 2.0), np.full((1, 3), 6.0)])  # half don't know
    assert bang_chance(with_dk) == pytest.approx(np.full(3, -1 / 6))


def _frame(rows):
    return pd.DataFrame(rows, columns=["rater_id", "truth", "guess"])


def test_counts_and_refusals():
    g = _frame([("r1", "a", "a"), ("r1", "b", DONT_KNOW), ("r2", "b", "a")])
    t = counts_table(g, ["a", "b"])
    assert t.tolist() == [[1, 1], [0, 0], [0, 1]]
    with pytest.raises(ValueError, match="not options"):
        counts_table(_frame([("r1", "a", "zz")]), ["a", "b"])
    with pytest.raises(ValueError, match="not options"):
        counts_table(_frame([("r1", "zz", "a")]), ["a", "b"])
    with pytest.raises(ValueError, match="two or more"):
        counts_table(g, ["a"])


def test_rater_flags_with_holm():
    arms = ["a", "b", "c", "real"]
    rows = [("sharp", t, t) for t in arms for _ in range(10)]  # 40 of 40 right: p = 0.25^40
    rows += [("coin", t, arms[(i + j) % 4]) for i, t in enumerate(arms) for j in range(10)]  # a quarter right
    rows += [("shy", t, DONT_KNOW) for t in arms]
    r = rater_table(_frame(rows), arms).set_index("rater_id")
    assert bool(r.loc["sharp", "flagged"]) and not bool(r.loc["coin", "flagged"]) and not bool(r.loc["shy", "flagged"])
    assert r.loc["sharp", "p_value"] == pytest.approx(0.25**40, rel=1e-9, abs=0)
    assert r.loc["sharp", "p_holm"] == pytest.approx(2 * 0.25**40, rel=1e-9, abs=0)
    # the coin-flipper: 12 of 40 right (j = 0, 4, 8 per arm), P(X >= 12) for X ~ Binomial(40, 1/4), summed here
    assert r.loc["coin", "n_correct"] == 12
    tail = sum(math.comb(40, i) * 0.25**i * 0.75 ** (40 - i) for i in range(12, 41))
    assert r.loc["coin", "p_value"] == pytest.approx(tail, rel=1e-9)  # Holm: smallest of two testable p times 2
    assert r.loc["coin", "chance"] == 0.25 and math.isnan(r.loc["shy", "p_value"])


def test_blinding_index_tables():
    arms = ["a", "b"]
    rows = [(f"r{i}", t, t if (i + j) % 3 else DONT_KNOW) for i in range(6) for t in arms for j in range(5)]
    res = blinding_index(_frame(rows), arms, n_boot=200, seed=1)
    assert set(res.tables()) == {"blinding_james", "blinding_bang", "blinding_raters"}
    j = res.james.iloc[0]
    assert j["n_guesses"] == 60 and j["boot_ci_low"] <= j["james"] <= j["boot_ci_high"]
    assert res.bang["n_images"].tolist() == [30, 30] and (res.bang["n_incorrect"] == 0).all()


def test_rater_clustered_bootstrap_covers():
    """Raters differ in how well they recognise model A (guesses cluster by rater; the design is in
    benchmarks/bench_blinding_index.py, whose 150 studies of 20 raters give 96 % for the rater-resampled interval and
    81 % for Wald's). Here 60 seeded studies: the rater-resampled interval covers about 95 %, Wald's clearly less."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_blinding_index import coverage

    boot, wald = coverage(sims=60, n_raters=20)
    assert 0.88 <= boot <= 1.0, boot
    assert wald < boot - 0.05, (wald, boot)
