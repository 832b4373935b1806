"""A measurement, not shipped code: resizing rows of a JPEG while libjpeg-turbo still decodes it.

    .venv/bin/python benchmarks/pipelined_decode.py [ROUNDS]

A JPEG without restart markers is decoded on one thread, and at 40 MP that decode is a third of
the render: two cores wait for it. This script measures the route around that wait, side by side
with what the render does now, on warm.py's 40 MP photo (needs two CPUs):

- now: decode at 1/4 (as the render does), then large and medium resized on two threads at once;
- pipelined: the decoder is given the file in CHUNKS pieces; after each, the rows written so far
  are found (the image is filled with SENTINEL first: a row with any pixel unlike it is written,
  and rows are written in order), and a second thread resizes bands of large and medium as soon
  as the rows each band reads are there.

It then prints which results are byte for byte those of now, and whether a decode and a resize
on two threads of one process slow each other. Its timings mean something only on a quiet machine.
"""

from __future__ import annotations

import io
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from PIL import Image  # noqa: E402

from bench import make_photo  # noqa: E402
from pipeline.imaging import decode_at_scale  # noqa: E402

CHUNKS = 16
BANDS = 8
SENTINEL = (1, 254, 3)
SIZES = {"large": (2048, 1280), "medium": (1280, 800)}  # the variations cut from a 40 MP decode at 1/4
LANCZOS_SUPPORT = 3


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.decodermaxblock = len(data)  # one read, as the render does
    decode_at_scale(image, 4, 2)
    return image


def now(data: bytes) -> tuple[Image.Image, dict[str, Image.Image]]:
    image = opened(data)
    image.load()
    with ThreadPoolExecutor(2) as pool:
        made = {name: pool.submit(image.resize, size, Image.LANCZOS) for name, size in SIZES.items()}
        return image, {name: future.result() for name, future in made.items()}


def rows_written(image: Image.Image, known: int) -> int:
    """How many rows from the top are surely written: a binary search for the last row with a
    pixel unlike SENTINEL. A written row that looks like it only delays the answer."""
    def written(y: int) -> bool:
        return any(image.im.getpixel((x, y)) != SENTINEL for x in (0, image.width // 2, image.width - 1))

    below, above = known - 1, image.height  # row `below` is written (or none is), row `above` is not seen
    while above - below > 1:
        middle = (below + above) // 2
        below, above = (middle, above) if written(middle) else (below, middle)
    return below + 1


def pipelined(data: bytes) -> tuple[Image.Image, dict[str, Image.Image]]:
    image = opened(data)
    _, extents, _, args = image.tile[0]
    image.im = Image.core.fill(image.mode, image.size, SENTINEL)
    decoder = Image._getdecoder(image.mode, "jpeg", args, image.decoderconfig)
    decoder.setimage(image.im, extents)
    image.tile = []  # decoded here: a resize must not load it again
    made = {name: Image.new(image.mode, size) for name, size in SIZES.items()}
    bands = []  # (rows needed, name, first output row, end output row, input rows per output row)
    for name, (_, height) in SIZES.items():
        step = image.height / height
        edges = [round(height * k / BANDS) for k in range(BANDS + 1)]
        for top, bottom in zip(edges, edges[1:]):
            bands.append((min(image.height, int(bottom * step + LANCZOS_SUPPORT * max(step, 1)) + 2),
                          name, top, bottom, step))
    ready, changed = [0], threading.Condition()

    def resize_bands() -> None:
        for needs, name, top, bottom, step in sorted(bands):
            with changed:
                changed.wait_for(lambda: ready[0] >= needs)
            band = image.resize((made[name].width, bottom - top), Image.LANCZOS,
                                box=(0, top * step, image.width, bottom * step))
            made[name].paste(band, (0, top))

    with ThreadPoolExecutor(1) as pool:
        resizing = pool.submit(resize_bands)
        piece, pending, position = -(-len(data) // CHUNKS), b"", 0
        try:
            while True:
                pending += data[position:position + piece]
                position += piece
                consumed, error = decoder.decode(pending)
                if consumed < 0:
                    if error < 0:
                        raise OSError(f"decoder error {error}")
                    rows = image.height
                elif position >= len(data):
                    raise OSError("the file ended before its rows did")
                else:
                    pending = pending[consumed:]
                    rows = rows_written(image, ready[0])
                with changed:
                    ready[0] = rows
                    changed.notify_all()
                if consumed < 0:
                    break
        finally:
            decoder.cleanup()
            with changed:  # on an error too: the bands end (on rows never decoded) instead of waiting
                ready[0] = image.height
                changed.notify_all()
        resizing.result()
    return image, made


def median_ms(function, data: bytes, images: int) -> float:
    times = []
    for _ in range(images):
        started = time.perf_counter()
        function(data)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def side_by_side_threads(data: bytes) -> dict[str, float]:
    """A decode on one thread and a resize on another, alone and at the same time (ms each)."""
    source = opened(data)
    source.load()
    results: dict[str, float] = {}

    def timed(name: str, function, count: int) -> None:
        started = time.perf_counter()
        for _ in range(count):
            function()
        results[name] = (time.perf_counter() - started) * 1000 / count

    def decode() -> None:
        opened(data).load()

    def resize() -> None:
        source.resize(SIZES["medium"], Image.LANCZOS)

    timed("decode alone", decode, 5)
    timed("resize alone", resize, 12)
    both = [threading.Thread(target=timed, args=("decode beside a resize", decode, 5)),
            threading.Thread(target=timed, args=("resize beside a decode", resize, 12))]
    for thread in both:
        thread.start()
    for thread in both:
        thread.join()
    return results


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs two CPUs")
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: load average {load:.1f}: other processes share the CPUs, the timings say little")
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2])
    photo = make_photo("40 MP")
    data = photo.read_bytes()
    print(f"{photo.name}: decode at 1/4, then large {SIZES['large']} and medium {SIZES['medium']}; "
          f"{CHUNKS} chunks, {BANDS} bands of each; two CPUs")
    now_ms, pipelined_ms = [], []
    for _ in range(rounds):  # alternating, each a median of 5
        now_ms.append(median_ms(now, data, 5))
        pipelined_ms.append(median_ms(pipelined, data, 5))
    print(f"  now        {statistics.median(now_ms):6.1f} ms  (rounds: {', '.join(f'{v:.0f}' for v in now_ms)})")
    print(f"  pipelined  {statistics.median(pipelined_ms):6.1f} ms  (rounds: {', '.join(f'{v:.0f}' for v in pipelined_ms)})")
    decoded, made = now(data)
    decoded_pipelined, made_pipelined = pipelined(data)
    print("  byte for byte now's: decode", decoded.tobytes() == decoded_pipelined.tobytes(),
          *(f"{name} {made[name].tobytes() == made_pipelined[name].tobytes()}" for name in SIZES))
    print("  (large False is expected: Pillow orders a resize's two passes by cost, and a band of rows of this\n"
          "   enlargement takes the other order than the whole; passes made by hand would join exactly)")
    for name, ms in side_by_side_threads(data).items():
        print(f"  {name:24s} {ms:6.1f} ms")


if __name__ == "__main__":
    main()
