"""The researcher's side of frozen reader studies: prepare (generate + import + freeze), verify, invite raters,
and follow progress; the CLI and the admin screen reach them through :class:`p2p_app.desk.ResearchDesk`. (What a
rater does in a study — sign in, next item, submit — is on the service, :class:`p2p_app.service.P2PApp`; catch-screen
images are made in :mod:`p2p_app.catch_images`.)

A study's images are made once (:func:`prepare_study`) and frozen: the design hash and a hash over every
image's bytes are stored, so a finished study can be shown to be unchanged (:func:`verify_study`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import pandas as pd

from . import assignment
from .batch import Job, run_jobs
from .catch_images import broken_image, make_catch_images, wrong_anatomy  # noqa: F401 - re-exported
from .service import P2PApp, RaterSession, UserError, check_name
from .storage import StorageError, StudyRecord
from .study import StudyDefinition, study_key
from .text import name_key


def _registered(app: P2PApp, study: StudyDefinition) -> StudyRecord:
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
    catch_made: int = 0  # catch-screen images made (catch_images.make_catch_images)


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
    stored = app.storage.study_slots(row.pk)
    if row.frozen_at is not None:
        report = verify_study(app, study)
        if not report.ok:
            raise UserError("; ".join(report.problems))
        return PrepareReport(study_key(study), 0, len(stored), 0, (), True, row.design_hash, row.images_hash)

    slots = study.image_slots()
    generated = [s for s in slots if not s.is_real]
    jobs = {Job(s.model, s.prompt_id, s.prompt, int(s.seed)): s.key for s in generated}
    ordered = sorted(jobs, key=lambda j: (study.models.index(j.model), j.prompt_id, j.seed))
    batch = run_jobs(app, ordered, on_done=on_done, release_models=release_models)
    for job, image_id in batch.image_ids.items():
        app.storage.set_study_slot(row.pk, jobs[job], image_id)
    imported = 0
    for s in slots:
        if s.is_real and s.key not in stored:
            info = app.add_real_image(s.real_path, s.prompt, study.modality, prompt_id=s.prompt_id)
            # another server preparing the same folder may have filled the slot first: its image stays, ours goes
            imported += app.storage.set_study_slot(row.pk, s.key, info.id, first_wins=True) == info.id
    failures = tuple(f"{j.model} {j.prompt_id} seed {j.seed}: {msg}" for j, msg in batch.failures)
    catch_made = make_catch_images(app.storage, app.config.presentation_size, study, row.pk) if not failures else 0
    frozen_row = row
    if not failures:
        all_slots = app.storage.study_slots(row.pk)
        frozen_row = app.storage.freeze_study(row.pk, images_hash(all_slots))
    return PrepareReport(
        study_key(study), batch.made, batch.skipped, imported, failures, not failures,
        frozen_row.design_hash, frozen_row.images_hash, catch_made,
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
    if row.frozen_at is None:
        problems.append(f"{key} is not frozen yet")
    if row.design_hash != study.design_hash():
        problems.append(f"{key}: the study file's design differs from the frozen design")
    slots = app.storage.study_slots(row.pk)
    missing = sorted({s.key for s in (*study.image_slots(), *study.catch_slots())} - set(slots))
    if missing:
        problems.append(f"{key}: {len(missing)} image slot(s) have no image, e.g. {missing[0]}")
    for slot_key, info in sorted(slots.items()):
        path = Path(info.file_path)
        if not path.is_file():
            problems.append(f"{key}: image file for {slot_key} is missing")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != info.sha256:
            problems.append(f"{key}: image file for {slot_key} was changed")
    if row.images_hash and images_hash(slots) != row.images_hash:
        problems.append(f"{key}: the set of images differs from the frozen one")
    return VerifyReport(key, not problems, tuple(problems))


# ---------------------------------------------------------------------------------------- raters


def add_rater(app: P2PApp, study: StudyDefinition, name: str) -> tuple[RaterSession, str]:
    """Create a rater with a personal invite token (``?token=…`` link). Returns the session and the clear token
    (only its sha256 is stored: print or send it now). In a study that lists its raters, each listed name (its
    slot) is one person: a second invitation for a taken slot is refused (``p2p raters reissue`` makes a new link)."""
    name = check_name(name)
    slot = app.rater_slot(study, name)
    try:
        rater = app.storage.add_rater(name, study_key(study), slot=slot, with_token=True, unique_slot=not study.open)
    except StorageError as exc:
        raise UserError(str(exc)) from None
    return RaterSession.of(rater), rater.token or ""


def find_rater(app: P2PApp, study: StudyDefinition, name: str):
    """The one rater of ``study`` called ``name`` (names compared as :func:`p2p_app.text.name_key` does)."""
    key = study_key(study)
    found = [r for r in app.storage.raters(key) if name_key(r.name) == name_key(name)]
    if len(found) != 1:
        raise UserError(f"{len(found)} raters of {key} are called {name!r}; "
                        + ("none to reissue." if not found else "use the rater id from `p2p raters list`."))
    return found[0]


def progress_frame(app: P2PApp, study: StudyDefinition) -> pd.DataFrame:
    """Per rater: name, slot, items done / total (real items), practice items done / total, last answer time. A
    study that lists its raters shows every listed name, invited or not (``rater_id`` empty until the
    invitation)."""
    key = study_key(study)
    row = app.storage.study(study.id, study.version)
    records = []
    raters = app.storage.raters(key)
    n_practice = len(study.practice_items())
    for rater in raters:
        total = len(assignment.rater_sequence(study, rater.slot)) - n_practice if rater.slot is not None else 0
        trials = app.storage.trials_for(rater.pk, row.pk) if row else []
        done = [t for t in trials if t.submitted_at is not None]
        practice_done = sum(t.practice for t in done)
        records.append(
            {
                "rater_id": rater.public_id,
                "name": rater.name,
                "slot": rater.slot,
                "done": len(done) - practice_done,
                "total": total,
                "practice_done": practice_done,
                "practice_total": n_practice if rater.slot is not None else 0,
                "last_answer": max((t.submitted_at for t in done), default=None),
            }
        )
    taken = {r.slot for r in raters}
    for slot, name in enumerate(study.raters if not study.open else ()):
        if slot not in taken:
            total = len(assignment.rater_sequence(study, slot)) - n_practice
            records.append({"rater_id": "", "name": f"{name} (not invited yet)", "slot": slot, "done": 0,
                            "total": total, "practice_done": 0, "practice_total": n_practice, "last_answer": None})
    columns = ["rater_id", "name", "slot", "done", "total", "practice_done", "practice_total", "last_answer"]
    return pd.DataFrame.from_records(records, columns=columns).sort_values("slot", kind="stable", ignore_index=True)


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
