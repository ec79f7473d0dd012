"""The prompt's token budget: each family's text encoders counted with the pipeline's own tokenizers (loaded from
the saved tiny pipelines' folders, as ``from_pretrained`` reads them), the limit each pipeline really truncates at,
the strictest encoder of a modality (the arena's live counter, ``P2PApp.prompt_budget``) and the refusal that says
how much to cut. Also the landing helpers of the service: which study a link names, and what a refused visitor is
told to do next."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from generators import ModelSpec, TokenCount, build_generator
from generators.base import strictest, too_many_tokens
from p2p_app.service import INVITE_ONLY, PRESENTER_PROMPTS, TOKENS_NOT_COUNTED, UserError
from p2p_app.study import study_key

# 39 words, as a radiologist would write it: over CLIP's 75 tokens (≈ 35 words) in every tokenizer here.
RADIOLOGY_39 = (
    "Frontal chest radiograph of an adult showing a moderate right-sided pleural effusion with blunting "
    "of the costophrenic angle, mild cardiomegaly, no pneumothorax, normal mediastinal contours, subtle bibasilar "
    "atelectasis, left subclavian central venous catheter ending in the superior vena cava"
)
SHORT = "colonoscopy image with a single sessile polyp"

# How each family's pipeline tokenizes the prompt for its text encoder(s): (tokenizer component, max_length the
# pipeline passes with truncation=True). FLUX's T5 reads ``max_sequence_length`` (tiny default 128).
PIPELINE_TRUNCATION = {
    "msdm": [("tokenizer", "model_max_length")],
    "sd": [("tokenizer", "model_max_length")],
    "flux": [("tokenizer", "model_max_length"), ("tokenizer_2", 128)],
    "kandinsky22": [("prior_tokenizer", "model_max_length")],
    "kandinsky3": [("tokenizer", 128)],
}


def test_radiology_prompt_has_39_words():
    assert len(RADIOLOGY_39.split()) == 39


@pytest.fixture(scope="module")
def tiny_generators(tmp_path_factory):
    cache = tmp_path_factory.mktemp("budget-cache")
    gens = {
        family: build_generator(
            ModelSpec.from_dict({"name": f"{family}-budget", "family": family, "source": f"tiny:{family}",
                                 "modality": "radiology"}),
            cache,
            ["cpu"],
        )
        for family in PIPELINE_TRUNCATION
    }
    yield gens
    for gen in gens.values():
        gen.close()


@pytest.mark.parametrize("family", list(PIPELINE_TRUNCATION))
def test_each_encoder_limit_is_where_the_pipeline_truncates(tiny_generators, family):
    """Our count fits the limit exactly when the pipeline's own tokenization (loaded with from_pretrained from the
    saved tiny pipeline, with the max_length the pipeline passes) keeps the whole prompt."""
    import diffusers

    from generators.families import get_family

    gen = tiny_generators[family]
    counts = gen.prompt_tokens(SHORT)
    assert not gen.loaded, "counting tokens loaded the model weights"
    folder = Path(gen.source)
    pipe_cls = getattr(diffusers, get_family(family).pipeline_class)
    pipe = pipe_cls.from_pretrained(folder)
    assert len(counts) == len(PIPELINE_TRUNCATION[family])
    for count, (component, max_length) in zip(counts, PIPELINE_TRUNCATION[family]):
        tok = getattr(pipe, component)
        max_length = tok.model_max_length if max_length == "model_max_length" else max_length
        word = next(w for w in ("polyp", "colon", "a", "the", "x") if gen_count(tok, w) == 1)
        fits, over = " ".join([word] * count.limit), " ".join([word] * (count.limit + 1))
        for text, kept in ((fits, True), (over, False)):
            full = tok(text)["input_ids"]
            cut = tok(text, max_length=max_length, truncation=True)["input_ids"]
            assert (full == cut) is kept, (family, component, count)
        assert count.used == gen_count(tok, SHORT)


def gen_count(tok, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"])


def test_flux_counts_both_encoders_and_a_short_t5_budget_is_the_strictest(tmp_path):
    spec = ModelSpec.from_dict({"name": "flux-short", "family": "flux", "source": "tiny:flux",
                                "modality": "radiology", "params": {"max_sequence_length": 16}})
    gen = build_generator(spec, tmp_path, ["cpu"])
    clip, t5 = gen.prompt_tokens(SHORT)
    assert (clip.encoder, clip.limit) == ("CLIP text encoder", 75)
    assert (t5.encoder, t5.limit) == ("T5 text encoder", 15)  # max_sequence_length 16, less the end token
    with pytest.raises(ValueError, match=r"too long for the T5 text encoder: \d+ tokens, at most 15\. Cut about"):
        gen.check_prompt(RADIOLOGY_39)
    assert not gen.loaded


def test_refusal_says_how_much_to_cut():
    text = too_many_tokens(39, 83, 75, "CLIP text encoder")
    assert text.startswith("The prompt is too long for the CLIP text encoder: 83 tokens, at most 75.")
    assert "Cut about 8 tokens (≈ 4 words)" in text  # 8 of 83 tokens over, at 39 words / 83 tokens
    assert strictest([TokenCount("a", 10, 75), TokenCount("b", 70, 127), TokenCount("c", 10, 60)]).encoder == "c"
    assert strictest([TokenCount("a", 80, 75), TokenCount("b", 10, 15)]).encoder == "a"


# ------------------------------------------------------------------------------------------ the service


def test_budget_of_the_strictest_encoder_of_the_modality(app):
    budget = app.prompt_budget("radiology", SHORT)
    counts = [c for gen in app.generators_for("radiology") for c in gen.prompt_tokens(SHORT)]
    tightest = min(counts, key=lambda c: (c.room, c.limit))
    assert (budget.used, budget.limit, budget.encoder) == (tightest.used, tightest.limit, tightest.encoder)
    assert not budget.over and budget.problem() == ""
    assert budget.describe() == f"{budget.used} / {budget.limit} tokens — {budget.encoder} ({budget.limit - budget.used} left)"
    empty = app.prompt_budget("radiology", "")
    assert empty.used == 0 and empty.limit == 75


def test_39_word_radiology_prompt_is_flagged_and_refused_before_generating(app):
    budget = app.prompt_budget("radiology", RADIOLOGY_39)
    # (the tiny T5 tokenizer's small vocabulary splits words finely, so here FLUX's T5 may be the strictest)
    assert budget.over and budget.used > budget.limit
    assert budget.describe().startswith(f"⚠️ **The prompt is too long for the {budget.encoder}: {budget.used} tokens")
    assert f"Cut about {budget.used - budget.limit} tokens" in budget.describe()
    rater = app.sign_in("Dr R")
    with pytest.raises(UserError, match=rf"{budget.encoder}: {budget.used} tokens, at most {budget.limit}\. Cut about"):
        app.live_generate(rater, "radiology", RADIOLOGY_39)
    assert app.storage.count_images() == 0


def test_character_limit_is_reported_not_cut(app):
    long = "polyp " * 300
    budget = app.prompt_budget("colonoscopy", long)
    assert budget.over and budget.chars == len(long.strip()) > budget.max_chars
    assert f"Cut about {budget.chars - budget.max_chars} characters" in budget.describe()


def test_counter_without_models_says_why(app, monkeypatch):
    def broken(modality):
        raise RuntimeError("model 'colon-flux-tiny' is missing")  # a model name must never reach the page

    monkeypatch.setattr(app, "generators_for", broken)
    budget = app.prompt_budget("colonoscopy", SHORT)
    assert budget.used is None and budget.describe() == TOKENS_NOT_COUNTED
    assert "flux" not in budget.describe()
    app.config = replace(app.config, pack=Path("some-pack"))  # presenter mode: no model is ever asked
    assert app.prompt_budget("colonoscopy", SHORT).describe() == PRESENTER_PROMPTS
    with pytest.raises(UserError, match="unknown modality"):
        app.prompt_budget("dermatology", SHORT)


# ------------------------------------------------------------------------------------------ landing helpers


def test_linked_study_from_token_or_study_link(tmp_path, demo_registry):
    from conftest import invited_study_app

    app, st, token = invited_study_app(tmp_path, demo_registry)
    key = study_key(st)
    assert app.linked_study(token=token) == key
    assert app.linked_study(study=key) == key
    assert app.linked_study(study=st.id) == key  # the id alone: its version here
    assert app.linked_study() is None
    assert app.linked_study(token="not-a-token", study="nope") is None
    arena_rater = app.sign_in("Dr A")
    assert app.linked_study(token=app.storage.rater(arena_rater.rater_pk).token or "x") is None
    app.storage.close()


def test_refused_visitors_are_told_what_to_do_next(tmp_path, demo_registry):
    from conftest import invited_study_app

    from p2p_app.service import BAD_INVITE

    app, st, _ = invited_study_app(tmp_path, demo_registry)
    assert not st.open
    with pytest.raises(UserError) as refused:
        app.study_sign_in(st, name="Dr Newcomer")
    assert str(refused.value) == f"'Dr Newcomer' is not a rater of this study. {INVITE_ONLY}"
    for step in ("personal invite link the study coordinator sent you", "ask the coordinator", "Live arena tab"):
        assert step in INVITE_ONLY
    with pytest.raises(UserError) as refused:
        app.study_sign_in(st)
    assert str(refused.value) == INVITE_ONLY
    with pytest.raises(UserError) as refused:
        app.study_sign_in(st, token="half-a-link")
    assert str(refused.value) == BAD_INVITE and "ask the study coordinator" in BAD_INVITE
    assert [r.name for r in app.storage.raters(study_key(st))] == ["ann"]  # nobody was added
    app.storage.close()


def test_load_all_also_loads_the_tokenizers(tmp_path, monkeypatch):
    """What `p2p serve` loads in the background includes the tokenizers: the first keystroke never waits."""
    from generators import Registry
    from generators.diffusers_backend import DiffusersGenerator

    reg = Registry.from_dicts([{"name": "m", "family": "msdm", "source": "tiny:msdm", "modality": "colonoscopy"}],
                              tmp_path, ["cpu"])
    reg.load_all()

    def late(self):
        raise AssertionError("the tokenizers were loaded on the first count, not by load_all")

    monkeypatch.setattr(DiffusersGenerator, "_load_tokenizers", late)
    assert reg.get("m").prompt_tokens("sessile polyp")[0].used == 2
    reg.close()
