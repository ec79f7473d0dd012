"""Blinding and assignment as pure functions (fast, no models, no server): the selection mutation testing runs.

What a served page shows is tested in tests/test_blinding.py; here each rule is pinned where it is made:
one byte size and pixel size per presentation size, no metadata, one constant mtime, uniform panel
positions per model (chi-square over >= 1,000 trials, fixed seeds), and the exact, machine-independent
output of the seeded assignment functions (a frozen study's raters resume on it, so it must never drift).
"""

from __future__ import annotations

import io
import os
import random
import struct
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.stats import chisquare

from p2p_app import assignment, blinding
from p2p_app.blinding import (
    PRESENTATION_MTIME,
    Panel,
    new_image_id,
    panel_label,
    presentation_png,
    presentation_png_size,
    sha256_hex,
    shuffled,
    stamp_constant_mtime,
)
from p2p_app.study import load_study

ROOT = Path(__file__).resolve().parent.parent
RAD_MODELS = ["rad-msdm-tiny", "rad-flux-tiny", "rad-kandinsky-tiny"]
COLON_MODELS = ["colon-msdm-tiny", "colon-flux-tiny", "colon-kandinsky-tiny"]
ALPHA = 0.001  # a uniform source fails a chi-square test at this level once in 1,000 seeds; the seeds are fixed


def chunks(png: bytes) -> list[tuple[bytes, int]]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    out, i = [], 8
    while i < len(png):
        (n,) = struct.unpack(">I", png[i : i + 4])
        out.append((png[i + 4 : i + 8], n))
        i += 12 + n
    assert i == len(png)
    return out


def noise(seed: int, shape=(300, 400, 3), mode: str | None = None) -> Image.Image:
    arr = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    return Image.fromarray(arr, mode) if mode else Image.fromarray(arr)


# ------------------------------------------------------------------------------ presentation files


@pytest.mark.parametrize("size", [16, 64, 100, 512])
def test_every_presentation_png_of_a_size_has_one_byte_length(size):
    """Flat colour, noise, a gradient, grey, RGBA, a photo-sized image: all the same byte length."""
    gradient = Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (256, 1)))
    images = [
        Image.new("RGB", (50, 50), (200, 10, 30)),
        noise(1),
        noise(2, (64, 48, 3)),
        gradient,
        noise(3, (90, 90, 4), "RGBA"),
        Image.new("L", (1024, 768), 17),
    ]
    lengths = {len(presentation_png(im, size)) for im in images}
    assert lengths == {presentation_png_size(size)}
    assert presentation_png_size(size) > 3 * size * size  # stored, not compressed: ~3 bytes per pixel


def test_presentation_png_is_a_clean_square_rgb_png():
    src = noise(4, (300, 400, 3))
    src.info["comment"] = "made by model-x"
    png = presentation_png(src, 64)
    assert [t for t, _ in chunks(png)] == [b"IHDR"] + [b"IDAT"] * (len(chunks(png)) - 2) + [b"IEND"]
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.size == (64, 64)
        assert not {k for k in im.info if k not in ("dpi",)}  # no text, EXIF, ICC, gamma
    assert b"model-x" not in png


def test_presentation_png_centre_crops_then_resizes():
    # left third red, middle blue, right third green: a centre crop of a 300x100 image is the blue square
    src = Image.new("RGB", (300, 100), (255, 0, 0))
    src.paste((0, 0, 255), (100, 0, 200, 100))
    src.paste((0, 255, 0), (200, 0, 300, 100))
    with Image.open(io.BytesIO(presentation_png(src, 32))) as im:
        colours = {c for _, c in im.getcolors(4096)}
    assert colours == {(0, 0, 255)}
    tall = Image.new("RGB", (100, 300), (255, 0, 0))
    tall.paste((0, 0, 255), (0, 100, 100, 200))
    with Image.open(io.BytesIO(presentation_png(tall, 100))) as im:  # same size: no resize, exact pixels
        assert {c for _, c in im.getcolors(4096)} == {(0, 0, 255)}


def test_presentation_png_upscales_and_downscales_smoothly():
    # a small checkerboard upscaled: bicubic gives intermediate greys (nearest would keep two values)
    small = Image.fromarray((np.indices((8, 8)).sum(0) % 2 * 255).astype(np.uint8)).convert("RGB")
    with Image.open(io.BytesIO(presentation_png(small, 64))) as im:
        assert len(im.getcolors(65536)) > 2
    big = Image.fromarray((np.indices((256, 256)).sum(0) % 2 * 255).astype(np.uint8)).convert("RGB")
    with Image.open(io.BytesIO(presentation_png(big, 32))) as im:  # Lanczos averages a fine checkerboard to grey
        arr = np.asarray(im).astype(int)
        assert abs(arr.mean() - 127.5) < 10 and arr.std() < 40


@pytest.mark.parametrize("size", [15, 4097, 0, -1])
def test_presentation_size_out_of_range_is_refused(size):
    with pytest.raises(ValueError, match=f"between 16 and 4096 pixels, got {size}"):
        presentation_png(Image.new("RGB", (32, 32)), size)


@pytest.mark.parametrize("size", [16, 4096])
def test_presentation_size_bounds_are_accepted(size):
    assert len(presentation_png(Image.new("RGB", (20, 20)), size)) == presentation_png_size(size)


def test_constant_mtime(tmp_path):
    paths = []
    for i in range(3):
        p = tmp_path / f"{i}.png"
        p.write_bytes(b"x" * i)
        stamp_constant_mtime(p)
        paths.append(p)
    assert {os.stat(p).st_mtime for p in paths} == {PRESENTATION_MTIME}
    assert {os.stat(p).st_atime for p in paths} == {PRESENTATION_MTIME}
    assert PRESENTATION_MTIME == 946_684_800


def test_opaque_ids_labels_and_hashes():
    ids = {new_image_id() for _ in range(200)}
    assert len(ids) == 200 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert panel_label(1) == "Image A" and panel_label(3) == "Image C" and panel_label(26) == "Image Z"
    assert Panel(2, "abc", "/x/abc.png").label == "Image B"
    assert sha256_hex(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


# ------------------------------------------------------------------------------ live shuffle


def test_shuffled_is_a_uniform_permutation_per_model():
    """1,200 shuffles of three models: each model's position is uniform (chi-square, fixed seed)."""
    models = ["m-first", "m-second", "m-third"]
    rng = random.Random(20261129)
    counts = {m: Counter() for m in models}
    for _ in range(1200):
        order = shuffled(models, rng)
        assert sorted(order) == sorted(models)
        for pos, m in enumerate(order):
            counts[m][pos] += 1
    for m in models:
        observed = [counts[m][p] for p in range(3)]
        assert chisquare(observed).pvalue > ALPHA, (m, observed)
    assert models == ["m-first", "m-second", "m-third"]  # the input is not shuffled in place


def test_shuffled_without_rng_uses_the_os_source():
    seen = {tuple(shuffled(list("abcd"))) for _ in range(200)}
    assert len(seen) > 12  # 24 permutations; a fixed order or a reversal would give 1 or 2


# ------------------------------------------------------------------------------ study panels


def _study(name: str, models: list[str]):
    return load_study(ROOT / "studies" / name, known_models=models)


def test_study_panel_positions_are_uniform_per_model_over_the_trial_path():
    """The trial-creation path of a study (rater_sequence → sequence_panel_orders → item slots, exactly what
    reader.next_trial stores) over 60 rater slots that each see every item: > 1,000 trials; every model (and
    the real images) lands on each panel position equally often (chi-square)."""
    study = replace(_study("radiology_pilot", RAD_MODELS), n_raters=60, overlap_k=60)
    items = study.item_map()
    counts: dict[str, Counter] = {}
    n_trials = 0
    for slot in range(study.n_raters):
        sequence = assignment.rater_sequence(study, slot)
        for trial, order in zip(sequence, assignment.sequence_panel_orders(study, slot, sequence)):
            item = items[trial.item_key]
            assert sorted(order) == list(range(item.n_panels))
            for pos, index in enumerate(order):
                counts.setdefault(item.slots[index].model, Counter())[pos] += 1
            n_trials += 1
    assert n_trials >= 1000
    assert set(counts) == set(study.models) | {"real"}
    for model, c in counts.items():
        observed = [c[p] for p in range(len(study.models))]
        assert chisquare(observed).pvalue > ALPHA, (model, observed)


@pytest.mark.parametrize("n_panels", [2, 3, 4])
def test_panel_order_is_uniform(n_panels):
    counts = [Counter() for _ in range(n_panels)]
    for slot in range(40):
        for order_index in range(30):
            order = assignment.panel_order(n_panels, "uniform-study", slot, order_index)
            for pos, index in enumerate(order):
                counts[index][pos] += 1
    for c in counts:
        assert chisquare([c[p] for p in range(n_panels)]).pvalue > ALPHA


def test_every_screen_of_a_side_by_side_study_has_the_same_panel_count():
    study = _study("radiology_pilot", RAD_MODELS)
    assert {item.n_panels for item in study.items()} == {len(study.models)}
    with_real = [i for i in study.items() if any(s.is_real for s in i.slots)]
    assert len(with_real) == 6  # 4 prompt real images + 2 controls, one seed
    dropped = Counter(m for i in with_real for m in study.models if m not in {s.model for s in i.slots})
    assert sorted(dropped.values()) == [2, 2, 2]  # each model gives up the same number of screens
    single = _study("colonoscopy_pilot", COLON_MODELS)
    assert {item.n_panels for item in single.items()} == {1}


# ------------------------------------------------------------------------------ pinned assignment output
# The assignment is documented as a pure function of (study, slot, seed), the same on every machine: a change
# here silently reshuffles every running study. These values pin it.


def test_hash_and_panel_order_are_pinned():
    assert assignment._h("a", 1) == 9484037261928657086
    assert assignment._h("ü") == 6950308537068853028
    assert assignment.panel_order(4, "s", 1, 2) == (3, 1, 0, 2)
    assert assignment.seeded_permutation(5, "x") == tuple(sorted(range(5), key=lambda i: (assignment._h("x", i), i)))


def test_coverage_is_pinned():
    assert assignment.coverage(6, 3, 2, "seed", ["x", "x", "y", "y", "z", "z"]) == [
        (0, 1), (1, 2), (0, 2), (0, 1), (0, 2), (1, 2)
    ]  # fmt: skip
    assert assignment.coverage(6, 3, 2, "seed") == [(0, 1), (1, 2), (0, 2), (0, 2), (1, 2), (0, 1)]


def test_radiology_pilot_sequence_is_pinned():
    study = _study("radiology_pilot", RAD_MODELS)
    sequence = assignment.rater_sequence(study, 0)
    assert [(t.item_key, t.is_repeat) for t in sequence] == [
        ("xr_wrist_radius_fracture/s5", False), ("ct_liver_hypodense/s5", False), ("us_hydronephrosis/s5", False),
        ("cxr_effusions_cardiomegaly/s5", False), ("cxr_rll_consolidation/s5", False),
        ("control:ct_chest_normal/s5", False), ("xr_wrist_radius_fracture/s5", True),
        ("cxr_left_pneumothorax/s5", False), ("control:chest_normal/s5", False),
        ("ctpa_pulmonary_embolism/s5", False), ("control:chest_normal/s5", True),
    ]  # fmt: skip
    assert [t.order_index for t in sequence] == list(range(len(sequence)))
    assert assignment.sequence_panel_orders(study, 0, sequence) == (
        (0, 2, 1), (0, 2, 1), (1, 2, 0), (2, 0, 1), (0, 1, 2), (1, 2, 0), (2, 1, 0), (1, 0, 2), (2, 1, 0),
        (1, 2, 0), (1, 2, 0),
    )  # fmt: skip
    # the seed enters both the coverage and the order
    assert [t.item_key for t in assignment.rater_sequence(study, 0, seed=7)] == [
        "xr_wrist_radius_fracture/s5", "cxr_rll_consolidation/s5", "mri_brain_frontal_lesion/s5",
        "ct_head_subdural/s5", "ct_chest_spiculated_nodule/s5", "cxr_left_pneumothorax/s5",
        "control:ct_chest_normal/s5", "cxr_left_pneumothorax/s5", "us_gallstones/s5", "mri_lumbar_disc/s5",
        "ct_head_subdural/s5",
    ]  # fmt: skip
    assert assignment.item_coverage(study, seed=7) != assignment.item_coverage(study)


def test_colonoscopy_pilot_coverage_is_pinned():
    """A single-design study with real images and controls: every stratum label takes part in the ordering."""
    import hashlib
    import json

    study = _study("colonoscopy_pilot", COLON_MODELS)
    coverage = assignment.item_coverage(study)
    digest = hashlib.sha256(json.dumps(sorted(coverage.items())).encode()).hexdigest()
    assert digest == "99f3a2b177da784625e0c7a1e8e0a4dfd19990cfedcb9ce6a7941d64473467d4"
    assert [t.item_key for t in assignment.rater_sequence(study, 0)][:3] == [
        "polyp_0iia_10mm_nbi/colon-flux-tiny/s11", "polyp_0ip_15mm/colon-msdm-tiny/s23", "cecum_normal/colon-flux-tiny/s23",
    ]  # fmt: skip


def test_repeat_count_caps_and_types():
    assert assignment.repeat_count(-0.5, 10) == 0  # a negative share is no repeats, never a negative count
    assert assignment.repeat_count(1.0, 20) == 16  # n - max(2, n // 4) + 1
    assert assignment.repeat_count(1.0, 10) == 9 and isinstance(assignment.repeat_count(1.0, 10), int)
    assert assignment.repeat_count(0.0, 10) == 0 and assignment.repeat_count(0.5, 1) == 0
    assert assignment.repeat_count(0.25, 8) == 2


def test_two_panel_repeat_never_shows_its_first_order():
    for slot in range(10):
        for order_index in range(10):
            first = assignment.panel_order(2, "s", slot, order_index)
            assert assignment.panel_order(2, "s", slot, order_index, avoid=first) != first
    assert assignment.panel_order(1, "s", 0, 0, avoid=(0,)) == (0,)


def test_assignment_errors_say_what_is_wrong():
    study = _study("radiology_pilot", RAD_MODELS)
    with pytest.raises(ValueError, match=r"rater slot 3 is outside 0\.\.2 for study 'radiology_pilot'"):
        assignment.rater_sequence(study, 3)
    with pytest.raises(ValueError, match="a trial needs at least one panel, got 0"):
        assignment.panel_order(0, "s", 0, 0)
    with pytest.raises(ValueError, match="strata has 2 entries for 3 items"):
        assignment.coverage(3, 2, 1, "s", ["a", "b"])
    with pytest.raises(ValueError, match="give the rater's 0-based join index"):
        assignment.slot_for_rater(study, join_index=-1)
    assert assignment.slot_for_rater(study, join_index=4) == 1
    listed = replace(study, open=False, raters=("ann", "bob"), n_raters=2)
    with pytest.raises(ValueError, match=r"'zed' is not a planned rater of study 'radiology_pilot' \(ann, bob\)"):
        assignment.slot_for_rater(listed, rater="zed")
    assert assignment.slot_for_rater(listed, rater=" BOB ") == 1


@pytest.mark.parametrize("shape", [(100, 103), (103, 100)])  # (height, width): an odd margin of 3 pixels
def test_centre_crop_offset_is_floor_of_half_the_margin(shape):
    h, w = shape
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    if w > h:
        arr[:, 1] = 255  # column 1 is the first of the crop: offset (103 - 100) // 2 == 1
    else:
        arr[1, :] = 255
    with Image.open(io.BytesIO(presentation_png(Image.fromarray(arr), 100))) as im:
        out = np.asarray(im)
    edge = out[:, 0] if w > h else out[0, :]
    assert (edge == 255).all() and out.sum() == 255 * 3 * 100


def test_resampling_is_lanczos_down_and_bicubic_up():
    src = noise(7, (80, 80, 3))
    for size, method in ((32, Image.Resampling.LANCZOS), (128, Image.Resampling.BICUBIC)):
        with Image.open(io.BytesIO(presentation_png(src, size))) as im:
            assert np.array_equal(np.asarray(im), np.asarray(src.resize((size, size), method))), size


def test_a_presentation_png_of_another_length_is_never_returned(monkeypatch):
    monkeypatch.setattr(blinding, "presentation_png_size", lambda size: size * 1000)
    with pytest.raises(RuntimeError, match=r"presentation PNG of 32 px has \d+ bytes, not 32000"):
        presentation_png(Image.new("RGB", (40, 40)), 32)
