"""Trials and their answers: a trial stored before it is shown, a rater's answers (and marked points) stored all
together or not at all, changed answers kept as history, and the reveal of which model made which panel.

Ownership lives here: a trial is read or written for a rater only through :func:`check_owner`
(:meth:`TrialStore.own_trial` for callers that need the trial itself)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Mapping, Sequence, TypeVar

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..tidy import MARK_CONFIDENCES
from .engine import Database, retried
from .records import (
    AccessDenied,
    Answer,
    HistoryEntry,
    MarkPoint,
    PanelModel,
    RecordResult,
    StorageError,
    TrialInfo,
    trial_info,
)
from .schema import Image, Mark, Rating, RatingHistory, Trial, aware, utcnow

NOT_YOURS = "This trial is not yours."
OwnedTrial = TypeVar("OwnedTrial", Trial, TrialInfo)


def _stored_answer(a: Answer) -> dict[str, Any]:
    """An answer as a rating row stores it: the fields a changed answer replaces and RatingHistory keeps."""
    return {"value": a.value, "choices": "|".join(a.choices), "cant_judge": a.cant_judge, "comment": a.comment}


def check_owner(trial: OwnedTrial | None, rater_pk: int) -> OwnedTrial:
    """``trial`` (a row or a record) when it exists and belongs to ``rater_pk``; :class:`AccessDenied` otherwise,
    the same for a trial that does not exist, so a refusal tells nothing about other raters' trials. The one
    ownership rule: every read or write of a rater's trial goes through it."""
    if trial is None or trial.rater_pk != rater_pk:
        raise AccessDenied(NOT_YOURS)
    return trial


def check_submission(answers: Sequence[Answer], active_seconds: float | None, marks: Sequence[MarkPoint]) -> None:
    """A StorageError for a submission that cannot be stored whatever the trial: no answers, an active time that
    is not a finite number >= 0, a marked point outside the image."""
    if not answers:
        raise StorageError("no answers to store")
    if active_seconds is not None and (
        isinstance(active_seconds, bool) or not isinstance(active_seconds, (int, float))
        or not math.isfinite(active_seconds) or active_seconds < 0
    ):
        raise StorageError(f"active seconds must be a finite number >= 0, not {active_seconds!r}")
    for m in marks:
        if not (0.0 <= m.x <= 1.0 and 0.0 <= m.y <= 1.0):
            raise StorageError(f"a marked point must lie in [0, 1] x [0, 1], not ({m.x!r}, {m.y!r})")
        if m.confidence is not None and (isinstance(m.confidence, bool) or m.confidence not in MARK_CONFIDENCES):
            raise StorageError(f"a mark's confidence must be one of 1-5, not {m.confidence!r}")


def panel_positions(t: Trial, named: Sequence[Answer | MarkPoint] = ()) -> dict[str, int]:
    """image id → its position on the trial's screen (1 first); AccessDenied when anything in ``named`` names an
    image that is not part of the trial."""
    positions = {image_id: i + 1 for i, image_id in enumerate(t.shown_order)}
    for a in named:
        if a.image_id not in positions:
            raise AccessDenied("An answer names an image that is not part of this trial.")
    return positions


class TrialStore(Database):
    """Reads and writes of trials, their answers and their marks."""

    @retried
    def create_trial(
        self,
        *,
        rater_pk: int,
        prompt: str,
        modality: str,
        shown_order: Sequence[str],
        study_pk: int | None = None,
        item_key: str = "",
        order_index: int | None = None,
        is_repeat: bool = False,
        prompt_id: str = "",
        practice: bool = False,
    ) -> TrialInfo:
        """Store a trial with the exact order its images will be shown in, before they are shown.

        For a study trial that already exists at this ``order_index`` the stored one is returned (resume).
        """
        if not shown_order:
            raise StorageError("a trial needs at least one image")
        with self._tx() as s:
            if study_pk is not None and order_index is not None:
                existing = s.scalars(
                    select(Trial).where(
                        Trial.rater_pk == rater_pk, Trial.study_pk == study_pk, Trial.order_index == order_index
                    )
                ).first()
                if existing is not None:
                    return trial_info(existing)
            if order_index is None:
                order_index = s.scalar(
                    select(func.count()).select_from(Trial).where(Trial.rater_pk == rater_pk, Trial.study_pk.is_(None))
                ) or 0
            missing = set(shown_order) - set(s.scalars(select(Image.id).where(Image.id.in_(list(shown_order)))))
            if missing:
                raise StorageError(f"unknown image ids in trial: {sorted(missing)}")
            t = Trial(
                rater_pk=rater_pk,
                study_pk=study_pk,
                item_key=item_key,
                order_index=order_index,
                is_repeat=is_repeat,
                prompt=prompt,
                prompt_id=prompt_id,
                modality=modality,
                shown_order=list(shown_order),
                practice=practice,
            )
            s.add(t)
            s.flush()
            if not item_key:
                t.item_key = f"live-{t.id}"
            return trial_info(t)

    def trial(self, trial_id: int) -> TrialInfo | None:
        with self._read() as s:
            t = s.get(Trial, trial_id)
            return trial_info(t) if t else None

    def trials_for(self, rater_pk: int, study_pk: int | None) -> list[TrialInfo]:
        with self._read() as s:
            q = select(Trial).where(Trial.rater_pk == rater_pk).order_by(Trial.order_index)
            q = q.where(Trial.study_pk.is_(None)) if study_pk is None else q.where(Trial.study_pk == study_pk)
            return [trial_info(t) for t in s.scalars(q)]

    def own_trial(self, trial_id: int, rater_pk: int) -> TrialInfo:
        """The trial ``trial_id`` if it belongs to ``rater_pk``; :class:`AccessDenied` otherwise (also for a trial
        that does not exist). What a caller checks ownership with before acting on a rater's trial; the reads
        and writes below check it again themselves."""
        return check_owner(self.trial(trial_id), rater_pk)

    @staticmethod
    def _owned(s: Session, trial_id: int, rater_pk: int, *, lock: bool = False) -> Trial:
        """The trial row, in session ``s``, if it belongs to ``rater_pk`` (``lock``: locked for update)."""
        return check_owner(s.get(Trial, trial_id, with_for_update=True if lock else None), rater_pk)

    @retried
    def record_ratings(
        self,
        trial_id: int,
        rater_pk: int,
        answers: Sequence[Answer],
        allow_changes: bool = False,
        active_seconds: float | None = None,
        marks: Sequence[MarkPoint] = (),
    ) -> RecordResult:
        """Store all of a trial's answers (and its marked points) in one transaction, or none.

        The trial must belong to ``rater_pk`` and every answer and mark must name an image of that trial.
        A second submission of a submitted trial is a no-op (``status="duplicate"``, no mark stored) unless
        ``allow_changes``; then changed answers are updated and their old versions kept in history, and marks
        that differ replace the trial's current marks (the old rows stay, with ``replaced_at``).
        ``active_seconds``: time the page was visible and not idle (None = unknown); stored clamped to the wall
        seconds (answered − shown) computed here; a change keeps the first submit's times.
        """
        check_submission(answers, active_seconds, marks)
        now = utcnow()
        try:
            with self._tx() as s:
                t = self._owned(s, trial_id, rater_pk, lock=True)
                positions = panel_positions(t, (*answers, *marks))
                if t.submitted_at is not None:
                    if not allow_changes:
                        return RecordResult("duplicate", 0)
                    result = self._change_answers(s, t, answers, now)
                    if self._replace_marks(s, t, marks, positions, now) and result.status == "duplicate":
                        result = RecordResult("changed", 0)
                    return result
                self._add_ratings(s, t, answers, positions, now, active_seconds)
                self._replace_marks(s, t, marks, positions, now)
                t.submitted_at = now
                s.flush()
                return RecordResult("stored", len(answers))
        except IntegrityError as exc:
            again = self.trial(trial_id)
            if again is not None and again.submitted_at is not None and not allow_changes:
                return RecordResult("duplicate", 0)  # a concurrent submit of the same trial won
            raise StorageError(f"these answers could not be stored; nothing was written ({exc.orig})") from None

    @staticmethod
    def _add_ratings(
        s: Session, t: Trial, answers: Sequence[Answer], positions: Mapping[str, int], now: datetime,
        active_seconds: float | None,
    ) -> None:
        """A first submit's answers as rating rows, timed from the trial's showing to ``now``."""
        # The n-th showing of one image to one rater (a planned repeat, or a real image that
        # appears beside several seeds) is attempt n-1: the unique key stays one answer per
        # rater × image × question × showing, and a concurrent double submit still collides.
        prior = {
            (image_id, question): n
            for image_id, question, n in s.execute(
                select(Rating.image_id, Rating.question, func.count())
                .where(Rating.rater_pk == t.rater_pk, Rating.image_id.in_(list(positions)))
                .group_by(Rating.image_id, Rating.question)
            )
        }
        shown_at = aware(t.shown_at)
        seconds = max(0.0, (now - shown_at).total_seconds())
        active = None if active_seconds is None else min(float(active_seconds), seconds)
        for a in answers:
            s.add(
                Rating(
                    trial_id=t.id,
                    rater_pk=t.rater_pk,
                    image_id=a.image_id,
                    question=a.question,
                    attempt=prior.get((a.image_id, a.question), 0),
                    **_stored_answer(a),
                    position=positions[a.image_id],
                    answered_at=now,
                    seconds=seconds,
                    active_seconds=active,
                )
            )

    @staticmethod
    def _replace_marks(
        s: Session, t: Trial, marks: Sequence[MarkPoint], positions: Mapping[str, int], now: datetime
    ) -> bool:
        """Make ``marks`` the trial's current marks; the current ones, when different, are kept as history
        (``replaced_at``). True when anything changed."""
        current = list(s.scalars(select(Mark).where(Mark.trial_id == t.id, Mark.replaced_at.is_(None))
                                 .order_by(Mark.id)))
        if [(m.image_id, m.x, m.y, m.confidence) for m in current] == [
            (m.image_id, float(m.x), float(m.y), m.confidence) for m in marks
        ]:
            return False
        for m in current:
            m.replaced_at = now
        for m in marks:
            s.add(Mark(trial_id=t.id, rater_pk=t.rater_pk, image_id=m.image_id, position=positions[m.image_id],
                       x=float(m.x), y=float(m.y), confidence=m.confidence, marked_at=now))
        return True

    def trial_marks(self, trial_id: int, rater_pk: int) -> dict[int, list[tuple]]:
        """A trial's current marks as the page sends them: position → [(x, y), …], or (x, y, confidence) for a
        mark with a confidence (only the trial's rater)."""
        with self._read() as s:
            self._owned(s, trial_id, rater_pk)
            out: dict[int, list[tuple]] = {}
            for m in s.scalars(select(Mark).where(Mark.trial_id == trial_id, Mark.replaced_at.is_(None))
                               .order_by(Mark.id)):
                out.setdefault(m.position, []).append((m.x, m.y) if m.confidence is None else (m.x, m.y, m.confidence))
            return out

    @staticmethod
    def _change_answers(s: Session, t: Trial, answers: Sequence[Answer], now: datetime) -> RecordResult:
        existing = {(r.image_id, r.question): r for r in s.scalars(select(Rating).where(Rating.trial_id == t.id))}
        changed = 0
        for a in answers:
            r = existing.get((a.image_id, a.question))
            new = _stored_answer(a)
            if r is None:
                raise StorageError(f"question {a.question!r} was not part of the original answers")
            old = {name: getattr(r, name) for name in new}
            if old == new:
                continue
            s.add(RatingHistory(rating_id=r.id, **old, answered_at=aware(r.answered_at), replaced_at=now))
            for name, value in new.items():
                setattr(r, name, value)
            r.answered_at = now
            changed += 1
        return RecordResult("changed" if changed else "duplicate", changed)

    def rating_history(self, trial_id: int) -> list[HistoryEntry]:
        with self._read() as s:
            rows = s.execute(
                select(Rating.image_id, Rating.question, RatingHistory)
                .join(RatingHistory, RatingHistory.rating_id == Rating.id)
                .where(Rating.trial_id == trial_id)
                .order_by(RatingHistory.id)
            ).all()
            return [
                HistoryEntry(image_id, q, h.value, h.choices, h.cant_judge, h.comment, aware(h.answered_at),
                             aware(h.replaced_at))
                for image_id, q, h in rows
            ]

    def trial_answers(self, trial_id: int, rater_pk: int) -> dict[int, dict[str, Any]]:
        """The stored answers of one of this rater's trials, as a form: position → {question: value, …}."""
        with self._read() as s:
            t = self._owned(s, trial_id, rater_pk)
            positions = panel_positions(t)
            form: dict[int, dict[str, Any]] = {}
            for r in s.scalars(select(Rating).where(Rating.trial_id == trial_id)):
                entry = form.setdefault(positions[r.image_id], {})
                entry[r.question] = [c for c in r.choices.split("|") if c] if r.choices else r.value
                entry["cant_judge"] = entry.get("cant_judge", False) or r.cant_judge
                entry["comment"] = r.comment
            return form

    def trial_models(self, trial_id: int, rater_pk: int) -> list[PanelModel]:
        """(position, model, source) for each panel — only for the trial's own rater, only once submitted."""
        with self._read() as s:
            t = self._owned(s, trial_id, rater_pk)
            if t.submitted_at is None:
                raise AccessDenied("Models are revealed only after this trial's ratings are stored.")
            images = {i.id: i for i in s.scalars(select(Image).where(Image.id.in_(list(t.shown_order))))}
            return [PanelModel(p + 1, images[i].model, images[i].source) for p, i in enumerate(t.shown_order)]
