"""Read-outs: the tidy ratings frame and the marks frame (docs/CONTRACTS.md), unblinded, for analysis and export."""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd
from sqlalchemy import Select, false, func, select

from ..study import item_phase
from ..text import name_key
from ..tidy import MARK_COLUMNS, MARK_DTYPES, TIDY_COLUMNS, TIDY_DEFAULTS, TIDY_DTYPES
from .engine import Database
from .schema import LIVE_STUDY, Image, Mark, Rater, Rating, Study, Trial, aware


class FrameStore(Database):
    """The database as data frames."""

    def count_ratings(self) -> int:
        with self._read() as s:
            return s.scalar(select(func.count()).select_from(Rating)) or 0

    def ratings_frame(
        self, study_key: str | None = None, rater_groups: Mapping[str, Mapping[str, str]] | None = None
    ) -> pd.DataFrame:
        """The tidy ratings frame (docs/CONTRACTS.md), one row per answer, plus ``rater_name``.

        ``rater_groups``: study key -> {name_key(rater name): group} (``study.rater_group_map``), which fills
        ``rater_group``; the study file is where groups live, the database does not hold them."""
        groups_of = rater_groups or {}
        with self._read() as s:
            rows = s.execute(of_study(ratings_query(), study_key)).all()
        return tidy_frame([rating_record(row, groups_of) for row in rows])

    def marks_frame(self, study_key: str | None = None, history: bool = False) -> pd.DataFrame:
        """Marked points (``p2p_app.tidy.MARK_COLUMNS``), one row per point, unblinded (model, source); only the
        current marks unless ``history`` (then replaced ones too, with ``replaced_at``). ``study_key`` as in
        :meth:`ratings_frame`."""
        prompt_id = func.coalesce(func.nullif(Trial.prompt_id, ""), Image.prompt_id)  # the trial's, as ratings_frame
        q = (
            select(Study.study_id, Study.version, Rater.public_id, Trial.id, Trial.item_key, Mark.image_id,
                   Image.model, Image.source, prompt_id, Mark.position, Mark.x, Mark.y, Mark.confidence, Trial.practice,
                   Mark.marked_at, Mark.replaced_at)
            .join(Trial, Trial.id == Mark.trial_id)
            .join(Rater, Rater.id == Mark.rater_pk)
            .join(Image, Image.id == Mark.image_id)
            .outerjoin(Study, Study.id == Trial.study_pk)
            .order_by(Mark.id)
        )
        if not history:
            q = q.where(Mark.replaced_at.is_(None))
        q = of_study(q, study_key)
        with self._read() as s:
            rows = s.execute(q).all()
        records = [
            {"study": f"{sid}@v{ver}" if sid is not None else LIVE_STUDY, "rater_id": pub, "trial_id": tid,
             "item_id": item, "image_id": iid, "model": model, "source": source, "prompt_id": pid or "",
             "position": pos, "x": float(x), "y": float(y), "confidence": conf, "practice": bool(practice),
             "marked_at": aware(marked), "replaced_at": aware(replaced)}
            for sid, ver, pub, tid, item, iid, model, source, pid, pos, x, y, conf, practice, marked, replaced in rows
        ]
        return marks_frame(records)


def ratings_query() -> Select:
    """Every stored answer with its trial, rater, image and (outer) study, in storing order: the columns
    :func:`rating_record` reads."""
    return (
        select(
            Study.study_id,
            Study.version,
            Rater.public_id,
            Rater.name,
            Trial.item_key,
            Trial.id,
            Rating.image_id,
            Image.model,
            Image.source,
            Image.prompt_id,
            Trial.prompt_id,
            Trial.prompt,
            Image.prompt,
            Image.modality,
            Image.seed,
            Rating.position,
            Trial.shown_order,
            Trial.order_index,
            Rating.question,
            Rating.value,
            Rating.choices,
            Rating.cant_judge,
            Rating.comment,
            Trial.shown_at,
            Rating.answered_at,
            Rating.seconds,
            Trial.is_repeat,
            Image.params,
            Rating.active_seconds,
            Trial.practice,
        )
        .join(Trial, Trial.id == Rating.trial_id)
        .join(Rater, Rater.id == Rating.rater_pk)
        .join(Image, Image.id == Rating.image_id)
        .outerjoin(Study, Study.id == Trial.study_pk)
        .order_by(Rating.id)
    )


def rating_record(row: Any, groups_of: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """One row of :func:`ratings_query` as a tidy record (``rater_group`` from ``groups_of``, see ratings_frame)."""
    (sid, ver, pub, name, item, tid, iid, model, source, pid, tpid, tprompt, iprompt, modality, seed, pos, order,
     oidx, question, value, choices, cj, comment, shown, answered, secs, rep, params, active, practice) = row
    params = params or {}
    study = f"{sid}@v{ver}" if sid is not None else LIVE_STUDY
    return {
        "study": study,
        "rater_id": pub,
        "item_id": item,
        "trial_id": tid,
        "image_id": iid,
        "model": model,
        "source": source,
        # the trial's prompt, not the image's: a real control is judged against the trial's prompt (its
        # caption in a study), and an image reused from the generation cache may have been made for
        # another prompt id (another study, a practice item) with the same text
        "prompt_id": tpid or pid or "",
        "prompt": tprompt or iprompt,
        "modality": modality,
        "seed": seed,
        "position": pos,
        "n_panels": len(order),
        "order_index": oidx,
        "question": question,
        "value": float(value) if value is not None and not cj else float("nan"),
        "choices": choices or "",
        "cant_judge": bool(cj),
        "comment": comment or "",
        "shown_at": aware(shown),
        "answered_at": aware(answered),
        "seconds": float(secs),
        "is_repeat": bool(rep),
        # catch images carry their kind in params (reader.make_catch_images); rater_group is filled
        # from the study file by :func:`with_rater_groups` (export), the database does not hold it
        "catch": str(params.get("catch", "")) if isinstance(params, dict) else "",
        "catch_kind": str(params.get("catch_kind", "")) if isinstance(params, dict) else "",
        "rater_group": groups_of.get(study, {}).get(name_key(name), ""),
        "active_seconds": float(active) if active is not None else float("nan"),
        "practice": bool(practice),
        "phase": item_phase(item or ""),
        "rater_name": name,
    }


def of_study(q, study_key: str | None):
    """``q`` (joined to Trial and, outer, to Study) narrowed to ``study_key``: ``"live"`` the live arena, ``"id@vN"``
    one version, a bare id every version of that study, None everything."""
    if study_key == LIVE_STUDY:
        return q.where(Trial.study_pk.is_(None))
    if study_key is None:
        return q
    study_id, _, version = study_key.partition("@v")
    q = q.where(Study.study_id == study_id)
    if version:
        q = q.where(Study.version == int(version)) if version.isdigit() else q.where(false())
    return q


def marks_frame(records: list[dict]) -> pd.DataFrame:
    """Records → the marks frame with :data:`p2p_app.tidy.MARK_DTYPES` (an empty frame keeps its columns)."""
    return pd.DataFrame.from_records(records, columns=list(MARK_COLUMNS)).astype(dict(MARK_DTYPES))


def tidy_frame(records: list[dict]) -> pd.DataFrame:
    """Records → the tidy frame with the documented dtypes (an empty frame keeps its columns), plus rater_name."""
    df = pd.DataFrame.from_records(records, columns=[*TIDY_COLUMNS, "rater_name"])
    df = df.reindex(columns=[*TIDY_COLUMNS, "rater_name"])  # a record without a later column: its default below
    df = df.fillna(dict(TIDY_DEFAULTS)) if len(df) else df  # issue 14 columns not stored yet: their defaults
    df = df.astype({**TIDY_DTYPES, "rater_name": "str"})
    return df
