"""The study model: questions, prompt rows, controls, image slots, items and :class:`StudyDefinition` (its designs,
catch screens and design hash). The file format and the item rules are described in :mod:`p2p_app.study`."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..text import name_key

REAL_MODEL = "real"
CONTROL_PREFIX = "control:"
DESIGNS = ("single", "side_by_side", "forced_choice", "ranking", "naive_disclosed")
CATCH_PREFIX = "catch:"
CATCH_REAL_KIND = "real"
BROKEN_KINDS = ("noise", "flipped", "blank", "wrong_anatomy")
WRONG_ANATOMY_METHOD = "1: radiology left half mirrored onto the right; colonoscopy 2x2 mirrored mosaic"
"""How ``reader.broken_image`` makes a ``wrong_anatomy`` image; hashed only into studies that use the kind."""
CATCH_KINDS = (CATCH_REAL_KIND, *BROKEN_KINDS)
MAX_CATCH_RATE = 0.3
QUESTION_KINDS = ("scale", "multi", "text")
MAX_REPEAT_FRACTION = 0.5
CANT_JUDGE_LABEL = "Can't judge / image failed to load"
HASH_FORMAT = 4  # 2: side-by-side controls are shown beside the models' images for their caption;
#                 3: side by side, a real image takes the place of one model's image (constant panel count);
#                 4: forced_choice and ranking designs, catch trials (catch_rate, catch_kinds), rater_groups

# naive → disclosed design: phase 1 ("naive") never mentions synthesis; phase 2 ("disclosed") asks real or synthetic
NAIVE_PREFIX = "naive:"
DISCLOSED_PREFIX = "disclosed:"
DISCLOSED_ORDERS = ("fresh", "same")
UNUSUAL_KEY = "unusual"
SOURCE_CALL_KEY = "real_or_synthetic"
SOURCE_CALL_REAL_FROM = 4  # a source call >= 4 says "real", <= 3 "synthetic"
DEFAULT_NOTICE_WORDS = ("artificial*", "synthe*", "generat*", "fake*", "AI", "computer*", "render*", "CGI",
                        "not real", "unreal")
"""The default keyword rule of "noticed" (``notice_words``): whole words, case-insensitive, ``*`` = any ending."""
PRIMING_RE = re.compile(r"\b(?:synthe\w*|generat\w*|artificial\w*|fake\w*|real\w*|ai|models?|computer\w*|"
                        r"render\w*|cgi|gan|diffusion)\b", re.IGNORECASE)
"""Words that would tell a phase-1 reader that some images are made by a computer (refused in phase-1 text)."""


def priming_word(text: str) -> str | None:
    """The first word of ``text`` that mentions synthesis, models or "real" (:data:`PRIMING_RE`), None if none."""
    found = PRIMING_RE.search(text or "")
    return found.group(0) if found else None


def notice_pattern(words: Collection[str]) -> re.Pattern[str]:
    """The "noticed" keyword rule as a regex: any of ``words`` as a whole word (``*`` = any word ending)."""
    parts = [r"\s+".join(re.escape(w) for w in word.rstrip("*").split()) + (r"\w*" if word.endswith("*") else "")
             for word in words]
    return re.compile(r"\b(?:" + "|".join(parts) + r")\b", re.IGNORECASE)


def item_phase(item_key: str) -> str:
    """``"naive"`` / ``"disclosed"`` for an item of the naive → disclosed design, ``""`` for any other item."""
    if item_key.startswith(NAIVE_PREFIX):
        return "naive"
    return "disclosed" if item_key.startswith(DISCLOSED_PREFIX) else ""


QKEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_MAX_LEVELS = 11


class StudyError(ValueError):
    """A study file is refused. ``str()`` reads ``<file>, line <n>: <reason>``."""

    def __init__(self, path: Path | str, line: int | None, reason: str) -> None:
        self.path = Path(path)
        self.line = line
        self.reason = reason
        where = f"{path}, line {line}" if line else f"{path}"
        super().__init__(f"{where}: {reason}")


# ----------------------------------------------------------------------------------------- questions


@dataclass(frozen=True)
class Question:
    """One question asked about every image. ``levels`` are (score, label) pairs for scales."""

    key: str
    kind: str
    label: str
    levels: tuple[tuple[int, str], ...] = ()
    options: tuple[str, ...] = ()
    required: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not QKEY_RE.match(self.key):
            raise ValueError(f"question key {self.key!r} must be lowercase letters, digits and '_'")
        if self.kind not in QUESTION_KINDS:
            raise ValueError(f"question {self.key!r}: kind {self.kind!r} is not one of {', '.join(QUESTION_KINDS)}")
        if not isinstance(self.label, str) or not self.label.strip():
            raise ValueError(f"question {self.key!r}: label is empty")
        if not isinstance(self.required, bool):
            raise ValueError(f"question {self.key!r}: required must be true or false")
        if self.kind == "scale":
            if self.options:
                raise ValueError(f"question {self.key!r}: a scale takes levels, not options")
            if not 2 <= len(self.levels) <= _MAX_LEVELS:
                raise ValueError(f"question {self.key!r}: a scale needs 2 to {_MAX_LEVELS} levels")
            scores = [score for score, _ in self.levels]
            if scores != list(range(scores[0], scores[0] + len(scores))):
                raise ValueError(f"question {self.key!r}: level scores must be consecutive integers")
            if any(not isinstance(text, str) or not text.strip() for _, text in self.levels):
                raise ValueError(f"question {self.key!r}: every level needs a label")
        elif self.kind == "multi":
            if self.levels:
                raise ValueError(f"question {self.key!r}: a multi-select takes options, not levels")
            if not self.options or any(not isinstance(o, str) or not o.strip() for o in self.options):
                raise ValueError(f"question {self.key!r}: a multi-select needs non-empty options")
            if len(set(self.options)) != len(self.options):
                raise ValueError(f"question {self.key!r}: options repeat")
        elif self.levels or self.options:
            raise ValueError(f"question {self.key!r}: a text question takes neither levels nor options")

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "kind": self.kind,
            "label": self.label,
            "levels": [list(level) for level in self.levels],
            "options": list(self.options),
            "required": self.required,
        }


def scale_levels(*labels: str) -> tuple[tuple[int, str], ...]:
    return tuple((i, text) for i, text in enumerate(labels, start=1))


REALISM = Question(
    key="realism",
    kind="scale",
    label="How real does this image look?",
    levels=scale_levels(
        "Clearly artificial",
        "Probably artificial",
        "Unsure",
        "Probably real",
        "Indistinguishable from a real image",
    ),
)
# For a control (a real image with a caption and no prompt of its own) the caption is the prompt.
ALIGNMENT = Question(
    key="alignment",
    kind="scale",
    label="How well does the image match the prompt?",
    levels=scale_levels(
        "Does not match the prompt at all",
        "Matches a few elements of the prompt",
        "Matches about half of the prompt",
        "Matches the prompt with minor differences",
        "Matches the prompt exactly",
    ),
)
ARTIFACTS = Question(
    key="artifacts",
    kind="multi",
    label="Which artifacts do you see? (select all that apply)",
    options=(
        "Anatomically implausible structure",
        "Duplicated or fused structures",
        "Implausible colour, contrast or lighting",
        "Texture noise, smearing or grid patterns",
        "Blur or missing fine detail",
        "Text, markers or watermark-like marks",
        "Other",
    ),
    required=False,
)
COMMENT = Question(key="comment", kind="text", label="Comment (optional)", required=False)
UNUSUAL = Question(key=UNUSUAL_KEY, kind="text", label="Anything unusual about this image? (optional)",
                   required=False)
"""Asked in phase 1 of the naive → disclosed design about every image (its text is the panel's comment)."""
SOURCE_CALL = Question(
    key=SOURCE_CALL_KEY,
    kind="scale",
    label="Real or synthetic?",
    levels=scale_levels("Certainly synthetic", "Probably synthetic", "Possibly synthetic",
                        "Possibly real", "Probably real", "Certainly real"),
)
"""Phase 2 of the naive → disclosed design: the call (>= 4 real) with its confidence, one 6-point scale (an ROC)."""
DISCLOSURE_TEXT = (
    "Some of the images you have just seen were made by a computer model; the others are real. You will now see "
    "the same images again. For each one, say whether you think it is real or synthetic, and how sure you are."
)

DEFAULT_QUESTIONS: tuple[Question, ...] = (REALISM, ALIGNMENT)
BUILTIN_QUESTIONS: Mapping[str, Question] = MappingProxyType(
    {q.key: q for q in (REALISM, ALIGNMENT, ARTIFACTS, COMMENT)}
)

# ------------------------------------------------------------------------------------- study objects


@dataclass(frozen=True)
class PromptRow:
    """One row of the prompt bank. ``line`` is its line in the CSV (not part of the design)."""

    prompt_id: str
    prompt: str
    real_image: Path | None
    line: int
    real_image_id: str = ""
    real_sha256: str = ""
    practice: bool = False  # a practice prompt (``practice`` column): its items are shown first, never analysed


@dataclass(frozen=True)
class ControlImage:
    """A real image shown without a prompt; its caption is what alignment is judged against."""

    control_id: str
    path: Path
    caption: str
    sha256: str = ""
    line: int = 0


@dataclass(frozen=True)
class ImageSlot:
    """One image to generate (``model`` a registry name) or import (``model == "real"``)."""

    model: str
    prompt_id: str  # "control:<id>" for a control
    seed: int | None  # None for real images
    prompt: str  # the prompt; a control's caption
    real_path: Path | None = None
    real_sha256: str = ""
    # catch trials (study.catch_items): an image made for a catch screen, never one of the design's own images
    catch: str = ""  # "real" (a known real image) | "broken" (made broken by the app) | "" (a plain copy)
    catch_kind: str = ""  # how a broken image is made: "noise" | "flipped" | "blank" | "wrong_anatomy" ("" otherwise)
    derive_from: str = ""  # key of the design image this one is made from ("" for a known real image)
    catch_key: str = ""  # the slot key of a catch image

    @property
    def is_real(self) -> bool:
        return self.model == REAL_MODEL

    @property
    def source(self) -> str:
        return "real" if self.is_real else "generated"

    @property
    def key(self) -> str:
        if self.catch_key:
            return self.catch_key
        if self.is_real:
            return self.prompt_id if self.prompt_id.startswith(CONTROL_PREFIX) else f"{self.prompt_id}/real"
        return f"{self.prompt_id}/{self.model}/s{self.seed}"


@dataclass(frozen=True)
class StudyItem:
    """What one screen shows: one slot (single design) or one per panel (side by side)."""

    key: str
    prompt_id: str
    prompt: str
    slots: tuple[ImageSlot, ...]

    @property
    def n_panels(self) -> int:
        return len(self.slots)


@dataclass(frozen=True)
class StudyDefinition:
    id: str
    version: int
    title: str
    instructions: str
    modality: str
    models: tuple[str, ...]
    seeds: tuple[int, ...]
    prompts: tuple[PromptRow, ...]
    controls: tuple[ControlImage, ...]
    raters: tuple[str, ...]  # planned rater names; empty for an open study
    n_raters: int  # rater slots; len(raters) when listed
    overlap_k: int
    repeat_fraction: float
    design: str
    questions: tuple[Question, ...] = DEFAULT_QUESTIONS
    allow_answer_changes: bool = False
    open: bool = False
    catch_rate: float = 0.0
    catch_kinds: tuple[str, ...] = ()
    rater_groups: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (group, rater names), in file order
    mark_artifacts: bool = False  # raters may click points on an image where it looks wrong
    mark_confidence: bool = False  # each mark carries a confidence 1-5 (needs mark_artifacts): the inferred ROC
    disclosed_order: str = "fresh"  # naive_disclosed: phase 2 in a fresh shuffle or phase 1's order
    notice_words: tuple[str, ...] = DEFAULT_NOTICE_WORDS  # naive_disclosed: the "noticed" keyword rule (not hashed)
    blinding_index: bool = False  # after each screen's ratings: "Which model do you think made this image?"
    source_path: Path | None = None
    prompts_path: Path | None = None
    controls_path: Path | None = None

    def question(self, key: str) -> Question:
        for q in self.questions:
            if q.key == key:
                return q
        raise KeyError(key)

    def rater_group(self, name: str) -> str:
        """The group a planned rater belongs to (``rater_groups``; names compared by :func:`p2p_app.text.name_key`),
        ``""`` when none."""
        wanted = name_key(name)
        for group, names in self.rater_groups:
            if any(name_key(n) == wanted for n in names):
                return group
        return ""

    def questions_for(self, item_key: str) -> tuple[Question, ...]:
        """The questions of one screen: the study's, except in the naive → disclosed design (phase 1: the study's
        and "anything unusual?"; phase 2: the source call alone)."""
        phase = item_phase(item_key) if self.design == "naive_disclosed" else ""
        if phase == "disclosed":
            return (SOURCE_CALL,)
        return (*self.questions, UNUSUAL) if phase == "naive" else self.questions

    def disclosed_items(self) -> tuple[StudyItem, ...]:
        """Phase 2 of the naive → disclosed design: every design item again (key ``disclosed:<image key>``)."""
        if self.design != "naive_disclosed":
            return ()
        return tuple(StudyItem(DISCLOSED_PREFIX + i.key[len(NAIVE_PREFIX):], i.prompt_id, i.prompt, i.slots)
                     for i in self.items())

    def _real_slot(self, row: PromptRow) -> ImageSlot | None:
        if row.real_image is None:
            return None
        return ImageSlot(REAL_MODEL, row.prompt_id, None, row.prompt, row.real_image, row.real_sha256)

    def _control_slot(self, control: ControlImage) -> ImageSlot:
        return ImageSlot(
            REAL_MODEL, CONTROL_PREFIX + control.control_id, None, control.caption, control.path, control.sha256
        )

    def items(self) -> tuple[StudyItem, ...]:
        """Every item in design order: prompts in CSV order, then controls (see the module docstring). Practice
        prompts' items are not among them (:meth:`practice_items`)."""
        return self._items_of(tuple(p for p in self.prompts if not p.practice), self.controls)

    def practice_items(self) -> tuple[StudyItem, ...]:
        """The practice items: every item of the practice prompts (``practice`` column), laid out by the same rules
        as the design's items; each rater sees all of them first (:func:`p2p_app.assignment.rater_sequence`)."""
        practice = tuple(p for p in self.prompts if p.practice)
        return self._items_of(practice, ()) if practice else ()

    def _items_of(self, prompts: tuple[PromptRow, ...], controls: tuple[ControlImage, ...]) -> tuple[StudyItem, ...]:
        out: list[StudyItem] = []
        real_count = [0]  # side by side: real-bearing items so far (rotation of the model left out)
        for row in prompts:
            real = self._real_slot(row)
            if self.design == "ranking":  # one panel per model; real images only feed catch screens
                out += [StudyItem(f"{row.prompt_id}/s{seed}", row.prompt_id, row.prompt,
                                  tuple(ImageSlot(m, row.prompt_id, seed, row.prompt) for m in self.models))
                        for seed in self.seeds]
            elif self.design == "forced_choice":  # the prompt's real image beside one image per model
                out += self._forced_choice(row.prompt_id, row.prompt, real)
            elif self.design in ("single", "naive_disclosed"):
                pre = NAIVE_PREFIX if self.design == "naive_disclosed" else ""
                for model in self.models:
                    for seed in self.seeds:
                        slot = ImageSlot(model, row.prompt_id, seed, row.prompt)
                        out.append(StudyItem(pre + slot.key, row.prompt_id, row.prompt, (slot,)))
                if real is not None:
                    out.append(StudyItem(pre + real.key, row.prompt_id, row.prompt, (real,)))
            else:
                out += self._side_by_side(row.prompt_id, row.prompt, real, real_count)
        for control in controls:
            slot = self._control_slot(control)
            if self.design in ("single", "naive_disclosed"):
                pre = NAIVE_PREFIX if self.design == "naive_disclosed" else ""
                out.append(StudyItem(pre + slot.key, slot.prompt_id, slot.prompt, (slot,)))
            elif self.design == "ranking":
                continue  # no real panel on a ranking screen: controls only feed catch screens
            elif self.design == "forced_choice":
                out += self._forced_choice(slot.prompt_id, slot.prompt, slot)
            else:  # the caption is the prompt: the models' images for it beside the real one
                out += self._side_by_side(slot.prompt_id, slot.prompt, slot, real_count)
        return tuple(out)

    def _side_by_side(
        self, prompt_id: str, prompt: str, real: ImageSlot | None, real_count: list[int]
    ) -> list[StudyItem]:
        """One item per seed with ``len(models)`` panels: each model's image for ``prompt``; when ``real`` is
        given it takes the place of the model whose turn it is (``real_count`` counts real-bearing items)."""
        items = []
        for seed in self.seeds:
            models = list(self.models)
            if real is not None:
                del models[real_count[0] % len(models)]
                real_count[0] += 1
            slots = tuple(ImageSlot(m, prompt_id, seed, prompt) for m in models)
            slots += (real,) if real is not None else ()
            items.append(StudyItem(f"{prompt_id}/s{seed}", prompt_id, prompt, slots))
        return items

    def _forced_choice(self, prompt_id: str, prompt: str, real: ImageSlot | None) -> list[StudyItem]:
        """One item per seed: every model's image for ``prompt`` and the real one (``len(models) + 1`` panels)."""
        if real is None:  # refused when loading; a hand-built definition gets the same message
            raise ValueError(f"forced choice: prompt {prompt_id!r} has no real image")
        return [StudyItem(f"{prompt_id}/s{seed}", prompt_id, prompt,
                          tuple(ImageSlot(m, prompt_id, seed, prompt) for m in self.models) + (real,))
                for seed in self.seeds]

    def guess_options(self) -> tuple[str, ...]:
        """The arms of the model question (``blinding_index``): the study's models in file order, then ``real``
        when the study's screens show real images (prompt real images or controls; a ranking screen never does,
        only its catch screens, which the index leaves out). The same on every screen."""
        shows_real = self.design != "ranking" and bool(self.known_real_slots())
        return self.models + ((REAL_MODEL,) if shows_real else ())

    def known_real_slots(self) -> tuple[ImageSlot, ...]:
        """The real images a "real" catch screen may show: prompt real images, then controls."""
        reals = [self._real_slot(row) for row in self.prompts]
        return tuple(s for s in reals if s is not None) + tuple(self._control_slot(c) for c in self.controls)

    def catch_pool_size(self) -> int:
        """Catch screens made per kind: enough for the rater with the most screens (an upper bound)."""
        if not self.catch_kinds or self.catch_rate <= 0:
            return 0
        per_rater = math.ceil(len(self.items()) * self.overlap_k / self.n_raters)
        per_rater += math.ceil(per_rater * self.repeat_fraction) + 1
        return math.ceil(math.ceil(self.catch_rate * per_rater) / len(self.catch_kinds)) + 1

    def catch_items(self) -> tuple[StudyItem, ...]:
        """The catch screens (keys ``catch:<kind>:<j>``), each laid out like a design screen (same panel count).

        A catch screen copies a design item chosen by hash (``base``); every panel is a new image (so a rater's
        answers on it never collide with their answers on the design's images): ``real`` → one panel is a known
        real image (``catch = "real"``; prompt real images and controls in turn) and every other panel a broken
        copy of a generated image (so the known answer is clear in every design); a broken kind → one generated
        panel made broken (``catch = "broken"``), the others plain copies.
        """
        n = self.catch_pool_size()
        items = [i for i in self.items() if any(not s.is_real for s in i.slots)]
        if not n or not items:
            return ()
        reals = self.known_real_slots()
        broken = [k for k in self.catch_kinds if k in BROKEN_KINDS] or ["noise"]
        out: list[StudyItem] = []
        for kind in self.catch_kinds:
            for j in range(n):
                key = f"{CATCH_PREFIX}{kind}:{j}"
                base = items[_digest(self.id, self.version, key) % len(items)]
                gen = [p for p, s in enumerate(base.slots) if not s.is_real]
                target = gen[_digest(self.id, self.version, key, "panel") % len(gen)]
                slots = []
                for p, s in enumerate(base.slots):
                    common = dict(catch_key=f"{key}/{p}")
                    if kind == CATCH_REAL_KIND and p == target:
                        r = reals[j % len(reals)]
                        slots.append(ImageSlot(REAL_MODEL, r.prompt_id, None, r.prompt, r.real_path,
                                               r.real_sha256, "real", "", "", **common))
                    elif kind == CATCH_REAL_KIND and (not s.is_real or self.design == "forced_choice"):
                        src = s if not s.is_real else base.slots[gen[0]]
                        bk = broken[(p + j) % len(broken)]
                        slots.append(ImageSlot(src.model, src.prompt_id, src.seed, src.prompt, None, "",
                                               "broken", bk, src.key, **common))
                    elif kind != CATCH_REAL_KIND and p == target:
                        slots.append(ImageSlot(s.model, s.prompt_id, s.seed, s.prompt, None, "",
                                               "broken", kind, s.key, **common))
                    else:
                        slots.append(ImageSlot(s.model, s.prompt_id, s.seed, s.prompt, s.real_path, s.real_sha256,
                                               "", "", s.key, **common))
                out.append(StudyItem(key, base.prompt_id, base.prompt, tuple(slots)))
        return tuple(out)

    def catch_slots(self) -> tuple[ImageSlot, ...]:
        """The images of every catch screen (made from design images or imported, after generation)."""
        return tuple(s for item in self.catch_items() for s in item.slots)

    def image_slots(self) -> tuple[ImageSlot, ...]:
        """The distinct images the study needs, in design order: generate these, import the real ones."""
        seen: dict[str, ImageSlot] = {}
        for item in (*self.practice_items(), *self.items()):
            for slot in item.slots:
                seen.setdefault(slot.key, slot)
        return tuple(seen.values())

    def item_map(self) -> dict[str, StudyItem]:
        """Item key -> item, the practice items, the design's items and the catch screens."""
        return {item.key: item for item in (*self.practice_items(), *self.items(), *self.catch_items(),
                                            *self.disclosed_items())}

    def design_dict(self) -> dict[str, Any]:
        """The canonical content the design hash is taken over (text with whitespace runs collapsed)."""
        return {
            "format": HASH_FORMAT,
            "id": self.id,
            "version": self.version,
            "title": squash(self.title),
            "instructions": squash(self.instructions),
            "modality": self.modality,
            "design": self.design,
            "models": list(self.models),
            "seeds": list(self.seeds),
            "prompts": [[p.prompt_id, squash(p.prompt), p.real_image_id, p.real_sha256] for p in self.prompts],
            "controls": [[c.control_id, squash(c.caption), c.sha256] for c in self.controls],
            "raters": list(self.raters),
            "n_raters": self.n_raters,
            "open": self.open,
            "overlap_k": self.overlap_k,
            "repeat_fraction": float(self.repeat_fraction),
            "allow_answer_changes": self.allow_answer_changes,
            "questions": [q.as_dict() for q in self.questions],
            "catch_rate": float(self.catch_rate),
            "catch_kinds": list(self.catch_kinds),
            "rater_groups": [[g, list(names)] for g, names in self.rater_groups],
            # present only when used (a study without them keeps its hash, no format bump)
            **({"practice": [p.prompt_id for p in self.prompts if p.practice]}
               if any(p.practice for p in self.prompts) else {}),
            **({"mark_artifacts": True} if self.mark_artifacts else {}),
            **({"mark_confidence": True} if self.mark_confidence else {}),
            # the keyword rule (notice_words) is analysis, not design: editable after freezing, so not hashed
            **({"disclosed_order": self.disclosed_order} if self.design == "naive_disclosed" else {}),
            **({"blinding_index": True} if self.blinding_index else {}),
            **({"wrong_anatomy": WRONG_ANATOMY_METHOD} if "wrong_anatomy" in self.catch_kinds else {}),
        }

    def design_hash(self) -> str:
        """sha256 (hex) of the canonical JSON of :meth:`design_dict` (plus ``practice`` and ``mark_artifacts`` only
        when the study uses them, so the hash of a study without them is what it was before they existed)."""
        text = json.dumps(self.design_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def squash(text: str) -> str:
    return " ".join(text.split())


def _digest(*parts: object) -> int:
    text = "\x1f".join(str(part) for part in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")



def study_key(study: StudyDefinition) -> str:
    """``id@vN``: how a study is named in the database, exports and URLs."""
    return f"{study.id}@v{study.version}"


def rater_group_map(studies: Collection[StudyDefinition]) -> dict[str, dict[str, str]]:
    """Study key -> {name_key(rater name): group}, for ``Storage.ratings_frame(rater_groups=...)``."""
    return {study_key(s): {name_key(n): g for g, names in s.rater_groups for n in names} for s in studies}
