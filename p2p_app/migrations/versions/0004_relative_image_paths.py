"""Image paths relative to the data folder (issue 23)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

``images.file_path`` held absolute paths, so a moved or restored data folder read the old location and, once
that was gone, raters were told images were missing. From here on a path is stored relative to the data folder
(``images/<id>.png``). Existing rows are converted:

* an absolute path under the data folder the database is opened with → relative to it;
* an absolute path elsewhere whose last two parts are ``<folder>/<id>.png`` with ``<folder>`` the name of the
  app's image folder (``images``) and ``<id>`` the row's own id (a data folder moved before this upgrade) →
  ``images/<id>.png``;
* anything else is kept as it is (still read as an absolute path).

No schema change; downgrade makes the relative paths absolute again under the same data folder.
"""
from pathlib import Path, PurePosixPath
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import context, op

revision: str = "0004"
down_revision: Union[str, Sequence[str], None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

IMAGE_FOLDER = "images"


def relative_path(image_id: str, stored: str, data_dir: Path | None) -> str:
    """The stored path as it is kept from this revision on (see the module docstring)."""
    path = Path(stored)
    if not path.is_absolute():
        return stored
    if data_dir is not None:
        try:
            return path.resolve().relative_to(data_dir.resolve()).as_posix()
        except ValueError:
            pass
    if path.name == f"{image_id}.png" and path.parent.name == IMAGE_FOLDER:
        return str(PurePosixPath(IMAGE_FOLDER, path.name))
    return stored


def _data_dir() -> Path | None:
    value = context.config.attributes.get("data_dir")
    return Path(value) if value else None


def upgrade() -> None:
    data_dir = _data_dir()
    conn = op.get_bind()
    images = sa.table("images", sa.column("id", sa.String), sa.column("file_path", sa.Text))
    for image_id, stored in conn.execute(sa.select(images.c.id, images.c.file_path)).all():
        new = relative_path(image_id, stored, data_dir)
        if new != stored:
            conn.execute(images.update().where(images.c.id == image_id).values(file_path=new))


def downgrade() -> None:
    data_dir = _data_dir()
    if data_dir is None:
        return
    conn = op.get_bind()
    images = sa.table("images", sa.column("id", sa.String), sa.column("file_path", sa.Text))
    for image_id, stored in conn.execute(sa.select(images.c.id, images.c.file_path)).all():
        if not Path(stored).is_absolute():
            conn.execute(images.update().where(images.c.id == image_id)
                         .values(file_path=str(data_dir.resolve() / stored)))
