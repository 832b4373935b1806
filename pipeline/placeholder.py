"""What an app paints before the variations load: a BlurHash string and the dominant colour.

BlurHash (https://blurha.sh) is small enough to implement here, which keeps a dependency out
of the Lambda layer; tests check it against the reference Python decoder.
"""

from __future__ import annotations

import math

BASE83 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~"
SAMPLE_EDGE = 32  # pixels on the long edge the hash is computed from: plenty for 4x3 components


def placeholder(image, components: tuple[int, int] = (4, 3)) -> dict[str, str]:
    """BlurHash and dominant colour of an sRGB image (any size; it is shrunk first)."""
    from PIL import Image

    from pipeline.types import flatten_alpha

    scale = SAMPLE_EDGE / max(image.size)
    small = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                         Image.Resampling.BOX)
    small = flatten_alpha(small).convert("RGB")
    return {"blurhash": blurhash(small, *components), "dominant_color": dominant_color(small)}


def dominant_color(image) -> str:
    quantized = image.quantize(colors=6)
    palette = quantized.getpalette()
    _, index = max(quantized.getcolors())
    red, green, blue = palette[3 * index: 3 * index + 3]
    return f"#{red:02x}{green:02x}{blue:02x}"


def blurhash(image, components_x: int, components_y: int) -> str:
    width, height = image.size
    to_linear = [_srgb_to_linear(v) for v in range(256)]
    rows = [[to_linear[v] for v in image.getchannel(c).tobytes()] for c in "RGB"]
    cos_x = [[math.cos(math.pi * i * x / width) for x in range(width)] for i in range(components_x)]
    cos_y = [[math.cos(math.pi * j * y / height) for y in range(height)] for j in range(components_y)]
    # Each row's sum against cos_x[i] serves every j: computed once, the hash costs a third.
    row_sums = [[[sum(c * v for c, v in zip(cos_x[i], channel[y * width:(y + 1) * width])) for y in range(height)]
                 for channel in rows] for i in range(components_x)]
    factors = []
    for j in range(components_y):
        for i in range(components_x):
            norm = (1 if i == 0 and j == 0 else 2) / (width * height)
            factors.append([sum(cy * s for cy, s in zip(cos_y[j], sums)) * norm for sums in row_sums[i]])
    dc, ac = factors[0], factors[1:]
    text = _base83((components_x - 1) + (components_y - 1) * 9, 1)
    if ac:
        largest = max(abs(v) for f in ac for v in f)
        quantised_max = max(0, min(82, math.floor(largest * 166 - 0.5)))
        maximum = (quantised_max + 1) / 166
    else:
        quantised_max, maximum = 0, 1.0
    text += _base83(quantised_max, 1)
    text += _base83((_linear_to_srgb(dc[0]) << 16) + (_linear_to_srgb(dc[1]) << 8) + _linear_to_srgb(dc[2]), 4)
    for factor in ac:
        r, g, b = (max(0, min(18, math.floor(_sign_pow(v / maximum, 0.5) * 9 + 9.5))) for v in factor)
        text += _base83(r * 19 * 19 + g * 19 + b, 2)
    return text


def _srgb_to_linear(value: int) -> float:
    v = value / 255
    return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4


def _linear_to_srgb(value: float) -> int:
    v = max(0.0, min(1.0, value))
    if v <= 0.0031308:
        return int(v * 12.92 * 255 + 0.5)
    return int((1.055 * v ** (1 / 2.4) - 0.055) * 255 + 0.5)


def _sign_pow(value: float, exponent: float) -> float:
    return math.copysign(abs(value) ** exponent, value)


def _base83(value: int, length: int) -> str:
    return "".join(BASE83[(value // 83 ** (length - 1 - i)) % 83] for i in range(length))
