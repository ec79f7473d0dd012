"""Frozen reader studies: a TOML file, a CSV prompt bank and a folder of real control images.

A study is a design frozen before any rater sees it: which models, prompts and seeds are shown, which
real images are mixed in, how many raters judge each item, which questions they answer. Loading is
the one place where a study file is checked; every refusal raises :class:`StudyError` naming the
file, the line (where known) and the reason. ``studies/README.md`` documents the same format.

``study.toml`` (all top-level keys; ``[[questions]]`` tables, when used, come last)::

    id = "colonoscopy_pilot"        # required; lowercase letters, digits, "_" and "-"
    version = 1                     # required; int >= 1; bump it to change a frozen design
    title = "Colonoscopy pilot"     # required; shown to raters
    instructions = '''...'''        # required; shown to raters before the first item
    modality = "colonoscopy"        # required; "colonoscopy" or "radiology"
    design = "single"               # required; "single" (one image per screen), "side_by_side",
                                    # "forced_choice" (real + one per model) or "ranking" (one per model)
    catch_rate = 0.1                # optional (0.0); share of catch screens, [0, 0.3]; needs catch_kinds
    catch_kinds = ["real", "noise"] # optional; some of "real", "noise", "flipped", "blank", "wrong_anatomy"
    models = ["colon-msdm-tiny"]    # required; registry names, at least one, no duplicates
    seeds = [11, 23]                # required; ints in [0, 2**32), at least one, no duplicates
    prompts = "prompts.csv"         # required; CSV prompt bank, path relative to this file
    controls = "controls"           # optional; folder holding captions.csv and the control images
    overlap_k = 2                   # required; raters per item, 1 <= k <= number of raters
    repeat_fraction = 0.1           # optional (0.0); share of a rater's items shown again, [0, 0.5]
    allow_answer_changes = false    # optional (false); may a rater revise a stored answer
    mark_artifacts = false          # optional (false); raters may click points where an image looks wrong
    raters = ["dr_a", "dr_b"]       # planned raters (names), or:
    open = true                     # an open study: anyone joins with a name ...
    n_raters = 6                    # ... into one of n_raters rater slots (required when open)

    [rater_groups]                  # optional; group = [listed rater names], a rater in one group
    resident = ["dr_a"]

    [[questions]]                   # optional; default: realism then alignment
    key = "realism"                 # a built-in (realism, alignment, artifacts, comment) by key
                                    # alone, optionally with required = true/false
    [[questions]]
    key = "lesion_visible"          # or a new question: key, kind, label, levels/options, required
    kind = "scale"                  # "scale" | "multi" | "text"
    label = "Is the lesion clearly visible?"
    levels = ["Not visible", "Partly visible", "Clearly visible"]   # scale: numbered 1..n
    # options = ["...", "..."]      # multi: the checklist
    required = true                 # optional; default true for scales, false otherwise

``prompts.csv``: header ``prompt_id,prompt`` plus optional ``real_image`` (path of the prompt's
real image, relative to the CSV), ``real_image_id`` (the dataset's id for it, kept as provenance) and
``practice`` (``yes``/``no``, empty = no): a practice prompt's items are shown first to every rater, stored and
flagged, and left out of every statistic.
``<controls>/captions.csv``: header ``control_id,file,caption``; ``file`` is relative to the folder;
the caption is the prompt the alignment question uses for that control. Files in the folder that
captions.csv does not list are ignored (prompt real images may live there too).

Items (what one screen shows):

* ``single``: one item per model x prompt x seed (key ``<prompt_id>/<model>/s<seed>``), one per
  prompt real image (``<prompt_id>/real``) and one per control (``control:<control_id>``; a
  control's ``prompt_id`` is that same ``control:<control_id>`` and its prompt is the caption).
* ``side_by_side``: one item per prompt x seed (key ``<prompt_id>/s<seed>``). Every screen has
  exactly one panel per model (``len(models)`` panels), whether or not it holds a real image: a
  panel count that grows on real screens would tell the rater a real image is there. A screen
  without a real image shows every model's image; on a screen with one (the prompt's real image, the
  same in each seed's item, or a control) the real image takes the place of one model's image. The
  model left out is chosen in rotation over the real-bearing items in design order (the r-th such
  item leaves out ``models[r % len(models)]``), so each model gives up the same number of screens
  (within one). A control's caption is its prompt: each control gives one item per seed (key
  ``control:<control_id>/s<seed>``) with the control image and the other models' images for the
  caption, laid out like any other screen.

The design hash covers everything that defines the design, the content (sha256) of every real
image included, and nothing cosmetic: whitespace runs in text, comments, key order, file names,
folder locations and line numbers do not change it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import tomllib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from PIL import Image

from generators.base import MODALITIES

if TYPE_CHECKING:  # pragma: no cover
    from .config import AppConfig


REAL_MODEL = "real"
CONTROL_PREFIX = "control:"
DESIGNS = ("single", "side_by_side", "forced_choice", "ranking")
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

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # prompt/control ids, model names
_QKEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_SEED_LIMIT = 2**32
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
        if not isinstance(self.key, str) or not _QKEY_RE.match(self.key):
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


def _scale(*labels: str) -> tuple[tuple[int, str], ...]:
    return tuple((i, text) for i, text in enumerate(labels, start=1))


REALISM = Question(
    key="realism",
    kind="scale",
    label="How real does this image look?",
    levels=_scale(
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
    levels=_scale(
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
    source_path: Path | None = None
    prompts_path: Path | None = None
    controls_path: Path | None = None

    def question(self, key: str) -> Question:
        for q in self.questions:
            if q.key == key:
                return q
        raise KeyError(key)

    def rater_group(self, name: str) -> str:
        """The group a planned rater belongs to (``rater_groups``), ``""`` when none."""
        wanted = " ".join(name.split()).casefold()
        for group, names in self.rater_groups:
            if any(n.casefold() == wanted for n in names):
                return group
        return ""

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
            elif self.design == "single":
                for model in self.models:
                    for seed in self.seeds:
                        slot = ImageSlot(model, row.prompt_id, seed, row.prompt)
                        out.append(StudyItem(slot.key, row.prompt_id, row.prompt, (slot,)))
                if real is not None:
                    out.append(StudyItem(real.key, row.prompt_id, row.prompt, (real,)))
            else:
                out += self._side_by_side(row.prompt_id, row.prompt, real, real_count)
        for control in controls:
            slot = self._control_slot(control)
            if self.design == "single":
                out.append(StudyItem(slot.key, slot.prompt_id, slot.prompt, (slot,)))
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
        return {item.key: item for item in (*self.practice_items(), *self.items(), *self.catch_items())}

    def design_dict(self) -> dict[str, Any]:
        """The canonical content the design hash is taken over (text with whitespace runs collapsed)."""
        return {
            "format": HASH_FORMAT,
            "id": self.id,
            "version": self.version,
            "title": _squash(self.title),
            "instructions": _squash(self.instructions),
            "modality": self.modality,
            "design": self.design,
            "models": list(self.models),
            "seeds": list(self.seeds),
            "prompts": [[p.prompt_id, _squash(p.prompt), p.real_image_id, p.real_sha256] for p in self.prompts],
            "controls": [[c.control_id, _squash(c.caption), c.sha256] for c in self.controls],
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
            **({"wrong_anatomy": WRONG_ANATOMY_METHOD} if "wrong_anatomy" in self.catch_kinds else {}),
        }

    def design_hash(self) -> str:
        """sha256 (hex) of the canonical JSON of :meth:`design_dict` (plus ``practice`` and ``mark_artifacts`` only
        when the study uses them, so the hash of a study without them is what it was before they existed)."""
        text = json.dumps(self.design_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _squash(text: str) -> str:
    return " ".join(text.split())


def _digest(*parts: object) -> int:
    text = "\x1f".join(str(part) for part in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


# -------------------------------------------------------------------------------------------- loading

_TOP_KEYS: Mapping[str, Any] = MappingProxyType({
    "id": str,
    "version": int,
    "title": str,
    "instructions": str,
    "modality": str,
    "design": str,
    "models": list,
    "seeds": list,
    "prompts": str,
    "controls": str,
    "overlap_k": int,
    "repeat_fraction": (int, float),
    "allow_answer_changes": bool,
    "raters": list,
    "open": bool,
    "n_raters": int,
    "questions": list,
    "catch_rate": (int, float),
    "catch_kinds": list,
    "rater_groups": dict,
    "mark_artifacts": bool,
})
_REQUIRED_KEYS = ("id", "version", "title", "instructions", "modality", "design", "models", "seeds", "prompts", "overlap_k")
_QUESTION_KEYS = ("key", "kind", "label", "levels", "options", "required")
_PROMPT_COLUMNS = (("prompt_id", "prompt"), ("real_image", "real_image_id", "practice"))
_PRACTICE_VALUES: Mapping[str, bool] = MappingProxyType(
    {"": False, "no": False, "false": False, "0": False, "yes": True, "true": True, "1": True}
)
_CONTROL_COLUMNS = (("control_id", "file", "caption"), ())
_TYPE_NAMES: Mapping[type, str] = MappingProxyType(
    {str: "a string", int: "an integer", list: "a list", bool: "true or false", dict: "a table"}
)


def _key_lines(text: str) -> dict[tuple[str, int, str], int]:
    """Best-effort map (table, index, key) -> line number of a TOML file ("" is the root table).

    tomllib reports no positions for valid documents; this scan lets semantic errors point at a line.
    Lines inside multi-line strings are skipped.
    """
    lines: dict[tuple[str, int, str], int] = {}
    table, index, counts, in_string = "", 0, {}, ""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if in_string:
            if line.count(in_string) % 2 == 1:
                in_string = ""
            continue
        array = re.match(r"^\[\[\s*([A-Za-z0-9_.-]+)\s*\]\]", line)
        plain = re.match(r"^\[\s*([A-Za-z0-9_.-]+)\s*\]", line)
        if array:
            table = array.group(1)
            counts[table] = counts.get(table, -1) + 1
            index = counts[table]
            lines.setdefault((table, index, ""), number)
            continue
        if plain:
            table, index = plain.group(1), 0
            lines.setdefault((table, index, ""), number)
            continue
        key = re.match(r"""^["']?([A-Za-z0-9_-]+)["']?\s*=""", line)
        if key:
            lines.setdefault((table, index, key.group(1)), number)
            rest = line[key.end():]
            for quote in ('"""', "'''"):
                if rest.count(quote) % 2 == 1:
                    in_string = quote
    return lines


class _Toml:
    """The parsed study.toml plus where its keys are, for error messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            text = path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            raise StudyError(path, None, "study file not found") from None
        except UnicodeDecodeError as exc:
            raise StudyError(path, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        try:
            self.data: dict[str, Any] = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            message = str(exc)
            found = re.search(r"\(at line (\d+), column \d+\)", message)
            line = int(found.group(1)) if found else None
            reason = message[: found.start()].strip() if found else message
            raise StudyError(path, line, f"TOML syntax error: {reason}") from None
        self.lines = _key_lines(text)

    def error(self, key: str | None, reason: str, table: str = "", index: int = 0) -> StudyError:
        line = self.lines.get((table, index, key or ""))
        if line is None:  # a question's table header, or a key written as a [table]
            line = self.lines.get((table, index, "") if table else (key or "", 0, ""))
        return StudyError(self.path, line, reason)


def study_key(study: StudyDefinition) -> str:
    """``id@vN``: how a study is named in the database, exports and URLs."""
    return f"{study.id}@v{study.version}"


def rater_group_map(studies: Collection[StudyDefinition]) -> dict[str, dict[str, str]]:
    """Study key -> {name_key(rater name): group}, for ``Storage.ratings_frame(rater_groups=...)``."""
    from .text import name_key

    return {study_key(s): {name_key(n): g for g, names in s.rater_groups for n in names} for s in studies}


def load_studies(config: "AppConfig") -> dict[str, StudyDefinition]:
    """Every study the config names, checked against the config's models; a bad file stops start-up."""
    known = [m.name for m in config.models]
    out: dict[str, StudyDefinition] = {}
    for path in config.studies:
        study = load_study(path, known_models=known)
        of_modality = {s.name for s in config.models_for(study.modality)}
        wrong = [m for m in study.models if of_modality and m not in of_modality]
        if wrong:
            raise StudyError(path, None, f"model(s) {', '.join(wrong)} are not {study.modality} models in the config")
        out[study_key(study)] = study
    return out


def load_study(
    path: Path | str,
    known_models: Collection[str] | None = None,
    known_modalities: Collection[str] = MODALITIES,
) -> StudyDefinition:
    """Read and check a study (a ``study.toml`` path, or a folder holding one).

    ``known_models``: registry names the study may use (unchecked when None).
    Raises :class:`StudyError` on the first problem found.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "study.toml"
    toml = _Toml(path)
    data = toml.data

    for key, value in data.items():
        if key not in _TOP_KEYS:
            hint = " (question keys belong in a [[questions]] table)" if key in _QUESTION_KEYS else ""
            raise toml.error(key, f"unknown key {key!r}{hint}; known keys: {', '.join(_TOP_KEYS)}")
        expected = _TOP_KEYS[key]
        if isinstance(value, bool) and expected is not bool or not isinstance(value, expected):
            what = "a number" if expected == (int, float) else _TYPE_NAMES[expected]  # type: ignore[index]
            raise toml.error(key, f"{key} must be {what}, not {value!r}")
    for key in _REQUIRED_KEYS:
        if key not in data:
            raise StudyError(path, None, f"missing required key {key!r}")

    study_id = data["id"]
    if not _ID_RE.match(study_id):
        raise toml.error("id", f"id {study_id!r} must be 1-64 lowercase letters, digits, '_' or '-'")
    version = data["version"]
    if version < 1:
        raise toml.error("version", f"version must be >= 1, not {version}")
    title, instructions = data["title"].strip(), data["instructions"].strip()
    for key, text in (("title", title), ("instructions", instructions)):
        if not text:
            raise toml.error(key, f"{key} is empty")
    modality = data["modality"]
    if modality not in known_modalities:
        raise toml.error("modality", f"unknown modality {modality!r}; expected one of {', '.join(known_modalities)}")
    design = data["design"]
    if design not in DESIGNS:
        raise toml.error("design", f"unknown design {design!r}; expected one of {', '.join(DESIGNS)}")

    models = _check_models(toml, data["models"], known_models)
    seeds = _check_seeds(toml, data["seeds"])
    raters, n_raters, is_open = _check_raters(toml, data)
    overlap_k = data["overlap_k"]
    if overlap_k < 1:
        raise toml.error("overlap_k", f"overlap_k must be >= 1, not {overlap_k}")
    if overlap_k > n_raters:
        raise toml.error("overlap_k", f"overlap_k = {overlap_k} is larger than the number of raters ({n_raters})")
    repeat_fraction = float(data.get("repeat_fraction", 0.0))
    if not 0.0 <= repeat_fraction <= MAX_REPEAT_FRACTION:
        raise toml.error("repeat_fraction", f"repeat_fraction must be in [0, {MAX_REPEAT_FRACTION}], not {repeat_fraction}")
    questions = _check_questions(toml, data.get("questions"))

    prompts_path = path.parent / data["prompts"]
    prompts = _read_prompts(prompts_path)
    controls_path = path.parent / data["controls"] if "controls" in data else None
    controls: tuple[ControlImage, ...] = ()
    if controls_path is not None:
        if not controls_path.is_dir():
            raise toml.error("controls", f"controls folder {controls_path} does not exist")
        controls = _read_controls(controls_path / "captions.csv")
    if design == "forced_choice":
        for row in prompts:
            if row.real_image is None:
                raise StudyError(prompts_path, row.line, f"design = \"forced_choice\" needs a real_image for every "
                                 f"prompt; prompt {row.prompt_id!r} has none")
    if design == "ranking" and len(models) < 2:
        raise toml.error("models", "design = \"ranking\" needs at least two models to rank")
    catch_rate, catch_kinds = _check_catch(toml, data, prompts, controls)
    rater_groups = _check_groups(toml, data.get("rater_groups"), raters, is_open)

    return StudyDefinition(
        id=study_id,
        version=version,
        title=title,
        instructions=instructions,
        modality=modality,
        models=models,
        seeds=seeds,
        prompts=prompts,
        controls=controls,
        raters=raters,
        n_raters=n_raters,
        overlap_k=overlap_k,
        repeat_fraction=repeat_fraction,
        design=design,
        questions=questions,
        allow_answer_changes=data.get("allow_answer_changes", False),
        open=is_open,
        catch_rate=catch_rate,
        catch_kinds=catch_kinds,
        rater_groups=rater_groups,
        mark_artifacts=data.get("mark_artifacts", False),
        source_path=path,
        prompts_path=prompts_path,
        controls_path=controls_path,
    )


def find_studies(root: Path | str) -> tuple[Path, ...]:
    """The ``<root>/*/study.toml`` files, sorted (other TOML files in ``root`` are not studies)."""
    return tuple(sorted(Path(root).glob("*/study.toml")))


def _check_models(toml: _Toml, models: list[Any], known: Collection[str] | None) -> tuple[str, ...]:
    if not models:
        raise toml.error("models", "models is empty: list at least one registry model")
    for name in models:
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise toml.error("models", f"model name {name!r} must be letters, digits, '_', '.' or '-'")
        if name == REAL_MODEL:
            raise toml.error("models", f"{REAL_MODEL!r} is reserved for real images and cannot be a model")
    duplicates = sorted({m for m in models if models.count(m) > 1})
    if duplicates:
        raise toml.error("models", f"models listed twice: {', '.join(duplicates)}")
    if known is not None:
        unknown = [m for m in models if m not in known]
        if unknown:
            raise toml.error(
                "models", f"unknown models: {', '.join(unknown)}; the registry has: {', '.join(sorted(known)) or 'none'}"
            )
    return tuple(models)


def _check_seeds(toml: _Toml, seeds: list[Any]) -> tuple[int, ...]:
    if not seeds:
        raise toml.error("seeds", "seeds is empty: list at least one integer seed")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < _SEED_LIMIT:
            raise toml.error("seeds", f"seed {seed!r} must be an integer in [0, 2**32)")
    if len(set(seeds)) != len(seeds):
        raise toml.error("seeds", "seeds repeat")
    return tuple(seeds)


def _check_raters(toml: _Toml, data: Mapping[str, Any]) -> tuple[tuple[str, ...], int, bool]:
    raters = data.get("raters", [])
    is_open = data.get("open", False)
    if is_open:
        if raters:
            raise toml.error("raters", "an open study takes no rater list: remove raters or set open = false")
        if "n_raters" not in data:
            raise toml.error("open", "an open study needs n_raters (how many rater slots to balance over)")
        if data["n_raters"] < 1:
            raise toml.error("n_raters", f"n_raters must be >= 1, not {data['n_raters']}")
        return (), data["n_raters"], True
    if not raters:
        raise toml.error("raters", "list the planned raters (raters = [...]) or set open = true with n_raters")
    names: list[str] = []
    for name in raters:
        if not isinstance(name, str) or not name.strip():
            raise toml.error("raters", f"rater name {name!r} must be a non-empty string")
        names.append(name.strip())
    folded = [n.casefold() for n in names]
    duplicates = sorted({n for n, f in zip(names, folded) if folded.count(f) > 1})
    if duplicates:
        raise toml.error("raters", f"raters listed twice: {', '.join(duplicates)}")
    if "n_raters" in data and data["n_raters"] != len(names):
        raise toml.error("n_raters", f"n_raters = {data['n_raters']} but {len(names)} raters are listed")
    return tuple(names), len(names), False


def _check_catch(
    toml: _Toml, data: Mapping[str, Any], prompts: Sequence[PromptRow], controls: Sequence[ControlImage]
) -> tuple[float, tuple[str, ...]]:
    rate = float(data.get("catch_rate", 0.0))
    if not 0.0 <= rate <= MAX_CATCH_RATE:
        raise toml.error("catch_rate", f"catch_rate must be in [0, {MAX_CATCH_RATE}], not {rate}")
    kinds = data.get("catch_kinds")
    if kinds is None:
        if rate > 0:
            raise toml.error("catch_rate", f"catch_rate > 0 needs catch_kinds (some of {', '.join(CATCH_KINDS)})")
        return rate, ()
    if not kinds:
        raise toml.error("catch_kinds", "catch_kinds is empty: leave it out, or list some of " + ", ".join(CATCH_KINDS))
    for kind in kinds:
        if kind not in CATCH_KINDS:
            raise toml.error("catch_kinds", f"unknown catch kind {kind!r}; expected some of {', '.join(CATCH_KINDS)}")
    if len(set(kinds)) != len(kinds):
        raise toml.error("catch_kinds", "catch_kinds repeat")
    if rate <= 0:
        raise toml.error("catch_kinds", "catch_kinds without catch_rate > 0: set catch_rate (e.g. 0.1)")
    if CATCH_REAL_KIND in kinds and not controls and not any(p.real_image is not None for p in prompts):
        raise toml.error("catch_kinds", "catch kind \"real\" needs known real images (controls or prompt real images)")
    return rate, tuple(kinds)


def _check_groups(
    toml: _Toml, raw: Mapping[str, Any] | None, raters: Sequence[str], is_open: bool
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if raw is None:
        return ()
    if is_open:
        raise toml.error("rater_groups", "rater_groups name listed raters: an open study has none")
    if not raw:
        raise toml.error("rater_groups", "rater_groups is empty: leave it out or name some groups")
    listed = {r.casefold(): r for r in raters}
    seen: dict[str, str] = {}
    out = []
    for group, names in raw.items():
        def fail(reason: str) -> StudyError:
            return toml.error(group, f"rater_groups.{group}: {reason}", "rater_groups")

        if not _QKEY_RE.match(group):
            raise fail("a group name must be lowercase letters, digits and '_'")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
            raise fail("must be a non-empty list of rater names")
        clean = []
        for name in names:
            folded = " ".join(name.split()).casefold()
            if folded not in listed:
                raise fail(f"{name!r} is not one of the study's raters ({', '.join(raters)})")
            if folded in seen:
                raise fail(f"{name!r} is already in group {seen[folded]!r}")
            seen[folded] = group
            clean.append(listed[folded])
        out.append((group, tuple(clean)))
    return tuple(out)


def _check_questions(toml: _Toml, raw: list[Any] | None) -> tuple[Question, ...]:
    if raw is None:
        return DEFAULT_QUESTIONS
    if not raw:
        raise toml.error("questions", "questions is empty: leave it out for the default questions")
    out: list[Question] = []
    for index, entry in enumerate(raw):
        def fail(key: str | None, reason: str, index: int = index) -> StudyError:
            return toml.error(key, f"[[questions]] #{index + 1}: {reason}", "questions", index)

        if not isinstance(entry, dict):
            raise fail(None, "each question must be a [[questions]] table")
        for key in entry:
            if key not in _QUESTION_KEYS:
                hint = " (top-level keys must come before the first [[questions]])" if key in _TOP_KEYS else ""
                raise fail(key, f"unknown key {key!r}{hint}; known keys: {', '.join(_QUESTION_KEYS)}")
        key = entry.get("key")
        if not isinstance(key, str):
            raise fail("key", "key is missing or not a string")
        if key in BUILTIN_QUESTIONS:
            extra = sorted(set(entry) - {"key", "required"})
            if extra:
                raise fail(extra[0], f"{key!r} is a built-in question: give only key (and required), or choose another key")
            question = BUILTIN_QUESTIONS[key]
            if "required" in entry:
                if not isinstance(entry["required"], bool):
                    raise fail("required", "required must be true or false")
                question = Question(question.key, question.kind, question.label, question.levels,
                                    question.options, entry["required"])
        else:
            kind = entry.get("kind")
            levels = entry.get("levels", [])
            options = entry.get("options", [])
            if not isinstance(levels, list) or not all(isinstance(x, str) for x in levels):
                raise fail("levels", "levels must be a list of labels (scored 1..n)")
            if not isinstance(options, list) or not all(isinstance(x, str) for x in options):
                raise fail("options", "options must be a list of strings")
            try:
                question = Question(
                    key=key,
                    kind=kind,  # type: ignore[arg-type]
                    label=entry.get("label", ""),
                    levels=_scale(*(x.strip() for x in levels)),
                    options=tuple(x.strip() for x in options),
                    required=entry.get("required", kind == "scale"),
                )
            except ValueError as exc:
                raise fail(None, str(exc)) from None
        if any(q.key == question.key for q in out):
            raise fail("key", f"question key {key!r} is used twice")
        out.append(question)
    return tuple(out)


def read_csv_rows(path: Path, columns: tuple[tuple[str, ...], tuple[str, ...]]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a strict CSV as (first line, {column: stripped value}); blank lines are skipped. Every CSV the app
    reads (prompt banks, captions, batch prompt lists) goes through here, so errors name the true line (a quoted
    field may span lines) and the same rules hold everywhere. ``columns``: (required, optional) names."""
    required, optional = columns
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise StudyError(path, None, "file not found") from None
    except UnicodeDecodeError as exc:
        raise StudyError(path, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    expected = ",".join(required) + "".join(f"[,{c}]" for c in optional)
    rows: list[tuple[int, dict[str, str]]] = []
    header: list[str] | None = None
    header_line = 1
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise StudyError(path, start, f"malformed CSV ({exc}); quote fields that contain commas or quotes") from None
        if not row or all(not cell.strip() for cell in row):
            continue
        if header is None:
            header, header_line = [cell.strip() for cell in row], start
            for name in header:
                if name not in required and name not in optional:
                    raise StudyError(path, start, f"unknown column {name!r}; the header must be {expected}")
                if header.count(name) > 1:
                    raise StudyError(path, start, f"column {name!r} appears twice in the header")
            for name in required:
                if name not in header:
                    raise StudyError(path, start, f"missing column {name!r}; the header must be {expected}")
            continue
        if len(row) != len(header):
            raise StudyError(
                path, start,
                f"expected {len(header)} fields ({','.join(header)}), found {len(row)}; "
                "quote fields that contain commas",
            )
        rows.append((start, {name: cell.strip() for name, cell in zip(header, row)}))
    if header is None:
        raise StudyError(path, None, f"empty file: expected a header {expected}")
    if not rows:
        raise StudyError(path, header_line, "no rows after the header")
    return rows


def _image_sha256(csv_path: Path, line: int, image: Path) -> str:
    if not image.is_file():
        raise StudyError(csv_path, line, f"real image {image} does not exist")
    try:
        with Image.open(image) as opened:
            opened.verify()
    except Exception as exc:  # PIL raises many kinds for unreadable files
        raise StudyError(csv_path, line, f"real image {image} is not a readable image ({exc})") from None
    return hashlib.sha256(image.read_bytes()).hexdigest()


def _check_id(csv_path: Path, line: int, column: str, value: str, seen: dict[str, int]) -> None:
    if not value:
        raise StudyError(csv_path, line, f"{column} is empty")
    if not _NAME_RE.match(value):
        raise StudyError(csv_path, line, f"{column} {value!r} must be 1-64 letters, digits, '_', '.' or '-'")
    if value in seen:
        raise StudyError(csv_path, line, f"duplicate {column} {value!r} (first on line {seen[value]})")
    seen[value] = line


def _read_prompts(path: Path) -> tuple[PromptRow, ...]:
    seen: dict[str, int] = {}
    out: list[PromptRow] = []
    for line, row in read_csv_rows(path, _PROMPT_COLUMNS):
        prompt_id, prompt = row["prompt_id"], _squash(row["prompt"])
        _check_id(path, line, "prompt_id", prompt_id, seen)
        if not prompt:
            raise StudyError(path, line, f"prompt {prompt_id!r} has empty text")
        real, sha = None, ""
        if row.get("real_image"):
            real = path.parent / row["real_image"]
            sha = _image_sha256(path, line, real)
        flag = row.get("practice", "").lower()
        if flag not in _PRACTICE_VALUES:
            raise StudyError(path, line, f"practice must be yes or no (or empty), not {row['practice']!r}")
        out.append(PromptRow(prompt_id, prompt, real, line, row.get("real_image_id", ""), sha, _PRACTICE_VALUES[flag]))
    if all(p.practice for p in out):
        raise StudyError(path, out[-1].line, "every prompt is a practice prompt: the study needs at least one "
                         "prompt that is not (practice = no)")
    return tuple(out)


def _read_controls(path: Path) -> tuple[ControlImage, ...]:
    seen: dict[str, int] = {}
    out: list[ControlImage] = []
    for line, row in read_csv_rows(path, _CONTROL_COLUMNS):
        control_id, caption = row["control_id"], _squash(row["caption"])
        _check_id(path, line, "control_id", control_id, seen)
        if not row["file"]:
            raise StudyError(path, line, f"control {control_id!r} names no file")
        if not caption:
            raise StudyError(path, line, f"control {control_id!r} has an empty caption")
        image = path.parent / row["file"]
        out.append(ControlImage(control_id, image, caption, _image_sha256(path, line, image), line))
    return tuple(out)


# -------------------------------------------------------------------------------------------- writing


def toml_value(value: Any) -> str:
    """``value`` as a TOML value (what the app writes: study files, a pack's presenter config)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} to TOML")


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Mapping[str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([row.get(column, "") for column in header])
    path.write_text(buffer.getvalue(), encoding="utf-8")


def write_study(
    directory: Path | str,
    settings: Mapping[str, Any],
    prompts: Sequence[Mapping[str, str]],
    controls: Sequence[Mapping[str, str]] = (),
    questions: Sequence[Mapping[str, Any]] = (),
) -> Path:
    """Write ``study.toml``, the prompt CSV and (when ``controls``) ``controls/captions.csv``.

    ``settings`` are the top-level TOML keys, written as given and NOT checked (so tests can write
    broken studies); ``prompts`` defaults to ``"prompts.csv"`` and ``controls`` to ``"controls"``.
    Image files are the caller's. Returns the path of ``study.toml``; :func:`load_study` checks it.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    settings = dict(settings)
    settings.setdefault("prompts", "prompts.csv")
    if controls:
        settings.setdefault("controls", "controls")
    lines = [f"{key} = {toml_value(value)}" for key, value in settings.items()]
    for question in questions:
        lines += ["", "[[questions]]"] + [f"{k} = {toml_value(v)}" for k, v in question.items()]
    toml_path = directory / "study.toml"
    toml_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    prompt_columns = ["prompt_id", "prompt"] + [c for c in _PROMPT_COLUMNS[1] if any(c in p for p in prompts)]
    _write_csv(directory / settings["prompts"], prompt_columns, prompts)
    if controls:
        folder = directory / settings["controls"]
        folder.mkdir(parents=True, exist_ok=True)
        _write_csv(folder / "captions.csv", _CONTROL_COLUMNS[0], controls)
    return toml_path

