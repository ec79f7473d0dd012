"""Who sees which item, in which order, with which panel where: pure functions of (study, slot, seed).

Every "random" choice is a sha256 of named parts (study id, version, seed, slot, item key...), never
``random``, numpy or ``hash()``: the same inputs give the same answer on every machine, in every
process and under every Python version, so a rater can resume and an analyst can recompute.

Rules, in the order they apply:

* Rater slots. A study has ``n_raters`` slots. A listed rater's slot is their index in ``raters``;
  in an open study the storage layer passes the 0-based join index and the slot is
  ``join_index % n_raters`` (the (n_raters+1)-th person to join repeats slot 0's items and order).
* Coverage (:func:`coverage`). Items are taken in an order grouped by stratum (single design: the
  image's model, ``"real"`` for real images; side by side: with/without a real panel; controls on
  their own) and shuffled within it; each item goes to the ``k`` slots with the fewest items so far
  (ties: fewest items of that stratum, then a seeded hash). Every item reaches exactly ``k``
  distinct slots, slot loads differ by at most 1, and each slot gets a near-even share of every
  model, so rater and model are not confounded.
* Order (:func:`rater_sequence`). A slot's items are shuffled by a hash of (study id, version, seed,
  slot, item key). Then ``r = ceil(repeat_fraction x n)`` of them (none when n < 2) are shown again:
  an item first shown at position p (0-based among the n first showings) is chosen only if
  ``p + d <= n`` with ``d = max(2, n // 4)``, and its repeat is inserted after first showing
  ``g - 1`` for a seeded ``g`` in ``[p + d, n]``. A repeat therefore comes at least ``d`` (so at
  least 2) positions after its first showing: never adjacent, never earlier.
* Catch screens (:func:`with_catch_trials`, studies with ``catch_rate``): a slot with ``n`` design trials
  (repeats included) gets ``c = ceil(catch_rate x n)`` catch screens (at most ``n``), kinds in turn from a
  seeded start in ``catch_kinds``, each the next unused screen of that kind in a seeded order of the study's
  pool (``study.catch_items()``). They go into ``c`` distinct gaps drawn by hash from the gaps after
  trials 1..n, so one comes only after a design trial: never first, never two in a row.
* Practice items (``study.practice_items()``, prompts marked ``practice``): every slot sees all of them first,
  in a seeded order of their own (hash of study, seed, slot, item key), before the design trials; they are
  never repeated and take no catch screen. A study without practice items gets exactly the sequence it had
  before they existed.
* Panels (:func:`panel_order`). ``order[pos]`` is the index in ``item.slots`` of the image shown at
  panel ``pos`` (0-based; the stored ``position`` is ``pos + 1``). A repeat's panel order differs
  from its first showing whenever there are at least 2 panels (:func:`sequence_panel_orders`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

from .study import CATCH_PREFIX, CONTROL_PREFIX, DISCLOSED_PREFIX, NAIVE_PREFIX, StudyDefinition, StudyItem
from .text import name_key


@dataclass(frozen=True)
class Assignment:
    """One trial of a rater's sequence: ``order_index`` is 0-based."""

    order_index: int
    item_key: str
    is_repeat: bool
    practice: bool = False  # a practice item (shown first, never analysed)

    @property
    def is_catch(self) -> bool:
        return self.item_key.startswith(CATCH_PREFIX)


def _h(*parts: object) -> int:
    text = "\x1f".join(str(part) for part in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def seeded_permutation(n: int, *namespace: object) -> tuple[int, ...]:
    """A permutation of ``range(n)`` determined by ``namespace`` alone."""
    return tuple(sorted(range(n), key=lambda i: (_h(*namespace, i), i)))


def coverage(
    n_items: int,
    n_slots: int,
    k: int,
    seed: int | str,
    strata: Sequence[str] | None = None,
) -> list[tuple[int, ...]]:
    """For each item, the sorted tuple of the ``k`` rater slots that see it (see module docstring)."""
    if n_items < 0 or n_slots < 1:
        raise ValueError(f"need n_items >= 0 and n_slots >= 1, got {n_items} and {n_slots}")
    if not 1 <= k <= n_slots:
        raise ValueError(f"k must be between 1 and the number of slots ({n_slots}), got {k}")
    if strata is not None and len(strata) != n_items:
        raise ValueError(f"strata has {len(strata)} entries for {n_items} items")
    if k == n_slots:  # every item to every slot (what the loop below gives, without hashing)
        return [tuple(range(n_slots))] * n_items
    group = list(strata) if strata is not None else [""] * n_items
    order = sorted(range(n_items), key=lambda i: (group[i], _h("item", seed, i), i))
    load = [0] * n_slots
    stratum_load: dict[str, list[int]] = {}
    out: list[tuple[int, ...]] = [()] * n_items
    for i in order:
        s_load = stratum_load.setdefault(group[i], [0] * n_slots)
        ranked = sorted(range(n_slots), key=lambda r: (load[r], s_load[r], _h("slot", seed, i, r), r))
        for r in ranked[:k]:
            load[r] += 1
            s_load[r] += 1
        out[i] = tuple(sorted(ranked[:k]))
    return out


def _stratum(item: StudyItem) -> str:
    if item.key.removeprefix(NAIVE_PREFIX).startswith(CONTROL_PREFIX):
        return "control"
    if item.n_panels == 1:
        return item.slots[0].model
    return "panels+real" if any(slot.is_real for slot in item.slots) else "panels"


def seed_namespace(study_id: str, version: int, seed: int | None = None) -> str:
    """The string every hash of a study's assignment starts from (the simulator uses it for its own studies)."""
    return f"{study_id}@{version}#{'' if seed is None else seed}"


def _base_seed(study: StudyDefinition, seed: int | None) -> str:
    return seed_namespace(study.id, study.version, seed)


def item_coverage(study: StudyDefinition, seed: int | None = None) -> dict[str, tuple[int, ...]]:
    """Item key -> the rater slots that see it, for the whole study (design order)."""
    items = study.items()
    slots = coverage(len(items), study.n_raters, study.overlap_k, _base_seed(study, seed), [_stratum(i) for i in items])
    return {item.key: s for item, s in zip(items, slots)}


def repeat_count(repeat_fraction: float, n_items: int) -> int:
    """``ceil(repeat_fraction x n_items)`` repeats, none when n_items < 2, at most what fits."""
    if n_items < 2 or repeat_fraction <= 0:
        return 0
    distance = max(2, n_items // 4)
    return min(math.ceil(repeat_fraction * n_items - 1e-9), n_items - distance + 1)


def _check_slot(study: StudyDefinition, slot: int) -> None:
    if isinstance(slot, bool) or not isinstance(slot, int) or not 0 <= slot < study.n_raters:
        raise ValueError(f"rater slot {slot!r} is outside 0..{study.n_raters - 1} for study {study.id!r}")


def slot_trials(keys: Sequence[str], repeat_fraction: float, base: str, slot: int) -> list[tuple[str, bool]]:
    """A slot's design trials ``(item key, is_repeat)`` in order: ``keys`` (the slot's items) shuffled by hash,
    repeats spaced as the module docstring says (rule "Order"); ``base`` is :func:`seed_namespace`'s string."""
    order = sorted(keys, key=lambda key: (_h("order", base, slot, key), key))
    n = len(order)
    r = repeat_count(repeat_fraction, n)
    distance = max(2, n // 4)

    def rank(p: int) -> tuple[int, int]:
        return _h("repeat", base, slot, order[p]), p

    chosen = sorted((p for p in range(n) if p + distance <= n), key=rank)[:r]
    gaps: dict[int, list[int]] = {}
    for p in chosen:
        low = p + distance
        gaps.setdefault(low + _h("gap", base, slot, order[p]) % (n - low + 1), []).append(p)
    trials: list[tuple[str, bool]] = []
    for g in range(n + 1):
        trials += [(order[p], True) for p in sorted(gaps.get(g, []), key=rank)]
        if g < n:
            trials.append((order[g], False))
    return trials


def rater_sequence(study: StudyDefinition, slot: int, seed: int | None = None) -> tuple[Assignment, ...]:
    """The trials rater ``slot`` sees, in order, repeats included (see module docstring)."""
    _check_slot(study, slot)
    base = _base_seed(study, seed)
    mine = [key for key, slots in item_coverage(study, seed).items() if slot in slots]
    trials = with_catch_trials(study, slot, slot_trials(mine, study.repeat_fraction, base, slot), base)
    practice = sorted((item.key for item in study.practice_items()),
                      key=lambda key: (_h("practice", base, slot, key), key))
    trials += disclosed_trials(study, trials, base, slot)
    return tuple(Assignment(i, key, False, True) for i, key in enumerate(practice)) + tuple(
        Assignment(len(practice) + i, key, repeat) for i, (key, repeat) in enumerate(trials)
    )


def disclosed_trials(study: StudyDefinition, trials: Sequence[tuple[str, bool]], base: str,
                     slot: int) -> list[tuple[str, bool]]:
    """Phase 2 of the naive → disclosed design, after every phase-1 trial: each of the slot's phase-1 items once
    more (``disclosed:<image key>``; no repeats), in phase 1's order of first showings (``disclosed_order =
    "same"``) or in a fresh per-slot shuffle (``"fresh"``). Empty for every other design."""
    if study.design != "naive_disclosed":
        return []
    firsts = [key for key, repeat in trials if not repeat and key.startswith(NAIVE_PREFIX)]
    keys = [DISCLOSED_PREFIX + key[len(NAIVE_PREFIX):] for key in firsts]
    if study.disclosed_order == "fresh":
        keys.sort(key=lambda key: (_h("disclosed", base, slot, key), key))
    return [(key, False) for key in keys]


def catch_count(catch_rate: float, n_trials: int) -> int:
    """``ceil(catch_rate x n_trials)`` catch screens, at most ``n_trials`` (one per gap after a design trial)."""
    if catch_rate <= 0 or n_trials < 1:
        return 0
    return min(math.ceil(catch_rate * n_trials - 1e-9), n_trials)


def catch_gaps(n_trials: int, c: int, base: str, slot: int) -> list[int]:
    """The ``c`` gaps (sorted; gap ``g`` = right after design trial ``g``, 1..n_trials) that take a slot's catch
    screens: distinct, so never first and never two in a row (rule "Catch screens")."""
    return sorted(sorted(range(1, n_trials + 1), key=lambda g: (_h("catch-gap", base, slot, g), g))[:c])


def with_catch_trials(
    study: StudyDefinition, slot: int, trials: Sequence[tuple[str, bool]], base: str
) -> list[tuple[str, bool]]:
    """``trials`` with the slot's catch screens inserted (see the module docstring); unchanged without catch."""
    n = len(trials)
    c = catch_count(study.catch_rate, n) if study.catch_kinds else 0
    if not c:
        return list(trials)
    pool: dict[str, list[str]] = {}
    for item in study.catch_items():
        pool.setdefault(item.key.split(":")[1], []).append(item.key)
    kinds = list(study.catch_kinds)
    start = _h("catch-kind", base, slot) % len(kinds)
    queues = {k: sorted(v, key=lambda key: (_h("catch-pick", base, slot, key), key)) for k, v in pool.items()}
    picks = []
    for i in range(c):
        kind = kinds[(start + i) % len(kinds)]
        picks.append(queues[kind][i // len(kinds)])  # the pool holds enough of each kind (catch_pool_size)
    gaps = catch_gaps(n, c, base, slot)
    out: list[tuple[str, bool]] = []
    chosen = dict(zip(gaps, picks))
    for g, trial in enumerate(trials, start=1):
        out.append(trial)
        if g in chosen:
            out.append((chosen[g], False))
    return out


def panel_order(
    n_panels: int,
    study_id: str,
    slot: int,
    order_index: int,
    avoid: Sequence[int] | None = None,
) -> tuple[int, ...]:
    """Panel layout of one trial: ``order[pos]`` = index in ``item.slots`` shown at panel ``pos``.

    ``avoid``: an order this trial must not repeat (a repeat's first showing); honoured when
    ``n_panels > 1`` by rotating the drawn order one step.
    """
    if n_panels < 1:
        raise ValueError(f"a trial needs at least one panel, got {n_panels}")
    order = seeded_permutation(n_panels, "panel", study_id, slot, order_index)
    if avoid is not None and n_panels > 1 and order == tuple(avoid):
        order = order[1:] + order[:1]
    return order


def sequence_panel_orders(
    study: StudyDefinition, slot: int, sequence: Sequence[Assignment]
) -> tuple[tuple[int, ...], ...]:
    """The panel order of every trial in ``sequence``; repeats differ from their first showing."""
    items = study.item_map()
    first: dict[str, tuple[int, ...]] = {}
    out: list[tuple[int, ...]] = []
    for trial in sequence:
        avoid = first.get(trial.item_key) if trial.is_repeat else None
        order = panel_order(items[trial.item_key].n_panels, study.id, slot, trial.order_index, avoid)
        first.setdefault(trial.item_key, order)
        out.append(order)
    return tuple(out)


def slot_for_rater(study: StudyDefinition, rater: str | None = None, join_index: int | None = None) -> int:
    """The rater slot of a listed rater (by name, case-insensitive) or of an open study's joiner.

    Listed study: ``rater`` must be one of ``study.raters``; the slot is its index there.
    Open study: ``join_index`` (0-based, in join order, kept by storage) modulo ``n_raters``.
    """
    if not study.open:
        if rater is None:
            raise ValueError(f"study {study.id!r} lists its raters: give the rater's name")
        wanted = name_key(rater)
        for index, name in enumerate(study.raters):
            if name_key(name) == wanted:
                return index
        raise ValueError(f"{rater!r} is not a planned rater of study {study.id!r} ({', '.join(study.raters)})")
    if join_index is None or isinstance(join_index, bool) or join_index < 0:
        raise ValueError(f"study {study.id!r} is open: give the rater's 0-based join index")
    return join_index % study.n_raters
