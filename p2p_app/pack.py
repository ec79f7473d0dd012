"""Study packs: a frozen study as a self-contained folder a presenter serves with no model and no torch.

``p2p study pack S OUT/`` writes

- ``OUT/pack.json``: the study key, design hash, images hash and one entry per image slot (opaque image id,
  sha256, model, prompt, seed) — the manifest the server checks every file against;
- ``OUT/images/<id>.png``: the presentation copies, byte for byte as raters of the study saw them;
- ``OUT/study/``: the study folder (study.toml, prompt CSV, real images), so the design hash can be recomputed;
- ``OUT/config.toml``: a presenter config: the source config's title and models as data, the study, and
  ``pack = "."``. ``p2p serve --config OUT/config.toml`` (or ``P2P_CONFIG`` for ``app.py``) serves it.

In presenter mode (the ``pack`` setting) no model is ever made or loaded: start-up installs the pack into the
database (checking every image's sha256 and the images hash), the study is ready at once, and the live arena
offers the pack's prompts, showing their pre-generated images blinded like any live trial.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from .blinding import sha256_hex
from .reader import images_hash, verify_study
from .study import study_key, toml_value

if TYPE_CHECKING:  # pragma: no cover
    from .service import P2PApp
    from .study import StudyDefinition

PACK_FORMAT = 1
MANIFEST = "pack.json"


class PackError(ValueError):
    """A pack cannot be written or served; the message names the file and what is wrong. Nothing was changed."""


@dataclass(frozen=True)
class PackReport:
    folder: Path
    study: str
    n_images: int
    n_bytes: int



def pack_study(app: "P2PApp", study: "StudyDefinition", out: str | Path) -> PackReport:
    """Write ``study`` (which must be frozen and verify clean) as a pack into the empty or new folder ``out``."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PackError(f"{out}: the pack folder must be new or empty")
    key = study_key(study)
    row = app.storage.study(study.id, study.version)
    if row is None or row.frozen_at is None:
        raise PackError(f"{key} is not generated and frozen yet: run `p2p study generate {study.id}` first")
    report = verify_study(app, study)
    if not report.ok:
        raise PackError(f"{key} does not verify: " + "; ".join(report.problems))
    slots = app.storage.study_slots(row.pk)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "images").mkdir(parents=True)
    try:
        entries, n_bytes = [], 0
        for slot_key, info in sorted(slots.items()):
            data = Path(info.file_path).read_bytes()
            (staging / "images" / f"{info.id}.png").write_bytes(data)
            n_bytes += len(data)
            entries.append({
                "slot": slot_key, "id": info.id, "sha256": info.sha256, "size": info.width, "model": info.model,
                "source": info.source, "prompt": info.prompt, "prompt_id": info.prompt_id,
                "modality": info.modality, "seed": info.seed,
            })
        study_dir = Path(study.source_path).parent
        for extra in (study.prompts_path, study.controls_path):
            if extra is not None and not Path(extra).resolve().is_relative_to(study_dir.resolve()):
                raise PackError(f"{extra}: outside the study folder {study_dir}; move it there to pack the study")
        shutil.copytree(study_dir, staging / "study")
        from .metrics_run import study_folder

        metrics = study_folder(app.config.data_dir, key)  # `p2p metrics` tables: shown in presenter mode too
        if metrics.is_dir():
            shutil.copytree(metrics, staging / "metrics", ignore=shutil.ignore_patterns(".*"))
        manifest = {
            "format": PACK_FORMAT, "study": key, "study_file": f"study/{Path(study.source_path).name}",
            "design_hash": row.design_hash, "images_hash": row.images_hash,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "images": entries,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        cfg = app.config
        lines = [
            "# Presenter config written by `p2p study pack`: serves this pack with no model loaded.",
            f"title = {toml_value(cfg.title)}",
            f"demo_models = {toml_value(cfg.demo_models)}",
            f"reveal_after_rating = {toml_value(cfg.reveal_after_rating)}",
            f"presentation_size = {cfg.presentation_size}",
            'pack = "."',
            f"studies = [{toml_value(manifest['study_file'])}]",
        ]
        for spec in cfg.models:
            if spec.name in study.models:
                lines += ["", "[[models]]", *(f"{k} = {toml_value(v)}" for k, v in spec.to_dict().items() if v is not None)]
        (staging / "config.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return PackReport(out, key, len(entries), n_bytes)


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PackError(f"{path}: not a study pack (no {MANIFEST}; make one with `p2p study pack`)") from None
    except json.JSONDecodeError as exc:
        raise PackError(f"{path}: not valid JSON: {exc}") from None
    if manifest.get("format") != PACK_FORMAT:
        raise PackError(f"{path}: pack format {manifest.get('format')!r} is not supported (expected {PACK_FORMAT})")
    return manifest


def install_pack(app: "P2PApp", folder: str | Path) -> str:
    """Put the pack's images and frozen study into the app's database (once; a second call checks and returns).

    Every file is checked against the manifest's sha256 before anything is written, and the study's design
    hash and images hash must match the pack's, so a changed pack is refused whole."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    matches = [s for s in app.studies.values() if study_key(s) == manifest["study"]]
    if not matches:
        raise PackError(f"{folder}: the config does not list the pack's study {manifest['study']}")
    study = matches[0]
    if study.design_hash() != manifest["design_hash"]:
        raise PackError(f"{folder}: the study file's design differs from the packed design")
    blobs = {}
    for entry in manifest["images"]:
        path = folder / "images" / f"{entry['id']}.png"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise PackError(f"{path}: missing from the pack") from None
        if sha256_hex(data) != entry["sha256"]:
            raise PackError(f"{path}: changed since the pack was made (sha256 differs)")
        blobs[entry["id"]] = data
    row = app.storage.register_study(study.id, study.version, study.title, study.design_hash())
    from .metrics_run import study_folder

    metrics = study_folder(app.config.data_dir, manifest["study"])
    if (folder / "metrics").is_dir() and not metrics.exists():  # the packed metrics tables (no torch needed to read)
        shutil.copytree(folder / "metrics", metrics)
    if row.frozen_at is not None:
        if row.images_hash != manifest["images_hash"]:
            raise PackError(f"{folder}: the database holds a different frozen version of {manifest['study']}")
        return manifest["study"]
    for entry in manifest["images"]:
        info = app.storage.image(entry["id"])
        if info is None:
            info = app.storage.add_image(
                image_id=entry["id"], png=blobs[entry["id"]], sha256=entry["sha256"], size=entry["size"],
                model=entry["model"], source=entry["source"], prompt=entry["prompt"],
                prompt_id=entry["prompt_id"], modality=entry["modality"], seed=entry["seed"],
            )
        app.storage.set_study_slot(row.pk, entry["slot"], info.id)
    slots = app.storage.study_slots(row.pk)
    if images_hash(slots) != manifest["images_hash"]:
        raise PackError(f"{folder}: the installed images do not give the pack's images hash")
    app.storage.freeze_study(row.pk, manifest["images_hash"])
    return study_key(study)
