"""The main output format: JPEG, sRGB, no metadata, transparency flattened on white; progressive
from about 316x316 pixels up, baseline with optimized Huffman tables below.

Options: `quality` (1-95, default 82). A variation may ask for its own quality (the `quality`
option of the sizes and square_crops plugins): its main file is encoded at that quality.
"""

from __future__ import annotations

from pipeline.hookspecs import hookimpl
from pipeline.types import Encoder, PluginError, encoded, flatten_alpha

# Measured on a 12 MP photo's variations (benchmarks/warm.py prints the encode table): at 150x150
# baseline is 1% smaller than progressive, at 320x240 1% larger, and 2.3 times faster at both.
PROGRESSIVE_MIN_PIXELS = 100_000


def make_encoder(quality: int) -> Encoder:
    _check_quality(quality, "plugins.jpeg.quality")

    def encode(image) -> bytes:
        flat = flatten_alpha(image)
        # Progressive only where it helps: it shows a large image early, and costs twice the time
        # of baseline; below PROGRESSIVE_MIN_PIXELS baseline is as small or smaller and arrives
        # whole in a packet or two. Progressive always optimizes its Huffman tables; baseline is asked to.
        progressive = flat.width * flat.height >= PROGRESSIVE_MIN_PIXELS
        return encoded(flat, "JPEG", quality=quality, progressive=progressive, optimize=not progressive)

    return Encoder("jpeg", "jpg", "image/jpeg", encode, options={"quality": quality}, with_quality=make_encoder)


def _check_quality(quality, where: str) -> None:
    if not isinstance(quality, int) or isinstance(quality, bool) or not 1 <= quality <= 95:
        raise PluginError(f"{where} must be a whole number from 1 to 95, not {quality!r}")


@hookimpl
def register_encoders(register, options):
    register(make_encoder(options.get("quality", 82)))
