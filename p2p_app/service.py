"""The application object: generators + storage + blinding + studies, with one method per user intent.

The Gradio UI and the CLI only translate events and arguments into calls of :class:`P2PApp`. Nothing
here imports Gradio. Rater identity is a :class:`RaterSession` the UI keeps in server-side state; every
method that records or reveals checks that the trial belongs to that rater.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from generators import GenerationError, Generator, Registry, cache_key
from generators.base import check_modality

from .blinding import Panel, new_image_id, presentation_png, sha256_hex, shuffled
from .config import AppConfig, load_config
from .storage import LIVE_STUDY, AccessDenied, Answer, ImageInfo, RaterInfo, Storage, StorageError, TrialInfo
from .study import ALIGNMENT, REALISM, Question

log = logging.getLogger(__name__)

LIVE_QUESTIONS: tuple[Question, ...] = (REALISM, ALIGNMENT)

ProgressFn = Callable[[float, str], None]


# Also what a page gets whose server-side session is gone: Gradio drops session state an hour after the browser
# disconnects (a laptop asleep), and a server restart drops all of it.
NOT_SIGNED_IN = (
    "You are not signed in (or your session ended after a long pause or a server restart). Sign in, or reload "
    "your invite link, to go on; everything you submitted is saved."
)


# The reveal rule: a reveal needs at least one real score (a scale answer on a panel not marked "can't judge").
NO_SCORE_NO_REVEAL = (
    "Every image was marked \"can't judge\", so the models are not revealed: a reveal needs at least one score."
)


def has_real_score(form: Mapping[int, Mapping[str, Any]]) -> bool:
    """True when a stored trial form (position → answers) holds a score on some panel not marked "can't judge"."""

    def is_score(value: Any) -> bool:  # a number (not a bool, not NaN); multi-select answers are lists
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value

    return any(
        not answers.get("cant_judge")
        and any(is_score(v) for k, v in answers.items() if k not in ("cant_judge", "comment"))
        for answers in form.values()
    )


class UserError(ValueError):
    """Something the person can fix; the message is shown to them as is. Nothing was written."""


@dataclass(frozen=True)
class RaterSession:
    """Who is signed in (kept server-side by the UI, never taken from the page)."""

    rater_pk: int
    public_id: str
    name: str
    study_key: str = LIVE_STUDY


@dataclass(frozen=True)
class ShownTrial:
    trial_id: int
    prompt: str
    modality: str
    panels: tuple[Panel, ...]
    questions: tuple[Question, ...]
    order_index: int = 0
    done: int = 0
    total: int = 0
    answers: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)  # position → stored answers (revisits)


@dataclass(frozen=True)
class SubmitResult:
    status: str  # "stored" | "duplicate" | "changed"
    reveal: tuple[tuple[str, str], ...] = ()  # ("Image A", "model name") when revealing is allowed
    message: str = ""


@dataclass(frozen=True)
class GeneratedImage:
    image: ImageInfo
    cached: bool


@dataclass
class P2PApp:
    config: AppConfig
    storage: Storage
    registry: Registry
    studies: Mapping[str, Any] = field(default_factory=dict)  # study key "id@vN" → StudyDefinition
    _rng: secrets.SystemRandom = field(default_factory=secrets.SystemRandom, repr=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        config_path: str | Path | None = None,
        *,
        data_dir: str | Path | None = None,
        database_url: str | None = None,
        load_models: bool = True,
        **overrides: Any,
    ) -> "P2PApp":
        """Build the app from a config file (default: the built-in demo with tiny models)."""
        config = load_config(
            config_path,
            data_dir=str(data_dir) if data_dir is not None else None,
            database_url=database_url,
            **overrides,
        )
        storage = Storage(config.resolved_database_url, config.image_dir)
        registry = Registry(config.models, cache_dir=config.model_cache_dir)
        app = cls(config=config, storage=storage, registry=registry)
        from .reader import load_studies  # reader builds on this module

        app.studies = load_studies(app)
        if load_models:
            registry.load_all()
        return app

    def close(self) -> None:
        self.registry.close()
        self.storage.close()

    # ------------------------------------------------------------------ sign-in
    def check_admin(self, password: str) -> bool:
        """True only for the configured admin password; an unset password opens nothing."""
        expected = self.config.admin_password
        return bool(expected) and hmac.compare_digest(expected.encode(), (password or "").encode())

    def sign_in(self, name: str, access_code: str = "") -> RaterSession:
        name = " ".join((name or "").split())
        if not name:
            raise UserError("Type your name to sign in.")
        if len(name) > 100:
            raise UserError("That name is too long (at most 100 characters).")
        expected = self.config.access_code
        if expected and not hmac.compare_digest(expected.encode(), (access_code or "").strip().encode()):
            raise UserError("The access code is not right.")
        rater = self.storage.sign_in_rater(name, LIVE_STUDY)
        return _session(rater)

    # ------------------------------------------------------------------ generation (with cache)
    def check_prompt(self, modality: str, prompt: str) -> str:
        """The cleaned prompt, or a UserError that says what is wrong (checked against every model)."""
        try:
            check_modality(modality)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        if not isinstance(prompt, str) or not prompt.strip():
            raise UserError("The prompt is empty: type a description of the image.")
        if len(prompt) > self.config.max_prompt_chars:
            raise UserError(
                f"The prompt is {len(prompt)} characters long; at most {self.config.max_prompt_chars} are allowed."
            )
        generators = self.generators_for(modality)
        clean = " ".join(prompt.split())
        for gen in generators:
            try:
                clean = gen.check_prompt(clean)
            except ValueError as exc:
                raise UserError(str(exc)) from None
        return clean

    def generators_for(self, modality: str) -> list[Generator]:
        gens = [self.registry.get(spec.name) for spec in self.config.models_for(modality)]
        if not gens:
            raise UserError(f"No models are configured for {modality}.")
        return gens

    def generate_image(
        self, generator: Generator, prompt: str, seed: int, prompt_id: str = "", **params: Any
    ) -> GeneratedImage:
        """One image through the cache: a repeat request returns the stored image without running the model."""
        effective = generator.effective_params(**params)
        key = cache_key(generator.name, prompt, seed, effective)
        hit = self.storage.image_by_cache_key(key)
        if hit is not None:
            return GeneratedImage(hit, cached=True)
        result = generator.generate(prompt, seed, **params)
        png = presentation_png(result.image, self.config.presentation_size)
        info = self.storage.add_image(
            image_id=new_image_id(),
            png=png,
            sha256=sha256_hex(png),
            size=self.config.presentation_size,
            model=generator.name,
            source="generated",
            prompt=prompt,
            prompt_id=prompt_id,
            modality=generator.modality,
            seed=seed,
            params=dict(result.params),
            cache_key=key,
            gen_seconds=result.seconds,
        )
        return GeneratedImage(info, cached=False)

    def add_real_image(self, path: str | Path, prompt: str, modality: str, prompt_id: str = "") -> ImageInfo:
        """Import a real control image as a presentation copy (same size and format as generated ones)."""
        from PIL import Image as PILImage, UnidentifiedImageError

        try:
            with PILImage.open(path) as im:
                png = presentation_png(im, self.config.presentation_size)
        except (OSError, UnidentifiedImageError) as exc:
            raise UserError(f"{path}: cannot read the real image ({exc})") from None
        return self.storage.add_image(
            image_id=new_image_id(),
            png=png,
            sha256=sha256_hex(png),
            size=self.config.presentation_size,
            model="real",
            source="real",
            prompt=prompt,
            prompt_id=prompt_id,
            modality=modality,
            original_path=str(path),
        )

    # ------------------------------------------------------------------ live arena
    def live_generate(
        self, session: RaterSession, modality: str, prompt: str, progress: ProgressFn | None = None
    ) -> ShownTrial:
        """Generate one image per model of ``modality``, store a shuffled trial, return its blinded panels.

        All images are made before anything is returned (arrival order would reveal the slow model).
        If any model fails, no trial is stored and the rater gets a message to retry.
        """
        self._check_live_session(session)
        clean = self.check_prompt(modality, prompt)
        generators = self.generators_for(modality)
        seed = self._rng.randrange(2**31)
        images: list[ImageInfo] = []
        for i, gen in enumerate(generators):
            if progress:
                progress(i / len(generators), f"Generating image {i + 1} of {len(generators)}")
            try:
                images.append(self.generate_image(gen, clean, seed).image)
            except (GenerationError, RuntimeError, ValueError) as exc:
                log.exception("generation failed for model %s (seed %s): %s", gen.name, seed, exc)
                raise UserError(
                    "One of the models failed to make its image, so nothing is shown for this prompt. "
                    "Press Generate to try again."
                ) from None
        if progress:
            progress(1.0, "Done")
        order = shuffled([im.id for im in images], self._rng)
        trial = self.storage.create_trial(
            rater_pk=session.rater_pk, prompt=clean, modality=modality, shown_order=order
        )
        return self._shown(trial, LIVE_QUESTIONS)

    def submit(self, session: RaterSession, trial_id: int | None, answers: Mapping[int, Mapping[str, Any]]) -> SubmitResult:
        """Store a live trial's ratings (``answers`` maps position → {question: value, "comment": str})."""
        self._check_live_session(session)
        trial = self._own_trial(session, trial_id)
        stored_answers = self.build_answers(trial, LIVE_QUESTIONS, answers)
        try:
            result = self.storage.record_ratings(trial.id, session.rater_pk, stored_answers)
        except StorageError as exc:
            raise UserError(str(exc)) from None
        reveal: tuple[tuple[str, str], ...] = ()
        message = "Ratings saved." if result.status == "stored" else "This trial was already submitted; nothing changed."
        if self.config.reveal_after_rating:
            if has_real_score(self.storage.trial_answers(trial.id, session.rater_pk)):
                reveal = self.reveal(session, trial.id)
            else:
                message += " " + NO_SCORE_NO_REVEAL
        return SubmitResult(result.status, reveal, message)

    def reveal(self, session: RaterSession, trial_id: int) -> tuple[tuple[str, str], ...]:
        """Which model made which panel: only the trial's rater, only after its ratings are stored, and only
        when they hold at least one real score ("can't judge" on every panel reveals nothing)."""
        if not self.config.reveal_after_rating and session.study_key == LIVE_STUDY:
            raise AccessDenied("Revealing models is turned off for this arena.")
        rows = self.storage.trial_models(trial_id, session.rater_pk)  # refuses another's or an unsubmitted trial
        if not has_real_score(self.storage.trial_answers(trial_id, session.rater_pk)):
            raise AccessDenied(NO_SCORE_NO_REVEAL)
        return tuple((f"Image {chr(64 + pos)}", model) for pos, model, _source in rows)

    # ------------------------------------------------------------------ shared helpers
    def build_answers(
        self, trial: TrialInfo, questions: Sequence[Question], answers: Mapping[int, Mapping[str, Any]]
    ) -> list[Answer]:
        """Validate a form (position → answers) against the questions; map positions to the stored image ids."""
        out: list[Answer] = []
        missing: dict[str, list[str]] = {}  # image label -> labels of its unanswered required scales
        for position, image_id in enumerate(trial.shown_order, start=1):
            label = f"Image {chr(64 + position)}"
            given = answers.get(position) or {}
            comment = str(given.get("comment") or "").strip()
            if len(comment) > 2000:
                raise UserError(f"{label}: the comment is too long (at most 2000 characters).")
            cant_judge = bool(given.get("cant_judge"))
            for q in questions:
                raw = given.get(q.key)
                if q.kind == "text":
                    continue
                if cant_judge:
                    out.append(Answer(image_id, q.key, None, (), True, comment))
                    continue
                if q.kind == "scale":
                    value = _scale_value(raw, q)
                    if value is None:
                        if q.required:
                            missing.setdefault(label, []).append(q.label)
                        continue
                    out.append(Answer(image_id, q.key, value, (), False, comment))
                elif q.kind == "multi":
                    chosen = tuple(raw or ())
                    bad = [c for c in chosen if c not in q.options]
                    if bad:
                        raise UserError(f"{label}: {', '.join(map(str, bad))} is not an option of {q.label!r}.")
                    out.append(Answer(image_id, q.key, None, chosen, False, comment))
        if missing:
            n_required = sum(q.kind == "scale" and q.required for q in questions)
            parts = [
                f"{label} is not rated yet" if len(labels) == n_required else f"{label} still needs: {' / '.join(labels)}"
                for label, labels in missing.items()
            ]
            raise UserError("Rate every image before submitting (or tick \"can't judge\"). " + "; ".join(parts) + ".")
        return out

    def _own_trial(self, session: RaterSession, trial_id: int | None) -> TrialInfo:
        if trial_id is None:
            raise UserError("There is nothing to submit yet: generate images first.")
        trial = self.storage.trial(int(trial_id))
        if trial is None or trial.rater_pk != session.rater_pk:
            raise AccessDenied("This trial is not yours.")
        return trial

    @staticmethod
    def _check_live_session(session: RaterSession | None) -> None:
        if session is None:
            raise UserError(NOT_SIGNED_IN)
        if session.study_key != LIVE_STUDY:
            raise AccessDenied("This sign-in is for a study, not the live arena.")

    def _shown(
        self,
        trial: TrialInfo,
        questions: Sequence[Question],
        done: int = 0,
        total: int = 0,
        answers: Mapping[int, Mapping[str, Any]] | None = None,
    ) -> ShownTrial:
        panels = []
        for pos, image_id in enumerate(trial.shown_order, start=1):
            info = self.storage.image(image_id)
            if info is None or not Path(info.file_path).is_file():
                raise UserError("An image of this trial is missing on the server; tell the study team.")
            panels.append(Panel(pos, image_id, info.file_path))
        return ShownTrial(
            trial_id=trial.id,
            prompt=trial.prompt,
            modality=trial.modality,
            panels=tuple(panels),
            questions=tuple(questions),
            order_index=trial.order_index,
            done=done,
            total=total,
            answers=answers or {},
        )


def _session(rater: RaterInfo) -> RaterSession:
    return RaterSession(rater.pk, rater.public_id, rater.name, rater.study_key)


def _scale_value(raw: Any, q: Question) -> int | None:
    """A scale answer as int, None when unanswered; out-of-range or non-numeric → UserError."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):
        head = raw.strip().split(" ", 1)[0].rstrip(".:-")
        if not head.lstrip("-").isdigit():
            raise UserError(f"{q.label}: {raw!r} is not a score.")
        raw = int(head)
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or int(raw) != raw:
        raise UserError(f"{q.label}: {raw!r} is not a score.")
    allowed = [v for v, _ in q.levels]
    if int(raw) not in allowed:
        raise UserError(f"{q.label}: {int(raw)} is out of range ({min(allowed)}–{max(allowed)}).")
    return int(raw)
