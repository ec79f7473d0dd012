"""Blinding: opaque ids, one presentation format, no metadata, shuffled and recorded panel order.

Everything a rater's browser receives about an image goes through :func:`presentation_png`: the image is
centre-cropped to a square, resized to the study's presentation size and re-encoded as a PNG written from
raw pixels, so no text chunk, EXIF block, ICC profile or original size survives. Files are named only by
the random id from :func:`new_image_id`.

Nothing about a presentation file may depend on the model that made it or on when it was made:

* Byte size: the PNG is written with zlib level 0 (stored, uncompressed blocks) and no row filter, so its
  length is a function of the pixel size alone (:func:`presentation_png_size`); every image of a given
  presentation size, generated or real, has exactly the same number of bytes. Compressed PNGs differ in
  size by model (texture), which names the model; the cost is ~3 bytes per pixel (768 KiB at 512 px
  instead of ~350-450 KiB).
* Time: every file gets the same modification time (:data:`PRESENTATION_MTIME`, set by
  :func:`stamp_constant_mtime`), so ``Last-Modified`` and mtime-derived ``ETag`` headers cannot be sorted
  into generation order. The server also strips both headers from file responses (``p2p_app.ui.files``).
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import zlib
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
    clean.save(buf, format="PNG", optimize=False, compress_level=0)
    data = buf.getvalue()
    if len(data) != presentation_png_size(size):  # the blinding rests on it: never write a file of another size
        raise RuntimeError(f"presentation PNG of {size} px has {len(data)} bytes, not {presentation_png_size(size)}")
    return data


def presentation_png_size(size: int) -> int:
    """The exact byte length of every presentation PNG of ``size``×``size`` pixels.

    At zlib level 0 the deflate stream is stored blocks whose framing depends on the data length only, and
    every row carries one filter byte, so the file length is fixed by the pixel size: it is measured here by
    encoding a black image with the same writer.
    """
    buf = io.BytesIO()
    Image.new("RGB", (size, size)).save(buf, format="PNG", optimize=False, compress_level=0)
    return len(buf.getvalue())


PRESENTATION_MTIME = 946_684_800  # 2000-01-01T00:00:00Z: the one modification time of every presentation file


def stamp_constant_mtime(path: str | os.PathLike[str]) -> None:
    """Give a presentation file the one constant access/modification time (no generation order in headers)."""
    os.utime(path, (PRESENTATION_MTIME, PRESENTATION_MTIME))


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
    token: str = ""  # the opaque per-presentation token of the page's image URL (p2p_app.serving)

    @property
    def label(self) -> str:
        return panel_label(self.position)


def shuffled(items: list[str], rng: secrets.SystemRandom | None = None) -> list[str]:
    """A uniformly shuffled copy, drawn from the OS's random source (live trials are not replayable)."""
    out = list(items)
    (rng or secrets.SystemRandom()).shuffle(out)
    return out
