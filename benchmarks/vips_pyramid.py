"""libvips at its best: one shrink-on-load decode, each smaller variation from the next larger.

    python benchmarks/vips_pyramid.py SOURCE OUT        (bench.py: one process per photo)

warm.py imports `from_buffer` and `pyramid` to render from memory, again and again.

thumbnail() would not shrink an 8000 px JPEG on load for a 2048 px output (it keeps a factor of
two for its own resize and decodes all 40 MP), so the shrink is asked for here: the largest of
libvips' 1/2, 1/4, 1/8 that leaves a 1.3x shrink (`MIN_SHRINK`), the margin a resize needs to
smooth a DCT-scaled decode before any encode. Our pipeline decodes smaller (MIN_DECODE_FRACTION in
pipeline/imaging.py, judged after the encode); `shrink_for(header, MIN_DECODE_FRACTION)` gives
libvips the same, and warm.py prints it as a row of its own.
"""

from __future__ import annotations

import sys
from typing import Iterator

import pyvips

LARGE = 2048
MIN_SHRINK = 1.3
SAVE = {"Q": 82, "interlace": True, "strip": True}


def shrink_for(header: pyvips.Image, margin: float = MIN_SHRINK) -> int:
    edge = max(header.width, header.height)
    return next((s for s in (8, 4, 2) if edge / s >= LARGE * margin), 1)


def load_options(header: pyvips.Image, margin: float = MIN_SHRINK) -> dict:
    upright = not header.get_typeof("orientation") or header.get("orientation") == 1
    # Streaming (sequential) is libvips' fast path; turning by 90 degrees needs random access.
    options = {"access": "sequential" if upright else "random"}
    if header.get("vips-loader").startswith("jpegload"):  # only JPEG has a shrink-on-load
        options["shrink"] = shrink_for(header, margin)
    return options


def from_file(source: str) -> pyvips.Image:
    return pyvips.Image.new_from_file(source, **load_options(pyvips.Image.new_from_file(source))).autorot()


def from_buffer(data: bytes, margin: float = MIN_SHRINK) -> pyvips.Image:
    header = pyvips.Image.new_from_buffer(data, "")
    return pyvips.Image.new_from_buffer(data, "", **load_options(header, margin)).autorot()


def pyramid(decoded: pyvips.Image) -> Iterator[tuple[str, pyvips.Image]]:
    """The six variations in the order they are made; save each before asking for the next."""
    large = decoded.resize(LARGE / max(decoded.width, decoded.height)).copy_memory()  # decode once
    yield "large", large
    medium = large.thumbnail_image(1280, height=1280).copy_memory()
    yield "medium", medium
    small = medium.thumbnail_image(640, height=640).copy_memory()
    yield "small", small
    yield "xsmall", small.thumbnail_image(320, height=320)
    yield "square_medium", medium.thumbnail_image(600, height=600, crop="centre")
    yield "square_small", small.thumbnail_image(150, height=150, crop="centre")


if __name__ == "__main__":
    source, out = sys.argv[1], sys.argv[2]
    for name, image in pyramid(from_file(source)):
        image.jpegsave(f"{out}/{name}.jpg", **SAVE)
