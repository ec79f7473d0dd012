"""Issue 14 part B: the forced-choice and ranking designs and catch trials, from the study file to the tidy frame
(study file → prepare/freeze → answers through the service → ratings frame → analysis tables)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import make_app
from p2p_app import assignment, reader
from p2p_app import designs
from p2p_app.service import UserError
from p2p_app.study import StudyError, load_study, rater_group_map, study_key, write_study

ROOT = Path(__file__).resolve().parent.parent
CONTROLS = ROOT / "studies" / "colonoscopy_pilot" / "controls"


def design_study(folder: Path, design: str, **overrides) -> Path:
    """2 prompts (both with a real image) × 2 models × 1 seed, 3 listed raters, 2 groups, catch trials."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(CONTROLS / "bleeding.png", folder / "r1.png")
    shutil.copy(CONTROLS / "snare_polyp.png", folder / "r2.png")
    settings = {
        "id": f"mini_{design}",
        "version": 1,
        "title": "Mini",
        "instructions": "Judge each screen.",
        "modality": "colonoscopy",
        "design": design,
        "models": ["colon-msdm-tiny", "colon-flux-tiny"],
        "seeds": [3, 4],
        "overlap_k": 2,
        "raters": ["ann", "ben", "cat"],
        "catch_rate": 0.3,
        "catch_kinds": ["real", "noise", "flipped", "blank"],
    }
    settings.update(overrides)
    settings = {k: v for k, v in settings.items() if v is not None}  # None: leave the key out
    prompts = [
        {"prompt_id": "p1", "prompt": "a 5 mm sessile polyp in the sigmoid colon", "real_image": "r1.png"},
        {"prompt_id": "p2", "prompt": "a polyp in a snare", "real_image": "r2.png"},
    ]
    path = write_study(folder, settings, prompts)
    if "rater_groups" not in overrides:
        with path.open("a", encoding="utf-8") as fh:
            fh.write('\n[rater_groups]\nresident = ["ann"]\nsenior = ["ben", "cat"]\n')
    return path


@pytest.fixture()
def design_app(tmp_path, demo_registry):
    app = make_app(tmp_path / "data", demo_registry)
    yield app
    app.storage.close()


def load(path, app=None):
    known = [m.name for m in app.config.models] if app else None
    return load_study(path, known_models=known)


# ------------------------------------------------------------------------------------------- study files


def test_designs_build_screens_with_a_constant_panel_count(tmp_path):
    fc = load(design_study(tmp_path / "fc", "forced_choice"))
    assert [i.n_panels for i in fc.items()] == [3] * 4  # the real image + one per model
    assert all(sum(s.is_real for s in i.slots) == 1 for i in fc.items())
    rk = load(design_study(tmp_path / "rk", "ranking"))
    assert [i.n_panels for i in rk.items()] == [2] * 4
    assert not any(s.is_real for i in rk.items() for s in i.slots)
    for st in (fc, rk):
        catches = st.catch_items()
        assert {i.key.split(":")[1] for i in catches} == {"real", "noise", "flipped", "blank"}
        design_n = {i.n_panels for i in st.items()}
        assert {i.n_panels for i in catches} == design_n  # blinding: a catch screen looks like any other
        for item in catches:
            kinds = [s.catch for s in item.slots]
            if item.key.startswith("catch:real"):
                assert kinds.count("real") == 1 and kinds.count("broken") == item.n_panels - 1
            else:
                assert kinds.count("broken") == 1
    assert fc.rater_group("Ann") == "resident" and fc.rater_group("cat") == "senior"
    assert rater_group_map([fc])[study_key(fc)] == {"ann": "resident", "ben": "senior", "cat": "senior"}


@pytest.mark.parametrize(
    ("overrides", "appended", "where"),
    [
        ({"catch_rate": 0.5}, "", "catch_rate must be in"),
        ({"catch_kinds": ["real", "smudge"]}, "", "unknown catch kind 'smudge'"),
        ({"catch_rate": 0.0}, "", "catch_kinds without catch_rate"),
        ({"models": ["colon-msdm-tiny"], "design": "ranking"}, "", "at least two models"),
        ({"rater_groups": 1}, '[rater_groups]\nresident = ["zed"]\n', "'zed' is not one of the study's raters"),
        ({"rater_groups": 1}, '[rater_groups]\na = ["ann"]\nb = ["ann"]\n', "already in group 'a'"),
    ],
)
def test_bad_design_settings_are_refused_with_file_and_line(tmp_path, overrides, appended, where):
    over = {k: v for k, v in overrides.items() if k != "rater_groups"}
    path = design_study(tmp_path / "s", over.pop("design", "forced_choice"), **over,
                        **({"rater_groups": 1} if "rater_groups" in overrides else {}))
    if "rater_groups" in overrides:  # the helper wrote `rater_groups = 1`: replace it by the table under test
        text = path.read_text().replace("rater_groups = 1\n", "")
        path.write_text(text + "\n" + appended)
    with pytest.raises(StudyError) as err:
        load(path)
    assert where in str(err.value)
    assert err.value.line is not None, str(err.value)


def test_forced_choice_needs_a_real_image_on_every_prompt(tmp_path):
    path = design_study(tmp_path / "s", "forced_choice")
    csv = path.parent / "prompts.csv"
    csv.write_text(csv.read_text().replace("r2.png", ""))
    with pytest.raises(StudyError, match="needs a real_image for every prompt") as err:
        load(path)
    assert err.value.line == 3 and err.value.path == csv


def test_design_hash_covers_design_catch_and_groups(tmp_path):
    base = load(design_study(tmp_path / "a", "forced_choice")).design_hash()
    changed = [
        load(design_study(tmp_path / "b", "ranking", id="mini_forced_choice")),
        load(design_study(tmp_path / "c", "forced_choice", catch_rate=0.2)),
        load(design_study(tmp_path / "d", "forced_choice", catch_kinds=["real", "noise"])),
    ]
    assert all(s.design_hash() != base for s in changed)
    path = design_study(tmp_path / "e", "forced_choice")
    path.write_text(path.read_text().replace('senior = ["ben", "cat"]', 'senior = ["ben"]'))
    assert load(path).design_hash() != base
    assert load(design_study(tmp_path / "f", "forced_choice")).design_dict()["format"] == 4


# -------------------------------------------------------------------------------------------- assignment


@pytest.mark.parametrize("design", ["forced_choice", "ranking", "single"])
def test_catch_screens_at_the_rate_never_adjacent_and_deterministic(tmp_path, design):
    st = load(design_study(tmp_path / "s", design, seeds=[1, 2, 3, 4, 5], repeat_fraction=0.2))
    for slot in range(st.n_raters):
        seq = assignment.rater_sequence(st, slot)
        assert seq == assignment.rater_sequence(st, slot)
        flags = [a.is_catch for a in seq]
        n_design = flags.count(False)
        assert flags.count(True) == assignment.catch_count(0.3, n_design) > 0
        assert not flags[0]
        assert not any(a and b for a, b in zip(flags, flags[1:])), flags
        keys = [a.item_key for a in seq if a.is_catch]
        assert len(set(keys)) == len(keys)  # a rater never sees the same catch screen twice
        assert set(keys) <= set(st.item_map())


def test_no_catch_screens_without_catch_rate(tmp_path):
    st = load(design_study(tmp_path / "s", "ranking", catch_rate=0.0, catch_kinds=None))
    assert st.catch_items() == ()
    assert not any(a.is_catch for s in range(3) for a in assignment.rater_sequence(st, s))
