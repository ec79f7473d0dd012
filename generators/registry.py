"""Models declared as data, and the registry that turns them into warm generators.

A config entry (TOML/YAML/JSON, parsed by the caller) becomes a :class:`ModelSpec` with
:meth:`ModelSpec.from_dict`; :func:`build_generator` turns a spec into a :class:`~generators.base.Generator`
and :class:`Registry` holds one generator per spec, sharing one device pool.

``source`` is a hub id (``"owner/name"``), a local pipeline folder, ``"tiny:<family>"`` for the built-in
tiny random-weight variant (built on first use under ``<cache_dir>/tiny/<family>-<weight_seed>``), or the URL of
a generation service (``"http://gpu-host:8000"``, ``p2p serve-models``) that serves the model of the same name
(:class:`~generators.remote.RemoteGenerator`: no weights and no torch in this process).

Importing this module does not import torch; building a generator does.
"""

from __future__ import annotations

import numbers
import os
import threading
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

from .base import DEFAULT_TIMEOUT, Generator, ModelLoadError, check_modality, is_url
from .families import DTYPES, FAMILIES, LORA_SCALE, TINY_PREFIX, check_family, family_defaults, get_family

if TYPE_CHECKING:  # pragma: no cover
    from .diffusers_backend import DevicePool

_DEVICE_HELP = "'auto', 'cpu', 'cuda' or 'cuda:N'"

__all__ = ["FAMILIES", "ModelSpec", "Registry", "build_generator", "family_defaults"]


def _check_device_text(device: str | None) -> str | None:
    if device is None or device in ("auto", "cpu", "cuda"):
        return device
    if isinstance(device, str) and device.startswith("cuda:") and device[5:].isdigit():
        return device
    raise ValueError(f"device must be {_DEVICE_HELP}, got {device!r}")


@dataclass(frozen=True)
class ModelSpec:
    """One configured model. Build it with :meth:`from_dict`; every field is validated on creation."""

    name: str
    family: str
    source: str
    modality: str
    weight_seed: int = 0
    lora: str | None = None
    lora_scale: float = 1.0
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    dtype: str | None = None
    device: str | None = None
    greyscale: bool | None = None  # None: on for radiology (radiographs are grey), off for colonoscopy

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"model name must be non-empty text, got {self.name!r}")
        where = f"model {self.name!r}"
        try:
            check_family(self.family)
            check_modality(self.modality)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if isinstance(self.source, os.PathLike):
            object.__setattr__(self, "source", os.fspath(self.source))
        if not isinstance(self.source, str) or not self.source.strip():
            raise ValueError(
                f"{where}: source must be a hub id, a folder, 'tiny:<family>' or a generation service's "
                f"http(s):// address, got {self.source!r}"
            )
        if self.is_remote:
            self._check_remote(where)
        tiny = self.tiny_family
        if tiny is not None and tiny != self.family:
            raise ValueError(
                f"{where}: source {self.source!r} is a tiny {tiny!r} model but the family is {self.family!r}"
                if tiny in FAMILIES
                else f"{where}: unknown tiny family in source {self.source!r}; known: {', '.join(FAMILIES)}"
            )
        if isinstance(self.weight_seed, bool) or not isinstance(self.weight_seed, int) or self.weight_seed < 0:
            raise ValueError(f"{where}: weight_seed must be a non-negative integer, got {self.weight_seed!r}")
        if self.lora is not None:
            if isinstance(self.lora, os.PathLike):
                object.__setattr__(self, "lora", os.fspath(self.lora))
            if not isinstance(self.lora, str) or not self.lora.strip():
                raise ValueError(f"{where}: lora must be a path or hub id, got {self.lora!r}")
        if isinstance(self.lora_scale, bool) or not isinstance(self.lora_scale, numbers.Real):
            raise ValueError(f"{where}: lora_scale must be a number, got {self.lora_scale!r}")
        object.__setattr__(self, "lora_scale", float(self.lora_scale))
        if not isinstance(self.params, Mapping):
            raise ValueError(f"{where}: params must be a table of parameter values, got {self.params!r}")
        fam = get_family(self.family)
        checked = {}
        for key, value in self.params.items():
            # a service's model may carry a LoRA (its own config's); the service refuses the scale if it has none
            lora = self.lora is not None or self.is_remote
            rule = LORA_SCALE if key == "lora_scale" and lora else fam.param(key)
            if rule is None:
                raise ValueError(
                    f"{where}: unknown parameter {key!r} in params; known: {', '.join(fam.param_names())}"
                )
            checked[key] = rule.check(value, self.name)
        object.__setattr__(self, "params", MappingProxyType(checked))
        if self.dtype not in (None, "auto", *DTYPES):
            raise ValueError(f"{where}: dtype must be one of auto, {', '.join(DTYPES)}; got {self.dtype!r}")
        try:
            _check_device_text(self.device)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if self.greyscale is not None and not isinstance(self.greyscale, bool):
            raise ValueError(f"{where}: greyscale must be true or false, got {self.greyscale!r}")

    def _check_remote(self, where: str) -> None:
        """A URL source: a plain http(s)://host[:port][/path] address; what makes the model belongs to the service."""
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(self.source)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise ValueError(f"{where}: source {self.source!r} is not a valid address ({exc})") from None
        if not parts.hostname or parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError(
                f"{where}: source {self.source!r} must be a plain http(s)://host:port address of a generation "
                "service (no query, fragment or password; the token is the model_token setting)"
            )
        for key, value, unset in (("weight_seed", self.weight_seed, 0), ("lora", self.lora, None),
                                  ("dtype", self.dtype, None), ("device", self.device, None)):
            if value != unset:
                raise ValueError(f"{where}: {key} is set in the generation service's config, not in an entry whose "
                                 f"source is a service address ({self.source})")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelSpec":
        """Build a spec from a config table; unknown or missing keys raise ValueError naming them."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a model entry must be a table, got {type(data).__name__}")
        known = [f.name for f in fields(cls)]
        label = repr(data.get("name", "<unnamed>"))
        for key in data:
            if key not in known:
                raise ValueError(f"model {label}: unknown key {key!r}; known keys: {', '.join(known)}")
        missing = [k for k in ("name", "family", "source", "modality") if k not in data]
        if missing:
            raise ValueError(f"model {label}: missing required key(s) {', '.join(map(repr, missing))}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["params"] = dict(self.params)
        return out

    @property
    def tiny_family(self) -> str | None:
        """The family of a ``"tiny:<family>"`` source, else None."""
        return self.source[len(TINY_PREFIX) :] if self.source.startswith(TINY_PREFIX) else None

    @property
    def is_tiny(self) -> bool:
        return self.tiny_family is not None

    @property
    def is_remote(self) -> bool:
        """True when ``source`` is the address of a generation service (``p2p serve-models``)."""
        return is_url(self.source)

    @property
    def is_greyscale(self) -> bool:
        """Whether images are made grey (R = G = B): ``greyscale`` when set, else on for radiology."""
        return self.greyscale if self.greyscale is not None else self.modality == "radiology"

    def defaults(self) -> dict[str, Any]:
        """Family defaults for this spec (tiny sizes for a tiny source), before ``params`` overrides."""
        return family_defaults(self.family, tiny=self.is_tiny)


def quiet_library_progress() -> None:
    """Turn off diffusers' and transformers' per-component and per-shard progress bars, which bury what a
    command prints (our own progress, images done / total, stays). Their warnings stay: they can matter for
    real weights. Imports diffusers, so call it where models are about to load; without the model stack (a web
    tier whose models are a generation service) there is nothing to quiet."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging
    except ImportError:
        return

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


MODELS_EXTRA_HINT = (
    "making images needs the model stack (torch, diffusers, transformers), which is not installed: "
    "pip install torch==2.13.0 -e '.[models]' (a presenter serving a study pack needs none of it)"
)


def _backend():
    """The diffusers backend module, or a :class:`ModelLoadError` that says what to install."""
    try:
        from . import diffusers_backend
    except ImportError as exc:
        raise ModelLoadError(f"{MODELS_EXTRA_HINT} ({exc})") from None
    return diffusers_backend


def _as_pool(devices: "DevicePool | Iterable[str] | None") -> "DevicePool":
    DevicePool = _backend().DevicePool

    if isinstance(devices, DevicePool):
        return devices
    return DevicePool(None if devices is None else list(devices))


def build_generator(
    spec: ModelSpec,
    cache_dir: str | os.PathLike,
    devices: "DevicePool | Iterable[str] | None" = None,
    *,
    token: str = "",
    timeout: float = DEFAULT_TIMEOUT,
) -> Generator:
    """Make the (lazily loading) generator for ``spec``.

    ``devices`` is a shared :class:`~generators.diffusers_backend.DevicePool`, a list of device names, or
    None for all CUDA devices (else the CPU). Tiny sources are built under ``cache_dir`` on first use.
    A URL source gives a :class:`~generators.remote.RemoteGenerator` (``token``: the service's bearer token,
    ``timeout``: seconds per image) and imports no torch.
    Configuration errors (unknown parameter, CUDA requested but absent, ...) raise ValueError here;
    loading errors surface on ``load()``/``generate()`` as :class:`~generators.base.ModelLoadError`.
    """
    if spec.is_remote:
        from .remote import RemoteGenerator

        return RemoteGenerator(spec.name, spec.family, spec.modality, spec.source, params=spec.params,
                               greyscale=spec.greyscale, token=token, timeout=timeout)
    DiffusersGenerator = _backend().DiffusersGenerator

    source: str = spec.source
    if spec.is_tiny:
        from .tiny import ensure_tiny

        try:
            source = os.fspath(ensure_tiny(spec.family, cache_dir, spec.weight_seed))
        except Exception as exc:
            raise ModelLoadError(f"model {spec.name!r}: cannot build tiny {spec.family!r} model: {exc}") from exc
    return DiffusersGenerator(
        spec.name,
        spec.family,
        spec.modality,
        source=source,
        defaults=spec.defaults(),
        params=spec.params,
        dtype=spec.dtype,
        device=spec.device,
        pool=_as_pool(devices),
        lora=spec.lora,
        lora_scale=spec.lora_scale,
        greyscale=spec.is_greyscale,
    )


class Registry:
    """The configured models of a process, by name, sharing one device pool.

    Creating a registry only checks the specs (no torch import, nothing built): a generator is made on first
    :meth:`get` (building a tiny model if needed) and loads its weights on first use. Call :meth:`load_all` to
    make and load everything at once and see every failing entry together (``p2p serve`` does that in the
    background once the server listens).
    """

    def __init__(
        self,
        specs: Iterable[ModelSpec],
        cache_dir: str | os.PathLike,
        devices: "DevicePool | Iterable[str] | None" = None,
        *,
        token: str = "",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self._remote = {"token": token, "timeout": timeout}  # for entries whose source is a service address
        self._specs: dict[str, ModelSpec] = {}
        for spec in specs:
            if not isinstance(spec, ModelSpec):
                raise ValueError(f"Registry takes ModelSpec objects, got {type(spec).__name__}")
            if spec.name in self._specs:
                raise ValueError(f"model name {spec.name!r} is used twice")
            self._specs[spec.name] = spec
        self._devices = devices
        self._pool: "DevicePool | None" = None
        self._generators: dict[str, Generator] = {}
        self._lock = threading.RLock()  # one thread makes a given generator; the others wait for it

    @property
    def pool(self) -> "DevicePool":
        """The shared device pool (made on first use: it imports torch)."""
        with self._lock:
            if self._pool is None:
                self._pool = _as_pool(self._devices)
            return self._pool

    @classmethod
    def from_dicts(
        cls,
        entries: Iterable[Mapping[str, Any]],
        cache_dir: str | os.PathLike,
        devices: "DevicePool | Iterable[str] | None" = None,
    ) -> "Registry":
        return cls([ModelSpec.from_dict(e) for e in entries], cache_dir, devices)

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self._specs)

    def __iter__(self) -> Iterator[Generator]:
        return iter([self.get(name) for name in self._specs])

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    @property
    def all_remote(self) -> bool:
        """True when every model is served by a generation service: this process holds no weights."""
        return bool(self._specs) and all(spec.is_remote for spec in self._specs.values())

    def names(self) -> list[str]:
        """Model names in config order."""
        return list(self._specs)

    def spec(self, name: str) -> ModelSpec:
        self._check_name(name)
        return self._specs[name]

    def get(self, name: str) -> Generator:
        """The generator of ``name``, made on first call (config errors surface here as ValueError)."""
        self._check_name(name)
        generator = self._generators.get(name)
        if generator is None:
            with self._lock:
                generator = self._generators.get(name)
                if generator is None:
                    spec = self._specs[name]
                    pool = None if spec.is_remote else self.pool  # a remote model needs no device (nor torch)
                    generator = build_generator(spec, self.cache_dir, pool, **self._remote)
                    self._generators[name] = generator
        return generator

    def is_made(self, name: str) -> bool:
        """True once :meth:`get` has made the generator of ``name`` (its weights may still be unloaded)."""
        return name in self._generators

    def _check_name(self, name: str) -> None:
        if name not in self._specs:
            raise KeyError(f"unknown model {name!r}; configured models: {', '.join(self._specs) or 'none'}")

    def for_modality(self, modality: str) -> list[Generator]:
        """Generators of ``modality`` in config order."""
        check_modality(modality)
        return [self.get(name) for name, spec in self._specs.items() if spec.modality == modality]

    def load_all(self) -> None:
        """Load every model and its tokenizers; raise one :class:`ModelLoadError` naming each entry that failed."""
        failures = []
        for name in self._specs:
            try:
                generator = self.get(name)
                generator.load()
                generator.prompt_tokens("")  # its tokenizers too: the arena's live counter never waits for them
            except Exception as exc:  # collect every failure, report them together
                failures.append(f"- {name}: {exc}")
        if failures:
            raise ModelLoadError(f"{len(failures)} of {len(self)} model(s) failed to load:\n" + "\n".join(failures))

    def close(self) -> None:
        with self._lock:
            generators = list(self._generators.values())
        for generator in generators:
            generator.close()
