"""The imaging core: the bytes of an upload in, encoded variations out. No AWS, no files.

One decode per source, guarded before any pixel is touched (format allow-list, byte limit, an
estimate of the decode's peak memory against a budget, complete JPEG data), shrunk on load to the
smallest DCT scale that still serves the most detailed variation.
That decode is brought upright, to sRGB and to 8 bits once; every variation is then cut from the
smallest whole-frame intermediate that still has enough detail (large from the decode, medium
from large, ...), so the expensive full-size work happens once. A JPEG decoded a little under
large's size (and the whole photo: no partial last pixel) serves both large (enlarged by up to
1/MIN_DECODE_FRACTION) and medium, each resized from it at once. On several threads, a JPEG with
restart markers is decoded in horizontal strips at once, a big first resize runs in vertical bands,
and each variation is made as soon as its source exists.
"""

from __future__ import annotations

import importlib
import math
import io
import os
import re
import threading
import time
import warnings
from collections import Counter
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from fractions import Fraction
from typing import TYPE_CHECKING, Callable, Mapping, NamedTuple

from PIL import Image, ImageFile, UnidentifiedImageError

from pipeline.types import Encoder, Geometry, PluginFailure, Variation

if TYPE_CHECKING:
    from pipeline.config import PipelineConfig
    from pipeline.registry import Registry

# Decompression bombs are refused by our memory estimate (and max_pixels), with a clearer message.
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
# The smallest DCT scale whose decode is at least this fraction of the first step's size is used,
# and the step enlarges it by up to 3% if need be: a 12 MP photo decodes at 1/2 (2016 px for the
# 2048 px variation), a 40 MP one at 1/4. Dropping the DCT's top frequencies is what JPEG's own
# quantisation does: measured after the encode (benchmarks/shrink_on_load.py, PSNR against LANCZOS
# from the full-size decode), the smallest scale is as good as a full-size decode or better (32.1
# and 32.1 dB at 40 MP, 33.2 and 33.0 at 12 MP), and the decode and first step take a third less
# CPU at 12 MP. Before the encode it is up to 3.4 dB lower: the encode would drop the same detail.
MIN_DECODE_FRACTION = 0.97
# Pillow's resize first reduces by a whole factor while that still leaves 3x to resample.
REDUCING_GAP = 3.0
# Frame types whose decoding goes through the IDCT and so can be scaled; libjpeg-turbo ignores
# the scale for lossless frames and would write full-width rows into a narrower image.
DCT_FRAMES = {0xC0, 0xC1, 0xC2, 0xC9, 0xCA}
PROGRESSIVE_FRAMES = {0xC2, 0xC6, 0xCA, 0xCE}
HUFFMAN_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7}  # the others are arithmetic-coded
SEQUENTIAL_HUFFMAN_FRAMES = {0xC0, 0xC1}  # baseline and extended sequential
# A JPEG with restart markers is decoded in strips at once (_decode_in_strips), each of at least
# this much data; a 0.7 MiB 12 MP JPEG still decodes in half the time in two strips.
MIN_STRIP_BYTES = 2**18
# A JPEG without restart markers is given to its decoder in this many pieces when another core
# can resize the rows written so far (see _decode_streaming); pieces no smaller than 64 KiB.
DECODE_PIECES = 16
MIN_DECODE_PIECE = 2**16
# Horizontal passes made during such a decode, on one thread: the two most detailed cuts from the
# decode (large and medium) fit in a 40 MP decode's time and hold no more than two resizes at once.
MAX_FIRST_PASSES = 2
# Pillow's image memory in blocks of this size, once a render uses threads (Pillow's default is 16
# MiB: an image of up to that size is one block). With two threads freeing images of different
# sizes in turn, malloc reuses 1 MiB blocks where it held on to the big ones: 67-68 MiB at the
# peak of a 40 MP render on two vCPUs against 76-90, for about 2% more CPU (measured side by side),
# which is why a render on one thread keeps the default.
THREADED_BLOCK_BYTES = 2**20
# ... only for a decode at 1/4 of the photo's sides or smaller: the Huffman decoding of the whole
# stream, which no DCT scale shortens, then outlasts those passes (40 MP: 90 ms against 52). At 1/2
# (12 MP) they would outlast the decode on their one thread, where two threads share them after it.
MIN_STREAMED_SHRINK = 4
# What an RGB image is filled with before a streaming decode: a row with a pixel unlike it is written.
SENTINEL = (1, 254, 3)
# Tables and frame of a JPEG are a few KiB; more (repeated tables) would be copied into every strip.
MAX_STRIP_HEADER_BYTES = 2**16
RESTART = re.compile(rb"\xff[\xd0-\xd7]")
# The first marker in a scan that is no restart marker ends it (FF 00 is a stuffed FF, FF FF a fill byte).
SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
RESTARTS_IN_ORDER = bytes(byte for number in range(8) for byte in (0xFF, 0xD0 + number))  # RST0 to RST7
MARKERS_LISTED_AT_ONCE_FROM = 2**16  # bytes of a scan: a list of its markers at a time, not of all

MiB = 2**20
# The function's memory, set by Lambda in MB that are MiB (OpenTelemetry's faas.max_memory is it
# times 1,048,576).
LAMBDA_MEMORY_VARIABLE = "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"
LAMBDA_MB_PER_VCPU = 1769  # Lambda's memory for one full vCPU of CPU time
DEFAULT_MEMORY_BUDGET = 1024 * MiB  # off Lambda (the process command, tests), unless max_memory_mb is set
# What a resize function's process holds whatever the upload, so in no upload's estimate.
# benchmarks/memory.py measured 133 MiB (x86_64, Python 3.11): 79 for the interpreter with the
# handler's imports and every decoder and encoder loaded, 54 for encoding the variations of a
# 2048x1536 photo with every built-in encoder on (AVIF's takes the most) and holding the outputs.
# The other 91 MiB (5% of the deployed 1769) are for what cannot be measured here: Lambda's
# runtime client, the arm64 builds of the libraries, malloc's fragmentation across invocations.
RUNTIME_ALLOWANCE = 224 * MiB

# What each decoder holds besides the decoded image, from how the library decodes; the estimate
# stays above every peak benchmarks/memory.py measures.
# A progressive JPEG, or one whose components come in separate scans, keeps the coefficients of
# every 8x8 block (64 of 2 bytes) until the last scan; a baseline JPEG needs a few rows only.
JPEG_COEFFICIENT_BYTES = 128
# Progressive encoders write about ten scans (libjpeg-turbo's default script has ten, mozjpeg's a
# few more); each one is a pass over every block, so their number bounds the decode's CPU time.
MAX_JPEG_SCANS = 100
# Pillow decodes every WebP through libwebp's animation decoder, which holds two canvases of 4
# bytes a pixel for as long as the image lives and hands each frame over as a copy. Only the first
# frame is decoded, so the frame count costs nothing; the canvas size is what counts.
WEBP_CANVAS_BYTES = 8
WEBP_FRAME_COPY_BYTES = 4
# AVIF and HEIF: the decoded planes (_plane_bytes), then the RGB(A) the library converts them to,
# 4 bytes a pixel, from which Pillow's image is made.
DECODED_RGBA_BYTES = 4
# Pillow's own bytes per pixel of a mode (everything else is 4).
MODE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
# The upload while it is decoded: the caller's bytes, the decoder's copy of them (Pillow reads the
# whole file in one block) and one more in passing. Counted per upload, not in the allowance:
# uploads range from a few bytes to max_bytes.
UPLOAD_COPIES = 3
# Bytes per pixel of the decode's output size (the most detailed variation's): the base, its
# upright and sRGB copies and alpha, each smaller variation cut from it, watermarking's copy. Up
# to 12.4 measured (an RGBA PNG with an Adobe RGB profile, turned by EXIF, watermarked).
BASE_WORK_BYTES = 16

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


def lambda_memory_mb(environ: Mapping[str, str] = os.environ) -> int | None:
    """The memory of the Lambda function this runs in, in MB; None off Lambda."""
    function_mb = environ.get(LAMBDA_MEMORY_VARIABLE, "").strip()
    return int(function_mb) if function_mb else None


def judging_limits(config: "PipelineConfig", environ: Mapping[str, str] = os.environ) -> dict[str, int]:
    """The limits an upload is judged by: bytes, pixels, and the memory its decode may take.

    In Lambda the budget is the function's memory less RUNTIME_ALLOWANCE; elsewhere it is
    DEFAULT_MEMORY_BUDGET. `max_memory_mb` in the configuration replaces the default and, in
    Lambda, may only lower what the function's memory allows: more would end in out-of-memory.
    """
    budgets = []
    if config.max_memory_mb is not None:
        budgets.append(config.max_memory_mb * MiB)
    function_mb = lambda_memory_mb(environ)
    if function_mb is not None:
        budgets.append(max(0, function_mb * MiB - RUNTIME_ALLOWANCE))
    return {"max_bytes": config.max_bytes, "max_pixels": config.max_pixels,
            "memory_budget_bytes": min(budgets) if budgets else DEFAULT_MEMORY_BUDGET}


def _amount(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / MiB:.0f} MiB"


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


def open_source(data: bytes, *, max_pixels: int, max_bytes: int) -> Image.Image:
    """Open an upload without decoding its pixels; refuse what its header rules out.

    (Pillow's WebP opener reserves the canvas's memory but touches none of it: memory is used only
    once pixels are decoded.)
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
        except UnidentifiedImageError:  # its message names the BytesIO's address: different in every process
            raise RejectedImage(f"corrupt {image_format} file: its header cannot be read") from None
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
    scans = _jpeg_scans(data) if image_format == "JPEG" else 0
    if scans > MAX_JPEG_SCANS:
        raise RejectedImage(f"JPEG with more than {MAX_JPEG_SCANS} scans, over the limit (each scan is a pass "
                            "over the whole image: a few hundred bytes can cost minutes); not decoded")
    return image


def _is_jpeg(image: Image.Image) -> bool:
    """A JPEG, or a JPEG with further pictures in an MP Format segment (phones' gain maps, depth
    maps): Pillow opens those as "MPO", whose first picture is the photo and decodes as a JPEG."""
    return image.format in ("JPEG", "MPO")


def _jpeg_scans(data: bytes) -> int:
    """How many scans the first picture of a JPEG has (counting stops past MAX_JPEG_SCANS).

    Walks the markers between scans, skipping each segment whole: a comment may hold the bytes
    of an end-of-image marker. Byte stuffing keeps markers out of the entropy-coded data: the
    first marker in it that is no restart marker (SCAN_END) ends a scan.
    """
    layout = _jpeg_layout(data)
    if layout is None:
        return 0
    if not layout.whole_image_buffered:
        # One scan with every component of a sequential frame: libjpeg stops at a second one
        # ("didn't expect more than one scan"), so the entropy-coded data need not be read.
        return 1
    scans, position = 1, layout.data_start
    while scans <= MAX_JPEG_SCANS:
        found = SCAN_END.search(data, position)  # past stuffed bytes, restart markers and fill
        if found is None or found.start() + 4 > len(data) or found.group() == b"\xff\xd9":
            return scans
        # a segment (SOS, DHT, COM, ...): its length counts its own two bytes
        position = found.start()
        scans += data[position + 1] == 0xDA
        position += 2 + int.from_bytes(data[position + 2:position + 4], "big")
    return scans


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation of an opened upload, 1 when it has none. A PNG's EXIF may follow its
    pixels, so Pillow decodes a PNG to look for it: call this only once the decode may happen."""
    if image.format == "HEIF":  # libheif has already applied the HEIF transforms
        return 1
    with warnings.catch_warnings():  # Pillow warns of broken EXIF on stderr, naming no file
        warnings.simplefilter("ignore")
        try:
            orientation = image.getexif().get(ORIENTATION_TAG, 1)
        except Exception:
            return 1  # unreadable EXIF is no reason to refuse a photo
    return orientation if orientation in UPRIGHT else 1


class DecodePlan(NamedTuple):
    upright: tuple[int, int]
    wanted: tuple[int, int]  # the decode's output size, in stored orientation
    variations: list[tuple[Variation, Geometry]]


def plan_decode(size: tuple[int, int], orientation: int, registry: "Registry", *,
                only: set[str] | None = None) -> DecodePlan:
    """Where every variation (or those in `only`) comes from, and the one decode size that serves them all."""
    upright = (size[1], size[0]) if orientation >= 5 else size
    variations = [
        (variation, _checked_plan(registry, variation, upright, _plugin_call(
            registry, "transform", variation.transform, "plan", registry.transforms[variation.transform].plan,
            upright, (variation.width, variation.height))))
        for variation in registry.variations.values() if only is None or variation.name in only
    ]
    scale = min(max((g.scale for _, g in variations), default=1.0), 1.0)
    wanted = (max(1, round(upright[0] * scale)), max(1, round(upright[1] * scale)))
    if orientation >= 5:
        wanted = wanted[::-1]  # the decoder works in stored orientation
    return DecodePlan(upright, wanted, variations)


def estimate_memory(data: bytes, registry: "Registry") -> int:
    """Peak bytes rendering this upload takes on top of RUNTIME_ALLOWANCE, judged from its header."""
    config = registry.config
    return _memory_needed(open_source(data, max_pixels=config.max_pixels, max_bytes=config.max_bytes), data, registry)


def render(data: bytes, registry: "Registry", *, only: set[str] | None = None,
           on_variation: Callable[[RenderedVariation], None] | None = None, threads: int | None = None) -> Rendering:
    """Every variation of one upload (or those named in `only`), encoded.

    `on_variation` gets each variation as soon as it is encoded, so its files can be stored
    while the next are made. With more than one thread (default: one per CPU this process may
    use), a big first step is cut in bands and each variation's resize and encodes run as soon
    as their source exists, at the same time as the others': Pillow releases the GIL for each.

    Raises RejectedImage for an unusable upload and PluginFailure for a plugin that raised or
    broke its contract.
    """
    limits = judging_limits(registry.config)
    image = open_source(data, max_pixels=limits["max_pixels"], max_bytes=limits["max_bytes"])
    needed, budget = _memory_needed(image, data, registry), limits["memory_budget_bytes"]
    if needed > budget:
        raise RejectedImage(f"{_described(image, data)}: decoding needs about {_amount(needed)}, "
                            f"over the memory budget of {_amount(budget)}; not decoded")
    orientation = exif_orientation(image)
    plan = plan_decode(image.size, orientation, registry, only=only)
    upright = plan.upright
    source = SourceInfo("JPEG" if _is_jpeg(image) else image.format, upright[0], upright[1], len(data))
    threads = threads or usable_cpus()
    pool = _render_threads(threads)
    if isinstance(pool, _Inline):  # one CPU, or a render inside a render
        threads = 1
    elif Image.core.get_block_size() != THREADED_BLOCK_BYTES:
        Image.core.set_block_size(THREADED_BLOCK_BYTES)
    first_passes = _FirstPasses(plan.variations, upright)
    decoded = {DECODED: _decode_base(image, data, plan.wanted, orientation, pool, threads, first_passes)}
    del image  # the full-size decode and its decoder's buffers go before the variations are made
    rendered, smallest = _variations(decoded, upright, plan.variations, registry, pool, on_variation, first_passes)

    from pipeline.placeholder import placeholder

    ordered = [rendered[variation.name] for variation, _ in plan.variations]
    return Rendering(source, ordered, placeholder(smallest))


def usable_cpus(environ: Mapping[str, str] = os.environ) -> int:
    """The CPUs this process may run on, and in Lambda no more than its memory pays for.

    Lambda gives CPU time in proportion to memory, one full vCPU per 1769 MB (two at 3538 MB, six
    at 10240 MB), but may show a function more vCPUs than that: a second thread on a function paid
    for one vCPU would share its time, holding more memory for no gain. A part of a vCPU beyond
    the whole ones gets a thread: at 2654 MB two threads each have three quarters of one.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    function_mb = lambda_memory_mb(environ)
    if function_mb is not None:
        cpus = min(cpus, max(1, math.ceil(function_mb / LAMBDA_MB_PER_VCPU)))
    return max(1, cpus // _cpus_shared_by)


_cpus_shared_by = 1  # processes rendering at once on this process's CPUs (the local backfill's workers)


def share_cpus(processes: int) -> None:
    """This process is one of `processes` that render at the same time on the same CPUs: each
    render takes its share of them, instead of every process a thread per CPU."""
    global _cpus_shared_by
    _cpus_shared_by = max(1, processes)


_pools: dict[int, Executor] = {}
_pools_made = threading.Lock()
_render_thread = threading.local()  # `inside` is set in the pools' own threads


def _start_afresh_after_fork() -> None:
    """A forked child has the pools but not their threads, and maybe the lock held by a thread it
    lacks, or the mark of a render thread: it makes its own."""
    global _pools_made, _render_thread
    _pools.clear()
    _pools_made, _render_thread = threading.Lock(), threading.local()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_start_afresh_after_fork)


def _render_threads(threads: int) -> Executor:
    """The process's pool of `threads` render threads, made once: a warm function's next upload
    finds them waiting instead of starting new ones. A render started on one of them (from a
    plugin or an `on_variation`) runs inline: waiting there for its own tasks could wait forever."""
    if threads < 2 or getattr(_render_thread, "inside", False):
        return _Inline()
    with _pools_made:
        if threads not in _pools:
            _pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="render",
                                                 initializer=setattr, initargs=(_render_thread, "inside", True))
        return _pools[threads]


class _Inline(Executor):
    """Runs each task at once in the calling thread: one CPU gains nothing from threads."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # noqa: BLE001 - handed to whoever waits, as a thread's would be
            future.set_exception(error)
        return future


DECODED = -1  # the decode's place among the variations' sources


def _order(planned: list[tuple[Variation, Geometry]], upright: tuple[int, int],
           base_size: tuple[int, int]) -> tuple[list[tuple[Variation, Geometry]], list[int]]:
    """The variations, most detailed first, and for each where its pixels come from: DECODED, or the
    position of an earlier whole-frame variation, the smallest that still has the detail it needs."""
    order = sorted(planned, key=lambda p: -p[1].scale)

    def scale_of(size: tuple[int, int]) -> float:
        return min(size[0] / upright[0], size[1] / upright[1])

    wholes: list[tuple[int, float]] = [(DECODED, scale_of(base_size))]  # (position, scale)
    sources = []
    for position, (_, geometry) in enumerate(order):
        enough = [w for w in wholes if w[1] >= geometry.scale * 0.995]
        sources.append(min(enough, key=lambda w: w[1])[0] if enough else DECODED)
        if geometry.shows_whole(upright):
            wholes.append((position, scale_of(geometry.size)))
    return order, sources


class _FirstPasses:
    """The horizontal passes of the variations cut from the decode (see _cut), made strip by strip
    from the rows the decoder has written so far (see _decode_streaming): on a second core, while
    the first decodes the rest. For the MAX_FIRST_PASSES most detailed.

    `streamable` (set by _decode_base) says the decode is one whose rows could be handed on this
    way, on any number of CPUs: those cuts are then made in two passes on one CPU too, so that
    the bytes are the same (Pillow orders one resize's passes by cost, and a strip of rows may
    take the other order than the whole); every other cut is one resize, as cheap as Pillow makes it.
    """

    def __init__(self, planned: list[tuple[Variation, Geometry]], upright: tuple[int, int]):
        self.planned, self.upright = planned, upright
        self.streamable = False
        # position in _order -> (every row of the decode at the cut's width, the cut's box, the filter)
        self.made: dict[int, tuple[Image.Image, tuple[float, float, float, float], Image.Resampling]] = {}

    def positions(self, size: tuple[int, int]) -> dict[int, tuple[int, tuple[float, float, float, float]]]:
        """The cuts from a decode of `size` that get a first pass, each with its width and box:
        the MAX_FIRST_PASSES most detailed that are not the decode itself."""
        order, sources = _order(self.planned, self.upright, size)
        chosen = {}
        for position, source in enumerate(sources):
            geometry = order[position][1]
            box = _box(size, self.upright, geometry)
            if source == DECODED and len(chosen) < MAX_FIRST_PASSES and not _whole(size, box, geometry):
                chosen[position] = (geometry.size[0], box)
        return chosen

    def add(self, decoded: Image.Image, top: int, bottom: int) -> None:
        """Pass rows top to bottom of `decoded`, its final pixels; called for each strip in order."""
        if top == 0:
            resample = _filter_for(decoded)
            for position, (width, box) in self.positions(decoded.size).items():
                self.made[position] = (Image.new(decoded.mode, (width, decoded.height), None), box, resample)
        strip = decoded.crop((0, top, decoded.width, bottom))
        for rows, box, resample in self.made.values():
            rows.paste(_first_pass(strip, box, rows.width, resample), (0, top))


def _variations(pixels: dict[int, Image.Image], upright: tuple[int, int], planned: list[tuple[Variation, Geometry]],
                registry: "Registry", pool: Executor, on_variation: Callable[[RenderedVariation], None] | None,
                first_passes: _FirstPasses) -> tuple[dict[str, RenderedVariation], Image.Image]:
    """Resize and encode every variation, each as soon as its source exists; returns them and the
    smallest whole-frame image (the placeholder's source).

    `pixels` holds the decode under DECODED, and each variation cut from it under its position;
    an image leaves it once every variation made from it is cut, so the peak holds no more than the
    images still in use. Sources are never changed once made. `first_passes` holds the horizontal
    pass of some cuts from the decode if they were made while it was decoded: if every cut from it
    has one, the decode goes at once.
    """
    order, sources = _order(planned, upright, pixels[DECODED].size)
    wholes = [p for p, (_, g) in enumerate(order) if g.shows_whole(upright)]
    keep = min(wholes, key=lambda p: order[p][1].scale) if wholes else DECODED  # the placeholder's source
    uncut = Counter(sources)  # variations still to be cut from each image
    made = first_passes.made
    in_two_passes = first_passes.positions(pixels[DECODED].size) if first_passes.streamable else {}
    if keep != DECODED and all(p in made for p, source in enumerate(sources) if source == DECODED):
        del pixels[DECODED]
    rendered: dict[str, RenderedVariation] = {}
    pending: list[Future] = []
    failures: list[BaseException] = []
    parallel = not isinstance(pool, _Inline)
    bookkeeping = threading.Lock()

    def make(position: int) -> None:
        if failures:
            return
        variation, geometry = order[position]
        started = time.perf_counter()
        if position in made:
            cut = _second_pass(*made.pop(position), geometry.size)
        else:
            source = pixels[sources[position]]
            cut = _cut(source, upright, geometry, position in in_two_passes)
            # Pillow keeps a save's parameters on the Image: two variations saving one object at once
            # would swap qualities. A variation the size of its source gets its own copy.
            if cut is source:
                cut = cut.copy()
            del source
        with bookkeeping:
            uncut[sources[position]] -= 1
            if not uncut[sources[position]] and sources[position] != keep and sources[position] in pixels:
                del pixels[sources[position]]  # (the decode may have gone already)
            if uncut[position] or position == keep:
                pixels[position] = cut
        children = [child for child, source in enumerate(sources) if source == position]
        if parallel:  # the variations made from this one start on other threads while it is encoded here
            for child in children:
                schedule(make, child)
            finish(position, started, cut)
        else:  # encoded first, so its files are stored while the next variations are made
            finish(position, started, cut)
            del cut  # the children made next, here, hold it in `pixels` only until the last is cut
            for child in children:
                schedule(make, child)

    def finish(position: int, started: float, image: Image.Image) -> None:
        if failures:
            return
        variation, _ = order[position]
        for postprocessor in registry.postprocessors_for(variation):
            before = image
            image = _plugin_call(registry, "post-processor", postprocessor.name, "apply", postprocessor.apply,
                                 image.copy())  # sources must stay unmarked
            _check_postprocessed(registry, postprocessor.name, before, image)
        files = [EncodedFile(encoder, _encoded(registry, encoder, image)) for encoder in registry.renditions(variation)]
        done = RenderedVariation(variation, registry.spec_hash(variation), image.width, image.height, files,
                                 time.perf_counter() - started)
        rendered[variation.name] = done
        if on_variation:
            on_variation(done)

    def schedule(task, *args) -> None:
        future = pool.submit(task, *args)
        future.add_done_callback(lambda f: f.exception() and failures.append(f.exception()))  # stop early
        pending.append(future)

    for position, source in enumerate(sources):
        if source == DECODED:
            schedule(make, position)
    while not all(future.done() for future in pending):  # tasks add tasks: wait until none is left
        wait(pending)
    # From the futures, not `failures`: a future is done before its callbacks have run.
    raised = [future.exception() for future in pending if future.exception() is not None]
    smallest = pixels.get(keep)
    # `make` schedules itself: a reference cycle that only the garbage collector would break,
    # keeping every image of this upload alive into the next one's. Let them go now.
    pixels.clear()
    pending.clear()
    if raised:
        raise raised[0]
    return rendered, smallest


def _encoded(registry: "Registry", encoder: Encoder, image: Image.Image) -> bytes:
    encoded = _plugin_call(registry, "encoder", encoder.format, "encode", encoder.encode, image)
    if not isinstance(encoded, bytes) or not encoded:
        what = "an empty file" if isinstance(encoded, bytes) else f"{type(encoded).__name__}, not bytes"
        raise PluginFailure(registry.owner("encoder", encoder.format), "encode",
                            f"encoder {encoder.format!r} returned {what}")
    return encoded


WORKING_MODES = ("L", "LA", "RGB", "RGBA")


def _plugin_call(registry: "Registry", kind: str, name: str, hook: str, function, *args):
    try:
        return function(*args)
    except RejectedImage:
        raise
    except Exception as error:  # noqa: BLE001 - any plugin error becomes one line naming the plugin
        raise PluginFailure(registry.owner(kind, name), hook, f"{type(error).__name__}: {error}") from error


def _checked_plan(registry: "Registry", variation: Variation, upright: tuple[int, int], geometry: object) -> Geometry:
    """A transform's plan, or a PluginFailure saying how it breaks the contract: a Geometry of a
    whole positive size showing a non-empty part of the image, never larger than that part."""
    def broken(detail: str) -> PluginFailure:
        return PluginFailure(registry.owner("transform", variation.transform), "plan",
                             f"transform {variation.transform!r} planned {detail} for variation {variation.name!r}")

    if not isinstance(geometry, Geometry):
        raise broken(f"a {type(geometry).__name__}, not a Geometry")
    (width, height), (left, top, right, bottom) = geometry.size, geometry.region
    if not all(isinstance(v, int) and v > 0 for v in (width, height)):
        raise broken(f"the size {geometry.size!r}")
    if not (0 <= left < right <= upright[0] and 0 <= top < bottom <= upright[1]):
        raise broken(f"the region {geometry.region!r} of a {upright[0]}x{upright[1]} image")
    if width > math.ceil(right - left) or height > math.ceil(bottom - top):
        raise broken(f"{width}x{height} from a {right - left:g}x{bottom - top:g} region (an upscale)")
    return geometry


def _check_postprocessed(registry: "Registry", name: str, before: Image.Image, after: object) -> None:
    plugin = registry.owner("post-processor", name)
    if not isinstance(after, Image.Image):
        raise PluginFailure(plugin, "apply", f"post-processor {name!r} returned {type(after).__name__}, not an image")
    if after.size != before.size:
        raise PluginFailure(plugin, "apply", f"post-processor {name!r} returned a {after.width}x{after.height} image "
                                             f"for a {before.width}x{before.height} one")
    if after.mode not in WORKING_MODES:
        raise PluginFailure(plugin, "apply", f"post-processor {name!r} returned mode {after.mode!r}; "
                                             f"expected one of {', '.join(WORKING_MODES)}")


def _decode_base(image: Image.Image, data: bytes, wanted: tuple[int, int], orientation: int,
                 pool: Executor | None = None, threads: int = 1, first_passes: _FirstPasses | None = None
                 ) -> Image.Image:
    """Decode once at `wanted` (stored orientation); return it upright, sRGB, 8 bit, no metadata.

    A DCT-scaled JPEG decode that is a little smaller than `wanted` and exactly the whole photo is
    returned at its own size instead: the variations are cut from it (see `_variations`).
    `first_passes` is told whether the decode is all there is to do (a sequential RGB JPEG,
    upright, sRGB, no resize to `wanted`) and takes long enough (MIN_STREAMED_SHRINK); if so, and
    no restart marker cuts it, it gets the rows as they are decoded on more than one thread.
    """
    image.decodermaxblock = max(image.decodermaxblock, len(data))  # one read, not 64 KiB ones: 3% faster
    whole = shrink_on_load(image, data, wanted) if _is_jpeg(image) else (0, 0, *image.size)
    icc_profile = image.info.get("icc_profile")
    streamable = (first_passes is not None and _is_jpeg(image) and image.mode == "RGB" and len(image.tile) == 1
                  and bool(image.decoderconfig) and image.decoderconfig[0] >= MIN_STREAMED_SHRINK
                  and orientation not in UPRIGHT and not _resized_to_wanted(image.size, wanted, whole)
                  and (not icc_profile or _describes_srgb(icc_profile)) and _decodes_row_by_row(_jpeg_layout(data)))
    if first_passes is not None:
        first_passes.streamable = streamable
    following = None
    try:
        decoded = _decode_in_strips(image, data, pool, threads)
        if decoded is None and streamable and threads > 1:
            decoded, following = _decode_streaming(image, data, pool, first_passes.add)
        decoded = decoded or image
        decoded.load()
    except Exception as error:
        raise RejectedImage(f"truncated or corrupt {image.format} data ({error}); the upload may be incomplete") from None
    if following is not None:
        following.result()  # the first passes' own failure (out of memory, say): not the upload's fault
    # 16-bit greyscale is resized before it is made 8 bit: at full size that takes two 32-bit
    # copies (8 bytes a pixel, 800 MB for a 100 MP scan). reduce() knows no 16-bit mode.
    sixteen_bit = image.mode.startswith("I;16")
    pixels = decoded if sixteen_bit else _eight_bit(decoded)
    # A DCT-scaled decode a little smaller than `wanted` is kept at its own size when it is the
    # whole photo: the variations then enlarge or shrink it each in one resize, at the same time
    # (the most detailed one needs the slight enlargement, the next one need not wait for it).
    if _resized_to_wanted(pixels.size, wanted, whole):
        pixels = _big_step(pixels, wanted, whole, None if sixteen_bit else REDUCING_GAP, pool, threads)
    pixels = _eight_bit(pixels)
    if orientation in UPRIGHT:
        pixels = pixels.transpose(UPRIGHT[orientation])
    pixels = _to_srgb(pixels, icc_profile)
    if pixels is image:  # a plain Image on the decoded pixels, without the file and 10 MB of copying
        pixels = image._new(image.im)
    pixels.info = {}  # no EXIF, GPS, XMP or profile may reach an output
    return pixels


def _resized_to_wanted(size: tuple[int, int], wanted: tuple[int, int], whole: tuple[float, float, float, float]) -> bool:
    """Whether a decode of `size` is resized to `wanted` before the variations are cut: not when
    it is a DCT-scaled decode a little smaller than `wanted` that is exactly the whole photo (the
    variations then enlarge or shrink it each in one resize, at the same time: the most detailed
    one needs the slight enlargement, the next one need not wait for it)."""
    kept_small = whole == (0, 0, *size) and (size[0] < wanted[0] or size[1] < wanted[1])
    return size != wanted and not kept_small


def _decodes_row_by_row(layout: JpegLayout | None) -> bool:
    """Whether libjpeg writes the rows as it reads the file: a sequential Huffman-coded frame
    whose first scan holds every component (otherwise it buffers the whole image first)."""
    return layout is not None and layout.frame_type in SEQUENTIAL_HUFFMAN_FRAMES and not layout.whole_image_buffered


def _decode_streaming(image: Image.Image, data: bytes, pool: Executor,
                      on_rows: Callable[[Image.Image, int, int], None]) -> tuple[Image.Image, Future]:
    """A JPEG (one tile, RGB) decoded from DECODE_PIECES pieces of the file, `on_rows(decoded, top,
    bottom)` called on a thread of `pool` for each strip of rows as soon as the decoder has written
    it, in order, while it writes the next: the decode then overlaps the variations' first passes.
    Returns the decode and that thread's future (failed if on_rows raised); raises what the decoder
    raises, once that thread has stopped.

    libjpeg does not say how far it has got. The image is filled with SENTINEL first; rows are
    written whole and in order, so after each piece every row above the last one with a pixel
    unlike SENTINEL is written (a written row that looks like SENTINEL only delays its strip).
    """
    name, extents, offset, args = image.tile[0]
    decoded = image._new(Image.core.fill(image.mode, image.size, SENTINEL))
    decoder = Image._getdecoder(image.mode, name, args, image.decoderconfig)
    decoder.setimage(decoded.im, extents)
    written, state, changed = [0], ["decoding"], threading.Condition()
    # The image reaches the thread in a list it empties when it ends: the pool's worker may still
    # hold this function a moment after its future is done, and with it the image, if not.
    handed = [decoded]

    def follow() -> None:
        done = 0
        try:
            while True:
                with changed:
                    changed.wait_for(lambda: written[0] > done or state[0] != "decoding")
                    ready, now = written[0], state[0]
                if now == "failed":
                    return
                if ready > done:
                    on_rows(handed[0], done, ready)
                    done = ready
                elif now == "decoded":
                    return
        finally:
            handed.clear()

    following = pool.submit(follow)
    piece = max(MIN_DECODE_PIECE, _ceil_div(len(data) - offset, DECODE_PIECES))
    pending, position = b"", offset
    try:
        while not following.done():  # it ends early only if on_rows raised: the caller raises that
            pending += data[position:position + piece]
            position += piece
            consumed, error = decoder.decode(pending)
            if consumed < 0:
                if error < 0:
                    raise ImageFile._get_oserror(error, encoder=False)  # Pillow's own words, as for a whole decode
                with changed:
                    written[0], state[0] = decoded.height, "decoded"
                    changed.notify_all()
                break
            if position >= len(data):
                raise OSError("image file is truncated")
            pending = pending[consumed:]
            rows = _rows_written(decoded, written[0])
            if rows > written[0]:
                with changed:
                    written[0] = rows
                    changed.notify_all()
    except BaseException:
        with changed:
            state[0] = "failed"
            changed.notify_all()
        wait([following])  # it no longer reads the image, nor holds its strips, once this raises
        raise
    finally:
        decoder.cleanup()
    return decoded, following


def _rows_written(decoded: Image.Image, known: int) -> int:
    """How many rows from the top are surely written (see _decode_streaming), at least `known`:
    a binary search for the last row whose first, middle or last pixel is unlike SENTINEL."""
    def written(y: int) -> bool:
        return any(decoded.im.getpixel((x, y)) != SENTINEL for x in (0, decoded.width // 2, decoded.width - 1))

    below, above = known - 1, decoded.height  # row `below` is written (or is -1), row `above` is not known to be
    while above - below > 1:
        middle = (below + above) // 2
        below, above = (middle, above) if written(middle) else (below, middle)
    return below + 1


def _big_step(pixels: Image.Image, wanted: tuple[int, int], box: tuple[float, float, float, float],
              reducing_gap: float | None, pool: Executor | None, threads: int) -> Image.Image:
    """The resize out of the decode, in one vertical band per thread when there are several.

    A band is the same resize with the box of its columns: Pillow takes each output pixel's filter
    taps from the whole image, so the bands join without a seam, byte for byte the single resize,
    when Pillow's arithmetic on a band's box is exact: when the step from output to input columns
    is a binary fraction (any width to 2048 px is), and when every band takes the whole's order of
    passes (_horizontal_first). Otherwise a float rounding may move a pixel by one level, and so
    may bands of rows. Not when Pillow would first reduce() by a whole factor,
    which works on blocks that bands would cut, nor for an image with alpha, which each band would
    premultiply whole (memory the estimate lacks).
    """
    resample = _filter_for(pixels)
    reduces = reducing_gap is not None and max((box[2] - box[0]) / wanted[0], (box[3] - box[1]) / wanted[1]) >= 2 * reducing_gap
    binary_step = (Fraction(box[2] - box[0]) / wanted[0]).denominator.bit_count() == 1
    columns = [round(wanted[0] * band / threads) for band in range(threads + 1)]
    same_order = all(_horizontal_first(pixels.size, (end - start, wanted[1])) == _horizontal_first(pixels.size, wanted)
                     for start, end in zip(columns, columns[1:]))
    if (pool is None or threads < 2 or reduces or pixels.mode in ("LA", "RGBA") or wanted[0] < 16 * threads
            or not binary_step or not same_order):
        return pixels.resize(wanted, resample, box=box, reducing_gap=reducing_gap)
    step = (box[2] - box[0]) / wanted[0]
    bands = [pool.submit(pixels.resize, (end - start, wanted[1]), resample,
                         (box[0] + start * step, box[1], box[0] + end * step, box[3]))
             for start, end in zip(columns, columns[1:])]
    wait(bands)  # should one fail, none is still running (and holding its memory) once this raises
    joined = Image.new(pixels.mode, wanted)
    for start, band in zip(columns, bands):
        joined.paste(band.result(), (start, 0))
    return joined


def _horizontal_first(size: tuple[int, int], out: tuple[int, int]) -> bool:
    """Whether Pillow makes a resize of an image of `size` to `out` horizontal pass first: unless
    the height shrinks by more than twice what the width does (Pillow 13, Resample.c). A band of
    columns shrinks the width more than the whole, so it may take the other order and other bytes."""
    return not (size[1] - out[1] > 0 and size[1] - out[1] > (size[0] - out[0]) * 2)


def shrink_on_load(image: Image.Image, data: bytes, wanted: tuple[int, int]) -> tuple[float, float, float, float]:
    """Make a JPEG decode at the smallest DCT scale that gives at least MIN_DECODE_FRACTION of `wanted`.

    Pillow's draft() knows only 1/2, 1/4 and 1/8; this sets up the same decode (one tile, a
    scale denominator) with 3/8 too. The image size must be exactly what libjpeg-turbo will
    write, so it is computed with the library's own rounding, ceil(size * M / 8).

    Returns the box of the decoded pixels that is the whole photo: a width that is not a multiple
    of 8/M leaves a last column that is only part of a pixel, and resizing it as a whole one
    would shift the picture by up to half a pixel (2-8 dB on sharp edges).
    """
    width, height = image.size
    scale = _dct_scale(image, _jpeg_layout(data), wanted)
    if scale is None:
        return (0, 0, width, height)
    denominator, eighths = scale
    decode_at_scale(image, denominator, eighths)
    return (0, 0, width * eighths / 8, height * eighths / 8)


def _dct_scale(image: Image.Image, layout: JpegLayout | None, wanted: tuple[int, int]) -> tuple[int, int] | None:
    """The (denominator, eighths) shrink_on_load decodes a not yet loaded JPEG at, or None for full size."""
    if len(image.tile) != 1 or image.decoderconfig or layout is None or layout.frame_type not in DCT_FRAMES:
        return None
    width, height = image.size
    for denominator, eighths in DCT_SCALES:
        if denominator == 3 and not getattr(Image.core, "libjpeg_turbo_version", None):
            continue  # plain libjpeg rounds 1/3 to 1/2: only the powers of two are safe there
        if (width * eighths / 8 >= wanted[0] * MIN_DECODE_FRACTION
                and height * eighths / 8 >= wanted[1] * MIN_DECODE_FRACTION):
            return denominator, eighths
    return None


def decode_at_scale(image: Image.Image, denominator: int, eighths: int) -> None:
    """Set up a not yet loaded JPEG (one tile) to decode at eighths/8 of its size."""
    size = _scaled(image.size, eighths)
    decoder, _, offset, args = image.tile[0]
    image.tile = [ImageFile._Tile(decoder, (0, 0, *size), offset, args)]
    image._size = size
    image.decoderconfig = (denominator, 0)


def _decode_in_strips(image: Image.Image, data: bytes, pool: Executor | None, threads: int) -> Image.Image | None:
    """A JPEG set up by shrink_on_load, decoded in one horizontal strip per thread at once; None
    when it cannot be cut (see _restart_cuts) or one thread would do it all.

    libjpeg-turbo reads one entropy-coded stream on one thread: the decode would be the render's
    serial third at 40 MP. Restart markers (some Android phones' cameras write them) cut that
    stream into intervals that each start on a byte boundary with the DC predictions reset, so a
    strip starting at one is a JPEG of its own once its frame header says its height. Each strip's
    decoder writes its rows of one image. Only where no component is upsampled vertically: that
    reads the rows on both sides of each one, across a strip's edge. Elsewhere the strips join
    byte for byte the whole decode.
    """
    if pool is None or threads < 2 or not image.decoderconfig:
        return None
    layout = _jpeg_layout(data)
    if (layout is None or layout.frame_type not in SEQUENTIAL_HUFFMAN_FRAMES or layout.whole_image_buffered
            or not layout.restart_interval or not layout.decoder_segments):
        return None
    eighths = dict(DCT_SCALES)[image.decoderconfig[0]]
    if _upsamples_rows(layout, eighths):
        return None
    end = SCAN_END.search(data, layout.data_start)
    if end is None or end.group() != b"\xff\xd9":
        return None  # another scan follows (or a stray marker): left to libjpeg whole
    end = end.start()
    cuts = _restart_cuts(data, layout, end, min(threads, (end - layout.data_start) // MIN_STRIP_BYTES))
    if not cuts:
        return None
    rows = [0] + [row * layout.mcu[1] for row, _ in cuts] + [layout.size[1]]  # stored pixel rows
    starts = [layout.data_start] + [marker + 2 for _, marker in cuts]
    ends = [marker for _, marker in cuts] + [end]
    segments = [data[start:stop] for start, stop in layout.decoder_segments]
    frame = [start for start, _ in layout.decoder_segments].index(layout.frame_at)
    whole_frame = segments[frame]
    decoded = Image.new(image.mode, image.size, None)  # every row is written by one strip's decoder
    strips = []
    for top, bottom, start, stop in zip(rows, rows[1:], starts, ends):
        segments[frame] = whole_frame[:5] + (bottom - top).to_bytes(2, "big") + whole_frame[7:]  # its height
        stream = b"".join((b"\xff\xd8", *segments, memoryview(data)[start:stop], b"\xff\xd9"))
        extents = (0, top * eighths // 8, image.width, _ceil_div(bottom * eighths, 8))
        strips.append((decoded, extents, stream, image.tile[0].args, image.decoderconfig))
    others = [pool.submit(_decode_strip, *strip) for strip in strips[1:]]
    try:
        _decode_strip(*strips[0])
    finally:
        wait(others)  # none may still be writing, or holding memory, once this returns or raises
    for other in others:
        other.result()
    return decoded


def _upsamples_rows(layout: JpegLayout, eighths: int) -> bool:
    """Whether libjpeg-turbo, decoding at eighths/8, upsamples some component vertically. Its IDCT
    gives each component as many samples as it can, doubling up to 8x8 a block while that still
    divides evenly (jdmaster.c); what it lacks after that is upsampled."""
    h_max, v_max = max(h for h, _ in layout.sampling), max(v for _, v in layout.sampling)
    for h, v in layout.sampling:
        size = eighths
        while size < 8 and (h_max * eighths) % (h * size * 2) == 0 and (v_max * eighths) % (v * size * 2) == 0:
            size *= 2
        if v * size != v_max * eighths:
            return True
    return False


def _restart_cuts(data: bytes, layout: JpegLayout, end: int, strips: int) -> list[tuple[int, int]]:
    """Where to cut a JPEG's scan (up to `end`, its end-of-image marker) into up to `strips` strips
    of about equal bytes, the decode's time going with them: for each strip after the first, its
    first row of MCUs and the position of the restart marker before it.

    A strip must start a row of MCUs, and its interval must follow an RST7: its decoder expects
    RST0 next. The markers are counted from the scan's start (FF and D0-D7 cannot occur together
    in entropy-coded data: an FF there is followed by a stuffed 00) and must come in order: after
    a missing or stray one libjpeg resynchronises by marker number, and the count would be wrong.
    """
    per_row = _ceil_div(layout.size[0], layout.mcu[0])
    frame_mcus = per_row * _ceil_div(layout.size[1], layout.mcu[1])
    interval = layout.restart_interval
    every = math.lcm(8, per_row // math.gcd(interval, per_row))  # the intervals that start such a strip
    cuts: list[tuple[int, int]] = []
    position, intervals = layout.data_start, 0  # the interval begun at `position`
    for strip in range(1, strips):
        # An FF starts no marker that a count up to it would cut in two.
        target = data.find(b"\xff", layout.data_start + (end - layout.data_start) * strip // strips, end + 1)
        while position < target and intervals * interval < frame_mcus:
            stop = data.find(b"\xff", position + MARKERS_LISTED_AT_ONCE_FROM, target)
            stop = target if stop < 0 else stop
            passed = RESTART.findall(data, position, stop)
            if not _in_order(passed, intervals):
                return cuts
            intervals, position = intervals + len(passed), stop
        while True:  # on to the next marker that starts such an interval
            marker = RESTART.search(data, position, end)
            if marker is None or not _in_order([marker.group()], intervals):
                return cuts
            intervals, position = intervals + 1, marker.end()
            if intervals % every == 0:
                break
        if intervals * interval >= frame_mcus:
            return cuts  # past the last row (the frame may declare fewer than its scan holds)
        cuts.append((intervals * interval // per_row, position - 2))
    return cuts


def _in_order(markers: list[bytes], intervals: int) -> bool:
    """Whether these restart markers number on from the `intervals` before them: RST0 to RST7, again and again."""
    found = b"".join(markers)
    first = 2 * (intervals % 8)
    return found == (RESTARTS_IN_ORDER * (len(markers) // 8 + 2))[first:first + len(found)]


def _decode_strip(image: Image.Image, extents: tuple[int, int, int, int], stream: bytes, args, config) -> None:
    """Decode one strip's JPEG into its rows of `image`, as Pillow's ImageFile.load does a tile."""
    decoder = Image._getdecoder(image.mode, "jpeg", args, config)
    try:
        decoder.setimage(image.im, extents)
        consumed, error = decoder.decode(stream)
    finally:
        decoder.cleanup()
    if error < 0:
        raise ImageFile._get_oserror(error, encoder=False)  # Pillow's own message for it
    if consumed >= 0:  # the decoder wants more: the strip's data ended before its rows did
        raise OSError("image file is truncated")


def _scaled(size: tuple[int, int], eighths: int) -> tuple[int, int]:
    """What libjpeg-turbo writes at eighths/8: its own rounding, ceil(size * M / 8)."""
    return _ceil_div(size[0] * eighths, 8), _ceil_div(size[1] * eighths, 8)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class JpegLayout(NamedTuple):
    frame_type: int  # the start-of-frame marker: 0xC0 baseline, 0xC2 progressive, 0xC3 lossless, ...
    blocks: int  # 8x8 blocks of all components together: the image data codes every one
    whole_image_buffered: bool  # progressive, or components in separate scans
    data_start: int  # where the first scan's entropy-coded data begins
    frame_at: int  # where the start-of-frame segment begins (the height is 5 bytes in)
    size: tuple[int, int]  # the frame's width and height
    sampling: tuple[tuple[int, int], ...]  # each component's horizontal and vertical sampling factors
    mcu: tuple[int, int]  # the pixels one minimum coded unit of the first scan covers
    restart_interval: int  # MCUs between restart markers, 0 for none
    decoder_segments: tuple[tuple[int, int], ...]  # (start, end) of each segment libjpeg reads, to the scan's;
    # none when they are over MAX_STRIP_HEADER_BYTES


def _jpeg_layout(data: bytes) -> JpegLayout | None:
    """The JPEG's frame and first scan, read from its markers; None if no scan follows a frame."""
    position, frame, restart_interval, decoder_segments, decoder_bytes = 2, None, 0, [], 0
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker == 0x00:  # libjpeg skips FF 00 as junk to the next marker: read no further than it agrees
            return None
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM, RSTn: markers without a segment, as libjpeg reads them
            position += 2
            continue
        end = position + 2 + int.from_bytes(data[position + 2:position + 4], "big")
        if not (0xE1 <= marker <= 0xED or marker in (0xEF, 0xFE)):  # what libjpeg skips: APP1-13, APP15, COM
            decoder_bytes += end - position
            if decoder_bytes <= MAX_STRIP_HEADER_BYTES:
                decoder_segments.append((position, end))
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # DHT, JPG, DAC are not frames
            frame = (marker, data[position + 4:end], position)
        elif marker == 0xDD and end == position + 6:  # define restart interval
            restart_interval = int.from_bytes(data[position + 4:end], "big")
        elif marker == 0xDA:  # start of scan
            if frame is None or not position + 5 <= end <= len(data) or len(frame[1]) < 6:
                return None
            frame_type, header, frame_at = frame
            height, width = int.from_bytes(header[1:3], "big"), int.from_bytes(header[3:5], "big")
            sampling = [(max(1, b >> 4), max(1, b & 15)) for b in header[7:6 + 3 * header[5]:3]]
            if not sampling:
                return None
            h_max, v_max = max(h for h, _ in sampling), max(v for _, v in sampling)
            blocks = sum(_ceil_div(_ceil_div(width * h, h_max), 8) * _ceil_div(_ceil_div(height * v, v_max), 8)
                         for h, v in sampling)
            # libjpeg decodes in one pass only when the first scan holds every component of a
            # sequential frame; otherwise it keeps every block's coefficients until the last scan.
            buffered = frame_type in PROGRESSIVE_FRAMES or data[position + 4] < len(sampling)
            # A scan of one component codes its blocks one by one; an interleaved one, a block of each
            # component's samples in turn.
            mcu = (8, 8) if data[position + 4] == 1 else (8 * h_max, 8 * v_max)
            segments = tuple(decoder_segments) if decoder_bytes <= MAX_STRIP_HEADER_BYTES else ()
            return JpegLayout(frame_type, blocks, buffered, end, frame_at, (width, height), tuple(sampling), mcu,
                              restart_interval, segments)
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
    # The last end-of-image marker, found from the end of the file (where it is) instead of by
    # reading megabytes of entropy-coded data; a cut file has none after the scan starts.
    end = data.rfind(b"\xff\xd9", layout.data_start)
    if end < 0:
        return "the image data has no end-of-image marker"
    needed, present = layout.blocks // 8, end - layout.data_start
    if layout.frame_type in HUFFMAN_FRAMES and present < needed:
        return (f"{size[0]}x{size[1]} pixels need at least {needed:,} bytes of image data, "
                f"the file has {present:,}")
    return None


def _memory_needed(image: Image.Image, data: bytes, registry: "Registry") -> int:
    """Peak bytes decoding an opened upload and making its variations take, judged from the header.

    Judged before the orientation is read (see exif_orientation), so for either orientation.
    """
    layout = _jpeg_layout(data) if _is_jpeg(image) else None
    return max(_memory_at(image, data, layout, plan_decode(image.size, orientation, registry).wanted)
               for orientation in (1, 6))


def _memory_at(image: Image.Image, data: bytes, layout: JpegLayout | None, wanted: tuple[int, int]) -> int:
    """Peak bytes of a decode to `wanted`: the upload's copies, the decoded image, the larger of
    what the decoder holds while loading and what remains after (decoder buffers the image
    keeps, the 8-bit conversion, the first resize pass), and the work at the variations' size.
    The phases overlap a little in the sum; the error is on the safe side."""
    scale = _dct_scale(image, layout, wanted) if _is_jpeg(image) else None
    decoded = _scaled(image.size, scale[1]) if scale else image.size
    while_loading, kept = _decoder_memory(image, data, layout)
    after_loading = kept + _conversion_memory(image, decoded, wanted)
    return (UPLOAD_COPIES * len(data) + decoded[0] * decoded[1] * MODE_BYTES.get(image.mode, 4)
            + max(while_loading, after_loading) + wanted[0] * wanted[1] * BASE_WORK_BYTES)


def _decoder_memory(image: Image.Image, data: bytes, layout: JpegLayout | None) -> tuple[int, int]:
    """What a format's decoder holds beyond the decoded image: while loading, and kept after."""
    pixels = image.width * image.height
    if _is_jpeg(image):
        if layout is None:  # unknown: assume the worst, three full-size components buffered
            return 3 * _ceil_div(pixels, 64) * JPEG_COEFFICIENT_BYTES, 0
        return (layout.blocks * JPEG_COEFFICIENT_BYTES if layout.whole_image_buffered else 0), 0
    if image.format == "WEBP":
        return pixels * (WEBP_CANVAS_BYTES + WEBP_FRAME_COPY_BYTES), pixels * WEBP_CANVAS_BYTES
    if image.format in ("AVIF", "HEIF"):
        planes = round(pixels * _plane_bytes(data, alpha="A" in image.mode))
        kept = planes if image.format == "AVIF" else 0  # libavif keeps them; pillow-heif lets go
        return planes + pixels * DECODED_RGBA_BYTES, kept
    return 0, 0  # PNG and GIF decode row by row into the image


def _conversion_memory(image: Image.Image, decoded: tuple[int, int], wanted: tuple[int, int]) -> int:
    """What _decode_base adds to the decoded image: the 8-bit copy and the first resize pass."""
    mode, pixels = image.mode, decoded[0] * decoded[1]
    if mode.startswith("I;16"):  # resized first, without reducing_gap; made 8 bit through two 32-bit copies
        resizing = _resize_memory(decoded, wanted, 2, None) if decoded != wanted else 0
        return resizing + wanted[0] * wanted[1] * 8
    if mode in ("P", "PA"):
        converted = 4
        alpha = image.has_transparency_data
    else:
        converted = 0 if mode in ("L", "LA", "RGB", "RGBA", "CMYK") else 1 if mode == "1" else 4
        alpha = mode in ("LA", "RGBA", "La", "RGBa")
    if decoded == wanted:
        return pixels * converted
    pixel_bytes = 1 if mode in ("1", "L") else 4
    premultiplied = pixels * 4 if alpha else 0  # Pillow resizes alpha premultiplied, in a copy
    return pixels * converted + premultiplied + _resize_memory(decoded, wanted, pixel_bytes, REDUCING_GAP)


def _resize_memory(size: tuple[int, int], wanted: tuple[int, int], pixel_bytes: int,
                   reducing_gap: float | None) -> int:
    """Pillow's resize before its output: past reducing_gap a reduced copy, then the horizontal
    pass, every (reduced) source row at the output width."""
    factors = [max(1, int(size[i] / wanted[i] / reducing_gap)) if reducing_gap else 1 for i in (0, 1)]
    reduced = (_ceil_div(size[0], factors[0]), _ceil_div(size[1], factors[1]))
    reduced_copy = reduced[0] * reduced[1] if factors != [1, 1] else 0
    return (reduced_copy + wanted[0] * reduced[1]) * pixel_bytes


def _plane_bytes(data: bytes, alpha: bool) -> float:
    """Bytes per pixel of an AVIF or HEIF image's decoded planes, from its codec configuration
    (av1C or hvcC in meta/iprp/ipco): luma, chroma at its subsampling, and alpha, at 1 byte a
    sample up to 8 bits and 2 above. Without a configuration, the most it could be."""
    def boxes(start: int, end: int, kinds: set[bytes]):
        while start + 8 <= end:
            size, kind, header = int.from_bytes(data[start:start + 4], "big"), data[start + 4:start + 8], 8
            if size == 1:
                size, header = int.from_bytes(data[start + 8:start + 16], "big"), 16
            elif size == 0:
                size = end - start
            if size < header:
                return
            if kind in kinds:
                yield kind, start + header, min(start + size, end)
            start += size

    layouts = []  # (chroma planes' share of the luma plane, bytes a sample)
    for _, meta, meta_end in boxes(0, len(data), {b"meta"}):
        for _, iprp, iprp_end in boxes(meta + 4, meta_end, {b"iprp"}):  # meta: version and flags first
            for _, ipco, ipco_end in boxes(iprp, iprp_end, {b"ipco"}):
                for kind, start, end in boxes(ipco, ipco_end, {b"av1C", b"hvcC"}):
                    if kind == b"av1C" and end - start >= 3:
                        flags = data[start + 2]  # tier, high bit depth, 12 bit, mono, subsampling x, y
                        chroma = 0 if flags & 0x10 else 2 / ((1 + bool(flags & 0x08)) * (1 + bool(flags & 0x04)))
                        layouts.append((chroma, 2 if flags & 0x40 else 1))
                    elif kind == b"hvcC" and end - start >= 19:
                        chroma = (0, 0.5, 1, 2)[data[start + 16] & 3]  # monochrome, 4:2:0, 4:2:2, 4:4:4
                        layouts.append((chroma, 2 if data[start + 17] & 7 or data[start + 18] & 7 else 1))
    if not layouts:
        return (3 + alpha) * 2.0
    sample_bytes = max(sample for _, sample in layouts)
    return (1 + max(chroma for chroma, _ in layouts) + alpha) * sample_bytes


def _described(image: Image.Image, data: bytes) -> str:
    """The upload as a refusal names it: its size and kind."""
    kind = "WebP" if image.format == "WEBP" else "JPEG" if _is_jpeg(image) else image.format
    if kind == "JPEG":
        layout = _jpeg_layout(data)
        if layout is not None and layout.whole_image_buffered:
            kind = "progressive JPEG" if layout.frame_type in PROGRESSIVE_FRAMES else "multi-scan JPEG"
    return f"{image.width}x{image.height} {kind}"


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


def _describes_srgb(profile: "bytes | ImageCms.ImageCmsProfile") -> bool:
    """Whether a colour profile (its bytes, or read) says it is sRGB: its pixels are kept as they are."""
    from PIL import ImageCms

    if isinstance(profile, bytes):
        try:
            profile = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        except (OSError, ImageCms.PyCMSError):
            return False
    return "srgb" in (profile.profile.profile_description or "").lower()


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
    if image.mode != "CMYK" and _describes_srgb(profile):
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


def _cut(source: Image.Image, upright: tuple[int, int], geometry: Geometry, in_two_passes: bool = False) -> Image.Image:
    """Render a geometry from `source`, a whole-frame image of the upright photo at its own scale.

    `in_two_passes`: the horizontal pass, then the vertical one, each a resize of its own, as
    _FirstPasses makes them. Not for an image with alpha, which each resize would premultiply anew.
    """
    box = _box(source.size, upright, geometry)
    if _whole(source.size, box, geometry):
        return source
    resample = _filter_for(source)
    if not in_two_passes:
        return source.resize(geometry.size, resample, box=box)
    return _second_pass(_first_pass(source, box, geometry.size[0], resample), box, resample, geometry.size)


def _first_pass(rows: Image.Image, box: tuple[float, float, float, float], width: int,
                resample: Image.Resampling) -> Image.Image:
    """The horizontal pass of a resize of `box` to `width`, on each of `rows` alone."""
    return rows.resize((width, rows.height), resample, box=(box[0], 0, box[2], rows.height))


def _second_pass(rows: Image.Image, box: tuple[float, float, float, float], resample: Image.Resampling,
                 size: tuple[int, int]) -> Image.Image:
    """The vertical pass of a resize of `box` to `size`, on `rows`, its horizontal pass."""
    return rows.resize(size, resample, box=(0, box[1], rows.width, box[3]))


def _box(size: tuple[int, int], upright: tuple[int, int], geometry: Geometry) -> tuple[float, float, float, float]:
    """A geometry's region in the pixels of a whole-frame image of `size`."""
    sx, sy = size[0] / upright[0], size[1] / upright[1]
    left, top, right, bottom = geometry.region
    return (left * sx, top * sy, right * sx, bottom * sy)


def _whole(size: tuple[int, int], box: tuple[float, float, float, float], geometry: Geometry) -> bool:
    return geometry.size == size and box == (0, 0, *size)


def _filter_for(source: Image.Image) -> Image.Resampling:
    return BIG_STEP_FILTER if source.width * source.height > BIG_STEP_PIXELS else SMALL_STEP_FILTER
