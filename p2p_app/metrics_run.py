"""``p2p metrics``: encode a study's images with one encoder, compute the metrics of :mod:`p2p_app.metrics`, and write
analysis-ready tables that ``p2p report``, the admin page and ``p2p export`` read.

Layout under the data folder::

    metrics/features/<encoder cache id>/<sha[:2]>/<sha256>.npy     one feature vector per (encoder, image bytes)
    metrics/<study key>/<encoder>/per_image.{parquet,csv}           one row per generated image
    metrics/<study key>/<encoder>/per_model.{parquet,csv}           one row per (model, metric), with intervals
    metrics/<study key>/<encoder>/meta.json                         encoder, reference, training folder, notes

An encoder's folder is written in a temporary sibling and renamed into place, so a reader sees the old tables or
the new ones, never a half-written set. Agreement with the clinicians is computed when the tables are read
(:func:`summarize`), from the ratings as they are then: new ratings need no re-encoding.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from . import metrics as M

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
TABLES = ("per_image", "per_model")
METRICS_DIR = "metrics"


class MetricsInputError(ValueError):
    """Bad input to ``p2p metrics`` (folder, encoder, image, study): the message names what to fix."""


@dataclass(frozen=True)
class ImageRef:
    """One image to encode: where it is, its bytes' sha256 (the feature cache key) and what it is."""

    path: Path
    sha256: str
    image_id: str = ""
    model: str = ""
    prompt: str = ""
    prompt_id: str = ""


def safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def metrics_root(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir) / METRICS_DIR


def study_folder(data_dir: str | os.PathLike, study_key: str) -> Path:
    return metrics_root(data_dir) / safe_name(study_key)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def folder_images(folder: str | os.PathLike, what: str) -> list[ImageRef]:
    """Every image file under ``folder`` (recursively, sorted). A missing or empty folder is a clear error."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise MetricsInputError(f"{what} folder {str(root)!r} does not exist: give a folder of images "
                                f"({', '.join(IMAGE_SUFFIXES)})")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise MetricsInputError(f"{what} folder {str(root)!r} holds no images ({', '.join(IMAGE_SUFFIXES)}): "
                                "put the real images there")
    return [ImageRef(p, _sha(p), image_id=str(p.relative_to(root))) for p in files]


def open_checked(ref: ImageRef, notes: dict[str, int]) -> Any:
    """The image as RGB (other modes converted, counted in ``notes``); a file that is not a readable image is a
    clear error naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(ref.path) as im:
            im.load()
            if im.mode != "RGB":
                notes["converted"] = notes.get("converted", 0) + 1
                im = im.convert("RGB")
            else:
                im = im.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise MetricsInputError(f"cannot read image {str(ref.path)!r} ({type(exc).__name__}: {exc}): replace or "
                                "remove the file") from None
    notes.setdefault("sizes", set()).add(im.size)  # type: ignore[union-attr]
    return im


# ------------------------------------------------------------------------------------------ a study's images


def study_images(app: Any, study: Any | None) -> tuple[list[ImageRef], list[ImageRef]]:
    """(generated images, real images) of a prepared study (catch-screen images left out); ``study`` None: the
    arena's rated generated images."""
    if study is None:
        df = app.storage.ratings_frame("live")
        ids = list(dict.fromkeys(df.loc[df["source"] == "generated", "image_id"])) if not df.empty else []
        infos = [app.storage.image(i) for i in ids]
        return [_ref(i) for i in infos if i is not None], []
    from .study import study_key

    row = app.storage.study(study.id, study.version)
    if row is None:
        raise MetricsInputError(f"study {study_key(study)} has no images yet: run `p2p study generate {study.id}` first")
    slots = app.storage.study_slots(row.pk)
    catch = {s.key for s in study.catch_slots()}
    gen, real = [], []
    for key in sorted(slots):
        if key in catch:
            continue
        info = slots[key]
        (gen if info.source == "generated" else real).append(_ref(info))
    if not gen:
        raise MetricsInputError(f"study {study_key(study)} has no generated images yet: run `p2p study generate "
                                f"{study.id}` first")
    return gen, real


def _ref(info: Any) -> ImageRef:
    return ImageRef(Path(info.file_path), info.sha256, info.id, info.model, info.prompt, info.prompt_id)


# ------------------------------------------------------------------------------------------ compute


@dataclass
class MetricsResult:
    per_image: pd.DataFrame
    per_model: pd.DataFrame
    meta: dict
    folder: Path | None = None
    notes: list[str] = field(default_factory=list)


def compute(
    encoder: Any,
    cache: Any,
    generated: Sequence[ImageRef],
    reference: Sequence[ImageRef],
    train: Sequence[ImageRef] | None = None,
    n_boot: int = M.DEFAULT_N_BOOT,
    seed: int = M.DEFAULT_SEED,
    copy_percentile: float = M.COPY_PERCENTILE,
    progress: Callable[[int], None] | None = None,
) -> MetricsResult:
    """Features (cached) of every image, then per model: set metrics against ``reference`` with intervals; per
    image: nearest-real distance, prompt alignment (text tower), and with ``train`` the nearest training image,
    its pixel similarity and the copy flag."""
    from generators.encoders import encode_cached

    if not generated:
        raise MetricsInputError("no generated images to score")
    if len(reference) < 2:
        raise MetricsInputError(f"the reference set has {len(reference)} image(s); metrics need at least 2 real images "
                                "(give --reference DIR with more)")
    notes: dict[str, Any] = {}

    def feats(refs: Sequence[ImageRef]) -> np.ndarray:
        return encode_cached(encoder, cache, [r.sha256 for r in refs], lambda i: open_checked(refs[i], notes),
                             progress=progress)

    fg = feats(generated)
    fr = feats(reference)
    ft = feats(train) if train else None
    text_notes: list[str] = []
    per_image = _per_image_table(encoder, generated, fg, fr, text_notes)
    threshold = {"features": float("nan"), "pixels": float("nan")}
    if ft is not None:
        assert train is not None
        threshold = _add_memorisation(per_image, generated, train, fg, ft, copy_percentile, notes)
    per_model = _per_model_table(encoder, per_image, fg, fr, ft, n_boot, seed, text_notes)
    text_notes += _image_notes(notes)
    meta = {"encoder": encoder.name, "library": encoder.spec.library, "source": encoder.spec.source,
            "n_generated": len(generated), "n_reference": len(reference), "n_train": len(train or ()),
            "copy_percentile": copy_percentile, "copy_threshold": threshold["features"],
            "pixel_threshold": threshold["pixels"], "n_boot": n_boot, "seed": seed,
            "notes": text_notes}
    return MetricsResult(per_image, per_model, meta, notes=text_notes)


def _per_image_table(
    encoder: Any, generated: Sequence[ImageRef], fg: np.ndarray, fr: np.ndarray, text_notes: list[str]
) -> pd.DataFrame:
    """One row per generated image: its identity, the nearest-real distance and the prompt alignment (NaN, with a
    note, for an encoder without a text tower)."""
    per_image = pd.DataFrame({
        "encoder": encoder.name,
        "image_id": [r.image_id for r in generated],
        "model": [r.model for r in generated],
        "prompt_id": [r.prompt_id for r in generated],
        "sha256": [r.sha256 for r in generated],
        "path": [str(r.path) for r in generated],
        "nn_real_distance": M.nn_distance(fg, fr),
    })
    if encoder.has_text:
        prompts = [r.prompt for r in generated]
        uniq = list(dict.fromkeys(prompts))
        temb = dict(zip(uniq, encoder.encode_texts(uniq)))
        per_image["alignment"] = M.cosine_rows(fg, np.stack([temb[p] for p in prompts]))
    else:
        per_image["alignment"] = np.nan
        text_notes.append(f"{encoder.name} has no text tower: no prompt alignment (use a CLIP-family encoder)")
    return per_image


def _add_memorisation(
    per_image: pd.DataFrame,
    generated: Sequence[ImageRef],
    train: Sequence[ImageRef],
    fg: np.ndarray,
    ft: np.ndarray,
    copy_percentile: float,
    notes: dict[str, Any],
) -> dict[str, float]:
    """Add each image's nearest training image, distances, thresholds and copy flag to ``per_image``; return the
    thresholds (``features``, ``pixels``)."""
    gen_pix = M.pixel_vectors([open_checked(r, notes) for r in generated])
    train_pix = M.pixel_vectors([open_checked(r, notes) for r in train])
    mem, threshold = M.memorisation(fg, ft, gen_pix, train_pix, percentile=copy_percentile)
    match = mem["match_index"].to_numpy()
    per_image["train_nn_path"] = [str(train[i].path) for i in match]
    per_image["train_nn_distance"] = mem["nn_distance"].to_numpy()
    per_image["copy_threshold"] = threshold["features"]
    per_image["pixel_nn_distance"] = mem["pixel_nn_distance"].to_numpy()
    per_image["pixel_threshold"] = threshold["pixels"]
    per_image["copy_flag"] = mem["copy_flag"].to_numpy()
    per_image["flagged_by"] = mem["flagged_by"].to_numpy()
    # pixel correlation with the pair shown
    per_image["pixel_similarity"] = (gen_pix * train_pix[match]).sum(1).astype(float)
    return threshold


def _per_model_table(
    encoder: Any,
    per_image: pd.DataFrame,
    fg: np.ndarray,
    fr: np.ndarray,
    ft: np.ndarray | None,
    n_boot: int,
    seed: int,
    text_notes: list[str],
) -> pd.DataFrame:
    """One row per (model, metric): the set metrics against the reference, and the mean alignment and copy share
    with bootstrap intervals (each model ``j`` bootstraps from its own seeds, ``seed + j`` and up)."""
    rows = []
    k = M.PRDC_K
    for j, model in enumerate(sorted(set(per_image["model"]))):
        mask = (per_image["model"] == model).to_numpy()
        fk = fg[mask]
        kk = min(k, len(fk) - 1, len(fr) - 1)
        if len(fk) < 2:
            text_notes.append(f"{model}: fewer than 2 images, no set metrics")
            continue
        t = M.set_metrics(fk, fr, n_boot=n_boot, seed=seed + j, k=max(kk, 1),
                          metrics=M.SET_METRICS if kk >= 1 else M.SET_METRICS[:3])
        if kk < k:
            text_notes.append(f"{model}: precision/recall/density/coverage with k = {kk} nearest neighbours "
                              f"(too few images for k = {k})")
        t["k"] = max(kk, 1)
        if encoder.has_text:
            a = per_image.loc[mask, "alignment"].to_numpy()
            t = pd.concat([t, _mean_row("alignment", a, seed + 1000 + j, n_boot, n_real=0)])
        if ft is not None:
            flags = per_image.loc[mask, "copy_flag"].to_numpy(float)
            t = pd.concat([t, _mean_row("copy_share", flags, seed + 2000 + j, n_boot, n_real=len(ft))])
        rows.append(t.assign(model=model, encoder=encoder.name))
    per_model = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["encoder", "model", "metric", "value", "ci_low", "ci_high", "n_fake", "n_real", "n_boot", "k"])
    return per_model[["encoder", "model", *[c for c in per_model.columns if c not in ("encoder", "model")]]]


def _mean_row(metric: str, values: np.ndarray, rng_seed: int, n_boot: int, n_real: int) -> pd.DataFrame:
    """A one-row metric table: the mean of ``values`` with its percentile bootstrap interval (NaN without draws)."""
    rng = np.random.default_rng(rng_seed)
    boots = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(n_boot)]
    lo, hi = M.percentile_ci(np.asarray(boots)) if n_boot else (np.nan, np.nan)
    return pd.DataFrame([{"metric": metric, "value": float(values.mean()), "ci_low": lo, "ci_high": hi,
                          "n_fake": len(values), "n_real": n_real, "n_boot": n_boot}])


def _image_notes(notes: Mapping[str, Any]) -> list[str]:
    """What opening the images noticed: several sizes, non-RGB images converted."""
    out = []
    sizes = notes.get("sizes", set())
    if len(sizes) > 1:
        out.append(f"images came in {len(sizes)} sizes ({', '.join(f'{w}×{h}' for w, h in sorted(sizes)[:4])}"
                   f"{' …' if len(sizes) > 4 else ''}): each was resized by the encoder's preprocessing")
    if notes.get("converted"):
        out.append(f"{notes['converted']} image(s) were not RGB (greyscale, RGBA, palette): converted to RGB")
    return out


# ------------------------------------------------------------------------------------------ write / read


def write_tables(result: MetricsResult, data_dir: str | os.PathLike, study_key: str, extra: dict | None = None) -> Path:
    """Write the encoder's tables (parquet + CSV) and meta.json into a temporary folder, then swap it into
    ``metrics/<study>/<encoder>``: readers never see a half-written set."""
    final = study_folder(data_dir, study_key) / safe_name(result.meta["encoder"])
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    old = None
    try:
        from .export import write_metrics_table

        for name, table in (("per_image", result.per_image), ("per_model", result.per_model)):
            write_metrics_table(table, tmp / f"{name}.parquet")
            write_metrics_table(table, tmp / f"{name}.csv")
        (tmp / "meta.json").write_text(json.dumps({**result.meta, "study": study_key, **(extra or {})}, indent=1,
                                                  default=str))
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.rename(final, old)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    result.folder = final
    return final


@dataclass(frozen=True)
class LoadedMetrics:
    """Every encoder's tables for one study (concatenated; ``encoder`` column tells them apart)."""

    per_image: pd.DataFrame
    per_model: pd.DataFrame
    meta: tuple[dict, ...]

    @property
    def encoders(self) -> list[str]:
        return [m["encoder"] for m in self.meta]


def load_metrics(data_dir: str | os.PathLike, study_key: str) -> LoadedMetrics | None:
    """The tables ``p2p metrics`` wrote for ``study_key`` (None when there are none). Folders being written
    (temporary names) are skipped."""
    root = study_folder(data_dir, study_key)
    if not root.is_dir():
        return None
    pis, pms, metas = [], [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = [folder / f"{t}.parquet" for t in TABLES] + [folder / "meta.json"]
        if not all(f.is_file() for f in files):
            continue
        pis.append(pd.read_parquet(files[0]))
        pms.append(pd.read_parquet(files[1]))
        metas.append(json.loads(files[2].read_text()))
    if not metas:
        return None
    return LoadedMetrics(pd.concat(pis, ignore_index=True), pd.concat(pms, ignore_index=True), tuple(metas))


# ------------------------------------------------------------------------------------------ agreement (at read time)

PER_IMAGE_METRICS = {"nn_real_distance": -1.0, "alignment": 1.0}
"""Per-image metric → the sign under which it should rise with the clinicians' score (closer to a real image =
more real; higher image–text similarity = better aligned)."""
PAIRS = (("realism", "nn_real_distance"), ("chosen_real", "nn_real_distance"), ("alignment", "alignment"))


@dataclass(frozen=True)
class Agreement:
    table: pd.DataFrame  # encoder, question, metric, n_images, n_answers, spearman (+CI), kendall (+CI)
    best: pd.DataFrame  # per (question, metric): best encoder, its ρ with CI, lead over the runner-up with CI
    ranking: pd.DataFrame  # models ranked by each metric next to the clinicians
    scatter: pd.DataFrame  # image_id, model, encoder, question, score, metric, value
    copies: pd.DataFrame  # flagged near-copies with their realism


def summarize(loaded: LoadedMetrics, ratings: pd.DataFrame, n_boot: int = M.DEFAULT_N_BOOT,
              seed: int = M.DEFAULT_SEED) -> Agreement:
    """Per image and per encoder: Spearman/Kendall between the clinicians' mean score and each per-image metric
    (two-level bootstrap, the same replicates for every encoder), the best-tracking encoder with its interval, the
    model rankings, and the flagged near-copies."""
    human = M.human_scores(ratings)
    rows, best_rows, scatter = [], [], []
    for question, metric in PAIRS:
        r = M.image_ratings(ratings, question)
        if r.empty:
            continue
        pi = loaded.per_image
        ids = sorted(set(r["image_id"]) & set(pi["image_id"]))
        if len(ids) < 3:
            continue
        hb = M.RatingsByImage.from_frame(r[r["image_id"].isin(ids)], ids)
        per_enc = {}
        for enc, g in pi.groupby("encoder"):
            vals = g.drop_duplicates("image_id").set_index("image_id")[metric].reindex(list(hb.image_ids))
            if vals.notna().sum() >= 3:
                per_enc[enc] = vals.to_numpy(float)
        if not per_enc:
            continue
        t = M.agreement(hb, per_enc, n_boot=n_boot, seed=seed)
        t = t.rename(columns={"metric": "encoder"}).assign(question=question, metric=metric)
        b = M.best_tracker(t.drop(columns="metric").rename(columns={"encoder": "metric"}),
                           {e: PER_IMAGE_METRICS[metric] for e in per_enc})
        if b.get("best") is not None:
            best_rows.append({"question": question, "metric": metric, "best_encoder": b["best"],
                              "signed_spearman": b["rho"], "ci_low": b["rho_low"], "ci_high": b["rho_high"],
                              "runner_up": b["runner_up"], "lead": b["lead"], "lead_low": b["lead_low"],
                              "lead_high": b["lead_high"], "share_of_replicates_best": b["share_best"],
                              "n_encoders": len(per_enc)})
        rows.append(t.drop(columns="boot_spearman"))
        means = dict(zip(hb.image_ids, hb.means()))
        for enc, vals in per_enc.items():
            scatter.append(pd.DataFrame({"image_id": hb.image_ids, "encoder": enc, "question": question,
                                         "score": [means[i] for i in hb.image_ids], "metric": metric, "value": vals}))
    cols = ["encoder", "question", "metric", "n_images", "n_answers", "spearman", "spearman_low", "spearman_high",
            "kendall", "kendall_low", "kendall_high"]
    table = pd.concat(rows, ignore_index=True)[cols] if rows else pd.DataFrame(columns=cols)
    sc = pd.concat(scatter, ignore_index=True) if scatter else pd.DataFrame(
        columns=["image_id", "encoder", "question", "score", "metric", "value"])
    if not sc.empty:
        sc = sc.merge(loaded.per_image[["image_id", "model"]].drop_duplicates("image_id"), on="image_id", how="left")
    ranking = M.model_ranking(loaded.per_model[["encoder", "model", "metric", "value"]], human) \
        if not loaded.per_model.empty else pd.DataFrame()
    copies = pd.DataFrame()
    if "copy_flag" in loaded.per_image.columns:
        c = loaded.per_image[loaded.per_image["copy_flag"].fillna(False).astype(bool)]
        realism = human[human["question"] == "realism"].set_index("image_id")["score"] if not human.empty else {}
        copies = c.assign(realism=c["image_id"].map(realism) if len(realism) else np.nan)[
            ["encoder", "image_id", "model", "path", "train_nn_path", "flagged_by", "train_nn_distance",
             "copy_threshold", "pixel_similarity", "realism"]].reset_index(drop=True)
    return Agreement(table, pd.DataFrame(best_rows), ranking, sc, copies)
