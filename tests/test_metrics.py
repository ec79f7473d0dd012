"""Automatic metrics (p2p_app/metrics.py, metrics_run.summarize): each metric equals an independent computation on
fixed feature arrays; the agreement with clinicians recovers a known relation from simulated studies and its
interval covers 0 when there is none (the >= 93 % coverage run is benchmarks/bench_metrics.py); the best encoder is
found; memorisation flags at its calibrated rate. No torch here (tests/test_encoders.py has the encoders)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.linalg

from p2p_app import metrics as M
from p2p_app.metrics_run import LoadedMetrics, summarize


def feats(seed: int, n: int, d: int, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)  # correlated dimensions: a non-diagonal covariance
    return (rng.normal(size=(n, d)) @ mix) * scale + shift


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


# ------------------------------------------------------------------------------------ equality with references


def test_frechet_equals_closed_form_with_scipy_sqrtm():
    x, y = feats(1, 80, 12), feats(2, 90, 12, shift=0.4, scale=1.3)
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    closed = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
    assert rel(M.frechet_distance(x, y), closed) < 1e-6


def test_frechet_equals_torchmetrics_formula():
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchmetrics")
    from torchmetrics.image.fid import _compute_fid

    x, y = feats(3, 60, 8), feats(4, 70, 8, shift=0.2)
    mu1, s1 = M.mean_cov(x)
    mu2, s2 = M.mean_cov(y)
    t = lambda a: torch.from_numpy(a)  # noqa: E731
    assert rel(M.frechet_distance(x, y), float(_compute_fid(t(mu1), t(s1), t(mu2), t(s2)))) < 1e-6


def test_bootstrap_weights_equal_repeated_rows():
    x = feats(5, 30, 6)
    idx = np.random.default_rng(0).integers(0, 30, 30)
    mu_w, cov_w = M.mean_cov(x, np.bincount(idx, minlength=30))
    mu_r, cov_r = M.mean_cov(x[idx])
    assert np.allclose(mu_w, mu_r) and np.allclose(cov_w, cov_r)


def test_kid_equals_unbiased_estimator_written_out():
    x, y = feats(6, 25, 5), feats(7, 31, 5, shift=0.3)
    d = x.shape[1]
    k = lambda a, b: (a @ b / d + 1.0) ** 3  # noqa: E731
    m, n = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    assert rel(M.kid(x, y), sxx + syy - 2 * sxy) < 1e-6


def test_rbf_mmd_equals_unbiased_estimator_written_out():
    x, y = feats(8, 20, 4), feats(9, 22, 4, shift=0.5)
    sigma = 1.7
    k = lambda a, b: np.exp(-((a - b) ** 2).sum() / (2 * sigma**2))  # noqa: E731
    m, n = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    assert rel(M.mmd_rbf(x, y, sigma), sxx + syy - 2 * sxy) < 1e-6


def test_prdc_equals_the_prdc_package_in_chunks():
    prdc = pytest.importorskip("prdc")
    real, fake = feats(10, 120, 10), feats(11, 100, 10, shift=0.4, scale=1.2)
    ours = M.prdc(real, fake, k=5, chunk=17)  # chunk size that does not divide either set
    ref = prdc.compute_prdc(real_features=real, fake_features=fake, nearest_k=5)
    for key in ("precision", "recall", "density", "coverage"):
        assert rel(ours[key], float(ref[key])) < 1e-6 or ours[key] == float(ref[key]) == 0, key


def test_nearest_is_exact():
    q, b = feats(12, 40, 6), feats(13, 300, 6)
    d, i = M.nearest(q, b, 3)
    full = np.sqrt(((q[:, None, :] - b[None]) ** 2).sum(-1))
    assert (i == np.argsort(full, 1)[:, :3]).all()
    assert np.allclose(d, np.sort(full, 1)[:, :3], rtol=1e-4)


def test_bad_feature_input_is_a_clear_error():
    with pytest.raises(M.MetricsError, match="dimensions differ"):
        M.frechet_distance(feats(1, 10, 3), feats(2, 10, 4))
    with pytest.raises(M.MetricsError, match="at least 2 images"):
        M.kid(feats(1, 1, 3), feats(2, 10, 3))
    with pytest.raises(M.MetricsError, match="NaN"):
        M.mmd_rbf(np.full((3, 2), np.nan), feats(2, 10, 2))


# ------------------------------------------------------------------------------------ intervals


def test_set_metric_intervals_hold_the_estimate_and_shrink_with_more_images():
    small = M.set_metrics(feats(20, 40, 6, 0.3), feats(21, 40, 6), n_boot=100, seed=1).set_index("metric")
    large = M.set_metrics(feats(22, 400, 6, 0.3), feats(23, 400, 6), n_boot=100, seed=1).set_index("metric")
    assert set(small.index) == set(M.SET_METRICS)
    for m in ("frechet", "kid", "mmd_rbf", "density"):
        for t in (small, large):
            lo, v, hi = t.loc[m, ["ci_low", "value", "ci_high"]]
            assert np.isfinite([lo, hi]).all() and lo < hi, m  # no bootstrap: NaN intervals, this fails
            assert lo <= v <= hi, m
        assert (large.loc[m, "ci_high"] - large.loc[m, "ci_low"]) < (small.loc[m, "ci_high"] - small.loc[m, "ci_low"]), m


def test_frechet_interval_covers_the_population_distance():
    """Two Gaussians whose Fréchet distance is known in closed form: with 400 images per set the interval holds it."""
    d = 4
    rng = np.random.default_rng(5)
    x = rng.normal(size=(400, d))
    y = rng.normal(size=(400, d)) * 1.5 + 0.5
    truth = d * 0.5**2 + d * (1 + 1.5**2 - 2 * 1.5)  # ‖Δμ‖² + tr(Σx + Σy − 2(ΣxΣy)^½)
    row = M.set_metrics(y, x, n_boot=200, seed=0, metrics=("frechet",)).iloc[0]
    assert row.ci_low <= truth <= row.ci_high


# ------------------------------------------------------------------------------------ agreement


def simulated_ratings(seed: int, n_images: int, n_raters: int, slope: float, rater_sd: float = 1.0):
    """Images with a latent realism; raters score it on 1–5 with noise; the metric (a distance) falls with realism
    by ``slope`` (0: unrelated). Returns (ratings frame, metric array in image order, image ids)."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=n_images)
    metric = -slope * latent + rng.normal(scale=1.0, size=n_images)
    ids = [f"img{i:04d}" for i in range(n_images)]
    values = np.clip(np.rint(3 + latent[:, None] + rng.normal(scale=rater_sd, size=(n_images, n_raters))), 1, 5)
    frame = pd.DataFrame({"image_id": np.repeat(ids, n_raters), "model": "m",
                          "rater_id": np.tile([f"r{j}" for j in range(n_raters)], n_images),
                          "value": values.ravel()})
    return frame, metric, ids


def test_known_monotone_relation_is_recovered_within_its_interval():
    # the "population" correlation between the mean of 4 raters' scores and the metric, from a very large study
    big, big_metric, big_ids = simulated_ratings(99, 20000, 4, slope=1.0)
    hb = M.RatingsByImage.from_frame(big, big_ids)
    truth = float(M._spearman_rows(hb.means(), big_metric))
    assert truth < -0.4
    frame, metric, ids = simulated_ratings(1, 120, 4, slope=1.0)
    row = M.agreement(M.RatingsByImage.from_frame(frame, ids), {"nn": metric}, n_boot=300, seed=0).iloc[0]
    assert row.spearman_high < 0  # the sign
    assert row.spearman_low <= truth <= row.spearman_high  # the size
    assert row.kendall_high < 0 and row.kendall_low < row.kendall < row.kendall_high


def test_no_relation_interval_covers_zero_small_simulation():
    """Small version of the benchmark's >= 93 % coverage check (benchmarks/bench_metrics.py runs 400 studies)."""
    hits = 0
    n_studies = 30
    for s in range(n_studies):
        frame, metric, ids = simulated_ratings(1000 + s, 40, 3, slope=0.0)
        row = M.agreement(M.RatingsByImage.from_frame(frame, ids), {"nn": metric}, n_boot=150, seed=s).iloc[0]
        hits += row.spearman_low <= 0 <= row.spearman_high
    assert hits / n_studies >= 0.85


def test_rater_level_of_the_bootstrap_resamples_raters():
    """Two images whose raters disagree: resampling raters moves the image means (image-only resampling would not)."""
    frame = pd.DataFrame({"image_id": ["a"] * 4 + ["b"] * 4, "model": "m", "rater_id": list("wxyz") * 2,
                          "value": [1, 5, 1, 5, 2, 4, 2, 4]})
    hb = M.RatingsByImage.from_frame(frame, ["a", "b"])
    rng = np.random.default_rng(0)
    moved = 0
    for _ in range(50):
        pick, means = hb.resample(rng)
        moved += not np.allclose(means, hb.means()[pick])
    assert moved > 25


def loaded_two_encoders(seed: int = 3, n: int = 90):
    """Per-image tables of two encoders: 'good' tracks the simulated clinicians, 'noise' does not."""
    frame, metric, ids = simulated_ratings(seed, n, 4, slope=1.5)
    rng = np.random.default_rng(seed + 1)
    per_image = pd.concat([
        pd.DataFrame({"encoder": "good", "image_id": ids, "model": "m", "nn_real_distance": metric, "alignment": np.nan}),
        pd.DataFrame({"encoder": "noise", "image_id": ids, "model": "m", "nn_real_distance": rng.normal(size=n),
                      "alignment": np.nan}),
    ], ignore_index=True)
    per_model = pd.DataFrame(columns=["encoder", "model", "metric", "value"])
    ratings = frame.assign(question="realism", source="generated", catch="", practice=False, is_repeat=False)
    return LoadedMetrics(per_image, per_model, ({"encoder": "good"}, {"encoder": "noise"})), ratings


def test_summarize_finds_the_encoder_that_tracks_clinicians():
    loaded, ratings = loaded_two_encoders()
    a = summarize(loaded, ratings, n_boot=200, seed=0)
    t = a.table.set_index("encoder")
    assert t.loc["good", "spearman_high"] < 0  # agreement: closer to real = more realistic
    assert t.loc["noise", "spearman_low"] <= 0 <= t.loc["noise", "spearman_high"]
    best = a.best.iloc[0]
    assert best.best_encoder == "good" and best.runner_up == "noise"
    assert best.lead_low > 0 and best.share_of_replicates_best > 0.95
    assert set(a.scatter["encoder"]) == {"good", "noise"}


def test_best_tracker_uses_the_sign_per_metric():
    loaded, ratings = loaded_two_encoders()
    a = summarize(loaded, ratings, n_boot=50, seed=0)
    table = a.table.drop(columns="metric").rename(columns={"encoder": "metric"}).assign(boot_spearman=[np.zeros(0)] * len(a.table))
    assert M.best_tracker(table, {"good": -1.0, "noise": -1.0})["best"] == "good"
    assert M.best_tracker(table, {"good": 1.0, "noise": 1.0})["best"] == "noise"  # wrong sign: the other


def test_model_ranking_next_to_clinicians():
    per_model = pd.DataFrame({"encoder": "e", "model": ["a", "b", "c"] * 2,
                              "metric": ["frechet"] * 3 + ["precision"] * 3, "value": [3.0, 1.0, 2.0, 0.2, 0.9, 0.5]})
    human = pd.DataFrame({"image_id": ["1", "2", "3"], "model": ["a", "b", "c"], "question": "realism",
                          "score": [2.0, 4.5, 3.0], "n_raters": 3})
    r = M.model_ranking(per_model, human).set_index("model")
    assert list(r["rank_clinicians_realism"]) == [3, 1, 2]
    assert list(r["rank frechet [e]"]) == [3, 1, 2]  # lower distance = better
    assert list(r["rank precision [e]"]) == [3, 1, 2]  # higher precision = better


# ------------------------------------------------------------------------------------ memorisation (no encoder)


def test_unrelated_images_are_flagged_at_the_calibrated_rate():
    both = feats(30, 6000, 8)  # one distribution, no copies
    train, fake = both[:3000], both[3000:]
    for pct in (2.0, 5.0):
        table, thr = M.memorisation(fake, train, percentile=pct)
        rate = table["copy_flag"].mean()
        assert abs(rate - pct / 100) < 0.5 * pct / 100, (pct, rate)


def test_exact_copies_are_found_at_rank_one_and_flagged():
    train = feats(32, 500, 8)
    fake = np.concatenate([train[[7, 42, 300]], feats(33, 50, 8)])
    table, _ = M.memorisation(fake, train, percentile=1.0)
    assert list(table["nn_index"][:3]) == [7, 42, 300] and table["copy_flag"][:3].all()
    assert table["copy_flag"][3:].mean() < 0.1


def test_copy_threshold_is_a_low_percentile_of_real_vs_real_distances():
    train = feats(34, 400, 5)
    d = np.sqrt(((train[:, None] - train[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    assert rel(M.copy_threshold(train, 5.0), float(np.percentile(d.min(1), 5.0))) < 1e-5
    with pytest.raises(M.MetricsError, match="at least 3"):
        M.copy_threshold(train[:2])
