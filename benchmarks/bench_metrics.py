"""Automatic metrics (issue 19): speed, memory, interval coverage and the copy detector's calibration. Prints figures.

  python benchmarks/bench_metrics.py pipeline [--images 10000]     features (tiny-dinov2, 64 px, CPU) + every metric
  python benchmarks/bench_metrics.py step [--n 50000 --dim 2048]   metric step alone vs torchmetrics on the same features
  python benchmarks/bench_metrics.py coverage [--studies 400]       no relation: how often the agreement CI covers 0
  python benchmarks/bench_metrics.py copies [--n 2000]              calibrated false-positive rate of the copy flag

Peak memory: the process's peak RSS (``ru_maxrss``) after each part, measured in a fresh process per part.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from p2p_app import metrics as M  # noqa: E402


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def textures(n: int, seed: int, size: int = 64):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray((rng.random((8, 8, 3)) * 255).astype("uint8")).resize((size, size), Image.BICUBIC)
            for _ in range(n)]


def pipeline(n_images: int, n_boot: int) -> None:
    import torch

    from generators.encoders import load_encoder

    torch.set_num_threads(os.cpu_count() or 1)
    n_real = n_images // 5
    n_models = 4
    per_model = (n_images - n_real) // n_models
    t0 = time.perf_counter()
    images = textures(n_images, 0)
    t_make = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        enc = load_encoder("tiny-dinov2", cache_dir=tmp, device="cpu")
        t0 = time.perf_counter()
        f = enc.encode_images(images, batch_size=256)
        t_feat = time.perf_counter() - t0
    real, gen = f[:n_real], f[n_real:]
    t0 = time.perf_counter()
    for m in range(n_models):
        M.set_metrics(gen[m * per_model:(m + 1) * per_model], real, n_boot=n_boot, seed=m)
    t_set = time.perf_counter() - t0
    t0 = time.perf_counter()
    M.nn_distance(gen, real)
    M.memorisation(gen, real)
    t_img = time.perf_counter() - t0
    print(f"pipeline: {n_images} images at 64 px ({n_real} real, {n_models} models × {per_model}), tiny-dinov2 on CPU")
    print(f"  make images {t_make:.1f} s; features {t_feat:.1f} s ({n_images / t_feat:.0f} images/s)")
    print(f"  set metrics with {n_boot} bootstrap resamples, 4 models: {t_set:.1f} s; per-image NN + memorisation "
          f"{t_img:.2f} s; total {t_feat + t_set + t_img:.1f} s; peak RSS {peak_mb():.0f} MB")


def step(n: int, dim: int, repeat: int) -> None:
    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    class Identity(torch.nn.Module):
        def __init__(self, d: int):
            super().__init__()
            self.num_features = d

        def forward(self, x):
            return x

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    y = (rng.normal(size=(n, dim)) * 1.1 + 0.05).astype(np.float32)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def ours_fid():
        return M.frechet_distance(x, y)

    def tm_fid():
        fid = FrechetInceptionDistance(feature=Identity(dim), reset_real_features=True)
        fid.update(ty, real=True)
        fid.update(tx, real=False)
        return float(fid.compute())

    def ours_kid():
        return M.kid(x, y, rng=np.random.default_rng(1))

    def tm_kid():
        kid = KernelInceptionDistance(feature=Identity(dim), subsets=M.KID_SUBSETS, subset_size=M.KID_SUBSET)
        kid.update(ty, real=True)
        kid.update(tx, real=False)
        return float(kid.compute()[0])

    def best(fn):
        times, val = [], None
        for _ in range(repeat):
            t0 = time.perf_counter()
            val = fn()
            times.append(time.perf_counter() - t0)
        return min(times), val

    print(f"metric step: {n} × {dim} features per set (two sets), best of {repeat}, {torch.get_num_threads()} threads")
    for name, ours, theirs in (("Fréchet", ours_fid, tm_fid), ("KID", ours_kid, tm_kid)):
        t_o, v_o = best(ours)
        t_t, v_t = best(theirs)
        print(f"  {name}: ours {t_o:.2f} s ({v_o:.6g}), torchmetrics {t_t:.2f} s ({v_t:.6g}); ratio {t_o / t_t:.2f}")
    sub = min(n, 5000)
    t0 = time.perf_counter()
    M.prdc(y[:sub], x[:sub], k=5)
    print(f"  PRDC on {sub} × {dim} per set: {time.perf_counter() - t0:.1f} s (no torchmetrics equivalent; O(n²d))")
    print(f"  peak RSS {peak_mb():.0f} MB")


def coverage(studies: int, n_images: int, n_raters: int, n_boot: int) -> None:
    from test_metrics import simulated_ratings

    t0 = time.perf_counter()
    hits_s = hits_k = 0
    for s in range(studies):
        frame, metric, ids = simulated_ratings(10_000 + s, n_images, n_raters, slope=0.0)
        row = M.agreement(M.RatingsByImage.from_frame(frame, ids), {"nn": metric}, n_boot=n_boot, seed=s).iloc[0]
        hits_s += row.spearman_low <= 0 <= row.spearman_high
        hits_k += row.kendall_low <= 0 <= row.kendall_high
    print(f"coverage of 0 with no relation: {studies} studies × {n_images} images × {n_raters} raters, "
          f"{n_boot} two-level bootstrap resamples: Spearman {hits_s / studies:.1%}, Kendall {hits_k / studies:.1%} "
          f"(goal ≥ 93 %); {time.perf_counter() - t0:.0f} s")
    frame, metric, ids = simulated_ratings(7, n_images, n_raters, slope=1.0)
    big, bm, bi = simulated_ratings(99, 20000, n_raters, slope=1.0)
    truth = float(M._spearman_rows(M.RatingsByImage.from_frame(big, bi).means(), bm))
    hits = 0
    for s in range(min(studies, 200)):
        frame, metric, ids = simulated_ratings(20_000 + s, n_images, n_raters, slope=1.0)
        row = M.agreement(M.RatingsByImage.from_frame(frame, ids), {"nn": metric}, n_boot=n_boot, seed=s).iloc[0]
        hits += row.spearman_low <= truth <= row.spearman_high
    print(f"known relation (population ρ = {truth:.3f}): the interval holds it in {hits / min(studies, 200):.1%} of "
          f"{min(studies, 200)} studies")


def copies(n: int) -> None:
    import io

    from PIL import ImageEnhance

    from generators.encoders import load_encoder

    rng_feats = np.random.default_rng(0).normal(size=(2 * n, 16)).astype(np.float32)
    for pct in (1.0, 2.0, 5.0):
        table, _ = M.memorisation(rng_feats[n:], rng_feats[:n], percentile=pct)
        print(f"copy flag, features only, {n} unrelated vs {n} training (one distribution): calibrated "
              f"{pct:.0f} %, flagged {table['copy_flag'].mean():.2%}")
    train = textures(n, 1)
    unrelated = textures(n, 2)

    def jpeg(im):
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=60)
        buf.seek(0)
        from PIL import Image

        return Image.open(buf).convert("RGB")

    k = 50
    planted = ([train[i] for i in range(k)] + [train[i].crop((4, 4, 60, 60)).resize((64, 64)) for i in range(k, 2 * k)]
               + [jpeg(train[i]) for i in range(2 * k, 3 * k)]
               + [ImageEnhance.Brightness(train[i]).enhance(1.15) for i in range(3 * k, 4 * k)])
    with tempfile.TemporaryDirectory() as tmp:
        enc = load_encoder("tiny-dinov2", cache_dir=tmp, device="cpu")
        ft = enc.encode_images(train, 256)
        gen = planted + unrelated
        fg = enc.encode_images(gen, 256)
    table, thr = M.memorisation(fg, ft, M.pixel_vectors(gen), M.pixel_vectors(train), percentile=1.0)
    top = table.iloc[: 4 * k]
    found = (top["match_index"].to_numpy() == np.arange(4 * k))
    for j, kind in enumerate(("exact", "crop", "JPEG", "brightness")):
        sl = slice(j * k, (j + 1) * k)
        print(f"planted {kind}: found at rank 1 {found[sl].mean():.0%}, flagged {top['copy_flag'].iloc[sl].mean():.0%}")
    print(f"unrelated images flagged: {table['copy_flag'].iloc[4 * k:].mean():.2%} (calibrated 1 %, tiny-dinov2 + "
          f"pixels, {n} training images)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="part", required=True)
    a = sub.add_parser("pipeline")
    a.add_argument("--images", type=int, default=10_000)
    a.add_argument("--boot", type=int, default=50)
    b = sub.add_parser("step")
    b.add_argument("--n", type=int, default=50_000)
    b.add_argument("--dim", type=int, default=2048)
    b.add_argument("--repeat", type=int, default=1)
    c = sub.add_parser("coverage")
    c.add_argument("--studies", type=int, default=400)
    c.add_argument("--images", type=int, default=40)
    c.add_argument("--raters", type=int, default=3)
    c.add_argument("--boot", type=int, default=300)
    d = sub.add_parser("copies")
    d.add_argument("--n", type=int, default=2000)
    args = p.parse_args()
    if args.part == "pipeline":
        pipeline(args.images, args.boot)
    elif args.part == "step":
        step(args.n, args.dim, args.repeat)
    elif args.part == "coverage":
        coverage(args.studies, args.images, args.raters, args.boot)
    else:
        copies(args.n)


if __name__ == "__main__":
    main()
