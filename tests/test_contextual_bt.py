"""Contextual Bradley–Terry, sandwich intervals, Davidson ties, pooling and the robustness line (issue 22, items 3
and 4). The fit is checked against a maximum-likelihood fit written out here independently (its own pairs, its own
parametrisation, scipy.optimize); the robustness count against brute force over every subset."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import optimize

from p2p_app import contextual_bt as C
from p2p_app import designs as D
from p2p_app import report as R
from p2p_app import simulate as S


def mixed_data(seed: int = 3) -> pd.DataFrame:
    """Two modalities, two rater groups, a position bias and tied ranks."""
    rng = np.random.default_rng(seed)
    a = C.simulate_rankings(rng, [0.6, 0.0, -0.4], 10, 6, panels=3, position_bias=[0.3, 0.0, -0.1], rater_sd=0.3,
                            tie_margin=0.25, groups=("gi", "rad"))  # fmt: skip
    b = C.simulate_rankings(rng, [0.2, -0.2, 0.5, 0.0], 10, 6, panels=3, position_bias=[0.3, 0.0, -0.1],
                            rater_sd=0.3, tie_margin=0.25, modality="radiology", groups=("gi", "rad"))  # fmt: skip
    b["trial_id"] += 10_000
    b["model"] = "x" + b["model"]
    return pd.concat([a, b], ignore_index=True)


def independent_ml(df: pd.DataFrame):
    """Plain maximum likelihood written out: pairs from the raw rows by a loop, reference-level coding (first model
    of each modality 0, first slot 0 per modality, first group's deviations 0), Davidson ties, BFGS with
    complex-step gradients. Returns (max log-lik, position effects by (modality, slot), group-averaged centred
    strengths by (modality, model), log ν)."""
    pairs = []
    for _, screen in df.groupby("trial_id"):
        rows = screen.sort_values("position").to_dict("records")
        for i, j in itertools.combinations(range(len(rows)), 2):
            a, b = rows[i], rows[j]
            y = 1.0 if a["value"] < b["value"] else (0.0 if a["value"] > b["value"] else 0.5)
            pairs.append((a["modality"], a["model"], b["model"], a["position"], b["position"], a["rater_group"], y))
    mods = sorted({p[0] for p in pairs})
    models = {m: sorted({p[1] for p in pairs if p[0] == m} | {p[2] for p in pairs if p[0] == m}) for m in mods}
    slots = sorted({p[3] for p in pairs} | {p[4] for p in pairs})
    groups = sorted({p[5] for p in pairs})
    names = [("theta", m, x) for m in mods for x in models[m][1:]]
    names += [("gamma", m, s) for m in mods for s in slots[1:]]
    names += [("delta", g, m, x) for g in groups[1:] for m in mods for x in models[m][1:]]
    names += [("lognu",)]
    idx = {n: i for i, n in enumerate(names)}

    def value(b, key):
        return b[idx[key]] if key in idx else 0.0

    def negll(b):
        total = 0.0
        for m, ma, mb, pa, pb, g, y in pairs:
            eta = value(b, ("theta", m, ma)) - value(b, ("theta", m, mb))
            eta = eta + value(b, ("gamma", m, pa)) - value(b, ("gamma", m, pb))
            eta = eta + value(b, ("delta", g, m, ma)) - value(b, ("delta", g, m, mb))
            nu = np.exp(b[idx[("lognu",)]])
            den = np.exp(eta / 2) + np.exp(-eta / 2) + nu
            num = np.exp(eta / 2) if y == 1.0 else (np.exp(-eta / 2) if y == 0.0 else nu)
            total = total - np.log(num / den)
        return total

    res = optimize.minimize(negll, np.zeros(len(names)), method="BFGS", jac="cs", options={"gtol": 1e-10})
    b = res.x
    gamma = {(m, s): value(b, ("gamma", m, s)) for m in mods for s in slots}
    strength = {}
    for m in mods:
        per_group = np.array([[value(b, ("theta", m, x)) + value(b, ("delta", g, m, x)) for x in models[m]]
                              for g in groups])  # fmt: skip
        avg = per_group.mean(axis=0)
        for x, v in zip(models[m], avg - avg.mean(), strict=True):
            strength[(m, x)] = v
    return -res.fun, gamma, strength, b[idx[("lognu",)]]


def test_contextual_fit_equals_independent_maximum_likelihood():
    df = mixed_data()
    comps = C.comparisons(df)
    f = C.fit(comps, ridge=0.0)
    assert f.converged and f.ties
    loglik, gamma, strength, lognu = independent_ml(df)
    assert f.loglik == pytest.approx(loglik, abs=1e-6)
    got = dict(zip(f.models, f.strength, strict=True))
    assert set(got) == set(strength)
    for key, v in strength.items():
        assert got[key] == pytest.approx(v, abs=1e-6), key
    for (m, s), v in gamma.items():
        if s == 0:
            continue
        term = f"position {s} vs 0 ({m})"
        assert f.params[f.terms.index(term)] == pytest.approx(v, abs=1e-6), term
    assert f.params[f.terms.index("ties (log ν)")] == pytest.approx(lognu, abs=1e-6)


def test_without_covariates_and_ties_it_is_the_plain_bradley_terry_fit():
    rng = np.random.default_rng(5)
    df = C.simulate_rankings(rng, [0.5, 0.1, -0.2, -0.4], 12, 10, panels=3)
    f = C.fit(C.comparisons(df), covariates=(), ridge=0.0)
    rows = D.ranking_rows(df)
    wins, _, _ = D.win_matrices(rows, sorted(rows["model"].unique()))
    plain = D.bt_fit(wins.sum(axis=0), alpha=0.0)
    np.testing.assert_allclose(f.strength, plain, atol=1e-8)
    assert f.covariate_terms == ()


def test_planted_position_bias_is_recovered_and_ignoring_it_biases_the_plain_fit():
    # equal models; the first slot is favoured and model m0 is put there on 80% of its screens (no shuffle)
    rng = np.random.default_rng(11)
    df = C.simulate_rankings(rng, [0.0, 0.0, 0.0], 40, 30, panels=2, position_bias=[0.6, 0.0], lead_model=0,
                             lead_share=0.8)  # fmt: skip
    comps = C.comparisons(df)
    ctx = C.fit(comps)
    plain = C.fit(comps, covariates=())
    j = ctx.terms.index("position 1 vs 0")
    se = np.sqrt(ctx.cov[j, j])
    assert abs(ctx.params[j] - (-0.6)) < 2.5 * se  # the planted bias, in the second slot's terms
    lo, hi = ctx.interval(0.95)
    m0 = ctx.models.index(("colonoscopy", "m0"))
    assert lo[m0] < 0.0 < hi[m0]  # adjusted: m0 is no better than the others
    plo, _ = plain.interval(0.95)
    assert plo[m0] > 0.0 and plain.strength[m0] > ctx.strength[m0] + 0.15  # ignoring the position inflates m0
    # and the plain fit here is the ranking table's (choix-equivalent) fit
    ranking, _ = D.ranking_tables(df, 0, rng, 0.95)
    assert ranking.set_index("model").loc["m0", "strength"] == pytest.approx(plain.strength[m0], abs=0.02)


def test_sandwich_interval_covers_with_rater_heterogeneity():
    # the estimand under rater heterogeneity is the population fit: found on a very large simulated panel
    truth_strengths, bias = [0.5, 0.0, -0.2, -0.3], [0.3, 0.0, 0.0]
    big = C.simulate_rankings(np.random.default_rng(0), truth_strengths, 3000, 10, panels=3, position_bias=bias,
                              rater_sd=0.6)  # fmt: skip
    target = C.fit(C.comparisons(big), ridge=0.0).strength
    rng = np.random.default_rng(1)
    hit_robust = hit_model = total = 0
    for _ in range(60):
        df = C.simulate_rankings(rng, truth_strengths, 30, 10, panels=3, position_bias=bias, rater_sd=0.6)
        f = C.fit(C.comparisons(df), ridge=0.0)
        lo, hi = f.interval(0.95)
        mlo, mhi = f.interval(0.95, robust=False)
        hit_robust += int(((lo <= target) & (target <= hi)).sum())
        hit_model += int(((mlo <= target) & (target <= mhi)).sum())
        total += len(target)
    assert 0.89 <= hit_robust / total <= 0.99
    assert hit_model < hit_robust  # pairs of a rater are not independent: the model-based interval is too narrow


def test_davidson_ties_are_used_only_when_ties_exist_and_estimate_the_tie_rate():
    rng = np.random.default_rng(2)
    no_ties = C.comparisons(C.simulate_rankings(rng, [0.3, 0.0, -0.3], 10, 10, panels=3))
    assert not C.fit(no_ties).ties
    # arena votes generated from the Davidson model itself: nu = 0.8
    n, eta, nu = 4000, 0.4, 0.8
    p = np.array([np.exp(eta / 2), np.exp(-eta / 2), nu]) / (np.exp(eta / 2) + np.exp(-eta / 2) + nu)
    outcome = rng.choice([1.0, 0.0, 0.5], size=n, p=p)
    swap = rng.random(n) < 0.5  # random slots: the orientation carries no information
    comps = pd.DataFrame({"source": "arena", "question": "rank_realism", "modality": "colonoscopy",
                          "rater_id": np.char.add("r", (np.arange(n) % 200).astype(str)), "rater_group": "",
                          "trial_id": np.arange(n), "model_a": np.where(swap, "b", "a"),
                          "model_b": np.where(swap, "a", "b"), "pos_a": 0, "pos_b": 1,
                          "outcome": np.where(swap & (outcome != 0.5), 1.0 - outcome, outcome), "weight": 1.0})
    f = C.fit(comps, ridge=0.0)
    j = f.terms.index("ties (log ν)")
    assert abs(f.params[j] - np.log(nu)) < 3 * np.sqrt(f.cov[j, j])
    a = f.models.index(("colonoscopy", "a"))
    assert f.strength[a] - f.strength[1 - a] == pytest.approx(eta, abs=3 * np.sqrt(f.cov_strength[a, a]) * 2)


def test_pooling_weights_equal_repeating_a_source_and_raters_stay_per_source():
    rng = np.random.default_rng(4)
    arena = C.simulate_rankings(rng, [0.4, 0.0, -0.4], 8, 6, panels=2)
    study = C.simulate_rankings(rng, [0.4, 0.0, -0.4], 8, 6, panels=3)
    study["trial_id"] += 1000
    weighted = C.fit(C.pooled_comparisons({"arena": (arena, 1.0), "study": (study, 2.0)}), ridge=0.0)
    twice = study.copy()
    twice["trial_id"] += 1000
    repeated = C.fit(C.pooled_comparisons({"arena": (arena, 1.0), "study": (pd.concat([study, twice]), 1.0)}),
                     ridge=0.0)  # fmt: skip
    np.testing.assert_allclose(weighted.strength, repeated.strength, atol=1e-8)
    assert weighted.n_clusters == 16  # the same rater ids in two sources are two raters
    with pytest.raises(ValueError, match="weight"):
        C.comparisons(arena, weight=0.0)
    with pytest.raises(ValueError, match="unknown covariates"):
        C.fit(C.comparisons(arena), covariates=("screen",))


# --------------------------------------------------------------------------------------------------------------------
# Robustness line
# --------------------------------------------------------------------------------------------------------------------


def brute_force_flip(wins: np.ndarray, max_size: int) -> int | None:
    """Smallest number of screens whose removal changes the top model, over every subset up to ``max_size``."""
    comp = wins.sum(axis=0)
    top = int(np.argmax(D.bt_fit(comp)))
    for r in range(1, max_size + 1):
        subsets = np.array(list(itertools.combinations(range(len(wins)), r)))
        theta = D.bt_fit(comp[None] - wins[subsets].sum(axis=1))
        others = np.delete(theta, top, axis=1).max(axis=1)
        if (others > theta[:, top] + 1e-12).any():
            return r
    return None


@pytest.mark.parametrize(("seed", "raters", "screens"),
                         [(0, 4, 4), (1, 4, 4), (2, 5, 3), (3, 6, 5), (4, 8, 5), (5, 8, 5), (6, 10, 4)])
def test_robustness_count_equals_brute_force(seed, raters, screens):
    rng = np.random.default_rng(seed)
    df = C.simulate_rankings(rng, [0.4, 0.2, 0.0], raters, screens, panels=2)
    rows = D.ranking_rows(df)
    models = sorted(rows["model"].unique())
    wins, trials = C.screen_wins(rows, models)
    res = C.flip_count(wins)
    expected = brute_force_flip(wins, 4)
    if expected is None:  # nothing up to 4 screens: ours must not claim fewer
        assert res["n_to_flip"] is None or res["n_to_flip"] > 4
        return
    assert res["n_to_flip"] == expected
    kept = np.delete(wins, res["removed"], axis=0).sum(axis=0)  # the listed screens really change the top
    assert int(np.argmax(D.bt_fit(kept))) != res["top"] == int(np.argmax(D.bt_fit(wins.sum(axis=0))))


def test_robustness_table_lists_the_screens_and_labels_the_evidence():
    rng = np.random.default_rng(7)
    df = C.simulate_rankings(rng, [0.5, 0.0, -0.5], 10, 8, panels=3)
    ranking, _ = D.ranking_tables(df, 50, rng, 0.95)
    t = C.robustness_table(df, ranking)
    row = t.iloc[0]
    assert row["top_model"] == ranking.iloc[0]["model"]
    removed = row["removed"].split(", ")
    assert len(removed) == row["n_to_flip"] and all("/" in r for r in removed)
    assert row["share"] == pytest.approx(row["n_to_flip"] / row["n_answers"])
    half = float(((ranking["ci_high"] - ranking["ci_low"]) / 2).max())
    assert row["max_half_width"] == pytest.approx(half) and row["label"] == C.evidence_label(half)
    assert [C.evidence_label(x) for x in (0.2, 0.25, 0.3, 0.5, 0.51, float("nan"))] == [
        "established", "established", "usable", "usable", "preliminary", "preliminary"]


def test_report_shows_the_contextual_fit_next_to_the_plain_one():
    df = S.simulate_ranking(n_raters=6, n_items=8, seed=3)
    page = R.build_report(df, n_boot=20)
    for name in ("ranking_contextual", "ranking_covariates", "ranking_robustness", "plain_strength"):
        assert name in page
    live = C.simulate_rankings(np.random.default_rng(0), [0.3, 0.0, -0.3], 5, 4, panels=2)
    live["model"] = live["model"].map(dict(zip(["m0", "m1", "m2"], sorted(df["model"].unique())[:3], strict=True)))
    pooled = R.build_report(df, n_boot=0, pool={"study": (df, 1.0), "arena": (live, 0.5)})
    assert "ranking_pooled" in pooled and "arena × 0.5" in pooled
    scores_only = S.simulate_ratings(n_raters=3, n_prompts=3, seed=1)
    assert "ranking_contextual" not in R.build_report(scores_only, n_boot=10)


def test_degenerate_rankings_say_why():
    rng = np.random.default_rng(0)
    df = C.simulate_rankings(rng, [0.3, 0.0, -0.3], 1, 5, panels=3)
    tables = C.report_tables(df, None)
    assert (tables["ranking_contextual"]["note"] == "CI needs two or more raters").all()
    tied = df.assign(value=1.0)  # every panel given the same rank
    tables = C.report_tables(tied, None)
    assert tables["ranking_contextual"]["note"].str.contains("almost every pair tied").all()
    rob = tables["ranking_robustness"].iloc[0]
    assert rob["n_to_flip"] == 0 and "no single top model" in rob["note"] and rob["top_model"] != rob["top_model"]

