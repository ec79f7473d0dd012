"""Image (and text) encoders for automatic metrics, as named, pluggable components like the generators.

An encoder turns images into feature vectors (Fréchet distance, KID, MMD, precision/recall, nearest neighbours)
and, for CLIP-family models with a text tower, prompts into vectors in the same space (prompt alignment). Each
registry entry names the library that owns the model; the library is imported only when the encoder is loaded,
and a missing library is a clear error naming the package to install:

============== ============= ===================================================================== =========
name           library       source (hub id or folder)                                             text tower
============== ============= ===================================================================== =========
inception      inception     torch-fidelity's Inception-v3 (``inception-v3-compat``, 2048-d pool)   no
dinov2         transformers  ``facebook/dinov2-base``                                              no
rad-dino       transformers  ``microsoft/rad-dino``                                                no
clip           transformers  ``openai/clip-vit-base-patch32``                                      yes
biomedclip     open_clip     ``hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``   yes
tiny-dinov2    transformers  ``tiny:dinov2`` (random weights, built in code)                       no
tiny-clip      transformers  ``tiny:clip`` (random weights, both towers, built in code)            yes
============== ============= ===================================================================== =========

Any other model by prefix: ``timm:<model name>``, ``open_clip:<hub id or model name>``, ``hf:<hub id or folder>``
(transformers ``AutoModel``; CLIP-like models with ``get_text_features`` get a text tower).

The tiny encoders are built with random weights, written with ``save_pretrained`` and loaded back through the
same ``from_pretrained`` path as a real checkpoint (as :mod:`generators.tiny` does for pipelines): tests and the
offline demo exercise the production path. Their features are meaningless for judging images; they make the
pipeline run end to end.

Features are cached per (encoder, image sha256) by :class:`FeatureCache` (one ``.npy`` per image, written
atomically), so re-running a metric with another reference set or another study costs no re-encoding.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

TINY_PREFIX = "tiny:"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LIBRARIES = ("transformers", "open_clip", "timm", "inception")
INSTALL_HINT = {
    "transformers": "transformers (pip install 'prompt-to-polyp[models]')",
    "open_clip": "open_clip_torch (pip install open_clip_torch; it needs torchvision)",
    "timm": "timm (pip install timm; it needs torchvision)",
    "inception": "torch-fidelity (pip install torch-fidelity; it needs torchvision)",
}


class EncoderError(ValueError):
    """A bad encoder name or source, or a library that is not installed (the message says what to do)."""


@dataclass(frozen=True)
class EncoderSpec:
    """One registry entry: ``library`` owns the model; ``source`` is a hub id, a local folder or ``tiny:<kind>``."""

    name: str
    library: str
    source: str
    has_text: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if self.library not in LIBRARIES:
            raise EncoderError(f"encoder {self.name!r}: library must be one of {', '.join(LIBRARIES)}, got {self.library!r}")
        if not self.source:
            raise EncoderError(f"encoder {self.name!r}: empty source")

    @property
    def is_tiny(self) -> bool:
        return self.source.startswith(TINY_PREFIX)

    @property
    def cache_id(self) -> str:
        """Folder name of this encoder's feature cache: the name plus a hash of (library, source)."""
        digest = hashlib.sha256(f"{self.library}\n{self.source}".encode()).hexdigest()[:10]
        return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', self.name)}-{digest}"


ENCODERS: dict[str, EncoderSpec] = {
    s.name: s
    for s in (
        EncoderSpec("inception", "inception", "inception-v3-compat", False,
                    "Inception-v3 pool features as in torch-fidelity / clean FID (comparable with published FID)"),
        EncoderSpec("dinov2", "transformers", "facebook/dinov2-base", False, "DINOv2 ViT-B/14 (self-supervised, natural images)"),
        EncoderSpec("rad-dino", "transformers", "microsoft/rad-dino", False, "RAD-DINO (DINOv2 trained on chest X-rays; CheXGenBench)"),
        EncoderSpec("clip", "transformers", "openai/clip-vit-base-patch32", True, "OpenAI CLIP ViT-B/32 (image and text)"),
        EncoderSpec("biomedclip", "open_clip", "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224", True,
                    "BiomedCLIP (PubMed figures; image and text; prompt alignment for radiology)"),
        EncoderSpec("tiny-dinov2", "transformers", "tiny:dinov2", False, "tiny random-weight DINOv2 (tests, offline demo)"),
        EncoderSpec("tiny-clip", "transformers", "tiny:clip", True, "tiny random-weight CLIP with both towers (tests, offline demo)"),
    )
}


def encoder_spec(name: str) -> EncoderSpec:
    """The registry entry ``name``, or one made from a prefix (``timm:``, ``open_clip:``, ``hf:``)."""
    if not isinstance(name, str) or not name.strip():
        raise EncoderError("give an encoder name, e.g. --encoder tiny-dinov2")
    name = name.strip()
    if name in ENCODERS:
        return ENCODERS[name]
    prefix, _, rest = name.partition(":")
    if rest:
        if prefix == "timm":
            return EncoderSpec(name, "timm", rest, False, f"timm model {rest}")
        if prefix == "open_clip":
            return EncoderSpec(name, "open_clip", rest, True, f"open_clip model {rest}")
        if prefix == "hf":
            return EncoderSpec(name, "transformers", rest, _folder_has_text(rest), f"transformers model {rest}")
    known = ", ".join(sorted(ENCODERS))
    raise EncoderError(f"unknown encoder {name!r}: use one of {known}, or timm:<model>, open_clip:<model>, hf:<hub id or folder>")


def _folder_has_text(source: str) -> bool:
    cfg = Path(source) / "config.json"
    if cfg.is_file():
        try:
            return "text_config" in json.loads(cfg.read_text())
        except (OSError, ValueError):
            return False
    return "clip" in source.lower()


def _need(library: str) -> Any:
    import importlib

    module = {"transformers": "transformers", "open_clip": "open_clip", "timm": "timm", "inception": "torch_fidelity"}[library]
    try:
        return importlib.import_module(module)
    except Exception as exc:  # ImportError, or a torchvision that does not match torch (RuntimeError)
        raise EncoderError(f"encoder library {library!r} cannot be imported ({type(exc).__name__}: {exc}); install "
                           f"{INSTALL_HINT[library]}") from None


# ------------------------------------------------------------------------------------------ tiny encoders

TINY_IMAGE_SIZE = 32


def _tiny_dinov2(seed: int):
    import torch
    from transformers import Dinov2Config, Dinov2Model

    config = Dinov2Config(image_size=TINY_IMAGE_SIZE, patch_size=8, hidden_size=32, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=37, mlp_ratio=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Dinov2Model(config).eval()


def _tiny_clip(seed: int):
    import torch
    from transformers import CLIPConfig, CLIPModel

    from transformers import CLIPTokenizer

    from .tiny import MEDICAL_CORPUS

    # a tokenizer trained here on the tiny generators' medical corpus (no hub), saved with the model
    tokenizer = CLIPTokenizer(model_max_length=77).train_new_from_iterator(
        list(MEDICAL_CORPUS) * 4, vocab_size=1000, show_progress=False)
    text = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id, hidden_size=32, projection_dim=32, intermediate_size=37,
                num_attention_heads=4, num_hidden_layers=2, vocab_size=len(tokenizer), max_position_embeddings=77)
    vision = dict(image_size=TINY_IMAGE_SIZE, patch_size=8, hidden_size=32, projection_dim=32, intermediate_size=37,
                  num_attention_heads=4, num_hidden_layers=2)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()
    return model, tokenizer


def build_tiny_encoder(kind: str, folder: str | os.PathLike, weight_seed: int = 0) -> Path:
    """Build tiny encoder ``kind`` (``dinov2`` or ``clip``) with random weights and ``save_pretrained`` it (model,
    tokenizer for CLIP, and a preprocessor config naming size, mean and std) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "dinov2":
        _tiny_dinov2(weight_seed).save_pretrained(folder)
    elif kind == "clip":
        model, tokenizer = _tiny_clip(weight_seed)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    else:
        raise EncoderError(f"unknown tiny encoder {kind!r}: use tiny:dinov2 or tiny:clip")
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"size": {"shortest_edge": TINY_IMAGE_SIZE}, "crop_size": {"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE},
         "image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD)}))
    return folder


def ensure_tiny_encoder(kind: str, cache_dir: str | os.PathLike, weight_seed: int = 0) -> Path:
    """``cache_dir/encoders/tiny-<kind>-<seed>``, built on first use (in a temporary folder, then renamed)."""
    final = Path(cache_dir) / "encoders" / f"tiny-{kind}-{weight_seed}"
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        build_tiny_encoder(kind, tmp, weight_seed)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# ------------------------------------------------------------------------------------------ preprocessing


def _preprocess_config(folder: Path | None) -> tuple[int, int, tuple[float, ...], tuple[float, ...]]:
    """(resize shortest edge, centre crop, mean, std) from a saved ``preprocessor_config.json`` (ImageNet default)."""
    size, crop, mean, std = 224, 224, IMAGENET_MEAN, IMAGENET_STD
    path = folder / "preprocessor_config.json" if folder is not None else None
    if path is not None and path.is_file():
        cfg = json.loads(path.read_text())
        s = cfg.get("size", size)
        size = int(s.get("shortest_edge") or s.get("height") or size) if isinstance(s, dict) else int(s)
        c = cfg.get("crop_size", size)
        crop = int(c.get("height") or size) if isinstance(c, dict) else int(c)
        if not cfg.get("do_center_crop", True):
            crop = size
        mean = tuple(cfg.get("image_mean", mean))
        std = tuple(cfg.get("image_std", std))
    return size, crop, mean, std


def to_array(image: Any, size: int, crop: int) -> np.ndarray:
    """RGB float32 HWC in [0, 1]: any mode is converted to RGB, the shortest edge resized to ``size`` (bicubic), then
    centre-cropped to ``crop``."""
    from PIL import Image

    img = image.convert("RGB")
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(crop, round(w * scale)), max(crop, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - crop) // 2, (nh - crop) // 2
    img = img.crop((left, top, left + crop, top + crop))
    return np.asarray(img, dtype=np.float32) / 255.0


# ------------------------------------------------------------------------------------------ encoders


class Encoder:
    """A loaded encoder: ``encode_images(images) -> (n, d) float32`` and, with a text tower, ``encode_texts``."""

    def __init__(self, spec: EncoderSpec, image_fn: Callable[[list], np.ndarray],
                 text_fn: Callable[[list[str]], np.ndarray] | None = None, device: str = "cpu"):
        self.spec = spec
        self._image_fn = image_fn
        self._text_fn = text_fn
        self.device = device

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def has_text(self) -> bool:
        return self._text_fn is not None

    def encode_images(self, images: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        """Features of PIL images (any size or mode), in batches."""
        out = [self._image_fn(list(images[i:i + batch_size])) for i in range(0, len(images), batch_size)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        if self._text_fn is None:
            raise EncoderError(f"encoder {self.name!r} has no text tower: use a CLIP-family encoder (clip, biomedclip, tiny-clip)")
        out = [self._text_fn(list(texts[i:i + batch_size])) for i in range(0, len(texts), batch_size)]
        return np.concatenate(out).astype(np.float32)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _fresh(model: Any) -> Any:
    """Copy parameters into fresh memory after loading (MKL rounding trap, /work/shared/TINY_PIPELINES.md)."""
    for p in model.parameters():
        p.data = p.data.clone()
    return model


def _tensor_batch(images: list, size: int, crop: int, mean, std, device: str):
    import torch

    arr = np.stack([to_array(im, size, crop) for im in images])
    arr = (arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous().to(device)


def _load_transformers(spec: EncoderSpec, folder: str, device: str) -> Encoder:
    _need("transformers")
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = _fresh(AutoModel.from_pretrained(folder)).eval().to(device)
    local = Path(folder) if Path(folder).is_dir() else None
    if local is None:
        try:
            from huggingface_hub import hf_hub_download

            local = Path(hf_hub_download(folder, "preprocessor_config.json")).parent
        except Exception:  # no processor file: ImageNet defaults
            local = None
    size, crop, mean, std = _preprocess_config(local)

    @torch.inference_mode()
    def images(batch: list) -> np.ndarray:
        x = _tensor_batch(batch, size, crop, mean, std, device)
        if hasattr(model, "get_image_features"):
            out = model.get_image_features(pixel_values=x)
            out = getattr(out, "pooler_output", out)
        else:
            res = model(pixel_values=x)
            out = res.pooler_output if getattr(res, "pooler_output", None) is not None else res.last_hidden_state[:, 0]
        return out.float().cpu().numpy()

    text_fn = None
    if hasattr(model, "get_text_features"):
        tokenizer = AutoTokenizer.from_pretrained(folder)
        max_len = min(int(getattr(tokenizer, "model_max_length", 77) or 77), 77)

        @torch.inference_mode()
        def text_fn(batch: list[str]) -> np.ndarray:
            tok = tokenizer(batch, padding="max_length", truncation=True, max_length=max_len, return_tensors="pt")
            out = model.get_text_features(input_ids=tok["input_ids"].to(device),
                                          attention_mask=tok["attention_mask"].to(device))
            out = getattr(out, "pooler_output", out)
            return out.float().cpu().numpy()

    return Encoder(spec, images, text_fn, device)


def _load_open_clip(spec: EncoderSpec, device: str) -> Encoder:
    open_clip = _need("open_clip")
    import torch

    source = spec.source
    if Path(source).is_dir():
        source = "local-dir:" + str(source)
    model, preprocess = open_clip.create_model_from_pretrained(source)
    model = model.eval().to(device)
    tokenizer = open_clip.get_tokenizer(source)

    @torch.inference_mode()
    def images(batch: list) -> np.ndarray:
        x = torch.stack([preprocess(im.convert("RGB")) for im in batch]).to(device)
        return model.encode_image(x).float().cpu().numpy()

    @torch.inference_mode()
    def texts(batch: list[str]) -> np.ndarray:
        return model.encode_text(tokenizer(batch).to(device)).float().cpu().numpy()

    return Encoder(spec, images, texts, device)


def _load_timm(spec: EncoderSpec, device: str) -> Encoder:
    timm = _need("timm")
    import torch

    model = timm.create_model(spec.source, pretrained=True, num_classes=0).eval().to(device)
    cfg = timm.data.resolve_data_config({}, model=model)
    transform = timm.data.create_transform(**cfg)

    @torch.inference_mode()
    def images(batch: list) -> np.ndarray:
        x = torch.stack([transform(im.convert("RGB")) for im in batch]).to(device)
        return model(x).float().cpu().numpy()

    return Encoder(spec, images, None, device)


def _load_inception(spec: EncoderSpec, device: str) -> Encoder:
    _need("inception")
    import importlib

    import torch

    module = importlib.import_module("torch_fidelity.feature_extractor_inceptionv3")
    extractor = module.FeatureExtractorInceptionV3(spec.source, ["2048"]).eval().to(device)

    @torch.inference_mode()
    def images(batch: list) -> np.ndarray:
        # torch-fidelity takes uint8 NCHW of any size and resizes to 299 itself (its own, FID-comparable resize)
        arr = np.stack([np.asarray(im.convert("RGB").resize((299, 299))) for im in batch])
        x = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous().to(device)
        return extractor(x)[0].float().cpu().numpy()

    return Encoder(spec, images, None, device)


def load_encoder(spec: EncoderSpec | str, cache_dir: str | os.PathLike | None = None, device: str | None = None) -> Encoder:
    """Load ``spec`` with the library that owns it. Tiny encoders are built into ``cache_dir`` on first use and then
    loaded from that folder with ``from_pretrained``, exactly as a real checkpoint is."""
    spec = encoder_spec(spec) if isinstance(spec, str) else spec
    _need(spec.library)  # a missing library is named before anything is built or downloaded
    device = device or default_device()
    if spec.is_tiny:
        if cache_dir is None:
            raise EncoderError(f"encoder {spec.name!r} is built on first use: give a cache folder")
        kind = spec.source[len(TINY_PREFIX):]
        return _load_transformers(spec, str(ensure_tiny_encoder(kind, cache_dir)), device)
    if spec.library == "transformers":
        return _load_transformers(spec, spec.source, device)
    if spec.library == "open_clip":
        return _load_open_clip(spec, device)
    if spec.library == "timm":
        return _load_timm(spec, device)
    return _load_inception(spec, device)


# ------------------------------------------------------------------------------------------ feature cache


class FeatureCache:
    """Features per (encoder, image sha256) under ``root/<encoder cache id>/<sha[:2]>/<sha>.npy``; each file is
    written to a temporary name and renamed, so a crash never leaves a half-written feature."""

    def __init__(self, root: str | os.PathLike, spec: EncoderSpec):
        self.dir = Path(root) / spec.cache_id
        self.spec = spec

    def path(self, sha256: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", sha256 or ""):
            raise EncoderError(f"not a sha256 hex digest: {sha256!r}")
        return self.dir / sha256[:2] / f"{sha256}.npy"

    def get(self, sha256: str) -> np.ndarray | None:
        p = self.path(sha256)
        return np.load(p) if p.is_file() else None

    def put(self, sha256: str, vector: np.ndarray) -> None:
        p = self.path(sha256)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".", suffix=".npy.partial", dir=p.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, np.asarray(vector, dtype=np.float32))
            os.replace(tmp, p)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def batched(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def encode_cached(encoder: Encoder, cache: FeatureCache, shas: Sequence[str], open_image: Callable[[int], Any],
                  batch_size: int = 64, progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Features of images identified by sha256 (row order kept); only those not in ``cache`` are opened (by index,
    through ``open_image``) and encoded. ``progress(n)`` is called after each batch with the images it covered."""
    found: dict[int, np.ndarray] = {}
    todo = []
    for i, sha in enumerate(shas):
        v = cache.get(sha)
        if v is None:
            todo.append(i)
        else:
            found[i] = v
    if progress and found:
        progress(len(found))
    for chunk in batched(todo, batch_size):
        feats = encoder.encode_images([open_image(i) for i in chunk], batch_size=len(chunk))
        for i, v in zip(chunk, feats):
            cache.put(shas[i], v)
            found[i] = v
        if progress:
            progress(len(chunk))
    if not shas:
        return np.zeros((0, 0), np.float32)
    return np.stack([found[i] for i in range(len(shas))]).astype(np.float32)


def known_encoders() -> Iterable[EncoderSpec]:
    return ENCODERS.values()
