"""Warm-path benchmark: what one image costs a process that is already running, next to libvips.

    make bench          (or: .venv/bin/python benchmarks/warm.py [--quick] [--images N] [--latency-ms MS])

bench.py times whole processes, one image each. Here each contender is a started process
(warm_worker.py) that renders the same photo from memory again and again after one warm-up, so
interpreter start and imports drop out: 1. CPU per image against libvips' pyramid, 2. quality per
variation, 3. wall time per image on one and two cores, 4. a cold process for comparison, 5. the
resize handler against a moto server with injected S3 latency, 6. where our CPU goes, step by
step, per image. Workers of different contenders or settings run alternately and figures are
medians, so the noise of other work on this machine falls on all of them; every ratio printed is
of figures measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

import PIL  # noqa: E402
from PIL import Image, features  # noqa: E402

import warm_worker  # noqa: E402
from bench import CACHE, make_photo, psnr, references  # noqa: E402
from pipeline import samples  # noqa: E402
from pipeline.config import FUNCTION_ENVIRONMENT, PipelineConfig  # noqa: E402

WORKER = HERE / "warm_worker.py"
CPUS = sorted(os.sched_getaffinity(0))
ONE = str(CPUS[0])  # the measured processes' cpu; moto gets the other one when there is one
OTHER = str(CPUS[1]) if len(CPUS) > 1 else "any"
# ours CPU / libvips CPU at or below which the warm path is where we want it
TARGETS = {"40 MP JPEG": 1.00, "12 MP JPEG": 1.15}
TWO_CORE_TARGET = 0.65  # 2-core wall / 1-core wall, 40 MP
# Peak RSS of a render worker before the render used threads (a5b01fb, one thread): no higher now.
MEMORY_TARGET_MIB = {"40 MP JPEG": 80, "12 MP JPEG": 110}
HANDLER_ROUND_TRIPS = 5  # wall@latency <= render + this many round trips


def heic_photo() -> Path:
    import pillow_heif

    pillow_heif.register_heif_opener()
    return cached(CACHE / "photo-4032x3024.heic", lambda: samples.photo(4032, 3024, seed=4032), "HEIF")


def png_photo() -> Path:
    # Drawn at a quarter and enlarged, with light grain: full grain makes a PNG over max_bytes.
    path = cached(CACHE / "photo-6000x4000.png", lambda: samples.enlarged_photo(6000, 4000, grain=8), "PNG")
    if path.stat().st_size > PipelineConfig().max_bytes:
        raise SystemExit(f"{path} is over the pipeline's max_bytes: delete it and lower the grain")
    return path


def cached(path: Path, make, image_format: str) -> Path:
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        make().save(partial, image_format)
        partial.replace(path)  # an interrupted run leaves no half photo behind
    return path


PHOTOS = {  # label: (the photo, what libvips starts from)
    "40 MP JPEG": (lambda: make_photo("40 MP"), "JPEG buffer"),
    "12 MP JPEG": (lambda: make_photo("12 MP"), "JPEG buffer"),
    "12 MP HEIC": (heic_photo, "pillow_heif's decoded pixels (pyvips-binary has no HEVC; decode counted)"),
    "24 MP PNG": (png_photo, "PNG buffer"),
}


def worker(*arguments, env: dict | None = None) -> dict:
    """Run one warm_worker.py; ours run with the environment the functions are deployed with."""
    libvips = arguments[0] == "render" and arguments[1] != "ours"
    env = {**(env or os.environ), **({} if libvips else FUNCTION_ENVIRONMENT)}
    done = subprocess.run([sys.executable, str(WORKER), *map(str, arguments)], cwd=ROOT, capture_output=True,
                          text=True, env=env)
    if done.returncode:
        raise SystemExit(f"warm_worker.py {' '.join(map(str, arguments))} failed:\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


def alternate(commands: dict[str, tuple], rounds: int) -> dict[str, list[dict]]:
    """Each worker `rounds` times, taking turns, a different one first each round."""
    names, results = list(commands), {name: [] for name in commands}
    for round_ in range(rounds):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            results[name].append(worker(*commands[name]))
    return results


def median_of(runs: list[dict], field: str) -> float:
    return statistics.median(value for run in runs for value in run[field])


def table(header: list[str], rows: list[list], left: tuple[int, ...] = (0,)) -> None:
    """Aligned columns: those in `left` to the left, numbers to the right."""
    cells = [header] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  " + "  ".join(cell.ljust(width) if i in left else cell.rjust(width)
                               for i, (cell, width) in enumerate(zip(row, widths))).rstrip())


def verdict(value: float, limit: float, unit: str = "") -> str:
    shown = f"{limit:.0f} {unit}" if unit else f"{limit:.2f}"
    return f"<= {shown} {'met' if value <= limit else 'missed'}"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def facts() -> None:
    import moto
    import pillow_heif
    import pyvips

    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor())
    print(f"CPU: {model}, {os.cpu_count()} cpus, this process may use {','.join(map(str, CPUS))}")
    print(f"Python {platform.python_version()}; Pillow {PIL.__version__} (libjpeg-turbo "
          f"{features.version('libjpeg_turbo')}); libvips {pyvips.version(0)}.{pyvips.version(1)}."
          f"{pyvips.version(2)} (pyvips {pyvips.__version__}); pillow_heif {pillow_heif.__version__} "
          f"(libheif {pillow_heif.libheif_version()}); moto {moto.__version__}")


def cpu_per_image(photos: dict[str, Path], rounds: int, images: int) -> None:
    print(f"\n1. Warm CPU per image against libvips: a worker pinned to cpu {ONE} renders the photo from memory, "
          f"one warm-up then {images} timed; {rounds} workers of each, alternating; medians over "
          f"{rounds * images} images (process_time, wall beside it)")
    print("  libvips shrinks a JPEG on load leaving a 1.3x resize (vips_pyramid.py); ours decodes smaller "
          "(MIN_DECODE_FRACTION): the last columns give libvips that rule too")
    rows = []
    for label, path in photos.items():
        jpeg = "JPEG" in label
        commands = {"ours": ("render", "ours", path, images, ONE), "vips": ("render", "vips", path, images, ONE)}
        if jpeg:
            commands["vips-small"] = ("render", "vips-small", path, images, ONE)
        runs = alternate(commands, rounds)
        ours, vips = median_of(runs["ours"], "cpu"), median_of(runs["vips"], "cpu")
        small = median_of(runs["vips-small"], "cpu") if jpeg else None
        target = verdict(ours / vips, TARGETS[label]) if label in TARGETS else ""
        rows.append([label, ms(ours), ms(vips), f"{ours / vips:.2f}", target, ms(median_of(runs["ours"], "wall")),
                     ms(median_of(runs["vips"], "wall")), ms(small) if jpeg else "", f"{ours / small:.2f}" if jpeg else "",
                     PHOTOS[label][1]])
    table(["photo", "ours CPU", "libvips CPU", "ours/libvips", "target", "ours wall", "libvips wall",
           "libvips as small", "ours/that", "libvips starts from"], rows, left=(0, 9))


def quality(photos: dict[str, Path]) -> None:
    print("\n2. Quality per variation: PSNR in dB of each main JPEG against LANCZOS from the full-size decode "
          "(bench.py's references; JPEG loss included), and ours - libvips")
    rows = []
    for label, path in photos.items():
        data, reference = path.read_bytes(), references(path)
        ours = scores(warm_worker.ours(data)(), reference)
        vips = scores(warm_worker.libvips(data)(), reference)
        rows += [[label, "ours", *(f"{score:.1f}" for score in ours)],
                 ["", "libvips", *(f"{score:.1f}" for score in vips)],
                 ["", "ours - libvips", *(f"{a - b:+.1f}" for a, b in zip(ours, vips))]]
    table(["photo", "", *warm_worker.VARIATIONS], rows, left=(0, 1))


def scores(files: dict[str, bytes], reference: dict[str, Image.Image]) -> list[float]:
    import io

    found = []
    for name in warm_worker.VARIATIONS:
        with Image.open(io.BytesIO(files[name])) as written:
            if written.size != reference[name].size:  # a contender rounding one pixel differently
                written = written.resize(reference[name].size, Image.Resampling.LANCZOS)
            found.append(psnr(written, reference[name]))
    return found


def cores(photos: dict[str, Path], rounds: int, images: int) -> None:
    if len(CPUS) < 2:
        print("\n3. Wall time per image with 1 and 2 cores: skipped, this process may use one cpu only")
        return
    both = f"{CPUS[0]},{CPUS[1]}"
    print(f"\n3. Wall time per image with 1 and 2 cores: our worker pinned to cpu {ONE}, then to cpus {both} "
          f"(it sees them in os.sched_getaffinity); {rounds} workers of each, alternating; medians over "
          f"{rounds * images} images; peak RSS is the largest worker's; our workers run with the functions' "
          f"{' '.join(f'{k}={v}' for k, v in FUNCTION_ENVIRONMENT.items())}")
    print("  a JPEG without restart markers is decoded on one core while the other resizes its rows as they are "
          "written (imaging._decode_streaming);\n  one with restart markers (one every row of MCUs; some Android "
          "phones write them) is the same photo, decoded in one strip per core at once (imaging._decode_in_strips)")
    marked = {f"{size} JPEG, restart markers": make_photo(size, restart_marker_rows=1) for size in ("40 MP", "12 MP")}
    rows = []
    for label in ("40 MP JPEG", "40 MP JPEG, restart markers", "12 MP JPEG", "12 MP JPEG, restart markers"):
        photo = photos.get(label) or marked[label]
        runs = alternate({"1": ("render", "ours", photo, images, ONE),
                          "2": ("render", "ours", photo, images, both)}, rounds)
        seen = {run["cpus"] for run in runs["1"]}, {run["cpus"] for run in runs["2"]}
        if seen != ({1}, {2}):
            raise SystemExit(f"the workers saw {seen} cpus, not 1 and 2")
        one, two = median_of(runs["1"], "wall"), median_of(runs["2"], "wall")
        rss = {n: max(run["rss_mib"] for run in runs[n]) for n in runs}
        rows.append([label, ms(one), ms(two), f"{two / one:.2f}",
                     verdict(two / one, TWO_CORE_TARGET) if label.startswith("40 MP") else "",
                     f"{rss['1']:.0f} MiB", f"{rss['2']:.0f} MiB",
                     *(verdict(rss[n], MEMORY_TARGET_MIB[label.split(",")[0]], "MiB") for n in ("1", "2"))])
    table(["photo", "1 core", "2 cores", "2-core/1-core", "target", "RSS 1 core", "RSS 2 cores",
           "memory target 1 core", "2 cores"], rows)


COLD = """
import sys, time
data = open(sys.argv[1], "rb").read()
started = time.perf_counter()
import pipeline.handlers
from pipeline.config import PipelineConfig
from pipeline.outputs import outputs_for_original
from pipeline.registry import load_registry
registry = load_registry(PipelineConfig())
imported = time.perf_counter()
outputs_for_original("uploads/images/original/cold.jpg", data, "etag", registry)
first = time.perf_counter()
outputs_for_original("uploads/images/original/cold.jpg", data, "etag", registry)
print(imported - started, first - imported, time.perf_counter() - first)
"""


def cold_start(photo: Path, runs: int) -> None:
    print(f"\n4. Cold start: a fresh {Path(sys.executable).name} process on cpu {ONE} (bytecode compiled) imports "
          f"pipeline.handlers and loads the registry, renders the 12 MP JPEG, then renders it again warm; "
          f"medians of {runs} processes (Lambda's artifact on python3.12: benchmarks/cold_start.py)")
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", COLD, str(photo)], cwd=ROOT, capture_output=True, text=True,
                              check=True, preexec_fn=lambda: os.sched_setaffinity(0, {int(ONE)}))
        whole = time.perf_counter() - started
        inside = [float(value) for value in done.stdout.split()]
        times.append([whole - sum(inside), *inside, whole])
    medians = [statistics.median(run[i] for run in times) for i in range(5)]
    table(["interpreter start and exit", "imports and registry", "first image", "warm image", "whole process"],
          [[ms(value) for value in medians]], left=())


@contextlib.contextmanager
def moto_server():
    """A moto server in a process of its own, on the cpu the measured process does not use."""
    server = subprocess.Popen([sys.executable, str(WORKER), "moto", OTHER], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        if not url:
            raise SystemExit("the moto server did not start")
        yield url
    finally:
        server.stdin.close()  # it stops when its stdin closes
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.terminate()
            server.wait()


def handler_latency(photos: dict[str, Path], rounds: int, latency_ms: float) -> None:
    print(f"\n5. Upload to manifest with injected S3 latency: pipeline.handlers.resize_handler on a new upload "
          f"each time (an SNS-wrapped S3 event), in a worker on cpu {ONE}, moto in its own process on cpu "
          f"{OTHER}; every request of the handler's S3 client waits 0 or {latency_ms:g} ms first; "
          f"render = outputs_for_original alone in the same worker; {rounds} rounds, alternating; medians")
    rows = []
    with moto_server() as url:
        env = {**os.environ, "AWS_ENDPOINT_URL": url}
        for label in ("12 MP JPEG", "40 MP JPEG"):
            runs = worker("handler", photos[label], rounds, latency_ms, ONE, env=env)
            render = statistics.median(run["wall"] for run in runs["render"])
            at0, at = (statistics.median(run["wall"] for run in runs[name]) for name in ("at 0", "at latency"))
            in_s3 = statistics.median(run["in_s3"] for run in runs["at 0"])
            requests = statistics.median(run["requests"] for run in runs["at latency"])
            chain = statistics.median(run["chain"] for run in runs["at latency"])
            limit = render + HANDLER_ROUND_TRIPS * latency_ms / 1000
            rows.append([label, ms(render), ms(at0), ms(in_s3), ms(at), f"{requests:g}",
                         f"{(at - at0) / (latency_ms / 1000):.1f}", f"{chain:g}",
                         f"<= {ms(limit)} {'met' if at <= limit else 'missed'}"])
    lat = f"{latency_ms:g}"
    table(["photo", "render", "wall@0", "in S3@0", f"wall@{lat}", "S3 requests",
           f"round trips (wall@{lat}-wall@0)/{lat}ms", "critical path (intervals)",
           f"target wall@{lat} <= render + {HANDLER_ROUND_TRIPS} x {lat} ms"], rows)
    print("  in S3@0: the time inside the handler's S3 requests with no latency injected (moto on loopback; "
          "a GET's body is read after its request ends)")


def where_time_goes(photos: dict[str, Path], images: int) -> None:
    print(f"\n6. Where our CPU goes, per image (a worker on cpu {ONE}, cProfile's own time of each Pillow call, "
          f"{images} images), next to libvips' whole render (section 1)")
    for label in TARGETS:
        found = worker("profile", photos[label], images, ONE)
        print(f"  {label}: {ms(found['total'])} in all")
        table(["step", "CPU", "share"], [[name, ms(seconds), f"{seconds / found['total']:.0%}"]
                                          for name, seconds in found["steps"].items() if seconds >= 0.0005])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 workers of each, 2 images each")
    parser.add_argument("--images", type=int, help="timed images per worker (default 5; 2 with --quick)")
    parser.add_argument("--latency-ms", type=float, default=30.0, help="injected before each S3 request (default 30)")
    args = parser.parse_args()
    try:
        import pyvips  # noqa: F401 - the baseline every table compares with
    except ImportError:
        raise SystemExit("warm.py compares with libvips, and pyvips is not installed: `make bench` installs it, "
                         "or .venv/bin/python -m pip install -r requirements/bench.txt") from None
    rounds = 2 if args.quick else 3
    images = args.images or (2 if args.quick else 5)
    # Installed code has its bytecode compiled (pip does it, so does the Lambda build): measure that.
    subprocess.run([sys.executable, "-m", "compileall", "-q", "pipeline", "plugins"], cwd=ROOT, check=True)
    started = time.perf_counter()
    photos = {label: make() for label, (make, _) in PHOTOS.items()}
    facts()
    print("photos: " + "; ".join(f"{label} {path.name} {path.stat().st_size / 2**20:.1f} MiB"
                                 for label, path in photos.items()))
    cpu_per_image(photos, rounds, images)
    quality(photos)
    cores(photos, rounds, images)
    cold_start(photos["12 MP JPEG"], 3 if args.quick else 7)
    handler_latency(photos, images, args.latency_ms)
    where_time_goes(photos, 3 if args.quick else 10)
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
