"""The page's declared interface: one table of its named parts.

Every part a page script, a test or a benchmark needs to find has a declared element id (Gradio ``elem_id=``); the
CSS classes the page scripts and stylesheets read are declared here too, and so are the hidden fields the scripts
fill. The screen builders (``ui/arena.py``, ``ui/study.py``, ``ui/admin.py``, ``ui/__init__.py``) take their ids
and classes from this table, the rater page gets it as data (``window.p2pPage``, :func:`page_data`), and the test
harness (``tests/browser_client.py``) and the benchmarks look components up by these ids, never by label or
position: a button's label can change without breaking anything that finds it.

Blinding: ids name roles and positions only ("arena-panel-scores-0-image", "study-1-submit"), never a model, an
image, a trial, a repeat or a catch; nothing here depends on what a trial shows. :func:`page_data` depends only
on the configured screens (how many studies, how many panels, the questions).

An id is ``<screen>-<role>``: ``arena-…`` (the live arena), ``study-<i>-…`` (the i-th study's tab, in the order of
``app.studies``), ``admin-…`` (the admin app), ``landing-…`` (the rater page around them). A panel's parts are
``<screen>-panel-<i>`` (its column), ``…-image``, ``…-cant-judge``, ``…-comment`` and ``…-<answer key>`` (a question
key, or ``rank_<key>`` in the ranking design); the arena has one panel set per judgement
(``arena-panel-scores-0``, ``arena-panel-ranking-0``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from typing import Any, Iterable

from ..service import LIVE_QUESTIONS

# ------------------------------------------------------------------------------------------ classes and fields


class Css:
    """CSS classes the page's scripts (``assets/*.js``) and stylesheets (``assets/*.css``) read: the builders set
    them with ``elem_classes=``; a script finds a part of a screen by them."""

    SCREEN = "p2p-screen"  # a work area whose active time is measured (activity.js, marks.js)
    MESSAGE = "p2p-message"  # the error/notice box, hidden again on success (notices.js)
    REVEAL = "p2p-reveal"  # the arena's reveal, scrolled into view when it fills (notices.js)
    NEXT_ITEM = "p2p-next"  # a button that puts the next item on screen (reading.js)
    SUBMIT = "p2p-submit"  # a screen's Submit: what Ctrl+Enter presses (keyboard.js), ticked before (activity.js)
    TRIAL_TOP = "p2p-trial-top"  # the top of a new item, scrolled to after NEXT_ITEM (reading.js)
    PROMPT = "p2p-prompt"  # the arena's prompt box, marked over-long (prompt.js)
    BUDGET = "p2p-budget"  # the prompt's token counter (prompt.js)
    GENERATE = "p2p-generate"  # the arena's Generate button
    GENERATING = "p2p-generating"  # the block carrying the generation progress
    DEMO_BANNER = "p2p-demo-banner"  # banners above a screen
    INSTRUCTIONS = "p2p-instructions"  # a study's instructions accordion
    VIEWER = "p2p-viewer"  # the panels and their toolbar: one zoom/window state (zoom.js, marks.js, reading.js)
    VIEWER_TOOLS = "p2p-viewer-tools"  # the toolbar's block (viewer.html inside)
    PANELS = "p2p-panels"  # the row of panels
    PANEL = "p2p-panel"  # one blinded panel (zoom.js, marks.js, reading.js)
    IMAGE = "p2p-image"  # a panel's image
    FIELD_HIDDEN = "p2p-field-hidden"  # a page field: rendered for the scripts, never seen (marks.css)


class ScriptCss:
    """Classes the page's own markup and scripts set and read (``assets/viewer.html``, ``marks.html``, ``*.js``):
    no builder sets them; declared so that nothing else takes their names."""

    OVER = "p2p-over"  # the prompt box while the prompt is too long (prompt.js)
    TOOLS = "p2p-tools"
    TOOLS_ZOOM = "p2p-tools-zoom"
    TOOLS_HINT = "p2p-tools-hint"
    TOOLS_HINT_TOUCH = "p2p-tools-hint-touch"
    TOOLS_MARKS = "p2p-tools-marks"
    ZOOM_LEVEL = "p2p-zoom-level"
    ZOOMED = "p2p-zoomed"
    WINDOW_LEVEL = "p2p-wl"
    EMPTY = "p2p-empty"
    MARK = "p2p-mark"
    MARK_LAYER = "p2p-mark-layer"
    MARK_COUNT = "p2p-mark-count"
    MARKING = "p2p-marking"
    MARK_CHOOSER = "p2p-mark-chooser"  # the confidence buttons 1-5 (mark_confidence)
    MARK_UNRATED = "p2p-mark-unrated"  # a mark without its confidence yet
    MARK_PICKED = "p2p-mark-picked"  # the selected mark, whose confidence the digits set


class Markup:
    """The data attributes of the viewer toolbar's own controls (``assets/viewer.html``, ``marks.html``), read by
    ``zoom.js`` and ``marks.js``: ``[data-p2p-zoom=in]``, ``[data-p2p-wl=reset]``, ``[data-p2p-mark=toggle]``."""

    ZOOM = "data-p2p-zoom"  # in, out, reset
    WINDOW_LEVEL = "data-p2p-wl"  # brightness, contrast (sliders), reset
    MARK = "data-p2p-mark"  # toggle, clear
    MARK_CONFIDENCE = "data-p2p-conf"  # 1-5: the selected mark's confidence (mark_confidence)


class Field:
    """The hidden fields the page scripts read or write (``common.page_field``): a class on the field's block,
    one per screen (the script looks inside the ``Css.SCREEN`` element)."""

    SHOWN = "p2p-shown"  # the trial on screen, sent back with Submit (a replay names an old one)
    ACTIVE = "p2p-active"  # seconds visible and not idle, measured by the page (activity.js)
    MARKS = "p2p-marks"  # artifact marks as JSON (marks.js)


def _constants(cls: type) -> dict[str, str]:
    return {k.lower(): v for k, v in vars(cls).items() if k.isupper() and isinstance(v, str)}


# ------------------------------------------------------------------------------------------------ element ids


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", text.lower().replace("_", "-"))


@dataclass(frozen=True)
class PanelIds:
    """One panel's parts; ``prefix`` is ``<screen>-panel-<i>`` (the column's own id)."""

    prefix: str

    @property
    def column(self) -> str:
        return self.prefix

    @property
    def image(self) -> str:
        return f"{self.prefix}-image"

    @property
    def cant_judge(self) -> str:
        return f"{self.prefix}-cant-judge"

    @property
    def comment(self) -> str:
        return f"{self.prefix}-comment"

    def answer(self, key: str) -> str:
        """The input of answer ``key`` (a question key, or ``rank_<key>``)."""
        return f"{self.prefix}-{_slug(key)}"

    def as_dict(self, keys: Iterable[str] = ()) -> dict[str, Any]:
        return {"column": self.column, "image": self.image, "cant_judge": self.cant_judge, "comment": self.comment,
                "answers": {k: self.answer(k) for k in keys}}


@dataclass(frozen=True)
class _Screen:
    """Ids of one screen: each field's id is ``<prefix>-<field name with dashes>`` (see :meth:`of`)."""

    prefix: str

    @classmethod
    def of(cls, prefix: str):
        return cls(prefix, **{f.name: f"{prefix}-{_slug(f.name)}" for f in fields(cls) if f.name != "prefix"})

    def as_dict(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "prefix"}

    def panel(self, i: int, group: str = "") -> PanelIds:
        """The ``i``-th panel (0-based, left to right); ``group``: the arena's judgement (one panel set each)."""
        return PanelIds(f"{self.prefix}-panel-{_slug(group) + '-' if group else ''}{i}")


@dataclass(frozen=True)
class ArenaIds(_Screen):
    signin_box: str = ""
    name: str = ""
    resume: str = ""
    access_code: str = ""
    signin: str = ""
    message: str = ""
    screen: str = ""
    who: str = ""
    modality: str = ""
    prompt: str = ""
    budget: str = ""
    examples: str = ""
    judgement: str = ""
    generate: str = ""
    generating: str = ""
    trial_prompt: str = ""
    shown: str = ""
    active: str = ""
    submit: str = ""
    reveal: str = ""
    noop: str = ""  # a hidden no-op button: the load benchmark's baseline (common.add_noop)
    guess_box: str = ""  # arena_blinding_index: the model question before the reveal (ui/guesses.py)
    guess_submit: str = ""

    def guess(self, i: int) -> str:
        """The model question of the ``i``-th panel (0-based)."""
        return f"{self.prefix}-guess-{i}"


@dataclass(frozen=True)
class StudyIds(_Screen):
    tab: str = ""
    signin_box: str = ""
    header: str = ""
    availability: str = ""
    name: str = ""
    resume: str = ""
    signin: str = ""
    message: str = ""
    screen: str = ""
    who: str = ""
    instructions: str = ""
    progress: str = ""
    prompt: str = ""
    pick: str = ""
    shown: str = ""
    active: str = ""
    marks: str = ""
    submit: str = ""
    done: str = ""
    back: str = ""
    call: str = ""  # naive → disclosed, phase 2: the call (study.design == "naive_disclosed" only)
    interlude: str = ""  # naive → disclosed: the screen between the phases, and its Continue
    interlude_ok: str = ""
    guess_box: str = ""  # blinding_index: the model question after a screen's ratings are stored (ui/guesses.py)
    guess_submit: str = ""

    def guess(self, i: int) -> str:
        """The model question of the ``i``-th panel (0-based)."""
        return f"{self.prefix}-guess-{i}"


@dataclass(frozen=True)
class AdminIds(_Screen):
    message: str = ""
    progress_tab: str = ""
    statistics_tab: str = ""
    metrics_tab: str = ""
    downloads_tab: str = ""
    study: str = ""
    refresh: str = ""
    summary: str = ""
    raters: str = ""
    per_hour: str = ""
    short: str = ""
    stats: str = ""
    metrics_note: str = ""
    metrics: str = ""
    agreement: str = ""
    copies: str = ""
    long_csv: str = ""
    wide_csv: str = ""
    parquet: str = ""
    marks_csv: str = ""
    report: str = ""
    download: str = ""

    def plot(self, i: int) -> str:
        return f"{self.prefix}-plot-{i}"


@dataclass(frozen=True)
class LandingIds(_Screen):
    title: str = ""
    demo_banner: str = ""
    tabs: str = ""
    arena_tab: str = ""
    studies_tab: str = ""
    study_tabs: str = ""


ARENA = ArenaIds.of("arena")
ADMIN = AdminIds.of("admin")
LANDING = LandingIds.of("landing")


def study(index: int) -> StudyIds:
    """The ids of the ``index``-th study's tab (0-based, in the order of ``app.studies``)."""
    return StudyIds.of(f"study-{index}")


def study_index(app, key: str) -> int:
    """Where study ``key`` sits in the page (the index :func:`study` takes)."""
    return list(app.studies).index(key)


# ---------------------------------------------------------------------------------------------- as page data


def page_data(app=None) -> dict[str, Any]:
    """The table as the rater page gets it (``window.p2pPage``): classes, fields and, with ``app``, the ids of
    every screen it shows, panels included. Depends only on the configuration, never on a trial."""
    data: dict[str, Any] = {"classes": {**_constants(Css), **_constants(ScriptCss)}, "fields": _constants(Field),
                            "attributes": _constants(Markup),
                            "ids": {"landing": LANDING.as_dict()}}
    if app is None:
        return data
    cfg = app.config
    n_arena = max(len(cfg.models_for(m)) for m in cfg.modalities())
    arena = ARENA.as_dict() | {"panels": {}}
    if cfg.arena_blinding_index:
        arena["guesses"] = [ARENA.guess(i) for i in range(n_arena)]
    for j in cfg.arena_judgements:
        keys = [("rank_" if j == "ranking" and q.kind == "scale" else "") + q.key for q in LIVE_QUESTIONS
                if q.kind in ("scale", "multi")]
        arena["panels"][j] = [ARENA.panel(i, j).as_dict(keys) for i in range(n_arena)]
    studies = []
    for i, st in enumerate(app.studies.values()):
        n = max(item.n_panels for item in st.items())
        keys = [("rank_" if st.design == "ranking" and q.kind == "scale" else "") + q.key for q in st.questions
                if q.kind in ("scale", "multi")]
        ids = study(i)
        studies.append(ids.as_dict() | {"panels": [ids.panel(p).as_dict(keys) for p in range(n)]}
                       | ({"guesses": [ids.guess(p) for p in range(n)]} if st.blinding_index else {}))
    data["ids"] |= {"arena": arena, "studies": studies}
    return data


def page_head(app=None) -> str:
    """A ``<script>`` for the page's head that sets ``window.p2pPage`` to :func:`page_data`."""
    text = json.dumps(page_data(app), sort_keys=True).replace("</", "<\\/")
    return f"<script>window.p2pPage = {text};</script>"
