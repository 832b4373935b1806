"""The default square crops, centred; a source smaller than the square gives a smaller square.

Options: `quality`, a variation's own encoder quality, as for the sizes plugin.
"""

from pipeline.hookspecs import hookimpl
from pipeline.types import Variation, variation_qualities

SQUARES = {"square_medium": 600, "square_small": 150}


@hookimpl
def register_variations(register, options):
    chosen = variation_qualities(options, list(SQUARES), "square_crops")
    for name, edge in SQUARES.items():
        register(Variation(name, "cover", edge, edge, options={"quality": chosen[name]} if name in chosen else {}))
