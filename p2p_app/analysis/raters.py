"""The raters: position bias, time per trial, and the per-rater table with its quality flags."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from scipy import stats

from ..designs import catch_table, catch_trial_mask
from ..tidy import ALL, not_computable, result_table
from .preparation import POSITION_COLUMNS, POSITION_TEST_COLUMNS, RATER_COLUMNS, TIMING_COLUMNS, Prepared, prepare


@dataclasses.dataclass(frozen=True)
class RaterThresholds:
    """Thresholds for the per-rater quality flags (all inclusive)."""

    too_fast_seconds: float = 1.5
    """``too_fast`` when the rater's median seconds per image (trial seconds / panels; a trial's seconds are its
    active time where the page measured it, else its wall time) is below this."""
    straight_lining_share: float = 0.8
    """``straight_lining`` when one score makes up at least this share of the rater's scored answers."""
    min_answers: int = 10
    """Fewest scored answers before ``straight_lining``/``outlier`` can be raised."""
    min_consensus_corr: float = 0.2
    """``outlier`` when the correlation with the consensus (other raters' mean) is below this…"""
    max_consensus_bias: float = 1.0
    """…or when the mean difference from the consensus is at least this many scale points."""
    min_catch_pass_rate: float = 0.75
    """``catch_failed`` when the rater passes fewer than this share of their catch-trial checks…"""
    min_catch_answers: int = 3
    """…and has at least this many checks (:mod:`p2p_app.designs`)."""


# --------------------------------------------------------------------------------------------------------------------
# Position bias, timing, raters
# --------------------------------------------------------------------------------------------------------------------


def position_bias(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean score by panel position shown, per numeric question, and a Kruskal–Wallis test (scipy ``kruskal``) of
    "the scores have the same distribution at every position". ``mean_centered`` is the mean of (score − that
    model's mean on the question), which removes any imbalance of models across positions. Only screens with more
    than one panel count. Returns ``(by_position, tests)`` with ``POSITION_COLUMNS`` / ``POSITION_TEST_COLUMNS``."""
    return position_tables(prepare(df))


def position_tables(prep: Prepared) -> tuple[pd.DataFrame, pd.DataFrame]:
    if prep.rows.empty:
        tests = result_table([{"test": "kruskal", "note": not_computable("no ratings")}], POSITION_TEST_COLUMNS)
        return result_table([], POSITION_COLUMNS), tests
    s = prep.scored[prep.scored["n_panels"].to_numpy() > 1]
    if s.empty:
        reason = "every screen shows one panel" if not prep.scored.empty else "no scored answers"
        tests = [{"question": q, "test": "kruskal", "note": not_computable(reason)} for q in prep.questions]
        return result_table([], POSITION_COLUMNS), result_table(tests, POSITION_TEST_COLUMNS)
    s = s.assign(centered=s["value"] - s.groupby(["model", "question"])["value"].transform("mean"))
    by = (
        s.groupby(["question", "position"])
        .agg(n=("value", "size"), mean=("value", "mean"), sd=("value", "std"), mean_centered=("centered", "mean"))
        .reset_index()
    )
    by["question"] = [prep.questions[q] for q in by["question"]]
    tests = []
    for qi, question in enumerate(prep.questions):
        sq = s[s["question"].to_numpy() == qi]
        groups = [g.to_numpy() for _, g in sq.groupby("position")["value"]]
        row = {"question": question, "test": "kruskal", "n_positions": len(groups), "n": len(sq)}
        if len(groups) < 2:
            tests.append({**row, "note": not_computable("answers at fewer than two positions")})
        elif np.unique(sq["value"].to_numpy()).size < 2:
            tests.append({**row, "note": not_computable("every answer has the same score (no variation)")})
        else:
            res = stats.kruskal(*groups)
            tests.append({**row, "statistic": float(res.statistic), "p_value": float(res.pvalue)})
    return by.loc[:, list(POSITION_COLUMNS)], result_table(tests, POSITION_TEST_COLUMNS)


def _trial_times(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: rater, seconds (the time used: active where known, else wall), wall, active, panels."""
    t = rows.loc[~np.isnan(rows["seconds"].to_numpy()), ["trial", "rater", "seconds", "wall", "active", "n_panels"]]
    return t.groupby("trial", sort=False).agg(
        rater=("rater", "first"), seconds=("seconds", "max"), wall=("wall", "max"), active=("active", "max"),
        n_panels=("n_panels", "max"),
    )


def rating_times(df: pd.DataFrame) -> pd.DataFrame:
    """Seconds per trial (one screen; times are stored per trial): overall (``by == "all"``), per model (the
    trials that showed that model — identical across models when every screen shows every model) and per rater.
    ``median_seconds`` / ``q25_seconds`` / ``q75_seconds`` are of the time used: the active time (page visible and
    not idle) where the page measured it, else the wall time; ``n_active`` trials had an active time,
    ``median_active_seconds`` is their median (NaN when none) and ``median_wall_seconds`` the wall time's, side by
    side. Columns: ``TIMING_COLUMNS``."""
    return timing_table(prepare(df))


def timing_table(prep: Prepared) -> pd.DataFrame:
    r = prep.rows
    if r.empty or np.isnan(r["seconds"].to_numpy()).all():
        return result_table([], TIMING_COLUMNS)
    trials = _trial_times(r)
    timed = r.loc[~np.isnan(r["seconds"].to_numpy()), ["trial", "model", "seconds", "wall", "active"]]
    per_model = timed.drop_duplicates(["trial", "model"])[["model", "seconds", "wall", "active"]]

    def summarise(frame: pd.DataFrame, key: str | None, by: str, labels) -> pd.DataFrame:
        grouped = frame.groupby(key) if key else frame.assign(_k=0).groupby("_k")
        g = grouped["seconds"]
        q = g.quantile([0.25, 0.5, 0.75]).unstack()
        out = pd.DataFrame(
            {"n_trials": g.size(), "median_seconds": q[0.5], "q25_seconds": q[0.25], "q75_seconds": q[0.75],
             "n_active": grouped["active"].count(), "median_active_seconds": grouped["active"].median(),
             "median_wall_seconds": grouped["wall"].median()}
        )
        return out.assign(by=by, key=[labels(k) for k in out.index]).reset_index(drop=True)

    out = pd.concat(
        [
            summarise(trials, None, "all", lambda k: ALL),
            summarise(per_model, "model", "model", lambda k: prep.models[k]),
            summarise(trials, "rater", "rater", lambda k: str(prep.raters[k])),
        ],
        ignore_index=True,
    )
    return out.loc[:, list(TIMING_COLUMNS)]


def rater_summary(df: pd.DataFrame, thresholds: RaterThresholds = RaterThresholds()) -> pd.DataFrame:
    """One row per rater: answers, trials, scored and can't-judge answers, median seconds per trial and per image
    (trial seconds / panels), mean score, most-used score and its share, and agreement with the consensus: for each
    scored answer the consensus is the mean of the *other* raters' first answers on the same image and question;
    ``consensus_corr`` is the Pearson correlation computed within each question and averaged weighted by answers,
    ``consensus_bias`` the mean (answer − consensus). Flags ``too_fast``, ``straight_lining``, ``outlier``: see
    :class:`RaterThresholds`; ``catch_failed`` (with ``n_catch`` checks and ``catch_pass_rate``) from the catch
    trials (:func:`p2p_app.designs.catch_table`). Columns: ``RATER_COLUMNS``."""
    return rater_table(prepare(df), thresholds, rater_catch_table(df, thresholds))


def rater_catch_table(df: pd.DataFrame, th: RaterThresholds) -> pd.DataFrame | None:
    """The per-rater catch table, or ``None`` when the frame has no catch rows."""
    if catch_trial_mask(df) is None:
        return None
    return catch_table(df, th.min_catch_pass_rate, th.min_catch_answers)


def _with_catch(out: pd.DataFrame, catch: pd.DataFrame | None) -> pd.DataFrame:
    """The rater table with the catch columns (zero checks, no flag without catch trials); a rater seen only on
    catch trials gets a row of their own."""
    if catch is None or "n_catch" not in catch.columns or catch["n_catch"].isna().all():
        out["n_catch"] = np.zeros(len(out), dtype=np.int64)
        out["catch_pass_rate"] = np.nan
        out["catch_failed"] = np.zeros(len(out), dtype=bool)
        return out
    c = catch.set_index("rater_id")
    extra = [r for r in c.index if r not in set(out["rater_id"])]
    if extra:
        add = pd.DataFrame({"rater_id": extra, "n_answers": 0, "n_trials": 0, "n_scored": 0, "n_cant_judge": 0,
                            "n_consensus": 0, "too_fast": False, "straight_lining": False, "outlier": False,
                            "note": not_computable("only catch trials")})  # fmt: skip
        out = pd.concat([out, add], ignore_index=True) if len(out) else add
    ids = out["rater_id"].astype(str)
    out["n_catch"] = ids.map(c["n_catch"]).fillna(0).astype("int64").to_numpy()
    out["catch_pass_rate"] = ids.map(c["pass_rate"]).astype(float).to_numpy()
    out["catch_failed"] = ids.map(c["flagged"]).fillna(False).astype(bool).to_numpy()
    for col in ("n_answers", "n_trials", "n_scored", "n_cant_judge", "n_consensus"):
        out[col] = out[col].fillna(0).astype("int64")
    for col in ("too_fast", "straight_lining", "outlier"):
        out[col] = out[col].fillna(False).astype(bool)
    return out.reindex(columns=list(RATER_COLUMNS)).sort_values("rater_id").reset_index(drop=True)


def rater_table(prep: Prepared, th: RaterThresholds, catch: pd.DataFrame | None = None) -> pd.DataFrame:
    r = prep.rows
    if r.empty:
        if catch is not None and not catch["n_catch"].isna().all():
            return _with_catch(pd.DataFrame(columns=list(RATER_COLUMNS)), catch)
        return result_table([{"note": not_computable("no ratings")}], RATER_COLUMNS)
    out = r.groupby("rater").agg(
        n_answers=("value", "size"), n_trials=("trial", "nunique"), n_cant_judge=("cant", "sum")
    )
    trials = _trial_times(r)
    trials["per_image"] = trials["seconds"] / trials["n_panels"].clip(lower=1)
    out = out.join(
        trials.groupby("rater").agg(
            median_seconds=("seconds", "median"), median_seconds_per_image=("per_image", "median"),
            median_wall_seconds=("wall", "median"),
        )
    )
    s = prep.scored
    out = out.join(s.groupby("rater")["value"].agg(n_scored="size", mean="mean"))
    counts = s.groupby(["rater", "value"]).size().rename("k").reset_index()
    counts = counts.sort_values(["rater", "k", "value"], ascending=[True, False, True])  # ties: the lower score
    modal = counts.drop_duplicates("rater").set_index("rater")
    out["modal_score"] = modal["value"]
    out["modal_share"] = modal["k"] / out["n_scored"]
    # consensus: mean of the other raters' first answers on the same image × question
    s = prep.first
    grp = s.groupby(["image", "question"])["value"]
    tot, cnt = grp.transform("sum").to_numpy(), grp.transform("size").to_numpy()
    shared = cnt > 1
    x = s["value"].to_numpy()[shared]
    y = (tot[shared] - x) / (cnt[shared] - 1)
    c = pd.DataFrame({"rater": s["rater"].to_numpy()[shared], "question": s["question"].to_numpy()[shared],
                      "x": x, "y": y, "xx": x * x, "yy": y * y, "xy": x * y})  # fmt: skip
    sums = c.groupby(["rater", "question"]).agg(
        n=("x", "size"), x=("x", "sum"), y=("y", "sum"), xx=("xx", "sum"), yy=("yy", "sum"), xy=("xy", "sum")
    )
    n = sums["n"]
    vx, vy = sums["xx"] - sums["x"] ** 2 / n, sums["yy"] - sums["y"] ** 2 / n
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = ((sums["xy"] - sums["x"] * sums["y"] / n) / np.sqrt(vx * vy)).where((vx > 1e-9) & (vy > 1e-9))
    w = n.where(corr.notna(), 0)
    per = pd.DataFrame({"wc": (corr * n).fillna(0), "w": w, "n": n, "bias": sums["x"] - sums["y"]})
    per = per.groupby("rater").sum()
    out["consensus_corr"] = (per["wc"] / per["w"]).where(per["w"] > 0)
    out["consensus_bias"] = per["bias"] / per["n"]
    out["n_consensus"] = per["n"]
    for col in ("n_scored", "n_consensus", "n_cant_judge"):
        out[col] = out[col].fillna(0).astype("int64")
    enough_c = out["n_consensus"] >= th.min_answers
    out["too_fast"] = (out["median_seconds_per_image"] < th.too_fast_seconds).fillna(False).astype(bool)
    straight = (out["n_scored"] >= th.min_answers) & (out["modal_share"] >= th.straight_lining_share)
    out["straight_lining"] = straight.fillna(False).astype(bool)
    off = (out["consensus_corr"] < th.min_consensus_corr) | (out["consensus_bias"].abs() >= th.max_consensus_bias)
    out["outlier"] = (enough_c & off).fillna(False).astype(bool)
    out["note"] = np.where(
        out["n_consensus"] == 0,
        not_computable("no image shared with another rater (consensus)"),
        np.where(~enough_c, f"consensus flag needs {th.min_answers} shared answers", ""),
    )
    out = out.reset_index()
    out["rater_id"] = [str(prep.raters[k]) for k in out["rater"]]
    out = _with_catch(out, catch)
    return out.loc[:, list(RATER_COLUMNS)].sort_values("rater_id").reset_index(drop=True)
