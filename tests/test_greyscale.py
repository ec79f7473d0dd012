"""Radiology images are grey (R = G = B): a model option (``greyscale`` in a ``[[models]]`` entry), on by default
for radiology models, tested through the real ``from_pretrained`` path on the tiny pipelines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from generators import ModelSpec, Registry, cache_key

PROMPT = "chest radiograph, small right pleural effusion"


def entry(name: str, family: str, modality: str, **extra) -> dict:
    return {"name": name, "family": family, "source": f"tiny:{family}", "modality": modality, **extra}


@pytest.fixture(scope="module")
def registry(model_dir: Path):
    """Tiny models built by ``ensure_tiny`` and loaded with ``from_pretrained`` (the session's model folder)."""
    entries = [
        entry("rad-msdm", "msdm", "radiology", weight_seed=2),
        entry("rad-msdm-colour", "msdm", "radiology", weight_seed=2, greyscale=False),
        entry("colon-msdm", "msdm", "colonoscopy", weight_seed=2),
        entry("colon-msdm-grey", "msdm", "colonoscopy", weight_seed=2, greyscale=True),
        entry("rad-flux", "flux", "radiology", weight_seed=2),
    ]
    reg = Registry.from_dicts(entries, model_dir, devices=["cpu"])
    yield reg
    reg.close()


def is_grey(image) -> bool:
    a = np.asarray(image)
    return image.mode == "RGB" and bool((a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all())


def test_spec_default_follows_the_modality_and_the_key_is_checked():
    assert ModelSpec.from_dict(entry("r", "sd", "radiology")).is_greyscale
    assert not ModelSpec.from_dict(entry("c", "sd", "colonoscopy")).is_greyscale
    assert not ModelSpec.from_dict(entry("r", "sd", "radiology", greyscale=False)).is_greyscale
    assert ModelSpec.from_dict(entry("c", "sd", "colonoscopy", greyscale=True)).is_greyscale
    with pytest.raises(ValueError, match="greyscale must be true or false"):
        ModelSpec.from_dict(entry("r", "sd", "radiology", greyscale="yes"))
    with pytest.raises(ValueError, match="unknown parameter 'greyscale'"):  # a model option, not a pipeline param
        ModelSpec.from_dict(entry("r", "sd", "radiology", params={"greyscale": True}))


@pytest.mark.parametrize("name", ["rad-msdm", "rad-flux", "colon-msdm-grey"])
def test_greyscale_models_make_grey_rgb_images(registry, name):
    result = registry.get(name).generate(PROMPT, seed=5)
    assert is_grey(result.image)
    assert result.params["greyscale"] is True  # recorded with what made the image


def test_colour_models_are_unchanged_and_greyscale_is_luminance_of_the_same_image(registry):
    colour = registry.get("rad-msdm-colour").generate(PROMPT, seed=5)
    grey = registry.get("rad-msdm").generate(PROMPT, seed=5)
    assert not is_grey(colour.image)  # the tiny model's raw output is colour noise
    assert "greyscale" not in colour.params
    assert np.array_equal(np.asarray(grey.image)[..., 0], np.asarray(colour.image.convert("L")))
    plain = registry.get("colon-msdm").generate(PROMPT, seed=5)
    assert not is_grey(plain.image) and "greyscale" not in plain.params
    # the option changes the cache key, so a cached colour image is never served for a grey model
    assert cache_key("m", PROMPT, 5, grey.params) != cache_key("m", PROMPT, 5, colour.params)


def test_demo_config_radiology_models_are_grey(demo_registry):
    for gen in demo_registry.for_modality("radiology"):
        assert is_grey(gen.generate(PROMPT, seed=1).image), gen.name
    assert not any(gen.greyscale for gen in demo_registry.for_modality("colonoscopy"))
