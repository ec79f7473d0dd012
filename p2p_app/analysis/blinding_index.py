"""Measuring the blinding itself: James' (1996) and Bang's (2004) blinding indices of the raters' model guesses.

After a screen's ratings are stored, a study with ``blinding_index = true`` asks for each image "Which model do you
think made this image?" with the study's options (its models, plus "a real image" where it has real images) and
"Don't know". Each image is an arm (the model that made it, or ``real``); each guess is correct, incorrect (another
option) or don't know. The guesses frame (``Storage.guesses_frame``, ``tidy.GUESS_COLUMNS``) has one row per guess:
``rater_id``, ``truth`` (the image's arm) and ``guess`` (an arm, or ``dont_know``).

* **James' index** (James et al. 1996, Stat Med 15:1421) over the whole (K + 1) x K table (rows: the guesses, the
  last one don't know; columns: the true arms): a weighted kappa with James' weights (0 correct, 1/2 incorrect, 1
  don't know), BI = (1 + P_dk + (1 - P_dk) kappa_d) / 2 and James' large-sample variance, exactly as the R package
  ``BI`` (Schwartz and Mercaldo) computes them for two arms; with K arms the same sums run over K arms (every wrong
  model weighs 1/2). 0 = every guess correct, 0.5 = guesses unrelated to the truth, 1 = every answer don't know.
* **Bang's index** (Bang, Ni and Davis 2004, Control Clin Trials 25:143) per arm m: (n_correct - n_incorrect) / n,
  "guessed m" against "guessed any other option", with Bang's multinomial variance
  [p_c(1 - p_c) + p_i(1 - p_i) + 2 p_c p_i] / n; in [-1, 1], 1 = every image of m recognised. With two arms it is
  Bang's index; with K arms random guessing does not give 0 but ``bang_chance`` = (1 - p_dk)(2/K - 1), the value
  expected when a rater who answers picks an option at random.
* Raters give many guesses, so the Wald intervals above (which assume independent answers) are shown next to a
  **rater-clustered bootstrap** (raters resampled with replacement; the interval of ``designs.rater_interval``:
  estimate ± t(raters − 1) · bootstrap SE · sqrt(R / (R − 1)), kept inside the index's range); the report's
  reading uses the bootstrap.
* **Raters who identify models**: per rater, an exact one-sided binomial test of the correct guesses among those
  that are not don't know against chance 1/K; Holm's correction across raters; ``flagged`` at adjusted p < 0.05.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.stats import binomtest, norm
from statsmodels.stats.multitest import multipletests

from ..designs import rater_interval

DONT_KNOW = "dont_know"
"""The stored guess for "Don't know" (no study option may be called this: ``study.load`` refuses it)."""
FLAG_ALPHA = 0.05
JAMES_COLUMNS = ("n_guesses", "n_dont_know", "james", "se", "ci_low", "ci_high", "boot_ci_low", "boot_ci_high", "note")
BANG_COLUMNS = ("arm", "n_images", "n_correct", "n_incorrect", "n_dont_know", "bang", "se", "ci_low", "ci_high",
                "boot_ci_low", "boot_ci_high", "bang_chance", "note")
RATER_COLUMNS = ("rater_id", "n_guesses", "n_answered", "n_correct", "share_correct", "chance", "p_value", "p_holm",
                 "flagged")


def counts_table(guesses: pd.DataFrame, arms: Sequence[str]) -> np.ndarray:
    """The (K + 1) x K table of counts: row i = guessed arm i (the last row: don't know), column j = true arm j.
    A truth or guess outside ``arms`` (and don't know) is a ValueError: the options are the study's."""
    index = {a: i for i, a in enumerate(arms)}
    k = len(arms)
    if k < 2 or len(index) != k:
        raise ValueError(f"a blinding index needs two or more distinct arms, not {list(arms)!r}")
    truth, guess = guesses["truth"].astype(str).tolist(), guesses["guess"].astype(str).tolist()
    bad = sorted({t for t in truth if t not in index} | {g for g in guess if g != DONT_KNOW and g not in index})
    if bad:
        raise ValueError(f"guesses name arms that are not options: {', '.join(map(repr, bad))}")
    table = np.zeros((k + 1, k))
    np.add.at(table, ([index.get(g, k) for g in guess], [index[t] for t in truth]), 1)
    return table


def james_weights(k: int) -> np.ndarray:
    """James' weights for the K guessed arms x K true arms: 0 on the diagonal (correct), 1/2 elsewhere."""
    return 0.5 * (1.0 - np.eye(k))


def james_index(table: np.ndarray) -> tuple[float, float]:
    """James' BI and its standard error (James 1996, eq. for the variance as in R ``BI::BI``) of a (K + 1) x K
    table (:func:`counts_table`). Every answer don't know: BI = 1, SE = 0 (James 1996, p. 1425); a table whose
    expected disagreement is 0 (e.g. one arm only guessed and present): NaN."""
    table = np.asarray(table, dtype=float)
    n = table.sum()
    k = table.shape[1]
    if n == 0:
        return float("nan"), float("nan")
    if not table[:k].any():
        return 1.0, 0.0
    w = james_weights(k)
    p = table / n
    p_dk = p[k].sum()
    rows = p[:k].sum(axis=1)  # P_i. of the guessed arms
    cols = p.sum(axis=0) - p[k]  # P_.j - P_dk,j: the answered share of true arm j
    pdo = (w * p[:k]).sum() / (1 - p_dk)
    expected = (w * np.outer(rows, cols)).sum()
    pde = expected / (1 - p_dk) ** 2
    if pde == 0:
        return float("nan"), float("nan")
    kd = (pdo - pde) / pde
    extra = (w * rows[:, None]).sum(axis=0)[None, :] + (w * cols[None, :]).sum(axis=1)[:, None]
    num = (p[:k] * (1 - p_dk) ** 2 * ((1 - p_dk) * w - (1 + kd) * extra) ** 2).sum()
    v1 = num / (4 * expected**2)
    v2 = p_dk * (1 - p_dk) - (1 - p_dk) * (1 + kd) * (p_dk + (1 - p_dk) * (1 + kd) / 4)
    est = (1 + p_dk + (1 - p_dk) * kd) / 2
    return float(est), float(np.sqrt(max((v1 + v2) / n, 0.0)))


def bang_index(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bang's BI per true arm (column) of a (K + 1) x K table and its standard error (Bang 2004): (n_c - n_i) / n
    with n_i every other answered guess; NaN for an arm with no images."""
    table = np.asarray(table, dtype=float)
    k = table.shape[1]
    n = table.sum(axis=0)
    correct = np.diag(table[:k])
    incorrect = table[:k].sum(axis=0) - correct
    with np.errstate(invalid="ignore", divide="ignore"):
        pc, pi = correct / n, incorrect / n
        est = pc - pi
        se = np.sqrt((pc * (1 - pc) + pi * (1 - pi) + 2 * pc * pi) / n)
    return est, se


def bang_chance(table: np.ndarray) -> np.ndarray:
    """Bang's BI per arm expected under random guessing among the K options at each arm's don't-know rate."""
    table = np.asarray(table, dtype=float)
    k = table.shape[1]
    n = table.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (1 - table[k] / n) * (2 / k - 1)


def _rater_tables(guesses: pd.DataFrame, arms: Sequence[str]) -> tuple[list[str], np.ndarray]:
    raters = sorted(guesses["rater_id"].astype(str).unique())
    tables = np.stack([counts_table(guesses[guesses["rater_id"].astype(str) == r], arms) for r in raters])
    return raters, tables


def _bootstrap(tables: np.ndarray, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """James' BI (n_boot) and Bang's BI (n_boot x K) of ``n_boot`` resamples of the raters (with replacement)."""
    rng = np.random.default_rng(seed)
    r = tables.shape[0]
    weights = rng.multinomial(r, np.full(r, 1.0 / r), size=n_boot)  # how often each rater is drawn
    boot = np.einsum("br,rij->bij", weights, tables)
    james = np.array([james_index(t)[0] for t in boot])
    bang = np.stack([bang_index(t)[0] for t in boot])
    return james, bang


def _interval(point: float, reps: np.ndarray, n_raters: int, ci_level: float,
              bounds: tuple[float, float]) -> tuple[float, float]:
    """The rater-bootstrap interval (``designs.rater_interval``) of ``point``, inside ``bounds``."""
    ok = reps[np.isfinite(reps)]
    if ok.size < 2 or n_raters < 2 or not np.isfinite(point):
        return float("nan"), float("nan")
    lo, hi = rater_interval(point, ok, n_raters, ci_level)
    return float(max(lo, bounds[0])), float(min(hi, bounds[1]))


def rater_table(guesses: pd.DataFrame, arms: Sequence[str]) -> pd.DataFrame:
    """Per rater: correct guesses among answered ones, the exact one-sided binomial p against chance 1/K, Holm's
    adjustment across raters, ``flagged`` when it is below 0.05 (a rater who recognises models)."""
    raters, tables = _rater_tables(guesses, arms)
    k = len(arms)
    rows = []
    for rater, t in zip(raters, tables, strict=True):
        answered, correct = int(t[:k].sum()), int(np.trace(t[:k]))
        p = binomtest(correct, answered, 1 / k, alternative="greater").pvalue if answered else float("nan")
        rows.append({"rater_id": rater, "n_guesses": int(t.sum()), "n_answered": answered, "n_correct": correct,
                     "share_correct": correct / answered if answered else float("nan"), "chance": 1 / k,
                     "p_value": float(p)})
    out = pd.DataFrame(rows, columns=list(RATER_COLUMNS[:-2]))
    ok = out["p_value"].notna().to_numpy()
    out["p_holm"] = np.nan
    if ok.any():
        out.loc[ok, "p_holm"] = multipletests(out.loc[ok, "p_value"].to_numpy(), method="holm")[1]
    out["flagged"] = (out["p_holm"] < FLAG_ALPHA).fillna(False).astype(bool)
    return out.loc[:, list(RATER_COLUMNS)]


@dataclass(frozen=True)
class BlindingIndex:
    """James' index overall (one row), Bang's per arm, and the per-rater recognition test."""

    james: pd.DataFrame
    bang: pd.DataFrame
    raters: pd.DataFrame

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"blinding_james": self.james, "blinding_bang": self.bang, "blinding_raters": self.raters}


def blinding_index(guesses: pd.DataFrame, arms: Sequence[str], *, n_boot: int = 1000, seed: int = 0,
                   ci_level: float = 0.95) -> BlindingIndex:
    """The blinding tables of a guesses frame (columns ``rater_id``, ``truth``, ``guess``; practice rows already
    left out) with the study's options ``arms`` (models, plus ``real`` where it has real images)."""
    if not 0 < ci_level < 1:
        raise ValueError(f"ci_level must lie in (0, 1), not {ci_level!r}")
    table = counts_table(guesses, arms)
    z = norm.ppf(1 - (1 - ci_level) / 2)
    k = len(arms)
    raters, tables = _rater_tables(guesses, arms) if len(guesses) else ([], np.zeros((0, k + 1, k)))
    boot_j, boot_b = _bootstrap(tables, n_boot, seed) if len(raters) >= 2 else (np.array([]), np.zeros((0, k)))
    note_few = "" if len(raters) >= 2 else "not computable: the bootstrap needs two or more raters"
    j, j_se = james_index(table)
    james = pd.DataFrame([{"n_guesses": int(table.sum()), "n_dont_know": int(table[k].sum()), "james": j,
                           "se": j_se, "ci_low": j - z * j_se, "ci_high": j + z * j_se,
                           **dict(zip(("boot_ci_low", "boot_ci_high"),
                                      _interval(j, boot_j, len(raters), ci_level, (0.0, 1.0)))),
                           "note": note_few}], columns=list(JAMES_COLUMNS))
    est, se = bang_index(table)
    chance = bang_chance(table)
    rows = []
    for i, arm in enumerate(arms):
        lo, hi = (_interval(est[i], boot_b[:, i], len(raters), ci_level, (-1.0, 1.0)) if len(boot_b)
                  else (float("nan"), float("nan")))
        n = int(table[:, i].sum())
        rows.append({"arm": arm, "n_images": n, "n_correct": int(table[i, i]),
                     "n_incorrect": int(table[:k, i].sum() - table[i, i]), "n_dont_know": int(table[k, i]),
                     "bang": est[i], "se": se[i], "ci_low": est[i] - z * se[i], "ci_high": est[i] + z * se[i],
                     "boot_ci_low": lo, "boot_ci_high": hi, "bang_chance": chance[i],
                     "note": "not computable: no guesses on this arm's images" if n == 0 else note_few})
    bang = pd.DataFrame(rows, columns=list(BANG_COLUMNS))
    raters_df = rater_table(guesses, arms) if len(guesses) else pd.DataFrame(columns=list(RATER_COLUMNS))
    return BlindingIndex(james, bang, raters_df)
