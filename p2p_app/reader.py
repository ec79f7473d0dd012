"""Frozen reader studies on top of the app: prepare (generate + import + freeze), verify, rate, resume.

A study's images are made once (``prepare_study``) and frozen: the design hash and a hash over every
image's bytes are stored, so a finished study can be shown to be unchanged (``verify_study``). Raters
work through a deterministic, rater-specific sequence (``p2p_app.assignment``); each trial's panel order
is stored before it is shown, and a rater always resumes at the first unanswered item.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import pandas as pd

from . import assignment
from .batch import Job, run_jobs
from .service import (
    ALREADY_ANSWERED,
    ANY_TRIAL,
    NOT_SIGNED_IN,
    P2PApp,
    RaterSession,
    ShownTrial,
    SubmitResult,
    UserError,
    _session,
    check_name,
    check_shown,
)
from .startup import StudyProgress
from .storage import AccessDenied, StorageError
from .study import StudyDefinition, StudyError, load_study

ProgressFn = Callable[[int, int, str], None]


def study_key(study: StudyDefinition) -> str:
    return f"{study.id}@v{study.version}"


def load_studies(app: P2PApp) -> dict[str, StudyDefinition]:
    """Every study the config names, checked against the config's models; a bad file stops start-up."""
    known = [m.name for m in app.config.models]
    out: dict[str, StudyDefinition] = {}
    for path in app.config.studies:
        study = load_study(path, known_models=known)
        wrong = [m for m in study.models if app.config.models_for(study.modality) and m not in {s.name for s in app.config.models_for(study.modality)}]
        if wrong:
            raise StudyError(path, None, f"model(s) {', '.join(wrong)} are not {study.modality} models in the config")
        out[study_key(study)] = study
    return out


def _registered(app: P2PApp, study: StudyDefinition) -> dict:
    try:
        return app.storage.register_study(study.id, study.version, study.title, study.design_hash())
    except StorageError as exc:
        raise UserError(str(exc)) from None


def images_hash(slots: Mapping[str, Any]) -> str:
    """sha256 over the sorted (slot key, image sha256) pairs: changes if any image's bytes change."""
    h = hashlib.sha256()
    for key in sorted(slots):
        h.update(f"{key}\t{slots[key].sha256}\n".encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------- prepare


@dataclass(frozen=True)
class PrepareReport:
    study: str
    made: int
    reused: int
    real_imported: int
    failures: tuple[str, ...]
    frozen: bool
    design_hash: str
    images_hash: str | None


def prepare_study(
    app: P2PApp,
    study: StudyDefinition,
    on_done: Callable[[Job, str], None] | None = None,
    release_models: bool = True,
) -> PrepareReport:
    """Generate every image slot (skipping ones already made), import the real images, then freeze.

    Re-running is safe: made images are reused through the generation cache, a frozen study is only
    verified. A study with failed generations is not frozen; run the command again to retry them.
    """
    row = _registered(app, study)
    stored = app.storage.study_slots(row["pk"])
    if row["frozen_at"] is not None:
        report = verify_study(app, study)
        if not report.ok:
            raise UserError("; ".join(report.problems))
        return PrepareReport(study_key(study), 0, len(stored), 0, (), True, row["design_hash"], row["images_hash"])

    slots = study.image_slots()
    generated = [s for s in slots if not s.is_real]
    jobs = {Job(s.model, s.prompt_id, s.prompt, int(s.seed)): s.key for s in generated}
    ordered = sorted(jobs, key=lambda j: (study.models.index(j.model), j.prompt_id, j.seed))
    batch = run_jobs(app, ordered, on_done=on_done, release_models=release_models)
    for job, image_id in batch.image_ids.items():
        app.storage.set_study_slot(row["pk"], jobs[job], image_id)
    imported = 0
    for s in slots:
        if s.is_real and s.key not in stored:
            info = app.add_real_image(s.real_path, s.prompt, study.modality, prompt_id=s.prompt_id)
            app.storage.set_study_slot(row["pk"], s.key, info.id)
            imported += 1
    failures = tuple(f"{j.model} {j.prompt_id} seed {j.seed}: {msg}" for j, msg in batch.failures)
    frozen_row = row
    if not failures:
        all_slots = app.storage.study_slots(row["pk"])
        frozen_row = app.storage.freeze_study(row["pk"], images_hash(all_slots))
    return PrepareReport(
        study_key(study), batch.made, batch.skipped, imported, failures, not failures,
        frozen_row["design_hash"], frozen_row["images_hash"],
    )


@dataclass(frozen=True)
class VerifyReport:
    study: str
    ok: bool
    problems: tuple[str, ...]


def verify_study(app: P2PApp, study: StudyDefinition) -> VerifyReport:
    """Check the study file still has the frozen design and every image file still has its recorded bytes."""
    key = study_key(study)
    row = app.storage.study(study.id, study.version)
    if row is None:
        return VerifyReport(key, False, (f"{key} has not been generated yet (run `p2p study generate`)",))
    problems = []
    if row["frozen_at"] is None:
        problems.append(f"{key} is not frozen yet")
    if row["design_hash"] != study.design_hash():
        problems.append(f"{key}: the study file's design differs from the frozen design")
    slots = app.storage.study_slots(row["pk"])
    missing = sorted({s.key for s in study.image_slots()} - set(slots))
    if missing:
        problems.append(f"{key}: {len(missing)} image slot(s) have no image, e.g. {missing[0]}")
    for slot_key, info in sorted(slots.items()):
        path = Path(info.file_path)
        if not path.is_file():
            problems.append(f"{key}: image file for {slot_key} is missing")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != info.sha256:
            problems.append(f"{key}: image file for {slot_key} was changed")
    if row["images_hash"] and images_hash(slots) != row["images_hash"]:
        problems.append(f"{key}: the set of images differs from the frozen one")
    return VerifyReport(key, not problems, tuple(problems))


# ---------------------------------------------------------------------------------------- raters


def availability(app: P2PApp, study: StudyDefinition) -> str:
    """Empty when raters can open ``study``; else what they are told (with start-up preparation progress)."""
    try:
        _study_row(app, study)
    except UserError as exc:
        return str(exc)
    return ""


def _study_row(app: P2PApp, study: StudyDefinition) -> dict:
    row = app.storage.study(study.id, study.version)
    if row is None or row["frozen_at"] is None:
        progress = app.readiness.get(study_key(study)) or StudyProgress("not generated")
        raise UserError(progress.describe(study.title))
    if row["design_hash"] != study.design_hash():
        raise UserError(f"The study {study.title!r} was edited after it was frozen; ask the study team.")
    return row


def add_rater(app: P2PApp, study: StudyDefinition, name: str) -> tuple[RaterSession, str]:
    """Create a rater with a personal invite token (``?token=…`` link). Returns the session and the clear token
    (only its sha256 is stored: print or send it now). A listed study's names are unique."""
    name = check_name(name)
    slot = _slot_for(app, study, name)
    try:
        rater = app.storage.add_rater(name, study_key(study), slot=slot, with_token=True, unique_name=not study.open)
    except StorageError as exc:
        raise UserError(str(exc)) from None
    return _session(rater), rater.token or ""


def _slot_for(app: P2PApp, study: StudyDefinition, name: str) -> int:
    if not name:
        raise UserError("Type your name.")
    joined = len(app.storage.raters(study_key(study)))
    try:
        return assignment.slot_for_rater(study, rater=name, join_index=joined)
    except ValueError:
        raise UserError(f"{name!r} is not a rater of this study.") from None


def sign_in(app: P2PApp, study: StudyDefinition, *, token: str = "", name: str = "") -> RaterSession:
    """Who may sign in, and as whom (README, "Rater identity"):

    * a personal token (invite link ``?token=…`` or the resume code shown at first sign-in) signs in its rater;
    * an open study: a typed name makes a NEW rater each time (names are display only) whose session carries
      a personal resume code to show once; typing someone's name never signs in as them;
    * an invite-only study (listed raters): only invite links; a listed name cannot be claimed by typing it.
    """
    key = study_key(study)
    token = (token or "").strip() if isinstance(token, str) else ""
    if token:
        rater = app.storage.rater_by_token(token)
        if rater is None or rater.study_key != key:
            raise UserError("This invite link (or resume code) is not valid for this study.")
        return _session(rater)
    if not study.open:
        raise UserError("This study is by invitation only: open your personal invite link.")
    name = check_name(name)
    slot = _slot_for(app, study, name)
    try:
        rater = app.storage.add_rater(name, key, slot=slot, with_token=True)
    except StorageError as exc:
        raise UserError(str(exc)) from None
    return _session(rater, rater.token or "")


def _slot(app: P2PApp, session: RaterSession) -> int:
    rater = app.storage.rater(session.rater_pk)
    if rater is None or rater.study_key != session.study_key or rater.slot is None:
        raise AccessDenied("This rater is not part of the study.")
    return rater.slot


@functools.lru_cache(maxsize=4096)
def _plan(study: StudyDefinition, design_hash: str, slot: int) -> tuple[tuple, dict]:
    """A rater slot's sequence and panel orders: a pure function of (study design, slot), computed once per
    process (before, every submit recomputed it: 45–110 ms at 201 items × 50 raters)."""
    sequence = assignment.rater_sequence(study, slot)
    return sequence, assignment.sequence_panel_orders(study, slot, sequence)  # repeats get a new panel order


# ---------------------------------------------------------------------------------------- rating


def next_trial(app: P2PApp, study: StudyDefinition, session: RaterSession) -> ShownTrial | None:
    """The first unanswered item of this rater's sequence (created and stored on first showing)."""
    _check_session(study, session)
    row = _study_row(app, study)
    slot = _slot(app, session)
    sequence, orders = _plan(study, row["design_hash"], slot)
    trials = {t.order_index: t for t in app.storage.trials_for(session.rater_pk, row["pk"])}
    done = sum(1 for t in trials.values() if t.submitted_at is not None)
    items = study.item_map()
    slots = None
    for a in sequence:
        t = trials.get(a.order_index)
        if t is not None and t.submitted_at is not None:
            continue
        if t is None:
            slots = slots or app.storage.study_slots(row["pk"])
            item = items[a.item_key]
            order = orders[a.order_index]
            shown = [slots[item.slots[i].key].id for i in order]
            t = app.storage.create_trial(
                rater_pk=session.rater_pk,
                study_pk=row["pk"],
                prompt=item.prompt,
                prompt_id=item.prompt_id,
                modality=study.modality,
                shown_order=shown,
                item_key=a.item_key,
                order_index=a.order_index,
                is_repeat=a.is_repeat,
            )
        return app._shown(t, study.questions, done=done, total=len(sequence))
    return None


def previous_trial(
    app: P2PApp, study: StudyDefinition, session: RaterSession, before_order_index: int | None
) -> ShownTrial:
    """The rater's latest answered item before ``before_order_index`` (None: the latest), with its stored
    answers, for revising. Only when the study allows answer changes; a change is kept as history."""
    _check_session(study, session)
    if not study.allow_answer_changes:
        raise UserError("This study does not allow changing answers.")
    row = _study_row(app, study)
    trials = [t for t in app.storage.trials_for(session.rater_pk, row["pk"]) if t.submitted_at is not None]
    if before_order_index is not None:
        trials = [t for t in trials if t.order_index < before_order_index]
    if not trials:
        raise UserError("There is no earlier answered item.")
    t = max(trials, key=lambda t: t.order_index)
    done = sum(1 for x in app.storage.trials_for(session.rater_pk, row["pk"]) if x.submitted_at is not None)
    total = len(_plan(study, row["design_hash"], _slot(app, session))[0])
    return app._shown(t, study.questions, done=done, total=total,
                      answers=app.storage.trial_answers(t.id, session.rater_pk))


def submit_trial(
    app: P2PApp,
    study: StudyDefinition,
    session: RaterSession,
    trial_id: int | None,
    answers: Mapping[int, Mapping[str, Any]],
    shown: object = ANY_TRIAL,
    reopened: bool = False,
) -> SubmitResult:
    """Store the answers to the session's current item.

    ``trial_id`` is the item this session shows (server-side state), ``shown`` the one the page names (the UI
    always passes it): a replayed or stale submit names another trial and is refused, nothing written. An item
    already answered is changed only when this session reopened it ("Previous item") in a study that allows
    changes; otherwise (a second tab, a double click) the result is "duplicate" and says so."""
    _check_session(study, session)
    if shown is not ANY_TRIAL:
        check_shown(trial_id, shown)
    row = _study_row(app, study)
    trial = app._own_trial(session, trial_id)
    if trial.study_pk != row["pk"]:
        raise AccessDenied("This trial is not part of this study.")
    allow_changes = study.allow_answer_changes and (reopened or shown is ANY_TRIAL)
    if trial.submitted_at is not None and not allow_changes:
        return SubmitResult("duplicate", (), ALREADY_ANSWERED)
    stored = app.build_answers(trial, study.questions, answers)
    result = app.record(trial, session.rater_pk, stored, allow_changes=allow_changes)
    messages = {"stored": "Saved.", "duplicate": "Already saved; nothing changed.", "changed": "Your changed answers were saved."}
    return SubmitResult(result.status, (), messages[result.status])


def _check_session(study: StudyDefinition, session: RaterSession | None) -> None:
    if session is None:
        raise UserError(NOT_SIGNED_IN)
    if session.study_key != study_key(study):
        raise AccessDenied("This sign-in is not for this study.")


def progress_frame(app: P2PApp, study: StudyDefinition) -> pd.DataFrame:
    """Per rater: name, slot, items done / total, last answer time."""
    key = study_key(study)
    row = app.storage.study(study.id, study.version)
    records = []
    for rater in app.storage.raters(key):
        total = len(assignment.rater_sequence(study, rater.slot)) if rater.slot is not None else 0
        trials = app.storage.trials_for(rater.pk, row["pk"]) if row else []
        done = [t for t in trials if t.submitted_at is not None]
        records.append(
            {
                "rater_id": rater.public_id,
                "name": rater.name,
                "slot": rater.slot,
                "done": len(done),
                "total": total,
                "last_answer": max((t.submitted_at for t in done), default=None),
            }
        )
    return pd.DataFrame.from_records(records, columns=["rater_id", "name", "slot", "done", "total", "last_answer"])


def coverage_frame(app: P2PApp, study: StudyDefinition) -> pd.DataFrame:
    """Per item: how many distinct raters have answered it (first showings), and whether it is short of k."""
    row = app.storage.study(study.id, study.version)
    df = app.storage.ratings_frame(study_key(study)) if row else pd.DataFrame(columns=["item_id", "rater_id", "is_repeat"])
    first = df[~df["is_repeat"].astype(bool)] if not df.empty else df
    counts = first.groupby("item_id")["rater_id"].nunique() if not first.empty else pd.Series(dtype=int)
    records = [
        {"item_id": item.key, "raters": int(counts.get(item.key, 0)), "k": study.overlap_k}
        for item in study.items()
    ]
    out = pd.DataFrame.from_records(records, columns=["item_id", "raters", "k"])
    out["short_of_k"] = out["raters"] < out["k"]
    return out
