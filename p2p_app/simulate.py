"""Seeded simulator of a blinded rating study, producing the tidy ratings frame (docs/CONTRACTS.md).

Design simulated (what a study in this project looks like):

* ``n_prompts`` prompts, each generated with ``seeds_per_prompt`` seeds by every model; an *item* is one
  (prompt, seed slot) screen showing one image per model, plus one real control image for that prompt when
  ``include_real`` — in a shuffled panel order drawn per trial and stored in ``position``.
* Every item is rated by ``overlap_k`` distinct raters (a trial = one item shown to one rater); a
  ``repeat_fraction`` of trials is shown again later to the same rater (``is_repeat``) for intra-rater consistency.
* Score of rater r for image i on question q: ``round(quality[model, q] + bias[r, q] + effect[i, q] + noise)``
  clipped to 1..5, with ``bias ~ N(0, rater_bias_sd)``, ``effect ~ N(0, image_sd)``, ``noise ~ N(0, s_r)`` and
  ``s_r ~ U(rater_noise)``. Because rounding and clipping are monotone and everything else is shared, the expected
  score orders the models exactly as ``quality`` does: :func:`true_order` is the known truth.
* ``careless_raters`` raters answer every image with one score in under a second (to exercise the rater flags);
  ``cant_judge_rate`` of (trial, image) panels are "can't judge"; timestamps follow each rater's sessions.

Everything is vectorised with numpy (no per-row Python loop); 1,000,000 rows take a couple of seconds.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from .analysis import ALIGNMENT, GENERATED_SOURCE, REAL_MODEL, REAL_SOURCE, REALISM, TIDY_COLUMNS, TIDY_DTYPES
from .tidy import CATCH_BROKEN, CATCH_REAL, CHOSEN_REAL, RANK_PREFIX, TIDY_DEFAULTS

QUESTIONS: tuple[str, ...] = (REALISM, ALIGNMENT)
DEFAULT_MODELS: Mapping[str, tuple[float, float]] = types.MappingProxyType(
    {"model-a": (3.6, 3.9), "model-b": (3.0, 3.5), "model-c": (2.3, 2.9)}
)
"""Model → true latent quality (realism, alignment) on the 1..5 scale."""
DEFAULT_REAL_QUALITY: tuple[float, float] = (4.2, 4.3)
DEFAULT_START = "2026-03-02T08:00:00Z"

_COLONOSCOPY = (
    ("sessile", "pedunculated", "flat", "serrated", "ulcerated"),
    ("3", "5", "8", "12", "20"),
    ("caecum", "ascending colon", "transverse colon", "descending colon", "sigmoid colon", "rectum"),
    ("white-light", "narrow-band imaging", "chromoendoscopy"),
)
_RADIOLOGY = (
    ("chest X-ray", "CT slice", "MRI slice"),
    ("a small nodule", "a pleural effusion", "consolidation", "no abnormality", "a mass"),
    ("left upper", "left lower", "right upper", "right lower"),
)
_COMMENTS = ("blurry", "overexposed", "anatomy looks implausible", "text artefact in a corner", "very convincing")


def true_order(models: Mapping[str, Sequence[float]] = DEFAULT_MODELS, question: str = REALISM) -> list[str]:
    """Generated models from best to worst true quality on ``question`` (the simulator's known truth)."""
    q = QUESTIONS.index(question)
    return sorted(models, key=lambda m: -float(_quality_pair(models[m])[q]))


def _quality_pair(q) -> tuple[float, float]:
    if isinstance(q, Mapping):
        return float(q[REALISM]), float(q[ALIGNMENT])
    realism, alignment = q
    return float(realism), float(alignment)


def check_inputs(
    n_raters: int,
    n_prompts: int,
    models: Mapping,
    seeds_per_prompt: int,
    overlap_k: int,
    repeat_fraction: float,
    include_real: bool,
    cant_judge_rate: float,
    careless_raters: int,
) -> None:
    """Raise ``ValueError`` with an exact message for any impossible setting."""
    if n_raters < 1:
        raise ValueError(f"n_raters must be >= 1, got {n_raters}")
    if n_prompts < 1:
        raise ValueError(f"n_prompts must be >= 1, got {n_prompts}")
    if seeds_per_prompt < 1:
        raise ValueError(f"seeds_per_prompt must be >= 1, got {seeds_per_prompt}")
    if not 1 <= overlap_k <= n_raters:
        raise ValueError(f"overlap_k must be between 1 and n_raters ({n_raters}), got {overlap_k}")
    if not 0 <= repeat_fraction <= 1:
        raise ValueError(f"repeat_fraction must be between 0 and 1, got {repeat_fraction}")
    if not 0 <= cant_judge_rate < 1:
        raise ValueError(f"cant_judge_rate must be in [0, 1), got {cant_judge_rate}")
    if not 0 <= careless_raters <= n_raters:
        raise ValueError(f"careless_raters must be between 0 and n_raters ({n_raters}), got {careless_raters}")
    if not models and not include_real:
        raise ValueError("models is empty and include_real is False: nothing to rate")
    if REAL_MODEL in models:
        raise ValueError(f"{REAL_MODEL!r} is reserved for real control images; rename that model")
    for name, q in models.items():
        try:
            _quality_pair(q)
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"quality of model {name!r} must be (realism, alignment), got {q!r}") from exc


def _strings(categories: Sequence[str], codes: np.ndarray) -> pd.Series:
    """A pandas ``str`` column from categories and integer codes (pyarrow take; no Python loop over rows)."""
    arr = pa.array(list(categories), type=pa.string()).take(pa.array(np.asarray(codes, dtype=np.int64)))
    return pd.Series(arr, dtype=pd.StringDtype("pyarrow", na_value=np.nan))


def _prompts(rng: np.random.Generator, n: int, modalities: Sequence[str]) -> tuple[list[str], list[str]]:
    texts, mods = [], []
    for i in range(n):
        modality = modalities[i % len(modalities)]
        if modality == "radiology":
            kind, finding, zone = (p[rng.integers(len(p))] for p in _RADIOLOGY)
            texts.append(f"{kind} showing {finding} in the {zone} zone")
        else:
            morph, size, site, light = (p[rng.integers(len(p))] for p in _COLONOSCOPY)
            texts.append(f"colonoscopy, {light}: a {size} mm {morph} polyp in the {site}")
        mods.append(modality)
    return texts, mods


def _assign_raters(rng: np.random.Generator, n_items: int, n_raters: int, k: int) -> np.ndarray:
    """n_items × k distinct raters per item: a random start on a shuffled rater circle plus random strides."""
    circle = rng.permutation(n_raters)
    start = rng.integers(0, n_raters, n_items)[:, None]
    if k == 1:
        return circle[start]
    max_step = max(1, (n_raters - 1) // (k - 1))
    steps = rng.integers(1, max_step + 1, (n_items, k - 1))
    offsets = np.concatenate([np.zeros((n_items, 1), dtype=np.int64), np.cumsum(steps, axis=1)], axis=1)
    return circle[(start + offsets) % n_raters]


def frame_from_matrix(
    scores,
    question: str = REALISM,
    unit_models: Sequence[str] | None = None,
    rater_ids: Sequence[str] | None = None,
    unit_ids: Sequence[str] | None = None,
    study: str = "matrix",
    start: str = DEFAULT_START,
) -> pd.DataFrame:
    """A tidy frame from a raters × units score matrix (NaN = not rated): one answer per non-missing cell, each on
    its own one-panel trial, in rater order. Units are images (``image_id == item_id``); ``unit_models`` gives each
    unit's model (default ``"model-a"``; ``"real"`` makes it a real control). For published worked examples and
    hand-checkable tests."""
    m = np.asarray(scores, dtype=float)
    if m.ndim != 2:
        raise ValueError(f"scores must be a 2-D raters × units matrix, got shape {m.shape}")
    n_r, n_u = m.shape
    rater_ids = list(rater_ids) if rater_ids is not None else [f"r{i + 1:03d}" for i in range(n_r)]
    unit_ids = list(unit_ids) if unit_ids is not None else [f"u{j + 1:03d}" for j in range(n_u)]
    unit_models = list(unit_models) if unit_models is not None else ["model-a"] * n_u
    if len(rater_ids) != n_r or len(unit_ids) != n_u or len(unit_models) != n_u:
        raise ValueError("rater_ids, unit_ids and unit_models must match the matrix shape")
    r, u = np.nonzero(~np.isnan(m))
    n = len(r)
    shown = pd.Timestamp(start) + pd.to_timedelta(np.arange(n) * 30, unit="s")
    is_real = np.array([x == REAL_MODEL for x in unit_models], dtype=bool)
    seed = pd.array(np.where(is_real[u], 0, u + 1), dtype="Int64")
    seed[is_real[u]] = pd.NA
    order_index = np.arange(n) - np.searchsorted(r, r)
    frame = pd.DataFrame(
        {
            "study": study,
            "rater_id": np.asarray(rater_ids, dtype=object)[r],
            "item_id": np.asarray(unit_ids, dtype=object)[u],
            "trial_id": np.arange(1, n + 1, dtype=np.int64),
            "image_id": np.asarray(unit_ids, dtype=object)[u],
            "model": np.asarray(unit_models, dtype=object)[u],
            "source": np.where(is_real[u], REAL_SOURCE, GENERATED_SOURCE),
            "prompt_id": [f"p{j + 1:04d}" for j in u],
            "prompt": [f"prompt {j + 1}" for j in u],
            "modality": "colonoscopy",
            "seed": seed,
            "position": np.ones(n, dtype=np.int64),
            "n_panels": np.ones(n, dtype=np.int64),
            "order_index": order_index.astype(np.int64),
            "question": question,
            "value": m[r, u],
            "choices": "",
            "cant_judge": np.zeros(n, dtype=bool),
            "comment": "",
            "shown_at": pd.Series(shown),
            "answered_at": pd.Series(shown + pd.Timedelta(seconds=10)),
            "seconds": np.full(n, 10.0),
            "is_repeat": np.zeros(n, dtype=bool),
            **TIDY_DEFAULTS,
        }
    )
    return frame.astype(dict(TIDY_DTYPES)).loc[:, list(TIDY_COLUMNS)]


def simulate_ratings(
    n_raters: int = 12,
    n_prompts: int = 20,
    models: Mapping[str, Sequence[float]] = DEFAULT_MODELS,
    seeds_per_prompt: int = 2,
    overlap_k: int = 3,
    repeat_fraction: float = 0.1,
    include_real: bool = True,
    *,
    real_quality: Sequence[float] = DEFAULT_REAL_QUALITY,
    rater_bias_sd: float = 0.3,
    rater_noise: tuple[float, float] = (0.5, 0.9),
    image_sd: float = 0.4,
    cant_judge_rate: float = 0.01,
    comment_rate: float = 0.02,
    careless_raters: int = 0,
    seconds_per_image: float = 6.0,
    modalities: Sequence[str] = ("colonoscopy", "radiology"),
    study: str = "sim",
    start: str = DEFAULT_START,
    seed: int = 0,
) -> pd.DataFrame:
    """Simulate a study and return its tidy ratings frame (contract columns and dtypes, sorted by trial and panel).

    ``models`` maps model name → true quality ``(realism, alignment)`` (or ``{"realism": .., "alignment": ..}``)
    on the latent 1..5 scale; ``real_quality`` is the same for real control images. Rows =
    ``n_prompts · seeds_per_prompt · overlap_k · (1 + repeat_fraction) · panels · 2`` with
    ``panels = len(models) + include_real``.
    """
    check_inputs(n_raters, n_prompts, models, seeds_per_prompt, overlap_k, repeat_fraction, include_real,
                 cant_judge_rate, careless_raters)  # fmt: skip
    rng = np.random.default_rng(seed)
    names = list(models) + ([REAL_MODEL] if include_real else [])
    pairs = [_quality_pair(models[m]) for m in models] + ([_quality_pair(real_quality)] if include_real else [])
    quality = np.array(pairs)
    n_src, n_q = len(names), len(QUESTIONS)
    n_items = n_prompts * seeds_per_prompt
    item_prompt = np.arange(n_items) // seeds_per_prompt
    item_seed = rng.integers(0, 2**31 - 1, n_items)

    # raters
    bias = rng.normal(0.0, rater_bias_sd, (n_raters, n_q))
    noise_sd = rng.uniform(rater_noise[0], rater_noise[1], n_raters)
    pace = seconds_per_image * np.exp(rng.normal(0.0, 0.3, n_raters))
    careless = np.zeros(n_raters, dtype=bool)
    careless[rng.choice(n_raters, careless_raters, replace=False)] = True
    pace[careless] = 0.6
    careless_score = rng.integers(3, 5, n_raters).astype(float)
    rater_start = pd.Timestamp(start).value + rng.integers(0, 7 * 86_400, n_raters) * 1_000_000_000

    # trials: each item to overlap_k raters, plus repeats shown later to the same rater
    raters = _assign_raters(rng, n_items, n_raters, overlap_k)
    t_item = np.repeat(np.arange(n_items), overlap_k)
    t_rater = raters.ravel()
    key = rng.random(len(t_item))
    rep = rng.choice(len(t_item), int(round(repeat_fraction * len(t_item))), replace=False)
    t_item = np.r_[t_item, t_item[rep]]
    t_rater = np.r_[t_rater, t_rater[rep]]
    t_repeat = np.r_[np.zeros(len(key), bool), np.ones(len(rep), bool)]
    key = np.r_[key, key[rep] + (1 - key[rep]) * rng.random(len(rep))]
    order = np.lexsort((key, t_rater))
    t_item, t_rater, t_repeat = t_item[order], t_rater[order], t_repeat[order]
    n_trials = len(t_item)
    first_of_rater = np.searchsorted(t_rater, np.arange(n_raters))
    order_index = np.arange(n_trials) - first_of_rater[t_rater]

    # timing: sessions per rater; seconds per trial scale with the panels shown
    seconds = np.round(n_src * pace[t_rater] * np.exp(rng.normal(0.0, 0.4, n_trials)), 3)
    gap = rng.exponential(15.0, n_trials) + (rng.random(n_trials) < 0.03) * rng.uniform(3_600, 72_000, n_trials)
    step = seconds + gap
    cum = np.cumsum(step) - step
    offset = cum - cum[first_of_rater[t_rater]]
    shown_ns = rater_start[t_rater] + np.round(offset * 1e9).astype(np.int64)
    answered_ns = shown_ns + np.round(seconds * 1e9).astype(np.int64)
    by_time = np.argsort(shown_ns, kind="stable")  # database ids follow time
    t_item, t_rater, t_repeat, order_index = t_item[by_time], t_rater[by_time], t_repeat[by_time], order_index[by_time]
    seconds, shown_ns, answered_ns = seconds[by_time], shown_ns[by_time], answered_ns[by_time]

    # rows: trial × position × question; the panel at each position is a per-trial shuffle
    panel_at = np.argsort(rng.random((n_trials, n_src)), axis=1)
    r_trial = np.repeat(np.arange(n_trials), n_src * n_q)
    r_posidx = np.tile(np.repeat(np.arange(n_src), n_q), n_trials)
    r_q = np.tile(np.arange(n_q), n_trials * n_src)
    r_panel = panel_at[r_trial, r_posidx]
    r_rater = t_rater[r_trial]
    r_item = t_item[r_trial]
    r_image = r_item * n_src + r_panel
    effect = rng.normal(0.0, image_sd, (n_items * n_src, n_q))
    latent = (quality[r_panel, r_q] + bias[r_rater, r_q] + effect[r_image, r_q]
              + noise_sd[r_rater] * rng.standard_normal(len(r_trial)))  # fmt: skip
    value = np.clip(np.rint(latent), 1, 5)
    value = np.where(careless[r_rater], careless_score[r_rater], value)
    tp = r_trial * n_src + r_posidx  # (trial, panel) index
    cant = (rng.random(n_trials * n_src) < cant_judge_rate)[tp]
    value[cant] = np.nan
    n_tp = n_trials * n_src
    comment_pick = np.where(rng.random(n_tp) < comment_rate, rng.integers(1, len(_COMMENTS) + 1, n_tp), 0)

    # labels
    prompts, mods = _prompts(rng, n_prompts, list(modalities))
    width = max(3, len(str(n_raters)))
    rater_ids = [f"r{i + 1:0{width}d}" for i in range(n_raters)]
    item_ids = [f"i{i + 1:05d}" for i in range(n_items)]
    prompt_ids = [f"p{i + 1:04d}" for i in range(n_prompts)]
    # opaque image ids: an invertible scramble of the image index (unique, unrelated to model or prompt)
    mixed = np.arange(n_items * n_src, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(seed)
    mixed &= np.uint64((1 << 48) - 1)
    image_ids = [f"img_{int(x):012x}" for x in mixed]
    is_real = np.array([n == REAL_MODEL for n in names])
    r_prompt = item_prompt[r_item]
    seed_vals = item_seed[r_item]
    seed_col = pd.array(seed_vals, dtype="Int64")
    seed_col[is_real[r_panel]] = pd.NA

    def ts(ns: np.ndarray) -> pd.Series:
        return pd.Series(pd.DatetimeIndex(ns.view("datetime64[ns]")).tz_localize("UTC"))

    out = pd.DataFrame(
        {
            "study": _strings([study], np.zeros(len(r_trial), np.int64)),
            "rater_id": _strings(rater_ids, r_rater),
            "item_id": _strings(item_ids, r_item),
            "trial_id": (r_trial + 1).astype(np.int64),
            "image_id": _strings(image_ids, r_image),
            "model": _strings(names, r_panel),
            "source": _strings([REAL_SOURCE if r else GENERATED_SOURCE for r in is_real], r_panel),
            "prompt_id": _strings(prompt_ids, r_prompt),
            "prompt": _strings(prompts, r_prompt),
            "modality": _strings(mods, r_prompt),
            "seed": seed_col,
            "position": (r_posidx + 1).astype(np.int64),
            "n_panels": np.full(len(r_trial), n_src, dtype=np.int64),
            "order_index": order_index[r_trial].astype(np.int64),
            "question": _strings(QUESTIONS, r_q),
            "value": value,
            "choices": _strings([""], np.zeros(len(r_trial), np.int64)),
            "cant_judge": cant,
            "comment": _strings(("",) + _COMMENTS, comment_pick[tp]),
            "shown_at": ts(shown_ns[r_trial]),
            "answered_at": ts(answered_ns[r_trial]),
            "seconds": seconds[r_trial],
            "is_repeat": t_repeat[r_trial],
            **{c: _strings([str(v)], np.zeros(len(r_trial), np.int64)) for c, v in TIDY_DEFAULTS.items()},
        }
    )
    return out.loc[:, list(TIDY_COLUMNS)]
