"""libvips at its best: one shrink-on-load decode, each smaller variation from the next larger.

thumbnail() would not shrink an 8000 px JPEG on load for a 2048 px output (it keeps a factor of
two for its own resize and decodes all 40 MP), so the shrink is asked for here: the largest of
libvips' 1/2, 1/4, 1/8 that leaves the same margin our pipeline keeps (MIN_SHRINK_AFTER_DCT).
"""

import sys

import pyvips

LARGE = 2048
MIN_SHRINK_AFTER_DCT = 1.3  # as pipeline/imaging.py

source, out = sys.argv[1], sys.argv[2]
save = {"Q": 82, "interlace": True, "strip": True}
header = pyvips.Image.new_from_file(source)
edge = max(header.width, header.height)
shrink = next((s for s in (8, 4, 2) if edge / s >= LARGE * MIN_SHRINK_AFTER_DCT), 1)
upright = not header.get_typeof("orientation") or header.get("orientation") == 1
# Streaming (sequential) is libvips' fast path; turning by 90 degrees needs random access.
decoded = pyvips.Image.new_from_file(source, shrink=shrink, access="sequential" if upright else "random").autorot()
large = decoded.resize(LARGE / max(decoded.width, decoded.height)).copy_memory()  # decode once
large.jpegsave(f"{out}/large.jpg", **save)
medium = large.thumbnail_image(1280, height=1280).copy_memory()
medium.jpegsave(f"{out}/medium.jpg", **save)
small = medium.thumbnail_image(640, height=640).copy_memory()
small.jpegsave(f"{out}/small.jpg", **save)
small.thumbnail_image(320, height=320).jpegsave(f"{out}/xsmall.jpg", **save)
medium.thumbnail_image(600, height=600, crop="centre").jpegsave(f"{out}/square_medium.jpg", **save)
small.thumbnail_image(150, height=150, crop="centre").jpegsave(f"{out}/square_small.jpg", **save)
