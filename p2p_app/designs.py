"""Statistics for the study designs beyond scores (docs/CONTRACTS.md, "Study designs"): forced choice ("which one is
real?"), full rankings and catch trials. Pure functions of the tidy ratings frame; :func:`p2p_app.analysis.analyze`
calls them only when the frame holds such answers, so a rating-only study pays nothing.

* **Forced choice** (question ``chosen_real``: value 1 on the panel picked as real, 0 on the others; one real and
  k generated panels per screen). A *screen* is one (rater, trial) with exactly one pick; each rater's first answer
  per item counts (repeats and catch trials are left out). Accuracy = share of screens where the real image was
  picked, against chance 1/(k+1). Raters answer many screens each and differ, so the interval and test treat
  *raters* as the random sample (:func:`rater_clustered_proportion`: cluster-robust variance over raters,
  Korn–Graubard beta interval at the effective sample size with t on raters − 1 df, and the test dual to it); the
  exact binomial over all screens treated screens as independent and covered 52–78 % when raters differ. The
  group comparison's interval is clustered the same way; ``p_raters`` (Mann–Whitney on per-rater accuracies)
  too, ``p_fisher`` (screens) is not.
  Per model: the share of screens showing that model on which it was picked as real (real = accuracy; same
  rater-clustered interval and test). Agreement:
  Fleiss' κ (and Krippendorff's α, nominal) on *which model* each rater picked per item (the same code as the score
  agreement, :func:`p2p_app.analysis.reliability.agreement_scope`; bootstrap CI over items).
* **Ranking** (questions ``rank_<q>``: value = rank of the panel on that screen, 1 = best; with more than one
  modality in the frame, as in the live arena, each modality is fitted on its own: ``question`` reads
  ``rank_<q> · <modality>``). Each ranking is broken into all its implied pairs (under Plackett–Luce every pair
  follows Bradley–Terry with the same strengths, Luce's choice axiom, so the pair fit is consistent);
  ``strength`` = Bradley–Terry log-strength, the fit of ``choix.ilsr_pairwise_dense`` (:func:`bt_fit`, all
  bootstrap replicates at once; centred: mean 0), CI = strength ± t(raters − 1) × the standard error from
  resampling *raters* (cluster bootstrap: a rater's rankings stay together), with the cluster bootstrap's
  small-sample factor (:func:`rater_interval`; the plain percentile interval was too narrow with few raters);
  ``pl_strength`` = the full Plackett–Luce fit
  (``choix.ilsr_rankings``) for comparison. Ranks respect overlapping intervals: ``rank_low`` = 1 + models whose
  interval lies wholly above, ``rank_high`` = models − those wholly below; ``rank`` = ``rank_low``.
* **Catch trials** (rows with ``catch`` ``"real"`` or ``"broken"``): checks per answer — realism: a known real image
  passes with a score ≥ 4, a broken one with ≤ 2 or "can't judge"; ``chosen_real``: one check per
  screen, on the panel picked, which passes when it is the known real image (on a screen without one: when it is
  not broken); ``rank_<q>``: one check per screen, which passes when every broken panel is ranked below
  every other panel. A rater is flagged when they have at least ``min_catch_answers`` checks and pass
  fewer than ``min_catch_pass_rate`` of them. Every trial holding a catch row is left out of every other statistic.
  Per kind (:func:`catch_kind_table`: the known real image, or how a broken one was made — ``noise``, ``flipped``,
  ``blank``, ``wrong_anatomy``): checks, pass rate and its exact (Clopper–Pearson) interval, so a kind that raters
  miss (a subtle wrong anatomy) is told apart from careless raters.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

from .tidy import (
    ALL,
    CATCH_BROKEN,
    CATCH_REAL,
    CHOSEN_REAL,
    RANK_PREFIX,
    REAL_SOURCE,
    TIDY_DEFAULTS,
    not_computable,
    result_table,
)

PASS_THRESHOLD = 4.0
BROKEN_MAX = 2.0
"""A broken catch image passes a realism question with a score at or below this (or "can't judge")."""
DEFAULT_MIN_CATCH_PASS_RATE = 0.75
DEFAULT_MIN_CATCH_ANSWERS = 3
PL_ALPHA = 1e-3
"""Regularisation of the choix fits (a model that never wins still gets a finite strength)."""

FORCED_CHOICE_COLUMNS = (
    "rater_group", "n_panels", "chance", "n_screens", "n_raters", "n_correct", "accuracy", "ci_low", "ci_high",
    "p_value", "note",
)  # fmt: skip
FC_MODEL_COLUMNS = ("model", "source", "n_screens", "n_chosen", "chosen_rate", "ci_low", "ci_high", "chance",
                    "p_value", "note")  # fmt: skip
FC_GROUP_COLUMNS = (
    "group_a", "group_b", "n_a", "accuracy_a", "n_b", "accuracy_b", "diff", "diff_ci_low", "diff_ci_high",
    "p_fisher", "n_raters_a", "n_raters_b", "p_raters", "note",
)  # fmt: skip
RANKING_COLUMNS = (
    "question", "model", "n_rankings", "n_raters", "mean_rank", "strength", "ci_low", "ci_high", "pl_strength",
    "rank", "rank_low", "rank_high", "rank_band", "note",
)  # fmt: skip
WIN_COLUMNS = ("question", "model_a", "model_b", "n", "wins_a", "win_rate")
CATCH_KIND_COLUMNS = ("catch_kind", "n_checks", "n_passed", "pass_rate", "ci_low", "ci_high", "n_raters", "note")
CATCH_COLUMNS = (
    "rater_id", "rater_group", "n_catch", "n_passed", "pass_rate", "n_real", "real_passed", "n_broken",
    "broken_passed", "flagged", "note",
)  # fmt: skip






def _col(df: pd.DataFrame, name: str) -> pd.Series:
    if name in df.columns:
        return df[name]
    return pd.Series(TIDY_DEFAULTS[name], index=df.index, dtype=object)


def catch_trial_mask(df: pd.DataFrame) -> np.ndarray | None:
    """Rows of trials that hold a catch row (to leave out of every other statistic); ``None`` when there is none
    (the common case: one vectorised comparison, no copy)."""
    if "catch" not in df.columns or df.empty:
        return None
    col = df["catch"]
    is_catch = (col.notna() & col.ne("")).to_numpy(dtype=bool)  # vectorised on arrow strings (no Python objects)
    if not is_catch.any():
        return None
    trial = df["trial_id"].to_numpy()
    return np.isin(trial, np.unique(trial[is_catch]))


def has_question(df: pd.DataFrame, pred) -> bool:
    return any(pred(str(q)) for q in pd.unique(df["question"]))


def clopper_pearson(k, n, ci_level: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact (Clopper–Pearson) interval for ``k`` successes in ``n`` trials (arrays allowed; NaN where n = 0)."""
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    lo = np.full(np.broadcast(k, n).shape, np.nan)
    hi = lo.copy()
    ok = np.broadcast_to(n > 0, lo.shape)
    if ok.any():
        kk, nn = np.broadcast_to(k, lo.shape)[ok], np.broadcast_to(n, lo.shape)[ok]
        lo[ok], hi[ok] = proportion_confint(kk, nn, alpha=1 - ci_level, method="beta")
        lo[ok] = np.where(kk == 0, 0.0, lo[ok])
        hi[ok] = np.where(kk == nn, 1.0, hi[ok])
    return lo, hi


def rater_clustered_proportion(k, n, chance, ci_level: float) -> dict[str, np.ndarray]:
    """A proportion over screens whose raters answer many screens each, with raters random (rater-clustered).

    ``k``, ``n``: successes and screens per rater, arrays with raters on the last axis (more leading axes: many
    studies at once, as in ``p2p plan``; a rater with ``n == 0`` is absent). ``chance``: the value tested against
    (scalar or per leading index; NaN: no test). Returns arrays ``estimate`` (Σk/Σn, every screen weighing the same),
    ``ci_low``, ``ci_high``, ``p_value``, ``n_raters``, ``se`` and ``deff`` (design effect).

    Variance: the cluster-robust (sandwich, CR1) variance of the ratio estimator over raters,
    ``R/(R − 1) · Σ_r (k_r − p̂ n_r)² / N²`` — with equal screens per rater exactly the variance of the mean of the
    per-rater accuracies, the t interval over raters (no floor at the binomial variance: with t on raters − 1 df
    the unfloored interval covers 95–97 % also when raters do not differ, the floored one over-covered, 98–100 %
    with 3–5 raters). Where it is 0 (every rater equally accurate) the binomial variance stands in. Interval: Korn &
    Graubard (1998, "Confidence
    intervals for proportions with small expected number of positive counts estimated from survey data", Survey
    Methodology 24:193) — the Clopper–Pearson interval at the effective sample size
    ``n_eff = p̂(1 − p̂)/V · (z/t_{R−1})²``, so the interval stays in [0, 1], contains p̂, and widens with few raters
    by the t quantile on raters − 1 df. Test: the one dual to that interval, ``2·min(P(X ≥ x), P(X ≤ x))`` with
    ``x = p̂·n_eff`` successes of ``n_eff`` at ``chance`` (the continuous binomial, via the beta distribution), so
    the interval excludes chance exactly when p < 1 − ci_level. Fewer than two raters: NaN interval and test (the
    spread between raters is unknown). The exact binomial over all screens that this replaces covered 78 % (40
    screens per rater) and 52 % (160) when raters differ (``benchmarks/bench_coverage.py``)."""
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    big_n, big_k = n.sum(-1), k.sum(-1)
    n_r = (n > 0).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = big_k / big_n
        resid = k - p[..., None] * n
        v_cl = n_r / (n_r - 1) * (resid**2).sum(-1) / big_n**2
        v_bin = p * (1 - p) / big_n
        v = v_cl
        tail = (1 - ci_level) / 2
        df = np.where(n_r >= 2, n_r - 1, np.nan)
        shrink = (stats.norm.ppf(1 - tail) / stats.t.ppf(1 - tail, df)) ** 2
        n_eff = np.where(v > 0, p * (1 - p) / v, big_n) * shrink  # v = 0: the binomial (design effect 1)
        x = p * n_eff
        lo = np.where(x > 0, stats.beta.ppf(tail, x, n_eff - x + 1), 0.0)
        hi = np.where(x < n_eff, stats.beta.ppf(1 - tail, x + 1, n_eff - x), 1.0)
        chance = np.broadcast_to(np.asarray(chance, dtype=float), np.shape(p))
        upper = np.where(x > 0, stats.beta.cdf(chance, x, n_eff - x + 1), 1.0)  # P(X >= x | chance)
        lower = np.where(x < n_eff, stats.beta.sf(chance, x + 1, n_eff - x), 1.0)  # P(X <= x | chance)
        pv = np.minimum(1.0, 2 * np.minimum(upper, lower))
    bad = ~(n_r >= 2)
    lo, hi, pv = (np.where(bad, np.nan, a) for a in (lo, hi, pv))
    pv = np.where(np.isfinite(chance), pv, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        deff = np.where(v_bin > 0, v / v_bin, 1.0)
    return {"estimate": p, "ci_low": lo, "ci_high": hi, "p_value": pv, "n_raters": n_r,
            "se": np.where(bad, np.nan, np.sqrt(v)), "deff": np.where(bad, np.nan, deff)}  # fmt: skip


def few_raters_note(n_raters: int, what: str = "interval") -> str:
    """The plain note on an interval over raters that is blank or not informative (``""`` with three or more)."""
    if n_raters < 2:
        return f"one rater: no {what} (the spread between raters needs two or more)"
    if n_raters == 2:
        return f"2 raters: {what} not informative (t with 1 df)"
    return ""


def _per_rater_counts(s: pd.DataFrame, success: str = "correct") -> tuple[np.ndarray, np.ndarray]:
    per = s.groupby("rater_id", sort=True)[success].agg(["sum", "size"])
    return per["sum"].to_numpy(dtype=float), per["size"].to_numpy(dtype=float)


# --------------------------------------------------------------------------------------------------------------------
# Forced choice
# --------------------------------------------------------------------------------------------------------------------


def forced_choice_screens(df: pd.DataFrame) -> pd.DataFrame:
    """One row per forced-choice screen that counts: ``rater_id, rater_group, item_id, trial_id, n_panels,
    chosen_model, chosen_source, correct`` plus ``models`` (the models shown, as a tuple) and ``real_model``;
    repeats, catch trials and
    screens without exactly one pick (or without exactly one real panel) are left out."""
    sel = (df["question"] == CHOSEN_REAL).to_numpy(dtype=bool) & ~df["is_repeat"].fillna(False).to_numpy(dtype=bool)
    mask = catch_trial_mask(df)
    if mask is not None:
        sel &= ~mask
    cols = ["rater_id", "item_id", "trial_id", "model", "source", "value", "n_panels", "answered_at"]
    s = df.loc[sel, cols].copy()
    s["rater_group"] = _col(df, "rater_group").loc[sel].fillna("").astype(str).to_numpy()
    s["picked"] = pd.to_numeric(s["value"], errors="coerce").fillna(0).to_numpy() == 1
    s["is_real"] = s["source"].astype(str).to_numpy() == REAL_SOURCE
    out_cols = ["rater_id", "rater_group", "item_id", "trial_id", "n_panels", "chosen_model", "chosen_source",
                "correct", "models", "real_model"]  # fmt: skip
    if s.empty:
        return pd.DataFrame(columns=out_cols)
    g = s.groupby("trial_id", sort=True)
    per = g.agg(n_picked=("picked", "sum"), n_real=("is_real", "sum"), rater_id=("rater_id", "first"),
                rater_group=("rater_group", "first"), item_id=("item_id", "first"), n_panels=("n_panels", "first"),
                t=("answered_at", "min"))  # fmt: skip
    per["models"] = g["model"].agg(lambda m: tuple(sorted(map(str, m))))
    chosen = s[s["picked"]].drop_duplicates("trial_id").set_index("trial_id")
    per["chosen_model"] = chosen["model"].astype(str)
    per["chosen_source"] = chosen["source"].astype(str)
    per["real_model"] = s[s["is_real"]].drop_duplicates("trial_id").set_index("trial_id")["model"].astype(str)
    per = per[(per["n_picked"] == 1) & (per["n_real"] == 1)]
    per = per.reset_index().sort_values(["t", "trial_id"])
    per = per.drop_duplicates(["rater_id", "item_id"])  # a rater's first answer per item
    per["correct"] = per["chosen_source"] == REAL_SOURCE
    per["n_panels"] = per["n_panels"].astype("int64")
    return per.loc[:, out_cols].reset_index(drop=True)


def forced_choice_accuracy(screens: pd.DataFrame, ci_level: float) -> pd.DataFrame:
    """Accuracy against chance per (rater group, panels per screen): all raters first (``rater_group == "all"``),
    then each non-empty group; interval and test with raters random (:func:`rater_clustered_proportion`).
    Columns: ``FORCED_CHOICE_COLUMNS``."""
    if screens.empty:
        return result_table([{"rater_group": ALL, "note": not_computable("no forced-choice screens")}], FORCED_CHOICE_COLUMNS)
    rows = []
    groups = [(ALL, screens)] + [(g, s) for g, s in screens.groupby("rater_group", sort=True) if g != ""]
    for group, s in groups:
        for k, sk in s.groupby("n_panels", sort=True):
            n, c = len(sk), int(sk["correct"].sum())
            chance = 1.0 / int(k)
            r = rater_clustered_proportion(*_per_rater_counts(sk), chance, ci_level)
            n_raters = int(r["n_raters"])
            rows.append({"rater_group": group, "n_panels": int(k), "chance": chance, "n_screens": n,
                         "n_raters": n_raters, "n_correct": c, "accuracy": c / n,
                         "ci_low": float(r["ci_low"]), "ci_high": float(r["ci_high"]),
                         "p_value": float(r["p_value"]),
                         "note": few_raters_note(n_raters, "interval or test")})  # fmt: skip
    return result_table(rows, FORCED_CHOICE_COLUMNS)


def forced_choice_models(screens: pd.DataFrame, ci_level: float) -> pd.DataFrame:
    """Per model: share of the screens showing it on which it was picked as real (real = accuracy), exact CI and
    binomial test against chance 1/(panels) (blank when screens differ in panel count). Columns:
    ``FC_MODEL_COLUMNS``."""
    if screens.empty:
        return result_table([{"model": ALL, "note": not_computable("no forced-choice screens")}], FC_MODEL_COLUMNS)
    shown = screens[["trial_id", "rater_id", "models", "n_panels", "chosen_model"]].explode("models")
    shown = shown.rename(columns={"models": "model"})
    shown["chosen"] = shown["model"] == shown["chosen_model"]
    per = shown.groupby("model").agg(n_screens=("chosen", "size"), n_chosen=("chosen", "sum"),
                                     k_min=("n_panels", "min"), k_max=("n_panels", "max"))  # fmt: skip
    real_models = set(screens["real_model"])
    rows = []
    for model, r in per.iterrows():
        n, c = int(r["n_screens"]), int(r["n_chosen"])
        chance = 1.0 / r["k_min"] if r["k_min"] == r["k_max"] else np.nan
        cl = rater_clustered_proportion(*_per_rater_counts(shown[shown["model"] == model], "chosen"), chance, ci_level)
        n_raters = int(cl["n_raters"])
        note = few_raters_note(n_raters, "interval or test")
        if not np.isfinite(chance):
            note = "; ".join(x for x in (note, "no test: screens differ in panel count") if x)
        rows.append({"model": model, "source": REAL_SOURCE if model in real_models else "generated",
                     "n_screens": n, "n_chosen": c, "chosen_rate": c / n, "ci_low": float(cl["ci_low"]),
                     "ci_high": float(cl["ci_high"]), "chance": chance, "p_value": float(cl["p_value"]),
                     "note": note})  # fmt: skip
    out = result_table(rows, FC_MODEL_COLUMNS)
    return out.sort_values(["source", "model"], key=lambda c: c.ne(REAL_SOURCE) if c.name == "source" else c,
                           ignore_index=True)  # fmt: skip


def clustered_difference(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray],
                         ci_level: float) -> tuple[float, float]:  # fmt: skip
    """Interval of the difference of two rater-clustered proportions (``a``, ``b``: successes and screens per
    rater of two disjoint sets of raters): the variances of :func:`rater_clustered_proportion` added, Student's t
    with Welch–Satterthwaite df on raters, clipped to [−1, 1]. NaN with fewer than two raters on a side."""
    ra = rater_clustered_proportion(*a, np.nan, ci_level)
    rb = rater_clustered_proportion(*b, np.nan, ci_level)
    va, vb = float(ra["se"]) ** 2, float(rb["se"]) ** 2
    if not np.isfinite(va + vb):
        return np.nan, np.nan
    d = float(ra["estimate"] - rb["estimate"])
    if va + vb == 0:
        return d, d
    df = (va + vb) ** 2 / (va**2 / (int(ra["n_raters"]) - 1) + vb**2 / (int(rb["n_raters"]) - 1))
    half = float(stats.t.ppf(0.5 + ci_level / 2, df)) * np.sqrt(va + vb)
    return max(d - half, -1.0), min(d + half, 1.0)


def forced_choice_groups(screens: pd.DataFrame, ci_level: float) -> pd.DataFrame:
    """Every two rater groups compared: accuracy difference (a − b) with a rater-clustered interval
    (:func:`clustered_difference`: raters random in each group), Fisher's exact test on the 2×2 table of screens
    (``p_fisher``: treats screens as independent, too small when raters differ) and a Mann–Whitney test on per-rater
    accuracies (``p_raters``: respects that a rater's screens are not independent). Columns: ``FC_GROUP_COLUMNS``;
    one not-computable row with fewer than two groups."""
    groups = sorted(g for g in screens["rater_group"].unique() if g != "") if not screens.empty else []
    if len(groups) < 2:
        return result_table([{"note": not_computable("fewer than two rater groups")}], FC_GROUP_COLUMNS)
    per_rater = screens.groupby(["rater_group", "rater_id"])["correct"].mean()
    rows = []
    for a, b in itertools.combinations(groups, 2):
        sa, sb = screens[screens["rater_group"] == a], screens[screens["rater_group"] == b]
        na, nb, ca, cb = len(sa), len(sb), int(sa["correct"].sum()), int(sb["correct"].sum())
        lo, hi = clustered_difference(_per_rater_counts(sa), _per_rater_counts(sb), ci_level)
        fisher = stats.fisher_exact([[ca, na - ca], [cb, nb - cb]]).pvalue
        ra, rb = per_rater.loc[a].to_numpy(), per_rater.loc[b].to_numpy()
        two = len(ra) >= 2 and len(rb) >= 2
        p_r = stats.mannwhitneyu(ra, rb).pvalue if two else np.nan
        rows.append({"group_a": a, "group_b": b, "n_a": na, "accuracy_a": ca / na, "n_b": nb, "accuracy_b": cb / nb,
                     "diff": ca / na - cb / nb, "diff_ci_low": float(lo), "diff_ci_high": float(hi),
                     "p_fisher": float(fisher), "n_raters_a": len(ra), "n_raters_b": len(rb),
                     "p_raters": float(p_r),
                     "note": "" if two else "interval and p_raters need two raters per group"})  # fmt: skip
    return result_table(rows, FC_GROUP_COLUMNS)




# --------------------------------------------------------------------------------------------------------------------
# Ranking
# --------------------------------------------------------------------------------------------------------------------


def ranking_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The ranking answers that enter the fits: ``rank_<q>`` rows, first showings, no catch screens, no can't-judge
    (columns question, rater_id, trial_id, model, value, cant_judge; the question names the modality when the frame
    has several)."""
    sel = df["question"].astype(str).str.startswith(RANK_PREFIX).to_numpy(dtype=bool)
    sel = sel & ~df["is_repeat"].fillna(False).to_numpy(dtype=bool)
    mask = catch_trial_mask(df)
    if mask is not None:
        sel &= ~mask
    s = df.loc[sel, ["question", "rater_id", "trial_id", "model", "value", "cant_judge"]].copy()
    s["value"] = pd.to_numeric(s["value"], errors="coerce")
    if "modality" in df.columns and df.loc[sel, "modality"].nunique() > 1:
        # models of different modalities are never ranked together (the live arena): one fit per modality
        s["question"] = s["question"].astype(str) + " · " + df.loc[sel, "modality"].astype(str)
    s = s[s["value"].notna() & ~s["cant_judge"].fillna(False).astype(bool)]
    return s


def win_matrices(s: pd.DataFrame, models: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """For one question's ranking rows: per-rater win counts (raters × models × models; ``[r, a, b]`` = times rater
    r ranked a above b), the rater code of each ranking, and the rankings (model codes best first, per trial)."""
    m_index = {m: i for i, m in enumerate(models)}
    mc = s["model"].astype(str).map(m_index).to_numpy(dtype=np.int64)
    rc, _ = pd.factorize(s["rater_id"], sort=True)
    trial = s["trial_id"].to_numpy()
    value = s["value"].to_numpy(dtype=float)
    n_r, n_m = int(rc.max()) + 1, len(models)
    a = pd.DataFrame({"trial": trial, "m": mc, "v": value, "r": rc})
    pairs = a.merge(a[["trial", "m", "v"]], on="trial", suffixes=("", "_b"))
    pairs = pairs[pairs["v"] < pairs["v_b"]]  # ties are no comparison
    wins = np.zeros((n_r, n_m, n_m))
    np.add.at(wins, (pairs["r"].to_numpy(), pairs["m"].to_numpy(), pairs["m_b"].to_numpy()), 1.0)
    a = a.sort_values(["trial", "v"], kind="stable")
    rankings = [g["m"].tolist() for _, g in a.groupby("trial", sort=True) if len(g) >= 2]
    rater_of = a.groupby("trial", sort=True)["r"].first().to_numpy()
    return wins, rater_of, rankings


def bt_fit(comp: np.ndarray, alpha: float = PL_ALPHA, max_iter: int = 100, tol: float = 1e-10) -> np.ndarray:
    """Bradley–Terry log-strengths (centred) from win counts ``comp[..., a, b]`` = times a beat b, for one matrix or
    a stack of them at once (bootstrap replicates, simulated studies).

    The fixed point is exactly that of ``choix.ilsr_pairwise_dense(comp, alpha)`` (its Markov-chain rates start at
    ``alpha``: the stationary condition is ``∇ log L(θ) = α·K·(K·softmax(θ) − 1)``, a penalised likelihood), found
    by Newton steps on all matrices together instead of one spectral iteration per matrix (~100× faster for a
    bootstrap; ``tests/test_designs.py`` checks it against choix to 1e-9)."""
    c = np.asarray(comp, dtype=float)
    single = c.ndim == 2
    c = c[None] if single else c
    k = c.shape[-1]
    eye = np.eye(k)
    n = c + np.swapaxes(c, -1, -2)
    theta = np.zeros(c.shape[:-1])
    for _ in range(max_iter):
        s = 1.0 / (1.0 + np.exp(theta[..., None, :] - theta[..., :, None]))  # P(a beats b)
        z = np.exp(theta - theta.max(axis=-1, keepdims=True))
        pi = z / z.sum(axis=-1, keepdims=True)
        grad = (c - n * s).sum(axis=-1) - alpha * k * (k * pi - 1.0)
        w = n * s * (1.0 - s) * (1.0 - eye)
        hess = (w - eye * w.sum(axis=-1)[..., None]
                - alpha * k * k * (eye * pi[..., None, :] - pi[..., :, None] * pi[..., None, :]))  # fmt: skip
        step = np.clip(np.linalg.solve(1.0 / k - hess, grad[..., None])[..., 0], -4.0, 4.0)
        theta = theta + step
        theta -= theta.mean(axis=-1, keepdims=True)
        if np.abs(step).max() < tol:
            break
    return theta[0] if single else theta


def rater_interval(point, reps: np.ndarray, n_raters: int, ci_level: float) -> tuple[np.ndarray, np.ndarray]:
    """The interval of a rater-bootstrap statistic: ``point ± t(n_raters − 1) · SD(reps) · sqrt(n/(n − 1))`` (the
    bootstrap standard error with the small-sample factor of a cluster bootstrap, and Student's t on raters − 1
    df). The plain percentile interval of the replicates covered 68% (3 raters), 85–88% (6) and 89–92% (10–16)
    of simulated true strength differences; this one 94–97% on the same grid (``tests/test_plan.py``)."""
    n = int(n_raters)
    half = stats.t.ppf(0.5 + ci_level / 2, n - 1) * np.std(reps, axis=0, ddof=1) * np.sqrt(n / (n - 1))
    return np.asarray(point) - half, np.asarray(point) + half


def bt_bootstrap(per_rater: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` × models Bradley–Terry strengths from resampling raters (``per_rater``: raters × models × models
    win counts; a rater's rankings stay together)."""
    n_r = per_rater.shape[0]
    counts = rng.multinomial(n_r, np.full(n_r, 1.0 / n_r), size=n_boot).astype(float)
    return bt_fit(np.tensordot(counts, per_rater, axes=(1, 0)))  # n_boot × models × models → n_boot × models


def rank_bands(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranks that respect overlapping intervals: best possible rank = 1 + models whose interval lies wholly above,
    worst = models − those wholly below."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    above = (lo[None, :] > hi[:, None]).sum(axis=1)
    below = (hi[None, :] < lo[:, None]).sum(axis=1)
    return 1 + above, len(lo) - below


def ranking_tables(df: pd.DataFrame, n_boot: int, rng: np.random.Generator, ci_level: float):
    """(``ranking``, ``ranking_wins``) tables for every ``rank_<q>`` question (see the module docstring)."""
    import choix

    s = ranking_rows(df)
    if s.empty:
        return (result_table([{"question": "", "model": ALL, "note": not_computable("no rankings")}], RANKING_COLUMNS),
                pd.DataFrame(columns=list(WIN_COLUMNS)))  # fmt: skip
    rows, wins_rows = [], []
    for question, sq in s.groupby("question", sort=True):
        models = sorted(map(str, sq["model"].unique()), key=lambda m: (m != "real", m))
        per_rater, _, rankings = win_matrices(sq, models)
        comp = per_rater.sum(axis=0)
        n_m, n_r = len(models), per_rater.shape[0]
        mean_rank = sq.groupby("model")["value"].mean()
        n_rank = sq.groupby("model")["trial_id"].nunique()
        n_raters_m = sq.groupby("model")["rater_id"].nunique()
        base = [{"question": question, "model": m, "n_rankings": int(n_rank.get(m, 0)),
                 "n_raters": int(n_raters_m.get(m, 0)), "mean_rank": float(mean_rank.get(m, np.nan))}
                for m in models]  # fmt: skip
        for a, b in itertools.permutations(range(n_m), 2):
            n = comp[a, b] + comp[b, a]
            wins_rows.append({"question": question, "model_a": models[a], "model_b": models[b], "n": int(n),
                              "wins_a": int(comp[a, b]), "win_rate": comp[a, b] / n if n else np.nan})  # fmt: skip
        if n_m < 2 or not rankings:
            rows += [{**r, "note": not_computable("fewer than two models ranked")} for r in base]
            continue
        if comp.sum() == 0:  # every ranking tied: no pair was ever ordered
            rows += [{**r, "rank": 1, "rank_low": 1, "rank_high": n_m, "rank_band": f"1–{n_m}",
                      "note": "every ranking tied: no comparison, so no strength and no interval"} for r in base]
            continue
        strength = bt_fit(comp)
        pl = choix.ilsr_rankings(n_m, [tuple(r) for r in rankings], alpha=PL_ALPHA, max_iter=500)
        pl = pl - pl.mean()
        lo = hi = np.full(n_m, np.nan)
        note = ""
        if n_r < 2:
            note = "one rater: no CI (the spread between raters needs two or more)"
        elif n_boot == 0:
            note = "no CI (no bootstrap replicates)"
        else:
            reps = bt_bootstrap(per_rater, n_boot, rng)
            lo, hi = rater_interval(strength, reps, n_r, ci_level)
            if n_r == 2:
                note = "2 raters: interval not informative (t with 1 df)"
        won, lost = comp.sum(axis=1), comp.sum(axis=0)
        model_notes = [
            "won every comparison: its strength (and interval) is set by the regulariser, not the data"
            if won[i] > 0 and lost[i] == 0 else
            "lost every comparison: its strength (and interval) is set by the regulariser, not the data"
            if lost[i] > 0 and won[i] == 0 else
            "never compared: strength set by the regulariser" if won[i] + lost[i] == 0 else ""
            for i in range(n_m)
        ]  # fmt: skip
        if np.isfinite(lo).all():
            r_lo, r_hi = rank_bands(lo, hi)
        else:  # without intervals: ranks by the point estimate
            r_lo = r_hi = 1 + (strength[None, :] > strength[:, None]).sum(axis=1)
        for i, r in enumerate(base):
            band = f"{r_lo[i]}" if r_lo[i] == r_hi[i] else f"{r_lo[i]}–{r_hi[i]}"
            rows.append({**r, "strength": float(strength[i]), "ci_low": float(lo[i]), "ci_high": float(hi[i]),
                         "pl_strength": float(pl[i]), "rank": int(r_lo[i]), "rank_low": int(r_lo[i]),
                         "rank_high": int(r_hi[i]), "rank_band": band,
                         "note": "; ".join(x for x in (note, model_notes[i]) if x)})  # fmt: skip
    out = result_table(rows, RANKING_COLUMNS).sort_values(["question", "rank", "strength"], ascending=[True, True, False],
                                                    ignore_index=True)  # fmt: skip
    return out, pd.DataFrame(wins_rows, columns=list(WIN_COLUMNS))


# --------------------------------------------------------------------------------------------------------------------
# Catch trials
# --------------------------------------------------------------------------------------------------------------------


def catch_checks(df: pd.DataFrame) -> pd.DataFrame:
    """One row per checkable catch answer: ``rater_id, rater_group, catch, question, passed`` (see the module
    docstring for the rules; a forced-choice catch screen is one check, on the panel picked); first answers only
    (repeats left out)."""
    cols = ["rater_id", "rater_group", "catch", "catch_kind", "question", "passed"]
    in_catch = catch_trial_mask(df)
    if in_catch is None:
        return pd.DataFrame(columns=cols)
    sel = in_catch & ~df["is_repeat"].fillna(False).to_numpy(dtype=bool)
    s = df.loc[sel, ["rater_id", "trial_id", "question", "value", "cant_judge", "catch"]].copy()
    s["rater_group"] = _col(df, "rater_group").loc[sel].fillna("").astype(str).to_numpy()
    s["catch_kind"] = _col(df, "catch_kind").loc[sel].fillna("").astype(str).to_numpy()
    s["question"] = s["question"].astype(str)
    s["catch"] = s["catch"].fillna("").astype(str)
    v = pd.to_numeric(s["value"], errors="coerce").to_numpy(dtype=float)
    cant = s["cant_judge"].fillna(False).to_numpy(dtype=bool)
    catch = s["catch"].to_numpy(dtype=object)
    real, broken = catch == CATCH_REAL, catch == CATCH_BROKEN
    q = s["question"].to_numpy(dtype=object)
    passed = np.zeros(len(s), dtype=bool)
    checked = np.zeros(len(s), dtype=bool)
    realism = q == "realism"
    passed |= realism & real & ~cant & (v >= PASS_THRESHOLD)
    passed |= realism & broken & (cant | (v <= BROKEN_MAX))
    checked |= realism & (real | broken)
    fc = q == CHOSEN_REAL
    if fc.any():  # one check per screen, on the pick: the known real image if the screen has one, else not broken
        t = pd.DataFrame({"trial": s["trial_id"].to_numpy()[fc], "real": real[fc]})
        screen_has_real = t.groupby("trial")["real"].transform("any").to_numpy(dtype=bool)
        picked = v[fc] == 1
        ok = np.where(screen_has_real, real[fc], ~broken[fc])
        passed[fc] = picked & ok
        checked[fc] = picked
        label = np.where(screen_has_real, CATCH_REAL, CATCH_BROKEN)
        catch = catch.copy()
        catch[np.flatnonzero(fc)[picked]] = label[picked]
        s["catch"] = catch
    rk = np.array([str(x).startswith(RANK_PREFIX) for x in q], dtype=bool)
    if rk.any():
        t = s.loc[rk, ["trial_id", "question"]].copy()
        t["ranked"] = ~np.isnan(v[rk]) & ~cant[rk]
        t["broken"] = broken[rk] & t["ranked"].to_numpy()
        g = t.groupby(["trial_id", "question"])
        good = (g["ranked"].transform("sum") - g["broken"].transform("sum")).to_numpy(dtype=float)
        vr = v[rk]
        ok_r = np.where(broken[rk], vr > good, vr <= good)
        ok_r = np.where(cant[rk], broken[rk], ok_r)  # "can't judge" passes only for a broken image
        t["ok"] = ok_r | ~(real[rk] | broken[rk])
        t["real"] = real[rk]
        g = t.groupby(["trial_id", "question"])
        first = ~t.duplicated(["trial_id", "question"]).to_numpy()  # one check per ranked catch screen
        idx = np.flatnonzero(rk)[first]
        passed[idx] = g["ok"].transform("all").to_numpy(dtype=bool)[first]
        checked[idx] = True
        catch = np.asarray(s["catch"].to_numpy(dtype=object)).copy()
        catch[idx] = np.where(g["real"].transform("any").to_numpy(dtype=bool)[first], CATCH_REAL, CATCH_BROKEN)
        s["catch"] = catch
    s["passed"] = passed
    # the kind a check is about: the known real image, or how the broken image it is on was made; a check on a panel
    # that is not itself broken (a forced-choice pick, a ranked screen) takes the screen's broken kind
    own = s["catch_kind"].to_numpy(dtype=object)
    screen_kind = s.loc[s["catch_kind"] != ""].groupby("trial_id")["catch_kind"].first()
    kind = s["trial_id"].map(screen_kind).fillna("").astype(str).to_numpy(dtype=object)
    kind = np.where(own != "", own, kind)
    s["catch_kind"] = np.where(s["catch"].to_numpy(dtype=object) == CATCH_REAL, CATCH_REAL,
                               np.where(kind == "", "unknown", kind))  # fmt: skip
    s = s[checked]
    return s.loc[:, cols].reset_index(drop=True)


def catch_table(df: pd.DataFrame, min_pass_rate: float = DEFAULT_MIN_CATCH_PASS_RATE,
                min_answers: int = DEFAULT_MIN_CATCH_ANSWERS) -> pd.DataFrame:  # fmt: skip
    """Per rater with catch answers: checks, passes, pass rate (overall, on known real and on broken images) and
    ``flagged`` (at least ``min_answers`` checks and a pass rate below ``min_pass_rate``). Columns:
    ``CATCH_COLUMNS``."""
    c = catch_checks(df)
    if c.empty:
        return result_table([{"rater_id": ALL, "flagged": False, "note": not_computable("no catch trials")}], CATCH_COLUMNS)
    c = c.assign(is_real=c["catch"] == CATCH_REAL, is_broken=c["catch"] == CATCH_BROKEN)
    c = c.assign(real_ok=c["is_real"] & c["passed"], broken_ok=c["is_broken"] & c["passed"])
    per = c.groupby("rater_id", sort=True).agg(
        rater_group=("rater_group", "first"), n_catch=("passed", "size"), n_passed=("passed", "sum"),
        n_real=("is_real", "sum"), real_passed=("real_ok", "sum"), n_broken=("is_broken", "sum"),
        broken_passed=("broken_ok", "sum"),
    )  # fmt: skip
    per["pass_rate"] = per["n_passed"] / per["n_catch"]
    enough = per["n_catch"] >= min_answers
    per["flagged"] = enough & (per["pass_rate"] < min_pass_rate)
    per["note"] = np.where(enough, "", f"flag needs {min_answers} catch answers")
    out = per.reset_index().loc[:, list(CATCH_COLUMNS)]
    for col in ("n_catch", "n_passed", "n_real", "real_passed", "n_broken", "broken_passed"):
        out[col] = out[col].astype("int64")
    out["flagged"] = out["flagged"].astype(bool)
    return out


def catch_kind_table(df: pd.DataFrame, ci_level: float = 0.95) -> pd.DataFrame | None:
    """Per catch kind (``real`` = a known real image; else how the broken image was made): checks, passes, pass
    rate with its exact interval, and how many raters met it. ``None`` when the frame has no catch rows. Columns:
    ``CATCH_KIND_COLUMNS``."""
    if catch_trial_mask(df) is None:
        return None
    c = catch_checks(df)
    if c.empty:
        return result_table([{"catch_kind": ALL, "note": not_computable("no checkable catch answers")}],
                            CATCH_KIND_COLUMNS)  # fmt: skip
    per = c.groupby("catch_kind", sort=True).agg(
        n_checks=("passed", "size"), n_passed=("passed", "sum"), n_raters=("rater_id", "nunique"))
    lo, hi = clopper_pearson(per["n_passed"].to_numpy(), per["n_checks"].to_numpy(), ci_level)
    out = per.assign(pass_rate=per["n_passed"] / per["n_checks"], ci_low=lo, ci_high=hi, note="").reset_index()
    for col in ("n_checks", "n_passed", "n_raters"):
        out[col] = out[col].astype("int64")
    return out.loc[:, list(CATCH_KIND_COLUMNS)]


def flagged_raters(catch: pd.DataFrame | None) -> tuple[str, ...]:
    if catch is None or catch.empty:
        return ()
    return tuple(catch.loc[catch["flagged"].fillna(False).astype(bool), "rater_id"].astype(str))
