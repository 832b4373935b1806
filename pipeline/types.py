"""The public types a plugin works with: variations, transforms, encoders and post-processors.

A plugin module imports these and the `hookimpl` marker from `pipeline.hookspecs`; nothing else
of the pipeline is part of the contract.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    from PIL import Image

VARIATION_NAME = re.compile(r"^[a-z0-9_-]+$")
RESERVED_NAMES = frozenset({"original", "manifest"})


class PluginError(Exception):
    """A plugin or the configuration that enables it is wrong; the message says which and why."""


class PluginFailure(Exception):
    """A plugin raised, or broke its contract, while rendering: the upload is fine, the code is not.

    Not a verdict on the upload, so it never becomes a failed manifest: `process` reports it and
    goes on, and in Lambda it is retried and then left in the dead-letter queue.
    """

    def __init__(self, plugin: str, hook: str, detail: str):
        super().__init__(f"plugin {plugin!r} failed in {hook}: {detail}")
        self.plugin, self.hook = plugin, hook


@dataclass(frozen=True)
class Variation:
    """One rendition of every upload, stored under `uploads/images/<name>/`.

    `transform` names a registered transform ("fit" or "cover" built in); `width` and `height`
    are the box it works in. `format` names the registered encoder of the main file.
    """

    name: str
    transform: str
    width: int
    height: int
    format: str = "jpeg"
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not VARIATION_NAME.match(self.name):
            raise PluginError(
                f"variation name {self.name!r} is not a valid S3 path segment: "
                "use lowercase letters, digits, '_' and '-'"
            )
        if self.name in RESERVED_NAMES:
            raise PluginError(f"variation name {self.name!r} is reserved for the pipeline")
        if not (isinstance(self.width, int) and isinstance(self.height, int)) or min(self.width, self.height) < 1:
            raise PluginError(f"variation {self.name!r} needs a positive whole width and height")

    def spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "transform": self.transform,
            "width": self.width,
            "height": self.height,
            "format": self.format,
            "options": dict(sorted(self.options.items())),
        }


@dataclass(frozen=True)
class Geometry:
    """What part of the upright source a variation shows and at what size.

    `region` is (left, top, right, bottom) in source pixels; `size` is the output size.
    """

    size: tuple[int, int]
    region: tuple[float, float, float, float]

    @property
    def scale(self) -> float:
        """Output pixels per source pixel: how much detail the variation needs."""
        left, top, right, bottom = self.region
        return max(self.size[0] / (right - left), self.size[1] / (bottom - top))

    def shows_whole(self, source_size: tuple[int, int]) -> bool:
        """True when the variation is the whole frame, so smaller variations can derive from it."""
        return self.region == (0, 0, source_size[0], source_size[1])


@dataclass(frozen=True)
class Transform:
    """A named geometry rule: `plan(source_size, box)` returns the Geometry of a variation.

    Transforms never touch pixels, so the core can render every variation from the smallest
    intermediate that still has enough detail.
    """

    name: str
    plan: Callable[[tuple[int, int], tuple[int, int]], Geometry]


@dataclass(frozen=True)
class Encoder:
    """An output format, declared once: name, file extension, content type and how to encode.

    `encode(image) -> bytes` receives an sRGB image in mode RGB, RGBA, L or LA and must not
    keep metadata. With `alongside=True` every variation also gets a file in this format next to
    its main one (that is what the webp and avif plugins do). `with_quality(quality) -> Encoder`,
    when given, makes the same encoder at another quality: a variation whose options hold
    `quality` gets its main file from it.
    """

    format: str
    extension: str
    content_type: str
    encode: Callable[["Image.Image"], bytes]
    alongside: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)
    with_quality: Callable[[int], "Encoder"] | None = None

    def spec(self) -> dict[str, Any]:
        return {"format": self.format, "options": dict(sorted(self.options.items()))}


@dataclass(frozen=True)
class PostProcessor:
    """Changes a rendered variation before it is encoded (the watermark is one).

    `apply(image) -> image` returns a new image of the same size; `applies_to(variation)` says
    which variations it touches. `options` enter the spec hash of those variations.
    """

    name: str
    apply: Callable[["Image.Image"], "Image.Image"]
    applies_to: Callable[[Variation], bool] = lambda variation: True
    options: Mapping[str, Any] = field(default_factory=dict)

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "options": dict(sorted(self.options.items()))}


def variation_qualities(options: Mapping[str, Any], names: list[str], plugin: str) -> dict[str, int]:
    """A variation plugin's `quality` option: its variations' own encoder qualities, by name
    (`{"quality": {"small": 70}}`); each enters only its variation's spec hash."""
    chosen = options.get("quality", {})
    if not isinstance(chosen, Mapping):
        raise PluginError(f"plugins.{plugin}.quality must map variation names to qualities, not {chosen!r}")
    unknown = set(chosen) - set(names)
    if unknown:
        raise PluginError(f"plugins.{plugin}.quality names {', '.join(sorted(unknown))}, not a variation of "
                          f"this plugin (its variations: {', '.join(names)})")
    for name, quality in chosen.items():
        if not isinstance(quality, int) or isinstance(quality, bool) or not 1 <= quality <= 100:
            raise PluginError(f"plugins.{plugin}.quality.{name} must be a whole number from 1 to 100, not {quality!r}")
    return dict(chosen)


_WHITE = {"RGBA": (255, 255, 255), "LA": 255}


def flatten_alpha(image: "Image.Image") -> "Image.Image":
    """Composite a transparent image onto white, for formats without alpha: never onto black."""
    if image.mode not in _WHITE:
        return image
    from PIL import Image

    background = Image.new(image.mode[:-1], image.size, _WHITE[image.mode])
    background.paste(image, mask=image.getchannel("A"))
    return background


def encoded(image: "Image.Image", format: str, **params: Any) -> bytes:
    """`image` saved in `format` (with Pillow's save parameters), as bytes: what an encoder returns.

    With more than one CPU, saved through an in-memory file where the OS has one (Linux, so
    Lambda): Pillow encodes into a file descriptor without holding the GIL, so the encodes of other
    variations run at the same time. Into BytesIO it holds the GIL throughout, but takes a few MB
    less at its peak: the better choice for one CPU.
    """
    import io
    import os

    try:
        several = len(os.sched_getaffinity(0)) > 1
        descriptor = os.memfd_create("encoded", os.MFD_CLOEXEC) if several else None
    except (AttributeError, OSError):  # not Linux, or a sandbox without memfd
        descriptor = None
    if descriptor is None:
        out = io.BytesIO()
        image.save(out, format, **params)
        return out.getvalue()
    with open(descriptor, "w+b") as file:
        image.save(file, format, **params)
        file.seek(0)
        return file.read()
