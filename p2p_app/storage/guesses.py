"""The raters' model guesses (studies with ``blinding_index``; issue 22): stored once per trial, only after the
trial's ratings are, never changed; read back unblinded (with the image's true arm) for the blinding index."""

from __future__ import annotations

from typing import Mapping

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from ..tidy import GUESS_COLUMNS, GUESS_DTYPES
from .engine import retried
from .frames import of_study
from .records import AccessDenied, RecordResult, StorageError
from .schema import LIVE_STUDY, Guess, Image, Rater, Study, Trial, aware, utcnow
from .trials import TrialStore

NOT_RATED_YET = "The model question comes after this screen's ratings are stored."
GUESS_EVERY_IMAGE = "Answer the model question for every image (\"Don't know\" is an answer)."


class GuessStore(TrialStore):
    """Reads and writes of the model guesses."""

    @retried
    def record_guesses(self, trial_id: int, rater_pk: int, guesses: Mapping[int, str]) -> RecordResult:
        """Store one guess per image of a submitted trial (``guesses``: position → option or ``dont_know``), all
        or none. Refused (nothing written) for another rater's trial, a trial whose ratings are not stored, or
        positions that are not exactly the trial's; a trial that has its guesses already: ``duplicate``, unchanged."""
        now = utcnow()
        try:
            with self._tx() as s:
                t = self._owned(s, trial_id, rater_pk, lock=True)
                if t.submitted_at is None:
                    raise AccessDenied(NOT_RATED_YET)
                if s.scalar(select(func.count()).select_from(Guess).where(Guess.trial_id == t.id)):
                    return RecordResult("duplicate", 0)
                if sorted(guesses) != list(range(1, len(t.shown_order) + 1)):
                    raise StorageError(GUESS_EVERY_IMAGE)
                for position, image_id in enumerate(t.shown_order, start=1):
                    s.add(Guess(trial_id=t.id, rater_pk=rater_pk, image_id=image_id, position=position,
                                guess=str(guesses[position]), guessed_at=now))
                s.flush()
                return RecordResult("stored", len(guesses))
        except IntegrityError:
            if self.trial_guesses(trial_id, rater_pk):
                return RecordResult("duplicate", 0)  # a concurrent submit of the same guesses won
            raise StorageError("these guesses could not be stored; nothing was written") from None

    def trial_guesses(self, trial_id: int, rater_pk: int) -> dict[int, str]:
        """position → stored guess of one of this rater's trials (empty: none yet)."""
        with self._read() as s:
            t = self._owned(s, trial_id, rater_pk)
            return {g.position: g.guess for g in s.scalars(select(Guess).where(Guess.trial_id == t.id))}

    def guesses_frame(self, study_key: str | None = None) -> pd.DataFrame:
        """The guesses (``tidy.GUESS_COLUMNS``), one row per image guessed, unblinded: ``truth`` is the image's
        arm (its model, or ``real``). ``study_key`` as in ``ratings_frame``."""
        q = (
            select(Study.study_id, Study.version, Rater.public_id, Trial.id, Trial.item_key, Guess.image_id,
                   Image.model, Image.source, Guess.position, Guess.guess, Trial.practice, Guess.guessed_at)
            .join(Trial, Trial.id == Guess.trial_id)
            .join(Rater, Rater.id == Guess.rater_pk)
            .join(Image, Image.id == Guess.image_id)
            .outerjoin(Study, Study.id == Trial.study_pk)
            .order_by(Guess.id)
        )
        with self._read() as s:
            rows = s.execute(of_study(q, study_key)).all()
        records = [
            {"study": f"{sid}@v{ver}" if sid is not None else LIVE_STUDY, "rater_id": pub, "trial_id": tid,
             "item_id": item, "image_id": iid, "model": model, "source": source,
             "truth": "real" if source == "real" else model, "position": pos, "guess": guess,
             "practice": bool(practice), "guessed_at": aware(at)}
            for sid, ver, pub, tid, item, iid, model, source, pos, guess, practice, at in rows
        ]
        return pd.DataFrame(records, columns=list(GUESS_COLUMNS)).astype(dict(GUESS_DTYPES))
