"""Memory: what the resize function holds whatever the upload, and each upload's peak against
the estimate that judges it.

    .venv/bin/python benchmarks/memory.py [--quick]

First the measurement behind RUNTIME_ALLOWANCE in pipeline/imaging.py: a process that imports
what the resize handler imports and has loaded every decoder and encoder (a tiny upload of each
format rendered with every built-in plugin on), then the peak of encoding the variations of a
2048x1536 photo with every built-in encoder and holding all the outputs. Then uploads of every
accepted format and mode, generated and cached under .cache/memory-bench, each rendered in a
fresh process of that kind: the peak over what the process held before, next to
estimate_memory, which must never be below it. --quick skips the 48 MP and 200 MP uploads.
"""

from __future__ import annotations

import gc
import io
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from pipeline import samples  # noqa: E402

CACHE = ROOT / ".cache" / "memory-bench"
EVERY_PLUGIN = {"plugins": {"webp": {"enabled": True}, "avif": {"enabled": True},
                            "watermark": {"enabled": True, "text": "(c) ACME"}}}
NO_BUDGET = {"max_memory_mb": 1 << 20}  # measure everything, refuse nothing


def encoded(image: Image.Image, image_format: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, image_format, **options)
    return out.getvalue()


def sixteen_bit_grey(image: Image.Image) -> Image.Image:
    return image.convert("L").convert("I").point(lambda value: value * 257).convert("I;16")


KINDS = {
    "JPEG baseline 4:2:0": lambda image: encoded(image, "JPEG", quality=90),
    "JPEG baseline 4:4:4": lambda image: encoded(image, "JPEG", quality=90, subsampling=0),
    # decoded in strips on several cores (imaging._decode_in_strips)
    "JPEG restart markers 4:2:0": lambda image: encoded(image, "JPEG", quality=90, restart_marker_rows=1),
    "JPEG progressive 4:2:0": lambda image: encoded(image, "JPEG", quality=90, progressive=True),
    "JPEG progressive 4:4:4": lambda image: encoded(image, "JPEG", quality=90, progressive=True, subsampling=0),
    "JPEG greyscale": lambda image: encoded(image.convert("L"), "JPEG", quality=90),
    "JPEG CMYK": lambda image: encoded(image.convert("CMYK"), "JPEG", quality=90),
    "PNG RGB": lambda image: encoded(image, "PNG", compress_level=1),
    "PNG RGBA": lambda image: encoded(image.convert("RGBA"), "PNG", compress_level=1),
    "PNG palette": lambda image: encoded(image.convert("P"), "PNG", compress_level=1),
    "PNG 16-bit grey": lambda image: encoded(sixteen_bit_grey(image), "PNG", compress_level=1),
    "GIF palette": lambda image: encoded(image.convert("P"), "GIF"),
    "WebP lossy": lambda image: encoded(image, "WEBP", quality=80, method=0),
    "WebP lossless": lambda image: encoded(image, "WEBP", lossless=True, quality=0, method=0),
    "WebP lossy alpha": lambda image: encoded(image.convert("RGBA"), "WEBP", quality=80, method=0),
    "AVIF": lambda image: encoded(image, "AVIF", quality=50, speed=10),
    "HEIF": lambda image: encoded(image, "HEIF", quality=50),
}
SIZES = [(4000, 3000), (8000, 6000)]
PHONE_200MP = (16320, 12240)


def cases(quick: bool) -> list[tuple[str, Path]]:
    import pillow_heif

    pillow_heif.register_heif_opener()
    CACHE.mkdir(parents=True, exist_ok=True)
    wanted = [(kind, size) for size in SIZES[:1 if quick else None] for kind in KINDS]
    if not quick:
        wanted += [("JPEG baseline 4:2:0", PHONE_200MP), ("JPEG progressive 4:2:0", PHONE_200MP)]
    found = []
    for kind, (width, height) in wanted:
        path = CACHE / f"{kind.replace(' ', '-').replace(':', '')}-{width}x{height}"
        if not path.exists():
            path.write_bytes(KINDS[kind](samples.enlarged_photo(width, height)))
        found.append((f"{kind} {width}x{height}", path))
    return found


# --- what runs in the measured processes ------------------------------------------------------

def _status() -> dict[str, int]:
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024
    return fields


def _reset_peak() -> int:
    """Forget the peak so far (VmHWM); return what the process holds now."""
    gc.collect()
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    return _status()["VmRSS"]


def _resize_process(config: dict):
    """This process made like a warm resize function's: its imports, every codec loaded."""
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    import pillow_heif

    import pipeline.handlers
    from pipeline.config import PipelineConfig
    from pipeline.imaging import render
    from pipeline.registry import build_registry

    pipeline.handlers.s3_client()
    registry = build_registry(PipelineConfig.from_dict(config))
    warm = build_registry(PipelineConfig.from_dict({**EVERY_PLUGIN, **NO_BUDGET}))
    pillow_heif.register_heif_opener()  # to make the HEIF upload; the pipeline registers it itself
    tiny = samples.photo(64, 48)
    for image_format in ("JPEG", "PNG", "GIF", "WEBP", "AVIF", "HEIF"):
        render(encoded(tiny, image_format), warm)
    return registry


def measure_runtime() -> dict:
    registry = _resize_process(EVERY_PLUGIN)
    from pipeline.imaging import render

    idle = _reset_peak()
    handed_over = []  # what render gives each encoder: the variation, post-processed
    for encoder in registry.encoders.values():
        object.__setattr__(encoder, "encode", lambda pixels, encoder=encoder, real=encoder.encode:
                           handed_over.append((real, pixels)) or b"0")  # not empty: that is refused
    render(samples.jpeg_bytes(samples.photo(2048, 1536)), registry)
    before_encoding = _reset_peak()
    outputs = [encode(pixels) for encode, pixels in handed_over]
    return {"idle": idle, "encoding": _status()["VmHWM"] - before_encoding, "outputs": sum(map(len, outputs))}


def measure_render(path: str) -> dict:
    from pipeline.imaging import RejectedImage, estimate_memory, render

    registry = _resize_process(NO_BUDGET)
    data = Path(path).read_bytes()
    estimate = estimate_memory(data, registry)
    before = _reset_peak()
    try:
        render(data, registry)
        outcome = "rendered"
    except RejectedImage as rejection:
        outcome = rejection.reason
    return {"peak": _status()["VmHWM"] - before, "estimate": estimate, "outcome": outcome}


# --- the report --------------------------------------------------------------------------------

def worker(*argv: str) -> dict:
    from pipeline.config import FUNCTION_ENVIRONMENT  # the functions' process, as deployed

    measured = subprocess.run([sys.executable, __file__, "--worker", *argv], capture_output=True, text=True,
                              cwd=ROOT, env={**os.environ, "PIPELINE_CONFIG": "", **FUNCTION_ENVIRONMENT})
    if measured.returncode:
        raise SystemExit(f"{' '.join(argv)} failed:\n{measured.stderr}")
    return json.loads(measured.stdout)


def main() -> None:
    from pipeline.imaging import RUNTIME_ALLOWANCE

    mib = 2**20
    runtime = worker("runtime")
    print(f"a warm resize process (its imports, every codec loaded)      {runtime['idle'] / mib:6.0f} MiB")
    print(f"encoding a 2048x1536 photo's variations, every built-in encoder {runtime['encoding'] / mib:3.0f} MiB"
          f" (outputs {runtime['outputs'] / mib:.1f} MiB)")
    print(f"together {(runtime['idle'] + runtime['encoding']) / mib:.0f} MiB; RUNTIME_ALLOWANCE is "
          f"{RUNTIME_ALLOWANCE / mib:.0f} MiB\n")
    print(f"{'upload':<38}{'file':>9}{'peak':>9}{'estimate':>10}")
    for name, path in cases("--quick" in sys.argv):
        result = worker("render", str(path))
        flag = "" if result["estimate"] >= result["peak"] else "   UNDER THE PEAK"
        outcome = "" if result["outcome"] == "rendered" else f"   {result['outcome']}"
        print(f"{name:<38}{path.stat().st_size / mib:>5.1f} MiB{result['peak'] / mib:>5.0f} MiB"
              f"{result['estimate'] / mib:>6.0f} MiB{flag}{outcome}", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        what, *args = sys.argv[2:]
        print(json.dumps(measure_runtime() if what == "runtime" else measure_render(*args)))
    else:
        main()
