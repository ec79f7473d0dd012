"""The live arena through the app object: the happy path, every bad input, blinding, cache, determinism."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from conftest import make_app
from p2p_app.service import UserError
from p2p_app.storage import AccessDenied

PROMPT = "colonoscopy image with a single sessile polyp of 5-10 mm, no instruments"


def full(trial, realism=3, alignment=4, comment=""):
    return {p.position: {"realism": realism, "alignment": alignment, "comment": comment} for p in trial.panels}


def nothing_written(app) -> bool:
    return app.storage.count_images() == 0 and app.storage.count_ratings() == 0


def test_generate_rate_submit_reveal(app):
    rater = app.sign_in("Dr Ada")
    trial = app.live_generate(rater, "colonoscopy", PROMPT)
    assert [p.label for p in trial.panels] == ["Image A", "Image B", "Image C"]
    result = app.submit(rater, trial.trial_id, full(trial, comment="nice"))
    assert result.status == "stored"
    assert sorted(m for _, m in result.reveal) == sorted(m.name for m in app.config.models_for("colonoscopy"))
    df = app.storage.ratings_frame()
    assert len(df) == 6 and set(df.question) == {"realism", "alignment"}
    assert set(df.comment) == {"nice"}
    # the stored shown order is what the reveal reports
    stored = app.storage.trial(trial.trial_id)
    assert [p.image_id for p in trial.panels] == list(stored.shown_order)


# blank, or nothing but invisible characters (zero-width, direction marks, BOM, NUL): empty once cleaned
@pytest.mark.parametrize("prompt", ["", "   \n\t ", "\u200b\u200b\u200b", "\u202e\u2066\ufeff", "\x00\x00",
                                    "\u200b \u200d\n"])
def test_empty_prompt_refused(app, prompt):
    rater = app.sign_in("Dr A")
    with pytest.raises(UserError, match="empty"):
        app.live_generate(rater, "colonoscopy", prompt)
    assert nothing_written(app)


def test_prompt_over_the_text_encoder_limit_is_refused_with_the_limit(app):
    rater = app.sign_in("Dr A")
    long_prompt = " ".join(["polyp"] * 150)  # 899 characters, well over 77 tokens
    with pytest.raises(UserError, match=r"too long.*at most \d+"):
        app.live_generate(rater, "colonoscopy", long_prompt)
    assert nothing_written(app)


def test_prompt_over_the_character_limit(app):
    rater = app.sign_in("Dr A")
    with pytest.raises(UserError, match="characters"):
        app.live_generate(rater, "colonoscopy", "x" * (app.config.max_prompt_chars + 1))
    assert nothing_written(app)


def test_unknown_modality(app):
    rater = app.sign_in("Dr A")
    with pytest.raises(UserError, match="unknown modality"):
        app.live_generate(rater, "dermatology", PROMPT)
    assert nothing_written(app)


@pytest.mark.parametrize("bad", [0, 6, -1, 3.5, "seven", True])
def test_rating_out_of_range(app, bad):
    rater = app.sign_in("Dr A")
    trial = app.live_generate(rater, "colonoscopy", PROMPT)
    answers = full(trial)
    answers[2]["realism"] = bad
    with pytest.raises(UserError):
        app.submit(rater, trial.trial_id, answers)
    assert app.storage.count_ratings() == 0
    assert app.storage.trial(trial.trial_id).submitted_at is None


def test_missing_ratings_refused_with_what_is_missing(app):
    rater = app.sign_in("Dr A")
    trial = app.live_generate(rater, "colonoscopy", PROMPT)
    answers = full(trial)
    answers[2]["alignment"] = None
    del answers[3]
    with pytest.raises(UserError) as refused:
        app.submit(rater, trial.trial_id, answers)
    text = str(refused.value)
    assert "Image A" not in text
    assert "Image B still needs: How well does the image match the prompt?" in text
    assert "Image C is not rated yet" in text
    assert app.storage.count_ratings() == 0


def test_double_submit_is_a_no_op(app):
    rater = app.sign_in("Dr A")
    trial = app.live_generate(rater, "colonoscopy", PROMPT)
    assert app.submit(rater, trial.trial_id, full(trial)).status == "stored"
    again = app.submit(rater, trial.trial_id, full(trial, realism=1))
    assert again.status == "duplicate"
    df = app.storage.ratings_frame()
    assert len(df) == 6 and set(df[df.question == "realism"].value) == {3.0}


def test_failing_generator_shows_nothing_and_can_retry(app, monkeypatch):
    rater = app.sign_in("Dr A")
    victim = app.registry.get(app.config.models_for("radiology")[1].name)

    def boom(*a, **k):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(victim, "generate", boom)
    with pytest.raises(UserError, match="try again"):
        app.live_generate(rater, "radiology", "chest X-ray, PA view, right lower lobe consolidation")
    assert app.storage.trials_for(rater.rater_pk, None) == []
    monkeypatch.undo()
    trial = app.live_generate(rater, "radiology", "chest X-ray, PA view, right lower lobe consolidation")
    assert len(trial.panels) == 3


def test_reveal_and_submit_are_bound_to_the_rater(app):
    alice = app.sign_in("Alice")
    bob = app.sign_in("Bob")
    trial = app.live_generate(alice, "colonoscopy", PROMPT)
    with pytest.raises(AccessDenied):
        app.reveal(alice, trial.trial_id)  # not before the ratings are stored
    with pytest.raises(AccessDenied):
        app.submit(bob, trial.trial_id, full(trial))
    app.submit(alice, trial.trial_id, full(trial))
    with pytest.raises(AccessDenied):
        app.reveal(bob, trial.trial_id)


def test_access_code(tmp_path, demo_registry):
    app = make_app(tmp_path, demo_registry, access_code="letmein")
    with pytest.raises(UserError, match="access code"):
        app.sign_in("Dr A", "wrong")
    with pytest.raises(UserError):
        app.sign_in("  ", "letmein")
    assert app.sign_in("Dr A", "letmein").name == "Dr A"


def test_no_reveal_when_config_forbids(tmp_path, demo_registry):
    app = make_app(tmp_path, demo_registry, reveal_after_rating=False)
    rater = app.sign_in("Dr A")
    trial = app.live_generate(rater, "colonoscopy", PROMPT)
    assert app.submit(rater, trial.trial_id, full(trial)).reveal == ()
    with pytest.raises(AccessDenied):
        app.reveal(rater, trial.trial_id)


def test_generation_cache_and_determinism(app):
    gen = app.registry.get("colon-msdm-tiny")
    first = app.generate_image(gen, PROMPT, 7)
    again = app.generate_image(gen, PROMPT, 7)
    assert not first.cached and again.cached and again.image.id == first.image.id
    a = gen.generate(PROMPT, 7).image
    b = gen.generate(PROMPT, 7).image
    c = gen.generate(PROMPT, 8).image
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


def test_presentation_copies_reveal_nothing(app):
    rater = app.sign_in("Dr A")
    trial = app.live_generate(rater, "colonoscopy", PROMPT)
    sizes, names = set(), []
    for panel in trial.panels:
        path = Path(panel.path)
        names.append(path.name)
        raw = path.read_bytes()
        with Image.open(io.BytesIO(raw)) as im:
            sizes.add((im.size, im.mode, im.format))
            assert not im.info.get("exif") and not im.info.get("icc_profile")
            assert not getattr(im, "text", {})
        for chunk in (b"tEXt", b"iTXt", b"zTXt", b"eXIf", b"iCCP"):
            assert chunk not in raw
        for model in app.config.models:
            assert model.name.encode() not in raw
            assert model.family not in path.name
    assert sizes == {((512, 512), "RGB", "PNG")}
    assert all(len(n) == len("0" * 32 + ".png") for n in names)


def test_broken_model_folder_is_named_at_start_up(tmp_path):
    from generators.base import ModelLoadError
    from p2p_app.startup import create

    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "model_index.json").write_text("{ not json")
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(
        f'[[models]]\nname = "my-flux"\nfamily = "flux"\nsource = "{broken}"\nmodality = "colonoscopy"\n'
        f'[[models]]\nname = "my-msdm"\nfamily = "msdm"\nsource = "{tmp_path / "missing"}"\nmodality = "colonoscopy"\n'
    )
    with pytest.raises(ModelLoadError) as info:
        create(cfg, data_dir=tmp_path / "d", load_models=True)
    assert "my-flux" in str(info.value) and "my-msdm" in str(info.value)
    # `p2p serve` loads in the background once it listens: the failure is logged and kept, naming both
    from p2p_app.startup import prepare_in_background

    app = create(cfg, data_dir=tmp_path / "d")
    said: list[str] = []
    prepare_in_background(app, [], said.append)
    assert "my-flux" in app.readiness.models_error and "my-msdm" in app.readiness.models_error
    assert any("my-flux" in line and "my-msdm" in line for line in said)
    app.close()


def test_invisible_characters_are_removed_from_prompts_names_and_comments(app):
    rater = app.sign_in("Dr\u202e A\x00\u200b")
    assert rater.name == "Dr A"
    trial = app.live_generate(rater, "colonoscopy", "a\u200b polyp\x00 in the \u202ecolon")
    assert trial.prompt == "a polyp in the colon"
    app.submit(rater, trial.trial_id, full(trial, comment="=1+2\x00\u202e ok\u200b"))
    df = app.storage.ratings_frame()
    assert set(df.comment) == {"=1+2 ok"} and set(df.prompt) == {"a polyp in the colon"}


@pytest.mark.parametrize("bad", ["false", "true", 0, 1, "", [], {}])
def test_cant_judge_takes_only_real_booleans(app, bad):
    rater = app.sign_in("Dr A")
    trial = app.live_generate(rater, "colonoscopy", PROMPT)
    answers = full(trial)
    answers[1]["cant_judge"] = bad
    with pytest.raises(UserError, match="can't judge"):
        app.submit(rater, trial.trial_id, answers)
    assert app.storage.count_ratings() == 0
    answers[1]["cant_judge"] = False
    assert app.submit(rater, trial.trial_id, answers).status == "stored"
    assert not app.storage.ratings_frame()["cant_judge"].any()


def test_a_replayed_submit_after_a_new_generate_does_not_land_on_the_new_trial(app):
    from p2p_app.service import StalePage

    rater = app.sign_in("Dr A")
    first = app.live_generate(rater, "colonoscopy", PROMPT)
    body = full(first, realism=1)
    assert app.submit(rater, first.trial_id, body, shown=str(first.trial_id)).status == "stored"
    second = app.live_generate(rater, "colonoscopy", PROMPT)
    with pytest.raises(StalePage):  # server state: the second trial; the replayed page: the first
        app.submit(rater, second.trial_id, body, shown=str(first.trial_id))
    assert app.storage.trial(second.trial_id).submitted_at is None and app.storage.count_ratings() == 6


def test_a_name_signs_in_a_new_rater_and_the_resume_code_the_same_one(app):
    alice = app.sign_in("Alice Victim")
    assert alice.new_code and not alice.without_code().new_code
    for typed in ("alice victim", "Alice Victim", "ＡＬＩＣＥ ＶＩＣＴＩＭ"):
        assert app.sign_in(typed).rater_pk != alice.rater_pk
    assert app.sign_in("", resume_code=alice.new_code).rater_pk == alice.rater_pk
    with pytest.raises(UserError, match="resume code"):
        app.sign_in("Alice Victim", resume_code="guess")
