"""The imaging core on the odd photos real users upload, with images the tests generate."""

from __future__ import annotations

import functools
import io
import math
import time

import pytest
from PIL import Image, ImageChops, ImageFile, ImageOps, ImageStat

from conftest import open_output, render_outputs
from images import (STORED_AS, adobe_rgb_profile, adobe_rgb_to_srgb, encode, jpeg_header_declaring, jpeg_in_separate_scans,
                    oriented_jpeg, png_header_only, repeated_tables, upright_marker)
from pipeline import samples
from pipeline.config import PipelineConfig
from pipeline.imaging import BIG_STEP_FILTER, RejectedImage, _decode_base, open_source, render
from pipeline.registry import build_registry

DEFAULT_VARIATIONS = ["large", "medium", "small", "xsmall", "square_medium", "square_small"]


def psnr(a: Image.Image, b: Image.Image) -> float:
    mse = sum(v * v for v in ImageStat.Stat(ImageChops.difference(a, b)).rms) / 3
    return 10 * math.log10(255 * 255 / mse) if mse else 99.0


def near(pixel, expected, tolerance=6):
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected))


@pytest.mark.parametrize("orientation", sorted(STORED_AS))
def test_every_exif_orientation_comes_out_upright(registry, orientation):
    outputs = render_outputs(oriented_jpeg(orientation), registry)
    assert outputs.manifest["source"]["width"] == 600 and outputs.manifest["source"]["height"] == 400
    for name in ("large", "small", "xsmall"):
        image = open_output(outputs, f"uploads/images/{name}/photo.jpg").convert("RGB")
        w, h = image.size
        assert w > h, f"{name} of orientation {orientation} is not landscape: {image.size}"
        assert near(image.getpixel((w // 8, h // 8)), (220, 20, 20), 30), f"orientation {orientation}: red not top-left"
        assert near(image.getpixel((w - w // 8, h - h // 8)), (20, 20, 220), 30)
        assert near(image.getpixel((w - w // 8, h // 8)), (128, 128, 128), 30)


def test_broken_exif_renders_as_stored_without_warnings(registry, recwarn):
    # An EXIF block whose first IFD points past its end: Pillow warns "Corrupt EXIF data".
    jpeg = encode(upright_marker(), "JPEG", quality=95)
    broken = jpeg[:2] + b"\xff\xe1\x00\x10Exif\x00\x00II*\x00\xff\xff\xff\xff" + jpeg[2:]
    outputs = render_outputs(broken, registry)
    image = open_output(outputs, "uploads/images/large/photo.jpg").convert("RGB")
    assert image.size == (600, 400)
    assert near(image.getpixel((75, 50)), (220, 20, 20), 30)
    assert [str(w.message) for w in recwarn] == []


def test_adobe_rgb_source_is_converted_to_srgb(registry):
    adobe = (60, 170, 80)
    expected = adobe_rgb_to_srgb(adobe)
    assert max(abs(a - b) for a, b in zip(adobe, expected)) > 15, "the test colour must differ in sRGB"
    data = encode(Image.new("RGB", (800, 600), adobe), "PNG", icc_profile=adobe_rgb_profile())
    outputs = render_outputs(data, registry, "adobe.png")
    large = open_output(outputs, "uploads/images/large/adobe.png")
    assert large.mode == "RGB" and "icc_profile" not in large.info
    assert near(large.getpixel((400, 300)), expected, 4), (large.getpixel((400, 300)), expected)


def test_cmyk_jpeg_comes_out_as_rgb_with_the_right_colours(registry):
    cmyk = Image.new("CMYK", (800, 600), (255, 0, 0, 0))  # pure cyan ink
    cmyk.paste((0, 0, 0, 255), (0, 0, 400, 600))  # black ink on the left half
    outputs = render_outputs(encode(cmyk, "JPEG", quality=95), registry)
    large = open_output(outputs, "uploads/images/large/photo.jpg")
    assert large.mode == "RGB"
    assert near(large.getpixel((600, 300)), (0, 255, 255), 8)
    assert near(large.getpixel((200, 300)), (0, 0, 0), 8)


def test_transparent_png_never_turns_black(registry):
    outputs = render_outputs(samples.transparent_png(1200, 900), registry, "logo.png")
    for name in DEFAULT_VARIATIONS:
        image = open_output(outputs, f"uploads/images/{name}/logo.png").convert("RGB")
        assert near(image.getpixel((2, 2)), (255, 255, 255), 3), f"{name}: transparent corner is {image.getpixel((2, 2))}"
        w, h = image.size
        assert near(image.getpixel((w // 2, h // 2)), (30, 120, 220), 12)


def test_formats_that_keep_alpha_keep_it():
    registry = build_registry(PipelineConfig.from_dict({"plugins": {"webp": {"enabled": True}}}))
    outputs = render_outputs(samples.transparent_png(400, 300), registry, "logo.png")
    webp = open_output(outputs, "uploads/images/small.webp/logo.png")
    assert webp.mode == "RGBA"
    assert webp.getpixel((2, 2))[3] == 0 and webp.getpixel((200, 150))[3] == 255


def test_gps_and_camera_serials_are_gone_from_every_output():
    registry = build_registry(PipelineConfig.from_dict(
        {"plugins": {"webp": {"enabled": True}, "avif": {"enabled": True}}}))
    data = samples.jpeg_bytes(samples.photo(1600, 1200, grain=0), exif=samples.gps_exif())
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(0x8825), "the source must carry GPS"
    outputs = render_outputs(data, registry)
    images = [obj for obj in outputs.objects if obj.content_type.startswith("image/")]
    assert len(images) == 18
    for obj in images:
        assert b"SERIAL-1234567890" not in obj.body and b"PhoneMaker" not in obj.body, obj.key
        image = Image.open(io.BytesIO(obj.body))
        assert not image.getexif(), f"{obj.key} carries EXIF"
        assert "exif" not in image.info and "xmp" not in image.info, obj.key


def test_jpeg_outputs_are_progressive_from_a_few_hundred_pixels_up(registry):
    """Progressive shows a large image early; the two tiniest are baseline, smaller or as small, and faster."""
    outputs = render_outputs(samples.jpeg_bytes(samples.photo(1600, 1200, grain=0)), registry)
    for name in DEFAULT_VARIATIONS:
        image = open_output(outputs, f"uploads/images/{name}/photo.jpg")
        assert bool(image.info.get("progressive")) == (name not in ("xsmall", "square_small")), name


def test_a_huge_png_is_refused_from_its_header_without_decoding(registry, monkeypatch):
    loads = []  # recorded, not raised: the core may catch what a decode raises
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self.size))
    with pytest.raises(RejectedImage) as rejected:
        render(png_header_only(30000, 30000), registry)
    assert loads == [], "pixels were decoded"
    assert rejected.value.reason.startswith("30000x30000 PNG: decoding needs about ")
    assert rejected.value.reason.endswith(" GiB, over the memory budget of 1.0 GiB; not decoded")


def test_the_pixel_limit_is_configurable():
    registry = build_registry(PipelineConfig.from_dict({"max_pixels": 1_000_000}))
    with pytest.raises(RejectedImage, match="limit of 1 megapixels"):
        render(encode(Image.new("RGB", (1200, 1000)), "PNG"), registry)


@pytest.mark.parametrize("data, reason", [
    (b"", "empty file"),
    (b"<!DOCTYPE html><html><body>Not found</body></html>", "looks like HTML"),
    (b"%PDF-1.7\n", "not an image in an accepted format"),
    (b"%!PS-Adobe-3.0 EPSF-3.0\n", "not an image in an accepted format"),
    (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "looks like HTML or XML"),
])
def test_what_is_not_an_accepted_image_is_refused_with_a_reason(registry, data, reason):
    with pytest.raises(RejectedImage, match=reason):
        render(data, registry)


@pytest.mark.parametrize("data", [b"\xff\xd8\xff" + bytes(61), b"\x89PNG\r\n\x1a\n" + bytes(56)])
def test_an_unreadable_header_gets_the_same_reason_in_every_process(registry, data):
    """The reason goes into the failed manifest and the logs: no object address in it."""
    with pytest.raises(RejectedImage, match=r"^corrupt (JPEG|PNG) file: its header cannot be read$"):
        render(data, registry)


def test_a_truncated_jpeg_gets_a_clear_reason(registry):
    data = samples.jpeg_bytes(samples.photo(1600, 1200))
    with pytest.raises(RejectedImage, match=r"^truncated JPEG data \(the image data has no end-of-image marker\); "
                                            "the upload may be incomplete$"):
        render(data[: len(data) // 2], registry)


def test_a_jpeg_with_too_little_image_data_is_refused_before_decoding(registry, monkeypatch):
    """libjpeg would pad the missing scan with grey and Pillow would drop its warning: a "ready" grey picture."""
    loads = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self.size))
    with pytest.raises(RejectedImage, match=r"^truncated JPEG data \(4000x3000 pixels need at least 35,187 bytes of "
                                            r"image data, the file has \d+\); the upload may be incomplete$"):
        render(jpeg_header_declaring(4000, 3000), registry)
    assert loads == []


@pytest.mark.parametrize("options", [{}, {"progressive": True}], ids=["baseline", "progressive"])
def test_the_flattest_whole_jpeg_is_not_taken_for_a_truncated_one(registry, options):
    """One colour with optimised Huffman tables: about two bits a block, the least a JPEG spends."""
    data = encode(Image.new("RGB", (4000, 3000), (90, 120, 150)), "JPEG", optimize=True, **options)
    assert render(data, registry).source.width == 4000
    assert render(data + b"SEFT" * 100, registry).source.width == 4000  # a trailer after the image is no harm


def test_a_small_image_is_never_upscaled(registry):
    outputs = render_outputs(encode(Image.new("RGB", (50, 30), (200, 100, 50)), "PNG"), registry, "tiny.png")
    sizes = {name: (v["width"], v["height"]) for name, v in outputs.manifest["variations"].items()}
    assert sizes == {"large": (50, 30), "medium": (50, 30), "small": (50, 30), "xsmall": (50, 30),
                     "square_medium": (30, 30), "square_small": (30, 30)}
    assert open_output(outputs, "uploads/images/square_small/tiny.png").size == (30, 30)


def test_a_panorama_gives_valid_centred_squares(registry):
    panorama = Image.new("RGB", (8000, 200), (0, 0, 255))
    panorama.paste((255, 0, 0), (3900, 0, 4100, 200))  # the centre
    outputs = render_outputs(encode(panorama, "PNG"), registry, "pano.png")
    for name, edge in (("square_medium", 200), ("square_small", 150)):
        square = open_output(outputs, f"uploads/images/{name}/pano.png")
        assert square.size == (edge, edge)
        assert near(square.getpixel((edge // 2, edge // 2)), (255, 0, 0), 12)
    assert outputs.manifest["variations"]["large"]["width"] == 2048
    assert outputs.manifest["variations"]["large"]["height"] == 51


def test_heic_decodes(registry):
    import pillow_heif

    pillow_heif.register_heif_opener()
    data = encode(samples.photo(1200, 800, grain=0), "HEIF", quality=80)
    assert data[4:12] == b"ftypheic"
    outputs = render_outputs(data, registry, "iphone.heic")
    assert outputs.manifest["source"]["format"] == "HEIF"
    assert open_output(outputs, "uploads/images/large/iphone.heic").size == (1200, 800)


def test_avif_webp_and_gif_sources_decode(registry):
    photo = samples.photo(900, 600, grain=0)
    for fmt, name in (("AVIF", "a.avif"), ("WEBP", "a.webp"), ("GIF", "a.gif")):
        outputs = render_outputs(encode(photo, fmt), registry, name)
        assert not outputs.failed, (fmt, outputs.reason)
        assert outputs.manifest["source"]["format"] == fmt
        assert outputs.manifest["variations"]["medium"]["width"] == 900


def test_animated_gif_uses_the_first_frame(registry):
    red, blue = Image.new("RGB", (300, 200), (255, 0, 0)), Image.new("RGB", (300, 200), (0, 0, 255))
    data = encode(red, "GIF", save_all=True, append_images=[blue], duration=100, loop=0)
    outputs = render_outputs(data, registry, "anim.gif")
    assert near(open_output(outputs, "uploads/images/large/anim.gif").getpixel((150, 100)), (255, 0, 0), 8)


def test_sixteen_bit_greyscale_is_scaled_not_clipped(registry):
    data = encode(Image.new("I;16", (400, 300), 40000), "PNG")
    outputs = render_outputs(data, registry, "scan.png")
    large = open_output(outputs, "uploads/images/large/scan.png")
    assert large.mode == "L"
    assert abs(large.getpixel((200, 150)) - 40000 // 256) <= 2


def test_greyscale_and_palette_sources(registry):
    grey = encode(Image.new("L", (400, 300), 90), "JPEG")
    assert open_output(render_outputs(grey, registry), "uploads/images/small/photo.jpg").getpixel((10, 10)) in range(87, 94)
    palette = Image.new("P", (400, 300), 0)
    palette.putpalette([10, 200, 30] + [0, 0, 0] * 255)
    outputs = render_outputs(encode(palette, "PNG"), registry, "p.png")
    assert near(open_output(outputs, "uploads/images/small/p.png").getpixel((10, 10)), (10, 200, 30), 8)


@pytest.mark.parametrize(("size", "denominator"), [
    ((8000, 5000), 4),  # 1/4 gives 2000 px: 98% of the 2048 px variation, enlarged by 2.4%
    ((6000, 4000), 3),  # 1/4 would give 1500 px: 3/8, 2250 px
    ((4032, 3024), 2),  # a 12 MP phone photo: 2016 px
    ((3840, 2160), None),  # 1/2 would give 1920 px, 94%: full size
])
def test_big_jpeg_is_decoded_once_at_the_smallest_scale_that_serves_large(registry, monkeypatch, size, denominator):
    """Shrink-on-load, once for all six variations, and what comes out is the photo, not garbage."""
    decoders = []
    original = Image._getdecoder

    def spy(mode, decoder_name, args, extra=()):
        decoders.append((decoder_name, extra[0] if extra else None))
        return original(mode, decoder_name, args, extra)

    data = samples.jpeg_bytes(samples.photo(*size, grain=0))
    monkeypatch.setattr(Image, "_getdecoder", spy)
    outputs = render_outputs(data, registry)
    monkeypatch.undo()
    assert decoders == [("jpeg", denominator)]
    large = open_output(outputs, "uploads/images/large/photo.jpg").convert("RGB")
    assert large.width == 2048
    reference = Image.open(io.BytesIO(data)).resize(large.size, Image.Resampling.LANCZOS)
    assert psnr(large, reference) > 30, "the scaled decode must be the same picture (JPEG loss included)"


@pytest.mark.parametrize("size", [(4032, 3024), (8000, 5000)])
def test_the_smallest_dct_scale_is_as_sharp_as_a_full_decode_once_encoded(registry, monkeypatch, size):
    """Decoding a 12 MP photo at 1/2 and a 40 MP one at 1/4 (then enlarging by 1.6% or 2.4%) drops the
    detail that the JPEG encode would drop anyway: each variation stays within 0.2 dB of the one
    from a decode that leaves a 1.3x shrink (full size, 3/8)."""
    from pipeline import imaging

    data = samples.jpeg_bytes(samples.photo(*size, seed=size[0]))
    full = Image.open(io.BytesIO(data)).convert("RGB")

    def scores():
        outputs = render_outputs(data, registry)
        found = {}
        for name in DEFAULT_VARIATIONS:
            written = open_output(outputs, f"uploads/images/{name}/photo.jpg").convert("RGB")
            reference = full.resize(written.size, Image.Resampling.LANCZOS) if written.width != written.height else \
                ImageOps.fit(full, written.size, Image.Resampling.LANCZOS)
            found[name] = psnr(written, reference)
        return found

    smallest = scores()
    monkeypatch.setattr(imaging, "MIN_DECODE_FRACTION", 1.3)
    larger = scores()
    assert all(smallest[name] > larger[name] - 0.2 for name in DEFAULT_VARIATIONS), (smallest, larger)


@pytest.mark.parametrize("size", [(6001, 3751), (7000, 4375), (5999, 4001)])
def test_dct_scaled_decode_stays_aligned_and_sharp(size):
    """Widths that are no multiple of 8 decode to a last, partial pixel; counting it as whole
    shifted the picture by half a pixel (5-7 dB lost here). Before JPEG, the large variation's pixels
    stay within a few dB of a resize from the full-size decode."""
    data = samples.jpeg_bytes(samples.photo(*size, grain=0))
    image = open_source(data, max_pixels=10**9, max_bytes=10**9)
    width = 2048
    large = _decode_base(image, data, (width, round(size[1] * width / size[0])), orientation=1)
    assert large.width == width
    reference = Image.open(io.BytesIO(data)).resize(large.size, Image.Resampling.LANCZOS)
    full_decode = Image.open(io.BytesIO(data)).resize(large.size, BIG_STEP_FILTER)
    assert psnr(large, reference) > psnr(full_decode, reference) - 4.5


def test_a_decode_just_under_large_is_kept_only_when_it_has_no_partial_pixel():
    """A decode a little under large's size is kept at its own size, for large and medium to be cut
    from at once; 4033x3025 decodes at 1/2 to 2017x1513 whose last column and row are half pixels:
    it is resized to large at once with their true extent, not kept for the cuts to count as whole."""
    for size, kept in (((4032, 3024), (2016, 1512)), ((4033, 3025), (2048, 1536))):
        data = samples.jpeg_bytes(samples.photo(*size, grain=0))
        image = open_source(data, max_pixels=10**9, max_bytes=10**9)
        assert _decode_base(image, data, (2048, 1536), orientation=1).size == kept, size


def test_lossless_jpeg_frame_is_never_dct_scaled(registry, monkeypatch):
    """libjpeg-turbo ignores the scale for lossless frames: asking for it would overflow the rows."""
    data = samples.jpeg_bytes(samples.photo(4800, 3200, grain=0))
    sof = data.index(b"\xff\xc0")
    lossless = data[:sof] + b"\xff\xc3" + data[sof + 2:]
    decoders = []
    original = Image._getdecoder

    def spy(mode, decoder_name, args, extra=()):
        decoders.append(extra)
        return original(mode, decoder_name, args, extra)

    monkeypatch.setattr(Image, "_getdecoder", spy)
    try:
        render(lossless, registry)
    except RejectedImage:
        pass  # DCT data read as lossless data may be refused: refusing is fine, scaling is not
    assert decoders and all(not extra for extra in decoders), decoders


def test_a_jpeg_with_a_gain_map_is_shrunk_on_load_and_budgeted_as_the_jpeg_it_is(registry):
    """Phones write Ultra HDR / gain-map and depth JPEGs with an MP Format segment; Pillow opens
    them as "MPO". The first picture is the photo and must get the JPEG path: DCT scaling and
    the JPEG memory estimate."""
    from pipeline.imaging import estimate_memory

    photo = samples.photo(4000, 3000, grain=0)
    out = io.BytesIO()
    photo.save(out, "MPO", save_all=True, append_images=[Image.new("RGB", (400, 300))], quality=90)
    mpo, jpeg = out.getvalue(), samples.jpeg_bytes(photo, quality=90)
    assert Image.open(io.BytesIO(mpo)).format == "MPO"
    assert estimate_memory(mpo, registry) < 1.2 * estimate_memory(jpeg, registry)
    outputs = render_outputs(mpo, registry)
    assert outputs.manifest["source"]["format"] == "JPEG"
    assert (outputs.manifest["variations"]["large"]["width"], outputs.manifest["variations"]["large"]["height"]) == (2048, 1536)


def test_a_progressive_jpeg_with_thousands_of_scans_is_refused_before_decoding(registry, monkeypatch):
    from pipeline import imaging

    out = io.BytesIO()
    Image.new("RGB", (600, 400), (90, 120, 150)).save(out, "JPEG", progressive=True, quality=90)
    data = out.getvalue()
    start, end = data.rindex(b"\xff\xda"), data.rindex(b"\xff\xd9")
    bomb = data[:end] + data[start:end] * 500 + data[end:]  # the last refinement scan, again and again
    assert not render_outputs(data, registry).failed, "an ordinary progressive JPEG has about ten scans"
    monkeypatch.setattr(imaging, "_decode_base", lambda *a, **k: pytest.fail("decoding started"))
    with pytest.raises(imaging.RejectedImage, match="JPEG with more than 100 scans"):
        imaging.render(bomb, registry)
    # A comment holding the bytes of an end-of-image marker does not end the count.
    hidden = data[:start] + b"\xff\xfe\x00\x04\xff\xd9" + data[start:end] * 500 + data[end:]
    with pytest.raises(imaging.RejectedImage, match="JPEG with more than 100 scans"):
        imaging.render(hidden, registry)
    # Only scans count, not the segments between them: 95 scans, each after tables of its own, are decoded.
    tables = data.index(b"\xff\xc4")
    tables = data[tables:tables + 2 + int.from_bytes(data[tables + 2:tables + 4], "big")]
    assert imaging._jpeg_scans(data) < 11
    many = data[:end] + (tables + data[start:end]) * 85 + data[end:]
    assert 90 < imaging._jpeg_scans(many) <= 100
    monkeypatch.undo()
    assert imaging.render(many, registry).variations


@pytest.mark.parametrize("size, restart_marker_rows", [((4032, 3024), 0), ((3000, 4000), 0), ((6000, 4000), 0),
                                                       ((3303, 4401), 0), ((4401, 3303), 0), ((3001, 4002), 0),
                                                       ((4032, 3024), 1)])
def test_every_cpu_gives_the_same_bytes_as_one(registry, monkeypatch, size, restart_marker_rows):
    """The threaded render (a function with more than one vCPU) against the one-CPU render: the
    bands of the first resize join without a seam, and nothing depends on which thread ran first;
    a JPEG with restart markers is decoded in strips."""
    data = samples.jpeg_bytes(samples.photo(*size, seed=size[0]), exif=samples.gps_exif(orientation=6),
                              restart_marker_rows=restart_marker_rows)
    from pipeline import imaging

    strips, decode_strip = [], imaging._decode_strip
    monkeypatch.setattr(imaging, "_decode_strip", lambda *strip: (strips.append(strip[1]), decode_strip(*strip)))
    one, several = render(data, registry, threads=1), render(data, registry, threads=3)
    assert len(strips) == (3 if restart_marker_rows else 0), "decoded in three strips (2.9 MB) or whole"
    assert [[f.data for f in v.files] for v in one.variations] == [[f.data for f in v.files] for v in several.variations]
    assert one.placeholder == several.placeholder


def streamed_decodes(monkeypatch) -> list[int]:
    """Each streaming decode's number of strips handed on before the decoder finished (see _decode_streaming)."""
    from pipeline import imaging

    decodes, stream = [], imaging._decode_streaming

    def counted(image, data, pool, on_rows):
        strips = [0]
        decodes.append(strips)

        def counting(decoded, top, bottom):
            strips[0] += bottom < decoded.height
            on_rows(decoded, top, bottom)
        return stream(image, data, pool, counting)

    monkeypatch.setattr(imaging, "_decode_streaming", counted)
    return decodes


def srgb_profile() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("size", [(8000, 5000), (5000, 8000), (8000, 2500)])
@pytest.mark.parametrize("profile", [None, "sRGB"])
def test_a_jpeg_without_restart_markers_is_resized_while_it_decodes_giving_the_same_bytes_as_one_cpu(
        registry, monkeypatch, size, profile):
    """On two CPUs the rows a sequential JPEG's decoder has written are passed horizontally for the
    variations cut from the decode while it writes the next (_FirstPasses): the same bytes as one CPU."""
    icc = srgb_profile() if profile else None
    data = samples.jpeg_bytes(samples.photo(*size, seed=size[0]), exif=samples.gps_exif(orientation=1), icc_profile=icc)
    one = render(data, registry, threads=1)
    decodes = streamed_decodes(monkeypatch)
    two = render(data, registry, threads=2)
    assert len(decodes) == 1 and decodes[0][0] >= 2, "strips handed on while the decoder still ran"
    assert [[f.data for f in v.files] for v in one.variations] == [[f.data for f in v.files] for v in two.variations]
    assert one.placeholder == two.placeholder


def crops_only(*variations: tuple[str, str, int, int]):
    """A registry whose variations are only these (name, transform, width, height): crops, a top banner."""
    import types

    from pipeline.hookspecs import hookimpl
    from pipeline.testing import registry_with
    from pipeline.types import Geometry, Transform, Variation

    def top(source_size, box):  # the top of the photo at the box's aspect ratio, as docs/plugins.md's example
        width, height = source_size
        strip_width = min(width, height * box[0] / box[1])
        scale = min(1.0, strip_width / box[0])
        return Geometry(size=(max(1, round(box[0] * scale)), max(1, round(box[1] * scale))),
                        region=(0, 0, strip_width, min(height, strip_width * box[1] / box[0])))

    plugin = types.ModuleType("crops")
    plugin.register_variations = hookimpl(lambda register: [register(Variation(*v)) for v in variations])
    plugin.register_transforms = hookimpl(lambda register: register(Transform("top", top)))
    return registry_with(crops=plugin, config={"plugins": {"sizes": {"enabled": False},
                                                           "square_crops": {"enabled": False}}})


@pytest.mark.parametrize("variations", [
    [("banner", "top", 2048, 307), ("square", "cover", 300, 300)],  # a banner cut from the decode, with a first pass
    [("square", "cover", 1280, 1280), ("thumb", "cover", 120, 120)],  # no whole-frame variation: the decode is kept
], ids=["banner", "crops only"])
def test_crops_from_a_streamed_decode_give_the_same_bytes_as_one_cpu(monkeypatch, variations):
    """Pillow may take the other order of passes for a crop than two passes by hand: a cut that has
    a first pass on two CPUs is made in two passes on one. Without a whole-frame variation the
    placeholder is made from the decode, which must stay."""
    crops = crops_only(*variations)
    data = samples.jpeg_bytes(samples.photo(8000, 5000, seed=6))
    one = render(data, crops, threads=1)
    decodes = streamed_decodes(monkeypatch)
    two = render(data, crops, threads=2)
    assert len(decodes) == 1
    assert [[f.data for f in v.files] for v in one.variations] == [[f.data for f in v.files] for v in two.variations]
    assert one.placeholder == two.placeholder


def test_image_memory_comes_in_small_blocks_once_a_render_uses_threads(registry):
    """Two threads freeing images of different sizes in turn leave malloc holding memory it could
    reuse if the blocks were small (see THREADED_BLOCK_BYTES); one thread keeps Pillow's default."""
    from pipeline import imaging

    before, default = Image.core.get_block_size(), 16 * 2**20  # Pillow's default; an earlier test's render may have changed it
    data = samples.jpeg_bytes(samples.photo(900, 600, seed=2))
    try:
        Image.core.set_block_size(default)
        render(data, registry, threads=1)
        assert Image.core.get_block_size() == default
        render(data, registry, threads=2)
        assert Image.core.get_block_size() == imaging.THREADED_BLOCK_BYTES < default
    finally:
        Image.core.set_block_size(before)


def test_a_first_resize_is_cut_in_bands_only_where_each_band_takes_the_wholes_order_of_passes():
    """Pillow makes the vertical pass first when the height shrinks by more than twice the width:
    a band of columns shrinks the width more, and would take the other order and other bytes
    (a tall photo with narrow variations; found by fuzzing)."""
    narrow = crops_only(("a", "fit", 97, 283), ("b", "cover", 28, 311))
    data = samples.jpeg_bytes(samples.photo(324, 1407, seed=0))
    one, two = render(data, narrow, threads=1), render(data, narrow, threads=2)
    assert [[f.data for f in v.files] for v in one.variations] == [[f.data for f in v.files] for v in two.variations]


def test_the_decode_goes_once_every_cut_from_it_has_its_first_pass(registry, monkeypatch):
    """Its rows are in the first passes: holding it while large and medium are finished would add
    its megabytes to the render's peak."""
    import weakref

    from pipeline import imaging

    decodes, stream = [], imaging._decode_streaming

    def remembered(*args):
        decoded, following = stream(*args)
        decodes.append(weakref.ref(decoded))
        return decoded, following

    second_pass, alive_at_second_passes = imaging._second_pass, []

    def watched(*args):
        alive_at_second_passes.append(decodes[0]() is not None)
        return second_pass(*args)

    monkeypatch.setattr(imaging, "_decode_streaming", remembered)
    monkeypatch.setattr(imaging, "_second_pass", watched)
    data = samples.jpeg_bytes(samples.photo(8000, 5000, seed=4))  # large and medium are cut from the decode
    render(data, registry, threads=2)
    assert alive_at_second_passes == [False, False]


@pytest.mark.parametrize("case", ["progressive", "turned by EXIF", "Adobe RGB", "greyscale", "CMYK",
                                  "restart markers", "a resize to the decode size first", "decoded at 1/2"])
def test_a_jpeg_the_decode_must_still_change_is_decoded_whole_before_it_is_resized(registry, monkeypatch, case):
    """Rows are handed on only where the decode is all there is to do and outlasts the first passes;
    elsewhere the same bytes as one CPU."""
    photo, options = samples.photo(8000, 2500, seed=5), {"quality": 90}
    if case == "progressive":
        options["progressive"] = True
    elif case == "turned by EXIF":
        options["exif"] = samples.gps_exif(orientation=6)
    elif case == "Adobe RGB":
        options["icc_profile"] = adobe_rgb_profile()
    elif case == "greyscale":
        photo = photo.convert("L")
    elif case == "CMYK":
        photo = photo.convert("CMYK")
    elif case == "restart markers":
        options["restart_marker_rows"] = 1
    elif case == "a resize to the decode size first":
        photo = samples.photo(6000, 1500, seed=5)  # 3/8 is 2250: resized to 2048 wide before the cuts
    else:
        photo = samples.photo(4032, 3024, seed=5)
    data = encode(photo, "JPEG", **options)
    one = render(data, registry, threads=1)
    decodes = streamed_decodes(monkeypatch)
    two = render(data, registry, threads=2)
    assert decodes == []
    assert [[f.data for f in v.files] for v in one.variations] == [[f.data for f in v.files] for v in two.variations]


def test_rows_are_known_written_once_a_pixel_differs_from_the_sentinel_and_never_before():
    from pipeline import imaging

    image = Image.new("RGB", (50, 40), imaging.SENTINEL)
    assert imaging._rows_written(image, 0) == 0
    image.paste((0, 0, 0), (0, 0, 50, 12))
    assert imaging._rows_written(image, 0) == 12
    image.paste(imaging.SENTINEL, (0, 11, 50, 12))  # a written row that looks unwritten may hold back
    image.paste((9, 9, 9), (0, 12, 50, 13))
    assert imaging._rows_written(image, 0) in (11, 13)  # the answer, never past the rows written
    image.putpixel((49, 20), (0, 0, 0))  # one pixel of a row: its last column
    image.paste((9, 9, 9), (0, 13, 50, 20))
    assert imaging._rows_written(image, 13) == 21
    image.paste((9, 9, 9), (0, 21, 50, 40))
    assert imaging._rows_written(image, 21) == 40


@pytest.mark.parametrize("broken", ["cut short, an end marker after", "garbage amid the data",
                                    "a Huffman table libjpeg refuses", "a decoder error half way"])
def test_a_broken_jpeg_streams_to_what_one_cpu_makes_of_it_and_no_first_pass_outlives_the_render(
        registry, monkeypatch, broken):
    """libjpeg makes what it can of damaged data (the same bytes on any number of CPUs) or refuses it
    (the same refusal); no first pass may still read the decode, or hold memory, once render returns."""
    from pipeline import imaging

    data = encode(samples.photo(8000, 2500, seed=3), "JPEG", quality=92)
    middle = len(data) // 2
    if broken == "cut short, an end marker after":
        data = data[:middle] + b"\xff\xd9"
    elif broken == "garbage amid the data":
        data = data[:middle] + b"\xff\xd9" + bytes(range(256)) * 40 + data[middle:]
    elif broken == "a Huffman table libjpeg refuses":
        table = data.index(b"\xff\xc4")
        data = data[:table + 5] + b"\xff" + data[table + 6:]
    else:
        getdecoder = Image._getdecoder

        class FailingHalfWay:  # libjpeg's error for a broken stream, once half the file is read
            def __init__(self, decoder):
                self.decoder, self.calls = decoder, 0

            def decode(self, pending):
                self.calls += 1
                return (-1, -2) if self.calls > imaging.DECODE_PIECES // 2 else self.decoder.decode(pending)

            def __getattr__(self, name):
                return getattr(self.decoder, name)

        monkeypatch.setattr(Image, "_getdecoder", lambda *args: FailingHalfWay(getdecoder(*args)))
    passing, add = [], imaging._FirstPasses.add

    def slow_add(self, decoded, top, bottom):
        passing.append("started")
        time.sleep(0.05)
        add(self, decoded, top, bottom)
        passing.append("ended")

    monkeypatch.setattr(imaging._FirstPasses, "add", slow_add)
    decodes = streamed_decodes(monkeypatch)
    outcomes = []
    for threads in (1, 2):
        passing.clear()
        try:
            outcomes.append([[f.data for f in v.files] for v in render(data, registry, threads=threads).variations])
        except RejectedImage as refused:
            outcomes.append(str(refused))
        assert passing.count("started") == passing.count("ended"), "a first pass still ran when render returned"
    assert len(decodes) == 1
    if broken == "a decoder error half way":  # the whole decode reads the file in one piece: it cannot fail half way
        assert outcomes[1] == "truncated or corrupt JPEG data (broken data stream when reading image file); " \
                              "the upload may be incomplete"
        assert passing, "strips were handed on before the error"
    else:
        assert outcomes[0] == outcomes[1]
        assert isinstance(outcomes[0], str) == (broken == "a Huffman table libjpeg refuses")


def test_a_first_pass_that_fails_fails_the_render_with_its_own_error(registry, monkeypatch):
    """Out of memory in a first pass is not corrupt data: the error is raised as it is."""
    from pipeline import imaging

    def failing(self, decoded, top, bottom):
        if top:
            raise MemoryError("no room for the strip")

    monkeypatch.setattr(imaging._FirstPasses, "add", failing)
    data = encode(samples.photo(8000, 2500, seed=3), "JPEG", quality=92)
    with pytest.raises(MemoryError, match="no room for the strip"):
        render(data, registry, threads=2)


def decoded_in_strips(data: bytes, wanted: tuple[int, int], monkeypatch, threads: int = 3):
    """The decode shrink_on_load sets up for `wanted`: in strips on `threads` threads (None when
    not cut), whole on one, and the rows each strip's decoder wrote. A strip may be small here."""
    from pipeline import imaging

    monkeypatch.setattr(imaging, "MIN_STRIP_BYTES", 2**10)
    strips, decode_strip = [], imaging._decode_strip
    monkeypatch.setattr(imaging, "_decode_strip", lambda image, extents, *rest: (
        strips.append(extents[1::2]), decode_strip(image, extents, *rest))[1])
    opened = []
    for _ in range(2):
        opened.append(Image.open(io.BytesIO(data)))
        imaging.shrink_on_load(opened[-1], data, wanted)
    cut = imaging._decode_in_strips(opened[0], data, imaging._render_threads(threads), threads)
    opened[1].load()
    return cut, opened[1], sorted(strips)


@functools.cache
def marked_jpeg() -> bytes:
    """A 1600x1200 photo with a restart marker every row of MCUs (75 rows, 100 MCUs each)."""
    return encode(samples.photo(1600, 1200, seed=3), "JPEG", quality=92, restart_marker_rows=1)


STRIP_ENCODINGS = {
    "4:2:0, a marker every row": dict(restart_marker_rows=1),
    "4:4:4, every other row": dict(restart_marker_rows=2, subsampling=0),
    "4:2:2, every row": dict(restart_marker_rows=1, subsampling=1),
    "4:2:0, every 7 MCUs (rows start mid-interval)": dict(restart_marker_blocks=7),
}


@pytest.mark.parametrize("wanted", [(800, 600), (600, 450), (400, 300), (200, 150)], ids=["1/2", "3/8", "1/4", "1/8"])
@pytest.mark.parametrize("options", STRIP_ENCODINGS.values(), ids=STRIP_ENCODINGS.keys())
def test_a_jpeg_with_restart_markers_decodes_in_strips_byte_for_byte_as_whole(monkeypatch, options, wanted):
    """Android phones write restart markers; on several cores the decode is cut at them into strips
    decoded at once, which join without a seam at every DCT scale and chroma subsampling."""
    data = encode(samples.photo(1600, 1200, seed=3), "JPEG", quality=92, **options)
    cut, whole, strips = decoded_in_strips(data, wanted, monkeypatch)
    assert cut is not None and len(strips) == 3, "not decoded in three strips"
    assert [top for top, _ in strips] == [0] + [bottom for _, bottom in strips[:-1]] and strips[-1][1] == whole.height
    assert cut.size == whole.size and cut.tobytes() == whole.tobytes()


def numbered_1_2_3(data: bytes) -> bytes:
    """An RGB-stored JPEG whose components are numbered 1, 2, 3: only Adobe's APP14 says RGB."""
    data = bytearray(data)
    frame, scan = data.index(b"\xff\xc0"), data.index(b"\xff\xda")
    for component in range(3):
        data[frame + 10 + 3 * component] = data[scan + 5 + 2 * component] = component + 1
    return bytes(data)


@pytest.mark.parametrize("image, store", [(samples.photo(1601, 1203, seed=5).convert("L"), encode),
                                          (samples.photo(1600, 1200, seed=5).convert("CMYK"), encode),
                                          (samples.photo(1600, 1200, seed=5),
                                           lambda *a, **k: numbered_1_2_3(encode(*a, keep_rgb=True, **k)))],
                         ids=["greyscale", "CMYK", "RGB stored as RGB"])
def test_greyscale_cmyk_and_rgb_jpegs_with_restart_markers_decode_in_strips_as_whole(monkeypatch, image, store):
    """Each strip's JPEG keeps APP0 and Adobe's APP14: libjpeg reads the colour transform from them."""
    data = store(image, "JPEG", quality=92, restart_marker_rows=1)
    cut, whole, strips = decoded_in_strips(data, (400, 300), monkeypatch)
    assert cut is not None and len(strips) == 3 and cut.mode == whole.mode
    assert cut.tobytes() == whole.tobytes()


def jpeg_440(width: int, height: int, **options) -> bytes:
    """A 4:4:0 JPEG (luma sampled 1x2, chroma 1x1: what jpegtran makes of a 4:2:2 camera JPEG
    turned 90 degrees): Pillow's 4:2:2 JPEG of twice the width and half the height, relabelled.
    Each MCU holds the same four blocks, so its data stays valid."""
    data = bytearray(encode(samples.photo(2 * width, height // 2, seed=7), "JPEG", quality=92, subsampling=1,
                            **options))
    frame = data.index(b"\xff\xc0")
    data[frame + 5:frame + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    assert data[frame + 11] == 0x21
    data[frame + 11] = 0x12
    return bytes(data)


@pytest.mark.parametrize("wanted", [(400, 600), (300, 450), (200, 300), (100, 150)], ids=["1/2", "3/8", "1/4", "1/8"])
def test_a_jpeg_whose_chroma_libjpeg_upsamples_vertically_is_decoded_whole(registry, monkeypatch, wanted):
    """4:4:0's chroma is upsampled vertically at every scale, from the rows on both sides of each
    one (at 1/8 by repeating rows, but it is not worth telling apart): across a strip's edge."""
    data = jpeg_440(800, 1200, restart_marker_rows=1)
    cut, whole, strips = decoded_in_strips(data, wanted, monkeypatch)
    assert whole.size == wanted
    assert cut is None and strips == []


@pytest.mark.parametrize("case", ["no restart markers", "progressive", "components in separate scans",
                                  "only a subsampled component's scan", "tables over 64 KiB", "arithmetic-coded",
                                  "full size", "one thread"])
def test_a_jpeg_is_decoded_whole_when_strips_would_not_join_or_not_help(monkeypatch, case):
    """Not cut: without markers; progressive or with its components in separate scans (each scan
    covers every row); arithmetic-coded (not tried: Pillow cannot write one to test); at full size,
    where libjpeg upsamples chroma across a strip's edge; on one thread."""
    photo, marked = samples.photo(1600, 1200, seed=3), dict(quality=92, restart_marker_rows=1)
    data = {"no restart markers": lambda: encode(photo, "JPEG", quality=92),
            "progressive": lambda: encode(photo, "JPEG", progressive=True, **marked),
            "components in separate scans": lambda: jpeg_in_separate_scans(photo, **marked),
            # its blocks cover 16x16 pixels: no row of 8x8 MCUs
            "only a subsampled component's scan": lambda: jpeg_in_separate_scans(photo, **marked, only=1),
            "tables over 64 KiB": lambda: repeated_tables(encode(photo, "JPEG", **marked), 2**16),
            "arithmetic-coded": lambda: encode(photo, "JPEG", **marked).replace(b"\xff\xc0", b"\xff\xc9", 1),
            }.get(case, lambda: encode(photo, "JPEG", **marked))()
    wanted = (1600, 1200) if case == "full size" else (400, 300)
    if case == "arithmetic-coded":  # Huffman data read as arithmetic-coded: only whether it is cut counts
        from pipeline import imaging

        monkeypatch.setattr(imaging, "MIN_STRIP_BYTES", 2**10)
        image = Image.open(io.BytesIO(data))
        imaging.shrink_on_load(image, data, wanted)
        assert imaging._decode_in_strips(image, data, imaging._render_threads(3), 3) is None
        return
    cut, whole, strips = decoded_in_strips(data, wanted, monkeypatch, threads=1 if case == "one thread" else 3)
    assert cut is None and strips == []
    if case != "only a subsampled component's scan":  # the others' pixels are the photo's
        assert psnr(whole.convert("RGB"), photo.resize(whole.size, Image.Resampling.LANCZOS)) > 25, "the photo itself"


def test_an_extended_sequential_jpeg_is_cut_like_a_baseline_one(monkeypatch):
    """SOF1 (extended sequential, Huffman) codes 8-bit samples exactly as SOF0 does."""
    data = marked_jpeg()
    cut, whole, strips = decoded_in_strips(data.replace(b"\xff\xc0", b"\xff\xc1", 1), (400, 300), monkeypatch)
    assert len(strips) == 3 and cut.tobytes() == whole.tobytes()


def test_a_cut_found_from_a_middle_byte_of_a_marker_counts_that_marker(monkeypatch):
    """A strip's share of the bytes may end on the second byte of a restart marker: neither the
    count up to it nor the search after it would see that marker, and every count after would be
    one short (the strips would then not be cut at all)."""
    data = marked_jpeg()
    start = data.index(b"\xff\xda")
    start += 2 + int.from_bytes(data[start + 2:start + 4], "big")
    marker = data.index(b"\xff\xd3", (start + len(data)) // 2)  # a restart marker past the middle
    # Trailing bytes after the end of the image put the middle of the data on the marker's D3.
    padded = data + bytes(2 * (marker + 1 - start) - (len(data) - start))
    assert start + (len(padded) - start) // 2 == marker + 1
    cut, whole, strips = decoded_in_strips(padded, (400, 300), monkeypatch, threads=2)
    assert len(strips) == 2 and cut.tobytes() == whole.tobytes()


def restart_markers(data: bytes) -> list[int]:
    """Where the restart markers of a one-scan JPEG's data are."""
    start = data.index(b"\xff\xda")
    start += 2 + int.from_bytes(data[start + 2:start + 4], "big")
    return [i for i in range(start, len(data) - 1) if data[i] == 0xFF and 0xD0 <= data[i + 1] <= 0xD7]


@pytest.mark.parametrize("lost", ["one marker", "eight intervals, each with its marker",
                                  "the marker after a strip's share of the bytes"])
def test_a_scan_whose_markers_are_out_of_order_is_decoded_whole(monkeypatch, lost):
    """A damaged file: libjpeg resynchronises by marker number, so a count of markers would put
    the cuts elsewhere than its rows (eight intervals lost leave the count on an RST7 still).
    Markers are checked both where they are counted and where a cut is searched for after that."""
    data = marked_jpeg()
    markers = restart_markers(data)
    if lost == "one marker":
        data = data[:markers[1]] + data[markers[1] + 2:]
    elif lost == "the marker after a strip's share of the bytes":
        from pipeline.imaging import _jpeg_layout

        start, end = _jpeg_layout(data).data_start, len(data) - 2  # the scan, to its end-of-image marker
        after = next(m for m in markers if m >= start + (end - start) // 3)
        data = data[:after] + data[after + 2:]
    else:
        for j in range(16, 0, -2):  # all well before the first strip's share of the bytes
            data = data[:markers[j]] + data[markers[j + 1]:]
    cut, whole, strips = decoded_in_strips(data, (400, 300), monkeypatch)
    assert cut is None and strips == []
    assert whole.size == (400, 300)


@pytest.mark.parametrize("broken", ["a second scan's header amid the data", "a Huffman table libjpeg refuses"])
def test_a_jpeg_libjpeg_refuses_is_refused_on_every_cpu(registry, monkeypatch, broken):
    """The strips may not decode what the whole decode refuses, nor fail silently."""
    from pipeline import imaging

    monkeypatch.setattr(imaging, "MIN_STRIP_BYTES", 2**14)
    data = encode(samples.photo(4032, 3024, seed=3), "JPEG", quality=92, restart_marker_rows=1)
    if broken == "a Huffman table libjpeg refuses":
        table = data.index(b"\xff\xc4")
        data = data[:table + 5] + b"\xff" + data[table + 6:]  # its first count: over 256 codes
    else:
        sos = data.index(b"\xff\xda")
        header = data[sos:sos + 2 + int.from_bytes(data[sos + 2:sos + 4], "big")]
        late = restart_markers(data)[60]  # in the last strip's rows
        data = data[:late] + header + data[late:]
    strips, decode_strip = [], imaging._decode_strip
    monkeypatch.setattr(imaging, "_decode_strip", lambda *strip: (strips.append(strip[1]), decode_strip(*strip)))
    refusals = []
    for threads in (1, 3):
        with pytest.raises(RejectedImage, match="corrupt JPEG data") as refused:
            render(data, registry, threads=threads)
        refusals.append(str(refused.value))
    assert refusals[0] == refusals[1]
    assert bool(strips) == (broken == "a Huffman table libjpeg refuses"), "strips only for a scan that is whole"


def test_restart_markers_without_a_restart_interval_are_left_to_libjpeg(monkeypatch):
    data = marked_jpeg()
    dri = data.index(b"\xff\xdd")
    cut, _, strips = decoded_in_strips(data[:dri] + data[dri + 6:], (400, 300), monkeypatch)
    assert cut is None and strips == []


def test_the_last_restart_interval_defined_is_the_one_counted(monkeypatch):
    """As in libjpeg, a second DRI segment replaces the first."""
    data = marked_jpeg()
    dri = data.index(b"\xff\xdd")
    twice = data[:dri] + b"\xff\xdd\x00\x04\x00\x03" + data[dri:]
    cut, whole, strips = decoded_in_strips(twice, (400, 300), monkeypatch)
    assert len(strips) == 3 and cut.tobytes() == whole.tobytes()


def test_a_greyscale_jpeg_declaring_2x2_sampling_is_cut_at_its_rows_of_blocks(monkeypatch):
    """One component's scan codes its 8x8 blocks one by one, whatever sampling its frame declares."""
    data = bytearray(encode(samples.photo(1600, 1200, seed=3).convert("L"), "JPEG", quality=92,
                            restart_marker_rows=1))
    frame = data.index(b"\xff\xc0")
    assert data[frame + 11] == 0x11
    data[frame + 11] = 0x22
    cut, whole, strips = decoded_in_strips(bytes(data), (400, 300), monkeypatch)
    assert len(strips) == 3 and cut.tobytes() == whole.tobytes()


@pytest.mark.parametrize("hidden", ["ffd0 0008 fffe 000a aaaa ffdd 0004 0064",  # after an RST0
                                    "ffdd 0004 007d ff00 000a ffdd 0004 0064 0000"],  # after FF 00
                         ids=["a marker without a segment", "a stuffed zero"])
def test_a_header_read_otherwise_by_libjpeg_is_never_cut(monkeypatch, hidden):
    """libjpeg reads an RSTn or TEM marker in the header as a marker without a segment, and skips
    FF 00 as junk, on to the next marker: read as segments, these headers would hide the DRI that
    counts (a row, 100 MCUs) and show another (125): cut at the wrong rows."""
    data = marked_jpeg()
    sos = data.index(b"\xff\xda")
    tricky = data[:sos] + bytes.fromhex(hidden) + data[sos:]
    cut, _, strips = decoded_in_strips(tricky, (400, 300), monkeypatch)
    assert cut is None and strips == []


def test_segments_libjpeg_skips_are_not_copied_into_every_strip(monkeypatch):
    """A header may carry megabytes of comments and metadata: each strip's JPEG has only what its
    decoder reads."""
    from pipeline import imaging

    data = marked_jpeg()
    comments = b"".join(b"\xff\xfe\xff\xff" + bytes(65533) for _ in range(16))
    bloated = data[:2] + comments + data[2:]
    cut, whole, strips = decoded_in_strips(bloated, (400, 300), monkeypatch)
    assert len(strips) == 3 and cut.tobytes() == whole.tobytes()
    streams, decode_strip = [], imaging._decode_strip
    monkeypatch.setattr(imaging, "_decode_strip", lambda image, extents, stream, *rest: (
        streams.append(len(stream)), decode_strip(image, extents, stream, *rest))[1])
    decoded_in_strips(bloated, (400, 300), monkeypatch)
    assert sum(streams) < len(data) + 3 * 1000


@pytest.mark.parametrize("failing", ["the calling thread's", "a pool thread's"])
def test_a_failing_strip_fails_the_render_once_every_strip_has_stopped(registry, monkeypatch, failing):
    """No strip may still be decoding into freed memory, or holding it, once render has raised."""
    from pipeline import imaging

    monkeypatch.setattr(imaging, "MIN_STRIP_BYTES", 2**14)
    data = encode(samples.photo(4032, 3024, seed=3), "JPEG", quality=92, restart_marker_rows=1)
    finished, decode_strip = [], imaging._decode_strip

    def strip(image, extents, *rest):
        first, last = extents[1] == 0, extents[3] == image.height
        if first if failing == "the calling thread's" else last:
            raise OSError("broken data stream")
        time.sleep(0.3)
        decode_strip(image, extents, *rest)
        finished.append(extents)

    monkeypatch.setattr(imaging, "_decode_strip", strip)
    with pytest.raises(RejectedImage, match="corrupt JPEG data .broken data stream"):
        render(data, registry, threads=3)
    assert len(finished) == 2, "a strip was still running when render raised"


@pytest.mark.parametrize("height", [700, 896], ids=["44 rows", "56 rows, the last cut's"])
def test_a_frame_shorter_than_its_scan_is_cut_only_within_its_rows(monkeypatch, height):
    """A frame header may declare fewer rows than its scan holds; libjpeg decodes those rows only,
    so a cut at or past their end would make a strip of no or negative height."""
    data = bytearray(marked_jpeg())
    frame = data.index(b"\xff\xc0")
    data[frame + 5:frame + 7] = height.to_bytes(2, "big")  # a cut can start every 8th row of MCUs (RST7)
    cut, whole, strips = decoded_in_strips(bytes(data), (400, height // 4), monkeypatch)
    assert whole.size == (400, height // 4)
    assert strips == [(0, 32 * 16 // 4), (32 * 16 // 4, height // 4)], "the cut a third in (row 32) only"
    assert cut.tobytes() == whole.tobytes()


def test_the_cuts_stay_within_the_first_picture(monkeypatch):
    """Further pictures (an MPO's gain map) follow the first one's end-of-image marker and have
    restart markers of their own: counting on past the end would cut the photo at the wrong rows.
    Here the photo's scan ends after 39 intervals and a 40th; its end-of-image marker counted as
    a restart would make the gain map's RST7 markers look like row starts of the photo."""
    photo = marked_jpeg()
    markers = [i for i in range(photo.index(b"\xff\xda"), len(photo) - 1)
               if photo[i] == 0xFF and 0xD0 <= photo[i + 1] <= 0xD7]
    early = photo[:markers[39]] + b"\xff\xd9"  # 40 intervals of the 75 rows, then its end
    gain_map = encode(samples.photo(1600, 2400, seed=4), "JPEG", quality=92, restart_marker_rows=1)
    cut, whole, strips = decoded_in_strips(early + gain_map, (400, 300), monkeypatch)
    if cut is not None:
        assert cut.tobytes() == whole.tobytes()
    assert all(bottom <= 40 * 16 // 4 for _, bottom in strips[:-1]), strips


def test_what_follows_the_picture_neither_stops_nor_unbalances_the_cuts(monkeypatch):
    """Phones append a gain map (MPO) or a motion photo's video after the photo's end-of-image
    marker, often more bytes than the photo: the strips share the photo's scan, not the file."""
    photo = marked_jpeg()
    trailer = encode(samples.photo(1600, 2400, seed=4), "JPEG", quality=92, restart_marker_rows=1) * 3
    cut, whole, strips = decoded_in_strips(photo + trailer, (400, 300), monkeypatch, threads=2)
    assert len(strips) == 2 and cut.tobytes() == whole.tobytes()
    assert 0.3 < strips[0][1] / whole.height < 0.7, strips
    streams = []
    from pipeline import imaging

    monkeypatch.setattr(imaging, "_decode_strip", lambda image, extents, stream, *rest: streams.append(len(stream)))
    decoded_in_strips(photo + trailer, (400, 300), monkeypatch, threads=2)
    assert sum(streams) < len(photo) + 2000, "the trailer is not copied into a strip"


def test_counting_a_scan_of_nothing_but_markers_takes_little_memory():
    """Markers are listed a stretch of the scan at a time: all at once, 4 million of them took 650 MiB."""
    import tracemalloc

    from pipeline import imaging

    data = encode(samples.photo(4096, 4096, seed=3).convert("L"), "JPEG", quality=92, restart_marker_blocks=1)
    layout = imaging._jpeg_layout(data)
    markers = bytes(imaging.RESTARTS_IN_ORDER) * (2**23 // 16)  # 8 MiB: 4 million markers, in order
    scan = data[:layout.data_start] + markers + b"\xff\xd9"
    tracemalloc.start()
    try:
        imaging._restart_cuts(scan, layout, len(scan) - 2, 2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MiB"


def test_a_strip_whose_data_ends_before_its_rows_is_an_error():
    from pipeline import imaging

    data = marked_jpeg()
    image = Image.new("RGB", (400, 300))
    with pytest.raises(OSError, match="truncated"):
        imaging._decode_strip(image, (0, 0, 400, 300), data[:len(data) // 2], ("RGB", ""), (4, 0))


@pytest.mark.parametrize("threads", [1, 2])
def test_an_image_is_let_go_once_every_variation_made_from_it_is_cut(registry, monkeypatch, threads):
    """Peak memory holds only the images still needed: the decode goes once large and medium are cut
    from it, large once it is encoded, and nothing outlives the render (the next upload's peak)."""
    import weakref

    from pipeline import imaging

    made, alive_when = {}, {}
    decode_base, cut = imaging._decode_base, imaging._cut

    def remembered_decode(*args, **kwargs):
        decoded = decode_base(*args, **kwargs)
        made["decode"] = weakref.ref(decoded)
        return decoded

    def remembered_cut(source, upright, geometry, *passes):
        image = cut(source, upright, geometry, *passes)
        made[geometry.size] = weakref.ref(image)
        return image

    def on_variation(done):
        alive_when[done.variation.name] = {name for name, ref in made.items() if ref() is not None}

    monkeypatch.setattr(imaging, "_decode_base", remembered_decode)
    monkeypatch.setattr(imaging, "_cut", remembered_cut)
    data = samples.jpeg_bytes(samples.photo(4032, 3024, seed=7))  # decoded at 2016x1512, under large's 2048
    render(data, registry, threads=threads, on_variation=on_variation)
    if threads == 1:  # one order; on more threads large may still be cut or encoded while small is stored
        assert "decode" not in alive_when["small"] and (2048, 1536) not in alive_when["small"]
        assert (640, 480) in alive_when["small"], "small itself, being stored"
        assert (1280, 960) not in alive_when["small"], "small is the last variation cut from medium"
    assert not [name for name, ref in made.items() if ref() is not None], "nothing outlives the render"


def test_a_render_started_on_a_render_thread_finishes(registry, monkeypatch):
    """Renders share the process's render threads; one started on them (from `on_variation` or a
    plugin) runs inline, one thread, instead of waiting for threads that are all waiting for it."""
    import threading

    from pipeline import imaging

    monkeypatch.setattr(imaging, "_pools", {})  # should it deadlock, the other tests keep their threads
    big_steps, big_step = [], imaging._big_step
    monkeypatch.setattr(imaging, "_big_step", lambda *a: big_steps.append(a[-1]) or big_step(*a))
    photo = samples.jpeg_bytes(samples.photo(4032, 3024, seed=1))
    banded = samples.jpeg_bytes(samples.photo(6000, 4000, seed=2))  # its first resize is cut in bands
    nested = []
    outer = threading.Thread(target=lambda: render(photo, registry, threads=2, on_variation=lambda done: nested.append(
        len(render(banded, registry, threads=2).variations))), daemon=True)
    outer.start()
    outer.join(timeout=60)
    assert not outer.is_alive(), "deadlocked"
    assert nested == [6] * 6 and big_steps == [1] * 6, "each nested render on its caller's thread alone"


def forked_render(data: bytes, registry, threads: int, *, holding=None):
    """Start a forked child that renders (while this process holds `holding`); its exit code,
    None if it did not end within a minute (killed)."""
    import contextlib
    import multiprocessing

    with holding or contextlib.nullcontext():
        child = multiprocessing.get_context("fork").Process(target=render, args=(data, registry),
                                                            kwargs={"threads": threads})
        child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        child.join()
        return None
    return child.exitcode


def test_a_forked_child_renders_after_its_parent_has(registry):
    """A forked child inherits the pool of render threads but not its threads; it makes its own."""
    data = samples.jpeg_bytes(samples.photo(4032, 3024, seed=1))
    render(data, registry, threads=2)
    assert forked_render(data, registry, 2) == 0


def test_a_child_forked_while_another_thread_makes_a_pool_makes_its_own(registry):
    """The lock that guards making a pool may be held by a thread the forked child does not have."""
    from pipeline import imaging

    data = samples.jpeg_bytes(samples.photo(1200, 900, seed=1))
    assert forked_render(data, registry, 3, holding=imaging._pools_made) == 0  # as if a pool were being made
    assert len(render(data, registry, threads=3).variations) == 6, "the parent goes on as before"


@pytest.mark.parametrize("function_mb, threads", [(None, 6), ("128", 1), ("1769", 1), ("1770", 2), ("3538", 2),
                                                  ("10240", 6)])
def test_a_lambda_function_renders_on_the_vcpus_its_memory_pays_for(registry, monkeypatch, function_mb, threads):
    """Lambda gives a full vCPU of time per 1769 MB but may show more vCPUs than that: six shown here."""
    from pipeline import imaging

    monkeypatch.setattr(imaging.os, "sched_getaffinity", lambda pid: set(range(6)))
    if function_mb:
        monkeypatch.setenv(imaging.LAMBDA_MEMORY_VARIABLE, function_mb)
    else:
        monkeypatch.delenv(imaging.LAMBDA_MEMORY_VARIABLE, raising=False)
    asked, render_threads = [], imaging._render_threads
    monkeypatch.setattr(imaging, "_render_threads", lambda n: asked.append(n) or render_threads(1))
    monkeypatch.setattr(imaging, "judging_limits", lambda config: {"max_bytes": 10**8, "max_pixels": 10**9,
                                                                  "memory_budget_bytes": 10**10})
    render(samples.jpeg_bytes(samples.photo(64, 48)), registry)
    assert asked == [threads]


def test_on_one_cpu_each_variation_is_handed_over_before_those_made_from_it(registry):
    """One CPU renders one step at a time: a variation is encoded and handed over (its files go to
    storage) before the smaller ones cut from it are made, so the puts overlap the rendering."""
    handed = []
    data = samples.jpeg_bytes(samples.photo(4032, 3024, seed=3))
    render(data, registry, threads=1, on_variation=lambda done: handed.append(done.variation.name))
    assert handed.index("medium") < handed.index("small") < handed.index("xsmall")
    assert handed.index("medium") < handed.index("square_medium") and handed[0] == "large"


def test_variations_of_one_size_keep_their_own_encoder_settings_when_encoded_at_once():
    """A photo smaller than the largest sizes gives several variations of one size; encoded at once
    on several threads, each must still get its own quality (Pillow keeps a save's settings on the
    image object, so they must not share one)."""
    from pipeline.registry import load_registry

    registry = load_registry(PipelineConfig.from_dict({"plugins": {"sizes": {"quality": {"medium": 40}}}}))
    data = samples.jpeg_bytes(samples.photo(1000, 750, grain=0))

    def tables(quality):
        out = io.BytesIO()
        Image.new("RGB", (64, 64)).save(out, "JPEG", quality=quality)
        return Image.open(out).quantization

    for _ in range(20):  # a race: each render gives it a chance
        made = {v.variation.name: Image.open(io.BytesIO(v.files[0].data)) for v in render(data, registry, threads=4).variations}
        assert made["large"].size == made["medium"].size == (1000, 750)
        assert made["medium"].quantization == tables(40) and made["large"].quantization == tables(82)


@pytest.mark.parametrize("processes, threads", [(1, 6), (2, 3), (4, 1), (12, 1)])
def test_processes_rendering_at_once_share_the_cpus(monkeypatch, processes, threads):
    """The local backfill's workers (one per CPU by default) each render on their share of the
    CPUs, not on a thread per CPU each."""
    from pipeline import imaging

    monkeypatch.setattr(imaging.os, "sched_getaffinity", lambda pid: set(range(6)))
    monkeypatch.delenv(imaging.LAMBDA_MEMORY_VARIABLE, raising=False)
    monkeypatch.setattr(imaging, "_cpus_shared_by", 1)
    imaging.share_cpus(processes)
    assert imaging.usable_cpus() == threads


def test_a_failed_band_is_raised_only_once_every_band_has_ended(monkeypatch):
    """The error leaves the render with no band still resizing (and holding memory) behind it."""
    import threading
    import time

    from pipeline import imaging

    ended, real_resize = [], Image.Image.resize

    def resize(self, size, resample=None, box=None, reducing_gap=None):
        if box and box[0] == 0:
            raise MemoryError("first band")
        time.sleep(0.2)
        ended.append(threading.current_thread().name)
        return real_resize(self, size, resample, box, reducing_gap)

    monkeypatch.setattr(Image.Image, "resize", resize)
    source = Image.new("RGB", (4096, 100))
    with pytest.raises(MemoryError, match="first band"):
        imaging._big_step(source, (2048, 50), (0, 0, 4096, 100), None, imaging._render_threads(2), 2)
    assert len(ended) == 1, "the other band had ended"
