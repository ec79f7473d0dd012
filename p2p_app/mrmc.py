"""Multi-reader multi-case (MRMC) ROC analysis with readers and cases both random, on numpy/scipy.

Obuchowski–Rockette (OR) analysis of trapezoidal (Wilcoxon) AUCs with the Hillis denominator degrees of freedom, as
the R packages MRMCaov and RJafroc and the FDA's iMRMC report it:

* Obuchowski NA, Rockette HE (1995). Hypothesis testing of diagnostic accuracy for multiple readers and multiple
  tests: an ANOVA approach with dependent observations. Commun Stat Simul Comput 24:285–308.
* Hillis SL (2007). A comparison of denominator degrees of freedom methods for multiple observer ROC analysis.
  Stat Med 26:596–619 (the ``ddf`` used here).
* Hillis SL, Obuchowski NA, Schartz KM, Berbaum KS (2005). A comparison of the Dorfman–Berbaum–Metz and
  Obuchowski–Rockette methods for receiver operating characteristic (ROC) data. Stat Med 24:1579–1607 (DBM with
  jackknife pseudovalues gives the same F test as OR with jackknife covariances; :func:`dbm_f_test` computes it
  from the pseudovalues, and the tests check the two agree).
* Smith BJ, Hillis SL. MRMCaov: Multi-Reader Multi-Case ANOVA Software for R (the printed VanDyke results the
  tests reproduce).

Model: ``AUC[t, r] = μ + τ_t + R_r + (τR)_tr + ε_tr``; the error covariances are summarised by ``var_error``
(same treatment, same reader), ``cov1`` (different treatment, same reader), ``cov2`` (same treatment, different
reader) and ``cov3`` (both different), estimated by the jackknife over cases (default; any design), over clusters
of cases when the frame has a ``cluster`` column (cases that share a prompt), or DeLong's structural components
(fully crossed designs only). Then, with ``t`` treatments and ``r`` readers::

    MS(T)   = r/(t-1) Σ_t (θ_t. - θ..)²            MS(T:R) = 1/((t-1)(r-1)) Σ (θ_tr - θ_t. - θ_.r + θ..)²
    den     = MS(T:R) + r · max(cov2 - cov3, 0)     F = MS(T) / den,  ddf = den² / (MS(T:R)² / ((t-1)(r-1)))
    SE(θ_a. - θ_b.) = sqrt(2 den / r)               (t interval and test with ``ddf`` degrees of freedom)

and for one treatment alone: ``SE = sqrt(MS(R)/r + max(cov2_t, 0))``, ``df = (MS(R) + r max(cov2_t, 0))² /
(MS(R)²/(r-1))`` with ``MS(R)`` the variance of that treatment's reader AUCs.

Cases are identified by id; a case that a (treatment, reader) did not read leaves that AUC unchanged when it is
deleted, so the jackknife also handles designs where readers or treatments see different cases (cases nested in
treatments, as with each model's own generated images against shared real images).
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

MRMC_COLUMNS = ("reader", "treatment", "case", "truth", "rating")
COV_METHODS = ("jackknife", "delong")


@dataclasses.dataclass(frozen=True)
class MRMCResult:
    """OR analysis of one data set (see the module docstring for the formulas)."""

    treatments: tuple
    readers: tuple
    auc: np.ndarray
    """Trapezoidal AUC per treatment × reader."""
    var_error: float
    cov1: float
    cov2: float
    cov3: float
    ms_t: float
    ms_tr: float
    ms_r: np.ndarray
    """Per treatment: variance of its reader AUCs."""
    cov2_t: np.ndarray
    """Per treatment: mean covariance between two readers' AUCs."""
    f: float
    ndf: int
    ddf: float
    p_value: float
    treatment_table: pd.DataFrame
    """Per treatment: ``treatment, auc, ms_r, cov2, se, df, ci_low, ci_high``."""
    difference_table: pd.DataFrame
    """Per pair of treatments: ``treatment_a, treatment_b, estimate, se, df, ci_low, ci_high, t, p_value``."""
    cov_method: str
    ci_level: float
    n_clusters: int = 0
    """Clusters the jackknife deleted whole (column ``cluster``); 0 = one case at a time."""


def check_mrmc_frame(df: pd.DataFrame) -> None:
    """Raise ``ValueError`` unless ``df`` can be analysed: columns ``MRMC_COLUMNS``, binary truth, numeric ratings,
    one rating per (reader, treatment, case), each case's truth the same everywhere."""
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"MRMC data must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in MRMC_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"MRMC data is missing columns: {', '.join(missing)}")
    if df.empty:
        raise ValueError("MRMC data has no rows")
    if not set(pd.unique(df["truth"])) <= {0, 1}:
        raise ValueError("truth must be 0 (negative) or 1 (positive)")
    if not np.isfinite(pd.to_numeric(df["rating"], errors="coerce").to_numpy(dtype=float)).all():
        raise ValueError("every rating must be a finite number")
    if df.duplicated(["reader", "treatment", "case"]).any():
        raise ValueError("more than one rating for a (reader, treatment, case)")
    if (df.groupby("case")["truth"].nunique() > 1).any():
        raise ValueError("a case has different truth values")
    if "cluster" in df.columns:
        if df["cluster"].isna().any():
            raise ValueError("every case needs a cluster (column 'cluster' has missing values)")
        if (df.groupby("case")["cluster"].nunique() > 1).any():
            raise ValueError("a case is in more than one cluster")


def _auc_and_jackknife(pos: np.ndarray, neg: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC = mean ψ(x_pos, y_neg) with ψ = 1 (>), ½ (=), 0 (<); and the per-case sums used by the jackknife and
    DeLong: ``v10[i]`` = mean over negatives of ψ(pos_i, ·), ``v01[j]`` = mean over positives of ψ(·, neg_j)."""
    neg_sorted = np.sort(neg)
    pos_sorted = np.sort(pos)
    below = np.searchsorted(neg_sorted, pos, side="left")
    ties = np.searchsorted(neg_sorted, pos, side="right") - below
    v10 = (below + 0.5 * ties) / len(neg)
    above = len(pos) - np.searchsorted(pos_sorted, neg, side="right")
    ties0 = np.searchsorted(pos_sorted, neg, side="right") - np.searchsorted(pos_sorted, neg, side="left")
    v01 = (above + 0.5 * ties0) / len(pos)
    return float(v10.mean()), v10, v01


def _design(df: pd.DataFrame):
    treatments = tuple(pd.unique(df["treatment"]))
    readers = tuple(pd.unique(df["reader"]))
    cases, case_idx = np.unique(df["case"].to_numpy(), return_inverse=True)
    return treatments, readers, cases, case_idx


def _per_auc(df: pd.DataFrame):
    """AUC, per-case leave-one-out AUC and DeLong components for every (treatment, reader)."""
    treatments, readers, cases, case_idx = _design(df)
    n = len(cases)
    t_i = pd.Index(treatments).get_indexer(df["treatment"])
    r_i = pd.Index(readers).get_indexer(df["reader"])
    truth = df["truth"].to_numpy().astype(int)
    rating = pd.to_numeric(df["rating"]).to_numpy(dtype=float)
    auc = np.full((len(treatments), len(readers)), np.nan)
    dev_rows, dev_cols, dev_vals = [], [], []
    comps = {}
    order = np.lexsort((r_i, t_i))
    keys = t_i[order] * len(readers) + r_i[order]
    bounds = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1], True])
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        idx = order[lo:hi]
        t, r = t_i[idx[0]], r_i[idx[0]]
        p, q = idx[truth[idx] == 1], idx[truth[idx] == 0]
        if len(p) < 2 or len(q) < 2:
            raise ValueError(
                f"treatment {treatments[t]}, reader {readers[r]}: needs at least two positive and two negative "
                f"cases, got {len(p)} and {len(q)}"
            )
        a, v10, v01 = _auc_and_jackknife(rating[p], rating[q])
        auc[t, r] = a
        n1, n0 = len(p), len(q)
        # leave-one-out AUC minus the AUC: without positive i, (a n1 − v10_i)/(n1 − 1) − a; a case this
        # (treatment, reader) did not read leaves the AUC unchanged (0). These deviations sum to 0 over cases.
        dev_rows.append(np.full(len(idx), t * len(readers) + r))
        dev_cols.append(np.r_[case_idx[p], case_idx[q]])
        dev_vals.append(np.r_[(a - v10) / (n1 - 1), (a - v01) / (n0 - 1)])
        comps[(t, r)] = (case_idx[p], v10, case_idx[q], v01)
    if np.isnan(auc).any():
        t, r = np.argwhere(np.isnan(auc))[0]
        raise ValueError(f"reader {readers[r]} has no ratings under treatment {treatments[t]} (OR needs all)")
    shape = (len(treatments) * len(readers), n)
    dev = sp.csr_matrix((np.concatenate(dev_vals), (np.concatenate(dev_rows), np.concatenate(dev_cols))), shape=shape)
    return treatments, readers, cases, auc, dev, comps


def _cov_jackknife(dev: sp.csr_matrix) -> np.ndarray:
    """(t·r) × (t·r) jackknife covariance over the n cases: (n−1)/n Σ_k (θ_(k) − θ_(.))(θ_(k) − θ_(.))ᵀ, from the
    sparse leave-one-out deviations (θ_(.) = θ for the AUC)."""
    n = dev.shape[1]
    return (n - 1) / n * np.asarray((dev @ dev.T).todense())


def _cov_cluster_jackknife(
    df: pd.DataFrame, treatments: tuple, readers: tuple, auc: np.ndarray
) -> tuple[np.ndarray, int]:
    """(t·r) × (t·r) jackknife covariance deleting one *cluster* of cases at a time (column ``cluster``: e.g. the
    prompt, when several images share it — a real image and every seed's generated images of one prompt share its
    difficulty, so deleting single images misses that correlation). For each (treatment, reader) the AUC without
    cluster g is exact: ``(S − A_g − B_g + C_g) / ((n1 − p_g)(n0 − q_g))`` with ``S`` the sum of ψ over all
    positive × negative pairs, ``A_g``/``B_g`` the pairs of g's positives/negatives, ``C_g`` the pairs inside g
    (counted in both). Covariance ``(G − 1)/G Σ_g (θ_(g) − θ̄)(θ_(g) − θ̄)ᵀ`` over the G clusters. With one case per
    cluster this equals the case jackknife. Returns the covariance and G."""
    t_i = pd.Index(treatments).get_indexer(df["treatment"])
    r_i = pd.Index(readers).get_indexer(df["reader"])
    g_code, g_uni = pd.factorize(df["cluster"])
    n_g = len(g_uni)
    truth = df["truth"].to_numpy().astype(int)
    rating = pd.to_numeric(df["rating"]).to_numpy(dtype=float)
    loo = np.repeat(auc.reshape(-1, 1), n_g, axis=1)  # θ_(g) per (t, r) × cluster
    order = np.lexsort((r_i, t_i))
    keys = t_i[order] * len(readers) + r_i[order]
    bounds = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1], True])
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        idx = order[lo:hi]
        k = keys[lo]
        p, q = idx[truth[idx] == 1], idx[truth[idx] == 0]
        n1, n0 = len(p), len(q)
        a, v10, v01 = _auc_and_jackknife(rating[p], rating[q])
        total = a * n1 * n0
        rem = np.bincount(g_code[p], weights=n0 * v10, minlength=n_g) + np.bincount(g_code[q], weights=n1 * v01,
                                                                                     minlength=n_g)  # fmt: skip
        pg, qg = np.bincount(g_code[p], minlength=n_g), np.bincount(g_code[q], minlength=n_g)
        # pairs inside a cluster: each positive against the negatives of its own cluster (sorted by cluster)
        qs = np.argsort(g_code[q], kind="stable")
        gq, yq = g_code[q][qs], rating[q][qs]
        gp = g_code[p]
        start = np.searchsorted(gq, gp, side="left")
        cnt = np.searchsorted(gq, gp, side="right") - start
        pi = np.repeat(np.arange(n1), cnt)
        j = np.repeat(start - (np.cumsum(cnt) - cnt), cnt) + np.arange(int(cnt.sum()))
        xi, yj = rating[p][pi], yq[j]
        cross = np.bincount(gp[pi], weights=(xi > yj) + 0.5 * (xi == yj), minlength=n_g)
        touched = (pg + qg) > 0
        den = (n1 - pg) * (n0 - qg)
        if (den[touched] <= 0).any():
            raise ValueError(f"treatment {treatments[k // len(readers)]}, reader {readers[k % len(readers)]}: one "
                             "cluster holds all its positive or all its negative cases (cluster jackknife needs more)")
        loo[k, touched] = (total - rem[touched] + cross[touched]) / den[touched]
    dev = loo - loo.mean(axis=1, keepdims=True)
    return (n_g - 1) / n_g * (dev @ dev.T), n_g


def _cov_delong(comps: dict, shape: tuple[int, int], n_cases: int) -> np.ndarray:
    """DeLong et al. (1988) covariance from structural components; needs every (treatment, reader) to have read
    the same positive and negative cases."""
    t, r = shape
    first = comps[(0, 0)]
    v10 = np.empty((t * r, len(first[1])))
    v01 = np.empty((t * r, len(first[3])))
    for (ti, ri), (pi, a, qi, b) in comps.items():
        if len(pi) != len(first[0]) or len(qi) != len(first[2]) or (pi != first[0]).any() or (qi != first[2]).any():
            raise ValueError("cov='delong' needs a fully crossed design (every reader reads every case); use jackknife")
        k = ti * r + ri
        v10[k], v01[k] = a, b
    return np.cov(v10) / v10.shape[1] + np.cov(v01) / v01.shape[1]


def _summarise_cov(cov: np.ndarray, t: int, r: int) -> tuple[float, float, float, float, np.ndarray]:
    row_t, row_r = np.repeat(np.arange(t), r), np.tile(np.arange(r), t)
    same_t = row_t[:, None] == row_t[None, :]
    same_r = row_r[:, None] == row_r[None, :]
    nan = float("nan")

    def mean(mask):
        return float(cov[mask].mean()) if mask.any() else nan

    cov2_t = np.array([mean(same_t & ~same_r & (row_t[:, None] == k)) for k in range(t)])
    return mean(same_t & same_r), mean(~same_t & same_r), mean(same_t & ~same_r), mean(~same_t & ~same_r), cov2_t


def or_analysis(df: pd.DataFrame, cov_method: str = "jackknife", ci_level: float = 0.95) -> MRMCResult:
    """Obuchowski–Rockette analysis, random readers and random cases, of trapezoidal AUCs.

    ``df``: one row per rating with columns ``reader, treatment, case, truth`` (1 = positive) and ``rating`` (higher
    = more likely positive); optional column ``cluster`` (jackknife only): cases that share it — images of one prompt
    — are deleted together (:func:`_cov_cluster_jackknife`). Needs at least two readers; every reader must have
    rated, under every treatment, at
    least two positive and two negative cases. ``cov_method``: ``"jackknife"`` (any design) or ``"delong"`` (fully
    crossed). Returns :class:`MRMCResult` with the global F test (``f``, ``ndf``, ``ddf``, ``p_value``), per-treatment
    AUCs with CIs and every pairwise difference with its CI and test."""
    check_mrmc_frame(df)
    if cov_method not in COV_METHODS:
        raise ValueError(f"cov_method must be one of {', '.join(COV_METHODS)}, got {cov_method!r}")
    if not 0 < ci_level < 1:
        raise ValueError(f"ci_level must be between 0 and 1 (exclusive), got {ci_level}")
    treatments, readers, cases, auc, dev, comps = _per_auc(df)
    t, r = auc.shape
    if r < 2:
        raise ValueError(f"OR analysis needs at least two readers, got {r}")
    n_clusters = 0
    if cov_method == "delong":
        cov = _cov_delong(comps, (t, r), len(cases))
    elif "cluster" in df.columns:
        cov, n_clusters = _cov_cluster_jackknife(df, treatments, readers, auc)
    else:
        cov = _cov_jackknife(dev)
    var_error, cov1, cov2, cov3, cov2_t = _summarise_cov(cov, t, r)
    theta_t = auc.mean(axis=1)
    theta_r = auc.mean(axis=0)
    theta = auc.mean()
    ms_r = auc.var(axis=1, ddof=1)
    tail = (1 - ci_level) / 2
    rows = []
    for k in range(t):
        c2 = max(cov2_t[k], 0.0)
        se = float(np.sqrt(ms_r[k] / r + c2))
        dfk = (ms_r[k] + r * c2) ** 2 / (ms_r[k] ** 2 / (r - 1)) if ms_r[k] > 0 else np.inf
        q = stats.t.ppf(1 - tail, dfk)
        rows.append({"treatment": treatments[k], "auc": theta_t[k], "ms_r": ms_r[k], "cov2": cov2_t[k], "se": se,
                     "df": dfk, "ci_low": theta_t[k] - q * se, "ci_high": theta_t[k] + q * se})  # fmt: skip
    treatment_table = pd.DataFrame(rows)
    if t >= 2:
        ms_t = r / (t - 1) * float(((theta_t - theta) ** 2).sum())
        resid = auc - theta_t[:, None] - theta_r[None, :] + theta
        ms_tr = float((resid**2).sum() / ((t - 1) * (r - 1)))
        den = ms_tr + r * max(cov2 - cov3, 0.0)
        f = ms_t / den if den > 0 else np.inf
        ddf = den**2 / (ms_tr**2 / ((t - 1) * (r - 1))) if ms_tr > 0 else np.inf
        p = float(stats.f.sf(f, t - 1, ddf))
        diffs = []
        for a, b in itertools.combinations(range(t), 2):
            est = theta_t[a] - theta_t[b]
            se = float(np.sqrt(2 * den / r))
            q = stats.t.ppf(1 - tail, ddf)
            tstat = est / se if se > 0 else np.inf
            diffs.append({"treatment_a": treatments[a], "treatment_b": treatments[b], "estimate": est, "se": se,
                          "df": ddf, "ci_low": est - q * se, "ci_high": est + q * se, "t": tstat,
                          "p_value": float(2 * stats.t.sf(abs(tstat), ddf))})  # fmt: skip
        difference_table = pd.DataFrame(diffs)
    else:
        ms_t = ms_tr = f = ddf = p = float("nan")
        difference_table = pd.DataFrame(
            columns=["treatment_a", "treatment_b", "estimate", "se", "df", "ci_low", "ci_high", "t", "p_value"]
        )
    return MRMCResult(
        treatments=treatments, readers=readers, auc=auc, var_error=var_error, cov1=cov1, cov2=cov2, cov3=cov3,
        ms_t=ms_t, ms_tr=ms_tr, ms_r=ms_r, cov2_t=cov2_t, f=f, ndf=t - 1, ddf=ddf, p_value=p,
        treatment_table=treatment_table, difference_table=difference_table, cov_method=cov_method,
        ci_level=ci_level, n_clusters=n_clusters,
    )  # fmt: skip


def pseudovalues(df: pd.DataFrame) -> tuple[tuple, tuple, np.ndarray]:
    """Jackknife pseudovalues ``Y[t, r, k] = n θ_tr − (n−1) θ_tr(k)``, centred so that each (t, r) mean equals
    ``θ_tr`` (as RJafroc does for the Wilcoxon AUC). Returns ``(treatments, readers, Y)``."""
    check_mrmc_frame(df)
    treatments, readers, cases, auc, dev, _ = _per_auc(df)
    n = len(cases)
    # n θ − (n−1) θ_(k) = θ − (n−1)(θ_(k) − θ); its mean over cases is already θ (the deviations sum to 0)
    y = auc[:, :, None] - (n - 1) * np.asarray(dev.todense()).reshape(auc.shape[0], auc.shape[1], n)
    return treatments, readers, y


def dbm_f_test(df: pd.DataFrame) -> tuple[float, int, float, float]:
    """Dorfman–Berbaum–Metz F test with Hillis's ddf on the jackknife pseudovalues (treatment × reader × case
    ANOVA): ``F = MS(T) / (MS(TR) + max(MS(TC) − MS(TRC), 0))``. Returns ``(F, ndf, ddf, p)``; equal to the OR
    jackknife test (Hillis et al. 2005)."""
    _, _, y = pseudovalues(df)
    t, r, c = y.shape
    if t < 2 or r < 2:
        raise ValueError("DBM needs at least two treatments and two readers")
    m = y.mean()
    mt, mr, mc = y.mean((1, 2)), y.mean((0, 2)), y.mean((0, 1))
    mtr, mtc = y.mean(2), y.mean(1)
    mrc = y.mean(0)
    ms_t = r * c * ((mt - m) ** 2).sum() / (t - 1)
    ms_tr = c * ((mtr - mt[:, None] - mr[None, :] + m) ** 2).sum() / ((t - 1) * (r - 1))
    ms_tc = r * ((mtc - mt[:, None] - mc[None, :] + m) ** 2).sum() / ((t - 1) * (c - 1))
    resid = y - mtr[:, :, None] - mtc[:, None, :] - mrc[None, :, :] + mt[:, None, None] + mr[None, :, None]
    resid += mc[None, None, :] - m
    ms_trc = (resid**2).sum() / ((t - 1) * (r - 1) * (c - 1))
    den = ms_tr + max(ms_tc - ms_trc, 0.0)
    f = ms_t / den
    ddf = den**2 / (ms_tr**2 / ((t - 1) * (r - 1)))
    return float(f), t - 1, float(ddf), float(stats.f.sf(f, t - 1, ddf))
