"""Draw the placeholder "real" images of the example studies (run from anywhere).

    python studies/make_placeholders.py           # (re)write the PNGs next to this script
    python studies/make_placeholders.py --check   # exit 1 if a committed PNG's pixels differ

They are simple seeded drawings (PIL + ``random.Random``), not medical images: they only let the
example studies run end to end. Pixels are reproducible; PNG bytes can differ between zlib builds,
and the design hash covers the bytes, so the committed files are the reference: regenerate them
only together with a new study version.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFilter

SIZE = 96
HERE = Path(__file__).resolve().parent


def _vignette(image: Image.Image, rng: random.Random) -> Image.Image:
    """Endoscope look: a round field of view on black."""
    mask = Image.new("L", image.size, 0)
    inset = rng.randint(1, 4)
    ImageDraw.Draw(mask).ellipse((inset, inset, SIZE - 1 - inset, SIZE - 1 - inset), fill=255)
    return Image.composite(image, Image.new(image.mode, image.size, 0), mask.filter(ImageFilter.GaussianBlur(1)))


def _mucosa(rng: random.Random, base: tuple[int, int, int] = (196, 96, 88)) -> Image.Image:
    """Pink mucosa, brighter near the scope, with a dark lumen and a few folds."""
    image = Image.new("RGB", (SIZE, SIZE), base)
    draw = ImageDraw.Draw(image)
    cx, cy = SIZE * rng.uniform(0.35, 0.65), SIZE * rng.uniform(0.35, 0.65)
    for r in range(SIZE, 0, -4):  # radial gradient, dark toward the lumen
        t = r / SIZE
        colour = tuple(int(c * (0.45 + 0.55 * t)) for c in base)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    lumen = rng.uniform(7, 13)
    draw.ellipse((cx - lumen, cy - lumen * 0.8, cx + lumen, cy + lumen * 0.8), fill=(40, 12, 12))
    for i in range(rng.randint(3, 5)):  # haustral folds as arcs around the lumen
        r = lumen + 10 + 11 * i + rng.uniform(-2, 2)
        start = rng.uniform(0, 360)
        draw.arc((cx - r, cy - r, cx + r, cy + r), start, start + rng.uniform(120, 250),
                 fill=tuple(min(255, int(c * 1.15)) for c in base), width=2)
    return image


def _highlights(draw: ImageDraw.ImageDraw, rng: random.Random, n: int) -> None:
    for _ in range(n):
        x, y, r = rng.uniform(10, SIZE - 10), rng.uniform(10, SIZE - 10), rng.uniform(0.8, 2.0)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(255, 250, 245))


def _finish_rgb(image: Image.Image, rng: random.Random, highlights: int = 4) -> Image.Image:
    image = image.filter(ImageFilter.GaussianBlur(0.8))
    _highlights(ImageDraw.Draw(image), rng, highlights)
    return _vignette(image, rng)


def polyp(rng: random.Random) -> Image.Image:
    image = _mucosa(rng)
    draw = ImageDraw.Draw(image)
    x, y, r = rng.uniform(28, 68), rng.uniform(55, 72), rng.uniform(9, 13)
    draw.ellipse((x - r, y - r * 0.8, x + r, y + r * 0.8), fill=(214, 120, 104), outline=(150, 60, 55))
    draw.ellipse((x - r * 0.4, y - r * 0.5, x + r * 0.1, y - r * 0.1), fill=(236, 170, 150))
    return _finish_rgb(image, rng)


def cecum(rng: random.Random) -> Image.Image:
    image = _mucosa(rng, (206, 132, 110))
    draw = ImageDraw.Draw(image)
    x, y = rng.uniform(35, 60), rng.uniform(35, 60)
    draw.arc((x - 9, y - 4, x + 9, y + 4), 200, 340, fill=(90, 35, 30), width=2)  # appendiceal orifice
    draw.chord((x + 12, y + 14, x + 34, y + 26), 180, 360, fill=(225, 170, 140))  # ileocecal valve lip
    return _finish_rgb(image, rng)


def zline(rng: random.Random) -> Image.Image:
    image = Image.new("RGB", (SIZE, SIZE), (218, 196, 186))  # pale squamous oesophagus
    draw = ImageDraw.Draw(image)
    cx, cy, r = SIZE / 2 + rng.uniform(-6, 6), SIZE / 2 + rng.uniform(-6, 6), rng.uniform(20, 26)
    points = []
    for i in range(24):  # irregular squamocolumnar junction around a reddish centre
        a = 2 * math.pi * i / 24
        rr = r + rng.uniform(-5, 5)
        points.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    draw.polygon(points, fill=(188, 80, 70))
    draw.ellipse((cx - 6, cy - 5, cx + 6, cy + 5), fill=(45, 15, 15))
    return _finish_rgb(image, rng, 3)


def colitis(rng: random.Random) -> Image.Image:
    image = _mucosa(rng, (210, 70, 62))
    draw = ImageDraw.Draw(image)
    for _ in range(14):  # erosions with fibrin
        x, y, r = rng.uniform(8, 88), rng.uniform(8, 88), rng.uniform(1.5, 3.5)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(236, 222, 190))
    return _finish_rgb(image, rng, 8)


def bleeding(rng: random.Random) -> Image.Image:
    image = _mucosa(rng)
    draw = ImageDraw.Draw(image)
    x = rng.uniform(30, 60)
    draw.polygon([(x, 40), (x + 22, 52), (x + 14, 92), (x - 12, 92)], fill=(120, 8, 10))
    return _finish_rgb(image, rng, 6)


def snare(rng: random.Random) -> Image.Image:
    image = _mucosa(rng)
    draw = ImageDraw.Draw(image)
    x, y = rng.uniform(40, 56), rng.uniform(50, 62)
    draw.ellipse((x - 10, y - 8, x + 10, y + 8), fill=(214, 120, 104))
    draw.ellipse((x - 14, y - 11, x + 14, y + 11), outline=(200, 205, 210), width=2)  # snare loop
    draw.line((x + 10, y + 8, SIZE - 6, SIZE - 2), fill=(160, 170, 180), width=4)  # sheath
    return _finish_rgb(image, rng)


def _speckle(image: Image.Image, rng: random.Random, amount: int) -> Image.Image:
    noise = Image.new("L", image.size)
    noise.putdata([int(rng.random() * amount) for _ in range(SIZE * SIZE)])
    return ImageChops.add(image, noise)


def chest_xray(rng: random.Random, consolidation: bool = False) -> Image.Image:
    image = Image.new("L", (SIZE, SIZE), 20)
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((8, 10, 88, 96), radius=20, fill=150)  # thorax soft tissue
    for side in (-1, 1):  # lungs
        cx = 48 + side * 19
        draw.ellipse((cx - 15, 16, cx + 15, 84), fill=55 + rng.randint(-6, 6))
    for i in range(7):  # ribs
        y = 20 + 9 * i + rng.uniform(-1, 1)
        draw.arc((14, y - 6, 48, y + 10), 190, 330, fill=170, width=2)
        draw.arc((48, y - 6, 82, y + 10), 210, 350, fill=170, width=2)
    draw.rectangle((45, 8, 51, 96), fill=200)  # spine
    draw.ellipse((38, 50, 70, 82), fill=165)  # heart shadow, to the patient's left
    if consolidation:  # patient's right lower zone is image left
        draw.ellipse((20, 58, 42, 80), fill=125)
    return _speckle(image.filter(ImageFilter.GaussianBlur(1.6)), rng, 10)


def ct_abdomen(rng: random.Random, lesion: bool = True) -> Image.Image:
    image = Image.new("L", (SIZE, SIZE), 0)
    draw = ImageDraw.Draw(image)
    draw.ellipse((6, 18, 90, 82), fill=95)  # body
    draw.ellipse((10, 22, 86, 78), outline=60, width=3)  # subcutaneous fat
    draw.ellipse((14, 26, 52, 66), fill=125)  # liver (image left = patient right)
    draw.ellipse((42, 58, 54, 70), fill=235)  # vertebral body
    draw.ellipse((58, 32, 76, 52), fill=110)  # stomach / spleen
    if lesion:
        x, y = rng.uniform(24, 38), rng.uniform(36, 52)
        draw.ellipse((x - 5, y - 5, x + 5, y + 5), fill=80)
    return _speckle(image.filter(ImageFilter.GaussianBlur(1.0)), rng, 8)


def ct_chest(rng: random.Random) -> Image.Image:
    image = Image.new("L", (SIZE, SIZE), 0)
    draw = ImageDraw.Draw(image)
    draw.ellipse((6, 20, 90, 80), fill=110)
    for cx in (28, 68):  # lungs in lung window: dark
        draw.ellipse((cx - 18, 28, cx + 18, 70), fill=25 + rng.randint(-4, 4))
    draw.ellipse((42, 36, 56, 52), fill=150)  # mediastinum
    draw.ellipse((44, 64, 54, 74), fill=230)  # spine
    return _speckle(image.filter(ImageFilter.GaussianBlur(0.8)), rng, 8)


def mri_brain(rng: random.Random) -> Image.Image:
    image = Image.new("L", (SIZE, SIZE), 5)
    draw = ImageDraw.Draw(image)
    draw.ellipse((14, 8, 82, 90), fill=70)  # skull/scalp
    draw.ellipse((18, 12, 78, 86), fill=120)  # brain
    draw.ellipse((26, 20, 70, 78), outline=95, width=4)  # grey/white contrast
    draw.ellipse((40, 38, 47, 58), fill=220)  # ventricles (bright on T2)
    draw.ellipse((49, 38, 56, 58), fill=220)
    x, y = rng.uniform(28, 36), rng.uniform(22, 30)  # right frontal lesion (image left)
    draw.ellipse((x - 5, y - 4, x + 5, y + 4), fill=200)
    return _speckle(image.filter(ImageFilter.GaussianBlur(1.0)), rng, 6)


def ultrasound(rng: random.Random) -> Image.Image:
    image = Image.new("L", (SIZE, SIZE), 0)
    draw = ImageDraw.Draw(image)
    draw.pieslice((-30, -70, 126, 96), 55, 125, fill=70)  # sector
    sector = image.copy()
    draw.ellipse((32, 40, 64, 62), fill=12)  # gallbladder (anechoic)
    x = rng.uniform(42, 54)
    draw.ellipse((x - 4, 52, x + 4, 60), fill=230)  # stone
    draw.rectangle((x - 3, 60, x + 3, 95), fill=8)  # acoustic shadow
    image = _speckle(image.filter(ImageFilter.GaussianBlur(0.6)), rng, 50)
    return Image.composite(image, Image.new("L", image.size, 0), sector.point(lambda v: 255 if v else 0))


# (relative path, seed, drawing function)
IMAGES: tuple[tuple[str, int, Callable[[random.Random], Image.Image]], ...] = (
    ("colonoscopy_pilot/real/polyp_sessile.png", 101, polyp),
    ("colonoscopy_pilot/real/cecum.png", 102, cecum),
    ("colonoscopy_pilot/real/zline.png", 103, zline),
    ("colonoscopy_pilot/controls/colitis_mayo2.png", 104, colitis),
    ("colonoscopy_pilot/controls/bleeding.png", 105, bleeding),
    ("colonoscopy_pilot/controls/snare_polyp.png", 106, snare),
    ("radiology_pilot/real/chest_consolidation.png", 201, lambda rng: chest_xray(rng, consolidation=True)),
    ("radiology_pilot/real/ct_liver_lesion.png", 202, ct_abdomen),
    ("radiology_pilot/real/mri_frontal_lesion.png", 203, mri_brain),
    ("radiology_pilot/real/us_gallstone.png", 204, ultrasound),
    ("radiology_pilot/controls/chest_normal.png", 205, chest_xray),
    ("radiology_pilot/controls/ct_chest_normal.png", 206, ct_chest),
)


def draw_all() -> dict[str, Image.Image]:
    return {path: draw(random.Random(seed)) for path, seed, draw in IMAGES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare pixels with the committed files")
    args = parser.parse_args(argv)
    differ = []
    for path, image in draw_all().items():
        target = HERE / path
        if args.check:
            if not target.is_file():
                differ.append(f"{path}: missing")
            else:
                with Image.open(target) as old:
                    if old.mode != image.mode or old.size != image.size or ImageChops.difference(
                        old, image).getbbox() is not None:
                        differ.append(f"{path}: pixels differ")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target, optimize=True)
        print(f"wrote {target.relative_to(HERE)} ({target.stat().st_size} bytes)")
    for line in differ:
        print(line, file=sys.stderr)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
