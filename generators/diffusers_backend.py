"""Text-to-image generation with any diffusers pipeline.

:class:`DiffusersGenerator` loads a pipeline with ``from_pretrained`` (a hub id or a local folder, real or
tiny), keeps it warm, and makes one image per :meth:`~DiffusersGenerator.generate` call, seeded with a CPU
``torch.Generator`` so that the same model + prompt + seed + parameters give the same pixels.

Devices come from a shared :class:`~generators.devices.DevicePool` (one lock per device, the least-loaded GPU for
each newly loaded model); a model that does not fit in free GPU memory falls back to diffusers'
``enable_model_cpu_offload()``.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import importlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .base import (
    GenerationError,
    GenerationResult,
    Generator,
    ModelLoadError,
    TokenCount,
    check_modality,
    check_seed,
)
from .devices import GiB, DevicePool, Placement, choose_placement  # noqa: F401 - re-exported
from .families import DTYPES, GREYSCALE, LORA_SCALE, Family, family_defaults, get_family

log = logging.getLogger(__name__)

LORA_ADAPTER = "p2p_lora"
_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Tried in order to find the tokenizer that reads the prompt first.
_TOKENIZER_PREFERENCE = ("tokenizer", "prior_tokenizer")
# Tokenizer class name prefix -> the encoder's usual name (shown to raters under the prompt).
_ENCODER_LABELS = (("CLIP", "CLIP"), ("Bert", "BERT"), ("T5", "T5"), ("XLMRoberta", "XLM-RoBERTa"), ("Gemma", "Gemma"))


# ----------------------------------------------------------------------------------------------- helpers


def _modules(pipe: Any) -> list[torch.nn.Module]:
    components = getattr(pipe, "components", None) or {}
    return [m for m in components.values() if isinstance(m, torch.nn.Module)]


def pipeline_bytes(pipe: Any, *, cpu_only: bool = False) -> int:
    """Bytes of the parameters and buffers of the pipeline's torch modules (``cpu_only``: those in CPU memory)."""
    total = 0
    for module in _modules(pipe):
        for t in (*module.parameters(), *module.buffers()):
            if not cpu_only or t.device.type == "cpu":
                total += t.numel() * t.element_size()
    return total


def _fresh_cpu_memory(pipe: Any) -> None:
    """Copy CPU weights into fresh allocations.

    Weights loaded from safetensors can sit at addresses that make MKL round single-row matmuls
    differently (~1e-6), flipping a few 8-bit pixels between two loads of one model. Fresh tensors are
    allocated with the allocator's alignment, which makes repeated loads bit-identical.
    """
    with torch.no_grad():
        for module in _modules(pipe):
            for p in module.parameters():
                if p.device.type == "cpu":
                    p.data = p.data.clone()
            for sub in module.modules():
                for name, buf in sub._buffers.items():
                    if buf is not None and buf.device.type == "cpu":
                        sub._buffers[name] = buf.clone()


def _weight_shapes(pipe: Any) -> dict[tuple[int, str], tuple[int, ...]]:
    """Shapes of every layer weight, keyed by (component index, module name)."""
    out = {}
    for index, module in enumerate(_modules(pipe)):
        for qualname, sub in module.named_modules():
            weight = getattr(sub, "weight", None)
            if isinstance(weight, torch.Tensor):
                out[(index, qualname)] = tuple(weight.shape)
    return out


def _tokenizer_names(names: Sequence[str]) -> list[str]:
    """The tokenizer components among ``names``: the one that reads the prompt first first, then the rest."""
    first = [n for n in _TOKENIZER_PREFERENCE if n in names]
    return first + sorted(n for n in names if "tokenizer" in n and n not in first)


def _encoder_label(tok: Any) -> str:
    """What people call the encoder behind tokenizer ``tok``: "CLIP text encoder", "T5 text encoder", ..."""
    cls = type(tok).__name__
    for prefix, label in _ENCODER_LABELS:
        if cls.startswith(prefix):
            return f"{label} text encoder"
    base = cls.removesuffix("Fast").removesuffix("Tokenizer")
    return f"{base} text encoder" if base else "text encoder"


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _dtype_kwarg() -> str:
    """diffusers >= 0.36 takes ``dtype=``; older releases ``torch_dtype=``."""
    from diffusers.pipelines import pipeline_utils

    return "dtype" if hasattr(pipeline_utils, "_resolve_dtype") else "torch_dtype"


def _load_unet_lora(unet: Any, prefix: str, source: str) -> None:
    """Load a LoRA into a UNet component the way diffusers loads a Stable Diffusion UNet LoRA (its format
    conversions included). A file saved from the UNet alone has no ``unet.`` key prefix: one is added."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin as SDLora

    state_dict, alphas = SDLora.lora_state_dict(source)
    if not any(key.startswith((f"{prefix}.", "text_encoder.")) for key in state_dict):
        state_dict = {f"{prefix}.{key}": value for key, value in state_dict.items()}
        alphas = {f"{prefix}.{key}": value for key, value in alphas.items()} if alphas else alphas
    SDLora.load_lora_into_unet(state_dict, alphas, unet=unet, adapter_name=LORA_ADAPTER)


def _looks_local(source: str) -> bool:
    return (
        os.path.isabs(source)
        or source.startswith((".", "~"))
        or source.count("/") != 1
        or os.sep != "/" and os.sep in source
    )


# ----------------------------------------------------------------------------------------------- generator


class DiffusersGenerator(Generator):
    """A diffusers text-to-image pipeline behind the :class:`~generators.base.Generator` interface.

    Give either ``source`` (hub id or local pipeline folder, loaded with the family's pipeline class on
    first use) or a ready ``pipeline`` object (tests, benchmarks). ``defaults`` are the family defaults
    (:func:`~generators.families.family_defaults`; keys left out keep the family's real-size default),
    ``params`` the config overrides; both are validated here. ``dtype=None`` picks the family's half
    precision on CUDA (FLUX bf16, others fp16) and float32 on CPU. ``device=None`` lets ``pool`` place the
    model (least-loaded CUDA device, else CPU); "cuda" when CUDA is absent is a ValueError.

    The pipeline stays loaded ("warm") until :meth:`close`. ``generate`` holds the pool's lock for the
    model's device while the pipeline runs, so calls from many threads are safe.
    """

    def __init__(
        self,
        name: str,
        family: str,
        modality: str,
        *,
        source: str | os.PathLike | None = None,
        pipeline: Any = None,
        defaults: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        dtype: str | None = None,
        device: str | None = None,
        pool: DevicePool | None = None,
        lora: str | os.PathLike | None = None,
        lora_scale: float = 1.0,
        greyscale: bool = False,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"model name must be non-empty text, got {name!r}")
        self.name = name
        self._family: Family = get_family(family)
        self.family = family
        self.modality = check_modality(modality)
        if (source is None) == (pipeline is None):
            raise ValueError(f"model {name!r}: give exactly one of source= or pipeline=")
        self.source = None if source is None else os.fspath(source)
        self.lora = None if lora is None else os.fspath(lora)
        self.pool = pool if pool is not None else DevicePool()
        try:
            self._candidates = self.pool.candidates(device)
        except ValueError as exc:  # e.g. CUDA requested but absent
            raise ValueError(f"model {name!r}: {exc}") from None
        on_cuda = self._candidates[0].startswith("cuda")
        if dtype in (None, "auto"):
            dtype = self._family.cuda_dtype if on_cuda else "float32"
        if dtype not in DTYPES:
            raise ValueError(f"model {name!r}: dtype must be one of auto, {', '.join(DTYPES)}; got {dtype!r}")
        if dtype == "float16" and not on_cuda:
            raise ValueError(f"model {name!r}: float16 is not supported on the CPU; use float32 or bfloat16")
        self.dtype = dtype

        self._defaults = family_defaults(family)
        self._defaults.update(self._check_params(defaults or {}, "defaults"))
        if self.lora is not None:
            self._defaults["lora_scale"] = LORA_SCALE.check(lora_scale, name)
            cls = getattr(importlib.import_module("diffusers"), self._family.pipeline_class)
            if (
                not cls.__name__.startswith("AutoPipeline")
                and not hasattr(cls, "load_lora_weights")
                and self._family.lora_component is None
            ):
                raise ValueError(f"model {name!r}: {cls.__name__} ({family}) does not support LoRA adapters")
        self._overrides = self._check_params(params or {}, "config")
        if not isinstance(greyscale, bool):
            raise ValueError(f"model {name!r}: greyscale must be True or False, got {greyscale!r}")
        self.greyscale = greyscale

        self._pipe = pipeline
        self._placement: Placement | None = None
        self._active_lora_scale: float | None = None
        self._lora_module: Any = None  # the component holding the LoRA when the pipeline has no LoRA loader
        self._tokenizers: dict[str, Any] | None = None
        self._special_tokens: dict[str, int] = {}
        self._load_lock = threading.Lock()
        self._tokenizer_lock = threading.Lock()
        if pipeline is not None:
            self._setup(pipeline)

    def __repr__(self) -> str:
        where = self._placement.device if self._placement else "not loaded"
        return f"DiffusersGenerator({self.name!r}, family={self.family!r}, source={self.source!r}, {where})"

    # ------------------------------------------------------------------------------------------ params

    def _param(self, key: str):
        if key == "lora_scale" and self.lora is not None:
            return LORA_SCALE
        return self._family.param(key)

    def _check_params(self, params: Mapping[str, Any], origin: str) -> dict[str, Any]:
        out = {}
        for key, value in params.items():
            rule = self._param(key)
            if rule is None:
                known = ", ".join(self._defaults)
                raise ValueError(
                    f"unknown parameter {key!r} for model {self.name!r} ({self.family}) in {origin}; "
                    f"known parameters: {known}"
                )
            out[key] = rule.check(value, self.name)
        return out

    def effective_params(self, **params: Any) -> dict[str, Any]:
        merged = dict(self._defaults)
        merged.update(self._overrides)
        merged.update(self._check_params(params, "the call"))
        if self.greyscale:  # part of what made the image (and of its cache key); not a pipeline argument
            merged[GREYSCALE] = True
        return merged

    # ------------------------------------------------------------------------------------------ loading

    @property
    def loaded(self) -> bool:
        return self._pipe is not None and self._placement is not None

    @property
    def placement(self) -> Placement | None:
        return self._placement

    def _local_folder(self) -> Path | None:
        if self.source is None:
            return None
        path = Path(self.source).expanduser()
        if path.exists():
            if not path.is_dir():
                raise ModelLoadError(f"model {self.name!r}: source {self.source!r} is a file, not a pipeline folder")
            if not (path / "model_index.json").is_file():
                raise ModelLoadError(
                    f"model {self.name!r}: folder {self.source!r} is not a diffusers pipeline (no model_index.json)"
                )
            return path
        if _looks_local(self.source):
            raise ModelLoadError(f"model {self.name!r}: model folder {self.source!r} does not exist")
        return None  # a hub id

    def load(self) -> None:
        """Load the pipeline now (otherwise the first ``generate`` does); idempotent and thread-safe."""
        if self.loaded:
            return
        with self._load_lock:
            if self.loaded:
                return
            if self.source is None:
                raise GenerationError(f"model {self.name!r} was closed and has no source to reload from")
            folder = self._local_folder()
            self._setup(self._from_pretrained(folder))

    def _from_pretrained(self, folder: Path | None) -> Any:
        import diffusers

        cls = getattr(diffusers, self._family.pipeline_class)
        where = str(folder) if folder is not None else self.source
        kwargs = {_dtype_kwarg(): _TORCH_DTYPES[self.dtype]}
        t0 = time.perf_counter()
        try:
            pipe = cls.from_pretrained(where, **kwargs)
        except Exception as exc:
            what = f"folder {self.source!r}" if folder is not None else (
                f"{self.source!r} (not a local folder, so it was tried as a hub id)"
            )
            raise ModelLoadError(
                f"model {self.name!r}: cannot load {what} as {self._family.pipeline_class}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        log.info("loaded %s from %s in %.1f s", self.name, where, time.perf_counter() - t0)
        return pipe

    def _setup(self, pipe: Any) -> None:
        """Place the pipeline, attach the LoRA, disable progress bars. Caller holds ``_load_lock``."""
        if hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)
        if self.lora is not None:
            self._attach_lora(pipe)
        # Only weights still in CPU memory need room (a ready pipeline may already sit on the GPU).
        with self.pool.placing(pipeline_bytes(pipe, cpu_only=True), self._candidates) as placement:
            if placement.device == "cpu":
                _fresh_cpu_memory(pipe)
            elif not placement.offload:
                try:
                    pipe.to(placement.device)
                except torch.OutOfMemoryError:  # the estimate was optimistic (fragmentation, other processes)
                    placement = Placement(placement.device, offload=True)
                if placement.offload:
                    pipe.to("cpu")
                    gc.collect()
                    torch.cuda.empty_cache()
            if placement.offload:
                log.warning("%s does not fit in free memory of %s: model CPU offload", self.name, placement.device)
                pipe.enable_model_cpu_offload(device=placement.device)
        self._pipe = pipe
        self._placement = placement

    def _attach_lora(self, pipe: Any) -> None:
        what = f"LoRA {self.lora!r} for model {self.name!r}"
        component = None
        if not hasattr(pipe, "load_lora_weights"):
            component = getattr(pipe, self._family.lora_component or "", None)
            if component is None or not hasattr(component, "load_lora_adapter"):
                raise ModelLoadError(f"{what}: {type(pipe).__name__} does not support LoRA adapters")
        lora_path = Path(self.lora).expanduser()
        if not lora_path.exists() and _looks_local(self.lora):
            raise ModelLoadError(f"{what}: the LoRA path does not exist")
        source = str(lora_path) if lora_path.exists() else self.lora
        shapes = _weight_shapes(pipe)
        try:
            if component is None:
                pipe.load_lora_weights(source, adapter_name=LORA_ADAPTER)
            else:
                _load_unet_lora(component, self._family.lora_component, source)
        except Exception as exc:
            raise ModelLoadError(
                f"{what}: the LoRA does not match this model ({type(exc).__name__}: {exc})"
            ) from exc
        problem = self._lora_problem(pipe, shapes)
        if problem:
            with contextlib.suppress(Exception):
                if component is None:
                    pipe.unload_lora_weights()
                else:
                    component.delete_adapters(LORA_ADAPTER)
            raise ModelLoadError(f"{what}: the LoRA does not match this model: {problem}")
        self._lora_module = component
        self._active_lora_scale = None

    @staticmethod
    def _lora_problem(pipe: Any, shapes_before: Mapping[tuple[int, str], tuple[int, ...]]) -> str | None:
        """Why the loaded adapter cannot work on this pipeline, or None if it fits."""
        layers = 0
        for index, module in enumerate(_modules(pipe)):
            for qualname, sub in module.named_modules():
                lora_a = getattr(sub, "lora_A", None)
                if not isinstance(lora_a, torch.nn.ModuleDict) or LORA_ADAPTER not in lora_a:
                    continue
                layers += 1
                base = sub.get_base_layer() if hasattr(sub, "get_base_layer") else None
                base_w = getattr(base, "weight", None)
                before = shapes_before.get((index, qualname))
                if base_w is not None and before is not None and tuple(base_w.shape) != before:
                    # diffusers silently widens some FLUX layers to fit a bigger LoRA
                    return (
                        f"layer {qualname!r} has shape {list(before)} but the LoRA needs {list(base_w.shape)}: "
                        "it was made for a different base model"
                    )
                a_w = getattr(lora_a[LORA_ADAPTER], "weight", None)
                b_w = getattr(sub.lora_B[LORA_ADAPTER], "weight", None)
                if base_w is None or a_w is None or b_w is None or base_w.dim() < 2:
                    continue
                # Linear and conv weights are (out, in, ...): A is (rank, in, ...), B is (out, rank, ...).
                if a_w.shape[1] != base_w.shape[1] or b_w.shape[0] != base_w.shape[0]:
                    return (
                        f"layer {qualname!r} maps {base_w.shape[1]} -> {base_w.shape[0]} features "
                        f"but the LoRA's shape expects {a_w.shape[1]} -> {b_w.shape[0]}"
                    )
        if layers == 0:
            return "none of its weights names a layer of this model"
        return None

    # ------------------------------------------------------------------------------------------ tokens

    def _get_tokenizers(self) -> dict[str, Any]:
        """Every tokenizer of the pipeline (name -> a private copy), the one that reads the prompt first first;
        loaded once, from the tokenizer folders alone when the source is a folder or a hub id."""
        if self._tokenizers is not None:
            return self._tokenizers
        with self._tokenizer_lock:
            if self._tokenizers is None:
                loaded = self._load_tokenizers()
                self._special_tokens = {name: len(tok("")["input_ids"]) for name, tok in loaded.items()}
                self._tokenizers = loaded
        return self._tokenizers

    def _get_tokenizer(self) -> Any:
        """The tokenizer that reads the prompt first (``count_tokens`` and ``max_prompt_tokens`` are of it)."""
        return next(iter(self._get_tokenizers().values()))

    def _load_tokenizers(self) -> dict[str, Any]:
        # A local folder: read only the tokenizers, without loading weights.
        folder = self._local_folder() if self._pipe is None else None
        if folder is not None:
            try:
                index = json.loads((folder / "model_index.json").read_text())
            except (OSError, ValueError) as exc:
                raise ModelLoadError(f"model {self.name!r}: unreadable model_index.json in {self.source!r}") from exc
            names = _tokenizer_names([k for k, v in index.items() if isinstance(v, list) and v[0]])
            out = {}
            for name in names:
                library, class_name = index[name]
                try:
                    cls = getattr(importlib.import_module(library), class_name)
                    out[name] = cls.from_pretrained(folder / name)
                except Exception as exc:
                    raise ModelLoadError(
                        f"model {self.name!r}: cannot load tokenizer {name!r} from {self.source!r}: {exc}"
                    ) from exc
            if out:
                return out
        elif self._pipe is None and self.source is not None:
            out = self._hub_tokenizers()
            if out:
                return out
        self.load()
        components = getattr(self._pipe, "components", {}) or {}
        names = _tokenizer_names([k for k, v in components.items() if v is not None])
        if not names:
            raise ModelLoadError(f"model {self.name!r}: its pipeline has no tokenizer")
        # Private copies: the pipeline's own tokenizers are used (with padding/truncation) during generation.
        return {name: copy.deepcopy(components[name]) for name in names}

    def _hub_tokenizers(self) -> dict[str, Any]:
        """A hub pipeline's tokenizers from its small files (model_index.json + the tokenizer folders), without
        the weights; empty when that does not work (the caller then loads the pipeline)."""
        try:
            from huggingface_hub import hf_hub_download

            index = json.loads(Path(hf_hub_download(self.source, "model_index.json")).read_text())
            out = {}
            for name in _tokenizer_names([k for k, v in index.items() if isinstance(v, list) and v[0]]):
                library, class_name = index[name]
                cls = getattr(importlib.import_module(library), class_name)
                out[name] = cls.from_pretrained(self.source, subfolder=name)
            return out
        except Exception as exc:  # noqa: BLE001 - any failure: fall back to loading the pipeline
            log.info("tokenizers of %s not loadable on their own (%s); loading the pipeline", self.name, exc)
            return {}

    def _limit(self, name: str, tok: Any) -> int:
        """Tokens the pipeline reads through tokenizer ``name``, special tokens excluded: what it truncates at."""
        if name == "tokenizer_2" and self._family.param("max_sequence_length") is not None:
            limit = int(self.effective_params()["max_sequence_length"])  # FLUX's T5: the max_sequence_length param
        elif name == next(iter(self._get_tokenizers())):
            limit = int(min(tok.model_max_length, self._family.text_limit or tok.model_max_length))
        else:
            limit = int(tok.model_max_length)
        return limit - self._special_tokens[name]

    def _count(self, tok: Any, prompt: str) -> int:
        with self._tokenizer_lock:
            return len(tok(prompt, add_special_tokens=False, verbose=False)["input_ids"])

    def prompt_tokens(self, prompt: str) -> tuple[TokenCount, ...]:
        """One count per tokenizer of the pipeline: FLUX reads the prompt with CLIP (77 tokens) and T5
        (``max_sequence_length``), SDXL with two CLIPs; the strictest decides (``strictest_tokens``)."""
        return tuple(
            TokenCount(_encoder_label(tok), self._count(tok, prompt), self._limit(name, tok))
            for name, tok in self._get_tokenizers().items()
        )

    @property
    def text_encoder(self) -> str:
        """The encoder ``max_prompt_tokens`` is of, named after its tokenizer ("CLIP text encoder")."""
        return _encoder_label(self._get_tokenizer())

    @property
    def max_prompt_tokens(self) -> int:
        name, tok = next(iter(self._get_tokenizers().items()))
        return self._limit(name, tok)

    def count_tokens(self, prompt: str) -> int:
        return self._count(self._get_tokenizer(), prompt)

    # ------------------------------------------------------------------------------------------ generation

    def _apply_lora_scale(self, scale: float) -> None:
        if scale != self._active_lora_scale:
            if self._lora_module is None:
                self._pipe.set_adapters([LORA_ADAPTER], adapter_weights=[scale])
            else:  # a LoRA on one component (Kandinsky 2.2's decoder UNet)
                self._lora_module.set_adapters([LORA_ADAPTER], weights=[scale])
            self._active_lora_scale = scale

    def generate(self, prompt: str, seed: int, **params: Any) -> GenerationResult:
        prompt = self.check_prompt(prompt)
        seed = check_seed(seed)
        effective = self.effective_params(**params)
        return self._run([prompt], [seed], effective)[0]

    def generate_many(self, prompts: Sequence[str], seeds: Sequence[int], **params: Any) -> list[GenerationResult]:
        """One pipeline call for several prompts (image i from ``prompts[i]`` with a CPU generator seeded with
        ``seeds[i]``) with one set of parameters. Faster per image on a GPU, but batched kernels may round
        differently from one-at-a-time calls (a few 8-bit pixel values off by one on this CPU for every
        family), so the model service batches a model only where a probe found the images identical."""
        if len(prompts) != len(seeds) or not prompts:
            raise ValueError("generate_many needs one seed per prompt and at least one prompt")
        prompts = [self.check_prompt(p) for p in prompts]
        seeds = [check_seed(s) for s in seeds]
        return self._run(prompts, seeds, self.effective_params(**params))

    def batch_invariant(self, prompts: Sequence[str], seeds: Sequence[int], **params: Any) -> bool:
        """Whether one batched pipeline call gives bit-identical float outputs to one call per prompt (the
        model's default settings). Compared before the conversion to 8-bit pixels, so a rounding difference too
        small to flip a pixel for these prompts still counts: batching is sound only where the kernels ignore
        the batch size."""
        effective = self.effective_params(**params)
        self.load()
        call_kwargs = {k: v for k, v in effective.items() if k not in ("lora_scale", GREYSCALE)}
        with self.pool.lock(self._placement.device):
            if self.lora is not None:
                self._apply_lora_scale(effective["lora_scale"])
            singles = [
                self._pipe(prompt=p, generator=torch.Generator("cpu").manual_seed(s), output_type="np",
                           **call_kwargs).images[0]
                for p, s in zip(prompts, seeds)
            ]
            if call_kwargs.get("negative_prompt") is not None:
                call_kwargs["negative_prompt"] = [call_kwargs["negative_prompt"]] * len(prompts)
            batched = self._pipe(prompt=list(prompts), generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
                                 output_type="np", **call_kwargs).images
        import numpy as np

        return len(batched) == len(singles) and all(
            np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(singles, batched)
        )

    def _run(self, prompts: list[str], seeds: list[int], effective: dict[str, Any]) -> list[GenerationResult]:
        self.load()
        call_kwargs = {k: v for k, v in effective.items() if k not in ("lora_scale", GREYSCALE)}
        single = len(prompts) == 1
        if not single and call_kwargs.get("negative_prompt") is not None:
            call_kwargs["negative_prompt"] = [call_kwargs["negative_prompt"]] * len(prompts)
        pipe, device = self._pipe, self._placement.device
        with self.pool.lock(device):
            if self.lora is not None:
                self._apply_lora_scale(effective["lora_scale"])
            generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
            t0 = time.perf_counter()
            out_of_memory = False
            try:
                if single:  # exactly the call every cached image was made with
                    output = pipe(prompt=prompts[0], generator=generators[0], output_type="pil", **call_kwargs)
                else:
                    output = pipe(prompt=prompts, generator=generators, output_type="pil", **call_kwargs)
            except Exception as exc:
                if not _is_oom(exc):
                    raise
                out_of_memory = True  # handled below, once the traceback (and its tensors) is released
            if out_of_memory:
                gc.collect()
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
                settings = ", ".join(f"{k}={v!r}" for k, v in effective.items())
                raise GenerationError(
                    f"model {self.name!r} ran out of memory on {device} ({settings}"
                    f"{f', {len(prompts)} images at once' if not single else ''}). "
                    "Try a smaller image or fewer steps, or free the device."
                )
            seconds = (time.perf_counter() - t0) / len(prompts)
        if len(output.images) != len(prompts):
            raise GenerationError(f"model {self.name!r}: the pipeline made {len(output.images)} images for "
                                  f"{len(prompts)} prompts")
        results = []
        for image, prompt, seed in zip(output.images, prompts, seeds):
            if self.greyscale:  # luminance in all three channels: R = G = B, still an RGB image like every other
                image = image.convert("L")
            if image.mode != "RGB":
                image = image.convert("RGB")
            results.append(GenerationResult(
                image=image,
                model=self.name,
                family=self.family,
                prompt=prompt,
                seed=seed,
                params=dict(effective),
                seconds=seconds,
            ))
        return results

    def close(self) -> None:
        """Drop the pipeline and free its device memory (a later ``generate`` reloads it from ``source``)."""
        with self._load_lock:
            placement, self._placement = self._placement, None
            if placement is None:
                return
            with self.pool.lock(placement.device):
                if placement.offload and hasattr(self._pipe, "remove_all_hooks"):
                    with contextlib.suppress(Exception):
                        self._pipe.remove_all_hooks()
                self._pipe = None
            self.pool.release(placement)
            gc.collect()
            if placement.device.startswith("cuda"):
                torch.cuda.empty_cache()
