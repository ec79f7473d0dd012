"""Study files: the shipped examples load, bad input is refused with file + line + reason, hashes."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from p2p_app.study import (
    ALIGNMENT,
    BUILTIN_QUESTIONS,
    DEFAULT_QUESTIONS,
    REALISM,
    Question,
    StudyDefinition,
    StudyError,
    find_studies,
    load_study,
    write_study,
)

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ROOT / "studies"
MODELS = ("m-one", "m-two")


def _png(path: Path, colour: tuple[int, int, int] = (200, 90, 80)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), colour).save(path)
    return path


def _settings(**overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "id": "tiny",
        "version": 1,
        "title": "Tiny study",
        "instructions": "Rate each image.",
        "modality": "colonoscopy",
        "design": "single",
        "models": list(MODELS),
        "seeds": [1, 2],
        "raters": ["ann", "ben", "cat"],
        "overlap_k": 2,
        "repeat_fraction": 0.1,
    }
    for key, value in overrides.items():
        if value is None:
            settings.pop(key, None)
        else:
            settings[key] = value
    return settings


PROMPTS = [
    {"prompt_id": "p1", "prompt": "a 5 mm sessile polyp", "real_image": "real/p1.png"},
    {"prompt_id": "p2", "prompt": "the cecum, normal mucosa"},
    {"prompt_id": "p3", "prompt": "ulcerative colitis, Mayo 2"},
]
CONTROLS = [
    {"control_id": "c1", "file": "c1.png", "caption": "a real polyp"},
    {"control_id": "c2", "file": "c2.png", "caption": "normal colon"},
]


def make_study(
    directory: Path,
    prompt_rows: list[dict[str, str]] | None = None,
    control_rows: list[dict[str, str]] | None = None,
    question_tables: list[dict[str, Any]] | None = None,
    **overrides: Any,
) -> Path:
    """A valid study (3 prompts, one with a real image, 2 controls) unless told otherwise.

    ``overrides`` replace top-level TOML keys (None removes one).
    """
    _png(directory / "real" / "p1.png")
    for i, control in enumerate(CONTROLS):
        _png(directory / "controls" / control["file"], (10 * i, 100, 100))
    settings = _settings(**overrides)
    settings.setdefault("controls", "controls")
    return write_study(
        directory,
        settings,
        PROMPTS if prompt_rows is None else prompt_rows,
        CONTROLS if control_rows is None else control_rows,
        question_tables or (),
    )


def _line_of(path: Path, startswith: str) -> int:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.startswith(startswith):
            return number
    raise AssertionError(f"{startswith!r} not in {path}")


def refused(study: Path, file: Path, line: int | None, reason: str, **kwargs: Any) -> StudyError:
    with pytest.raises(StudyError) as caught:
        load_study(study, **kwargs)
    error = caught.value
    message = str(error)
    assert str(file) in message, message
    assert error.path == file, message
    if line is not None:
        assert f"line {line}:" in message, message
        assert error.line == line
    assert reason in message, message
    return error


# -------------------------------------------------------------------------------------- examples


def _registry(modality: str) -> list[str]:
    demo = STUDIES / "demo.toml"
    if demo.is_file():
        models = tomllib.loads(demo.read_text(encoding="utf-8")).get("models", [])
        names = [m["name"] for m in models if m.get("modality") == modality]
        if names:
            return names
    prefix = {"colonoscopy": "colon", "radiology": "rad"}[modality]
    return [f"{prefix}-{family}-tiny" for family in ("msdm", "flux", "kandinsky")]


def test_shipped_studies_are_found_and_load():
    found = find_studies(STUDIES)
    assert [p.parent.name for p in found] == [
        "colonoscopy_artifacts", "colonoscopy_forced_choice", "colonoscopy_naive_disclosed", "colonoscopy_pilot",
        "colonoscopy_ranking", "radiology_pilot",
    ]
    for path in [p for p in found if p.parent.name.endswith("_pilot")]:  # the design examples: test_design_screens
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        study = load_study(path, known_models=_registry(raw["modality"]))
        assert study.id == path.parent.name
        assert len(study.prompts) >= 12
        assert study.controls and any(p.real_image for p in study.prompts)
        assert len(study.design_hash()) == 64


def test_colonoscopy_pilot_design():
    study = load_study(STUDIES / "colonoscopy_pilot", known_models=_registry("colonoscopy"))
    assert study.design == "single" and not study.open
    assert study.raters == ("endo_a", "endo_b", "endo_c", "endo_d") and study.n_raters == 4
    assert [q.key for q in study.questions] == ["realism", "alignment", "artifacts", "comment"]
    n_real = sum(1 for p in study.prompts if p.real_image)
    expected = len(study.prompts) * len(study.models) * len(study.seeds) + n_real + len(study.controls)
    assert len(study.items()) == expected == len(study.image_slots())
    assert all(item.n_panels == 1 for item in study.items())


def test_radiology_pilot_design():
    study = load_study(STUDIES / "radiology_pilot", known_models=_registry("radiology"))
    assert study.design == "side_by_side" and study.open and study.raters == () and study.n_raters == 3
    assert study.questions == DEFAULT_QUESTIONS
    items = study.items()
    assert len(items) == (len(study.prompts) + len(study.controls)) * len(study.seeds)
    panels = {item.key: item.n_panels for item in items}
    # every screen has one panel per model: a real image or a control takes the place of one model's image
    assert set(panels.values()) == {len(study.models)}
    real_items = [item for item in items if any(slot.is_real for slot in item.slots)]
    assert [item.key for item in real_items][-2:] == ["control:chest_normal/s5", "control:ct_chest_normal/s5"]
    left_out = [next(m for m in study.models if m not in {s.model for s in item.slots}) for item in real_items]
    assert left_out == [study.models[r % len(study.models)] for r in range(len(real_items))]  # in rotation


def test_placeholder_images_are_reproducible():
    result = subprocess.run(
        [sys.executable, str(STUDIES / "make_placeholders.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------------- items and slots


def test_single_design_items(tmp_path):
    study = load_study(make_study(tmp_path))
    keys = [item.key for item in study.items()]
    assert keys[:5] == ["p1/m-one/s1", "p1/m-one/s2", "p1/m-two/s1", "p1/m-two/s2", "p1/real"]
    assert keys[-2:] == ["control:c1", "control:c2"]
    assert len(keys) == 3 * 2 * 2 + 1 + 2 == len(set(keys))
    assert [s.key for s in study.image_slots()] == keys
    real = study.item_map()["p1/real"].slots[0]
    assert real.is_real and real.source == "real" and real.seed is None and real.real_path.is_file()
    control = study.item_map()["control:c1"]
    assert control.prompt == "a real polyp"  # the caption is what alignment is judged against
    assert control.slots[0].model == "real" and control.slots[0].prompt_id == "control:c1"


def test_side_by_side_design_items(tmp_path):
    study = load_study(make_study(tmp_path, design="side_by_side"))
    items = study.item_map()
    assert list(items) == [
        "p1/s1", "p1/s2", "p2/s1", "p2/s2", "p3/s1", "p3/s2",
        "control:c1/s1", "control:c1/s2", "control:c2/s1", "control:c2/s2",
    ]  # fmt: skip
    # Every screen has one panel per model; the real image takes the place of the model whose turn it is
    # (rotation over the real-bearing items in design order: m-one, m-two, m-one, ...).
    assert {item.n_panels for item in items.values()} == {2}
    assert [s.key for s in items["p1/s1"].slots] == ["p1/m-two/s1", "p1/real"]
    assert [s.key for s in items["p1/s2"].slots] == ["p1/m-one/s2", "p1/real"]
    assert [s.key for s in items["p2/s1"].slots] == ["p2/m-one/s1", "p2/m-two/s1"]
    # A control's screen: the other model's image for the caption, then the control image (never a lone panel).
    control = items["control:c1/s2"]
    assert [s.key for s in control.slots] == ["control:c1/m-one/s2", "control:c1"]
    assert [s.key for s in items["control:c2/s1"].slots] == ["control:c2/m-two/s1", "control:c2"]
    assert control.prompt == "a real polyp" and all(s.prompt == "a real polyp" for s in control.slots)
    # the real images are one slot for both seeds; each control item adds 1 generated image
    assert len(study.image_slots()) == (3 * 2 * 2 - 2) + 1 + 2 + 2 * 2 * 1


def test_prompt_whitespace_is_collapsed_and_lines_kept(tmp_path):
    prompts = [{"prompt_id": "a", "prompt": "  two   spaces\n newline "}, {"prompt_id": "b", "prompt": "x"}]
    study = load_study(make_study(tmp_path, prompt_rows=prompts))
    assert study.prompts[0].prompt == "two spaces newline"
    assert [p.line for p in study.prompts] == [2, 4]  # a quoted field spanning lines 2-3


def test_builtin_questions():
    assert [q.key for q in DEFAULT_QUESTIONS] == ["realism", "alignment"]
    assert REALISM.levels[0] == (1, "Clearly artificial") and REALISM.levels[-1] == (5, "Indistinguishable from a real image")
    assert ALIGNMENT.levels[0] == (1, "Does not match the prompt at all")
    assert ALIGNMENT.levels[-1] == (5, "Matches the prompt exactly")
    assert set(BUILTIN_QUESTIONS) == {"realism", "alignment", "artifacts", "comment"}
    assert BUILTIN_QUESTIONS["artifacts"].kind == "multi" and not BUILTIN_QUESTIONS["artifacts"].required
    with pytest.raises(ValueError, match="needs 2 to"):
        Question("x", "scale", "X?", levels=((1, "only"),))


def test_custom_questions_load(tmp_path):
    questions = [
        {"key": "realism"},
        {"key": "artifacts", "required": True},
        {"key": "visible", "kind": "scale", "label": "Visible?", "levels": ["No", "Partly", "Yes"]},
        {"key": "devices", "kind": "multi", "label": "Devices?", "options": ["Snare", "Clip"]},
        {"key": "note", "kind": "text", "label": "Note"},
    ]
    study = load_study(make_study(tmp_path, question_tables=questions))
    by_key = {q.key: q for q in study.questions}
    assert list(by_key) == ["realism", "artifacts", "visible", "devices", "note"]
    assert by_key["artifacts"].required and by_key["visible"].required
    assert by_key["visible"].levels == ((1, "No"), (2, "Partly"), (3, "Yes"))
    assert not by_key["devices"].required and not by_key["note"].required


def test_open_study(tmp_path):
    study = load_study(make_study(tmp_path, raters=None, open=True, n_raters=5, overlap_k=3))
    assert study.open and study.raters == () and study.n_raters == 5


# -------------------------------------------------------------------------------------- refusals


def test_unknown_models_refused(tmp_path):
    toml = make_study(tmp_path)
    refused(toml, toml, _line_of(toml, "models"), "unknown models: m-two", known_models=["m-one"])


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("models", [], "models is empty"),
        ("models", ["m-one", "m-one"], "models listed twice: m-one"),
        ("models", ["real"], "reserved"),
        ("models", ["bad/name"], "model name 'bad/name'"),
        ("overlap_k", 4, "overlap_k = 4 is larger than the number of raters (3)"),
        ("overlap_k", 0, "overlap_k must be >= 1"),
        ("design", "grid", "unknown design 'grid'"),
        ("modality", "dermatology", "unknown modality 'dermatology'"),
        ("repeat_fraction", 0.6, "repeat_fraction must be in [0, 0.5]"),
        ("repeat_fraction", -0.1, "repeat_fraction must be in [0, 0.5]"),
        ("seeds", [], "seeds is empty"),
        ("seeds", [1, 1.5], "seed 1.5 must be an integer"),
        ("seeds", [1, "2"], "seed '2' must be an integer"),
        ("seeds", [True], "seed True must be an integer"),
        ("seeds", [-1], "seed -1 must be an integer"),
        ("seeds", [3, 3], "seeds repeat"),
        ("seeds", 3, "seeds must be a list"),
        ("version", 0, "version must be >= 1"),
        ("version", "1", "version must be an integer"),
        ("id", "Has Space", "id 'Has Space'"),
        ("title", "  ", "title is empty"),
        ("raters", ["ann", "Ann"], "raters listed twice"),
        ("raters", [], "list the planned raters"),
        ("n_raters", 5, "n_raters = 5 but 3 raters are listed"),
        ("allow_answer_changes", 1, "allow_answer_changes must be true or false"),
    ],
)
def test_bad_settings_refused(tmp_path, key, value, reason):
    toml = make_study(tmp_path, **{key: value})
    refused(toml, toml, _line_of(toml, f"{key} ="), reason)


def test_rater_names_compare_as_the_app_compares_them_at_sign_in(tmp_path):
    """Listed rater names, groups and group look-ups go through ``text.name_key`` (case, width, invisible
    characters and whitespace runs do not make two names different), as signing in does."""
    for twin in ("\uff21nn", "ann\u200b", "ANN"):  # full-width A, a zero-width space, capitals
        toml = make_study(tmp_path / f"t{len(twin)}{ord(twin[0])}", raters=["ann", twin, "ben"])
        refused(toml, toml, _line_of(toml, "raters ="), "raters listed twice")
    toml = make_study(tmp_path / "g", raters=["Ann Lee", "ben", "cat"],
                      rater_groups={"resident": ["\uff41nn  lee"], "senior": ["BEN"]})
    study = load_study(toml, known_models=MODELS)
    assert study.rater_groups == (("resident", ("Ann Lee",)), ("senior", ("ben",)))
    assert study.rater_group(" ann\u200b lee ") == "resident" and study.rater_group("cat") == ""


def test_unknown_key_refused_with_its_line(tmp_path):
    toml = make_study(tmp_path, overlap=2)
    refused(toml, toml, _line_of(toml, "overlap ="), "unknown key 'overlap'")


def test_missing_required_key_refused(tmp_path):
    toml = make_study(tmp_path, instructions=None)
    refused(toml, toml, None, "missing required key 'instructions'")


def test_open_study_needs_n_raters_and_no_list(tmp_path):
    toml = make_study(tmp_path / "a", raters=None, open=True)
    refused(toml, toml, _line_of(toml, "open ="), "needs n_raters")
    toml = make_study(tmp_path / "b", open=True, n_raters=3)
    refused(toml, toml, _line_of(toml, "raters ="), "an open study takes no rater list")
    toml = make_study(tmp_path / "c", raters=None, open=True, n_raters=2, overlap_k=3)
    refused(toml, toml, _line_of(toml, "overlap_k ="), "larger than the number of raters (2)")


def test_toml_syntax_error_refused_with_line(tmp_path):
    toml = make_study(tmp_path)
    lines = toml.read_text(encoding="utf-8").splitlines()
    lines.insert(3, "title2 = = oops")
    toml.write_text("\n".join(lines) + "\n", encoding="utf-8")
    refused(toml, toml, 4, "TOML syntax error")


def test_missing_study_file_refused(tmp_path):
    refused(tmp_path / "nope.toml", tmp_path / "nope.toml", None, "study file not found")


@pytest.mark.parametrize(
    ("question", "reason"),
    [
        ({"key": "x", "kind": "stars", "label": "X"}, "kind 'stars'"),
        ({"key": "x", "kind": "scale", "label": "X"}, "needs 2 to 11 levels"),
        ({"key": "x", "kind": "scale", "label": "X", "levels": [1, 2]}, "levels must be a list of labels"),
        ({"key": "x", "kind": "multi", "label": "X"}, "needs non-empty options"),
        ({"key": "x", "kind": "multi", "label": "X", "options": ["a", "a"]}, "options repeat"),
        ({"key": "x", "kind": "text", "label": "X", "options": ["a"]}, "neither levels nor options"),
        ({"key": "x", "kind": "text"}, "label is empty"),
        ({"key": "Bad Key", "kind": "text", "label": "X"}, "question key 'Bad Key'"),
        ({"kind": "text", "label": "X"}, "key is missing"),
        ({"key": "realism", "label": "Mine"}, "'realism' is a built-in question"),
        ({"key": "x", "kind": "text", "label": "X", "colour": "red"}, "unknown key 'colour'"),
        ({"key": "x", "kind": "text", "label": "X", "required": "yes"}, "required must be true or false"),
    ],
)
def test_bad_question_refused(tmp_path, question, reason):
    toml = make_study(tmp_path, question_tables=[{"key": "realism"}, question])
    error = refused(toml, toml, None, reason)
    assert "[[questions]] #2" in str(error)
    assert error.line is not None and error.line > _line_of(toml, "[[questions]]")


def test_duplicate_question_refused(tmp_path):
    toml = make_study(tmp_path, question_tables=[{"key": "realism"}, {"key": "realism"}])
    lines = [n for n, line in enumerate(toml.read_text().splitlines(), 1) if line == 'key = "realism"']
    refused(toml, toml, lines[1], "question key 'realism' is used twice")


def test_misplaced_keys_get_a_hint(tmp_path):
    toml = make_study(tmp_path / "a", question_tables=[{"key": "realism"}])
    toml.write_text(toml.read_text() + "n_raters = 3\n", encoding="utf-8")
    error = refused(toml, toml, None, "[[questions]] #1: unknown key 'n_raters'")
    assert "top-level keys must come before the first [[questions]]" in str(error)
    assert error.line == len(toml.read_text().splitlines())
    toml = make_study(tmp_path / "b", label="Realism?")
    refused(toml, toml, _line_of(toml, "label ="), "unknown key 'label' (question keys belong in a [[questions]] table)")


def test_missing_controls_folder_refused(tmp_path):
    toml = make_study(tmp_path)
    shutil.rmtree(tmp_path / "controls")
    refused(toml, toml, _line_of(toml, "controls ="), "controls folder")


def _write_csv(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("prompt_id,prompt\np1,a\np1,b\n", 3, "duplicate prompt_id 'p1' (first on line 2)"),
        ("prompt_id,prompt\np1,a\n\np2, \n", 4, "prompt 'p2' has empty text"),
        ("prompt_id,prompt\n,a\n", 2, "prompt_id is empty"),
        ("prompt_id,prompt\np/1,a\n", 2, "prompt_id 'p/1'"),
        ("prompt_id,text\np1,a\n", 1, "unknown column 'text'"),
        ("prompt_id\np1\n", 1, "missing column 'prompt'"),
        ("prompt_id,prompt,prompt\np1,a,b\n", 1, "column 'prompt' appears twice"),
        ("p1,a polyp\np2,b\n", 1, "unknown column 'p1'"),
        ("prompt_id,prompt\np1,a polyp, 5 mm, sessile\n", 2, "expected 2 fields (prompt_id,prompt), found 4"),
        ("prompt_id,prompt\np1\n", 2, "expected 2 fields"),
        ('prompt_id,prompt\np1,"a polyp\np2,b\n', 2, "malformed CSV"),
        ('prompt_id,prompt\np1,"a" polyp\n', 2, "malformed CSV"),
        ("prompt_id,prompt\n", 1, "no rows after the header"),
        ("", None, "empty file"),
        ("prompt_id,prompt,real_image\np1,a,real/none.png\n", 2, "does not exist"),
        ("prompt_id,prompt,real_image\np1,a,notes.txt\n", 2, "is not a readable image"),
    ],
)
def test_bad_prompt_csv_refused(tmp_path, text, line, reason):
    toml = make_study(tmp_path)
    (tmp_path / "notes.txt").write_text("not an image")
    _write_csv(tmp_path / "prompts.csv", text)
    refused(toml, tmp_path / "prompts.csv", line, reason)


def test_non_utf8_csv_refused(tmp_path):
    toml = make_study(tmp_path)
    (tmp_path / "prompts.csv").write_bytes(b"prompt_id,prompt\np1,caf\xe9\n")
    refused(toml, tmp_path / "prompts.csv", None, "not UTF-8 text")


def test_missing_prompt_csv_refused(tmp_path):
    toml = make_study(tmp_path, prompts="bank.csv")
    (tmp_path / "bank.csv").unlink()
    refused(toml, tmp_path / "bank.csv", None, "file not found")


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("control_id,file,caption\nc1,c1.png,a\nc2,gone.png,b\n", 3, "gone.png does not exist"),
        ("control_id,file,caption\nc1,c1.png,a\nc1,c2.png,b\n", 3, "duplicate control_id 'c1'"),
        ("control_id,file,caption\nc1,c1.png,\n", 2, "control 'c1' has an empty caption"),
        ("control_id,file,caption\nc1,,a\n", 2, "control 'c1' names no file"),
        ("control_id,file\nc1,c1.png\n", 1, "missing column 'caption'"),
    ],
)
def test_bad_controls_refused(tmp_path, text, line, reason):
    toml = make_study(tmp_path)
    captions = tmp_path / "controls" / "captions.csv"
    _write_csv(captions, text)
    refused(toml, captions, line, reason)


def test_missing_captions_file_refused(tmp_path):
    toml = make_study(tmp_path)
    (tmp_path / "controls" / "captions.csv").unlink()
    refused(toml, tmp_path / "controls" / "captions.csv", None, "file not found")


# ------------------------------------------------------------------------------------ design hash


def test_design_hash_stable_across_copies_and_layout(tmp_path):
    original = load_study(make_study(tmp_path / "a")).design_hash()
    shutil.copytree(tmp_path / "a", tmp_path / "elsewhere" / "b")
    assert load_study(tmp_path / "elsewhere" / "b").design_hash() == original
    toml = tmp_path / "elsewhere" / "b" / "study.toml"
    toml.write_text("# a comment\n\n" + toml.read_text().replace(" = ", "   =   "), encoding="utf-8")
    # the real image renamed: paths are not part of the design, bytes are
    (tmp_path / "elsewhere" / "b" / "real" / "p1.png").rename(tmp_path / "elsewhere" / "b" / "real" / "renamed.png")
    csv_path = tmp_path / "elsewhere" / "b" / "prompts.csv"
    csv_path.write_text(csv_path.read_text().replace("real/p1.png", "real/renamed.png"))
    copy = load_study(toml)
    assert copy.design_hash() == original
    assert copy.source_path != load_study(tmp_path / "a").source_path


def test_design_hash_is_a_pure_function_of_the_definition(tmp_path):
    study = load_study(make_study(tmp_path))
    code = (
        "import sys; from p2p_app.study import load_study; "
        f"print(load_study({str(tmp_path)!r}).design_hash())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == study.design_hash()


@pytest.mark.parametrize(
    "change",
    ["prompt", "seed", "real_byte", "control_byte", "caption", "model_order", "k", "question", "version", "design"],
)
def test_design_hash_changes_with_the_design(tmp_path, change):
    base = load_study(make_study(tmp_path / "base")).design_hash()
    d = tmp_path / "changed"
    overrides: dict[str, Any] = {}
    prompts, controls, questions = PROMPTS, CONTROLS, None
    if change == "prompt":
        prompts = [dict(PROMPTS[0], prompt="a 6 mm sessile polyp"), *PROMPTS[1:]]
    elif change == "seed":
        overrides["seeds"] = [1, 3]
    elif change == "caption":
        controls = [dict(CONTROLS[0], caption="a real polyp, 5 mm"), CONTROLS[1]]
    elif change == "model_order":
        overrides["models"] = list(reversed(MODELS))
    elif change == "k":
        overrides["overlap_k"] = 3
    elif change == "question":
        questions = [{"key": "realism"}]
    elif change == "version":
        overrides["version"] = 2
    elif change == "design":
        overrides["design"] = "side_by_side"
    toml = make_study(d, prompt_rows=prompts, control_rows=controls, question_tables=questions, **overrides)
    if change in ("real_byte", "control_byte"):
        image = d / ("real/p1.png" if change == "real_byte" else "controls/c1.png")
        with Image.open(image) as opened:
            pixels = opened.copy()
        pixels.putpixel((0, 0), (0, 0, 0))
        pixels.save(image)
    assert load_study(toml).design_hash() != base


def test_study_definition_is_frozen(tmp_path):
    study = load_study(make_study(tmp_path))
    assert isinstance(study, StudyDefinition)
    with pytest.raises(AttributeError):
        study.overlap_k = 3  # type: ignore[misc]


def test_table_instead_of_list_points_at_its_header(tmp_path):
    toml = make_study(tmp_path, raters=None)
    toml.write_text(toml.read_text() + '\n[raters]\nann = "x"\n', encoding="utf-8")
    refused(toml, toml, _line_of(toml, "[raters]"), "raters must be a list")
