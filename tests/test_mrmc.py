"""p2p_app.mrmc against the published Van Dyke et al. (1993) MRI/CINE reader study (tests/data/README.md).

Published numbers: MRMCaov's printed output (Smith & Hillis, docs/jss/MRMCaov.tex in brian-j-smith/MRMCaov), asserted
to the printed precision."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from p2p_app import mrmc

DATA = Path(__file__).parent / "data" / "vandyke1993.csv"


@pytest.fixture(scope="module")
def vandyke() -> pd.DataFrame:
    return pd.read_csv(DATA)


def close(x, printed: str) -> None:
    """``x`` equals the printed number to the digits printed (rounding of the last digit)."""
    digits = len(printed.split(".")[1]) if "." in printed else 0
    assert abs(float(x) - float(printed)) <= 0.5 * 10**-digits + 1e-15, (x, printed)


def test_data_shape(vandyke):
    assert len(vandyke) == 5 * 2 * 114
    assert vandyke.groupby("truth")["case"].nunique().to_dict() == {0: 69, 1: 45}


def test_reader_aucs_match_mrmcaov_and_sklearn(vandyke):
    res = mrmc.or_analysis(vandyke)
    printed = {1: ["0.9196457", "0.8587762", "0.9038647", "0.9731079", "0.8297907"],
               2: ["0.9478261", "0.9053140", "0.9217391", "0.9993559", "0.9299517"]}  # fmt: skip
    for ti, t in enumerate(res.treatments):
        for ri, r in enumerate(res.readers):
            close(res.auc[ti, ri], printed[t][r - 1])
            sub = vandyke[(vandyke["treatment"] == t) & (vandyke["reader"] == r)]
            assert res.auc[ti, ri] == pytest.approx(roc_auc_score(sub["truth"], sub["rating"]))


def test_or_jackknife_covariances_and_f_test(vandyke):
    res = mrmc.or_analysis(vandyke, "jackknife")
    # MRMCaov, empirical AUC, jackknife covariances (printed in the fixed-reader analysis; the same estimates)
    close(res.var_error, "0.0008022883")
    close(res.cov1, "0.0003466137")
    close(res.cov2, "0.0003440748")
    close(res.cov3, "0.0002390284")
    close(res.cov2_t[0], "0.0004839618")
    close(res.ms_t, "0.004796171")
    close(res.ms_tr, "0.0005510306")
    close(res.treatment_table["auc"][0], "0.8970370")
    close(res.treatment_table["auc"][1], "0.9408374")
    close(res.difference_table["estimate"][0], "-0.04380032")
    # random readers: den = MS(T:R) + r (cov2 − cov3); the usual figures quoted for this data set (RJafroc
    # dataset02, OR/DBM Wilcoxon): F 4.46, ddf 15.26, p 0.0517
    assert (round(res.f, 2), round(res.ddf, 2), round(res.p_value, 4)) == (4.46, 15.26, 0.0517)


def test_or_delong_reproduces_the_whole_printed_summary(vandyke):
    res = mrmc.or_analysis(vandyke, "delong")
    close(res.var_error, "0.0007921325")
    close(res.cov1, "0.0003420090")
    close(res.cov2, "0.0003395265")
    close(res.cov3, "0.0002358497")
    close(res.f, "4.484854")
    assert res.ndf == 1
    close(res.ddf, "15.06611")
    close(res.p_value, "0.05123303")
    d = res.difference_table.iloc[0]
    close(d["estimate"], "-0.04380032")
    close(d["se"], "0.0206825")
    close(d["ci_low"], "-0.0878671960")
    close(d["ci_high"], "0.0002665519")
    close(d["t"], "-2.117747")
    tt = res.treatment_table
    for k, printed in enumerate([("0.8970370", "0.003082629", "0.0004775239", "0.03307642", "12.59597", "0.8253461",
                                  "0.9687280"),
                                 ("0.9408374", "0.001304602", "0.0002015292", "0.02150464", "12.56530", "0.8942155",
                                  "0.9874592")]):  # fmt: skip
        for col, value in zip(("auc", "ms_r", "cov2", "se", "df", "ci_low", "ci_high"), printed, strict=True):
            close(tt[col][k], value)


def test_dbm_on_pseudovalues_equals_or_jackknife(vandyke):
    res = mrmc.or_analysis(vandyke)
    f, ndf, ddf, p = mrmc.dbm_f_test(vandyke)
    assert (f, ndf, ddf, p) == pytest.approx((res.f, res.ndf, res.ddf, res.p_value), rel=1e-9)
    _, _, y = mrmc.pseudovalues(vandyke)
    np.testing.assert_allclose(y.mean(axis=2), res.auc)


def test_nested_cases_jackknife_runs_and_delong_refuses(vandyke):
    # cases nested within treatment (MRMCaov's case3): jackknife Cov1 = Cov3 = 0; printed df2 68.42325, F 2.104491
    nested = vandyke.assign(case=vandyke["case"].astype(str) + "." + vandyke["treatment"].astype(str))
    res = mrmc.or_analysis(nested)
    assert abs(res.cov1) < 1e-20 and abs(res.cov3) < 1e-20
    close(res.f, "2.104491")
    close(res.ddf, "68.42325")
    close(res.p_value, "0.1514363")
    with pytest.raises(ValueError, match="fully crossed"):
        mrmc.or_analysis(nested, "delong")


def test_cluster_jackknife_with_one_case_per_cluster_is_the_case_jackknife(vandyke):
    a = mrmc.or_analysis(vandyke)
    b = mrmc.or_analysis(vandyke.assign(cluster=vandyke["case"]))
    assert b.n_clusters == vandyke["case"].nunique() and a.n_clusters == 0
    for k in ("var_error", "cov1", "cov2", "cov3", "f", "ddf"):
        assert getattr(b, k) == pytest.approx(getattr(a, k), rel=1e-10)


def test_cluster_jackknife_deletes_whole_clusters_exactly(vandyke):
    # clusters of three cases, mixing positives and negatives; each leave-cluster-out AUC recomputed from scratch
    d = vandyke.assign(cluster=vandyke["case"] // 3)
    res = mrmc.or_analysis(d)
    clusters = np.sort(d["cluster"].unique())
    keys = [(t, r) for t in res.treatments for r in res.readers]
    loo = np.empty((len(keys), len(clusters)))
    for j, g in enumerate(clusters):
        kept = d[d["cluster"] != g]
        for i, (t, r) in enumerate(keys):
            x = kept[(kept["treatment"] == t) & (kept["reader"] == r)]
            loo[i, j] = roc_auc_score(x["truth"], x["rating"])
    dev = loo - loo.mean(axis=1, keepdims=True)
    cov = (len(clusters) - 1) / len(clusters) * dev @ dev.T
    t_of = np.array([k[0] for k in keys])
    r_of = np.array([k[1] for k in keys])
    same_t, same_r = t_of[:, None] == t_of[None, :], r_of[:, None] == r_of[None, :]
    assert res.var_error == pytest.approx(cov[same_t & same_r].mean(), rel=1e-10)
    assert res.cov2 == pytest.approx(cov[same_t & ~same_r].mean(), rel=1e-10)
    assert res.cov3 == pytest.approx(cov[~same_t & ~same_r].mean(), rel=1e-10)
    with pytest.raises(ValueError, match="more than one cluster"):
        mrmc.or_analysis(d.assign(cluster=np.arange(len(d))))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.drop(columns="truth"), "MRMC data is missing columns: truth"),
        (lambda d: d.assign(truth=2), "truth must be 0 (negative) or 1 (positive)"),
        (lambda d: pd.concat([d, d.iloc[:1]]), "more than one rating for a (reader, treatment, case)"),
        (lambda d: d[d["reader"] == 1], "OR analysis needs at least two readers, got 1"),
        (lambda d: d[~((d["reader"] == 2) & (d["treatment"] == 2))], "reader 2 has no ratings under treatment 2"),
    ],
)
def test_bad_input(vandyke, change, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        mrmc.or_analysis(change(vandyke.copy()))
