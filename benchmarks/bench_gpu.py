"""GPU benchmark: our backend vs a plain diffusers call, per family, at realistic size.

No checkpoints can be downloaded, so each family is built in code from its FULL-SIZE configuration with
random weights, directly on the GPU in the family's CUDA dtype (FLUX.1-dev-sized transformer + CLIP-L + T5-XXL
in bf16; SD 1.5 / MSDM-sized UNet in fp16; Kandinsky 2.2 prior + decoder and Kandinsky 3 in fp16). Random
weights make meaningless pictures, but the same kernels run as with the real checkpoints, so timings hold.

For each family it reports:
  - build s    time to create the random model on the GPU (and, with --from-disk, the time our backend
               takes to load it back from a saved folder: from_pretrained + move to the GPU);
  - raw img/s  plain ``pipeline(prompt=..., generator=..., **settings)``;
  - ours img/s ``DiffusersGenerator.generate`` on the same pipeline object and settings;
  - ratio      ours / raw (goal >= 0.98), runs interleaved after a warm-up;
  - peak GiB   ``torch.cuda.max_memory_allocated`` during generation.

    python benchmarks/bench_gpu.py [--families flux sd] [--runs 3] [--steps N] [--from-disk]

Without CUDA it prints a message and exits 0. ``--cpu-smoke`` runs the same code path on the CPU with the tiny
pipelines (a check of this script, not a benchmark).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FAMILY_ORDER = ("sd", "msdm", "kandinsky22", "kandinsky3", "flux")
PROMPT = "colonoscopy image of a 6 mm sessile polyp in the sigmoid colon, white light, high detail"


@contextlib.contextmanager
def _building(device: str, dtype):
    """Create modules directly on ``device`` in ``dtype`` (no fp32 copy of a 12B model in memory)."""
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(old)


def _ready(module, dtype):
    if any(p.dtype != dtype for p in module.parameters()):
        module = module.to(dtype=dtype)
    return module.eval().requires_grad_(False)


def _clip_l_text(tokenizer, dtype, with_projection: bool = False, big_g: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    if big_g:  # OpenCLIP ViT-bigG/14 text tower (Kandinsky 2.2 prior)
        dims = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
                    projection_dim=1280, hidden_act="gelu")
    else:  # CLIP ViT-L/14 text tower
        dims = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                    projection_dim=768, hidden_act="quick_gelu")
    config = CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **dims)
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return _ready(cls(config), dtype)


def _t5_encoder(dtype, *, d_model, d_ff, d_kv, heads, layers, act):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=32128, d_model=d_model, d_ff=d_ff, d_kv=d_kv, num_heads=heads, num_layers=layers,
                      feed_forward_proj=act, relative_attention_num_buckets=32, relative_attention_max_distance=128)
    return _ready(T5EncoderModel(config), dtype)


def _sd_vae(dtype, latent_channels=4, **extra):
    from diffusers import AutoencoderKL

    return _ready(
        AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=latent_channels, layers_per_block=2,
            block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32, **extra,
        ),
        dtype,
    )


def _movq(dtype):
    from diffusers import VQModel

    return _ready(
        VQModel(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
            block_out_channels=(128, 256, 256, 512), norm_type="spatial", num_vq_embeddings=16384, vq_embed_dim=4,
            down_block_types=("DownEncoderBlock2D",) * 3 + ("AttnDownEncoderBlock2D",),
            up_block_types=("AttnUpDecoderBlock2D",) + ("UpDecoderBlock2D",) * 3,
        ),
        dtype,
    )


def build_full_size(family: str, device: str, dtype):
    """A pipeline of ``family`` with full-size random weights, created on ``device`` in ``dtype``."""
    import diffusers  # noqa: F401 - imported before _building, as it always was: its import runs off the device

    with _building(device, dtype):
        if family in ("sd", "msdm"):
            return _full_sd(family, dtype)
        if family == "flux":  # FLUX.1-dev: 12B transformer, CLIP-L, T5-XXL
            return _full_flux(dtype)
        if family == "kandinsky22":
            return _full_kandinsky22(dtype)
        if family == "kandinsky3":  # 3B UNet + FLAN-UL2 encoder
            return _full_kandinsky3(dtype)
    raise ValueError(f"unknown family {family!r}")


def _full_sd(family: str, dtype):
    """Stable Diffusion 1.5 (``sd``) or MSDM (``msdm``: its UNet conditioned on a BERT-base clinical encoder)."""
    import diffusers

    from generators.tiny import _bert_tokenizer, _clip_tokenizer

    if family == "msdm":  # Stable Diffusion UNet conditioned on a BERT-base clinical encoder
        from transformers import BertConfig, BertModel

        tokenizer = _bert_tokenizer(512)
        text_encoder = _ready(BertModel(BertConfig(vocab_size=28996, max_position_embeddings=512)), dtype)
    else:
        tokenizer = _clip_tokenizer(77)
        text_encoder = _clip_l_text(tokenizer, dtype)
    unet = _ready(diffusers.UNet2DConditionModel(sample_size=64, cross_attention_dim=768), dtype)
    return diffusers.StableDiffusionPipeline(
        vae=_sd_vae(dtype), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=diffusers.DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                          clip_sample=False, set_alpha_to_one=False, steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def _full_flux(dtype):
    """FLUX.1-dev: 12B transformer, CLIP-L, T5-XXL."""
    import diffusers

    from generators.tiny import _clip_tokenizer, _t5_tokenizer

    tokenizer, tokenizer_2 = _clip_tokenizer(77), _t5_tokenizer(512)
    transformer = _ready(
        diffusers.FluxTransformer2DModel(
            patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
            num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
            guidance_embeds=True, axes_dims_rope=(16, 56, 56),
        ),
        dtype,
    )
    return diffusers.FluxPipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(
            shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
            base_image_seq_len=256, max_image_seq_len=4096,
        ),
        vae=_sd_vae(dtype, latent_channels=16, use_quant_conv=False, use_post_quant_conv=False,
                    scaling_factor=0.3611, shift_factor=0.1159),
        text_encoder=_clip_l_text(tokenizer, dtype), tokenizer=tokenizer,
        text_encoder_2=_t5_encoder(dtype, d_model=4096, d_ff=10240, d_kv=64, heads=64, layers=24,
                                   act="gated-gelu"),
        tokenizer_2=tokenizer_2, transformer=transformer,
    )


def _full_kandinsky22(dtype):
    """Kandinsky 2.2: the prior (bigG text tower, CLIP vision encoder) and the decoder UNet + MoVQ, combined."""
    import diffusers
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from generators.tiny import _clip_tokenizer

    tokenizer = _clip_tokenizer(77)
    prior = diffusers.PriorTransformer(num_attention_heads=32, attention_head_dim=64, num_layers=20,
                                       embedding_dim=1280, num_embeddings=77, additional_embeddings=4)
    prior.clip_std = torch.nn.Parameter(torch.ones(prior.clip_std.shape))
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(hidden_size=1664, intermediate_size=8192, num_attention_heads=16,
                         num_hidden_layers=48, projection_dim=1280, image_size=224, patch_size=14,
                         hidden_act="gelu")
    )
    unet = diffusers.UNet2DConditionModel(
        in_channels=4, out_channels=8, addition_embed_type="image", encoder_hid_dim=1280,
        encoder_hid_dim_type="image_proj", cross_attention_dim=768, attention_head_dim=64,
        block_out_channels=(384, 768, 1152, 1536), layers_per_block=3,
        down_block_types=("ResnetDownsampleBlock2D",) + ("SimpleCrossAttnDownBlock2D",) * 3,
        up_block_types=("SimpleCrossAttnUpBlock2D",) * 3 + ("ResnetUpsampleBlock2D",),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", resnet_time_scale_shift="scale_shift",
        class_embed_type=None,
    )
    return diffusers.KandinskyV22CombinedPipeline(
        unet=_ready(unet, dtype), movq=_movq(dtype),
        scheduler=diffusers.DDPMScheduler(beta_schedule="linear", beta_start=0.00085, beta_end=0.012,
                                          clip_sample=False, steps_offset=1, variance_type="fixed_small"),
        prior_prior=_ready(prior, dtype), prior_image_encoder=_ready(image_encoder, dtype),
        prior_text_encoder=_clip_l_text(tokenizer, dtype, with_projection=True, big_g=True),
        prior_tokenizer=tokenizer,
        prior_scheduler=diffusers.UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="sample",
                                                  clip_sample=True, clip_sample_range=10.0),
        prior_image_processor=CLIPImageProcessor(crop_size=224, size=224),
    )


def _full_kandinsky3(dtype):
    """Kandinsky 3: 3B UNet + FLAN-UL2 encoder."""
    import diffusers

    from generators.tiny import _t5_tokenizer

    return diffusers.Kandinsky3Pipeline(
        tokenizer=_t5_tokenizer(128),
        text_encoder=_t5_encoder(dtype, d_model=4096, d_ff=16384, d_kv=256, heads=16, layers=32,
                                 act="gated-silu"),
        unet=_ready(diffusers.Kandinsky3UNet(), dtype),  # its defaults are the released sizes
        scheduler=diffusers.DDPMScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                          beta_schedule="squaredcos_cap_v2", clip_sample=True),
        movq=_movq(dtype),
    )


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def bench_family(family: str, args, device: str) -> dict:
    import torch

    from generators import DevicePool, DiffusersGenerator, family_defaults, tiny_pipeline
    from generators.families import get_family

    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}[get_family(family).cuda_dtype]
    row = {"family": family}
    t0 = time.perf_counter()
    if args.cpu_smoke:
        pipe, dtype = tiny_pipeline(family), torch.float32
    else:
        pipe = build_full_size(family, device, dtype)
    _sync(device)
    row["build_s"] = time.perf_counter() - t0
    defaults = family_defaults(family, tiny=args.cpu_smoke)
    if args.steps:
        defaults["num_inference_steps"] = args.steps
        if "prior_num_inference_steps" in defaults:
            defaults["prior_num_inference_steps"] = min(args.steps, defaults["prior_num_inference_steps"])
    pool = DevicePool([device])
    dtype_name = str(dtype).removeprefix("torch.")

    if args.from_disk:
        folder = Path(tempfile.mkdtemp(prefix=f"bench-{family}-", dir=args.tmp_dir))
        try:
            pipe.save_pretrained(folder)
            del pipe
            gc.collect()
            torch.cuda.empty_cache() if device.startswith("cuda") else None
            gen = DiffusersGenerator(family, family, "colonoscopy", source=folder, defaults=defaults,
                                     dtype=dtype_name, pool=pool)
            t0 = time.perf_counter()
            gen.load()
            _sync(device)
            row["load_s"] = time.perf_counter() - t0
            pipe = gen._pipe
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    else:
        gen = DiffusersGenerator(family, family, "colonoscopy", pipeline=pipe, defaults=defaults,
                                 dtype=dtype_name, pool=pool)
    row["placement"] = f"{gen.placement.device}{' (offload)' if gen.placement.offload else ''}"
    settings = {k: v for k, v in gen.effective_params().items() if k not in ("lora_scale", "greyscale")}
    row["settings"] = f"{settings['width']}x{settings['height']}, {settings['num_inference_steps']} steps"

    def raw(seed):
        pipe(prompt=PROMPT, generator=torch.Generator("cpu").manual_seed(seed), output_type="pil", **settings)
        _sync(device)

    def ours(seed):
        gen.generate(PROMPT, seed)
        _sync(device)

    for i in range(args.warmup):
        raw(i)
        ours(i)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    t_raw, t_ours = [], []
    for i in range(args.runs):
        for fn in ((raw, ours) if i % 2 == 0 else (ours, raw)):
            t0 = time.perf_counter()
            fn(100 + i)
            (t_raw if fn is raw else t_ours).append(time.perf_counter() - t0)
    row["raw_ips"] = 1 / statistics.median(t_raw)
    row["ours_ips"] = 1 / statistics.median(t_ours)
    row["ratio"] = row["ours_ips"] / row["raw_ips"]
    row["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30 if device.startswith("cuda") else float("nan")
    gen.close()
    del gen, pipe
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=list(FAMILY_ORDER), choices=FAMILY_ORDER)
    parser.add_argument("--runs", type=int, default=3, help="timed images per side (median)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=None, help="override the family's real step count")
    parser.add_argument("--from-disk", action="store_true", help="save each model and time our backend loading it")
    parser.add_argument("--tmp-dir", default=None, help="where --from-disk writes (needs up to ~35 GB for FLUX)")
    parser.add_argument("--cpu-smoke", action="store_true", help="check this script on CPU with tiny models")
    args = parser.parse_args(argv)

    import torch

    if args.cpu_smoke:
        device = "cpu"
        torch.set_num_threads(1)
    elif not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here; nothing to measure (run on a GPU machine).")
        return 0
    else:
        device = "cuda:0"
        torch.backends.cuda.matmul.allow_tf32 = True
        print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    warnings.filterwarnings("ignore")  # random weights give NaN pixels: numpy cast warnings are expected

    rows = []
    for family in args.families:
        try:
            rows.append(bench_family(family, args, device))
        except Exception as exc:  # report and go on with the other families
            rows.append({"family": family, "error": f"{type(exc).__name__}: {exc}"})
            gc.collect()
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
        row = rows[-1]
        if "error" in row:
            print(f"{family:<12} FAILED {row['error'][:300]}")
        else:
            load = f" load {row['load_s']:.1f}s" if "load_s" in row else ""
            print(
                f"{family:<12} {row['settings']:<22} build {row['build_s']:.1f}s{load}  "
                f"raw {row['raw_ips']:.3f} img/s  ours {row['ours_ips']:.3f} img/s  ratio {row['ratio']:.3f}  "
                f"peak {row['peak_gib']:.1f} GiB  on {row['placement']}",
                flush=True,
            )
    ok = [r["ratio"] for r in rows if "ratio" in r]
    if ok:
        print(f"worst ratio {min(ok):.3f} (goal >= 0.98)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
