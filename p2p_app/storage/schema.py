"""The database schema: SQLAlchemy 2.0 typed models (what ``p2p_app/migrations`` revisions migrate to).

No ORM object leaves the storage package: :mod:`p2p_app.storage.records` turns rows into plain values."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

LIVE_STUDY = "live"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def aware(ts: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive: they were stored as UTC."""
    if ts is not None and ts.tzinfo is None:
        return ts.replace(tzinfo=timezone.utc)
    return ts


class Base(DeclarativeBase):
    pass


class Rater(Base):
    """A rater. ``name`` is for display only: two people may type the same name and stay two raters.
    ``token`` holds the sha256 (hex) of the personal invite / resume token, never the token itself."""

    __tablename__ = "raters"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    study_key: Mapped[str] = mapped_column(String(200), default=LIVE_STUDY)
    token: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    slot: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Image(Base):
    __tablename__ = "images"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # opaque, random
    model: Mapped[str] = mapped_column(String(200))  # "real" for real images
    source: Mapped[str] = mapped_column(String(16))  # "generated" | "real"
    prompt: Mapped[str] = mapped_column(Text)
    prompt_id: Mapped[str] = mapped_column(String(200), default="")
    modality: Mapped[str] = mapped_column(String(32))
    seed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    cache_key: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    sha256: Mapped[str] = mapped_column(String(64))
    file_path: Mapped[str] = mapped_column(Text)
    original_path: Mapped[str] = mapped_column(Text, default="")
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    gen_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Study(Base):
    __tablename__ = "studies"
    __table_args__ = (UniqueConstraint("study_id", "version", name="uq_study_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(Text, default="")
    design_hash: Mapped[str] = mapped_column(String(64))
    images_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    frozen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    @property
    def key(self) -> str:
        return f"{self.study_id}@v{self.version}"


class StudySlot(Base):
    """Which stored image fills a study's image slot (e.g. "p003/colon-msdm-tiny/s1")."""

    __tablename__ = "study_slots"

    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"), primary_key=True)
    slot_key: Mapped[str] = mapped_column(String(400), primary_key=True)
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id"))


class Trial(Base):
    """One screen shown to one rater: the images in the order shown (stored before showing)."""

    __tablename__ = "trials"
    __table_args__ = (UniqueConstraint("rater_pk", "study_pk", "order_index", name="uq_trial_sequence"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    rater_pk: Mapped[int] = mapped_column(ForeignKey("raters.id"))
    study_pk: Mapped[int | None] = mapped_column(ForeignKey("studies.id"), nullable=True)
    item_key: Mapped[str] = mapped_column(String(400), default="")
    order_index: Mapped[int] = mapped_column(Integer, default=0)
    is_repeat: Mapped[bool] = mapped_column(Boolean, default=False)
    prompt: Mapped[str] = mapped_column(Text)
    prompt_id: Mapped[str] = mapped_column(String(200), default="")
    modality: Mapped[str] = mapped_column(String(32))
    shown_order: Mapped[list] = mapped_column(JSON)  # list of image ids, position 1 first
    shown_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    practice: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # never analysed


class Rating(Base):
    __tablename__ = "ratings"
    __table_args__ = (
        UniqueConstraint("rater_pk", "image_id", "question", "attempt", name="uq_rater_image_question"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id"))
    rater_pk: Mapped[int] = mapped_column(ForeignKey("raters.id"))
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id"))
    question: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer, default=0)  # 1 for a planned repeat
    value: Mapped[int | None] = mapped_column(Integer, nullable=True)
    choices: Mapped[str] = mapped_column(Text, default="")
    cant_judge: Mapped[bool] = mapped_column(Boolean, default=False)
    comment: Mapped[str] = mapped_column(Text, default="")
    position: Mapped[int] = mapped_column(Integer)
    answered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    seconds: Mapped[float] = mapped_column(Float)
    # time the page was visible and not idle (measured by the page, clamped to ``seconds``); None = unknown
    active_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)


class Mark(Base):
    """A point a rater marked on an image as looking wrong (studies with ``mark_artifacts``): image-normalised
    coordinates, x to the right, y down, both in [0, 1]. A changed answer replaces a trial's marks: the old ones
    keep their rows with ``replaced_at`` set (history), the current ones have it empty."""

    __tablename__ = "marks"

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id"), index=True)
    rater_pk: Mapped[int] = mapped_column(ForeignKey("raters.id"))
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id"))
    position: Mapped[int] = mapped_column(Integer)
    x: Mapped[float] = mapped_column(Float)
    y: Mapped[float] = mapped_column(Float)
    # how sure the rater is that it is an artifact, 1-5 (studies with ``mark_confidence``); NULL = not asked
    confidence: Mapped[int | None] = mapped_column(Integer, nullable=True)
    marked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    replaced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class RatingHistory(Base):
    """Earlier versions of a changed answer: answers are never silently overwritten."""

    __tablename__ = "rating_history"

    id: Mapped[int] = mapped_column(primary_key=True)
    rating_id: Mapped[int] = mapped_column(ForeignKey("ratings.id"))
    value: Mapped[int | None] = mapped_column(Integer, nullable=True)
    choices: Mapped[str] = mapped_column(Text, default="")
    cant_judge: Mapped[bool] = mapped_column(Boolean, default=False)
    comment: Mapped[str] = mapped_column(Text, default="")
    answered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    replaced_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)



class Guess(Base):
    """A rater's answer to "Which model do you think made this image?" (studies with ``blinding_index``), asked
    after the trial's ratings are stored: ``guess`` is an option (a model name, ``real``) or ``dont_know``.
    One per trial and image, never changed (a guess made after a reveal would not measure the blinding)."""

    __tablename__ = "guesses"
    __table_args__ = (UniqueConstraint("trial_id", "image_id", name="uq_guess_trial_image"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id"), index=True)
    rater_pk: Mapped[int] = mapped_column(ForeignKey("raters.id"))
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id"))
    position: Mapped[int] = mapped_column(Integer)
    guess: Mapped[str] = mapped_column(String(200), default="")
    guessed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
