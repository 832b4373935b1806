"""A 1200x630 centred crop of every upload, the size social networks show for a shared link."""

from pipeline.hookspecs import hookimpl
from pipeline.types import Variation


@hookimpl
def register_variations(register, options):
    register(Variation("og", "cover", options.get("width", 1200), options.get("height", 630)))
