"""The rating simulator (contract frame, known truth) and the self-contained HTML report."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from p2p_app import analysis as A
from p2p_app.assignment import repeat_count
from p2p_app.report import build_report, figures
from p2p_app.simulate import DEFAULT_MODELS, frame_from_matrix, simulate_ratings, true_order


@pytest.fixture(scope="module")
def study() -> pd.DataFrame:
    return simulate_ratings(n_raters=10, n_prompts=16, seeds_per_prompt=2, overlap_k=3, repeat_fraction=0.15, seed=21)


# --- simulator ---------------------------------------------------------------------------------------------------


def test_simulated_frame_follows_the_contract(study):
    assert tuple(study.columns) == A.TIDY_COLUMNS
    assert {c: str(t) for c, t in study.dtypes.items()} == dict(A.TIDY_DTYPES)
    pd.testing.assert_frame_equal(study.iloc[:0], A.empty_ratings_frame(), check_index_type=False)


def test_simulated_design(study):
    panels = len(DEFAULT_MODELS) + 1
    first_trials = 16 * 2 * 3
    loads = study[~study["is_repeat"]].drop_duplicates("trial_id").groupby("rater_id").size()
    assert loads.sum() == first_trials and loads.max() - loads.min() <= 1  # the app's balanced loads
    n_repeat = sum(repeat_count(0.15, int(n)) for n in loads)  # ceil(0.15 n) per rater, as the app repeats
    assert len(study) == (first_trials + n_repeat) * panels * 2
    assert study["trial_id"].nunique() == first_trials + n_repeat
    assert set(study["model"]) == {*DEFAULT_MODELS, "real"}
    assert (study["source"] == np.where(study["model"] == "real", "real", "generated")).all()
    assert study.loc[study["source"] == "real", "seed"].isna().all()
    assert study.loc[study["source"] == "generated", "seed"].notna().all()
    # same (prompt, seed) for every model of an item; positions are a permutation of 1..panels per trial
    assert (study.groupby("item_id")["seed"].nunique() == 1).all()
    pos = study[study["question"] == "realism"].groupby("trial_id")["position"].agg(sorted)
    assert all(p == list(range(1, panels + 1)) for p in pos)
    assert study.groupby("item_id")["rater_id"].nunique().eq(3).all()
    assert study["rater_id"].str.fullmatch(r"r\d{3}").all()
    assert study["image_id"].str.fullmatch(r"img_[0-9a-f]{12}").all()
    assert study["image_id"].nunique() == 16 * 2 * panels
    # can't judge rows carry no value; values are on the 1..5 scale
    assert study.loc[study["cant_judge"], "value"].isna().all()
    assert set(study.loc[~study["cant_judge"], "value"].unique()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    # time runs forward: answered after shown, seconds consistent; repeats come after the first showing
    assert (study["answered_at"] > study["shown_at"]).all()
    elapsed = (study["answered_at"] - study["shown_at"]).dt.total_seconds()
    np.testing.assert_allclose(elapsed, study["seconds"], atol=1e-6)
    first = study[~study["is_repeat"]].groupby(["rater_id", "item_id"])["order_index"].min()
    again = study[study["is_repeat"]].groupby(["rater_id", "item_id"])["order_index"].min()
    assert (again > first.reindex(again.index)).all()
    per_rater = study.drop_duplicates("trial_id").sort_values("order_index").groupby("rater_id")["shown_at"]
    assert all(s.is_monotonic_increasing for _, s in per_rater)


def test_simulator_is_seeded():
    a = simulate_ratings(n_raters=4, n_prompts=5, overlap_k=2, seed=9)
    pd.testing.assert_frame_equal(a, simulate_ratings(n_raters=4, n_prompts=5, overlap_k=2, seed=9))
    assert not a["value"].equals(simulate_ratings(n_raters=4, n_prompts=5, overlap_k=2, seed=10)["value"])


def test_true_order():
    assert true_order({"x": (2, 4), "y": (3, 1)}, "realism") == ["y", "x"]
    assert true_order({"x": (2, 4), "y": (3, 1)}, "alignment") == ["x", "y"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"overlap_k": 5, "n_raters": 4}, "overlap_k must be between 1 and n_raters (4), got 5"),
        ({"repeat_fraction": 1.5}, "repeat_fraction must be between 0 and 1, got 1.5"),
        ({"models": {}, "include_real": False}, "models is empty and include_real is False: nothing to rate"),
        ({"models": {"real": (3, 3)}}, "'real' is reserved for real control images; rename that model"),
        ({"models": {"m": 3}}, "quality of model 'm' must be (realism, alignment), got 3"),
    ],
)
def test_simulator_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        simulate_ratings(**kwargs)


def test_simulator_scales_vectorised():
    df = simulate_ratings(n_raters=50, n_prompts=1000, seeds_per_prompt=2, overlap_k=5, seed=0)
    assert len(df) == round(1000 * 2 * 5 * 1.1) * 4 * 2
    assert df["value"].notna().mean() > 0.95


# --- report ------------------------------------------------------------------------------------------------------

FIGURES = ("score_distributions", "means", "roc", "agreement", "position", "progress", "raters", "timing")


def _script_srcs(page: str) -> list[str]:
    return re.findall(r"<script[^>]*\bsrc\s*=", page, flags=re.I)


def test_report_is_self_contained_with_every_figure(study):
    progress = pd.DataFrame({"rater_id": ["r001", "r002"], "answered": [40, 12], "assigned": [48, 48]})
    page = build_report(study, title="Pilot <study> & co", progress=progress, n_boot=50, seed=1)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert _script_srcs(page) == []  # nothing loaded from a CDN or anywhere else
    assert page.count("plotly.js v") == 1  # the library is inlined exactly once
    for name in (*FIGURES, "rater_progress"):
        assert f'id="fig-{name}"' in page, name
    assert "<title>Pilot &lt;study&gt; &amp; co</title>" in page
    tables = ("overview", "scores", "real_vs_generated", "roc", "agreement", "intra_rater", "pairwise", "position_test",
              "position", "answers_over_time", "progress", "raters", "timing")  # fmt: skip
    for table in tables:
        assert f"<h3>{table}</h3>" in page
    assert "Pilot <study>" not in page


def test_report_escapes_data(study):
    df = study.copy()
    df["rater_id"] = df["rater_id"].where(df["rater_id"] != "r001", "<b>evil</b>")
    page = build_report(df, n_boot=10)
    assert "<b>evil</b>" not in page and "&lt;b&gt;evil&lt;/b&gt;" in page


def test_figures_dict(study):
    a = A.analyze(study, n_boot=20)
    figs = figures(a, study)
    assert set(figs) == set(FIGURES)
    roc = figs["roc"]
    assert len(roc.data) == 1 + len(DEFAULT_MODELS)  # chance line + one curve per model


def test_report_for_empty_and_one_rater_frames():
    page = build_report(A.empty_ratings_frame(), title="empty", n_boot=10)
    assert "not computable: no ratings" in page and "plotly.js v" not in page  # no figure, so no library
    assert _script_srcs(page) == []
    one = frame_from_matrix([[1, 2, 3, 4, 5, 4]], unit_models=["real", "real", "a", "a", "b", "b"])
    page = build_report(one, n_boot=10)
    assert "not computable: only one rater" in page
    assert page.count("plotly.js v") == 1 and _script_srcs(page) == []
    assert 'id="fig-means"' in page and 'id="fig-agreement"' not in page


def test_report_lists_every_study_model_and_formats_for_people(study):
    page = build_report(study, n_boot=20, models=[*DEFAULT_MODELS, "model-z"])
    assert "model-z" in page and "not computable: no ratings for this model" in page
    assert "<NA>" not in page and ">nan<" not in page.lower()
    assert not re.search(r">-?\d+\.\d{7,}<", page)  # no raw floats like 0.7071067811865476 in table cells
    assert "<h3>reader_study</h3>" in page and "Inter-rater agreement" in page


def test_format_table_rounds_and_blanks():
    from p2p_app.report import format_table

    t = pd.DataFrame({"x": [0.7071067811865476, np.nan, 3.0], "k": pd.array([1, pd.NA, 3], dtype="Int64"),
                      "p": [0.00012345, 1e-9, 0.5]})  # fmt: skip
    out = format_table(t)
    assert out["x"].tolist() == ["0.707", "", "3"] and out["k"].tolist() == ["1", "", "3"]
    assert out["p"].tolist() == ["0.000123", "1e-09", "0.500"]


def drawn_colours(fig) -> dict[str, set[str]]:
    """Legend group → the colours its traces are drawn in (an unset colour is the template's colourway entry of
    the trace's index, as plotly draws it)."""
    import plotly.io as pio

    template = fig.layout.template if fig.layout.template.layout.colorway else pio.templates["plotly"]
    way = template.layout.colorway
    out: dict[str, set[str]] = {}
    for i, trace in enumerate(fig.data):
        colour = trace.marker.color if trace.type == "bar" else (trace.line.color or trace.marker.color)
        out.setdefault(trace.legendgroup, set()).add(str(colour or way[i % len(way)]).lower())
    return out


def test_a_series_has_one_colour_in_every_panel_as_its_legend_shows(study):
    """Score distribution (realism and alignment panels) and the plan's power and CI-width panels: each model /
    item count keeps its legend colour in every panel, and no two share one."""
    from p2p_app.plan import plan_figure, plan_study

    fig = figures(A.analyze(study, n_boot=20), study)["score_distributions"]
    assert {t.xaxis for t in fig.data} == {"x", "x2"}  # two panels
    plan = plan_figure(plan_study(raters=(3, 5), items=(10, 20, 30), sims=5, seed=1))
    for f in (fig, plan):
        colours = drawn_colours(f)
        assert len(colours) > 1 and all(len(c) == 1 for c in colours.values()), colours
        assert len({c for cs in colours.values() for c in cs}) == len(colours)


# --- the simulator assigns as the app does (issue 20) --------------------------------------------------------------


def _app_study(design: str, study_id: str, n_raters: int, n_items: int, k: int, repeat: float, catch: float):
    """The study definition the app would run for a simulated design (one seed per prompt: item i = prompt i)."""
    from p2p_app.study import PromptRow, StudyDefinition

    prompts = tuple(PromptRow(f"p{i:04d}", f"prompt {i}", Path(f"real{i}.png"), i + 2) for i in range(n_items))
    return StudyDefinition(
        id=study_id, version=1, title="t", instructions="i", modality="colonoscopy",
        models=("model-a", "model-b", "model-c"), seeds=(1,), prompts=prompts, controls=(),
        raters=tuple(f"r{i}" for i in range(n_raters)), n_raters=n_raters, overlap_k=k, repeat_fraction=repeat,
        design={"rating": "side_by_side"}.get(design, design), catch_rate=catch,
        catch_kinds=("noise",) if catch else (),
    )  # fmt: skip


def _per_slot(seqs) -> dict:
    return {"load": [sum(not a.is_catch for a in s) for s in seqs],
            "repeats": [sum(a.is_repeat for a in s) for s in seqs],
            "catch": [sum(a.is_catch for a in s) for s in seqs],
            "catch_at": [[a.order_index for a in s if a.is_catch] for s in seqs]}  # fmt: skip


def _simulated_per_slot(df: pd.DataFrame, n_raters: int) -> tuple[dict, list]:
    trials = df.drop_duplicates("trial_id").copy()
    trials["slot"] = trials["rater_id"].str[1:].astype(int) - 1
    trials["is_catch"] = trials["catch"] != ""
    by = [trials[trials["slot"] == r].sort_values("order_index") for r in range(n_raters)]
    items = [set(t.loc[~t["is_catch"], "item_id"].str[1:].astype(int) - 1) for t in by]
    return {"load": [int((~t["is_catch"]).sum()) for t in by], "repeats": [int(t["is_repeat"].sum()) for t in by],
            "catch": [int(t["is_catch"].sum()) for t in by],
            "catch_at": [t.loc[t["is_catch"], "order_index"].tolist() for t in by]}, items  # fmt: skip


@pytest.mark.parametrize("design", ["rating", "forced_choice", "ranking"])
def test_simulated_loads_repeats_and_catch_screens_are_the_apps(design):
    """Over a grid of raters × items × overlap × catch_rate, every simulated rater slot has the items, the number of
    design trials and repeats, and the catch screens (count and place in the sequence) that
    ``p2p_app.assignment.rater_sequence`` gives that slot of the equivalent study."""
    from p2p_app import simulate as S
    from p2p_app.assignment import item_coverage, rater_sequence

    seed = 3
    for n_raters, n_items, k, catch in itertools.product((3, 8), (7, 20), (1, 2, 3), (0.0, 0.1, 0.25)):
        repeat = 0.2 if design == "rating" else 0.0
        if design == "rating":
            df = simulate_ratings(n_raters=n_raters, n_prompts=n_items, seeds_per_prompt=1, overlap_k=k,
                                  repeat_fraction=repeat, catch_rate=catch, seed=seed)  # fmt: skip
            name = "sim"
        else:
            sim = S.simulate_forced_choice if design == "forced_choice" else S.simulate_ranking
            df = sim(n_raters=n_raters, n_items=n_items, overlap_k=k, catch_rate=catch, seed=seed)
            name = "sim-forced-choice" if design == "forced_choice" else "sim-ranking"
        study = _app_study(design, name, n_raters, n_items, k, repeat, catch)
        app = _per_slot([rater_sequence(study, r, seed) for r in range(n_raters)])
        got, items = _simulated_per_slot(df, n_raters)
        where = f"{design}: {n_raters} raters, {n_items} items, k={k}, catch_rate={catch}"
        assert got == app, where
        index = {item.key: i for i, item in enumerate(study.items())}
        cover = item_coverage(study, seed)
        assert items == [{index[key] for key, slots in cover.items() if r in slots} for r in range(n_raters)], where
        assert max(app["load"]) - min(app["load"]) <= 1 + max(app["repeats"]), where  # balanced, as the app is
