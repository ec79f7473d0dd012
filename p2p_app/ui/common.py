"""Pieces shared by the rater screens: the rating panel widgets and error handling for callbacks."""

from __future__ import annotations

import functools
import html
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import gradio as gr

from ..limits import client_address
from ..service import DATABASE_UNREACHABLE, P2PApp, ShownTrial, UserError, database_unreachable
from ..storage import AccessDenied, StorageError
from ..blinding import panel_label
from ..study import Question
from ..tidy import CHOSEN_REAL, RANK_PREFIX
from .images import BlindImage, presentation_url
from .page import ARENA, Css, PanelIds, page_data

log = logging.getLogger(__name__)

ASSETS = Path(__file__).parent / "assets"


def page_css() -> str:
    """Every stylesheet in ``assets/`` (sorted by name), one after another."""
    return "\n".join(f.read_text(encoding="utf-8") for f in sorted(ASSETS.glob("*.css")))


def page_js(app: P2PApp | None = None) -> str:
    """The rater page's script: every ``assets/*.js`` (sorted by name), each in its own scope, run once when the
    page has loaded (Gradio's ``js=`` takes one function). First it sets ``window.p2pPage``: the page's declared
    parts (``page.page_data``: ids, classes, fields), unless the page's head has set it already."""
    data = json.dumps(page_data(app), sort_keys=True).replace("</", "<\\/")
    parts = [f"// {f.name}\n(() => {{\n{f.read_text(encoding='utf-8')}}})();" for f in sorted(ASSETS.glob("*.js"))]
    return "() => {\n" + f"window.p2pPage = window.p2pPage || {data};\n" + "\n".join(parts) + "\n}"


def viewer_tools(marks: bool = False, confidence: bool = False) -> str:
    """The toolbar above a trial's panels (zoom, window/level; driven by ``assets/zoom.js``; with ``marks`` the
    artifact-marking buttons of ``assets/marks.js``, with ``confidence`` its confidence chooser), as markup."""
    tools = (ASSETS / "viewer.html").read_text(encoding="utf-8")
    mark_tools = (ASSETS / "marks.html").read_text(encoding="utf-8").replace(
        "<!-- confidence -->", (ASSETS / "marks-confidence.html").read_text(encoding="utf-8") if confidence else "")
    return tools.replace("<!-- marks -->", mark_tools if marks else "")


def page_field(kind: str, elem_id: str | None = None) -> gr.Textbox:
    """A field the page's scripts read or write (``page.Field``): ``p2p-shown`` (the trial on screen),
    ``p2p-active`` (active seconds, assets/activity.js), ``p2p-marks`` (artifact marks as JSON, assets/marks.js).
    Rendered so the scripts reach it, never seen (CSS); it holds nothing that names a model. ``elem_id``: its
    declared id (``page.py``)."""
    return gr.Textbox(value="", show_label=False, container=False, elem_classes=[Css.FIELD_HIDDEN, kind],
                      elem_id=elem_id)


def page_measures(active_text: Any, marks_text: Any = "") -> tuple[float | None, dict[int, Any] | None]:
    """The page's active-time and marks fields as the service takes them (``active_seconds``, ``marks``): empty
    means not measured / no marks. What the page sent is only decoded here; the service checks the values."""
    active: float | None = None
    if isinstance(active_text, str) and active_text.strip():
        try:
            active = float(active_text)
        except ValueError:
            raise UserError(f"The page sent an unreadable active time ({active_text[:40]!r}); nothing was saved. "
                            "Reload the page and answer again.") from None
    if not isinstance(marks_text, str) or not marks_text.strip():
        return active, None
    try:
        pairs = json.loads(marks_text, object_pairs_hook=list)  # every key as sent, duplicates included
        if not isinstance(pairs, list) or not all(isinstance(p, tuple) for p in pairs):
            raise ValueError
        listed = [(int(position), points) for position, points in pairs]
    except (ValueError, TypeError):
        raise UserError("The page sent unreadable marks; nothing was saved. Reload the page and mark again.") from None
    marks: dict[int, Any] = {}
    for position, points in listed:  # "1" and "01" (or "1" twice) name one image: never merge them silently
        if position in marks:
            raise UserError(f"The page sent the marks of image position {position} twice; nothing was saved. "
                            "Reload the page and mark again.")
        marks[position] = points
    return active, marks


def marks_text(marks: Mapping[int, Sequence[Sequence[float]]]) -> str:
    """Stored marks (position → points: (x, y), or (x, y, confidence)) as the page's ``p2p-marks`` field shows
    them."""
    return json.dumps({str(p): [[float(v[0]), float(v[1]), *(int(c) for c in v[2:])] for v in pts]
                       for p, pts in sorted(marks.items()) if pts})


def address_of(app: P2PApp, request: gr.Request | None) -> str:
    """The client's address for the per-address limits ("" when unknown): the TCP peer, or behind a trusted proxy
    the proxy's last X-Forwarded-For hop (setting ``behind_proxy``)."""
    if request is None:
        return ""
    client = getattr(request, "client", None)
    host = getattr(client, "host", None) or ""
    try:
        headers = dict(request.headers or {})
    except (TypeError, ValueError):
        headers = {}
    return client_address((host, 0) if host else None, headers, app.config.trusts_forwarded_for)


# The class of a button that puts the next item on screen (Submit, Previous item, Generate): once the screen shows
# other images than when it was pressed, assets/reading.js brings the new item into view and focuses its first scale.
NEXT_ITEM = Css.NEXT_ITEM


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def md_escape(text: str) -> str:
    """``text`` safe to put in a gr.Markdown: HTML escaped and Markdown punctuation backslash-escaped, so a name
    like ``<img src=x onerror=…>`` or ``[x](javascript:…)`` shows as typed instead of becoming markup."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(text, quote=False))


def resume_note(code: str, where: str = "") -> str:
    """The one-time message with a new rater's personal resume code (Markdown)."""
    link = f" (or open this page as `{where}?token={code}`)" if where else ""
    return (
        f"**Your personal resume code: `{code}`** — keep it. To come back as you, type it in \"Resume code\"{link}. "
        "It is shown only now; typing your name again makes a new, separate rater."
    )


def add_noop(elem_id: str = ARENA.noop) -> None:
    """A hidden button whose click is a true no-op (private, no inputs, no outputs, no state): the baseline the
    load benchmark (benchmarks/bench_load.py) divides submit round trips by."""
    btn = gr.Button("p2p-noop", visible=False, elem_id=elem_id)
    btn.click(lambda: None, None, None, api_visibility="private", concurrency_limit=None, show_progress="hidden")


def choices_for(q: Question) -> list[tuple[str, int]]:
    return [(f"{value} · {label}", value) for value, label in q.levels]


@dataclass
class PanelWidgets:
    """One blinded panel: image + one input per question + "can't judge" + comment."""

    column: gr.Column
    image: gr.Image
    inputs: dict[str, gr.components.Component]
    cant_judge: gr.Checkbox
    comment: gr.Textbox

    def all_inputs(self) -> list[gr.components.Component]:
        return [*self.inputs.values(), self.cant_judge, self.comment]

    def read(self, data: dict) -> dict[str, Any]:
        out: dict[str, Any] = {key: data[widget] for key, widget in self.inputs.items()}
        out["cant_judge"] = data[self.cant_judge]
        out["comment"] = data[self.comment]
        return out

    def show(self, label: str | None, path: str | None, answers: dict | None = None) -> dict:
        """Updates that show ``path`` (a presentation URL; None hides the panel) with the given stored answers."""
        answers = answers or {}
        updates: dict = {
            self.column: gr.Column(visible=path is not None),
            self.image: gr.Image(value=path, label=label or ""),
            self.cant_judge: gr.Checkbox(value=bool(answers.get("cant_judge"))),
            self.comment: gr.Textbox(value=answers.get("comment") or ""),
        }
        for key, widget in self.inputs.items():
            empty = [] if isinstance(widget, gr.CheckboxGroup) else None
            value = answers.get(key)
            updates[widget] = widget.__class__(value=empty if value is None else value)
        return updates


def build_panels(
    n: int, questions: Sequence[Question], with_cant_judge: bool = True, rank: bool = False, marks: bool = False,
    ids: Callable[[int], PanelIds] | None = None, mark_confidence: bool = False,
) -> list[PanelWidgets]:
    """``n`` panels; ``rank`` (the ranking design): each scale question is a rank dropdown ``rank_<key>``
    (1 = best, 1..n) instead of a radio of scores; the service refuses a rank given twice. ``marks``: the toolbar
    offers artifact marking (assets/marks.js; the screen needs a ``page_field("p2p-marks")``), with
    ``mark_confidence`` a confidence 1-5 per mark. ``ids``: panel
    index → its declared ids (``page.py``, e.g. ``ARENA.panel``)."""
    panels: list[PanelWidgets] = []
    # the viewer (assets/zoom.js): one zoom/pan and window/level state for every panel image inside .p2p-viewer
    with gr.Column(elem_classes=[Css.VIEWER]):
        gr.HTML(viewer_tools(marks, mark_confidence), elem_classes=[Css.VIEWER_TOOLS], js_on_load=None)
        with gr.Row(equal_height=False, elem_classes=[Css.PANELS]):
            for i in range(n):
                panels.append(_panel(i, n, questions, with_cant_judge, rank, ids(i) if ids else None))
    return panels


def _panel(i: int, n: int, questions: Sequence[Question], with_cant_judge: bool, rank: bool,
           ids: PanelIds | None) -> PanelWidgets:  # fmt: skip
    def id_of(part: str) -> str | None:
        return None if ids is None else getattr(ids, part)

    def answer_id(key: str) -> str | None:
        return None if ids is None else ids.answer(key)

    with gr.Column(visible=False, min_width=220, elem_classes=[Css.PANEL], elem_id=id_of("column")) as col:
        # shown at its own pixel size at most (never upscaled by default; assets/reading.css)
        image = BlindImage(label=f"Image {chr(65 + i)}", type="filepath", format="png", interactive=False,
                           buttons=["fullscreen"], elem_classes=[Css.IMAGE], elem_id=id_of("image"))  # fmt: skip
        inputs: dict[str, gr.components.Component] = {}
        for q in questions:
            if q.kind == "scale" and rank:
                key = RANK_PREFIX + q.key
                inputs[key] = gr.Dropdown(choices=list(range(1, n + 1)), value=None, label=f"{q.label} Rank (1 = best)",
                                          elem_id=answer_id(key))  # fmt: skip
            elif q.kind == "scale":
                inputs[q.key] = gr.Radio(choices=choices_for(q), label=q.label, value=None, elem_id=answer_id(q.key))
            elif q.kind == "multi":
                inputs[q.key] = gr.CheckboxGroup(choices=list(q.options), label=q.label, value=[],
                                                 elem_id=answer_id(q.key))  # fmt: skip
        cant = gr.Checkbox(label="Can't judge / image failed to load", value=False, visible=with_cant_judge,
                           elem_id=id_of("cant_judge"))  # fmt: skip
        comment = gr.Textbox(label="Comment (optional)", lines=1, max_lines=4, elem_id=id_of("comment"))
    return PanelWidgets(col, image, inputs, cant, comment)


def show_trial(panels: Sequence[PanelWidgets], trial: ShownTrial | None) -> dict:
    updates: dict = {}
    shown = list(trial.panels) if trial else []
    for i, widgets in enumerate(panels):
        if i < len(shown):
            updates |= widgets.show(shown[i].label, presentation_url(shown[i].token), trial.answers.get(i + 1))
        else:
            updates |= widgets.show(None, None)
    return updates


def read_answers(
    panels: Sequence[PanelWidgets], data: dict, n: int, pick: gr.components.Component | None = None
) -> dict[int, dict[str, Any]]:
    """Position → answers; with ``pick`` (forced choice) the screen's pick is ``answers[0]["chosen_real"]``."""
    out: dict[int, dict[str, Any]] = {i + 1: panels[i].read(data) for i in range(n)}
    if pick is not None:
        out[0] = {CHOSEN_REAL: data[pick]}
    return out


def build_pick(n: int, elem_id: str | None = None) -> gr.Radio:
    """Forced choice: one radio over the panel labels (nothing in it says which panel is real or a catch)."""
    return gr.Radio(choices=[panel_label(p) for p in range(1, n + 1)], value=None, label="Which image is real?",
                    elem_id=elem_id)


def guarded(message_box: gr.components.Component) -> Callable:
    """Turn domain errors into a message for the person instead of an error page; nothing else changes."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except (UserError, StorageError) as exc:
                return _tell(message_box, "⚠️", str(exc))
            except AccessDenied as exc:
                return _tell(message_box, "⛔", str(exc))
            except Exception as exc:  # noqa: BLE001 - the person gets a message, the log gets the trace
                if database_unreachable(exc):
                    log.error("the database cannot be reached (%s: %s); the person was asked to try again",
                              type(exc).__name__, str(exc).splitlines()[0][:200])
                    return _tell(message_box, "⚠️", DATABASE_UNREACHABLE)
                log.exception("unexpected error in %s", fn.__name__)
                return _tell(
                    message_box, "⚠️",
                    "Something went wrong on the server. Try again: whatever was already saved stays saved, "
                    "and an item is never stored twice.",
                )

        return inner

    return wrap


def guarded_method(fn: Callable) -> Callable:
    """:func:`guarded` for a screen's handler method: the message box is the screen's ``self.message``."""

    @functools.wraps(fn)
    def inner(self: Any, *args: Any, **kwargs: Any) -> Any:
        return guarded(self.message)(fn)(self, *args, **kwargs)

    return inner


def _tell(message_box: gr.components.Component, icon: str, text: str) -> dict:
    """Show ``text`` in the page's message box and as a pop-up: the box sits at the top of a long page, out of
    sight of someone who pressed Submit at the bottom; the pop-up is seen wherever they are."""
    gr.Warning(text)
    return {message_box: gr.Markdown(f"{icon} {text}", visible=True)}
