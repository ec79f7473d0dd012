"""Reader-study screens: sign in (name or personal invite link), work through the assigned items, resume."""

from __future__ import annotations

import html

import gradio as gr

from ..blinding import panel_label
from ..service import INVITE_ONLY, P2PApp, ShownTrial
from ..tidy import CHOSEN_REAL
from ..study import DISCLOSURE_TEXT, SOURCE_CALL, SOURCE_CALL_KEY, UNUSUAL, StudyDefinition, study_key
from .common import (
    NEXT_ITEM, address_of, build_panels, build_pick, choices_for, guarded_method, marks_text, md_escape, page_field,
    page_measures, read_answers, resume_note, show_trial,
)
from .guesses import GuessBox, guess_choices
from .page import LANDING, Css, Field, StudyIds, study as study_ids


def _progress_html(shown: ShownTrial) -> str:
    """The progress bar: the real items done; during the practice block, the practice items instead."""
    if shown.practice:
        total, done = shown.practice_total, shown.practice_done
        text = f"Practice item {shown.practice_number} of {total}: not counted"
    else:
        total, done = shown.total, shown.done
        text = f"{done} of {total} items done ({0 if not total else round(100 * done / total)}%)"
    return f"<div><progress max='{total or 1}' value='{done}' style='width:100%'></progress><div>{text}</div></div>"


def _practice_note(shown: ShownTrial) -> str:
    if not shown.practice:
        return ""
    return (f"**Practice item {shown.practice_number} of {shown.practice_total}** — answer it like any other; it "
            "is not counted in the results.\n\n")


def _picked(shown: ShownTrial) -> str | None:
    """The stored pick of a reopened forced-choice item (its panel label), None for a new one."""
    for position, answers in shown.answers.items():
        if answers.get(CHOSEN_REAL) == 1:
            return panel_label(position)
    return None


def build_study(app: P2PApp, demo: gr.Blocks) -> list["StudyScreen"]:
    """One tab per study; a ``?token=`` link signs its rater in to the right study on page load."""
    studies = list(app.studies.values())
    tab_ids = {study_key(s): study_ids(i).tab for i, s in enumerate(studies)}
    screens = []
    with gr.Tabs(elem_id=LANDING.study_tabs) as tabs:
        for i, st in enumerate(studies):
            with gr.Tab(st.title, id=tab_ids[study_key(st)], elem_id=study_ids(i).tab):
                screens.append(StudyScreen(app, st, study_ids(i)))

    def on_load(request: gr.Request) -> dict:
        query = request.query_params if request else {}
        key = app.linked_study(token=query.get("token") or "", study=query.get("study") or "",
                               address=address_of(app, request), count=False)  # counted once: ui/__init__.py
        if key is None or key not in tab_ids:
            return {tabs: gr.Tabs()}
        return {tabs: gr.Tabs(selected=tab_ids[key])}

    demo.load(on_load, None, tabs, api_visibility="private", queue=False)
    for screen in screens:
        screen.attach(demo)
    return screens


class StudyScreen:
    """One study's screens (sign in, the items, done) inside the current Blocks context, with the ids ``ids``.
    Like Gradio's ``ChatInterface``: ``__init__`` lays them out from small methods and wires the events; the
    handlers (``on_*``) are methods a test can call with plain values, each returning the component updates. A
    handler only turns an event into one service call."""

    def __init__(self, app: P2PApp, st: StudyDefinition, ids: StudyIds):
        self.app, self.st, self.ids = app, st, ids
        self.n_panels = max(item.n_panels for item in st.items())
        self.forced_choice = st.design == "forced_choice"
        self.two_phase = st.design == "naive_disclosed"
        self.phase = gr.State("")  # naive → disclosed: the phase of the item on screen
        self.session = gr.State(None)
        self.trial = gr.State(None)
        self.n_shown = gr.State(0)
        self.position = gr.State(None)  # order index of the item on screen (None when all are done)
        self.reopened = gr.State(False)  # the item on screen is an answered one this session reopened to change
        self.guess_trial = gr.State(None)  # blinding_index: the stored trial whose model question is on screen
        self._sign_in_box()
        # hidden again on success: notices.js
        self.message = gr.Markdown(visible=False, elem_classes=[Css.MESSAGE], elem_id=ids.message)
        self._work_box()
        self._interlude()
        self.done_box = gr.Markdown(visible=False, elem_id=ids.done)
        self.back_btn = gr.Button("← Previous item (change an answer)", visible=False, size="sm",
                                  elem_classes=[NEXT_ITEM], elem_id=ids.back)  # fmt: skip
        self._wire()

    # ---------------------------------------------------------------------------------------------- layout
    def _sign_in_box(self) -> None:
        st, ids = self.st, self.ids
        invite = (
            "Open your personal invite link; or type your name to start (you get a personal resume code), "
            "or your resume code to continue." if st.open else INVITE_ONLY
        )
        if self.two_phase:  # phase 1 never mentions models, not even the live arena's
            invite = invite.split(" Anyone can try the models")[0]
        with gr.Column(elem_id=ids.signin_box) as self.signin_box:
            self.header = gr.Markdown(f"### {html.escape(st.title)}\n{invite}", elem_id=ids.header)
            # "being prepared: 37 / 114 images" while start-up prepares the study
            self.availability = gr.Markdown(elem_id=ids.availability)
            self.availability_timer = gr.Timer(2.0)
            self.name = gr.Textbox(label="Your name", max_length=100, visible=st.open, elem_id=ids.name)
            self.resume = gr.Textbox(label="Resume code", max_length=100, visible=st.open, type="password",
                                     elem_id=ids.resume)  # fmt: skip
            self.signin_btn = gr.Button("Start / continue", variant="primary", visible=st.open, elem_id=ids.signin)

    def _work_box(self) -> None:
        st, ids = self.st, self.ids
        with gr.Column(visible=False, elem_classes=[Css.SCREEN], elem_id=ids.screen) as self.work_box:
            self.who = gr.Markdown(elem_id=ids.who)  # a screen: assets/activity.js
            with gr.Accordion("Instructions", open=False, elem_classes=[Css.INSTRUCTIONS],
                              elem_id=ids.instructions) as self.instructions:  # fmt: skip
                gr.Markdown(html.escape(st.instructions))
            # scrolled to the top after a submit (assets/reading.js)
            self.progress = gr.HTML(elem_classes=[Css.TRIAL_TOP], elem_id=ids.progress)
            self.prompt_md = gr.Markdown(elem_id=ids.prompt)
            if st.mark_artifacts:
                gr.Markdown("Press **Mark artifacts**, then click each spot where an image looks wrong (click a mark "
                            "again to remove it). Zoom and pan work as before." + (
                                " After placing a mark, press a key **1-5** (or its button) for how sure you are "
                                "that it is an artifact: 1 = barely suspect, 5 = certain." if st.mark_confidence
                                else ""))
            # forced choice: the screen's one pick, above the ratings (the instructions say to pick first; the panel
            # count is constant, so are the choices)
            self.pick = build_pick(self.n_panels, ids.pick) if self.forced_choice else gr.State(None)
            self.panels = build_panels(self.n_panels, st.questions, with_cant_judge=True, rank=st.design == "ranking",
                                       marks=st.mark_artifacts, ids=ids.panel,
                                       mark_confidence=st.mark_confidence)  # fmt: skip
            # the trial the page shows, sent back with Submit: a replayed or stale submit names another one
            self.shown_field = page_field(Field.SHOWN, ids.shown)
            # seconds visible and not idle, measured by the page
            self.active_field = page_field(Field.ACTIVE, ids.active)
            # JSON, assets/marks.js
            self.marks_field = page_field(Field.MARKS, ids.marks) if st.mark_artifacts else gr.State("")
            # naive → disclosed, phase 2: the call; its label and choices come with the first phase-2 screen, so
            # nothing in the page's config mentions synthesis before the disclosure
            self.call = (gr.Radio(choices=[], value=None, visible=False, elem_id=ids.call) if self.two_phase
                         else gr.State(None))
            self.submit_btn = gr.Button("Submit and continue (Ctrl+Enter)", variant="primary",
                                        elem_classes=[NEXT_ITEM, Css.SUBMIT], elem_id=ids.submit)  # fmt: skip
            # blinding_index: "Which model do you think made this image?" once the ratings are stored
            self.guesses = GuessBox(guess_choices(st), self.n_panels, ids) if st.blinding_index else None

    def _interlude(self) -> None:
        """Naive → disclosed: the screen between the phases (its text comes with the first phase-2 screen)."""
        if not self.two_phase:
            self.interlude_box = self.interlude_md = self.interlude_btn = None
            return
        with gr.Column(visible=False, elem_id=self.ids.interlude) as self.interlude_box:
            self.interlude_md = gr.Markdown()
            self.interlude_btn = gr.Button("Continue", variant="primary", elem_id=self.ids.interlude_ok)

    def _phase_updates(self, shown: ShownTrial) -> dict:
        """Naive → disclosed: phase 1 asks the study's questions and "anything unusual?" (the comment box); phase 2
        hides them and asks the call; the first phase-2 screen waits behind the disclosure."""
        disclosed = shown.phase == "disclosed"
        updates: dict = {self.phase: shown.phase}
        for position, p in enumerate(self.panels, start=1):
            for key, w in p.inputs.items():
                value = None if disclosed else shown.answers.get(position, {}).get(key)
                empty = [] if isinstance(w, gr.CheckboxGroup) else None
                updates[w] = w.__class__(value=empty if value is None else value, visible=not disclosed)
            text = "" if disclosed else shown.answers.get(position, {}).get("comment") or ""
            updates[p.comment] = gr.Textbox(value=text, label=UNUSUAL.label, visible=not disclosed)
        stored = shown.answers.get(1, {}).get(SOURCE_CALL_KEY)
        updates[self.call] = gr.Radio(choices=choices_for(SOURCE_CALL), label=SOURCE_CALL.label, value=stored,
                                      visible=True) if disclosed else gr.Radio(choices=[], value=None, visible=False)
        updates[self.interlude_md] = gr.Markdown(f"### Before you continue\n\n{DISCLOSURE_TEXT}" if shown.disclose
                                                 else "")
        updates[self.interlude_box] = gr.Column(visible=shown.disclose)
        if shown.disclose:
            updates[self.work_box] = gr.Column(visible=False)
        return updates

    def on_continue(self) -> dict:
        """Naive → disclosed: past the disclosure to the first phase-2 screen (nothing is stored)."""
        return {self.interlude_box: gr.Column(visible=False), self.work_box: gr.Column(visible=True)}

    # -------------------------------------------------------------------------------------------- handlers
    def show_next(self, rater) -> dict:
        return self.show(self.app.next_trial(self.st, rater), rater)

    def show(self, shown: ShownTrial | None, rater) -> dict:
        """The updates that put ``shown`` on screen (None: all items are done)."""
        can_go_back = self.st.allow_answer_changes and rater is not None
        marks = self.st.mark_artifacts
        if shown is None:
            return {
                self.trial: None, self.n_shown: 0, self.position: None, self.reopened: False,
                self.shown_field: gr.Textbox(value=""),
                self.active_field: gr.Textbox(value=""),
                self.marks_field: gr.Textbox(value="") if marks else "",
                self.work_box: gr.Column(visible=False),
                self.done_box: gr.Markdown("### All items are done. Thank you!", visible=True),
                self.back_btn: gr.Button(visible=can_go_back),
                self.message: gr.Markdown(visible=False),
                **({self.interlude_box: gr.Column(visible=False)} if self.two_phase else {}),
            }  # fmt: skip
        revisiting = bool(shown.answers)
        word = "Description" if self.two_phase else "Prompt"  # naive → disclosed: nothing that says "generated"
        return {
            self.trial: shown.trial_id, self.n_shown: len(shown.panels), self.position: shown.order_index,
            self.reopened: revisiting,
            self.shown_field: gr.Textbox(value=str(shown.trial_id)),
            self.active_field: gr.Textbox(value=""),
            self.marks_field: gr.Textbox(value=marks_text(shown.marks)) if marks else "",
            self.back_btn: gr.Button(visible=can_go_back and (shown.done > 0 or revisiting)),
            self.work_box: gr.Column(visible=True),
            self.done_box: gr.Markdown(visible=False),
            self.progress: gr.HTML(_progress_html(shown)),
            self.prompt_md: gr.Markdown(
                _practice_note(shown)
                + ("*You are changing an earlier answer; changes are kept with the old answer.*\n\n" if revisiting else "")
                + f"**{word}:** {html.escape(shown.prompt)}"  # one word for every item: no tell
            ),
            self.message: gr.Markdown(visible=False),
            **({self.pick: gr.Radio(value=_picked(shown))} if self.forced_choice else {}),
            **({self.submit_btn: gr.Button(visible=True), **self.guesses.hide()} if self.guesses else {}),
            **show_trial(self.panels, shown),
            **(self._phase_updates(shown) if self.two_phase else {}),
        }  # fmt: skip

    @guarded_method
    def on_sign_in(self, name_value: str, resume_value: str, request: gr.Request = None) -> dict:
        token = (request.query_params.get("token") or "") if request else ""
        token = token or (resume_value or "")
        rater = self.app.study_sign_in(self.st, token=token, name="" if token else name_value,
                                       address=address_of(self.app, request))  # fmt: skip
        note = f"\n\n{resume_note(rater.new_code)}" if rater.new_code else ""
        rater = rater.without_code()  # the clear code is shown once, never kept
        shown = self.app.next_trial(self.st, rater)
        return {
            self.session: rater,
            self.signin_box: gr.Column(visible=False),
            self.resume: gr.Textbox(value=""),
            self.who: gr.Markdown(
                f"Signed in as **{md_escape(rater.name)}**. Your answers are saved as you go; you can close the "
                f"page and continue later.{note}"
            ),
            # open on a rater's first visit (nothing answered yet), collapsed once they have started
            self.instructions: gr.Accordion(open=shown is not None and shown.done + shown.practice_done == 0
                                            and not shown.answers),
            **self.show(shown, rater),
        }

    @guarded_method
    def on_auto_sign_in(self, request: gr.Request = None) -> dict:
        token = (request.query_params.get("token") or "") if request else ""
        linked = self.app.linked_study(token=token, address=address_of(self.app, request), count=False) if token else None
        if linked != study_key(self.st):
            return {self.message: gr.Markdown(visible=False)}  # not an invite for this study: nothing to do
        if self.app.availability(self.st):  # not open (being prepared, edited): the availability line says why, once
            return {self.message: gr.Markdown(visible=False)}
        return self.on_sign_in("", "", request)

    @guarded_method
    def on_submit(self, data: dict) -> dict:
        answers = read_answers(self.panels, data, data[self.n_shown], self.pick if self.forced_choice else None)
        if self.two_phase and data[self.phase] == "disclosed":
            answers[1][SOURCE_CALL_KEY] = data[self.call]
        active, marks = page_measures(data[self.active_field], data[self.marks_field])
        result = self.app.submit_trial(
            self.st, data[self.session], data[self.trial], answers, shown=data[self.shown_field],
            reopened=data[self.reopened], active_seconds=active, marks=marks,
        )
        if self.guesses is not None and result.status == "stored":  # the model question before the next item
            return {self.guess_trial: data[self.trial], self.submit_btn: gr.Button(visible=False),
                    self.back_btn: gr.Button(visible=False), self.message: gr.Markdown(visible=False),
                    **self.guesses.ask(data[self.n_shown])}
        updates = self.show_next(data[self.session])
        if result.status == "duplicate":  # answered elsewhere (another tab): say so instead of moving on silently
            gr.Warning(result.message)
            updates[self.message] = gr.Markdown(f"⚠️ {result.message}", visible=True)
        return updates

    @guarded_method
    def on_guess(self, data: dict) -> dict:
        self.app.submit_guesses(self.st, data[self.session], data[self.guess_trial],
                                self.guesses.read(data, data[self.n_shown]))
        return self.show_next(data[self.session])

    @guarded_method
    def on_back(self, rater, current) -> dict:
        return self.show(self.app.previous_trial(self.st, rater, current), rater)

    def on_availability_tick(self) -> dict:
        st = self.st
        text = self.app.availability(st)
        updates = {self.availability: gr.Markdown(f"*{html.escape(text)}*" if text else ""),
                   self.availability_timer: gr.Timer(active=bool(text) and self.app.readiness.busy())}
        if self.app.edited_after_freezing(st):  # for good: that one message alone, no sign-in that cannot work
            updates |= {self.header: gr.Markdown(f"### {html.escape(st.title)}"), self.name: gr.Textbox(visible=False),
                        self.resume: gr.Textbox(visible=False), self.signin_btn: gr.Button(visible=False)}
        return updates

    # ---------------------------------------------------------------------------------------------- events
    def item_outputs(self) -> list:
        """What showing an item (or the end) updates: :meth:`show`'s keys, plus the error message."""
        panel_outputs = [c for p in self.panels for c in (p.column, p.image, *p.all_inputs())]
        phase = [self.phase, self.call, self.interlude_box, self.interlude_md] if self.two_phase else []
        return [self.trial, self.n_shown, self.position, self.reopened, self.shown_field, self.back_btn, self.work_box,
                self.done_box, self.progress, self.prompt_md, self.message, self.pick, self.active_field,
                self.marks_field, *panel_outputs, *phase,
                *([self.submit_btn, self.guess_trial, *self.guesses.outputs()] if self.guesses else [])]  # fmt: skip

    def signin_outputs(self) -> list:
        # only sign-in opens or closes the instructions
        return [self.session, self.signin_box, self.resume, self.who, *self.item_outputs(), self.instructions]

    def availability_outputs(self) -> list:
        return [self.availability, self.availability_timer, self.header, self.name, self.resume, self.signin_btn]

    def _wire(self) -> None:
        private = dict(api_visibility="private")
        for trigger in (self.signin_btn.click, self.name.submit, self.resume.submit):
            trigger(self.on_sign_in, [self.name, self.resume], self.signin_outputs(), **private)
        submit_inputs = {self.session, self.trial, self.n_shown, self.reopened, self.shown_field, self.pick,
                         self.active_field, self.marks_field, *(w for p in self.panels for w in p.all_inputs()),
                         *((self.phase, self.call) if self.two_phase else ())}
        # the next item comes into view with the focus on its first scale: assets/reading.js (the NEXT_ITEM buttons)
        self.submit_btn.click(self.on_submit, submit_inputs, self.item_outputs(), concurrency_limit=None, **private)
        if self.two_phase:
            self.interlude_btn.click(self.on_continue, None, [self.interlude_box, self.work_box], queue=False,
                                     **private)  # fmt: skip
        if self.guesses is not None:
            self.guesses.submit.click(self.on_guess, {self.session, self.guess_trial, self.n_shown, *self.guesses.radios},
                                      self.item_outputs(), concurrency_limit=None, **private)
        self.back_btn.click(self.on_back, [self.session, self.position], self.item_outputs(), **private)
        self.availability_timer.tick(self.on_availability_tick, None, self.availability_outputs(), queue=False,
                                     **private)  # fmt: skip

    def attach(self, demo: gr.Blocks) -> None:
        """The page-load events (``demo``: the rater Blocks)."""
        private = dict(api_visibility="private")
        demo.load(self.on_availability_tick, None, self.availability_outputs(), queue=False, **private)
        demo.load(self.on_auto_sign_in, None, self.signin_outputs(), **private)
