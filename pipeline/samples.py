"""Photo-like sample images for the demo, the benchmark and the tests.

Generated with Pillow only, so nothing large is committed. The "photo" has what makes a real
phone photo expensive to decode and encode: smooth gradients, hard edges, text and sensor grain.
"""

from __future__ import annotations

import io
import random

from PIL import Image, ImageDraw, ImageFont


def photo(width: int, height: int, *, seed: int = 1, grain: float = 24.0) -> Image.Image:
    """An RGB image that compresses like a photo (grain, edges, text), not like a flat test card."""
    rng = random.Random(seed)
    # Smooth sky-to-ground colour field: three gradients, one per channel, at different angles.
    small = (max(2, width // 16), max(2, height // 16))
    channels = [
        Image.linear_gradient("L").rotate(angle, expand=False).resize(small)
        for angle in (0, 60, 200)
    ]
    image = Image.merge("RGB", channels).resize((width, height), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    scale = max(width, height) / 1000
    for _ in range(60):
        x, y = rng.randrange(width), rng.randrange(height)
        r = int(rng.uniform(10, 120) * scale)
        colour = tuple(rng.randrange(256) for _ in range(3))
        if rng.random() < 0.5:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        else:
            draw.rectangle((x - r, y - r // 2, x + r, y + r // 2), fill=colour, outline=(0, 0, 0),
                           width=max(1, int(2 * scale)))
    for _ in range(40):
        points = [(rng.randrange(width), rng.randrange(height)) for _ in range(2)]
        draw.line(points, fill=(255, 255, 255), width=max(1, int(scale)))
    font = ImageFont.load_default(size=max(10, int(28 * scale)))
    line_height = int(36 * scale)
    for i in range(max(1, height // line_height // 3)):
        draw.text((int(40 * scale), i * 3 * line_height), f"Sample photo {width}x{height} line {i}",
                  fill=(20, 20, 20), font=font)
    return _with_grain(image, grain)


def _with_grain(image: Image.Image, grain: float) -> Image.Image:
    """Luminance grain, as a phone's sensor leaves it after the ISP has removed colour noise."""
    if not grain:
        return image
    return Image.blend(image, Image.effect_noise(image.size, grain).convert("RGB"), 0.12)


def enlarged_photo(width: int, height: int, *, grain: float = 0.0) -> Image.Image:
    """A photo-like image quick to make at a big size (200 MP in seconds): drawn at a quarter of
    it and enlarged, grain added at full size. Meant for sizes of a few thousand pixels and up."""
    enlarged = photo(width // 4, height // 4, grain=0).resize((width, height), Image.Resampling.BILINEAR)
    return _with_grain(enlarged, grain)


def jpeg_bytes(image: Image.Image, *, quality: int = 92, exif: Image.Exif | None = None,
               icc_profile: bytes | None = None, restart_marker_rows: int = 0) -> bytes:
    """A JPEG as a camera writes it; some Android phones' cameras put in restart markers too."""
    out = io.BytesIO()
    kwargs: dict = {"quality": quality, "restart_marker_rows": restart_marker_rows}
    if exif is not None:
        kwargs["exif"] = exif
    if icc_profile:
        kwargs["icc_profile"] = icc_profile
    image.save(out, "JPEG", **kwargs)
    return out.getvalue()


def gps_exif(orientation: int = 1) -> Image.Exif:
    """EXIF like a phone writes it: orientation, camera serial and a GPS position."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "PhoneMaker"
    exif[0xA431] = "SERIAL-1234567890"  # BodySerialNumber
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (52.0, 22.0, 7.5)
    gps[3] = "E"
    gps[4] = (4.0, 53.0, 30.0)
    return exif


def transparent_png(width: int = 1200, height: int = 900) -> bytes:
    """A logo-like PNG: a coloured disc on a fully transparent background."""
    image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.ellipse((width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=(30, 120, 220, 255))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def write_demo_photos(folder: str) -> list[str]:
    """The demo's uploads: a big landscape JPEG, an EXIF-rotated portrait, a transparent PNG."""
    import os

    os.makedirs(folder, exist_ok=True)
    files = {
        "landscape.jpg": jpeg_bytes(photo(6000, 4000), exif=gps_exif()),
        # A portrait stored sideways, as phones do: orientation 6 means "turn 90 degrees clockwise
        # to view", so the sensor's pixels are the upright picture turned counter-clockwise.
        "portrait.jpg": jpeg_bytes(photo(3024, 4032, seed=2).transpose(Image.Transpose.ROTATE_90),
                                   exif=gps_exif(orientation=6)),
        "logo.png": transparent_png(),
    }
    paths = []
    for name, data in files.items():
        path = os.path.join(folder, name)
        with open(path, "wb") as file:
            file.write(data)
        paths.append(path)
    return paths


if __name__ == "__main__":
    import sys

    for written in write_demo_photos(sys.argv[1] if len(sys.argv) > 1 else "samples"):
        print(f"sample photo: {written}")
