"""Out-of-memory is never how an upload fails: each renders, or is refused with a reason first.

Every upload is rendered in a fresh process that is what a 512 MB resize function runs: the
handler's imports, AWS_LAMBDA_FUNCTION_MEMORY_SIZE=512, the default configuration. Its peak
resident memory must stay under the function's memory whatever the upload. The uploads are
generated here, outside the measured process, and the large ones cached under
.cache/test-images/<VERSION>.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from conftest import ROOT
from images import animated_webp_canvas, encode, jpeg_header_declaring
from pipeline import samples
from pipeline.config import ConfigError, PipelineConfig
from pipeline.imaging import (LAMBDA_MEMORY_VARIABLE, RUNTIME_ALLOWANCE, UPLOAD_COPIES, RejectedImage, estimate_memory,
                              judging_limits, render)
from pipeline.registry import build_registry

VERSION = "memory-2"  # change it when an upload below changes, so cached files are made again
CACHE = ROOT / ".cache" / "test-images" / VERSION
FUNCTION_MB = 512
MiB = 2**20

MEASURE = """
import json, sys
import pipeline.handlers  # what the resize function imports before any upload
from pipeline.imaging import RejectedImage, render
from pipeline.registry import load_registry

def peak():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))

data = open(sys.argv[1], "rb").read()
try:
    rendering = render(data, load_registry())
    result = {"rendered": [rendering.source.width, rendering.source.height]}
except RejectedImage as rejection:
    result = {"refused": rejection.reason}
print(json.dumps({**result, "peak": peak()}))
"""


def sixteen_bit_grey(image: Image.Image) -> Image.Image:
    return image.convert("L").convert("I").point(lambda value: value * 257).convert("I;16")


def animated_webp(photo: Image.Image) -> bytes:
    return encode(photo, "WEBP", quality=50, method=0, save_all=True, append_images=[ImageOps.mirror(photo)],
                  duration=100)


def over_budget(size: str, kind: str) -> str:
    """The pattern of the reason an upload is refused for in a function of FUNCTION_MB."""
    budget = judging_limits(PipelineConfig(), {LAMBDA_MEMORY_VARIABLE: str(FUNCTION_MB)})["memory_budget_bytes"]
    return (rf"^{size} {kind}: decoding needs about [0-9.]+ (MiB|GiB), over the memory budget of "
            rf"{budget / MiB:.0f} MiB; not decoded$")


# (name, how to make it, what must come of it: the size rendered, or the pattern of the reason)
UPLOADS = [
    ("animated WebP of 144 bytes, 10000x10000 canvas", lambda: animated_webp_canvas(10000, 10000),
     over_budget("10000x10000", "WebP")),
    ("AVIF bomb: 10000x10000 of one colour", lambda: encode(Image.new("RGB", (10000, 10000), (40, 90, 160)),
                                                             "AVIF", quality=50, speed=10),
     over_budget("10000x10000", "AVIF")),
    ("16-bit PNG bomb: 10000x10000 of one grey", lambda: encode(Image.new("I;16", (10000, 10000), 40000), "PNG"),
     over_budget("10000x10000", "PNG")),
    ("JPEG of 629 bytes declaring 10000x10000", lambda: jpeg_header_declaring(10000, 10000),
     r"^truncated JPEG data \(10000x10000 pixels need at least 292,968 bytes of image data, the file has \d+\); "
     r"the upload may be incomplete$"),
    ("animated WebP, two 100 MP photos", lambda: animated_webp(samples.enlarged_photo(10000, 10000)),
     over_budget("10000x10000", "WebP")),
    ("lossless WebP, 48 MP photo", lambda: encode(samples.enlarged_photo(8000, 6000), "WEBP", lossless=True,
                                                   quality=0, method=0),
     over_budget("8000x6000", "WebP")),
    ("AVIF, 63 MP photo", lambda: encode(samples.enlarged_photo(9000, 7000), "AVIF", quality=50, speed=10),
     over_budget("9000x7000", "AVIF")),
    ("16-bit greyscale PNG, 63 MP scan", lambda: encode(sixteen_bit_grey(samples.enlarged_photo(9000, 7000)),
                                                         "PNG", compress_level=1),
     (9000, 7000)),
    ("palette GIF, 100 MP", lambda: encode(samples.enlarged_photo(10000, 10000).convert("P"), "GIF"),
     over_budget("10000x10000", "GIF")),
    ("baseline JPEG, 200 MP phone photo", lambda: samples.jpeg_bytes(samples.enlarged_photo(16320, 12240, grain=24)),
     (16320, 12240)),
]


def upload(name: str, make) -> Path:
    path = CACHE / (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") + ".bin")
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        path.with_suffix(".tmp").write_bytes(make())
        path.with_suffix(".tmp").rename(path)  # a run stopped midway leaves no half-written upload
    return path


@pytest.mark.parametrize("name, make, expected", UPLOADS, ids=[name for name, _, _ in UPLOADS])
def test_an_upload_renders_or_is_refused_within_the_functions_memory(name, make, expected):
    path = upload(name, make)
    environment = {key: value for key, value in os.environ.items() if key != "PIPELINE_CONFIG"}
    measured = subprocess.run([sys.executable, "-c", MEASURE, str(path)], cwd=ROOT, capture_output=True, text=True,
                              env={**environment, LAMBDA_MEMORY_VARIABLE: str(FUNCTION_MB)}, timeout=300)
    assert measured.returncode == 0, measured.stderr[-2000:]
    result = json.loads(measured.stdout)
    assert result["peak"] < FUNCTION_MB * MiB, f"{name}: peak {result['peak'] / MiB:.0f} MiB"
    if isinstance(expected, tuple):
        assert result.get("rendered") == list(expected), result
    else:
        assert re.match(expected, result.get("refused", "")), result


# --- the budget ----------------------------------------------------------------------------------

def test_off_lambda_the_budget_is_the_default_or_the_configurations():
    assert judging_limits(PipelineConfig(), {}) == {"max_bytes": 50 * MiB, "max_pixels": 1_000_000_000,
                                                    "memory_budget_bytes": 1024 * MiB}
    assert judging_limits(PipelineConfig.from_dict({"max_memory_mb": 3000}), {})["memory_budget_bytes"] == 3000 * MiB
    assert judging_limits(PipelineConfig.from_dict({"max_pixels": 5, "max_bytes": 7}), {}) == {
        "max_bytes": 7, "max_pixels": 5, "memory_budget_bytes": 1024 * MiB}


def test_in_lambda_the_budget_is_the_functions_memory_less_the_allowance():
    lambda_1769 = {LAMBDA_MEMORY_VARIABLE: "1769"}
    assert judging_limits(PipelineConfig(), lambda_1769)["memory_budget_bytes"] == 1769 * MiB - RUNTIME_ALLOWANCE
    lower = PipelineConfig.from_dict({"max_memory_mb": 500})
    assert judging_limits(lower, lambda_1769)["memory_budget_bytes"] == 500 * MiB
    higher = PipelineConfig.from_dict({"max_memory_mb": 4000})  # more than the function has would end in OOM
    assert judging_limits(higher, lambda_1769)["memory_budget_bytes"] == 1769 * MiB - RUNTIME_ALLOWANCE
    assert judging_limits(PipelineConfig(), {LAMBDA_MEMORY_VARIABLE: "128"})["memory_budget_bytes"] == 0


def test_render_reads_the_functions_memory_from_the_environment(registry, monkeypatch):
    data = samples.jpeg_bytes(samples.photo(1600, 1200))
    monkeypatch.setenv(LAMBDA_MEMORY_VARIABLE, str(RUNTIME_ALLOWANCE // MiB + 20))
    with pytest.raises(RejectedImage, match=r"^1600x1200 JPEG: decoding needs about \d+ MiB, over the memory "
                                            r"budget of 20 MiB; not decoded$"):
        render(data, registry)
    monkeypatch.setenv(LAMBDA_MEMORY_VARIABLE, "1769")
    assert render(data, registry).source.width == 1600


@pytest.mark.parametrize("value", [0, -1, "1024", 1.5, True])
def test_a_bad_max_memory_mb_names_the_key(value):
    with pytest.raises(ConfigError, match="'max_memory_mb' must be a positive whole number"):
        PipelineConfig.from_dict({"max_memory_mb": value})


def test_max_memory_mb_is_optional_and_survives_the_round_trip_to_lambda():
    assert "max_memory_mb" not in PipelineConfig().to_dict()  # configurations without it serialise as before
    config = PipelineConfig.from_dict({"max_memory_mb": 900, "max_pixels": 100_000_000})
    assert PipelineConfig.from_env({"PIPELINE_CONFIG": config.to_json()}) == config
    assert config.max_memory_mb == 900 and config.max_pixels == 100_000_000


# --- the estimate --------------------------------------------------------------------------------

def flat_jpeg(size: tuple[int, int], **options) -> bytes:
    """Quick to make at any size: the estimate reads only the header, and a flat picture encodes fast."""
    return encode(Image.new("RGB", size, (90, 120, 150)), "JPEG", quality=90, **options)


def test_a_progressive_jpeg_is_charged_for_every_blocks_coefficients(registry):
    baseline, progressive = flat_jpeg((8000, 6000)), flat_jpeg((8000, 6000), progressive=True)
    coefficients = (1000 * 750 + 2 * 500 * 375) * 64 * 2  # 4:2:0 blocks of 64 two-byte coefficients
    decoded_at_three_eighths = 3000 * 2250 * 4
    assert estimate_memory(baseline, registry) < coefficients
    assert estimate_memory(progressive, registry) > coefficients + decoded_at_three_eighths


def test_a_200_mp_phone_jpeg_fits_a_small_function_only_if_baseline(registry):
    phone = (16320, 12240)
    assert estimate_memory(flat_jpeg(phone), registry) < 300 * MiB  # decoded at 1/4: 4080x3060
    assert estimate_memory(flat_jpeg(phone, progressive=True), registry) > 600 * MiB


def test_the_estimate_follows_the_dct_scale_shrink_on_load_picks(registry):
    """A lossless frame is never DCT-scaled: the same header with it decodes at full size."""
    baseline = flat_jpeg((8000, 6000))
    frame = baseline.index(b"\xff\xc0")
    lossless = baseline[:frame] + b"\xff\xc3" + baseline[frame + 2:]
    full_size, three_eighths = 8000 * 6000 * 4, 3000 * 2250 * 4  # RGB is 4 bytes a pixel in Pillow
    assert estimate_memory(lossless, registry) - estimate_memory(baseline, registry) >= full_size - three_eighths


def test_sixteen_bit_greyscale_is_not_charged_for_full_size_32_bit_copies(registry):
    size = (8000, 6000)
    eight_bit = estimate_memory(encode(Image.new("L", size, 90), "PNG"), registry)
    sixteen_bit = estimate_memory(encode(Image.new("I;16", size, 40000), "PNG"), registry)
    assert eight_bit + size[0] * size[1] <= sixteen_bit < eight_bit + 2 * size[0] * size[1]


def test_frames_after_the_first_cost_nothing(registry):
    two, twenty = animated_webp_canvas(4000, 3000, frames=2), animated_webp_canvas(4000, 3000, frames=20)
    assert estimate_memory(twenty, registry) - estimate_memory(two, registry) == UPLOAD_COPIES * (len(twenty) - len(two))
    assert estimate_memory(two, registry) > 4000 * 3000 * 16  # two canvases, a frame copy and the image


def test_a_refusal_names_the_kind_the_estimate_and_the_budget():
    registry = build_registry(PipelineConfig.from_dict({"max_memory_mb": 100}))
    with pytest.raises(RejectedImage, match=r"^8000x6000 progressive JPEG: decoding needs about \d+ MiB, over the "
                                            r"memory budget of 100 MiB; not decoded$"):
        render(flat_jpeg((8000, 6000), progressive=True), registry)
