"""Tiny random-weight pipelines for every supported family, built in code (no downloads).

Each family is assembled from its real diffusers/transformers classes at the sizes the diffusers test suite
uses, every component is put in eval mode, and the pipeline is written with ``save_pretrained``. The
backend then loads it with ``from_pretrained`` exactly as it loads a real checkpoint, so tests and
demos exercise the production path. A model config names a tiny variant with ``source = "tiny:<family>"``.

Tokenizers are trained here on a small medical corpus (``train_new_from_iterator``), so nothing is
fetched from a hub. The same ``weight_seed`` always gives the same weights; different seeds give
different models of the same family (e.g. three distinguishable "models" for a demo study).

Building is fast (well under a second per family) but importing torch + diffusers costs seconds, so
import this module only where pipelines are needed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from .families import check_family

# Text the tiny tokenizers are trained on: colonoscopy and radiology phrases, so clinical words map to
# few tokens, as they would with a domain tokenizer.
MEDICAL_CORPUS = (
    "colonoscopy image of a sessile polyp in the sigmoid colon with a smooth surface",
    "pedunculated adenomatous polyp on a long stalk in the descending colon",
    "flat serrated lesion in the ascending colon seen with narrow band imaging",
    "small hyperplastic polyp in the rectum, white light endoscopy",
    "ulcerative colitis with loss of vascular pattern, erythema and friable mucosa",
    "diverticula in the sigmoid colon without signs of inflammation",
    "cecum with the appendiceal orifice and ileocecal valve clearly visible",
    "bowel preparation is adequate, Boston bowel preparation scale score 8",
    "large laterally spreading tumor, granular type, in the transverse colon",
    "polypectomy site after cold snare resection with a clean base",
    "Crohn's disease with aphthous ulcers in the terminal ileum",
    "angiodysplasia: a small red vascular lesion in the right colon",
    "colorectal cancer: an ulcerated circumferential mass narrowing the lumen",
    "chromoendoscopy with indigo carmine highlighting the pit pattern",
    "Paris classification 0-Is, 0-Ip, 0-IIa, 0-IIb, 0-IIc, Kudo pit pattern type III, IV, V",
    "chest x-ray, posteroanterior view, showing right lower lobe consolidation",
    "frontal chest radiograph with a small left pleural effusion and blunted costophrenic angle",
    "lateral chest radiograph with normal cardiac silhouette and clear lungs",
    "pneumothorax on the right with a visible pleural line and no lung markings",
    "cardiomegaly with pulmonary edema and Kerley B lines",
    "axial CT of the abdomen with contrast showing a hypodense liver lesion",
    "coronal CT of the chest in lung window with a spiculated nodule in the upper lobe",
    "MRI of the brain, T2-weighted axial slice, with a hyperintense lesion",
    "abdominal radiograph showing dilated small bowel loops and air-fluid levels",
    "mammogram, mediolateral oblique view, with clustered microcalcifications",
    "knee radiograph with joint space narrowing and osteophytes",
    "endotracheal tube and central venous catheter in good position",
    "no acute cardiopulmonary abnormality; lungs are clear bilaterally",
    "a photo, high resolution, realistic, detailed, 1 2 3 4 5 6 7 8 9 0 mm cm",
    "the a an of in on with without and or left right upper lower small large",
)

_TOKENIZER_VOCAB = 1000


def _corpus() -> list[str]:
    return list(MEDICAL_CORPUS) * 4


def _clip_tokenizer(model_max_length: int = 77):
    from transformers import CLIPTokenizer

    return CLIPTokenizer(model_max_length=model_max_length).train_new_from_iterator(
        _corpus(), vocab_size=_TOKENIZER_VOCAB, show_progress=False
    )


def _t5_tokenizer(model_max_length: int):
    from transformers import T5Tokenizer

    return T5Tokenizer(model_max_length=model_max_length, extra_ids=0).train_new_from_iterator(
        _corpus(), vocab_size=_TOKENIZER_VOCAB, show_progress=False
    )


def _bert_tokenizer(model_max_length: int = 77):
    from transformers import BertTokenizer

    return BertTokenizer(model_max_length=model_max_length).train_new_from_iterator(
        _corpus(), vocab_size=_TOKENIZER_VOCAB, show_progress=False
    )


def _clip_text_config(tokenizer, hidden: int = 32, projection: int = 32, max_positions: int = 77):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=hidden,
        projection_dim=projection,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=max_positions,
        hidden_act="gelu",
    )


def _t5_encoder(tokenizer, d_model: int = 32):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_ff=37,
        d_kv=8,
        num_heads=4,
        num_layers=2,
        relative_attention_num_buckets=8,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return T5EncoderModel(config)


def _seeded(seed: int, build: Callable[[], Any]) -> Any:
    """Build a module with a fixed RNG state without touching the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = build()
    if isinstance(module, torch.nn.Module):
        module.eval()
    return module


def _movq(block_out_channels, down_block_types, up_block_types):
    from diffusers import VQModel

    return VQModel(
        block_out_channels=list(block_out_channels),
        down_block_types=list(down_block_types),
        up_block_types=list(up_block_types),
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        norm_type="spatial",
        num_vq_embeddings=12,
        vq_embed_dim=4,
    )


def _build_sd(seed: int, clinical_bert: bool):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    if clinical_bert:
        from transformers import BertConfig, BertModel

        tokenizer = _bert_tokenizer(77)
        text_encoder = _seeded(
            seed + 1,
            lambda: BertModel(
                BertConfig(
                    vocab_size=len(tokenizer),
                    hidden_size=32,
                    num_hidden_layers=2,
                    num_attention_heads=4,
                    intermediate_size=37,
                    max_position_embeddings=77,
                    pad_token_id=tokenizer.pad_token_id,
                )
            ),
        )
        cross_attention_dim = text_encoder.config.hidden_size
    else:
        from transformers import CLIPTextModel

        tokenizer = _clip_tokenizer(77)
        text_encoder = _seeded(seed + 1, lambda: CLIPTextModel(_clip_text_config(tokenizer)))
        cross_attention_dim = text_encoder.config.hidden_size

    unet = _seeded(
        seed + 2,
        lambda: UNet2DConditionModel(
            block_out_channels=(4, 8),
            layers_per_block=1,
            sample_size=32,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=cross_attention_dim,
            norm_num_groups=2,
        ),
    )
    vae = _seeded(
        seed + 3,
        lambda: AutoencoderKL(
            block_out_channels=[4, 8],
            in_channels=3,
            out_channels=3,
            down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
            up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
            latent_channels=4,
            norm_num_groups=2,
        ),
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )


def _build_flux(seed: int):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    tokenizer = _clip_tokenizer(77)
    tokenizer_2 = _t5_tokenizer(512)
    text_encoder = _seeded(seed + 1, lambda: CLIPTextModel(_clip_text_config(tokenizer)))
    text_encoder_2 = _seeded(seed + 2, lambda: _t5_encoder(tokenizer_2, d_model=32))
    transformer = _seeded(
        seed + 3,
        lambda: FluxTransformer2DModel(
            patch_size=1,
            in_channels=4,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            axes_dims_rope=[4, 4, 8],
        ),
    )
    vae = _seeded(
        seed + 4,
        lambda: AutoencoderKL(
            sample_size=32,
            in_channels=3,
            out_channels=3,
            block_out_channels=(4,),
            layers_per_block=1,
            latent_channels=1,
            norm_num_groups=1,
            use_quant_conv=False,
            use_post_quant_conv=False,
            shift_factor=0.0609,
            scaling_factor=1.5035,
        ),
    )
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
        image_encoder=None,
        feature_extractor=None,
    )


def _build_kandinsky22(seed: int):
    """The combined Kandinsky 2.2 pipeline: a CLIP prior (text → image embedding) and a decoder (UNet + MoVQ)."""
    from diffusers import KandinskyV22CombinedPipeline

    embed = 32
    return KandinskyV22CombinedPipeline(**_kandinsky22_decoder(seed, embed), **_kandinsky22_prior(seed, embed))


def _kandinsky22_prior(seed: int, embed: int) -> dict[str, Any]:
    """The prior's components (``prior_*`` arguments of the combined pipeline), seeded ``seed + 1`` to ``+ 3``."""
    from diffusers import PriorTransformer, UnCLIPScheduler
    from transformers import (
        CLIPImageProcessor,
        CLIPTextModelWithProjection,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    tokenizer = _clip_tokenizer(77)  # the prior's sequence length is fixed at 77
    text_encoder = _seeded(
        seed + 1, lambda: CLIPTextModelWithProjection(_clip_text_config(tokenizer, embed, embed))
    )

    def prior():
        model = PriorTransformer(num_attention_heads=2, attention_head_dim=12, embedding_dim=embed, num_layers=1)
        # clip_mean/clip_std start at zero, which makes every image embedding zero.
        model.clip_std = torch.nn.Parameter(torch.ones(model.clip_std.shape))
        return model

    image_encoder = _seeded(
        seed + 3,
        lambda: CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                hidden_size=embed,
                image_size=32,
                projection_dim=embed,
                intermediate_size=37,
                num_attention_heads=4,
                num_channels=3,
                num_hidden_layers=2,
                patch_size=8,
            )
        ),
    )
    image_processor = CLIPImageProcessor(
        crop_size=32,
        do_center_crop=True,
        do_normalize=True,
        do_resize=True,
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
        resample=3,
        size=32,
    )
    prior_scheduler = UnCLIPScheduler(
        variance_type="fixed_small_log",
        prediction_type="sample",
        num_train_timesteps=1000,
        clip_sample=True,
        clip_sample_range=10.0,
    )
    return {
        "prior_prior": _seeded(seed + 2, prior),
        "prior_image_encoder": image_encoder,
        "prior_text_encoder": text_encoder,
        "prior_tokenizer": tokenizer,
        "prior_scheduler": prior_scheduler,
        "prior_image_processor": image_processor,
    }


def _kandinsky22_decoder(seed: int, embed: int) -> dict[str, Any]:
    """The decoder's components (``unet``, ``scheduler``, ``movq``), seeded ``seed + 4`` and ``+ 5``."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    unet = _seeded(
        seed + 4,
        lambda: UNet2DConditionModel(
            in_channels=4,
            out_channels=8,  # predicts mean and variance
            addition_embed_type="image",
            down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
            up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
            mid_block_type="UNetMidBlock2DSimpleCrossAttn",
            block_out_channels=(32, 64),
            layers_per_block=1,
            encoder_hid_dim=embed,
            encoder_hid_dim_type="image_proj",
            cross_attention_dim=32,
            attention_head_dim=4,
            resnet_time_scale_shift="scale_shift",
            class_embed_type=None,
        ),
    )
    movq = _seeded(
        seed + 5,
        lambda: _movq(
            [32, 64], ["DownEncoderBlock2D", "AttnDownEncoderBlock2D"], ["AttnUpDecoderBlock2D", "UpDecoderBlock2D"]
        ),
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        steps_offset=1,
        prediction_type="epsilon",
        thresholding=False,
        variance_type="fixed_small",
    )
    return {"unet": unet, "scheduler": scheduler, "movq": movq}


def _build_kandinsky3(seed: int):
    from diffusers import DDPMScheduler, Kandinsky3Pipeline, Kandinsky3UNet

    tokenizer = _t5_tokenizer(128)  # the pipeline pads and truncates to 128 tokens
    text_encoder = _seeded(seed + 1, lambda: _t5_encoder(tokenizer, d_model=32))
    unet = _seeded(
        seed + 2,
        lambda: Kandinsky3UNet(
            in_channels=4,
            time_embedding_dim=4,
            groups=2,
            attention_head_dim=4,
            layers_per_block=3,
            block_out_channels=(32, 64),
            cross_attention_dim=4,
            encoder_hid_dim=32,
        ),
    )
    # The pipeline assumes an 8x latent scale, so the MoVQ needs 4 blocks; spatial norm needs channels % 32 == 0.
    movq = _seeded(
        seed + 3,
        lambda: _movq(
            [32, 32, 64, 64],
            ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
            ["AttnUpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
        ),
    )
    scheduler = DDPMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        steps_offset=1,
        beta_schedule="squaredcos_cap_v2",
        clip_sample=True,
        thresholding=False,
    )
    return Kandinsky3Pipeline(tokenizer=tokenizer, text_encoder=text_encoder, unet=unet, scheduler=scheduler, movq=movq)


def _check_seed(weight_seed: int) -> int:
    if isinstance(weight_seed, bool) or not isinstance(weight_seed, int) or weight_seed < 0:
        raise ValueError(f"weight_seed must be a non-negative integer, got {weight_seed!r}")
    return weight_seed


def tiny_pipeline(family: str, weight_seed: int = 0):
    """Return a tiny random-weight pipeline of ``family`` in memory (eval mode, float32, CPU)."""
    check_family(family)
    # Spread component seeds so different weight seeds never share a component's weights.
    seed = _check_seed(weight_seed) * 1000
    if family == "msdm":
        return _build_sd(seed, clinical_bert=True)
    if family == "sd":
        return _build_sd(seed, clinical_bert=False)
    if family == "flux":
        return _build_flux(seed)
    if family == "kandinsky22":
        return _build_kandinsky22(seed)
    return _build_kandinsky3(seed)


def build_tiny(family: str, folder: str | os.PathLike, weight_seed: int = 0) -> Path:
    """Build the tiny ``family`` pipeline with ``weight_seed`` and ``save_pretrained`` it into ``folder``."""
    folder = Path(folder)
    pipe = tiny_pipeline(family, weight_seed)
    pipe.save_pretrained(folder)
    return folder


def tiny_folder(cache_dir: str | os.PathLike, family: str, weight_seed: int = 0) -> Path:
    """Where :func:`ensure_tiny` keeps the tiny ``family`` model with ``weight_seed``."""
    return Path(cache_dir) / "tiny" / f"{check_family(family)}-{_check_seed(weight_seed)}"


def _atomic_build(final: Path, write: Callable[[Path], Any]) -> Path:
    """Write into a temporary sibling folder, then rename it to ``final`` (a half-written folder is never used)."""
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        write(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not a lost race with another builder: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def ensure_tiny(family: str, cache_dir: str | os.PathLike, weight_seed: int = 0) -> Path:
    """Return ``cache_dir/tiny/<family>-<weight_seed>``, building it on first use."""
    final = tiny_folder(cache_dir, family, weight_seed)
    return _atomic_build(final, lambda tmp: build_tiny(family, tmp, weight_seed))


# The model a LoRA adapts per family (subfolder of the saved pipeline) and the diffusers class of that model.
LORA_FAMILIES = {"flux": ("transformer", "FluxTransformer2DModel"), "kandinsky22": ("unet", "UNet2DConditionModel")}


def _lora_target(family: str) -> tuple[str, str]:
    if family not in LORA_FAMILIES:
        raise ValueError(f"tiny LoRAs exist for {', '.join(LORA_FAMILIES)}; got {family!r}")
    return LORA_FAMILIES[family]


def build_tiny_lora(
    base_folder: str | os.PathLike,
    folder: str | os.PathLike,
    seed: int = 0,
    rank: int = 4,
    target_modules: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0"),
    family: str = "flux",
) -> Path:
    """Save a random LoRA for the tiny ``family`` model in ``base_folder`` into ``folder``, in the format diffusers'
    LoRA training scripts write (``pytorch_lora_weights.safetensors`` with ``transformer.``/``unet.`` keys).

    peft's default init makes B = 0 (a LoRA that changes nothing), so the adapter is built with
    ``init_lora_weights=False``: it visibly changes the image.
    """
    import diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    subfolder, model_class = _lora_target(family)
    model = getattr(diffusers, model_class).from_pretrained(base_folder, subfolder=subfolder)
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=list(target_modules), init_lora_weights=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.add_adapter(config)
    folder = Path(folder)
    layers = get_peft_model_state_dict(model)
    if family == "flux":
        diffusers.FluxPipeline.save_lora_weights(folder, transformer_lora_layers=layers)
    else:  # a Stable-Diffusion-style UNet LoRA, as diffusers' Kandinsky 2.2 decoder LoRA script saves it
        diffusers.StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=layers)
    return folder


def ensure_tiny_lora(
    cache_dir: str | os.PathLike, weight_seed: int = 0, lora_seed: int = 0, family: str = "flux"
) -> Path:
    """Return ``cache_dir/tiny/<family>-<weight_seed>-lora-<lora_seed>``, building it (and its base) on first use."""
    _lora_target(family)  # refuse before building the base model
    base = ensure_tiny(family, cache_dir, weight_seed)
    final = base.parent / f"{base.name}-lora-{_check_seed(lora_seed)}"
    return _atomic_build(final, lambda tmp: build_tiny_lora(base, tmp, seed=lora_seed, family=family))
