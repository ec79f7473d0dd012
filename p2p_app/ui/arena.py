"""The live blinded arena: sign in, type a prompt, rate every model's image blind, see the reveal."""

from __future__ import annotations

import html

import gradio as gr

from ..service import LIVE_QUESTIONS, PRESENTER_PROMPTS, P2PApp, UserError
from .common import (
    NEXT_ITEM, add_noop, address_of, build_panels, guarded_method, md_escape, page_field, page_measures, read_answers,
    resume_note, show_trial,
)
from .guesses import GuessBox, option_choices
from .page import ARENA, Css, Field

MODALITY_LABELS = {"colonoscopy": "Colonoscopy", "radiology": "Radiology"}
JUDGEMENT_LABELS = {"scores": "Scores (1-5 for each image)", "ranking": "Ranking (order the images best to worst)"}
GENERATING_TEXT = "<p>Making the images… the new trial appears here when every model's image is ready.</p>"
COUNTER_HINT = "The prompt's length in tokens of the models' text encoders shows here as you type."


def build_arena(app: P2PApp) -> "Arena":
    """Render the arena inside the current Blocks context."""
    return Arena(app)


class Arena:
    """The live arena inside the current Blocks context. Like Gradio's ``ChatInterface``: ``__init__`` lays the
    screen out from small methods and wires its events; the handlers (``on_*``) are methods a test can call with
    plain values, and each returns the component updates. A handler only turns an event into one service call."""

    def __init__(self, app: P2PApp):
        cfg = app.config
        self.app = app
        self.modalities = cfg.modalities()
        self.n_panels = max(len(cfg.models_for(m)) for m in self.modalities)
        # setting arena_judgement: scores, ranking, or the rater's choice per trial
        self.judgements = cfg.arena_judgements
        self.session = gr.State(None)  # RaterSession, server-side only
        self.trial = gr.State(None)  # current trial id, server-side only
        self.n_shown = gr.State(0)
        self.judged = gr.State(self.judgements[0])  # the shown trial's judgement, server-side only
        self.trial_modality = gr.State(None)  # the shown trial's modality (its model question's options)
        self._sign_in_box()
        self.message = gr.Markdown(visible=False, elem_classes=[Css.MESSAGE],  # hidden again on success: notices.js
                                   elem_id=ARENA.message)  # fmt: skip
        with gr.Column(visible=False, elem_classes=[Css.SCREEN], elem_id=ARENA.screen) as self.arena_box:
            self.who = gr.Markdown(elem_id=ARENA.who)  # a screen: assets/activity.js
            self._prompt_row()
            self._trial_area()
        self._wire()
        add_noop()

    # ---------------------------------------------------------------------------------------------- layout
    def _sign_in_box(self) -> None:
        with gr.Column(visible=True, elem_id=ARENA.signin_box) as self.signin_box:
            gr.Markdown(
                "### Sign in\nType your name to start (you get a personal resume code), or your resume code to continue."
            )
            self.name = gr.Textbox(label="Your name", max_length=100, elem_id=ARENA.name)
            self.resume = gr.Textbox(label="Resume code", type="password", max_length=100, elem_id=ARENA.resume)
            self.code = gr.Textbox(label="Access code", type="password", visible=bool(self.app.config.access_code),
                                   elem_id=ARENA.access_code)  # fmt: skip
            self.signin_btn = gr.Button("Sign in", variant="primary", elem_id=ARENA.signin)

    def _prompt_row(self) -> None:
        with gr.Row():
            self.modality = gr.Radio(choices=[(MODALITY_LABELS[m], m) for m in self.modalities],
                                     value=self.modalities[0], label="Modality", scale=1, elem_id=ARENA.modality)
            with gr.Column(scale=4):
                # no max_length: the box would cut a paste silently; the counter below says what is too long
                self.prompt = gr.Textbox(
                    label="Prompt",
                    placeholder="Describe the image, e.g. colonoscopy image with a single sessile polyp of 5-10 mm",
                    lines=2, elem_classes=[Css.PROMPT], elem_id=ARENA.prompt,
                )
                self.budget = gr.Markdown(PRESENTER_PROMPTS if self.app.presenter else COUNTER_HINT,
                                          elem_classes=[Css.BUDGET], elem_id=ARENA.budget)  # fmt: skip
        self.examples = gr.Dataset(components=[self.prompt],
                                   samples=[[p] for p in self.app.arena_examples(self.modalities[0])],
                                   label="Example prompts (click to use)", elem_id=ARENA.examples)  # fmt: skip
        self.judgement = None
        if len(self.judgements) > 1:
            self.judgement = gr.Radio(choices=[(JUDGEMENT_LABELS[j], j) for j in self.judgements],
                                      value=self.judgements[0], label="How to judge the next trial",
                                      elem_id=ARENA.judgement)  # fmt: skip

    def _trial_area(self) -> None:
        # new trial: in view (NEXT_ITEM); off while a trial is being made, so one press makes one trial
        self.generate_btn = gr.Button("Generate", variant="primary", elem_classes=[NEXT_ITEM, Css.GENERATE],
                                      elem_id=ARENA.generate)  # fmt: skip
        # shown while a trial is being made: a block of its own height carries Gradio's progress bar
        self.generating = gr.HTML("", visible=False, elem_classes=[Css.GENERATING], elem_id=ARENA.generating)
        # scrolled to the top after Generate
        self.trial_prompt = gr.Markdown(elem_classes=[Css.TRIAL_TOP], elem_id=ARENA.trial_prompt)
        # one panel set per judgement on offer (ranking: a rank dropdown per question, no "can't judge")
        self.panel_sets = {
            j: build_panels(self.n_panels, LIVE_QUESTIONS, with_cant_judge=j == "scores", rank=j == "ranking",
                            ids=lambda i, j=j: ARENA.panel(i, j))
            for j in self.judgements
        }  # fmt: skip
        self.panels = [p for widgets in self.panel_sets.values() for p in widgets]
        # the trial on screen, sent back with Submit (replays name an old one)
        self.shown_field = page_field(Field.SHOWN, ARENA.shown)
        self.active_field = page_field(Field.ACTIVE, ARENA.active)  # seconds visible and not idle, measured by the page
        self.submit_btn = gr.Button("Submit ratings (Ctrl+Enter)", variant="primary", interactive=False,
                                    elem_classes=[Css.SUBMIT], elem_id=ARENA.submit)  # fmt: skip
        # arena_blinding_index: "Which model made this image?" after the ratings, before the reveal
        self.guesses = (GuessBox(option_choices(self.app.arena_guess_options(self.modalities[0])), self.n_panels,
                                 ARENA) if self.app.config.arena_blinding_index else None)  # fmt: skip
        # scrolled into view when it fills: notices.js
        self.reveal_box = gr.Markdown(elem_classes=[Css.REVEAL], elem_id=ARENA.reveal)

    # -------------------------------------------------------------------------------------------- handlers
    @guarded_method
    def on_sign_in(self, name_value: str, resume_value: str, code_value: str, request: gr.Request = None) -> dict:
        rater = self.app.sign_in(name_value, code_value, resume_code=resume_value,
                                 address=address_of(self.app, request))  # fmt: skip
        note = f"\n\n{resume_note(rater.new_code)}" if rater.new_code else ""
        return {
            self.session: rater.without_code(),  # the clear code is shown once, never kept
            self.signin_box: gr.Column(visible=False),
            self.arena_box: gr.Column(visible=True),
            self.resume: gr.Textbox(value=""),
            self.who: gr.Markdown(
                f"Signed in as **{md_escape(rater.name)}**. Images are shown in random order; models are hidden.{note}"
            ),
            self.message: gr.Markdown(visible=False),
        }

    def on_modality(self, modality_value: str) -> dict:
        return {self.examples: gr.Dataset(samples=[[p] for p in self.app.arena_examples(modality_value)])}

    def on_prompt(self, modality_value: str, prompt_value: str) -> dict:
        """The live counter: tokens of the strictest text encoder of the modality's models, or why not."""
        try:
            text = self.app.prompt_budget(modality_value, prompt_value).describe()
        except UserError as exc:
            text = f"⚠️ {exc}"
        return {self.budget: gr.Markdown(text)}

    def on_example(self, sample: list) -> dict:
        return {self.prompt: gr.Textbox(value=sample[0] if sample else "")}

    @guarded_method
    def on_generate(self, rater, modality_value: str, prompt_value: str, mode=None, progress=gr.Progress(),
                    request: gr.Request = None) -> dict:  # fmt: skip
        mode = self.app.check_judgement(self.judgements[0] if mode is None else mode)
        shown = self.app.live_generate(rater, modality_value, prompt_value,
                                       progress=lambda f, d: progress(f, desc=d),
                                       address=address_of(self.app, request))  # fmt: skip
        shown_panels = {}
        for j, widgets in self.panel_sets.items():
            shown_panels |= show_trial(widgets, shown if j == mode else None)
        return {
            self.trial: shown.trial_id,
            self.judged: mode,
            self.trial_modality: modality_value,
            self.shown_field: gr.Textbox(value=str(shown.trial_id)),
            self.active_field: gr.Textbox(value=""),
            self.n_shown: len(shown.panels),
            self.trial_prompt: gr.Markdown(f"**Prompt:** {html.escape(shown.prompt)}"),
            self.submit_btn: gr.Button(interactive=True),
            self.reveal_box: gr.Markdown(""),
            self.message: gr.Markdown(visible=False),
            **shown_panels,
            **(self.guesses.hide() if self.guesses else {}),
        }

    @guarded_method
    def on_submit(self, data: dict) -> dict:
        answers = read_answers(self.panel_sets[data[self.judged]], data, data[self.n_shown])
        active, _ = page_measures(data[self.active_field])
        result = self.app.submit(data[self.session], data[self.trial], answers, shown=data[self.shown_field],
                                 judgement=data[self.judged], active_seconds=active)  # fmt: skip
        if self.guesses is not None and result.status == "stored":  # the model question, then the reveal
            modality = data[self.trial_modality]
            return {self.submit_btn: gr.Button(interactive=False), self.message: gr.Markdown(visible=False),
                    self.reveal_box: gr.Markdown(f"✅ {result.message}"),
                    **self.guesses.ask(data[self.n_shown], option_choices(self.app.arena_guess_options(modality)))}
        return self._after(result)

    @guarded_method
    def on_guess(self, data: dict) -> dict:
        result = self.app.submit_arena_guesses(data[self.session], data[self.trial],
                                               self.guesses.read(data, data[self.n_shown]))
        return self._after(result) | self.guesses.hide()

    def _after(self, result) -> dict:
        """Ratings (and model guesses) stored: the message, the reveal, what to do next."""
        lines = [f"✅ {result.message}"]
        if result.reveal:
            lines.append("\n".join(f"- **{label}** was made by `{model}`" for label, model in result.reveal))
        lines.append("Type a new prompt and press Generate to rate again.")
        return {
            self.submit_btn: gr.Button(interactive=False),
            self.reveal_box: gr.Markdown("\n\n".join(lines)),
            self.message: gr.Markdown(visible=False),
        }

    def on_generate_start(self) -> dict:
        """At once, before any work: Generate off (no second trial from a second press) and the progress block on."""
        return {self.generate_btn: gr.Button(interactive=False),
                self.generating: gr.HTML(GENERATING_TEXT, visible=True)}

    def on_generate_end(self) -> dict:
        return {self.generate_btn: gr.Button(interactive=True), self.generating: gr.HTML("", visible=False)}

    # ---------------------------------------------------------------------------------------------- events
    def _wire(self) -> None:
        private = dict(api_visibility="private")
        signin_outputs = [self.session, self.signin_box, self.arena_box, self.resume, self.who, self.message]
        for trigger in (self.signin_btn.click, self.name.submit, self.resume.submit):
            trigger(self.on_sign_in, [self.name, self.resume, self.code], signin_outputs, **private)
        self.modality.change(self.on_modality, self.modality, self.examples, queue=False, **private)
        self.examples.click(self.on_example, self.examples, self.prompt, queue=False, **private)
        for trigger in (self.prompt.change, self.modality.change):  # while typing; always_last drops superseded keys
            trigger(self.on_prompt, [self.modality, self.prompt], self.budget, queue=False,
                    trigger_mode="always_last", show_progress="hidden", **private)  # fmt: skip
        self._wire_generate()
        submit_inputs = {self.session, self.trial, self.judged, self.trial_modality, self.shown_field, self.active_field, self.n_shown,
                         *(w for p in self.panels for w in p.all_inputs())}  # fmt: skip
        after = [self.submit_btn, self.reveal_box, self.message, *(self.guesses.outputs() if self.guesses else [])]
        self.submit_btn.click(self.on_submit, submit_inputs, after, concurrency_limit=None, **private)
        if self.guesses is not None:
            self.guesses.submit.click(self.on_guess, {self.session, self.trial, self.n_shown, *self.guesses.radios},
                                      after, concurrency_limit=None, **private)  # fmt: skip

    def _wire_generate(self) -> None:
        """Generate: (1) at once, no queue: the button off, the progress block on; (2) the trial, its progress drawn
        on that block; (3) the button back on, whatever (2) ended with. The new images replace the old only once,
        in (2)."""
        panel_outputs = [c for p in self.panels for c in (p.column, p.image, *p.all_inputs())]
        toggled = [self.generate_btn, self.generating]
        self.generate_btn.click(
            self.on_generate_start, None, toggled, api_visibility="private", queue=False, show_progress="hidden",
        ).then(
            self.on_generate,
            [self.session, self.modality, self.prompt, *([self.judgement] if self.judgement is not None else [])],
            [self.trial, self.judged, self.trial_modality, self.shown_field, self.active_field, self.n_shown, self.trial_prompt,
             self.submit_btn, self.reveal_box, self.message, *panel_outputs,
             *(self.guesses.outputs() if self.guesses else [])],
            api_visibility="private",
            show_progress_on=[self.generating],
            # as many trials at once as there are devices; the backend's per-device locks keep two pipelines off one
            # GPU
            concurrency_limit=self.app.generation_slots,
            concurrency_id="generate",
        ).then(self.on_generate_end, None, toggled, api_visibility="private", queue=False, show_progress="hidden")
