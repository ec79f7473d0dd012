"""Seeded simulator of a blinded rating study, producing the tidy ratings frame (docs/CONTRACTS.md).

Design simulated (what a study in this project looks like):

* ``n_prompts`` prompts, each generated with ``seeds_per_prompt`` seeds by every model; an *item* is one
  (prompt, seed slot) screen showing one image per model, plus one real control image for that prompt when
  ``include_real`` — in a shuffled panel order drawn per trial and stored in ``position``.
* Who sees what is the app's rule, not the simulator's own: every item goes to ``overlap_k`` distinct rater slots,
  each slot's items come in its order with ``ceil(repeat_fraction × n)`` repeats (``is_repeat``) and
  ``ceil(catch_rate × n)`` catch screens, exactly as :mod:`p2p_app.assignment` assigns slot r of a study named
  ``study`` (version 1) with seed ``seed`` (:func:`app_sequences`, :func:`app_catch_gaps`), so simulated rater
  loads (differing by at most one) and catch counts are the app's.
* Score of rater r for image i on question q: ``round(quality[model, q] + bias[r, q] + effect[i, q] + noise)``
  clipped to 1..5, with ``bias ~ N(0, rater_bias_sd)``, ``effect ~ N(0, image_sd)``, ``noise ~ N(0, s_r)`` and
  ``s_r ~ U(rater_noise)``. Because rounding and clipping are monotone and everything else is shared, the expected
  score orders the models exactly as ``quality`` does: :func:`true_order` is the known truth.
* ``careless_raters`` raters answer every image with one score in under a second (to exercise the rater flags);
  ``cant_judge_rate`` of (trial, image) panels are "can't judge"; timestamps follow each rater's sessions.

The rows are vectorised with numpy (the assignment hashes once per item and slot); 1,000,000 rows take a few
seconds.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from .assignment import catch_count, catch_gaps, coverage, seed_namespace, slot_trials
from .tidy import (
    ALIGNMENT,
    CATCH_BROKEN,
    CATCH_REAL,
    CHOSEN_REAL,
    GENERATED_SOURCE,
    RANK_PREFIX,
    REAL_MODEL,
    REAL_SOURCE,
    REALISM,
    TIDY_COLUMNS,
    TIDY_DEFAULTS,
    TIDY_DTYPES,
)

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


def app_coverage(n_items: int, n_raters: int, k: int, namespace: str) -> np.ndarray:
    """n_items × k rater slots per item, as the app assigns them (:func:`p2p_app.assignment.coverage`: every item
    to ``k`` distinct slots, slot loads differing by at most 1), hashed from ``namespace``."""
    slots = coverage(n_items, n_raters, k, namespace)
    return np.array(slots, dtype=np.int64).reshape(n_items, k)


def item_key(i: int) -> str:
    """The item id (and assignment key) of simulated item ``i`` (0-based)."""
    return f"i{i + 1:05d}"


def app_sequences(
    n_items: int, n_raters: int, overlap_k: int, repeat_fraction: float, namespace: str
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per rater slot, its design trials in the app's order: (item index, is_repeat) arrays. Items, order and
    repeats come from :mod:`p2p_app.assignment` (:func:`~p2p_app.assignment.coverage`,
    :func:`~p2p_app.assignment.slot_trials`), so a simulated rater's load is what the app would give that slot."""
    mine: list[list[str]] = [[] for _ in range(n_raters)]
    for i, slots in enumerate(coverage(n_items, n_raters, overlap_k, namespace)):
        for r in slots:
            mine[r].append(item_key(i))
    out = []
    for r in range(n_raters):
        trials = slot_trials(mine[r], repeat_fraction, namespace, r)
        out.append((np.array([int(key[1:]) - 1 for key, _ in trials], dtype=np.int64),
                    np.array([rep for _, rep in trials], dtype=bool)))  # fmt: skip
    return out


def app_catch_gaps(n_trials: int, catch_rate: float, namespace: str, slot: int) -> np.ndarray:
    """The gaps (1-based: right after design trial g) that take the slot's catch screens in the app:
    ``catch_count(catch_rate, n_trials)`` of them (:func:`p2p_app.assignment.catch_count`, the one definition of
    ``catch_rate``: catch screens per design trial, rounded up), placed by :func:`p2p_app.assignment.catch_gaps`."""
    return np.array(catch_gaps(n_trials, catch_count(catch_rate, n_trials), namespace, slot), dtype=np.int64)


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
    catch_rate: float = 0.0,
) -> pd.DataFrame:
    """Simulate a study and return its tidy ratings frame (contract columns and dtypes, sorted by trial and panel).

    Rater slot r (``rater_id`` r+1) gets the items, order and repeats the app would give slot r of a study
    ``study`` (version 1) assigned with seed ``seed`` (:func:`app_sequences`): ``ceil(repeat_fraction × n)``
    repeats of a rater's ``n`` items. ``catch_rate``: as in a study file, ``ceil(catch_rate × n)`` catch screens for
    a rater with ``n`` design trials (one known real image and broken images, ``catch`` "real"/"broken"), each
    right after a distinct design trial the app would pick (never two in a row); attentive raters score them like
    real images / with about 1, careless raters with their one score. Catch screens change no other row.

    ``models`` maps model name → true quality ``(realism, alignment)`` (or ``{"realism": .., "alignment": ..}``)
    on the latent 1..5 scale; ``real_quality`` is the same for real control images. Rows = design trials ·
    ``panels · 2`` with ``panels = len(models) + include_real``.
    """
    check_inputs(n_raters, n_prompts, models, seeds_per_prompt, overlap_k, repeat_fraction, include_real,
                 cant_judge_rate, careless_raters)  # fmt: skip
    if not 0 <= catch_rate < 1:
        raise ValueError(f"catch_rate must be in [0, 1), got {catch_rate}")
    rng = np.random.default_rng(seed)
    names = list(models) + ([REAL_MODEL] if include_real else [])
    pairs = [_quality_pair(models[m]) for m in models] + ([_quality_pair(real_quality)] if include_real else [])
    n_items = n_prompts * seeds_per_prompt
    item_seed = rng.integers(0, 2**31 - 1, n_items)
    raters = _rating_raters(rng, n_raters, rater_bias_sd, rater_noise, seconds_per_image, careless_raters, start)
    namespace = seed_namespace(study, 1, seed)
    trials = _rating_trials(rng, app_sequences(n_items, n_raters, overlap_k, repeat_fraction, namespace), raters,
                            len(names))  # fmt: skip
    rows = _rating_rows(rng, trials, np.array(pairs), raters, n_items, image_sd, cant_judge_rate, comment_rate)
    prompts, mods = _prompts(rng, n_prompts, list(modalities))
    out = _rating_frame(trials, rows, names, item_seed, seeds_per_prompt, prompts, mods, raters.ids, study, seed)
    if catch_rate > 0:
        out = _with_rating_catch(out, rng, catch_rate, raters, np.array(_quality_pair(real_quality)), namespace)
    return out


def _rating_raters(rng, n_raters, rater_bias_sd, rater_noise, seconds_per_image, careless_raters, start):
    """Per rater: bias per question, noise SD, pace, careless flag and score, first-session start (ns)."""
    bias = rng.normal(0.0, rater_bias_sd, (n_raters, len(QUESTIONS)))
    noise_sd = rng.uniform(rater_noise[0], rater_noise[1], n_raters)
    pace = seconds_per_image * np.exp(rng.normal(0.0, 0.3, n_raters))
    careless = np.zeros(n_raters, dtype=bool)
    careless[rng.choice(n_raters, careless_raters, replace=False)] = True
    pace[careless] = 0.6
    careless_score = rng.integers(3, 5, n_raters).astype(float)
    start_ns = pd.Timestamp(start).value + rng.integers(0, 7 * 86_400, n_raters) * 1_000_000_000
    width = max(3, len(str(n_raters)))
    return types.SimpleNamespace(bias=bias, noise_sd=noise_sd, pace=pace, careless=careless,
                                 careless_score=careless_score, start_ns=start_ns,
                                 ids=[f"r{i + 1:0{width}d}" for i in range(n_raters)])  # fmt: skip


def _rating_trials(rng, sequences, raters, n_src):
    """The raters' design trials (from :func:`app_sequences`) with session timing, in time order (database ids
    follow time): item, rater, is_repeat, order_index, seconds, shown/answered (ns)."""
    t_item = np.concatenate([s[0] for s in sequences])
    t_repeat = np.concatenate([s[1] for s in sequences])
    t_rater = np.repeat(np.arange(len(sequences)), [len(s[0]) for s in sequences])
    n_trials = len(t_item)
    first_of_rater = np.searchsorted(t_rater, np.arange(len(sequences)))
    order_index = np.arange(n_trials) - first_of_rater[t_rater]
    # timing: sessions per rater; seconds per trial scale with the panels shown
    seconds = np.round(n_src * raters.pace[t_rater] * np.exp(rng.normal(0.0, 0.4, n_trials)), 3)
    gap = rng.exponential(15.0, n_trials) + (rng.random(n_trials) < 0.03) * rng.uniform(3_600, 72_000, n_trials)
    step = seconds + gap
    cum = np.cumsum(step) - step
    offset = cum - cum[first_of_rater[t_rater]]
    shown_ns = raters.start_ns[t_rater] + np.round(offset * 1e9).astype(np.int64)
    answered_ns = shown_ns + np.round(seconds * 1e9).astype(np.int64)
    by_time = np.argsort(shown_ns, kind="stable")
    return types.SimpleNamespace(item=t_item[by_time], rater=t_rater[by_time], repeat=t_repeat[by_time],
                                 order_index=order_index[by_time], seconds=seconds[by_time],
                                 shown_ns=shown_ns[by_time], answered_ns=answered_ns[by_time])  # fmt: skip


def _rating_rows(rng, t, quality, raters, n_items, image_sd, cant_judge_rate, comment_rate):
    """Rows trial × position × question: the panel at each position (a per-trial shuffle) and the score."""
    n_trials, (n_src, n_q) = len(t.item), quality.shape
    panel_at = np.argsort(rng.random((n_trials, n_src)), axis=1)
    r_trial = np.repeat(np.arange(n_trials), n_src * n_q)
    r_posidx = np.tile(np.repeat(np.arange(n_src), n_q), n_trials)
    r_q = np.tile(np.arange(n_q), n_trials * n_src)
    r_panel = panel_at[r_trial, r_posidx]
    r_rater = t.rater[r_trial]
    r_image = t.item[r_trial] * n_src + r_panel
    effect = rng.normal(0.0, image_sd, (n_items * n_src, n_q))
    latent = (quality[r_panel, r_q] + raters.bias[r_rater, r_q] + effect[r_image, r_q]
              + raters.noise_sd[r_rater] * rng.standard_normal(len(r_trial)))  # fmt: skip
    value = np.clip(np.rint(latent), 1, 5)
    value = np.where(raters.careless[r_rater], raters.careless_score[r_rater], value)
    tp = r_trial * n_src + r_posidx  # (trial, panel) index
    cant = (rng.random(n_trials * n_src) < cant_judge_rate)[tp]
    value[cant] = np.nan
    n_tp = n_trials * n_src
    comment_pick = np.where(rng.random(n_tp) < comment_rate, rng.integers(1, len(_COMMENTS) + 1, n_tp), 0)
    return types.SimpleNamespace(trial=r_trial, pos=r_posidx, q=r_q, panel=r_panel, rater=r_rater,
                                 item=t.item[r_trial], image=r_image, value=value, cant=cant,
                                 comment=comment_pick[tp])  # fmt: skip


def _rating_frame(t, rows, names, item_seed, seeds_per_prompt, prompts, mods, rater_ids, study, seed):
    """The tidy frame of a simulated rating study's design trials (see :func:`simulate_ratings`)."""
    n_src, n_items = len(names), len(item_seed)
    # opaque image ids: an invertible scramble of the image index (unique, unrelated to model or prompt)
    mixed = np.arange(n_items * n_src, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(seed)
    mixed &= np.uint64((1 << 48) - 1)
    is_real = np.array([n == REAL_MODEL for n in names])
    r_prompt = rows.item // seeds_per_prompt
    seed_col = pd.array(item_seed[rows.item], dtype="Int64")
    seed_col[is_real[rows.panel]] = pd.NA
    n = len(rows.trial)
    zeros = np.zeros(n, np.int64)
    out = pd.DataFrame(
        {
            "study": _strings([study], zeros),
            "rater_id": _strings(rater_ids, rows.rater),
            "item_id": _strings([item_key(i) for i in range(n_items)], rows.item),
            "trial_id": (rows.trial + 1).astype(np.int64),
            "image_id": _strings([f"img_{int(x):012x}" for x in mixed], rows.image),
            "model": _strings(names, rows.panel),
            "source": _strings([REAL_SOURCE if r else GENERATED_SOURCE for r in is_real], rows.panel),
            "prompt_id": _strings([f"p{i + 1:04d}" for i in range(len(prompts))], r_prompt),
            "prompt": _strings(prompts, r_prompt),
            "modality": _strings(mods, r_prompt),
            "seed": seed_col,
            "position": (rows.pos + 1).astype(np.int64),
            "n_panels": np.full(n, n_src, dtype=np.int64),
            "order_index": t.order_index[rows.trial].astype(np.int64),
            "question": _strings(QUESTIONS, rows.q),
            "value": rows.value,
            "choices": _strings([""], zeros),
            "cant_judge": rows.cant,
            "comment": _strings(("",) + _COMMENTS, rows.comment),
            "shown_at": _utc(t.shown_ns[rows.trial]),
            "answered_at": _utc(t.answered_ns[rows.trial]),
            "seconds": t.seconds[rows.trial],
            "is_repeat": t.repeat[rows.trial],
            **{c: _strings([v], zeros) if isinstance(v, str) else np.full(n, v) for c, v in TIDY_DEFAULTS.items()},
        }
    )
    return out.loc[:, list(TIDY_COLUMNS)]


def _utc(ns: np.ndarray) -> pd.Series:
    return pd.Series(pd.DatetimeIndex(np.asarray(ns, dtype=np.int64).view("datetime64[ns]")).tz_localize("UTC"))


def _catch_anchors(out, catch_rate, rater_ids, namespace):
    """The design trials the app puts a catch screen after (:func:`app_catch_gaps`), one row each, with the time
    left before the rater's next trial (``room_ns``; a long pause after the rater's last trial)."""
    trials = out.drop_duplicates("trial_id")
    code = {r: i for i, r in enumerate(rater_ids)}
    anchors = []
    for rater, t in trials.groupby("rater_id", sort=True):
        t = t.sort_values("order_index", kind="stable")
        shown = t["shown_at"].to_numpy(dtype="datetime64[ns]").view(np.int64)
        answered = t["answered_at"].to_numpy(dtype="datetime64[ns]").view(np.int64)
        room = np.r_[shown[1:], answered[-1] + 3_600 * 10**9] - answered
        at = app_catch_gaps(len(t), catch_rate, namespace, code[rater]) - 1
        anchors.append(t.iloc[at].assign(room_ns=room[at], answered_ns=answered[at]))
    return pd.concat(anchors, ignore_index=True)


def _with_rating_catch(out, rng, catch_rate, raters, latent_real, namespace):
    """Insert catch screens into a simulated rating study (see ``simulate_ratings``): each right after the design
    trial the app picks (:func:`_catch_anchors`), inside the pause before the rater's next trial, so no other row
    changes; trial ids and order indices are renumbered in time order."""
    a = _catch_anchors(out, catch_rate, raters.ids, namespace)
    n_src = int(out["n_panels"].iloc[0])
    code = {r: i for i, r in enumerate(raters.ids)}
    n_c = len(a)
    rater = a["rater_id"].map(code).to_numpy(dtype=np.int64)
    real_slot = rng.integers(0, n_src, n_c)
    c_trial = np.repeat(np.arange(n_c), n_src * 2)
    c_pos = np.tile(np.repeat(np.arange(n_src), 2), n_c)
    c_q = np.tile(np.arange(2), n_c * n_src)
    is_real = c_pos == real_slot[c_trial]
    r = rater[c_trial]
    latent = (np.where(is_real, latent_real[c_q], 1.0) + raters.bias[r, c_q]
              + raters.noise_sd[r] * rng.standard_normal(len(r)))  # fmt: skip
    value = np.where(raters.careless[r], raters.careless_score[r], np.clip(np.rint(latent), 1, 5))
    room = np.maximum(a["room_ns"].to_numpy(dtype=np.int64) // 3, 1)
    shown_ns = a["answered_ns"].to_numpy(dtype=np.int64) + np.minimum(1_000_000_000, room)
    secs_ns = np.minimum(np.round(a["seconds"].to_numpy() * 1e9).astype(np.int64), room)
    rows = pd.DataFrame({
        "study": out["study"].iloc[0], "rater_id": a["rater_id"].to_numpy()[c_trial],
        "item_id": [f"catch-{i + 1:05d}" for i in c_trial], "trial_id": -1 - c_trial,
        "image_id": [f"catch-{i + 1:05d}-{p}" for i, p in zip(c_trial, c_pos, strict=True)],
        "model": np.where(is_real, REAL_MODEL, BROKEN_MODEL),
        "source": np.where(is_real, REAL_SOURCE, GENERATED_SOURCE),
        "prompt_id": "", "prompt": "catch trial", "modality": "colonoscopy",
        "seed": pd.array([pd.NA] * len(r), dtype="Int64"), "position": c_pos + 1, "n_panels": n_src,
        "order_index": 0, "question": np.array(QUESTIONS)[c_q], "value": value, "choices": "", "cant_judge": False,
        "comment": "", "shown_at": _utc(shown_ns[c_trial]), "answered_at": _utc((shown_ns + secs_ns)[c_trial]),
        "seconds": (secs_ns / 1e9)[c_trial], "is_repeat": False,
        "catch": np.where(is_real, CATCH_REAL, CATCH_BROKEN),
        "catch_kind": np.where(is_real, "", np.array(CATCH_KINDS)[rng.integers(0, len(CATCH_KINDS), len(r))]),
        "rater_group": "", "active_seconds": np.nan, "practice": False, "phase": "",
    })  # fmt: skip
    return _renumber(pd.concat([out, rows.astype(dict(TIDY_DTYPES))], ignore_index=True))


def _renumber(both: pd.DataFrame) -> pd.DataFrame:
    """Trial ids in time order and each rater's order indices from 0, rows sorted by trial, position, question."""
    first = both.drop_duplicates("trial_id")[["trial_id", "rater_id", "shown_at"]]
    first = first.sort_values(["shown_at", "trial_id"], kind="stable")
    new_id = pd.Series(np.arange(1, len(first) + 1), index=first["trial_id"].to_numpy())
    first = first.assign(new=new_id.to_numpy()).sort_values(["rater_id", "shown_at", "new"], kind="stable")
    first["order"] = first.groupby("rater_id").cumcount()
    order = pd.Series(first["order"].to_numpy(), index=first["trial_id"].to_numpy())
    both["order_index"] = both["trial_id"].map(order).astype("int64")
    both["trial_id"] = both["trial_id"].map(new_id).astype("int64")
    q_rank = {q: i for i, q in enumerate(QUESTIONS)}
    both = both.sort_values(["trial_id", "position", "question"], kind="stable",
                            key=lambda c: c.map(q_rank) if c.name == "question" else c)  # fmt: skip
    return both.reset_index(drop=True).astype(dict(TIDY_DTYPES)).loc[:, list(TIDY_COLUMNS)]


# --------------------------------------------------------------------------------------------------------------------
# Study designs: forced choice ("which one is real?") and full rankings, with rater groups and catch trials
# --------------------------------------------------------------------------------------------------------------------

DEFAULT_DESIGN_MODELS: Mapping[str, float] = types.MappingProxyType({"model-a": 1.0, "model-b": 0.4, "model-c": -0.4})
"""Model → true latent realism (log-strength at discrimination 1) for the design simulators."""
DEFAULT_DESIGN_REAL = 1.2
"""True latent realism of the real images in the design simulators."""
DEFAULT_RATER_GROUPS: Mapping[str, float] = types.MappingProxyType({"resident": 1.0, "senior": 2.5})
"""Rater group → discrimination (how sharply the rater's perception follows the true realism)."""
BROKEN_QUALITY = -8.0
"""Latent realism of a broken catch image (noise, flipped, blank, wrong anatomy): an attentive rater never takes it
for real."""
CATCH_KINDS: tuple[str, ...] = ("noise", "flipped", "blank", "wrong_anatomy")
BROKEN_MODEL = "broken"
"""``model`` of a broken catch image in simulated frames."""


def choice_probabilities(
    models: Mapping[str, float] = DEFAULT_DESIGN_MODELS,
    real_quality: float = DEFAULT_DESIGN_REAL,
    discrimination: float = 1.0,
    include_real: bool = True,
) -> dict[str, float]:
    """Known truth of the design simulators: the probability that each panel is picked first on a screen showing
    every model (and the real image) — a multinomial logit in ``discrimination · quality``; with ``include_real``
    the ``"real"`` entry is the true forced-choice accuracy of such a rater."""
    names = ([REAL_MODEL] if include_real else []) + list(models)
    q = np.array(([float(real_quality)] if include_real else []) + [float(models[m]) for m in models])
    z = np.exp(discrimination * q - (discrimination * q).max())
    return dict(zip(names, (z / z.sum()).tolist(), strict=True))


def _check_design(n_raters, n_items, models, overlap_k, rater_groups, careless_raters, catch_rate, design) -> None:
    if n_raters < 1:
        raise ValueError(f"n_raters must be >= 1, got {n_raters}")
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    if not 1 <= overlap_k <= n_raters:
        raise ValueError(f"overlap_k must be between 1 and n_raters ({n_raters}), got {overlap_k}")
    if not 0 <= careless_raters <= n_raters:
        raise ValueError(f"careless_raters must be between 0 and n_raters ({n_raters}), got {careless_raters}")
    if not 0 <= catch_rate < 1:
        raise ValueError(f"catch_rate must be in [0, 1), got {catch_rate}")
    if not rater_groups:
        raise ValueError("rater_groups must name at least one group (group -> discrimination)")
    if any(float(d) < 0 for d in rater_groups.values()):
        raise ValueError(f"rater_groups discriminations must be >= 0, got {dict(rater_groups)}")
    if REAL_MODEL in models or BROKEN_MODEL in models:
        raise ValueError(f"{REAL_MODEL!r} and {BROKEN_MODEL!r} are reserved model names; rename that model")
    need = 1 if design == "forced_choice" else 2
    if len(models) < need:
        raise ValueError(f"a {design} study needs at least {need} generated model(s), got {len(models)}")


def _design_study(
    design: str,
    question: str,
    n_raters: int,
    n_items: int,
    models: Mapping[str, float],
    real_quality: float,
    include_real: bool,
    overlap_k: int,
    rater_groups: Mapping[str, float],
    careless_raters: int,
    catch_rate: float,
    seconds_per_panel: float,
    study: str,
    start: str,
    seed: int,
) -> pd.DataFrame:
    _check_design(n_raters, n_items, models, overlap_k, rater_groups, careless_raters, catch_rate, design)
    rng = np.random.default_rng(seed)
    names = ([REAL_MODEL] if include_real else []) + list(models) + [BROKEN_MODEL]
    quality = np.array(([float(real_quality)] if include_real else []) + [float(models[m]) for m in models]
                       + [BROKEN_QUALITY])  # fmt: skip
    # raters: groups in turn; careless raters perceive nothing (discrimination 0: random picks and orders)
    groups = list(rater_groups)
    r_group = np.arange(n_raters) % len(groups)
    careless = np.zeros(n_raters, dtype=bool)
    careless[rng.choice(n_raters, careless_raters, replace=False)] = True
    disc = np.where(careless, 0.0, np.array([float(rater_groups[g]) for g in groups])[r_group])
    t = _design_sequence(n_items, n_raters, overlap_k, catch_rate, seed_namespace(study, 1, seed))
    panels, value = _design_answers(rng, design, t.catch, disc[t.rater], names, quality, include_real, real_quality)
    seconds = np.round(panels.shape[1] * seconds_per_panel * np.exp(rng.normal(0.0, 0.4, len(t.rater))), 3)
    seconds = np.where(careless, 0.5, 1.0)[t.rater] * seconds
    step = seconds + rng.exponential(15.0, len(t.rater))
    cum = np.cumsum(step) - step
    offset = cum - cum[np.searchsorted(t.rater, t.rater)]
    shown_ns = pd.Timestamp(start).value + (np.round(offset * 1e9).astype(np.int64)
                                            + t.rater * 3_600 * 1_000_000_000)  # fmt: skip
    t.seconds, t.shown_ns, t.answered_ns = seconds, shown_ns, shown_ns + np.round(seconds * 1e9).astype(np.int64)
    return _design_frame(rng, t, panels, value, names, include_real, question, groups, r_group, study)


def _design_sequence(n_items, n_raters, overlap_k, catch_rate, namespace):
    """Every rater's trials in order: the app's items and order (:func:`app_sequences`, no repeats) with catch
    screens after the design trials the app picks (:func:`app_catch_gaps`); each catch screen is its own item
    (``n_items + j``)."""
    seq_rater, seq_item, seq_catch = [], [], []
    n_catch = 0
    for r, (items, _) in enumerate(app_sequences(n_items, n_raters, overlap_k, 0.0, namespace)):
        gaps = app_catch_gaps(len(items), catch_rate, namespace, r)
        is_c = np.zeros(len(items) + len(gaps), dtype=bool)
        is_c[gaps + np.arange(len(gaps))] = True  # after design trial g (1-based) and the j catch screens before
        merged = np.empty(len(is_c), dtype=np.int64)
        merged[~is_c] = items
        merged[is_c] = n_items + n_catch + np.arange(len(gaps))
        n_catch += len(gaps)
        seq_rater.append(np.full(len(is_c), r))
        seq_item.append(merged)
        seq_catch.append(is_c)
    t_rater = np.concatenate(seq_rater)
    return types.SimpleNamespace(rater=t_rater, item=np.concatenate(seq_item), catch=np.concatenate(seq_catch),
                                 order_index=np.arange(len(t_rater)) - np.searchsorted(t_rater, t_rater),
                                 n_catch=n_catch, n_items=n_items)  # fmt: skip


def _design_answers(rng, design, t_catch, t_disc, names, quality, include_real, real_quality):
    """Per trial, the source code at each panel (-1: a real catch image in a ranking without real images) and the
    answer: a regular screen shows every source once, a catch screen one known real image and broken images."""
    n_panels = len(names) - 1
    real_code = names.index(REAL_MODEL) if include_real else -1
    broken_code = len(names) - 1
    catch_panels = np.r_[real_code if include_real else 0, np.full(n_panels - 1, broken_code)]
    panels = np.where(t_catch[:, None], catch_panels[None, :], np.arange(n_panels)[None, :])  # trial × slot
    perm = np.argsort(rng.random((len(t_catch), n_panels)), axis=1)  # shuffled positions per trial
    panels = np.take_along_axis(panels, perm, axis=1)
    if not include_real:  # catch screens in a ranking without real images: the first slot holds a real catch
        first_slot = np.argmin(perm, axis=1)
        panels[t_catch, first_slot[t_catch]] = -1
    q = np.where(panels == -1, float(real_quality), quality[np.maximum(panels, 0)])
    u = t_disc[:, None] * q + rng.gumbel(size=q.shape)  # Luce: picks and orders are Plackett–Luce
    if design == "forced_choice":
        return panels, (np.arange(n_panels)[None, :] == np.argmax(u, axis=1)[:, None]).astype(float)
    return panels, (np.argsort(np.argsort(-u, axis=1), axis=1) + 1).astype(float)


def _design_frame(rng, t, panels, value, names, include_real, question, groups, r_group, study):
    """The tidy frame (rows trial × position) of a forced-choice or ranking simulation."""
    n_trials, n_panels = panels.shape
    real_code = names.index(REAL_MODEL) if include_real else -1
    broken_code = len(names) - 1
    r_trial = np.repeat(np.arange(n_trials), n_panels)
    r_pos = np.tile(np.arange(n_panels), n_trials)
    r_src = panels.ravel()
    is_catch_row = t.catch[r_trial]
    r_name = np.where(r_src == -1, broken_code + 1, r_src)  # -1: real catch (label below)
    r_real = (r_name == real_code) | (r_name == len(names))
    catch_code = np.where(is_catch_row, np.where(r_real, 1, 2), 0)
    kind_code = np.where(catch_code == 2, rng.integers(1, len(CATCH_KINDS) + 1, len(r_trial)), 0)
    image_of = np.where(is_catch_row, 10_000_000 + r_trial * n_panels + r_pos, t.item[r_trial] * n_panels + r_src)
    prompts, mods = _prompts(rng, t.n_items, ["colonoscopy"])
    r_item = t.item[r_trial]
    prompt_code = np.where(r_item < t.n_items, r_item, 0)
    seed_col = pd.array(rng.integers(0, 2**31 - 1, t.n_items + t.n_catch)[r_item], dtype="Int64")
    seed_col[r_real | (r_name == broken_code)] = pd.NA
    n_raters = len(r_group)
    width = max(3, len(str(n_raters)))
    item_ids = [item_key(i) for i in range(t.n_items)] + [f"c{i + 1:05d}" for i in range(t.n_catch)]
    n_rows, zeros = len(r_trial), np.zeros(len(r_trial), np.int64)
    out = pd.DataFrame({
        "study": _strings([study], zeros),
        "rater_id": _strings([f"r{i + 1:0{width}d}" for i in range(n_raters)], t.rater[r_trial]),
        "item_id": _strings(item_ids, r_item), "trial_id": (r_trial + 1).astype(np.int64),
        "image_id": pd.Series([f"img_{int(x):09d}" for x in image_of], dtype="str"),
        "model": _strings(names + [REAL_MODEL], r_name),
        "source": _strings([GENERATED_SOURCE, REAL_SOURCE], r_real.astype(np.int64)),
        "prompt_id": _strings([f"p{i + 1:04d}" for i in range(t.n_items)], prompt_code),
        "prompt": _strings(prompts, prompt_code), "modality": _strings(mods, prompt_code), "seed": seed_col,
        "position": (r_pos + 1).astype(np.int64), "n_panels": np.full(n_rows, n_panels, dtype=np.int64),
        "order_index": t.order_index[r_trial].astype(np.int64), "question": _strings([question], zeros),
        "value": value.ravel(), "choices": _strings([""], zeros), "cant_judge": np.zeros(n_rows, dtype=bool),
        "comment": _strings([""], zeros), "shown_at": _utc(t.shown_ns[r_trial]),
        "answered_at": _utc(t.answered_ns[r_trial]), "seconds": t.seconds[r_trial],
        "is_repeat": np.zeros(n_rows, dtype=bool), "catch": _strings(("", CATCH_REAL, CATCH_BROKEN), catch_code),
        "catch_kind": _strings(("",) + CATCH_KINDS, kind_code),
        "rater_group": _strings(groups, r_group[t.rater[r_trial]]), "active_seconds": np.full(n_rows, np.nan),
        "practice": np.zeros(n_rows, dtype=bool), "phase": _strings([""], zeros),
    })  # fmt: skip
    return out.astype(dict(TIDY_DTYPES)).loc[:, list(TIDY_COLUMNS)]


def simulate_forced_choice(
    n_raters: int = 12,
    n_items: int = 40,
    models: Mapping[str, float] = DEFAULT_DESIGN_MODELS,
    overlap_k: int = 3,
    *,
    real_quality: float = DEFAULT_DESIGN_REAL,
    rater_groups: Mapping[str, float] = DEFAULT_RATER_GROUPS,
    careless_raters: int = 0,
    catch_rate: float = 0.0,
    seconds_per_panel: float = 4.0,
    study: str = "sim-forced-choice",
    start: str = DEFAULT_START,
    seed: int = 0,
) -> pd.DataFrame:
    """Simulate a forced-choice study ("which one is real?") and return its tidy frame (question ``chosen_real``).

    Each of ``n_items`` screens shows the real image and one image per model, shuffled, to ``overlap_k`` raters.
    A rater of group g perceives panel realism ``rater_groups[g] · quality + Gumbel noise`` and picks the highest,
    so the true accuracy of that group is ``choice_probabilities(models, real_quality, rater_groups[g])["real"]``.
    ``careless_raters`` pick at random (discrimination 0) and answer fast. ``catch_rate``: as in a study file,
    ``ceil(catch_rate × n)`` catch screens (one known real image among broken ones) for a rater with ``n`` design
    screens, after the screens the app would pick (:func:`app_catch_gaps`), never two in a row. Raters get the items
    and order the app would give their slot (:func:`app_sequences`)."""
    return _design_study("forced_choice", CHOSEN_REAL, n_raters, n_items, models, real_quality, True, overlap_k,
                         rater_groups, careless_raters, catch_rate, seconds_per_panel, study, start, seed)  # fmt: skip


def simulate_ranking(
    n_raters: int = 12,
    n_items: int = 40,
    models: Mapping[str, float] = DEFAULT_DESIGN_MODELS,
    overlap_k: int = 3,
    *,
    question: str = REALISM,
    include_real: bool = False,
    real_quality: float = DEFAULT_DESIGN_REAL,
    rater_groups: Mapping[str, float] = types.MappingProxyType({"": 1.0}),
    careless_raters: int = 0,
    catch_rate: float = 0.0,
    seconds_per_panel: float = 4.0,
    study: str = "sim-ranking",
    start: str = DEFAULT_START,
    seed: int = 0,
) -> pd.DataFrame:
    """Simulate a ranking study and return its tidy frame (question ``rank_<question>``, value = rank, 1 = best).

    Each screen shows one image per model (plus the real one with ``include_real``) and the rater orders them by
    ``discrimination · quality + Gumbel noise`` — exactly a Plackett–Luce model with log-strengths
    ``discrimination · quality``, so the true order is the order of ``models``' qualities. Catch screens: one known
    real image among broken ones, ``ceil(catch_rate × n)`` per rater placed as the app places them (as in
    :func:`simulate_forced_choice`); careless raters order at random."""
    return _design_study("ranking", RANK_PREFIX + question, n_raters, n_items, models, real_quality, include_real,
                         overlap_k, rater_groups, careless_raters, catch_rate, seconds_per_panel, study, start,
                         seed)  # fmt: skip


# --------------------------------------------------------------------------------------------------------------------
# Reading screen (issue 13): practice items and artifact marks
# --------------------------------------------------------------------------------------------------------------------


def with_practice(
    df: pd.DataFrame, n_items: int = 2, value: float | None = 1.0, seconds: float = 0.2, seed: int = 0
) -> pd.DataFrame:
    """``df`` plus practice answers: for every rater, ``n_items`` practice screens shown before their first
    screen (``order_index`` 0.., the others shifted), copies of that rater's first screens' layout (catch screens
    skipped: a practice item is never one) on new images and trial ids, every scored answer ``value`` (None: the
    copied answers) in ``seconds`` (extreme on purpose: a practice answer that leaked into a statistic would move
    it), ``practice`` True. The rows come first; ``df``'s rows keep their values."""
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    rng = np.random.default_rng(seed)
    base = df.sort_values(["rater_id", "order_index", "trial_id"], kind="stable")
    next_trial = int(df["trial_id"].max()) + 1 if len(df) else 1
    parts = []
    for rater, rows in base.groupby("rater_id", sort=True):
        catch = rows["catch"].fillna("").ne("") if "catch" in rows.columns else pd.Series(False, index=rows.index)
        trials = [t for t in dict.fromkeys(rows["trial_id"]) if not catch[rows["trial_id"] == t].any()][:n_items]
        first_shown = rows["shown_at"].min()
        for j, t in enumerate(trials):
            p = rows[rows["trial_id"] == t].copy()
            shown = first_shown - pd.Timedelta(minutes=n_items - j)
            p["trial_id"] = next_trial
            p["item_id"] = f"practice-{j}"
            p["image_id"] = [f"practice-{rater}-{j}-{k}-{rng.integers(1 << 30)}" for k in p["position"]]
            p["order_index"] = j
            if value is not None:
                p["value"] = np.where(p["value"].notna(), float(value), np.nan)
            p["shown_at"] = shown
            p["answered_at"] = shown + pd.Timedelta(seconds=seconds)
            p["seconds"] = float(seconds)
            p["active_seconds"] = float(seconds)
            p["is_repeat"] = False
            p["practice"] = True
            parts.append(p)
            next_trial += 1
    shifted = df.copy()
    shifted["order_index"] = shifted["order_index"] + n_items
    out = pd.concat([*parts, shifted], ignore_index=True) if parts else shifted
    return out.astype(dict(TIDY_DTYPES)).loc[:, list(TIDY_COLUMNS)]


def simulate_marks(
    df: pd.DataFrame,
    hot_spots: Mapping[str, tuple[float, float]],
    marks_per_image: float = 1.5,
    spread: float = 0.04,
    background: float = 0.3,
    seed: int = 0,
    confidence: bool = False,
) -> pd.DataFrame:
    """Marked points (``p2p_app.tidy.MARK_COLUMNS``) on the images of ratings frame ``df``: for every image shown
    on a trial, ``Poisson(marks_per_image)`` points near its model's hot spot (``hot_spots``: model → (x, y),
    image-normalised, x right, y down; normal with sd ``spread``, clipped to [0, 1]) — the known truth a heat map
    must recover — plus ``Poisson(background)`` points anywhere (uniform); a model without a hot spot gets only
    the background. At most 20 points per image (the app's limit). ``confidence`` (a study with
    ``mark_confidence``): a hot-spot point gets a confidence uniform on 3-5, a background point one on 1-3 (drawn
    after the points, so the points are those drawn without it); otherwise the column is missing."""
    from .tidy import MARK_COLUMNS, MARK_DTYPES

    for model, (x, y) in hot_spots.items():
        if not (0 <= x <= 1 and 0 <= y <= 1):
            raise ValueError(f"hot spot of {model!r} must lie in [0, 1] x [0, 1], not ({x}, {y})")
    rng = np.random.default_rng(seed)
    shown = df.drop_duplicates(["trial_id", "image_id"]).reset_index(drop=True)
    n = len(shown)
    hot = np.array([str(m) in hot_spots for m in shown["model"]], dtype=bool)
    k_hot = np.where(hot, rng.poisson(marks_per_image, n), 0)
    k_bg = rng.poisson(background, n)
    k_hot = np.minimum(k_hot, 20)
    k_bg = np.minimum(k_bg, 20 - k_hot)
    row_hot = np.repeat(np.arange(n), k_hot)
    centre = np.array([hot_spots.get(str(m), (0.5, 0.5)) for m in shown["model"]], dtype=float).reshape(n, 2)
    pts_hot = np.clip(centre[row_hot] + rng.normal(0.0, spread, (len(row_hot), 2)), 0.0, 1.0)
    row_bg = np.repeat(np.arange(n), k_bg)
    pts_bg = rng.random((len(row_bg), 2))
    rows = np.concatenate([row_hot, row_bg])
    pts = np.concatenate([pts_hot, pts_bg]).reshape(-1, 2)
    conf = np.concatenate([rng.integers(3, 6, len(row_hot)), rng.integers(1, 4, len(row_bg))]) if confidence else None
    order = np.argsort(rows, kind="stable")
    rows, pts = rows[order], pts[order]
    s = shown.iloc[rows]
    practice = s["practice"] if "practice" in s.columns else pd.Series(False, index=s.index)
    out = pd.DataFrame({
        "study": s["study"].to_numpy(), "rater_id": s["rater_id"].to_numpy(), "trial_id": s["trial_id"].to_numpy(),
        "item_id": s["item_id"].to_numpy(), "image_id": s["image_id"].to_numpy(), "model": s["model"].to_numpy(),
        "source": s["source"].to_numpy(), "prompt_id": s["prompt_id"].to_numpy(),
        "position": s["position"].to_numpy(), "x": pts[:, 0], "y": pts[:, 1],
        "confidence": pd.array(conf[order] if conf is not None else [pd.NA] * len(rows), dtype="Int64"),
        "practice": practice.fillna(False).to_numpy(dtype=bool), "marked_at": s["answered_at"].reset_index(drop=True),
        "replaced_at": pd.Series(pd.NaT, index=range(len(s)), dtype="datetime64[ns, UTC]"),
    })  # fmt: skip
    return out.astype(dict(MARK_DTYPES)).loc[:, list(MARK_COLUMNS)]
