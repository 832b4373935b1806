"""The built-in geometry rules: `fit` (inside a box) and `cover` (centred crop that fills a box).

Neither ever upscales: a source smaller than the box gives a smaller output, never a blurry one.
"""

from __future__ import annotations

from pipeline.hookspecs import hookimpl
from pipeline.types import Geometry, Transform


def fit(source_size: tuple[int, int], box: tuple[int, int]) -> Geometry:
    """The whole frame, as large as fits inside `box`, aspect ratio kept."""
    width, height = source_size
    scale = min(box[0] / width, box[1] / height, 1.0)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return Geometry(size=size, region=(0, 0, width, height))


def cover(source_size: tuple[int, int], box: tuple[int, int]) -> Geometry:
    """The centred part of the frame with the box's aspect ratio, scaled to the box."""
    width, height = source_size
    aspect = box[0] / box[1]
    if width / height > aspect:
        crop_width, crop_height = height * aspect, float(height)
    else:
        crop_width, crop_height = float(width), width / aspect
    left, top = (width - crop_width) / 2, (height - crop_height) / 2
    scale = min(box[0] / crop_width, 1.0)
    size = (max(1, round(crop_width * scale)), max(1, round(crop_height * scale)))
    if box[0] == box[1]:
        size = (min(size), min(size))  # rounding must never make a square out of true
    return Geometry(size=size, region=(left, top, left + crop_width, top + crop_height))


@hookimpl
def register_transforms(register):
    register(Transform("fit", fit))
    register(Transform("cover", cover))
