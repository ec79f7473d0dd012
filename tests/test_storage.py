"""Storage on a real SQLite file and on PostgreSQL (``db_url``, tests/conftest.py): transactions, the unique
constraint, history, the tidy frame, hashed tokens, many writers at once."""

from __future__ import annotations

import sqlite3
import threading

import pytest
from PIL import Image

from p2p_app.blinding import new_image_id, presentation_png, sha256_hex
from p2p_app.storage import AccessDenied, Answer, Storage, StorageError


@pytest.fixture()
def storage(db_url, tmp_path):
    s = Storage(db_url, tmp_path / "images")
    yield s
    s.close()


@pytest.fixture()
def sqlite_storage(tmp_path):
    s = Storage(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "images")
    yield s
    s.close()


def add_image(storage: Storage, model: str = "m1", key: str | None = None, colour=(200, 10, 10)):
    png = presentation_png(Image.new("RGB", (64, 64), colour), 32)
    return storage.add_image(
        image_id=new_image_id(), png=png, sha256=sha256_hex(png), size=32, model=model, source="generated",
        prompt="a polyp", modality="colonoscopy", seed=1, cache_key=key,
    )


def make_trial(storage: Storage, n: int = 2):
    rater = storage.sign_in_rater("Dr Who")
    images = [add_image(storage, f"m{i}") for i in range(n)]
    trial = storage.create_trial(
        rater_pk=rater.pk, prompt="a polyp", modality="colonoscopy", shown_order=[i.id for i in images]
    )
    return rater, images, trial


def full_answers(images, value=3):
    return [Answer(i.id, q, value) for i in images for q in ("realism", "alignment")]


def test_sqlite_is_wal_with_foreign_keys(sqlite_storage, tmp_path):
    storage = sqlite_storage
    with storage.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000


def test_record_and_double_submit_is_a_no_op(storage):
    rater, images, trial = make_trial(storage)
    assert storage.record_ratings(trial.id, rater.pk, full_answers(images)).status == "stored"
    assert storage.record_ratings(trial.id, rater.pk, full_answers(images, 5)).status == "duplicate"
    df = storage.ratings_frame()
    assert len(df) == 4 and set(df["value"]) == {3.0}
    assert sorted(df["position"].unique()) == [1, 2]
    assert set(df["model"]) == {"m0", "m1"}


def test_unique_constraint_in_the_database(sqlite_storage, tmp_path):
    storage = sqlite_storage
    rater, images, trial = make_trial(storage)
    storage.record_ratings(trial.id, rater.pk, full_answers(images))
    con = sqlite3.connect(tmp_path / "db.sqlite")
    with pytest.raises(sqlite3.IntegrityError):
        con.execute(
            "INSERT INTO ratings (trial_id, rater_pk, image_id, question, attempt, value, choices, cant_judge, "
            "comment, position, answered_at, seconds) VALUES (?, ?, ?, 'realism', 0, 1, '', 0, '', 1, "
            "'2026-01-01', 1.0)",
            (trial.id, rater.pk, images[0].id),
        )
    con.close()


def test_all_or_nothing_when_an_answer_is_bad(storage):
    rater, images, trial = make_trial(storage)
    foreign = add_image(storage, "other")
    bad = full_answers(images) + [Answer(foreign.id, "realism", 2)]
    with pytest.raises(AccessDenied):
        storage.record_ratings(trial.id, rater.pk, bad)
    assert storage.count_ratings() == 0
    assert storage.trial(trial.id).submitted_at is None


def test_other_rater_cannot_submit_or_reveal(storage):
    rater, images, trial = make_trial(storage)
    other = storage.sign_in_rater("Someone else")
    with pytest.raises(AccessDenied):
        storage.record_ratings(trial.id, other.pk, full_answers(images))
    with pytest.raises(AccessDenied, match="only after"):
        storage.trial_models(trial.id, rater.pk)
    storage.record_ratings(trial.id, rater.pk, full_answers(images))
    assert [p.model for p in storage.trial_models(trial.id, rater.pk)] == ["m0", "m1"]
    with pytest.raises(AccessDenied):
        storage.trial_models(trial.id, other.pk)


def test_storage_is_the_one_authority_on_trial_ownership(storage):
    """own_trial and every read of a rater's trial refuse another rater's trial and a missing one alike."""
    rater, images, trial = make_trial(storage)
    other = storage.sign_in_rater("Someone else")
    assert storage.own_trial(trial.id, rater.pk) == trial
    storage.record_ratings(trial.id, rater.pk, full_answers(images))
    for pk, trial_id in ((other.pk, trial.id), (rater.pk, trial.id + 999)):
        for read in (storage.own_trial, storage.trial_answers, storage.trial_marks, storage.trial_models):
            with pytest.raises(AccessDenied, match="not yours"):
                read(trial_id, pk)
        with pytest.raises(AccessDenied, match="not yours"):
            storage.record_ratings(trial_id, pk, full_answers(images), allow_changes=True)
    assert storage.trial_answers(trial.id, rater.pk)[1]["realism"] == 3


def test_changed_answers_keep_history(storage):
    rater, images, trial = make_trial(storage)
    storage.record_ratings(trial.id, rater.pk, full_answers(images, 2))
    changed = [Answer(images[0].id, "realism", 5)] + full_answers(images, 2)[1:]
    result = storage.record_ratings(trial.id, rater.pk, changed, allow_changes=True)
    assert result.status == "changed" and result.n_rows == 1
    history = storage.rating_history(trial.id)
    assert len(history) == 1 and history[0].value == 2
    df = storage.ratings_frame()
    assert df.loc[(df.image_id == images[0].id) & (df.question == "realism"), "value"].item() == 5.0
    assert len(df) == 4


def test_concurrent_double_submit_stores_once(storage):
    rater, images, trial = make_trial(storage, n=3)
    results = []

    def submit():
        results.append(storage.record_ratings(trial.id, rater.pk, full_answers(images)).status)

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["duplicate"] * 3 + ["stored"]
    assert storage.count_ratings() == 6


def test_cache_key_is_unique_and_image_files_are_opaque(storage):
    a = add_image(storage, key="k1")
    b = add_image(storage, key="k1")
    assert a.id == b.id
    assert storage.count_images() == 1
    assert a.file_path.endswith(f"{a.id}.png") and "m1" not in a.file_path
    assert len(list(storage.image_dir.glob("*.png"))) == 1


def test_trial_needs_known_images(storage):
    rater = storage.sign_in_rater("x")
    with pytest.raises(StorageError):
        storage.create_trial(rater_pk=rater.pk, prompt="p", modality="radiology", shown_order=["nope"])
    with pytest.raises(StorageError):
        storage.create_trial(rater_pk=rater.pk, prompt="p", modality="radiology", shown_order=[])


def test_a_name_is_not_an_identity(storage):
    """Typing someone's name makes a new rater; only the personal token finds a rater again."""
    a = storage.sign_in_rater("Dr  Smith")
    b = storage.sign_in_rater("dr smith")
    c = storage.sign_in_rater("Dr Smith")
    assert len({a.pk, b.pk, c.pk}) == 3 and len({a.public_id, b.public_id, c.public_id}) == 3
    assert a.name == "Dr Smith" and a.token and b.token and a.token != b.token
    assert storage.rater_by_token(a.token).pk == a.pk
    assert storage.rater_by_token(b.token).pk == b.pk
    assert storage.rater_by_token("not-a-token") is None and storage.rater_by_token("") is None


def test_tokens_are_stored_hashed(storage):
    from p2p_app.storage import token_hash

    r = storage.add_rater("ann", "s@v1", slot=0, with_token=True)
    assert r.token and len(r.token) >= 32
    stored = storage.raters("s@v1")[0].token
    assert stored == token_hash(r.token) and r.token not in stored  # only the sha256 is kept
    assert storage.rater_by_token(stored) is None  # the stored hash is not itself a key
    assert storage.rater_by_token(r.token).pk == r.pk


def test_a_listed_rater_place_is_held_once_when_asked(storage):
    storage.add_rater("Ann", "s@v1", slot=0, with_token=True, unique_slot=True)
    with pytest.raises(StorageError, match="already holds this rater place"):
        storage.add_rater("ANN", "s@v1", slot=0, with_token=True, unique_slot=True)
    storage.add_rater("Ben", "s@v1", slot=1, with_token=True, unique_slot=True)  # another place is free
    storage.add_rater("Ann", "s@v1", slot=0)  # an open study's joiners may share a slot
    assert sorted(r.slot for r in storage.raters("s@v1")) == [0, 0, 1]


def test_an_old_database_is_upgraded(tmp_path):
    """A database from before this change: clear tokens and a unique (name, study) constraint, with trials and
    ratings pointing at its raters. Opening it hashes the tokens (the old invite link still works), lets two
    raters share a name, and keeps every row and foreign key."""
    from p2p_app.storage import token_hash

    path = tmp_path / "old.sqlite"
    s = Storage(f"sqlite:///{path}", tmp_path / "images")
    rater, images, trial = make_trial(s)
    s.record_ratings(trial.id, rater.pk, full_answers(images))
    s.close()
    con = sqlite3.connect(path)  # turn it back into the old schema
    con.executescript(
        """
        PRAGMA foreign_keys=OFF;
        BEGIN;
        CREATE TABLE raters_old (id INTEGER NOT NULL, public_id VARCHAR(32) NOT NULL, name VARCHAR(200) NOT NULL,
            study_key VARCHAR(200) NOT NULL, token VARCHAR(64), slot INTEGER, created_at DATETIME NOT NULL,
            PRIMARY KEY (id), CONSTRAINT uq_rater_name_study UNIQUE (name, study_key), UNIQUE (public_id),
            UNIQUE (token));
        INSERT INTO raters_old SELECT id, public_id, name, study_key, 'clear-old-token-0123456789abcdefghij', slot,
            created_at FROM raters;
        DROP TABLE raters;
        ALTER TABLE raters_old RENAME TO raters;
        DROP TABLE marks;
        DROP TABLE guesses;
        ALTER TABLE ratings DROP COLUMN active_seconds;
        ALTER TABLE trials DROP COLUMN practice;
        DROP TABLE alembic_version;
        COMMIT;
        """
    )
    con.close()
    s = Storage(f"sqlite:///{path}", tmp_path / "images")
    try:
        old = s.rater_by_token("clear-old-token-0123456789abcdefghij")
        assert old is not None and old.pk == rater.pk
        assert s.raters()[0].token == token_hash("clear-old-token-0123456789abcdefghij")
        s.add_rater("Dr Who", "live")  # the same name again: refused by the old constraint
        assert [r.name for r in s.raters("live")] == ["Dr Who", "Dr Who"]
        assert s.count_ratings() == 4 and len(s.ratings_frame()) == 4
        with s.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert "uq_rater_name_study" not in conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name='raters'").scalar()  # fmt: skip
    finally:
        s.close()
    Storage(f"sqlite:///{path}", tmp_path / "images").close()  # a second opening changes nothing


def test_empty_ratings_frame_has_the_documented_columns(storage):
    from p2p_app.storage import TIDY_COLUMNS

    df = storage.ratings_frame()
    assert tuple(df.columns[: len(TIDY_COLUMNS)]) == TIDY_COLUMNS and df.empty


OPEN_IN_LOCKSTEP = """
import sys, time
base, n, start = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
from p2p_app.storage import Storage
failed = []
for i in range(n):
    while time.time() < start + i * 0.1:  # both processes open database i at the same moment
        pass
    try:
        Storage(f"sqlite:///{base}/db{i}.sqlite", f"{base}/images").close()
    except Exception as exc:
        failed.append(f"db{i}: {exc}")
print(failed)
"""


def test_two_processes_opening_one_new_database_at_once(tmp_path):
    """The two-process `p2p generate` opens one new database from both processes at once. Switching a new file
    to WAL fails at once, without waiting on busy_timeout, while the other process holds a lock (before the
    retry, about one opening in six failed with "database is locked")."""
    import subprocess
    import sys
    import time

    n = 30
    start = time.time() + 4  # after both interpreters have imported the storage module
    procs = [
        subprocess.Popen([sys.executable, "-c", OPEN_IN_LOCKSTEP, str(tmp_path), str(n), str(start)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [out.strip().splitlines()[-1] for out, _err in outputs] == ["[]", "[]"], outputs
    for i in range(n):
        with sqlite3.connect(tmp_path / f"db{i}.sqlite") as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_many_writers_at_once_all_succeed(storage):
    """50 raters submitting at the same moment on one database: every submit is stored, none fails
    (before the in-process writer queue and pool size, SQLite gave "database is locked"/pool time-outs)."""
    n = 50
    images = [add_image(storage, f"m{i}") for i in range(2)]
    work = []
    for i in range(n):
        r = storage.sign_in_rater(f"rater {i}")
        t = storage.create_trial(rater_pk=r.pk, prompt="p", modality="colonoscopy", shown_order=[x.id for x in images])
        work.append((r, t))
    barrier = threading.Barrier(n)
    results, errors = [], []

    def submit(r, t):
        barrier.wait()
        try:
            results.append(storage.record_ratings(t.id, r.pk, full_answers(images)).status)
            nxt = storage.create_trial(rater_pk=r.pk, prompt="q", modality="colonoscopy",
                                       shown_order=[x.id for x in images])  # fmt: skip
            results.append(storage.record_ratings(nxt.id, r.pk, full_answers(images)).status)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(repr(exc))

    threads = [threading.Thread(target=submit, args=w) for w in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert results.count("stored") == 2 * n
    assert storage.count_ratings() == 2 * n * 4
