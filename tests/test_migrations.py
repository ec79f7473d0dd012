"""Schema migrations (Alembic): a new database and a database made by release 53ee3b6 (before migrations existed,
committed as tests/data/db_release_53ee3b6.sqlite) both end at the models' schema, without losing a row."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from p2p_app import migrations
from p2p_app.storage import Base, Storage

FIXTURE = Path(__file__).parent / "data" / "db_release_53ee3b6.sqlite"


def counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as con:
        names = [n for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'") if n != "alembic_version"]
        return {n: con.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}


def schema_drift(url: str) -> list:
    engine = create_engine(url)
    with engine.connect() as con:
        diff = compare_metadata(MigrationContext.configure(con, opts={"compare_type": True}), Base.metadata)
    engine.dispose()
    return diff


def test_a_new_database_gets_the_models_schema_through_the_migrations(tmp_path):
    storage = Storage(f"sqlite:///{tmp_path / 'new.sqlite'}", tmp_path / "images")
    assert migrations.current_revision(storage.engine) == migrations.head_revision()
    storage.close()
    assert schema_drift(f"sqlite:///{tmp_path / 'new.sqlite'}") == []


def test_a_database_of_release_53ee3b6_upgrades_on_open_without_losing_a_row(tmp_path):
    db = tmp_path / "old.sqlite"
    shutil.copy(FIXTURE, db)
    before = counts(db)
    assert before["ratings"] == 21 and before["trials"] == 5 and before["images"] == 84
    with sqlite3.connect(db) as con:  # the fixture really is pre-migration
        assert "alembic_version" not in {n for (n,) in con.execute("SELECT name FROM sqlite_master")}
    storage = Storage(f"sqlite:///{db}", tmp_path / "images")
    assert migrations.current_revision(storage.engine) == migrations.head_revision()
    frame = storage.ratings_frame()
    assert len(frame) == 21 and set(frame["study"]) == {"live", "colonoscopy_pilot@v1"}
    # 0003 (issue 13): the release's answers have no active time (unknown, not zero), are no practice, no marks
    assert frame["active_seconds"].isna().all() and not frame["practice"].any()
    assert storage.marks_frame().empty
    assert storage.study("colonoscopy_pilot", 1).frozen_at is not None
    with sqlite3.connect(FIXTURE) as con:  # the release stored invite tokens in clear
        (pk, clear), = con.execute("SELECT id, token FROM raters WHERE token IS NOT NULL").fetchall()
    assert storage.rater_by_token(clear).pk == pk  # the old invite link still works
    assert all(r.token is None or (len(r.token) == 64 and r.token != clear) for r in storage.raters())
    storage.close()
    after = counts(db)
    assert {k: after[k] for k in before} == before
    with sqlite3.connect(db) as con:  # every trial of the release is a real (non-practice) item
        assert con.execute("SELECT count(*), sum(practice) FROM trials").fetchone() == (5, 0)
    assert schema_drift(f"sqlite:///{db}") == []
    again = Storage(f"sqlite:///{db}", tmp_path / "images")  # opening again is a no-op
    again.close()
    assert counts(db) == after


def test_0004_stores_image_paths_relative_to_the_data_folder_so_a_moved_folder_still_works(tmp_path):
    from p2p_app.blinding import new_image_id, presentation_png, sha256_hex
    from PIL import Image

    data = tmp_path / "data"
    storage = Storage(f"sqlite:///{data / 'p2p.sqlite'}", data / "images")
    png = presentation_png(Image.new("RGB", (64, 64), (200, 30, 30)), 64)
    info = storage.add_image(image_id=new_image_id(), png=png, sha256=sha256_hex(png), size=64, model="m",
                             source="generated", prompt="p", modality="colonoscopy")  # fmt: skip
    storage.close()
    with sqlite3.connect(data / "p2p.sqlite") as con:  # a new image is stored relative to the data folder
        assert con.execute("SELECT file_path FROM images").fetchone()[0] == f"images/{info.id}.png"
        # a database of revision 0003 held the absolute path: put it back that way
        con.execute("UPDATE images SET file_path = ?", (str((data / "images" / f"{info.id}.png").resolve()),))
        con.execute("UPDATE alembic_version SET version_num = '0003'")
        con.execute("ALTER TABLE marks DROP COLUMN confidence")  # added by 0005, after 0003
        con.execute("DROP TABLE guesses")  # made by a later revision (0006): a 0003 database has none
    Storage(f"sqlite:///{data / 'p2p.sqlite'}", data / "images").close()  # opening upgrades it
    with sqlite3.connect(data / "p2p.sqlite") as con:
        assert con.execute("SELECT file_path FROM images").fetchone()[0] == f"images/{info.id}.png"
    moved = tmp_path / "restored" / "p2p_data"
    moved.parent.mkdir()
    data.rename(moved)  # a data folder moved or restored elsewhere: the old location is gone
    again = Storage(f"sqlite:///{moved / 'p2p.sqlite'}", moved / "images")
    found = again.image(info.id)
    assert Path(found.file_path) == (moved / "images" / f"{info.id}.png").resolve()
    assert Path(found.file_path).read_bytes() == png
    again.close()


def test_0004_converts_a_release_database_whose_folder_has_moved(tmp_path):
    db = tmp_path / "old.sqlite"
    shutil.copy(FIXTURE, db)
    with sqlite3.connect(db) as con:
        old = dict(con.execute("SELECT id, file_path FROM images").fetchall())
    assert all(p.startswith("/") for p in old.values())  # absolute paths of a folder that no longer exists
    storage = Storage(f"sqlite:///{db}", tmp_path / "images")
    storage.close()
    with sqlite3.connect(db) as con:
        new = dict(con.execute("SELECT id, file_path FROM images").fetchall())
    assert new == {i: f"images/{i}.png" for i in old}
