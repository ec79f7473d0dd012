"""Reader-study screens: sign in (name or personal invite link), work through the assigned items, resume."""

from __future__ import annotations

import html

import gradio as gr

from ..blinding import panel_label
from ..service import INVITE_ONLY, P2PApp, ShownTrial
from ..tidy import CHOSEN_REAL
from ..study import StudyDefinition, study_key
from .common import (
    NEXT_ITEM, address_of, build_panels, build_pick, guarded, marks_text, md_escape, page_field, page_measures, read_answers,
    resume_note, show_trial,
)


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


def build_study(app: P2PApp, demo: gr.Blocks) -> None:
    """One tab per study; a ``?token=`` link signs its rater in to the right study on page load."""
    studies = list(app.studies.values())
    tab_ids = {study_key(s): f"study-{i}" for i, s in enumerate(studies)}
    with gr.Tabs() as tabs:
        loaders = []
        for st in studies:
            with gr.Tab(st.title, id=tab_ids[study_key(st)]):
                loaders.append(_build_one(app, st))

    def on_load(request: gr.Request) -> dict:
        query = request.query_params if request else {}
        key = app.linked_study(token=query.get("token") or "", study=query.get("study") or "",
                               address=address_of(app, request), count=False)  # counted once: ui/__init__.py
        if key is None or key not in tab_ids:
            return {tabs: gr.Tabs()}
        return {tabs: gr.Tabs(selected=tab_ids[key])}

    demo.load(on_load, None, tabs, api_visibility="private", queue=False)
    for load in loaders:
        load(demo)


def _build_one(app: P2PApp, st: StudyDefinition):
    n_panels = max(item.n_panels for item in st.items())
    session = gr.State(None)
    trial = gr.State(None)
    n_shown = gr.State(0)
    position = gr.State(None)  # order index of the item on screen (None when all are done)
    reopened = gr.State(False)  # the item on screen is an answered one this session reopened to change
    invite = (
        "Open your personal invite link; or type your name to start (you get a personal resume code), "
        "or your resume code to continue." if st.open else INVITE_ONLY
    )

    with gr.Column() as signin_box:
        header = gr.Markdown(f"### {html.escape(st.title)}\n{invite}")
        availability = gr.Markdown()  # "being prepared: 37 / 114 images" while start-up prepares the study
        availability_timer = gr.Timer(2.0)
        name = gr.Textbox(label="Your name", max_length=100, visible=st.open)
        resume = gr.Textbox(label="Resume code", max_length=100, visible=st.open, type="password")
        signin_btn = gr.Button("Start / continue", variant="primary", visible=st.open)
    message = gr.Markdown(visible=False, elem_classes=["p2p-message"])  # hidden again on success: notices.js
    with gr.Column(visible=False, elem_classes=["p2p-screen"]) as work_box:  # a screen: assets/activity.js
        who = gr.Markdown()
        with gr.Accordion("Instructions", open=False, elem_classes=["p2p-instructions"]) as instructions:
            gr.Markdown(html.escape(st.instructions))
        progress = gr.HTML(elem_classes=["p2p-trial-top"])  # scrolled to the top after a submit (assets/reading.js)
        prompt_md = gr.Markdown()
        if st.mark_artifacts:
            gr.Markdown("Press **Mark artifacts**, then click each spot where an image looks wrong (click a mark "
                        "again to remove it). Zoom and pan work as before.")
        # forced choice: the screen's one pick, above the ratings (the instructions say to pick first; the panel
        # count is constant, so are the choices)
        pick = build_pick(n_panels) if st.design == "forced_choice" else gr.State(None)
        panels = build_panels(n_panels, st.questions, with_cant_judge=True, rank=st.design == "ranking",
                              marks=st.mark_artifacts)
        # the trial the page shows, sent back with Submit: a replayed or stale submit names another one
        shown_field = page_field("p2p-shown")
        active_field = page_field("p2p-active")  # seconds visible and not idle, measured by the page
        marks_field = page_field("p2p-marks") if st.mark_artifacts else gr.State("")  # JSON, assets/marks.js
        submit_btn = gr.Button("Submit and continue (Ctrl+Enter)", variant="primary", elem_classes=[NEXT_ITEM])
    done_box = gr.Markdown(visible=False)
    back_btn = gr.Button("← Previous item (change an answer)", visible=False, size="sm", elem_classes=[NEXT_ITEM])

    guard = guarded(message)

    def show_next(rater) -> dict:
        return show(app.next_trial(st, rater), rater)

    def show(shown, rater) -> dict:
        can_go_back = st.allow_answer_changes and rater is not None
        if shown is None:
            return {
                trial: None,
                n_shown: 0,
                position: None,
                reopened: False,
                shown_field: gr.Textbox(value=""),
                active_field: gr.Textbox(value=""),
                marks_field: gr.Textbox(value="") if st.mark_artifacts else "",
                work_box: gr.Column(visible=False),
                done_box: gr.Markdown("### All items are done. Thank you!", visible=True),
                back_btn: gr.Button(visible=can_go_back),
                message: gr.Markdown(visible=False),
            }
        revisiting = bool(shown.answers)
        return {
            trial: shown.trial_id,
            n_shown: len(shown.panels),
            position: shown.order_index,
            reopened: revisiting,
            shown_field: gr.Textbox(value=str(shown.trial_id)),
            active_field: gr.Textbox(value=""),
            marks_field: gr.Textbox(value=marks_text(shown.marks)) if st.mark_artifacts else "",
            back_btn: gr.Button(visible=can_go_back and (shown.done > 0 or revisiting)),
            work_box: gr.Column(visible=True),
            done_box: gr.Markdown(visible=False),
            progress: gr.HTML(_progress_html(shown)),
            prompt_md: gr.Markdown(
                _practice_note(shown)
                + ("*You are changing an earlier answer; changes are kept with the old answer.*\n\n" if revisiting else "")
                + f"**Prompt:** {html.escape(shown.prompt)}"  # one word for every item: no tell
            ),
            message: gr.Markdown(visible=False),
            **({pick: gr.Radio(value=_picked(shown))} if st.design == "forced_choice" else {}),
            **show_trial(panels, shown),
        }

    @guard
    def on_sign_in(name_value: str, resume_value: str, request: gr.Request) -> dict:
        token = (request.query_params.get("token") or "") if request else ""
        token = token or (resume_value or "")
        rater = app.study_sign_in(st, token=token, name="" if token else name_value, address=address_of(app, request))
        note = f"\n\n{resume_note(rater.new_code)}" if rater.new_code else ""
        rater = rater.without_code()  # the clear code is shown once, never kept
        shown = app.next_trial(st, rater)
        return {
            session: rater,
            signin_box: gr.Column(visible=False),
            resume: gr.Textbox(value=""),
            who: gr.Markdown(
                f"Signed in as **{md_escape(rater.name)}**. Your answers are saved as you go; you can close the "
                f"page and continue later.{note}"
            ),
            # open on a rater's first visit (nothing answered yet), collapsed once they have started
            instructions: gr.Accordion(open=shown is not None and shown.done + shown.practice_done == 0
                                       and not shown.answers),
            **show(shown, rater),
        }

    @guard
    def on_auto_sign_in(request: gr.Request) -> dict:
        token = (request.query_params.get("token") or "") if request else ""
        linked = app.linked_study(token=token, address=address_of(app, request), count=False) if token else None
        if linked != study_key(st):
            return {message: gr.Markdown(visible=False)}  # not an invite for this study: nothing to do
        if app.availability(st):  # not open (being prepared, edited): the availability line says why, once
            return {message: gr.Markdown(visible=False)}
        return on_sign_in("", "", request)

    @guard
    def on_submit(data: dict) -> dict:
        answers = read_answers(panels, data, data[n_shown], pick if st.design == "forced_choice" else None)
        active, marks = page_measures(data[active_field], data[marks_field])
        result = app.submit_trial(
            st, data[session], data[trial], answers, shown=data[shown_field], reopened=data[reopened],
            active_seconds=active, marks=marks,
        )
        updates = show_next(data[session])
        if result.status == "duplicate":  # answered elsewhere (another tab): say so instead of moving on silently
            gr.Warning(result.message)
            updates[message] = gr.Markdown(f"⚠️ {result.message}", visible=True)
        return updates

    @guard
    def on_back(rater, current) -> dict:
        return show(app.previous_trial(st, rater, current), rater)

    panel_outputs = [c for p in panels for c in (p.column, p.image, *p.all_inputs())]
    outputs = [session, signin_box, resume, who, trial, n_shown, position, reopened, shown_field, back_btn, work_box,
               done_box, progress, prompt_md, message, pick, active_field, marks_field, *panel_outputs]
    signin_outputs = [*outputs, instructions]  # only sign-in opens or closes the instructions
    signin_btn.click(on_sign_in, [name, resume], signin_outputs, api_visibility="private")
    name.submit(on_sign_in, [name, resume], signin_outputs, api_visibility="private")
    resume.submit(on_sign_in, [name, resume], signin_outputs, api_visibility="private")
    submit_inputs = {session, trial, n_shown, reopened, shown_field, pick, active_field, marks_field,
                     *(w for p in panels for w in p.all_inputs())}
    # the next item comes into view with the focus on its first scale: assets/reading.js (the NEXT_ITEM buttons)
    submit_btn.click(on_submit, submit_inputs, outputs[4:], api_visibility="private", concurrency_limit=None)
    back_btn.click(on_back, [session, position], outputs[4:], api_visibility="private")

    def on_availability_tick() -> dict:
        text = app.availability(st)
        updates = {availability: gr.Markdown(f"*{html.escape(text)}*" if text else ""),
                   availability_timer: gr.Timer(active=bool(text) and app.readiness.busy())}
        if app.edited_after_freezing(st):  # for good: that one message alone, no sign-in that cannot work
            updates |= {header: gr.Markdown(f"### {html.escape(st.title)}"), name: gr.Textbox(visible=False),
                        resume: gr.Textbox(visible=False), signin_btn: gr.Button(visible=False)}
        return updates

    availability_outputs = [availability, availability_timer, header, name, resume, signin_btn]
    availability_timer.tick(on_availability_tick, None, availability_outputs, api_visibility="private", queue=False)

    def attach(demo: gr.Blocks) -> None:
        demo.load(on_availability_tick, None, availability_outputs, api_visibility="private", queue=False)
        demo.load(on_auto_sign_in, None, signin_outputs, api_visibility="private")

    return attach
