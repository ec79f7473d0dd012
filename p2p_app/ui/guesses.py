"""The model question of a study with ``blinding_index`` (issue 22): after a screen's ratings are stored, "Which
model do you think made this image?" for each image, then the next item; in the arena (``arena_blinding_index``)
the same question after the ratings and before the reveal, with the modality's models.

Blinding: the choices are the study's options (``StudyDefinition.guess_options``: its models in file order, then
"A real image" where it shows real images) and "Don't know" — the same list, in the same order, on every screen and
for every rater, built once when the page is made; nothing in it depends on the screen's images. The box appears
only after the submit is acknowledged, so nothing the rater sees while rating differs in a study with the question.
"""

from __future__ import annotations

import gradio as gr

from ..analysis.blinding_index import DONT_KNOW
from ..blinding import panel_label
from ..study import REAL_MODEL, StudyDefinition
from .page import Css, StudyIds

DONT_KNOW_LABEL = "Don't know"
REAL_LABEL = "A real image"
INTRO = ("**Your ratings for this screen are saved.** One more question before the next item: which model do you "
         "think made each image? If you cannot tell, answer *Don't know* — that is a useful answer too.")


def option_choices(options) -> list[tuple[str, str]]:
    """(label, value) of the model question: "Don't know" first, then ``options`` in their order."""
    return [(DONT_KNOW_LABEL, DONT_KNOW)] + [(REAL_LABEL if o == REAL_MODEL else o, o) for o in options]


def guess_choices(st: StudyDefinition) -> list[tuple[str, str]]:
    """The study's model question: "Don't know", then the study's options in file order."""
    return option_choices(st.guess_options())


class GuessBox:
    """The model question's box inside a screen (hidden until a screen's ratings are stored); ``ids``: the
    screen's (``StudyIds`` or ``ArenaIds``: ``guess_box``, ``guess(i)``, ``guess_submit``)."""

    def __init__(self, choices: list[tuple[str, str]], n_panels: int, ids: StudyIds):
        with gr.Column(visible=False, elem_id=ids.guess_box) as self.box:
            gr.Markdown(INTRO)
            self.radios = [
                gr.Radio(choices=choices, value=None, elem_id=ids.guess(i),
                         label=(f"{panel_label(i + 1)}: which model made it?" if n_panels > 1
                                else "Which model do you think made this image?"))
                for i in range(n_panels)
            ]
            self.submit = gr.Button("Save and continue", variant="primary", elem_classes=[Css.NEXT_ITEM],
                                    elem_id=ids.guess_submit)

    def outputs(self) -> list:
        return [self.box, *self.radios]

    def ask(self, n_shown: int, choices: list[tuple[str, str]] | None = None) -> dict:
        """The updates that show the question for a screen of ``n_shown`` images (answers cleared). ``choices``:
        only the arena sends them (its modality's models); a study's never change after the page is built."""
        extra = {} if choices is None else {"choices": choices}
        return {self.box: gr.Column(visible=True),
                **{r: gr.Radio(value=None, visible=i < n_shown, **extra) for i, r in enumerate(self.radios)}}

    def hide(self) -> dict:
        return {self.box: gr.Column(visible=False)}

    def read(self, data: dict, n_shown: int) -> dict[int, object]:
        """position → the picked value (None when nothing was picked: the service says what is missing)."""
        return {i + 1: data[r] for i, r in enumerate(self.radios[:n_shown]) if data[r] is not None}
