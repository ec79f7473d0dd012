"""Contextual Bradley–Terry for rankings and arena votes, with rater-clustered (sandwich) intervals, Davidson ties,
pooling of several sources with weights, and the robustness line of the winner (issue 22, items 3 and 4).

**Data.** Every ranking screen (``rank_<q>`` answers of the ranking design or of the live arena; first showings, no
catch screens, no "can't judge", no practice) is broken into all its implied pairs, as the plain fit does
(:func:`p2p_app.designs.ranking_tables`). A pair is oriented by screen slot (``a`` = the panel shown first) and
carries: outcome (1 = a ranked above b, 0 = below, ½ = tied rank), both slots, the modality, the rater, the rater
group, its source and weight (:func:`comparisons`, :func:`pooled_comparisons`).

**Model.** For a pair of models ``a``, ``b`` in modality ``m`` shown in slots ``p``, ``q`` to a rater of group ``g``,
the linear predictor is::

    η = (θ_a − θ_b) + (γ_p − γ_q) + (δ_ga − δ_gb)

* ``θ``: log-strengths, centred to mean 0 within each modality (models of different modalities never meet);
* ``γ``: position (screen slot) effects, the first slot the reference (``γ = 0``); covariate ``"position"``. With
  covariate ``"modality"`` and more than one modality, each modality gets its own slot effects;
* ``δ``: rater-group deviations of the strengths (covariate ``"rater_group"``, two or more non-empty groups),
  effect-coded (they sum to 0 over groups and over a modality's models), so ``θ`` is the unweighted average of the
  groups' strengths.

Without ties ``P(a above b) = 1 / (1 + e^−η)`` (Bradley–Terry); when the data hold tied ranks, Davidson (1970):
with ``u = η/2`` and ``ν = e^λ``::

    P(a above b) = e^u / D,   P(b above a) = e^−u / D,   P(tie) = ν / D,   D = e^u + e^−u + ν

(which is Bradley–Terry at ``ν = 0``). The fit maximises the weighted log-likelihood ``Σ w_i ℓ_i`` (weights per
source: pooling arena and study rankings) minus ``ridge/2 · ‖β‖²`` (default ``ridge = 1e-3``, like the plain
fit's regularisation, so that a model that never lost still gets a finite strength; ``ridge = 0`` is plain maximum
likelihood) by Newton's method with step halving.

**Intervals.** Sandwich (robust) covariance clustered by rater (``source``/``rater_id``): ``V = A⁻¹ B A⁻¹`` with
``A`` the negative Hessian and ``B = G/(G−1) Σ_c s_c s_cᵀ``, ``s_c`` the summed weighted score of cluster ``c``
(all the pairs of a rater's rankings stay together: they are not independent) and ``G`` clusters; intervals
``± t(G−1) · SE``. The model-based covariance ``A⁻¹`` is kept for comparison (``cov_model``): it treats every
pair as independent and is too narrow when raters differ (``benchmarks/bench_contextual_bt.py`` measures both).

**Robustness line** (:func:`robustness`, on the plain Bradley–Terry fit of the ranking table,
:func:`p2p_app.designs.bt_fit`): the fewest answers (ranking screens) whose removal changes the top model.
Candidates are ordered by their approximate influence on the gap between the top model and each challenger
(one Newton step: removing screen ``k`` moves the strengths by ``H⁻¹ s_k``); removals are confirmed by exact refits
(every prefix of the ordered candidates, then every subset of the ``ROBUST_SEARCH`` most influential screens up to
the size found), listed for audit. The label reads the largest CI half-width of the question's strengths (log
scale): ≤ ``ESTABLISHED_HALF_WIDTH`` (0.25, about ±6 percentage points of win probability against an equal model)
"established", ≤ ``USABLE_HALF_WIDTH`` (0.5, about ±12 points) "usable", else (or no interval) "preliminary".
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from .designs import bt_fit, catch_trial_mask
from .tidy import ALL, RANK_PREFIX, not_computable, result_table, without_practice

COVARIATES = ("position", "modality", "rater_group")
DEFAULT_RIDGE = 1e-3
ESTABLISHED_HALF_WIDTH = 0.25
USABLE_HALF_WIDTH = 0.5
ROBUST_SEARCH = 12
"""Most influential screens among which every subset (up to the size the prefix search found) is refitted."""
ROBUST_MAX_SUBSET = 4
ROBUST_MAX_PREFIX = 500
"""Prefixes of the influence order refitted exactly (at least; twice the approximate count when that is larger)."""
COMPARISON_COLUMNS = (
    "source", "question", "modality", "rater_id", "rater_group", "trial_id", "model_a", "model_b", "pos_a", "pos_b",
    "outcome", "weight",
)  # fmt: skip
CONTEXTUAL_COLUMNS = (
    "question", "model", "n_pairs", "n_raters", "strength", "se", "ci_low", "ci_high", "plain_strength", "shift",
    "rank_low", "rank_high", "rank_band", "note",
)  # fmt: skip
COVARIATE_COLUMNS = ("question", "term", "estimate", "se", "ci_low", "ci_high", "p_value", "note")
ROBUSTNESS_COLUMNS = (
    "question", "top_model", "challenger", "n_answers", "n_to_flip", "share", "new_top", "removed",
    "approx_n", "max_half_width", "label", "note",
)  # fmt: skip


# --------------------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------------------


def _text(df: pd.DataFrame, name: str) -> np.ndarray:
    if name not in df.columns:
        return np.full(len(df), "", dtype=object)
    return df[name].fillna("").astype(str).to_numpy(dtype=object)


def comparisons(df: pd.DataFrame, source: str = "study", weight: float = 1.0) -> pd.DataFrame:
    """Every pair implied by the ranking screens of the tidy frame ``df`` (see the module docstring), one row each.
    Columns: ``COMPARISON_COLUMNS``; ``question`` is the ``rank_<q>`` key (modalities in their own column)."""
    if not np.isfinite(weight) or weight <= 0:
        raise ValueError(f"a source's weight must be a positive number, got {weight!r}")
    df = without_practice(df)
    if df.empty:
        return pd.DataFrame(columns=list(COMPARISON_COLUMNS))
    sel = df["question"].astype(str).str.startswith(RANK_PREFIX).to_numpy(dtype=bool).copy()
    if "is_repeat" in df.columns:
        sel &= ~df["is_repeat"].fillna(False).to_numpy(dtype=bool)
    mask = catch_trial_mask(df)
    if mask is not None:
        sel &= ~mask
    value = pd.to_numeric(df["value"], errors="coerce").to_numpy(dtype=float)
    cant = (df["cant_judge"].fillna(False).to_numpy(dtype=bool) if "cant_judge" in df.columns
            else np.zeros(len(df), bool))  # fmt: skip
    sel &= np.isfinite(value) & ~cant
    s = pd.DataFrame({
        "question": df["question"].astype(str).to_numpy()[sel], "rater_id": _text(df, "rater_id")[sel],
        "trial_id": df["trial_id"].to_numpy()[sel], "model": _text(df, "model")[sel],
        "position": pd.to_numeric(df["position"]).to_numpy()[sel].astype(np.int64), "value": value[sel],
        "modality": _text(df, "modality")[sel], "rater_group": _text(df, "rater_group")[sel],
    })  # fmt: skip
    pairs = s.merge(s[["question", "trial_id", "model", "position", "value"]], on=["question", "trial_id"],
                    suffixes=("_a", "_b"))  # fmt: skip
    pairs = pairs[pairs["position_a"] < pairs["position_b"]]
    out = pd.DataFrame({
        "source": source, "question": pairs["question"].to_numpy(), "modality": pairs["modality"].to_numpy(),
        "rater_id": pairs["rater_id"].to_numpy(), "rater_group": pairs["rater_group"].to_numpy(),
        "trial_id": pairs["trial_id"].to_numpy(), "model_a": pairs["model_a"].to_numpy(),
        "model_b": pairs["model_b"].to_numpy(), "pos_a": pairs["position_a"].to_numpy(),
        "pos_b": pairs["position_b"].to_numpy(),
        "outcome": np.select([pairs["value_a"] < pairs["value_b"], pairs["value_a"] > pairs["value_b"]], [1.0, 0.0],
                             0.5),
        "weight": float(weight),
    })  # fmt: skip
    return out.loc[:, list(COMPARISON_COLUMNS)].reset_index(drop=True)


def pooled_comparisons(sources: Mapping[str, tuple[pd.DataFrame, float]]) -> pd.DataFrame:
    """Pairs of several sources (e.g. ``{"arena": (live_frame, 1.0), "study": (study_frame, 0.5)}``), each with its
    weight on the log-likelihood; raters stay distinct per source (clusters are ``source/rater_id``)."""
    if not sources:
        raise ValueError("pooling needs at least one source")
    parts = [comparisons(frame, source=str(name), weight=float(w)) for name, (frame, w) in sources.items()]
    return pd.concat(parts, ignore_index=True)


# --------------------------------------------------------------------------------------------------------------------
# Fit
# --------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ContextualFit:
    """A contextual Bradley–Terry fit of one question's pairs (see the module docstring)."""

    models: tuple[tuple[str, str], ...]
    """(modality, model) of each strength, in ``strength`` order."""
    strength: np.ndarray
    """Centred log-strengths θ (mean 0 within each modality)."""
    cov_strength: np.ndarray
    """Sandwich (rater-clustered) covariance of ``strength``."""
    cov_strength_model: np.ndarray
    """Model-based covariance of ``strength`` (pairs independent)."""
    terms: tuple[str, ...]
    """Names of the free parameters (strength contrasts, then covariates, then ``ties (log ν)``)."""
    params: np.ndarray
    cov: np.ndarray
    """Sandwich covariance of ``params``."""
    cov_model: np.ndarray
    covariate_terms: tuple[str, ...]
    """The covariate terms reported (position effects, group deviations, ties), a subset of ``terms``."""
    n_pairs: int
    n_clusters: int
    loglik: float
    converged: bool
    ties: bool
    ridge: float

    def df(self) -> int:
        """Degrees of freedom of the t intervals: clusters − 1."""
        return max(self.n_clusters - 1, 1)

    def strength_se(self) -> np.ndarray:
        return np.sqrt(np.clip(np.diag(self.cov_strength), 0.0, None))

    def interval(self, ci_level: float, robust: bool = True) -> tuple[np.ndarray, np.ndarray]:
        cov = self.cov_strength if robust else self.cov_strength_model
        half = stats.t.ppf(0.5 + ci_level / 2, self.df()) * np.sqrt(np.clip(np.diag(cov), 0.0, None))
        return self.strength - half, self.strength + half


def _sum_contrasts(levels: int) -> np.ndarray:
    """levels × (levels − 1) effect coding: level k < last gets e_k, the last level −1 everywhere."""
    c = np.zeros((levels, max(levels - 1, 0)))
    if levels > 1:
        c[:-1] = np.eye(levels - 1)
        c[-1] = -1.0
    return c


@dataclasses.dataclass(frozen=True)
class _Design:
    x: np.ndarray
    y: np.ndarray
    w: np.ndarray
    cluster: np.ndarray
    terms: tuple[str, ...]
    n_strength: int
    cm: np.ndarray
    entities: tuple[tuple[str, str], ...]
    ties: bool


def design(comps: pd.DataFrame, covariates: Sequence[str] = COVARIATES) -> _Design:
    """The design matrix of the model in the module docstring (the columns of the strength contrasts first)."""
    unknown = set(covariates) - set(COVARIATES)
    if unknown:
        raise ValueError(f"unknown covariates {sorted(unknown)}; choose from {', '.join(COVARIATES)}")
    if comps.empty:
        raise ValueError("no pairs to fit")
    mod = comps["modality"].astype(str).to_numpy(dtype=object)
    ent_a = pd.MultiIndex.from_arrays([mod, comps["model_a"].astype(str).to_numpy(dtype=object)])
    ent_b = pd.MultiIndex.from_arrays([mod, comps["model_b"].astype(str).to_numpy(dtype=object)])
    entities = tuple(sorted(set(ent_a.unique()) | set(ent_b.unique()), key=lambda e: (e[0], e[1] != "real", e[1])))
    index = pd.MultiIndex.from_tuples(entities)
    ia, ib = index.get_indexer(ent_a), index.get_indexer(ent_b)
    strata = sorted(set(pd.unique(mod)))
    blocks, terms = [], []
    cm = np.zeros((len(entities), 0))
    for m in strata:
        members = [i for i, e in enumerate(entities) if e[0] == m]
        block = np.zeros((len(entities), len(members) - 1))
        block[members] = _sum_contrasts(len(members))
        cm = np.hstack([cm, block])
        terms += [f"strength {entities[i][1]} ({m})" if len(strata) > 1 else f"strength {entities[i][1]}"
                  for i in members[:-1]]  # fmt: skip
    blocks.append(cm[ia] - cm[ib])
    n_strength = cm.shape[1]
    if "position" in covariates:
        slots = sorted(set(comps["pos_a"]) | set(comps["pos_b"]))
        by_mod = "modality" in covariates and len(strata) > 1
        for m in strata if by_mod else [None]:
            on = np.ones(len(comps)) if m is None else (mod == m).astype(float)
            for s in slots[1:]:
                col = ((comps["pos_a"].to_numpy() == s).astype(float) - (comps["pos_b"].to_numpy() == s)) * on
                if not col.any():
                    continue
                blocks.append(col[:, None])
                terms.append(f"position {s} vs {slots[0]}" + (f" ({m})" if m is not None else ""))
    groups = sorted(g for g in set(comps["rater_group"].astype(str)) if g != "")
    if "rater_group" in covariates and len(groups) >= 2:
        grp = comps["rater_group"].astype(str).to_numpy(dtype=object)
        cg = _sum_contrasts(len(groups))
        gi = pd.Index(groups).get_indexer(grp)
        code = np.where(gi[:, None] >= 0, cg[np.clip(gi, 0, None)], 0.0)  # a rater without a group: the average
        diff = cm[ia] - cm[ib]
        for j in range(n_strength):
            for k, g in enumerate(groups[:-1]):
                blocks.append((diff[:, j] * code[:, k])[:, None])
                terms.append(f"group {g}: {terms[j]}")
    x = np.hstack(blocks)
    y = comps["outcome"].to_numpy(dtype=float)
    ties = bool((y == 0.5).any())
    cluster = pd.factorize(comps["source"].astype(str) + "\x1f" + comps["rater_id"].astype(str))[0]
    return _Design(x=x, y=y, w=comps["weight"].to_numpy(dtype=float), cluster=cluster, terms=tuple(terms),
                   n_strength=n_strength, cm=cm, entities=entities, ties=ties)  # fmt: skip


def _loglik_parts(beta: np.ndarray, d: _Design, want_hess: bool = True):
    """Per-pair log-likelihood, per-pair scores (pairs × params) and the Hessian of the weighted sum."""
    p = d.x.shape[1]
    eta = d.x @ beta[:p]
    win, loss = d.y == 1.0, d.y == 0.0
    if d.ties:
        lam = beta[p]
        u = eta / 2
        top = np.maximum(np.maximum(u, -u), lam)
        log_d = top + np.log(np.exp(u - top) + np.exp(-u - top) + np.exp(lam - top))
        ll = np.where(win, u, np.where(loss, -u, lam)) - log_d
        pw, pl, pt = np.exp(u - log_d), np.exp(-u - log_d), np.exp(lam - log_d)
        gu = win.astype(float) - loss - (pw - pl)
        gl = (~win & ~loss).astype(float) - pt
        scores = np.hstack([d.x * (gu / 2)[:, None], gl[:, None]])
        if not want_hess:
            return ll, scores, None
        huu = -(pw + pl - (pw - pl) ** 2)
        hul = (pw - pl) * pt
        hll = -pt * (1 - pt)
        h = np.empty((p + 1, p + 1))
        h[:p, :p] = (d.x * (d.w * huu / 4)[:, None]).T @ d.x
        h[:p, p] = h[p, :p] = (d.x * (d.w * hul / 2)[:, None]).sum(axis=0)
        h[p, p] = float((d.w * hll).sum())
        return ll, scores, h
    ll = d.y * eta - np.logaddexp(0.0, eta)
    prob = 1.0 / (1.0 + np.exp(-eta))
    scores = d.x * (d.y - prob)[:, None]
    if not want_hess:
        return ll, scores, None
    h = -(d.x * (d.w * prob * (1 - prob))[:, None]).T @ d.x
    return ll, scores, h


def fit(comps: pd.DataFrame, covariates: Sequence[str] = COVARIATES, ridge: float = DEFAULT_RIDGE,
        max_iter: int = 100, tol: float = 1e-10) -> ContextualFit:  # fmt: skip
    """Fit the contextual Bradley–Terry model (module docstring) to the pairs ``comps`` of one question
    (:func:`comparisons` or :func:`pooled_comparisons`); ``covariates`` any of ``COVARIATES`` (each used only when
    the data have it: two slots, two modalities, two rater groups)."""
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    d = design(comps, covariates)
    k = d.x.shape[1] + (1 if d.ties else 0)
    pen = np.full(k, ridge)
    if d.ties:
        pen[-1] = 0.0

    def objective(b):
        ll, _, _ = _loglik_parts(b, d, want_hess=False)
        return float((d.w * ll).sum() - 0.5 * (pen * b * b).sum())

    beta = np.zeros(k)
    if d.ties:
        beta[-1] = np.log(max((d.y == 0.5).mean(), 1e-3))
    current = objective(beta)
    converged = False
    for _ in range(max_iter):
        ll, scores, h = _loglik_parts(beta, d)
        grad = (d.w[:, None] * scores).sum(axis=0) - pen * beta
        hess = h - np.diag(pen)
        try:
            step = np.linalg.solve(-hess, grad)
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(-hess, grad, rcond=None)[0]
        t = 1.0
        while True:
            new = objective(beta + t * step)
            if new >= current - 1e-12 or t < 1e-8:
                break
            t /= 2
        beta = beta + t * step
        gain = new - current
        current = new
        if np.abs(t * step).max() < tol or (abs(gain) < 1e-14 and np.abs(grad).max() < 1e-8):
            converged = True
            break
    ll, scores, h = _loglik_parts(beta, d)
    a = -(h - np.diag(pen))
    a_inv = np.linalg.pinv(a)
    n_clusters = int(d.cluster.max()) + 1
    cluster_scores = np.zeros((n_clusters, k))
    np.add.at(cluster_scores, d.cluster, d.w[:, None] * scores)
    factor = n_clusters / (n_clusters - 1) if n_clusters > 1 else np.nan
    b_mat = factor * cluster_scores.T @ cluster_scores
    cov = a_inv @ b_mat @ a_inv
    cm_full = np.zeros((d.cm.shape[0], k))
    cm_full[:, : d.n_strength] = d.cm
    strength = cm_full @ beta
    terms = d.terms + (("ties (log ν)",) if d.ties else ())
    return ContextualFit(
        models=d.entities, strength=strength, cov_strength=cm_full @ cov @ cm_full.T,
        cov_strength_model=cm_full @ a_inv @ cm_full.T, terms=terms, params=beta, cov=cov, cov_model=a_inv,
        covariate_terms=terms[d.n_strength:], n_pairs=len(d.y), n_clusters=n_clusters,
        loglik=float((d.w * ll).sum()), converged=converged, ties=d.ties, ridge=ridge,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------------------------
# Report tables
# --------------------------------------------------------------------------------------------------------------------


def _plain_key(question: str, modality: str, several: bool) -> str:
    return f"{question} · {modality}" if several else question


def contextual_tables(comps: pd.DataFrame, plain: pd.DataFrame | None = None, ci_level: float = 0.95,
                      covariates: Sequence[str] = COVARIATES, ridge: float = DEFAULT_RIDGE):  # fmt: skip
    """(``ranking_contextual``, ``ranking_covariates``) for every question of ``comps``: strengths with sandwich
    CIs next to the plain fit's (``plain`` = the analysis's ``ranking`` table; ``shift`` = contextual − plain), and
    each covariate's estimate (position effects, group deviations, ties) with its robust CI and Wald p."""
    if comps.empty:
        nc = not_computable("no rankings")
        return (result_table([{"question": "", "model": ALL, "note": nc}], CONTEXTUAL_COLUMNS),
                result_table([{"question": "", "term": "", "note": nc}], COVARIATE_COLUMNS))  # fmt: skip
    plain_map = {}
    if plain is not None and not plain.empty:
        cols = plain[["question", "model", "strength"]].itertuples(index=False)
        plain_map = {(str(q), str(m)): s for q, m, s in cols}
    rows, cov_rows = [], []
    for question, cq in comps.groupby("question", sort=True):
        several = cq["modality"].nunique() > 1
        n_pairs = pd.concat([cq[["model_a", "modality"]].set_axis(["model", "modality"], axis=1),
                             cq[["model_b", "modality"]].set_axis(["model", "modality"], axis=1)]).value_counts()
        n_raters = pd.concat([cq[["model_a", "modality", "rater_id"]].set_axis(["model", "modality", "r"], axis=1),
                              cq[["model_b", "modality", "rater_id"]].set_axis(["model", "modality", "r"], axis=1)]
                             ).drop_duplicates().groupby(["model", "modality"]).size()  # fmt: skip
        try:
            f = fit(cq, covariates, ridge)
        except (ValueError, np.linalg.LinAlgError) as exc:
            rows.append({"question": question, "model": ALL, "note": not_computable(str(exc))})
            continue
        lo, hi = f.interval(ci_level)
        se = f.strength_se()
        note = "" if f.n_clusters >= 2 else "CI needs two or more raters"
        if not f.converged:
            note = "fit did not converge: strengths unreliable"
        elif f.ties and f.params[-1] > 10:
            note = "almost every pair tied: strengths not identifiable"
        if f.n_clusters < 2:
            lo = hi = np.full(len(se), np.nan)
        for i, (m, model) in enumerate(f.models):
            same = np.array([e[0] == m for e in f.models])
            above = (lo[same] > hi[i]).sum() if np.isfinite(hi[i]) else (f.strength[same] > f.strength[i]).sum()
            below = (hi[same] < lo[i]).sum() if np.isfinite(lo[i]) else (f.strength[same] < f.strength[i]).sum()
            r_lo, r_hi = 1 + int(above), int(same.sum() - below)
            key = _plain_key(str(question), m, several)
            ps = plain_map.get((key, model), np.nan)
            rows.append({"question": key, "model": model, "n_pairs": int(n_pairs.get((model, m), 0)),
                         "n_raters": int(n_raters.get((model, m), 0)), "strength": float(f.strength[i]),
                         "se": float(se[i]), "ci_low": float(lo[i]), "ci_high": float(hi[i]), "plain_strength": ps,
                         "shift": float(f.strength[i] - ps), "rank_low": r_lo, "rank_high": r_hi,
                         "rank_band": f"{r_lo}" if r_lo == r_hi else f"{r_lo}–{r_hi}", "note": note})  # fmt: skip
        q = stats.t.ppf(0.5 + ci_level / 2, f.df())
        for term in f.covariate_terms:
            j = f.terms.index(term)
            est, s = float(f.params[j]), float(np.sqrt(max(f.cov[j, j], 0.0)))
            p = float(2 * stats.t.sf(abs(est / s), f.df())) if s > 0 and f.n_clusters >= 2 else np.nan
            cov_rows.append({"question": question, "term": term, "estimate": est, "se": s, "ci_low": est - q * s,
                             "ci_high": est + q * s, "p_value": p, "note": note})  # fmt: skip
        if not f.covariate_terms:
            cov_rows.append({"question": question, "term": "", "note": "no covariate varies in these data"})
    out = result_table(rows, CONTEXTUAL_COLUMNS)
    for c in ("n_pairs", "n_raters", "rank_low", "rank_high"):
        out[c] = out[c].astype("Int64")
    out = out.sort_values(["question", "rank_low", "strength"], ascending=[True, True, False], ignore_index=True)
    return out, result_table(cov_rows, COVARIATE_COLUMNS)


# --------------------------------------------------------------------------------------------------------------------
# Robustness of the winner
# --------------------------------------------------------------------------------------------------------------------


def evidence_label(half_width: float) -> str:
    """"established" / "usable" / "preliminary" from the largest CI half-width of the strengths (log scale)."""
    if not np.isfinite(half_width):
        return "preliminary"
    if half_width <= ESTABLISHED_HALF_WIDTH:
        return "established"
    if half_width <= USABLE_HALF_WIDTH:
        return "usable"
    return "preliminary"


def screen_wins(sq: pd.DataFrame, models: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per ranking screen of one question (rows as :func:`p2p_app.designs.ranking_rows`): the win matrix
    (screens × models × models, ``[k, a, b]`` = 1 when a was ranked above b on screen k) and the screen ids."""
    m_index = {m: i for i, m in enumerate(models)}
    trial_codes, trials = pd.factorize(sq["trial_id"], sort=True)
    a = pd.DataFrame({"t": trial_codes, "m": sq["model"].astype(str).map(m_index).to_numpy(), "v":
                      sq["value"].to_numpy(dtype=float)})  # fmt: skip
    pairs = a.merge(a, on="t", suffixes=("", "_b"))
    pairs = pairs[pairs["v"] < pairs["v_b"]]
    w = np.zeros((len(trials), len(models), len(models)))
    np.add.at(w, (pairs["t"].to_numpy(), pairs["m"].to_numpy(), pairs["m_b"].to_numpy()), 1.0)
    return w, np.asarray(trials)


def _bt_hessian(theta: np.ndarray, comp: np.ndarray, alpha: float) -> np.ndarray:
    """Hessian of the objective :func:`p2p_app.designs.bt_fit` maximises, at ``theta``."""
    k = len(theta)
    eye = np.eye(k)
    n = comp + comp.T
    s = 1.0 / (1.0 + np.exp(theta[None, :] - theta[:, None]))
    z = np.exp(theta - theta.max())
    pi = z / z.sum()
    w = n * s * (1.0 - s) * (1.0 - eye)
    return w - eye * w.sum(axis=-1)[:, None] - alpha * k * k * (eye * pi[None, :] - pi[:, None] * pi[None, :])


def _top_changed(thetas: np.ndarray, top: int) -> np.ndarray:
    others = np.delete(thetas, top, axis=-1)
    return others.max(axis=-1) > thetas[..., top] + 1e-12


def flip_count(wins: np.ndarray, alpha: float | None = None, search: int = ROBUST_SEARCH,
               max_subset: int = ROBUST_MAX_SUBSET) -> dict:  # fmt: skip
    """The fewest screens (rows of ``wins``, screens × models × models) whose removal changes the top model of the
    plain Bradley–Terry fit (module docstring). Returns ``top``, ``n_to_flip`` (None when removing every candidate
    in influence order never changes it), ``removed`` (indices of the screens), ``new_top``, ``challenger`` (the
    model the approximation aimed at), ``approx_n`` (the count the influence approximation predicted) and ``tied``
    (True, with ``n_to_flip`` 0, when the best strengths are already tied: no single top model). Prefixes
    are refitted up to ``ROBUST_MAX_PREFIX`` screens (or twice ``approx_n``); beyond that ``n_to_flip`` is None."""
    from .designs import PL_ALPHA

    alpha = PL_ALPHA if alpha is None else alpha
    n_units, k = wins.shape[0], wins.shape[1]
    comp = wins.sum(axis=0)
    theta = bt_fit(comp, alpha)
    top = int(np.argmax(theta))
    if (theta >= theta[top] - 1e-9).sum() > 1:  # no single top model to change
        return {"top": top, "n_to_flip": 0, "removed": [], "new_top": None, "challenger": None, "approx_n": 0,
                "theta": theta, "tied": True}  # fmt: skip
    h = _bt_hessian(theta, comp, alpha) - np.ones((k, k)) / k  # the centring direction made definite
    prob = 1.0 / (1.0 + np.exp(theta[None, :] - theta[:, None]))
    n = wins + np.swapaxes(wins, 1, 2)
    scores = (wins - n * prob[None]).sum(axis=-1)  # screens × models
    delta = np.linalg.solve(h, scores.T).T  # strengths move by delta[k] when screen k is removed
    best = None
    for c in range(k):
        if c == top:
            continue
        gap = theta[top] - theta[c]
        drop = -(delta[:, top] - delta[:, c])
        order = np.argsort(-drop, kind="stable")
        cum = np.cumsum(drop[order])
        reach = np.flatnonzero(cum >= gap)
        approx = int(reach[0]) + 1 if len(reach) else None
        cap = min(n_units - 1, max(ROBUST_MAX_PREFIX, 2 * (approx or 0)))  # bounded work on a large arena
        prefix = np.cumsum(wins[order[:cap]], axis=0)
        refits = bt_fit(comp[None] - prefix) if cap > 0 else np.zeros((0, k))
        flipped = np.flatnonzero(_top_changed(refits, top))
        if len(flipped):
            size = int(flipped[0]) + 1
            cand = (size, approx if approx is not None else n_units, c, order[:size].tolist(),
                    int(np.argmax(refits[flipped[0]])), order)  # fmt: skip
            if best is None or cand[:2] < best[:2]:
                best = cand
        elif best is None:
            best = (None, approx, c, [], None, order)
    size, approx, challenger, removed, new_top, order = best
    # exact search among the most influential screens for a smaller set (every subset, up to the size found)
    limit = (size - 1) if size is not None else max_subset
    pool = sorted(set(np.argsort(-np.abs(delta[:, [top]] - delta).max(axis=1))[:search].tolist())
                  | set(order[:search].tolist()))  # fmt: skip
    for r in range(1, min(limit, max_subset) + 1):
        subsets = np.array(list(itertools.combinations(pool, r)), dtype=np.int64)
        if not len(subsets):
            break
        refits = bt_fit(comp[None] - wins[subsets].sum(axis=1))
        hit = np.flatnonzero(_top_changed(refits, top))
        if len(hit):
            size, removed, new_top = r, subsets[hit[0]].tolist(), int(np.argmax(refits[hit[0]]))
            break
    return {"top": top, "n_to_flip": size, "removed": [int(i) for i in removed], "new_top": new_top,
            "challenger": challenger, "approx_n": approx, "theta": theta, "tied": False}  # fmt: skip


def robustness_table(df: pd.DataFrame, ranking: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per ranking question (as the plain ranking table names them): the top model, the fewest answers (ranking
    screens) whose removal changes it, which they are (``rater_id/trial_id``, listed for audit), the new top model,
    and the evidence label from the plain table's CI half-widths (``ranking``). Columns: ``ROBUSTNESS_COLUMNS``."""
    from .designs import ranking_rows

    s = ranking_rows(df)
    if s.empty:
        return result_table([{"question": "", "note": not_computable("no rankings")}], ROBUSTNESS_COLUMNS)
    rows = []
    for question, sq in s.groupby("question", sort=True):
        models = sorted(map(str, sq["model"].unique()), key=lambda m: (m != "real", m))
        if len(models) < 2:
            rows.append({"question": question, "note": not_computable("fewer than two models ranked")})
            continue
        wins, trials = screen_wins(sq, models)
        half = np.nan
        if ranking is not None and not ranking.empty:
            rq = ranking[ranking["question"] == question]
            if len(rq):
                half = float(((rq["ci_high"] - rq["ci_low"]) / 2).max(skipna=False))
        res = flip_count(wins)
        rater = sq.groupby("trial_id")["rater_id"].first()
        removed = [f"{rater.loc[trials[i]]}/{trials[i]}" for i in res["removed"]]
        n = res["n_to_flip"]
        note = "" if n is not None else ("no removal in influence order (up to the prefixes refitted) changes the "
                                         "top model")  # fmt: skip
        if res["tied"]:
            rows.append({"question": question, "n_answers": len(trials), "n_to_flip": 0, "share": 0.0,
                         "max_half_width": half, "label": "preliminary",
                         "note": "no single top model: the best strengths are tied"})  # fmt: skip
            continue
        rows.append({"question": question, "top_model": models[res["top"]], "challenger": models[res["challenger"]],
                     "n_answers": len(trials), "n_to_flip": n, "share": n / len(trials) if n else np.nan,
                     "new_top": models[res["new_top"]] if res["new_top"] is not None else "",
                     "removed": ", ".join(removed), "approx_n": res["approx_n"], "max_half_width": half,
                     "label": evidence_label(half), "note": note})  # fmt: skip
    out = result_table(rows, ROBUSTNESS_COLUMNS)
    for c in ("n_answers", "n_to_flip", "approx_n"):
        out[c] = out[c].astype("Int64")
    return out


def report_tables(df: pd.DataFrame, ranking: pd.DataFrame | None, ci_level: float = 0.95) -> dict[str, pd.DataFrame]:
    """The tables the report shows next to the plain ranking: ``ranking_contextual``, ``ranking_covariates`` and
    ``ranking_robustness`` (empty dict when ``df`` holds no rankings)."""
    comps = comparisons(df)
    if comps.empty:
        return {}
    contextual, covs = contextual_tables(comps, ranking, ci_level)
    return {"ranking_contextual": contextual, "ranking_covariates": covs,
            "ranking_robustness": robustness_table(df, ranking)}


def pooled_table(sources: Mapping[str, tuple[pd.DataFrame, float]], ci_level: float = 0.95) -> pd.DataFrame:
    """``ranking_pooled``: the contextual fit of several sources' rankings together (e.g. a study and the live
    arena), each source's pairs weighted (:func:`pooled_comparisons`); columns ``CONTEXTUAL_COLUMNS`` plus
    ``sources`` (name × weight)."""
    comps = pooled_comparisons(sources)
    table, _ = contextual_tables(comps, None, ci_level)
    label = ", ".join(f"{name} × {float(w):g}" for name, (_, w) in sources.items())
    return table.assign(sources=label)


# --------------------------------------------------------------------------------------------------------------------
# Simulation (benchmarks/bench_contextual_bt.py and the tests)
# --------------------------------------------------------------------------------------------------------------------


def simulate_rankings(rng: np.random.Generator, strengths: Sequence[float], n_raters: int, screens_per_rater: int,
                      panels: int = 3, position_bias: Sequence[float] | None = None, rater_sd: float = 0.0,
                      tie_margin: float = 0.0, question: str = "rank_realism", modality: str = "colonoscopy",
                      groups: Sequence[str] = (), lead_model: int | None = None,
                      lead_share: float = 0.0) -> pd.DataFrame:  # fmt: skip
    """Ranking screens with known truth, as tidy-frame rows (the columns :func:`comparisons` reads): each rater
    ranks ``panels`` models drawn at random per screen, placed in random slots; the panel in slot ``p`` gets
    utility ``θ_model + u_rater,model + position_bias[p] + Gumbel`` (Plackett–Luce); ``u`` ~ N(0, ``rater_sd``²)
    per rater and model (rater heterogeneity); utilities closer than ``tie_margin`` share a rank (ties). With
    ``lead_model``, on a share ``lead_share`` of the screens showing it that model is put in the first slot (a
    placement that confounds position and model, as an arena that does not shuffle would)."""
    theta = np.asarray(strengths, dtype=float)
    k = len(theta)
    bias = np.zeros(panels) if position_bias is None else np.asarray(position_bias, dtype=float)
    if len(bias) != panels or panels > k:
        raise ValueError("position_bias needs one value per panel, and panels <= models")
    n = n_raters * screens_per_rater
    rater = np.repeat(np.arange(n_raters), screens_per_rater)
    u = rng.normal(0.0, rater_sd, size=(n_raters, k))
    chosen = np.argsort(rng.random((n, k)), axis=1)[:, :panels]  # models per screen, in slot order
    if lead_model is not None:
        where = chosen == lead_model
        lead = where.any(axis=1) & (rng.random(n) < lead_share)
        col = where.argmax(axis=1)
        rows = np.flatnonzero(lead)
        chosen[rows, col[rows]] = chosen[rows, 0]
        chosen[rows, 0] = lead_model
    util = theta[chosen] + u[rater[:, None], chosen] + bias[None, :] + rng.gumbel(size=(n, panels))
    order = np.argsort(-util, axis=1)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(1, panels + 1)[None, :].repeat(n, 0), axis=1)
    if tie_margin > 0:  # a panel within tie_margin of the one ranked just above shares its rank
        s_util = np.take_along_axis(util, order, axis=1)
        tied = np.c_[np.zeros((n, 1), bool), (s_util[:, :-1] - s_util[:, 1:]) < tie_margin]
        s_rank = np.arange(1, panels + 1)[None, :].repeat(n, 0).astype(float)
        for j in range(1, panels):
            s_rank[:, j] = np.where(tied[:, j], s_rank[:, j - 1], j + 1)
        np.put_along_axis(rank, order, s_rank.astype(rank.dtype), axis=1)
    group_of = np.array([groups[r % len(groups)] for r in range(n_raters)], dtype=object) if groups else None
    return pd.DataFrame({
        "rater_id": np.char.add("r", rater.astype(str)).repeat(panels),
        "trial_id": np.arange(n).repeat(panels), "model": np.char.add("m", chosen.ravel().astype(str)),
        "position": np.tile(np.arange(panels), n), "value": rank.ravel().astype(float), "question": question,
        "modality": modality, "cant_judge": False, "is_repeat": False, "practice": False, "catch": "",
        "rater_group": group_of[rater].repeat(panels) if group_of is not None else "",
    })  # fmt: skip
