"""Blinding index (issue 22 item 1): the raters' model guesses

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

- ``guesses``: one row per trial and image of a study with ``blinding_index = true``: which option the rater
  thinks made the image (a model name, ``real``) or ``dont_know``, asked after the trial's ratings are stored.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: Union[str, Sequence[str], None] = "0005"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "guesses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("rater_pk", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("guess", sa.String(length=200), nullable=False),
        sa.Column("guessed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"]),
        sa.ForeignKeyConstraint(["rater_pk"], ["raters.id"]),
        sa.ForeignKeyConstraint(["trial_id"], ["trials.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("trial_id", "image_id", name="uq_guess_trial_image"),
    )
    op.create_index(op.f("ix_guesses_trial_id"), "guesses", ["trial_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_guesses_trial_id"), table_name="guesses")
    op.drop_table("guesses")
