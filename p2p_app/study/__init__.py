"""Frozen reader studies: a TOML file, a CSV prompt bank and a folder of real control images.

The package: :mod:`.model` (the study objects, items and the design hash), :mod:`.load` (reading and checking a
study folder; the strict CSV reader) and :mod:`.write` (writing one). Import from ``p2p_app.study``.

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
                                    # "forced_choice" (real + one per model), "ranking" (one per model)
                                    # or "naive_disclosed" (one image; asked again after disclosure)
    disclosed_order = "fresh"       # naive_disclosed only (fresh): phase 2 in a "fresh" shuffle or the "same" order
    notice_words = ["synthe*", "AI"] # naive_disclosed only: the "noticed" keyword rule (* = any ending; not hashed)
    catch_rate = 0.1                # optional (0.0); catch screens per design trial (ceil(rate x n)), [0, 0.3]; needs catch_kinds
    catch_kinds = ["real", "noise"] # optional; some of "real", "noise", "flipped", "blank", "wrong_anatomy"
    models = ["colon-msdm-tiny"]    # required; registry names, at least one, no duplicates
    seeds = [11, 23]                # required; ints in [0, 2**32), at least one, no duplicates
    prompts = "prompts.csv"         # required; CSV prompt bank, path relative to this file
    controls = "controls"           # optional; folder holding captions.csv and the control images
    overlap_k = 2                   # required; raters per item, 1 <= k <= number of raters
    repeat_fraction = 0.1           # optional (0.0); share of a rater's items shown again, [0, 0.5]
    allow_answer_changes = false    # optional (false); may a rater revise a stored answer
    mark_artifacts = false          # optional (false); raters may click points where an image looks wrong
    mark_confidence = false         # optional (false); each mark gets a confidence 1-5 (the inferred ROC)
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
* ``naive_disclosed``: phase 1 ("naive") has the items of ``single`` with keys ``naive:<key>``; phase 2
  ("disclosed") shows each of them again after a disclosure, keys ``disclosed:<key>``.
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


from .load import find_studies, load_studies, load_study, read_csv_rows
from .model import (
    ALIGNMENT,
    ARTIFACTS,
    BROKEN_KINDS,
    BUILTIN_QUESTIONS,
    CANT_JUDGE_LABEL,
    CATCH_KINDS,
    CATCH_PREFIX,
    CATCH_REAL_KIND,
    COMMENT,
    CONTROL_PREFIX,
    DEFAULT_NOTICE_WORDS,
    DEFAULT_QUESTIONS,
    DISCLOSED_ORDERS,
    DISCLOSED_PREFIX,
    DISCLOSURE_TEXT,
    NAIVE_PREFIX,
    SOURCE_CALL,
    SOURCE_CALL_KEY,
    SOURCE_CALL_REAL_FROM,
    UNUSUAL,
    UNUSUAL_KEY,
    item_phase,
    notice_pattern,
    priming_word,

    DESIGNS,
    HASH_FORMAT,
    MAX_CATCH_RATE,
    MAX_REPEAT_FRACTION,
    QUESTION_KINDS,
    REAL_MODEL,
    REALISM,
    WRONG_ANATOMY_METHOD,
    ControlImage,
    ImageSlot,
    PromptRow,
    Question,
    StudyDefinition,
    StudyError,
    StudyItem,
    rater_group_map,
    study_key,
)
from .write import toml_value, write_study

__all__ = [
    "DEFAULT_NOTICE_WORDS",
    "DISCLOSED_ORDERS",
    "DISCLOSED_PREFIX",
    "DISCLOSURE_TEXT",
    "NAIVE_PREFIX",
    "SOURCE_CALL",
    "SOURCE_CALL_KEY",
    "SOURCE_CALL_REAL_FROM",
    "UNUSUAL",
    "UNUSUAL_KEY",
    "item_phase",
    "notice_pattern",
    "priming_word",
    "ALIGNMENT",
    "ARTIFACTS",
    "BROKEN_KINDS",
    "BUILTIN_QUESTIONS",
    "CANT_JUDGE_LABEL",
    "CATCH_KINDS",
    "CATCH_PREFIX",
    "CATCH_REAL_KIND",
    "COMMENT",
    "CONTROL_PREFIX",
    "DEFAULT_QUESTIONS",
    "DESIGNS",
    "HASH_FORMAT",
    "MAX_CATCH_RATE",
    "MAX_REPEAT_FRACTION",
    "QUESTION_KINDS",
    "REAL_MODEL",
    "REALISM",
    "WRONG_ANATOMY_METHOD",
    "ControlImage",
    "ImageSlot",
    "PromptRow",
    "Question",
    "StudyDefinition",
    "StudyError",
    "StudyItem",
    "find_studies",
    "load_studies",
    "load_study",
    "rater_group_map",
    "read_csv_rows",
    "study_key",
    "toml_value",
    "write_study",
]
