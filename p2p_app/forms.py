"""Form checks: what a rater submits (answers, scales, ranks, comments, "can't judge", marked points, active time,
a typed name) and what a prompt may take, checked in one place. Pure functions: nothing here reads or writes
storage; every refusal is a :class:`UserError` with the message shown to the person, and nothing is stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from generators.base import too_many_tokens

from .analysis.blinding_index import DONT_KNOW
from .blinding import panel_label
from .storage import Answer, MarkPoint, TrialInfo
from .study import UNUSUAL_KEY, Question
from .text import clean_comment, display_name
from .tidy import CHOSEN_REAL, MARK_CONFIDENCES, RANK_PREFIX


class UserError(ValueError):
    """Something the person can fix; the message is shown to them as is. Nothing was written."""


# The reveal rule: a reveal needs at least one real score (a scale answer on a panel not marked "can't judge").
NO_SCORE_NO_REVEAL = (
    "Every image was marked \"can't judge\", so the models are not revealed: a reveal needs at least one score."
)


def has_real_score(form: Mapping[int, Mapping[str, Any]]) -> bool:
    """True when a stored trial form (position → answers) holds a score on some panel not marked "can't judge"."""

    def is_score(value: Any) -> bool:  # a number (not a bool, not NaN); multi-select answers are lists
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value

    return any(
        not answers.get("cant_judge")
        and any(is_score(v) for k, v in answers.items() if k not in ("cant_judge", "comment"))
        for answers in form.values()
    )


def check_name(name: object) -> str:
    """A typed name, cleaned for display (NFKC, no invisible characters), or a UserError."""
    clean = display_name(name)
    if not clean:
        raise UserError("Type your name to sign in.")
    if len(clean) > 100:
        raise UserError("That name is too long (at most 100 characters).")
    return clean


@dataclass(frozen=True)
class PromptBudget:
    """How much of the strictest text encoder's budget a prompt takes (the arena's live counter).

    ``used``/``limit`` are tokens (special tokens excluded) of the configured model of the modality with the least
    room left, ``encoder`` names its text encoder; both are None with a ``note`` when tokens cannot be counted
    (presenter mode, model stack missing). ``chars``/``max_chars`` are the character count and limit."""

    used: int | None
    limit: int | None
    encoder: str
    chars: int
    max_chars: int
    words: int = 0
    note: str = ""

    @property
    def over(self) -> bool:
        return self.chars > self.max_chars or (self.used is not None and self.used > (self.limit or 0))

    def problem(self) -> str:
        """Why the prompt is refused (with how much to cut), or "" when it fits."""
        if self.chars > self.max_chars:
            cut = self.chars - self.max_chars
            return (f"The prompt is {self.chars} characters long; at most {self.max_chars} are allowed. "
                    f"Cut about {cut} character{'s' if cut != 1 else ''}.")
        if self.used is not None and self.limit is not None and self.used > self.limit:
            return too_many_tokens(self.words, self.used, self.limit, self.encoder)
        return ""

    def describe(self) -> str:
        """The counter's line: "23 / 75 tokens — CLIP text encoder", or a warning that says how much to cut."""
        problem = self.problem()
        if problem:
            return f"⚠️ **{problem}**"
        if self.used is None:
            return self.note
        left = (self.limit or 0) - self.used
        return f"{self.used} / {self.limit} tokens — {self.encoder} ({left} left)"


def build_answers(
    trial: TrialInfo,
    questions: Sequence[Question],
    answers: Mapping[int, Mapping[str, Any]],
    design: str = "single",
) -> list[Answer]:
    """Validate a form (position → answers) against the questions; map positions to the stored image ids.

    ``design = "forced_choice"``: ``answers[0]["chosen_real"]`` is the one panel picked as real (its position or
    its label, "Image B"), stored as ``chosen_real`` 1 on it and 0 on every other panel; the questions are
    asked per panel as usual. ``design = "ranking"``: every scale question is a full ranking instead of a
    score: ``answers[pos]["rank_<key>"]`` is the panel's rank (1 = best), a permutation of 1..n over the
    panels; the other questions are asked per panel. Text questions are the panel's ``comment``; the one stored as
    its own row is "anything unusual?" (``unusual``, the naive → disclosed design's phase 1): a row per image,
    even when empty, so that every image shown has its (possibly empty) text."""
    if design == "forced_choice":
        design_answers = _forced_choice_answers(trial, answers)
    elif design == "ranking":
        design_answers = _ranking_answers(trial, questions, answers)
        questions = [q for q in questions if q.kind != "scale"]
    else:
        design_answers = []
    out: list[Answer] = []
    missing: dict[str, list[str]] = {}  # image label -> labels of its unanswered required scales
    for position, image_id in enumerate(trial.shown_order, start=1):
        label = panel_label(position)
        given = answers.get(position) or {}
        raw_comment = given.get("comment")
        if raw_comment is not None and not isinstance(raw_comment, str):
            raise UserError(f"{label}: the comment must be text.")
        comment = clean_comment(raw_comment or "")
        if len(comment) > 2000:
            raise UserError(f"{label}: the comment is too long (at most 2000 characters).")
        cant_judge = given.get("cant_judge")
        if cant_judge is None:
            cant_judge = False
        if not isinstance(cant_judge, bool):  # a string "false" is truthy: only real booleans count
            raise UserError(f"{label}: \"can't judge\" must be ticked or not (true/false), not {cant_judge!r}.")
        for q in questions:
            raw = given.get(q.key)
            if q.kind == "text":
                if q.key == UNUSUAL_KEY:  # naive → disclosed, phase 1: one row per image, its text the comment
                    out.append(Answer(image_id, q.key, None, (), cant_judge, comment))
                continue
            if cant_judge:
                out.append(Answer(image_id, q.key, None, (), True, comment))
                continue
            if q.kind == "scale":
                value = _scale_value(raw, q)
                if value is None:
                    if q.required:
                        missing.setdefault(label, []).append(q.label)
                    continue
                out.append(Answer(image_id, q.key, value, (), False, comment))
            elif q.kind == "multi":
                chosen = tuple(raw or ())
                bad = [c for c in chosen if c not in q.options]
                if bad:
                    raise UserError(f"{label}: {', '.join(map(str, bad))} is not an option of {q.label!r}.")
                out.append(Answer(image_id, q.key, None, chosen, False, comment))
    if missing:
        n_required = sum(q.kind == "scale" and q.required for q in questions)
        parts = [
            f"{label} is not rated yet" if len(labels) == n_required else f"{label} still needs: {' / '.join(labels)}"
            for label, labels in missing.items()
        ]
        raise UserError("Rate every image before submitting (or tick \"can't judge\"). " + "; ".join(parts) + ".")
    return design_answers + out


MAX_MARKS_PER_PANEL = 20


def check_active_seconds(value: object) -> float | None:
    """The page's active time (seconds visible and not idle), or None when unknown (old clients, the API). The
    value comes from the page, so it is checked: a real number (not a bool or text), finite, >= 0; anything else
    is a UserError and nothing is stored. Storage clamps it to the server's wall seconds."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"The active time must be a number of seconds, not {value!r}; nothing was saved.")
    if not math.isfinite(value) or value < 0:
        raise UserError(f"The active time must be a finite number of seconds >= 0, not {value!r}; nothing was saved.")
    return float(value)


def check_marks(
    trial: TrialInfo, marks: Mapping[int, Sequence[Sequence[float]]] | None, asked: bool, confidence: bool = False
) -> list[MarkPoint]:
    """Marked points (position → [(x, y), …], image-normalised: x right, y down, each in [0, 1]) mapped to the
    trial's image ids. Refused with a UserError (nothing stored): marks in a study that does not ask for them,
    an unknown position, a point that is not two real numbers in [0, 1], more than ``MAX_MARKS_PER_PANEL`` on one
    panel. ``None`` or empty lists: no marks. With ``confidence`` (a study with ``mark_confidence``) every point is
    (x, y, c) with c a whole number 1-5 (:func:`check_mark_confidence`); without it a third value is refused."""
    if marks is None:
        return []
    if not isinstance(marks, Mapping):
        raise UserError("Marks must map an image position to a list of (x, y) points; nothing was saved.")
    n = len(trial.shown_order)
    given: dict[int, Sequence] = {}
    for position, points in marks.items():
        if isinstance(position, bool) or not isinstance(position, int) or not 1 <= position <= n:
            raise UserError(f"Marks name image position {position!r}, which is not on this screen (1-{n}); "
                            "nothing was saved.")
        if points is None:
            continue
        if isinstance(points, (str, bytes)) or not isinstance(points, Sequence):
            raise UserError(f"{panel_label(position)}: marks must be a list of (x, y) points; nothing was saved.")
        if len(points):
            given[position] = points
    if given and not asked:
        raise UserError("This study does not ask for marked points; nothing was saved.")
    out: list[MarkPoint] = []
    for position in sorted(given):
        points = given[position]
        label = panel_label(position)
        if len(points) > MAX_MARKS_PER_PANEL:
            raise UserError(f"{label}: at most {MAX_MARKS_PER_PANEL} marks per image, not {len(points)}; "
                            "nothing was saved.")
        for point in points:
            ok = isinstance(point, Sequence) and not isinstance(point, (str, bytes)) and len(point) in (2, 3) and all(
                not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v <= 1
                for v in point[:2]
            )
            if not ok:
                raise UserError(f"{label}: a mark must be two numbers x, y between 0 and 1, not {point!r}; "
                                "nothing was saved.")
            conf = check_mark_confidence(label, point, confidence)
            out.append(MarkPoint(trial.shown_order[position - 1], float(point[0]), float(point[1]), conf))
    return out


def check_mark_confidence(label: str, point: Sequence, asked: bool) -> int | None:
    """A mark's confidence (the third value of ``point``), 1-5, in a study that asks for it (``asked``), else
    None. Refused (UserError, nothing stored): a missing confidence when asked, one given when not asked, anything
    but a whole number 1-5 (0, 6, 2.5, text, NaN, true)."""
    if not asked:
        if len(point) == 3:
            raise UserError(f"{label}: this study does not ask for a mark's confidence; nothing was saved.")
        return None
    if len(point) != 3:
        raise UserError(f"{label}: choose a confidence for every mark (press 1-5 after placing it: 1 = barely "
                        "suspect, 5 = certain it is an artifact); nothing was saved.")
    c = point[2]
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or c != int(c) \
            or int(c) not in MARK_CONFIDENCES:
        raise UserError(f"{label}: a mark's confidence must be a whole number from 1 to 5, not {c!r}; "
                        "nothing was saved.")
    return int(c)


def _forced_choice_answers(trial: TrialInfo, answers: Mapping[int, Mapping[str, Any]]) -> list[Answer]:
    """``chosen_real`` 1 on the one picked panel, 0 on the others; a missing or unknown pick → UserError."""
    n = len(trial.shown_order)
    labels = {panel_label(p): p for p in range(1, n + 1)}
    raw = (answers.get(0) or {}).get(CHOSEN_REAL)
    if raw is None or raw == "" or raw == []:
        raise UserError("Pick the one image you believe is real before submitting.")
    if isinstance(raw, (list, tuple)):
        raise UserError("Pick exactly one image as the real one.")
    if isinstance(raw, str) and raw.strip() in labels:
        picked = labels[raw.strip()]
    elif isinstance(raw, int) and not isinstance(raw, bool) and 1 <= raw <= n:
        picked = raw
    else:
        raise UserError(f"{raw!r} is not one of the images on this screen ({', '.join(labels)}).")
    return [Answer(image_id, CHOSEN_REAL, int(p == picked)) for p, image_id in enumerate(trial.shown_order, start=1)]


def _ranking_answers(
    trial: TrialInfo, questions: Sequence[Question], answers: Mapping[int, Mapping[str, Any]]
) -> list[Answer]:
    """One ``rank_<key>`` answer per panel and scale question; each must rank every judged panel once (1..m, m =
    the panels without "can't judge"). A "can't judge" panel needs no rank: it is stored as can't judge (a rank
    left in its box is ignored, as a score is)."""
    n_panels = len(trial.shown_order)
    cant = {p for p in range(1, n_panels + 1) if (answers.get(p) or {}).get("cant_judge") is True}
    judged = [p for p in range(1, n_panels + 1) if p not in cant]
    n = len(judged)
    out: list[Answer] = []
    for q in questions:
        if q.kind != "scale":
            continue
        key = RANK_PREFIX + q.key
        ranks: dict[int, int] = {}
        for p in judged:
            raw = (answers.get(p) or {}).get(key)
            if raw is None or raw == "":
                raise UserError(f"{q.label}: rank every image (1 = best); {panel_label(p)} has no rank yet.")
            if isinstance(raw, str) and raw.strip().isdigit():
                raw = int(raw.strip())
            if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= n:
                raise UserError(
                    f"{q.label}: {panel_label(p)}'s rank must be a whole number from 1 to {n}, not {raw!r}."
                )
            ranks[p] = raw
        if sorted(ranks.values()) != list(range(1, n + 1)):
            twice = sorted({r for r in ranks.values() if list(ranks.values()).count(r) > 1})
            but = f" (the {len(cant)} \"can't judge\" image(s) need none)" if cant else ""
            raise UserError(f"{q.label}: each rank from 1 to {n} must be used once{but}; "
                            f"{', '.join(map(str, twice))} is given twice.")
        out += [Answer(image_id, key, None, (), True) if p in cant else Answer(image_id, key, ranks[p])
                for p, image_id in enumerate(trial.shown_order, start=1)]
    return out


def _scale_value(raw: Any, q: Question) -> int | None:
    """A scale answer as int, None when unanswered; out-of-range or non-numeric → UserError."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):
        head = raw.strip().split(" ", 1)[0].rstrip(".:-")
        if not head.lstrip("-").isdigit():
            raise UserError(f"{q.label}: {raw!r} is not a score.")
        raw = int(head)
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or int(raw) != raw:
        raise UserError(f"{q.label}: {raw!r} is not a score.")
    allowed = [v for v, _ in q.levels]
    if int(raw) not in allowed:
        raise UserError(f"{q.label}: {int(raw)} is out of range ({min(allowed)}–{max(allowed)}).")
    return int(raw)


def check_model_guesses(trial: TrialInfo, guesses: Mapping[int, Any] | None, options: Sequence[str]) -> dict[int, str]:
    """The model question's answers (position → an option of ``options`` or ``DONT_KNOW``), one for every image of
    the trial; anything else is a UserError and nothing is stored."""
    allowed = {*options, DONT_KNOW}
    n = len(trial.shown_order)
    if not isinstance(guesses, Mapping):
        raise UserError("The model question's answers must map an image position to an option; nothing was saved.")
    out: dict[int, str] = {}
    for position, guess in guesses.items():
        if isinstance(position, bool) or not isinstance(position, int) or not 1 <= position <= n:
            raise UserError(f"An answer names image position {position!r}, which is not on this screen (1-{n}); "
                            "nothing was saved.")
        if not isinstance(guess, str) or guess not in allowed:
            raise UserError(f"{panel_label(position)}: pick one of the listed models or \"Don't know\"; nothing was "
                            "saved.")
        out[position] = guess
    missing = [panel_label(p) for p in range(1, n + 1) if p not in out]
    if missing:
        raise UserError(f"Answer the model question for {', '.join(missing)} (\"Don't know\" is an answer); "
                        "nothing was saved.")
    return out
