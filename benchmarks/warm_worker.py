"""The processes warm.py starts; each prints one JSON line and imports only what its role needs.

    warm_worker.py render ours|vips PHOTO IMAGES CPUS      one warm-up, then IMAGES timed renders
    warm_worker.py handler PHOTO ROUNDS LATENCY_MS CPU     resize_handler against AWS_ENDPOINT_URL
    warm_worker.py moto CPU                                a moto server; stops when stdin closes
    warm_worker.py profile PHOTO IMAGES CPU                where our CPU goes, step by step

CPUS is a comma-separated list: the worker pins itself to it before importing anything, so
whatever sizes a thread pool from os.sched_getaffinity sees only those.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

KEY = "uploads/images/original/bench/photo.jpg"
VARIATIONS = ("large", "medium", "small", "xsmall", "square_medium", "square_small")


def ours(data: bytes):
    """Our renderer: the objects the resize path writes, as `{variation: main JPEG}`."""
    from pipeline import keys
    from pipeline.config import PipelineConfig
    from pipeline.outputs import outputs_for_original
    from pipeline.registry import load_registry

    registry = load_registry(PipelineConfig())
    wanted = {keys.variation_key(name, keys.source_path(KEY)): name for name in VARIATIONS}

    def once() -> dict[str, bytes]:
        outputs = outputs_for_original(KEY, data, "etag", registry)
        return {wanted[obj.key]: obj.body for obj in outputs.objects if obj.key in wanted}

    return once


def libvips(data: bytes, margin: float | None = None):
    """vips_pyramid.py's pyramid from a buffer to buffers. pyvips-binary has no HEVC decoder, so a
    HEIC starts from pillow_heif's pixels, that decode counted in libvips' time. `margin`: the
    shrink-on-load rule (default vips_pyramid's 1.3x; our MIN_DECODE_FRACTION decodes as small as ours)."""
    import pyvips

    from vips_pyramid import MIN_SHRINK, SAVE, from_buffer, pyramid

    margin = margin or MIN_SHRINK

    pyvips.cache_set_max(0)  # each upload is new in production: no operation cache hits on repeats
    heif = data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypmsf1")

    def decode() -> pyvips.Image:
        if not heif:
            return from_buffer(data, margin)
        import pillow_heif

        decoded = pillow_heif.open_heif(data, convert_hdr_to_8bit=True)
        (width, height), bands = decoded.size, len(decoded.mode)
        if decoded.stride != width * bands:
            raise SystemExit(f"pillow_heif padded its rows ({decoded.stride} bytes for {width} pixels)")
        return pyvips.Image.new_from_memory(decoded.data, width, height, bands, "uchar")

    def once() -> dict[str, bytes]:
        return {name: image.jpegsave_buffer(**SAVE) for name, image in pyramid(decode())}

    return once


def libvips_as_small_as_ours(data: bytes):
    from pipeline.imaging import MIN_DECODE_FRACTION

    return libvips(data, MIN_DECODE_FRACTION)


RENDERERS = {"ours": ours, "vips": libvips, "vips-small": libvips_as_small_as_ours}


def profile(photo: str, images: str, cpu: str) -> dict:
    """Where our CPU goes, per image: Pillow's decode, each resize and each encode (by the size
    made), and the rest (our Python, the placeholder, the manifest), from cProfile's own times."""
    import cProfile
    import pstats

    os.sched_setaffinity(0, {int(cpu)})
    from PIL import Image

    once = ours(Path(photo).read_bytes())
    once()
    steps: dict[str, float] = {}
    real_resize = Image.Image.resize

    def resize(self, size, *args, **kwargs):  # the size made names the step
        started = time.process_time()
        try:
            return real_resize(self, size, *args, **kwargs)
        finally:
            step = f"resize {self.width}x{self.height} to {size[0]}x{size[1]}"
            steps[step] = steps.get(step, 0.0) + time.process_time() - started

    started = time.process_time()
    for _ in range(int(images)):  # the total without the profiler's own overhead
        once()
    total = time.process_time() - started
    Image.Image.resize = resize
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    for _ in range(int(images)):
        once()
    profiler.disable()
    by_name = {}
    for (_, _, name), row in pstats.Stats(profiler).stats.items():
        by_name[name] = by_name.get(name, 0.0) + row[2]  # tottime: inside that C call itself
    per = int(images)
    found = {"decode (libjpeg-turbo / the format's decoder)": by_name.get("<method 'decode' of 'ImagingDecoder' objects>", 0.0),
             "encode (libjpeg-turbo)": sum(v for k, v in by_name.items() if "of 'ImagingEncoder' objects" in k)}
    found.update(sorted(steps.items(), key=lambda item: -item[1]))
    measured = sum(found.values())
    found["everything else"] = max(0.0, total - measured)
    return {"total": total / per, "steps": {name: seconds / per for name, seconds in found.items()}}


def render(kind: str, photo: str, images: str, cpus: str) -> dict:
    os.sched_setaffinity(0, {int(cpu) for cpu in cpus.split(",")})
    once = RENDERERS[kind](Path(photo).read_bytes())
    once()  # warm-up: lazy imports, decoder set-up, first allocations
    cpu, wall = [], []
    for _ in range(int(images)):
        cpu_started, wall_started = time.process_time(), time.perf_counter()
        once()
        cpu.append(time.process_time() - cpu_started)
        wall.append(time.perf_counter() - wall_started)
    return {"cpu": cpu, "wall": wall, "cpus": len(os.sched_getaffinity(0)), "rss_mib": peak_rss_mib()}


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM). Not getrusage's ru_maxrss: Linux carries
    into it, across exec, what the parent held when it forked, and warm.py holds decoded photos."""
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) / 1024


def handler(photo: str, rounds: str, latency_ms: str, cpu: str) -> dict:
    """Per round, rotating their order: a render alone, and the resize handler with no injected
    latency and with `latency_ms` before every S3 request, each on a new upload."""
    import contextlib
    import itertools
    import threading

    os.sched_setaffinity(0, {int(cpu)})
    sys.path.insert(0, str(ROOT / "tests"))
    from backfill_store import CREDENTIALS, REGION, make_buckets

    uploads, processed = "bench-warm-uploads", "bench-warm-processed"
    os.environ.update(CREDENTIALS, UPLOADS_BUCKET=uploads, PROCESSED_BUCKET=processed, PIPELINE_CONFIG="")
    import boto3

    from pipeline import handlers

    setup = boto3.client("s3", region_name=REGION)  # not the handler's client: its requests are not counted
    if not any(b["Name"] == uploads for b in setup.list_buckets()["Buckets"]):
        make_buckets(setup, uploads, processed)
    data = Path(photo).read_bytes()
    envelope = json.loads((ROOT / "tests/events/sns_s3_put.json").read_text())
    numbers = itertools.count(int(time.time() * 1000))  # keys and sequencers no earlier run used

    # The handler's own client (functools.cache): every request it sends waits the latency first.
    latency, intervals, local = [0.0], [], threading.local()

    def before_send(**_):
        local.started = time.perf_counter()
        time.sleep(latency[0])

    def received(**_):  # a GET's body is read after this: its interval ends at its headers
        intervals.append((local.started, time.perf_counter()))

    s3 = handlers.s3_client()
    s3.meta.events.register("before-send.s3.*", before_send)
    s3.meta.events.register("response-received.s3.*", received)

    def invoke(milliseconds: float) -> dict:
        number = next(numbers)
        key = f"uploads/images/original/bench/{Path(photo).stem}-{number}.jpg"
        put = setup.put_object(Bucket=uploads, Key=key, Body=data, ContentType="image/jpeg")
        event = s3_event(envelope, uploads, key, put["ETag"].strip('"'), put.get("VersionId"), len(data),
                         f"{number:016X}")
        latency[0], intervals[:] = milliseconds / 1000, []
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # its log and metrics lines
            started = time.perf_counter()
            result = handlers.resize_handler(event, None)
            wall = time.perf_counter() - started
        if [r["outcome"] for r in result["results"]] != ["processed"]:
            raise SystemExit(f"expected one processed record, got {result}")
        return {"wall": wall, "requests": len(intervals), "in_s3": sum(end - start for start, end in intervals),
                "chain": longest_chain(intervals)}

    once = ours(data)
    invoke(0)  # warm-up: the first call loads the registry and opens the connection
    work = {"render": lambda: {"wall": timed(once)}, "at 0": lambda: invoke(0),
            "at latency": lambda: invoke(float(latency_ms))}
    results: dict[str, list[dict]] = {name: [] for name in work}
    names = list(work)
    for round_ in range(int(rounds)):
        for name in names[round_ % 3:] + names[:round_ % 3]:
            results[name].append(work[name]())
    return results


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def s3_event(envelope: dict, bucket: str, key: str, etag: str, version_id: str | None, size: int,
             sequencer: str) -> dict:
    """The SNS-wrapped S3 notification of tests/events, naming this upload."""
    from urllib.parse import quote_plus

    message = json.loads(envelope["Records"][0]["Sns"]["Message"])
    record = message["Records"][0]
    record["s3"]["bucket"].update(name=bucket, arn=f"arn:aws:s3:::{bucket}")
    record["s3"]["object"] = {"key": quote_plus(key, safe="/"), "size": size, "eTag": etag,
                              "versionId": version_id, "sequencer": sequencer}
    sns = {**envelope["Records"][0]["Sns"], "Message": json.dumps(message)}
    return {"Records": [{**envelope["Records"][0], "Sns": sns}]}


def longest_chain(intervals: list[tuple[float, float]]) -> int:
    """The most requests that ran one after another, none overlapping the next: the round trips on
    the critical path (greedy by end time finds the longest such chain)."""
    count, free_at = 0, float("-inf")
    for start, end in sorted(intervals, key=lambda interval: interval[1]):
        if start >= free_at:
            count, free_at = count + 1, end
    return count


def moto(cpu: str) -> None:
    """A moto server on a free port of 127.0.0.1, in its own process so its CPU is not the
    measured process's (nor its GIL); prints the URL, stops when stdin closes."""
    import logging

    from moto.server import ThreadedMotoServer

    sys.path.insert(0, str(ROOT / "tests"))
    from backfill_store import free_port

    if cpu != "any":
        os.sched_setaffinity(0, {int(cpu)})
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    print(f"http://127.0.0.1:{port}", flush=True)
    sys.stdin.read()
    server.stop()


if __name__ == "__main__":
    role, *arguments = sys.argv[1:]
    if role == "moto":
        moto(*arguments)
    else:
        print(json.dumps({"render": render, "handler": handler, "profile": profile}[role](*arguments)))
