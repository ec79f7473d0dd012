"""Confidence on artifact marks (issue 22)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03

- ``marks.confidence`` (nullable integer): how sure the rater is that a marked point is an artifact, 1-5, in
  studies with ``mark_confidence``; NULL = not asked (marks stored before this revision, studies without it).
  The inferred ROC (highest confidence per image, RJafroc's HrAuc) reads it.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: Union[str, Sequence[str], None] = "0004"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("marks") as batch:
        batch.add_column(sa.Column("confidence", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("marks") as batch:
        batch.drop_column("confidence")
