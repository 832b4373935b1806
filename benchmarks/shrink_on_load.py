"""How far a DCT-scaled JPEG decode may go: quality of the 2048 px variation by decode scale.

    .venv/bin/python benchmarks/shrink_on_load.py [WIDTHxHEIGHT ...]

For photos of common camera sizes, decodes at full size and at every DCT scale that gives at
least MIN_DECODE_FRACTION of 2048 px, takes the first resize step to 2048 px (the filter the
pipeline picks for it) and prints its PSNR against LANCZOS from the full-size decode, before and
after the JPEG encode every variation gets (quality 82), with the resize factor left after the
DCT scale (below 1: the step enlarges). This is the measurement behind MIN_DECODE_FRACTION in
pipeline/imaging.py: what counts is the file a viewer gets, after the encode.
"""

from __future__ import annotations

import io
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image, ImageChops, ImageStat  # noqa: E402

from pipeline import samples  # noqa: E402
from pipeline.imaging import DCT_SCALES, MIN_DECODE_FRACTION, _filter_for, decode_at_scale  # noqa: E402

CAMERA_SIZES = ["4624x3468", "4800x3200", "5184x3456", "5472x3648", "6000x4000", "6240x4160",
                "6720x4480", "7200x4800", "8000x5000", "8064x6048", "9248x6936"]
TARGET = 2048


def psnr(a: Image.Image, b: Image.Image) -> float:
    mse = sum(v * v for v in ImageStat.Stat(ImageChops.difference(a, b)).rms) / 3
    return 10 * math.log10(255 * 255 / mse) if mse else 99.0


def decode(data: bytes, denominator: int, eighths: int) -> Image.Image:
    """The decode shrink_on_load sets up, forced to one scale."""
    image = Image.open(io.BytesIO(data))
    if denominator > 1:
        decode_at_scale(image, denominator, eighths)
    image.load()
    return image


def encoded(image: Image.Image) -> Image.Image:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=82, progressive=True)
    return Image.open(out)


def main() -> None:
    sizes = [tuple(int(n) for n in arg.split("x")) for arg in (sys.argv[1:] or CAMERA_SIZES)]
    print(f"first step to {TARGET} px: decode scale (factor left), PSNR in dB against LANCZOS from the "
          f"full-size decode before / after the JPEG encode")
    for width, height in sizes:
        data = samples.jpeg_bytes(samples.photo(width, height, seed=width))
        target = (TARGET, round(TARGET * height / width))
        reference = decode(data, 1, 8).resize(target, Image.Resampling.LANCZOS)
        cells = []
        for denominator, eighths in [(1, 8)] + sorted(DCT_SCALES, key=lambda s: -s[1]):
            whole = (0, 0, width * eighths / 8, height * eighths / 8)
            if whole[2] < TARGET * MIN_DECODE_FRACTION:
                continue
            decoded = decode(data, denominator, eighths)
            first_step = decoded.resize(target, _filter_for(decoded), box=whole)
            cells.append(f"{eighths}/8 ({whole[2] / TARGET:.2f}x) {psnr(first_step, reference):4.1f} / "
                         f"{psnr(encoded(first_step).convert('RGB'), reference):4.1f}")
        print(f"  {width}x{height}: " + "   ".join(cells), flush=True)


if __name__ == "__main__":
    main()
