"""Issue 14: the "wrong anatomy" catch kind — an image the app makes itself whose anatomy is impossible for the
prompt (reader.wrong_anatomy), validated in the study file, hashed only where used, blind, exported, simulated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from p2p_app import designs, reader, simulate
from p2p_app.study import BROKEN_KINDS, StudyError, load_study, study_key
from test_design_screens import design_app, design_study, form_for, prepared  # noqa: F401, F811 (fixture)

ROOT = Path(__file__).resolve().parent.parent

# The shipped studies' design hashes before the kind existed: adding a catch kind must not change them.
SHIPPED_HASHES = {
    "colonoscopy_forced_choice": "5dbae650641bfa44459709052c2ccd0fe0201e204a5303293a23689227952f27",
    "colonoscopy_pilot": "b982cc5292aa685dd285c524e47a2cb08b32a52275506ad306e44f50ac0041ca",
    "colonoscopy_ranking": "4d42ceef3b4b06de09ad632167c7ca3f76f2ea391b0c8e995598412d3991f5c6",
    "radiology_pilot": "c5dd78024b9d9522f72fe9012600b6bc98b6d9233dd6b3a4678d4440318a31a8",
}


def asymmetric(size=(64, 48)) -> Image.Image:
    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def test_radiology_wrong_anatomy_mirrors_one_side_onto_the_other():
    im = asymmetric()
    out = reader.broken_image(im, "wrong_anatomy", "k", "radiology")
    a, b = np.asarray(im), np.asarray(out)
    assert out.size == im.size
    assert np.array_equal(b[:, 32:], a[:, 32:])  # the image's right half (patient's left) is kept
    assert np.array_equal(b, b[:, ::-1])  # and mirrored: a perfectly symmetric body
    assert not np.array_equal(b, np.asarray(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))  # not a plain flip


@pytest.mark.parametrize("size", [(64, 48), (65, 47)])
def test_colonoscopy_wrong_anatomy_is_a_mirrored_mosaic_of_four_lumens(size):
    im = asymmetric(size)
    out = reader.broken_image(im, "wrong_anatomy", "k", "colonoscopy")
    assert out.size == im.size  # keeps the presentation size, odd sizes included
    b = np.asarray(out).astype(int)
    if size == (64, 48):  # even size: exactly symmetric about both midlines (four copies of the frame)
        assert np.array_equal(b, b[:, ::-1]) and np.array_equal(b, b[::-1])
        quarter = np.asarray(im.resize((32, 24), Image.Resampling.LANCZOS)).astype(int)
        assert np.array_equal(b[:24, :32], quarter)
    assert not np.array_equal(b, np.asarray(im))


def test_wrong_anatomy_needs_a_known_modality():
    with pytest.raises(ValueError, match="needs the modality"):
        reader.broken_image(asymmetric(), "wrong_anatomy", "k")
    with pytest.raises(ValueError, match="needs the modality"):
        reader.wrong_anatomy(asymmetric(), "dermatology")


def test_study_file_accepts_the_kind_and_refuses_a_misspelling_with_file_and_line(tmp_path):
    st = load_study(design_study(tmp_path / "ok", "ranking", catch_kinds=["wrong_anatomy"]))
    catches = st.catch_items()
    assert catches and {i.key.split(":")[1] for i in catches} == {"wrong_anatomy"}
    assert {s.catch_kind for i in catches for s in i.slots if s.catch == "broken"} == {"wrong_anatomy"}
    assert {i.n_panels for i in catches} == {i.n_panels for i in st.items()}
    path = design_study(tmp_path / "bad", "ranking", catch_kinds=["real", "wrong-anatomy"])
    with pytest.raises(StudyError) as err:
        load_study(path)
    assert err.value.line is not None and "unknown catch kind 'wrong-anatomy'" in str(err.value)
    assert "wrong_anatomy" in str(err.value)  # the message lists the valid kinds


def test_hash_covers_the_kind_only_where_a_study_uses_it(tmp_path):
    plain = load_study(design_study(tmp_path / "a", "ranking", catch_kinds=["noise"]))
    used = load_study(design_study(tmp_path / "b", "ranking", catch_kinds=["noise", "wrong_anatomy"]))
    assert "wrong_anatomy" not in plain.design_dict()
    assert "wrong_anatomy" in used.design_dict()  # its construction is part of a design that uses it
    assert plain.design_hash() != used.design_hash()
    for name, digest in SHIPPED_HASHES.items():
        assert load_study(ROOT / "studies" / name).design_hash() == digest, name


def test_simulator_knows_every_broken_kind():
    assert set(simulate.CATCH_KINDS) == set(BROKEN_KINDS)
    df = simulate.simulate_ranking(n_raters=4, n_items=30, catch_rate=0.25, seed=3)
    assert "wrong_anatomy" in set(df["catch_kind"])


def test_wrong_anatomy_catch_end_to_end_blind_exported_and_scored(design_app, tmp_path):
    app = design_app
    st = prepared(app, design_study(tmp_path / "s", "ranking", catch_kinds=["real", "wrong_anatomy"],
                                    rater_groups=None))
    slots = app.storage.study_slots(app.study_record(st).pk)
    made = [s for s in st.catch_slots() if s.catch_kind == "wrong_anatomy"]
    assert made
    sizes = {Path(i.file_path).stat().st_size for i in slots.values()}
    assert len(sizes) == 1  # blind: the catch images have the byte size of every other image
    for s in made:
        with Image.open(slots[s.key].file_path) as im, Image.open(slots[s.derive_from].file_path) as src:
            assert im.size == src.size == (app.config.presentation_size,) * 2
            expected = reader.wrong_anatomy(src, "colonoscopy")
            assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(expected))
            assert not im.info  # no metadata names it
        name = Path(slots[s.key].file_path).name
        assert name == f"{slots[s.key].id}.png" and "catch" not in name and "anatomy" not in name
    for name in st.raters:
        session = reader.add_rater(app, st, name)[0]
        while (shown := app.next_trial(st, session)) is not None:
            assert app.submit_trial(st, session, shown.trial_id, form_for(st, shown)).status == "stored"
    df = app.storage.ratings_frame(study_key(st))
    assert "wrong_anatomy" in set(df.loc[df["catch"] == "broken", "catch_kind"])
    assert set(df.loc[df["catch"] == "", "catch_kind"]) == {""}
    assert not designs.catch_checks(df).empty
    import pandas as pd
    from click.testing import CliRunner

    from p2p_app.cli import main

    out = tmp_path / "long.csv"
    res = CliRunner().invoke(main, ["export", str(out), "--study", st.id, "--data-dir", str(tmp_path / "data")])
    assert res.exit_code == 0, res.output
    exported = pd.read_csv(out, keep_default_na=False)
    assert set(exported.loc[exported["catch"] == "broken", "catch_kind"]) == {"wrong_anatomy"}
