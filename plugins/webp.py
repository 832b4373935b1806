"""A `.webp` file next to every variation (off by default). Keeps transparency.

Options: `quality` (1-100, default 80).
"""

from __future__ import annotations

from pipeline.hookspecs import hookimpl
from pipeline.types import Encoder, PluginError, encoded


@hookimpl
def register_encoders(register, options):
    quality = options.get("quality", 80)
    if not isinstance(quality, int) or not 1 <= quality <= 100:
        raise PluginError(f"plugins.webp.quality must be a whole number from 1 to 100, not {quality!r}")

    def encode(image) -> bytes:
        return encoded(image, "WEBP", quality=quality, method=4)

    register(Encoder("webp", "webp", "image/webp", encode, alongside=True, options={"quality": quality}))
