"""An `.avif` file next to every variation (off by default), through Pillow's own AVIF encoder.

Options: `quality` (1-100, default 60), `speed` (0 slowest/smallest to 10 fastest, default 8).
"""

from __future__ import annotations

from pipeline.hookspecs import hookimpl
from pipeline.types import Encoder, PluginError, encoded


@hookimpl
def register_encoders(register, options):
    quality = options.get("quality", 60)
    speed = options.get("speed", 8)
    if not isinstance(quality, int) or not 1 <= quality <= 100:
        raise PluginError(f"plugins.avif.quality must be a whole number from 1 to 100, not {quality!r}")
    if not isinstance(speed, int) or not 0 <= speed <= 10:
        raise PluginError(f"plugins.avif.speed must be a whole number from 0 to 10, not {speed!r}")
    from PIL import features

    if not features.check("avif"):
        raise PluginError("plugins.avif is enabled but this Pillow was built without AVIF support")

    def encode(image) -> bytes:
        return encoded(image, "AVIF", quality=quality, speed=speed)

    register(Encoder("avif", "avif", "image/avif", encode, alongside=True,
                     options={"quality": quality, "speed": speed}))
