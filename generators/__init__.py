"""Text-to-image generators: one interface, every model family, tiny offline variants for tests.

Cheap to import: the torch/diffusers-backed names (``DiffusersGenerator``, ``DevicePool``,
``build_tiny``, ``ensure_tiny``, ...) are imported on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import (
    MODALITIES,
    BackendUnavailable,
    GenerationError,
    GenerationResult,
    Generator,
    ModelLoadError,
    TokenCount,
    cache_key,
    check_modality,
    check_seed,
)
from .families import FAMILIES, TINY_PREFIX, family_defaults
from .registry import ModelSpec, Registry, build_generator

_LAZY = {
    "DiffusersGenerator": "diffusers_backend",
    "RemoteGenerator": "remote",
    "DevicePool": "devices",
    "Placement": "devices",
    "build_tiny": "tiny",
    "ensure_tiny": "tiny",
    "build_tiny_lora": "tiny",
    "ensure_tiny_lora": "tiny",
    "tiny_pipeline": "tiny",
}

__all__ = [
    "FAMILIES",
    "MODALITIES",
    "TINY_PREFIX",
    "TokenCount",
    "BackendUnavailable",
    "GenerationError",
    "GenerationResult",
    "Generator",
    "ModelLoadError",
    "ModelSpec",
    "Registry",
    "build_generator",
    "cache_key",
    "check_modality",
    "check_seed",
    "family_defaults",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted(__all__)
