"""The model question of the blinding index (issue 22 item 1), a part of :class:`p2p_app.service.P2PApp`: after a
screen's ratings are stored, "Which model do you think made this image?" for each image — in a study with
``blinding_index`` before the next item, in the arena with ``arena_blinding_index`` before the reveal (which waits
for it: ``P2PApp.reveal``). Answers are checked by :func:`p2p_app.forms.check_model_guesses` and stored once,
never changed (``Storage.record_guesses``)."""

from __future__ import annotations

from typing import Any, Mapping

from .forms import NO_SCORE_NO_REVEAL, UserError, check_model_guesses, has_real_score
from .sessions import RaterSession, SubmitResult, check_live_session, check_study_session
from .storage import AccessDenied
from .storage.guesses import NOT_RATED_YET
from .study import StudyDefinition

ASK_MODELS_FIRST = "Which model made each image? Answer below first; then the models are named."


class ModelQuestion:
    """The model question's service methods (mixed into ``P2PApp``, whose ``config``, ``storage``,
    ``study_record``, ``own_trial`` and ``reveal`` they use)."""

    def submit_guesses(
        self, study: StudyDefinition, session: RaterSession, trial_id: int | None, guesses: Mapping[int, Any],
    ) -> SubmitResult:
        """Store the model question's answers of a study with ``blinding_index`` (position → an option of
        ``study.guess_options()`` or ``dont_know``) for the session's trial, only once its ratings are stored;
        refused (nothing written) otherwise, or for another's trial; a trial that has its guesses keeps them
        ("duplicate")."""
        check_study_session(study, session)
        if not study.blinding_index:
            raise UserError("This study does not ask which model made an image; nothing was saved.")
        row = self.study_record(study)
        if trial_id is None:  # no screen's ratings stored in this session yet
            raise AccessDenied(NOT_RATED_YET)
        trial = self.own_trial(session, trial_id)
        if trial.study_pk != row.pk:
            raise AccessDenied("This trial is not part of this study.")
        checked = check_model_guesses(trial, guesses, study.guess_options())
        result = self.storage.record_guesses(trial.id, session.rater_pk, checked)
        return SubmitResult(result.status, (), "Saved." if result.status == "stored" else
                            "Already saved; a model guess is never changed.")

    def arena_guess_options(self, modality: str) -> tuple[str, ...]:
        """The model question's options in the arena (``arena_blinding_index``): the modality's configured models
        in config order — the same for every trial of the modality, whatever it shows."""
        return tuple(m.name for m in self.config.models_for(modality))

    def submit_arena_guesses(self, session: RaterSession, trial_id: int | None,
                             guesses: Mapping[int, Any]) -> SubmitResult:
        """Store the arena's model question (position → a model of the trial's modality or ``dont_know``), only once
        the trial's ratings are stored and before anything is revealed; then the reveal (when
        ``reveal_after_rating`` and the ratings hold a real score). Stored guesses never change."""
        check_live_session(session)
        if not self.config.arena_blinding_index:
            raise UserError("This arena does not ask which model made an image; nothing was saved.")
        if trial_id is None:
            raise AccessDenied(NOT_RATED_YET)
        trial = self.own_trial(session, trial_id)
        checked = check_model_guesses(trial, guesses, self.arena_guess_options(trial.modality))
        result = self.storage.record_guesses(trial.id, session.rater_pk, checked)
        message = "Saved." if result.status == "stored" else "Already saved; a model guess is never changed."
        reveal: tuple[tuple[str, str], ...] = ()
        if self.config.reveal_after_rating:
            if has_real_score(self.storage.trial_answers(trial.id, session.rater_pk)):
                reveal = self.reveal(session, trial.id)
            else:
                message += " " + NO_SCORE_NO_REVEAL
        return SubmitResult(result.status, reveal, message)
