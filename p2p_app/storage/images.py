"""Images: the presentation files on disk and their rows (written file first, row second), and the clean-up
of unrated live-arena images."""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from ..blinding import presentation_png_size, stamp_constant_mtime
from .engine import Database, retried
from .records import ImageInfo, StorageError, image_info
from .schema import Image, Mark, Rating, StudySlot, Trial, aware


class ImageStore(Database):
    """Reads and writes of images."""

    def image_by_cache_key(self, cache_key: str) -> ImageInfo | None:
        with self._read() as s:
            i = s.scalars(select(Image).where(Image.cache_key == cache_key)).first()
            if i is None or not (self.data_dir / i.file_path).is_file():
                return None
            return image_info(i, self.data_dir)

    def image(self, image_id: str) -> ImageInfo | None:
        with self._read() as s:
            i = s.get(Image, image_id)
            return image_info(i, self.data_dir) if i else None

    def stored_path(self, path: Path) -> str:
        """What the database keeps for an image file: its path relative to the data folder (absolute only for a
        file outside it)."""
        resolved = path.resolve()
        return resolved.relative_to(self.data_dir).as_posix() if resolved.is_relative_to(self.data_dir) else str(resolved)

    @retried
    def add_image(
        self,
        *,
        image_id: str,
        png: bytes,
        sha256: str,
        size: int,
        model: str,
        source: str,
        prompt: str,
        modality: str,
        prompt_id: str = "",
        seed: int | None = None,
        params: dict | None = None,
        cache_key: str | None = None,
        original_path: str = "",
        gen_seconds: float | None = None,
    ) -> ImageInfo:
        """Write the presentation file (atomically) and then its row; on any failure neither remains.

        A ``cache_key`` already present returns the existing image instead (concurrent identical requests).
        """
        if source not in ("generated", "real"):
            raise StorageError(f"image source must be 'generated' or 'real', got {source!r}")
        if len(png) != presentation_png_size(size):  # one byte size per presentation size, whatever the model
            raise StorageError(
                f"image {image_id}: {len(png)} bytes is not the presentation size of a {size} px PNG "
                f"({presentation_png_size(size)} bytes); write it with blinding.presentation_png"
            )
        path = self.image_dir / f"{image_id}.png"
        fd, tmp = tempfile.mkstemp(dir=self.image_dir, suffix=".part")
        with os.fdopen(fd, "wb") as fh:
            fh.write(png)
        stamp_constant_mtime(tmp)  # one mtime for every presentation file: no generation order in headers
        os.replace(tmp, path)
        try:
            with self._tx() as s:
                row = Image(
                    id=image_id,
                    model=model,
                    source=source,
                    prompt=prompt,
                    prompt_id=prompt_id,
                    modality=modality,
                    seed=seed,
                    params=params or {},
                    cache_key=cache_key,
                    sha256=sha256,
                    file_path=self.stored_path(path),
                    original_path=original_path,
                    width=size,
                    height=size,
                    gen_seconds=gen_seconds,
                )
                s.add(row)
                s.flush()
                return image_info(row, self.data_dir)
        except IntegrityError:
            path.unlink(missing_ok=True)
            if cache_key is not None:
                existing = self.image_by_cache_key(cache_key)
                if existing is not None:
                    return existing
            raise StorageError(f"image {image_id} could not be stored") from None
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    def generated_images(self, prompt: str, modality: str) -> list[ImageInfo]:
        """Every generated image of exactly this prompt and modality (what a presenter's arena can show)."""
        with self._tx() as s:
            rows = s.scalars(
                select(Image).where(Image.prompt == prompt, Image.modality == modality, Image.source == "generated")
            )
            return [image_info(i, self.data_dir) for i in rows]

    def generated_prompts(self, modality: str) -> list[str]:
        """The distinct prompts that have generated images of ``modality``, in first-stored order."""
        with self._tx() as s:
            rows = s.execute(
                select(Image.prompt, func.min(Image.created_at))
                .where(Image.modality == modality, Image.source == "generated")
                .group_by(Image.prompt)
                .order_by(func.min(Image.created_at), Image.prompt)
            )
            return [prompt for prompt, _ in rows]

    def count_images(self) -> int:
        with self._read() as s:
            return s.scalar(select(func.count()).select_from(Image)) or 0

    @staticmethod
    def _arena_images():
        """Live-arena images: generated for a typed prompt (no prompt id: batch and study images always have one)
        and in no study's image slots."""
        return select(Image).where(Image.source == "generated", Image.prompt_id == "",
                                   Image.id.not_in(select(StudySlot.image_id)))  # fmt: skip

    def count_arena_images(self) -> int:
        """How many live-arena images are stored (what the arena's disk budget counts)."""
        with self._read() as s:
            return s.scalar(select(func.count()).select_from(self._arena_images().subquery())) or 0

    @retried
    def delete_unrated_arena_images(self, older_than: datetime, limit: int) -> int:
        """Delete up to ``limit`` of the oldest live-arena images made before ``older_than`` that no stored answer,
        mark, study slot or live trial still on screen uses, with the unsubmitted live trials from before
        ``older_than`` that showed them (abandoned screens: they could never be submitted without their images).
        A submitted trial's images and every study image stay. Rows go in one transaction; files after it.
        Returns how many images were deleted."""
        if limit <= 0:
            return 0
        with self._tx() as s:
            candidates = list(s.scalars(
                self._arena_images().with_only_columns(Image.id)
                .where(Image.created_at < older_than, Image.id.not_in(select(Rating.image_id)),
                       Image.id.not_in(select(Mark.image_id)))
                .order_by(Image.created_at).limit(limit * 4)
            ))  # fmt: skip
            if not candidates:
                return 0
            wanted = set(candidates)
            kept: set[str] = set()  # images a live trial still needs: a submitted one, or one still on screen
            stale: list[Trial] = []
            for t in s.scalars(select(Trial).where(Trial.study_pk.is_(None))):
                ids = wanted.intersection(t.shown_order or ())
                if not ids:
                    continue
                if t.submitted_at is None and aware(t.shown_at) < older_than:
                    stale.append(t)
                else:
                    kept |= ids
            doomed = [i for i in candidates if i not in kept][:limit]
            doomed_set = set(doomed)
            for t in stale:  # a stale trial goes only if every image of it that is an arena image goes
                if doomed_set.issuperset(wanted.intersection(t.shown_order)):
                    s.delete(t)
                else:
                    doomed_set -= set(t.shown_order)
            rows = list(s.scalars(select(Image).where(Image.id.in_(doomed_set))))
            paths = [self.data_dir / r.file_path for r in rows]
            for r in rows:
                s.delete(r)
        for path in paths:
            path.unlink(missing_ok=True)
        return len(paths)
