"""Raters: sign-in, invitations and personal tokens (only a token's sha256 is stored)."""

from __future__ import annotations

import hashlib
import secrets
from typing import Callable

from sqlalchemy import func, select

from .engine import Database, retried
from .records import RaterInfo, StorageError, rater_info
from .schema import LIVE_STUDY, Rater


def token_hash(token: str) -> str:
    """What is stored for a personal token: its sha256 (hex). Tokens carry 192 random bits, so no salt is needed."""
    return hashlib.sha256(token.encode()).hexdigest()


class RaterStore(Database):
    """Reads and writes of raters."""

    def sign_in_rater(self, name: str, study_key: str = LIVE_STUDY, slot: int | None = None) -> RaterInfo:
        """A NEW rater called ``name`` with a personal resume token (returned in clear, once).

        A name is never an identity: two sign-ins with one name are two raters. To come back as the same
        rater, a person presents the token (:meth:`rater_by_token`)."""
        return self.add_rater(name, study_key, slot=slot, with_token=True)

    @retried
    def add_rater(
        self, name: str, study_key: str = LIVE_STUDY, slot: int | None = None, with_token: bool = False,
        unique_slot: bool = False, join_slot: Callable[[int], int] | None = None,
    ) -> RaterInfo:
        """Create a rater; with ``with_token`` the returned info carries the clear token (only its sha256 is
        stored). ``unique_slot`` refuses a ``slot`` another rater of the study already holds (a study that lists
        its raters: one person per listed name), checked in the same transaction as the insert. ``join_slot``
        (instead of ``slot``): the slot is ``join_slot(number of raters of the study so far)`` (an open study's
        join order), counted in the same transaction as the insert. Both are serialised per study (SQLite: one
        writer; PostgreSQL: an advisory lock), so concurrent sign-ins, in one app server or several, never take
        one join index or one listed place twice."""
        clean = " ".join(name.split())
        if not clean:
            raise StorageError("The rater name is empty.")
        token = secrets.token_urlsafe(24) if with_token else None
        with self._tx() as s:
            if (unique_slot or join_slot is not None) and self.engine.dialect.name == "postgresql":
                s.execute(select(func.pg_advisory_xact_lock(28722, func.hashtext(study_key))))
            if join_slot is not None:
                joined = s.scalar(select(func.count()).select_from(Rater).where(Rater.study_key == study_key))
                slot = join_slot(int(joined or 0))
            if unique_slot:
                holder = s.scalars(select(Rater).where(Rater.slot == slot, Rater.study_key == study_key)).first()
                if holder is not None:
                    raise StorageError(
                        f"{holder.name!r} already holds this rater place of {study_key} (invited once; "
                        "`p2p raters reissue` makes a new link)."
                    )
            r = Rater(
                public_id="r" + secrets.token_hex(4),
                name=clean,
                study_key=study_key,
                slot=slot,
                token=token_hash(token) if token else None,
            )
            s.add(r)
            s.flush()
            info = rater_info(r)
        return RaterInfo(info.pk, info.public_id, info.name, info.study_key, info.slot, token)

    def rater_by_token(self, token: str) -> RaterInfo | None:
        if not token or not isinstance(token, str) or len(token) > 200:
            return None
        with self._read() as s:
            r = s.scalars(select(Rater).where(Rater.token == token_hash(token.strip()))).first()
            return rater_info(r) if r else None

    @retried
    def reissue_token(self, rater_pk: int) -> str:
        """A new personal token for the rater (returned in clear, once); the old one stops working."""
        token = secrets.token_urlsafe(24)
        with self._tx() as s:
            r = s.get(Rater, rater_pk)
            if r is None:
                raise StorageError(f"no rater #{rater_pk}")
            r.token = token_hash(token)
        return token

    def rater(self, rater_pk: int) -> RaterInfo | None:
        with self._read() as s:
            r = s.get(Rater, rater_pk)
            return rater_info(r) if r else None

    def raters(self, study_key: str | None = None) -> list[RaterInfo]:
        with self._read() as s:
            q = select(Rater).order_by(Rater.id)
            if study_key is not None:
                q = q.where(Rater.study_key == study_key)
            return [rater_info(r) for r in s.scalars(q)]

