"""What differs between model families, declared as data: pipeline class, generation parameters with
their defaults and limits, the dtype used on CUDA, and the tiny-variant overrides.

Defaults are for the REAL checkpoints (FLUX.1-dev: 1024 px, 28 steps, guidance 3.5, bf16; Kandinsky 2.2:
768 px, 50 steps, guidance 4, fp16; Kandinsky 3: 1024 px, 25 steps, guidance 3, fp16; Stable Diffusion /
MSDM: 512 px, 50 steps, guidance 7.5, fp16). A tiny variant (``source = "tiny:<family>"``) overrides them
to 2 steps at 64 px so it runs in a fraction of a second on a CPU.

This module imports neither torch nor diffusers, so configs can be validated cheaply.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

FAMILIES = ("msdm", "sd", "flux", "kandinsky22", "kandinsky3")
TINY_PREFIX = "tiny:"  # source = "tiny:<family>" names the built-in tiny variant of a family
DTYPES = ("float32", "float16", "bfloat16")
GREYSCALE = "greyscale"
"""A model option, not a pipeline argument: the image is made grey (R = G = B, luminance) after the pipeline runs.
On by default for radiology models (``ModelSpec.greyscale``; radiographs are grey, a tiny or colour-leaking model's
RGB output is not). When on, ``effective_params`` carries ``greyscale = True``, so it enters the cache key and the
stored parameters; off, nothing is added (colour models keep their cache keys)."""


@dataclass(frozen=True)
class Param:
    """One generation parameter: its type and allowed range."""

    name: str
    kind: str  # "int", "float" or "text"
    help: str
    low: float | None = None
    high: float | None = None
    multiple_of: int = 1
    optional: bool = False  # None is allowed

    def check(self, value: Any, model: str) -> Any:
        """Return ``value`` as a plain JSON type, or raise ValueError naming the parameter."""
        where = f"parameter {self.name!r} of model {model!r}"
        if value is None:
            if self.optional:
                return None
            raise ValueError(f"{where} must not be None")
        if self.kind == "text":
            if not isinstance(value, str):
                raise ValueError(f"{where} must be text, got {type(value).__name__}")
            return value
        if isinstance(value, bool):
            raise ValueError(f"{where} must be a number, got a boolean")
        if self.kind == "int":
            if isinstance(value, numbers.Integral):
                value = int(value)
            elif isinstance(value, numbers.Real) and float(value).is_integer():
                value = int(value)
            else:
                raise ValueError(f"{where} must be a whole number, got {value!r}")
        else:
            if not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
                raise ValueError(f"{where} must be a finite number, got {value!r}")
            value = float(value)
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise ValueError(f"{where} must be between {self.low:g} and {self.high:g}, got {value!r}")
        if self.multiple_of > 1 and value % self.multiple_of:
            raise ValueError(f"{where} must be a multiple of {self.multiple_of}, got {value!r}")
        return value


def _size(name: str, multiple_of: int) -> Param:
    return Param(name, "int", f"image {name} in pixels", 64, 2048, multiple_of)


_STEPS = Param("num_inference_steps", "int", "denoising steps", 1, 1000)
_GUIDANCE = Param("guidance_scale", "float", "classifier-free guidance scale", 0, 50)
_NEGATIVE = Param("negative_prompt", "text", "what the image should not show (None: model default)", optional=True)
LORA_SCALE = Param("lora_scale", "float", "LoRA strength (0 disables it)", -10, 10)


@dataclass(frozen=True)
class Family:
    name: str
    pipeline_class: str  # a diffusers class name used for from_pretrained
    params: tuple[Param, ...]
    defaults: Mapping[str, Any]
    tiny_overrides: Mapping[str, Any]
    cuda_dtype: str
    text_limit: int | None = None  # the pipeline truncates text to this many tokens (special tokens included)
    # Where a LoRA goes when the pipeline class has no ``load_lora_weights``: the UNet component that the family's
    # diffusers LoRA training script adapts (Kandinsky 2.2: the decoder UNet, ``unet`` of the combined pipeline).
    lora_component: str | None = None
    description: str = ""
    _by_name: Mapping[str, Param] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", MappingProxyType({p.name: p for p in self.params}))
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))
        object.__setattr__(self, "tiny_overrides", MappingProxyType(dict(self.tiny_overrides)))
        missing = set(self._by_name) - set(self.defaults)
        if missing:  # pragma: no cover - table consistency
            raise AssertionError(f"family {self.name}: no default for {sorted(missing)}")

    def param(self, name: str) -> Param | None:
        return self._by_name.get(name)

    def param_names(self) -> tuple[str, ...]:
        return tuple(self._by_name)


_SD_PARAMS = (_STEPS, _GUIDANCE, _size("height", 8), _size("width", 8), _NEGATIVE)
_SD_DEFAULTS = {"num_inference_steps": 50, "guidance_scale": 7.5, "height": 512, "width": 512, "negative_prompt": None}
_TINY = {"num_inference_steps": 2, "height": 64, "width": 64}

_TABLE = {
    "msdm": Family(
        "msdm",
        "StableDiffusionPipeline",
        _SD_PARAMS,
        _SD_DEFAULTS,
        _TINY,
        "float16",
        description="Stable Diffusion UNet conditioned on a clinical BERT text encoder (MSDM-style)",
    ),
    "sd": Family(
        "sd",
        "AutoPipelineForText2Image",
        _SD_PARAMS,
        _SD_DEFAULTS,
        _TINY,
        "float16",
        description="Stable Diffusion 1.x/2.x-style text-to-image pipeline",
    ),
    "flux": Family(
        "flux",
        "FluxPipeline",
        (
            _STEPS,
            _GUIDANCE,
            _size("height", 16),
            _size("width", 16),
            Param("max_sequence_length", "int", "T5 tokens read from the prompt", 16, 512),
        ),
        {"num_inference_steps": 28, "guidance_scale": 3.5, "height": 1024, "width": 1024, "max_sequence_length": 512},
        {**_TINY, "max_sequence_length": 128},
        "bfloat16",
        description="FLUX.1 rectified-flow transformer with CLIP + T5 text encoders",
    ),
    "kandinsky22": Family(
        "kandinsky22",
        "KandinskyV22CombinedPipeline",
        (
            _STEPS,
            _GUIDANCE,
            _size("height", 64),
            _size("width", 64),
            Param("prior_num_inference_steps", "int", "prior denoising steps", 1, 1000),
            Param("prior_guidance_scale", "float", "prior guidance scale", 0, 50),
            _NEGATIVE,
        ),
        {
            "num_inference_steps": 50,
            "guidance_scale": 4.0,
            "height": 768,
            "width": 768,
            "prior_num_inference_steps": 25,
            "prior_guidance_scale": 4.0,
            "negative_prompt": None,
        },
        {**_TINY, "prior_num_inference_steps": 2},
        "float16",
        text_limit=77,
        lora_component="unet",
        description="Kandinsky 2.2: CLIP prior + MoVQ latent decoder",
    ),
    "kandinsky3": Family(
        "kandinsky3",
        "Kandinsky3Pipeline",
        (_STEPS, _GUIDANCE, _size("height", 64), _size("width", 64), _NEGATIVE),
        {"num_inference_steps": 25, "guidance_scale": 3.0, "height": 1024, "width": 1024, "negative_prompt": None},
        _TINY,
        "float16",
        text_limit=128,
        description="Kandinsky 3: FLAN-UL2 text encoder + large UNet + MoVQ",
    ),
}


def check_family(family: str) -> str:
    if family not in _TABLE:
        raise ValueError(f"unknown model family {family!r}; known families: {', '.join(FAMILIES)}")
    return family


def get_family(family: str) -> Family:
    return _TABLE[check_family(family)]


def family_defaults(family: str, tiny: bool = False) -> dict[str, Any]:
    """Documented generation defaults of ``family`` (real sizes; ``tiny=True`` for the tiny variant)."""
    fam = get_family(family)
    out = dict(fam.defaults)
    if tiny:
        out.update(fam.tiny_overrides)
    return out
