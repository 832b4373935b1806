"""The main output format: progressive JPEG, sRGB, no metadata, transparency flattened on white.

Options: `quality` (1-95, default 82). A variation may ask for its own quality (the `quality`
option of the sizes and square_crops plugins): its main file is encoded at that quality.
"""

from __future__ import annotations

import io

from pipeline.hookspecs import hookimpl
from pipeline.types import Encoder, PluginError, flatten_alpha


def make_encoder(quality: int) -> Encoder:
    _check_quality(quality, "plugins.jpeg.quality")

    def encode(image) -> bytes:
        out = io.BytesIO()
        flatten_alpha(image).save(out, "JPEG", quality=quality, progressive=True, optimize=True)
        return out.getvalue()

    return Encoder("jpeg", "jpg", "image/jpeg", encode, options={"quality": quality}, with_quality=make_encoder)


def _check_quality(quality, where: str) -> None:
    if not isinstance(quality, int) or isinstance(quality, bool) or not 1 <= quality <= 95:
        raise PluginError(f"{where} must be a whole number from 1 to 95, not {quality!r}")


@hookimpl
def register_encoders(register, options):
    register(make_encoder(options.get("quality", 82)))
