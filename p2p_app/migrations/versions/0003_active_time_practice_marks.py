"""Reading screen (issue 13): active time, practice items, artifact marks

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29

- ``ratings.active_seconds`` (nullable float): time the page was visible and not idle; NULL = unknown (answers
  stored before this revision, clients that do not measure it).
- ``trials.practice`` (bool, default false): a practice item, shown first and never analysed.
- ``marks``: points a rater marked on an image as looking wrong (image-normalised x, y), with history.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: Union[str, Sequence[str], None] = "0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("ratings") as batch:
        batch.add_column(sa.Column("active_seconds", sa.Float(), nullable=True))
    with op.batch_alter_table("trials") as batch:
        batch.add_column(sa.Column("practice", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "marks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("rater_pk", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("x", sa.Float(), nullable=False),
        sa.Column("y", sa.Float(), nullable=False),
        sa.Column("marked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("replaced_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"]),
        sa.ForeignKeyConstraint(["rater_pk"], ["raters.id"]),
        sa.ForeignKeyConstraint(["trial_id"], ["trials.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_marks_trial_id"), "marks", ["trial_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_marks_trial_id"), table_name="marks")
    op.drop_table("marks")
    with op.batch_alter_table("trials") as batch:
        batch.drop_column("practice")
    with op.batch_alter_table("ratings") as batch:
        batch.drop_column("active_seconds")
