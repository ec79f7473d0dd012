"""Catch-screen images: known real images imported again, and deliberately broken copies (noise, flipped, blank,
wrong anatomy) of a study's own images, made once when the study is prepared (:func:`make_catch_images`).
PIL and numpy are imported inside the functions, so importing this module stays light.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from .blinding import presentation_png
from .image_store import add_png
from .storage import Storage
from .study import StudyDefinition


def wrong_anatomy(image: Any, modality: str) -> Any:
    """An image of the same size whose anatomy is impossible for any prompt of ``modality`` (PIL → PIL):

    * ``radiology``: the right half of the image mirrored onto the left, so the body is perfectly symmetric. On a
      chest film (patient's left on the image's right) that gives two aortic knobs, a heart with two apices and a
      gastric bubble under both hemidiaphragms; on any other region a one-sided organ (liver, spleen, stomach,
      aortic arch) is duplicated and its other side missing, and side markers read backwards. A plain left-right
      flip was not chosen: it reads as situs inversus / dextrocardia, rare but real.
    * ``colonoscopy``: a 2 × 2 mosaic of the frame at half size, mirrored across both midlines so the joins are
      seamless: four lumens, four light reflexes and four scope vignettes in one frame, which one endoscope tip
      can never see.
    """
    import numpy as np
    from PIL import Image as PILImage

    rgb = image.convert("RGB")
    w, h = rgb.size
    if modality == "radiology":
        pixels = np.asarray(rgb).copy()
        half = w // 2
        pixels[:, :half] = pixels[:, w - half:][:, ::-1]
        return PILImage.fromarray(pixels, "RGB")
    if modality == "colonoscopy":
        small = np.asarray(rgb.resize((max(1, w // 2), max(1, h // 2)), PILImage.Resampling.LANCZOS))
        top = np.concatenate([small, small[:, ::-1]], axis=1)
        mosaic = PILImage.fromarray(np.concatenate([top, top[::-1]], axis=0), "RGB")
        return mosaic if mosaic.size == (w, h) else mosaic.resize((w, h), PILImage.Resampling.LANCZOS)
    raise ValueError(f"wrong_anatomy needs the modality (colonoscopy or radiology), got {modality!r}")


def broken_image(image: Any, kind: str, key: str, modality: str = "") -> Any:
    """A deliberately broken copy of ``image`` (PIL) for a catch screen: ``noise`` (seeded by ``key``), ``flipped``
    (upside down), ``blank`` (the image's mean colour) or ``wrong_anatomy`` (:func:`wrong_anatomy`, for the
    study's ``modality``); ``""`` returns a plain copy. Every kind keeps the image's pixel size."""
    import numpy as np
    from PIL import Image as PILImage, ImageOps, ImageStat

    rgb = image.convert("RGB")
    if kind == "noise":
        seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
        pixels = np.random.default_rng(seed).integers(0, 256, (rgb.height, rgb.width, 3), dtype=np.uint8)
        return PILImage.fromarray(pixels, "RGB")
    if kind == "flipped":
        return ImageOps.flip(rgb)
    if kind == "blank":
        return PILImage.new("RGB", rgb.size, tuple(int(v) for v in ImageStat.Stat(rgb).mean))
    if kind == "wrong_anatomy":
        return wrong_anatomy(rgb, modality)
    if kind == "":
        return rgb.copy()
    raise ValueError(f"unknown broken kind {kind!r}")


def make_catch_images(storage: Storage, presentation_size: int, study: StudyDefinition, study_pk: int) -> int:
    """Make every catch screen's images (after the design's own images exist): known real images imported again,
    broken and plain copies made from the design image they derive from. Each is a new image (its own id), marked
    in ``params`` (``catch``, ``catch_kind``) for the tidy frame; never shown to the rater. Returns how many."""
    from PIL import Image as PILImage

    stored = storage.study_slots(study_pk)
    made = 0
    for s in study.catch_slots():
        if s.key in stored:
            continue
        path = s.real_path if not s.derive_from else Path(stored[s.derive_from].file_path)
        with PILImage.open(path) as im:
            im.load()
            picture = broken_image(im, s.catch_kind if s.catch == "broken" else "", s.key, study.modality)
        info = add_png(
            storage, presentation_size, presentation_png(picture, presentation_size), model=s.model, source=s.source,
            prompt=s.prompt, prompt_id=s.prompt_id, modality=study.modality, seed=s.seed,
            params={"catch": s.catch, "catch_kind": s.catch_kind, "derived_from": s.derive_from},
        )
        made += storage.set_study_slot(study_pk, s.key, info.id, first_wins=True) == info.id
    return made
