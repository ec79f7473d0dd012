"""Storage: the only module that opens database connections. Every write goes through it.

SQLAlchemy 2.0 typed models on SQLite by default (any SQLAlchemy URL works). On SQLite the connection is
set to WAL mode with a busy timeout and foreign keys on. Each public write is one transaction: a trial's
ratings are stored all together or not at all, and an image row is written only after its file is safely
on disk.

:class:`Storage` is the one object the app holds; its reads and writes live by topic in the stores it is made of
(``engine``: opening, sessions, retries; ``raters``; ``images``; ``studies``; ``trials``: answers, marks and
trial ownership; ``frames``: the tidy read-outs).
"""

from __future__ import annotations

from .frames import FrameStore
from .guesses import GuessStore
from .images import ImageStore
from .raters import RaterStore
from .studies import StudyStore
from .trials import TrialStore


class Storage(RaterStore, ImageStore, StudyStore, GuessStore, FrameStore):
    """Owns the engine and the image folder; exposes intent-named reads and writes."""
