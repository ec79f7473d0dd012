"""The simulator branch of the naive → disclosed design: a tidy frame with known per-model noticing and detection
probabilities and raters who differ, so that :mod:`p2p_app.analysis.disclosure` can be checked against the truth
(:func:`disclosure_truth`).

Model: every rater reads every image twice, first naive (phase 1), then after the disclosure (phase 2, a fresh
order). Rater ``r`` has two effects on the logit scale, ``u_r, v_r ~ N(0, rater_sd)`` (independent); for an image
of model ``m`` with probabilities ``(notice, detect)`` the rater notices it in phase 1 with ``expit(logit(notice) +
u_r)`` — writing an "anything unusual?" text that the default keyword rule flags — and calls it correctly in phase
2 (a generated image synthetic, a real one real) with ``expit(logit(detect) + v_r)``. For real images ``notice`` is
the false-alarm rate (a real image flagged as made by a computer). The population values the analysis estimates
are the means over raters, ``E_u[expit(logit(p) + u)]`` (Gauss–Hermite, :func:`disclosure_truth`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from .study import SOURCE_CALL_KEY, UNUSUAL_KEY
from .tidy import GENERATED_SOURCE, REAL_MODEL, REAL_SOURCE, TIDY_COLUMNS, TIDY_DEFAULTS, TIDY_DTYPES

DEFAULT_DISCLOSURE_MODELS: Mapping[str, tuple[float, float]] = {"model_a": (0.4, 0.75), "model_b": (0.1, 0.6)}
"""Model → (P(noticed in phase 1), P(called synthetic in phase 2)): the 2026 study's 41 % and 75 % as model_a."""
DEFAULT_REAL = (0.05, 0.7)  # real images: P(flagged in phase 1), P(called real in phase 2)
NOTICING_TEXTS = ("looks computer generated", "probably AI", "synthetic texture", "the mucosa looks artificial",
                  "fake looking vessels")
OTHER_TEXTS = ("", "", "", "slight blur at the edge", "bubbles in view", "odd lighting")
"""Texts of an image not noticed: none of them matches the default keyword rule."""


def _population_mean(p: float, sd: float) -> float:
    if sd == 0:
        return float(p)
    x, w = np.polynomial.hermite_e.hermegauss(60)
    return float((expit(logit(p) + sd * x) * w).sum() / w.sum())


def disclosure_truth(models: Mapping[str, tuple[float, float]] = DEFAULT_DISCLOSURE_MODELS,
                     real: tuple[float, float] = DEFAULT_REAL, rater_sd: float = 0.6,
                     images_per_model: int = 20, n_real: int = 20) -> dict[str, tuple[float, float]]:  # fmt: skip
    """Row name of :func:`p2p_app.analysis.disclosure.disclosure_table` → true (noticed, detected)."""
    out = {m: (_population_mean(a, rater_sd), _population_mean(b, rater_sd)) for m, (a, b) in models.items()}
    gen = np.array(list(out.values()))
    out["all generated"] = tuple(gen.mean(axis=0))
    out[REAL_MODEL] = (_population_mean(real[0], rater_sd), _population_mean(real[1], rater_sd))
    n_gen = images_per_model * len(models)
    acc = (gen[:, 1].mean() * n_gen + out[REAL_MODEL][1] * n_real) / (n_gen + n_real)
    out["all images"] = (np.nan, float(acc))
    return out


def simulate_naive_disclosed(
    models: Mapping[str, tuple[float, float]] = DEFAULT_DISCLOSURE_MODELS,
    real: tuple[float, float] = DEFAULT_REAL,
    n_raters: int = 8,
    images_per_model: int = 20,
    n_real: int = 20,
    rater_sd: float = 0.6,
    seed: int = 0,
    study: str = "sim_naive@v1",
) -> pd.DataFrame:
    """A tidy frame of the design (module docstring): per rater and image one ``unusual`` row in phase 1 (the text
    in ``comment``) and one ``real_or_synthetic`` call (1–3 synthetic, 4–6 real) in phase 2."""
    for name, pair in (*models.items(), (REAL_MODEL, real)):
        if len(pair) != 2 or not all(0 < p < 1 for p in pair):
            raise ValueError(f"{name}: probabilities must be two numbers in (0, 1), got {pair!r}")
    if n_raters < 1 or images_per_model < 1 or n_real < 0 or rater_sd < 0:
        raise ValueError("need n_raters >= 1, images_per_model >= 1, n_real >= 0 and rater_sd >= 0")
    rng = np.random.default_rng(seed)
    images = [(m, f"{m}-{i}") for m in models for i in range(images_per_model)]
    images += [(REAL_MODEL, f"real-{i}") for i in range(n_real)]
    probs = {**models, REAL_MODEL: real}
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    rows, trial = [], 0
    for r in range(n_raters):
        u, v = rng.normal(0, rater_sd, 2)
        for phase, order in (("naive", rng.permutation(len(images))), ("disclosed", rng.permutation(len(images)))):
            for j in order:
                model, key = images[j]
                notice, detect = probs[model]
                if phase == "naive":
                    hit = rng.random() < expit(logit(notice) + u)
                    texts = NOTICING_TEXTS if hit else OTHER_TEXTS
                    answer = {"question": UNUSUAL_KEY, "value": np.nan, "comment": texts[rng.integers(len(texts))]}
                else:
                    correct = rng.random() < expit(logit(detect) + v)
                    called_real = correct == (model == REAL_MODEL)
                    value = rng.integers(4, 7) if called_real else rng.integers(1, 4)
                    answer = {"question": SOURCE_CALL_KEY, "value": float(value), "comment": ""}
                shown = t0 + pd.Timedelta(seconds=20 * trial)
                rows.append({
                    "study": study, "rater_id": f"r{r + 1:02d}", "item_id": f"{phase}:{key}", "trial_id": trial + 1,
                    "image_id": key, "model": model, "source": REAL_SOURCE if model == REAL_MODEL else GENERATED_SOURCE,
                    "prompt_id": key, "prompt": "description", "modality": "colonoscopy", "seed": pd.NA,
                    "position": 1, "n_panels": 1, "order_index": trial - r * 2 * len(images), "choices": "",
                    "cant_judge": False, "shown_at": shown, "answered_at": shown + pd.Timedelta(seconds=12),
                    "seconds": 12.0, "is_repeat": False, **TIDY_DEFAULTS, "phase": phase, **answer,
                })  # fmt: skip
                trial += 1
    return pd.DataFrame(rows).astype(dict(TIDY_DTYPES)).loc[:, list(TIDY_COLUMNS)]
