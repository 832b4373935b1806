"""The naive Pillow way: decode full size, then make each variation from the full image."""

import sys

from PIL import Image, ImageOps

FITS = {"large": 2048, "medium": 1280, "small": 640, "xsmall": 320}
SQUARES = {"square_medium": 600, "square_small": 150}

source, out = sys.argv[1], sys.argv[2]
image = ImageOps.exif_transpose(Image.open(source)).convert("RGB")
for name, edge in FITS.items():
    ImageOps.contain(image, (edge, edge), Image.Resampling.LANCZOS).save(
        f"{out}/{name}.jpg", quality=82, progressive=True)
for name, edge in SQUARES.items():
    ImageOps.fit(image, (edge, edge), Image.Resampling.LANCZOS).save(
        f"{out}/{name}.jpg", quality=82, progressive=True)
