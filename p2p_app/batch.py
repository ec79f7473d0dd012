"""Batch generation: many prompts × seeds × models, resumable, one model in memory at a time.

Jobs are grouped by model; a model is loaded for its group and released after it, so a batch never holds
every model at once. Each image is committed on its own (file, then row), so an interrupted run loses at
most the image in flight, and a rerun skips every image already made (the generation cache). Past one GPU,
the same command runs under ``accelerate launch``: each process takes its share of the jobs
(``accelerate.PartialState.split_between_processes``) on its own device and writes to the same database.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from generators import GenerationError
from generators.base import MODALITIES

from .service import P2PApp, UserError
from .study import StudyError, read_csv_rows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    model: str
    prompt_id: str
    prompt: str
    seed: int


@dataclass
class BatchReport:
    made: int = 0
    skipped: int = 0
    failures: list[tuple[Job, str]] = field(default_factory=list)
    image_ids: dict[Job, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.made + self.skipped + len(self.failures)


@dataclass(frozen=True)
class PromptRow:
    prompt_id: str
    prompt: str
    modality: str


def read_prompts(path: str | Path) -> list[PromptRow]:
    """A CSV with columns ``prompt`` and optional ``prompt_id`` and ``modality`` (when only one modality is used),
    read by the same strict reader as study prompt banks (:func:`p2p_app.study.read_csv_rows`)."""
    path = Path(path)
    rows: list[PromptRow] = []
    seen: set[str] = set()
    for index, (line, rec) in enumerate(read_csv_rows(path, (("prompt",), ("prompt_id", "modality"))), start=1):
        prompt = " ".join(rec["prompt"].split())
        if not prompt:
            raise StudyError(path, line, "empty prompt")
        pid = rec.get("prompt_id") or f"row{index}"
        if pid in seen:
            raise StudyError(path, line, f"duplicate prompt_id {pid!r}")
        seen.add(pid)
        modality = (rec.get("modality") or "").lower()
        if modality and modality not in MODALITIES:
            raise StudyError(path, line, f"unknown modality {modality!r}; known: {', '.join(MODALITIES)}")
        rows.append(PromptRow(pid, prompt, modality))
    return rows


def plan_jobs(app: P2PApp, prompts: Sequence[PromptRow], seeds: Sequence[int], models: Sequence[str] | None = None) -> list[Job]:
    """Every (model, prompt, seed) to make, grouped by model. A prompt goes to the models of its modality."""
    if not seeds:
        raise UserError("give at least one seed")
    known = {m.name: m for m in app.config.models}
    chosen = list(models) if models else list(known)
    unknown = [m for m in chosen if m not in known]
    if unknown:
        raise UserError(f"unknown model(s) {', '.join(unknown)}; the config has {', '.join(known)}")
    jobs = []
    for name in chosen:
        spec = known[name]
        for row in prompts:
            if row.modality and row.modality != spec.modality:
                continue
            jobs.extend(Job(name, row.prompt_id, row.prompt, int(s)) for s in seeds)
    return jobs


def my_share(jobs: list[Job]) -> list[Job]:
    """This process's share of the jobs under ``accelerate launch`` (all of them in a plain run, and where the
    model stack is not installed: a web tier whose models are a generation service)."""
    try:
        import torch
        from accelerate import PartialState
    except ImportError:
        return jobs

    # On a machine without CUDA (tests, CPU clusters) accelerate only forms a multi-process group when
    # told to use the CPU; under `accelerate launch --multi_gpu` each process gets its own GPU.
    state = PartialState(cpu=not torch.cuda.is_available())
    if state.num_processes == 1:
        return jobs
    with state.split_between_processes(jobs) as mine:
        return list(mine)


def run_jobs(
    app: P2PApp,
    jobs: Iterable[Job],
    on_done: Callable[[Job, str], None] | None = None,
    release_models: bool = True,
) -> BatchReport:
    """Make every job's image (skipping those already stored); failures are reported, the batch goes on.

    With ``release_models`` each model is unloaded after its group of jobs (a batch never holds them all);
    a serving process passes False to keep its models warm.
    """
    report = BatchReport()
    current: str | None = None
    try:
        for job in jobs:
            if job.model != current:
                if current is not None and release_models:
                    app.registry.get(current).close()
                current = job.model
            try:
                generator = app.registry.get(job.model)
                prompt = generator.check_prompt(job.prompt)
                made = app.generate_image(generator, prompt, job.seed, prompt_id=job.prompt_id)
            except (GenerationError, ValueError, RuntimeError, OSError) as exc:
                log.warning("failed: %s %s seed %s: %s", job.model, job.prompt_id, job.seed, exc)
                report.failures.append((job, str(exc)))
                status = "failed"
            else:
                report.image_ids[job] = made.image.id
                if made.cached:
                    report.skipped += 1
                    status = "skipped"
                else:
                    report.made += 1
                    status = "made"
            if on_done:
                on_done(job, status)
    finally:
        if current is not None and release_models:
            app.registry.get(current).close()
    return report
