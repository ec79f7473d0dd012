"""The storage package: the only code that opens database connections (``Storage``), the schema it migrates to
(:mod:`.schema`) and the plain records it hands out (:mod:`.records`). Every name the app imported from the
former ``p2p_app/storage.py`` is importable from here."""

from ..tidy import TIDY_COLUMNS
from .engine import (
    BUSY_TIMEOUT_MS,
    READ_ONLY_DATA,
    WRITE_RETRIES,
    Database,
    check_writable,
    unreachable,
)
from .facade import Storage
from .frames import marks_frame, tidy_frame
from .raters import token_hash
from .records import (
    AccessDenied,
    Answer,
    HistoryEntry,
    ImageInfo,
    MarkPoint,
    MissingDatabase,
    PanelModel,
    RaterInfo,
    RecordResult,
    StorageError,
    StudyRecord,
    TrialInfo,
)
from .schema import (
    LIVE_STUDY,
    Base,
    Image,
    Mark,
    Rater,
    Rating,
    RatingHistory,
    Study,
    StudySlot,
    Trial,
    utcnow,
)
from .trials import NOT_YOURS, check_owner

__all__ = [
    "BUSY_TIMEOUT_MS",
    "LIVE_STUDY",
    "NOT_YOURS",
    "READ_ONLY_DATA",
    "TIDY_COLUMNS",
    "WRITE_RETRIES",
    "AccessDenied",
    "Answer",
    "Base",
    "Database",
    "HistoryEntry",
    "Image",
    "ImageInfo",
    "Mark",
    "MarkPoint",
    "MissingDatabase",
    "PanelModel",
    "RaterInfo",
    "Rater",
    "Rating",
    "RatingHistory",
    "RecordResult",
    "Storage",
    "StorageError",
    "Study",
    "StudyRecord",
    "StudySlot",
    "Trial",
    "TrialInfo",
    "check_owner",
    "check_writable",
    "marks_frame",
    "tidy_frame",
    "token_hash",
    "unreachable",
    "utcnow",
]
