"""Whole-process benchmark: six default variations of a 40 MP and a 12 MP photo, one core each.

    make bench                  (or: .venv/bin/python benchmarks/bench.py [--runs N])

Contenders run alternately, run by run, each process pinned to one CPU (a 1769 MB Lambda has one
vCPU). Printed: median wall time, median CPU time and peak RSS of each, ratios against ours, the
floor measured in this same run (decode at the needed DCT scale plus the six encodes, in-process),
the quality of every contender's outputs (PSNR against LANCZOS from the full-size decode), and
what a process costs before any photo work (interpreter, imports, ours on a tiny JPEG).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import PIL  # noqa: E402
from PIL import Image, ImageChops, ImageStat  # noqa: E402

from pipeline import samples  # noqa: E402
from pipeline.imaging import shrink_on_load  # noqa: E402

CACHE = ROOT / ".cache" / "bench"
PHOTOS = {"40 MP": (8000, 5000), "12 MP": (4032, 3024)}
SIZES = {"large": 2048, "medium": 1280, "small": 640, "xsmall": 320}
SQUARES = {"square_medium": 600, "square_small": 150}
CPU = min(os.sched_getaffinity(0))


def make_photo(label: str, restart_marker_rows: int = 0) -> Path:
    """The photo, with a restart marker every `restart_marker_rows` rows of MCUs if that is not 0."""
    width, height = PHOTOS[label]
    path = CACHE / f"photo-{width}x{height}{f'-restart{restart_marker_rows}' if restart_marker_rows else ''}.jpg"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        data = samples.jpeg_bytes(samples.photo(width, height, seed=width), exif=samples.gps_exif(),
                                  restart_marker_rows=restart_marker_rows)
        path.write_bytes(data)
    return path


def contenders(python: str) -> dict[str, list[str]]:
    found = {
        "pipeline process (ours)": [python, "-m", "pipeline", "process", "{src}", "--out", "{out}", "--quiet"],
        "naive Pillow": [python, str(HERE / "naive_pillow.py"), "{src}", "{out}"],
    }
    try:
        subprocess.run([python, "-c", "import pyvips"], check=True, capture_output=True)
        found["libvips (pyvips) pyramid"] = [python, str(HERE / "vips_pyramid.py"), "{src}", "{out}"]
    except subprocess.CalledProcessError:
        print("(libvips skipped: pyvips is not installed; `make bench` installs it)")
    if imagemagick():
        found["ImageMagick convert, best"] = [
            "convert", "-define", "jpeg:size=2048x2048", "{src}", "-auto-orient", "-strip",
            "-interlace", "JPEG", "-quality", "82",
            "-resize", "2048x2048", "-write", "{out}/large.jpg",
            "-resize", "1280x1280", "-write", "{out}/medium.jpg",
            "(", "+clone", "-resize", "600x600^", "-gravity", "center", "-extent", "600x600",
            "-write", "{out}/square_medium.jpg", "+delete", ")",
            "-resize", "640x640", "-write", "{out}/small.jpg",
            "-resize", "320x320", "-write", "{out}/xsmall.jpg",
            "-resize", "150x150^", "-gravity", "center", "-extent", "150x150", "{out}/square_small.jpg",
        ]
    else:
        print("(ImageMagick skipped: Debian's imagemagick is not installed)")
    return found


def imagemagick() -> bool:
    try:
        version = subprocess.run(["convert", "-version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "ImageMagick" in version


def run_once(command: list[str], src: Path) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (MiB) of one whole process pinned to one CPU.

    spawn.py forks it, so the RSS includes spawn.py's own ~10 MiB at fork time, for every contender.
    """
    with tempfile.TemporaryDirectory() as out:
        argv = [part.replace("{src}", str(src)).replace("{out}", out) for part in command]
        result = spawn(argv)
        produced = sum(1 for _ in Path(out).rglob("*.jpg"))
        if produced < 6:
            raise SystemExit(f"{' '.join(argv)} wrote {produced} JPEG files, expected 6")
    return result["wall"], result["cpu"], result["rss_mib"]


def spawn(argv: list[str]) -> dict:
    spawned = subprocess.run([sys.executable, str(HERE / "spawn.py"), str(CPU), *argv], cwd=ROOT,
                             capture_output=True, text=True, check=True)
    result = json.loads(spawned.stdout)
    if result["status"] != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {result['stderr']}")
    return result


def start_up(python: str, runs: int, pyvips: bool) -> list[str]:
    """What a process costs before the photo: the interpreter, the imaging imports, ours whole."""
    tiny = CACHE / "photo-64x48.jpg"
    if not tiny.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tiny.write_bytes(samples.jpeg_bytes(samples.photo(64, 48)))
    commands = {"python -c pass": [python, "-c", "pass"],
                "python -c 'import PIL.Image'": [python, "-c", "import PIL.Image"],
                "python -c 'import pyvips'": [python, "-c", "import pyvips"] if pyvips else None,
                "ours on a 64x48 JPEG": [python, "-m", "pipeline", "process", str(tiny), "--out", "{out}", "--quiet"]}
    commands = {name: command for name, command in commands.items() if command}
    walls: dict[str, list[float]] = {name: [] for name in commands}
    with tempfile.TemporaryDirectory() as out:
        for _ in range(runs):
            for name, command in commands.items():
                walls[name].append(spawn([part.replace("{out}", out) for part in command])["wall"])
    return [f"  {name:<30}{statistics.median(times) * 1000:>7.1f} ms" for name, times in walls.items()]


def floor(src: Path) -> float:
    """Decoding at the needed DCT scale plus encoding the six outputs: what no contender can beat."""
    data = src.read_bytes()
    with Image.open(io.BytesIO(data)) as probe:
        width, height = probe.size
    wanted = (round(width * 2048 / max(width, height)), round(height * 2048 / max(width, height)))
    prepared = Image.open(io.BytesIO(data))
    shrink_on_load(prepared, data, wanted)
    outputs = [prepared.resize((round(width * e / max(width, height)), round(height * e / max(width, height))))
               for e in SIZES.values()] + [prepared.resize((e, e)) for e in SQUARES.values()]
    times = []
    for _ in range(5):
        started = time.perf_counter()
        image = Image.open(io.BytesIO(data))
        shrink_on_load(image, data, wanted)
        image.load()
        for output in outputs:
            output.save(io.BytesIO(), "JPEG", quality=82, progressive=True, optimize=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def psnr(a: Image.Image, b: Image.Image) -> float:
    mse = sum(v * v for v in ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).rms) / 3
    return 10 * math.log10(255 * 255 / mse) if mse else 99.0


def quality(command: list[str], src: Path, reference: dict[str, Image.Image]) -> list[float]:
    """PSNR of each variation a contender writes against LANCZOS from the full-size decode."""
    with tempfile.TemporaryDirectory() as out:
        argv = [part.replace("{src}", str(src)).replace("{out}", out) for part in command]
        subprocess.run(argv, cwd=ROOT, check=True, capture_output=True)
        scores = []
        for name, expected in reference.items():
            (path,) = [p for p in Path(out).rglob("*.jpg") if p.stem == name or p.parent.name == name]
            with Image.open(path) as written:
                if written.size != expected.size:  # a contender rounding one pixel differently
                    written = written.resize(expected.size, Image.Resampling.LANCZOS)
                scores.append(psnr(written, expected))
        return scores


def references(src: Path) -> dict[str, Image.Image]:
    from PIL import ImageOps

    full = ImageOps.exif_transpose(Image.open(src)).convert("RGB")
    made = {name: ImageOps.contain(full, (edge, edge), Image.Resampling.LANCZOS) for name, edge in SIZES.items()}
    made.update({name: ImageOps.fit(full, (edge, edge), Image.Resampling.LANCZOS) for name, edge in SQUARES.items()})
    return made


def filters(src: Path) -> list[str]:
    """The choice of the big first step's filter: time and PSNR against LANCZOS from full size."""
    data = src.read_bytes()
    image = Image.open(io.BytesIO(data))
    target = (2048, round(2048 * image.height / image.width))
    shrink_on_load(image, data, target)
    image.load()
    reference = Image.open(src).resize(target, Image.Resampling.LANCZOS)
    lines = []
    for resample in (Image.Resampling.BILINEAR, Image.Resampling.HAMMING, Image.Resampling.BICUBIC,
                     Image.Resampling.LANCZOS):
        times = []
        for _ in range(3):
            started = time.perf_counter()
            result = image.resize(target, resample)
            times.append(time.perf_counter() - started)
        lines.append(f"    {resample.name:<9} {min(times) * 1000:6.1f} ms  {psnr(result, reference):5.1f} dB")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per contender and photo (default 7)")
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    os.sched_setaffinity(0, {CPU})
    # An installed package has its bytecode compiled (pip does it; so does the Lambda build):
    # measure that, even where PYTHONDONTWRITEBYTECODE is set in the shell.
    subprocess.run([args.python, "-m", "compileall", "-q", "pipeline", "plugins"], cwd=ROOT, check=True)
    found = contenders(args.python)
    theirs = subprocess.run([args.python, "-c", "import PIL; print(PIL.__version__)"], capture_output=True,
                            text=True, check=True).stdout.strip()
    print(f"each process pinned to CPU {CPU}; {args.runs} runs per contender, alternating; medians")
    print(f"contenders on Pillow {theirs} ({args.python}); floor and filter table in-process on Pillow "
          f"{PIL.__version__}\n")
    for label in PHOTOS:
        src = make_photo(label)
        with Image.open(src) as probe:
            size = f"{probe.width}x{probe.height}"
        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in found}
        names = list(found)
        for run in range(args.runs):
            for name in names[run % len(names):] + names[:run % len(names)]:
                results[name].append(run_once(found[name], src))
        print(f"{label} JPEG {size}, {src.stat().st_size / 1e6:.1f} MB")
        print(f"  {'contender':<28}{'wall':>9}{'cpu':>9}{'peak RSS':>12}{'wall/ours':>11}{'RSS/ours':>10}")
        ours = None
        for name, samples_ in results.items():
            wall = statistics.median(s[0] for s in samples_)
            cpu = statistics.median(s[1] for s in samples_)
            rss = max(s[2] for s in samples_)
            ours = ours or (wall, rss)
            print(f"  {name:<28}{wall:>7.3f} s{cpu:>7.3f} s{rss:>8.0f} MiB{wall / ours[0]:>10.2f}x{rss / ours[1]:>9.2f}x")
        print(f"  {'floor (decode + 6 encodes)':<28}{floor(src):>7.3f} s   in-process, no interpreter start")
        print("  quality, PSNR in dB against LANCZOS from the full-size decode (JPEG loss included):")
        reference = references(src)
        print(f"    {'contender':<28}" + "".join(f"{name:>14}" for name in reference))
        for name, command in found.items():
            print(f"    {name:<28}" + "".join(f"{score:>14.1f}" for score in quality(command, src, reference)))
        print("  first-step filter from the shrink-on-load decode (time, PSNR):")
        print("\n".join(filters(src)))
        print()
    print(f"start-up, {args.runs * 3} runs each, alternating; medians")
    print("\n".join(start_up(args.python, args.runs * 3, "libvips (pyvips) pyramid" in found)))


if __name__ == "__main__":
    main()
