"""Tests of the generators package on tiny random-weight pipelines (CPU, a few seconds).

The tiny pipelines of every family are built once per session into a temp cache, through the same
``ensure_tiny`` a config with ``source = "tiny:<family>"`` uses, and loaded with ``from_pretrained``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from generators import (
    FAMILIES,
    DevicePool,
    DiffusersGenerator,
    GenerationError,
    ModelLoadError,
    ModelSpec,
    Registry,
    build_generator,
    cache_key,
    ensure_tiny,
    ensure_tiny_lora,
    family_defaults,
    tiny_pipeline,
)
from generators import tiny as tiny_module
from generators.diffusers_backend import GiB, Placement, choose_placement

PROMPT = "a sessile polyp in the sigmoid colon"


def spec_dict(name: str, family: str, **extra) -> dict:
    """A config entry for the tiny variant of ``family`` (the helper a user's config mirrors)."""
    return {"name": name, "family": family, "source": f"tiny:{family}", "modality": "colonoscopy", **extra}


def pixels(result) -> np.ndarray:
    return np.asarray(result.image).astype(np.int16)


@pytest.fixture(scope="module", autouse=True)
def few_threads():
    """Two CPU cores are shared with other work: keep torch to one thread here."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("generator-cache")


@pytest.fixture(scope="session")
def registry(cache_dir) -> Registry:
    entries = [spec_dict(f, f) for f in FAMILIES]
    entries.append(spec_dict("msdm-seed1", "msdm", weight_seed=1))
    entries.append({**spec_dict("k3-radiology", "kandinsky3"), "modality": "radiology"})
    reg = Registry.from_dicts(entries, cache_dir, devices=["cpu"])
    yield reg
    reg.close()


@pytest.fixture(scope="session")
def flux_lora(cache_dir) -> Path:
    return ensure_tiny_lora(cache_dir, weight_seed=0, lora_seed=0)


# ------------------------------------------------------------------------------------------- every family


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_generates_through_the_registry(registry, family):
    gen = registry.get(family)
    result = gen.generate(f"  {PROMPT}  ", seed=3)
    assert result.image.mode == "RGB" and result.image.size == (64, 64)
    assert (result.model, result.family, result.seed) == (family, family, 3)
    assert result.prompt == PROMPT  # whitespace normalised, as check_prompt documents
    assert result.params == gen.effective_params()
    assert result.params["num_inference_steps"] == 2 and result.seconds > 0
    assert pixels(result).std() > 0  # not a blank image


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_pixels_also_after_reload(registry, cache_dir, family):
    first = registry.get(family).generate(PROMPT, seed=11)
    again = registry.get(family).generate(PROMPT, seed=11)
    assert np.array_equal(pixels(first), pixels(again))
    with Registry.from_dicts([spec_dict(family, family)], cache_dir, devices=["cpu"]) as fresh:
        reloaded = fresh.get(family).generate(PROMPT, seed=11)
    assert np.array_equal(pixels(first), pixels(reloaded))
    other_seed = registry.get(family).generate(PROMPT, seed=12)
    assert not np.array_equal(pixels(first), pixels(other_seed))


def test_weight_seed_gives_a_different_model(registry, cache_dir):
    a = registry.get("msdm").generate(PROMPT, seed=5)
    b = registry.get("msdm-seed1").generate(PROMPT, seed=5)
    assert not np.array_equal(pixels(a), pixels(b))
    assert (cache_dir / "tiny" / "msdm-0").is_dir() and (cache_dir / "tiny" / "msdm-1").is_dir()


def test_call_params_override_config_and_defaults(cache_dir):
    spec = ModelSpec.from_dict(spec_dict("sd-custom", "sd", params={"guidance_scale": 5}))
    gen = build_generator(spec, cache_dir, devices=["cpu"])
    assert gen.effective_params()["guidance_scale"] == 5.0
    result = gen.generate(PROMPT, 1, height=72, guidance_scale=2)
    assert result.image.size == (64, 72)
    assert result.params["guidance_scale"] == 2.0 and result.params["height"] == 72
    json.dumps(result.params)  # JSON-serialisable: the cache is keyed by it


# ------------------------------------------------------------------------------------------- LoRA


@pytest.mark.parametrize("family", ["flux", "kandinsky22"])
def test_lora_changes_the_image_and_scale_zero_restores_it(registry, cache_dir, family):
    """FLUX takes the LoRA through the pipeline's loader; Kandinsky 2.2 (no pipeline loader) on its decoder UNet."""
    lora = ensure_tiny_lora(cache_dir, weight_seed=0, lora_seed=0, family=family)
    spec = ModelSpec.from_dict(spec_dict(f"{family}-lora", family, lora=str(lora), lora_scale=1.0))
    with_lora = build_generator(spec, cache_dir, registry.pool)
    base = pixels(registry.get(family).generate(PROMPT, 4))
    adapted = with_lora.generate(PROMPT, 4)
    assert adapted.params["lora_scale"] == 1.0
    assert not np.array_equal(base, pixels(adapted))
    assert np.array_equal(base, pixels(with_lora.generate(PROMPT, 4, lora_scale=0)))
    assert np.array_equal(pixels(adapted), pixels(with_lora.generate(PROMPT, 4)))
    with pytest.raises(ValueError, match="lora_scale"):
        registry.get(family).generate(PROMPT, 4, lora_scale=0.5)  # no LoRA on that model
    with_lora.close()


def test_unet_lora_saved_without_prefix_loads_on_kandinsky22(registry, cache_dir, tmp_path):
    """A LoRA saved from the UNet alone (keys without ``unet.``) is the same adapter."""
    from safetensors.torch import load_file, save_file

    lora = ensure_tiny_lora(cache_dir, weight_seed=0, lora_seed=0, family="kandinsky22")
    weights = load_file(lora / "pytorch_lora_weights.safetensors")
    assert all(k.startswith("unet.") for k in weights)
    save_file({k.removeprefix("unet."): v for k, v in weights.items()}, tmp_path / "pytorch_lora_weights.safetensors")
    results = []
    for name, path in (("k22-lora-a", lora), ("k22-lora-b", tmp_path)):
        gen = build_generator(ModelSpec.from_dict(spec_dict(name, "kandinsky22", lora=str(path))), cache_dir, registry.pool)
        results.append(pixels(gen.generate(PROMPT, 2)))
        gen.close()
    assert np.array_equal(*results)


def test_lora_for_another_model_is_a_clear_error(cache_dir, flux_lora):
    spec = ModelSpec.from_dict(spec_dict("sd-with-flux-lora", "sd", lora=str(flux_lora)))
    gen = build_generator(spec, cache_dir, devices=["cpu"])
    with pytest.raises(ModelLoadError, match="sd-with-flux-lora.*does not match"):
        gen.load()


def test_lora_with_wrong_shapes_is_a_clear_error(cache_dir, flux_lora, tmp_path):
    from safetensors.torch import load_file, save_file

    weights = load_file(flux_lora / "pytorch_lora_weights.safetensors")
    bad = {k: torch.randn(v.shape[0], v.shape[1] * 2) if "lora_A" in k else v for k, v in weights.items()}
    save_file(bad, tmp_path / "pytorch_lora_weights.safetensors")
    gen = build_generator(
        ModelSpec.from_dict(spec_dict("flux-bad-lora", "flux", lora=str(tmp_path))), cache_dir, devices=["cpu"]
    )
    with pytest.raises(ModelLoadError, match=r"flux-bad-lora.*LoRA.*shape"):
        gen.load()


def test_missing_lora_and_a_flux_lora_on_kandinsky(cache_dir, tmp_path, flux_lora):
    gen = build_generator(
        ModelSpec.from_dict(spec_dict("flux-no-lora", "flux", lora=str(tmp_path / "nope"))), cache_dir, ["cpu"]
    )
    with pytest.raises(ModelLoadError, match="flux-no-lora.*does not exist"):
        gen.load()
    gen = build_generator(
        ModelSpec.from_dict(spec_dict("k22-flux-lora", "kandinsky22", lora=str(flux_lora))), cache_dir, ["cpu"]
    )
    with pytest.raises(ModelLoadError, match="k22-flux-lora.*does not match"):
        gen.load()


# ------------------------------------------------------------------------------------------- config errors


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"family": "dalle"}, "unknown model family 'dalle'.*msdm, sd, flux, kandinsky22, kandinsky3"),
        ({"colour": "red"}, "unknown key 'colour'"),
        ({"modality": "dermatology"}, "unknown modality 'dermatology'"),
        ({"source": "tiny:sd"}, "tiny 'sd' model but the family is 'flux'"),
        ({"params": {"steps": 3}}, "unknown parameter 'steps'"),
        ({"params": {"height": 100}}, "'height'.*multiple of 16"),
        ({"params": {"num_inference_steps": 0}}, "'num_inference_steps'.*between"),
        ({"weight_seed": -1}, "weight_seed"),
        ({"dtype": "int8"}, "dtype"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_bad_config_entries_are_clear_value_errors(entry, message):
    with pytest.raises(ValueError, match=message):
        ModelSpec.from_dict({**spec_dict("m", "flux"), **entry})


def test_missing_required_key_and_duplicate_names(cache_dir):
    with pytest.raises(ValueError, match="missing required key.*'source'"):
        ModelSpec.from_dict({"name": "m", "family": "sd", "modality": "radiology"})
    with pytest.raises(ValueError, match="used twice"):
        Registry.from_dicts([spec_dict("m", "sd"), spec_dict("m", "sd")], cache_dir, ["cpu"])


@pytest.mark.parametrize(
    ("params", "bad"),
    [
        ({"num_steps": 3}, "num_steps"),
        ({"guidance_scale": "high"}, "guidance_scale"),
        ({"num_inference_steps": 2.5}, "num_inference_steps"),
        ({"width": True}, "width"),
        ({"height": 4096}, "height"),
        ({"guidance_scale": float("nan")}, "guidance_scale"),
    ],
)
def test_bad_call_params_name_the_parameter(registry, params, bad):
    with pytest.raises(ValueError, match=f"'{bad}'"):
        registry.get("sd").generate(PROMPT, 0, **params)


def test_cuda_requested_but_absent(cache_dir):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="'cuda'.*CUDA is not available"):
        build_generator(ModelSpec.from_dict(spec_dict("gpu-model", "sd", device="cuda")), cache_dir)
    with pytest.raises(ValueError, match="CUDA is not available"):
        DevicePool(["cuda:0"])


def test_float16_on_cpu_is_refused(cache_dir):
    with pytest.raises(ValueError, match="float16"):
        build_generator(ModelSpec.from_dict(spec_dict("half", "sd", dtype="float16")), cache_dir, ["cpu"])


def test_missing_and_corrupt_folders_name_the_entry(cache_dir, tmp_path):
    corrupt = tmp_path / "corrupt"
    shutil.copytree(ensure_tiny("sd", cache_dir, 0), corrupt)
    weights = next((corrupt / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:200])
    no_index = tmp_path / "no-index"
    no_index.mkdir()
    entries = [
        {"name": "gone", "family": "sd", "source": str(tmp_path / "missing"), "modality": "radiology"},
        {"name": "broken", "family": "sd", "source": str(corrupt), "modality": "radiology"},
        {"name": "not-a-pipeline", "family": "sd", "source": str(no_index), "modality": "radiology"},
        spec_dict("fine", "sd"),
    ]
    with Registry.from_dicts(entries, cache_dir, ["cpu"]) as reg:
        with pytest.raises(ModelLoadError, match="'gone'.*does not exist"):
            reg.get("gone").generate(PROMPT, 0)
        with pytest.raises(ValueError) as excinfo:  # ModelLoadError is a ValueError
            reg.load_all()
    message = str(excinfo.value)
    assert "3 of 4" in message
    assert "- gone:" in message and "- broken:" in message and "no model_index.json" in message
    assert "- fine:" not in message


# ------------------------------------------------------------------------------------------- devices, errors


class RecordingPipeline:
    """Wraps a pipeline and records when each call ran (delegates everything else)."""

    def __init__(self, pipe, log: list, tag: str):
        self.__dict__.update(_pipe=pipe, _log=log, _tag=tag)

    def __getattr__(self, name):
        return getattr(self._pipe, name)

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        out = self._pipe(*args, **kwargs)
        time.sleep(0.01)
        self._log.append((self._tag, start, time.perf_counter()))
        return out


def test_device_pool_serialises_concurrent_generations():
    pool = DevicePool(["cpu"])
    log: list = []
    tiny = {"num_inference_steps": 1, "height": 64, "width": 64}
    gens = [
        DiffusersGenerator(
            f, f, "colonoscopy", pipeline=RecordingPipeline(tiny_pipeline(f), log, f), defaults=tiny, pool=pool
        )
        for f in ("sd", "msdm")
    ]
    threads = [threading.Thread(target=lambda g=g: [g.generate(PROMPT, s) for s in range(3)]) for g in gens]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.sort(key=lambda row: row[1])
    assert len(log) == 6 and {row[0] for row in log} == {"sd", "msdm"}
    assert all(nxt[1] >= cur[2] for cur, nxt in zip(log, log[1:])), "two pipelines ran on one device at once"


def test_placement_prefers_free_memory_then_fewer_models_and_offloads_what_does_not_fit():
    free = {"cuda:0": 30 * GiB, "cuda:1": 50 * GiB}
    assert choose_placement(10 * GiB, free, {}) == Placement("cuda:1")
    tie = {"cuda:0": 40 * GiB, "cuda:1": 40 * GiB}
    assert choose_placement(10 * GiB, tie, {"cuda:0": 2, "cuda:1": 1}) == Placement("cuda:1")
    assert choose_placement(10 * GiB, tie, {}) == Placement("cuda:0")  # full tie: round-robin from the first
    # FLUX-sized (34 GB) on a GPU with 30 GB free: CPU offload instead of failing
    assert choose_placement(34 * 10**9, {"cuda:0": 30 * GiB}, {}) == Placement("cuda:0", offload=True)


def test_close_frees_the_pipeline_and_generate_reloads(cache_dir):
    gen = build_generator(ModelSpec.from_dict(spec_dict("sd-reload", "sd")), cache_dir, ["cpu"])
    before = pixels(gen.generate(PROMPT, 9))
    gen.close()
    assert not gen.loaded
    assert np.array_equal(before, pixels(gen.generate(PROMPT, 9)))
    gen.close()


def test_out_of_memory_becomes_generation_error_naming_model_and_settings():
    tokenizer = tiny_pipeline("sd").tokenizer

    class ExhaustedPipeline:
        components = {"tokenizer": tokenizer}

        def __call__(self, **kwargs):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    gen = DiffusersGenerator("big-model", "sd", "radiology", pipeline=ExhaustedPipeline(), pool=DevicePool(["cpu"]))
    with pytest.raises(GenerationError, match=r"'big-model'.*out of memory") as excinfo:
        gen.generate(PROMPT, 1)
    assert "height=512" in str(excinfo.value) and "num_inference_steps=50" in str(excinfo.value)


# ------------------------------------------------------------------------------------------- prompts and tokens


def test_empty_and_too_long_prompts(registry):
    gen = registry.get("flux")
    for empty in ("", "   \n"):
        with pytest.raises(ValueError, match="empty"):
            gen.generate(empty, 0)
    with pytest.raises(ValueError, match="too long.*at most 75"):
        gen.generate("polyp " * 200, 0)
    with pytest.raises(ValueError, match="seed"):
        gen.generate(PROMPT, -1)


@pytest.mark.parametrize(
    ("family", "limit"), [("msdm", 75), ("sd", 75), ("flux", 75), ("kandinsky22", 75), ("kandinsky3", 127)]
)
def test_token_counting_reads_the_tokenizer_without_loading_weights(cache_dir, family, limit):
    gen = build_generator(ModelSpec.from_dict(spec_dict(f"{family}-tok", family)), cache_dir, ["cpu"])
    assert gen.max_prompt_tokens == limit
    assert 0 < gen.count_tokens("polyp") <= gen.count_tokens("a sessile polyp in the sigmoid colon")
    assert not gen.loaded


def test_generic_tokenizer_counts_without_special_tokens(registry):
    gen = registry.get("msdm")  # BERT word pieces: medical words are single tokens
    assert gen.count_tokens("sessile polyp") == 2


# ------------------------------------------------------------------------------------------- helpers


def test_ensure_tiny_is_atomic_and_cached(tmp_path, monkeypatch):
    def half_build(family, folder, weight_seed=0):
        (Path(folder) / "model_index.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setattr(tiny_module, "build_tiny", half_build)
    with pytest.raises(RuntimeError, match="disk full"):
        ensure_tiny("sd", tmp_path, 0)
    assert list((tmp_path / "tiny").iterdir()) == []  # no half-built folder, no leftover temp folder
    monkeypatch.undo()
    folder = ensure_tiny("sd", tmp_path, 0)
    stamp = (folder / "model_index.json").stat().st_mtime_ns
    assert ensure_tiny("sd", tmp_path, 0) == folder == tmp_path / "tiny" / "sd-0"
    assert (folder / "model_index.json").stat().st_mtime_ns == stamp


def test_cache_key_is_stable_and_sensitive():
    params = {"height": 64, "guidance_scale": 7.5}
    key = cache_key("sd", PROMPT, 1, params)
    assert key == cache_key("sd", PROMPT, 1, dict(reversed(list(params.items()))))
    assert len(key) == 64
    assert len({key, cache_key("sd", PROMPT, 2, params), cache_key("sd", PROMPT, 1, {**params, "height": 72}),
                cache_key("msdm", PROMPT, 1, params), cache_key("sd", PROMPT + ".", 1, params)}) == 5


def test_real_family_defaults_and_tiny_overrides():
    assert family_defaults("flux") == {
        "num_inference_steps": 28, "guidance_scale": 3.5, "height": 1024, "width": 1024, "max_sequence_length": 512
    }
    assert family_defaults("kandinsky22")["num_inference_steps"] == 50
    assert family_defaults("kandinsky22")["guidance_scale"] == 4.0
    assert family_defaults("msdm")["guidance_scale"] == family_defaults("sd")["guidance_scale"] == 7.5
    assert family_defaults("sd")["height"] == 512
    for family in FAMILIES:
        tiny = family_defaults(family, tiny=True)
        assert (tiny["num_inference_steps"], tiny["height"], tiny["width"]) == (2, 64, 64)


def test_registry_lookup(registry):
    assert registry.names()[: len(FAMILIES)] == list(FAMILIES)
    assert [g.name for g in registry.for_modality("radiology")] == ["k3-radiology"]
    assert len(registry.for_modality("colonoscopy")) == len(FAMILIES) + 1
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        registry.get("nope")
    with pytest.raises(ValueError, match="modality"):
        registry.for_modality("dermatology")


def test_importing_generators_does_not_import_torch():
    code = "import sys, generators; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


# ------------------------------------------------------------------------------------------- what the pipeline receives

# A height each family accepts (its size multiple), other than the tiny default 64.
_SPY_HEIGHT = {"msdm": 72, "sd": 72, "flux": 80, "kandinsky22": 128, "kandinsky3": 128}


@pytest.mark.parametrize("family", FAMILIES)
def test_pipeline_receives_the_settings_and_a_seeded_generator(registry, family, monkeypatch):
    """Spy on the loaded pipeline's ``__call__``: what reaches the model, not what the wrapper reports."""
    gen = registry.get(family)
    gen.load()
    calls: list[dict] = []
    original = type(gen._pipe).__call__

    def spy(self, *args, **kwargs):
        gen_state = kwargs["generator"].get_state().clone()  # before the pipeline draws from it
        calls.append({"args": args, "kwargs": dict(kwargs), "generator_state": gen_state})
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(gen._pipe), "__call__", spy)
    params = {"num_inference_steps": 3, "guidance_scale": 2.5, "height": _SPY_HEIGHT[family], "width": 64}
    if "negative_prompt" in gen.effective_params():
        params["negative_prompt"] = "blurry, text overlay"
    result = gen.generate(PROMPT, seed=7, **params)
    assert len(calls) == 1
    got = calls[0]["kwargs"]
    assert calls[0]["args"] == ()
    assert got["prompt"] == PROMPT
    for key, value in params.items():
        assert key in got, f"{family}: {key} did not reach the pipeline"
        assert got[key] == value, f"{family}: the pipeline got {key}={got[key]!r}, asked for {value!r}"
    assert got["num_inference_steps"] == 3 and got["guidance_scale"] == 2.5
    # every other effective setting reaches it too, unchanged (lora_scale is applied to the adapters instead)
    assert {k: v for k, v in got.items() if k not in ("prompt", "generator", "output_type")} == {
        k: v for k, v in result.params.items() if k != "lora_scale"
    }
    # a torch generator seeded with the request's seed
    assert isinstance(got["generator"], torch.Generator)
    assert torch.equal(calls[0]["generator_state"], torch.Generator("cpu").manual_seed(7).get_state())
    assert result.image.size == (64, _SPY_HEIGHT[family])  # and the pipeline honoured the size
