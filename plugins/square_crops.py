"""The default square crops, centred; a source smaller than the square gives a smaller square."""

from pipeline.hookspecs import hookimpl
from pipeline.types import Variation

SQUARES = {"square_medium": 600, "square_small": 150}


@hookimpl
def register_variations(register):
    for name, edge in SQUARES.items():
        register(Variation(name, "cover", edge, edge))
