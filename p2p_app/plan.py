"""Planning a study: how many raters and items? (``p2p plan``)

:func:`plan_study` simulates a design many times for every cell of a raters × items grid and reports the mean width
of the confidence interval and the power to detect the expected effect, computed with the **same functions as the
report**:

* ``design="rating"``: two models scored side by side on each screen (1–5 scale). Answer of rater r on item i for
  model m: ``round(3 ± effect/2 + c_r·(±1/2) + b_im + e)`` clipped to 1..5, with ``c_r ~ N(0, rater_sd)`` (a
  rater's preference between the models), ``b_im ~ N(0, image_sd)``, ``e ~ N(0, noise)``. Each item is scored by
  ``overlap`` raters (all of them by default). The statistic is the report's paired model comparison: the mean of
  the per-(rater, item) differences with raters and items as crossed random effects
  (:func:`p2p_app.analysis.crossed_mean_ci`, as in ``pairwise_tests``). Power = share of simulations whose CI
  excludes 0.
* ``design="forced_choice"``: one real and ``models`` generated panels per screen; population accuracy (the mean
  over raters) = chance + ``effect``, with between-rater spread ``noise`` on the logit scale
  (:func:`logit_centre`). Statistic: the report's rater-clustered
  interval and test against chance (:func:`p2p_app.designs.rater_clustered_proportion`: raters random; the exact
  binomial over all screens it replaces rejected 22–52 % of studies at effect 0). Power = share with p < ``alpha``.
* ``design="ranking"``: every screen shows ``models`` (K ≥ 2) panels, one per model, and the rater orders them all.
  Known utilities (log-strengths): the top model ``effect`` above each of the others, which are equal (or, from a
  pilot, its fitted strengths). Rater r ranks by ``utility + d_rm + Gumbel`` with ``d_rm ~ N(0, noise)`` (raters
  disagree), i.e. each ranking is a Plackett–Luce draw. Statistic: the report's own ranking analysis
  (:func:`p2p_app.designs.bt_fit` on the implied pairs, :func:`p2p_app.designs.bt_bootstrap` resampling raters,
  :func:`p2p_app.designs.rater_interval`). The estimate is the top model's strength minus the next one's, its CI
  the report's interval for that difference over ``n_boot`` replicates. Power = share of simulations whose CI
  excludes 0.

Every simulated study of a cell assigns raters to items as the app would (:func:`cell_design`:
:func:`p2p_app.assignment.coverage`, loads differing by at most one), not by a rule of its own.

Without a pilot or simulation (``p2p plan --anticipated``, :func:`sizing_table`): the Obuchowski–Rockette closed
form of Obuchowski (2000) and Obuchowski & Hillis (2011) as R's MRMCsamplesize computes it
(:func:`or_sample_size`): from an anticipated accuracy (AUC or sensitivity), the effect between two tests, the
inter- and intra-reader ranges and the OR correlations r1, r2, r3 (Rockette et al. 1999), the diseased and
non-diseased cases needed for each reader count, and the power of readers × cases (:func:`or_power`); a warning
below five readers (:func:`reader_warning`).

A pilot study's long export can set the parameters (:func:`pilot_parameters`): noise, rater and image spread from
the crossed variance components of its realism scores, the effect from its largest paired model difference (rating),
or its accuracy over chance and rater spread (forced choice), or its fitted strengths and rater spread (ranking:
:func:`ranking_pilot`). Simulations are seeded (one stream per cell) and drawn
for all replicates of a cell at once; a 4 × 4 grid with 200 simulations per cell takes a few seconds.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .analysis import crossed_mean_ci, realism_pilot
from .designs import (
    bt_bootstrap, bt_fit, forced_choice_screens, ranking_rows, rater_clustered_proportion,
    rater_interval, win_matrices,
)  # fmt: skip
from .assignment import seed_namespace
from .simulate import app_coverage
from .tidy import CHOSEN_REAL, RANK_PREFIX

DESIGNS = ("rating", "forced_choice", "ranking")
PLAN_COLUMNS = (
    "design", "raters", "items", "overlap", "answers_per_sim", "sims", "effect", "mean_estimate", "mean_ci_width",
    "power",
)  # fmt: skip
DEFAULTS = {"effect": {"rating": 0.5, "forced_choice": 0.15, "ranking": 0.5},
            "noise": {"rating": 1.0, "forced_choice": 0.5, "ranking": 0.3}}  # fmt: skip
DEFAULT_N_BOOT = 200
"""Bootstrap replicates per simulated ranking study (the report's default is larger; the interval is the same)."""


def _grid(values: Sequence[int], name: str, low: int) -> tuple[int, ...]:
    out = tuple(int(v) for v in values)
    if not out:
        raise ValueError(f"{name} must list at least one number")
    if any(v < low for v in out):
        raise ValueError(f"every {name} value must be >= {low}, got {list(out)}")
    return out


def check_plan_inputs(design, raters, items, models, overlap, effect, noise, sims, ci_level, alpha) -> None:
    """Raise ``ValueError`` with an exact message for an impossible plan."""
    if design not in DESIGNS:
        raise ValueError(f"design must be one of {', '.join(DESIGNS)}, got {design!r}")
    _grid(raters, "raters", 2)
    _grid(items, "items", 2)
    low = 1 if design == "forced_choice" else 2
    if models < low:
        raise ValueError(f"a {design} plan needs models >= {low}, got {models}")
    if overlap is not None and overlap < 1:
        raise ValueError(f"overlap must be >= 1, got {overlap}")
    if sims < 1:
        raise ValueError(f"sims must be >= 1, got {sims}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    if not 0 < ci_level < 1 or not 0 < alpha < 1:
        raise ValueError(f"ci_level and alpha must be between 0 and 1, got {ci_level} and {alpha}")
    if design == "forced_choice":
        chance = 1 / (models + 1)
        if not -chance < effect < 1 - chance:
            raise ValueError(f"effect must keep the accuracy chance + effect inside (0, 1); chance = {chance:.3f}, "
                             f"got {effect}")  # fmt: skip


def ranking_pilot(df: pd.DataFrame) -> dict:
    """Ranking parameters from a pilot's tidy frame (question ``rank_realism``, else the first ``rank_<q>``), with
    the report's code: ``utilities`` = the Bradley–Terry strengths (:func:`p2p_app.designs.bt_fit`) best first,
    ``effect`` = best − next, ``models`` = their number, ``noise`` = the between-rater SD of log-strengths by the
    method of moments on each model pair: the spread of the raters' win proportions beyond binomial sampling
    (screens are independent), ``var_r(p̂) − mean p(1−p)/n_r``, over ``2·(p(1−p))²`` (the logistic slope squared
    times the variance of a difference of two rater deviations), averaged over pairs."""
    s = ranking_rows(df)
    questions = sorted(map(str, s["question"].unique()))
    if not questions:
        raise ValueError("the pilot has no rankings")
    question = f"{RANK_PREFIX}realism" if f"{RANK_PREFIX}realism" in questions else questions[0]
    sq = s[s["question"] == question]
    models = sorted(map(str, sq["model"].unique()))
    if len(models) < 2 or sq["trial_id"].nunique() < 2:
        raise ValueError("the pilot has fewer than two rankings of two or more models")
    per_rater, _, _ = win_matrices(sq, models)
    strength = bt_fit(per_rater.sum(axis=0))
    utilities = np.sort(strength)[::-1]
    parts = []
    for a, b in itertools.combinations(range(len(models)), 2):
        wins, n = per_rater[:, a, b], per_rater[:, a, b] + per_rater[:, b, a]
        n_ok = n > 0
        if n_ok.sum() < 2:
            continue
        p_bar = wins[n_ok].sum() / n[n_ok].sum()
        slope = p_bar * (1 - p_bar)
        if slope <= 0:
            continue
        excess = float(np.var(wins[n_ok] / n[n_ok], ddof=1) - np.mean(slope / n[n_ok]))
        parts.append(excess / (2 * slope**2))
    noise = float(np.sqrt(max(float(np.mean(parts)), 0.0))) if parts else 0.0
    return {"design": "ranking", "models": len(models), "effect": float(utilities[0] - utilities[1]),
            "noise": noise, "utilities": tuple(float(u) for u in utilities)}  # fmt: skip


def pilot_parameters(df: pd.DataFrame) -> dict:
    """Parameters for :func:`plan_study` estimated from a pilot study's tidy frame: ``design`` (forced choice when
    it has ``chosen_real`` answers, ranking when it has ``rank_<q>`` answers), ``models``, ``effect``, ``noise``
    and, for ratings, ``rater_sd`` and ``image_sd``; for rankings ``utilities`` (:func:`ranking_pilot`). Raises
    ``ValueError`` when the pilot has too little data to estimate them."""
    questions = set(map(str, pd.unique(df["question"])))
    if CHOSEN_REAL not in questions and any(q.startswith(RANK_PREFIX) for q in questions):
        return ranking_pilot(df)
    if CHOSEN_REAL in questions:
        screens = forced_choice_screens(df)
        if len(screens) < 2 or screens["rater_id"].nunique() < 1:
            raise ValueError("the pilot has fewer than two forced-choice screens")
        k = int(screens["n_panels"].mode().iloc[0])
        chance = 1.0 / k
        acc = float(screens["correct"].mean())
        per = screens.groupby("rater_id")["correct"].agg(["mean", "size"])
        p = per["mean"].clip(0.5 / per["size"], 1 - 0.5 / per["size"])
        logit = np.log(p / (1 - p))
        sampling = (1 / (per["size"] * p * (1 - p))).mean()  # binomial variance on the logit scale
        spread = float(np.sqrt(max(float(logit.var(ddof=1)) - sampling, 0.0))) if len(per) > 1 else 0.0
        return {"design": "forced_choice", "models": k - 1, "effect": acc - chance, "noise": spread}
    return {"design": "rating", **realism_pilot(df)}


def _cell_rng(seed: int, r: int, i: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(r), int(i)])


def cell_design(n_r: int, n_i: int, k: int, seed: int) -> np.ndarray:
    """items × k rater slots of a planned cell: the app's own assignment (:func:`p2p_app.simulate.app_coverage`,
    i.e. :func:`p2p_app.assignment.coverage`: loads differ by at most one), hashed from the plan's seed and the cell.
    Every simulated study of the cell has this design, as the real study would."""
    return app_coverage(n_i, n_r, k, seed_namespace("plan", 1, f"{int(seed)}/{n_r}/{n_i}"))


def _rating_cell(rng, design, n_r, n_i, k, sims, effect, noise, rater_sd, image_sd, ci_level):
    # all replicates of the cell drawn at once: (sims × answers) arrays
    rater = np.broadcast_to(design.reshape(1, -1), (sims, n_i * k))
    item = np.broadcast_to(np.repeat(np.arange(n_i), k), rater.shape)
    pref = rng.normal(0.0, rater_sd, (sims, n_r))
    img = rng.normal(0.0, image_sd, (sims, n_i, 2))
    base = 3.0 + np.take_along_axis(pref, rater, axis=1) / 2
    ya = np.clip(np.rint(base + effect / 2 + img[:, :, 0][np.arange(sims)[:, None], item]
                         + rng.normal(0.0, noise, rater.shape)), 1, 5)  # fmt: skip
    base_b = 3.0 - np.take_along_axis(pref, rater, axis=1) / 2
    yb = np.clip(np.rint(base_b - effect / 2 + img[:, :, 1][np.arange(sims)[:, None], item]
                         + rng.normal(0.0, noise, rater.shape)), 1, 5)  # fmt: skip
    d = ya - yb
    est, width, hit = np.empty(sims), np.empty(sims), np.empty(sims, dtype=bool)
    for s in range(sims):  # the report's statistic, one call per simulated study
        cm = crossed_mean_ci(d[s], rater[s], item[s], ci_level)
        est[s], width[s] = cm.mean, cm.ci_high - cm.ci_low
        hit[s] = bool(cm.ci_low > 0 or cm.ci_high < 0) if np.isfinite(cm.ci_low) else False
    return est, width, hit, d.shape[1]


def logit_centre(p: float, sd: float) -> float:
    """The centre μ of rater logits ``μ + N(0, sd)`` whose population mean accuracy E[expit(μ + N(0, sd))] is ``p``
    (Gauss–Hermite quadrature; ``logit(p)`` when sd = 0), so that the simulated population accuracy is exactly
    chance + effect (at effect 0 the null holds, whatever the rater spread)."""
    from scipy.optimize import brentq

    if sd <= 0:
        return float(np.log(p / (1 - p)))
    x, w = np.polynomial.hermite_e.hermegauss(60)
    w = w / w.sum()
    return float(brentq(lambda m: float(w @ (1 / (1 + np.exp(-(m + sd * x))))) - p, -40.0, 40.0, xtol=1e-12))


def _forced_choice_cell(rng, design, n_r, n_i, k, sims, models, effect, noise, ci_level, alpha):
    chance = 1.0 / (models + 1)
    p = chance + effect
    per_rater = np.broadcast_to(np.bincount(design.ravel(), minlength=n_r), (sims, n_r))  # screens per rater
    logit = logit_centre(p, noise) + rng.normal(0.0, noise, (sims, n_r))
    correct = rng.binomial(per_rater, 1 / (1 + np.exp(-logit)))  # sims × raters
    r = rater_clustered_proportion(correct, per_rater, chance, ci_level)  # the report's interval and test, at once
    return r["estimate"] - chance, r["ci_high"] - r["ci_low"], r["p_value"] < alpha, int(per_rater[0].sum())


def ranking_utilities(models: int, effect: float, pilot: Sequence[float] | None = None) -> np.ndarray:
    """The known log-strengths simulated, best first: the top model ``effect`` above each of the others (equal, 0),
    or a pilot's fitted strengths with the gap between the best two set to ``effect``."""
    if pilot is None:
        return np.r_[float(effect), np.zeros(models - 1)]
    u = np.sort(np.asarray(pilot, dtype=float))[::-1].copy()
    u[0] = u[1] + float(effect)
    return u


def ranking_wins(rater: np.ndarray, order: np.ndarray, n_r: int) -> np.ndarray:
    """Per-rater win counts (raters × models × models, ``[r, a, b]`` = times r ranked a above b) of the rankings
    ``order`` (screens × models: model codes best first) by ``rater`` — what
    :func:`p2p_app.designs.win_matrices` gives for the same rankings in a tidy frame."""
    k = order.shape[1]
    rank = np.argsort(order, axis=1)  # model → place (0 = best)
    above = (rank[:, :, None] < rank[:, None, :]).astype(float).reshape(len(order), k * k)
    onehot = np.zeros((len(order), n_r))
    onehot[np.arange(len(order)), rater] = 1.0
    return (onehot.T @ above).reshape(n_r, k, k)


def ranking_intervals(rng, n_r, n_i, k, sims, utilities, noise, ci_level, n_boot, design=None) -> np.ndarray:
    """``sims`` simulated ranking studies (``n_r`` raters, ``n_i`` items, ``k`` raters per item, assigned as the app
    does: ``design`` from :func:`cell_design`, seed 0 by default; every screen a Plackett–Luce ranking of all
    models, see the module docstring), each analysed with the report's code: rows of (estimate, CI low, CI high) of
    the best model's strength minus the next one's."""
    m = len(utilities)
    out = np.empty((sims, 3))
    rater = (cell_design(n_r, n_i, k, 0) if design is None else design).reshape(-1)  # one screen per (item, rater)
    for s in range(sims):  # the report's fit and rater bootstrap, one simulated study at a time
        dev = rng.normal(0.0, noise, (n_r, m))
        perceived = np.asarray(utilities)[None, :] + dev[rater] + rng.gumbel(size=(len(rater), m))
        per_rater = ranking_wins(rater, np.argsort(-perceived, axis=1), n_r)
        strength = bt_fit(per_rater.sum(axis=0))
        reps = bt_bootstrap(per_rater, n_boot, rng)
        out[s, 0] = strength[0] - strength[1]
        out[s, 1:] = rater_interval(out[s, 0], reps[:, 0] - reps[:, 1], n_r, ci_level)
    return out


def _ranking_cell(rng, design, n_r, n_i, k, sims, utilities, noise, ci_level, n_boot):
    r = ranking_intervals(rng, n_r, n_i, k, sims, utilities, noise, ci_level, n_boot, design)
    return r[:, 0], r[:, 2] - r[:, 1], (r[:, 1] > 0) | (r[:, 2] < 0), n_i * k


def plan_study(
    raters: Sequence[int] = (3, 5, 8),
    items: Sequence[int] = (20, 40, 80),
    *,
    design: str = "rating",
    models: int = 2,
    overlap: int | None = None,
    effect: float | None = None,
    noise: float | None = None,
    rater_sd: float = 0.3,
    image_sd: float = 0.4,
    pilot: pd.DataFrame | None = None,
    sims: int = 200,
    seed: int = 0,
    ci_level: float = 0.95,
    alpha: float = 0.05,
    n_boot: int = DEFAULT_N_BOOT,
) -> pd.DataFrame:
    """Mean CI width and power for every (raters, items) cell (see the module docstring). ``overlap``: raters per
    item (default: every rater sees every item; capped at the cell's raters). ``pilot``: a tidy frame whose
    estimates (:func:`pilot_parameters`) replace the design, models, noise and spreads, and the effect unless
    ``effect`` is given. Columns: ``PLAN_COLUMNS``; ``effect`` = the true effect simulated, ``mean_estimate`` = the
    mean estimate of it (accuracy − chance for forced choice; the top model's strength minus the next one's for
    ranking, whose ``mean_ci_width`` is that difference's interval; ``n_boot`` rater-bootstrap replicates each)."""
    pilot_utilities = None
    if pilot is not None:
        est = pilot_parameters(pilot)
        design, models = est["design"], est["models"]
        noise = est["noise"]
        rater_sd, image_sd = est.get("rater_sd", rater_sd), est.get("image_sd", image_sd)
        pilot_utilities = est.get("utilities")
        if effect is None:
            effect = est["effect"]
    if design not in DESIGNS:
        raise ValueError(f"design must be one of {', '.join(DESIGNS)}, got {design!r}")
    effect = DEFAULTS["effect"][design] if effect is None else float(effect)
    noise = DEFAULTS["noise"][design] if noise is None else float(noise)
    check_plan_inputs(design, raters, items, models, overlap, effect, noise, sims, ci_level, alpha)
    if design == "ranking" and n_boot < 20:
        raise ValueError(f"n_boot must be >= 20 for a ranking plan, got {n_boot}")
    utilities = ranking_utilities(models, effect, pilot_utilities) if design == "ranking" else None
    rows = []
    for n_r in _grid(raters, "raters", 2):
        for n_i in _grid(items, "items", 2):
            k = n_r if overlap is None else min(int(overlap), n_r)
            rng, cell = _cell_rng(seed, n_r, n_i), cell_design(n_r, n_i, k, seed)
            if design == "rating":
                est, width, hit, n = _rating_cell(rng, cell, n_r, n_i, k, sims, effect, noise, rater_sd, image_sd,
                                                  ci_level)  # fmt: skip
            elif design == "ranking":
                est, width, hit, n = _ranking_cell(rng, cell, n_r, n_i, k, sims, utilities, noise, ci_level,
                                                   n_boot)  # fmt: skip
            else:
                est, width, hit, n = _forced_choice_cell(rng, cell, n_r, n_i, k, sims, models, effect, noise,
                                                         ci_level, alpha)  # fmt: skip
            rows.append({"design": design, "raters": n_r, "items": n_i, "overlap": k, "answers_per_sim": n,
                         "sims": sims, "effect": effect, "mean_estimate": float(np.nanmean(est)),
                         "mean_ci_width": float(np.nanmean(width)), "power": float(np.mean(hit))})  # fmt: skip
    return pd.DataFrame(rows, columns=list(PLAN_COLUMNS))


def plan_figure(table: pd.DataFrame):
    """Power and mean CI width against raters, one line per item count (plotly)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from .report import series_colour

    fig = make_subplots(rows=1, cols=2, subplot_titles=("Power", "Mean 95% CI width"))
    for i, (n_i, t) in enumerate(table.groupby("items", sort=True)):
        t = t.sort_values("raters")
        colour = {"color": series_colour(i)}  # the same colour in both panels, as the legend shows
        fig.add_trace(go.Scatter(x=t["raters"], y=t["power"], mode="lines+markers", name=f"{n_i} items",
                                 legendgroup=str(n_i), line=colour, marker=colour), row=1, col=1)  # fmt: skip
        fig.add_trace(go.Scatter(x=t["raters"], y=t["mean_ci_width"], mode="lines+markers", name=f"{n_i} items",
                                 legendgroup=str(n_i), showlegend=False, line=colour, marker=colour),
                      row=1, col=2)  # fmt: skip
    fig.add_hline(y=0.8, line_dash="dot", annotation_text="80%", row=1, col=1)
    fig.update_xaxes(title_text="raters", dtick=1)
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=1)
    fig.update_layout(template="plotly_white", height=460, title="How many raters and items?")
    return fig


def plan_html(table: pd.DataFrame, title: str = "Prompt to Polyp: study plan") -> str:
    """One self-contained HTML page (plotly.js inline) with the figure and the table."""
    from .report import REPORT_CSS, format_table

    fig = plan_figure(table).to_html(full_html=False, include_plotlyjs=True, div_id="fig-plan",
                                     config={"displaylogo": False})  # fmt: skip
    first = table.iloc[0] if len(table) else None
    meta = "" if first is None else (f"Design: {first['design']}; true effect {first['effect']:.3g}; "
                                      f"{int(first['sims'])} simulations per cell.")  # fmt: skip
    body = format_table(table).to_html(index=False, escape=True, border=0)
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{REPORT_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>", f'<p class="meta">{html.escape(meta)}</p>', fig,
        f'<div class="scroll">{body}</div>', "</body></html>",
    ])  # fmt: skip


# --------------------------------------------------------------------------------------------------------------------
# Planning without a pilot: Obuchowski–Rockette closed-form sizing (issue 22)
# --------------------------------------------------------------------------------------------------------------------

MIN_READERS = 5
"""Below this many readers ``p2p plan --anticipated`` warns: MRMCsamplesize recommends at least 5, and the iMRMC
maintainers warn against reader studies with very few (2) readers."""
SIZING_COLUMNS = ("readers", "diseased", "controls", "cases", "reads", "power", "var_c", "lambda", "ddf")
SIZING_KEYS = {"auc": float, "effect": float, "reader_range": float, "within_range": float, "r1": float, "r2": float,
               "r3": float, "rb": float, "ratio": float, "alpha": float, "power": float, "icc": float,
               "cluster_size": float, "endpoint": str, "ddf": str}  # fmt: skip


def expected_range(n: int) -> float:
    """E[max − min] of ``n`` independent standard normals (2 E[max]); 1.128 for 2, 3.078 for 10."""
    from scipy import integrate, stats

    if n < 2:
        raise ValueError(f"a range needs at least 2 values, got {n}")
    mean_max = integrate.quad(lambda x: n * x * stats.norm.cdf(x) ** (n - 1) * stats.norm.pdf(x), -np.inf, np.inf)[0]
    return 2.0 * mean_max


def noncentrality(alpha: float, power: float, dfn: float, dfd: float) -> float:
    """The noncentrality λ at which the F test (``dfn``, ``dfd`` df, level ``alpha``) has power ``power``."""
    from scipy import optimize, stats

    crit = stats.f.isf(alpha, dfn, dfd)
    return float(optimize.brentq(lambda nc: stats.ncf.sf(crit, dfn, dfd, nc) - power, 1e-9, 1e4, xtol=1e-12))


def accuracy_variance(auc: float, ratio: float = 1.0, endpoint: str = "auc") -> float:
    """Variance of one reader's accuracy times the number of diseased cases: Obuchowski's (1994) approximation for
    the AUC of a binormal ROC curve, ``0.0099 e^{−A²/2} ((5A² + 8) + (A² + 8)/ratio)`` with ``A = 1.414 Φ⁻¹(AUC)``
    (``ratio`` = non-diseased per diseased case), or ``θ(1 − θ)`` for a sensitivity (``endpoint="sensitivity"``)."""
    from scipy import stats

    if endpoint == "sensitivity":
        return auc * (1 - auc)
    a = stats.norm.ppf(auc) * 1.414
    return float(0.0099 * np.exp(-(a**2) / 2) * ((5 * a**2 + 8) + (a**2 + 8) / ratio))


def or_components(readers: int, reader_range: float, within_range: float, rb: float = 0.8) -> dict:
    """Reader variance components from anticipated ranges (Obuchowski 2000; MRMCsamplesize's "normal" method): the
    inter-reader SD is ``reader_range`` over the expected range of ``readers`` normal accuracies, the intra-reader SD
    ``within_range`` over that of 2 readings; ``var_tr = var_r (1 − rb)``."""
    var_r = (reader_range / expected_range(readers)) ** 2
    var_w = (within_range / expected_range(2)) ** 2
    return {"var_r": var_r, "var_w": var_w, "var_tr": var_r * (1 - rb)}


def _or_denominator(readers, var_c, comp, r1, r2, r3):
    """The expected OR denominator ``var_tr + var_w + var_c ((1 − r1) + (J − 1)(r2 − r3))`` (the expected value of
    ``den`` in :mod:`p2p_app.mrmc`, one reading per reader and test) and the expected MS(T:R) (Hillis's ddf)."""
    ms_tr = comp["var_tr"] + comp["var_w"] + var_c * ((1 - r1) - (r2 - r3))
    return ms_tr + readers * var_c * (r2 - r3), ms_tr


def _ddf(kind: str, readers: int, den: float, ms_tr: float) -> float:
    if kind == "hillis":  # Hillis (2007), as p2p_app.mrmc analyses: den² / (MS(T:R)² / (J − 1))
        return den**2 / (ms_tr**2 / (readers - 1))
    return float(readers - 1)  # Obuchowski–Rockette (1995), as MRMCsamplesize: conservative


def or_power(readers: int, diseased: float, auc: float, effect: float, reader_range: float, within_range: float, *,
             r1: float = 0.47, r2: float = 0.3, r3: float = 0.3, rb: float = 0.8, ratio: float = 1.0,
             alpha: float = 0.05, endpoint: str = "auc", ddf: str = "or") -> float:  # fmt: skip
    """Power of the two-test OR F test with ``readers`` readers reading ``diseased`` diseased cases (and ``ratio``
    times as many controls), every reader every case in both tests: noncentrality ``J δ² / (2 den)``."""
    from scipy import stats

    comp = or_components(readers, reader_range, within_range, rb)
    var_c = accuracy_variance(auc, ratio, endpoint) / diseased
    den, ms_tr = _or_denominator(readers, var_c, comp, r1, r2, r3)
    df2 = _ddf(ddf, readers, den, ms_tr)
    lam = readers * effect**2 / (2 * den)
    return float(stats.ncf.sf(stats.f.isf(alpha, 1, df2), 1, df2, lam))


def or_sample_size(readers: int, auc: float, effect: float, reader_range: float, within_range: float, *,
                   r1: float = 0.47, r2: float = 0.3, r3: float = 0.3, rb: float = 0.8, ratio: float = 1.0,
                   alpha: float = 0.05, power: float = 0.8, endpoint: str = "auc", icc: float | None = None,
                   cluster_size: float | None = None, ddf: str = "or") -> dict:  # fmt: skip
    """Cases needed for ``readers`` readers to detect an accuracy difference ``effect`` between two tests at
    anticipated accuracy ``auc`` (Obuchowski 2000; Obuchowski & Hillis 2011), as R's ``MRMCsamplesize::
    sampleSize_MRMC`` computes it: solve ``J δ² / (2 λ) = var_tr + var_w + var_c ((1 − r1) + (J − 1)(r2 − r3))``
    for the case-sampling variance ``var_c`` (λ: :func:`noncentrality` with 1 and J − 1 df), then diseased cases
    ``= ceil(accuracy_variance / var_c)``, controls ``ceil(diseased · ratio)``. ``icc``/``cluster_size``: lesions
    per diseased case correlated within a case (design effect ``1 + (s − 1) icc``). ``ddf="hillis"`` sizes for
    Hillis's denominator df instead (what the report's analysis uses; fewer cases). ``var_c`` is NaN and the case
    counts 0 when no number of cases reaches the power with this many readers."""
    comp = or_components(readers, reader_range, within_range, rb)
    lam = noncentrality(alpha, power, 1, readers - 1)
    per_case = (1 - r1) + (readers - 1) * (r2 - r3)
    var_c = (readers * effect**2 / (2 * lam) - (comp["var_tr"] + comp["var_w"])) / per_case
    if ddf == "hillis" and var_c > 0 and r2 >= r3:  # df depend on var_c: the largest var_c with enough power
        from scipy import optimize

        def gap(v: float) -> float:
            den, ms_tr = _or_denominator(readers, v, comp, r1, r2, r3)
            return noncentrality(alpha, power, 1, _ddf("hillis", readers, den, ms_tr)) - readers * effect**2 / (2 * den)

        hi = var_c
        while gap(hi) < 0:
            hi *= 2
        var_c = float(optimize.brentq(gap, var_c, hi, xtol=1e-15))
    n = {"readers": readers, **comp, "var_e": var_c + comp["var_w"], "lambda": lam, "var_c": var_c}
    n.update({"cov1": r1 * n["var_e"], "cov2": r2 * n["var_e"], "cov3": r3 * n["var_e"]})
    if not var_c > 0:
        return {**n, "var_c": float("nan"), "diseased": 0, "controls": 0, "cases": 0, "reads": 0}
    units = math.ceil(accuracy_variance(auc, ratio, endpoint) / var_c)
    diseased = units if icc is None else math.ceil(math.ceil(units * (1 + (cluster_size - 1) * icc)) / cluster_size)
    controls = math.ceil(diseased * ratio)
    total = diseased + controls if icc is not None else math.ceil(units * (1 + ratio))
    return {**n, "units": units, "diseased": diseased, "controls": controls, "cases": total,
            "reads": total * readers * 2}  # fmt: skip


def check_sizing_inputs(readers: Sequence[int], p: dict) -> None:
    """Raise ``ValueError`` with an exact message for an impossible closed-form plan (``p``: sizing parameters)."""
    _grid(readers, "raters", 2)
    for key in ("auc", "effect", "reader_range", "within_range"):
        if key not in p:
            raise ValueError(f"planning without a pilot needs {key}=... (auc, effect, reader_range, within_range)")
    for key in ("auc", "effect", "alpha", "power"):
        if key in p and not 0 < p[key] < 1:
            raise ValueError(f"{key} must be between 0 and 1, got {p[key]}")
    for key in ("reader_range", "within_range", "r1", "r2", "r3", "rb", "icc"):
        if key in p and not 0 <= p[key] < 1:
            raise ValueError(f"{key} must be in [0, 1), got {p[key]}")
    if p.get("ratio", 1.0) <= 0:
        raise ValueError(f"ratio (controls per diseased case) must be > 0, got {p['ratio']}")
    if ("icc" in p) != ("cluster_size" in p) or p.get("cluster_size", 1.0) < 1:
        raise ValueError("icc and cluster_size (>= 1, lesions per diseased case) go together")
    if p.get("ddf", "or") not in ("or", "hillis") or p.get("endpoint", "auc") not in ("auc", "sensitivity"):
        raise ValueError("ddf must be 'or' or 'hillis' and endpoint 'auc' or 'sensitivity'")


def parse_anticipated(spec: str) -> dict:
    """``"auc=0.75,effect=0.05,reader_range=0.1,within_range=0.05[,r1=..,ddf=hillis,..]"`` → keyword arguments of
    :func:`or_sample_size` (keys: ``SIZING_KEYS``)."""
    out: dict = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in SIZING_KEYS:
            raise ValueError(f"expected key=value pairs with keys {', '.join(SIZING_KEYS)}; got {part!r}")
        try:
            out[key] = SIZING_KEYS[key](value.strip())
        except ValueError:
            raise ValueError(f"{key} must be a number, got {value.strip()!r}") from None
    return out


def sizing_table(readers: Sequence[int], **params) -> pd.DataFrame:
    """:func:`or_sample_size` for every reader count, with the power those cases give (:func:`or_power`); a reader
    count that no number of cases can power has 0 cases and NaN power. Columns ``SIZING_COLUMNS``."""
    check_sizing_inputs(readers, params)
    size = {k: v for k, v in params.items() if k in SIZING_KEYS}
    rows = []
    for j in _grid(readers, "raters", 2):
        r = or_sample_size(j, **size)
        power_args = {k: v for k, v in size.items() if k not in ("power", "icc", "cluster_size")}
        got = or_power(j, r["units"], **power_args) if r["cases"] else float("nan")
        den, ms_tr = _or_denominator(j, r["var_c"], r, size.get("r1", 0.47), size.get("r2", 0.3), size.get("r3", 0.3))
        rows.append({"readers": j, "diseased": r["diseased"], "controls": r["controls"], "cases": r["cases"],
                     "reads": r["reads"], "power": got, "var_c": r["var_c"], "lambda": r["lambda"],
                     "ddf": _ddf(size.get("ddf", "or"), j, den, ms_tr) if r["cases"] else float(j - 1)})  # fmt: skip
    return pd.DataFrame(rows, columns=list(SIZING_COLUMNS))


def reader_warning(readers: Sequence[int]) -> str:
    """The warning printed when a plan tries fewer than ``MIN_READERS`` readers ("" when none does)."""
    few = sorted({int(r) for r in readers if int(r) < MIN_READERS})
    if not few:
        return ""
    return (f"Warning: fewer than {MIN_READERS} readers ({', '.join(map(str, few))}): the iMRMC maintainers warn "
            f"against reader studies with so few readers (2 above all) and MRMCsamplesize recommends at least "
            f"{MIN_READERS}; the reader variance is barely estimable, whatever the number of cases.")  # fmt: skip


def sizing_report(spec: str, readers: Sequence[int]) -> str:
    """``p2p plan --anticipated SPEC``: the closed-form table (cases needed per reader count) as text, with the
    assumptions and :func:`reader_warning`."""
    params = parse_anticipated(spec)
    table = sizing_table(readers, **params)
    p = {"r1": 0.47, "r2": 0.3, "r3": 0.3, "rb": 0.8, "ratio": 1.0, "alpha": 0.05, "power": 0.8, "ddf": "or", **params}
    lines = [f"Obuchowski-Rockette sizing without a pilot: {p.get('endpoint', 'auc')} {p['auc']:g}, effect "
             f"{p['effect']:g}, reader range {p['reader_range']:g}, within-reader range {p['within_range']:g}, "
             f"r1 {p['r1']:g} r2 {p['r2']:g} r3 {p['r3']:g} rb {p['rb']:g}, {p['ratio']:g} controls per diseased "
             f"case, alpha {p['alpha']:g}, power {p['power']:g}, ddf {p['ddf']}",
             table.loc[:, ["readers", "diseased", "controls", "cases", "reads", "power"]].to_string(
                 index=False, float_format=lambda x: f"{x:.3f}")]  # fmt: skip
    if (table["cases"] == 0).any():
        lines.append("0 cases: no number of cases reaches the power with that many readers; add readers.")
    warning = reader_warning(readers)
    return "\n".join(lines + ([warning] if warning else []))
