"""Assignment: balanced coverage, stable rater-specific orders, spaced repeats, shuffled panels."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from p2p_app.assignment import (
    Assignment,
    coverage,
    item_coverage,
    panel_order,
    rater_sequence,
    repeat_count,
    sequence_panel_orders,
    slot_for_rater,
)
from p2p_app.study import StudyDefinition, load_study, write_study

ROOT = Path(__file__).resolve().parents[1]


def simulated_study(
    directory: Path,
    *,
    n_prompts: int = 6,
    models: tuple[str, ...] = ("m-a", "m-b", "m-c"),
    seeds: tuple[int, ...] = (1, 2),
    n_raters: int = 4,
    k: int = 2,
    repeat_fraction: float = 0.2,
    design: str = "single",
    n_real: int = 2,
    open_study: bool = False,
) -> StudyDefinition:
    """Write a study through the same functions a user calls, and load it."""
    prompts = []
    for i in range(n_prompts):
        row = {"prompt_id": f"p{i:02d}", "prompt": f"finding number {i}"}
        if i < n_real:
            image = directory / "real" / f"p{i}.png"
            image.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (i * 20, 50, 50)).save(image)
            row["real_image"] = f"real/p{i}.png"
        prompts.append(row)
    settings: dict[str, Any] = {
        "id": "sim",
        "version": 1,
        "title": "Simulated",
        "instructions": "Rate.",
        "modality": "radiology",
        "design": design,
        "models": list(models),
        "seeds": list(seeds),
        "overlap_k": k,
        "repeat_fraction": repeat_fraction,
    }
    if open_study:
        settings.update(open=True, n_raters=n_raters)
    else:
        settings["raters"] = [f"rater{i}" for i in range(n_raters)]
    return load_study(write_study(directory, settings, prompts))


def first_showings(sequence: tuple[Assignment, ...]) -> list[str]:
    return [a.item_key for a in sequence if not a.is_repeat]


# ----------------------------------------------------------------------------------------- coverage


@pytest.mark.parametrize("n_slots", [1, 2, 3, 4, 5, 8])
def test_coverage_is_exact_and_balanced(n_slots):
    for n_items, k, seed in itertools.product([0, 1, 2, 7, 20, 53], range(1, n_slots + 1), [0, 1, "x"]):
        cov = coverage(n_items, n_slots, k, seed)
        assert len(cov) == n_items
        for slots in cov:
            assert len(slots) == k == len(set(slots))
            assert all(0 <= s < n_slots for s in slots)
        loads = Counter(s for slots in cov for s in slots)
        per_slot = [loads.get(s, 0) for s in range(n_slots)]
        assert max(per_slot) - min(per_slot) <= 1, (n_items, n_slots, k, per_slot)
        assert sum(per_slot) == n_items * k


def test_coverage_balances_each_stratum():
    for n_items, n_slots, n_strata in itertools.product([9, 30, 61], [2, 3, 4, 7], [1, 2, 4]):
        for k in range(1, n_slots + 1):
            strata = [f"s{(i * 7) % n_strata}" for i in range(n_items)]
            cov = coverage(n_items, n_slots, k, 3, strata)
            loads = Counter(s for slots in cov for s in slots)
            assert max(loads.values()) - min(loads.get(s, 0) for s in range(n_slots)) <= 1
            for stratum in set(strata):
                counts = Counter(s for slots, t in zip(cov, strata) if t == stratum for s in slots)
                per_slot = [counts.get(s, 0) for s in range(n_slots)]
                assert max(per_slot) - min(per_slot) <= 1, (n_items, n_slots, k, stratum, per_slot)


def test_coverage_varies_rater_pairs_and_seed():
    cov = coverage(40, 4, 2, 0)
    assert len(set(cov)) > 2  # not fixed pairs of raters
    assert coverage(40, 4, 2, 0) == cov
    assert coverage(40, 4, 2, 1) != cov


@pytest.mark.parametrize(
    ("args", "message"),
    [((5, 0, 1, 0), "n_slots >= 1"), ((5, 3, 4, 0), "k must be between"), ((5, 3, 0, 0), "k must be between"),
     ((-1, 3, 1, 0), "n_items >= 0")],
)
def test_coverage_refuses_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        coverage(*args)


@pytest.mark.parametrize(
    ("design", "n_raters", "k"),
    [("single", 4, 2), ("single", 3, 3), ("single", 5, 1), ("side_by_side", 4, 2), ("side_by_side", 3, 2)],
)
def test_every_item_reaches_exactly_k_raters(tmp_path, design, n_raters, k):
    study = simulated_study(tmp_path, design=design, n_raters=n_raters, k=k)
    seen: Counter[str] = Counter()
    loads = []
    for slot in range(n_raters):
        mine = first_showings(rater_sequence(study, slot))
        assert len(mine) == len(set(mine))  # no item twice as a first showing
        seen.update(mine)
        loads.append(len(mine))
    assert set(seen) == {item.key for item in study.items()}
    assert set(seen.values()) == {k}
    assert max(loads) - min(loads) <= 1
    assert {key: len(slots) for key, slots in item_coverage(study).items()} == {key: k for key in seen}


def test_models_are_spread_evenly_over_raters(tmp_path):
    study = simulated_study(tmp_path, n_prompts=8, n_raters=4, k=2)
    items = study.item_map()
    for slot in range(4):
        models = Counter(items[key].slots[0].model for key in first_showings(rater_sequence(study, slot)))
        # 8 prompts x 2 seeds = 16 images per model, each seen twice over 4 raters: 8 per rater
        assert [models[m] for m in study.models] == [8, 8, 8]
        assert models["real"] == 1  # 2 real images x k=2 over 4 raters


# ----------------------------------------------------------------------------------------- ordering


def test_order_is_stable_and_rater_specific(tmp_path):
    study = simulated_study(tmp_path, n_raters=4, k=4)  # everyone sees everything
    sequences = [rater_sequence(study, slot) for slot in range(4)]
    assert sequences == [rater_sequence(study, slot) for slot in range(4)]
    firsts = [first_showings(seq) for seq in sequences]
    assert all(sorted(f) == sorted(firsts[0]) for f in firsts)
    assert len({tuple(f) for f in firsts}) == 4  # four different orders
    assert firsts[0] != sorted(firsts[0])  # shuffled, not design order
    assert first_showings(rater_sequence(study, 0, seed=7)) != firsts[0]


def test_order_is_stable_across_processes(tmp_path):
    study = simulated_study(tmp_path)
    code = (
        "import json, sys; from p2p_app.study import load_study; from p2p_app.assignment import rater_sequence; "
        f"s = load_study({str(tmp_path)!r}); "
        "print(json.dumps([[[a.order_index, a.item_key, a.is_repeat] for a in rater_sequence(s, slot)] "
        "for slot in range(s.n_raters)]))"
    )
    env = {"PYTHONHASHSEED": "12345", "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=True)
    here = [[[a.order_index, a.item_key, a.is_repeat] for a in rater_sequence(study, slot)] for slot in range(4)]
    assert json.loads(out.stdout) == here


def test_order_depends_on_study_version(tmp_path):
    a = simulated_study(tmp_path / "a")
    b = load_study(tmp_path / "a" / "study.toml")
    assert rater_sequence(a, 1) == rater_sequence(b, 1)
    text = (tmp_path / "a" / "study.toml").read_text().replace("version = 1", "version = 2")
    (tmp_path / "a" / "study.toml").write_text(text)
    assert rater_sequence(load_study(tmp_path / "a"), 1) != rater_sequence(a, 1)


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.25, 0.5])
@pytest.mark.parametrize("design", ["single", "side_by_side"])
def test_repeats_come_later_and_not_adjacent(tmp_path, fraction, design):
    study = simulated_study(tmp_path, design=design, repeat_fraction=fraction, n_raters=3, k=2)
    for slot in range(3):
        sequence = rater_sequence(study, slot)
        assert [a.order_index for a in sequence] == list(range(len(sequence)))
        n = sum(1 for a in sequence if not a.is_repeat)
        repeats = [a for a in sequence if a.is_repeat]
        assert len(repeats) == math.ceil(fraction * n - 1e-9) > 0
        assert len({a.item_key for a in repeats}) == len(repeats)
        first = {a.item_key: a.order_index for a in sequence if not a.is_repeat}
        for a in repeats:
            assert a.item_key in first
            assert a.order_index - first[a.item_key] >= max(2, n // 4)


def test_repeats_in_many_sizes():
    for n in range(0, 60):
        for fraction in (0.0, 0.01, 0.1, 0.33, 0.5):
            r = repeat_count(fraction, n)
            assert r == (0 if n < 2 or fraction == 0 else math.ceil(fraction * n - 1e-9))


def test_small_sequences(tmp_path):
    study = simulated_study(tmp_path, n_prompts=1, models=("m-a",), seeds=(1,), n_real=0, n_raters=1, k=1,
                            repeat_fraction=0.5)
    assert rater_sequence(study, 0) == (Assignment(0, "p00/m-a/s1", False),)  # one item: no repeat possible
    study = simulated_study(tmp_path / "two", n_prompts=2, models=("m-a",), seeds=(1,), n_real=0, n_raters=1,
                            k=1, repeat_fraction=0.5)
    sequence = rater_sequence(study, 0)
    assert [a.is_repeat for a in sequence] == [False, False, True]
    assert sequence[2].item_key == sequence[0].item_key


def test_no_repeats_when_fraction_is_zero(tmp_path):
    study = simulated_study(tmp_path, repeat_fraction=0.0)
    assert not any(a.is_repeat for a in rater_sequence(study, 0))


def test_bad_slot_refused(tmp_path):
    study = simulated_study(tmp_path, n_raters=3, k=2)
    for slot in (-1, 3, True):
        with pytest.raises(ValueError, match="rater slot"):
            rater_sequence(study, slot)


# ------------------------------------------------------------------------------------------- panels


def test_panel_order_is_a_deterministic_permutation():
    orders = set()
    for n, slot, index in itertools.product(range(1, 6), range(3), range(20)):
        order = panel_order(n, "sim", slot, index)
        assert sorted(order) == list(range(n))
        assert order == panel_order(n, "sim", slot, index)
        orders.add((n, order))
    assert len({o for n, o in orders if n == 4}) > 10  # many layouts are used
    assert panel_order(1, "sim", 0, 0) == (0,)
    with pytest.raises(ValueError):
        panel_order(0, "sim", 0, 0)


def test_panel_order_avoids_a_given_order():
    for index in range(30):
        drawn = panel_order(3, "sim", 0, index)
        other = panel_order(3, "sim", 0, index, avoid=drawn)
        assert other != drawn and sorted(other) == [0, 1, 2]
    assert panel_order(1, "sim", 0, 0, avoid=(0,)) == (0,)


def test_repeats_get_a_different_panel_order(tmp_path):
    study = simulated_study(tmp_path, design="side_by_side", n_prompts=10, repeat_fraction=0.5, k=4)
    for slot in range(4):
        sequence = rater_sequence(study, slot)
        orders = sequence_panel_orders(study, slot, sequence)
        assert orders == sequence_panel_orders(study, slot, sequence)
        first = {}
        for trial, order in zip(sequence, orders):
            assert sorted(order) == list(range(study.item_map()[trial.item_key].n_panels))
            if trial.is_repeat:
                assert order != first[trial.item_key]
            else:
                first[trial.item_key] = order
                assert order == panel_order(len(order), study.id, slot, trial.order_index)


# -------------------------------------------------------------------------------------------- slots


def test_slot_for_listed_raters(tmp_path):
    study = simulated_study(tmp_path, n_raters=3, k=2)
    assert [slot_for_rater(study, name) for name in study.raters] == [0, 1, 2]
    assert slot_for_rater(study, "  RATER2 ") == 2
    with pytest.raises(ValueError, match="not a planned rater"):
        slot_for_rater(study, "mallory")
    with pytest.raises(ValueError, match="give the rater's name"):
        slot_for_rater(study, join_index=0)


def test_slot_for_open_study(tmp_path):
    study = simulated_study(tmp_path, n_raters=3, k=2, open_study=True)
    assert [slot_for_rater(study, "anyone", join_index=i) for i in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    with pytest.raises(ValueError, match="join index"):
        slot_for_rater(study, "anyone")


def test_shipped_studies_assign_cleanly():
    for name in ("colonoscopy_pilot", "radiology_pilot"):
        study = load_study(ROOT / "studies" / name)
        seen: Counter[str] = Counter()
        for slot in range(study.n_raters):
            sequence = rater_sequence(study, slot)
            seen.update(first_showings(sequence))
            assert any(a.is_repeat for a in sequence)
            sequence_panel_orders(study, slot, sequence)
        assert set(seen.values()) == {study.overlap_k} and len(seen) == len(study.items())
