"""The live blinded arena: sign in, type a prompt, rate every model's image blind, see the reveal."""

from __future__ import annotations

import html

import gradio as gr

from ..service import LIVE_QUESTIONS, PRESENTER_PROMPTS, P2PApp, UserError
from .common import (
    NEXT_ITEM, add_noop, address_of, build_panels, guarded, md_escape, page_field, page_measures, read_answers,
    resume_note, show_trial,
)

MODALITY_LABELS = {"colonoscopy": "Colonoscopy", "radiology": "Radiology"}
JUDGEMENT_LABELS = {"scores": "Scores (1-5 for each image)", "ranking": "Ranking (order the images best to worst)"}
GENERATING_TEXT = "<p>Making the images… the new trial appears here when every model's image is ready.</p>"
COUNTER_HINT = "The prompt's length in tokens of the models' text encoders shows here as you type."


def build_arena(app: P2PApp) -> None:
    """Render the arena inside the current Blocks context."""
    cfg = app.config
    modalities = cfg.modalities()
    n_panels = max(len(cfg.models_for(m)) for m in modalities)

    session = gr.State(None)  # RaterSession, server-side only
    trial = gr.State(None)  # current trial id, server-side only
    n_shown = gr.State(0)
    judgements = cfg.arena_judgements  # setting arena_judgement: scores, ranking, or the rater's choice per trial
    judged = gr.State(judgements[0])  # the shown trial's judgement, server-side only

    with gr.Column(visible=True) as signin_box:
        gr.Markdown(
            "### Sign in\nType your name to start (you get a personal resume code), or your resume code to continue."
        )
        name = gr.Textbox(label="Your name", max_length=100)
        resume = gr.Textbox(label="Resume code", type="password", max_length=100)
        code = gr.Textbox(label="Access code", type="password", visible=bool(cfg.access_code))
        signin_btn = gr.Button("Sign in", variant="primary")
    message = gr.Markdown(visible=False, elem_classes=["p2p-message"])  # hidden again on success: notices.js

    with gr.Column(visible=False, elem_classes=["p2p-screen"]) as arena_box:  # a screen: assets/activity.js
        who = gr.Markdown()
        with gr.Row():
            modality = gr.Radio(
                choices=[(MODALITY_LABELS[m], m) for m in modalities],
                value=modalities[0],
                label="Modality",
                scale=1,
            )
            with gr.Column(scale=4):
                # no max_length: the box would cut a paste silently; the counter below says what is too long
                prompt = gr.Textbox(
                    label="Prompt",
                    placeholder="Describe the image, e.g. colonoscopy image with a single sessile polyp of 5-10 mm",
                    lines=2,
                    elem_classes=["p2p-prompt"],
                )
                budget = gr.Markdown(PRESENTER_PROMPTS if app.presenter else COUNTER_HINT, elem_classes=["p2p-budget"])
        examples = gr.Dataset(
            components=[prompt],
            samples=[[p] for p in app.arena_examples(modalities[0])],
            label="Example prompts (click to use)",
        )
        judgement = None
        if len(judgements) > 1:
            judgement = gr.Radio(choices=[(JUDGEMENT_LABELS[j], j) for j in judgements], value=judgements[0],
                                 label="How to judge the next trial")  # fmt: skip
        # new trial: in view (NEXT_ITEM); off while a trial is being made, so one press makes one trial
        generate_btn = gr.Button("Generate", variant="primary", elem_classes=[NEXT_ITEM, "p2p-generate"])
        # shown while a trial is being made: a block of its own height carries Gradio's progress bar
        generating = gr.HTML("", visible=False, elem_classes=["p2p-generating"])
        trial_prompt = gr.Markdown(elem_classes=["p2p-trial-top"])  # scrolled to the top after Generate
        # one panel set per judgement on offer (ranking: a rank dropdown per question, no "can't judge")
        panel_sets = {j: build_panels(n_panels, LIVE_QUESTIONS, with_cant_judge=j == "scores", rank=j == "ranking")
                      for j in judgements}  # fmt: skip
        shown_field = page_field("p2p-shown")  # the trial on screen, sent back with Submit (replays name an old one)
        active_field = page_field("p2p-active")  # seconds visible and not idle, measured by the page
        submit_btn = gr.Button("Submit ratings (Ctrl+Enter)", variant="primary", interactive=False)
        reveal_box = gr.Markdown(elem_classes=["p2p-reveal"])  # scrolled into view when it fills: notices.js

    guard = guarded(message)

    @guard
    def on_sign_in(name_value: str, resume_value: str, code_value: str, request: gr.Request) -> dict:
        rater = app.sign_in(name_value, code_value, resume_code=resume_value, address=address_of(app, request))
        note = f"\n\n{resume_note(rater.new_code)}" if rater.new_code else ""
        return {
            session: rater.without_code(),  # the clear code is shown once, never kept
            signin_box: gr.Column(visible=False),
            arena_box: gr.Column(visible=True),
            resume: gr.Textbox(value=""),
            who: gr.Markdown(
                f"Signed in as **{md_escape(rater.name)}**. Images are shown in random order; models are hidden.{note}"
            ),
            message: gr.Markdown(visible=False),
        }

    def on_modality(modality_value: str) -> dict:
        return {examples: gr.Dataset(samples=[[p] for p in app.arena_examples(modality_value)])}

    def on_prompt(modality_value: str, prompt_value: str) -> dict:
        """The live counter: tokens of the strictest text encoder of the modality's models, or why not."""
        try:
            text = app.prompt_budget(modality_value, prompt_value).describe()
        except UserError as exc:
            text = f"⚠️ {exc}"
        return {budget: gr.Markdown(text)}

    def on_example(sample: list) -> dict:
        return {prompt: gr.Textbox(value=sample[0] if sample else "")}

    @guard
    def on_generate(rater, modality_value: str, prompt_value: str, mode=None, progress=gr.Progress(),
                    request: gr.Request = None) -> dict:  # fmt: skip
        mode = app.check_judgement(judgements[0] if mode is None else mode)
        shown = app.live_generate(rater, modality_value, prompt_value, progress=lambda f, d: progress(f, desc=d),
                                  address=address_of(app, request))  # fmt: skip
        shown_panels = {}
        for j, widgets in panel_sets.items():
            shown_panels |= show_trial(widgets, shown if j == mode else None)
        return {
            trial: shown.trial_id,
            judged: mode,
            shown_field: gr.Textbox(value=str(shown.trial_id)),
            active_field: gr.Textbox(value=""),
            n_shown: len(shown.panels),
            trial_prompt: gr.Markdown(f"**Prompt:** {html.escape(shown.prompt)}"),
            submit_btn: gr.Button(interactive=True),
            reveal_box: gr.Markdown(""),
            message: gr.Markdown(visible=False),
            **shown_panels,
        }

    @guard
    def on_submit(data: dict) -> dict:
        answers = read_answers(panel_sets[data[judged]], data, data[n_shown])
        active, _ = page_measures(data[active_field])
        result = app.submit(data[session], data[trial], answers, shown=data[shown_field], judgement=data[judged],
                            active_seconds=active)
        lines = [f"✅ {result.message}"]
        if result.reveal:
            lines.append("\n".join(f"- **{label}** was made by `{model}`" for label, model in result.reveal))
        lines.append("Type a new prompt and press Generate to rate again.")
        return {
            submit_btn: gr.Button(interactive=False),
            reveal_box: gr.Markdown("\n\n".join(lines)),
            message: gr.Markdown(visible=False),
        }

    def on_generate_start() -> dict:
        """At once, before any work: Generate off (no second trial from a second press) and the progress block on."""
        return {generate_btn: gr.Button(interactive=False),
                generating: gr.HTML(GENERATING_TEXT, visible=True)}

    def on_generate_end() -> dict:
        return {generate_btn: gr.Button(interactive=True), generating: gr.HTML("", visible=False)}

    signin_outputs = [session, signin_box, arena_box, resume, who, message]
    for trigger in (signin_btn.click, name.submit, resume.submit):
        trigger(on_sign_in, [name, resume, code], signin_outputs, api_visibility="private")
    modality.change(on_modality, modality, examples, api_visibility="private", queue=False)
    examples.click(on_example, examples, prompt, api_visibility="private", queue=False)
    panels = [p for widgets in panel_sets.values() for p in widgets]
    for trigger in (prompt.change, modality.change):  # while typing; always_last drops superseded keystrokes
        trigger(on_prompt, [modality, prompt], budget, api_visibility="private", queue=False,
                trigger_mode="always_last", show_progress="hidden")
    panel_outputs = [c for p in panels for c in (p.column, p.image, *p.all_inputs())]
    # Generate: (1) at once, no queue: the button off, the progress block on; (2) the trial, its progress drawn on
    # that block; (3) the button back on, whatever (2) ended with. The new images replace the old only once, in (2).
    generate_btn.click(
        on_generate_start, None, [generate_btn, generating], api_visibility="private", queue=False,
        show_progress="hidden",
    ).then(
        on_generate,
        [session, modality, prompt, *([judgement] if judgement is not None else [])],
        [trial, judged, shown_field, active_field, n_shown, trial_prompt, submit_btn, reveal_box, message, *panel_outputs],
        api_visibility="private",
        show_progress_on=[generating],
        # as many trials at once as there are devices; the backend's per-device locks keep two pipelines off one GPU
        concurrency_limit=app.generation_slots,
        concurrency_id="generate",
    ).then(on_generate_end, None, [generate_btn, generating], api_visibility="private", queue=False,
           show_progress="hidden")
    submit_inputs = {session, trial, judged, shown_field, active_field, n_shown,
                     *(w for p in panels for w in p.all_inputs())}
    submit_btn.click(
        on_submit,
        submit_inputs,
        [submit_btn, reveal_box, message],
        api_visibility="private",
        concurrency_limit=None,
    )
    add_noop()
