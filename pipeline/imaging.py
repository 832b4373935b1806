"""The imaging core: the bytes of an upload in, encoded variations out. No AWS, no files.

One decode per source, guarded before any pixel is touched (format allow-list, byte and pixel
limits), shrunk on load to the smallest DCT scale that still serves the most detailed variation.
That decode is brought upright, to sRGB and to 8 bits once; every variation is then cut from the
smallest whole-frame intermediate that still has enough detail (large from the decode, medium
from large, ...), so the expensive full-size work happens once.
"""

from __future__ import annotations

import importlib
import io
import time
import warnings
from typing import TYPE_CHECKING, NamedTuple

from PIL import Image, ImageFile

from pipeline.types import Encoder, Geometry, Variation

if TYPE_CHECKING:
    from pipeline.registry import Registry

# The pixel limit is ours (max_pixels in the configuration), checked with a clearer message.
Image.MAX_IMAGE_PIXELS = None

# Filters chosen by measurement (benchmarks/bench.py prints PSNR against a LANCZOS reference
# from the full-size decode): the step out of a big decode touches the most pixels and dominates
# the time: HAMMING there costs about half of LANCZOS and two thirds of BICUBIC and stays above
# 40 dB, where differences stop being visible. Steps from smaller images use LANCZOS: a chain of BICUBIC
# steps loses visible sharpness (41 dB for small), LANCZOS keeps 50+ dB there at little cost.
BIG_STEP_FILTER = Image.Resampling.HAMMING
SMALL_STEP_FILTER = Image.Resampling.LANCZOS
BIG_STEP_PIXELS = 4_000_000

# Shrink-on-load: libjpeg-turbo decodes at M/8 scale (M = 1..16), taking the smallest M/8 that is
# at least 1/denominator; Pillow passes only that denominator. So 8, 4, 3 and 2 reach 1/8, 1/4,
# 3/8 and 1/2. 3/8 is what an 8000 px photo needs for a 2048 px variation: 44% fewer pixels to
# decode and resize than 1/2, at the same quality (benchmarks/bench.py).
DCT_SCALES = ((8, 1), (4, 2), (3, 3), (2, 4))  # (denominator, M), smallest scale first
# A DCT-scaled decode is sharp but blocky; the resize after it must shrink by at least this much
# to smooth the blocks away. Measured (benchmarks/shrink_on_load.py, PSNR of the 2048 px variation
# against LANCZOS from the full decode): from 1.3x on, a scaled decode is within 3.5 dB of a full
# one, and nearer the more is left to shrink; below 1.3x it loses 4-7 dB.
MIN_SHRINK_AFTER_DCT = 1.3
# Frame types whose decoding goes through the IDCT and so can be scaled; libjpeg-turbo ignores
# the scale for lossless frames and would write full-width rows into a narrower image.
DCT_FRAMES = {0xC0, 0xC1, 0xC2, 0xC9, 0xCA}
HUFFMAN_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7}  # the others are arithmetic-coded

ORIENTATION_TAG = 0x0112
# EXIF orientation -> the transpose that makes the image upright (as ImageOps.exif_transpose).
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
ACCEPTED = "JPEG, PNG, WebP, GIF, HEIC/HEIF or AVIF"
PILLOW_PLUGINS = {"JPEG": "JpegImagePlugin", "PNG": "PngImagePlugin", "GIF": "GifImagePlugin",
                  "WEBP": "WebPImagePlugin", "AVIF": "AvifImagePlugin"}
HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
AVIF_BRANDS = {b"avif", b"avis"}


class RejectedImage(Exception):
    """The upload can never be rendered (not an image, too big, corrupt): a permanent failure."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# Records are NamedTuples, here and in outputs.py: each process start creates these classes, and
# a NamedTuple class costs a tenth of a frozen dataclass to create (~0.5 ms each).
class SourceInfo(NamedTuple):
    format: str
    width: int  # upright
    height: int
    bytes: int


class EncodedFile(NamedTuple):
    encoder: Encoder
    data: bytes


class RenderedVariation(NamedTuple):
    variation: Variation
    spec_hash: str
    width: int
    height: int
    files: list[EncodedFile]
    seconds: float


class Rendering(NamedTuple):
    source: SourceInfo
    variations: list[RenderedVariation]
    placeholder: dict[str, str]


def too_big(size: int, max_bytes: int) -> str:
    return f"file is {size / 2**20:.1f} MiB, over the limit of {max_bytes / 2**20:g} MiB"


def sniff_format(head: bytes) -> str:
    """The Pillow format name of an upload, from its first bytes; only accepted formats pass."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp":
        size = int.from_bytes(head[:4], "big")
        brands = {head[8:12]} | {head[i:i + 4] for i in range(16, min(size, len(head)) - 3, 4)}
        if brands & AVIF_BRANDS:
            return "AVIF"
        if brands & HEIF_BRANDS:
            return "HEIF"
    if not head:
        raise RejectedImage("empty file (0 bytes)")
    if head.lstrip()[:1] == b"<":
        raise RejectedImage(f"not an image: it looks like HTML or XML text; accepted: {ACCEPTED}")
    raise RejectedImage(f"not an image in an accepted format ({ACCEPTED}); it starts with {head[:8]!r}")


def _ensure_decoder(image_format: str) -> None:
    """Import just the decoder a file needs: importing all of Pillow's costs time and reach."""
    if image_format == "HEIF":
        import pillow_heif

        pillow_heif.register_heif_opener()
    else:
        importlib.import_module(f"PIL.{PILLOW_PLUGINS[image_format]}")


def open_source(data: bytes, *, max_pixels: int, max_bytes: int) -> tuple[Image.Image, int]:
    """Open an upload without decoding its pixels; refuse what must never be decoded.

    Returns the lazily loaded image and its EXIF orientation.
    """
    if len(data) > max_bytes:
        raise RejectedImage(too_big(len(data), max_bytes))
    image_format = sniff_format(data[:64])
    _ensure_decoder(image_format)
    with warnings.catch_warnings():  # Pillow warns of broken EXIF on stderr, naming no file
        warnings.simplefilter("ignore")
        try:
            # The explicit format list is the allow-list: no other decoder (EPS, PDF, ...) is reached.
            image = Image.open(io.BytesIO(data), formats=[image_format])
        except Exception as error:  # Pillow raises many types for a broken header
            raise RejectedImage(f"corrupt {image_format} file: {error}") from None
        width, height = image.size
        if width * height > max_pixels:
            raise RejectedImage(
                f"{width}x{height} is {width * height / 1e6:.0f} megapixels, over the limit of "
                f"{max_pixels / 1e6:g} megapixels (possible decompression bomb); not decoded"
            )
        missing = _missing_jpeg_data(data, image.size) if image_format == "JPEG" else None
        if missing:
            raise RejectedImage(f"truncated JPEG data ({missing}); the upload may be incomplete")
        orientation = 1
        if image_format != "HEIF":  # libheif has already applied the HEIF transforms
            try:
                orientation = image.getexif().get(ORIENTATION_TAG, 1)
            except Exception:
                orientation = 1  # unreadable EXIF is no reason to refuse a photo
    return image, orientation if orientation in UPRIGHT else 1


def render(data: bytes, registry: "Registry") -> Rendering:
    """Every variation of one upload, encoded. Raises RejectedImage for an unusable upload."""
    config = registry.config
    image, orientation = open_source(data, max_pixels=config.max_pixels, max_bytes=config.max_bytes)
    image.decodermaxblock = max(image.decodermaxblock, len(data))  # one read, not 64 KiB ones: 3% faster
    image_format = image.format
    turned = orientation >= 5
    upright = (image.height, image.width) if turned else image.size

    plans = [
        (variation, registry.transforms[variation.transform].plan(upright, (variation.width, variation.height)))
        for variation in registry.variations.values()
    ]
    base = _decode_base(image, data, upright, orientation, max((g.scale for _, g in plans), default=1.0))
    source = SourceInfo(image_format, upright[0], upright[1], len(data))

    # Whole-frame images to derive from, most detailed first; each stays unchanged once made.
    intermediates: list[Image.Image] = [base]
    rendered: dict[str, RenderedVariation] = {}
    for variation, geometry in sorted(plans, key=lambda plan: -plan[1].scale):
        started = time.perf_counter()
        pixels = _cut(intermediates, upright, geometry)
        if geometry.shows_whole(upright) and pixels is not intermediates[-1]:
            intermediates.append(pixels)
        for postprocessor in registry.postprocessors_for(variation):
            pixels = postprocessor.apply(pixels.copy())  # intermediates must stay unmarked
        files = [EncodedFile(encoder, encoder.encode(pixels)) for encoder in registry.renditions(variation)]
        rendered[variation.name] = RenderedVariation(
            variation, registry.spec_hash(variation), pixels.width, pixels.height, files,
            time.perf_counter() - started,
        )

    from pipeline.placeholder import placeholder

    ordered = [rendered[name] for name in registry.variations]
    return Rendering(source, ordered, placeholder(intermediates[-1]))


def _decode_base(image: Image.Image, data: bytes, upright: tuple[int, int], orientation: int,
                 scale: float) -> Image.Image:
    """Decode once at the detail the variations need; return it upright, sRGB, 8 bit, no metadata."""
    scale = min(scale, 1.0)
    wanted = (max(1, round(upright[0] * scale)), max(1, round(upright[1] * scale)))
    if orientation >= 5:
        wanted = wanted[::-1]  # the decoder works in stored orientation
    whole = shrink_on_load(image, data, wanted) if image.format == "JPEG" else (0, 0, *image.size)
    try:
        image.load()
    except Exception as error:
        raise RejectedImage(f"truncated or corrupt {image.format} data ({error}); the upload may be incomplete") from None
    icc_profile = image.info.get("icc_profile")
    pixels = _eight_bit(image)
    if pixels.size != wanted:
        pixels = pixels.resize(wanted, _filter_for(pixels), box=whole, reducing_gap=3.0)
    if orientation in UPRIGHT:
        pixels = pixels.transpose(UPRIGHT[orientation])
    pixels = _to_srgb(pixels, icc_profile)
    if pixels is image:
        pixels = image.copy()
    pixels.info = {}  # no EXIF, GPS, XMP or profile may reach an output
    return pixels


def shrink_on_load(image: Image.Image, data: bytes, wanted: tuple[int, int]) -> tuple[float, float, float, float]:
    """Make a JPEG decode at the smallest DCT scale that still leaves a real resize to `wanted`.

    Pillow's draft() knows only 1/2, 1/4 and 1/8; this sets up the same decode (one tile, a
    scale denominator) with 3/8 too. The image size must be exactly what libjpeg-turbo will
    write, so it is computed with the library's own rounding, ceil(size * M / 8).

    Returns the box of the decoded pixels that is the whole photo: a width that is not a multiple
    of 8/M leaves a last column that is only part of a pixel, and resizing it as a whole one
    would shift the picture by up to half a pixel (2-8 dB on sharp edges).
    """
    width, height = image.size
    layout = _jpeg_layout(data)
    if len(image.tile) != 1 or image.decoderconfig or layout is None or layout.frame_type not in DCT_FRAMES:
        return (0, 0, width, height)
    for denominator, eighths in DCT_SCALES:
        if denominator == 3 and not getattr(Image.core, "libjpeg_turbo_version", None):
            continue  # plain libjpeg rounds 1/3 to 1/2: only the powers of two are safe there
        whole = (0, 0, width * eighths / 8, height * eighths / 8)
        if whole[2] >= wanted[0] * MIN_SHRINK_AFTER_DCT and whole[3] >= wanted[1] * MIN_SHRINK_AFTER_DCT:
            decode_at_scale(image, denominator, eighths)
            return whole
    return (0, 0, width, height)


def decode_at_scale(image: Image.Image, denominator: int, eighths: int) -> None:
    """Set up a not yet loaded JPEG (one tile) to decode at eighths/8 of its size."""
    size = (-(-image.width * eighths // 8), -(-image.height * eighths // 8))
    decoder, _, offset, args = image.tile[0]
    image.tile = [ImageFile._Tile(decoder, (0, 0, *size), offset, args)]
    image._size = size
    image.decoderconfig = (denominator, 0)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class JpegLayout(NamedTuple):
    frame_type: int  # the start-of-frame marker: 0xC0 baseline, 0xC2 progressive, 0xC3 lossless, ...
    blocks: int  # 8x8 blocks of all components together: the image data codes every one
    data_start: int  # where the first scan's entropy-coded data begins


def _jpeg_layout(data: bytes) -> JpegLayout | None:
    """The JPEG's frame and first scan, read from its markers; None if no scan follows a frame."""
    position, frame = 2, None
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        end = position + 2 + int.from_bytes(data[position + 2:position + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # DHT, JPG, DAC are not frames
            frame = (marker, data[position + 4:end])
        elif marker == 0xDA:  # start of scan
            if frame is None or not position + 5 <= end <= len(data) or len(frame[1]) < 6:
                return None
            frame_type, header = frame
            height, width = int.from_bytes(header[1:3], "big"), int.from_bytes(header[3:5], "big")
            sampling = [(max(1, b >> 4), max(1, b & 15)) for b in header[7:6 + 3 * header[5]:3]]
            if not sampling:
                return None
            h_max, v_max = max(h for h, _ in sampling), max(v for _, v in sampling)
            blocks = sum(_ceil_div(_ceil_div(width * h, h_max), 8) * _ceil_div(_ceil_div(height * v, v_max), 8)
                         for h, v in sampling)
            return JpegLayout(frame_type, blocks, end)
        position = end
    return None


def _missing_jpeg_data(data: bytes, size: tuple[int, int]) -> str | None:
    """Why a JPEG's image data cannot be whole, or None.

    A JPEG cut short decodes as grey where its data is missing: libjpeg pads a scan that ends
    early and only warns, and Pillow drops the warning. Two signs give it away before decoding:
    no end-of-image marker, or fewer bytes than the blocks need, since Huffman coding spends at
    least one bit on each block's DC coefficient (a real photo spends hundreds).
    """
    layout = _jpeg_layout(data)
    if layout is None:
        return None  # Pillow's decoder says what is wrong, if anything
    end = data.find(b"\xff\xd9", layout.data_start)
    if end < 0:
        return "the image data has no end-of-image marker"
    needed, present = layout.blocks // 8, end - layout.data_start
    if layout.frame_type in HUFFMAN_FRAMES and present < needed:
        return (f"{size[0]}x{size[1]} pixels need at least {needed:,} bytes of image data, "
                f"the file has {present:,}")
    return None


def _eight_bit(image: Image.Image) -> Image.Image:
    """Bring any decoded mode to one the core works in: L, LA, RGB, RGBA or CMYK."""
    mode = image.mode
    if mode in ("L", "LA", "RGB", "RGBA", "CMYK"):
        return image
    if mode in ("P", "PA"):
        return image.convert("RGBA" if image.has_transparency_data else "RGB")
    if mode == "1":
        return image.convert("L")
    if mode.startswith("I"):  # 16-bit greyscale: scale, since convert("L") would clip at 255
        return image.convert("I").point(lambda value: value / 256).convert("L")
    if mode in ("RGBa", "La"):
        return image.convert(mode.upper()[:-1] + "A")
    return image.convert("RGB")


_srgb_profile = None


def _to_srgb(image: Image.Image, icc_profile: bytes | None) -> Image.Image:
    """Convert an embedded colour profile (Adobe RGB, Display P3, CMYK) to sRGB."""
    global _srgb_profile
    if not icc_profile or image.mode not in ("RGB", "RGBA", "CMYK"):
        return image.convert("RGB") if image.mode == "CMYK" else image
    from PIL import ImageCms

    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
    except (OSError, ImageCms.PyCMSError):
        return image.convert("RGB") if image.mode == "CMYK" else image  # unreadable: assume sRGB
    if image.mode != "CMYK" and "srgb" in (profile.profile.profile_description or "").lower():
        return image
    if _srgb_profile is None:
        _srgb_profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    alpha = image.getchannel("A") if image.mode == "RGBA" else None
    colour = image.convert("RGB") if alpha is not None else image
    try:
        converted = ImageCms.profileToProfile(
            colour, profile, _srgb_profile, renderingIntent=ImageCms.Intent.PERCEPTUAL, outputMode="RGB"
        )
    except ImageCms.PyCMSError:
        return image.convert("RGB") if image.mode == "CMYK" else image
    if alpha is not None:
        converted.putalpha(alpha)
    return converted


def _cut(intermediates: list[Image.Image], upright: tuple[int, int], geometry: Geometry) -> Image.Image:
    """Render a geometry from the smallest intermediate that still has the detail it needs."""
    def scale_of(pixels: Image.Image) -> float:
        return min(pixels.width / upright[0], pixels.height / upright[1])

    enough = [p for p in intermediates if scale_of(p) >= geometry.scale * 0.995]
    source = min(enough, key=scale_of) if enough else intermediates[0]
    sx, sy = source.width / upright[0], source.height / upright[1]
    left, top, right, bottom = geometry.region
    box = (left * sx, top * sy, right * sx, bottom * sy)
    if geometry.size == source.size and box == (0, 0, source.width, source.height):
        return source
    return source.resize(geometry.size, _filter_for(source), box=box)


def _filter_for(source: Image.Image) -> Image.Resampling:
    return BIG_STEP_FILTER if source.width * source.height > BIG_STEP_PIXELS else SMALL_STEP_FILTER
