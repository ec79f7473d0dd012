"""Plain values handed to the rest of the app (no ORM objects leave the storage package), the rows → values
conversions, and the storage errors."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from .schema import aware

if TYPE_CHECKING:
    from .schema import Image, Rater, Study, Trial


@dataclass(frozen=True)
class RaterInfo:
    pk: int
    public_id: str
    name: str
    study_key: str
    slot: int | None
    token: str | None  # the clear token only in what add_rater(with_token=True) returns; else its sha256 or None

    @property
    def invited(self) -> bool:
        return bool(self.token)


@dataclass(frozen=True)
class ImageInfo:
    id: str
    model: str
    source: str
    prompt: str
    prompt_id: str
    modality: str
    seed: int | None
    file_path: str
    sha256: str
    width: int
    height: int


@dataclass(frozen=True)
class TrialInfo:
    id: int
    rater_pk: int
    study_pk: int | None
    item_key: str
    order_index: int
    is_repeat: bool
    prompt: str
    prompt_id: str
    modality: str
    shown_order: tuple[str, ...]
    shown_at: datetime
    submitted_at: datetime | None
    practice: bool = False


@dataclass(frozen=True)
class Answer:
    """One answer to one question about one image of a trial."""

    image_id: str
    question: str
    value: int | None = None
    choices: tuple[str, ...] = ()
    cant_judge: bool = False
    comment: str = ""


@dataclass(frozen=True)
class MarkPoint:
    """One marked point on one image of a trial (image-normalised, x right, y down, in [0, 1]); ``confidence``:
    how sure the rater is that it is an artifact, 1-5 (studies with ``mark_confidence``), else None."""

    image_id: str
    x: float
    y: float
    confidence: int | None = None


@dataclass(frozen=True)
class StudyRecord:
    """A study as stored: its design hash, and once frozen the hash over its images and when it was frozen."""

    pk: int
    study_id: str
    version: int
    title: str
    design_hash: str
    images_hash: str | None
    frozen_at: datetime | None

    @property
    def key(self) -> str:
        return f"{self.study_id}@v{self.version}"

    @property
    def frozen(self) -> bool:
        return self.frozen_at is not None


@dataclass(frozen=True)
class HistoryEntry:
    """An earlier version of a changed answer (answers are never silently overwritten)."""

    image_id: str
    question: str
    value: int | None
    choices: str
    cant_judge: bool
    comment: str
    answered_at: datetime | None
    replaced_at: datetime | None


@dataclass(frozen=True)
class PanelModel:
    """Which model made the image at one position of a trial (what a reveal shows)."""

    position: int
    model: str
    source: str


@dataclass(frozen=True)
class RecordResult:
    status: str  # "stored" | "duplicate" | "changed"
    n_rows: int


class AccessDenied(PermissionError):
    """The caller may not act on this trial (it belongs to another rater, or does not exist)."""


class MissingDatabase(FileNotFoundError):
    """A read-only command was pointed at a folder with no database: nothing was created."""

    def __init__(self, path: str):
        self.path = path
        folder = Path(path).parent
        super().__init__(
            f"no database in {folder} (looked for {Path(path).name}): nothing has been stored there yet. "
            "Give the folder your app uses with --data-dir (or P2P_DATA_DIR), or the database with --database-url."
        )


class StorageError(ValueError):
    """A write was refused; nothing was written."""


def rater_info(r: Rater) -> RaterInfo:
    return RaterInfo(r.id, r.public_id, r.name, r.study_key, r.slot, r.token)


def image_info(i: Image, root: Path) -> ImageInfo:
    """The row as a record; its stored path (relative to the data folder since revision 0004) made absolute."""
    return ImageInfo(
        i.id, i.model, i.source, i.prompt, i.prompt_id, i.modality, i.seed, str(root / i.file_path), i.sha256,
        i.width, i.height,
    )


def trial_info(t: Trial) -> TrialInfo:
    return TrialInfo(
        t.id,
        t.rater_pk,
        t.study_pk,
        t.item_key,
        t.order_index,
        t.is_repeat,
        t.prompt,
        t.prompt_id,
        t.modality,
        tuple(t.shown_order),
        aware(t.shown_at),
        aware(t.submitted_at),
        bool(t.practice),
    )


def study_record(st: Study) -> StudyRecord:
    return StudyRecord(st.id, st.study_id, st.version, st.title, st.design_hash, st.images_hash, aware(st.frozen_at))
