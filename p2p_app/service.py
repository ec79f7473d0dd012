"""The application object: generators + storage + blinding + studies, with one method per user intent.

The Gradio UI and the CLI only translate events and arguments into calls of :class:`P2PApp` (the rater's side;
the researcher's is :class:`p2p_app.desk.ResearchDesk`). Nothing here imports Gradio. Rater identity is a
:class:`RaterSession` the UI keeps in server-side state (:mod:`p2p_app.sessions`). Whether a trial is the
rater's is decided by storage, which checks it wherever a trial's answers, marks or models are read or written;
the service's one check before that is :meth:`P2PApp.own_trial`, which every submit goes through. What a rater
submits is checked in :mod:`p2p_app.forms`; images are stored by :mod:`p2p_app.image_store`. Names those modules
define are re-exported here for existing callers.
"""

from __future__ import annotations

import functools
import hmac
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from generators import BackendUnavailable, GenerationError, Generator, Registry
from generators.base import check_modality, strictest

from .blinding import Panel, panel_label, shuffled
from .budget import ArenaBudget, ArenaRefused
from . import image_store
from .config import AppConfig
from .forms import (  # noqa: F401 - re-exported: callers import these names from the service
    MAX_MARKS_PER_PANEL,
    NO_SCORE_NO_REVEAL,
    PromptBudget,
    UserError,
    build_answers,
    check_active_seconds,
    check_marks,
    check_name,
    has_real_score,
)
from .limits import Backoff, network_of
from .image_store import GeneratedImage  # noqa: F401 - re-exported
from .readiness import Readiness, StudyProgress
from .serving import BrokenImage, Integrity, Presentations, png_variant
from .sessions import (  # noqa: F401 - re-exported: callers import these names from the service
    ANY_TRIAL,
    BAD_INVITE,
    INVITE_ONLY,
    NOT_A_RATER,
    NOT_SIGNED_IN,
    SESSION_NOT_HERE,
    RaterSession,
    ShownTrial,
    StalePage,
    SubmitResult,
    check_live_session,
    check_session_here,
    check_shown,
    check_study_session,
)
from .storage import (
    LIVE_STUDY,
    AccessDenied,
    Answer,
    ImageInfo,
    MarkPoint,
    PanelModel,
    RecordResult,
    Storage,
    StorageError,
    StudyRecord,
    TrialInfo,
    unreachable,
)
from .model_question import ASK_MODELS_FIRST, ModelQuestion  # noqa: F401 - ASK_MODELS_FIRST re-exported
from . import assignment
from .study import ALIGNMENT, REALISM, Question, StudyDefinition, item_phase, study_key
from .text import clean_line

log = logging.getLogger(__name__)

LIVE_QUESTIONS: tuple[Question, ...] = (REALISM, ALIGNMENT)

ProgressFn = Callable[[float, str], None]


DATABASE_UNREACHABLE = (
    "The database cannot be reached just now (it may be restarting). Wait a few seconds and try again: everything "
    "already saved stays saved, and an item is never stored twice."
)

SERVICE_DOWN = (
    "The image generator cannot be reached right now, so nothing is shown for this prompt. "
    "Press Generate to try again in a minute; if it keeps happening, tell the study team."
)
REMOTE_GENERATION_SLOTS = 8  # live trials at once when a generation service makes the images (it batches them)
TOKENS_NOT_COUNTED = "The prompt's length in tokens cannot be checked here; it is checked when you press Generate."
PRESENTER_PROMPTS = "This is a presentation from pre-generated images: pick one of the listed prompts."

ALREADY_ANSWERED = (
    "This item was already answered (perhaps in another tab or window), so these answers were not saved. "
    "Your next item is shown."
)
UNKNOWN_OUTCOME = (
    "The server could not confirm that your answers were saved. Press Submit again: an item is never stored twice."
)


@dataclass
class P2PApp(ModelQuestion):
    config: AppConfig
    storage: Storage
    registry: Registry
    studies: Mapping[str, StudyDefinition] = field(default_factory=dict)  # "id@vN" → definition
    readiness: Readiness = field(default_factory=Readiness, repr=False)  # background start-up progress
    _rng: secrets.SystemRandom = field(default_factory=secrets.SystemRandom, repr=False)
    presentations: Presentations = field(default_factory=Presentations, repr=False)  # serving.py: image tokens
    integrity: Integrity = field(default_factory=Integrity, repr=False)  # sha256 of served images, checked once
    code_guesses: Backoff = field(default_factory=lambda: Backoff(free=5, base=1.0, cap=300.0), repr=False)
    arena_budget: ArenaBudget | None = field(default=None, repr=False)  # budget.py; made from config and storage

    def __post_init__(self) -> None:
        if self.arena_budget is None:
            self.arena_budget = ArenaBudget(self.config, self.storage)

    def close(self) -> None:
        self.registry.close()
        self.storage.close()

    # ------------------------------------------------------------------ sign-in
    def check_admin(self, password: str) -> bool:
        """True only for the configured admin password; an unset password opens nothing."""
        expected = self.config.admin_password
        return bool(expected) and hmac.compare_digest(expected.encode(), (password or "").encode())

    def _guess_keys(self, address: str) -> tuple[str, ...]:
        return (f"addr:{address}", f"net:{network_of(address)}") if address else ()

    def _check_guesses(self, address: str) -> None:
        """Refuse a code or token attempt from an address (and its network) that guessed wrong too often lately:
        exponential backoff after a few free tries (``limits.Backoff``); right codes never count."""
        keys = self._guess_keys(address)
        verdict = self.code_guesses.check(*keys) if keys else None
        if verdict is not None and not verdict.allowed:
            raise UserError(f"Too many wrong codes were tried from your network; try again in {verdict.wait_text()}.")

    def _wrong_guess(self, address: str) -> None:
        keys = self._guess_keys(address)
        if keys:
            self.code_guesses.failed(f"addr:{address}")
            # the network key fills four times slower: neighbours behind one NAT are not locked out by one guesser
            if self.code_guesses.failures(f"addr:{address}") % 4 == 0:
                self.code_guesses.failed(f"net:{network_of(address)}")

    def sign_in(self, name: str, access_code: str = "", resume_code: str = "", address: str = "") -> RaterSession:
        """Arena sign-in. A name alone makes a NEW rater (names are display only, never identity) and the
        returned session carries its personal resume code (``new_code``) to show once; the resume code
        signs the same rater in again. ``address``: the client's address; wrong codes from it are throttled."""
        expected = self.config.access_code
        if expected or clean_line(resume_code):
            self._check_guesses(address)
        if expected and not hmac.compare_digest(expected.encode(), clean_line(access_code).encode()):
            self._wrong_guess(address)
            raise UserError("The access code is not right.")
        code = clean_line(resume_code)
        if code:
            rater = self.storage.rater_by_token(code)
            if rater is None or rater.study_key != LIVE_STUDY:
                self._wrong_guess(address)
                raise UserError("That resume code is not right.")
            return RaterSession.of(rater)
        name = check_name(name)
        if self.arena_budget is not None:  # a new rater is a row: new sign-ins per address are limited too
            try:
                self.arena_budget.admit_sign_in(address)
            except ArenaRefused as exc:
                raise UserError(str(exc)) from None
        rater = self.storage.sign_in_rater(name, LIVE_STUDY)
        return RaterSession.of(rater, rater.token or "")

    # ------------------------------------------------------------------ generation (with cache)
    def prompt_budget(self, modality: str, prompt: str) -> PromptBudget:
        """What the live counter shows for ``prompt``: tokens used and the limit of the strictest text encoder
        among the configured models of ``modality`` (the one with the least room left), and characters. Never
        raises for a bad prompt (that is what it reports); an unknown modality is a UserError."""
        try:
            check_modality(modality)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        text = " ".join(clean_line(prompt if isinstance(prompt, str) else "").split())
        chars, max_chars, words = len(text), self.config.max_prompt_chars, len(text.split())
        if self.presenter and (text in self.arena_examples(modality) or not self.live_models(modality)):
            return PromptBudget(None, None, "", chars, max_chars, words, PRESENTER_PROMPTS)
        if chars > max_chars:  # not worth tokenizing: the character limit already refuses it
            return PromptBudget(None, None, "", chars, max_chars, words, "")
        try:
            count = strictest(c for gen in self.generators_for(modality) for c in gen.prompt_tokens(text))
        except Exception:  # noqa: BLE001 - the counter is advisory; Generate checks again (and says why)
            log.exception("cannot count prompt tokens for %s", modality)
            return PromptBudget(None, None, "", chars, max_chars, words, TOKENS_NOT_COUNTED)
        return PromptBudget(count.used, count.limit, count.encoder, chars, max_chars, words)

    def check_prompt(self, modality: str, prompt: str) -> str:
        """The cleaned prompt, or a UserError that says what is wrong (checked against every model)."""
        try:
            check_modality(modality)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        prompt = clean_line(prompt)  # no NUL, zero-width or direction-override characters
        if not prompt:
            raise UserError("The prompt is empty: type a description of the image.")
        if len(prompt) > self.config.max_prompt_chars:
            raise UserError(
                f"The prompt is {len(prompt)} characters long; at most {self.config.max_prompt_chars} are allowed."
            )
        clean = " ".join(prompt.split())
        if self.presenter and clean in self.arena_examples(modality):  # a pack prompt: its images are stored
            return clean
        if not self.live_models(modality):  # presenter mode with no generation service: only the pack's prompts
            raise UserError(PRESENTER_PROMPTS)
        problem = self.prompt_budget(modality, clean).problem()  # the strictest encoder, with how much to cut
        if problem:
            raise UserError(problem)
        generators = self.generators_for(modality)
        for gen in generators:
            try:
                clean = gen.check_prompt(clean)
            except ValueError as exc:
                raise UserError(str(exc)) from None
            except GenerationError as exc:  # a generation service that is down cannot count tokens either
                log.error("cannot check the prompt with model %s: %s", gen.name, exc)
                raise UserError(SERVICE_DOWN) from None
        return clean

    @property
    def presenter(self) -> bool:
        """Presenter mode (the ``pack`` setting): images come from a study pack; no model is ever loaded here
        (a generation service may still make live images: :meth:`live_models`)."""
        return self.config.pack is not None

    def live_models(self, modality: str) -> bool:
        """Whether the arena makes new images for ``modality``: always outside presenter mode; in presenter mode
        when every model of the modality is served by a generation service that answers now."""
        if not self.presenter:
            return True
        specs = self.config.models_for(modality)
        if not specs or not all(spec.is_remote for spec in specs):
            return False
        return all(self.registry.get(spec.name).reachable() for spec in specs)

    @property
    def generation_slots(self) -> int:
        """How many live generations may run at once: one per device; several when a generation service makes
        every image (it batches them); 1 in presenter mode without one."""
        if len(self.registry) and self.registry.all_remote:
            return REMOTE_GENERATION_SLOTS
        return 1 if self.presenter else len(self.registry.pool.devices)

    def arena_examples(self, modality: str) -> tuple[str, ...]:
        """Prompts offered in the arena: the config's examples, or in presenter mode every pre-generated prompt."""
        if self.presenter:
            return tuple(self.storage.generated_prompts(modality))
        return tuple(self.config.examples.get(modality, ()))

    def _pregenerated(self, modality: str, prompt: str) -> list[ImageInfo]:
        """One stored image per model of ``modality`` for ``prompt``, all of one seed drawn at random among the
        seeds every model has (presenter mode's stand-in for generating)."""
        models = [spec.name for spec in self.config.models_for(modality)]
        by_seed: dict[int | None, dict[str, ImageInfo]] = {}
        for info in self.storage.generated_images(prompt, modality):
            by_seed.setdefault(info.seed, {})[info.model] = info
        complete = sorted((seed for seed, found in by_seed.items() if all(m in found for m in models)), key=str)
        if not models or not complete:
            raise UserError("This prompt has no pre-generated images for every model; pick one of the listed prompts.")
        chosen = by_seed[self._rng.choice(complete)]
        return [chosen[m] for m in models]

    def generators_for(self, modality: str) -> list[Generator]:
        gens = [self.registry.get(spec.name) for spec in self.config.models_for(modality)]
        if not gens:
            raise UserError(f"No models are configured for {modality}.")
        return gens

    def generate_image(
        self, generator: Generator, prompt: str, seed: int, prompt_id: str = "", **params: Any
    ) -> GeneratedImage:
        """One image through the cache (:func:`p2p_app.image_store.generate_image`)."""
        return image_store.generate_image(self.storage, self.config.presentation_size, generator, prompt, seed,
                                          prompt_id, **params)

    def add_real_image(self, path: str | Path, prompt: str, modality: str, prompt_id: str = "") -> ImageInfo:
        """Import a real control image as a presentation copy (same size and format as generated ones)."""
        return image_store.add_real_image(self.storage, self.config.presentation_size, path, prompt, modality,
                                          prompt_id)

    # ------------------------------------------------------------------ serving images
    def presentation(self, token: str) -> bytes | None:
        """The bytes a page's image URL (its opaque token, ``serving.Presentations``) stands for, or None: an
        unknown or expired token, or a file that fails its sha256 check (never served broken). The bytes are the
        stored PNG with its data chunks re-split by the token (``serving.png_variant``): the same pixels and
        length for every presentation, other bytes."""
        shown = self.presentations.get(token) if isinstance(token, str) else None
        if shown is None or self.integrity.check(shown.image_id, shown.path, shown.sha256):
            return None
        try:
            data = Path(shown.path).read_bytes()
        except OSError:
            return None
        return png_variant(data, token)

    def broken_images(self) -> list[BrokenImage]:
        """Images refused because their file is missing or does not match its sha256 (since this server started)."""
        return self.integrity.broken()

    # ------------------------------------------------------------------ live arena
    def live_generate(
        self, session: RaterSession, modality: str, prompt: str, progress: ProgressFn | None = None,
        address: str = "",
    ) -> ShownTrial:
        """Generate one image per model of ``modality``, store a shuffled trial, return its blinded panels.

        All images are made before anything is returned (arrival order would reveal the slow model).
        If any model fails, no trial is stored and the rater gets a message to retry. Before anything is made
        the arena's limits, free-space reserve and disk budget are checked (``budget.ArenaBudget``; ``address``
        is the client's address for the per-address limit).
        """
        check_live_session(session)
        clean = self.check_prompt(modality, prompt)
        stored = self.presenter and clean in self.arena_examples(modality)  # a pack prompt: its stored images
        images: list[ImageInfo] = self._pregenerated(modality, clean) if stored else []
        generators = [] if stored else self.generators_for(modality)
        if generators and self.arena_budget is not None:  # stored pack images write nothing
            try:
                self.arena_budget.admit(session.public_id, address, len(generators))
            except ArenaRefused as exc:
                raise UserError(str(exc)) from None
        seed = self._rng.randrange(2**31)
        for i, gen in enumerate(generators):
            if progress:
                progress(i / len(generators), f"Generating image {i + 1} of {len(generators)}")
            try:
                images.append(self.generate_image(gen, clean, seed).image)
            except BackendUnavailable as exc:  # service down, timed out or answering garbage: no trial
                log.error("generation service failed for model %s (seed %s): %s", gen.name, seed, exc)
                raise UserError(SERVICE_DOWN) from None
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
        return self.shown(trial, LIVE_QUESTIONS)

    def check_judgement(self, judgement: object) -> str:
        """``judgement`` ("scores" or "ranking") if the arena allows it (setting ``arena_judgement``)."""
        allowed = self.config.arena_judgements
        if judgement not in allowed:
            raise UserError(f"This arena is judged by {' or '.join(allowed)}, not {judgement!r}.")
        return str(judgement)

    def submit(
        self, session: RaterSession, trial_id: int | None, answers: Mapping[int, Mapping[str, Any]],
        shown: object = ANY_TRIAL, judgement: str = "scores", active_seconds: float | None = None,
    ) -> SubmitResult:
        """Store a live trial's ratings (``answers`` maps position → {question: value, "comment": str}).

        ``trial_id`` is the session's current trial (server-side state); ``shown`` is the trial the page says it
        shows. The UI always passes it: a submit replayed after a new Generate names the old trial and is refused.
        ``judgement = "ranking"`` (when ``arena_judgement`` allows it; the UI keeps the trial's judgement in
        server-side state): ``answers[pos]["rank_realism"]`` and ``["rank_alignment"]`` rank every panel 1..n
        (1 = best), stored like the ranking study design; an incomplete ranking is refused and reveals nothing.
        ``active_seconds``: see :func:`check_active_seconds`."""
        check_session_here(session, shown)
        check_live_session(session)
        judgement = self.check_judgement(judgement)
        if shown is not ANY_TRIAL:
            check_shown(trial_id, shown)
        active = check_active_seconds(active_seconds)
        trial = self.own_trial(session, trial_id)
        stored_answers = build_answers(trial, LIVE_QUESTIONS, answers,
                                            design="ranking" if judgement == "ranking" else "single")  # fmt: skip
        result = self.record(trial, session.rater_pk, stored_answers, active_seconds=active)
        reveal: tuple[tuple[str, str], ...] = ()
        saved = "Ranking saved." if judgement == "ranking" else "Ratings saved."
        message = saved if result.status == "stored" else "This trial was already submitted; nothing changed."
        if self.config.arena_blinding_index:  # the model question first: reveal() / submit_arena_guesses() name them
            return SubmitResult(result.status, (), message + " " + ASK_MODELS_FIRST)
        if self.config.reveal_after_rating:
            # what was just stored is the trial's answers (a duplicate keeps the earlier ones: read them back)
            scored = (any(a.value is not None and not a.cant_judge for a in stored_answers) if result.status == "stored"
                      else has_real_score(self.storage.trial_answers(trial.id, session.rater_pk)))
            if scored:  # the same rule reveal() enforces on its own, without reading the answers back again
                reveal = _labelled(self.storage.trial_models(trial.id, session.rater_pk))
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
        if (self.config.arena_blinding_index and session.study_key == LIVE_STUDY
                and not self.storage.trial_guesses(trial_id, session.rater_pk)):
            raise AccessDenied(ASK_MODELS_FIRST)  # a guess made after the reveal would measure nothing
        return _labelled(rows)

    # ------------------------------------------------------------------ reader studies (rater side)
    def study_record(self, study: StudyDefinition) -> StudyRecord:
        """The study's stored, frozen record; a UserError says why raters cannot open it yet (with start-up
        preparation progress) or that its file was edited after freezing."""
        row = self.storage.study(study.id, study.version)
        if row is None or not row.frozen:
            progress = self.readiness.get(study_key(study)) or StudyProgress("not generated")
            raise UserError(progress.describe(study.title))
        if row.design_hash != study.design_hash():
            raise UserError(EDITED_FOR_RATERS)
        return row

    def edited_after_freezing(self, study: StudyDefinition) -> bool:
        """True when ``study``'s file no longer has its frozen design (raters cannot open it until the file is put
        back, or the change gets a new ``version``)."""
        row = self.storage.study(study.id, study.version)
        return row is not None and row.frozen and row.design_hash != study.design_hash()

    def availability(self, study: StudyDefinition) -> str:
        """Empty when raters can open ``study``; else what they are told."""
        try:
            self.study_record(study)
        except UserError as exc:
            return str(exc)
        return ""

    def linked_study(self, token: str = "", study: str = "", address: str = "", count: bool = True) -> str | None:
        """The key of the study a page link names, or None: a personal ``?token=`` link names its rater's study;
        ``?study=`` names one by key (``id@vN``) or by id (its latest version here). A wrong token counts as a
        wrong guess of ``address`` (with ``count``: one call per page load does); a throttled address's token is
        not looked up."""
        token = token.strip() if isinstance(token, str) else ""
        if token:
            keys = self._guess_keys(address)
            if not keys or self.code_guesses.check(*keys).allowed:
                rater = self.storage.rater_by_token(token)
                if rater is not None and rater.study_key in self.studies:
                    return rater.study_key
                if count:
                    self._wrong_guess(address)
        wanted = study.strip() if isinstance(study, str) else ""
        if not wanted:
            return None
        if wanted in self.studies:
            return wanted
        same_id = [st for st in self.studies.values() if st.id == wanted]
        return study_key(max(same_id, key=lambda st: st.version)) if same_id else None

    def rater_slot(self, study: StudyDefinition, name: str) -> int:
        """The assignment slot a new rater called ``name`` takes (a listed study: the name's slot)."""
        if not name:
            raise UserError("Type your name.")
        joined = len(self.storage.raters(study_key(study)))
        try:
            return assignment.slot_for_rater(study, rater=name, join_index=joined)
        except ValueError:
            raise UserError(f"{name!r} is not a rater of this study.") from None

    def study_sign_in(self, study: StudyDefinition, *, token: str = "", name: str = "", address: str = "") -> RaterSession:
        """Who may sign in, and as whom (README, "Rater identity"):

        * a personal token (invite link ``?token=…`` or the resume code shown at first sign-in) signs in its
          rater;
        * an open study: a typed name makes a NEW rater each time (names are display only) whose session carries
          a personal resume code to show once; typing someone's name never signs in as them;
        * an invite-only study (listed raters): only invite links; a listed name cannot be claimed by typing it.
        """
        key = study_key(study)
        token = (token or "").strip() if isinstance(token, str) else ""
        if token:
            self._check_guesses(address)
            rater = self.storage.rater_by_token(token)
            if rater is None or rater.study_key != key:
                self._wrong_guess(address)
                raise UserError(BAD_INVITE)
            return RaterSession.of(rater)
        if not study.open:  # a typed name is never an identity here: say what to do instead
            name = clean_line(name) if isinstance(name, str) else ""
            raise UserError(NOT_A_RATER.format(name=name) if name else INVITE_ONLY)
        name = check_name(name)

        def join_slot(joined: int) -> int:  # counted in the insert's transaction: no two joiners share an index
            return assignment.slot_for_rater(study, rater=name, join_index=joined)

        try:
            rater = self.storage.add_rater(name, key, with_token=True, join_slot=join_slot)
        except StorageError as exc:
            raise UserError(str(exc)) from None
        return RaterSession.of(rater, rater.token or "")

    def _slot_of(self, session: RaterSession) -> int:
        rater = self.storage.rater(session.rater_pk)
        if rater is None or rater.study_key != session.study_key or rater.slot is None:
            raise AccessDenied("This rater is not part of the study.")
        return rater.slot

    def next_trial(self, study: StudyDefinition, session: RaterSession) -> ShownTrial | None:
        """The first unanswered item of this rater's sequence (created and stored on first showing)."""
        check_study_session(study, session)
        row = self.study_record(study)
        sequence, orders = rater_plan(study, row.design_hash, self._slot_of(session))
        trials = {t.order_index: t for t in self.storage.trials_for(session.rater_pk, row.pk)}
        counts = _progress_counts(sequence, trials.values())
        items = study.item_map()
        slots = None
        for a in sequence:
            t = trials.get(a.order_index)
            if t is not None and t.submitted_at is not None:
                continue
            if t is None:
                slots = slots or self.storage.study_slots(row.pk)
                item = items[a.item_key]
                order = orders[a.order_index]
                t = self.storage.create_trial(
                    rater_pk=session.rater_pk,
                    study_pk=row.pk,
                    prompt=item.prompt,
                    prompt_id=item.prompt_id,
                    modality=study.modality,
                    shown_order=[slots[item.slots[i].key].id for i in order],
                    item_key=a.item_key,
                    order_index=a.order_index,
                    is_repeat=a.is_repeat,
                    practice=a.practice,
                )
            phase = item_phase(a.item_key) if study.design == "naive_disclosed" else ""
            first = next((b for b in sequence if item_phase(b.item_key) == "disclosed"), None) if phase else None
            return self.shown(t, study.questions_for(a.item_key), **counts, mark_artifacts=study.mark_artifacts,
                              phase=phase, disclose=first is a)
        return None

    def previous_trial(
        self, study: StudyDefinition, session: RaterSession, before_order_index: int | None
    ) -> ShownTrial:
        """The rater's latest answered item before ``before_order_index`` (None: the latest), with its stored
        answers, for revising. Only when the study allows answer changes; a change is kept as history."""
        check_study_session(study, session)
        if not study.allow_answer_changes:
            raise UserError("This study does not allow changing answers.")
        row = self.study_record(study)
        answered = [t for t in self.storage.trials_for(session.rater_pk, row.pk) if t.submitted_at is not None]
        earlier = [t for t in answered if before_order_index is None or t.order_index < before_order_index]
        if not earlier:
            raise UserError("There is no earlier answered item.")
        t = max(earlier, key=lambda t: t.order_index)
        sequence = rater_plan(study, row.design_hash, self._slot_of(session))[0]
        return self.shown(t, study.questions_for(t.item_key), **_progress_counts(sequence, answered),
                          answers=self.storage.trial_answers(t.id, session.rater_pk),
                          mark_artifacts=study.mark_artifacts,
                          marks=self.storage.trial_marks(t.id, session.rater_pk) if study.mark_artifacts else None)

    def submit_trial(
        self,
        study: StudyDefinition,
        session: RaterSession,
        trial_id: int | None,
        answers: Mapping[int, Mapping[str, Any]],
        shown: object = ANY_TRIAL,
        reopened: bool = False,
        active_seconds: float | None = None,
        marks: Mapping[int, Sequence[Sequence[float]]] | None = None,
    ) -> SubmitResult:
        """Store the answers to the session's current item.

        ``trial_id`` is the item this session shows (server-side state), ``shown`` the one the page names (the
        UI always passes it): a replayed or stale submit names another trial and is refused, nothing written. An
        item already answered is changed only when this session reopened it ("Previous item") in a study that
        allows changes; otherwise (a second tab, a double click) the result is "duplicate" and says so.

        ``active_seconds``: the page's measure of time visible and not idle (:func:`check_active_seconds`).
        ``marks``: position → [(x, y), …] image-normalised points where the image looks wrong, only in a study
        with ``mark_artifacts`` (:func:`check_marks`; with ``mark_confidence`` each point is (x, y, confidence 1-5));
        stored with the answers, in one transaction."""
        check_session_here(session, shown)
        check_study_session(study, session)
        if shown is not ANY_TRIAL:
            check_shown(trial_id, shown)
        active = check_active_seconds(active_seconds)
        row = self.study_record(study)
        trial = self.own_trial(session, trial_id)
        if trial.study_pk != row.pk:
            raise AccessDenied("This trial is not part of this study.")
        allow_changes = study.allow_answer_changes and (reopened or shown is ANY_TRIAL)
        if trial.submitted_at is not None and not allow_changes:
            return SubmitResult("duplicate", (), ALREADY_ANSWERED)
        points = check_marks(trial, marks, study.mark_artifacts, study.mark_confidence)
        stored = build_answers(trial, study.questions_for(trial.item_key), answers, design=study.design)
        result = self.record(trial, session.rater_pk, stored, allow_changes=allow_changes, active_seconds=active,
                             marks=points)
        messages = {"stored": "Saved.", "duplicate": "Already saved; nothing changed.",
                    "changed": "Your changed answers were saved."}
        return SubmitResult(result.status, (), messages[result.status])

    # ------------------------------------------------------------------ shared helpers
    def record(self, trial: TrialInfo, rater_pk: int, answers: Sequence[Answer], allow_changes: bool = False,
               active_seconds: float | None = None, marks: Sequence[MarkPoint] = ()):
        """``storage.record_ratings``, never reporting "not saved" for a submit whose outcome is unknown: after an
        unexpected error the trial is read again; stored → success, not stored → "nothing was written", and when
        even that cannot be read the person is asked to press Submit again (a second submit is a no-op)."""
        try:
            return self.storage.record_ratings(trial.id, rater_pk, answers, allow_changes=allow_changes,
                                               active_seconds=active_seconds, marks=marks)
        except AccessDenied:  # storage's ownership check: the authority (own_trial checked before)
            raise
        except StorageError as exc:
            raise UserError(str(exc)) from None
        except Exception:  # noqa: BLE001 - the outcome is checked below, the trace is logged
            log.exception("record_ratings failed for trial %s", trial.id)
            try:
                again = self.storage.trial(trial.id)
            except Exception:  # noqa: BLE001
                raise UserError(UNKNOWN_OUTCOME) from None
            if again is not None and again.submitted_at is not None and not allow_changes:
                return RecordResult("stored", len(answers))
            raise UserError("Your answers could not be saved (nothing was written). Press Submit again.") from None

    def own_trial(self, session: RaterSession, trial_id: int | None) -> TrialInfo:
        """The trial ``trial_id`` if it is this session's, which every action on a trial asks first. The rule itself
        lives in storage (``storage.check_owner``), which applies it again wherever it reads or writes a trial's
        answers, marks or models."""
        if trial_id is None:
            raise UserError("There is nothing to submit yet: generate images first.")
        return self.storage.own_trial(int(trial_id), session.rater_pk)

    def shown(
        self,
        trial: TrialInfo,
        questions: Sequence[Question],
        done: int = 0,
        total: int = 0,
        answers: Mapping[int, Mapping[str, Any]] | None = None,
        practice_done: int = 0,
        practice_total: int = 0,
        mark_artifacts: bool = False,
        marks: Mapping[int, Sequence[tuple[float, float]]] | None = None,
        phase: str = "",
        disclose: bool = False,
    ) -> ShownTrial:
        infos = []
        for image_id in trial.shown_order:
            info = self.storage.image(image_id)
            if info is None:
                raise UserError(MISSING_IMAGE)
            problem = self.integrity.check(info.id, info.file_path, info.sha256)  # logged and listed for the admin
            if problem:
                raise UserError(MISSING_IMAGE if not Path(info.file_path).is_file() else DAMAGED_IMAGE)
            infos.append(info)
        tokens = self.presentations.issue(trial.rater_pk, trial.id, [(i.id, i.file_path, i.sha256) for i in infos])
        panels = [Panel(pos, info.id, info.file_path, token)
                  for pos, (info, token) in enumerate(zip(infos, tokens), start=1)]  # fmt: skip
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
            practice=trial.practice,
            practice_done=practice_done,
            practice_total=practice_total,
            mark_artifacts=mark_artifacts,
            marks=marks or {},
            phase=phase,
            disclose=disclose,
        )


MISSING_IMAGE = "An image of this trial is missing on the server; tell the study team."
DAMAGED_IMAGE = (
    "An image of this item is damaged on the server (its file no longer matches the checksum recorded when it was "
    "made), so the item is not shown; tell the study team. Nothing you submitted is affected."
)

def _progress_counts(sequence: Sequence[assignment.Assignment], trials) -> dict[str, int]:
    """Progress through a rater's sequence: real items (``done``/``total``) and practice items apart
    (``practice_done``/``practice_total``); ``trials`` are the rater's stored trials of the study."""
    practice = {a.order_index for a in sequence if a.practice}
    answered = [t.order_index for t in trials if t.submitted_at is not None]
    practice_done = sum(1 for i in answered if i in practice)
    return {"done": len(answered) - practice_done, "total": len(sequence) - len(practice),
            "practice_done": practice_done, "practice_total": len(practice)}


def _labelled(rows: Sequence[PanelModel]) -> tuple[tuple[str, str], ...]:
    return tuple((panel_label(row.position), row.model) for row in rows)


@functools.lru_cache(maxsize=4096)
def rater_plan(study: StudyDefinition, design_hash: str, slot: int) -> tuple[tuple, dict]:
    """A rater slot's sequence and panel orders: a pure function of (study design, slot), computed once per
    process (before, every submit recomputed it: 45–110 ms at 201 items × 50 raters)."""
    sequence = assignment.rater_sequence(study, slot)
    return sequence, assignment.sequence_panel_orders(study, slot, sequence)  # repeats get a new panel order
def database_unreachable(exc: BaseException) -> bool:
    """The database server could not be reached (restarting, network): see :func:`p2p_app.storage.unreachable`."""
    return unreachable(exc)


EDITED_FOR_RATERS = ("This study cannot be opened: its study file was changed after the study was frozen, so it no "
                     "longer matches what raters are meant to see. Your earlier answers are kept. Please tell the "
                     "study team.")


def edited_study_note(key: str, study_id: str) -> str:
    """What the server log and the admin page say about a study edited after freezing."""
    return (f"Study {key} was edited after it was frozen: its file no longer matches the frozen design, so raters "
            f"cannot open it. Put the frozen study file back, or raise its `version` (a new study, rated from "
            f"scratch) and run `p2p study generate {study_id}`.")

