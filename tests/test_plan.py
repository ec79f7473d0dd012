"""`p2p plan`: simulated CI width and power over a raters × items grid, with the report's statistics."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from p2p_app import designs as D
from p2p_app import export as E
from p2p_app import plan as P
from p2p_app import simulate as S
from p2p_app.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_plan_grid_is_seeded_and_power_grows_with_raters_and_items():
    t = P.plan_study((3, 6, 10, 14), (10, 20, 40, 80), sims=60, seed=1)
    assert tuple(t.columns) == P.PLAN_COLUMNS and len(t) == 16
    assert t.equals(P.plan_study((3, 6, 10, 14), (10, 20, 40, 80), sims=60, seed=1))
    cell = t.set_index(["raters", "items"])
    assert cell.loc[(14, 80), "power"] > 0.9 > 0.4 > cell.loc[(3, 10), "power"]
    assert cell.loc[(14, 80), "mean_ci_width"] < cell.loc[(14, 10), "mean_ci_width"] < cell.loc[(3, 10), "mean_ci_width"]
    assert (t["overlap"] == t["raters"]).all()  # default: every rater sees every item
    assert cell.loc[(14, 80), "mean_estimate"] == pytest.approx(0.5, abs=0.1)


def test_no_effect_gives_about_the_false_positive_rate():
    t = P.plan_study((8,), (40,), effect=0.0, sims=300, seed=3)
    assert t["power"].iloc[0] < 0.12
    assert abs(t["mean_estimate"].iloc[0]) < 0.05


def test_forced_choice_plan_uses_the_rater_clustered_interval_and_test():
    # raters who differ (logit SD 1): the exact binomial over all screens rejected 14-39 % of these studies at effect
    # 0 (the old `p2p plan --effect 0` "power"); the rater-clustered test keeps every cell at most 7.5 %
    t = P.plan_study((3, 5, 8), (20, 40, 80), design="forced_choice", models=2, effect=0.0, noise=1.0, sims=400,
                     seed=2)  # fmt: skip
    assert (t["power"] <= 0.075).all(), t[["raters", "items", "power"]]
    assert t["mean_estimate"].abs().max() < 0.02  # the simulated population accuracy is chance exactly
    t = P.plan_study((4,), (50,), design="forced_choice", models=3, effect=0.0, noise=0.0, sims=400, seed=2)
    assert t["power"].iloc[0] < 0.08  # raters alike: still at most alpha
    t = P.plan_study((4, 10), (50,), design="forced_choice", models=3, effect=0.2, noise=0.0, sims=200, seed=2)
    row = t.set_index("raters").loc[10]
    assert row["answers_per_sim"] == 500
    # raters alike: the clustered width is on average about the exact binomial one (t on 9 df: a little wider,
    # t/z = 1.154 times E[s/sigma] = 0.97, so about 1.12 times; 200 simulations scatter it by about 0.016)
    lo, hi = D.clopper_pearson(0.45 * 500, 500, 0.95)
    assert float(hi - lo) < row["mean_ci_width"] < 1.18 * float(hi - lo)
    assert row["power"] == 1.0 and t["power"].iloc[0] > 0.9


def test_overlap_and_pilot_estimates():
    t = P.plan_study((3, 8), (20,), overlap=3, sims=20)
    assert t["overlap"].tolist() == [3, 3] and t["answers_per_sim"].tolist() == [60, 60]
    fc = S.simulate_forced_choice(n_raters=10, n_items=60, rater_groups={"": 2.0}, seed=4)
    est = P.pilot_parameters(fc)
    assert est["design"] == "forced_choice" and est["models"] == 3
    assert est["effect"] == pytest.approx(S.choice_probabilities(discrimination=2.0)["real"] - 0.25, abs=0.08)
    assert P.plan_study((3,), (20,), pilot=fc, sims=10)["design"].iloc[0] == "forced_choice"
    ratings = S.simulate_ratings(n_raters=8, n_prompts=12, rater_noise=(0.7, 0.7), image_sd=0.0, seed=4)
    est = P.pilot_parameters(ratings)
    assert est["design"] == "rating" and est["noise"] == pytest.approx(0.75, abs=0.15)
    assert est["effect"] == pytest.approx(1.3, abs=0.35)  # model-a vs model-c realism: 3.6 - 2.3
    t = P.plan_study((3,), (20,), pilot=ratings, effect=0.25, sims=10)
    assert t["effect"].iloc[0] == 0.25


def test_ranking_plan_recovers_the_truth_and_power_rises_with_raters_and_items():
    t = P.plan_study((3, 8, 14), (10, 40), design="ranking", models=3, effect=0.6, noise=0.0, sims=60, seed=1)
    assert tuple(t.columns) == P.PLAN_COLUMNS and (t["design"] == "ranking").all()
    assert t.equals(P.plan_study((3, 8, 14), (10, 40), design="ranking", models=3, effect=0.6, noise=0.0, sims=60,
                                 seed=1))  # fmt: skip
    cell = t.set_index(["raters", "items"])
    assert cell.loc[(14, 40), "power"] > 0.9 and cell.loc[(3, 10), "power"] < 0.5
    assert cell.loc[(14, 40), "power"] >= cell.loc[(14, 10), "power"] >= cell.loc[(3, 10), "power"]
    assert cell.loc[(8, 40), "power"] >= cell.loc[(3, 40), "power"]
    width = cell["mean_ci_width"]
    assert width.loc[(14, 40)] < width.loc[(14, 10)] < width.loc[(3, 10)]
    assert cell.loc[(14, 40), "mean_estimate"] == pytest.approx(0.6, abs=0.1)
    assert (t["answers_per_sim"] == t["raters"] * t["items"]).all()  # one ranking per rater and item
    null = P.plan_study((10,), (30,), design="ranking", models=3, effect=0.0, noise=0.0, sims=150, seed=4)
    assert null["power"].iloc[0] < 0.12  # no difference: about the false-positive rate


def test_ranking_simulation_counts_wins_like_the_report():
    rng = np.random.default_rng(0)
    rater = rng.integers(0, 4, 30)
    order = np.argsort(rng.random((30, 3)), axis=1)  # model codes best first
    rows = [{"question": "rank_realism", "rater_id": f"r{rater[t]}", "trial_id": t, "model": f"m{m}",
             "value": float(place + 1), "cant_judge": False} for t in range(30) for place, m in enumerate(order[t])]
    from p2p_app.designs import win_matrices

    import pandas as pd

    wins, _, _ = win_matrices(pd.DataFrame(rows), ["m0", "m1", "m2"])
    assert np.array_equal(P.ranking_wins(rater, order, 4)[np.unique(rater)], wins)


def test_ranking_pilot_estimates_strengths_gap_and_rater_spread():
    models = {"a": 1.0, "b": 0.2, "c": -0.4}
    # seed 8: over seeds 0-19 the effect estimate has mean 0.82, SD 0.13 (the old assignment: 0.80, 0.13); seed 6, used
    # before the simulator took the app's assignment, now draws 1.12 (2.5 SD out)
    df = S.simulate_ranking(n_raters=12, n_items=60, models=models, overlap_k=4, seed=8)
    est = P.pilot_parameters(df)
    assert est["design"] == "ranking" and est["models"] == 3
    assert est["effect"] == pytest.approx(0.8, abs=0.25)
    assert np.array(est["utilities"]) == pytest.approx(np.array([1.0, 0.2, -0.4]) - 0.8 / 3, abs=0.25)
    assert est["noise"] < 0.25  # every rater ranks by the same strengths
    spread = S.simulate_ranking(n_raters=12, n_items=60, models=models, overlap_k=4, seed=8,
                                rater_groups={"low": 0.2, "high": 3.0})  # raters who disagree in strength
    assert P.pilot_parameters(spread)["noise"] > est["noise"] + 0.2
    t = P.plan_study((4,), (20,), pilot=df, sims=10)
    assert t["design"].iloc[0] == "ranking" and t["effect"].iloc[0] == pytest.approx(est["effect"])
    assert P.plan_study((4,), (20,), pilot=df, effect=0.3, sims=5)["effect"].iloc[0] == 0.3
    assert P.ranking_utilities(3, 0.3, est["utilities"])[0] == pytest.approx(est["utilities"][1] + 0.3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"raters": ()}, "raters must list at least one number"),
        ({"items": (1,)}, "every items value must be >= 2"),
        ({"sims": 0}, "sims must be >= 1"),
        ({"design": "arena"}, "design must be one of"),
        ({"design": "forced_choice", "models": 3, "effect": 0.9}, "effect must keep the accuracy"),
        ({"models": 1}, "a rating plan needs models >= 2"),
        ({"design": "ranking", "models": 1}, "a ranking plan needs models >= 2"),
        ({"design": "ranking", "n_boot": 5}, "n_boot must be >= 20"),
        ({"overlap": 0}, "overlap must be >= 1"),
    ],
)
def test_bad_plans_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        P.plan_study(**kwargs)


def test_cli_plan_prints_the_table_and_writes_the_page(tmp_path):
    out = tmp_path / "plan.html"
    r = CliRunner().invoke(main, ["plan", "--raters", "3,5", "--items", "10,20", "--sims", "20", "--out", str(out)])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert "raters" in lines[1] and "power" in lines[1] and len(lines) == 7
    page = out.read_text()
    assert 'id="fig-plan"' in page and "mean_ci_width" in page
    bad = CliRunner().invoke(main, ["plan", "--raters", "3,x", "--out", str(out)])
    assert bad.exit_code != 0 and "whole numbers separated by commas" in bad.output
    bad = CliRunner().invoke(main, ["plan", "--items", "1", "--out", str(tmp_path / "no.html")])
    assert bad.exit_code != 0 and "items value must be >= 2" in bad.output and not (tmp_path / "no.html").exists()


def test_cli_plan_runs_from_a_pilot_without_torch_or_a_database(tmp_path):
    pilot = E.write_long_csv(S.simulate_forced_choice(n_raters=6, n_items=20, seed=1), tmp_path / "pilot.csv")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "no_generation_stack"), str(ROOT)])
    code = ("import sys; from p2p_app.cli import main; main(standalone_mode=False); "
            "assert 'sqlalchemy' not in sys.modules, 'opened the storage stack'")  # fmt: skip
    r = subprocess.run([sys.executable, "-c", code, "plan", "--pilot", str(pilot), "--raters", "3", "--items", "10",
                        "--sims", "10", "--out", str(tmp_path / "p.html")], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "design forced_choice" in r.stdout and (tmp_path / "p.html").exists()
    assert not list(tmp_path.glob("**/*.db")) and not (tmp_path / "p2p_data").exists()



# --- planning without a pilot: Obuchowski–Rockette closed form (issue 22) ------------------------------------------

# MRMCsamplesize 1.0.0, ?sampleSize_MRMC, the three documented examples and their printed output (pkgdown reference
# page docs/reference/sampleSize_MRMC.html of github.com/technOslerphile/MRMCsamplesize):
# (arguments, printed variance components, printed sample size results)
MRMCSAMPLESIZE_EXAMPLES = [
    (dict(readers=10, effect=0.10, auc=0.75, reader_range=0.1, within_range=0.05, ratio=1, r1=0.47),
     dict(var_tr=0.0002111701, var_e=0.007370216, var_r=0.00105585, var_w=0.001963495, cov1=0.003464002,
          cov2=0.002211065, cov3=0.002211065),
     dict(units=25, diseased=25, controls=25, cases=50, reads=1000)),
    (dict(readers=20, effect=0.05, auc=0.75, reader_range=0.2, within_range=0.05, ratio=1, r1=0.47, icc=0.5,
          cluster_size=1.25),
     dict(var_tr=0.0005734828, var_e=0.002583854, var_r=0.002867414, var_w=0.001963495, cov1=0.001214412,
          cov2=0.0007751563, cov3=0.0007751563),
     dict(units=218, diseased=197, controls=197, cases=394, reads=15760)),
    (dict(readers=15, effect=0.05, auc=0.75, reader_range=0.2, within_range=0.025, ratio=1, r1=0.5, icc=0.5,
          cluster_size=1.25, endpoint="sensitivity"),
     dict(var_tr=0.0006637031, var_e=0.002311773, var_r=0.003318516, var_w=0.0004908739, cov1=0.001155886,
          cov2=0.0006935318, cov3=0.0006935318),
     dict(units=103, diseased=93, controls=93, cases=186, reads=5580)),
]  # fmt: skip


@pytest.mark.parametrize("args, components, sizes", MRMCSAMPLESIZE_EXAMPLES)
def test_or_sizing_reproduces_mrmcsamplesize_documented_examples(args, components, sizes):
    got = P.or_sample_size(**args)
    for key, printed in components.items():  # printed to 7 significant digits
        assert got[key] == pytest.approx(printed, rel=1e-6), key
    assert {key: got[key] for key in sizes} == sizes


def test_or_power_matches_the_sizing_and_grows_with_readers_and_cases():
    kw = dict(auc=0.75, effect=0.10, reader_range=0.1, within_range=0.05)
    assert P.or_power(10, 25, **kw) >= 0.8 > P.or_power(10, 24, **kw)  # the 25 diseased cases the sizing found
    assert P.or_power(10, 200, **kw) > P.or_power(10, 50, **kw) > P.or_power(10, 25, **kw)
    assert P.or_power(20, 25, **kw) > P.or_power(10, 25, **kw)
    assert P.expected_range(2) == pytest.approx(2 / np.sqrt(np.pi)) and P.noncentrality(0.05, 0.8, 1, 1e6) == (
        pytest.approx(7.849, abs=1e-3))  # z test: (1.960 + 0.842)^2
    t = P.sizing_table((3, 10, 20), **kw)
    assert t["cases"].tolist() == [0, 50, 16] and np.isnan(t["power"].iloc[0]) and (t["power"].iloc[1:] >= 0.8).all()
    # Hillis's denominator df (what the report's analysis uses) need fewer cases when r2 > r3, still with the power
    hillis = P.or_sample_size(20, r2=0.35, ddf="hillis", **{**kw, "effect": 0.05, "reader_range": 0.2})
    plain = P.or_sample_size(20, r2=0.35, **{**kw, "effect": 0.05, "reader_range": 0.2})
    assert 0 < hillis["units"] < plain["units"]
    assert P.or_power(20, hillis["units"], r2=0.35, ddf="hillis", **{**kw, "effect": 0.05, "reader_range": 0.2}) >= 0.8


def test_cli_plan_without_a_pilot_prints_the_table_and_warns_below_five_readers(tmp_path):
    spec = "auc=0.75,effect=0.1,reader_range=0.1,within_range=0.05"
    r = CliRunner().invoke(main, ["plan", "--anticipated", spec, "--raters", "2,10,20", "--out", str(tmp_path / "x")])
    assert r.exit_code == 0, r.output
    assert "Obuchowski-Rockette" in r.output and "readers  diseased  controls  cases  reads  power" in r.output
    row = next(line.split() for line in r.output.splitlines() if line.split()[:1] == ["10"])
    assert row[:5] == ["10", "25", "25", "50", "1000"]
    assert "Warning: fewer than 5 readers (2)" in r.output and "iMRMC" in r.output
    assert not (tmp_path / "x").exists()  # no simulation, no page
    r = CliRunner().invoke(main, ["plan", "--anticipated", spec, "--raters", "5,10"])
    assert r.exit_code == 0 and "Warning" not in r.output
    assert P.reader_warning((4, 8)).startswith("Warning: fewer than 5 readers (4)") and P.reader_warning((5,)) == ""
    for bad, message in (("auc=0.75,effect=0.1", "needs reader_range"), ("auc=1.5,effect=0.1,reader_range=0.1,"
                         "within_range=0.05", "auc must be between 0 and 1"), ("speed=3", "key=value pairs")):
        r = CliRunner().invoke(main, ["plan", "--anticipated", bad])
        assert r.exit_code != 0 and message in r.output, r.output
