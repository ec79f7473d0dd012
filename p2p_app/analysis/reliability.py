"""Agreement between raters (Krippendorff's α with a rater × image jackknife interval, Fleiss' κ with a bootstrap
interval; also on forced choices) and the consistency of each rater with themself on repeated items."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import krippendorff
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats
from statsmodels.stats.inter_rater import cohens_kappa, fleiss_kappa

from ..tidy import ALL, CHOSEN_REAL, not_computable, result_table
from .crossed import bounded_interval
from .preparation import (
    AGREEMENT_COLUMNS,
    DEFAULT_CI_LEVEL,
    DEFAULT_N_BOOT,
    DEFAULT_SEED,
    INTRA_COLUMNS,
    MIN_REPEAT_PAIRS,
    Prepared,
    dense,
    prepare,
    stream_rng,
)

_ALPHA_BLOCK = 1 << 22
"""Largest number of array elements per block of the α jackknife (pattern-value combinations × V × V)."""


# --------------------------------------------------------------------------------------------------------------------
# Agreement
# --------------------------------------------------------------------------------------------------------------------


def _alpha_from_patterns(patterns: np.ndarray, weights: np.ndarray, levels: np.ndarray, level: str) -> np.ndarray:
    """Krippendorff's α for weighted sums of unit value-count patterns (the formulas of ``krippendorff.alpha``).

    ``patterns``: P × V value counts of distinct pairable units; ``weights``: B × P multiplicities. Returns (B,).
    """
    coinc = _coincidences(patterns)
    n_pat, v = coinc.shape[:2]
    return _alpha_from_coincidences((weights @ coinc.reshape(n_pat, v * v)).reshape(-1, v, v), levels, level)


def _coincidences(patterns: np.ndarray) -> np.ndarray:
    """Krippendorff's coincidence matrix of each unit value-count pattern (P × V × V); an unpairable pattern (fewer
    than two values) contributes zeros."""
    p = np.asarray(patterns, dtype=float)
    m = p.sum(1)
    eye = np.eye(p.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        coinc = (p[:, :, None] * p[:, None, :] - p[:, :, None] * eye) / (m - 1)[:, None, None]
    coinc[m < 2] = 0.0
    return coinc


def _alpha_from_coincidences(o: np.ndarray, levels: np.ndarray, level: str) -> np.ndarray:
    """Krippendorff's α from B × V × V coincidence matrices (the formulas of ``krippendorff.alpha``). Returns (B,)."""
    v = o.shape[1]
    eye = np.eye(v)
    n_v = o.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        e = (n_v[:, :, None] * n_v[:, None, :] - n_v[:, :, None] * eye) / (n_v.sum(1) - 1)[:, None, None]
    i1, i2 = np.meshgrid(np.arange(v), np.arange(v), indexing="ij")
    if level == "nominal":
        d = np.broadcast_to((i1 != i2).astype(float), o.shape)
    elif level == "interval":
        lv = np.asarray(levels, dtype=float)
        d = np.broadcast_to((lv[:, None] - lv[None, :]) ** 2, o.shape)
    elif level == "ordinal":
        lo, hi = np.minimum(i1, i2), np.maximum(i1, i2)
        cs = np.concatenate([np.zeros((len(n_v), 1)), np.cumsum(n_v, axis=1)], axis=1)
        d = (cs[:, hi + 1] - cs[:, lo] - (n_v[:, lo] + n_v[:, hi]) / 2) ** 2
    else:
        raise ValueError(f"level_of_measurement must be 'nominal', 'ordinal' or 'interval', got {level!r}")
    do, de = (o * d).sum((1, 2)), (e * d).sum((1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(de > 0, 1 - do / de, np.nan)


def _fleiss_from_patterns(patterns: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Fleiss' κ for weighted sums of unit category-count patterns, all with the same number of raters m
    (the formula of ``statsmodels.stats.inter_rater.fleiss_kappa``). Returns (B,)."""
    p = patterns.astype(float)
    m = p.sum(1)[0]
    p_rat = ((p * p).sum(1) - m) / (m * (m - 1))
    total = weights.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        p_mean = (weights @ p_rat) / total
        pe = (((weights @ p) / (total * m)[:, None]) ** 2).sum(1)
        return np.where(pe < 1, (p_mean - pe) / (1 - pe), np.nan)


def _resample_patterns(rng: np.random.Generator, table: np.ndarray, n_boot: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of ``table`` and, per replicate, how often each is drawn when resampling rows with replacement
    (a multinomial draw over the distinct rows: rows with the same pattern are interchangeable)."""
    table = np.asarray(table, dtype=np.int64)
    base = int(table.max()) + 1 if table.size else 1
    if base ** table.shape[1] < 2**62:  # encode each row as one integer: a 1-D unique is much faster
        key = table @ (base ** np.arange(table.shape[1], dtype=np.int64))
        _, first, counts = np.unique(key, return_index=True, return_counts=True)
        pats = table[first]
    else:
        pats, counts = np.unique(table, axis=0, return_counts=True)
    weights = rng.multinomial(int(counts.sum()), counts / counts.sum(), size=n_boot).astype(float)
    return pats, weights


def _percentile_ci(reps: np.ndarray, ci_level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over axis 0, ignoring NaN replicates (a replicate that drew no data for a group)."""
    tail = 100 * (1 - ci_level) / 2
    reps = np.asarray(reps, dtype=float)
    if reps.ndim == 1:
        reps = reps[:, None]
    lo = np.full(reps.shape[1], np.nan)
    hi = np.full(reps.shape[1], np.nan)
    ok = np.isfinite(reps).any(axis=0)
    if ok.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lo[ok], hi[ok] = np.nanpercentile(reps[:, ok], [tail, 100 - tail], axis=0)
    return lo, hi


def _ci(reps: np.ndarray, ci_level: float) -> tuple[float, float]:
    lo, hi = _percentile_ci(reps, ci_level)
    return float(lo[0]), float(hi[0])


def _pattern_ids(table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct rows of an integer count ``table``, the distinct-row index of every row, and how often each occurs."""
    table = np.asarray(table, dtype=np.int64)
    base = int(table.max()) + 1 if table.size else 1
    if base ** table.shape[1] < 2**62:  # encode each row as one integer: a 1-D unique is much faster
        key = table @ (base ** np.arange(table.shape[1], dtype=np.int64))
        _, first, inverse, counts = np.unique(key, return_index=True, return_inverse=True, return_counts=True)
        return table[first], inverse.reshape(-1), counts
    pats, inverse, counts = np.unique(table, axis=0, return_inverse=True, return_counts=True)
    return pats, inverse.reshape(-1), counts


def _alpha_jackknife(
    table: np.ndarray,
    unit: np.ndarray,
    col: np.ndarray,
    rater: np.ndarray,
    levels: np.ndarray,
    level: str,
    ci_level: float,
) -> dict:
    """Interval of Krippendorff's α with raters **and** units as crossed random samples (two-way jackknife).

    ``table``: units × values counts of the pairable units (what α is computed on); ``unit``/``col``/``rater``: the
    dense unit index, value column and dense rater index of each answer on those units.

    Variance: three jackknives — delete one rater (V_r), delete one unit (V_u), delete one answer (V_a) — combined as
    ``V = V_r + V_u − V_a``. Write α̂ − α to first order as a sum over answers of rater, unit and residual parts with
    variances A, B, E. The target is ``A Σn_r²/N² + B Σm_u²/N² + E/N`` (n_r answers per rater, m_u per unit, N in
    all). Deleting raters estimates ``A Σn_r²/N² + (B + E)/N``, deleting units ``B Σm_u²/N² + (A + E)/N``, deleting
    answers ``(A + B + E)/N``: the sum of the first two counts the residual twice, and subtracting the third removes
    it. This is the crossed-random-effects correction of one-factor resampling variances of Owen 2007 ("The
    pigeonhole bootstrap", Ann Appl Stat 1:386, §3–4: resampling one factor misses the other's variance, resampling
    both counts the residual too often; also McCullagh 2000, "Resampling and exchangeable arrays", Bernoulli
    6:285), done with jackknives (Efron & Stein 1981, Ann Stat 9:586). ``V`` is truncated below at ``max(V_r,
    V_u)`` (each is at most the target to first order): the difference of three noisy estimates is often too small,
    and without the bound coverage fell to 88–92 % in every simulated design. The price: with sparse overlap (3
    raters per image) V_r alone exceeds the true variance — deleting a rater reweights the remaining pairs of its
    units — and the interval is a little conservative there (~98 %).

    Centre: α is biased low in crossed designs — its expected disagreement sees only the sampled raters' biases,
    so with R raters it misses about a 1/R share of the rater variance (simulated: mean α 0.20 with 3 raters, 0.22
    with 8, population 0.247). The interval is centred on the two-way jackknife bias-corrected estimate
    ``α̂ − (R − 1)(ᾱ_(rater) − α̂) − (I − 1)(ᾱ_(unit) − α̂)`` (Quenouille's correction per factor) and is
    ``centre ± z·√V``, the normal jackknife interval (Efron & Tibshirani 1993, "An Introduction to the Bootstrap",
    §11.5); the reported ``value`` stays the library's α̂. The interval is then kept inside α's range [−1, 1] and
    widened to contain α̂ where the centre left it outside (:func:`bounded_interval`; with few raters a printed
    α of −0.537 sat outside its own interval, and intervals ran from −2.4 to +1.8). A t
    quantile with Satterthwaite df was tried and over-covered (98–99 %): the jackknife variance is already
    conservative for α (Efron–Stein), most with few raters. Coverage per design: ``benchmarks/bench_coverage.py``
    (docs/statistics.md). The earlier interval (bootstrap of units only) treated raters as fixed and covered 84–91 %.

    Jackknife rather than bootstrap: deterministic and cheap in closed form from coincidence matrices (deleting a
    unit removes its pattern's coincidences; deleting an answer turns its unit's pattern p into p − e_value; deleting
    a rater does that on each of the rater's units), so it costs one α evaluation per rater, per distinct pattern and
    per distinct (pattern, value), not one per replicate. Replicates where α is undefined (no variation left) are
    left out. Fewer than three raters (deleting one of two leaves nothing pairable) → NaN interval.
    """
    nan = {"ci_low": np.nan, "ci_high": np.nan}
    n_r, n_u = (int(rater.max()) + 1 if len(rater) else 0), len(table)
    if n_r < 3 or n_u < 2:
        return nan
    alpha, a_rater, a_unit, a_answer = _alpha_delete_one(table, unit, col, rater, levels, level)

    def jack_var(reps: np.ndarray) -> tuple[float, float, int]:
        reps = reps[np.isfinite(reps)]
        k = len(reps)
        if k < 2:
            return np.nan, np.nan, k
        return (k - 1) / k * float(((reps - reps.mean()) ** 2).sum()), float(reps.mean()), k

    v_r, mean_r, k_r = jack_var(a_rater)
    v_u, mean_u, k_u = jack_var(a_unit)
    v_a, _, _ = jack_var(a_answer)
    if not np.isfinite(v_r + v_u + v_a):
        return nan
    var = max(v_r + v_u - v_a, v_r, v_u)
    # two-way jackknife bias correction (Quenouille): each factor's O(1/n) bias removed in turn
    centre = alpha - (k_r - 1) * (mean_r - alpha) - (k_u - 1) * (mean_u - alpha)
    q = float(stats.norm.ppf(1 - (1 - ci_level) / 2)) * float(np.sqrt(var))
    return bounded_interval(alpha, centre - q, centre + q, -1.0, 1.0)


def _alpha_delete_one(
    table: np.ndarray, unit: np.ndarray, col: np.ndarray, rater: np.ndarray, levels: np.ndarray, level: str
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """α of ``table`` and its delete-one replicates: without each rater (R,), each unit (U,) and each answer (N,)
    (arguments as in :func:`_alpha_jackknife`), in closed form from coincidence matrices; the tests check them
    against ``krippendorff.alpha`` on the reduced data."""
    n_r = int(rater.max()) + 1 if len(rater) else 0
    pats, pid, counts = _pattern_ids(table)
    n_pat, v = pats.shape
    # blocks of patterns, so that the (pattern, value) × V × V arrays stay small whatever the number of levels
    step = max(1, _ALPHA_BLOCK // (v * v * v))
    blocks = [slice(lo, min(lo + step, n_pat)) for lo in range(0, n_pat, step)]
    total = np.zeros(v * v)
    for b in blocks:
        total += counts[b].astype(float) @ _coincidences(pats[b]).reshape(-1, v * v)
    alpha = float(_alpha_from_coincidences(total.reshape(1, v, v), levels, level)[0])
    pc = pid[unit] * v + col  # (pattern, value) of each answer
    per_rater = sp.csr_matrix((np.ones(len(pc)), (rater, pc)), shape=(n_r, n_pat * v))  # answers per rater × (p, c)
    rater_change = np.zeros((n_r, v * v))
    a_pattern = np.empty(n_pat)
    a_pc = np.empty(n_pat * v)
    eye = np.eye(v, dtype=np.int64)
    for b in blocks:
        coinc = _coincidences(pats[b]).reshape(-1, v * v)
        a_pattern[b] = _alpha_from_coincidences((total - coinc).reshape(-1, v, v), levels, level)
        reduced = (pats[b][:, None, :] - eye[None, :, :]).reshape(-1, v)  # pattern p less one answer of value c
        # change of the coincidences when one answer of value c leaves a unit with pattern p (zero where p_c = 0)
        delta = np.where((pats[b] > 0).reshape(-1, 1), _coincidences(np.maximum(reduced, 0)).reshape(-1, v * v)
                         - np.repeat(coinc, v, axis=0), 0.0)  # fmt: skip
        cols = slice(b.start * v, b.stop * v)
        rater_change += per_rater[:, cols] @ delta
        a_pc[cols] = _alpha_from_coincidences((total + delta).reshape(-1, v, v), levels, level)
    a_rater = _alpha_from_coincidences((total + rater_change).reshape(-1, v, v), levels, level)
    return alpha, a_rater, a_pattern[pid], a_pc[pc]


def fleiss_table(units: np.ndarray, categories: np.ndarray, n_units: int, n_categories: int) -> np.ndarray:
    """Units × categories count table, the output of statsmodels ``aggregate_raters`` (which loops over units in
    Python; this is one ``bincount``): ``units``/``categories`` are the 0-based codes of each answer."""
    flat = np.bincount(units * n_categories + categories, minlength=n_units * n_categories)
    return flat.reshape(n_units, n_categories)


def agreement_scope(
    rows: Mapping[str, np.ndarray],
    question: str,
    model: str,
    levels: np.ndarray,
    n_boot: int,
    rng: np.random.Generator,
    ci_level: float,
    level: str,
) -> list[dict]:
    """α and κ for the answers in ``rows`` (numpy arrays unit, lev, rater, rank — rank = order of the answer within
    its unit by answer time — all for one question and scope)."""
    alpha_name = f"krippendorff_alpha_{level}"
    unit, lev = rows["unit"], rows["lev"]
    base = {"question": question, "model": model, "n_raters": int(np.unique(rows["rater"]).size),
            "n_answers": len(unit)}  # fmt: skip

    def nc(reason: str, **extra) -> list[dict]:
        return [{**base, **extra, "metric": m, "note": not_computable(reason)} for m in (alpha_name, "fleiss_kappa")]

    if len(unit) == 0:
        return nc("no ratings")
    if base["n_raters"] < 2:
        return nc("only one rater")
    units, unit_d = np.unique(unit, return_inverse=True)
    vc = fleiss_table(unit_d, lev, len(units), len(levels))
    pairable = vc.sum(1) >= 2
    if not pairable.any():
        return nc("no image rated by two or more raters", n_units=len(units))
    if np.unique(lev).size < 2:
        return nc("every answer has the same score (no variation)", n_units=int(pairable.sum()))
    alpha_row = {**base, "metric": alpha_name, "n_units": int(pairable.sum()),
                 "n_units_dropped": int((~pairable).sum())}  # fmt: skip
    return [
        _alpha_row(alpha_row, vc, unit_d, rows, levels, level, ci_level),
        _fleiss_row({**base, "metric": "fleiss_kappa"}, vc, unit_d, rows, n_boot, rng, ci_level),
    ]


def _alpha_row(
    row: dict,
    vc: np.ndarray,
    unit_d: np.ndarray,
    rows: Mapping[str, np.ndarray],
    levels: np.ndarray,
    level: str,
    ci_level: float,
) -> dict:
    """Krippendorff's α of one scope (:func:`agreement_scope`): the library's point estimate on the pairable units'
    unit × level counts ``vc`` (``unit_d``: dense unit of each answer), CI from the rater × image jackknife."""
    pairable = vc.sum(1) >= 2
    vc_p = vc[pairable]
    used = vc_p.sum(0) > 0
    if used.sum() < 2:
        return {**row, "note": not_computable("pairable answers all have the same score (no variation)")}
    # the formulas of krippendorff.alpha on the distinct unit patterns (the library builds a unit × V × V array:
    # 0.3 s at 1,000,000 rows); the tests check both give the same α
    pats, _, counts = _pattern_ids(vc_p[:, used])
    row = {**row, "value": float(_alpha_from_patterns(pats, counts[None, :].astype(float), levels[used], level)[0])}
    on_pairable = pairable[unit_d]
    col = (np.cumsum(used) - 1)[rows["lev"][on_pairable]]
    jk = _alpha_jackknife(vc_p[:, used], dense(unit_d[on_pairable]), col, dense(rows["rater"][on_pairable]),
                          levels[used], level, ci_level)  # fmt: skip
    row.update(jk)
    if not np.isfinite(jk["ci_low"]):
        if row["n_raters"] < 3:
            row["note"] = f"{row['n_raters']} raters: no interval (the rater × image jackknife needs three or more)"
        elif row["n_units"] < 2:
            row["note"] = "a single image: no interval (the rater × image jackknife needs two or more)"
        else:
            row["note"] = "no interval (no variation left when one rater or image is deleted)"
    return row


def _fleiss_row(
    row: dict,
    vc: np.ndarray,
    unit_d: np.ndarray,
    rows: Mapping[str, np.ndarray],
    n_boot: int,
    rng: np.random.Generator,
    ci_level: float,
) -> dict:
    """Fleiss' κ of one scope (:func:`agreement_scope`), CI by resampling units. κ needs the same number m of raters
    per unit: m = the most common count among pairable units (ties: the larger); a unit with more answers keeps its
    first m by answer time, a unit with fewer is dropped."""
    per_unit = vc.sum(1)
    counts_m = np.bincount(per_unit[per_unit >= 2])
    m = int(np.flatnonzero(counts_m == counts_m.max()).max())
    keep_unit = per_unit >= m
    row = {**row, "raters_per_unit": m, "n_units": int(keep_unit.sum()),
           "n_units_dropped": int(len(vc) - keep_unit.sum())}  # fmt: skip
    sel = (rows["rank"] < m) & keep_unit[unit_d]
    table = fleiss_table(dense(unit_d[sel]), rows["lev"][sel], int(keep_unit.sum()), vc.shape[1])
    table = table[:, table.sum(0) > 0]
    if table.shape[1] < 2:
        return {**row, "note": not_computable("every kept answer has the same score (no variation)")}
    row["value"] = float(fleiss_kappa(table, method="fleiss"))
    if n_boot > 0 and len(table) >= 2:
        pats, w = _resample_patterns(rng, table, n_boot)
        lo, hi = _ci(_fleiss_from_patterns(pats, w), ci_level)
        row.update(bounded_interval(row["value"], lo, hi, -1.0, 1.0) if np.isfinite(lo) else {})
    if not np.isfinite(row.get("ci_low", np.nan)):
        row["note"] = ("a single image: no interval (resampling images needs two or more)" if len(table) < 2 else
                       "no interval (no bootstrap replicates)" if n_boot == 0 else "no interval")  # fmt: skip
    return row


def agreement(
    df: pd.DataFrame,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
    ci_level: float = DEFAULT_CI_LEVEL,
    level_of_measurement: str = "ordinal",
) -> pd.DataFrame:
    """Inter-rater agreement per numeric question, over all images (``model == "all"``) and per model.

    Units are images (``image_id``); each rater's first answer per image counts (by answer time, also when the image
    came back on another screen, not only on planned repeats); can't-judge answers are missing values.

    * ``krippendorff_alpha_<level>``: Krippendorff's α (ordinal by default) on the unit × score count table — the
      formulas of ``krippendorff.alpha``, evaluated on distinct unit patterns (tests: equal to the library);
      CI with raters and images both random (two-way jackknife, ``_alpha_jackknife``; three or more raters, else
      NaN; ``n_boot`` and ``seed`` do not affect it). Units with a single answer carry no pairable information;
      ``n_units_dropped`` counts them.
    * ``fleiss_kappa``: statsmodels ``fleiss_kappa`` on the units × score-category count table (what
      ``aggregate_raters`` returns). Fleiss' κ needs an equal number of raters per unit: ``raters_per_unit`` (m) is
      the most common number of answers per unit (ties → the larger); a unit with more than m answers keeps its first
      m by answer time, a unit with fewer is dropped (``n_units_dropped``). CI by resampling units.

    Columns: ``AGREEMENT_COLUMNS``. Common reading: α ≥ 0.8 reliable, ≥ 0.667 tentative.
    """
    return agreement_table(prepare(df), n_boot, stream_rng(seed, "agreement"), ci_level, level_of_measurement)


def agreement_table(prep: Prepared, n_boot: int, rng, ci_level: float, level: str) -> pd.DataFrame:
    if prep.rows.empty:
        return result_table([{"metric": "", "note": not_computable("no ratings")}], AGREEMENT_COLUMNS)
    s = prep.first  # one answer per rater per image: a second screen is not a second rater
    cols = {c: s[c].to_numpy() for c in ("question", "image", "value", "rater", "model", "t")}  # no frame copies
    rows = []
    for qi, question in enumerate(prep.questions):
        sel = cols["question"] == qi
        unit = cols["image"][sel]
        levels, lev = np.unique(cols["value"][sel], return_inverse=True)
        rater, model = cols["rater"][sel], cols["model"][sel]
        order = np.lexsort((rater, cols["t"][sel], unit))
        rank = np.empty(len(unit), dtype=np.int64)
        u_sorted = unit[order]
        rank[order] = np.arange(len(order)) - np.searchsorted(u_sorted, u_sorted, side="left")
        arrays = {"unit": unit, "lev": lev, "rater": rater, "rank": rank}
        rows += agreement_scope(arrays, question, ALL, levels, n_boot, rng, ci_level, level)
        for mi, name in enumerate(prep.models):
            sel = model == mi
            scoped = {k: v[sel] for k, v in arrays.items()}
            rows += agreement_scope(scoped, question, name, levels, n_boot, rng, ci_level, level)
    return _agreement_result(rows)


def _agreement_result(rows: list[dict]) -> pd.DataFrame:
    """The agreement table of ``rows`` (:func:`agreement_scope`'s), counts as nullable integers."""
    out = result_table(rows, AGREEMENT_COLUMNS)
    for c in ("n_units", "n_raters", "n_answers", "raters_per_unit", "n_units_dropped"):
        out[c] = out[c].astype("Int64")
    return out


# --------------------------------------------------------------------------------------------------------------------
# Intra-rater consistency
# --------------------------------------------------------------------------------------------------------------------


def intra_rater(df: pd.DataFrame, min_pairs: int = MIN_REPEAT_PAIRS) -> pd.DataFrame:
    """Intra-rater consistency on repeated items, per question: pooled over raters (``rater_id == "all"``) and per
    rater. Each repeat answer (``is_repeat``) is paired with the same rater's first answer on the same image and
    question; pairs where either answer is can't-judge are dropped. Statistics: share of identical scores,
    quadratic-weighted Cohen's κ (statsmodels ``cohens_kappa(table, wt="quadratic")`` on the first × repeat table
    over the question's score levels — identical to sklearn ``cohen_kappa_score(weights="quadratic",
    labels=levels)``, checked in the tests, and ~30× faster per rater) and Krippendorff's α (ordinal, the two
    occasions as two coders). Fewer than ``min_pairs`` pairs → "not computable". Columns: ``INTRA_COLUMNS``.
    """
    return intra_table(prepare(df), min_pairs)


def _intra_stats(first: np.ndarray, again: np.ndarray, n_levels: int, min_pairs: int) -> dict:
    """``first``/``again``: level codes (0..n_levels-1) of the paired answers."""
    row = {"n_pairs": len(first)}
    if len(first) < min_pairs:
        return {**row, "note": not_computable(f"{len(first)} repeat pairs (need {min_pairs})")}
    row["exact_agreement"] = float(np.mean(first == again))
    if np.unique(np.r_[first, again]).size < 2:
        return {**row, "note": not_computable("every repeated answer has the same score (no variation)")}
    table = fleiss_table(first, again, n_levels, n_levels)
    with np.errstate(invalid="ignore", divide="ignore"):
        kappa = float(cohens_kappa(table, wt="quadratic", return_results=False))
    row["kappa_quadratic"] = kappa if np.isfinite(kappa) else np.nan
    two_coders = np.vstack([first, again]).astype(float)
    row["alpha_ordinal"] = float(krippendorff.alpha(two_coders, level_of_measurement="ordinal"))
    if not np.isfinite(kappa):
        row["note"] = not_computable("κ undefined: one occasion used a single score")
    return row


def _repeat_pairs(prep: Prepared) -> pd.DataFrame:
    """One row per valid (first answer, repeat) pair: rater, question, value_first, value_repeat."""
    r = prep.rows
    rater, image, q = r["rater"].to_numpy(), r["image"].to_numpy(), r["question"].to_numpy()
    key = (rater * (int(image.max()) + 1 if len(image) else 1) + image) * max(len(prep.questions), 1) + q
    rep = r["repeat"].to_numpy()
    valid = ~np.isnan(r["value"].to_numpy()) & ~r["cant"].to_numpy()
    first_idx = np.flatnonzero(~rep)
    first_idx = first_idx[np.lexsort((r["t"].to_numpy()[first_idx], key[first_idx]))]
    k_sorted = key[first_idx]
    is_first = np.r_[True, k_sorted[1:] != k_sorted[:-1]] if len(k_sorted) else np.zeros(0, bool)
    first_idx, k_sorted = first_idx[is_first], k_sorted[is_first]
    again = np.flatnonzero(rep & valid)
    pos = np.searchsorted(k_sorted, key[again])
    found = np.zeros(len(again), dtype=bool)
    if len(k_sorted):
        found = (pos < len(k_sorted)) & (k_sorted[np.minimum(pos, len(k_sorted) - 1)] == key[again])
    again, match = again[found], first_idx[pos[found]]
    ok = valid[match]
    again, match = again[ok], match[ok]
    v = r["value"].to_numpy()
    return pd.DataFrame(
        {"rater": rater[again], "question": q[again], "value_first": v[match], "value_repeat": v[again]}
    )


def intra_table(prep: Prepared, min_pairs: int) -> pd.DataFrame:
    if prep.rows.empty:
        return result_table([{"note": not_computable("no ratings")}], INTRA_COLUMNS)
    pairs = _repeat_pairs(prep)
    rows = []
    for qi, question in enumerate(prep.questions):
        pq = pairs[pairs["question"].to_numpy() == qi]
        if pq.empty:
            rows.append({"question": question, "rater_id": ALL, "n_pairs": 0, "note": not_computable("no repeated items")})
            continue
        levels = np.unique(prep.scored.loc[prep.scored["question"] == qi, "value"].to_numpy())
        levels = np.unique(np.r_[levels, pq["value_first"].to_numpy(), pq["value_repeat"].to_numpy()])
        f = np.searchsorted(levels, pq["value_first"].to_numpy())
        a = np.searchsorted(levels, pq["value_repeat"].to_numpy())
        rows.append({"question": question, "rater_id": ALL, **_intra_stats(f, a, len(levels), min_pairs)})
        rater = pq["rater"].to_numpy()
        order = np.argsort(rater, kind="stable")
        bounds = np.flatnonzero(np.r_[True, rater[order][1:] != rater[order][:-1], True])
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            idx = order[lo:hi]
            rows.append({"question": question, "rater_id": str(prep.raters[rater[idx[0]]]),
                         **_intra_stats(f[idx], a[idx], len(levels), min_pairs)})  # fmt: skip
    out = result_table(rows, INTRA_COLUMNS)
    out["n_pairs"] = out["n_pairs"].fillna(0).astype("int64")
    return out


# --------------------------------------------------------------------------------------------------------------------
# Forced choice
# --------------------------------------------------------------------------------------------------------------------


def forced_choice_agreement(screens: pd.DataFrame, n_boot: int, rng: np.random.Generator, ci_level: float):
    """Fleiss' κ and Krippendorff's α (nominal) on which model each rater picked per item (units = items).
    Columns: :data:`AGREEMENT_COLUMNS` (the score agreement's code, not a copy)."""
    if screens.empty:
        return result_table([{"question": CHOSEN_REAL, "model": ALL, "metric": "fleiss_kappa",
                        "note": not_computable("no forced-choice screens")}], AGREEMENT_COLUMNS)  # fmt: skip
    unit = pd.factorize(screens["item_id"])[0].astype(np.int64)
    lev, levels = pd.factorize(screens["chosen_model"], sort=True)
    rater = pd.factorize(screens["rater_id"])[0].astype(np.int64)
    order = np.lexsort((np.arange(len(unit)), unit))  # screens are in answer-time order already
    rank = np.empty(len(unit), dtype=np.int64)
    rank[order] = np.arange(len(order)) - np.searchsorted(unit[order], unit[order], side="left")
    arrays = {"unit": unit, "lev": lev.astype(np.int64), "rater": rater, "rank": rank}
    rows = agreement_scope(arrays, CHOSEN_REAL, ALL, np.arange(len(levels), dtype=float), n_boot, rng, ci_level,
                            "nominal")  # fmt: skip
    return _agreement_result(rows)
