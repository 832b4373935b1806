"""The default fit-inside sizes (long edge, aspect kept, never upscaled)."""

from pipeline.hookspecs import hookimpl
from pipeline.types import Variation

SIZES = {"large": 2048, "medium": 1280, "small": 640, "xsmall": 320}


@hookimpl
def register_variations(register):
    for name, edge in SIZES.items():
        register(Variation(name, "fit", edge, edge))
