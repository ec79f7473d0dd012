"""Encoders (generators/encoders.py) and `p2p metrics` end to end: the tiny encoders are built, saved and loaded
back through from_pretrained; features are cached per (encoder, image sha256); planted copies of training images
are found at rank 1 and flagged; the command writes tables that report and export read; bad input is a clear error
that leaves nothing half-written."""

from __future__ import annotations

import io
import sys

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image, ImageEnhance

from generators import encoders as E
from p2p_app import metrics as M

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def enc_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("encoders")


@pytest.fixture(scope="module")
def tiny_dino(enc_dir):
    return E.load_encoder("tiny-dinov2", cache_dir=enc_dir, device="cpu")


def texture(seed: int, size: int = 64) -> Image.Image:
    r = np.random.default_rng(seed)
    return Image.fromarray((r.random((8, 8, 3)) * 255).astype("uint8")).resize((size, size), Image.BICUBIC)


# ------------------------------------------------------------------------------------ registry


def test_registry_names_libraries_and_real_ids():
    assert E.encoder_spec("dinov2").source == "facebook/dinov2-base"
    assert E.encoder_spec("rad-dino").source == "microsoft/rad-dino"
    assert E.encoder_spec("biomedclip").library == "open_clip" and E.encoder_spec("biomedclip").has_text
    assert E.encoder_spec("inception").library == "inception"
    assert E.encoder_spec("timm:resnet50").library == "timm"
    assert E.encoder_spec("open_clip:ViT-B-32").has_text
    assert E.encoder_spec("tiny-dinov2").cache_id != E.encoder_spec("tiny-clip").cache_id


def test_unknown_encoder_names_the_known_ones():
    with pytest.raises(E.EncoderError, match="unknown encoder 'dino'.*tiny-dinov2"):
        E.encoder_spec("dino")


def test_missing_library_names_the_package_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError, whether or not it is installed
    with pytest.raises(E.EncoderError, match="install timm"):
        E.load_encoder("timm:resnet50", device="cpu")
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)
    with pytest.raises(E.EncoderError, match="install torch-fidelity"):
        E.load_encoder("inception", device="cpu")


# ------------------------------------------------------------------------------------ tiny encoders


def test_tiny_encoders_reload_from_their_folder_identically(enc_dir, tiny_dino):
    images = [texture(i) for i in range(4)] + [Image.new("L", (80, 40), 90), texture(9).convert("RGBA")]
    first = tiny_dino.encode_images(images)
    again = E.load_encoder("tiny-dinov2", cache_dir=enc_dir, device="cpu").encode_images(images)
    assert first.shape == (6, 32) and np.array_equal(first, again)
    assert (enc_dir / "encoders" / "tiny-dinov2-0" / "config.json").is_file()
    assert not np.allclose(first[0], first[1])  # different pictures, different features


def test_tiny_clip_has_both_towers(enc_dir):
    clip = E.load_encoder("tiny-clip", cache_dir=enc_dir, device="cpu")
    assert clip.has_text
    t = clip.encode_texts(["a sessile polyp in the sigmoid colon", "chest x-ray with pleural effusion"])
    i = clip.encode_images([texture(1), texture(2)])
    assert t.shape == i.shape == (2, 32) and not np.allclose(t[0], t[1])
    with pytest.raises(E.EncoderError, match="no text tower"):
        E.load_encoder("tiny-dinov2", cache_dir=enc_dir, device="cpu").encode_texts(["x"])


def test_feature_cache_encodes_each_image_once(tmp_path, tiny_dino):
    cache = E.FeatureCache(tmp_path, tiny_dino.spec)
    images = [texture(i) for i in range(5)]
    shas = [f"{i:064x}" for i in range(5)]
    opened = []

    def open_image(i):
        opened.append(i)
        return images[i]

    first = E.encode_cached(tiny_dino, cache, shas, open_image)
    assert sorted(opened) == list(range(5))
    opened.clear()
    second = E.encode_cached(tiny_dino, cache, shas[::-1], open_image)
    assert opened == [] and np.array_equal(second, first[::-1])
    assert not list(tmp_path.rglob("*.partial"))


# ------------------------------------------------------------------------------------ planted copies


def test_planted_copies_are_found_at_rank_one_and_flagged(tiny_dino):
    train = [texture(i) for i in range(150)]

    def jpeg(im):
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=60)
        buf.seek(0)
        return Image.open(buf).convert("RGB")

    planted = {
        0: train[0],  # exact
        1: train[1].crop((4, 4, 60, 60)).resize((64, 64)),  # crop
        2: jpeg(train[2]),  # JPEG
        3: ImageEnhance.Brightness(train[3]).enhance(1.15),  # brightness
    }
    unrelated = [texture(5000 + i) for i in range(150)]
    gen = list(planted.values()) + unrelated
    table, thr = M.memorisation(tiny_dino.encode_images(gen), tiny_dino.encode_images(train),
                                M.pixel_vectors(gen), M.pixel_vectors(train), percentile=5.0)
    top = table.iloc[: len(planted)]
    assert list(top["match_index"]) == list(planted) and top["copy_flag"].all()
    rate = table["copy_flag"].iloc[len(planted):].mean()
    assert rate <= 0.10  # calibrated at 5 % (the benchmark measures the rate on a larger set)


# ------------------------------------------------------------------------------------ p2p metrics end to end


def rated_study(tmp_path, registry):
    from conftest import invited_study_app
    from test_reader_study import invite

    app, st, _ = invited_study_app(tmp_path, registry)
    for n, name in enumerate(("ben", "cat")):
        session = invite(app, st, name)
        while (shown := app.next_trial(st, session)) is not None:
            answers = {p.position: {"realism": 1 + (int(p.image_id[:6], 16) + n) % 5, "alignment": 3}
                       for p in shown.panels}
            app.submit_trial(st, session, shown.trial_id, answers)
    return app, st


@pytest.fixture()
def cli(tmp_path, model_dir, monkeypatch):
    monkeypatch.setenv("P2P_MODEL_DIR", str(model_dir))

    def run(*args, ok=True):
        from p2p_app.cli import main

        result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return run


def test_p2p_metrics_report_and_export(tmp_path, demo_registry, cli):
    app, st = rated_study(tmp_path, demo_registry)
    data = app.config.data_dir
    train = tmp_path / "train"
    train.mkdir()
    slots = app.storage.study_slots(app.storage.study(st.id, st.version).pk)
    first = next(i for i in slots.values() if i.source == "generated")
    Image.open(first.file_path).save(train / "copied.png")  # a generated image that is a copy of a training image
    for i in range(6):
        texture(100 + i, 128).save(train / f"t{i}.png")
    out = cli("metrics", tmp_path / "mini", "--encoder", "tiny-clip", "--encoder", "tiny-dinov2", "--train", train,
              "--bootstrap", 30, "--data-dir", data)
    assert "likely copies:" in out.output
    folder = data / "metrics" / "mini_v1"
    for enc in ("tiny-clip", "tiny-dinov2"):
        per_image = pd.read_parquet(folder / enc / "per_image.parquet")
        copied = per_image[per_image["image_id"] == first.id].iloc[0]
        assert len(per_image) == 6 and copied.copy_flag and copied.train_nn_path.endswith("copied.png")
        assert copied.pixel_similarity > 0.999
        assert (folder / enc / "per_image.csv").is_file() and (folder / enc / "per_model.csv").is_file()
    assert pd.read_parquet(folder / "tiny-clip" / "per_image.parquet")["alignment"].notna().all()
    report = tmp_path / "r.html"
    cli("report", tmp_path / "mini", "--out", report, "--bootstrap", 30, "--data-dir", data)
    page = report.read_text()
    assert "Do the metrics agree with the clinicians?" in page and "fig-metrics_agreement" in page
    assert "Likely near-copies" in page and "data:image/png;base64" in page
    exported = tmp_path / "m.csv"
    cli("export", exported, "--format", "metrics", "--study", "mini", "--data-dir", data)
    assert set(pd.read_csv(exported)["encoder"]) == {"tiny-clip", "tiny-dinov2"}
    cli("export", tmp_path / "pm.parquet", "--format", "metrics-models", "--study", "mini", "--data-dir", data)
    assert {"frechet", "kid", "mmd_rbf", "precision", "alignment", "copy_share"} <= set(
        pd.read_parquet(tmp_path / "pm.parquet")["metric"])
    # a study pack carries the tables, so presenter mode shows them without torch
    from p2p_app.pack import pack_study

    pack_study(app, st, tmp_path / "pack")
    assert (tmp_path / "pack" / "metrics" / "tiny-clip" / "per_model.parquet").is_file()


def test_p2p_metrics_bad_input_is_clear_and_writes_nothing(tmp_path, demo_registry, cli):
    from conftest import invited_study_app

    app, st, _ = invited_study_app(tmp_path, demo_registry)
    data = app.config.data_dir
    study = tmp_path / "mini"
    r = cli("metrics", study, "--encoder", "dino", "--data-dir", data, ok=False)
    assert r.exit_code != 0 and "unknown encoder 'dino'" in r.output
    r = cli("metrics", study, "--encoder", "tiny-dinov2", "--reference", tmp_path / "nope", "--data-dir", data, ok=False)
    assert "reference folder" in r.output and "does not exist" in r.output
    (tmp_path / "empty").mkdir()
    r = cli("metrics", study, "--encoder", "tiny-dinov2", "--reference", tmp_path / "empty", "--data-dir", data, ok=False)
    assert "holds no images" in r.output
    bad = tmp_path / "bad"
    bad.mkdir()
    texture(1).save(bad / "ok.png")
    (bad / "broken.png").write_bytes(b"not a png")
    r = cli("metrics", study, "--encoder", "tiny-dinov2", "--reference", bad, "--data-dir", data, ok=False)
    assert "cannot read image" in r.output and "broken.png" in r.output
    assert not (data / "metrics" / "mini_v1").exists()  # nothing half-written for the report to read
    # other sizes and modes are converted with a note; no ratings yet is said plainly
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    texture(2, 100).convert("L").save(mixed / "grey.png")
    texture(3, 48).save(mixed / "small.png")
    r = cli("metrics", study, "--encoder", "tiny-dinov2", "--reference", mixed, "--bootstrap", 10, "--data-dir", data)
    assert "converted to RGB" in r.output and "sizes" in r.output and "No ratings yet" in r.output


def test_admin_metrics_tab_shows_the_tables(tmp_path, demo_registry):
    """The admin page's Metrics tab reads the tables `p2p metrics` wrote (a browser signed in as admin)."""
    from dataclasses import replace

    pytest.importorskip("playwright.sync_api")
    from conftest import running_server
    from test_browser import CHROMIUM_ARGS, chromium_path

    from p2p_app.metrics_run import compute, study_images, write_tables
    from p2p_app.study import study_key

    if chromium_path() is None:
        pytest.skip("no Chromium binary (install Debian's 'chromium' or set P2P_CHROMIUM)")
    app, st = rated_study(tmp_path, demo_registry)
    app.config = replace(app.config, admin_password="s3cret-admin")
    enc = E.load_encoder("tiny-dinov2", cache_dir=app.config.model_cache_dir, device="cpu")
    gen, real = study_images(app, st)
    result = compute(enc, E.FeatureCache(tmp_path / "features", enc.spec), gen, real, n_boot=20)
    write_tables(result, app.config.data_dir, study_key(st))
    from playwright.sync_api import sync_playwright

    with running_server(app) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        page.goto(f"{url}/admin")
        import re

        page.get_by_label(re.compile("username", re.I)).fill("admin")
        page.get_by_label(re.compile("password", re.I)).fill("s3cret-admin")
        page.get_by_role("button", name=re.compile("log ?in", re.I)).click()
        page.get_by_label("Study").click()
        page.get_by_role("option", name="Mini study (mini@v1)").click()
        page.get_by_text("answers from 2 raters").wait_for()
        page.get_by_role("tab", name="Metrics").click()
        page.get_by_text("Encoders: tiny-dinov2").wait_for()
        assert page.get_by_text("colon-flux-tiny").count() > 0  # the per-model table
        browser.close()
    app.storage.close()
