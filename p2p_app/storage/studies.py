"""Studies: their stored versions, the images filling their slots, and freezing."""

from __future__ import annotations

from sqlalchemy import func, select

from .engine import Database, retried
from .records import ImageInfo, StorageError, StudyRecord, image_info, study_record
from .schema import Image, Study, StudySlot, utcnow


class StudyStore(Database):
    """Reads and writes of studies."""

    def study(self, study_id: str, version: int) -> StudyRecord | None:
        with self._read() as s:
            st = s.scalars(select(Study).where(Study.study_id == study_id, Study.version == version)).first()
            return study_record(st) if st else None

    def study_keys(self) -> list[str]:
        """``id@vN`` of every study in the database, in creation order."""
        with self._read() as s:
            return [f"{sid}@v{ver}" for sid, ver in s.execute(select(Study.study_id, Study.version).order_by(Study.id))]

    @retried
    def register_study(self, study_id: str, version: int, title: str, design_hash: str) -> StudyRecord:
        """Create the study row, or return it if its design is unchanged.

        A frozen study whose design changed is refused: bump ``version`` in the study file instead.
        An unfrozen study may still be edited (its design hash is updated).
        """
        with self._tx() as s:
            st = s.scalars(select(Study).where(Study.study_id == study_id, Study.version == version)).first()
            if st is None:
                st = Study(study_id=study_id, version=version, title=title, design_hash=design_hash)
                s.add(st)
                s.flush()
            elif st.design_hash != design_hash:
                if st.frozen_at is not None:
                    raise StorageError(
                        f"study {study_id!r} version {version} is frozen and its design changed "
                        f"(stored hash {st.design_hash[:12]}…, file now {design_hash[:12]}…). "
                        "Create a new version (raise `version` in the study file) instead of editing it."
                    )
                st.design_hash = design_hash
                st.title = title
            return study_record(st)

    @retried
    def set_study_slot(self, study_pk: int, slot_key: str, image_id: str, *, first_wins: bool = False) -> str:
        """Put ``image_id`` in a slot of a study that is not frozen; returns the image the slot holds.

        ``first_wins`` (an image the caller has just made for this slot: a real or catch image): a slot that
        already holds an image keeps it, also in a study frozen meanwhile (two servers preparing one folder), and
        the new image, which nothing else uses, is deleted (row and file) instead of being left an orphan."""
        with self._tx() as s:
            st = s.get(Study, study_pk)
            if st is None:
                raise StorageError(f"no study #{study_pk}")
            existing = s.get(StudySlot, (study_pk, slot_key))
            if first_wins and existing is not None and existing.image_id != image_id:
                loser = s.get(Image, image_id)
                used = s.scalar(select(func.count()).select_from(StudySlot).where(StudySlot.image_id == image_id))
                path = self.data_dir / loser.file_path if loser is not None and not used else None
                if path is not None:
                    s.delete(loser)
                winner = existing.image_id
            else:
                if st.frozen_at is not None:
                    raise StorageError(f"study {st.key} is frozen: its images cannot change")
                if existing is None:
                    s.add(StudySlot(study_pk=study_pk, slot_key=slot_key, image_id=image_id))
                else:
                    existing.image_id = image_id
                return image_id
        if path is not None:
            path.unlink(missing_ok=True)
        return winner

    def study_slots(self, study_pk: int) -> dict[str, ImageInfo]:
        with self._read() as s:
            rows = s.execute(
                select(StudySlot.slot_key, Image).join(Image, Image.id == StudySlot.image_id).where(
                    StudySlot.study_pk == study_pk
                )
            ).all()
            return {key: image_info(img, self.data_dir) for key, img in rows}

    @retried
    def freeze_study(self, study_pk: int, images_hash: str) -> StudyRecord:
        with self._tx() as s:
            st = s.get(Study, study_pk)
            if st is None:
                raise StorageError(f"no study #{study_pk}")
            if st.frozen_at is not None:
                if st.images_hash != images_hash:
                    raise StorageError(f"study {st.key} is frozen with different images")
                return study_record(st)
            st.images_hash = images_hash
            st.frozen_at = utcnow()
            return study_record(st)
