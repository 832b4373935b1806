"""A text or logo watermark on the variations the configuration names (off by default).

Options:
  text        the text to draw (or `logo`)
  logo        path to a logo image (PNG with transparency works best)
  position    top-left, top-right, bottom-left, bottom-right (default) or center
  opacity     0.0 to 1.0 (default 0.5)
  scale       watermark height as a fraction of the variation's shorter edge (default 0.05)
  variations  the variations to mark (default ["large", "medium"])
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pipeline.hookspecs import hookimpl
from pipeline.types import PluginError, PostProcessor

POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right", "center")


def _validated(options: dict) -> dict:
    text, logo = options.get("text"), options.get("logo")
    if bool(text) == bool(logo):
        raise PluginError("plugins.watermark needs exactly one of 'text' or 'logo'")
    position = options.get("position", "bottom-right")
    if position not in POSITIONS:
        raise PluginError(f"plugins.watermark.position must be one of {', '.join(POSITIONS)}, not {position!r}")
    opacity = options.get("opacity", 0.5)
    if not isinstance(opacity, (int, float)) or not 0 < opacity <= 1:
        raise PluginError(f"plugins.watermark.opacity must be a number above 0 and at most 1, not {opacity!r}")
    scale = options.get("scale", 0.05)
    if not isinstance(scale, (int, float)) or not 0 < scale <= 0.5:
        raise PluginError(f"plugins.watermark.scale must be a number above 0 and at most 0.5, not {scale!r}")
    variations = options.get("variations", ["large", "medium"])
    if not isinstance(variations, list) or not all(isinstance(v, str) for v in variations):
        raise PluginError("plugins.watermark.variations must be a list of variation names")
    unknown = set(options) - {"text", "logo", "position", "opacity", "scale", "variations"}
    if unknown:
        raise PluginError(f"plugins.watermark: unknown option(s) {', '.join(sorted(unknown))}")
    return {"text": text, "logo": logo, "position": position, "opacity": float(opacity),
            "scale": float(scale), "variations": variations}


def _load_logo(path: str):
    from PIL import Image

    try:
        with Image.open(path) as logo:
            return logo.convert("RGBA")
    except (OSError, ValueError) as error:
        raise PluginError(f"plugins.watermark.logo {path}: cannot be read as an image ({error})") from None


def _mark(size: tuple[int, int], settings: dict, logo):
    """The watermark as an RGBA image sized for a variation of `size`."""
    from PIL import Image, ImageDraw, ImageFont

    height = max(8, round(min(size) * settings["scale"]))
    if logo is not None:
        width = max(1, round(logo.width * height / logo.height))
        mark = logo.resize((min(width, size[0]), height), Image.Resampling.LANCZOS)
    else:
        font = ImageFont.load_default(size=height)
        stroke = max(1, height // 12)
        left, top, right, bottom = font.getbbox(settings["text"], stroke_width=stroke)
        mark = Image.new("RGBA", (right - left, bottom - top))
        ImageDraw.Draw(mark).text((-left, -top), settings["text"], font=font, fill=(255, 255, 255, 255),
                                  stroke_width=stroke, stroke_fill=(0, 0, 0, 255))
    alpha = mark.getchannel("A").point(lambda value: round(value * settings["opacity"]))
    mark.putalpha(alpha)
    return mark


def _place(size: tuple[int, int], mark_size: tuple[int, int], position: str) -> tuple[int, int]:
    margin = round(min(size) * 0.02)
    horizontal = {"left": margin, "right": size[0] - mark_size[0] - margin}
    vertical = {"top": margin, "bottom": size[1] - mark_size[1] - margin}
    if position == "center":
        return (size[0] - mark_size[0]) // 2, (size[1] - mark_size[1]) // 2
    row, column = position.split("-")
    return max(0, horizontal[column]), max(0, vertical[row])


@hookimpl
def register_postprocessors(register, options):
    settings = _validated(options)
    logo = _load_logo(settings["logo"]) if settings["logo"] else None

    def apply(image):
        mark = _mark(image.size, settings, logo)
        where = _place(image.size, mark.size, settings["position"])
        if image.mode in ("RGBA", "LA"):
            working = image.convert("RGBA")
            working.alpha_composite(mark, dest=where)  # keeps the photo's own transparency
        else:
            working = image.convert("RGB")
            working.paste(mark, where, mark)
        return working

    spec = {key: value for key, value in settings.items() if key != "logo"}
    if logo is not None:
        spec["logo_sha256"] = hashlib.sha256(Path(settings["logo"]).read_bytes()).hexdigest()
    register(PostProcessor("watermark", apply, lambda variation: variation.name in settings["variations"], spec))
