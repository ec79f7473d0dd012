"""The service's trial rules without models: the reveal rule, panels in the stored order, the real-image path and
the one-byte-size check in storage. Trials are made from stored images directly (fast; no generation)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

from p2p_app.blinding import (
    PRESENTATION_MTIME,
    new_image_id,
    presentation_png,
    presentation_png_size,
    sha256_hex,
    shuffled,
)

ROOT = Path(__file__).resolve().parent.parent


def noise(seed: int, shape=(300, 400, 3)):
    from PIL import Image

    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8))


# ------------------------------------------------------------------------------ the service's trial rules (no models)


@pytest.fixture()
def bare_app(tmp_path):
    """The app on the demo config with no model loaded: trials are made from stored images directly."""
    from p2p_app.startup import create

    app = create(data_dir=tmp_path / "data", load_models=False)
    yield app
    app.storage.close()


def _images(app, models=("m-one", "m-two", "m-three")):
    out = []
    for i, model in enumerate(models):
        png = presentation_png(noise(10 + i), app.config.presentation_size)
        out.append(app.storage.add_image(
            image_id=new_image_id(), png=png, sha256=sha256_hex(png), size=app.config.presentation_size,
            model=model, source="generated", prompt="a polyp", modality="colonoscopy", seed=1,
        ))  # fmt: skip
    return out


def _trial(app, rater, images):
    order = shuffled([im.id for im in images], random.Random(len(images)))
    return app.storage.create_trial(rater_pk=rater.rater_pk, prompt="a polyp", modality="colonoscopy", shown_order=order)


def test_has_real_score_rule():
    from p2p_app.service import has_real_score

    assert not has_real_score({})
    assert not has_real_score({1: {"realism": None, "alignment": None, "cant_judge": True, "comment": ""}})
    assert not has_real_score({1: {"realism": 3.0, "cant_judge": True}})  # a score under "can't judge" is not one
    assert not has_real_score({1: {"realism": float("nan"), "cant_judge": False}})
    assert not has_real_score({1: {"artifacts": ["blur"], "cant_judge": False, "comment": "5"}})
    assert not has_real_score({1: {"flag": True, "cant_judge": False}})
    assert has_real_score({1: {"realism": None, "cant_judge": True}, 2: {"realism": 4.0, "cant_judge": False}})
    assert has_real_score({1: {"alignment": 1}})


def test_cant_judge_everywhere_is_stored_but_reveals_nothing(bare_app):
    from p2p_app.service import NO_SCORE_NO_REVEAL
    from p2p_app.storage import AccessDenied

    app = bare_app
    rater = app.sign_in("Dr Unsure")
    images = _images(app)
    trial = _trial(app, rater, images)
    with pytest.raises(AccessDenied, match="only after"):
        app.reveal(rater, trial.id)
    result = app.submit(rater, trial.id, {p: {"cant_judge": True} for p in (1, 2, 3)})
    assert result.status == "stored" and result.reveal == ()
    assert result.message == "Ratings saved. " + NO_SCORE_NO_REVEAL
    assert app.storage.count_ratings() == 6
    with pytest.raises(AccessDenied, match="a reveal needs at least one score"):
        app.reveal(rater, trial.id)
    again = app.submit(rater, trial.id, {p: {"cant_judge": True} for p in (1, 2, 3)})
    assert again.status == "duplicate" and again.reveal == () and NO_SCORE_NO_REVEAL in again.message


def test_one_score_reveals_in_the_stored_order(bare_app):
    app = bare_app
    rater = app.sign_in("Dr Sure")
    images = _images(app)
    trial = _trial(app, rater, images)
    model_of = {im.id: im.model for im in images}
    answers = {1: {"cant_judge": True}, 2: {"cant_judge": True}, 3: {"realism": 2, "alignment": 5}}
    result = app.submit(rater, trial.id, answers)
    expected = tuple((f"Image {'ABC'[i]}", model_of[image_id]) for i, image_id in enumerate(trial.shown_order))
    assert result.reveal == expected and result.message == "Ratings saved."
    assert app.reveal(rater, trial.id) == expected
    other = app.sign_in("Dr Other")
    from p2p_app.storage import AccessDenied

    with pytest.raises(AccessDenied):
        app.reveal(other, trial.id)


def test_no_reveal_when_turned_off(tmp_path):
    from p2p_app.startup import create
    from p2p_app.storage import AccessDenied

    app = create(data_dir=tmp_path / "data", load_models=False, reveal_after_rating=False)
    rater = app.sign_in("Dr Off")
    trial = _trial(app, rater, _images(app))
    result = app.submit(rater, trial.id, {p: {"realism": 3, "alignment": 3} for p in (1, 2, 3)})
    assert result.reveal == () and result.message == "Ratings saved."
    with pytest.raises(AccessDenied, match="turned off"):
        app.reveal(rater, trial.id)
    app.storage.close()


def test_shown_trial_follows_the_stored_order(bare_app):
    from p2p_app.service import UserError

    app = bare_app
    rater = app.sign_in("Dr Order")
    images = _images(app)
    trial = _trial(app, rater, images)
    shown = app.shown(trial, ())
    assert [p.image_id for p in shown.panels] == list(trial.shown_order)
    assert [p.position for p in shown.panels] == [1, 2, 3]
    assert [p.label for p in shown.panels] == ["Image A", "Image B", "Image C"]
    assert [Path(p.path).name for p in shown.panels] == [f"{i}.png" for i in trial.shown_order]
    Path(app.storage.image(trial.shown_order[1]).file_path).unlink()
    with pytest.raises(UserError, match="missing on the server"):
        app.shown(trial, ())


def test_real_images_take_the_same_presentation_path(bare_app, tmp_path):
    from p2p_app.service import UserError

    app = bare_app
    src = ROOT / "studies" / "colonoscopy_pilot" / "controls" / "bleeding.png"
    info = app.add_real_image(src, "bleeding", "colonoscopy", prompt_id="c1")
    data = Path(info.file_path).read_bytes()
    assert len(data) == presentation_png_size(app.config.presentation_size)
    assert os.stat(info.file_path).st_mtime == PRESENTATION_MTIME
    assert (info.model, info.source, info.sha256) == ("real", "real", sha256_hex(data))
    assert Path(info.file_path).name == f"{info.id}.png" and "bleeding" not in info.file_path
    bad = tmp_path / "not-an-image.png"
    bad.write_bytes(b"nope")
    with pytest.raises(UserError, match="cannot read the real image"):
        app.add_real_image(bad, "x", "colonoscopy")


def test_storage_refuses_a_file_of_another_size(bare_app):
    from p2p_app.storage import StorageError

    app = bare_app
    png = presentation_png(noise(5), 64)
    with pytest.raises(StorageError, match="not the presentation size"):
        app.storage.add_image(image_id=new_image_id(), png=png + b"\0", sha256=sha256_hex(png), size=64, model="m",
                              source="generated", prompt="p", modality="colonoscopy")
    assert app.storage.count_images() == 0
