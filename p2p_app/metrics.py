"""Automatic metrics next to the clinicians: set metrics per model against real images, per-image metrics, human ↔
metric agreement per image, and the memorisation check. Pure numpy/scipy on feature arrays (rows = images) and the
tidy ratings frame; no torch. Features come from :mod:`generators.encoders`; :mod:`p2p_app.metrics_run` gathers a
study's images and writes the tables.

Set metrics (generated set X against real set Y), each with a percentile interval from a bootstrap over images
(both sets resampled):

- **Fréchet distance** ``‖μx − μy‖² + tr Σx + tr Σy − 2 tr (Σx^½ Σy Σx^½)^½`` (the FID formula on any encoder);
  the trace of the matrix square root is taken from the eigenvalues of the symmetric ``Σx^½ Σy Σx^½``.
- **KID**: the unbiased MMD² with the polynomial kernel ``(x·y/d + 1)³`` (Bińkowski et al. 2018); above
  ``KID_FULL_MAX`` images per set, the mean over random subsets as torchmetrics / clean-fid do.
- **RBF MMD** (CMMD-style, Jayasumana et al. 2024): unbiased MMD² with a Gaussian kernel whose bandwidth is the
  median pairwise distance of the pooled sets (fixed once, kept through the bootstrap).
- **Precision / recall / density / coverage** (Naeem et al. 2020), k nearest neighbours (default 5), as the
  ``prdc`` package computes them, in chunks so memory stays linear.

Per image: distance to the nearest real image (feature space), and prompt alignment (cosine between the image's
and its prompt's embedding, CLIP-family encoders).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

DEFAULT_N_BOOT = 200
DEFAULT_SEED = 0
CI_LEVEL = 0.95
KID_FULL_MAX = 2000
KID_SUBSET = 1000
KID_SUBSETS = 100
PRDC_K = 5
COPY_PERCENTILE = 1.0
"""Default calibration of the memorisation flag: a generated image is a likely copy when its distance to the
nearest training image is below this percentile of the training images' own leave-one-out nearest-neighbour
distances (so an image from the training distribution that is not a copy is flagged about 1 % of the time)."""

SET_METRICS = ("frechet", "kid", "mmd_rbf", "precision", "recall", "density", "coverage")
LOWER_IS_BETTER = {"frechet": True, "kid": True, "mmd_rbf": True, "precision": False, "recall": False,
                   "density": False, "coverage": False, "alignment": False, "nn_distance": True}


class MetricsError(ValueError):
    """Bad input to a metric (too few images, mismatched dimensions): the message says what to fix."""


def _check_sets(x: np.ndarray, y: np.ndarray, minimum: int = 2) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2:
        raise MetricsError("features must be 2-D arrays (images × dimensions)")
    if x.shape[1] != y.shape[1]:
        raise MetricsError(f"feature dimensions differ: {x.shape[1]} vs {y.shape[1]} (use one encoder for both sets)")
    if len(x) < minimum or len(y) < minimum:
        raise MetricsError(f"need at least {minimum} images in each set, got {len(x)} and {len(y)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise MetricsError("features contain NaN or infinity")
    return x, y


# ------------------------------------------------------------------------------------------ Fréchet


def mean_cov(x: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (float64); ``weights`` = counts of a bootstrap resample (same as repeating rows)."""
    x = np.asarray(x, dtype=np.float64)
    if weights is None:
        mu = x.mean(axis=0)
        xc = x - mu
        return mu, (xc.T @ xc) / (len(x) - 1)
    w = np.asarray(weights, dtype=np.float64)
    n = w.sum()
    mu = (w @ x) / n
    xc = x - mu
    return mu, (xc.T * w) @ xc / (n - 1)


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((a + a.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_from_stats(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 tr √(Σ1 Σ2); tr √(Σ1 Σ2) = Σ √λ of the symmetric PSD Σ1^½ Σ2 Σ1^½."""
    r = _sqrt_psd(s1)
    lam = np.linalg.eigvalsh(r @ s2 @ r)
    covmean_tr = np.sqrt(np.clip(lam, 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * covmean_tr)


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    x, y = _check_sets(x, y)
    return frechet_from_stats(*mean_cov(x), *mean_cov(y))


# ------------------------------------------------------------------------------------------ kernels, KID, MMD


def polynomial_kernel(a: np.ndarray, b: np.ndarray, degree: int = 3, gamma: float | None = None, coef0: float = 1.0):
    gamma = 1.0 / a.shape[1] if gamma is None else gamma
    return (gamma * (a @ b.T) + coef0) ** degree


def _mmd2_unbiased(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    m, n = len(kxx), len(kyy)
    sxx = (kxx.sum(dtype=np.float64) - np.trace(kxx, dtype=np.float64)) / (m * (m - 1))
    syy = (kyy.sum(dtype=np.float64) - np.trace(kyy, dtype=np.float64)) / (n * (n - 1))
    return float(sxx + syy - 2 * kxy.mean(dtype=np.float64))


def kid(x: np.ndarray, y: np.ndarray, rng: np.random.Generator | None = None, full_max: int = KID_FULL_MAX,
        subset_size: int = KID_SUBSET, subsets: int = KID_SUBSETS) -> float:
    """Unbiased MMD² with the cubic polynomial kernel; on all images when both sets have at most ``full_max``, else
    the mean over ``subsets`` random subsets of ``subset_size`` (as torchmetrics / clean-fid)."""
    x, y = _check_sets(x, y)
    if len(x) <= full_max and len(y) <= full_max:
        return _mmd2_unbiased(polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y))
    rng = rng or np.random.default_rng(DEFAULT_SEED)
    m = min(subset_size, len(x), len(y))
    x32, y32 = x.astype(np.float32), y.astype(np.float32)  # kernels in float32 as torchmetrics; means in float64
    vals = []
    for _ in range(subsets):
        a = x32[rng.choice(len(x), m, replace=False)]
        b = y32[rng.choice(len(y), m, replace=False)]
        vals.append(_mmd2_unbiased(polynomial_kernel(a, a), polynomial_kernel(b, b), polynomial_kernel(a, b)))
    return float(np.mean(vals))


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * (a @ b.T)
    return np.clip(d, 0, None)


def median_bandwidth(x: np.ndarray, y: np.ndarray, max_n: int = 1000, seed: int = DEFAULT_SEED) -> float:
    """Median pairwise Euclidean distance of the pooled sets (a subsample of ``max_n`` when larger)."""
    z = np.concatenate([x, y])
    if len(z) > max_n:
        z = z[np.random.default_rng(seed).choice(len(z), max_n, replace=False)]
    d = np.sqrt(_sq_dists(z, z)[np.triu_indices(len(z), 1)])
    med = float(np.median(d))
    return med if med > 0 else 1.0


def rbf_kernel(a: np.ndarray, b: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-_sq_dists(a, b) / (2 * sigma * sigma))


def mmd_rbf(x: np.ndarray, y: np.ndarray, sigma: float | None = None) -> float:
    """Unbiased MMD² with a Gaussian kernel (bandwidth: ``sigma`` or the pooled median distance)."""
    x, y = _check_sets(x, y)
    sigma = sigma or median_bandwidth(x, y)
    return _mmd2_unbiased(rbf_kernel(x, x, sigma), rbf_kernel(y, y, sigma), rbf_kernel(x, y, sigma))


# ------------------------------------------------------------------------------------------ nearest neighbours, PRDC


def _chunks(n: int, size: int):
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


def kth_nn_radius(x: np.ndarray, k: int, chunk: int = 2048) -> np.ndarray:
    """Distance from each row to its k-th nearest other row (the row itself excluded), as ``prdc`` computes it."""
    if len(x) <= k:
        raise MetricsError(f"need more than k = {k} images for nearest-neighbour radii, got {len(x)}")
    out = np.empty(len(x))
    for sl in _chunks(len(x), chunk):
        d = np.sqrt(_sq_dists(x[sl], x))
        # prdc: the k+1-th smallest including self (distance 0)
        out[sl] = np.partition(d, k, axis=1)[:, k]
    return out


def nearest(query: np.ndarray, base: np.ndarray, k: int = 1, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """(distances, indices) of the ``k`` nearest rows of ``base`` for every row of ``query`` (exact, Euclidean),
    nearest first. Uses faiss when it is installed, else chunked numpy."""
    query = np.ascontiguousarray(query, dtype=np.float32)
    base = np.ascontiguousarray(base, dtype=np.float32)
    k = min(k, len(base))
    try:
        import faiss
    except ImportError:
        faiss = None
    if faiss is not None:
        index = faiss.IndexFlatL2(base.shape[1])
        index.add(base)
        d2, idx = index.search(query, k)
        return np.sqrt(np.clip(d2, 0, None)).astype(np.float64), idx.astype(np.int64)
    ds, ids = [], []
    for sl in _chunks(len(query), chunk):
        d = _sq_dists(query[sl].astype(np.float64), base.astype(np.float64))
        part = np.argpartition(d, k - 1, axis=1)[:, :k] if k < len(base) else np.tile(np.arange(len(base)), (d.shape[0], 1))
        pd_ = np.take_along_axis(d, part, 1)
        order = np.argsort(pd_, axis=1)
        ids.append(np.take_along_axis(part, order, 1))
        ds.append(np.sqrt(np.take_along_axis(pd_, order, 1)))
    return np.concatenate(ds), np.concatenate(ids)


def prdc(real: np.ndarray, fake: np.ndarray, k: int = PRDC_K, chunk: int = 2048,
         real_radii: np.ndarray | None = None, fake_radii: np.ndarray | None = None) -> dict[str, float]:
    """Precision, recall, density, coverage of ``fake`` against ``real`` (Naeem et al. 2020), equal to
    ``prdc.compute_prdc(real, fake, k)`` but computed in row chunks (no n × n matrix held)."""
    real, fake = _check_sets(real, fake, minimum=k + 1)
    rr = kth_nn_radius(real, k, chunk) if real_radii is None else real_radii
    fr = kth_nn_radius(fake, k, chunk) if fake_radii is None else fake_radii
    in_real = np.zeros(len(fake))  # per fake: how many real balls contain it
    nearest_fake = np.full(len(real), np.inf)
    for sl in _chunks(len(fake), chunk):
        d = np.sqrt(_sq_dists(fake[sl], real))  # fake × real
        in_real[sl] = (d < rr[None, :]).sum(1)
        nearest_fake = np.minimum(nearest_fake, d.min(0))
    recall_hits = np.zeros(len(real), dtype=bool)
    for sl in _chunks(len(real), chunk):
        d = np.sqrt(_sq_dists(real[sl], fake))  # real × fake
        recall_hits[sl] = (d < fr[None, :]).any(1)
    return {
        "precision": float((in_real > 0).mean()),
        "recall": float(recall_hits.mean()),
        "density": float(in_real.sum() / (k * len(fake))),
        "coverage": float((nearest_fake < rr).mean()),
    }


# ------------------------------------------------------------------------------------------ set metrics with CIs


def percentile_ci(values: np.ndarray, level: float = CI_LEVEL) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return float("nan"), float("nan")
    a = (1 - level) / 2
    return float(np.quantile(v, a)), float(np.quantile(v, 1 - a))


def _shifted_ci(point: float, boots: np.ndarray, level: float = CI_LEVEL, bounded: bool = False) -> tuple[float, float]:
    """Percentile interval of the bootstrap replicates shifted by the bootstrap's estimate of bias (median of the
    replicates − the estimate). Resampling with replacement repeats images, which inflates Fréchet distances and
    shrinks nearest-neighbour radii; the shift puts the interval back around the estimate. ``bounded``: clip to
    [0, 1] (precision, recall, coverage)."""
    b = np.asarray(boots, dtype=float)
    b = b[np.isfinite(b)]
    if len(b) < 2:
        return float("nan"), float("nan")
    bias = float(np.median(b)) - point
    lo, hi = percentile_ci(b, level)
    lo, hi = lo - bias, hi - bias
    if bounded:
        lo, hi = max(0.0, lo), min(1.0, hi)
    return float(lo), float(hi)


def set_metrics(fake: np.ndarray, real: np.ndarray, n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED,
                k: int = PRDC_K, metrics: Sequence[str] = SET_METRICS) -> pd.DataFrame:
    """Every set metric of ``fake`` against ``real`` with an interval from ``n_boot`` bootstrap resamples of the
    images (both sets resampled independently; the RBF bandwidth fixed from the full sets; the interval is the
    bias-shifted percentile interval of :func:`_shifted_ci`).
    Columns: metric, value, ci_low, ci_high, n_fake, n_real, n_boot."""
    fake, real = _check_sets(fake, real)
    unknown = set(metrics) - set(SET_METRICS)
    if unknown:
        raise MetricsError(f"unknown metrics {sorted(unknown)}; known: {', '.join(SET_METRICS)}")
    rng = np.random.default_rng(seed)
    point: dict[str, float] = {}
    want_prdc = any(m in metrics for m in ("precision", "recall", "density", "coverage"))
    can_prdc = want_prdc and len(fake) > k and len(real) > k
    small_kid = len(fake) <= KID_FULL_MAX and len(real) <= KID_FULL_MAX
    sigma = median_bandwidth(fake, real)
    # kernel matrices once; a bootstrap replicate indexes them (duplicates are fine: the estimator's form is kept)
    kern = {}
    if "kid" in metrics and small_kid:
        kern["kid"] = (polynomial_kernel(fake, fake), polynomial_kernel(real, real), polynomial_kernel(fake, real))
    if "mmd_rbf" in metrics and len(fake) <= KID_FULL_MAX and len(real) <= KID_FULL_MAX:
        kern["mmd_rbf"] = (rbf_kernel(fake, fake, sigma), rbf_kernel(real, real, sigma), rbf_kernel(fake, real, sigma))

    def one(fi: np.ndarray | None, ri: np.ndarray | None) -> dict[str, float]:
        f = fake if fi is None else fake[fi]
        r = real if ri is None else real[ri]
        out = {}
        if "frechet" in metrics:
            if fi is None:
                out["frechet"] = frechet_from_stats(*mean_cov(fake), *mean_cov(real))
            else:
                out["frechet"] = frechet_from_stats(*mean_cov(fake, np.bincount(fi, minlength=len(fake))),
                                                    *mean_cov(real, np.bincount(ri, minlength=len(real))))
        for name in ("kid", "mmd_rbf"):
            if name not in metrics:
                continue
            if name in kern:
                kxx, kyy, kxy = kern[name]
                if fi is None:
                    out[name] = _mmd2_unbiased(kxx, kyy, kxy)
                else:  # a U-statistic on the resample: pairs of one original image (its copies) left out
                    mx, my = fi[:, None] != fi[None, :], ri[:, None] != ri[None, :]
                    if not (mx.any() and my.any()):  # one image drawn n times: no pair, no estimate
                        out[name] = float("nan")
                        continue
                    out[name] = float(kxx[np.ix_(fi, fi)][mx].mean() + kyy[np.ix_(ri, ri)][my].mean()
                                      - 2 * kxy[np.ix_(fi, ri)].mean())
            elif name == "kid":
                out[name] = kid(f, r, rng=rng)
            else:
                out[name] = mmd_rbf(f[:KID_FULL_MAX], r[:KID_FULL_MAX], sigma)
        if can_prdc:
            if fi is not None and (len(np.unique(fi)) <= k or len(np.unique(ri)) <= k):
                out.update({m: float("nan") for m in ("precision", "recall", "density", "coverage")})
            else:
                out.update(prdc(r, f, k))
        return {m: v for m, v in out.items() if m in metrics}

    point = one(None, None)
    boots: dict[str, list[float]] = {m: [] for m in point}
    for _ in range(n_boot):
        fi = rng.integers(0, len(fake), len(fake))
        ri = rng.integers(0, len(real), len(real))
        for m, v in one(fi, ri).items():
            boots[m].append(v)
    rows = []
    for m in metrics:
        if m not in point:
            continue
        lo, hi = _shifted_ci(point[m], np.asarray(boots[m]), bounded=m in ("precision", "recall", "coverage"))
        rows.append({"metric": m, "value": point[m], "ci_low": lo, "ci_high": hi, "n_fake": len(fake),
                     "n_real": len(real), "n_boot": n_boot})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ per image


def nn_distance(fake: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Distance from each generated image to its nearest real image, divided by the median leave-one-out
    nearest-neighbour distance among the real images (1 ≈ as close as real images are to each other)."""
    fake, real = _check_sets(fake, real)
    d, _ = nearest(fake, real, 1)
    rd, _ = nearest(real, real, 2)
    scale = float(np.median(rd[:, 1])) or 1.0
    return d[:, 0] / scale


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity (image embedding vs its prompt's text embedding)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.where(na * nb == 0, 1, na * nb)


# ------------------------------------------------------------------------------------------ human ↔ metric agreement

HUMAN_SCORES = ("realism", "alignment", "chosen_real")
"""Per-image human scores: mean realism, mean alignment (1–5 scales), fraction of raters who picked it as real."""


def image_ratings(df: pd.DataFrame, question: str) -> pd.DataFrame:
    """One row per (generated image, answer) of ``question`` (tidy frame; catch, practice, repeats and can't-judge
    answers left out): image_id, model, rater_id, value."""
    need = {"image_id", "model", "rater_id", "question", "value", "source"}
    if df is None or df.empty or not need <= set(df.columns):
        return pd.DataFrame(columns=["image_id", "model", "rater_id", "value"])
    d = df[(df["question"] == question) & (df["source"] == "generated") & df["value"].notna()]
    for col, bad in (("catch", ""), ("practice", False), ("is_repeat", False)):
        if col in d.columns:
            d = d[d[col] == bad]
    return d[["image_id", "model", "rater_id", "value"]].reset_index(drop=True)


def human_scores(df: pd.DataFrame) -> pd.DataFrame:
    """Per generated image: mean of each human score and its number of answers (image_id, model, question,
    score, n_raters)."""
    rows = []
    for q in HUMAN_SCORES:
        r = image_ratings(df, q)
        if r.empty:
            continue
        g = r.groupby(["image_id", "model"])["value"].agg(["mean", "size"]).reset_index()
        rows.append(g.rename(columns={"mean": "score", "size": "n_raters"}).assign(question=q))
    if not rows:
        return pd.DataFrame(columns=["image_id", "model", "question", "score", "n_raters"])
    return pd.concat(rows, ignore_index=True)[["image_id", "model", "question", "score", "n_raters"]]


def _rank_rows(a: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(a, axis=-1)


def _spearman_rows(h: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Spearman's ρ of each row pair (average ranks for ties)."""
    rh, rm = _rank_rows(h), _rank_rows(m)
    rh = rh - rh.mean(-1, keepdims=True)
    rm = rm - rm.mean(-1, keepdims=True)
    den = np.sqrt((rh * rh).sum(-1) * (rm * rm).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rh * rm).sum(-1) / den, np.nan)


def _kendall(h: np.ndarray, m: np.ndarray) -> float:
    from scipy.stats import kendalltau

    if np.ptp(h) == 0 or np.ptp(m) == 0:
        return float("nan")
    return float(kendalltau(h, m).statistic)


@dataclass(frozen=True)
class RatingsByImage:
    """Answers grouped by image for the two-level bootstrap: ``values[start[i]:start[i] + count[i]]`` are image i's."""

    image_ids: tuple[str, ...]
    values: np.ndarray
    start: np.ndarray
    count: np.ndarray

    @classmethod
    def from_frame(cls, ratings: pd.DataFrame, image_ids: Sequence[str]) -> "RatingsByImage":
        groups = {k: g["value"].to_numpy(float) for k, g in ratings.groupby("image_id")}
        ids = [i for i in image_ids if i in groups]
        vals = [groups[i] for i in ids]
        count = np.array([len(v) for v in vals], dtype=np.int64)
        start = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64) if len(ids) else np.zeros(0, np.int64)
        return cls(tuple(ids), np.concatenate(vals) if vals else np.zeros(0), start, count)

    def means(self) -> np.ndarray:
        return np.add.reduceat(self.values, self.start) / self.count if len(self.count) else np.zeros(0)

    def resample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One two-level replicate: images drawn with replacement, then each drawn image's raters drawn with
        replacement. Returns (indices of the drawn images, their resampled mean scores)."""
        n = len(self.count)
        pick = rng.integers(0, n, n)
        cnt = self.count[pick]
        offs = np.repeat(self.start[pick], cnt) + (rng.random(cnt.sum()) * np.repeat(cnt, cnt)).astype(np.int64)
        seg = np.concatenate([[0], np.cumsum(cnt)[:-1]])
        return pick, np.add.reduceat(self.values[offs], seg) / cnt


def agreement(human: RatingsByImage, metric_by_image: Mapping[str, np.ndarray], n_boot: int = DEFAULT_N_BOOT,
              seed: int = DEFAULT_SEED, level: float = CI_LEVEL) -> pd.DataFrame:
    """Spearman and Kendall correlation between the per-image mean human score and each per-image metric (arrays in
    ``human.image_ids`` order; NaN images dropped per metric), with percentile intervals from a two-level bootstrap
    (images, then raters within image). Every metric sees the same replicates, so metrics (e.g. one per encoder) are
    compared pairwise on the same resamples: ``boot_spearman`` keeps the replicate values for :func:`best_tracker`.
    Columns: metric, n_images, n_answers, spearman, spearman_low, spearman_high, kendall, kendall_low, kendall_high,
    boot_spearman."""
    rng = np.random.default_rng(seed)
    n = len(human.image_ids)
    h_mean = human.means()
    picks, means = [], []
    for _ in range(n_boot):
        p, m = human.resample(rng)
        picks.append(p)
        means.append(m)
    rows = []
    for name, values in metric_by_image.items():
        values = np.asarray(values, dtype=float)
        if len(values) != n:
            raise MetricsError(f"metric {name!r}: {len(values)} values for {n} rated images")
        ok = np.isfinite(values)
        row = {"metric": name, "n_images": int(ok.sum()), "n_answers": int(human.count[ok].sum())}
        if ok.sum() < 3:
            rows.append({**row, **{c: np.nan for c in ("spearman", "spearman_low", "spearman_high", "kendall",
                                                       "kendall_low", "kendall_high")}, "boot_spearman": np.zeros(0)})
            continue
        row["spearman"] = float(_spearman_rows(h_mean[ok], values[ok]))
        row["kendall"] = _kendall(h_mean[ok], values[ok])
        bs, bk = np.full(n_boot, np.nan), np.full(n_boot, np.nan)
        if n_boot:
            H = np.stack([mm[ok[p]] for p, mm in zip(picks, means)]) if ok.all() else None
            if H is not None:
                M = np.stack([values[p] for p in picks])
                bs = _spearman_rows(H, M)
                bk = np.array([_kendall(H[i], M[i]) for i in range(n_boot)])
            else:
                for i, (p, mm) in enumerate(zip(picks, means)):
                    keep = ok[p]
                    if keep.sum() >= 3:
                        bs[i] = float(_spearman_rows(mm[keep], values[p][keep]))
                        bk[i] = _kendall(mm[keep], values[p][keep])
        # resampling raters adds rater noise to every replicate's means, which pulls replicate correlations
        # towards 0: the interval is the percentile interval shifted by that bootstrap bias (as for set metrics)
        row["spearman_low"], row["spearman_high"] = _shifted_ci(row["spearman"], bs, level)
        row["kendall_low"], row["kendall_high"] = _shifted_ci(row["kendall"], bk, level)
        row["boot_spearman"] = bs
        rows.append(row)
    return pd.DataFrame(rows)


def best_tracker(table: pd.DataFrame, sign: Mapping[str, float] | None = None, level: float = CI_LEVEL) -> dict:
    """Which metric (e.g. one encoder's nearest-real distance) tracks the clinicians best: the largest ρ after
    ``sign`` (−1 for metrics where lower should mean more real), the interval of its ρ, the interval of its lead over
    the runner-up on the same bootstrap replicates, and the share of replicates in which it is best."""
    t = table[table["spearman"].notna()].reset_index(drop=True)
    if t.empty:
        return {"best": None}
    sign = sign or {}
    s = np.array([sign.get(m, 1.0) for m in t["metric"]])
    est = t["spearman"].to_numpy() * s
    order = np.argsort(-est)
    best = int(order[0])
    out = {"best": t.loc[best, "metric"], "rho": float(est[best]),
           "rho_low": float(min(s[best] * t.loc[best, "spearman_low"], s[best] * t.loc[best, "spearman_high"])),
           "rho_high": float(max(s[best] * t.loc[best, "spearman_low"], s[best] * t.loc[best, "spearman_high"])),
           "runner_up": None, "lead": float("nan"), "lead_low": float("nan"), "lead_high": float("nan"),
           "share_best": float("nan")}
    boots = [np.asarray(b, float) * si for b, si in zip(t["boot_spearman"], s)]
    if len(t) > 1 and all(len(b) == len(boots[0]) and len(b) for b in boots):
        second = int(order[1])
        B = np.stack(boots)
        lead = B[best] - B[second]
        out.update(runner_up=t.loc[second, "metric"], lead=float(est[best] - est[second]))
        out["lead_low"], out["lead_high"] = percentile_ci(lead, level)
        valid = np.isfinite(B).all(0)
        out["share_best"] = float((np.nanargmax(np.where(np.isfinite(B), B, -np.inf), axis=0)[valid] == best).mean()) \
            if valid.any() else float("nan")
    return out


def model_ranking(per_model: pd.DataFrame, human: pd.DataFrame) -> pd.DataFrame:
    """Model ranking by each metric next to the clinicians' (mean realism; mean alignment when rated).
    ``per_model``: model, encoder, metric, value; ``human``: :func:`human_scores`. Rank 1 = best."""
    hm = (human.groupby(["model", "question"])["score"].mean().unstack("question")
          if not human.empty else pd.DataFrame())
    out = pd.DataFrame({"model": sorted(set(per_model["model"]) | set(hm.index))})
    for q in ("realism", "alignment", "chosen_real"):
        if q in hm.columns:
            out[f"clinicians_{q}"] = out["model"].map(hm[q])
            out[f"rank_clinicians_{q}"] = out[f"clinicians_{q}"].rank(ascending=False, method="min")
    for (enc, metric), g in per_model.groupby(["encoder", "metric"]):
        col = f"{metric} [{enc}]"
        vals = out["model"].map(dict(zip(g["model"], g["value"])))
        out[col] = vals
        out[f"rank {col}"] = vals.rank(ascending=LOWER_IS_BETTER.get(metric, True), method="min")
    return out


# ------------------------------------------------------------------------------------------ memorisation


def copy_threshold(train: np.ndarray, percentile: float = COPY_PERCENTILE) -> float:
    """The calibrated copy threshold: the ``percentile`` of the training images' leave-one-out nearest-neighbour
    distances (real vs real). An image from the training distribution that is not a copy falls below it with
    probability ≈ ``percentile`` %."""
    train = np.asarray(train, dtype=np.float32)
    if len(train) < 3:
        raise MetricsError(f"need at least 3 training images to calibrate the copy threshold, got {len(train)}")
    if not 0 < percentile < 50:
        raise MetricsError(f"copy percentile must be in (0, 50), got {percentile}")
    d, idx = nearest(train, train, 2)
    # leave one out: the first neighbour is the image itself unless duplicates exist (then both are distance 0)
    self_first = idx[:, 0] == np.arange(len(train))
    loo = np.where(self_first, d[:, 1], d[:, 0])
    return float(np.percentile(loo, percentile))


def pixel_similarity(a, b, size: int = 64) -> float:
    """Pearson correlation of two images' greyscale pixels at ``size`` × ``size`` (centre square, bilinear):
    1 for the same picture at any brightness or contrast, ≈ 0 for unrelated pictures."""
    from PIL import Image

    def arr(im) -> np.ndarray:
        im = im.convert("L")
        w, h = im.size
        s = min(w, h)
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((size, size), Image.BILINEAR)
        x = np.asarray(im, dtype=np.float64).ravel()
        return x - x.mean()

    x, y = arr(a), arr(b)
    den = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / den) if den > 0 else float(np.all(x == y))


def pixel_vectors(images, size: int = 32) -> np.ndarray:
    """Each image as a centred, unit-length greyscale thumbnail (centre square, ``size`` × ``size``): the Euclidean
    distance between two rows is √(2 − 2r), r their pixel correlation, so it ignores brightness and contrast."""
    from PIL import Image

    out = np.empty((len(images), size * size), dtype=np.float32)
    for i, im in enumerate(images):
        g = im.convert("L")
        w, h = g.size
        s = min(w, h)
        g = g.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((size, size), Image.BILINEAR)
        x = np.asarray(g, dtype=np.float64).ravel()
        x = x - x.mean()
        n = np.linalg.norm(x)
        out[i] = x / n if n > 0 else x
    return out


def memorisation(fake: np.ndarray, train: np.ndarray, fake_pixels: np.ndarray | None = None,
                 train_pixels: np.ndarray | None = None, k: int = 3,
                 percentile: float = COPY_PERCENTILE) -> tuple[pd.DataFrame, dict[str, float]]:
    """For each generated image its ``k`` nearest training images by encoder features and, with pixel vectors
    (:func:`pixel_vectors`), its nearest training image by pixels. Each space has its own calibrated threshold
    (:func:`copy_threshold`); with both spaces each is calibrated at ``percentile`` / 2, so an image that is not a
    copy is flagged with probability ≈ ``percentile`` % at most. A feature space with invariances finds semantic
    near-copies; the pixel space finds literal ones (crops, re-encodings, brightness changes) whatever the encoder.

    Returns (one row per generated image: row, nn_index, nn_distance, next_indices, pixel_nn_index,
    pixel_nn_distance, copy_flag, flagged_by, match_index) and the thresholds
    (``features``, ``pixels``)."""
    fake = np.asarray(fake, dtype=np.float32)
    train = np.asarray(train, dtype=np.float32)
    if fake.ndim != 2 or train.ndim != 2 or fake.shape[1] != train.shape[1]:
        raise MetricsError("generated and training features must be 2-D with the same dimension")
    use_pixels = fake_pixels is not None and train_pixels is not None
    p = percentile / 2 if use_pixels else percentile
    thr = {"features": copy_threshold(train, p), "pixels": float("nan")}
    d, idx = nearest(fake, train, k)
    feat_flag = d[:, 0] < thr["features"] if thr["features"] > 0 else d[:, 0] <= 0
    table = pd.DataFrame({
        "row": np.arange(len(fake)),
        "nn_index": idx[:, 0],
        "nn_distance": d[:, 0],
        "next_indices": [",".join(map(str, r[1:])) for r in idx],
    })
    pix_flag = np.zeros(len(fake), dtype=bool)
    if use_pixels:
        thr["pixels"] = copy_threshold(train_pixels, p)
        pd_, pi = nearest(fake_pixels, train_pixels, 1)
        pix_flag = pd_[:, 0] < thr["pixels"] if thr["pixels"] > 0 else pd_[:, 0] <= 0
        table["pixel_nn_index"] = pi[:, 0]
        table["pixel_nn_distance"] = pd_[:, 0]
    table["copy_flag"] = feat_flag | pix_flag
    table["flagged_by"] = np.where(feat_flag & pix_flag, "both", np.where(feat_flag, "features",
                                                                         np.where(pix_flag, "pixels", "")))
    # the pair to show: the pixel match when only the pixels fired, else the nearest by features
    table["match_index"] = np.where(pix_flag & ~feat_flag, table.get("pixel_nn_index", table["nn_index"]),
                                    table["nn_index"])
    return table, thr
