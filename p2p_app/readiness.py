"""How far the background start-up has got: model loading and each study's preparation (thread-safe)."""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class StudyProgress:
    """Where one study's start-up preparation stands."""

    state: str  # "waiting" | "preparing" | "ready" | "failed" | "not generated"
    done: int = 0
    total: int = 0
    message: str = ""

    def describe(self, title: str) -> str:
        """What a rater is told while the study cannot be opened yet."""
        if self.state == "preparing":
            return f"The study {title!r} is being prepared: {self.done} / {self.total} images. Try again in a minute."
        if self.state == "waiting":
            return f"The study {title!r} is being prepared (the models are loading). Try again in a minute."
        if self.state == "failed":
            return f"The study {title!r} could not be prepared ({self.message}); tell the study team."
        return f"The study {title!r} is not ready yet (its images have not been generated)."


class Readiness:
    """Thread-safe progress of the background start-up: model loading and each study's preparation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._studies: dict[str, StudyProgress] = {}
        self.models_error: str = ""

    def set(self, key: str, progress: StudyProgress) -> None:
        with self._lock:
            self._studies[key] = progress

    def get(self, key: str) -> StudyProgress | None:
        with self._lock:
            return self._studies.get(key)

    def busy(self) -> bool:
        with self._lock:
            return any(p.state in ("waiting", "preparing") for p in self._studies.values())

