"""libvips at its best: one shrink-on-load decode, each smaller variation from the next larger."""

import sys

import pyvips

source, out = sys.argv[1], sys.argv[2]
save = {"Q": 82, "interlace": True, "strip": True}
large = pyvips.Image.thumbnail(source, 2048, height=2048)  # shrink-on-load, auto-rotates
large = large.copy_memory()  # decode once; the pyramid reads from memory
large.jpegsave(f"{out}/large.jpg", **save)
medium = large.thumbnail_image(1280, height=1280).copy_memory()
medium.jpegsave(f"{out}/medium.jpg", **save)
small = medium.thumbnail_image(640, height=640).copy_memory()
small.jpegsave(f"{out}/small.jpg", **save)
small.thumbnail_image(320, height=320).jpegsave(f"{out}/xsmall.jpg", **save)
medium.thumbnail_image(600, height=600, crop="centre").jpegsave(f"{out}/square_medium.jpg", **save)
small.thumbnail_image(150, height=150, crop="centre").jpegsave(f"{out}/square_small.jpg", **save)
