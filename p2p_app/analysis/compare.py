"""Comparisons between models: real vs generated (AUC, pass rates, the Obuchowski–Rockette reader study, ROC
curves) and the paired comparison of every two generated models."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve
from statsmodels.stats.multitest import multipletests

from ..hrauc import HR_QUESTION, hr_ratings, reader_frame
from ..mrmc import or_analysis
from ..tidy import REALISM, not_computable, result_table
from .crossed import bounded_interval, crossed_mean_ci, mean_ci_note
from .preparation import (
    DEFAULT_CI_LEVEL,
    DEFAULT_N_BOOT,
    DEFAULT_SEED,
    MIN_PAIRS,
    PAIRWISE_COLUMNS,
    PASS_THRESHOLD,
    READER_STUDY_COLUMNS,
    REAL_VS_GENERATED_COLUMNS,
    ROC_COLUMNS,
    Prepared,
    prepare,
)

# --------------------------------------------------------------------------------------------------------------------
# Real vs generated
# --------------------------------------------------------------------------------------------------------------------


def real_vs_generated(
    df: pd.DataFrame,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
    ci_level: float = DEFAULT_CI_LEVEL,
    models: Sequence[str] = (),
    question: str = REALISM,
) -> pd.DataFrame:
    """Per generated model: how well the realism score tells its images from the real controls.

    ``auc``: ROC AUC with real as the positive class and the realism score as the score, pooling every rater's first
    answers (sklearn ``roc_auc_score``) = P(real scores higher) + ½ P(tie). 0.5: the model's images are
    indistinguishable from real ones; 1.0: every real image scored higher. ``auc_readers``: the mean over raters of
    each rater's own AUC — the reader-study AUC — with ``auc_readers_ci_low``/``auc_readers_ci_high`` from the
    Obuchowski–Rockette analysis (readers and images random, images of one prompt deleted together;
    :func:`reader_study`; on the logit scale, :func:`auc_interval`). The pooled ``auc`` has no interval (it treats
    answers as independent). ``pass_rate``: share of the model's answers scoring
    ≥ ``PASS_THRESHOLD`` ("passes as real"), CI with raters and images as crossed random effects
    (:func:`crossed_mean_ci`); ``real_pass_rate``: the same share for the real images. ``n_boot``/``seed``: accepted
    for compatibility. Columns: ``REAL_VS_GENERATED_COLUMNS``.
    """
    prep = prepare(df, models)
    return real_table(prep, reader_study_result(prep, question, ci_level), ci_level, question)


def reader_study(
    df: pd.DataFrame, question: str = REALISM, ci_level: float = DEFAULT_CI_LEVEL, models: Sequence[str] = ()
) -> pd.DataFrame:
    """"Can this model's images be told from real ones?" as a multi-reader multi-case study: treatments = generated
    models, readers = raters, cases = images (real controls positive, the model's images negative), rating = the
    ``question`` score of each rater's first answer per image. Obuchowski–Rockette with jackknife covariances and
    Hillis ddf (:func:`p2p_app.mrmc.or_analysis`; tests reproduce the published Van Dyke 1993 results).

    Cases that share a prompt (a prompt's real image and every seed's generated images) share its difficulty: the
    jackknife deletes whole prompts (``n_prompts``; :func:`p2p_app.mrmc._cov_cluster_jackknife`) — deleting single
    images covered 90.8 % with 3 seeds per prompt. Rows: one per model (``comparison`` = model: reader-averaged
    AUC, SE, df, CI on the logit scale, :func:`auc_interval`), one per pair of models
    (``"a − b"``: difference of AUCs, SE, ddf, CI clipped to [−1, 1], t statistic, p), and, with two or more models,
    the global F test
    that all models' AUCs are equal (``comparison == "all models equal"``: ``statistic`` F, ``ndf``, ``ddf``, p).
    Raters must have rated at least two real images and two images of every model (others are left out:
    ``n_readers`` counts those used). Columns: ``READER_STUDY_COLUMNS``."""
    prep = prepare(df, models)
    return reader_study_table(prep, reader_study_result(prep, question, ci_level))


def inferred_roc(
    df: pd.DataFrame, marks: pd.DataFrame, ci_level: float = DEFAULT_CI_LEVEL, models: Sequence[str] = ()
) -> pd.DataFrame:
    """The inferred ROC of artifact marks with confidences (:mod:`p2p_app.hrauc`, RJafroc's HrAuc): per rater and
    image the highest confidence among its marks (0 when unmarked) is the image's "synthetic" score, and the reader
    study above (:func:`reader_study`: one row per model, its pairs, the F test; same raters, clusters and rules)
    runs on it. ``estimate`` of a model's row = P(a generated image of that model scores higher than a real one)
    + ½ P(tie), averaged over raters: 0.5 = the marks do not tell the model's images from real ones, 1 = always.
    Columns: ``READER_STUDY_COLUMNS``."""
    return reader_study(reader_frame(hr_ratings(df, marks)), HR_QUESTION, ci_level, models)


def reader_study_result(prep: Prepared, question: str, ci_level: float):
    """``(result or None, reason, models used, n_cases)`` of the OR analysis on ``question``."""
    qi = prep.q(question)
    if qi is None or prep.rows.empty:
        return None, "no ratings", [], 0
    if not prep.is_real.any():
        return None, "no real control images", [], 0
    s = prep.first
    sel = s["question"].to_numpy() == qi  # numpy columns, not frame copies: this is 1,000,000 rows at scale
    rater, image, model, value, pkey = (s[c].to_numpy()[sel] for c in ("rater", "image", "model", "value", "pkey"))
    is_real = prep.is_real[model]
    gen_models = [mi for mi in prep.generated if np.any(model == mi)]
    if not gen_models:
        return None, f"no {question} scores for generated images", [], 0
    if not is_real.any():
        return None, "no real control images", [], 0
    n_r = len(prep.raters)
    ok = np.bincount(rater[is_real], minlength=n_r) >= 2
    for mi in gen_models:
        ok &= np.bincount(rater[model == mi], minlength=n_r) >= 2
    if ok.sum() < 2:
        return None, "fewer than two raters scored at least two real images and two images of every model", [], 0
    real = np.flatnonzero(is_real & ok[rater])
    parts = []  # per model: the real images (truth 1), then the model's images (truth 0)
    for mi in gen_models:
        g = np.flatnonzero((model == mi) & ok[rater])
        parts.append((mi, real, 1))
        parts.append((mi, g, 0))
    frame = pd.DataFrame({
        "reader": np.concatenate([rater[idx] for _, idx, _ in parts]),
        "treatment": np.concatenate([np.full(len(idx), mi) for mi, idx, _ in parts]),
        "case": np.concatenate([image[idx] for _, idx, _ in parts]),
        "truth": np.concatenate([np.full(len(idx), t) for _, idx, t in parts]),
        "rating": np.concatenate([value[idx] for _, idx, _ in parts]),
        # images of one prompt (its real image, every seed of every model) share the prompt's difficulty: the
        # jackknife deletes them together (p2p_app.mrmc._cov_cluster_jackknife)
        "cluster": np.concatenate([pkey[idx] for _, idx, _ in parts]),
    })  # fmt: skip
    try:
        res = or_analysis(frame, "jackknife", ci_level)
    except ValueError:  # a prompt holds all of a reader's real (or generated) images: delete single images instead
        res = or_analysis(frame.drop(columns="cluster"), "jackknife", ci_level)
    return res, "", gen_models, int(frame["case"].nunique())


def reader_study_table(prep: Prepared, result) -> pd.DataFrame:
    res, reason, used, n_cases = result
    if res is None:
        return result_table([{"comparison": "", "note": not_computable(reason)}], READER_STUDY_COLUMNS)
    base = {"n_readers": len(res.readers), "n_cases": n_cases, "n_prompts": res.n_clusters}
    few = "; ".join(x for x in (
        "2 readers: interval not informative (t on few df)" if len(res.readers) == 2 else "",
        "" if res.n_clusters else "jackknife over single images (too few prompts to delete whole prompts)",
    ) if x)  # fmt: skip
    rows = []
    for _, t in res.treatment_table.iterrows():
        lo, hi, note = auc_interval(t["auc"], t["se"], t["df"], res.ci_level)
        rows.append({"comparison": prep.models[int(t["treatment"])], "estimate": t["auc"], "se": t["se"],
                     "df": t["df"], "ci_low": lo, "ci_high": hi, **base,
                     "note": "; ".join(x for x in (few, note) if x)})  # fmt: skip
    for _, d in res.difference_table.iterrows():
        name = f"{prep.models[int(d['treatment_a'])]} − {prep.models[int(d['treatment_b'])]}"
        rows.append({"comparison": name, "estimate": d["estimate"], "se": d["se"], "df": d["df"],
                     "ci_low": max(d["ci_low"], -1.0), "ci_high": min(d["ci_high"], 1.0), "statistic": d["t"],
                     "ddf": d["df"], "p_value": d["p_value"], **base, "note": few})  # fmt: skip
    if len(used) >= 2:
        rows.append({"comparison": "all models equal", "statistic": res.f, "ndf": res.ndf, "ddf": res.ddf,
                     "p_value": res.p_value, **base})  # fmt: skip
    out = result_table(rows, READER_STUDY_COLUMNS)
    out["ndf"] = out["ndf"].astype("Int64")
    out["n_prompts"] = out["n_prompts"].astype("Int64")
    return out


def auc_interval(auc: float, se: float, df: float, ci_level: float) -> tuple[float, float, str]:
    """A reader-averaged AUC's interval inside [0, 1]: the Obuchowski–Rockette t interval on the logit scale
    (delta method: ``logit(θ) ± t·SE/(θ(1 − θ))``, back-transformed), so it never leaves [0, 1] and always contains
    θ; near 0.5 it equals the plain interval to first order. At θ = 0 or 1 (every reader separated the images
    perfectly, or inverted them) or SE = 0 the interval is the point and a note says it is not informative.
    Returns ``(low, high, note)``."""
    if not np.isfinite(se) or not np.isfinite(auc):
        return np.nan, np.nan, "no interval (standard error not computable)"
    if se == 0 or auc <= 0 or auc >= 1:
        why = "AUC 1: every reader ranked every real image above every generated one" if auc >= 1 else (
            "AUC 0: every reader ranked every generated image above every real one" if auc <= 0 else "SE 0")
        return float(auc), float(auc), f"{why}; interval not informative"
    q = float(stats.t.ppf(1 - (1 - ci_level) / 2, df))
    centre, half = np.log(auc / (1 - auc)), q * se / (auc * (1 - auc))
    return float(1 / (1 + np.exp(-(centre - half)))), float(1 / (1 + np.exp(-(centre + half)))), ""


def _realism_scores(prep: Prepared, question: str) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    qi = prep.q(question)
    if qi is None:
        return np.zeros(0), {}
    sel = prep.scored["question"].to_numpy() == qi
    m, v = prep.scored["model"].to_numpy()[sel], prep.scored["value"].to_numpy()[sel]
    real = v[prep.is_real[m]] if len(m) else np.zeros(0)
    return real, {mi: v[m == mi] for mi in prep.generated}


def real_table(prep: Prepared, result, ci_level: float, question: str) -> pd.DataFrame:
    if not prep.generated:
        reason = "no ratings" if prep.rows.empty else "no generated images"
        return result_table([{"note": not_computable(reason)}], REAL_VS_GENERATED_COLUMNS)
    real, gen = _realism_scores(prep, question)
    qi = prep.q(question)
    real_pass = float(np.mean(real >= PASS_THRESHOLD)) if len(real) else np.nan
    res, reason, used, _ = result
    by_model = {}
    if res is not None:
        for _, t in res.treatment_table.iterrows():
            by_model[int(t["treatment"])] = t
    sel = prep.scored["question"].to_numpy() == (qi if qi is not None else -1)
    s_model, s_value, s_rater, s_image = (prep.scored[c].to_numpy()[sel] for c in ("model", "value", "rater", "image"))
    rows = []
    for mi in prep.generated:
        x = gen.get(mi, np.zeros(0))
        row = {"model": prep.models[mi], "n_real": len(real), "n_generated": len(x), "real_pass_rate": real_pass}
        if len(x) == 0:
            rows.append({**row, "note": not_computable(f"no {question} scores for this model")})
            continue
        row["pass_rate"] = float(np.mean(x >= PASS_THRESHOLD))
        g = s_model == mi
        cm = crossed_mean_ci((s_value[g] >= PASS_THRESHOLD).astype(float), s_rater[g], s_image[g], ci_level)
        if np.isfinite(cm.ci_low):  # a proportion: inside [0, 1]
            b = bounded_interval(row["pass_rate"], cm.ci_low, cm.ci_high, 0.0, 1.0)
            row["pass_ci_low"], row["pass_ci_high"] = b["ci_low"], b["ci_high"]
        pass_note = mean_ci_note(int(g.sum()), len(pd.unique(s_rater[g])), len(pd.unique(s_image[g])))
        if pass_note:
            row["note"] = f"pass rate: {pass_note}"
        if len(real) == 0:
            rows.append({**row, "note": not_computable("no real control images")})
            continue
        row["auc"] = float(roc_auc_score(np.r_[np.ones(len(real)), np.zeros(len(x))], np.r_[real, x]))
        if mi in by_model:
            t = by_model[mi]
            lo, hi, note = auc_interval(t["auc"], t["se"], t["df"], ci_level)
            row.update(auc_readers=t["auc"], auc_readers_ci_low=lo, auc_readers_ci_high=hi)
            if len(res.readers) == 2:
                note = "; ".join(n for n in ("2 readers: interval not informative", note) if n)
            if note:
                row["note"] = "; ".join(n for n in (row.get("note", ""), f"auc_readers: {note}") if n)
        else:
            row["note"] = "; ".join(n for n in (row.get("note", ""), f"auc_readers not computable: {reason}") if n)
        rows.append(row)
    out = result_table(rows, REAL_VS_GENERATED_COLUMNS)
    out[["n_real", "n_generated"]] = out[["n_real", "n_generated"]].fillna(0).astype("int64")
    return out


def roc_table(prep: Prepared, question: str) -> pd.DataFrame:
    real, gen = _realism_scores(prep, question)
    parts = []
    for mi, x in gen.items():
        if len(real) == 0 or len(x) == 0:
            continue
        fpr, tpr, thr = roc_curve(np.r_[np.ones(len(real)), np.zeros(len(x))], np.r_[real, x], drop_intermediate=False)
        parts.append(pd.DataFrame({"model": prep.models[mi], "fpr": fpr, "tpr": tpr, "threshold": thr}))
    return pd.concat(parts, ignore_index=True) if parts else result_table([], ROC_COLUMNS)


# --------------------------------------------------------------------------------------------------------------------
# Pairwise model comparison
# --------------------------------------------------------------------------------------------------------------------


def pairwise_tests(df: pd.DataFrame, min_pairs: int = MIN_PAIRS, ci_level: float = DEFAULT_CI_LEVEL) -> pd.DataFrame:
    """Paired comparison of every two generated models on the same prompts, per numeric question.

    Scores are averaged per (model, prompt, seed) — prompt = ``prompt_id``, or the prompt text when ``prompt_id`` is
    empty; the pairs are the (prompt, seed) cells both models have. Test: Wilcoxon signed-rank (scipy, two-sided,
    zero differences dropped; all differences zero → p = 1). ``mean_diff`` = mean of (a − b). ``p_holm``: Holm
    correction across the model pairs of one question (statsmodels ``multipletests``).

    Interval for the difference: ``paired_mean_diff`` is the mean over the ``n_paired_answers`` (rater, item) cells
    where one rater scored both models' images on the same screen (equal to ``mean_diff`` when every screen has the
    same number of raters); ``diff_ci_low``/``diff_ci_high`` treat raters and items as crossed random effects
    (:func:`crossed_mean_ci` on the paired differences). Columns: ``PAIRWISE_COLUMNS``.
    """
    return pairwise_table(prepare(df), min_pairs, ci_level)


def _model_means(
    keys: tuple[np.ndarray, ...], model: np.ndarray, value: np.ndarray, n_models: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``value`` per (key, model) as a dense (distinct keys × models) array, NaN where a key has no answer of
    that model (a numpy ``groupby(keys + [model]).mean().unstack(model)``), and the first row of each key."""
    code = np.zeros(len(model), dtype=np.int64)
    for k in keys:  # combine the key columns into one code, factorising as we go (no overflow)
        kc = pd.factorize(k)[0].astype(np.int64)
        code = pd.factorize(code * (int(kc.max()) + 1 if len(kc) else 1) + kc)[0].astype(np.int64)
    n_keys = int(code.max()) + 1 if len(code) else 0
    cell = code * n_models + model
    total = np.bincount(cell, weights=value, minlength=n_keys * n_models)
    count = np.bincount(cell, minlength=n_keys * n_models)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (total / count).reshape(n_keys, n_models)
    # factorize numbers keys by first appearance: a row is a key's first where its code exceeds all before it
    first = np.flatnonzero(code > np.maximum.accumulate(np.r_[-1, code[:-1]])) if n_keys else code[:0]
    return means, first


def pairwise_table(prep: Prepared, min_pairs: int, ci_level: float = DEFAULT_CI_LEVEL) -> pd.DataFrame:
    gen = prep.generated
    if len(gen) < 2:
        reason = "no ratings" if prep.rows.empty else "fewer than two generated models"
        return result_table([{"note": not_computable(reason)}], PAIRWISE_COLUMNS)
    gen_rows = ~prep.is_real[prep.scored["model"].to_numpy()] if len(prep.scored) else slice(None)
    cols = {c: prep.scored[c].to_numpy()[gen_rows] for c in ("question", "pkey", "seed", "rater", "item", "model",
                                                              "value")}  # fmt: skip
    n_m = len(prep.models)
    rows = []
    for qi, question in enumerate(prep.questions):
        sel = cols["question"] == qi
        model, value = cols["model"][sel], cols["value"][sel]
        wide, _ = _model_means((cols["pkey"][sel], cols["seed"][sel]), model, value, n_m)  # (prompt, seed) × model
        wide_a, first = _model_means((cols["rater"][sel], cols["item"][sel]), model, value, n_m)  # (rater, item)
        rater_a, item_a = cols["rater"][sel][first], cols["item"][sel][first]
        has = ~np.isnan(wide).all(axis=0)
        q_rows = []
        for a, b in itertools.combinations(gen, 2):
            row = {"question": question, "model_a": prep.models[a], "model_b": prep.models[b]}
            if not (has[a] and has[b]):
                q_rows.append({**row, "n_pairs": 0, "note": not_computable("a model has no ratings on this question")})
                continue
            both = ~np.isnan(wide[:, a]) & ~np.isnan(wide[:, b])
            x, y = wide[both, a], wide[both, b]
            row["n_pairs"] = len(x)
            if len(x) < min_pairs:
                q_rows.append({**row, "note": not_computable(f"{len(x)} shared prompt/seed pairs (need {min_pairs})")})
                continue
            d = x - y
            row.update(mean_a=x.mean(), mean_b=y.mean(), mean_diff=d.mean(), median_diff=float(np.median(d)))
            if np.all(d == 0):
                row.update(statistic=0.0, p_value=1.0)
            else:
                res = stats.wilcoxon(x, y)
                row.update(statistic=float(res.statistic), p_value=float(res.pvalue))
            paired = ~np.isnan(wide_a[:, a]) & ~np.isnan(wide_a[:, b])
            d_a = wide_a[paired, a] - wide_a[paired, b]
            cm = crossed_mean_ci(d_a, rater_a[paired], item_a[paired], ci_level)
            row.update(n_paired_answers=int(paired.sum()), paired_mean_diff=cm.mean, diff_ci_low=cm.ci_low,
                       diff_ci_high=cm.ci_high)  # fmt: skip
            q_rows.append(row)
        p = np.array([r.get("p_value", np.nan) for r in q_rows], dtype=float)
        ok = np.flatnonzero(np.isfinite(p))
        if len(ok):
            for i, adj in zip(ok, multipletests(p[ok], method="holm")[1], strict=True):
                q_rows[i]["p_holm"] = float(adj)
        rows += q_rows
    if not rows:
        return result_table([{"note": not_computable("no numeric questions")}], PAIRWISE_COLUMNS)
    out = result_table(rows, PAIRWISE_COLUMNS)
    out["n_pairs"] = out["n_pairs"].fillna(0).astype("int64")
    out["n_paired_answers"] = out["n_paired_answers"].fillna(0).astype("int64")
    return out


def realism_pilot(df: pd.DataFrame) -> dict:
    """What a pilot's realism scores of generated images say for planning (:mod:`p2p_app.plan`): ``models``, the
    largest paired difference between two models (``effect``, None without pairs), and the crossed-design variance
    components as standard deviations (``noise`` residual, ``rater_sd``, ``image_sd``; :func:`crossed_mean_ci` on
    the scores centred per model). Raises ``ValueError`` when there is too little to estimate them."""
    prep = prepare(df)
    qi = prep.q(REALISM)
    if qi is None:
        raise ValueError("the pilot has no realism scores")
    s = prep.scored[(prep.scored["question"] == qi) & ~prep.is_real[prep.scored["model"].to_numpy()]]
    if len(s) < 10 or s["rater"].nunique() < 2:
        raise ValueError("the pilot needs at least 10 realism scores of generated images by two or more raters")
    centred = s["value"].to_numpy() - s.groupby("model")["value"].transform("mean").to_numpy()
    cm = crossed_mean_ci(centred, s["rater"].to_numpy(), s["image"].to_numpy(), 0.95)
    pw = pairwise_table(prep, 2)
    pw = pw[(pw["question"] == REALISM) & pw["paired_mean_diff"].notna()]
    effect = float(pw["paired_mean_diff"].abs().max()) if len(pw) else None
    return {"models": max(len(prep.generated), 2), "effect": effect, "noise": float(np.sqrt(cm.var_residual)),
            "rater_sd": float(np.sqrt(cm.var_rater)), "image_sd": float(np.sqrt(cm.var_image))}
