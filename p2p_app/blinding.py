"""Blinding: opaque ids, one presentation format, no metadata, shuffled and recorded panel order.

Everything a rater's browser receives about an image goes through :func:`presentation_png`: the image is
centre-cropped to a square, resized to the study's presentation size and re-encoded as a PNG written from
raw pixels, so no text chunk, EXIF block, ICC profile or original size survives. Files are named only by
the random id from :func:`new_image_id`.
"""

from __future__ import annotations

import hashlib
import io
import secrets
from dataclasses import dataclass

from PIL import Image

PANEL_LABELS = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def new_image_id() -> str:
    """A random, opaque, URL-safe id (128 bits) that says nothing about the model."""
    return secrets.token_hex(16)


def presentation_png(image: Image.Image, size: int) -> bytes:
    """Re-encode ``image`` as a ``size``×``size`` RGB PNG with no metadata at all."""
    if size < 16 or size > 4096:
        raise ValueError(f"presentation size must be between 16 and 4096 pixels, got {size}")
    rgb = image.convert("RGB")
    w, h = rgb.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    rgb = rgb.crop((left, top, left + side, top + side))
    if side != size:
        resample = Image.Resampling.LANCZOS if side > size else Image.Resampling.BICUBIC
        rgb = rgb.resize((size, size), resample)
    # A fresh image from raw bytes carries no info dict (no text chunks, no EXIF, no ICC, no dpi).
    clean = Image.frombytes("RGB", rgb.size, rgb.tobytes())
    buf = io.BytesIO()
    clean.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def panel_label(position: int) -> str:
    """1-based position → "Image A", "Image B", …"""
    return f"Image {PANEL_LABELS[position - 1]}"


@dataclass(frozen=True)
class Panel:
    """What the UI shows for one position: a label and a file path named by the opaque id."""

    position: int
    image_id: str
    path: str

    @property
    def label(self) -> str:
        return panel_label(self.position)


def shuffled(items: list[str], rng: secrets.SystemRandom | None = None) -> list[str]:
    """A uniformly shuffled copy, drawn from the OS's random source (live trials are not replayable)."""
    out = list(items)
    (rng or secrets.SystemRandom()).shuffle(out)
    return out
