"""Images the tests make: oriented markers, colour-managed files, bombs and broken files."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

# The transpose that turns an upright image into what a camera stores with each orientation
# (the inverse of the transpose that makes it upright again).
STORED_AS = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def upright_marker(width: int = 600, height: int = 400) -> Image.Image:
    """Grey image with a red top-left quadrant and a blue bottom-right one: shows any turn or flip."""
    image = Image.new("RGB", (width, height), (128, 128, 128))
    image.paste((220, 20, 20), (0, 0, width // 2, height // 2))
    image.paste((20, 20, 220), (width // 2, height // 2, width, height))
    return image


def encode(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def oriented_jpeg(orientation: int) -> bytes:
    stored = upright_marker()
    if STORED_AS[orientation] is not None:
        stored = stored.transpose(STORED_AS[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, "JPEG", quality=95, exif=exif)


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def matrix_icc_profile(description: str, red, green, blue, gamma: float) -> bytes:
    """A minimal ICC v2 RGB display profile (matrix and gamma curves), e.g. Adobe RGB (1998).

    `red`, `green`, `blue` are the D50-adapted XYZ colorants, as the published profiles carry.
    """
    def xyz(values) -> bytes:
        return b"XYZ " + b"\0" * 4 + b"".join(_s15(v) for v in values)

    def curve() -> bytes:
        return b"curv" + b"\0" * 4 + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"

    ascii_text = description.encode() + b"\0"
    desc = (b"desc" + b"\0" * 4 + struct.pack(">I", len(ascii_text)) + ascii_text
            + struct.pack(">II", 0, 0) + struct.pack(">HB", 0, 0) + b"\0" * 67)
    tags = [
        (b"desc", desc),
        (b"wtpt", xyz((0.9642, 1.0, 0.8249))),
        (b"rXYZ", xyz(red)), (b"gXYZ", xyz(green)), (b"bXYZ", xyz(blue)),
        (b"rTRC", curve()), (b"gTRC", curve()), (b"bTRC", curve()),
        (b"cprt", b"text" + b"\0" * 4 + b"public domain test profile\0"),
    ]
    table_size = 4 + 12 * len(tags)
    offset = 128 + table_size
    table, data = struct.pack(">I", len(tags)), b""
    for signature, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = 128 + table_size + len(data)
    header = (struct.pack(">I", size) + b"\0" * 4 + bytes([2, 0x10, 0, 0]) + b"mntrRGB XYZ "
              + b"\0" * 12 + b"acsp" + b"\0" * 24 + struct.pack(">I", 0)
              + _s15(0.9642) + _s15(1.0) + _s15(0.8249) + b"\0" * 48)
    assert len(header) == 128
    return header + table + data


ADOBE_RGB = {
    "red": (0.60974, 0.31111, 0.01947),
    "green": (0.20528, 0.62567, 0.06087),
    "blue": (0.14919, 0.06322, 0.74457),
    "gamma": 563 / 256,
}
# sRGB's D50-adapted colorants, as in LittleCMS's built-in sRGB profile.
SRGB_D50 = ((0.4360747, 0.2225045, 0.0139322), (0.3850649, 0.7168786, 0.0971045), (0.1430804, 0.0606169, 0.7141733))


def adobe_rgb_profile() -> bytes:
    return matrix_icc_profile("Adobe RGB (1998) compatible", ADOBE_RGB["red"], ADOBE_RGB["green"],
                              ADOBE_RGB["blue"], ADOBE_RGB["gamma"])


def adobe_rgb_to_srgb(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """The colorimetric answer, computed from the colorants: what a correct pipeline must output."""
    linear = [(v / 255) ** ADOBE_RGB["gamma"] for v in rgb]
    columns = (ADOBE_RGB["red"], ADOBE_RGB["green"], ADOBE_RGB["blue"])
    xyz = [sum(columns[c][row] * linear[c] for c in range(3)) for row in range(3)]
    matrix = [[SRGB_D50[c][row] for c in range(3)] for row in range(3)]
    srgb_linear = _solve(matrix, xyz)

    def encode_srgb(v: float) -> int:
        v = min(1.0, max(0.0, v))
        v = 12.92 * v if v <= 0.0031308 else 1.055 * v ** (1 / 2.4) - 0.055
        return round(v * 255)

    return tuple(encode_srgb(v) for v in srgb_linear)


def _solve(m, y):
    """Solve m x = y for a 3x3 matrix by Cramer's rule."""
    def det(a):
        return (a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
                - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
                + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]))
    d = det(m)
    result = []
    for column in range(3):
        replaced = [[y[row] if c == column else m[row][c] for c in range(3)] for row in range(3)]
        result.append(det(replaced) / d)
    return result


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR that claims a huge size, with a tiny IDAT: a bomb's header."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def riff_chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + b"\0" * (len(body) % 2)


def animated_webp_canvas(width: int, height: int, frames: int = 2) -> bytes:
    """An animated WebP of a few bytes whose frames are one pixel on a huge canvas."""
    pixel = encode(Image.new("RGBA", (1, 1), (200, 30, 30, 255)), "WEBP", lossless=True)[12:]  # its VP8L chunk
    canvas = riff_chunk(b"VP8X", bytes([0x12, 0, 0, 0]) + (width - 1).to_bytes(3, "little")
                        + (height - 1).to_bytes(3, "little"))  # flags: animation, alpha
    frame = riff_chunk(b"ANMF", bytes(12) + (100).to_bytes(3, "little") + b"\0" + pixel)
    body = b"WEBP" + canvas + riff_chunk(b"ANIM", bytes(6)) + frame * frames
    return b"RIFF" + struct.pack("<I", len(body)) + body


def jpeg_header_declaring(width: int, height: int) -> bytes:
    """A whole JPEG of 16x16 pixels, end-of-image marker and all, whose frame says width x height."""
    data = encode(Image.new("RGB", (16, 16), (128, 128, 128)), "JPEG")
    frame = data.index(b"\xff\xc0")
    return data[:frame + 5] + struct.pack(">HH", height, width) + data[frame + 9:]


def _jpeg_segments(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The marker segments before a one-scan JPEG's scan (marker, body), and its scan data."""
    segments, position = [], 2
    while True:
        marker, length = data[position + 1], struct.unpack(">H", data[position + 2:position + 4])[0]
        segments.append((marker, data[position + 4:position + 2 + length]))
        position += 2 + length
        if marker == 0xDA:
            return segments, data[position:data.rindex(b"\xff\xd9")]


def _segment(marker: int, body: bytes) -> bytes:
    return b"\xff" + bytes([marker]) + struct.pack(">H", len(body) + 2) + body


def jpeg_in_separate_scans(image: Image.Image, only: int | None = None, **options) -> bytes:
    """A baseline (sequential) JPEG whose Y, Cb and Cr come one after another in three scans, as
    libjpeg's scan scripts can write it: spliced from three greyscale JPEGs, each with its own
    tables (renumbered, or defined again before its scan). With `only`, just that component's
    scan, and the frame 4:2:0 (that component, Cb or Cr, at half the size each way)."""
    planes = image.convert("YCbCr").split()
    if only is not None:
        planes = [plane.resize((image.width // 2, image.height // 2)) if index else plane
                  for index, plane in enumerate(planes)]
    planes = [_jpeg_segments(encode(plane, "JPEG", **options)) for plane in planes]
    sampling = [0x22, 0x11, 0x11] if only is not None else [0x11, 0x11, 0x11]
    out = b"\xff\xd8"
    for table, (segments, _) in enumerate(planes):
        out += b"".join(_segment(0xDB, bytes([table]) + body[1:]) for marker, body in segments if marker == 0xDB)
    out += _segment(0xC0, struct.pack(">BHHB", 8, image.height, image.width, 3)
                    + b"".join(bytes([component + 1, sampling[component], component]) for component in range(3)))
    out += b"".join(_segment(marker, body) for marker, body in planes[0][0] if marker == 0xDD)
    for component, (segments, scan) in enumerate(planes):
        if only is None or component == only:
            out += b"".join(_segment(marker, body) for marker, body in segments if marker == 0xC4)
            out += _segment(0xDA, bytes([1, component + 1, 0x00, 0, 63, 0])) + scan
    return out + b"\xff\xd9"


def repeated_tables(jpeg: bytes, at_least: int) -> bytes:
    """The JPEG with its quantisation tables defined again and again, `at_least` bytes of them."""
    start = jpeg.index(b"\xff\xdb")
    table = jpeg[start:start + 2 + struct.unpack(">H", jpeg[start + 2:start + 4])[0]]
    return jpeg[:start] + table * (at_least // len(table) + 1) + jpeg[start:]
