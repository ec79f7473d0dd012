"""Rater identity (issue 10): names are display only, tokens are stored as their sha256

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

- ``raters``: the unique (name, study) constraint goes: two people may type the same name and stay two raters.
- ``raters.token``: a clear invite token is replaced by its sha256 (hex), so existing invite links keep working
  while the database no longer holds a usable token.
"""
import hashlib
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: Union[str, Sequence[str], None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("raters") as batch:
        batch.drop_constraint("uq_rater_name_study", type_="unique")
    bind = op.get_bind()
    raters = sa.table("raters", sa.column("id", sa.Integer), sa.column("token", sa.String))
    clear = bind.execute(sa.select(raters.c.id, raters.c.token).where(sa.func.length(raters.c.token) != 64)).all()
    for pk, token in clear:
        digest = hashlib.sha256(token.encode()).hexdigest()
        bind.execute(raters.update().where(raters.c.id == pk).values(token=digest))


def downgrade() -> None:
    raise NotImplementedError("hashed tokens cannot be turned back into clear ones")
