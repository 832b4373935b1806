"""The default fit-inside sizes (long edge, aspect kept, never upscaled).

Options: `quality`, a variation's own encoder quality, e.g. `{"quality": {"small": 70}}`; a
variation not named there is encoded at its format's quality. It enters that variation's spec
hash only, so a backfill re-renders exactly that variation.
"""

from pipeline.hookspecs import hookimpl
from pipeline.types import Variation, variation_qualities

SIZES = {"large": 2048, "medium": 1280, "small": 640, "xsmall": 320}


@hookimpl
def register_variations(register, options):
    chosen = variation_qualities(options, list(SIZES), "sizes")
    for name, edge in SIZES.items():
        register(Variation(name, "fit", edge, edge, options={"quality": chosen[name]} if name in chosen else {}))
