"""Who is signed in, and which item the page shows: the rater's server-side session (:class:`RaterSession`), the
blinded item a page shows (:class:`ShownTrial`), and the checks that a submit comes from the session and the page
it claims (signed in, for this study, naming the item shown now). Nothing here reads storage or imports Gradio.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .blinding import Panel
from .forms import UserError
from .storage import LIVE_STUDY, AccessDenied, RaterInfo
from .study import Question, StudyDefinition, study_key

log = logging.getLogger(__name__)

# Also what a page gets whose server-side session is gone: Gradio drops session state an hour after the browser
# disconnects (a laptop asleep), and a server restart drops all of it.
SESSION_NOT_HERE = (
    "This server does not hold your session: it was restarted, or your connection moved to another app server. "
    "Nothing on this page was saved. Sign in again with your resume code (or reload your invite link): everything "
    "you submitted before is saved, and you continue at your first unanswered item."
)
NOT_SIGNED_IN = (
    "You are not signed in (or your session ended after a long pause or a server restart). Sign in, or reload "
    "your invite link, to go on; everything you submitted is saved."
)


# What a visitor is told who may not sign in to a study by typing a name: what to do next.
INVITE_ONLY = (
    "This study is by invitation only. If you were invited, open the personal invite link the study coordinator "
    "sent you (it signs you in and brings you back to where you stopped); if you have lost it, ask the coordinator "
    "for it. Anyone can try the models in the Live arena tab."
)
NOT_A_RATER = "{name!r} is not a rater of this study. " + INVITE_ONLY
BAD_INVITE = (
    "This invite link (or resume code) is not valid for this study. Check that the whole link was copied, or ask "
    "the study coordinator for a new one; anyone can try the models in the Live arena tab."
)


ANY_TRIAL = object()  # ``shown`` not given: a caller without a page (CLI, simulation, tests of the core)


@dataclass(frozen=True)
class RaterSession:
    """Who is signed in (kept server-side by the UI, never taken from the page)."""

    rater_pk: int
    public_id: str
    name: str
    study_key: str = LIVE_STUDY
    new_code: str = ""  # the personal resume code, only on the session a sign-in just created (show it once)

    @classmethod
    def of(cls, rater: RaterInfo, new_code: str = "") -> "RaterSession":
        return cls(rater.pk, rater.public_id, rater.name, rater.study_key, new_code)

    def without_code(self) -> "RaterSession":
        """What the UI keeps in server-side state: the session without the clear resume code."""
        return RaterSession(self.rater_pk, self.public_id, self.name, self.study_key)


class StalePage(UserError):
    """A submit names a trial other than the one this session is showing now (a replay, or an old page)."""


STALE_PAGE = (
    "This page no longer shows the item you answered (it was already submitted, or a newer one is on screen); "
    "nothing was saved. Your current item is shown."
)


def check_shown(trial_id: int | None, shown: object) -> None:
    """The page names the trial it shows (a hidden field set when the trial was shown); it must be the trial this
    session shows now. A replayed or stale submit names an earlier one and is refused, with nothing written."""
    try:
        same = trial_id is not None and shown is not None and int(str(shown)) == int(trial_id)
    except ValueError:
        same = False
    if not same:
        raise StalePage(STALE_PAGE)


@dataclass(frozen=True)
class ShownTrial:
    trial_id: int
    prompt: str
    modality: str
    panels: tuple[Panel, ...]
    questions: tuple[Question, ...]
    order_index: int = 0
    done: int = 0  # real (non-practice) items answered
    total: int = 0  # real (non-practice) items in the rater's sequence
    answers: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)  # position → stored answers (revisits)
    practice: bool = False  # a practice item: "Practice 1 of 2 — not counted"
    practice_done: int = 0  # practice items answered
    practice_total: int = 0  # practice items in the rater's sequence
    mark_artifacts: bool = False  # the study asks raters to mark points where an image looks wrong
    marks: Mapping[int, Sequence[tuple[float, float]]] = field(default_factory=dict)  # position → stored marks
    phase: str = ""  # naive → disclosed design: "naive" (phase 1) or "disclosed" (phase 2); "" otherwise
    disclose: bool = False  # the first phase-2 screen: the disclosure comes before it

    @property
    def practice_number(self) -> int:
        """1-based number of this practice item among the practice items (0 for a real item)."""
        return self.order_index + 1 if self.practice else 0


@dataclass(frozen=True)
class SubmitResult:
    status: str  # "stored" | "duplicate" | "changed"
    reveal: tuple[tuple[str, str], ...] = ()  # ("Image A", "model name") when revealing is allowed
    message: str = ""


def check_session_here(session: RaterSession | None, shown: object) -> None:
    """A submit naming a trial the page shows, with no session on this server: the page was made by another
    process (the server restarted, or a proxy in front of several servers is not sticky). Says so to the person
    (:data:`SESSION_NOT_HERE`) and in the log, instead of a bare "not signed in"."""
    if session is not None or shown is ANY_TRIAL or not str(shown or "").strip():
        return
    log.warning(
        "a submit for trial %s arrived without a session on this server: the server was restarted since the page "
        "was loaded, or the reverse proxy in front of several app servers is not sticky (docs/deploy.md); the "
        "rater was asked to sign in again", str(shown)[:20],
    )
    raise UserError(SESSION_NOT_HERE)


def check_study_session(study: StudyDefinition, session: RaterSession | None) -> None:
    """A study action needs a session signed in to that study."""
    if session is None:
        raise UserError(NOT_SIGNED_IN)
    if session.study_key != study_key(study):
        raise AccessDenied("This sign-in is not for this study.")


def check_live_session(session: RaterSession | None) -> None:
    """An arena action needs a session signed in to the live arena."""
    if session is None:
        raise UserError(NOT_SIGNED_IN)
    if session.study_key != LIVE_STUDY:
        raise AccessDenied("This sign-in is for a study, not the live arena.")
