"""Images into storage: a generated image through the generation cache, a real control image imported; each is
stored as a presentation copy (re-encoded PNG at the configured size, new random id, its sha256)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from generators import Generator, cache_key

from .blinding import new_image_id, presentation_png, sha256_hex
from .forms import UserError
from .storage import ImageInfo, Storage


@dataclass(frozen=True)
class GeneratedImage:
    image: ImageInfo
    cached: bool


def add_png(storage: Storage, size: int, png: bytes, **fields: Any) -> ImageInfo:
    """Store a presentation PNG (made at ``size``) as a new image; ``fields`` are ``Storage.add_image``'s others."""
    return storage.add_image(image_id=new_image_id(), png=png, sha256=sha256_hex(png), size=size, **fields)


def generate_image(
    storage: Storage, size: int, generator: Generator, prompt: str, seed: int, prompt_id: str = "", **params: Any
) -> GeneratedImage:
    """One image through the cache: a repeat request returns the stored image without running the model."""
    effective = generator.effective_params(**params)
    key = cache_key(generator.name, prompt, seed, effective)
    hit = storage.image_by_cache_key(key)
    if hit is not None:
        return GeneratedImage(hit, cached=True)
    result = generator.generate(prompt, seed, **params)
    info = add_png(
        storage, size, presentation_png(result.image, size), model=generator.name, source="generated", prompt=prompt,
        prompt_id=prompt_id, modality=generator.modality, seed=seed, params=dict(result.params), cache_key=key,
        gen_seconds=result.seconds,
    )
    return GeneratedImage(info, cached=False)


def add_real_image(
    storage: Storage, size: int, path: str | Path, prompt: str, modality: str, prompt_id: str = ""
) -> ImageInfo:
    """Import a real control image as a presentation copy (same size and format as generated ones)."""
    from PIL import Image as PILImage, UnidentifiedImageError

    try:
        with PILImage.open(path) as im:
            png = presentation_png(im, size)
    except (OSError, UnidentifiedImageError) as exc:
        raise UserError(f"{path}: cannot read the real image ({exc})") from None
    return add_png(storage, size, png, model="real", source="real", prompt=prompt, prompt_id=prompt_id,
                   modality=modality, original_path=str(path))
