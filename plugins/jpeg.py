"""The main output format: progressive JPEG, sRGB, no metadata, transparency flattened on white.

Options: `quality` (1-95, default 82).
"""

from __future__ import annotations

import io

from pipeline.hookspecs import hookimpl
from pipeline.types import Encoder, PluginError, flatten_alpha


def make_encoder(quality: int) -> Encoder:
    def encode(image) -> bytes:
        out = io.BytesIO()
        flatten_alpha(image).save(out, "JPEG", quality=quality, progressive=True, optimize=True)
        return out.getvalue()

    return Encoder("jpeg", "jpg", "image/jpeg", encode, options={"quality": quality})


@hookimpl
def register_encoders(register, options):
    quality = options.get("quality", 82)
    if not isinstance(quality, int) or not 1 <= quality <= 95:
        raise PluginError(f"plugins.jpeg.quality must be a whole number from 1 to 95, not {quality!r}")
    register(make_encoder(quality))
